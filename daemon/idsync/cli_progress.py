"""Live progress of a recon: a rich status line on a terminal (count, the last complete
run's count as the expected total, rate, elapsed time and ETA), otherwise a
``recon.progress`` log event every ``interval`` seconds.

While the status line is shown, log lines are printed above it through rich's console,
so neither garbles the other."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog
from rich.console import Console
from rich.live import Live
from rich.text import Text

from idsync.store.database import Store
from idsync.store.retention import PUSH_JOBS
from idsync.store.runs import RunStore
from idsync.sync.summary import Counters

__all__ = ["Progress", "expected_counts"]

log = structlog.get_logger("idsync.progress")


def expected_counts(store: Store, mapping: str) -> dict[str, int]:
    """Objects per phase (``source``, ``target``) of the mapping's last complete recon: the
    best estimate of this run's totals when the source does not say."""
    for run in RunStore(store).recent(limit=20, mapping=mapping):
        summary = run.get("summary") or run
        if run.get("state") != "SUCCESS" or summary.get("dryRun") or run.get("job") in PUSH_JOBS:
            continue
        progress = summary.get("progress") or {}
        return {phase: int(((progress.get(phase) or {}).get("existing") or {}).get("processed") or 0)
                for phase in ("source", "target")}
    return {}


class _AboveLive:
    """A text stream whose lines rich prints above its live display, unwrapped."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True, markup=False, highlight=False)
        return len(text)

    def flush(self) -> None:
        return None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``display``: show the status line when stderr is a terminal. Whenever it is
    not shown, progress goes to the log instead (its level decides if it appears)."""

    def __init__(self, *, display: bool, interval: float, expected: dict[str, int] | None = None) -> None:
        self.tty = display and sys.stderr.isatty()
        self.interval = interval
        self.expected = expected or {}
        self._started = time.monotonic()
        self._last = 0.0
        self._live: Live | None = None
        self._redirected: list[tuple[logging.StreamHandler[Any], Any]] = []
        if self.tty:
            self._live = Live(Text("starting..."), console=Console(stderr=True), refresh_per_second=4,
                              transient=True, redirect_stderr=False, redirect_stdout=False)
            self._live.start()
            self._redirect_logging(self._live.console)

    def _redirect_logging(self, console: Console) -> None:
        """Log handlers hold the stream they were given; point those writing to the terminal
        at one that prints each line above the status line, whole (never wrapped or cut)."""
        stream = _AboveLive(console)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                self._redirected.append((handler, handler.setStream(stream)))

    def update(self, c: Counters) -> None:
        phase = {"ACTIVE_RECONCILING_TARGET": "target", "ACTIVE_DELETING": "deleting"}.get(c.stage, "source")
        done = c.source_processed if phase == "source" else c.target_processed
        total = c.source_total if phase == "source" else c.target_total
        estimate = total is None and phase in self.expected and self.expected[phase] > 0
        if estimate:
            total = self.expected[phase]
        elapsed = time.monotonic() - self._started
        rate = c.rate
        eta = (total - done) / rate if total and rate > 0 and done < total else None
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.changes.items()) if v)
        if self._live is not None:
            of = f"/{'~' if estimate else ''}{total:,}" if total else ""
            self._live.update(Text(f"{c.mapping} [{phase}] {done:,}{of} objects, {rate:,.0f}/s, "
                                   f"elapsed {_clock(elapsed)}" + (f", ETA {_clock(eta)}" if eta is not None else "")
                                   + (f"  ({counts})" if counts else "")
                                   + (f"  errors {c.error_count}" if c.error_count else "")))
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("recon.progress", mapping=c.mapping, phase=phase, processed=done, total=total,
                     total_estimated=estimate, rate=round(rate), elapsed_s=round(elapsed, 1),
                     eta_s=None if eta is None else round(eta, 1), changes=dict(c.changes), errors=c.error_count)

    def close(self) -> None:
        if self._live is not None:
            for handler, stream in self._redirected:
                handler.setStream(stream)
            self._redirected.clear()
            self._live.stop()
            self._live = None
