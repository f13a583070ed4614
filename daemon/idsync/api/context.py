"""What the routes work on: the current configuration, the store, running recons,
and (inside ``idsync run``) the daemon's scheduler.

The project is read through a callable so a SIGHUP reload is seen by the next
request. Recons started over HTTP run in this process's worker threads; their
cancel events are kept here so ``recon/ID?_action=cancel`` reaches them.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from idsync.api.walks import Walks
from idsync.config.project import Project
from idsync.managed.recons import stop_detached
from idsync.managed.router import run_recon_scripted
from idsync.managed.workers import local_splitter
from idsync.settings import ApiSettings
from idsync.store.database import Store
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, cancel_in_process

__all__ = ["ApiContext", "JobControl"]

log = structlog.get_logger("idsync.api")


class JobControl(Protocol):
    """The scheduler's side of ``scheduler/job``: implemented by the daemon."""

    def job_list(self) -> list[dict[str, Any]]: ...

    def trigger(self, name: str) -> bool: ...

    def cancel_job(self, name: str) -> bool: ...

    def config_state(self) -> dict[str, Any]:
        """``errors`` (count since the last load), ``problems`` (their messages), ``lastReload``
        (a datetime or None), ``lastReloadOk`` (None before any reload) and ``state``
        (``running``, ``reloading`` or ``stopping``)."""
        ...

    def reload(self) -> dict[str, Any]:
        """Re-read ``conf/`` and ``jobs.d/`` as SIGHUP does, waiting for it; ``config_state()`` after."""
        ...


@dataclass
class ApiContext:
    project: Callable[[], Project]
    store: Store
    settings: ApiSettings
    jobs: JobControl | None = None
    # Called when a run started here begins or ends (the daemon rewrites its status file).
    changed: Callable[[], None] = lambda: None
    # This daemon's cluster node name (``[cluster]``), None outside cluster mode.
    node: str | None = None
    # Paged queries of systems between their pages (``walks.py``), held as ``settings`` say.
    walks: Walks = field(init=False)
    _cancels: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="api-recon"))

    def __post_init__(self) -> None:
        self.walks = Walks(idle=self.settings.system_query_idle_seconds, held=self.settings.system_queries_held,
                           node=self.node)

    def start_recon(self, mapping: str, run_id: str, *, dry_run: bool = False, rewrite_write_only: bool = False,
                    overrides: Mapping[str, Any] | None = None,
                    recorded: threading.Event | None = None) -> concurrent.futures.Future[ReconResult]:
        """Run ``mapping`` in a worker thread under the run id ``run_id`` (a preview that
        writes nothing but its run and audit with ``dry_run``; writing again the values
        its target never returns with ``rewrite_write_only``; with PingIDM's settings for
        one run, ``overrides``); ``recorded`` is set once the run is recorded."""
        project = self.project()
        project.mapping_for_run(mapping, overrides)  # an unknown mapping or setting is refused before a thread starts
        cancel = threading.Event()
        with self._lock:
            self._cancels[run_id] = cancel

        def work() -> ReconResult:
            try:
                options = ReconOptions(run_id=run_id, cancel=cancel, dry_run=dry_run,
                                       rewrite_write_only=rewrite_write_only, overrides=overrides,
                                       splitter=local_splitter(project, self.store), recorded=recorded,
                                       on_start=self.changed)
                return run_recon_scripted(project, self.store, mapping, options)
            finally:
                with self._lock:
                    self._cancels.pop(run_id, None)
                self.changed()

        return self._pool.submit(work)

    def cancel(self, run_id: str, job: str | None) -> bool:
        """Ask a running recon (started here, or by job ``job``) to stop at its next page boundary."""
        with self._lock:
            event = self._cancels.get(run_id)
        if event is not None:
            event.set()
            return True
        if self.jobs is not None and job and self.jobs.cancel_job(job):
            return True
        return cancel_in_process(run_id)  # started here otherwise: by a script, say

    def close(self) -> None:
        stop_detached()  # the recons scripts started without waitForCompletion
        with self._lock:
            for event in self._cancels.values():
                event.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.walks.close()  # the paged queries of systems between their pages, and their connections
