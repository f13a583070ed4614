"""Job files: ``jobs.d/NAME.toml``, one scheduled job each.

The file name is the job name; only ``*.toml`` files are jobs, so renaming one
to ``NAME.toml.disabled`` takes it out. Every key is checked here, so a mistake
is a ``file: key: problem`` error when the daemon starts or reloads, not a
failed run at night. Unknown keys are errors too: a misspelt ``dry_run`` must
not silently write.

``load_jobs`` reads each file on its own and returns the good jobs and the
errors separately, so the daemon can keep the previous version of a job whose
file just broke while it applies the other files.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from idsync.config.schedule import CronSchedule, Schedule, ScheduleError
from idsync.config.tasks import ScriptTask, TaskScan
from idsync.errors import ConfigError, ConfigErrors, ConfigWarning
from idsync.keys import unknown_keys

__all__ = ["DEFAULT_MISFIRE_GRACE", "LIVESYNC_JOB", "NOT_RECON_JOBS", "PERFORM_JOB", "PUSH_JOBS", "JobDef", "KeyReader",
           "ScheduleEnded", "ended_schedules", "job_name_problem", "load_jobs", "parse_job"]

# The single-object runs: implicit sync, ``idsync sync retry``, the API's ``reconById``.
# Their names are reserved: no job file may take one.
PUSH_JOBS = ("implicit", "retry", "reconById")
# The runs of liveSync (one per mapping that had changes to apply): neither a push nor a recon.
LIVESYNC_JOB = "liveSync"
# The runs of an action taken by hand on one object (PingIDM's ``performAction``): never retried.
PERFORM_JOB = "performAction"
# Runs that are not full recons: never the "last complete recon" of a mapping.
NOT_RECON_JOBS = (*PUSH_JOBS, LIVESYNC_JOB, PERFORM_JOB)

# A fire missed while the daemon was down is still worth running within an hour;
# older than that, the next regular fire is nearer than the missed one mattered.
DEFAULT_MISFIRE_GRACE = 3600.0

_MAX_SECONDS = 366 * 86_400.0
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_KEYS = {
    "description",
    "schedule",
    "timezone",
    "mappings",
    "enabled",
    "misfire",
    "misfire_grace",
    "jitter",
    "timeout",
    "continue_on_failure",
    "dry_run",
    "allow_create",
    "allow_update",
    "allow_delete",
    "max_deletes",
    "page_size",
    "livesync",
    "rewrite_write_only",
}
_SOURCE = re.compile(r"^(system/[^/\s]+/[^/\s]+|managed/[^/\s]+)$")


class ScheduleEnded(ConfigWarning):
    """A job whose schedule has no fire left (a Quartz year, an ``endTime``, a ``repeatCount``,
    all past): it stays listed, with no next fire, and never fires. A warning rather than an
    error: a one-off job that has run is left in this state, and must not make the rest invalid."""


@dataclass(frozen=True)
class JobDef:
    """One job: what to run (mappings to reconcile, or sources to liveSync; options) and when (schedule)."""

    name: str
    file: str
    schedule: Schedule
    mappings: tuple[str, ...]
    description: str = ""
    enabled: bool = True
    misfire: Literal["run_once", "skip"] = "run_once"
    misfire_grace: float = DEFAULT_MISFIRE_GRACE
    jitter: float = 0.0
    timeout: float | None = None
    continue_on_failure: bool = False
    dry_run: bool = False
    allow_create: bool | None = None
    allow_update: bool | None = None
    allow_delete: bool | None = None
    max_deletes: int | float | None = None
    page_size: int | None = None
    # Write again the values a target never returns (a password), whatever the links' digests say.
    rewrite_write_only: bool = False
    # Sources whose changes the job applies (liveSync) instead of reconciling ``mappings``.
    livesync: tuple[str, ...] = ()
    # A PingIDM schedule's script or task scan (``config/tasks.py``), run instead of either.
    task: ScriptTask | TaskScan | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def timezone(self) -> str:
        return self.schedule.timezone.key

    def summary(self) -> dict[str, Any]:
        """What ``idsync jobs`` and the status file show of the job's definition."""
        return {
            "description": self.description,
            "file": self.file,
            "schedule": self.schedule.expression,
            "scheduleDescription": self.schedule.describe(),
            "timezone": self.timezone,
            "enabled": self.enabled,
            "mappings": list(self.mappings),
            "liveSync": list(self.livesync),
            "type": self.raw.get("type", "cron"),  # PingIDM's: a schedule's, cron for a jobs.d file
            "task": self.task.kind if self.task is not None else None,
            **({"invokeContext": _context_shown(self.raw.get("invokeContext"))} if self.task is not None else {}),
            "misfire": self.misfire,
        }

    def same_as(self, other: JobDef) -> bool:
        """Whether a reload changed nothing of this job."""
        return self.raw == other.raw and self.file == other.file


def load_jobs(
    jobs_dir: Path, known_mappings: Collection[str] | None = None
) -> tuple[dict[str, JobDef], list[ConfigError]]:
    """Every ``*.toml`` under ``jobs_dir``: the valid jobs by name, and the errors."""
    jobs: dict[str, JobDef] = {}
    errors: list[ConfigError] = []
    if not jobs_dir.is_dir():
        return jobs, errors
    for path in sorted(jobs_dir.glob("*.toml")):
        if not path.is_file():
            continue
        try:
            job = parse_job(path, known_mappings)
        except ConfigError as exc:
            errors.append(exc)
        else:
            jobs[job.name] = job
    return jobs, errors


# What the status file and the API show of a script or task-scan schedule's ``invokeContext``:
# what names the work. A script's source, its ``globals`` and ``input`` may carry credentials.
_SHOWN_CONTEXT = ("action", "mapping", "mappings", "source", "waitForCompletion", "numberOfThreads", "maxRecords")
_SHOWN_SCRIPT = ("type", "file", "name")
_SHOWN_SCAN = ("object",)


def _context_shown(context: Any) -> dict[str, Any] | None:
    """``context`` without any value that could be a secret (``_SHOWN_CONTEXT``)."""
    if not isinstance(context, dict):
        return None
    shown = {k: v for k, v in context.items() if k in _SHOWN_CONTEXT}
    for key, names in (("script", _SHOWN_SCRIPT), ("scan", _SHOWN_SCAN)):
        if isinstance(context.get(key), dict):
            shown[key] = {k: v for k, v in context[key].items() if k in names}
    if isinstance(task := context.get("task"), dict) and isinstance(task.get("script"), dict):
        shown["task"] = {"script": {k: v for k, v in task["script"].items() if k in _SHOWN_SCRIPT}}
    return shown


def ended_schedules(jobs: Collection[JobDef], now: dt.datetime) -> list[ScheduleEnded]:
    """A warning for each enabled job whose schedule fires no more after ``now``."""
    return [ScheduleEnded(job.file, "schedule" if job.raw.get("type", "cron") == "cron" else "",
                          f"{job.schedule.expression!r} matches no date in the future; the job never fires "
                          "(run it by hand with `idsync run-job`, or change or remove it)")
            for job in jobs if job.enabled and job.schedule.next_after(now) is None]


def job_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a job, or None."""
    if not _NAME.match(name):
        return "a job file name may only use letters, digits, '.', '_' and '-'"
    return None


def parse_job(path: Path, known_mappings: Collection[str] | None = None, text: str | None = None) -> JobDef:
    """The job of file ``path``; with ``text``, as if the file held it (a check before writing)."""
    file = str(path)
    name = path.name[: -len(".toml")]
    if problem := job_name_problem(name):
        raise ConfigError(file, "", problem)
    if name in NOT_RECON_JOBS:
        # Runs are told from one-object pushes by their job name: a full recon named so would not count as one.
        raise ConfigError(file, "", f"{name!r} is the name runs of single-object pushes, liveSync or performAction are "
                                    "recorded under; name the job file otherwise")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8") if text is None else text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.unreadable(file, exc) from None
    if unknown := unknown_keys(raw, _KEYS, file=file):
        raise ConfigErrors(unknown) if len(unknown) > 1 else unknown[0]
    r = KeyReader(file, raw)
    expression = r.get("schedule", str, required=True)
    try:
        schedule = CronSchedule.parse(expression, r.get("timezone", str, "UTC"))
    except ScheduleError as exc:
        key = "timezone" if "time zone" in str(exc) else "schedule"
        raise ConfigError(file, key, str(exc)) from None
    livesync = r.sources("livesync") if "livesync" in raw else ()
    if livesync and "mappings" in raw:
        raise ConfigError(file, "livesync", "a job runs liveSync of sources or reconciles mappings, not both")
    mappings = () if livesync else r.mappings(known_mappings)
    misfire = r.get("misfire", str, "run_once")
    if misfire not in ("run_once", "skip"):
        raise ConfigError(file, "misfire", f'expected "run_once" or "skip", not {misfire!r}')
    timeout = r.number("timeout", None)
    jitter = r.number("jitter", 0.0) or 0.0
    if jitter and jitter >= (interval := _shortest_interval(schedule)):
        # A delay past the next fire would reorder fires and skip some.
        raise ConfigError(file, "jitter", f"must be below the schedule's interval ({interval:g} s)")
    page_size = r.get("page_size", int, None)
    if page_size is not None and page_size < 1:
        raise ConfigError(file, "page_size", "must be at least 1")
    return JobDef(
        name=name,
        file=file,
        schedule=schedule,
        mappings=mappings,
        description=r.get("description", str, ""),
        enabled=r.get("enabled", bool, True),
        misfire=misfire,
        misfire_grace=r.number("misfire_grace", DEFAULT_MISFIRE_GRACE) or 0.0,
        jitter=jitter,
        timeout=timeout or None,
        continue_on_failure=r.get("continue_on_failure", bool, False),
        dry_run=r.get("dry_run", bool, False),
        allow_create=r.get("allow_create", bool, None),
        allow_update=r.get("allow_update", bool, None),
        allow_delete=r.get("allow_delete", bool, None),
        max_deletes=r.max_deletes(),
        page_size=page_size,
        rewrite_write_only=r.get("rewrite_write_only", bool, False),
        livesync=livesync,
        raw=raw,
    )


def _shortest_interval(schedule: CronSchedule) -> float:
    """The shortest time between the schedule's next fires; infinite when fewer than two are
    left (a Quartz year field): no jitter can then reorder them."""
    fires = schedule.next_fires(12, dt.datetime.now(dt.UTC))
    return min((b - a).total_seconds() for a, b in itertools.pairwise(fires)) if len(fires) > 1 else float("inf")


class KeyReader:
    """Typed access to one file's keys (a job file here, a PingIDM schedule in
    ``pingidm_schedules.py``); every failure names the key, and the value's type as the
    file's format calls it (``type_name``)."""

    def __init__(self, file: str, raw: dict[str, Any], type_name: Callable[[object], str] | None = None) -> None:
        self.file = file
        self.raw = raw
        self._type_name = type_name or _toml_type

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.raw:
            if required:
                raise ConfigError(self.file, key, "required")
            return default
        value = self.raw[key]
        # TOML booleans are ints to Python; keep them apart.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.file, key, f"expected {_KIND_NAMES[kind]}, got {self._type_name(value)}")
        return value

    def number(self, key: str, default: float | None) -> float | None:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.file, key, f"expected a number of seconds, got {_toml_type(value)}")
        if value < 0:
            raise ConfigError(self.file, key, "must not be negative")
        if not value <= _MAX_SECONDS:  # also NaN; beyond it the scheduler's clock arithmetic overflows
            raise ConfigError(self.file, key, f"must be at most {_MAX_SECONDS:g} seconds (a year)")
        return float(value)

    def mappings(self, known: Collection[str] | None) -> tuple[str, ...]:
        value = self.raw.get("mappings")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(self.file, "mappings", "expected a list of one or more mapping names")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(self.file, f"mappings[{i}]", "expected a mapping name")
            if known is not None and item not in known:
                names = ", ".join(sorted(known)) or "none configured"
                raise ConfigError(self.file, f"mappings[{i}]", f"unknown mapping {item!r} (known: {names})")
        self._once(value, "mappings")
        return tuple(value)

    def _once(self, items: list[str], key: str) -> None:
        """Refuse an item listed twice: the job would run it twice at every fire."""
        for i, item in enumerate(items):
            if (first := items.index(item)) != i:
                raise ConfigError(self.file, f"{key}[{i}]", f"{item!r} is listed twice (also {key}[{first}])")

    def sources(self, key: str, shown: str | None = None) -> tuple[str, ...]:
        """A resource name or a list of them (``system/ldap/account``, ``managed/user``); errors
        name the key as ``shown`` (its path in the file) when given."""
        value = self.raw.get(key)
        key = shown or key
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ConfigError(self.file, key, "expected a source such as \"system/ldap/account\", or a list of them")
        for i, item in enumerate(items):
            if not isinstance(item, str) or not _SOURCE.match(item):
                where = key if isinstance(value, str) else f"{key}[{i}]"
                raise ConfigError(self.file, where, f"expected a resource name such as \"system/ldap/account\", "
                                                    f"not {item!r}")
        self._once(items, key)
        return tuple(items)

    def max_deletes(self) -> int | float | None:
        value = self.raw.get("max_deletes")
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and (m := _PERCENT.match(value)):
            return float(m.group(1)) / 100
        raise ConfigError(self.file, "max_deletes", 'expected a number of objects or a percentage such as "5%"')


_KIND_NAMES: dict[type, str] = {str: "a string", bool: "true or false", int: "a whole number", dict: "an object"}


def _toml_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
