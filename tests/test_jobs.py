"""Job files (``config/jobs.py``): what a valid file gives, and how each mistake is reported."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from idsync.config.jobs import DEFAULT_MISFIRE_GRACE, ScheduleEnded, load_jobs, parse_job
from idsync.config.pingidm_schedules import load_all_jobs
from idsync.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
MAPPINGS = ["a", "b"]


def _job(tmp_path: Path, text: str, name: str = "nightly") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_job(_job(tmp_path, text), MAPPINGS)
    return info.value


def test_full_job_file_is_read_with_every_option(tmp_path: Path) -> None:
    """Every documented key lands in the JobDef, with the file name as the job name."""
    job = parse_job(
        _job(
            tmp_path,
            """
        description = "Nightly"
        schedule = "0 30 2 * * ?"
        timezone = "Europe/Stockholm"
        mappings = ["a", "b"]
        enabled = false
        misfire = "skip"
        misfire_grace = 120
        jitter = 5
        timeout = 600
        continue_on_failure = true
        dry_run = true
        allow_delete = false
        max_deletes = "5%"
        page_size = 200
    """,
        ),
        MAPPINGS,
    )
    assert job.name == "nightly"
    assert job.mappings == ("a", "b")
    assert job.timezone == "Europe/Stockholm"
    assert (job.enabled, job.misfire, job.misfire_grace, job.jitter, job.timeout) == (
        False,
        "skip",
        120,
        5,
        600,
    )
    assert job.continue_on_failure and job.dry_run and job.allow_delete is False
    assert job.max_deletes == pytest.approx(0.05)
    assert job.page_size == 200


def test_defaults_are_utc_run_once_with_an_hour_of_grace(tmp_path: Path) -> None:
    """A minimal job: UTC, enabled, misfire run_once within the documented grace, no timeout."""
    job = parse_job(_job(tmp_path, 'schedule = "@hourly"\nmappings = "a"\n'), MAPPINGS)
    assert job.timezone == "UTC"
    assert job.enabled and job.misfire == "run_once"
    assert job.misfire_grace == DEFAULT_MISFIRE_GRACE == 3600
    assert job.timeout is None and job.max_deletes is None and job.mappings == ("a",)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('schedule = "0 61 * * *"\nmappings = ["a"]', "schedule", "invalid expression"),
        ('schedule = "1 2 3"\nmappings = ["a"]', "schedule", "3 fields"),
        ('schedule = "@sometimes"\nmappings = ["a"]', "schedule", "unknown macro"),
        ('schedule = "0 0 12 ? * 9"\nmappings = ["a"]', "schedule", "out of range"),
        ('mappings = ["a"]', "schedule", "required"),
        (
            'schedule = "@daily"\ntimezone = "Mars/Olympus"\nmappings = ["a"]',
            "timezone",
            "unknown time zone",
        ),
        ('schedule = "@daily"\nmappings = ["a", "zzz"]', "mappings[1]", "unknown mapping 'zzz'"),
        ('schedule = "@daily"\nmappings = []', "mappings", "one or more"),
        ('schedule = "@daily"\nmappings = ["a", "a"]', "mappings[1]", "'a' is listed twice (also mappings[0])"),
        ('schedule = "*/5 * * * * ?"\nlivesync = ["system/ldap/account", "managed/user", "system/ldap/account"]',
         "livesync[2]", "'system/ldap/account' is listed twice (also livesync[0])"),
        ('schedule = "@daily"\nmappings = ["a"]\nmisfire = "later"', "misfire", "run_once"),
        ('schedule = "@daily"\nmappings = ["a"]\ndry_run = "yes"', "dry_run", "true or false"),
        ('schedule = "@daily"\nmappings = ["a"]\ntimeout = -1', "timeout", "negative"),
        (
            'schedule = "@daily"\nmappings = ["a"]\nmax_deletes = "lots"',
            "max_deletes",
            "percentage",
        ),
        ('schedule = "@daily"\nmappings = ["a"]\ndryrun = true', "dryrun", "unknown setting, did you mean dry_run?"),
        ('schedule = "@daily"\nmappings = ["a"]\nmisfir = "skip"', "misfir", "unknown setting, did you mean misfire?"),
        ('schedule = "*/2 * * * * ?"\nmappings = ["a"]\njitter = 2', "jitter", "below the schedule's interval (2 s)"),
        ('schedule = "0 0 12 1 * MON"\nmappings = ["a"]', "schedule", "'?' in one of them"),
    ],
)
def test_each_mistake_names_file_key_and_problem(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    """Invalid values are ConfigErrors whose text is ``file: key: problem``."""
    err = _error(tmp_path, text)
    assert err.key == key
    assert fragment in err.problem
    assert str(err).startswith(f"{tmp_path / 'nightly.toml'}: {key}: ")


@pytest.mark.parametrize("name", ["implicit", "retry", "reconById"])
def test_job_names_of_pushes_are_refused(tmp_path: Path, name: str) -> None:
    """A job file named like the runs of one-object pushes is refused: its full recons
    would not count as complete ones, and their failures would be retried as pushes."""
    with pytest.raises(ConfigError, match="single-object pushes"):
        parse_job(_job(tmp_path, 'schedule = "0 2 * * *"\nmappings = ["m"]\n', name=name))


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML at all is reported against the file."""
    err = _error(tmp_path, "schedule = \n")
    assert err.file.endswith("nightly.toml") and "not valid TOML" in err.problem


def test_load_jobs_keeps_good_files_and_reports_bad_ones(tmp_path: Path) -> None:
    """One broken file does not hide the others; non-.toml files are not jobs."""
    _job(tmp_path, 'schedule = "@daily"\nmappings = ["a"]', "good")
    _job(tmp_path, 'schedule = "nope"\nmappings = ["a"]', "bad")
    (tmp_path / "old.toml.disabled").write_text('schedule = "@daily"\nmappings = ["a"]')
    jobs, errors = load_jobs(tmp_path, MAPPINGS)
    assert list(jobs) == ["good"]
    assert [Path(e.file).name for e in errors] == ["bad.toml"]


def test_shipped_example_jobs_are_valid() -> None:
    """The example jobs in jobs.d/ parse, and name the two Smart ID mappings."""
    jobs, errors = load_jobs(REPO / "jobs.d")
    assert errors == []
    assert {"sync-active-ldap-users", "sync-inactive-ldap-users"} <= set(jobs)
    assert jobs["sync-active-ldap-users"].mappings == ("systemLdapActiveAccounts_managedUser",)
    assert jobs["sync-inactive-ldap-users"].mappings == ("systemLdapInactiveAccounts_managedUser",)


def test_inactive_filter_presets_are_valid_and_complementary() -> None:
    """docs/jobs.md's per-directory "inactive" presets (OpenLDAP, 389 DS, Active Directory) are
    valid LDAP filters; each active filter is exactly its inactive filter's negation; and the
    shipped Smart ID mappings use the OpenLDAP row."""
    from ldap3.operation.search import parse_filter

    rows: dict[str, tuple[str, str]] = {}
    for line in (REPO / "docs" / "jobs.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`(") and cells[2].startswith("`("):
            rows[cells[0].split(" ")[0]] = (cells[1].strip("`"), cells[2].strip("`"))
    assert {"OpenLDAP", "389", "Active"} <= set(rows)
    assert "1.2.840.113556.1.4.803" in rows["Active"][0]
    for directory, (inactive, active) in rows.items():
        for text in (inactive, active):
            parse_filter(text, None, True, True, None, False)  # raises on a malformed filter
        m = re.fullmatch(r"\(&(?P<base>.*)(?P<cond>\([^()]*\))\)", inactive)
        assert m is not None, directory
        assert active == f"(&{m['base']}(!{m['cond']}))", directory
    shipped = {}
    for name in ("systemLdapInactiveAccounts_managedUser", "systemLdapActiveAccounts_managedUser"):
        mapping = json.loads((REPO / "conf" / f"mapping-{name}.json").read_text(encoding="utf-8"))
        shipped[name] = mapping["sourceQuery"]["nativeQuery"]
    assert tuple(shipped.values()) == rows["OpenLDAP"]



def test_jitter_on_a_schedule_with_one_fire_left_is_accepted(tmp_path: Path) -> None:
    """Jitter is checked against the interval between fires; a schedule with one fire left (a
    Quartz year) has none, so any jitter is fine (its check once crashed ``validate``)."""
    job = parse_job(_job(tmp_path, 'schedule = "0 0 12 1 1 ? 2030"\nmappings = ["a"]\njitter = 10\n'), MAPPINGS)
    assert job.jitter == 10.0


def test_a_schedule_with_no_future_fire_is_a_warning_and_the_job_stays_listed(tmp_path: Path) -> None:
    """A schedule whose every date is past loads (a one-off job that has run stays valid), with
    a warning naming the file and the key; the job is listed, with no fire to come."""
    jobs_dir, conf = tmp_path / "jobs.d", tmp_path / "conf"
    jobs_dir.mkdir(), conf.mkdir()
    _job(jobs_dir, 'schedule = "0 0 12 * * ? 2020"\nmappings = ["a"]\n', "past")
    _job(jobs_dir, 'schedule = "@daily"\nmappings = ["a"]\n', "daily")
    jobs, problems = load_all_jobs(jobs_dir, conf, MAPPINGS)
    assert sorted(jobs) == ["daily", "past"]
    assert [type(p) for p in problems] == [ScheduleEnded]
    assert (Path(problems[0].file).name, problems[0].key) == ("past.toml", "schedule")
    assert "matches no date in the future" in problems[0].problem
    assert jobs["past"].schedule.next_fires(3, dt.datetime.now(dt.UTC)) == []
