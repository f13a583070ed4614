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

from rich.console import Console
from rich.live import Live
from rich.text import Text

from idsync.sync.progress import ProgressLog, snapshot
from idsync.sync.summary import Counters

__all__ = ["Progress"]

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
        self._log = ProgressLog(interval, self.expected)
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
        if self._live is None:
            self._log.update(c)
            return
        s = snapshot(c, self.expected, self._started)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.changes.items()) if v)
        of = f"/{'~' if s.estimated else ''}{s.total:,}" if s.total else ""
        self._live.update(Text(f"{c.mapping} [{s.phase}] {s.done:,}{of} objects, {s.rate:,.0f}/s, "
                               f"elapsed {_clock(s.elapsed)}" + (f", ETA {_clock(s.eta)}" if s.eta is not None else "")
                               + (f"  ({counts})" if counts else "")
                               + (f"  errors {c.error_count}" if c.error_count else "")))

    def close(self) -> None:
        if self._live is not None:
            for handler, stream in self._redirected:
                handler.setStream(stream)
            self._redirected.clear()
            self._live.stop()
            self._live = None
