"""Scheduling semantics, the clock passed in: expressions, time zones, DST, misfires, overlap."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from idsync.config.jobs import JobDef, parse_job
from idsync.config.schedule import CronSchedule, ScheduleError
from idsync.daemon.scheduler import SKIP_TOLERANCE, CronScheduleTrigger, FireTimeExecutor, JobTable, missed_fire
from idsync.errors import ConfigError
from structlog.testing import capture_logs

UTC = dt.UTC


def _at(text: str, tz: str = "UTC") -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def _fires(expression: str, start: dt.datetime, count: int = 4, tz: str = "UTC") -> list[str]:
    return [f.isoformat() for f in CronSchedule.parse(expression, tz).next_fires(count, start)]


def test_quartz_with_seconds_and_question_mark() -> None:
    """``0 */15 * * * ?`` fires on the quarter hour, seconds field first."""
    assert _fires("0 */15 * * * ?", _at("2026-01-01T00:07:00"), 3) == [
        "2026-01-01T00:15:00+00:00",
        "2026-01-01T00:30:00+00:00",
        "2026-01-01T00:45:00+00:00",
    ]


def test_quartz_day_of_week_counts_from_sunday() -> None:
    """Quartz 2 is Monday (cron's 1): ``2#1`` is the first Monday, ``6L`` the last Friday."""
    assert _fires("0 0 12 ? * 2#1", _at("2026-01-01T00:00"), 2) == [
        "2026-01-05T12:00:00+00:00",
        "2026-02-02T12:00:00+00:00",
    ]
    assert _fires("0 0 12 ? * 6L", _at("2026-01-01T00:00"), 2) == [
        "2026-01-30T12:00:00+00:00",
        "2026-02-27T12:00:00+00:00",
    ]
    assert _fires("0 0 8 ? * 2-6", _at("2026-01-02T09:00"), 2) == [  # Friday 2 Jan 2026
        "2026-01-05T08:00:00+00:00",
        "2026-01-06T08:00:00+00:00",
    ]


def test_quartz_last_day_weekday_and_year() -> None:
    """``L`` (last day), ``15W`` (nearest weekday) and the optional year field."""
    assert _fires("0 0 0 L * ?", _at("2026-02-01T00:00"), 1) == ["2026-02-28T00:00:00+00:00"]
    assert _fires("0 0 0 15W * ?", _at("2026-02-01T00:00"), 1) == ["2026-02-16T00:00:00+00:00"]  # 15th is Sunday
    assert _fires("0 0 0 1 1 ? 2028", _at("2026-02-01T00:00"), 1) == ["2028-01-01T00:00:00+00:00"]


def test_five_field_cron_and_macros() -> None:
    """Standard cron (0 = Sunday) and @macros behave as in crontab."""
    assert _fires("30 6 * * 0", _at("2026-01-01T00:00"), 1) == ["2026-01-04T06:30:00+00:00"]
    assert _fires("@hourly", _at("2026-01-01T00:00"), 2) == [
        "2026-01-01T01:00:00+00:00",
        "2026-01-01T02:00:00+00:00",
    ]
    assert _fires("@weekly", _at("2026-01-01T00:00"), 1) == ["2026-01-04T00:00:00+00:00"]
    assert _fires("@monthly", _at("2026-01-01T00:00"), 1) == ["2026-02-01T00:00:00+00:00"]


def test_schedule_describes_itself() -> None:
    """``idsync jobs`` shows a human description of each expression."""
    assert CronSchedule.parse("0 */15 * * * ?").describe() == "Every 15 minutes"
    assert "Monday through Friday" in CronSchedule.parse("0 0 12 ? * MON-FRI").describe()
    assert "Friday" in CronSchedule.parse("0 0 12 ? * 6L").describe()


@pytest.mark.parametrize(("expression", "words"), [
    # A day-of-week step names the days croniter fires on: 5/2 is every Friday, 1/3 is not */3.
    ("0 0 * * 5/2", "At 00:00, only on Friday"),
    ("0 0 12 ? * 2-3/3", "At 12:00, only on Monday"),
    ("0 0 * * 1/3", "At 00:00, only on Monday and Thursday"),
    ("0 0 * * */3", "At 00:00, only on Wednesday, Saturday and Sunday"),
    ("0 0 0 ? * 2-6/1", "At 00:00, Monday through Friday"),
    # Each # day keeps its own week of the month; L alone (Quartz) is Saturday.
    ("0 0 12 ? * 2#1,6#3", "At 12:00, on the first Monday and the third Friday of the month"),
    ("0 0 12 ? * 2L,6#3", "At 12:00, on the last Monday and the third Friday of the month"),
    ("0 0 12 ? * 2#1,2#3", "At 12:00, on the first and third Monday of the month"),
    ("0 0 12 ? * 6L", "At 12:00, on the last Friday of the month"),
    ("0 0 12 ? * FRIL", "At 12:00, on the last Friday of the month"),
    ("0 0 12 ? * L", "At 12:00, only on Saturday"),
    # 5-field cron fires on either day field (croniter's day_or), as crontab does.
    ("0 0 1 * 1-5", "At 00:00, on day 1 of the month, or on Monday through Friday"),
    ("0 0 L * 5", "At 00:00, on the last day of the month, or on Friday"),
    # A step from the 1st starts again each month, as Quartz's tutorial words 1/3; one of a unit is singular.
    ("0 0 12 1/5 * ?", "At 12:00, every 5 days, starting on day 1 of the month"),
    ("0 0 */5 * *", "At 00:00, every 5 days, starting on day 1 of the month"),
    ("0 1/5 * * * ?", "Every 5 minutes, starting at 1 minute past the hour"),
    ("1 * * * * ?", "At 1 second past the minute"),
    ("0 1/1 * * * ?", "Every minute, starting at 1 minute past the hour"),
    # A W day beyond the 28th skips the months without that day.
    ("0 0 12 31W * ?", "At 12:00, on the weekday nearest day 31 of the month, in months that have a day 31"),
    # A year step runs to 2099, Quartz's last year; a step of one is no step.
    ("0 0 12 1 1 ? 2027/2", "At 12:00, on day 1 of the month, only in January, every 2 years, 2027 through 2099"),
    ("0 0 12 1 1 ? 2027/1", "At 12:00, on day 1 of the month, only in January, 2027 through 2099"),
    # Unchanged: days of month, L, W and seconds.
    ("0 0 12 2 * ?", "At 12:00, on day 2 of the month"),
    ("0 0 12 L * ?", "At 12:00, on the last day of the month"),
    ("0 0 12 15W * ?", "At 12:00, on the weekday nearest day 15 of the month"),
    ("5/10 * * * * ?", "Every 10 seconds, starting at 5 seconds past the minute"),
    ("15 30 6 * * ?", "At 06:30:15"),
])
def test_schedule_words_say_what_fires(expression: str, words: str) -> None:
    """The words ``idsync jobs`` and the console show match the days croniter fires on,
    or are the expression itself where no sentence says it right."""
    assert CronSchedule.parse(expression).describe() == words


def test_a_w_day_beyond_the_28th_skips_the_months_without_that_day() -> None:
    """Quartz's ``31W`` fires on the weekday nearest the 31st in months that have one and
    skips the others (croniter alone fired the weekday nearest the month's last day):
    the scheduler's fires, looking back included, and 5-field cron alike."""
    start = _at("2026-01-01T00:00")
    months_with_31 = ["2026-01-30T12:00:00+00:00",  # 31 Jan 2026 is a Saturday
                      "2026-03-31T12:00:00+00:00",
                      "2026-05-29T12:00:00+00:00",  # a Sunday
                      "2026-07-31T12:00:00+00:00"]
    assert _fires("0 0 12 31W * ?", start) == months_with_31
    assert _fires("0 12 31W * *", start) == months_with_31
    assert _fires("0 0 12 30W * ?", start, 3) == ["2026-01-30T12:00:00+00:00", "2026-03-30T12:00:00+00:00",
                                                  "2026-04-30T12:00:00+00:00"]  # no February
    schedule = CronSchedule.parse("0 0 12 31W * ?")
    assert schedule.previous_fire(_at("2026-05-01T00:00"), start) == _at("2026-03-31T12:00")
    assert schedule.previous_fire(_at("2026-03-30T00:00"), _at("2026-02-01T00:00")) is None
    assert _fires("0 0 12 29W 2 ?", start, 2) == ["2028-02-29T12:00:00+00:00", "2032-02-27T12:00:00+00:00"]


def test_a_cron_day_refused_at_validate_is_refused_by_the_scheduler_alike(tmp_path: Path) -> None:
    """A 5-field W day beside a day of week, croniter's way of which fired neither what
    crontab nor what Quartz would, is refused in the job file naming it, as the
    scheduler's parse of the expression refuses it."""
    path = tmp_path / "odd.toml"
    path.write_text('schedule = "0 9 15W * MON"\nmappings = ["a"]\n')
    with pytest.raises(ConfigError) as info:
        parse_job(path, {"a"})
    assert "schedule" in str(info.value) and "'15W' and day of week 'MON' are both set" in str(info.value)
    with pytest.raises(ScheduleError):
        CronSchedule.parse("0 9 15W * MON")


def test_quartz_last_weekday_by_name() -> None:
    """Quartz's ``FRIL`` is its ``6L``: the last Friday of the month (it was refused as an
    unknown name)."""
    assert _fires("0 0 12 ? * FRIL", _at("2026-01-01T00:00"), 2) == _fires("0 0 12 ? * 6L", _at("2026-01-01T00:00"), 2)
    assert _fires("0 0 12 ? * FRIL", _at("2026-01-01T00:00"), 1) == ["2026-01-30T12:00:00+00:00"]


def test_day_of_week_words_name_the_fired_days() -> None:
    """For every single step of the day-of-week field, the days named are those that fire."""
    names = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    for start in range(1, 8):
        for step in range(1, 8):
            schedule = CronSchedule.parse(f"0 0 12 ? * {start}/{step}")
            fired = {f.strftime("%A") for f in schedule.next_fires(14, _at("2026-01-01T00:00"))}
            words = schedule.describe()
            named = set(names) if words == "At 12:00" else {n for n in names if n in words}
            if "through" in words:
                first, last = (names.index(n) for n in words.split(", ")[-1].split(" through "))
                named = {names[(first + i) % 7] for i in range((last - first) % 7 + 1)}
            assert named == fired, (f"{start}/{step}", words)


def test_time_zone_is_applied() -> None:
    """A 02:30 Stockholm job fires at 01:30 UTC in winter."""
    fires = CronSchedule.parse("30 2 * * *", "Europe/Stockholm").next_fires(1, _at("2026-01-10T00:00"))
    assert fires[0].astimezone(UTC).isoformat() == "2026-01-10T01:30:00+00:00"


def test_spring_forward_gap_neither_skips_nor_doubles() -> None:
    """On the night 02:00-03:00 does not exist, a 02:30 daily job runs once, at 03:00."""
    fires = CronSchedule.parse("30 2 * * *", "Europe/Stockholm").next_fires(
        3, _at("2026-03-28T12:00", "Europe/Stockholm")
    )
    assert [f.isoformat() for f in fires] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_spring_forward_gap_collapses_subhourly_fires() -> None:
    """Every 15 minutes across the gap: the four missing times become one run at the gap's end."""
    fires = CronSchedule.parse("*/15 * * * *", "America/New_York").next_fires(
        4, _at("2026-03-08T01:40", "America/New_York")
    )
    assert [f.isoformat() for f in fires] == [
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:15:00-04:00",
        "2026-03-08T03:30:00-04:00",
    ]


def test_fall_back_repeat_runs_once() -> None:
    """On the night 01:00-02:00 happens twice, a 01:30 daily job runs only the first time."""
    fires = CronSchedule.parse("0 30 1 * * ?", "America/New_York").next_fires(
        2, _at("2026-10-31T12:00", "America/New_York")
    )
    assert [f.isoformat() for f in fires] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]
    # Asked from inside the repeated hour, the second 01:30 is not offered again.
    second_pass = dt.datetime(2026, 11, 1, 1, 45, fold=1, tzinfo=ZoneInfo("America/New_York"))
    assert CronSchedule.parse("0 30 1 * * ?", "America/New_York").next_after(second_pass).day == 2


def test_fire_times_strictly_increase_through_a_dst_year() -> None:
    """A year of half-hourly fires in a DST zone: no duplicate and no gap above 90 minutes."""
    schedule = CronSchedule.parse("0,30 * * * *", "Europe/Berlin")
    fires = schedule.next_fires(365 * 48, _at("2026-01-01T00:00", "Europe/Berlin"))
    instants = [f.astimezone(UTC) for f in fires]
    gaps = {b - a for a, b in itertools.pairwise(instants)}
    assert all(dt.timedelta(0) < g <= dt.timedelta(minutes=90) for g in gaps)


# The instants (UTC) clocks change at: spring forward, then fall back. Lord Howe moves by 30 minutes.
_DST_CHANGES = {
    "Europe/Stockholm": ("2027-03-28T01:00", "2027-10-31T01:00"),
    "America/New_York": ("2026-03-08T07:00", "2026-11-01T06:00"),
    "Australia/Lord_Howe": ("2026-10-03T15:30", "2026-04-04T15:00"),
}


@pytest.mark.parametrize("expression", ["*/15 * * * *", "30 2 * * *", "45 1 * * *", "0 * * * *", "30 */10 * * * ?"])
@pytest.mark.parametrize(("zone", "change"), [(z, c) for z, cs in _DST_CHANGES.items() for c in cs])
def test_fires_looked_up_from_any_instant_agree_across_a_dst_change(zone: str, change: str, expression: str) -> None:
    """From any instant around a clock change (in the gap's end, in either pass of the
    repeated hour, given in UTC or in the job's zone), ``previous_fire`` finds the last of
    the fires ``iter_after`` gives up to it, and ``next_after`` the first after it."""
    schedule = CronSchedule.parse(expression, zone)
    moment = _at(change)
    since, until = moment - dt.timedelta(hours=4), moment + dt.timedelta(hours=4)
    fires = [f.astimezone(UTC) for f in itertools.takewhile(lambda f: f <= until, schedule.iter_after(since))]
    tick = dt.timedelta(microseconds=1)
    probes = [since + k * dt.timedelta(minutes=7) for k in range(8 * 60 // 7)]
    probes += [p for f in fires for p in (f - tick, f, f + tick)] + [moment - tick, moment, moment + tick]
    for probe in probes + [p.astimezone(ZoneInfo(zone)) for p in probes]:
        before = max((f for f in fires if f <= probe), default=None)
        found = schedule.previous_fire(before=probe, since=since)
        assert (found and found.astimezone(UTC)) == before, f"previous_fire({probe.isoformat()})"
        after = min((f for f in fires if f > probe), default=None)
        if after is not None:
            assert schedule.next_after(probe).astimezone(UTC) == after, f"next_after({probe.isoformat()})"


def test_misfire_run_once_catches_up_fires_of_the_repeated_hour(tmp_path: Path) -> None:
    """Down from 02:10 CEST until 02:05 CET, the second pass of the hour clocks go back
    through: the fire at 02:45 CEST (the last before the change) is run at start, as the
    same stop a day earlier runs its latest fire."""
    job = _jobdef(tmp_path, 'timezone = "Europe/Stockholm"\n', schedule="*/15 * * * *")
    last, now = _at("2027-10-31T00:10"), _at("2027-10-31T01:05")
    fires = [f.isoformat() for f in job.schedule.next_fires(3, last)]
    assert fires == ["2027-10-31T02:15:00+02:00", "2027-10-31T02:30:00+02:00", "2027-10-31T02:45:00+02:00"]
    fire = missed_fire(job, last, now)
    assert fire is not None and fire.isoformat() == "2027-10-31T02:45:00+02:00"
    fire = missed_fire(job, _at("2027-10-30T00:10"), _at("2027-10-30T01:05"))
    assert fire is not None and fire.isoformat() == "2027-10-30T03:00:00+02:00"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("0 0 12 LW * ?", "day of month 'LW' is not supported"),
        ("0 0 12 L-3 * ?", "day of month 'L-3' is not supported"),
        ("0 0 12 1 * MON", "Quartz needs '?' in one of them"),
        # 5-field cron: croniter would fire the W day alone, or find no date for a # day beside a day of month.
        ("0 0 15W * MON", "day of month '15W' and day of week 'MON' are both set: a W day of month, or a day of "
                          "week of one week of the month (# or L), cannot be combined"),
        ("0 0 1 * 1#2", "day of month '1' and day of week '1#2' are both set"),
        ("0 0 * * 5L", "day of week '5L': 5-field cron writes a last weekday of the month L first, L5 (counting "
                       "0 = Sunday: L5 is the last Friday); 5L is Quartz's form"),
        ("0 0 * * FRIL", "day of week 'FRIL': 5-field cron writes a last weekday of the month L first, L5"),
        ("0 0 * * L", "day of week 'L': Quartz reads L alone as Saturday, which 5-field cron writes 6"),
        ("0 0 LW * *", "day of month 'LW' is not supported"),
        ("0 0 L-3 * *", "day of month 'L-3' is not supported"),
        ("0 0 12 31W 2,4 ?", "day of month '31W': none of its months has a day 31, so it matches no date"),
        ("0 0 30 2 *", "'0 0 30 2 *': matches no date"),
        ("0 61 * * * ?", "'0 61 * * * ?': minute 61 is out of range (0 to 59)"),
        # Each number out of its field's range names the field and the range, in the user's text.
        ("0 0 25 * * ?", "hour 25 is out of range (0 to 23)"),
        ("0 0-70 * * * ?", "'0 0-70 * * * ?': minute 70 is out of range (0 to 59)"),
        ("0 0 12 1-40 * ?", "day of month 40 is out of range (1 to 31)"),
        ("0 0 12 40W * ?", "day of month 40 is out of range (1 to 31)"),
        ("0 0 12 ? 13 *", "month 13 is out of range (1 to 12)"),
        ("0 0 12 * * ? 2200", "year 2200 is out of range (1970 to 2099)"),
        ("* * * * 8", "day of week 8 is out of range (0 to 7)"),
        ("0 0 12 ? * 1#6", "day of week '1#6': the week of the month is 1 to 5"),
        ("0 0 12 ? * 9", "day of week 9 out of range (Quartz counts 1 = Sunday to 7 = Saturday)"),
        # Quartz refuses an increment beyond its field (croniter would fire once, at the field's start).
        ("*/70 * * * * ?", "second '*/70': an increment of 70 is more than the second allows (59)"),
        ("0 0 0/25 * * ?", "hour '0/25': an increment of 25 is more than the hour allows (23)"),
        ("JAN * * * *", "not a month or day name"),
        ("* * *", "3 fields; expected 5"),
        ("", "empty schedule"),
    ],
)
def test_invalid_expressions_raise(bad: str, says: str) -> None:
    """What croniter cannot walk is a ScheduleError saying what is wrong in the user's own
    text (never croniter's rewritten form), not a crash later."""
    with pytest.raises(ScheduleError) as info:
        CronSchedule.parse(bad)
    assert says in str(info.value)
    assert "acceptable" not in str(info.value) and "bands" not in str(info.value)  # croniter's wording


def test_quartz_examples_from_its_documentation() -> None:
    """Quartz's tutorial examples fire as Quartz documents them."""
    start = _at("2026-01-01T00:00")
    assert _fires("0 0/5 14 * * ?", start, 2) == ["2026-01-01T14:00:00+00:00", "2026-01-01T14:05:00+00:00"]
    assert _fires("0 15 10 ? * 6#3", start, 1) == ["2026-01-16T10:15:00+00:00"]  # third Friday
    assert _fires("0 0 12 1/5 * ?", start, 3)[1:] == ["2026-01-06T12:00:00+00:00", "2026-01-11T12:00:00+00:00"]
    assert _fires("0 15 10 ? * 6L 2026-2027", start, 1) == ["2026-01-30T10:15:00+00:00"]
    assert _fires("0 0 0 1W * ?", start, 1) == ["2026-02-02T00:00:00+00:00"]  # 1 Feb is a Sunday
    assert _fires("0 0 0 ? * 1-7/2", start, 3) == [  # Sunday, Tuesday, Thursday, Saturday
        "2026-01-03T00:00:00+00:00",
        "2026-01-04T00:00:00+00:00",
        "2026-01-06T00:00:00+00:00",
    ]
    assert _fires("0 0 12 * * MON", start, 1) == ["2026-01-05T12:00:00+00:00"]  # "*" for "?" is accepted


def test_trigger_follows_the_schedule_with_bounded_jitter() -> None:
    """The APScheduler trigger gives the schedule's next time, delayed by at most ``jitter``."""
    trigger = CronScheduleTrigger(CronSchedule.parse("*/5 * * * *"), jitter=30)
    now = _at("2026-01-01T00:01")
    for _ in range(50):
        fire = trigger.get_next_fire_time(None, now)
        assert fire is not None
        assert _at("2026-01-01T00:05") <= fire <= _at("2026-01-01T00:05:30")
    fire = CronScheduleTrigger(CronSchedule.parse("*/5 * * * *"), jitter=30).get_next_fire_time(
        _at("2026-01-01T00:05:17"), now
    )
    assert fire is not None
    assert _at("2026-01-01T00:10") <= fire <= _at("2026-01-01T00:10:30")


def test_jitter_is_real_time_when_clocks_go_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fire in the last minute before clocks go back, jittered past the change, starts
    within ``jitter`` seconds of it, not an hour late at the same wall-clock time."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    trigger = CronScheduleTrigger(CronSchedule.parse("59 * * * *", "Europe/Stockholm"), jitter=120)
    fire = trigger.get_next_fire_time(None, _at("2027-10-31T00:58"))  # 02:58 CEST
    assert fire is not None and fire.astimezone(UTC) == _at("2027-10-31T01:01")  # 02:01 CET


def _jobdef(tmp_path: Path, extra: str = "", schedule: str = "0 * * * *") -> JobDef:
    path = tmp_path / "hourly.toml"
    path.write_text(f'schedule = "{schedule}"\nmappings = ["m"]\n{extra}', encoding="utf-8")
    return parse_job(path, ["m"])


def test_misfire_run_once_catches_up_the_latest_missed_fire(tmp_path: Path) -> None:
    """Down from 10:05 to 12:20: the 12:00 fire (20 min old, within grace) runs once at start."""
    job = _jobdef(tmp_path)
    fire = missed_fire(job, last_started=_at("2026-01-01T10:00:02"), now=_at("2026-01-01T12:20"))
    assert fire == _at("2026-01-01T12:00")


def test_misfire_run_once_respects_grace(tmp_path: Path) -> None:
    """A missed fire older than ``misfire_grace`` is not run; the next regular fire is awaited."""
    job = _jobdef(tmp_path, "misfire_grace = 600\n")
    assert missed_fire(job, _at("2026-01-01T10:00:02"), _at("2026-01-01T12:20")) is None
    assert missed_fire(job, _at("2026-01-01T10:00:02"), _at("2026-01-01T12:09")) == _at("2026-01-01T12:00")


def test_misfire_skip_and_never_run_jobs_do_not_catch_up(tmp_path: Path) -> None:
    """``skip`` never catches up; a job with no recorded run has missed nothing; no miss, no run."""
    assert (
        missed_fire(
            _jobdef(tmp_path, 'misfire = "skip"\n'),
            _at("2026-01-01T10:00:02"),
            _at("2026-01-01T12:20"),
        )
        is None
    )
    assert missed_fire(_jobdef(tmp_path), None, _at("2026-01-01T12:20")) is None
    assert missed_fire(_jobdef(tmp_path), _at("2026-01-01T12:00:01"), _at("2026-01-01T12:20")) is None


def _table(tmp_path: Path) -> tuple[BackgroundScheduler, JobTable]:
    scheduler = BackgroundScheduler(timezone=UTC)
    table = JobTable(scheduler, lambda name, trigger: None)
    return scheduler, table


def test_job_semantics_on_apscheduler(tmp_path: Path) -> None:
    """run_once: coalesce, one instance, grace = misfire_grace; skip: the small tolerance."""
    scheduler, table = _table(tmp_path)
    once = _jobdef(tmp_path)
    table.apply({"hourly": once})
    entry = scheduler.get_job("hourly")
    assert (entry.coalesce, entry.max_instances, entry.misfire_grace_time) == (True, 1, 3600)
    table.apply({"hourly": _jobdef(tmp_path, 'misfire = "skip"\n')})
    assert scheduler.get_job("hourly").misfire_grace_time == SKIP_TOLERANCE


def test_apply_adds_changes_and_removes(tmp_path: Path) -> None:
    """A reload's job set is applied as a diff: unchanged jobs keep their entry, removed ones go."""
    scheduler, table = _table(tmp_path)
    job = _jobdef(tmp_path)
    assert table.apply({"hourly": job}) == {"added": ["hourly"], "changed": [], "removed": []}
    assert table.apply({"hourly": _jobdef(tmp_path)}) == {"added": [], "changed": [], "removed": []}
    assert table.apply({"hourly": _jobdef(tmp_path, schedule="*/5 * * * *")})["changed"] == ["hourly"]
    assert table.apply({}) == {"added": [], "changed": [], "removed": ["hourly"]}
    assert scheduler.get_job("hourly") is None
    table.apply({"hourly": _jobdef(tmp_path, "enabled = false\n")})
    assert scheduler.get_job("hourly") is None and "hourly" in table.jobs


# -- the jobs on a real APScheduler, its clock driven by the test ----------------------------


class _Clock:
    """The one "now" both APScheduler's scheduler loop and its executor read."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        clock = self

        class _Now(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> _Now:  # type: ignore[override]
                return clock.now.astimezone(tz)  # type: ignore[return-value]

        self.datetime = _Now


class _HeldExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs a job at once but keeps it counted as running until ``finish`` (a long recon)."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[tuple[str, list[Any]]] = []

    def _do_submit_job(self, job: Any, run_times: list[dt.datetime]) -> None:
        self._held.append((job.id, run_job(job, job._jobstore_alias, run_times, self._logger.name)))

    def finish(self) -> None:
        held, self._held = self._held, []
        for job_id, events in held:
            self._run_job_success(job_id, events)


class _SteppedScheduler(BaseScheduler):  # type: ignore[misc]
    """A scheduler with no thread of its own: the test calls ``step`` after moving the clock."""

    def wakeup(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def step(self) -> None:
        self._process_jobs()


@pytest.fixture
def stepped(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    clock = _Clock(_at("2026-01-01T10:30"))
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", clock.datetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", clock.datetime)
    executor = _HeldExecutor()
    scheduler = _SteppedScheduler(timezone=UTC, executors={"default": executor})
    fired: list[tuple[str, str]] = []
    table = JobTable(scheduler, lambda name, _trigger: fired.append((name, clock.now.strftime("%H:%M"))),
                     now=lambda: clock.now)
    scheduler.start()
    scheduler.table = table
    yield clock, scheduler, executor, fired
    scheduler.shutdown(wait=False)


def _move(clock: _Clock, scheduler: _SteppedScheduler, executor: _HeldExecutor, to: str) -> None:
    clock.now = _at(to)
    scheduler.step()
    executor.finish()


def test_on_time_fires_run_and_a_stalled_loop_runs_once_or_skips(tmp_path: Path, stepped: Any) -> None:
    """The loop stalls from 11:00 to 13:20: the ``run_once`` job runs once for the two fires
    it missed (coalesced, the latest within grace); the ``skip`` job drops them and logs ``reason=misfire``."""
    clock, scheduler, executor, fired = stepped
    once = _jobdef(tmp_path)
    (tmp_path / "skip.toml").write_text('schedule = "0 * * * *"\nmappings = ["m"]\nmisfire = "skip"\n')
    skip = parse_job(tmp_path / "skip.toml", ["m"])
    scheduler.table.apply({"hourly": once, "skip": skip})
    _move(clock, scheduler, executor, "2026-01-01T10:59:59")
    assert fired == []
    _move(clock, scheduler, executor, "2026-01-01T11:00:03")  # a few seconds late is on time
    assert sorted(fired) == [("hourly", "11:00"), ("skip", "11:00")]
    fired.clear()
    with capture_logs() as logs:
        _move(clock, scheduler, executor, "2026-01-01T13:20")
    assert fired == [("hourly", "13:20")]
    assert [(e["job"], e["reason"], e["fire_times"]) for e in logs if e["event"] == "job.skipped"] == [
        ("skip", "misfire", ["2026-01-01T13:00:00+00:00"])
    ]
    assert scheduler.get_job("hourly").next_run_time == _at("2026-01-01T14:00")
    fired.clear()
    _move(clock, scheduler, executor, "2026-01-01T14:00:20")  # past the skip tolerance of 10 s
    assert fired == [("hourly", "14:00")]


def test_run_once_grace_limits_a_late_fire(tmp_path: Path, stepped: Any) -> None:
    """A fire delayed by more than ``misfire_grace`` is not run, even with ``run_once``."""
    clock, scheduler, executor, fired = stepped
    scheduler.table.apply({"hourly": _jobdef(tmp_path, "misfire_grace = 600\n")})
    with capture_logs() as logs:
        _move(clock, scheduler, executor, "2026-01-01T11:09")
        _move(clock, scheduler, executor, "2026-01-01T12:11")
    assert fired == [("hourly", "11:09")]
    assert [e["reason"] for e in logs if e["event"] == "job.skipped"] == ["misfire"]


def test_overlapping_fire_is_skipped_and_logged(tmp_path: Path, stepped: Any) -> None:
    """A fire arriving while the job still runs is dropped with ``job.skipped reason=running``;
    once the run ended, the next fire runs again."""
    clock, scheduler, executor, fired = stepped
    scheduler.table.apply({"hourly": _jobdef(tmp_path, schedule="*/5 * * * *")})
    clock.now = _at("2026-01-01T10:35")
    scheduler.step()  # runs, and is still running at the next fire
    with capture_logs() as logs:
        clock.now = _at("2026-01-01T10:40")
        scheduler.step()
    executor.finish()
    _move(clock, scheduler, executor, "2026-01-01T10:45")
    assert fired == [("hourly", "10:35"), ("hourly", "10:45")]
    assert [(e["event"], e["reason"], e["fire_times"]) for e in logs] == [
        ("job.skipped", "running", ["2026-01-01T10:40:00+00:00"])
    ]


def test_a_skipped_fire_is_told_once_at_the_jobs_level(tmp_path: Path, stepped: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A liveSync job's fire dropped while its run goes on is ``job.skipped`` at info, and a
    ``skip`` job's missed fire ``job.skipped`` at warning, and nothing more: APScheduler's own
    warnings for them ("maximum number of running instances reached", "was missed by") would
    put a warning in the journal every few seconds while a liveSync job's full recon runs."""
    clock, scheduler, executor, _fired = stepped
    (tmp_path / "live.toml").write_text('schedule = "*/5 * * * *"\nlivesync = "system/ldap/account"\n')
    (tmp_path / "skip.toml").write_text('schedule = "0 * * * *"\nmappings = ["m"]\nmisfire = "skip"\n')
    scheduler.table.apply({"live": parse_job(tmp_path / "live.toml", ["m"]),
                           "skip": parse_job(tmp_path / "skip.toml", ["m"])})
    clock.now = _at("2026-01-01T10:35")
    scheduler.step()  # the liveSync job runs, and still runs at its next fire
    with capture_logs() as logs, caplog.at_level(logging.DEBUG, logger="apscheduler"):
        clock.now = _at("2026-01-01T11:00:30")  # the skip job's fire: 30 s late, past its tolerance
        scheduler.step()
        executor.finish()
    assert sorted((e["job"], e["reason"], e["log_level"]) for e in logs if e["event"] == "job.skipped") == [
        ("live", "running", "info"), ("skip", "misfire", "warning")]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_late_housekeeping_task_is_no_skipped_job(tmp_path: Path, stepped: Any) -> None:
    """The daemon's own interval tasks (``#prune``, ``#status``, ``#roles``) missed while the
    process was paused log no ``job.skipped`` (before: ``job.skipped job=""``, a job with no
    name, at warning); they run at their next interval. A job's missed fire still does."""
    clock, scheduler, executor, _fired = stepped
    (tmp_path / "skip.toml").write_text('schedule = "0 * * * *"\nmappings = ["m"]\nmisfire = "skip"\n')
    scheduler.table.apply({"skip": parse_job(tmp_path / "skip.toml", ["m"])})
    scheduler.add_job(lambda: None, "interval", minutes=7, start_date=_at("2026-01-01T10:31:30"), id="#status",
                      max_instances=1, coalesce=True,
                      misfire_grace_time=1)
    _move(clock, scheduler, executor, "2026-01-01T10:31:00")
    with capture_logs() as logs:
        _move(clock, scheduler, executor, "2026-01-01T11:00:30")
    assert [(e["job"], e["reason"]) for e in logs if e["event"] == "job.skipped"] == [("skip", "misfire")]


def test_a_fire_started_late_is_told_the_instant_it_was_scheduled_for(tmp_path: Path) -> None:
    """A job every second on a real scheduler whose one thread is held 2.2 s by the first
    fire: the next fires start more than a second late, and each is told its own scheduled
    instant (``FireTimeExecutor``), which a cluster node keys the queued fire by. Before,
    the node took the fire from the time its thread started: a fire started after the
    next one's instant queued that one in its place, and its own was lost unlogged."""
    seen: list[tuple[dt.datetime | None, dt.datetime]] = []

    def fire(_name: str, _trigger: str, scheduled: dt.datetime | None = None) -> None:
        seen.append((scheduled, dt.datetime.now(UTC)))
        if len(seen) == 1:
            time.sleep(2.2)

    scheduler = BackgroundScheduler(timezone=UTC, executors={"default": FireTimeExecutor(1)})
    table = JobTable(scheduler, fire, instances=3, fire_times=True)
    (tmp_path / "tick.toml").write_text('schedule = "* * * * * ?"\nmappings = ["m"]\n')
    table.apply({"tick": parse_job(tmp_path / "tick.toml", ["m"])})
    scheduler.start()
    try:
        deadline = time.monotonic() + 60  # some 4 s on a quiet machine
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)
    scheduled = [s for s, _ in seen]
    assert len(seen) >= 3 and all(s is not None and s.microsecond == 0 for s in scheduled), seen
    assert len(set(scheduled)) == len(scheduled), seen
    assert [s for s, started in seen if s is not None and (started - s).total_seconds() > 1], seen


def test_fires_follow_the_zone_across_a_dst_change_on_the_scheduler(tmp_path: Path, stepped: Any) -> None:
    """Driven hour by hour through the spring-forward night, a 02:30 Stockholm job runs
    once, at 03:00 local (01:00 UTC), and the next night at 02:30 local again."""
    clock, scheduler, executor, fired = stepped
    job = _jobdef(tmp_path, 'timezone = "Europe/Stockholm"\n', schedule="30 2 * * *")
    clock.now = _at("2026-03-28T12:00")
    scheduler.table.apply({"hourly": job})
    seen: list[str] = []
    instant = clock.now
    while instant < _at("2026-03-30T12:00"):
        instant += dt.timedelta(minutes=10)
        before = len(fired)
        _move(clock, scheduler, executor, instant.isoformat())
        if len(fired) > before:
            seen.append(instant.isoformat())
    assert seen == ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]


def test_a_reload_in_the_moment_before_a_fire_runs_neither_drops_nor_repeats_it(tmp_path: Path,
                                                                                 stepped: Any) -> None:
    """A reload that reschedules a job (its file changed) after a fire's time but before the
    scheduler's loop woke for it (a few milliseconds, longer while the reload reads the
    configuration on that loop, or within the job's jitter) keeps the fire: the new entry
    starts at it, not at the next one. A reload just after the fire ran does not run it
    again. The same holds when the schedule itself changed, and with jitter on both sides."""
    clock, scheduler, executor, fired = stepped
    versions = iter(range(100))

    def reload(extra: str = "", schedule: str = "0 * * * *") -> None:
        job = _jobdef(tmp_path, f'description = "v{next(versions)}"\n{extra}', schedule=schedule)
        assert scheduler.table.apply({"hourly": job})["changed"] == ["hourly"]

    scheduler.table.apply({"hourly": _jobdef(tmp_path)})
    _move(clock, scheduler, executor, "2026-01-01T10:59:59.999")
    clock.now = _at("2026-01-01T11:00:00.002")  # the fire is due, the loop has not woken yet
    reload()
    _move(clock, scheduler, executor, "2026-01-01T11:00:00.004")
    assert fired == [("hourly", "11:00")]
    reload()  # just after the fire ran
    _move(clock, scheduler, executor, "2026-01-01T11:00:00.006")
    assert fired == [("hourly", "11:00")]
    assert scheduler.get_job("hourly").next_run_time == _at("2026-01-01T12:00")
    clock.now = _at("2026-01-01T12:00:00.002")  # a new schedule that has the due fire too
    reload(schedule="*/30 * * * *")
    _move(clock, scheduler, executor, "2026-01-01T12:00:01")
    assert fired == [("hourly", "11:00"), ("hourly", "12:00")]
    reload("jitter = 600\n", schedule="0 * * * *")
    assert scheduler.get_job("hourly").next_run_time >= _at("2026-01-01T13:00")
    clock.now = _at("2026-01-01T13:00:00.002")  # the regular fire passed, its jittered time perhaps not
    reload("jitter = 900\n")
    assert _at("2026-01-01T13:00") <= scheduler.get_job("hourly").next_run_time <= _at("2026-01-01T13:15")
    _move(clock, scheduler, executor, "2026-01-01T13:15:01")
    assert [f for _, f in fired] == ["11:00", "12:00", "13:15"]
    reload("jitter = 900\n")  # after the jittered fire ran
    _move(clock, scheduler, executor, "2026-01-01T13:15:02")
    assert len(fired) == 3 and scheduler.get_job("hourly").next_run_time >= _at("2026-01-01T14:00")


def _wait_for(fired: list[str], count: int, executor: FireTimeExecutor) -> None:
    """Until ``count`` runs have started and ended (60 s at most, for a loaded machine: the
    assertions then say what ran): a run still under way when the clock moves on would take
    the next fire's turn (one instance at a time), or read the clock after it moved."""
    deadline = time.monotonic() + 60
    while (len(fired) < count or any(executor._instances.values())) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_fires_merged_while_the_process_was_busy_are_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler's loop stalled from 11:00 to 14:20 (the process paused, or starved):
    the hourly ``run_once`` job runs once, for 14:00, and the 12:00 and 13:00 fires merged
    into it are told (``job.skipped reason=coalesced``, at info); before, APScheduler
    dropped them without a word. A job replaced by a reload tells nothing of its old schedule."""
    clock = _Clock(_at("2026-01-01T10:30"))
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", clock.datetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", clock.datetime)
    executor = FireTimeExecutor(1)
    scheduler = _SteppedScheduler(timezone=UTC, executors={"default": executor})
    fired: list[str] = []
    table = JobTable(scheduler, lambda name, _trigger: fired.append(clock.now.strftime("%H:%M")),
                     now=lambda: clock.now)
    scheduler.start()
    try:
        table.apply({"hourly": _jobdef(tmp_path)})
        clock.now = _at("2026-01-01T11:00:02")
        scheduler.step()
        _wait_for(fired, 1, executor)  # each run reads the clock in the pool's thread: before it moves on
        with capture_logs() as logs:
            clock.now = _at("2026-01-01T14:20")
            scheduler.step()
            _wait_for(fired, 2, executor)
            table.apply({"hourly": _jobdef(tmp_path, schedule="*/5 * * * *")})
            clock.now = _at("2026-01-01T14:50")
            scheduler.step()
            _wait_for(fired, 3, executor)
    finally:
        scheduler.shutdown(wait=True)
    assert fired == ["11:00", "14:20", "14:50"]
    assert [(e["reason"], e["fire_times"], e["count"], e["log_level"]) for e in logs if e["event"] == "job.skipped"] \
        == [("coalesced", ["2026-01-01T12:00:00+00:00", "2026-01-01T13:00:00+00:00"], 2, "info")]


def test_a_schedule_whose_year_is_past_has_no_next_fire() -> None:
    """A Quartz year field ends the schedule: after its last date there is no next fire (None,
    no croniter error), no list of fires, no earlier fire before its first date; the trigger
    ends too, which APScheduler takes as the job's end."""
    once = CronSchedule.parse("50 33 12 7 12 ? 2026")
    last = _at("2026-12-07T12:33:50")
    assert once.next_after(_at("2026-12-07T12:00")) == last
    assert once.next_after(last) is None
    assert once.next_fires(3, last) == []
    assert once.previous_fire(before=_at("2026-12-01T00:00"), since=_at("2026-01-01T00:00")) is None
    assert CronScheduleTrigger(once, jitter=10).get_next_fire_time(last, last) is None
    assert CronScheduleTrigger(once).get_next_fire_time(None, _at("2027-01-01T00:00")) is None


def test_a_one_off_job_fires_once_and_the_others_go_on(tmp_path: Path, stepped: Any) -> None:
    """A job with a Quartz year fires at its date, then has no next fire; the hourly job beside
    it fires on as before (the trigger's end once stopped the whole scheduler)."""
    clock, scheduler, executor, fired = stepped
    (tmp_path / "once.toml").write_text('schedule = "0 0 11 1 1 ? 2026"\nmappings = ["m"]\n', encoding="utf-8")
    scheduler.table.apply({"hourly": _jobdef(tmp_path), "once": parse_job(tmp_path / "once.toml", ["m"])})
    _move(clock, scheduler, executor, "2026-01-01T11:00:01")
    assert sorted(fired) == [("hourly", "11:00"), ("once", "11:00")]
    assert scheduler.table.next_fire("once") is None
    fired.clear()
    _move(clock, scheduler, executor, "2026-01-01T12:00:01")
    _move(clock, scheduler, executor, "2026-01-01T13:00:01")
    assert fired == [("hourly", "12:00"), ("hourly", "13:00")]
