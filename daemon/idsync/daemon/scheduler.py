"""Putting jobs on APScheduler 3.x, with each job's semantics spelled out.

Per job, as PingIDM's ``schedule-*.json`` has them:

* **trigger**: ``CronScheduleTrigger``, the job's ``Schedule`` (cron with
  croniter and its DST rules, or an interval, either within a start and an end:
  ``config/schedule.py``) plus up to ``jitter`` seconds of random delay; past a
  schedule's end the trigger has no next fire, so the job never fires again;
* **one at a time**: ``max_instances=1``; a fire that comes while the job runs is
  dropped and logged ``job.skipped reason=running`` (at info for a liveSync job) (the store lock ``job:NAME``,
  taken by the runner, extends this to manual runs and other daemons);
* **misfire** ``run_once``: ``coalesce=True`` and ``misfire_grace_time`` = the
  job's ``misfire_grace`` (default one hour), so fires missed while the process
  was busy run once, late; fires missed while it was *down* are found from the
  store at start (``missed_fire``) and run once at once. ``skip``: a fire more
  than ``SKIP_TOLERANCE`` seconds late is dropped and logged ``job.skipped reason=misfire``.

APScheduler's own default grace of one second would silently drop a fire
whenever the event loop stalls for a moment; it is never used here. Its own
warnings for the fires ``job.skipped`` tells are left out of the log: they would
say again at warning, every few seconds, what a liveSync job's ``job.skipped``
says at info.

A job's function may be told the instant its fire was scheduled for (``FireTimeExecutor``,
``JobTable(fire_times=True)``): a cluster node keys the fire it queues by it, not by the
time its thread starts, which on a loaded machine may be past the job's next fire.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger

from idsync.config.jobs import JobDef
from idsync.config.schedule import Schedule

__all__ = ["SKIP_TOLERANCE", "CronScheduleTrigger", "FireTimeExecutor", "JobTable", "missed_fire"]

log = structlog.get_logger("idsync.scheduler")

# With misfire = "skip", how late a fire may still start: the event loop's own
# latency, not a catch-up window.
SKIP_TOLERANCE = 10


class _ToldAsSkipped(logging.Filter):
    """APScheduler's lines for a fire dropped while the job runs, or missed: ``job.skipped``."""

    _TOLD = ('Execution of job "%s" skipped: maximum number of running instances', 'Run time of job "%s" was missed')

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self._TOLD))


def _leave_out_skipped_fires() -> None:
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ToldAsSkipped) for f in logger.filters):
            logger.addFilter(_ToldAsSkipped())


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger backed by a job's ``Schedule``: cron or, for PingIDM's ``simple``
    schedules, an interval (the name predates them)."""

    def __init__(self, schedule: Schedule, jitter: float = 0.0) -> None:
        self.schedule = schedule
        self.jitter = jitter

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        # The previous fire time may carry jitter; jitter is below the interval,
        # so the next regular time after it is still the right one.
        after = previous_fire_time if previous_fire_time is not None else now - dt.timedelta(microseconds=1)
        fire = self.schedule.next_after(after)
        return _jittered(fire, self.jitter) if fire is not None else None

    def __str__(self) -> str:
        return f"schedule[{self.schedule.expression}, {self.schedule.timezone.key}]"


def _jittered(fire: dt.datetime, jitter: float) -> dt.datetime:
    """``fire`` delayed by up to ``jitter`` seconds of real time, at random. Added in UTC: in
    the job's zone, adding to the last minutes before clocks go back would count on the
    wall clock, past the change, and start the run an hour late."""
    if not jitter:
        return fire
    return (fire.astimezone(dt.UTC) + dt.timedelta(seconds=random.uniform(0, jitter))).astimezone(fire.tzinfo)


def missed_fire(job: JobDef, last_started: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The fire missed while the daemon was down that must run now, if any.

    Only ``misfire = "run_once"`` jobs catch up, only fires after the job's last
    recorded run (a job that never ran has missed nothing), and only the latest
    missed fire, if it is at most ``misfire_grace`` seconds old.
    """
    if job.misfire != "run_once" or last_started is None or not job.enabled:
        return None
    fire = job.schedule.previous_fire(before=now, since=last_started)
    if fire is None or (now - fire).total_seconds() > job.misfire_grace:
        return None
    return fire


class _Fired:
    """What APScheduler's ``run_job`` reads of a job, its keyword ``scheduled`` set to the
    instant this fire was scheduled for."""

    __slots__ = ("_job", "_jobstore_alias", "args", "func", "id", "kwargs", "misfire_grace_time")

    def __init__(self, job: Job, scheduled: dt.datetime) -> None:
        self._job = job
        self._jobstore_alias = job._jobstore_alias  # what the pool executor submits with
        self.id, self.func, self.args = job.id, job.func, job.args
        self.kwargs = {**job.kwargs, "scheduled": scheduled}
        self.misfire_grace_time = job.misfire_grace_time

    def __str__(self) -> str:
        return str(self._job)


_TOLD_COALESCED = 10  # fire times a ``job.skipped reason=coalesced`` lists
_COUNTED_COALESCED = 1000  # fire times it counts, at most


class FireTimeExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """APScheduler's thread pool, telling a job that asks for it (a ``scheduled`` keyword
    argument) the instant of the fire it runs for: the last of the fires run at once
    (coalesced). APScheduler calls a job's function with its arguments only.

    It also says which fires of a job's schedule APScheduler merged into the one it
    submits (``coalesce``: the process was busy or paused past them), which APScheduler
    drops without a word: ``job.skipped reason=coalesced``, at info (they run as the one
    fire, as ``misfire = "run_once"`` means)."""

    def __init__(self, max_workers: int = 10, pool_kwargs: dict[str, object] | None = None) -> None:
        super().__init__(max_workers, pool_kwargs)
        self._last: dict[str, tuple[object, dt.datetime]] = {}  # job id -> (its trigger, its last fire submitted)

    def submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        if run_times and isinstance(job.trigger, CronScheduleTrigger):
            last = self._last.get(job.id)
            self._last[job.id] = (job.trigger, run_times[-1])
            if last is not None and last[0] is job.trigger:  # a job replaced (a reload) starts afresh
                _tell_coalesced(job.id, job.trigger.schedule, last[1], run_times[0])
        super().submit_job(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        if "scheduled" in job.kwargs and run_times:
            job = _Fired(job, run_times[-1])
        super()._do_submit_job(job, run_times)


def _tell_coalesced(name: str, schedule: Schedule, previous: dt.datetime, first: dt.datetime) -> None:
    """Log the regular fires of ``schedule`` after ``previous`` (the last fire submitted)
    and before the regular fire of ``first`` (the first submitted now): those merged away."""
    regular = schedule.previous_fire(before=first, since=previous)
    if regular is None:
        return
    merged: list[dt.datetime] = []
    fire = schedule.next_after(previous)
    while fire is not None and fire < regular and len(merged) < _COUNTED_COALESCED:
        merged.append(fire)
        fire = schedule.next_after(fire)
    if merged:
        log.info("job.skipped", job=name, reason="coalesced",
                 fire_times=[f.isoformat() for f in merged[:_TOLD_COALESCED]],
                 count=len(merged), more=fire is not None and fire < regular,
                 hint="the process was busy or paused past these fires; they run as the next one")


class JobTable:
    """The jobs currently on the scheduler, kept equal to a set of ``JobDef``."""

    def __init__(self, scheduler: BaseScheduler, fire: Callable[..., object], instances: int = 1,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC), *, fire_times: bool = False) -> None:
        # ``instances`` > 1 where a fire only queues the run (cluster mode): a slow queueing
        # must not drop the next fire, and the queue keeps runs of a job one at a time.
        # ``fire_times``: ``fire`` takes a keyword ``scheduled``, the instant of the fire
        # (filled in by ``FireTimeExecutor``; None from another executor).
        self._scheduler = scheduler
        self._fire = fire
        self._instances = instances
        self._fire_kwargs: dict[str, object] = {"scheduled": None} if fire_times else {}
        self._now = now
        self.jobs: dict[str, JobDef] = {}
        scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        _leave_out_skipped_fires()

    def apply(self, jobs: dict[str, JobDef]) -> dict[str, list[str]]:
        """Schedule ``jobs``: add new ones, replace changed ones, remove the rest."""
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for name in sorted(set(self.jobs) - set(jobs)):
            self._remove(name)
            changes["removed"].append(name)
        for name, job in jobs.items():
            old = self.jobs.get(name)
            if old is not None and old.same_as(job):
                continue
            self._put(job)
            changes["changed" if old is not None else "added"].append(name)
        return changes

    def next_fire(self, name: str) -> dt.datetime | None:
        entry = self._scheduler.get_job(name)
        return entry.next_run_time if entry is not None else None

    def run_now(self, name: str) -> None:
        """Fire ``name`` once now, outside its schedule (a misfire catch-up)."""
        self._scheduler.add_job(
            self._fire,
            args=[name, "misfire"],
            id=f"{name}#catch-up",
            name=f"{name} (catch-up)",
            max_instances=1,
            misfire_grace_time=None,
            replace_existing=True,
        )

    def _put(self, job: JobDef) -> None:
        entry = self._scheduler.get_job(job.name)
        pending = self._pending_fire(entry, job)
        if entry is not None:
            self._scheduler.remove_job(job.name)
        self.jobs[job.name] = job
        if not job.enabled:
            return
        grace = int(job.misfire_grace) if job.misfire == "run_once" else SKIP_TOLERANCE
        trigger = CronScheduleTrigger(job.schedule, job.jitter)
        self._scheduler.add_job(
            self._fire,
            trigger=trigger,
            args=[job.name, "schedule"],
            kwargs=self._fire_kwargs,
            id=job.name,
            name=job.name,
            max_instances=self._instances,
            coalesce=True,
            misfire_grace_time=max(grace, 1),
            # A replaced job keeps the fire its old entry had not run yet (see ``_pending_fire``).
            **({"next_run_time": pending} if pending is not None else {}),
        )

    def _pending_fire(self, entry: Job | None, job: JobDef) -> dt.datetime | None:
        """The fire a replaced entry was waiting for, if it is due: the new entry's first.

        The scheduler runs a fire when its loop wakes for it, a moment after its time (later
        still while a reload reads the configuration on that loop, or within the job's
        jitter). A job rescheduled in that moment would start from "now", past the fire, and
        drop it; so the new entry starts at the first fire of the new schedule at or after
        the regular fire the old entry waited for. A fire not yet due is left to the new
        trigger, and a fire already run is never run again: every fire before the entry's
        next one has run."""
        waiting = getattr(entry, "next_run_time", None)  # none before the scheduler starts
        if waiting is None:
            return None
        old = self.jobs.get(job.name)
        regular = waiting
        if old is not None and old.jitter:
            # Jitter is below the interval: the last regular fire up to the jittered one is the one.
            since = waiting - dt.timedelta(seconds=old.jitter, microseconds=1)
            regular = old.schedule.previous_fire(before=waiting, since=since) or waiting
        fire = job.schedule.next_after(regular - dt.timedelta(microseconds=1))
        if fire is None or fire > self._now():
            return None  # the new trigger's own first fire (or none: the schedule ended)
        return _jittered(fire, job.jitter)

    def _remove(self, name: str) -> None:
        self.jobs.pop(name, None)
        if self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    def _on_event(self, event: JobEvent) -> None:
        name = str(event.job_id).split("#", 1)[0]
        if not name:
            return  # the daemon's own interval tasks (``#prune``, ...): late ones run at their next interval
        times = getattr(event, "scheduled_run_times", None) or [getattr(event, "scheduled_run_time", None)]
        fire_times = [t.isoformat() for t in times if isinstance(t, dt.datetime)]
        if event.code == EVENT_JOB_MAX_INSTANCES:
            # A liveSync job fires every few seconds: a run outlasting some fires (a full recon) is expected.
            frequent = name in self.jobs and bool(self.jobs[name].livesync)
            (log.info if frequent else log.warning)("job.skipped", job=name, reason="running",
                                                    fire_times=fire_times)
        elif event.code == EVENT_JOB_MISSED:
            log.warning(
                "job.skipped",
                job=name,
                reason="misfire",
                fire_times=fire_times,
                policy=self.jobs[name].misfire if name in self.jobs else None,
            )
