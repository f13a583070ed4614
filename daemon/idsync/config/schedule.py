"""Schedules: when a job fires. Three kinds share one interface (``Schedule``):

* ``CronSchedule``, a job's cron or Quartz ``schedule``;
* ``IntervalSchedule``, a fixed interval (a PingIDM ``"type": "simple"`` schedule);
* ``BoundedSchedule``, either of them between a start and an end (PingIDM's
  ``startTime`` and ``endTime``, and the last fire of a ``repeatCount``).

Three cron notations are accepted, told apart by their shape:

* ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``);
* standard 5-field cron: minute hour day-of-month month day-of-week (0 or 7 = Sunday);
* Quartz, 6 or 7 fields: second minute hour day-of-month month day-of-week [year],
  with ``?``, ``L``, ``W`` and ``#``, and Quartz's day-of-week numbering
  (1 = Sunday ... 7 = Saturday), which is rewritten to cron's before croniter
  parses it. As in Quartz, day of month and day of week are not both set
  (croniter would read that as cron's "either day"), and a ``nW`` day beyond the
  28th skips the months without that day (croniter alone would fire the weekday
  nearest the month's last day).

In 5-field cron, a ``W`` day beside a day of week, or a ``#`` or ``L`` day of week
beside a day of month, is refused: croniter fires the first as the W day alone and
finds no date for the second, neither what crontab nor Quartz would do. Quartz's
``5L`` is refused there too, saying that cron writes it ``L5`` (days from 0 = Sunday).

Time zones: croniter walks *wall-clock* times (naive datetimes in the job's
zone) and each one is then placed on the real time line here, so daylight-saving
changes follow one rule: a wall-clock time that happens twice (autumn) fires at
its first occurrence only, and one that does not exist (spring) fires when the
gap ends. Fire times are strictly increasing, so several times falling into one
gap collapse into a single run: no run is skipped and none is doubled. Looking
back (``previous_fire``, the misfire catch-up) finds exactly these fires too.

An interval counts real time, not wall-clock time (daylight saving does not
move it), from an anchor: the start time when there is one, otherwise the Unix
epoch (1970-01-01T00:00:00Z). Fires therefore do not depend on when the daemon
started: every hour is on the hour UTC, after a restart too. PingIDM instead
fires an unanchored ``simple`` schedule first when its scheduler starts.
Intervals below one second are refused: a cluster queues each fire under its
whole-second timestamp, and Quartz cron cannot fire more often either.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from idsync.config.schedule_words import describe_cron

__all__ = ["BoundedSchedule", "CronSchedule", "IntervalSchedule", "Schedule", "ScheduleError", "parse_timezone"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UTC = dt.UTC
# A wall-clock time inside a gap is moved forward minute by minute until it exists, and
# the end of a repeated hour is found alike; real gaps and repeats are at most a couple of hours.
_GAP_SEARCH = dt.timedelta(hours=26)
# croniter's messages quote its own rewritten form of the expression in brackets.
_BRACKETED = re.compile(r"\[[^\]]*\]")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_TICK = dt.timedelta(microseconds=1)


class ScheduleError(ValueError):
    """The expression or time zone is not valid; the message says why (no file, no key)."""


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (expected an IANA name such as Europe/Stockholm)") from None


class Schedule(Protocol):
    """What the scheduler, ``idsync jobs`` and the status file use of a job's schedule."""

    @property
    def expression(self) -> str: ...

    @property
    def timezone(self) -> ZoneInfo: ...

    def describe(self) -> str: ...

    def next_after(self, instant: dt.datetime) -> dt.datetime | None:
        """The first fire strictly after ``instant``, or None when there is none any more."""

    def next_fires(self, count: int, after: dt.datetime) -> list[dt.datetime]: ...

    def previous_fire(self, before: dt.datetime, since: dt.datetime) -> dt.datetime | None:
        """The last fire time in ``(since, before]``, or None."""


@dataclass(frozen=True)
class CronSchedule:
    """One parsed ``schedule`` in one time zone."""

    expression: str
    timezone: ZoneInfo
    _cron: str
    _seconds: bool
    # A ``nW`` day beyond the 28th: the least number of days a month that fires has. croniter
    # fires the weekday nearest the month's last day in a shorter month; Quartz skips it.
    _least_days: int = 0

    @classmethod
    def parse(cls, expression: str, timezone: str | ZoneInfo = "UTC") -> CronSchedule:
        tz = timezone if isinstance(timezone, ZoneInfo) else parse_timezone(timezone)
        text = " ".join(expression.split())
        if not text:
            raise ScheduleError("empty schedule")
        if text.startswith("@"):
            if text.lower() not in _MACROS:
                raise ScheduleError(f"unknown macro {text!r} (known: {', '.join(sorted(_MACROS))})")
            cron, seconds = _MACROS[text.lower()], False
        else:
            fields = text.split(" ")
            if len(fields) == 5:
                _check_ranges(expression, fields, _CRON_RANGES)
                _check_cron_days(fields)
                cron, seconds = " ".join("*" if f == "?" else f for f in fields), False
            elif len(fields) in (6, 7):
                _check_ranges(expression, fields, _QUARTZ_RANGES)
                cron, seconds = _from_quartz(fields), True
            else:
                raise ScheduleError(
                    f"{len(fields)} fields; expected 5 (cron: minute hour day month weekday), "
                    "6 or 7 (Quartz: second minute hour day month weekday [year]) "
                    "or a macro such as @hourly"
                )
        try:
            # Walking once also catches expressions that parse but never match.
            croniter(cron, dt.datetime(2000, 1, 1), second_at_beginning=seconds).get_next(dt.datetime)
        except Exception as exc:  # noqa: BLE001 - croniter raises many kinds
            raise ScheduleError(f"invalid expression {expression!r}: {_reason(exc)}") from None
        return cls(expression, tz, cron, seconds, _short_months(expression, cron, seconds))

    # -- fire times ------------------------------------------------------------

    def next_after(self, instant: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after ``instant`` (an aware datetime), in the job's zone;
        None once a Quartz year field has no later date."""
        return next(self.iter_after(instant), None)

    def iter_after(self, instant: dt.datetime) -> Iterator[dt.datetime]:
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        # Walking from the instant's own wall-clock time is enough: an earlier wall-clock
        # time is never a later instant, and a later one that lands at or before the
        # instant (the repeated hour, a gap's end) is dropped by the strict comparison.
        wall = instant.astimezone(self.timezone).replace(tzinfo=None, fold=0)
        walker = croniter(self._cron, wall, second_at_beginning=self._seconds)
        # Compared in UTC: two datetimes of one zone compare by wall-clock time, which
        # puts the first pass of a repeated hour after an instant of its second pass.
        last = instant.astimezone(_UTC)
        while True:
            try:
                wall_fire = walker.get_next(dt.datetime)
            except CroniterBadDateError:
                return  # the year field's last date is past: the schedule has ended
            if not self._fires_in(wall_fire):
                continue
            candidate = self._place(wall_fire)
            if candidate > last:
                last = candidate
                yield candidate

    def next_fires(self, count: int, after: dt.datetime) -> list[dt.datetime]:
        out: list[dt.datetime] = []
        for fire in self.iter_after(after):
            out.append(fire)
            if len(out) == count:
                break
        return out

    def previous_fire(self, before: dt.datetime, since: dt.datetime) -> dt.datetime | None:
        """The last fire time in ``(since, before]``, or None: the last that ``iter_after``
        gives up to ``before``, daylight-saving changes included."""
        # Walking back starts after the latest wall-clock time shown by ``before``, which in
        # the second pass of a repeated hour is the repeat's end: the first pass, whose times
        # are the fires, went that far. Times placed after ``before`` (a gap's end, the rest
        # of the repeat) are passed over; placing keeps the order, so the first time placed
        # at or before ``before`` is the latest fire.
        walker = croniter(self._cron, self._walk_back_start(before), second_at_beginning=self._seconds)
        before, since = before.astimezone(_UTC), since.astimezone(_UTC)  # as in ``iter_after``
        while True:
            try:
                wall_fire = walker.get_prev(dt.datetime)
            except CroniterBadDateError:
                return None  # the year field's first date is still to come
            if not self._fires_in(wall_fire):
                continue
            candidate = self._place(wall_fire)
            if candidate <= since:
                return None
            if candidate <= before:
                return candidate

    def describe(self) -> str:
        """A human sentence, e.g. "Every 15 minutes", saying what croniter fires
        (``schedule_words``); the expression itself where no sentence says it right."""
        try:
            words = describe_cron(self._cron, self._seconds)
        except Exception:  # noqa: BLE001 - cron-descriptor and croniter raise many kinds
            words = None
        return words or self.expression

    def _fires_in(self, wall: dt.datetime) -> bool:
        """Whether the month of a time croniter gives has the ``nW`` day (``_least_days``)."""
        return not self._least_days or calendar.monthrange(wall.year, wall.month)[1] >= self._least_days

    def _place(self, wall: dt.datetime) -> dt.datetime:
        aware = wall.replace(tzinfo=self.timezone, fold=0)
        if _exists(aware):
            return aware
        probe = wall.replace(second=0, microsecond=0)
        limit = wall + _GAP_SEARCH
        while probe < limit:
            probe += dt.timedelta(minutes=1)
            aware = probe.replace(tzinfo=self.timezone, fold=0)
            if _exists(aware):
                return aware
        raise ScheduleError(f"no valid time after {wall.isoformat()} in {self.timezone.key}")

    def _walk_back_start(self, instant: dt.datetime) -> dt.datetime:
        """The wall-clock time to walk back from (croniter's ``get_prev`` excludes it) to
        reach every time shown by ``instant``: just after the instant's own, or in the second
        pass of a repeated hour, the repeat's end."""
        local = instant.astimezone(self.timezone)
        wall = local.replace(tzinfo=None, fold=0)
        if not local.fold:
            return wall + dt.timedelta(seconds=1)
        probe = wall.replace(second=0, microsecond=0)
        limit = wall + _GAP_SEARCH
        while probe < limit:
            probe += dt.timedelta(minutes=1)
            if not _repeated(probe.replace(tzinfo=self.timezone)):
                return probe
        raise ScheduleError(f"no end to the repeat after {wall.isoformat()} in {self.timezone.key}")


@dataclass(frozen=True)
class IntervalSchedule:
    """A fire every ``interval``, at ``anchor`` + k * ``interval`` (see the module docstring)."""

    interval: dt.timedelta
    timezone: ZoneInfo
    anchor: dt.datetime = _EPOCH

    def __post_init__(self) -> None:
        if self.interval < dt.timedelta(seconds=1):
            raise ScheduleError("an interval must be at least one second")
        if self.anchor.tzinfo is None:
            raise ValueError("anchor must be timezone-aware")

    @property
    def expression(self) -> str:
        return f"every {_seconds_text(self.interval)} s"

    def describe(self) -> str:
        """E.g. "Every hour", "Every 90 minutes", "Every 1.5 seconds"."""
        seconds = self.interval.total_seconds()
        for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
            if seconds % size == 0:
                count = int(seconds // size)
                return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
        return f"Every {_seconds_text(self.interval)} seconds"

    def next_after(self, instant: dt.datetime) -> dt.datetime:
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        steps = (instant - self.anchor) // self.interval + 1
        return (self.anchor + steps * self.interval).astimezone(self.timezone)

    def next_fires(self, count: int, after: dt.datetime) -> list[dt.datetime]:
        return _next_fires(self, count, after)

    def previous_fire(self, before: dt.datetime, since: dt.datetime) -> dt.datetime | None:
        fire = self.anchor + (before - self.anchor) // self.interval * self.interval
        return fire.astimezone(self.timezone) if fire > since else None


@dataclass(frozen=True)
class BoundedSchedule:
    """The fires of ``schedule`` from ``start`` to ``end``, both included; None is no bound.

    Past ``end`` there is no next fire: the scheduler drops the job until a reload."""

    schedule: Schedule
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def expression(self) -> str:
        return self.schedule.expression + "".join(
            f" {word} {bound.astimezone(self.timezone).isoformat()}"
            for word, bound in (("from", self.start), ("until", self.end)) if bound is not None
        )

    @property
    def timezone(self) -> ZoneInfo:
        return self.schedule.timezone

    def describe(self) -> str:
        """E.g. "Every hour, from 2026-12-06 10:00:00 until 2026-12-06 12:00:00" (in the zone)."""
        window = " ".join(f"{word} {bound.astimezone(self.timezone):%Y-%m-%d %H:%M:%S}"
                          for word, bound in (("from", self.start), ("until", self.end)) if bound is not None)
        return f"{self.schedule.describe()}, {window}" if window else self.schedule.describe()

    def next_after(self, instant: dt.datetime) -> dt.datetime | None:
        if self.start is not None and instant < self.start:
            instant = self.start - _TICK
        fire = self.schedule.next_after(instant)
        return None if fire is None or (self.end is not None and fire > self.end) else fire

    def next_fires(self, count: int, after: dt.datetime) -> list[dt.datetime]:
        return _next_fires(self, count, after)

    def previous_fire(self, before: dt.datetime, since: dt.datetime) -> dt.datetime | None:
        if self.end is not None:
            before = min(before, self.end)
        if self.start is not None:
            since = max(since, self.start - _TICK)
        return self.schedule.previous_fire(before=before, since=since) if before > since else None


def _next_fires(schedule: Schedule, count: int, after: dt.datetime) -> list[dt.datetime]:
    out: list[dt.datetime] = []
    while len(out) < count and (fire := schedule.next_after(out[-1] if out else after)) is not None:
        out.append(fire)
    return out


def _seconds_text(interval: dt.timedelta) -> str:
    """Whole seconds as an integer ("3600"), others with their milliseconds ("1.5")."""
    millis = interval // dt.timedelta(milliseconds=1)
    return str(millis // 1000) if millis % 1000 == 0 else str(millis / 1000)


def _reason(exc: Exception) -> str:
    """croniter's complaint, without its own rewritten form of the expression (in brackets)."""
    text = _BRACKETED.sub("", str(exc)).strip(" :.")
    text = re.sub(r"^is not acceptable[,.]?\s*", "", text).replace("failed to find next date", "matches no date")
    if not text and type(exc).__name__ == "CroniterNotAlphaError":
        return "a field holds a name that is not a month or day name"
    return text or type(exc).__name__


def _exists(aware: dt.datetime) -> bool:
    back = aware.astimezone(_UTC).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None, fold=0)


def _repeated(aware: dt.datetime) -> bool:
    """Whether the wall-clock time happens twice (the hour clocks go back through)."""
    return aware.replace(fold=1).astimezone(_UTC) != aware.replace(fold=0).astimezone(_UTC) and _exists(aware)


# Each field's name and the values it takes, in cron's and in Quartz's order; Quartz's day
# of week is checked where it is rewritten (``_shift``), which says how Quartz counts.
_CRON_RANGES = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7))
_QUARTZ_RANGES = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
                  ("month", 1, 12), ("day of week", None, None), ("year", 1970, 2099))


def _check_ranges(expression: str, fields: list[str], ranges: tuple[tuple[str, int | None, int | None], ...]) -> None:
    """Refuse a number outside its field's values, naming the field and its range (croniter
    says only "out of range", or quotes its own rewritten form of the expression)."""
    for (name, low, high), text in zip(ranges, fields, strict=False):
        for item in text.split(","):
            value, _, nth = item.split("/", 1)[0].partition("#")
            if nth.isdecimal() and not 1 <= int(nth) <= 5:
                raise ScheduleError(f"invalid expression {expression!r}: {name} {item!r}: the week of the month "
                                    f"is 1 to 5")
            if low is None or high is None:
                continue
            for number in re.findall(r"\d+", value):
                if not low <= int(number) <= high:
                    raise ScheduleError(f"invalid expression {expression!r}: {name} {int(number)} is out of range "
                                        f"({low} to {high})")


_NEAREST = re.compile(r"^(\d+)W$")
_WEEK_OF_MONTH = re.compile(r"[#L]", re.IGNORECASE)  # a day of week of one week of the month: 2#1, L5


def _check_cron_days(fields: list[str]) -> None:
    """Refuse what 5-field cron cannot say as croniter would fire it: a ``W`` day beside a
    day of week (croniter fires the W day alone, crontab would fire either day, Quartz
    refuses both), a ``#`` or ``L`` day of week beside a day of month (croniter finds no
    date), and Quartz's ``5L`` (cron counts days from 0 = Sunday and writes ``L5``)."""
    dom, dow = fields[2].upper(), fields[4].upper()
    _check_last_day(fields[2])
    for item in dow.split(","):
        if item == "L":
            raise ScheduleError(f"day of week {fields[4]!r}: Quartz reads L alone as Saturday, which 5-field cron "
                                "writes 6; the last Friday of the month is L5")
        if item.endswith("L"):
            day = item[:-1]
            cron_day = str(_DAY_NAMES.index(day)) if day in _DAY_NAMES else day
            raise ScheduleError(
                f"day of week {fields[4]!r}: 5-field cron writes a last weekday of the month L first, "
                f"L{cron_day} (counting 0 = Sunday: L5 is the last Friday); {item} is Quartz's form, for a "
                "6-field expression such as '0 0 0 ? * 6L' (counting 1 = Sunday: the last Friday)")
    if dom in ("*", "?") or dow in ("*", "?"):
        return
    if "W" in dom or _WEEK_OF_MONTH.search(dow):
        raise ScheduleError(
            f"day of month {fields[2]!r} and day of week {fields[4]!r} are both set: a W day of month, or a "
            "day of week of one week of the month (# or L), cannot be combined with the other day field; "
            "set one of them to '*'")


def _check_last_day(dom: str) -> None:
    """Refuse Quartz's ``LW`` and ``L-3``, which croniter cannot walk."""
    if dom.upper() == "LW" or dom.upper().startswith("L-"):
        raise ScheduleError(f"day of month {dom!r} is not supported (L, nW and a day-of-week nL are)")


def _short_months(expression: str, cron: str, seconds: bool) -> int:
    """For a ``nW`` day beyond the 28th, ``n``: the months that fire have that many days
    (Quartz skips the others); 0 otherwise. A schedule whose months never have that day
    is refused, as one croniter finds no date for."""
    dom = cron.split(" ")[3 if seconds else 2].upper()
    match = _NEAREST.match(dom)
    if match is None or int(match[1]) <= 28:
        return 0
    day = int(match[1])
    months = croniter.expand(cron, second_at_beginning=seconds)[0][3]  # croniter's order: minute first
    if not any(month == "*" or calendar.monthrange(2000, int(month))[1] >= day for month in months):
        raise ScheduleError(f"invalid expression {expression!r}: day of month {dom!r}: none of its months has "
                            f"a day {day}, so it matches no date")
    return day


# -- Quartz -------------------------------------------------------------------

# Quartz's fields, and the largest increment each takes (``CronExpression``).
_QUARTZ_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week", "year")
_QUARTZ_STEPS = (59, 59, 23, 31, 12, 7, 2099)
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # cron's numbers, 0 = Sunday
_DOW_TOKEN = re.compile(r"^(?P<a>\d+)(?:-(?P<b>\d+))?(?:/(?P<step>\d+))?$")


def _from_quartz(fields: list[str]) -> str:
    """Quartz ``sec min hour dom mon dow [year]`` -> croniter's 6/7-field form."""
    dom, dow = fields[3].upper(), fields[5].upper()
    if dom not in ("*", "?") and dow not in ("*", "?"):
        # croniter would fire on either day (cron's rule); Quartz refuses the expression.
        raise ScheduleError(
            f"day of month {fields[3]!r} and day of week {fields[5]!r} are both set; "
            "Quartz needs '?' in one of them"
        )
    _check_last_day(fields[3])
    for field, text, most in zip(_QUARTZ_FIELDS, fields, _QUARTZ_STEPS, strict=False):
        for step in re.findall(r"/(\d+)", text):
            if int(step) > most:
                # Quartz refuses it ("Increment > 60"); croniter would fire once, at the field's start.
                raise ScheduleError(f"{field} {text!r}: an increment of {step} is more than the {field} "
                                    f"allows ({most})")
    out = ["*" if f == "?" else f for f in fields]
    out[5] = ",".join(_quartz_dow(item) for item in out[5].split(","))
    return " ".join(out)


def _quartz_dow(item: str) -> str:
    upper = item.upper()
    if upper == "L":  # Quartz: "L" alone in day-of-week is Saturday
        return "6"
    if upper.endswith("L") and upper[:-1].isdigit():
        return f"L{_shift(upper[:-1])}"
    if upper.endswith("L") and upper[:-1] in _DAY_NAMES:  # FRIL: Quartz's other way to write 6L
        return f"L{_DAY_NAMES.index(upper[:-1])}"
    if "#" in upper:
        day, nth = upper.split("#", 1)
        return f"{_shift(day) if day.isdigit() else day}#{nth}"
    m = _DOW_TOKEN.match(upper)
    if m is None:
        return item  # names (MON-FRI), "*", "*/2": the same in both notations
    text = _shift(m["a"])
    if m["b"] is not None:
        text += f"-{_shift(m['b'])}"
    if m["step"] is not None:
        text += f"/{m['step']}"
    return text


def _shift(day: str) -> str:
    value = int(day)
    if not 1 <= value <= 7:
        raise ScheduleError(f"day of week {value} out of range (Quartz counts 1 = Sunday to 7 = Saturday)")
    return str(value - 1)
