"""One node of a cluster: this daemon's queue worker, its heartbeat, and the takeover of dead nodes.

Every node schedules every job with idsync's own scheduler, as a single daemon does,
but a fire only queues the run (``Queue.defer_fire``: once per fire in the cluster);
the run itself is done by whichever node's worker takes it. A run by hand (API,
console) is queued the same way, once.

Every ``heartbeat`` seconds each node, on the daemon's event loop:

1. writes its heartbeat (``cluster_nodes.seen``, and Procrastinate's own), writes the
   ends of its queue jobs the store refused when they ended (``Queue.record_ends``), and
   puts what waits in the queue of a node no longer alive back in the common queue
   (``Queue.rehome``: a job handed to a node that has it, ``NotDeployedHere``);
2. breaks the locks of nodes silent for ``stall_timeout`` (their recon runs end
   FAILED "interrupted", a split run's summary then counting what its partitions
   committed) and hands their recon partitions back (``Nodes.take_over``);
3. puts the queue jobs of workers silent for ``stall_timeout`` plus one ``heartbeat``
   back in the queue, so a live node runs them again (the extra beat: the dead node's
   locks are broken first, by step 2 of some node).

So a node killed mid-run has its run taken over within ``stall_timeout`` plus two
``heartbeat`` (plus the queue's one-second poll), and the run starts again on another
node; what the dead node committed page by page is already in the store and the
target, and is seen as unchanged by the new run.

A node that was only silent (paused, starved, cut off from the store) and runs again
finds its work taken over: its runs' next pages are refused (``RunTakenOver``), the
queue does not take its stale ends of queue jobs (``queue._OwnJobs``), and the queue
worker the others removed is replaced by a new one (``cluster.worker_restarted``), as is
a worker that stopped on an error: the node goes on taking queue jobs, never only
looking alive. Liveness is judged on the store's clock (``Nodes``), so a node whose own
clock is off is neither taken for dead nor takes the others for dead.
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

from idsync.cluster.fingerprint import defines_job
from idsync.cluster.queue import (
    COMMON_QUEUE,
    HAND_BACKS,
    JOB_TASK,
    PARTITION_TASK,
    HandedOver,
    NotDeployedHere,
    Queue,
    node_queue,
)
from idsync.errors import internal_message
from idsync.settings import ClusterSettings
from idsync.store.database import Store
from idsync.store.locks import process_owner
from idsync.store.nodes import Node, Nodes

__all__ = ["ClusterNode", "RunJob"]

log = structlog.get_logger("idsync.cluster")

# A job's run: (job name, trigger, fire or None) -> whether it was stopped by this node's shutdown,
# None when the job is not in this node's jobs.d/.
RunJob = Callable[[str, str, dt.datetime | None], bool | None]
_DEFER_TIMEOUT = 30.0
_T = TypeVar("_T")


class ClusterNode:
    """This daemon as a node: call ``prepare`` before the event loop, ``start`` and ``stop`` on it."""

    def __init__(self, store: Store, settings: ClusterSettings, version: str, run_job: RunJob,
                 help_partitions: Callable[[str], bool], running: Callable[[], list[str]],
                 summarize: Callable[[str], object]) -> None:
        self.store = store
        self.settings = settings
        self.version = version
        # The queue's own events (each job taken, each job done) would double idsync's job.start and job.end.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        self.name = settings.node_name or socket.gethostname()
        self.owner = process_owner()
        self.nodes = Nodes(store, dt.timedelta(seconds=settings.stall_timeout))
        # The queue's connections: the worker's fetches and heartbeats, the listener, the deferrals.
        self.queue = Queue(store, max_connections=settings.concurrency + 4, node=self.name)
        self._run_job = run_job
        self._help_partitions = help_partitions
        self._running = running
        self._summarize = summarize  # a run failed by a takeover: its summary from its partitions
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.concurrency, thread_name_prefix="queue")
        self._loop: asyncio.AbstractEventLoop
        self._worker: Worker | None = None
        self._work: asyncio.Task[None] | None = None
        self._retired: list[asyncio.Task[None]] = []  # workers replaced, finishing what they ran
        self._maintaining: asyncio.Task[None] | None = None
        self._stopping = False
        self._files: dict[str, str] = {}  # this node's configuration files (``fingerprint.py``)
        self._files_written = False
        self._differing: dict[str, list[str]] = {}  # live node -> the files it has otherwise, as last told

    def deployed(self, files: dict[str, str]) -> None:
        """This node's configuration files now (at start, at each reload): written with the
        next heartbeat, and compared with the other nodes' at each one."""
        self._files, self._files_written = files, False

    def prepare(self) -> None:
        """Take this node's name (``ConfigError`` if a live node has it), then create or upgrade the
        queue's schema (its post migrations wait while a live node runs another version)."""
        self.nodes.claim(self.name, self.owner, self.version, self._files)
        self._files_written = True
        others = [f"{n.name} ({n.version})" for n in self.nodes.alive() if n.name != self.name
                  and n.version != self.version]
        self.queue.prepare(others)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue.on(JOB_TASK, self._job)
        self.queue.on(PARTITION_TASK, self._partition)
        await self.queue.open()
        self._start_worker()
        self._maintaining = asyncio.create_task(self._maintain(), name="cluster-heartbeat")
        s = self.settings
        log.info("cluster.join", node=self.name, process=self.owner, concurrency=s.concurrency,
                 heartbeat=s.heartbeat, stall_timeout=s.stall_timeout)

    def _start_worker(self) -> None:
        s = self.settings
        self._worker = Worker(self.queue.app, queues=[COMMON_QUEUE, node_queue(self.name)], name=self.name,
                              concurrency=s.concurrency, wait=True,
                              install_signal_handlers=False, update_heartbeat_interval=s.heartbeat,
                              stalled_worker_timeout=s.stall_timeout, fetch_job_polling_interval=1.0)
        self._work = asyncio.create_task(self._worker.run(), name="queue-worker")  # type: ignore[no-untyped-call]

    def stop_taking(self) -> None:
        """Take no more queue jobs (the first step of a shutdown); those running go on."""
        self._stopping = True
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]

    async def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the worker to hand back what it runs, then leave."""
        self.stop_taking()
        if self._maintaining is not None:
            self._maintaining.cancel()
        works = [t for t in (*self._retired, self._work) if t is not None]
        if works:
            done, _ = await asyncio.wait(works, timeout=timeout)
            for work in done:
                if (failure := _failure(work)) is not None:
                    log.warning("cluster.worker_failed", node=self.name, error=failure)
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

    async def _job(self, job: str, trigger: str, fire: str | None, attempts: int = 0) -> None:
        when = dt.datetime.fromisoformat(fire) if fire else None
        handed_over = await self._loop.run_in_executor(self._pool, self._run_job, job, trigger, when)
        if handed_over is None:
            if attempts + 1 >= HAND_BACKS:
                log.warning("job.skipped", job=job, reason="unknown", fire_time=fire, trigger=trigger, node=self.name,
                            hint=f"no node that took it in {HAND_BACKS} tries has it in its jobs.d/")
                return
            to = await asyncio.to_thread(self._deployed_with, job)
            log.info("cluster.handed_back", node=self.name, job=job, fire_time=fire, to=to,
                     reason="not in this node's jobs.d/")
            raise NotDeployedHere(job, to)
        if handed_over:
            if await self.queue.waiting(job):
                # The run waiting next does the work, as for a fire that finds a run waiting.
                log.info("job.skipped", job=job, reason="queued", fire_time=fire, trigger=trigger, node=self.name)
                return
            log.info("cluster.handed_over", node=self.name, job=job)
            raise HandedOver(job)

    def _deployed_with(self, job: str) -> str | None:
        """A live node other than this one whose files define ``job``: the one running
        least; None if none does (the job waits a second for a deploy to reach one)."""
        try:
            alive = self.nodes.alive()
        except Exception:  # noqa: BLE001 - the store is away: any node, a second later
            return None
        having = [n for n in alive if n.name != self.name and defines_job(n.config, job)]
        return min(having, key=lambda n: (len(n.running), n.name)).name if having else None

    async def _partition(self, run_id: str) -> None:
        if await self._loop.run_in_executor(self._pool, self._help_partitions, run_id):
            raise HandedOver(run_id)

    async def _renew_worker(self) -> None:
        """A new queue worker when this one is gone: ended on an error (a fetch refused while
        the store was away), or taken for dead by another node, which removed it and put its
        jobs back in the queue (this node was silent for ``stall_timeout``). What the old
        one runs finishes (its writes refused, its ends not recorded: ``RunTakenOver``,
        ``queue._OwnJobs``) while the new one takes queue jobs."""
        work, worker = self._work, self._worker
        if self._stopping or work is None or worker is None:
            return
        if work.done():
            reason = _failure(work) or "stopped"
        elif worker.worker_id is not None and not await self.queue.registered(worker.worker_id):
            reason = f"removed by another node: this node was silent for more than {self.settings.stall_timeout:g} s"
            worker.stop()  # type: ignore[no-untyped-call]
            self._retired.append(work)
        else:
            return
        self._retired = [t for t in self._retired if not t.done()]
        log.warning("cluster.worker_restarted", node=self.name, reason=reason)
        self._start_worker()

    def _compare(self, alive: list[Node]) -> None:
        """Say when the live nodes' configuration files stop or start agreeing with this one's."""
        me = next((n for n in alive if n.name == self.name), None)
        if me is None:
            return
        differing = {n.name: n.differs(me) for n in alive if n.name != self.name and n.config and n.differs(me)}
        if differing == self._differing:
            return
        self._differing = differing
        if differing:
            log.warning("cluster.config_differs", node=self.name, nodes=differing,
                        hint="deploy the same conf/ and jobs.d/ to every node, then reload each")
        else:
            log.info("cluster.config_agrees", node=self.name, nodes=sorted(n.name for n in alive))

    async def _beat(self) -> None:
        """Write this node's heartbeat, with its configuration files when a load changed them
        since they were last written. A reload while the write runs (``deployed``, on the
        loop) leaves its files to the next beat: marking them written after this one's
        would keep the other nodes comparing with the files of before the reload."""
        files = None if self._files_written else self._files
        await asyncio.to_thread(self.nodes.beat, self.name, self.owner, self._running(), files)
        if files is not None and files is self._files:
            self._files_written = True

    async def _maintain(self) -> None:
        stall, beat = self.settings.stall_timeout, self.settings.heartbeat
        while True:
            began = self._loop.time()
            try:
                await self._renew_worker()
                await self.queue.record_ends()
                await self._beat()
                alive = await asyncio.to_thread(self.nodes.alive)
                self._compare(alive)
                rehomed = await self.queue.rehome([n.name for n in alive])
                if rehomed:
                    log.info("cluster.jobs_rehomed", node=self.name, queue_jobs=rehomed,
                             reason="handed to a node no longer alive")
                failed = await asyncio.to_thread(self.nodes.take_over)
                for run_id in failed:
                    log.warning("cluster.run_taken_over", node=self.name, run_id=run_id)
                    await asyncio.to_thread(self._summarize, run_id)
                # One heartbeat later than the nodes' own: the dead node's locks are broken
                # (just above, by this node or another) before its jobs run again elsewhere.
                requeued = await self.queue.requeue_stalled(stall + beat)
                if requeued:
                    log.warning("cluster.jobs_requeued", node=self.name, queue_jobs=requeued)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be back at the next beat
                log.warning("cluster.heartbeat_failed", node=self.name, error=type(exc).__name__)
            else:
                took = self._loop.time() - began
                if took > beat:
                    # The store answering slowly, or not at all for a while (each statement
                    # waits up to the pool's timeout for a connection): the others may soon
                    # take this node for dead.
                    log.warning("cluster.heartbeat_slow", node=self.name, seconds=round(took, 1),
                                heartbeat=beat, stall_timeout=stall)
            await asyncio.sleep(beat)


def _failure(task: asyncio.Task[None]) -> str | None:
    """What ended a finished task on an error, told without the driver's SQL; None if none did."""
    failed = None if task.cancelled() else task.exception()
    return internal_message(failed) if failed is not None else None
