"""Scheduling semantics, the clock passed in: expressions, time zones, DST, misfires, overlap."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from idsync.config.jobs import JobDef, parse_job
from idsync.daemon.schedule import CronSchedule, ScheduleError
from idsync.daemon.scheduler import SKIP_TOLERANCE, CronScheduleTrigger, JobTable, missed_fire
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


@pytest.mark.parametrize("bad", ["0 0 12 LW * ?", "0 0 30 2 *", "* * *", ""])
def test_invalid_expressions_raise(bad: str) -> None:
    """What croniter cannot walk is a ScheduleError, never a crash later."""
    with pytest.raises(ScheduleError):
        CronSchedule.parse(bad)


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


def test_overlapping_fire_is_skipped_and_logged(tmp_path: Path) -> None:
    """A fire arriving while the job still runs is dropped with ``job.skipped reason=running``."""
    _scheduler, table = _table(tmp_path)
    with capture_logs() as logs:
        table._on_event(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "hourly", "default", [_at("2026-01-01T12:00")]))
    assert logs == [
        {
            "event": "job.skipped",
            "job": "hourly",
            "reason": "running",
            "fire_times": ["2026-01-01T12:00:00+00:00"],
            "log_level": "warning",
        }
    ]
