"""PingIDM schedules that run a script, or scan managed objects for tasks that are due.

``invokeService: "script"`` runs ``invokeContext.script`` (a script object) with
``object`` bound to ``invokeContext.input``, as PingIDM's script service does.

``invokeService: "taskscanner"`` is PingIDM's task scanner: ``invokeContext.scan``
selects managed objects (``object``, and a ``_queryFilter``, or the stock
``_queryId: "scan-tasks"`` with ``property`` and ``condition.before``/``after``),
``taskState.started``/``completed`` name the properties (JSON pointers) that mark
an object's task claimed and done, ``recovery.timeout`` when a claimed task that
never completed may be taken again, and ``invokeContext.task.script`` runs once
per object with ``input`` (the object) and ``objectID`` (``managed/user/ID``).
``${Time.now}``, ``${Time.now + 1d}``, ``${Time.now - 10m}`` in the scan's strings
are the time of the run (PingIDM's macros; units s, m, h, d, M, y).

Each key is checked here, so a mistake is a ``file: key: problem`` error of that
schedule; the scripts are compiled by ``validate`` and when the job runs.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from idsync.errors import ConfigError
from idsync.keys import suggest

__all__ = ["ScriptTask", "TaskScan", "expand_time", "parse_script_task", "parse_task_scan", "period", "stamp"]

_PERIOD = re.compile(r"^\s*(\d+)\s*([smhdMy])\s*$")
_MACRO = re.compile(r"(?<!\\)\$\{([^}]*)\}")
_POINTER = re.compile(r"^/[^/]+(/[^/]+)*$")
_SCAN_KEYS = {"_queryFilter", "_queryId", "object", "property", "condition", "taskState", "recovery"}
# PingIDM's default numberOfThreads, and a bound: each thread holds a script context and a connection.
DEFAULT_THREADS = 10
MAX_THREADS = 64
_CONTEXT_KEYS = {"waitForCompletion", "numberOfThreads", "maxRecords", "scan", "task"}


@dataclass(frozen=True)
class ScriptTask:
    """``invokeService: script``: one script run per fire."""

    script: Mapping[str, Any] = field(compare=False)
    input: Any = None
    kind: ClassVar[str] = "script"
    script_key: ClassVar[str] = "invokeContext.script"


@dataclass(frozen=True)
class TaskScan:
    """``invokeService: taskscanner``: the objects due, and the script run on each."""

    object_type: str  # "user" of managed/user
    query_filter: str | None  # with its ${Time.now} macros, expanded at each run
    property: str | None  # _queryId scan-tasks: the date property ...
    before: str | None  # ... and the bounds it is compared with
    after: str | None
    started: str  # JSON pointers: the task claimed, and done
    completed: str
    recovery: dt.timedelta | None
    max_records: int | None
    script: Mapping[str, Any] = field(compare=False)
    threads: int = DEFAULT_THREADS  # numberOfThreads: the objects taken by so many threads at once
    kind: ClassVar[str] = "taskscanner"
    script_key: ClassVar[str] = "invokeContext.task.script"


def parse_script_task(file: str, context: Mapping[str, Any]) -> ScriptTask:
    script = context.get("script")
    if not isinstance(script, dict):
        raise ConfigError(file, "invokeContext.script", "expected a script object (type and source or file)")
    return ScriptTask(script, context.get("input"))


def parse_task_scan(file: str, context: Mapping[str, Any]) -> TaskScan:
    unknown = sorted(set(context) - _CONTEXT_KEYS - {"action"})
    if unknown:
        raise ConfigError(file, f"invokeContext.{unknown[0]}", suggest(unknown[0], _CONTEXT_KEYS))
    for key, kind in (("waitForCompletion", bool), ("numberOfThreads", int)):
        if key in context and not isinstance(context[key], kind):
            expected = "true or false" if kind is bool else "a number"
            raise ConfigError(file, f"invokeContext.{key}", f"expected {expected}")
    threads = context.get("numberOfThreads", DEFAULT_THREADS)
    if isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise ConfigError(file, "invokeContext.numberOfThreads", f"expected a whole number from 1 to {MAX_THREADS}")
    max_records = context.get("maxRecords")
    if max_records is not None and (not isinstance(max_records, int) or isinstance(max_records, bool)
                                    or max_records < 1):
        raise ConfigError(file, "invokeContext.maxRecords", "expected a whole number of at least 1")
    scan = context.get("scan")
    if not isinstance(scan, dict):
        raise ConfigError(file, "invokeContext.scan", "expected an object (object, _queryFilter, taskState...)")
    unknown = sorted(set(scan) - _SCAN_KEYS)
    if unknown:
        raise ConfigError(file, f"invokeContext.scan.{unknown[0]}", suggest(unknown[0], _SCAN_KEYS))
    target = scan.get("object")
    if not isinstance(target, str) or not re.fullmatch(r"managed/[^/\s]+", target):
        raise ConfigError(file, "invokeContext.scan.object",
                          'expected a managed object type such as "managed/user" (idsync scans the store)')
    state = scan.get("taskState")
    if not isinstance(state, dict):
        raise ConfigError(file, "invokeContext.scan.taskState", 'expected {"started": "/...", "completed": "/..."}')
    pointers = {}
    for key in ("started", "completed"):
        value = state.get(key)
        if not isinstance(value, str) or not _POINTER.match(value):
            raise ConfigError(file, f"invokeContext.scan.taskState.{key}",
                              'expected a JSON pointer to a property, such as "/sunset/task-completed"')
        pointers[key] = value
    query_filter, prop, before, after = _selection(file, scan)
    recovery = None
    if "recovery" in scan:
        timeout = scan["recovery"].get("timeout") if isinstance(scan["recovery"], dict) else None
        try:
            recovery = period(timeout)
        except ValueError as exc:
            raise ConfigError(file, "invokeContext.scan.recovery.timeout", str(exc)) from None
    task = context.get("task")
    script = task.get("script") if isinstance(task, dict) else None
    if not isinstance(script, dict):
        raise ConfigError(file, "invokeContext.task.script", "expected a script object (type and source or file)")
    return TaskScan(target.split("/", 1)[1], query_filter, prop, before, after, pointers["started"],
                    pointers["completed"], recovery, max_records, script, threads)


def _selection(file: str, scan: Mapping[str, Any]) -> tuple[str | None, str | None, str | None, str | None]:
    """The scan's ``_queryFilter``, or the stock ``scan-tasks`` query's property and bounds."""
    if ("_queryFilter" in scan) == ("_queryId" in scan):
        raise ConfigError(file, "invokeContext.scan", 'give "_queryFilter", or "_queryId": "scan-tasks" with '
                                                      '"property" and "condition"')
    if "_queryFilter" in scan:
        if not isinstance(scan["_queryFilter"], str) or not scan["_queryFilter"].strip():
            raise ConfigError(file, "invokeContext.scan._queryFilter", "expected a query filter")
        for key in ("property", "condition"):
            if key in scan:
                raise ConfigError(file, f"invokeContext.scan.{key}", 'only with "_queryId": "scan-tasks"')
        return scan["_queryFilter"], None, None, None
    if scan["_queryId"] != "scan-tasks":
        raise ConfigError(file, "invokeContext.scan._queryId",
                          f'expected "scan-tasks" (the stock task scan query), not {scan["_queryId"]!r}; '
                          "or give a _queryFilter")
    prop = scan.get("property")
    if not isinstance(prop, str) or not _POINTER.match("/" + prop.lstrip("/")):
        raise ConfigError(file, "invokeContext.scan.property", 'expected the date property, such as "/sunset/date"')
    condition = scan.get("condition")
    if not isinstance(condition, dict) or not set(condition) & {"before", "after"} \
            or set(condition) - {"before", "after"}:
        raise ConfigError(file, "invokeContext.scan.condition",
                          'expected {"before": "${Time.now}"} and/or {"after": ...}')
    for key, value in condition.items():
        if not isinstance(value, str):
            raise ConfigError(file, f"invokeContext.scan.condition.{key}", "expected a date or a ${Time.now} macro")
        try:
            expand_time(value, dt.datetime.now(dt.UTC))
        except ValueError as exc:
            raise ConfigError(file, f"invokeContext.scan.condition.{key}", str(exc)) from None
    return None, "/" + prop.lstrip("/"), condition.get("before"), condition.get("after")


def period(text: Any) -> dt.timedelta:
    """``"10m"`` as a duration (s, m, h, d; M is 30 days and y 365 here)."""
    match = _PERIOD.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a number and a unit (s, m, h, d, M, y), such as \"10m\", not {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    days = {"d": 1, "M": 30, "y": 365}.get(unit)
    if days is not None:
        return dt.timedelta(days=amount * days)
    return dt.timedelta(seconds=amount * {"s": 1, "m": 60, "h": 3600}[unit])


def stamp(moment: dt.datetime) -> str:
    """A time as PingIDM writes one: ISO 8601 in UTC with milliseconds (``2026-12-06T10:00:00.000Z``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def expand_time(text: str, now: dt.datetime) -> str:
    """``text`` with each ``${Time.now}``, ``${Time.now + 1d}``, ``${Time.now - 10m}`` replaced
    by that time (``stamp``); ``ValueError`` for any other macro."""

    def one(match: re.Match[str]) -> str:
        tokens = match.group(1).split()
        if not tokens or tokens[0] != "Time.now" or len(tokens) not in (1, 3) \
                or (len(tokens) == 3 and tokens[1] not in "+-"):
            raise ValueError(f"unknown macro ${{{match.group(1)}}} (known: ${{Time.now}}, ${{Time.now + 1d}}, "
                             "${Time.now - 10m})")
        moment = now
        if len(tokens) == 3:
            moment = _moved(now, tokens[2], -1 if tokens[1] == "-" else 1)
        return stamp(moment)

    return _MACRO.sub(one, text)


def _moved(moment: dt.datetime, amount: str, sign: int) -> dt.datetime:
    match = _PERIOD.match(amount)
    if match is None:
        raise ValueError(f"expected a number and a unit (s, m, h, d, M, y) after + or -, not {amount!r}")
    count, unit = int(match.group(1)) * sign, match.group(2)
    if unit in "My":
        months = moment.month - 1 + count * (12 if unit == "y" else 1)
        year, month = moment.year + months // 12, months % 12 + 1
        return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))
    return moment + period(f"{abs(count)}{unit}") * (1 if count >= 0 else -1)
