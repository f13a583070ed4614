"""PingIDM schedules of ``"type": "simple"`` (a repeat interval) and the ``startTime`` /
``endTime`` window of either type: read from real ``conf/schedule-NAME.json`` files, their
fire times computed for a given clock, and fired by the daemon's scheduler trigger."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from idsync.config.jobs import JobDef
from idsync.config.pingidm_schedules import UnsupportedSchedule, parse_schedule
from idsync.daemon.scheduler import CronScheduleTrigger, JobTable, missed_fire
from idsync.errors import ConfigError

UTC = dt.UTC
_SIMPLE = {
    "type": "simple",
    "repeatInterval": 3_600_000,
    "invokeService": "sync",
    "invokeContext": {"action": "reconcile", "mapping": "m1"},
}
_CRON = {**_SIMPLE, "type": "cron", "schedule": "0 0 * * * ?"}
del _CRON["repeatInterval"]


def _at(text: str, tz: str = "UTC") -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def _job(tmp_path: Path, body: dict[str, Any], name: str = "every") -> JobDef:
    path = tmp_path / "conf" / f"schedule-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body), encoding="utf-8")
    return parse_schedule(path, ["m1"])


def _fires(job: JobDef, after: str, count: int = 10) -> list[str]:
    return [f.astimezone(UTC).isoformat() for f in job.schedule.next_fires(count, _at(after))]


def test_a_simple_schedule_fires_every_repeat_interval_on_a_fixed_grid(tmp_path: Path) -> None:
    """``repeatInterval`` 3600000 ms fires an hour apart; without a ``startTime`` the grid
    starts at the Unix epoch, so the fires are on the hour whenever the daemon started."""
    job = _job(tmp_path, _SIMPLE)
    assert _fires(job, "2026-01-01T10:17:42", 3) == [
        "2026-01-01T11:00:00+00:00", "2026-01-01T12:00:00+00:00", "2026-01-01T13:00:00+00:00",
    ]
    assert job.schedule.previous_fire(before=_at("2026-01-01T10:17"), since=_at("2026-01-01T09:00")) == \
        _at("2026-01-01T10:00")
    summary = job.summary()
    assert (summary["schedule"], summary["scheduleDescription"], summary["timezone"]) == \
        ("every 3600 s", "Every hour", "UTC")
    half = _job(tmp_path, {**_SIMPLE, "repeatInterval": 1_500, "repeatCount": -1})
    assert _fires(half, "2026-01-01T00:00:00", 2) == ["2026-01-01T00:00:01.500000+00:00",
                                                       "2026-01-01T00:00:03+00:00"]
    assert half.schedule.describe() == "Every 1.5 seconds"


def test_no_fire_before_start_time_and_the_grid_starts_there(tmp_path: Path) -> None:
    """A ``startTime`` without an offset is in the ``timeZone``: nothing fires before it,
    the first fire is at it, and the next ones an interval apart from it."""
    job = _job(tmp_path, {**_SIMPLE, "repeatInterval": 1_800_000, "startTime": "2026-12-06T10:07:00",
                          "timeZone": "Europe/Stockholm"})
    assert _fires(job, "2026-12-01T00:00:00", 3) == [
        "2026-12-06T09:07:00+00:00", "2026-12-06T09:37:00+00:00", "2026-12-06T10:07:00+00:00",
    ]
    assert job.schedule.previous_fire(before=_at("2026-12-06T09:06"), since=_at("2026-01-01T00:00")) is None
    assert job.schedule.expression == "every 1800 s from 2026-12-06T10:07:00+01:00"
    assert job.schedule.describe() == "Every 30 minutes, from 2026-12-06 10:07:00"


def test_after_end_time_there_is_no_next_fire(tmp_path: Path) -> None:
    """Past ``endTime`` (with an offset: in that offset) a schedule has no next fire; a fire
    at ``endTime`` itself still happens, and the misfire catch-up finds nothing after it."""
    job = _job(tmp_path, {**_SIMPLE, "endTime": "2026-01-01T12:00:00Z", "misfirePolicy": "fireAndProceed"})
    assert job.schedule.next_after(_at("2026-03-01T00:00")) is None
    assert job.schedule.next_fires(5, _at("2026-03-01T00:00")) == []
    assert _fires(job, "2026-01-01T10:30:00") == ["2026-01-01T11:00:00+00:00", "2026-01-01T12:00:00+00:00"]
    assert missed_fire(job, last_started=_at("2026-01-01T11:00:01"), now=_at("2026-01-01T12:30")) == \
        _at("2026-01-01T12:00")
    assert missed_fire(job, last_started=_at("2026-01-01T12:00:01"), now=_at("2026-01-01T13:30")) is None


def test_repeat_count_with_a_start_time_fires_one_more_time_than_it_says(tmp_path: Path) -> None:
    """``repeatCount`` N counts the repeats after the first fire, as in PingIDM: 2 is exactly 3 fires."""
    job = _job(tmp_path, {**_SIMPLE, "startTime": "2026-06-01T08:00:00Z", "repeatCount": 2})
    assert _fires(job, "2026-01-01T00:00:00") == [
        "2026-06-01T08:00:00+00:00", "2026-06-01T09:00:00+00:00", "2026-06-01T10:00:00+00:00",
    ]
    once = _job(tmp_path, {**_SIMPLE, "startTime": "2026-06-01T08:00:00Z", "repeatCount": 0,
                           "endTime": "2026-06-01T09:00:00Z"})
    assert _fires(once, "2026-01-01T00:00:00") == ["2026-06-01T08:00:00+00:00"]


def test_repeat_count_without_a_start_time_is_unsupported(tmp_path: Path) -> None:
    """Without a ``startTime`` a restarted daemon could not count repeats: a warning naming
    the schedule and ``repeatCount``, and the job is not scheduled."""
    with pytest.raises(UnsupportedSchedule) as info:
        _job(tmp_path, {**_SIMPLE, "repeatCount": 5}, name="counted")
    assert info.value.key == "repeatCount"
    assert "schedule 'counted'" in info.value.problem and "without a startTime" in info.value.problem
    assert "not scheduled" in info.value.problem


@pytest.mark.parametrize(("change", "key", "problem"), [
    ({"startTime": "next Monday"}, "startTime", "ISO 8601"),
    ({"endTime": 20260101}, "endTime", "ISO 8601"),
    ({"startTime": "2026-02-01T00:00:00", "endTime": "2026-01-01T00:00:00"}, "endTime", "before startTime"),
    ({"repeatInterval": 999}, "repeatInterval", "1000 milliseconds (one second) or more, not 999"),
    ({"repeatInterval": 0}, "repeatInterval", "or more, not 0"),
    ({"repeatInterval": "1h"}, "repeatInterval", "expected a whole number"),
    ({"repeatInterval": 60_000.5}, "repeatInterval", "expected a whole number"),
    ({"repeatCount": -2}, "repeatCount", "expected -1 (forever)"),
    ({"type": "cron", "schedule": "0 0 * * * ?"}, "repeatInterval", 'only for type "simple"'),
    ({"timeZone": "Mars/Olympus"}, "timeZone", "unknown time zone"),
])
def test_a_bad_simple_schedule_names_file_and_key(tmp_path: Path, change: dict[str, Any], key: str,
                                                  problem: str) -> None:
    """A bad start or end time, an end before the start, an interval below one second or not
    a whole number of milliseconds, is a ConfigError (not a warning) naming the file and key."""
    with pytest.raises(ConfigError) as info:
        _job(tmp_path, {**_SIMPLE, **change}, name="bad")
    assert not isinstance(info.value, UnsupportedSchedule)
    assert info.value.file.endswith("schedule-bad.json") and info.value.key == key
    assert problem in info.value.problem
    without = dict(_SIMPLE)
    del without["repeatInterval"]
    with pytest.raises(ConfigError) as info:
        _job(tmp_path, without, name="bad")
    assert info.value.key == "repeatInterval" and info.value.problem == "required"


def test_a_cron_schedule_fires_only_between_start_and_end_time(tmp_path: Path) -> None:
    """``startTime`` and ``endTime`` bound a Quartz schedule too, both included."""
    job = _job(tmp_path, {**_CRON, "schedule": "0 0 */6 * * ?", "startTime": "2026-01-02T06:00:00",
                          "endTime": "2026-01-03T06:00:00"})
    assert _fires(job, "2026-01-01T00:00:00") == [
        "2026-01-02T06:00:00+00:00", "2026-01-02T12:00:00+00:00", "2026-01-02T18:00:00+00:00",
        "2026-01-03T00:00:00+00:00", "2026-01-03T06:00:00+00:00",
    ]
    assert job.schedule.previous_fire(before=_at("2026-02-01T00:00"), since=_at("2026-01-01T00:00")) == \
        _at("2026-01-03T06:00")
    assert job.schedule.previous_fire(before=_at("2026-01-02T05:00"), since=_at("2026-01-01T00:00")) is None
    assert job.summary()["schedule"] == \
        "0 0 */6 * * ? from 2026-01-02T06:00:00+00:00 until 2026-01-03T06:00:00+00:00"


def test_the_daemon_trigger_fires_a_simple_schedule(tmp_path: Path) -> None:
    """The scheduler's trigger gives the interval's fires one after the other, and none past
    the end, so APScheduler drops the job; a job table schedules its first fire at startTime."""
    job = _job(tmp_path, {**_SIMPLE, "startTime": "2099-01-01T00:00:00Z", "repeatCount": 1})
    trigger = CronScheduleTrigger(job.schedule)
    first = trigger.get_next_fire_time(None, _at("2026-01-01T00:00"))
    assert first == _at("2099-01-01T00:00")
    second = trigger.get_next_fire_time(first, _at("2099-01-01T00:00:01"))
    assert second == _at("2099-01-01T01:00")
    assert trigger.get_next_fire_time(second, _at("2099-01-01T01:00:01")) is None
    assert str(trigger) == "schedule[every 3600 s from 2099-01-01T00:00:00+00:00 until 2099-01-01T01:00:00+00:00, UTC]"

    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    try:
        table = JobTable(scheduler, lambda name, trigger: None)
        table.apply({"every": job})
        assert table.next_fire("every") == _at("2099-01-01T00:00")
        ended = _job(tmp_path, {**_SIMPLE, "endTime": "2000-01-01T00:00:00Z"}, name="ended")
        table.apply({"every": job, "ended": ended})
        assert table.next_fire("ended") is None and "ended" in table.jobs
    finally:
        scheduler.shutdown(wait=False)
