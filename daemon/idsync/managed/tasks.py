"""PingIDM's scheduled scripts and task scanner (``config/tasks.py``), run by a job.

A run is recorded as recons are (``recon_runs``: ``idsync status``, the API, the
metrics), under ``script/JOB`` or ``taskscanner/JOB``.

A **script** runs once, with ``object`` bound to the schedule's ``input`` and
``openidm`` to the store, as from a mapping: its managed changes are validated and
pushed by implicit sync. Its error fails the run, with the script's message.

A **task scan** lists the ids of the managed objects its query selects (ids only,
held for the run: the tasks then change what the query selects), and for each:

1. reads it again; skips it when its task is already claimed (``taskState.started``)
   and the claim is younger than ``recovery.timeout`` (PingIDM's default 0: taken
   again at once);
2. claims it: ``started`` = now and ``completed`` = null, written with the revision
   it was read at, so two daemons never both claim one object (the loser reads it
   again and runs the task only if it is still unclaimed);
3. runs the task script with ``input`` (the object as claimed) and ``objectID``
   (``managed/TYPE/ID``); a script that returns ``true`` has done the task, and
   ``completed`` = now is written; anything else, or an error, fails that object
   (counted and audited, and the run goes on; a later run takes it again).

A dry run claims nothing and runs no script: it counts what is due.
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from idsync.config.tasks import ScriptTask, TaskScan, expand_time, stamp
from idsync.errors import IdsyncError, NotFound, RevisionMismatch
from idsync.managed.router import scripting
from idsync.managed.service import ManagedObjects
from idsync.query import parse
from idsync.query.ast import And, Compare, Node, Not, Present
from idsync.resource import Obj, QuerySpec, value_at
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.partitions import Splitter
from idsync.sync.summary import Counters

if TYPE_CHECKING:
    from idsync.config.jobs import JobDef
    from idsync.config.project import Project
    from idsync.scripts import Script

__all__ = ["TaskResult", "run_task"]

log = structlog.get_logger("idsync.tasks")

_CLAIM_TRIES = 5
# How often a task scan's record shows its counts (and that it is alive) while it works.
_PROGRESS_EVERY = 5.0


@dataclass
class TaskResult:
    """What one run of a scheduled script or task scan ended with."""

    name: str  # script/JOB, taskscanner/JOB
    id: str
    state: str
    message: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def run_task(project: Project, store: Store, job: JobDef, *, dry_run: bool, cancel: threading.Event,
             node: str | None = None, fire: dt.datetime | None = None,
             splitter: Splitter | None = None) -> TaskResult:
    """Run ``job``'s script or task scan now, in this thread, and record the run; a recon
    the script starts may split as the job's recons would (``splitter``)."""
    task = job.task
    assert task is not None
    name = f"{task.kind}/{job.name}"
    target = f"managed/{task.object_type}" if isinstance(task, TaskScan) else "script"
    counters = Counters(name, target, target, dry_run=dry_run)
    result = TaskResult(name, str(uuid.uuid4()), "ACTIVE")
    runs = RunStore(store)
    runs.start(result.id, name, job=job.name, dry_run=dry_run, summary=_summary(counters, {}), node=node, fire=fire)
    bound = log.bind(run_id=result.id, job=job.name, task=task.kind)
    t0 = time.monotonic()
    tally: dict[str, int] = {}
    try:
        script = project.scripts.compile(dict(task.script), file=job.file, key=task.script_key,
                                         base_dir=project.settings.project_dir)
        if isinstance(task, ScriptTask):
            if dry_run:
                tally["skipped"] = 1  # a script's writes cannot be previewed
            else:
                with scripting(project, store, cancel=cancel, splitter=splitter):
                    script(object=copy.deepcopy(task.input))
                tally["run"] = 1
        else:
            _TaskScan(project, store, task, script, counters, tally, result.id, name, dry_run, cancel).run()
        result.state = "CANCELED" if cancel.is_set() else ("FAILED" if tally.get("failures") else "SUCCESS")
        if result.state == "FAILED":
            result.message = f"{tally['failures']} of {tally.get('processed', 0)} tasks failed"
    except IdsyncError as exc:
        result.state, result.message = "FAILED", str(exc)
        counters.error(str(exc))
    except Exception as exc:  # recorded, never a dead daemon thread
        log.exception("task.crash", run_id=result.id, job=job.name)
        result.state, result.message = "FAILED", f"internal error: {type(exc).__name__}"
    result.counts = {k: v for k, v in tally.items() if v}
    counters.stage = "COMPLETED" if result.state == "SUCCESS" else result.state
    runs.finish(result.id, result.state, counters.stage, _summary(counters, tally), result.message)
    (bound.info if result.state == "SUCCESS" else bound.warning)(
        "task.end", state=result.state, message=result.message, counts=result.counts,
        duration_ms=round((time.monotonic() - t0) * 1000))
    return result


def _summary(counters: Counters, tally: dict[str, int]) -> dict[str, Any]:
    return counters.to_summary() | {"task": dict(tally)}


class _TaskScan:
    def __init__(self, project: Project, store: Store, task: TaskScan, script: Script, counters: Counters,
                 tally: dict[str, int], run_id: str, name: str, dry_run: bool, cancel: threading.Event) -> None:
        self.project, self.store, self.task, self.script = project, store, task, script
        self.counters, self.tally, self.run_id, self.name = counters, tally, run_id, name
        self.dry_run, self.cancel = dry_run, cancel
        self.runs = RunStore(store)
        self.started, self.completed = _path(task.started), _path(task.completed)
        self._shown = time.monotonic()
        self._lock = threading.Lock()  # the next id, the counts

    def run(self) -> None:
        now = dt.datetime.now(dt.UTC)
        with scripting(self.project, self.store) as router:
            resource = router.resources.open(f"managed/{self.task.object_type}")
            ids = [o["_id"] for page in resource.pages(QuerySpec(filter=self._filter(now), fields=[]))
                   for o in page if o.get("_id")]
        if self.task.max_records is not None:
            ids = ids[: self.task.max_records]
        self.tally["total"] = len(ids)
        self.counters.source_total = len(ids)
        if self.dry_run:
            self.tally["due"] = len(ids)
            return
        self.counters.stage = "ACTIVE_TASKS"
        threads = max(1, min(self.task.threads, len(ids)))
        log.info("task.scan", name=self.name, run_id=self.run_id, due=len(ids), threads=threads)
        due = iter(ids)
        if threads == 1:
            self._work(due)
            return
        # PingIDM's numberOfThreads: each thread takes the next id, with a script context and
        # a router of its own; the claim (a revision check) keeps two from running one task.
        with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=f"idsync-{self.name}") as pool:
            for done in [pool.submit(self._work, due) for _ in range(threads)]:
                done.result()

    def _work(self, due: Iterator[str]) -> None:
        with scripting(self.project, self.store) as router:
            objects = router.managed_objects(f"managed/{self.task.object_type}")
            while not self.cancel.is_set():
                with self._lock:
                    object_id = next(due, None)
                if object_id is None:
                    return
                outcome, message = self._one(objects, object_id)
                with self._lock:
                    self._count(object_id, outcome, message)

    def _count(self, object_id: str, outcome: str, message: str | None) -> None:
        self.tally["processed"] = self.tally.get("processed", 0) + 1
        self.counters.source_processed += 1
        self.tally[outcome] = self.tally.get(outcome, 0) + 1
        if outcome == "failures":
            self.counters.status["FAILURE"] += 1
            self.counters.error(message or "", source_id=object_id)
        elif outcome == "successes":
            self.counters.status["SUCCESS"] += 1
        if time.monotonic() - self._shown >= _PROGRESS_EVERY:
            # A long scan must not look like a run whose process is gone (``fail_abandoned``).
            self.runs.progress(self.run_id, self.counters.stage, _summary(self.counters, self.tally))
            self._shown = time.monotonic()

    def _filter(self, now: dt.datetime) -> Node:
        task = self.task
        try:
            if task.query_filter is not None:
                return parse(expand_time(task.query_filter, now))
            prop = _path(task.property or "")
            terms: list[Node] = [Not(Present(_path(task.completed)))]
            if task.before is not None:
                terms.append(Compare(prop, "lt", expand_time(task.before, now)))
            if task.after is not None:
                terms.append(Compare(prop, "gt", expand_time(task.after, now)))
            return And(tuple(terms))
        except ValueError as exc:
            raise IdsyncError(f"{self.name}: invokeContext.scan: {exc}") from None

    def _one(self, objects: ManagedObjects, object_id: str) -> tuple[str, str | None]:
        """Run one object's task: ``successes``, ``skipped`` or ``failures`` (and why)."""
        try:
            claimed = self._claim(objects, object_id)
            if claimed is None:
                return "skipped", None
            done = self.script(input=claimed, objectID=f"managed/{self.task.object_type}/{object_id}")
            if done is not True:
                raise IdsyncError(f"the task script returned {done!r}, not true: the task stays due")
            self._mark(objects, object_id, self.completed, stamp(dt.datetime.now(dt.UTC)))
        except NotFound:
            return "skipped", None  # gone since it was listed
        except IdsyncError as exc:
            self._audit(object_id, "FAILURE", str(exc))
            return "failures", str(exc)
        self._audit(object_id, "SUCCESS", None)
        return "successes", None

    def _claim(self, objects: ManagedObjects, object_id: str) -> Obj | None:
        """The object with its task claimed by this run, or None when it is not to be run now."""
        obj = objects.get(object_id)
        expected = value_at(obj, self.started)
        if expected is not None and not self._expired(expected):
            return None
        for _ in range(_CLAIM_TRIES):
            values = _set(obj, self.started, stamp(dt.datetime.now(dt.UTC)))
            values |= _set({**obj, **values}, self.completed, None)
            try:
                return objects.patch(object_id, _replace(values), rev=obj.get("_rev")).object or obj
            except RevisionMismatch:
                obj = objects.get(object_id)  # changed since read: still ours to claim?
                if value_at(obj, self.completed) is not None or value_at(obj, self.started) not in (None, expected):
                    return None
        return None

    def _expired(self, started: Any) -> bool:
        recovery = self.task.recovery or dt.timedelta(0)
        try:
            claimed = dt.datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        except ValueError:
            return True  # not a time this scanner wrote: taken again
        if claimed.tzinfo is None:
            claimed = claimed.replace(tzinfo=dt.UTC)
        return claimed + recovery <= dt.datetime.now(dt.UTC)

    def _mark(self, objects: ManagedObjects, object_id: str, path: tuple[str, ...], value: Any) -> None:
        for _ in range(_CLAIM_TRIES):
            obj = objects.get(object_id)
            try:
                objects.patch(object_id, _replace(_set(obj, path, value)), rev=obj.get("_rev"))
                return
            except RevisionMismatch:
                continue
        raise IdsyncError(f"{'/'.join(path)} could not be written: the object kept changing")

    def _audit(self, object_id: str, status: str, message: str | None) -> None:
        row = {"run_id": self.run_id, "mapping": self.name, "situation": None, "action": "TASK",
               "source_id": object_id, "target_id": None, "status": status, "message": message,
               "changes": None, "link_qualifier": None}
        with self.store.begin() as conn:
            self.runs.audit(conn, [row])


def _path(pointer: str) -> tuple[str, ...]:
    return tuple(p for p in pointer.split("/") if p)


def _set(obj: Obj, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The top-level property of ``path`` with ``value`` set at ``path`` (objects made on the way)."""
    top = path[0]
    if len(path) == 1:
        return {top: value}
    current = obj.get(top)
    root: dict[str, Any] = copy.deepcopy(current) if isinstance(current, dict) else {}
    node = root
    for part in path[1:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return {top: root}


def _replace(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"operation": "replace", "field": f"/{k}", "value": v} for k, v in values.items()]
