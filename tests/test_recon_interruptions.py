"""Runs that end abnormally, end to end against the test slapd and real stores: a recon
killed with ``kill -9``, a database outage during a job, and the signals that cancel
``idsync recon`` and ``idsync run-job``. What must hold: the next run starts at once
and converges, the interrupted run is recorded with what it wrote, and every way of
canceling exits 130."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from cluster_env import Gate, gate_pace
from dbs import store_url
from idsync.config.jobs import JobDef, parse_job
from idsync.config.project import Project, load_project
from idsync.daemon.runner import JobOutcome, run_job
from idsync.errors import PeerUnavailable
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.store.tokens import SyncTokens
from idsync_dev.slapd import Slapd
from pg_outage import outage
from projects import MAPPING, make_project, person
from sqlalchemy import text
from waiting import wait_for

IDSYNC = str(Path(sys.executable).parent / "idsync")
HOST = socket.gethostname()
ENV = {**os.environ, "IDSYNC_LOG__LEVEL": "warning"}
LIVE_SOURCE = "system/ldap/account"


def _project(tmp_path: Path, slapd: Slapd, subtree: str, url: str, *, users: int, page_size: int,
             delay_ms: float = 0, gated_ms: int = 0) -> Path:
    """``users`` entries read ``page_size`` at a time, each taking ``delay_ms`` in a transform,
    or ``gated_ms`` until the project's gate is opened (``cluster_env.Gate``: a run the test
    interrupts is held slow until it has seen what it waits for, the runs after it are fast);
    a job ``nightly`` runs the mapping."""
    for start in range(0, users, 500):
        slapd.add_ldif("".join(person(f"u{i:05d}", subtree) for i in range(start, min(users, start + 500))))
    project = make_project(tmp_path, slapd, subtree, url, page_size=page_size)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"][0]["properties"].append({"source": "sn", "target": "description", "transform": {
        "type": "text/javascript",
        "source": (gate_pace(gated_ms) if gated_ms else
                   f"var t = Date.now(); while (Date.now() - t < {delay_ms}) {{}} ") + "source"}})
    sync_file.write_text(json.dumps(sync))
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "nightly.toml").write_text(f'schedule = "@hourly"\nmappings = ["{MAPPING}"]\n')
    return project


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    wait_for(condition, seconds, what, interval=0.05)


def _latest(runs: RunStore) -> dict[str, Any]:
    recent = runs.recent(1)
    return recent[0] if recent else {}


def _processed(run: dict[str, Any]) -> int:
    summary = run.get("summary") or {}
    return int(((summary.get("progress") or {}).get("source") or {}).get("existing", {}).get("processed") or 0)


def _users(project: Path, store: Store) -> int:
    return Resources(load_project(project), store).open("managed/user").count() or 0


def _idsync(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command that is not itself interrupted, run in this process (``cli_runner``)."""
    return run_cli(["-p", str(project), *args], env={"IDSYNC_LOG__LEVEL": "warning"}, timeout=300)


def _fire_in_thread(project: Project, store: Store, job: JobDef) -> tuple[threading.Thread, list[Any]]:
    """A fire of ``job`` running in a thread, and where its outcome (or exception) will be."""
    ended: list[JobOutcome | BaseException] = []

    def fire() -> None:
        try:
            ended.append(run_job(project, store, job))
        except BaseException as exc:  # noqa: BLE001 - looked at by the test
            ended.append(exc)

    thread = threading.Thread(target=fire)
    thread.start()
    return thread, ended


@pytest.mark.slapd
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_kill_9_of_a_recon_mid_run_does_not_block_the_next_one(
    kind: str, tmp_path: Path, slapd: Slapd, ldap_subtree: str
) -> None:
    """``kill -9`` of ``idsync recon`` part way through 300 entries (held slow until then by the
    project's gate) leaves its run ACTIVE and its lock held. The next ``idsync recon`` starts at
    once (no "already running" for 10 minutes), records the killed run FAILED naming its pid and
    host, with created counts equal to what it actually wrote, and completes the work: a third
    run changes nothing."""
    total = 300
    url = store_url(kind, tmp_path)
    project = _project(tmp_path, slapd, ldap_subtree, url, users=total, page_size=10, gated_ms=50)
    store = Store.open(url)
    runs = RunStore(store)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "recon", MAPPING, "--quiet"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _processed(_latest(runs)) >= 20, 120, "a recon part way through")
    finally:
        proc.kill()
        proc.wait()
    Gate(project).open()  # the runs after it need not be slow
    killed = _latest(runs)
    assert killed["state"] == "ACTIVE" and runs.lock_holder(f"recon:{MAPPING}") is not None
    written = _users(project, store)
    assert 0 < written < total
    assert killed["summary"]["changes"]["created"] == written  # the counts commit with their page
    # ``idsync status`` says the run's process is gone, before anything records it FAILED.
    gone = f"interrupted: owner process {proc.pid} on {HOST} is gone"
    shown = _idsync(project, "status")
    assert f"run {killed['id'][:8]} ACTIVE, but {gone}" in " ".join(shown.stdout.split()), shown.stdout
    (listed,) = [r for r in json.loads(_idsync(project, "status", "--json").stdout) if r["_id"] == killed["id"]]
    assert listed["processGone"] == gone
    # So does ``idsync status RUN_ID``: not "(running)".
    one = " ".join(_idsync(project, "status", killed["id"][:8]).stdout.split())
    assert "(not running)" in one and f"note: {gone}: the next run of {MAPPING}" in one, one
    assert json.loads(_idsync(project, "status", killed["id"][:8], "--json").stdout)["processGone"] == gone

    started = time.monotonic()
    second = _idsync(project, "recon", MAPPING, "--json")
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 120
    dead = runs.get(killed["id"])
    assert dead is not None and dead["state"] == "FAILED"
    assert dead["message"] == f"interrupted: owner process {proc.pid} on {HOST} is gone"
    assert dead["summary"]["changes"]["created"] == written
    assert json.loads(second.stdout)["changes"]["created"] == total - written
    assert _users(project, store) == total
    third = json.loads(_idsync(project, "recon", MAPPING, "--json").stdout)
    assert third["state"] == "SUCCESS"
    assert {k: v for k, v in third["changes"].items() if v} == {"unchanged": total}
    store.close()


@pytest.mark.slapd
def test_kill_9_of_run_job_does_not_block_the_next_one(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``kill -9`` of ``idsync run-job`` leaves ``job:NAME`` and ``recon:MAPPING`` held by a dead
    process; the next ``idsync run-job`` takes both at once and succeeds (not 75)."""
    project = _project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 'idsync.db'}", users=100,
                       page_size=10, gated_ms=50)
    store = Store.open(f"sqlite:///{tmp_path / 'idsync.db'}")
    runs = RunStore(store)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "run-job", "nightly"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _processed(_latest(runs)) > 0, 60, "a job's recon part way through")
    finally:
        proc.kill()
        proc.wait()
    Gate(project).open()
    assert runs.lock_holder("job:nightly") is not None
    again = _idsync(project, "run-job", "nightly")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{MAPPING}: SUCCESS" in again.stdout
    states = sorted(r["state"] for r in runs.recent(5))
    assert states == ["FAILED", "SUCCESS"]


@pytest.mark.slapd
@pytest.mark.postgresql
def test_a_database_outage_during_a_job_does_not_lock_out_the_next_fire(
    tmp_path: Path, slapd: Slapd, ldap_subtree: str
) -> None:
    """The database goes away during a daemon job (its connections cut server-side, new ones
    refused): the recon fails and neither its end nor the releases of ``recon:MAPPING`` and
    ``job:NAME`` can be written. Once the database is back, the next fire of the job in the same
    process runs at once (the daemon's fire is turned away as "locked" only by a RunLocked here)
    and succeeds; the interrupted run is recorded FAILED."""
    url = store_url("postgresql", tmp_path)
    project_dir = _project(tmp_path, slapd, ldap_subtree, url, users=150, page_size=10, gated_ms=50)
    project = load_project(project_dir)
    job = parse_job(project_dir / "jobs.d" / "nightly.toml", [m.name for m in project.mappings])
    store = Store.open(url)
    runs = RunStore(store)
    first, ended = _fire_in_thread(project, store, job)
    _wait(lambda: _processed(_latest(runs)) > 0, 60, "a job's recon part way through")
    interrupted = _latest(runs)["id"]
    with outage(url):
        first.join(60)
        assert not first.is_alive()
    assert isinstance(ended[0], PeerUnavailable), ended
    Gate(project_dir).open()
    assert runs.lock_holder("job:nightly") is not None  # the release could not be written
    outcome = run_job(project, store, job)
    assert outcome.state == "SUCCESS", outcome.to_json()
    run = runs.get(interrupted)
    assert run is not None and run["state"] == "FAILED", run
    assert runs.lock_holder("job:nightly") is None and runs.lock_holder(f"recon:{MAPPING}") is None
    assert _users(project_dir, store) == 150
    store.close()


@pytest.mark.slapd
@pytest.mark.postgresql
def test_a_database_outage_during_a_livesync_job_leaves_no_run_active(
    tmp_path: Path, slapd: Slapd, ldap_subtree: str
) -> None:
    """The database goes away while a daemon's liveSync job applies a batch of changes: the
    run of its mapping cannot record its end. Once the database is back, the next fire in
    the same process records that run FAILED with the store's error (not an internal error,
    and not ACTIVE for as long as the daemon lives: no other lock would ever end it), reads
    the changes again from the token, which did not move, and applies every one of them."""
    url = store_url("postgresql", tmp_path)
    project_dir = _project(tmp_path, slapd, ldap_subtree, url, users=100, page_size=10, gated_ms=50)
    (project_dir / "jobs.d" / "live.toml").write_text('schedule = "* * * * * ?"\nlivesync = "system/ldap/account"\n')
    project = load_project(project_dir)
    job = parse_job(project_dir / "jobs.d" / "live.toml", [m.name for m in project.mappings])
    store = Store.open(url)
    runs = RunStore(store)
    gate = Gate(project_dir)
    gate.open()
    assert run_job(project, store, job).state == "SUCCESS"  # the first one reconciles in full
    gate.path.unlink()  # the changes are applied slowly until the outage
    slapd.add_ldif("".join(f"dn: uid=u{i:05d},{ldap_subtree}\nchangetype: modify\nreplace: sn\nsn: Moved\n\n"
                           for i in range(100)))
    def applying() -> bool:
        run = _latest(runs)
        return run.get("job") == "liveSync" and run["state"] == "ACTIVE" and \
            (run["summary"].get("changes") or {}).get("updated", 0) > 0

    first, ended = _fire_in_thread(project, store, job)
    _wait(applying, 60, "a liveSync run part way through its changes")
    interrupted = _latest(runs)["id"]
    with outage(url):
        first.join(60)
        assert not first.is_alive()
    assert isinstance(ended[0], PeerUnavailable) or ended[0].state == "FAILED", ended
    gate.open()
    outcome = run_job(project, store, job)
    assert outcome.state == "SUCCESS", outcome.to_json()
    run = runs.get(interrupted)
    assert run is not None and run["state"] == "FAILED", run
    assert run["message"].startswith("store: "), run["message"]
    assert not [r["id"] for r in runs.recent(20) if r["state"] == "ACTIVE"]
    users = Resources(project, store).open("managed/user")
    assert {u["description"] for page in users.pages(QuerySpec(fields=["description"])) for u in page} == {"Moved"}
    store.close()


def _sigterm_twice(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """Half a second on (inside the page or batch under way), two SIGTERMs 0.3 s apart; the
    command's stderr, and when the second was sent."""
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    return err, stopped


def _livesync_run_applying(runs: RunStore) -> bool:
    run = _latest(runs)
    return run.get("job") == "liveSync" and run["state"] == "ACTIVE" and \
        (run["summary"].get("changes") or {}).get("updated", 0) > 0


def _livesync_project(tmp_path: Path, slapd: Slapd, subtree: str, *, page_size: int,
                      gated_ms: int) -> tuple[Path, Store, RunStore]:
    """100 users, their first liveSync (a full recon) done, then each modified: the next
    liveSync applies 100 changes, ``gated_ms`` each until the project's gate is opened."""
    url = f"sqlite:///{tmp_path / 'idsync.db'}"
    project = _project(tmp_path, slapd, subtree, url, users=100, page_size=page_size, gated_ms=gated_ms)
    gate = Gate(project)
    gate.open()
    assert _idsync(project, "livesync", LIVE_SOURCE).returncode == 0
    gate.path.unlink()
    slapd.add_ldif("".join(f"dn: uid=u{i:05d},{subtree}\nchangetype: modify\nreplace: sn\nsn: Moved\n\n"
                           for i in range(100)))
    store = Store.open(url)
    return project, store, RunStore(store)


def _counted(project: Path, store: Store) -> dict[str, Any]:
    """The source's liveSync counts as ``idsync status``, the status file and /metrics show them."""
    from idsync.api.metrics import Metrics
    from prometheus_client import generate_latest

    state = SyncTokens(store).get(LIVE_SOURCE)
    assert state is not None
    shown = _idsync(project, "status")
    line = next(ln for ln in shown.stdout.splitlines() if ln.startswith(f"liveSync {LIVE_SOURCE}:"))
    document = json.loads((project / "state" / "status.json").read_text())["liveSync"][LIVE_SOURCE]
    metrics = generate_latest(Metrics(store).registry).decode()
    return {"runs": state.runs, "failed": state.failed, "lastState": state.last_state,
            "lastMessage": state.last_message, "status": line, "file": (document["runs"], document["failed"]),
            "metrics": [ln for ln in metrics.splitlines() if ln.startswith(("idsync_livesync_runs_total",
                                                                            "idsync_livesync_failed_runs_total"))]}


@pytest.mark.slapd
def test_kill_9_of_a_livesync_run_counts_it_failed(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``kill -9`` of ``idsync livesync`` part way through its changes: the run never counted
    itself. The next run breaks its lock and counts it FAILED, naming the dead process, in the
    source's counters (``idsync status``, the status file, /metrics), ends its mapping's run
    FAILED rather than ACTIVE, and applies every change itself."""
    project, store, runs = _livesync_project(tmp_path, slapd, ldap_subtree, page_size=10, gated_ms=50)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "livesync", LIVE_SOURCE], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _livesync_run_applying(runs), 60, "a liveSync run part way through its changes")
    finally:
        proc.kill()
        proc.wait()
    Gate(project).open()
    killed = _latest(runs)["id"]
    again = _idsync(project, "livesync", LIVE_SOURCE)
    assert again.returncode == 0, again.stdout + again.stderr
    gone = f"interrupted: owner process {proc.pid} on {HOST} is gone"
    dead = runs.get(killed)
    assert dead is not None and dead["state"] == "FAILED" and dead["message"] == gone
    counted = _counted(project, store)
    assert (counted["runs"], counted["failed"], counted["lastState"]) == (3, 1, "SUCCESS"), counted
    assert "3 runs" in counted["status"] and "1 failed" in counted["status"] and counted["file"] == (3, 1)
    assert counted["metrics"] == [f'idsync_livesync_runs_total{{source="{LIVE_SOURCE}"}} 3.0',
                                  f'idsync_livesync_failed_runs_total{{source="{LIVE_SOURCE}"}} 1.0']
    users = Resources(load_project(project), store).open("managed/user")
    assert {u["description"] for page in users.pages(QuerySpec(fields=["description"])) for u in page} == {"Moved"}
    store.close()


@pytest.mark.slapd
def test_a_second_sigterm_of_a_livesync_run_counts_it_canceled(tmp_path: Path, slapd: Slapd,
                                                               ldap_subtree: str) -> None:
    """A second SIGTERM stops ``idsync livesync`` at once, in the middle of its one batch: the
    run is counted CANCELED in the source's counters with why (it used to be counted nowhere),
    and its mapping's run is recorded CANCELED, not left ACTIVE."""
    project, store, runs = _livesync_project(tmp_path, slapd, ldap_subtree, page_size=1000, gated_ms=60)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "livesync", LIVE_SOURCE], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The mapping's run is recorded as the batch starts; its 100 changes then take six seconds.
        _wait(lambda: _latest(runs).get("job") == "liveSync" and _latest(runs)["state"] == "ACTIVE", 60,
              "a liveSync run in its batch")
        err, _ = _sigterm_twice(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    counted = _counted(project, store)
    assert (counted["runs"], counted["failed"], counted["lastState"]) == (2, 0, "CANCELED"), counted
    assert counted["lastMessage"] == "stopped at once by a second SIGTERM"
    assert "2 runs" in counted["status"] and "CANCELED" in counted["status"]
    assert not [r for r in runs.recent(5) if r["state"] == "ACTIVE"]
    assert runs.lock_holder(f"livesync:{LIVE_SOURCE}") is None
    store.close()


@pytest.mark.slapd
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_cancels_a_recon_at_a_page_boundary(
    sig: signal.Signals, tmp_path: Path, slapd: Slapd, ldap_subtree: str
) -> None:
    """SIGTERM, SIGHUP and SIGINT (Ctrl-C) stop ``idsync recon`` at the next page boundary: the
    run is recorded CANCELED, its lock freed, and the exit code is 130 for each."""
    url = f"sqlite:///{tmp_path / 'idsync.db'}"
    project = _project(tmp_path, slapd, ldap_subtree, url, users=60, page_size=1, delay_ms=100)
    runs = RunStore(Store.open(url))
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "recon", MAPPING, "--quiet"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _processed(_latest(runs)) > 0, 60, "a recon part way through")
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"{sig.name}: canceling at the next page boundary" in err and "Traceback" not in err
    run = _latest(runs)
    assert run["state"] == "CANCELED" and _processed(run) < 60
    assert runs.lock_holder(f"recon:{MAPPING}") is None


@pytest.mark.slapd
@pytest.mark.postgresql
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_before_the_run_starts_exits_130(sig: signal.Signals, tmp_path: Path, slapd: Slapd,
                                                   ldap_subtree: str) -> None:
    """SIGTERM or SIGHUP while ``idsync recon`` is still starting (here: waiting for another
    process's creation of the store) exits 130 as at any later moment, not 143 or 129."""
    from sqlalchemy import create_engine, text

    url = store_url("postgresql", tmp_path, empty=True)
    project = _project(tmp_path, slapd, ldap_subtree, url, users=1, page_size=10, delay_ms=0)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(7461032)"))  # what a store's creation takes
            proc = subprocess.Popen([IDSYNC, "-p", str(project), "recon", MAPPING, "--quiet"], env=ENV,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                _wait(lambda: conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                                "AND NOT granted")).scalar() == 1, 60, "idsync waiting")
                proc.send_signal(sig)
                _out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        engine.dispose()
    assert proc.returncode == 130, err
    assert "idsync: interrupted" in err and "Traceback" not in err


@pytest.mark.slapd
@pytest.mark.parametrize("command", [["recon", MAPPING, "--quiet"], ["run-job", "nightly"]])
def test_a_second_sigterm_stops_at_once_and_records_the_run(
    command: list[str], tmp_path: Path, slapd: Slapd, ldap_subtree: str
) -> None:
    """A second SIGTERM during a page of several seconds stops ``idsync recon`` / ``run-job`` at
    once, with the same exit code as the first (130), the run recorded CANCELED and every lock
    freed (before, ``run-job`` died of the signal and left its run ACTIVE)."""
    url = f"sqlite:///{tmp_path / 'idsync.db'}"
    project = _project(tmp_path, slapd, ldap_subtree, url, users=60, page_size=1000, delay_ms=100)
    runs = RunStore(Store.open(url))
    # On one core the listing is read in process (no listing process to wait for), so
    # half a second after the run starts the page is under way.
    proc = subprocess.Popen([IDSYNC, "-p", str(project), *command], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    try:
        # The source phase has begun: its one page (60 entries, read in a few ms) is then
        # under way for six seconds. A run still starting up would stop at its first page
        # boundary before the second signal, on a loaded machine.
        _wait(lambda: (_latest(runs).get("summary") or {}).get("stage") == "ACTIVE_RECONCILING_SOURCE", 60,
              "a recon in its source phase")
        err, stopped = _sigterm_twice(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    run = _latest(runs)
    assert run["state"] == "CANCELED" and run["message"] == "stopped at once by a second SIGTERM"
    # At once: before the page it was in (six seconds of work) ended, where the first signal
    # alone waits for that end. Judged by the page, not a ceiling a loaded machine may reach:
    # its 60 entries not all recorded, and the process gone sooner than what is left of the
    # page at full speed (the signals came 0.8 s into the source phase), which a loaded
    # machine only lengthens.
    took = time.monotonic() - stopped
    assert sum((run["summary"].get("changes") or {}).values()) < 60, (run["summary"], took)
    assert took < 60 * 0.1 - 0.8, took
    assert runs.lock_holder(f"recon:{MAPPING}") is None and runs.lock_holder("job:nightly") is None


@pytest.mark.slapd
@pytest.mark.postgresql
def test_a_database_outage_mid_page_exits_69_without_a_traceback(
    tmp_path: Path, slapd: Slapd, ldap_subtree: str
) -> None:
    """PostgreSQL goes away while ``idsync recon`` is part way through: the command exits 69
    (the store is unreachable) with one line naming the store, and logs no ``recon.crash``
    and no traceback: an outage is not a bug."""
    url = store_url("postgresql", tmp_path)
    project = _project(tmp_path, slapd, ldap_subtree, url, users=150, page_size=10, gated_ms=50)
    store = Store.open(url)
    runs = RunStore(store)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "recon", MAPPING, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "IDSYNC_LOG__LEVEL": "info", "IDSYNC_LOG__FORMAT": "json"})
    try:
        _wait(lambda: _processed(_latest(runs)) > 0, 60, "the recon part way through")
        with outage(url):
            _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()
    assert proc.returncode == 69, err
    assert "Traceback" not in err and "recon.crash" not in err
    assert err.strip().splitlines()[-1].startswith("idsync: store: ")


@pytest.mark.slapd
def test_a_page_the_store_rolled_back_is_not_counted(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The SQLite store's disk fills up part way through a recon (files may grow to 1 MB,
    ``RLIMIT_FSIZE``): the page whose commit fails is rolled back, the command exits 69
    naming the store's error, and the run's summary counts the creates its committed pages
    made, no more (before, the rolled-back page was counted as created and linked); with
    room again, the next recon creates the rest."""
    url = store_url("sqlite", tmp_path)
    project = _project(tmp_path, slapd, ldap_subtree, url, users=1000, page_size=100, delay_ms=0)
    Store.open(url).close()  # the schema first, within the limit
    limit = 1 << 20
    full = subprocess.run([IDSYNC, "-p", str(project), "recon", MAPPING, "--json"], capture_output=True, text=True,
                          env=ENV, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert full.returncode == 69, full.stderr
    told = json.loads(full.stdout)
    assert told["state"] == "FAILED" and told["message"].startswith("store: "), told["message"]
    store = Store.open(url)
    try:
        with store.engine.connect() as conn:
            created = conn.execute(text("SELECT count(*) FROM audit WHERE action = 'CREATE' "
                                        "AND status = 'SUCCESS'")).scalar_one()
        assert 0 < created < 1000 and _users(project, store) == created
        assert told["changes"]["created"] == created == told["changes"]["linked"], (told["changes"], created)
        recorded = _latest(RunStore(store))
        assert recorded["summary"]["changes"]["created"] in (0, created)  # its end, or its last page's count
        assert _idsync(project, "recon", MAPPING).returncode == 0
        assert _users(project, store) == 1000
    finally:
        store.close()


def test_a_page_colliding_with_the_takeovers_links_ends_as_taken_over(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run resumed after another process took it for dead: the other process links a
    source of this run's page between the page's removal of that source's old links and
    its insert of the new ones (a cluster node that stalled and came back), so the insert
    collides on the links' unique key. That is the takeover, not a crash: the run keeps the
    end the other process recorded, says it was taken over, and its page rolls back. On
    PostgreSQL, where another transaction commits while the page's is open (SQLite has
    one writer at a time)."""
    import datetime as dt

    import structlog.testing
    from idsync.errors import RunTakenOver
    from idsync.store.links import LinkSet
    from idsync.store.tables import links as links_table
    from idsync.store.tables import recon_runs
    from idsync.sync.options import ReconOptions
    from idsync.sync.recon import run_recon
    from sqlalchemy import insert, update

    slapd.add_ldif("".join(person(f"t{i}", ldap_subtree) for i in range(3)))
    project = make_project(tmp_path, slapd, ldap_subtree, store_url("postgresql", tmp_path))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    adding: list[tuple[str, str]] = []
    taken: list[bool] = []
    original_add, original_remove = LinkSet.add, LinkSet.remove_targets

    def add(self: LinkSet, conn: Any, pairs: Any, *args: Any, **kwargs: Any) -> None:
        adding[:] = list(pairs)
        original_add(self, conn, pairs, *args, **kwargs)

    def remove_targets(self: LinkSet, conn: Any, ids: Any) -> None:
        if adding and not taken:  # the takeover commits between the page's removals and its insert
            taken.append(True)
            with store.begin() as other:
                other.execute(update(recon_runs).where(recon_runs.c.state == "ACTIVE").values(
                    state="FAILED", message="interrupted: taken for dead"))
                other.execute(insert(links_table).values(
                    id="elsewhere", linkset=self.name, source_id=adding[0][0], target_id="elsewhere",
                    qualifier="default", created=dt.datetime.now(dt.UTC)))
        original_remove(self, conn, ids)

    monkeypatch.setattr(LinkSet, "add", add)
    monkeypatch.setattr(LinkSet, "remove_targets", remove_targets)
    try:
        with structlog.testing.capture_logs() as logs:
            result = run_recon(loaded, store, MAPPING, ReconOptions())
        assert taken
        assert [e["event"] for e in logs if e["log_level"] == "error"] == []  # no recon.crash
        assert [e for e in logs if e["event"] == "recon.taken_over"]
        assert (result.state, result.message) == ("FAILED", "interrupted: taken for dead")
        assert result.exit_code == RunTakenOver.exit_code
        assert Resources(loaded, store).open("managed/user").count() == 0  # the page rolled back
    finally:
        store.close()
