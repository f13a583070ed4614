"""Logging: structlog everywhere, stdlib loggers (APScheduler, SQLAlchemy, ldap3) routed
through the same pipeline. Readable console lines on a terminal, JSON lines otherwise.

Under systemd, when the stream is the journal's (``JOURNAL_STREAM``), each line starts
with its syslog priority (``<4>`` for a warning), which journald strips and records, so
``journalctl -p warning -u idsync`` works."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging"]


def configure_logging(fmt: Literal["auto", "console", "json"] = "auto", level: str = "info",
                      stream: object = None) -> None:
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        # Tracebacks without the frames' local variables: a password or token may be one.
        structlog.dev.ConsoleRenderer(colors=getattr(out, "isatty", lambda: False)(),
                                      exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False))
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _identity,
            renderer,
        ],
    )
    handler = _JournalStreamHandler(out) if _is_journal(out) else logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # Library chatter stays at warning unless idsync itself is at debug.
    for noisy in ("sqlalchemy", "alembic", "apscheduler", "ldap3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" and noisy != "sqlalchemy"
                                          else logging.WARNING)


def _identity(_logger: object, _name: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    return event


# syslog priorities by stdlib level, as sd-daemon(3) prefixes expect them.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def _is_journal(stream: object) -> bool:
    """Whether ``stream`` is the journal stream systemd names in ``JOURNAL_STREAM`` (dev:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"
