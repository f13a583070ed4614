"""The daemon's parts: job runner and its lock, crash recovery, reload, the daemon's own
state (status, catch-up, logs), sd_notify and the unit file. End to end: test_daemon_e2e.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from cli_runner import run_cli
from dbs import store_url
from idsync.config.jobs import parse_job
from idsync.console.web import shown, when
from idsync.daemon import runner as runner_module
from idsync.daemon.notify import Notifier
from idsync.daemon.recovery import recover_interrupted
from idsync.daemon.reload import load_configuration
from idsync.daemon.runner import job_lock_name, run_job
from idsync.daemon.scheduler import JobTable
from idsync.daemon.service import Daemon, _shape
from idsync.errors import ConfigError, PeerUnavailable, RunLocked
from idsync.settings import load_settings
from idsync.store.database import Store, utcnow
from idsync.store.runs import RunStore
from idsync.store.runs import owner_id as runs_owner
from idsync.store.tables import locks, recon_runs
from jinja2 import Environment, PackageLoader
from pg_outage import outage
from sqlalchemy import insert, update

REPO = Path(__file__).resolve().parent.parent
IDSYNC = Path(sys.executable).parent / "idsync"
# The stand-in recon never looks at the project; the runner reads only its progress interval.
_PROJECT: Any = SimpleNamespace(settings=SimpleNamespace(recon=SimpleNamespace(progress_interval=10.0)))


# -- runner, with a stand-in recon ----------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'idsync.db'}")


def _job(tmp_path: Path, body: str) -> Any:
    path = tmp_path / "job1.toml"
    path.write_text(f'schedule = "@hourly"\n{body}', encoding="utf-8")
    return parse_job(path, ["m1", "m2", "m3"])


def _fake_recon(store: Store, states: dict[str, str], calls: list[str], seconds: float = 0.0) -> Any:
    """A recon that records a run like the real one and ends in ``states[mapping]``."""

    def recon(_project: Any, _store: Store, mapping: str, options: Any) -> Any:
        calls.append(mapping)
        runs = RunStore(store)
        run_id = f"{mapping}-{len(calls)}"
        runs.start(run_id, mapping, job=options.job, dry_run=options.dry_run, summary={})
        state = states.get(mapping, "SUCCESS")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if options.cancel.wait(0.01):
                state = "CANCELED"
                break
        runs.finish(run_id, state, f"COMPLETED_{state}", {"changes": {"created": 1}}, None)
        return SimpleNamespace(
            id=run_id,
            mapping=mapping,
            state=state,
            summary={"changes": {"created": 1}},
            message=None,
        )

    return recon


def test_job_runs_its_mappings_in_order(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mapping runs, in file order, under the job's name; the outcome totals their counts."""
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon_scripted", _fake_recon(store, {}, calls))
    outcome = run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1", "m2"]'))
    assert calls == ["m1", "m2"]
    assert outcome.state == "SUCCESS"
    assert outcome.to_json()["counts"] == {"created": 2}
    assert [r["job"] for r in RunStore(store).recent()] == ["job1", "job1"]
    assert RunStore(store).lock_holder(job_lock_name("job1")) is None


def test_job_stops_at_first_failure_unless_told_otherwise(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FAILED mapping ends the job; ``continue_on_failure`` runs the rest, still FAILED."""
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon_scripted", _fake_recon(store, {"m2": "FAILED"}, calls))
    outcome = run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1", "m2", "m3"]'))
    assert (calls, outcome.state) == (["m1", "m2"], "FAILED")
    calls.clear()
    outcome = run_job(
        _PROJECT,
        store,
        _job(tmp_path, 'mappings = ["m1", "m2", "m3"]\ncontinue_on_failure = true'),
    )
    assert (calls, outcome.state) == (["m1", "m2", "m3"], "FAILED")


def test_job_passes_its_run_options_to_every_recon(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job file's dry_run, kill switches, max_deletes and page_size reach each of its recons,
    under the job's name; ``run-job --dry-run`` (``dry_run=True``) overrides the file."""
    seen: list[Any] = []
    recon = _fake_recon(store, {}, [])

    def spy(project: Any, store_: Store, mapping: str, options: Any) -> Any:
        seen.append(options)
        return recon(project, store_, mapping, options)

    monkeypatch.setattr(runner_module, "run_recon_scripted", spy)
    job = _job(
        tmp_path,
        'mappings = ["m1", "m2"]\nallow_create = false\nallow_update = true\nallow_delete = false\n'
        'max_deletes = "5%"\npage_size = 50\n',
    )
    run_job(_PROJECT, store, job)
    options = [(o.job, o.dry_run, o.allow_create, o.allow_update, o.allow_delete, o.max_deletes, o.page_size)
               for o in seen]
    assert options == [("job1", False, False, True, False, pytest.approx(0.05), 50)] * 2
    seen.clear()
    outcome = run_job(_PROJECT, store, job, dry_run=True)
    assert outcome.dry_run and [o.dry_run for o in seen] == [True, True]


def test_second_run_of_a_job_is_refused_by_the_store_lock(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While ``job:NAME`` is held (here by another process), a second run raises RunLocked."""
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon_scripted", _fake_recon(store, {}, calls))
    RunStore(store).acquire(job_lock_name("job1"), "otherhost:1:x")
    with pytest.raises(RunLocked, match="job:job1"):
        run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1"]'))
    assert calls == []


def test_timeout_cancels_and_is_recorded(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job past its ``timeout`` is canceled; the run record says CANCELED and why."""
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon_scripted", _fake_recon(store, {}, calls, seconds=5))
    started = time.monotonic()
    outcome = run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1", "m2"]\ntimeout = 0.2'))
    # Canceled before the recon's own end (5 s), which the machine's load does not move.
    assert time.monotonic() - started < 5
    assert outcome.state == "CANCELED" and calls == ["m1"]
    record = RunStore(store).get("m1-1")
    assert record is not None and record["state"] == "CANCELED" and "timed out" in record["message"]


def test_crashed_process_runs_are_failed_at_start(store: Store) -> None:
    """A run left ACTIVE, locked by a dead local process, is marked FAILED and unlocked."""
    runs = RunStore(store)
    runs.start("r1", "m1", job="job1", dry_run=False, summary={})
    dead = _dead_pid()
    with store.begin() as conn:
        now = utcnow()
        conn.execute(
            insert(locks).values(
                name="recon:m1",
                owner=f"{socket.gethostname()}:{dead}:r1",
                acquired=now,
                expires=now.replace(year=now.year + 1),
            )
        )
    assert recover_interrupted(store) == ["r1"]
    record = runs.get("r1")
    assert record is not None and record["state"] == "FAILED" and "interrupted" in record["message"]
    assert runs.lock_holder("recon:m1") is None


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- reload ---------------------------------------------------------------------------


def _mini_project(root: Path, mappings: list[str]) -> Path:
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "jobs.d").mkdir(exist_ok=True)
    items = [{"name": m, "source": "managed/user", "target": "managed/role"} for m in mappings]
    (root / "conf" / "sync.json").write_text(json.dumps({"mappings": items}), encoding="utf-8")
    return root


def test_reload_keeps_what_a_broken_file_defined(tmp_path: Path) -> None:
    """A broken job file keeps its previous version, a new broken one is not scheduled, a
    removed one goes, a conf/ that no longer loads keeps the previous project; all reported."""
    root = _mini_project(tmp_path, ["m1"])
    jobs = root / "jobs.d"
    (jobs / "a.toml").write_text('schedule = "@hourly"\nmappings = ["m1"]\n')
    (jobs / "b.toml").write_text('schedule = "@daily"\nmappings = ["m1"]\n')
    first = load_configuration(root)
    assert list(first.jobs) == ["a", "b"] and first.errors == []

    (jobs / "a.toml").write_text('schedule = "@often"\nmappings = ["m1"]\n')
    (jobs / "b.toml").unlink()
    (jobs / "c.toml").write_text('schedule = "@daily"\nmappings = ["nope"]\n')
    (root / "conf" / "sync.json").write_text("{ not json")
    second = load_configuration(root, previous=first)
    assert second.project is first.project
    assert list(second.jobs) == ["a"] and second.jobs["a"] is first.jobs["a"]
    assert len(second.errors) == 3
    assert any(e.startswith(f"{jobs / 'a.toml'}: schedule: unknown macro") for e in second.errors)
    assert any(e.startswith(f"{jobs / 'c.toml'}: mappings[0]: unknown mapping") for e in second.errors)

    _mini_project(tmp_path, ["m1"])
    (jobs / "a.toml").write_text('schedule = "*/5 * * * *"\nmappings = ["m1"]\n')
    third = load_configuration(root, previous=second)
    assert third.errors == [f"{jobs / 'c.toml'}: mappings[0]: unknown mapping 'nope' (known: m1)"]
    assert third.jobs["a"].schedule.expression == "*/5 * * * *"


def test_reload_refuses_a_conf_without_the_mapping_a_kept_job_runs(tmp_path: Path) -> None:
    """A mapping removed while the job running it is kept as it was (its file broken in the
    same reload) would fail that job at every fire: the new conf/ is refused as a whole,
    naming the mapping and the job, and the previous project runs on. Once the job file
    is fixed to leave the mapping out, the same conf/ is taken."""
    root = _mini_project(tmp_path, ["m1", "m2"])
    jobs = root / "jobs.d"
    (jobs / "a.toml").write_text('schedule = "@hourly"\nmappings = ["m1", "m2"]\n')
    first = load_configuration(root)
    assert first.errors == []

    _mini_project(tmp_path, ["m1"])  # m2 removed
    (jobs / "a.toml").write_text('schedule = "@often"\nmappings = ["m1", "m2"]\n')
    second = load_configuration(root, previous=first)
    assert second.project is first.project and second.jobs["a"] is first.jobs["a"]
    assert second.errors[0] == (f"{root / 'conf'}: mappings: the mapping 'm2' is gone, and job 'a' (kept as it "
                                f"was, as {jobs / 'a.toml'} does not load) still runs it; change the job, then reload")
    assert any(e.startswith(f"{jobs / 'a.toml'}: schedule: unknown macro") for e in second.errors)
    # The job file untouched: it does not load for want of the mapping, and is kept all the same.
    (jobs / "a.toml").write_text('schedule = "@hourly"\nmappings = ["m1", "m2"]\n')
    unchanged = load_configuration(root, previous=second)
    assert unchanged.project is first.project and unchanged.jobs["a"].mappings == ("m1", "m2")
    assert "the mapping 'm2' is gone" in unchanged.errors[0]

    (jobs / "a.toml").write_text('schedule = "@hourly"\nmappings = ["m1"]\n')
    third = load_configuration(root, previous=second)
    assert third.errors == [] and [m.name for m in third.project.mappings] == ["m1"]


def test_a_livesync_job_of_a_source_no_mapping_reads_is_not_scheduled(tmp_path: Path) -> None:
    """A liveSync job naming a source no mapping applies (an unmapped managed type, or
    one whose every mapping has ``enableSync`` false) would fail at every fire: it is not
    scheduled, each problem a ``config.invalid`` naming the job's file and ``livesync``, and
    ``idsync validate`` and ``idsync jobs`` (exit 78) say the same. Fixed, it is scheduled
    at the next reload."""
    root = _mini_project(tmp_path, ["m1"])
    jobs = root / "jobs.d"
    (jobs / "ok.toml").write_text('schedule = "* * * * * ?"\nlivesync = "managed/user"\n')
    (jobs / "typo.toml").write_text('schedule = "* * * * * ?"\nlivesync = "managed/role"\n')
    items = [{"name": "m1", "source": "managed/user", "target": "managed/role"},
             {"name": "m2", "source": "managed/assignment", "target": "managed/role", "enableSync": False}]
    (root / "conf" / "sync.json").write_text(json.dumps({"mappings": items}), encoding="utf-8")
    (jobs / "off.toml").write_text('schedule = "* * * * * ?"\nlivesync = "managed/assignment"\n')
    with structlog.testing.capture_logs() as logs:
        first = load_configuration(root)
    assert list(first.jobs) == ["ok"]
    invalid = {Path(e["file"]).name: e for e in logs if e["event"] == "config.invalid"}
    assert sorted(invalid) == ["off.toml", "typo.toml"] and len(first.errors) == 2
    assert all(e["key"] == "livesync" and e["consequence"] == "job not scheduled" for e in invalid.values())
    assert invalid["typo.toml"]["problem"].startswith("no mapping has managed/role as its source")
    assert "(the mappings' sources: managed/assignment, managed/user)" in invalid["typo.toml"]["problem"]
    assert "has enableSync false" in invalid["off.toml"]["problem"] and "(m2)" in invalid["off.toml"]["problem"]
    for command in (["validate"], ["jobs"], ["run-job", "typo"]):  # nor is it run by hand
        done = run_cli(["-p", str(root), *command])
        assert done.returncode == 78, done
        assert f"{jobs / 'typo.toml'}: livesync: no mapping has managed/role" in done.stdout + done.stderr

    (jobs / "typo.toml").write_text('schedule = "* * * * * ?"\nlivesync = "managed/user"\n')
    second = load_configuration(root, previous=first)
    assert list(second.jobs) == ["ok", "typo"] and len(second.errors) == 1


def test_reload_counts_each_problem_of_a_file(tmp_path: Path) -> None:
    """Two problems in one mapping are two errors of the reload (two ``config.invalid``
    events, two in the status file's count), each naming its own key."""
    root = _mini_project(tmp_path, ["m1"])
    first = load_configuration(root)
    items = [{"name": "m1", "source": "managed/user", "target": "managed/role", "maxDelete": 1, "polcies": []}]
    (root / "conf" / "sync.json").write_text(json.dumps({"mappings": items}), encoding="utf-8")
    with structlog.testing.capture_logs() as logs:
        second = load_configuration(root, previous=first)
    assert second.project is first.project and len(second.errors) == 2
    keys = sorted(e["key"] for e in logs if e["event"] == "config.invalid")
    assert keys == ["mappings[0].maxDelete", "mappings[0].polcies"], keys


def test_start_with_broken_conf_is_a_config_error(tmp_path: Path) -> None:
    """With no previous configuration to fall back to, a broken conf/ stops the start (78)."""
    root = _mini_project(tmp_path, ["m1"])
    (root / "conf" / "sync.json").write_text("{ not json")
    with pytest.raises(ConfigError) as info:
        load_configuration(root)
    assert info.value.exit_code == os.EX_CONFIG


# -- the daemon's state: status, catch-up at start, logs ----------------------------------

_PausedDaemon = Callable[[dict[str, str]], tuple[Daemon, BackgroundScheduler]]


@pytest.fixture
def paused_daemon(tmp_path: Path) -> Iterator[_PausedDaemon]:
    """``start({job: toml})``: a ``Daemon`` of a small project with these jobs, on a paused
    scheduler (nothing fires), and that scheduler."""
    root = _mini_project(tmp_path, ["m1"])
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduler.start(paused=True)

    def start(jobs: dict[str, str]) -> tuple[Daemon, BackgroundScheduler]:
        for name, body in jobs.items():
            (root / "jobs.d" / f"{name}.toml").write_text(f'mappings = ["m1"]\n{body}')
        daemon = Daemon(root, Notifier(None, None))
        daemon.store = Store.open(f"sqlite:///{tmp_path / 'idsync.db'}")
        daemon.config = load_configuration(root)
        daemon.table = JobTable(scheduler, daemon.fire)
        daemon.table.apply(daemon.config.jobs)
        return daemon, scheduler

    yield start
    scheduler.shutdown(wait=False)


def test_status_shows_the_newest_run_also_when_made_elsewhere(
    paused_daemon: _PausedDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's ``lastRun`` in the status is the daemon's own last run until the job is run
    elsewhere (``idsync run-job``, another daemon): then that newer run, once it has ended."""
    daemon, _scheduler = paused_daemon({"job1": 'schedule = "@hourly"\n'})
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon_scripted", _fake_recon(daemon.store, {}, calls))
    own = run_job(_PROJECT, daemon.store, daemon.config.jobs["job1"])
    daemon._last["job1"] = own.to_json()
    assert daemon.jobs_status()["job1"]["lastRun"]["jobRun"] == own.id

    runs = RunStore(daemon.store)
    runs.start("manual", "m1", job="job1", dry_run=False, summary={})
    assert daemon.jobs_status()["job1"]["lastRun"]["jobRun"] == own.id  # still running elsewhere
    runs.finish("manual", "FAILED", "COMPLETED_FAILED", {}, "source unreachable")
    last = daemon.jobs_status()["job1"]["lastRun"]
    assert (last["id"], last["state"], last["error"]) == ("manual", "FAILED", "source unreachable")


@pytest.mark.postgresql
def test_a_fire_while_the_store_is_down_is_one_error_line_not_a_crash(tmp_path: Path) -> None:
    """A fire while the database is unreachable (and one whose lock of an earlier run could
    not be released then) logs ``job.failed`` at error, naming the store, without a traceback:
    an outage is not a bug (``job.crash`` says "report it"). Once the database is back, the
    next fire runs the job and frees the lock left behind."""
    url = store_url("postgresql", tmp_path)
    root = _mini_project(tmp_path, ["m1"])
    (root / "jobs.d" / "job1.toml").write_text('schedule = "@hourly"\nmappings = ["m1"]\n')
    daemon = Daemon(root, Notifier(None, None))
    daemon.store = Store.open(url)
    daemon.config = load_configuration(root)
    daemon._loop = asyncio.new_event_loop()  # where the status is told to be written (not run here)
    runs = RunStore(daemon.store)
    runs.acquire("job:earlier", f"{runs_owner()}:e1")
    with outage(url):
        with pytest.raises(PeerUnavailable):
            runs.release("job:earlier", f"{runs_owner()}:e1")
        with structlog.testing.capture_logs() as logs:
            daemon.fire("job1", "schedule")
    assert [e["event"] for e in logs if e["log_level"] in ("error", "critical")] == ["job.failed"], logs
    failed = next(e for e in logs if e["event"] == "job.failed")
    assert failed["error"].startswith("store: ") and "exc_info" not in failed
    with structlog.testing.capture_logs() as logs:
        daemon.fire("job1", "schedule")
    events = [e["event"] for e in logs]
    assert "job.end" in events and "job.failed" not in events  # it ran (its empty source fails its recon)
    assert runs.lock_holder("job:earlier") is None
    daemon.store.close()
    daemon._loop.close()


def test_start_catches_up_a_missed_fire_once(paused_daemon: _PausedDaemon) -> None:
    """At start, a ``run_once`` job whose latest fire came after its last recorded run (within
    grace) is put on the scheduler once, now; a ``skip`` job and a job that never ran are not."""
    every_minute = 'schedule = "* * * * *"\n'
    daemon, scheduler = paused_daemon(
        {"once": every_minute, "skip": every_minute + 'misfire = "skip"\n', "never": every_minute}
    )
    runs = RunStore(daemon.store)
    for job in ("once", "skip"):
        runs.start(f"{job}-1", "m1", job=job, dry_run=False, summary={})
        runs.finish(f"{job}-1", "SUCCESS", "COMPLETED_SUCCESS", {}, None)
    with daemon.store.begin() as conn:
        conn.execute(update(recon_runs).values(started=utcnow() - dt.timedelta(minutes=5)))
    daemon._catch_up()
    assert sorted(j.id for j in scheduler.get_jobs() if "#" in j.id) == ["once#catch-up"]


def test_status_file_defaults_to_the_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status file is ``STATE_DIR/status.json`` unless set on its own (file or environment)."""
    for key in ("IDSYNC_STATE_DIR", "IDSYNC_STATUS_FILE"):
        monkeypatch.delenv(key, raising=False)
    assert load_settings(tmp_path).status_file == Path("state/status.json")
    monkeypatch.setenv("IDSYNC_STATE_DIR", "/var/lib/idsync")
    assert load_settings(tmp_path).status_file == Path("/var/lib/idsync/status.json")
    monkeypatch.setenv("IDSYNC_STATUS_FILE", "/run/idsync/status.json")
    assert load_settings(tmp_path).status_file == Path("/run/idsync/status.json")


def test_log_lines_carry_their_priority_for_the_journal(tmp_path: Path) -> None:
    """On systemd's journal stream (``JOURNAL_STREAM`` = its dev:inode) whose native socket
    cannot be written, every JSON line starts with its syslog priority, which journald strips;
    on any other stream lines are plain JSON."""
    path = tmp_path / "journal"
    script = (
        "import logging, os, sys\n"
        "from idsync.log import configure_logging\n"
        "import structlog\n"
        f"configure_logging('json', 'info', stream=sys.stdout, journal_socket={str(tmp_path / 'none')!r})\n"
        "structlog.get_logger('t').warning('job.skipped', job='a')\n"
        "logging.getLogger('apscheduler.scheduler').error('from the library')\n"
        "structlog.get_logger('t').info('job.end')\n"
    )
    for journal in (True, False):
        with path.open("w") as out:
            st = os.fstat(out.fileno())
            env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}" if journal else ""}
            subprocess.run([sys.executable, "-c", script], stdout=out, env=env, check=True, timeout=60)
        lines = path.read_text(encoding="utf-8").splitlines()
        prefixes = [line[: line.index("{")] for line in lines]
        assert prefixes == (["<4>", "<3>", "<6>"] if journal else ["", "", ""])
        assert [json.loads(line[len(p) :])["event"] for line, p in zip(lines, prefixes, strict=True)] == [
            "job.skipped",
            "from the library",
            "job.end",
        ]


# -- sd_notify ---------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def test_notifier_speaks_the_protocol(notify_socket: tuple[socket.socket, str]) -> None:
    """READY=1 with STATUS, a STATUS only when it changes, WATCHDOG=1 every third of the period."""
    sock, path = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"})
    assert n.watchdog_interval == pytest.approx(1.0)
    n.ready("idle")
    assert sock.recv(4096).decode().startswith("READY=1\nSTATUS=idle")
    n.status("running a")
    n.status("running a")
    n.watchdog()
    assert sock.recv(4096) == b"STATUS=running a"
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert not Notifier.from_env({}).enabled


def test_a_schedule_with_no_future_fire_is_told_and_never_stops_the_daemon(
        paused_daemon: _PausedDaemon) -> None:
    """A schedule whose dates are all past (a Quartz year) is a ``job.schedule_ended`` warning
    at load and reload, not an error: the job is listed with no next fire, the others are
    scheduled, the reload is taken whole and READY=1 is sent again; ``idsync jobs`` and
    ``validate`` say it as a warning, naming the file and the key, and exit 0."""
    with structlog.testing.capture_logs() as logs:
        daemon, _scheduler = paused_daemon({"past": 'schedule = "0 0 12 * * ? 2020"\n',
                                            "hourly": 'schedule = "@hourly"\n'})
    assert daemon.config.errors == []
    ended = [e for e in logs if e["event"] == "job.schedule_ended"]
    assert [(Path(e["file"]).name, e["key"]) for e in ended] == [("past.toml", "schedule")]
    status = daemon.jobs_status()
    assert status["past"]["nextFire"] is None and status["hourly"]["nextFire"] is not None
    sent: list[str] = []
    daemon.notifier.ready = sent.append  # type: ignore[method-assign]
    daemon._loop = asyncio.new_event_loop()
    try:
        daemon._on_reload()
    finally:
        daemon._loop.close()
    assert daemon.last_reload is not None and daemon.last_reload[1] and len(sent) == 1
    root = daemon.project_dir
    for command in (["jobs"], ["validate"]):
        done = run_cli(["-p", str(root), *command])
        assert done.returncode == 0, done
        assert f"{root / 'jobs.d' / 'past.toml'}: schedule: '0 0 12 * * ? 2020' matches no date in the future" \
            in done.stderr, done


def _reload(daemon: Daemon) -> list[str]:
    """``daemon``'s SIGHUP reload; the READY=1 status lines it sent."""
    sent: list[str] = []
    daemon.notifier.ready = sent.append  # type: ignore[method-assign]
    daemon._loop = asyncio.new_event_loop()  # where the status is told to be written (not run here)
    try:
        daemon._on_reload()
    finally:
        daemon._loop.close()
    return sent


def test_a_file_that_is_not_utf8_is_an_error_naming_it_and_the_others_apply(
        paused_daemon: _PausedDaemon) -> None:
    """A job file, a PingIDM schedule or ``conf/idsync.toml`` in Latin-1 is a ``file: problem``
    error naming the byte and where (``validate`` exits 78); at a reload the other files' edits
    are applied, each bad file is a ``config.invalid``, and READY=1 is sent again."""
    daemon, _scheduler = paused_daemon({"hourly": 'schedule = "@hourly"\n'})
    root = daemon.project_dir
    (root / "jobs.d" / "latin1.toml").write_bytes(b'description = "anv\xe4ndare"\nschedule = "@daily"\n'
                                                  b'mappings = ["m1"]\n')
    (root / "conf" / "schedule-latin1.json").write_bytes(b'{"schedule": "0 0 * * * ?", "x": "\xe4"}')
    (root / "jobs.d" / "hourly.toml").write_text('mappings = ["m1"]\nschedule = "*/5 * * * *"\n')
    with structlog.testing.capture_logs() as logs:
        sent = _reload(daemon)
    assert daemon.config.jobs["hourly"].schedule.expression == "*/5 * * * *" and len(sent) == 1
    assert sorted(daemon.config.errors) == [
        f"{root / 'conf' / 'schedule-latin1.json'}: not UTF-8 text: byte 0xe4 at position 34 (line 1)",
        f"{root / 'jobs.d' / 'latin1.toml'}: not UTF-8 text: byte 0xe4 at position 18 (line 1)",
    ]
    assert len([e for e in logs if e["event"] == "config.invalid"]) == 2
    for command in (["validate"], ["jobs"]):
        done = run_cli(["-p", str(root), *command])
        assert done.returncode == 78 and "latin1.toml: not UTF-8 text: byte 0xe4" in done.stdout + done.stderr, done
    (root / "conf" / "idsync.toml").write_bytes(b'# r\xe4tt\n')
    done = run_cli(["-p", str(root), "validate"])
    assert done.returncode == 78, done
    said = done.stdout + done.stderr
    assert f"{root / 'conf' / 'idsync.toml'}: not UTF-8 text: byte 0xe4 at position 3 (line 1)" in said


def test_a_reload_that_fails_unexpectedly_keeps_what_ran_and_says_so(
        paused_daemon: _PausedDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any failure while reloading (a bug) leaves the jobs as they were, logs
    ``daemon.reload_failed`` with the reason, puts it in the status's configuration errors and
    sends READY=1 again: systemd is never left waiting in "reloading"."""
    daemon, _scheduler = paused_daemon({"hourly": 'schedule = "@hourly"\n'})
    before = daemon.config.jobs

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr("idsync.daemon.service.load_configuration", broken)
    with structlog.testing.capture_logs() as logs:
        sent = _reload(daemon)
    assert len(sent) == 1 and sent[0].startswith("reload failed: 1 problem(s)")
    assert daemon.config.jobs is before and daemon.table.next_fire("hourly") is not None
    failed = [e for e in logs if e["event"] == "daemon.reload_failed"]
    assert failed and failed[0]["problems"] == ["reload failed: RuntimeError: something unforeseen; "
                                                "kept the previous configuration"]
    assert daemon.last_reload is not None and not daemon.last_reload[1] and not daemon.reloading


def test_the_salesforce_sample_as_shipped_skips_its_scheduled_fires_saying_why_once(tmp_path: Path) -> None:
    """The Salesforce sample ships disabled (``"enabled": false``, as PingIDM's): a fire of
    its jobs' schedules records no failed run and logs no error. The first fire of each job
    since the configuration was loaded says at warning (``job.skipped reason=disabled``)
    which mapping is left out and which file disables its system; later fires say it at
    debug. The job's status (the status file, the API's scheduler/job, the console's
    pages) and ``idsync jobs`` say what the fires leave out and which file disables it. A
    run asked for by hand (Run now) still fails, naming the file."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "samples" / "sync-with-salesforce", root)
    daemon = Daemon(root, Notifier(None, None))
    daemon.config = load_configuration(root)
    daemon.store = Store.open(daemon.config.project.settings.store_url())
    daemon._loop = asyncio.new_event_loop()  # where the status is told to be written (not run here)
    prov = str(root / "conf" / "provisioner.openicf-salesforce.json")
    try:
        with structlog.testing.capture_logs() as logs:
            for trigger in ("misfire", "schedule", "schedule"):
                daemon.fire("sync-salesforce-users", trigger)
                daemon.fire("push-users-to-salesforce", trigger)
        assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
        assert not [e for e in logs if e["event"] in ("job.start", "recon.start")]
        told = [e for e in logs if e["event"] == "job.skipped" and e["log_level"] == "warning"]
        assert [(e["job"], e["reason"], e["skipped"], e["files"]) for e in told] == [
            ("sync-salesforce-users", "disabled", ["systemSalesforceUser_managedUser"], [prov]),
            ("push-users-to-salesforce", "disabled", ["managedUser_systemSalesforceUser"], [prov]),
        ]
        assert "disabled system" in told[0]["message"] and prov in told[0]["message"]
        assert len([e for e in logs if e["event"] == "job.skipped"]) == 6  # the later ones at debug
        with daemon.store.engine.connect() as conn:
            assert conn.execute(recon_runs.select()).all() == []

        # Where the job's last result says "never ran", the status, the API, the console and
        # `idsync jobs` say what its fires leave out, and why.
        daemon.table = JobTable(BackgroundScheduler(timezone="UTC"), daemon.fire)  # not started: no fire
        status = daemon.jobs_status()["sync-salesforce-users"]
        assert status["heldBy"] == {"systemSalesforceUser_managedUser": [prov]}
        shaped = _shape("sync-salesforce-users", status)
        assert shaped["heldBy"] == status["heldBy"] and shaped["lastRun"] is None
        pages = Environment(loader=PackageLoader("idsync.console", "templates"), autoescape=True)
        pages.filters.update(when=when, shown=shown)
        shown_state = pages.get_template("job_state.html").render(job=shaped, base="/admin")
        assert "never ran" in shown_state and "Left out" in shown_state
        assert f"systemSalesforceUser_managedUser: its system is disabled ({prov})" in shown_state
        listed = run_cli(["-p", str(root), "jobs"], env={"COLUMNS": "400"})  # a cell on one line
        assert listed.returncode == 0, listed.stderr
        assert "left out: systemSalesforceUser_managedUser, its system disabled in" in " ".join(listed.stdout.split())
        as_json = run_cli(["-p", str(root), "jobs", "--json"], env={})
        rows = {r["name"]: r for r in json.loads(as_json.stdout)["jobs"]}
        assert rows["push-users-to-salesforce"]["heldBy"] == {"managedUser_systemSalesforceUser": [prov]}

        with structlog.testing.capture_logs() as logs:
            daemon.fire("sync-salesforce-users", "api")
        ended = next(e for e in logs if e["event"] == "job.end")
        assert ended["state"] == "FAILED" and f"{prov}: enabled: system salesforce is disabled" in ended["message"]
    finally:
        daemon.store.close()
        daemon._loop.close()
