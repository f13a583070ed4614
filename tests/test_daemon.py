"""The daemon's process: job runner and its lock, crash recovery, sd_notify, the unit
file, and ``idsync run`` end to end as a subprocess against a real slapd."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from idsync.config.jobs import parse_job
from idsync.daemon import runner as runner_module
from idsync.daemon.notify import Notifier
from idsync.daemon.recovery import recover_interrupted
from idsync.daemon.reload import load_configuration
from idsync.daemon.runner import job_lock_name, run_job
from idsync.errors import ConfigError, RunLocked
from idsync.store.database import Store, utcnow
from idsync.store.runs import RunStore
from idsync.store.tables import locks
from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
IDSYNC = Path(sys.executable).parent / "idsync"
# The stand-in recon never looks at the project.
_PROJECT: Any = SimpleNamespace()


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
    monkeypatch.setattr(runner_module, "run_recon", _fake_recon(store, {}, calls))
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
    monkeypatch.setattr(runner_module, "run_recon", _fake_recon(store, {"m2": "FAILED"}, calls))
    outcome = run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1", "m2", "m3"]'))
    assert (calls, outcome.state) == (["m1", "m2"], "FAILED")
    calls.clear()
    outcome = run_job(
        _PROJECT,
        store,
        _job(tmp_path, 'mappings = ["m1", "m2", "m3"]\ncontinue_on_failure = true'),
    )
    assert (calls, outcome.state) == (["m1", "m2", "m3"], "FAILED")


def test_second_run_of_a_job_is_refused_by_the_store_lock(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While ``job:NAME`` is held (here by another process), a second run raises RunLocked."""
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon", _fake_recon(store, {}, calls))
    RunStore(store).acquire(job_lock_name("job1"), "otherhost:1:x")
    with pytest.raises(RunLocked, match="job:job1"):
        run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1"]'))
    assert calls == []


def test_timeout_cancels_and_is_recorded(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job past its ``timeout`` is canceled; the run record says CANCELED and why."""
    calls: list[str] = []
    monkeypatch.setattr(runner_module, "run_recon", _fake_recon(store, {}, calls, seconds=5))
    started = time.monotonic()
    outcome = run_job(_PROJECT, store, _job(tmp_path, 'mappings = ["m1", "m2"]\ntimeout = 0.2'))
    assert time.monotonic() - started < 2
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


def test_start_with_broken_conf_is_a_config_error(tmp_path: Path) -> None:
    """With no previous configuration to fall back to, a broken conf/ stops the start (78)."""
    root = _mini_project(tmp_path, ["m1"])
    (root / "conf" / "sync.json").write_text("{ not json")
    with pytest.raises(ConfigError) as info:
        load_configuration(root)
    assert info.value.exit_code == os.EX_CONFIG


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


# -- the unit file ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies_clean(tmp_path: Path) -> None:
    """``systemd-analyze verify`` says nothing about the unit (ExecStart set to this idsync)."""
    unit = tmp_path / "idsync.service"
    text = (REPO / "systemd" / "idsync.service").read_text(encoding="utf-8")
    unit.write_text(text.replace("/opt/idsync/bin/idsync", str(IDSYNC)), encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.stderr == ""
    for needle in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=",
        "StateDirectory=",
        "LogsDirectory=",
        "ConfigurationDirectory=",
        "LoadCredential=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=",
        "User=idsync",
    ):
        assert needle in text


# -- end to end: `idsync run` as a subprocess against a real slapd --------------------------

ACTIVE = "systemLdapActiveAccounts_managedUser"
INACTIVE = "systemLdapInactiveAccounts_managedUser"
# Each user costs ~10 ms in this transform, so a run lasts seconds and SIGTERM finds it busy.
_SLOW_MAPPING = {
    "name": "slowLdap_managedUser",
    "source": "system/ldap/account",
    "target": "managed/user",
    "links": ACTIVE,
    "defaultSourceFields": ["uid", "cn"],
    "correlationQuery": {"_queryFilter": 'userName eq "${source.uid}"'},
    "properties": [
        {"source": "uid", "target": "userName"},
        {
            "source": "cn",
            "target": "displayName",
            "transform": {
                "type": "text/javascript",
                "source": "var t = Date.now(); while (Date.now() - t < 10) {} source",
            },
        },
    ],
    "policies": [
        {"situation": s, "action": a}
        for s, a in [
            ("ABSENT", "CREATE"),
            ("FOUND", "UPDATE"),
            ("CONFIRMED", "UPDATE"),
            ("MISSING", "CREATE"),
            ("SOURCE_MISSING", "IGNORE"),
            ("UNQUALIFIED", "IGNORE"),
            ("UNASSIGNED", "IGNORE"),
            ("AMBIGUOUS", "EXCEPTION"),
        ]
    ],
    "runTargetPhase": False,
}


class _Daemon:
    """``idsync run`` in a subprocess, its JSON log lines in a file."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.project = project
        self.env = env
        self.log_path = project / "daemon.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(IDSYNC), "-p", str(project), "--log-format", "json", "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "(not json)", "line": line})
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        """After a failed test: dump the threads' stacks into the log (faulthandler), then kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class _NotifyReader:
    """A stand-in for systemd's notification socket: keeps every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def watchdogs(self) -> list[float]:
        return [t for t, m in self.messages if m == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _idsync(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IDSYNC), "-p", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _runs(project: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = _idsync(project, env, "status", "--json", "--limit", "100")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def _status_file(project: Path) -> dict[str, Any]:
    path = project / "state" / "status.json"
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {}


@pytest.fixture
def project(tmp_path: Path, slapd: Any, ldap_subtree: str) -> tuple[Path, dict[str, str]]:
    """The repository's conf/, reading only this test's LDAP subtree, and an empty jobs.d/."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "jobs.d").mkdir()
    (root / "conf" / "idsync.toml").write_text(
        'state_dir = "state"\nstatus_file = "state/status.json"\n', encoding="utf-8"
    )
    prov_path = root / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8"))
    prov["configurationProperties"]["baseContextsToSynchronize"] = [ldap_subtree]
    prov["configurationProperties"]["port"] = slapd.port
    prov_path.write_text(json.dumps(prov, indent=2), encoding="utf-8")
    from idsync.testing.slapd import sample_users_ldif

    slapd.add_ldif(sample_users_ldif(20, ldap_subtree))
    # Create the schema first: the daemon and the polling `idsync status` would otherwise
    # both migrate a brand-new database at once.
    Store.open(f"sqlite:///{root / 'state' / 'idsync.db'}").engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDSYNC_", "NOTIFY_", "WATCHDOG_"))}
    env.update(
        PYTHONFAULTHANDLER="1",
        IDSYNC_LDAP_HOST="127.0.0.1",
        IDSYNC_LDAP_PORT=str(slapd.port),
        IDSYNC_LDAP_PASSWORD=slapd.admin_password,
    )
    return root, env


def _secret_free(texts: list[str], secret: str) -> None:
    for text in texts:
        assert secret not in text


@pytest.mark.slapd
def test_daemon_runs_jobs_reloads_and_reports(project: tuple[Path, dict[str, str]], slapd: Any, tmp_path: Path) -> None:
    """A job every 2 s runs repeatedly and shows in ``status --json`` and the status file;
    READY=1 then WATCHDOG=1 reach NOTIFY_SOCKET; SIGHUP with a broken job file keeps the old
    schedule and logs ``file: key: problem``; SIGHUP with a fixed file applies it; SIGTERM
    exits 0; the LDAP password is in no log line and not in the status file."""
    root, env = project
    job = root / "jobs.d" / "every2.toml"
    job.write_text(
        f'description = "test"\nschedule = "*/2 * * * * ?"\nmappings = ["{ACTIVE}"]\n',
        encoding="utf-8",
    )
    notices = _NotifyReader(tmp_path / "notify.sock")
    env = {**env, "NOTIFY_SOCKET": str(notices.path), "WATCHDOG_USEC": "1500000"}
    daemon = _Daemon(root, env)
    try:
        _wait(lambda: len(notices.watchdogs()) >= 4, 20, "four watchdog pings")
        assert notices.messages[0][1].startswith("READY=1\n")  # nothing comes before READY=1

        def job_runs() -> list[dict[str, Any]]:
            return [r for r in _runs(root, env) if r["job"] == "every2" and r["state"] == "SUCCESS"]

        two = {r["_id"] for r in _wait(lambda: job_runs()[-2:] if len(job_runs()) >= 2 else None, 20, "runs")}

        def in_status_file() -> set[str]:
            job_status = _status_file(root).get("jobs", {}).get("every2", {})
            return {r["id"] for r in job_status.get("recentRuns", [])}

        _wait(lambda: in_status_file() >= two, 10, "both runs in the status file")
        status = _wait(
            lambda: (_status_file(root).get("jobs") or {}).get("every2", {}).get("lastRun"),
            10,
            "the job's last run in the status file",
        )
        assert status["state"] == "SUCCESS"
        doc = _status_file(root)
        assert doc["daemon"]["state"] == "running" and doc["jobs"]["every2"]["nextFire"]
        assert doc["mappings"][ACTIVE]["state"] == "SUCCESS"

        job.write_text('schedule = "every now and then"\nmappings = ["x"]\n', encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        invalid = _wait(
            lambda: [e for e in daemon.events() if e.get("event") == "config.invalid"],
            10,
            "the reload error",
        )
        assert invalid[0]["error"].startswith(f"{job}: schedule: 4 fields; expected 5")
        before = len(job_runs())
        _wait(lambda: len(job_runs()) > before, 10, "a run on the kept schedule")
        assert _status_file(root)["jobs"]["every2"]["schedule"] == "*/2 * * * * ?"

        job.write_text(
            f'description = "fixed"\nschedule = "*/3 * * * * ?"\nmappings = ["{ACTIVE}"]\n',
            encoding="utf-8",
        )
        daemon.proc.send_signal(signal.SIGHUP)
        _wait(
            lambda: _status_file(root).get("jobs", {}).get("every2", {}).get("schedule") == "*/3 * * * * ?",
            10,
            "the fixed schedule",
        )
        assert _status_file(root)["jobs"]["every2"]["description"] == "fixed"

        code, took = daemon.stop()
        assert code == 0 and took < 10
        pings = notices.watchdogs()
        t0 = notices.messages[0][0]
        assert max(b - a for a, b in itertools.pairwise(pings)) < 0.75, (
            " ".join(  # half of WATCHDOG_USEC
                f"{t - t0:.2f}:{m.splitlines()[0][:12]}" for t, m in notices.messages
            )
        )
    finally:
        daemon.kill()
        notices.close()
    assert _status_file(root)["daemon"]["state"] == "stopped"
    events = daemon.events()
    assert {
        "daemon.start",
        "job.start",
        "job.end",
        "recon.end",
        "daemon.reloaded",
        "daemon.exit",
    } <= {e.get("event") for e in events}
    assert all(e["event"] != "(not json)" for e in events), [e for e in events if e["event"] == "(not json)"]
    _secret_free(
        [daemon.log_path.read_text(), (root / "state" / "status.json").read_text()],
        slapd.admin_password,
    )


def _start_slow_job(root: Path, env: dict[str, str], slapd: Any, subtree: str, page: int) -> _Daemon:
    slapd.add_ldif(_more_users(300, subtree))
    (root / "conf" / "mapping-slowLdap_managedUser.json").write_text(json.dumps(_SLOW_MAPPING), encoding="utf-8")
    (root / "jobs.d" / "slow.toml").write_text(
        f'schedule = "*/2 * * * * ?"\nmappings = ["slowLdap_managedUser"]\npage_size = {page}\n',
        encoding="utf-8",
    )
    daemon = _Daemon(root, env)
    _wait(
        lambda: any(r["state"] == "ACTIVE" and r["job"] == "slow" for r in _runs(root, env)),
        20,
        "a running recon",
    )
    return daemon


@pytest.mark.slapd
def test_sigterm_during_a_long_run_cancels_it(
    project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str
) -> None:
    """SIGTERM while a recon runs: exit 0 within 10 s, and the run is recorded CANCELED."""
    root, env = project
    daemon = _start_slow_job(root, env, slapd, ldap_subtree, page=5)
    try:
        time.sleep(0.5)
        code, took = daemon.stop()
    finally:
        daemon.kill()
    assert code == 0 and took < 10
    runs = [r for r in _runs(root, env) if r["job"] == "slow"]
    assert runs and runs[0]["state"] == "CANCELED"
    assert all(r["state"] != "ACTIVE" for r in runs)
    assert _idsync(root, env, "status").returncode == 0  # works with the daemon gone


@pytest.mark.slapd
def test_second_signal_exits_at_once(project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str) -> None:
    """SIGTERM then SIGINT during a seconds-long page: exit 130 at once, CANCELED, locks freed."""
    root, env = project
    daemon = _start_slow_job(root, env, slapd, ldap_subtree, page=300)
    try:
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code, took = daemon.stop(signal.SIGINT)
    finally:
        daemon.kill()
    assert code == 130 and took < 2
    runs = [r for r in _runs(root, env) if r["job"] == "slow"]
    assert runs[0]["state"] == "CANCELED" and "second SIGINT" in runs[0]["message"]
    store = Store.open(f"sqlite:///{root / 'state' / 'idsync.db'}")
    assert RunStore(store).lock_holder("job:slow") is None
    assert RunStore(store).lock_holder("recon:slowLdap_managedUser") is None


@pytest.mark.slapd
def test_example_jobs_move_a_locked_user_to_inactive(
    project: tuple[Path, dict[str, str]],
    slapd: Any,
    ldap_subtree: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped jobs: active users end ``active``; once locked in LDAP (ppolicy), the inactive
    job turns the same managed user ``inactive`` with its roles withdrawn."""
    root, env = project
    shutil.copy(REPO / "jobs.d" / "sync-active-ldap-users.toml", root / "jobs.d")
    shutil.copy(REPO / "jobs.d" / "sync-inactive-ldap-users.toml", root / "jobs.d")
    listed = _idsync(root, env, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {j["name"]: j for j in json.loads(listed.stdout)["jobs"]}
    assert len(jobs["sync-active-ldap-users"]["nextFires"]) == 3
    assert jobs["sync-active-ldap-users"]["scheduleDescription"] == "Every 15 minutes"

    done = _idsync(root, env, "run-job", "sync-active-ldap-users")
    assert done.returncode == 0, done.stdout + done.stderr
    before = _user(root, env, "bjensen")
    assert before["accountStatus"] == "active"
    _grant_roles(root, env, before["_id"], monkeypatch)
    assert _user(root, env, "bjensen")["roles"] == ["managed/role/approvers"]

    _lock_user(slapd, f"uid=bjensen,{ldap_subtree}")
    done = _idsync(root, env, "run-job", "sync-inactive-ldap-users")
    assert done.returncode == 0, done.stdout + done.stderr
    after = _user(root, env, "bjensen")
    assert after["_id"] == before["_id"]
    assert after["accountStatus"] == "inactive"
    # Withdrawn: [] and a missing property are the same "no value" to the store.
    assert not after.get("roles") and not after.get("effectiveRoles")
    assert _user(root, env, "scarter")["accountStatus"] == "active"

    dry = _idsync(root, env, "run-job", "sync-active-ldap-users", "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dryRun"] is True


def _user(root: Path, env: dict[str, str], uid: str) -> dict[str, Any]:
    done = _idsync(root, env, "managed", "query", "user", "--filter", f'userName eq "{uid}"')
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len(found) == 1
    return dict(found[0])


def _grant_roles(root: Path, env: dict[str, str], user_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from idsync.config.project import load_project
    from idsync.resources import Resources

    for key in ("IDSYNC_LDAP_HOST", "IDSYNC_LDAP_PORT", "IDSYNC_LDAP_PASSWORD"):
        monkeypatch.setenv(key, env[key])
    project = load_project(root)
    store = Store.open(project.settings.store_url())
    roles = ["managed/role/approvers"]
    Resources(project, store).open("managed/user").update(user_id, {"roles": roles, "effectiveRoles": roles})


def _lock_user(slapd: Any, dn: str) -> None:
    import ldap3

    conn = ldap3.Connection(
        ldap3.Server(f"ldap://127.0.0.1:{slapd.port}"),
        slapd.admin_dn,
        slapd.admin_password,
        auto_bind=True,
    )
    try:
        assert conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]}), conn.result
    finally:
        conn.unbind()


def _more_users(n: int, base: str) -> str:
    from idsync.testing.sample_users import iter_sample_users_ldif

    # Skip the two named users the fixture already loaded.
    return "".join(list(iter_sample_users_ldif(n + 22, base))[22:])
