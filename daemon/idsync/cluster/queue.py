"""The cluster's job queue: Procrastinate, in the schema ``idsync_queue`` of the store's database.

Procrastinate is a PostgreSQL task queue: a job is a row, workers take one with
``FOR UPDATE SKIP LOCKED``, each worker writes a heartbeat, and the jobs of a worker
whose heartbeat stopped can be found and put back in the queue. idsync uses it for
what must happen once in the cluster, whichever node does it:

* ``idsync.job``: one run of a job of ``jobs.d/``. A scheduled fire is deferred
  with Procrastinate's periodic-defer function, keyed by the job and the fire's
  instant, which inserts the key and the job in one statement: however many nodes
  see the fire, one job is queued. The key is the fire as idsync's own schedule
  computes it (time zone, Quartz syntax, DST rules), not Procrastinate's UTC cron.
* ``idsync.partition``: help with the partitions of a split recon (``sync/partitions.py``).

A job whose run was stopped by its node's shutdown raises ``HandedOver``: the queue
puts it back, and another node runs it. A job the node taking it does not have in its
``jobs.d/`` (a deploy that has not reached it yet) raises ``NotDeployedHere``: put back in
the queue of a live node deployed with it (``node_queue``: a node's worker takes from
the common queue and from its own), or, when no live node has it, in the common queue a
second later, for a node deployed with it in the meantime (``HAND_BACKS`` times at most).
A job left in the queue of a node that is no longer alive goes back to the common queue
(``Queue.rehome``).

A worker records the end of a queue job only while the job is still its own
(``_OwnJobs``): a node silent for longer than ``stall_timeout`` (paused, cut off from
the store) has its queue jobs put back in the queue and run by another node, and when it
comes back the end of its stale run must not end the job the other node runs now.
A job put back while the next run of its job already waits (the queue keeps one waiting
run per job) is merged into that run, as a fire during a run is, and ended: never left
``doing``, holding the job's lock. An end the store refused (the store away) is recorded
again at each heartbeat (``Queue.record_ends``) until it is, rather than lost with the
job left ``doing`` by a node that lives on.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException, UniqueViolation
from procrastinate.jobs import Job, Status
from procrastinate.manager import QUEUEING_LOCK_CONSTRAINT, JobManager
from psycopg.conninfo import make_conninfo
from sqlalchemy import text

from idsync.cluster.schema import QueueSchema
from idsync.errors import internal_message
from idsync.store.database import Store

__all__ = ["COMMON_QUEUE", "HAND_BACKS", "SCHEMA", "HandedOver", "NotDeployedHere", "Queue", "node_queue"]

log = structlog.get_logger("idsync.cluster")

SCHEMA = "idsync_queue"
JOB_TASK = "idsync.job"
PARTITION_TASK = "idsync.partition"


HAND_BACKS = 10  # times a queue job is put back for another node before it is given up
COMMON_QUEUE = "default"  # Procrastinate's queue for what any node may run
_NODE_QUEUE = "node:"


def node_queue(node: str) -> str:
    """The queue of what only node ``node`` runs (a job handed back to it by a node without it)."""
    return _NODE_QUEUE + node


class HandedOver(Exception):
    """The run was stopped by this node's shutdown: the queue gives the job to another node."""


class NotDeployedHere(HandedOver):
    """The job is not in this node's ``jobs.d/``: the queue gives it to ``node``, a live node
    deployed with it, or to any node a second later when no live node has it."""

    def __init__(self, job: str, node: str | None) -> None:
        super().__init__(job)
        self.node = node


class _HandBack(BaseRetryStrategy):
    """Put a job back at once when its node stopped (``HandedOver``); when the node does not
    have it (``NotDeployedHere``), at once in the queue of a node that has it, or a second
    later in the common queue when none has (the node that took it may take it again at
    once, before the others look); never for another failure."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not isinstance(exception, HandedOver) or job.attempts >= HAND_BACKS:
            return None
        if isinstance(exception, NotDeployedHere):
            if exception.node is not None:
                return RetryDecision(retry_in={"seconds": 0}, queue=node_queue(exception.node))
            return RetryDecision(retry_in={"seconds": 1}, queue=COMMON_QUEUE)
        return RetryDecision(retry_in={"seconds": 0})


def _conninfo(store: Store) -> str:
    url = store.engine.url
    params: dict[str, Any] = {k: v for k, v in url.query.items() if isinstance(v, str)}
    for key, value in (("host", url.host), ("port", url.port), ("user", url.username),
                       ("password", url.password), ("dbname", url.database)):
        if value is not None:
            params[key] = value
    # The queue's objects are unqualified in Procrastinate's SQL: its schema comes first in the path.
    params["options"] = f"{params.get('options', '')} -c search_path={SCHEMA}".strip()
    return make_conninfo("", **params)


def _periodic_id(job: str, timestamp: int) -> str:
    # One key per fire: Procrastinate forgets a key's older timestamps when a newer one is
    # deferred, which would let a late node queue an older fire again.
    name = job if len(job) <= 100 else hashlib.sha256(job.encode()).hexdigest()
    return f"{name}@{timestamp}"


def _lock(job: str) -> str:
    # The queue runs one job of a name at a time, and keeps at most one more waiting.
    return f"job:{job}"


class _OwnJobs(JobManager):
    """Procrastinate's job manager, ending or retrying a job only while the worker that took
    it still has it: not once it was put back in the queue (``Queue.requeue_stalled`` of
    another node) and maybe taken by another worker. The check and the end are two
    statements, but a job is put back only after its worker was silent for
    ``stall_timeout``: not between them.

    Procrastinate's worker records a job's end in a task of its own whose failure nobody
    awaits: an end that raised would leave the job ``doing``, holding its job's lock, for
    as long as the node lives. So an end refused by the store is kept and recorded again
    at each heartbeat (``record_ends``), and a job put back while its job's next run
    already waits is merged into that run (``put_back``)."""

    def __init__(self, connector: PsycopgConnector, node: str) -> None:
        super().__init__(connector)
        self.node = node
        self._unrecorded: dict[int, Callable[[], Awaitable[object]]] = {}

    async def _still_mine(self, job: Job) -> bool:
        row = await self.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE id = %(id)s AND status = 'doing' "
            "AND worker_id IS NOT DISTINCT FROM %(worker)s", id=job.id, worker=job.worker_id)
        if row["n"]:
            return True
        log.warning("cluster.job_taken_over", queue_job=job.id, task=job.task_name, job=job.task_kwargs.get("job"),
                    reason="put back in the queue while this node was silent; its new run records its end")
        return False

    async def finish_job(self, job: Job, status: Status, delete_job: bool) -> None:
        await self._record(job, functools.partial(self._finish, job, status, delete_job))

    async def retry_job(self, job: Job, retry_at: dt.datetime | None = None, priority: int | None = None,
                        queue: str | None = None, lock: str | None = None) -> None:
        await self._record(job, functools.partial(self.put_back, job, retry_at, priority, queue, lock))

    async def _finish(self, job: Job, status: Status, delete_job: bool) -> None:
        if await self._still_mine(job):
            await super().finish_job(job, status, delete_job)

    async def put_back(self, job: Job, retry_at: dt.datetime | None = None, priority: int | None = None,
                       queue: str | None = None, lock: str | None = None) -> bool:
        """Put ``job`` back in the queue; False when it is not: no longer this worker's, or
        merged into the run of its job that already waits (then ended, its lock free)."""
        if not await self._still_mine(job):
            return False
        try:
            await super().retry_job(job, retry_at, priority, queue, lock)
        except UniqueViolation as exc:
            if exc.constraint_name != QUEUEING_LOCK_CONSTRAINT:
                raise
            args = job.task_kwargs
            log.info("job.skipped", job=args.get("job"), reason="queued", fire_time=args.get("fire"),
                     trigger=args.get("trigger"), node=self.node, queue_job=job.id,
                     merged="into the run of the job already waiting in the queue, which does its work")
            await super().finish_job(job, Status.SUCCEEDED, delete_job=False)
            return False
        return True

    async def _record(self, job: Job, end: Callable[[], Awaitable[object]]) -> None:
        try:
            await end()
        except Exception as exc:  # noqa: BLE001 - raised, it would be lost, the job left doing
            if job.id is not None:
                self._unrecorded[job.id] = end
            log.warning("cluster.job_end_unrecorded", node=self.node, queue_job=job.id, task=job.task_name,
                        job=job.task_kwargs.get("job"), error=_told(exc), hint="recorded again at the next heartbeat")

    async def record_ends(self) -> None:
        """Record again the ends of queue jobs the store refused; those it refuses again wait."""
        for job_id, end in list(self._unrecorded.items()):
            try:
                await end()
            except Exception:  # noqa: BLE001 - the store may be back at the next heartbeat
                continue
            del self._unrecorded[job_id]
            log.info("cluster.job_end_recorded", node=self.node, queue_job=job_id)


def _told(exc: BaseException) -> str:
    """The queue's error without its SQL: the driver's first line (``internal_message``)."""
    cause = exc.__cause__ if isinstance(exc, ConnectorException) and exc.__cause__ is not None else exc
    return internal_message(cause)


class Queue:
    """Procrastinate on the store's database, with idsync's two tasks."""

    def __init__(self, store: Store, max_connections: int, node: str = "") -> None:
        self.store = store
        connector = PsycopgConnector(conninfo=_conninfo(store), min_size=1, max_size=max_connections)
        self.app = App(connector=connector)
        self._jobs = _OwnJobs(connector, node)
        self.app.job_manager = self._jobs
        self._handlers: dict[str, Callable[..., Awaitable[None]]] = {}
        @self.app.task(name=JOB_TASK, retry=_HandBack(), pass_context=True)
        async def job_task(context: JobContext, job: str, trigger: str, fire: str | None = None,
                           timestamp: int | None = None) -> None:
            attempts = context.job.attempts if context.job is not None else 0
            await self._handlers[JOB_TASK](job=job, trigger=trigger, fire=fire, attempts=attempts)

        @self.app.task(name=PARTITION_TASK, retry=_HandBack())
        async def partition_task(run_id: str) -> None:
            await self._handlers[PARTITION_TASK](run_id=run_id)

    def prepare(self, other_versions: list[str]) -> None:
        """Create or upgrade the queue's schema (``schema.py``), one node at a time."""
        QueueSchema(self.store, SCHEMA).prepare(other_versions)

    def on(self, task: str, handler: Callable[..., Awaitable[None]]) -> None:
        self._handlers[task] = handler

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def defer_fire(self, job: str, timestamp: int, fire: str) -> bool | None:
        """Queue the fire of ``job`` at ``timestamp`` (epoch seconds) unless a node already did:
        True if this call queued it, False if another node had, None if a run of the job
        already waits in the queue (the fire is dropped, as a fire during a run is by one daemon)."""
        deferrer = self.app.configure_task(JOB_TASK, lock=_lock(job), queueing_lock=_lock(job), task_kwargs={
            "job": job, "trigger": "schedule", "fire": fire, "timestamp": timestamp})
        try:
            job_id = await deferrer.job_manager.defer_periodic_job(
                job=deferrer.job, periodic_id=_periodic_id(job, timestamp), defer_timestamp=timestamp)
        except AlreadyEnqueued:
            return None
        return job_id is not None

    async def defer_run(self, job: str, trigger: str, fire: str | None = None) -> bool:
        """Queue one run of ``job`` (by hand, or a fire missed while every node was down);
        False if a run of the job already waits in the queue."""
        deferrer = self.app.configure_task(JOB_TASK, lock=_lock(job), queueing_lock=_lock(job))
        try:
            await deferrer.defer_async(job=job, trigger=trigger, fire=fire)
        except AlreadyEnqueued:
            return False
        return True

    async def registered(self, worker_id: int) -> bool:
        """Whether worker ``worker_id`` is still in the queue's table of workers (another node
        removes a worker silent for ``stall_timeout``, and puts its jobs back in the queue)."""
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_workers WHERE id = %(id)s", id=worker_id)
        return bool(row["n"])

    async def waiting(self, job: str) -> bool:
        """Whether a run of ``job`` waits in the queue (a handed-over run is then not queued again)."""
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE queueing_lock = %(lock)s AND status = 'todo'",
            lock=_lock(job))
        return bool(row["n"])

    async def rehome(self, alive: list[str]) -> list[int]:
        """Put the waiting jobs of the queues of nodes not in ``alive`` back in the common
        queue (a node stopped or died before it took what was handed to it); their ids."""
        rows = await self.app.connector.execute_query_all_async(
            "UPDATE procrastinate_jobs SET queue_name = %(common)s WHERE status = 'todo' "
            "AND queue_name LIKE %(prefix)s AND NOT queue_name = ANY(%(alive)s) RETURNING id",
            common=COMMON_QUEUE, prefix=_NODE_QUEUE + "%", alive=[node_queue(n) for n in alive])
        return [r["id"] for r in rows]

    async def defer_partition_helpers(self, run_id: str, count: int) -> None:
        deferrer = self.app.configure_task(PARTITION_TASK)
        for _ in range(count):
            await deferrer.defer_async(run_id=run_id)

    async def requeue_stalled(self, stall: float) -> list[int]:
        """Put the jobs of workers silent for ``stall`` seconds back in the queue; their ids.

        A job whose next run already waits in the queue (same queueing lock) is merged into
        it instead (``_OwnJobs.put_back``): the waiting run does its work, and the job's
        queue lock is free."""
        stalled = list(await self._jobs.get_stalled_jobs(seconds_since_heartbeat=stall))
        requeued = []
        for job in stalled:
            try:
                if await self._jobs.put_back(job) and job.id is not None:
                    requeued.append(job.id)
            except ConnectorException:
                continue  # another node requeued it first
        await self._jobs.prune_stalled_workers(seconds_since_heartbeat=stall)
        return requeued

    async def record_ends(self) -> None:
        """Record the ends of queue jobs the store refused when they ended (``_OwnJobs``)."""
        await self._jobs.record_ends()

    def prune(self, older_than_hours: int) -> None:
        """Forget finished queue jobs and fire keys older than this."""
        with self.store.engine.begin() as conn:
            conn.execute(text(f"DELETE FROM {SCHEMA}.procrastinate_periodic_defers "
                              "WHERE defer_timestamp < extract(epoch from now())::bigint - :s"),
                         {"s": older_than_hours * 3600})
            conn.execute(text(f"DELETE FROM {SCHEMA}.procrastinate_jobs WHERE status IN "
                              "('succeeded', 'failed', 'cancelled', 'aborted') AND id NOT IN "
                              f"(SELECT job_id FROM {SCHEMA}.procrastinate_periodic_defers "
                              "WHERE job_id IS NOT NULL) AND id IN (SELECT job_id FROM "
                              f"{SCHEMA}.procrastinate_events WHERE at < now() - make_interval(hours => :h))"),
                         {"h": older_than_hours})
