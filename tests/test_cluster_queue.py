"""The cluster's queue (``cluster/queue.py``) run in this process, with a Procrastinate worker
of its own on the PostgreSQL store: how the end of a queue job is recorded when the
queue refuses it as asked."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from cluster_env import fresh_store, reset_queue, select_rows
from dbs import store_url
from idsync.cluster.queue import COMMON_QUEUE, JOB_TASK, SCHEMA, NotDeployedHere, Queue
from idsync.cluster.schema import QueueSchema
from idsync.store.database import Store
from procrastinate.exceptions import ConnectorException
from procrastinate.manager import JobManager
from procrastinate.worker import Worker

pytestmark = pytest.mark.postgresql

FIRST = int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp())


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    url = fresh_store(store_url("postgresql", tmp_path))
    reset_queue(url)
    store = Store.open(url)
    QueueSchema(store, SCHEMA).prepare([])
    yield Queue(store, max_connections=4, node="n0")
    store.engine.dispose()


def _fire(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def _queue_jobs(queue: Queue) -> list[tuple[str | None, str]]:
    url = queue.store.engine.url.render_as_string(hide_password=False)
    rows = select_rows(url, f"SELECT args->>'fire' AS fire, status FROM {SCHEMA}.procrastinate_jobs ORDER BY id")
    return [(r.fire, r.status) for r in rows]


async def _work(queue: Queue, handler: Any, unretrieved: list[str]) -> None:
    """Run ``handler`` on the queue's jobs until none is left to take."""
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context["message"]))
    queue.on(JOB_TASK, handler)
    await queue.open()
    try:
        await Worker(queue.app, queues=[COMMON_QUEUE], wait=False, install_signal_handlers=False).run()  # type: ignore[no-untyped-call]
        gc.collect()  # a failed task no one awaited says so when collected
        await asyncio.sleep(0)
    finally:
        await queue.close()


def test_a_fire_handed_back_while_the_next_one_waits_is_merged_into_it(queue: Queue) -> None:
    """A node without the job hands a fire back (``NotDeployedHere``) while the job's next
    fire already waits in the queue, which keeps one waiting run per job: the handed-back
    fire is merged into the waiting one (``job.skipped reason=queued``, with ``merged``) and
    its queue job ended, so the job's lock is free and the waiting fire runs. Before, the
    put-back failed on the queue's unique lock in a task no one awaited ("Task exception
    was never retrieved") and the queue job stayed ``doing`` for good, every later fire
    of the job dropped as ``queued``."""
    ran: list[str | None] = []

    async def handler(job: str, trigger: str, fire: str | None, attempts: int) -> None:
        ran.append(fire)
        if len(ran) == 1:
            # The next fire is queued between the take and the hand-back.
            assert await queue.defer_fire(job, FIRST + 1, _fire(FIRST + 1)) is True
            raise NotDeployedHere(job, "n1")

    async def scenario(unretrieved: list[str]) -> None:
        await queue.open()
        try:
            assert await queue.defer_fire("j1", FIRST, _fire(FIRST)) is True
        finally:
            await queue.close()
        await _work(queue, handler, unretrieved)

    unretrieved: list[str] = []
    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario(unretrieved))
    assert ran == [_fire(FIRST), _fire(FIRST + 1)]
    assert _queue_jobs(queue) == [(_fire(FIRST), "succeeded"), (_fire(FIRST + 1), "succeeded")]
    merged = [e for e in logs if e["event"] == "job.skipped"]
    assert len(merged) == 1 and merged[0]["reason"] == "queued" and merged[0]["fire_time"] == _fire(FIRST)
    assert "merged" in merged[0] and merged[0]["node"] == "n0"
    assert unretrieved == []
    assert "procrastinate_jobs" not in repr(logs) and "UPDATE" not in repr(logs)


def test_an_end_the_store_refused_is_recorded_at_a_later_heartbeat(queue: Queue,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a queue job that the store refuses (the store away as the run ended) is
    logged without SQL (``cluster.job_end_unrecorded``) and recorded at a later heartbeat
    (``Queue.record_ends``), freeing the job's lock: before, the job stayed ``doing``, holding
    it, as long as the node lived, and the job's later fires were all dropped."""
    refusals = [ConnectorException("connection failed: server closed the connection")]
    finish = JobManager.finish_job

    async def away_once(self: JobManager, *args: Any, **kwargs: Any) -> None:
        if refusals:
            raise refusals.pop() from OSError("connection failed: server closed the connection\n"
                                              'CONTEXT: SQL statement "SELECT procrastinate_finish_job_v1(%(job_id)s)"')
        await finish(self, *args, **kwargs)

    monkeypatch.setattr(JobManager, "finish_job", away_once)

    async def handler(job: str, trigger: str, fire: str | None, attempts: int) -> None:
        pass

    async def scenario(unretrieved: list[str]) -> tuple[list[tuple[str | None, str]], list[tuple[str | None, str]]]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, c: unretrieved.append(c["message"]))
        queue.on(JOB_TASK, handler)
        await queue.open()
        worker = Worker(queue.app, queues=[COMMON_QUEUE], wait=True, install_signal_handlers=False)
        work = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]
        try:
            assert await queue.defer_run("j1", "manual") is True
            while refusals:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            gc.collect()
            before = await asyncio.to_thread(_queue_jobs, queue)
            await queue.record_ends()  # the next heartbeat
            return before, await asyncio.to_thread(_queue_jobs, queue)
        finally:
            worker.stop()  # type: ignore[no-untyped-call]
            await work
            await queue.close()

    unretrieved: list[str] = []
    with structlog.testing.capture_logs() as logs:
        before, after = asyncio.run(scenario(unretrieved))
    assert before == [(None, "doing")]
    assert after == [(None, "succeeded")]
    events = [e["event"] for e in logs if e["event"].startswith("cluster.")]
    assert events == ["cluster.job_end_unrecorded", "cluster.job_end_recorded"]
    assert "procrastinate_finish_job" not in repr(logs)
    assert unretrieved == []
