"""One node of a cluster: this daemon's queue worker, its heartbeat, and the takeover of dead nodes.

Every node schedules every job with idsync's own scheduler, as a single daemon does,
but a fire only queues the run (``Queue.defer_fire``: once per fire in the cluster);
the run itself is done by whichever node's worker takes it. A run by hand (API,
console) is queued the same way, once.

Every ``heartbeat`` seconds each node, on the daemon's event loop:

1. writes its heartbeat (``cluster_nodes.seen``, and Procrastinate's own);
2. breaks the locks of nodes silent for ``stall_timeout`` (their recon runs end
   FAILED "interrupted") and hands their recon partitions back (``Nodes.take_over``);
3. puts the queue jobs of workers silent for ``stall_timeout`` plus one ``heartbeat``
   back in the queue, so a live node runs them again (the extra beat: the dead node's
   locks are broken first, by step 2 of some node).

So a node killed mid-run has its run taken over within ``stall_timeout`` plus two
``heartbeat`` (plus the queue's one-second poll), and the run starts again on another
node; what the dead node committed page by page is already in the store and the
target, and is seen as unchanged by the new run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from procrastinate.worker import Worker

from idsync.cluster.queue import JOB_TASK, PARTITION_TASK, HandedOver, Queue
from idsync.settings import ClusterSettings
from idsync.store.database import Store
from idsync.store.locks import process_owner
from idsync.store.nodes import Node, Nodes

__all__ = ["ClusterNode", "RunJob"]

log = structlog.get_logger("idsync.cluster")

# A job's run: (job name, trigger, fire or None) -> whether it was stopped by this node's shutdown.
RunJob = Callable[[str, str, dt.datetime | None], bool]
_DEFER_TIMEOUT = 30.0
_T = TypeVar("_T")


class ClusterNode:
    """This daemon as a node: call ``prepare`` before the event loop, ``start`` and ``stop`` on it."""

    def __init__(self, store: Store, settings: ClusterSettings, version: str, run_job: RunJob,
                 help_partitions: Callable[[str], bool], running: Callable[[], list[str]]) -> None:
        self.store = store
        self.settings = settings
        self.version = version
        # The queue's own events (each job taken, each job done) would double idsync's job.start and job.end.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        self.name = settings.node_name or socket.gethostname()
        self.owner = process_owner()
        self.nodes = Nodes(store, dt.timedelta(seconds=settings.stall_timeout))
        # The queue's connections: the worker's fetches and heartbeats, the listener, the deferrals.
        self.queue = Queue(store, max_connections=settings.concurrency + 4)
        self._run_job = run_job
        self._help_partitions = help_partitions
        self._running = running
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.concurrency, thread_name_prefix="queue")
        self._loop: asyncio.AbstractEventLoop
        self._worker: Worker | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def prepare(self) -> None:
        """Take this node's name (``ConfigError`` if a live node has it), then create or upgrade the
        queue's schema (its post migrations wait while a live node runs another version)."""
        self.nodes.claim(self.name, self.owner, self.version)
        others = [f"{n.name} ({n.version})" for n in self.nodes.alive() if n.name != self.name
                  and n.version != self.version]
        self.queue.prepare(others)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue.on(JOB_TASK, self._job)
        self.queue.on(PARTITION_TASK, self._partition)
        await self.queue.open()
        s = self.settings
        self._worker = Worker(self.queue.app, name=self.name, concurrency=s.concurrency, wait=True,
                              install_signal_handlers=False, update_heartbeat_interval=s.heartbeat,
                              stalled_worker_timeout=s.stall_timeout, fetch_job_polling_interval=1.0)
        work = self._worker.run()  # type: ignore[no-untyped-call]
        self._tasks = [asyncio.create_task(work, name="queue-worker"),
                       asyncio.create_task(self._maintain(), name="cluster-heartbeat")]
        log.info("cluster.join", node=self.name, process=self.owner, concurrency=s.concurrency,
                 heartbeat=s.heartbeat, stall_timeout=s.stall_timeout)

    def stop_taking(self) -> None:
        """Take no more queue jobs (the first step of a shutdown); those running go on."""
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]

    async def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the worker to hand back what it runs, then leave."""
        self.stop_taking()
        worker, maintain = self._tasks or (None, None)
        if maintain is not None:
            maintain.cancel()
        if worker is not None:
            try:
                await asyncio.wait_for(worker, timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                log.warning("cluster.worker_failed", node=self.name, exc_info=True)
        await asyncio.to_thread(self.nodes.leave, self.name, self.owner)
        await self.queue.close()
        self._pool.shutdown(wait=False)
        log.info("cluster.leave", node=self.name)

    # -- from the scheduler's and the API's threads -----------------------------------

    def fire(self, job: str, fire: dt.datetime) -> bool | None:
        """Queue the scheduled ``fire`` of ``job`` unless another node did (``Queue.defer_fire``)."""
        timestamp = int(fire.timestamp())
        return self._call(self.queue.defer_fire(job, timestamp, fire.isoformat()))

    def trigger(self, job: str, trigger: str, fire: dt.datetime | None = None) -> bool:
        """Queue one run of ``job`` now (by hand); False if one already waits."""
        return self._call(self.queue.defer_run(job, trigger, fire.isoformat() if fire else None))

    def defer_partition_helpers(self, run_id: str, count: int) -> None:
        self._call(self.queue.defer_partition_helpers(run_id, count))

    def alive(self) -> list[Node]:
        return self.nodes.alive()

    def status(self) -> dict[str, object]:
        nodes = self.nodes.all()
        return {"node": self.name, "alive": sum(n.alive for n in nodes), "nodes": [n.to_json() for n in nodes]}

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_DEFER_TIMEOUT)

    # -- on the event loop -------------------------------------------------------------

    async def _job(self, job: str, trigger: str, fire: str | None) -> None:
        when = dt.datetime.fromisoformat(fire) if fire else None
        handed_over = await self._loop.run_in_executor(self._pool, self._run_job, job, trigger, when)
        if handed_over:
            if await self.queue.waiting(job):
                # The run waiting next does the work, as for a fire that finds a run waiting.
                log.info("job.skipped", job=job, reason="queued", fire_time=fire, trigger=trigger, node=self.name)
                return
            log.info("cluster.handed_over", node=self.name, job=job)
            raise HandedOver(job)

    async def _partition(self, run_id: str) -> None:
        if await self._loop.run_in_executor(self._pool, self._help_partitions, run_id):
            raise HandedOver(run_id)

    async def _maintain(self) -> None:
        stall = self.settings.stall_timeout
        while True:
            try:
                await asyncio.to_thread(self.nodes.beat, self.name, self.owner, self._running())
                failed = await asyncio.to_thread(self.nodes.take_over)
                for run_id in failed:
                    log.warning("cluster.run_taken_over", node=self.name, run_id=run_id)
                # One heartbeat later than the nodes' own: the dead node's locks are broken
                # (just above, by this node or another) before its jobs run again elsewhere.
                requeued = await self.queue.requeue_stalled(stall + self.settings.heartbeat)
                if requeued:
                    log.warning("cluster.jobs_requeued", node=self.name, queue_jobs=requeued)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be back at the next beat
                log.warning("cluster.heartbeat_failed", node=self.name, error=type(exc).__name__)
            await asyncio.sleep(self.settings.heartbeat)
