"""Logging: structlog everywhere, stdlib loggers (APScheduler, SQLAlchemy, ldap3) routed
through the same pipeline. Readable console lines on a terminal, JSON lines otherwise.

Under systemd, when the stream is the journal's (``JOURNAL_STREAM``), each event is sent to
journald's native socket as its own fields: ``MESSAGE`` (the event and its key-values, as a
reader of ``journalctl`` wants it), ``PRIORITY``, ``SYSLOG_IDENTIFIER=idsync``,
``IDSYNC_EVENT`` and one ``IDSYNC_<KEY>`` field per key (``IDSYNC_RUN_ID``, ``IDSYNC_MAPPING``),
so ``journalctl -u idsync IDSYNC_EVENT=recon.end`` and ``-p warning`` work. Where the socket
cannot be written, the line goes to the stream with its syslog priority (``<4>`` for a
warning), which journald strips and records."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
from typing import Any, Literal

import structlog

__all__ = ["JOURNAL_SOCKET", "JournalHandler", "configure_logging"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def configure_logging(fmt: Literal["auto", "console", "json"] = "auto", level: str = "info",
                      stream: object = None, journal_socket: str = JOURNAL_SOCKET) -> None:
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
    handler = JournalHandler(out, journal_socket) if _is_journal(out) else logging.StreamHandler(out)  # type: ignore[arg-type]
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


_FIELD_UNSAFE = re.compile(r"[^A-Z0-9_]")
# journald refuses datagrams above its receive buffer; larger events go to the stream.
_MAX_DATAGRAM = 128 * 1024


class JournalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Each record as one native journal entry (systemd.journal-fields(7)); the stream, with
    the record's syslog priority in front, when the journal cannot take it."""

    def __init__(self, stream: Any, socket_path: str = JOURNAL_SOCKET) -> None:
        super().__init__(stream)
        self._path = socket_path
        self._socket: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = self._entry(record)
            if len(payload) <= _MAX_DATAGRAM and self._send(payload):
                return
        except Exception:  # noqa: BLE001 - a log record must never break the caller
            pass
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        super().close()

    def _send(self, payload: bytes) -> bool:
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(payload, self._path)
        except OSError:
            return False
        return True

    def _entry(self, record: logging.LogRecord) -> bytes:
        event = dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()}
        name = str(event.pop("event", ""))
        for internal in ("_record", "_from_structlog", "level", "timestamp"):
            event.pop(internal, None)
        logger = str(event.pop("logger", record.name))
        exc = ""
        if record.exc_info:
            exc = logging.Formatter().formatException(record.exc_info)
        values = {key: _text(value) for key, value in event.items()}
        message = " ".join([name, *(f"{key}={value}" for key, value in values.items())])
        fields: list[tuple[str, str]] = [
            ("MESSAGE", message + (f"\n{exc}" if exc else "")),
            ("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
            ("SYSLOG_IDENTIFIER", "idsync"),
            ("IDSYNC_EVENT", name),
            ("IDSYNC_LOGGER", logger),
        ]
        for key, value in values.items():
            field = "IDSYNC_" + _FIELD_UNSAFE.sub("_", key.upper())
            if field not in ("IDSYNC_EVENT", "IDSYNC_LOGGER"):
                fields.append((field, value))
        return b"".join(_field(key, value) for key, value in fields)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def _field(key: str, value: str) -> bytes:
    """One field in the native protocol: ``KEY=value\\n``, or with a length for values that
    hold a newline."""
    data = value.encode("utf-8", "replace")
    if b"\n" not in data:
        return key.encode() + b"=" + data + b"\n"
    return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


def _is_journal(stream: object) -> bool:
    """Whether ``stream`` is the journal stream systemd names in ``JOURNAL_STREAM`` (dev:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"
