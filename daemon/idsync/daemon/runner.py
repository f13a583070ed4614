"""Running one job: its mappings in order (or its liveSync sources), under the job's store lock.

The same code runs a scheduled fire and ``idsync run-job``, so both take the
lock ``job:NAME`` in the store: one run of a job at a time across the daemon,
manual runs and other daemons on the same database. The lock is refreshed
while the job runs, so a crashed holder's lock expires on its own.

A job stops at the first mapping that ends FAILED unless
``continue_on_failure``; a cancel (SIGTERM, Ctrl-C, ``timeout``) stops it after
the current recon recorded itself CANCELED at its next page boundary.

A liveSync job (``livesync`` sources) runs every few seconds: its start, and its
end when it found nothing, are logged at debug, so an idle directory does not
fill the journal.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from idsync.config.jobs import JobDef
from idsync.errors import IdsyncError, RunLocked
from idsync.managed.router import run_livesync_scripted, run_recon_scripted
from idsync.managed.tasks import TaskResult, run_task
from idsync.store.database import Store, utcnow
from idsync.store.runs import LOCK_TTL, RunStore, owner_id
from idsync.sync.livesync import LiveSyncOptions, LiveSyncResult
from idsync.sync.options import ReconOptions
from idsync.sync.partitions import Splitter
from idsync.sync.progress import ProgressLog, expected_counts
from idsync.sync.recon import ReconResult

if TYPE_CHECKING:
    from idsync.config.project import Project

__all__ = ["JobOutcome", "MappingOutcome", "disabled_systems", "job_lock_name", "run_job"]

log = structlog.get_logger("idsync.job")

_REFRESH_EVERY = LOCK_TTL.total_seconds() / 5


def job_lock_name(job: str) -> str:
    return f"job:{job}"


@dataclass
class MappingOutcome:
    """What one mapping of a job ended with (one recon run, or why it did not start)."""

    mapping: str
    state: str
    run_id: str | None = None
    message: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "id": self.run_id,
            "state": self.state,
            "counts": self.counts,
            "error": self.message,
        }


@dataclass
class JobOutcome:
    """One run of a job: overall state and each mapping's outcome."""

    job: str
    id: str
    trigger: str
    dry_run: bool
    started: dt.datetime
    ended: dt.datetime | None = None
    state: str = "ACTIVE"
    message: str | None = None
    mappings: list[MappingOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        last = self.mappings[-1] if self.mappings else None
        totals: dict[str, int] = {}
        for m in self.mappings:
            for key, value in m.counts.items():
                totals[key] = totals.get(key, 0) + value
        return {
            "id": last.run_id if last else None,
            "jobRun": self.id,
            "state": self.state,
            "trigger": self.trigger,
            "dryRun": self.dry_run,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "counts": totals,
            "error": self.message,
            "runs": [m.to_json() for m in self.mappings],
        }


def run_job(
    project: Project,
    store: Store,
    job: JobDef,
    *,
    trigger: str = "schedule",
    dry_run: bool | None = None,
    cancel: threading.Event | None = None,
    on_start: Callable[[JobOutcome], None] | None = None,
    node: str | None = None,
    fire: dt.datetime | None = None,
    splitter: Splitter | None = None,
) -> JobOutcome:
    """Run ``job`` now in this thread; ``RunLocked`` if it already runs anywhere."""
    cancel = cancel or threading.Event()
    runs = RunStore(store)
    outcome = JobOutcome(
        job=job.name,
        id=str(uuid.uuid4()),
        trigger=trigger,
        dry_run=job.dry_run if dry_run is None else dry_run,
        started=utcnow(),
    )
    lock, owner = job_lock_name(job.name), f"{owner_id()}:{outcome.id}"
    runs.acquire(lock, owner)
    done = threading.Event()
    timed_out = threading.Event()
    refresher = threading.Thread(
        target=_keep_lock, args=(runs, lock, owner, done), name=f"lock-{job.name}", daemon=True
    )
    refresher.start()
    timer = _timeout_timer(job, cancel, timed_out)
    bound = log.bind(job=job.name, job_run=outcome.id, trigger=trigger, dry_run=outcome.dry_run)
    t0 = time.monotonic()
    try:
        with structlog.contextvars.bound_contextvars(job=job.name):
            (bound.debug if job.livesync else bound.info)("job.start", mappings=list(job.mappings),
                                                          livesync=list(job.livesync))
            if on_start is not None:
                on_start(outcome)
            if job.task is not None:
                _run_each([job.name], lambda _: _task_outcome(run_task(project, store, job, dry_run=outcome.dry_run,
                                                                       cancel=cancel, node=node, fire=fire,
                                                                       splitter=splitter)),
                          job, outcome, cancel)
            elif job.livesync:
                _run_livesync(project, store, job, outcome, cancel, node=node, splitter=splitter)
            else:
                _run_mappings(project, store, job, outcome, cancel, node=node, fire=fire, splitter=splitter)
    finally:
        if timer is not None:
            timer.cancel()
        done.set()
        outcome.ended = utcnow()
        outcome.state = _overall(outcome, len(job.mappings) or len(job.livesync) or 1, cancel)
        if timed_out.is_set():
            outcome.message = f"timed out after {job.timeout:g} s; canceled at a page boundary"
            _record_timeout(runs, outcome)
        try:
            runs.release(lock, owner)
        finally:
            # Told even when the store could not take the release (the next acquire makes it).
            _log_end(bound, job, outcome, t0)
    return outcome


def disabled_systems(project: Project, job: JobDef) -> dict[str, list[str]]:
    """The job's mappings (or liveSync sources) that read or write a system whose
    provisioner is disabled (``"enabled": false``, or the console's Enabled unticked), each
    with the provisioner files of those systems. PingIDM does not start a disabled
    provisioner: it logs so once, and a liveSync of it does nothing."""
    mappings = {m.name: m for m in project.mappings}
    out: dict[str, list[str]] = {}
    for part in job.livesync or job.mappings:
        mapping = mappings.get(part)
        names = (part,) if job.livesync else (mapping.source, mapping.target) if mapping is not None else ()
        files = project.disabled_files(names)
        if files:
            out[part] = files
    return out


def _log_end(bound: Any, job: JobDef, outcome: JobOutcome, t0: float) -> None:
    # A failed job is an error, a canceled one a warning: ``journalctl -p warning`` shows both.
    idle = job.livesync and not any(m.counts for m in outcome.mappings)
    end = {"SUCCESS": bound.debug if idle else bound.info, "CANCELED": bound.warning}.get(outcome.state, bound.error)
    end(
        "job.end",
        state=outcome.state,
        duration_ms=round((time.monotonic() - t0) * 1000),
        message=outcome.message,
        runs=[m.to_json() for m in outcome.mappings],
    )


def _run_mappings(project: Project, store: Store, job: JobDef, outcome: JobOutcome, cancel: threading.Event,
                  node: str | None, fire: dt.datetime | None, splitter: Splitter | None) -> None:
    def one(name: str) -> MappingOutcome:
        options = ReconOptions(
            dry_run=outcome.dry_run,
            allow_create=job.allow_create,
            allow_update=job.allow_update,
            allow_delete=job.allow_delete,
            max_deletes=job.max_deletes,
            page_size=job.page_size,
            rewrite_write_only=job.rewrite_write_only,
            job=job.name,
            cancel=cancel,
            node=node,
            fire=fire,
            splitter=splitter,
        )
        options.on_progress = ProgressLog(project.settings.recon.progress_interval,
                                          expected_counts(store, name)).update
        return _mapping_outcome(run_recon_scripted(project, store, name, options))

    _run_each(job.mappings, one, job, outcome, cancel)


def _run_livesync(project: Project, store: Store, job: JobDef, outcome: JobOutcome, cancel: threading.Event,
                  node: str | None, splitter: Splitter | None) -> None:
    def one(source: str) -> MappingOutcome:
        options = LiveSyncOptions(dry_run=outcome.dry_run, page_size=job.page_size, job=job.name, cancel=cancel,
                                  splitter=splitter, node=node)
        try:
            return _livesync_outcome(run_livesync_scripted(project, store, source, options))
        except RunLocked as exc:
            if outcome.trigger == "manual":
                raise
            # Another run of the source (another job naming it, ``idsync livesync``) applies its
            # changes now, and what it leaves the next run reads: a fire that finds it is no
            # failure, and goes on to the job's next source.
            log.info("job.livesync_skipped", job=job.name, source=source, holder=str(exc))
            return MappingOutcome(source, "SUCCESS", message=f"skipped: {exc}")

    _run_each(job.livesync, one, job, outcome, cancel)


def _run_each(names: Sequence[str], run_one: Callable[[str], MappingOutcome], job: JobDef, outcome: JobOutcome,
              cancel: threading.Event) -> None:
    """Run each mapping (or liveSync source) of ``job`` in turn: a cancel stops before the
    next, a failure too unless ``continueOnFailure``; the failures make the job's message."""
    for name in names:
        if cancel.is_set():
            break
        try:
            mapping = run_one(name)
        except IdsyncError as exc:  # before the run started: its lock, an unknown mapping or source
            mapping = MappingOutcome(name, "FAILED", message=str(exc))
        except Exception as exc:
            log.exception("job.mapping_crash", job=job.name, mapping=name)
            mapping = MappingOutcome(name, "FAILED", message=f"internal error: {type(exc).__name__}")
        outcome.mappings.append(mapping)
        if mapping.state == "CANCELED":
            break
        if mapping.state == "FAILED" and not job.continue_on_failure:
            outcome.message = f"{name}: {mapping.message or 'failed'}"
            break
    failed = [m for m in outcome.mappings if m.state == "FAILED"]
    if failed and outcome.message is None:
        outcome.message = "; ".join(f"{m.mapping}: {m.message or 'failed'}" for m in failed)


def _livesync_outcome(result: LiveSyncResult) -> MappingOutcome:
    """A liveSync run as a job's outcome: the source in place of a mapping, the counts of its runs."""
    counts: dict[str, int] = {}
    for run in result.runs:
        for key, value in (run.get("counts") or {}).items():
            counts[key] = counts.get(key, 0) + int(value)
    if result.full_recon:
        counts["fullRecons"] = len(result.runs)
    last = result.runs[-1]["id"] if result.runs else None
    return MappingOutcome(result.source, result.state, run_id=last, message=result.message, counts=counts)


def _task_outcome(result: TaskResult) -> MappingOutcome:
    """A scheduled script's or task scan's run as a job's outcome, under ``script/JOB`` or ``taskscanner/JOB``."""
    return MappingOutcome(result.name, result.state, run_id=result.id, message=result.message, counts=result.counts)


def _mapping_outcome(result: ReconResult) -> MappingOutcome:
    summary = result.summary or {}
    counts = {k: v for k, v in (summary.get("changes") or {}).items() if v}
    if summary.get("errorCount"):
        counts["errors"] = int(summary["errorCount"])
    return MappingOutcome(result.mapping, result.state, run_id=result.id, message=result.message, counts=counts)


def _overall(outcome: JobOutcome, planned: int, cancel: threading.Event) -> str:
    states = {m.state for m in outcome.mappings}
    if "CANCELED" in states:
        return "CANCELED"
    if "FAILED" in states:
        return "FAILED"
    if cancel.is_set() and len(outcome.mappings) < planned:
        return "CANCELED"
    return "SUCCESS"


def _timeout_timer(job: JobDef, cancel: threading.Event, timed_out: threading.Event) -> threading.Timer | None:
    if not job.timeout:
        return None

    def expire() -> None:
        timed_out.set()
        cancel.set()
        log.warning("job.timeout", job=job.name, timeout=job.timeout)

    timer = threading.Timer(job.timeout, expire)
    timer.daemon = True
    timer.start()
    return timer


def _record_timeout(runs: RunStore, outcome: JobOutcome) -> None:
    # The recon records a plain cancel; say in its record that the job's timeout caused it.
    for m in outcome.mappings:
        if m.state == "CANCELED" and m.run_id and runs.retell(m.run_id, "CANCELED", outcome.message):
            m.message = outcome.message


def _keep_lock(runs: RunStore, lock: str, owner: str, done: threading.Event) -> None:
    while not done.wait(_REFRESH_EVERY):
        try:
            runs.refresh(lock, owner)
        except Exception:
            log.warning("job.lock_refresh_failed", lock=lock, exc_info=True)
