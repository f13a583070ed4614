"""Stopping a command that runs recons in the foreground (``recon``, ``run-job``).

The work runs in a thread; the main thread waits for it and takes the signals.
The first SIGINT (Ctrl-C), SIGTERM or SIGHUP cancels at the next page boundary:
the run records itself CANCELED and the command exits 130. A second one stops
at once: this process's ACTIVE runs are recorded CANCELED, its locks released,
and it exits 130 as well. Every way of canceling ends in the same code, so a
script tells "canceled" from "failed" without knowing which signal was sent.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import structlog

if TYPE_CHECKING:
    from idsync.store.database import Store

__all__ = ["EX_CANCELED", "run_in_foreground"]

log = structlog.get_logger("idsync.cli")

EX_CANCELED = 130
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

T = TypeVar("T")


def run_in_foreground(work: Callable[[], T], cancel: threading.Event, store: Store, name: str) -> T:
    """Run ``work`` (which stops at a page boundary once ``cancel`` is set) until it returns;
    its exception is raised here."""
    outcome: dict[str, T] = {}
    failure: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if received:
            _stop_now(store, sig)
        received.append(sig.name)
        cancel.set()
        print(f"\nidsync: {sig.name}: canceling at the next page boundary (a second signal stops at once)",
              file=sys.stderr)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in _SIGNALS}
    # Wait on an Event, not Thread.join: a join interrupted by a signal can return at
    # once on the next call (CPython), before the run has recorded CANCELED.
    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    return outcome["result"]


def _stop_now(store: Store, sig: signal.Signals) -> None:
    from idsync.daemon.recovery import release_own_runs

    try:
        canceled = release_own_runs(store, "CANCELED", f"stopped at once by a second {sig.name}")
    except Exception:  # the store is down: the next command breaks these locks
        log.warning("cli.stop_now_unrecorded", exc_info=True)
        canceled = []
    print(f"idsync: {sig.name} again: stopped at once" + (f"; run {', '.join(canceled)} recorded CANCELED"
                                                         if canceled else ""), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EX_CANCELED)
