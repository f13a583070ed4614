"""Worker processes on this machine that share a heavy recon's source phase.

A recon's source phase holds one core: decoding, scripts, assessment and the rows
of each page are Python, under one interpreter lock. On a machine with more cores,
a run that has much to do splits its source into id ranges (``sync/partitions.py``,
the mechanism cluster mode spreads over nodes) and starts ``[recon] workers - 1``
processes here that take ranges alongside it. Each is a new interpreter (``spawn``:
nothing of the caller's threads, locks or connections is inherited) that loads the
same project, opens the same store and calls ``help_partitions``.

Only a run that has much to do splits: one whose mapping links fewer than half as
many objects as its source holds (a first load, a new mapping). A recon that finds
most objects unchanged is bound by reading the source, which a split does not
speed up, and would pay for an extra read of every id.

What keeps it safe is the split run's own bookkeeping: the run counts what every
partition read against its id-only read before any target phase or delete. A
worker that dies leaves its partition ACTIVE under its owner; the run hands it back
(``reclaim``) and reads it itself. A worker stops at a page boundary, its partition
handed back, when the run ends early (canceled, failed: the run sends it TERM), when
the run is no longer ACTIVE, or when the process that started it is gone.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from idsync.config.project import Project
from idsync.store.database import Store
from idsync.store.partitions import Partitions
from idsync.store.runs import RunStore
from idsync.sync.partitions import Splitter

__all__ = ["LocalWorkers", "local_splitter", "usable_cores"]

log = structlog.get_logger(__name__)

_JOIN = 10.0  # seconds a finished run waits for its workers before it kills them


def usable_cores() -> int:
    """The cores this process may run on (all of the machine's where a sandbox refuses to say)."""
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def local_splitter(project: Project, store: Store) -> Splitter | None:
    """How a run may split over worker processes here, or None where ``[recon] workers``
    allows one process only (or this machine has one core)."""
    settings = project.settings.recon
    if project.settings.cluster.enabled:
        return None  # the cluster's nodes share the partitions instead (``cluster/``)
    workers = settings.workers or min(usable_cores(), 8)
    if workers < 2:
        return None
    pool = LocalWorkers(project, store)
    return Splitter(partitions=lambda: 2 * workers, min_size=settings.min_partition_size,
                    spread=lambda run_id, _n: pool.start(run_id, workers - 1), node=_host(),
                    heavy_only=True, prepare=lambda run_id: pool.start(run_id, workers - 1),
                    reclaim=pool.reclaim, done=pool.stop)


class LocalWorkers:
    """The worker processes of the runs of one caller."""

    def __init__(self, project: Project, store: Store) -> None:
        self.project = project
        self.store = store
        self._procs: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def start(self, run_id: str, count: int) -> None:
        """Start ``count`` workers for ``run_id`` (once: a second call finds them started)."""
        with self._lock:
            if run_id in self._procs:
                return
            self._procs[run_id] = []
        context = multiprocessing.get_context("spawn")
        url = self.store.engine.url.render_as_string(hide_password=False)
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        started = []
        for n in range(count):
            proc = context.Process(target=_work, name=f"idsync-recon-worker-{n + 1}", daemon=True,
                                   args=(str(self.project.settings.project_dir.resolve()), url, run_id, _host(),
                                         os.getpid(), level))
            try:
                proc.start()
            except OSError as exc:  # the run reads the partitions itself
                log.warning("recon.worker_not_started", reason=str(exc))
                break
            started.append(proc)
        with self._lock:
            self._procs[run_id].extend(started)
        log.info("recon.workers_started", workers=len(started))

    def reclaim(self, run_id: str) -> None:
        """Hand back the partitions of workers of ``run_id`` that died before finishing them."""
        with self._lock:
            dead = [p for p in self._procs.get(run_id, []) if p.exitcode is not None]
        owners = [f"{_host()}:{p.pid}" for p in dead]
        if owners and Partitions(self.store).hand_back(run_id, owners):
            log.warning("recon.worker_lost", exit_codes=[p.exitcode for p in dead])

    def stop(self, run_id: str) -> None:
        """End the workers of ``run_id``, whose partitions are over: done, or (a canceled or
        failed run) stopped at their next page boundary, their partition handed back."""
        with self._lock:
            procs = self._procs.pop(run_id, [])
        for proc in procs:
            if proc.is_alive():
                with contextlib.suppress(OSError):
                    proc.terminate()
        deadline = time.monotonic() + _JOIN
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def _host() -> str:
    return socket.gethostname()


def _work(project_dir: str, url: str, run_id: str, node: str, parent: int, level: str) -> None:
    """In a worker: take partitions of ``run_id`` until none is left."""
    from idsync.config.project import load_project
    from idsync.log import configure_logging
    from idsync.managed.router import help_partitions_scripted
    from idsync.runtime import leave_to_exit, tune_collector

    tune_collector()
    cancel = threading.Event()
    # Ctrl-C or a closed terminal is the caller's to act on (a cancel at a page boundary,
    # which ends the run: this worker sees it); a TERM hands this worker's partition back.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    configure_logging(os.environ.get("IDSYNC_LOG__FORMAT", "auto"), level)  # type: ignore[arg-type]
    threading.Thread(target=_watch_parent, args=(parent, cancel), daemon=True).start()
    project = load_project(Path(project_dir))
    store = Store.open(url, migrate=False)
    try:
        if _partitions_made(store, run_id, cancel):
            help_partitions_scripted(project, store, run_id, node, cancel)
    finally:
        with contextlib.suppress(Exception):
            store.close()
    leave_to_exit()  # the worker's process ends with this function


def _partitions_made(store: Store, run_id: str, cancel: threading.Event) -> bool:
    """Wait while the run reads its ids (a worker may start before its partitions exist);
    whether they do now. False once the run is over or this worker is to stop."""
    runs = RunStore(store)
    while not cancel.is_set():
        if Partitions(store).plan(run_id) is not None:
            return True
        run = runs.get(run_id)
        if run is not None and run["state"] != "ACTIVE":
            return False
        cancel.wait(0.05)
    return False


def _watch_parent(parent: int, cancel: threading.Event) -> None:
    """Stop taking partitions once the process that started this worker is gone."""
    while not cancel.wait(0.5):
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            cancel.set()
        except PermissionError:
            pass
