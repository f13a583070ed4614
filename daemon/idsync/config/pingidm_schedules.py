"""PingIDM schedules: ``conf/schedule-NAME.json``, each a job named ``NAME``.

A schedule that runs a reconciliation (``invokeService`` sync or recon,
``invokeContext.action`` ``reconcile``), a liveSync (``invokeService``
provisioner, ``invokeContext`` ``{"action": "liveSync", "source": ...}``), a
script or a task scan (``invokeService`` script or taskscanner: ``config/tasks.py``)
becomes a ``JobDef`` like a ``jobs.d/NAME.toml`` job. One that PingIDM runs but
idsync does not (a custom bundle's service, a ``repeatCount`` without a
``startTime``) is an ``UnsupportedSchedule``: a warning naming the schedule, and
the job is not scheduled. Anything else wrong is a ``ConfigError`` naming the
file, the key and the problem.

When: ``"type": "cron"`` fires on the Quartz ``schedule``, ``"type": "simple"``
every ``repeatInterval`` milliseconds (at least 1000) from ``startTime``, or on a
grid from the Unix epoch when there is none (PingIDM fires first when its
scheduler starts; see ``config/schedule.py``), ``repeatCount`` times after the
first fire (-1: forever). Either kind fires only between ``startTime`` and
``endTime`` (both included), which without an offset are in the ``timeZone``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from idsync.config.files import load_json
from idsync.config.jobs import NOT_RECON_JOBS, JobDef, KeyReader, ended_schedules, job_name_problem, load_jobs
from idsync.config.schedule import (
    BoundedSchedule,
    CronSchedule,
    IntervalSchedule,
    Schedule,
    ScheduleError,
    parse_timezone,
)
from idsync.config.tasks import ScriptTask, TaskScan, parse_script_task, parse_task_scan
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import suggest

__all__ = ["UnsupportedSchedule", "load_all_jobs", "load_schedules", "merge_jobs", "parse_schedule", "schedule_path"]

_PREFIX = "schedule-"
_SUFFIX = ".json"
_KEYS = {
    "enabled",
    "type",
    "schedule",
    "timeZone",
    "misfirePolicy",
    "concurrentExecution",
    "persisted",
    "startTime",
    "endTime",
    "repeatInterval",
    "repeatCount",
    "invokeService",
    "invokeContext",
    "invokeLogLevel",
}
_PROVISIONER_SERVICES = ("provisioner", "org.forgerock.openidm.provisioner")
_SYNC_SERVICES = ("sync", "org.forgerock.openidm.sync", "recon", "org.forgerock.openidm.recon")
_SCRIPT_SERVICES = ("script", "org.forgerock.openidm.script")
_TASKSCANNER_SERVICES = ("taskscanner", "org.forgerock.openidm.taskscanner")
_MISFIRE: dict[str, Literal["run_once", "skip"]] = {"fireAndProceed": "run_once", "doNothing": "skip"}
_LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")


class UnsupportedSchedule(ConfigWarning):
    """A valid PingIDM schedule idsync does not run yet: a warning, and the job is not scheduled."""


def schedule_path(conf_dir: Path, name: str) -> Path:
    return conf_dir / f"{_PREFIX}{name}{_SUFFIX}"


def schedule_files(conf_dir: Path) -> list[Path]:
    return sorted(p for p in conf_dir.glob(f"{_PREFIX}*{_SUFFIX}") if p.is_file()) if conf_dir.is_dir() else []


def load_all_jobs(
    jobs_dir: Path, conf_dir: Path, known_mappings: Collection[str] | None = None
) -> tuple[dict[str, JobDef], list[ConfigError]]:
    """The ``jobs.d/*.toml`` jobs and the ``conf/schedule-*.json`` ones, by name, and the
    errors (a ``ConfigWarning`` among them, ``UnsupportedSchedule`` or ``ScheduleEnded``, is a
    warning; the job of a ``ScheduleEnded`` is among the jobs)."""
    files, errors = load_jobs(jobs_dir, known_mappings)
    schedules, problems = load_schedules(conf_dir, known_mappings)
    jobs, clashes = merge_jobs(files, schedules)
    errors.extend(problems)
    errors.extend(clashes)
    errors.extend(ended_schedules(jobs.values(), dt.datetime.now(dt.UTC)))
    return jobs, errors


def merge_jobs(files: Mapping[str, JobDef], schedules: Mapping[str, JobDef]) -> tuple[dict[str, JobDef],
                                                                                        list[ConfigError]]:
    """The job set of the ``jobs.d`` jobs ``files`` and the PingIDM ``schedules``, by name, and
    its errors: a name both define is the ``jobs.d`` file's job, the schedule an error."""
    jobs = dict(files)
    errors: list[ConfigError] = []
    for name, job in schedules.items():
        if name in jobs:
            errors.append(ConfigError(job.file, "", f"job {name!r} is also defined by {jobs[name].file}; "
                                                    "rename or remove one of them"))
        else:
            jobs[name] = job
    return dict(sorted(jobs.items())), errors


def load_schedules(
    conf_dir: Path, known_mappings: Collection[str] | None = None
) -> tuple[dict[str, JobDef], list[ConfigError]]:
    """Every ``schedule-*.json`` under ``conf_dir``: the jobs by name, and the errors and warnings."""
    jobs: dict[str, JobDef] = {}
    errors: list[ConfigError] = []
    for path in schedule_files(conf_dir):
        try:
            job = parse_schedule(path, known_mappings)
        except ConfigError as exc:
            errors.append(exc)
        else:
            jobs[job.name] = job
    return jobs, errors


def parse_schedule(path: Path, known_mappings: Collection[str] | None = None) -> JobDef:
    file = str(path)
    name = path.name[len(_PREFIX): -len(_SUFFIX)]
    if problem := job_name_problem(name):
        raise ConfigError(file, "", problem.replace("a job file name", "the name after 'schedule-'"))
    if name in NOT_RECON_JOBS:
        # PingIDM's stock liveSync schedule is schedule-liveSync.json, but runs of liveSync's
        # changes (and of pushes) are recorded under these names: the job takes the file's.
        name = path.name[: -len(_SUFFIX)]
    # ``&{NAME}`` tokens and ``X_file`` keys, as in every JSON file (a script's source is left as written).
    raw = load_json(path, project_dir=path.parent.parent)
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "expected a JSON object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(file, unknown[0], suggest(unknown[0], _KEYS))
    r = KeyReader(file, raw, _json_type)
    enabled = r.get("enabled", bool, True)
    for key in ("concurrentExecution", "persisted"):
        r.get(key, bool, False)
    level = r.get("invokeLogLevel", str, "info")
    if level.lower() not in _LOG_LEVELS:
        raise ConfigError(file, "invokeLogLevel", f"expected one of {', '.join(_LOG_LEVELS)}, not {level!r}")
    misfire_policy = r.get("misfirePolicy", str, "fireAndProceed")
    if misfire_policy not in _MISFIRE:
        raise ConfigError(file, "misfirePolicy", f'expected "fireAndProceed" or "doNothing", not {misfire_policy!r}')
    mappings, livesync, task = _invocation(r, name, known_mappings)
    schedule = _schedule(r, name)
    return JobDef(
        name=name,
        file=file,
        schedule=schedule,
        mappings=mappings,
        enabled=enabled,
        misfire=_MISFIRE[misfire_policy],
        livesync=livesync,
        task=task,
        raw=raw,
    )


def _schedule(r: KeyReader, name: str) -> Schedule:
    """The schedule's fire times: its ``type``, within ``startTime`` and ``endTime``."""
    file = r.file
    try:
        timezone = parse_timezone(r.get("timeZone", str, "UTC"))
    except ScheduleError as exc:
        raise ConfigError(file, "timeZone", str(exc)) from None
    start, end = _instant(r, "startTime", timezone), _instant(r, "endTime", timezone)
    if start is not None and end is not None and end < start:
        raise ConfigError(file, "endTime", f"{r.raw['endTime']} is before startTime {r.raw['startTime']}")
    kind = r.get("type", str, "cron")
    if kind == "simple":
        schedule: Schedule
        schedule, last = _interval(r, name, timezone, start)
        if last is not None:
            end = last if end is None else min(end, last)
    elif kind == "cron":
        for key in ("repeatInterval", "repeatCount"):
            if key in r.raw:
                raise ConfigError(file, key, 'only for type "simple"')
        schedule = _cron(r, timezone)
    else:
        raise ConfigError(file, "type", f'expected "cron" or "simple", not {kind!r}')
    return schedule if start is None and end is None else BoundedSchedule(schedule, start, end)


def _interval(r: KeyReader, name: str, timezone: ZoneInfo,
              start: dt.datetime | None) -> tuple[IntervalSchedule, dt.datetime | None]:
    """A ``simple`` schedule's ``repeatInterval`` (milliseconds), anchored at ``start``, and
    the last fire its ``repeatCount`` allows (None: forever)."""
    file = r.file
    millis = r.get("repeatInterval", int, required=True)
    interval = dt.timedelta(milliseconds=millis)
    try:
        # Without a startTime, the schedule's own anchor: fires do not depend on when the daemon started.
        schedule = IntervalSchedule(interval, timezone) if start is None else IntervalSchedule(interval, timezone,
                                                                                              anchor=start)
    except ScheduleError:
        raise ConfigError(file, "repeatInterval", f"expected 1000 milliseconds (one second) or more, "
                                                  f"not {millis}") from None
    count = r.get("repeatCount", int, -1)
    if count < -1:
        raise ConfigError(file, "repeatCount", f"expected -1 (forever) or a number of repeats, not {count}")
    if count == -1:
        return schedule, None
    if start is None:
        # Without an anchor the repeats would be counted again from each start of the daemon.
        raise UnsupportedSchedule(file, "repeatCount", f"schedule {name!r}: repeatCount {count} without a "
                                                       "startTime is not supported (a daemon that restarts cannot "
                                                       "count the repeats); not scheduled (add a startTime, or "
                                                       "repeatCount -1 to repeat forever)")
    # PingIDM counts the repeats after the first fire, which is at startTime.
    return schedule, start + count * interval


def _cron(r: KeyReader, timezone: ZoneInfo) -> CronSchedule:
    file = r.file
    expression = r.get("schedule", str, required=True)
    if len(expression.split()) not in (6, 7):
        # PingIDM reads Quartz only: a 5-field cron line would mean something else to it.
        raise ConfigError(file, "schedule", f"{len(expression.split())} fields; expected a Quartz expression "
                                            "(6 or 7 fields, seconds first, such as \"0 0/15 * * * ?\")")
    try:
        return CronSchedule.parse(expression, timezone)
    except ScheduleError as exc:
        raise ConfigError(file, "schedule", str(exc)) from None


def _invocation(r: KeyReader, name: str, known: Collection[str] | None,
                ) -> tuple[tuple[str, ...], tuple[str, ...], ScriptTask | TaskScan | None]:
    """The mappings a reconcile schedule runs, the source a liveSync schedule reads, or the
    script or task scan it runs; a schedule idsync cannot run is an ``UnsupportedSchedule``."""
    file = r.file
    service = r.get("invokeService", str, required=True)
    context = r.get("invokeContext", dict, required=True)
    if service in _SCRIPT_SERVICES:
        return (), (), parse_script_task(file, context)
    if service in _TASKSCANNER_SERVICES:
        return (), (), parse_task_scan(file, context)
    action = context.get("action")
    if action == "liveSync":
        if service not in _PROVISIONER_SERVICES:
            raise ConfigError(file, "invokeService", f'a liveSync schedule invokes "provisioner", not {service!r}')
        sources = KeyReader(file, context, _json_type).sources("source", "invokeContext.source")
        if len(sources) != 1:
            raise ConfigError(file, "invokeContext.source", 'expected one source such as "system/ldap/account"')
        return (), sources, None
    if service not in _SYNC_SERVICES:
        raise UnsupportedSchedule(file, "invokeService", f"schedule {name!r}: invokeService {service!r} (only sync, "
                                                         "recon, provisioner liveSync, script and taskscanner "
                                                         "run) is not supported yet; not scheduled")
    if action != "reconcile":
        raise ConfigError(file, "invokeContext.action", f'expected "reconcile", not {action!r}')
    if "mapping" in context and "mappings" in context:
        raise ConfigError(file, "invokeContext", 'give "mapping" or "mappings", not both')
    key = "invokeContext.mappings" if "mappings" in context else "invokeContext.mapping"
    value = context.get("mappings", context.get("mapping"))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(file, key, "expected a mapping name or a list of one or more")
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]" if "mappings" in context else key
        if not isinstance(item, str) or not item:
            raise ConfigError(file, item_key, "expected a mapping name")
        if known is not None and item not in known:
            names = ", ".join(sorted(known)) or "none configured"
            raise ConfigError(file, item_key, f"unknown mapping {item!r} (known: {names})")
    return tuple(value), (), None


def _instant(r: KeyReader, key: str, timezone: ZoneInfo) -> dt.datetime | None:
    """An ISO 8601 date and time; without an offset, in the schedule's ``timeZone``."""
    if key not in r.raw:
        return None
    value = r.raw[key]
    try:
        if not isinstance(value, str):
            raise ValueError
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(r.file, key, "expected an ISO 8601 date and time such as 2026-01-01T00:00:00Z") from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=timezone)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)
