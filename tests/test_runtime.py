"""The interpreter's settings of idsync's processes (``runtime.py``)."""

from __future__ import annotations

import gc
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from idsync.cli import main
from idsync.runtime import YOUNG

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("default_collector")
def test_a_command_collects_cycles_once_per_young_generation(tmp_path: Path) -> None:
    """Every command (and so the daemon, ``idsync run``) runs with a young generation of
    ``YOUNG`` containers, not Python's 700: a recon's pages are not walked again and again
    by the cycle collector. The older generations keep their pace."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    middle_and_old = gc.get_threshold()[1:]
    assert main(["-p", str(tmp_path), "mappings"]) == 0
    assert gc.get_threshold() == (YOUNG, *middle_and_old)


@pytest.mark.usefixtures("default_collector")
def test_a_recon_worker_collects_cycles_once_per_young_generation(tmp_path: Path) -> None:
    """The recon's worker processes (``managed/workers.py``) set the same pace before they
    load the project (here: none, so the worker ends there)."""
    from idsync.errors import ConfigError
    from idsync.managed.workers import _work

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    try:
        with pytest.raises(ConfigError):
            _work(str(tmp_path), "sqlite://", "run", "node", os.getpid(), "warning")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert gc.get_threshold()[0] == YOUNG


def test_only_the_process_own_command_leaves_its_objects_to_the_exit(tmp_path: Path) -> None:
    """``main()`` reading the process's command line (the ``idsync`` script, ``python -m
    idsync``) freezes the collector's objects as it returns, for the exit to skip; ``main(argv)``
    called in a process that goes on (the tests' ``cli_runner``) leaves the collector alone."""
    import subprocess
    import sys

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    frozen = gc.get_freeze_count()
    assert main(["-p", str(tmp_path), "mappings"]) == 0
    assert gc.get_freeze_count() == frozen
    probe = ("import gc, sys; from idsync.cli import main; code = main(); "
             "print(code, gc.get_freeze_count() > 0, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, "-p", str(tmp_path), "mappings"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr.split() == ["0", "True"], proc.stderr
