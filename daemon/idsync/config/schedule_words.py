"""A cron schedule in words, read from the form croniter fires (``CronSchedule``'s own).

cron-descriptor words the time of day, the day of month, the month and the year; the
day of week is worded here, from croniter's expansion of the field, because
cron-descriptor gets it wrong in ways that matter: a step (``5/2`` is every Friday, not
"every 2 weeks"; ``1/3`` is Monday and Thursday, not the ``*/3`` it prints the same way),
a list of ``#`` days (``2#1,6#3``), and the two day fields of 5-field cron, which croniter
fires on either day ("on day 1 of the month, or Monday through Friday"; cron-descriptor
1.x writes them as if both had to hold). A schedule whose days croniter reads in a way
no sentence here says (a ``W`` or ``#`` day beside the other day field, which
``CronSchedule`` refuses) has no words: ``None``, and the expression itself is shown.
"""

from __future__ import annotations

import calendar
import functools
import re
from typing import Any

from cron_descriptor import DescriptionTypeEnum, ExpressionDescriptor, Options
from croniter import croniter

__all__ = ["describe_cron"]

_DOW = 4  # the day-of-week field in croniter's expansion, with or without seconds
_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", "l": "last"}
_WEEK = (1, 2, 3, 4, 5, 6, 0)  # croniter's day numbers (0 = Sunday), Monday first
_LAST_YEAR = 2099  # Quartz's, and croniter's, last year
_FROM_FIRST = re.compile(r"^(?:\*|1)/(\d+)$")
_NEAREST = re.compile(r"^(\d+)W$")
# cron-descriptor's plural after a one: "every 1 minutes", "at 1 seconds past the minute".
_EVERY_ONE = re.compile(r"\b(every) 1 (second|minute|hour|day|month|year)s\b", re.IGNORECASE)
_ONE_UNIT = re.compile(r"\b(1) (second|minute|hour|day|month|year)s\b")


@functools.lru_cache(maxsize=512)  # a few ms each; the dashboard and the status file ask every few seconds
def describe_cron(cron: str, seconds: bool) -> str | None:
    """The sentence for croniter's expression ``cron`` (seconds first when ``seconds``),
    or None when it has none that is right."""
    fields = cron.split(" ")
    if not seconds:
        fields = ["0", *fields]
    second, minute, hour, dom, month, _dow, *rest = fields
    year = _year(rest[0] if rest else "*")
    expanded, nth = croniter.expand(cron, second_at_beginning=seconds)
    days = _days(expanded[_DOW], nth)
    if dom != "*" and days:
        if "W" in dom.upper() or nth:
            return None
        days = f", or on {days.removeprefix(', only on ').removeprefix(', ')}"
    options = Options()
    options.use_24hour_time_format = True

    def part(kind: Any, **field: str) -> str:
        values = {"day": "*", "month": "*", "year": "*", **field}
        text = f"{second} {minute} {hour} {values['day']} {values['month']} * {values['year']}"
        return str(ExpressionDescriptor(text, options).get_description(kind))

    descriptor = ExpressionDescriptor(f"{second} {minute} {hour} * * * *", options)
    text = "".join((
        part(DescriptionTypeEnum.TIMEOFDAY),
        _day_of_month(dom, part(DescriptionTypeEnum.DAYOFMONTH, day=dom)) if dom != "*" else "",
        days,
        part(DescriptionTypeEnum.MONTH, month=month),
        part(DescriptionTypeEnum.YEAR, year=year),
    ))
    text = str(descriptor.transform_verbosity(text, use_verbose_format=False))
    text = _ONE_UNIT.sub(r"\1 \2", _EVERY_ONE.sub(r"\1 \2", text))
    return text[:1].upper() + text[1:]


def _day_of_month(dom: str, words: str) -> str:
    """cron-descriptor's day-of-month clause, saying where a step starts when it starts on
    the 1st (``1/5``: Quartz's "every 5 days starting on the first day of the month", which
    starts again each month) and that a ``nW`` day beyond the 28th skips the months without
    that day, as Quartz does (``CronSchedule``)."""
    step = _FROM_FIRST.match(dom)
    if step is not None and step[1] != "1":
        return f", every {step[1]} days, starting on day 1 of the month"
    nearest = _NEAREST.match(dom.upper())
    if nearest is not None and int(nearest[1]) > 28:
        return f"{words}, in months that have a day {nearest[1]}"
    return words


def _days(values: list[Any], nth: dict[int, set[Any]]) -> str:
    """The day-of-week clause (", only on Monday and Thursday"), or "" for every day."""
    if nth:
        by_day = [(day, sorted(nth[day], key=lambda n: 6 if n == "l" else n)) for day in _WEEK if day in nth]
        return ", on " + _join([f"the {_join([_ORDINALS[n] for n in ns])} {_name(day)}" for day, ns in by_day]) \
            + " of the month"
    if values == ["*"] or {v % 7 for v in values} == set(range(7)):
        return ""
    chosen = [day for day in _WEEK if day in {v % 7 for v in values}]
    run = _run(chosen)
    if run is not None:
        return f", {_name(run[0])} through {_name(run[1])}"
    return ", only on " + _join([_name(day) for day in chosen])


def _run(chosen: list[int]) -> tuple[int, int] | None:
    """First and last day of ``chosen`` when they are three days or more in a row (the
    week wraps: Friday through Monday), else None."""
    if len(chosen) < 3:
        return None
    positions = sorted(_WEEK.index(day) for day in chosen)
    for start in range(len(positions)):
        ordered = positions[start:] + [p + 7 for p in positions[:start]]
        if ordered[-1] - ordered[0] == len(ordered) - 1:
            return _WEEK[ordered[0] % 7], _WEEK[ordered[-1] % 7]
    return None


def _year(field: str) -> str:
    """A year step's end made explicit (``2027/2`` runs to 2099, which cron-descriptor
    would call 9999), and a step of one dropped ("every 1 years")."""
    if "/" not in field or "," in field:
        return field
    start, step = field.split("/", 1)
    if start.isdecimal():
        start = f"{start}-{_LAST_YEAR}"
    return start if step == "1" else f"{start}/{step}"


def _name(day: int) -> str:
    return calendar.day_name[(day - 1) % 7]


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
