"""Live progress of a recon: a rich status line on a terminal, otherwise a
``recon.progress`` log event every ``interval`` seconds."""

from __future__ import annotations

import sys
import time

import structlog
from rich.console import Console
from rich.live import Live
from rich.text import Text

from idsync.sync.summary import Counters

__all__ = ["Progress"]

log = structlog.get_logger("idsync.progress")


class Progress:
    """``display``: show the status line when stderr is a terminal. Whenever it is
    not shown, progress goes to the log instead (its level decides if it appears)."""

    def __init__(self, *, display: bool, interval: float) -> None:
        self.tty = display and sys.stderr.isatty()
        self.interval = interval
        self._last = 0.0
        self._live: Live | None = None
        if self.tty:
            self._live = Live(Text("starting..."), console=Console(stderr=True), refresh_per_second=4, transient=True)
            self._live.start()

    def update(self, c: Counters) -> None:
        phase = {"ACTIVE_RECONCILING_TARGET": "target", "ACTIVE_DELETING": "deleting"}.get(c.stage, "source")
        done = c.source_processed if phase == "source" else c.target_processed
        total = c.source_total if phase == "source" else c.target_total
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.changes.items()) if v)
        if self._live is not None:
            of = f"/{total}" if total else ""
            self._live.update(Text(f"{c.mapping} [{phase}] {done}{of} objects, {c.rate:,.0f}/s"
                                   + (f"  ({counts})" if counts else "")
                                   + (f"  errors {c.error_count}" if c.error_count else "")))
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("recon.progress", phase=phase, processed=done, total=total, rate=round(c.rate),
                     changes=dict(c.changes), errors=c.error_count)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
