"""Logging: one structlog pipeline for idsync's events and the standard library's
loggers, JSON lines off a terminal and readable lines on one."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator

import pytest
import structlog
from idsync.log import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_for_events_and_stdlib_loggers() -> None:
    """Off a terminal every line is a JSON object with event, level, logger and a UTC
    timestamp, whether it came from structlog or from a library's stdlib logger."""
    out = io.StringIO()
    configure_logging("auto", "info", stream=out)
    structlog.get_logger("idsync.test").info("recon.page", created=3)
    logging.getLogger("apscheduler.scheduler").warning("job %s missed", "nightly")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")  # library chatter stays below warning
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "recon.page" and first["created"] == 3 and first["level"] == "info"
    assert first["logger"] == "idsync.test" and first["timestamp"].endswith("Z")
    assert second["event"] == "job nightly missed" and second["logger"] == "apscheduler.scheduler"


def test_console_lines_on_a_terminal() -> None:
    """On a terminal the same event is one readable line with its key-values, not JSON."""
    out = _Terminal()
    configure_logging("auto", "info", stream=out)
    structlog.get_logger("idsync.test").info("recon.end", state="SUCCESS")
    line = out.getvalue().strip()
    assert "recon.end" in line and "state" in line and "SUCCESS" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_level_filters_events() -> None:
    """Events below the configured level are dropped."""
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    structlog.get_logger("idsync.test").info("quiet")
    structlog.get_logger("idsync.test").warning("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def _bind_and_fail(password: str) -> None:
    credentials = {"principal": "cn=idsync", "credentials": password}
    raise RuntimeError(f"bind as {credentials['principal']} broke")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_traceback_shows_no_local_variables(fmt: str) -> None:
    """A crash logged with its traceback (``job.mapping_crash``, ``cli.crash`` at debug)
    shows the frames and the exception but not the frames' local variables, where a
    bind password, a client secret or an access token may sit; on a terminal too."""
    out = _Terminal()
    configure_logging(fmt, "debug", stream=out)  # type: ignore[arg-type]
    secret = "Pa55-" + os.urandom(4).hex()
    try:
        _bind_and_fail(secret)
    except RuntimeError:
        structlog.get_logger("idsync.test").exception("job.mapping_crash")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # the terminal's colours
    assert "job.mapping_crash" in text and "bind as cn=idsync broke" in text and "_bind_and_fail" in text
    assert secret not in text, text
