"""The ``idsync`` command as the tests run it: in this process by default (``main(argv)``
with its own standard streams and environment, closing what it opened as in a process of
its own), which costs milliseconds where a new interpreter costs half a second; in a child
process where a test is about the process itself (signals, exit, a terminal) or sets
``IDSYNC_TEST_CLI=process`` for the whole run."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from unittest import mock

import structlog

IDSYNC = str(Path(sys.executable).parent / "idsync")


def run_cli(args: Sequence[str], *, stdin: str | None = None, env: dict[str, str] | None = None,
            inherit_env: bool = True, timeout: float = 120, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``idsync ARGS`` with ``env`` added to the environment (or, ``inherit_env=False``, as
    the whole environment); its exit code and output."""
    environment = {**(os.environ if inherit_env else {}), **(env or {})}
    if process or os.environ.get("IDSYNC_TEST_CLI") == "process":
        return subprocess.run([IDSYNC, *args], capture_output=True, text=True, timeout=timeout, input=stdin,
                              env=environment)
    from idsync.cli import main

    stdout, stderr = _stream(), _stream()
    # The command closes the stores it opened, as in its own process (``cli/closing.py``).
    with _environment(environment), _logging_kept(), _signals_kept(), \
            mock.patch.object(sys, "stdin", io.StringIO(stdin or "")), \
            contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse, --help, --version
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return subprocess.CompletedProcess([IDSYNC, *args], code, _text(stdout), _text(stderr))


def _stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _environment(environment: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    zone_changed = environment.get("TZ") != saved.get("TZ")
    if zone_changed:
        time.tzset()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if zone_changed:
            time.tzset()


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """A foreground command (``recon``, ``run-job``, ``livesync``) takes SIGTERM and SIGHUP as
    Ctrl-C for its process; the test's process gets its own handlers back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the command leaves the handlers alone off the main thread
        return
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """The command configures logging for itself; the test's own (pytest's capture) comes back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = ("sqlalchemy", "alembic", "apscheduler", "ldap3", "httpx")
    levels = {name: logging.getLogger(name).level for name in noisy}
    config = structlog.get_config()
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in levels.items():
            logging.getLogger(name).setLevel(was)
        structlog.configure(**config)
