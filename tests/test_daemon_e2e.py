"""``idsync run``, ``run-job``, ``jobs``, ``status`` and the demo end to end: the real binary
as a subprocess against a real slapd, observed through its logs, the status file, the store
and a stand-in for systemd's notification socket."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_runner import run_cli
from cluster_env import Gate, gate_pace
from dbs import BACKENDS, store_url
from idsync.store.database import Store
from idsync.store.runs import RunStore
from scim_sample import USERS_IN, scim_env
from scim_sample import sample_project as scim_project
from scim_server import running
from waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
IDSYNC = Path(sys.executable).parent / "idsync"

ACTIVE = "systemLdapActiveAccounts_managedUser"
INACTIVE = "systemLdapInactiveAccounts_managedUser"
# Each user costs 50 ms in this transform until the project's gate is opened (``cluster_env.Gate``),
# so a run lasts seconds and SIGTERM finds it busy; a test that has seen what it waited for
# opens the gate and the runs go at full speed.
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
                "source": gate_pace(50) + "source",
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


def _one_core() -> None:
    """In a child before it runs idsync: one core only, so an LDAP listing is read in process."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


class _Daemon:
    """``idsync run`` in a subprocess, its JSON log lines in a file."""

    def __init__(self, project: Path, env: dict[str, str], log_name: str = "daemon.log",
                 one_core: bool = False) -> None:
        self.project = project
        self.env = env
        self.log_path = project / log_name
        self._log = self.log_path.open("ab")
        # On one core a listing is read in process: no listing process to wait for.
        self.proc = subprocess.Popen(
            [str(IDSYNC), "-p", str(project), "--log-format", "json", "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_one_core if one_core else None,
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


# Linux's SO_TIMESTAMP (and SCM_TIMESTAMP): each datagram carries the time the kernel
# took it from the sender, a struct timeval.
_SO_TIMESTAMP = 29


class _NotifyReader:
    """A stand-in for systemd's notification socket: keeps every datagram with the time it
    was sent (the kernel's stamp, so a test process starved of CPU while the daemon runs
    does not read three pings late and take them for one late ping)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMP, 1)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _address = self._sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            sent = next((seconds + micros / 1_000_000 for level, kind, raw in ancillary
                         if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMP
                         for seconds, micros in [struct.unpack("qq", raw[:16])]), time.time())
            self.messages.append((sent, data.decode()))

    def watchdogs(self) -> list[float]:
        return [t for t, m in self.messages if m == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    return wait_for(predicate, timeout, what, interval=0.2)


def _idsync(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["-p", str(project), *args], env=env, inherit_env=False, timeout=60)


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
    prov["configurationProperties"]["baseContexts"] = [ldap_subtree]
    prov["configurationProperties"]["port"] = slapd.port
    prov_path.write_text(json.dumps(prov, indent=2), encoding="utf-8")
    from idsync_dev.slapd import sample_users_ldif

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
    schedule and logs ``file: key: problem``; SIGHUP with a fixed file (every second) applies it, and so does
    SIGHUP after a mapping in conf/ changed; SIGHUP after the file is removed unschedules the
    job; SIGTERM exits 0; the LDAP password is in no log line and not in the status file."""
    root, env = project
    job = root / "jobs.d" / "every2.toml"
    job.write_text(
        f'description = "test"\nschedule = "*/2 * * * * ?"\nmappings = ["{ACTIVE}"]\n',
        encoding="utf-8",
    )
    notices = _NotifyReader(tmp_path / "notify.sock")
    # systemd's WatchdogSec=3s: a ping every second.
    watchdog = 3.0
    env = {**env, "NOTIFY_SOCKET": str(notices.path), "WATCHDOG_USEC": str(int(watchdog * 1_000_000))}
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
            f'description = "fixed"\nschedule = "* * * * * ?"\nmappings = ["{ACTIVE}"]\n',
            encoding="utf-8",
        )
        daemon.proc.send_signal(signal.SIGHUP)
        _wait(
            lambda: _status_file(root).get("jobs", {}).get("every2", {}).get("schedule") == "* * * * * ?",
            10,
            "the fixed schedule",
        )
        assert _status_file(root)["jobs"]["every2"]["description"] == "fixed"

        mapping = root / "conf" / f"mapping-{ACTIVE}.json"
        text = mapping.read_text(encoding="utf-8")
        mapping.write_text(text.replace("\"'active'\"", "\"'enabled'\""), encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)  # conf/ changes apply too, without a restart
        _wait(lambda: _user(root, env, "bjensen")["accountStatus"] == "enabled", 15, "the changed mapping applied")

        job.unlink()
        daemon.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "every2" not in _status_file(root).get("jobs", {"every2": 1}), 10, "the job unscheduled")

        def ended_fires() -> tuple[int, int] | None:
            """The job's starts and ends logged, once every start has its end."""
            events = [e.get("event") for e in daemon.events() if e.get("job") == "every2"]
            counts = events.count("job.start"), events.count("job.end")
            return counts if counts[0] == counts[1] else None

        # A run the last fire started may still end; after it, no fire in twice the schedule's period.
        gone = _wait(ended_fires, 10, "the last run's end")
        time.sleep(2)
        assert ended_fires() == gone

        code, took = daemon.stop()
        assert code == 0 and took < 10
        texts = [m for _t, m in notices.messages]
        assert any(m.startswith("RELOADING=1\n") for m in texts)
        assert any(m.startswith("STOPPING=1\n") for m in texts)
        pings = notices.watchdogs()
        t0 = notices.messages[0][0]
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        shown = " ".join(f"{t - t0:.2f}:{m.splitlines()[0][:12]}" for t, m in notices.messages)
        # A ping every third of WATCHDOG_USEC, through runs and reloads (the typical gap);
        # none as late as WATCHDOG_USEC itself, past which systemd kills the service. The
        # period is long enough that a machine busy with other tests, which may delay one
        # ping by a second or so, does not bring a ping that late; a loop blocked by a reload
        # or a run does.
        assert gaps[len(gaps) // 2] < watchdog / 3 * 1.2 and gaps[-1] < watchdog, shown
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
    start = next(e for e in events if e["event"] == "job.start")
    end = next(e for e in events if e["event"] == "job.end" and e["job_run"] == start["job_run"])
    assert (start["job"], start["mappings"], end["state"]) == ("every2", [ACTIVE], "SUCCESS")
    assert end["duration_ms"] >= 0 and end["runs"][0]["mapping"] == ACTIVE and end["runs"][0]["id"]
    assert end["runs"][0]["counts"]["created"] == 20  # the first run creates the sample users
    _secret_free(
        [daemon.log_path.read_text(), (root / "state" / "status.json").read_text()],
        slapd.admin_password,
    )


def _slow_job(root: Path, slapd: Any, subtree: str, page: int) -> None:
    slapd.add_ldif(_more_users(100, subtree))  # 122 entries with the fixture's
    (root / "conf" / "mapping-slowLdap_managedUser.json").write_text(json.dumps(_SLOW_MAPPING), encoding="utf-8")
    (root / "jobs.d" / "slow.toml").write_text(
        f'schedule = "*/2 * * * * ?"\nmappings = ["slowLdap_managedUser"]\npage_size = {page}\n',
        encoding="utf-8",
    )


def _start_slow_job(root: Path, env: dict[str, str], slapd: Any, subtree: str, page: int) -> _Daemon:
    _slow_job(root, slapd, subtree, page)
    daemon = _Daemon(root, env, one_core=True)
    # Read the store directly: ``idsync status`` takes a second to start, the page may be over by then.
    runs = RunStore(Store.open(env.get("IDSYNC_STORE__URL") or f"sqlite:///{root / 'state' / 'idsync.db'}"))
    # In its source phase: the page (a few entries, read at once) is then under way for seconds.
    _wait(lambda: any(r["state"] == "ACTIVE" and r["job"] == "slow"
                      and (r.get("summary") or {}).get("stage") == "ACTIVE_RECONCILING_SOURCE"
                      for r in runs.recent(5)), 20, "a running recon in its source phase")
    return daemon


@pytest.mark.slapd
def test_sigterm_during_a_long_run_cancels_it(
    project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str, tmp_path: Path
) -> None:
    """While the daemon runs a job, STATUS= names it and ``idsync run-job`` of it is refused (75)
    by the store lock; SIGTERM while a recon runs: exit 0 within 10 s, the run recorded CANCELED."""
    root, env = project
    notices = _NotifyReader(tmp_path / "notify.sock")
    daemon = _start_slow_job(root, {**env, "NOTIFY_SOCKET": str(notices.path)}, slapd, ldap_subtree, page=5)
    try:
        manual = _idsync(root, env, "run-job", "slow")
        assert manual.returncode == 75 and "job:slow is already running" in manual.stderr, manual
        code, took = daemon.stop()
    finally:
        daemon.kill()
        notices.close()
    assert code == 0 and took < 10
    texts = [m for _t, m in notices.messages]
    assert texts[0].startswith("READY=1\nSTATUS=")
    assert "STATUS=running slow" in texts
    assert texts[-1].startswith("STOPPING=1\nSTATUS=stopping: ")
    runs = [r for r in _runs(root, env) if r["job"] == "slow"]
    assert runs and runs[0]["state"] == "CANCELED"
    assert all(r["state"] != "ACTIVE" for r in runs)
    assert _idsync(root, env, "status").returncode == 0  # works with the daemon gone


@pytest.mark.slapd
def test_sigterm_cancels_a_manual_run(project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str) -> None:
    """``kill`` of ``idsync run-job`` cancels at the next page boundary like Ctrl-C: the run is
    recorded CANCELED, its locks are freed, the exit code is 130."""
    root, env = project
    _slow_job(root, slapd, ldap_subtree, page=5)
    # Its output into files, not pipes: the listing's fork server, a process of its own that
    # inherits them, may hold them open for a moment after the command has exited.
    with (root / "out").open("wb") as out_file, (root / "err").open("wb") as err_file:
        proc = subprocess.Popen([str(IDSYNC), "-p", str(root), "run-job", "slow"], stdout=out_file, stderr=err_file,
                                env=env)
    try:
        _wait(lambda: any(r["state"] == "ACTIVE" for r in _runs(root, env)), 20, "a running recon")
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = (root / "out").read_bytes(), (root / "err").read_bytes()
    assert proc.returncode == 130, out + err
    assert b"job slow: CANCELED" in out
    run = _runs(root, env)[0]
    assert run["job"] == "slow" and run["state"] == "CANCELED"
    store = Store.open(f"sqlite:///{root / 'state' / 'idsync.db'}")
    assert RunStore(store).lock_holder("job:slow") is None


@pytest.mark.slapd
def test_job_timeout_cancels_a_real_recon(project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str) -> None:
    """A job past its ``timeout`` is canceled at a page boundary and recorded CANCELED, saying why."""
    root, env = project
    _slow_job(root, slapd, ldap_subtree, page=1)  # a page commits 50 ms after the listing's first
    with (root / "jobs.d" / "slow.toml").open("a") as f:
        f.write("timeout = 2\n")  # the run takes 6 s at least; its first pages commit within 2 s under load
    # On one core the listing is read in process: its first page does not wait for a fork
    # server (a new interpreter, which a busy machine may keep starting for seconds).
    done = subprocess.run([str(IDSYNC), "-p", str(root), "run-job", "slow"], capture_output=True, text=True,
                          env=env, timeout=120, preexec_fn=_one_core)
    assert done.returncode == 130, done
    assert "job slow: CANCELED: timed out after 2 s" in done.stdout
    run = _runs(root, env)[0]
    assert (run["job"], run["state"]) == ("slow", "CANCELED") and "timed out" in run["message"]
    # Ended at the timeout and the page then under way (1 entry), by the run's own record:
    # the command's start, which a busy machine stretches, is not in it.
    assert run["duration"] < (2 + 3) * 1000, run["duration"]
    assert 0 < run["changes"]["created"] < 122  # stopped part way (each created user also counts a link)


@pytest.mark.slapd
def test_a_refused_secret_is_in_no_log_line_nor_the_status_file(
    project: tuple[Path, dict[str, str]], slapd: Any
) -> None:
    """When the directory refuses the configured bind password, the run FAILED and its error
    are recorded and logged, and the password is in none of it (debug level included)."""
    root, env = project
    shutil.copy(REPO / "jobs.d" / "sync-active-ldap-users.toml", root / "jobs.d")
    secret = "not-the-Pa55word-" + os.urandom(4).hex()
    env = {**env, "IDSYNC_LDAP_PASSWORD": secret}
    done = _idsync(root, env, "--log-format", "json", "--log-level", "debug", "run-job", "sync-active-ldap-users")
    assert done.returncode != 0
    run = _runs(root, env)[0]
    assert run["state"] == "FAILED" and "invalidCredentials" in run["message"], run
    status = (root / "state" / "status.json").read_text(encoding="utf-8")
    assert "FAILED" in status
    shown = _idsync(root, env, "status", run["_id"])
    _secret_free([done.stdout, done.stderr, status, shown.stdout, shown.stderr, json.dumps(run)], secret)


@pytest.mark.slapd
def test_second_signal_exits_at_once(project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str) -> None:
    """SIGTERM then SIGINT during a seconds-long page: exit 130 at once, CANCELED, locks freed.

    "At once" is judged against the page, not a wall clock a loaded machine stretches: the
    process is gone before the page it was in has ended (none of its 122 entries recorded,
    no ``recon.end`` logged), where the first signal alone waits for that end."""
    root, env = project
    daemon = _start_slow_job(root, env, slapd, ldap_subtree, page=1000)  # one page of seconds
    try:
        time.sleep(1)  # inside the page, well before its end
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code, _took = daemon.stop(signal.SIGINT)
    finally:
        daemon.kill()
    assert code == 130
    events = [e["event"] for e in daemon.events()]
    assert "daemon.stop_now" in events and events[-1] == "daemon.exit", events
    assert "recon.end" not in events and "job.end" not in events, events
    runs = [r for r in _runs(root, env) if r["job"] == "slow"]
    assert runs[0]["state"] == "CANCELED" and "second SIGINT" in runs[0]["message"]
    assert sum(runs[0]["changes"].values()) < 122, runs[0]["changes"]  # the page was cut short
    store = Store.open(f"sqlite:///{root / 'state' / 'idsync.db'}")
    assert RunStore(store).lock_holder("job:slow") is None
    assert RunStore(store).lock_holder("recon:slowLdap_managedUser") is None


@pytest.mark.slapd
def test_run_of_a_killed_daemon_is_failed_at_the_next_start(
    project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str
) -> None:
    """A daemon killed mid-run leaves the run ACTIVE and its locks held; the next ``idsync run``
    records it FAILED ("interrupted"), frees the dead process's locks and runs the job again."""
    root, env = project
    first = _start_slow_job(root, env, slapd, ldap_subtree, page=5)
    first.proc.kill()
    first.kill()
    Gate(root).open()  # the next run need not be slow
    left = next(r for r in _runs(root, env) if r["job"] == "slow")
    assert left["state"] == "ACTIVE"
    second = _Daemon(root, env, "second.log")
    try:
        _wait(lambda: next(r for r in _runs(root, env) if r["job"] == "slow")["_id"] != left["_id"], 20, "a new run")
        code, _took = second.stop()
    finally:
        second.kill()
    assert code == 0
    runs = {r["_id"]: r for r in _runs(root, env)}
    assert runs[left["_id"]]["state"] == "FAILED" and "interrupted" in runs[left["_id"]]["message"]
    events = second.events()
    assert {"event": "run.interrupted", "run_id": left["_id"]}.items() <= next(
        e for e in events if e.get("event") == "run.interrupted"
    ).items()
    assert any(e.get("event") == "lock.released_stale" and e.get("lock") == "job:slow" for e in events)


@pytest.mark.slapd
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_daemons_on_one_store_run_a_job_one_at_a_time(
    project: tuple[Path, dict[str, str]], slapd: Any, ldap_subtree: str, backend: str, tmp_path: Path
) -> None:
    """Two ``idsync run`` on one database with a job that lasts longer than its 2 s interval:
    the store lock ``job:NAME`` lets only one of them run it at a time; the other logs
    ``job.skipped reason=locked``. Runs of the job never overlap in time."""
    root, env = project
    if backend != "sqlite":
        url = store_url(backend, tmp_path)
        Store.open(url).engine.dispose()  # the schema, before two processes race to create it
        env = {**env, "IDSYNC_STORE__URL": url}
    first = _start_slow_job(root, env, slapd, ldap_subtree, page=5)
    second = _Daemon(root, env, "second.log")
    daemons = (first, second)
    try:

        def locked() -> bool:
            events = [e for d in daemons for e in d.events()]
            return any(e.get("event") == "job.skipped" and e.get("reason") == "locked" for e in events)

        try:
            _wait(locked, 90, "a fire turned away by the lock")  # two daemons starting on a busy machine
        except AssertionError as exc:
            seen = [[(e.get("event"), e.get("job"), e.get("reason"), e.get("state")) for e in d.events()
                     if str(e.get("event", "")).startswith(("job.", "daemon.", "recon.start", "recon.end"))][-15:]
                    for d in daemons]
            for d in daemons:
                d.kill()  # each dumps its threads' stacks into its log first
            tails = [d.log_path.read_text(encoding="utf-8", errors="replace")[-4000:] for d in daemons]
            raise AssertionError(f"{exc}; the daemons' last job events: {seen}; the end of the second "
                                 f"daemon's log: {tails[1]}") from None
        Gate(root).open()  # the runs from now on need not be slow
        _wait(lambda: len([r for r in _runs(root, env) if r["job"] == "slow"]) >= 2, 30, "a second run")
        codes = [d.stop()[0] for d in daemons]
    finally:
        for d in daemons:
            d.kill()
    assert codes == [0, 0]
    spans = sorted(
        (dt.datetime.fromisoformat(r["started"]), dt.datetime.fromisoformat(r["ended"]))
        for r in _runs(root, env)
        if r["job"] == "slow"
    )
    for before, after in itertools.pairwise(spans):
        assert after[0] >= before[1], (before, after)


@pytest.mark.slapd
def test_example_jobs_move_a_locked_user_to_inactive(
    project: tuple[Path, dict[str, str]],
    slapd: Any,
    ldap_subtree: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped jobs: active users end ``active``; once locked in LDAP (ppolicy), the inactive
    job turns the same managed user ``inactive`` with its roles withdrawn; unlocked, the active
    job turns it ``active`` again. No output and no status file shows the bind password."""
    root, env = project
    shutil.copy(REPO / "jobs.d" / "sync-active-ldap-users.toml", root / "jobs.d")
    shutil.copy(REPO / "jobs.d" / "sync-inactive-ldap-users.toml", root / "jobs.d")
    listed = _idsync(root, env, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {j["name"]: j for j in json.loads(listed.stdout)["jobs"]}
    assert len(jobs["sync-active-ldap-users"]["nextFires"]) == 3
    assert jobs["sync-active-ldap-users"]["scheduleDescription"] == "Every 15 minutes"
    table = _idsync(root, {**env, "COLUMNS": "200"}, "jobs")
    assert table.returncode == 0 and "Every 15 minutes" in table.stdout and "never" in table.stdout, table

    done = _idsync(root, env, "run-job", "sync-active-ldap-users")
    assert done.returncode == 0, done.stdout + done.stderr
    entry = _status_file(root)["jobs"]["sync-active-ldap-users"]  # no daemon: run-job writes it
    assert (entry["scheduleDescription"], entry["lastRun"]["state"], entry["lastRun"]["trigger"]) == (
        "Every 15 minutes",
        "SUCCESS",
        "manual",
    )
    before = _user(root, env, "bjensen")
    assert before["accountStatus"] == "active"
    _grant_roles(root, env, before["_id"], monkeypatch)
    assert [r["_ref"] for r in _user(root, env, "bjensen")["roles"]] == ["managed/role/approvers"]

    _lock_user(slapd, f"uid=bjensen,{ldap_subtree}")
    done = _idsync(root, env, "run-job", "sync-inactive-ldap-users")
    assert done.returncode == 0, done.stdout + done.stderr
    after = _user(root, env, "bjensen")
    assert after["_id"] == before["_id"]
    assert after["accountStatus"] == "inactive"
    # Withdrawn: [] and a missing property are the same "no value" to the store.
    assert not after.get("roles") and not after.get("effectiveRoles")
    assert _user(root, env, "scarter")["accountStatus"] == "active"
    outputs = [listed.stdout, listed.stderr, done.stdout, done.stderr]

    _lock_user(slapd, f"uid=bjensen,{ldap_subtree}", locked=False)
    done = _idsync(root, env, "run-job", "sync-active-ldap-users")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _user(root, env, "bjensen")["accountStatus"] == "active"

    dry = _idsync(root, env, "run-job", "sync-active-ldap-users", "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dryRun"] is True
    outputs += [done.stdout, done.stderr, dry.stdout, dry.stderr, (root / "state" / "status.json").read_text()]
    _secret_free(outputs, slapd.admin_password)


@pytest.mark.slapd
def test_demo_runs_the_example_jobs_until_ctrl_c(tmp_path: Path) -> None:
    """``make demo`` (``python -m idsync_dev.daemon_demo``): the two example jobs run on the short
    schedule against the demo's own slapd, ``idsync status`` fills up, and Ctrl-C (SIGINT to the
    whole foreground process group, slapd included) stops it with exit 0 and a last status table."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copytree(REPO / "jobs.d", root / "jobs.d")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDSYNC_", "NOTIFY_", "WATCHDOG_"))}
    env.update(IDSYNC_PROJECT=str(root), IDSYNC_DEMO_EVERY="2", IDSYNC_LOG__FORMAT="json",
               PYTHONPATH=str(REPO / "devtools"))
    out = (tmp_path / "demo.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "idsync_dev.daemon_demo"], stdout=out, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )
    demo = root / "state" / "demo"  # the demo's own project, wiped at each start
    try:

        def both_ran() -> bool:
            done = _idsync(demo, env, "status", "--json", "--limit", "20")
            runs = json.loads(done.stdout) if done.returncode == 0 else []
            return {r["job"] for r in runs if r["state"] == "SUCCESS"} >= {
                "sync-active-ldap-users",
                "sync-inactive-ldap-users",
            }

        _wait(both_ran, 30, "both example jobs to run")
        # The seeds' curl, against the demo's API (its port is in the printed curl line).
        url = re.search(r"'(http://127\.0\.0\.1:\d+/openidm/[^']+)'", (tmp_path / "demo.out").read_text()).group(1)
        seed_headers = {"X-OpenIDM-Username": "openidm-admin", "X-OpenIDM-Password": "openidm-admin"}
        ids = httpx.get(url, headers=seed_headers, timeout=10)
        assert ids.status_code == 200 and ids.json()["resultCount"] == 20, ids.text
        assert httpx.get(url, timeout=10).status_code == 401
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
    text = (tmp_path / "demo.out").read_text(encoding="utf-8")
    assert code == 0, text
    lines = text.splitlines()
    exits = [i for i, line in enumerate(lines) if line.startswith("{") and json.loads(line)["event"] == "daemon.exit"]
    assert len(exits) == 1 and json.loads(lines[exits[0]])["code"] == 0, text
    table = "\n".join(lines[exits[0] + 1 :])
    assert "systemLdap" in table and "SUCCESS" in table, text  # the last status listing (table or blocks)
    status = json.loads((demo / "state" / "status.json").read_text(encoding="utf-8"))
    assert status["daemon"]["state"] == "stopped"
    inactive = _idsync(demo, env, "managed", "query", "user", "--filter", 'accountStatus eq "inactive"')
    assert sorted(u["userName"] for u in json.loads(inactive.stdout)) == ["user.3", "user.7"]


def _user(root: Path, env: dict[str, str], uid: str) -> dict[str, Any]:
    """User ``uid`` with its default fields and its ``roles`` (which a read shows only when named)."""
    done = _idsync(root, env, "managed", "query", "user", "--filter", f'userName eq "{uid}"', "--fields", "*,roles")
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
    resources = Resources(project, store)
    resources.open("managed/role").create({"_id": "approvers", "name": "approvers"})
    resources.open("managed/user").update(user_id, {"roles": [{"_ref": "managed/role/approvers"}],
                                                    "effectiveRoles": ["managed/role/approvers"]})


def _lock_user(slapd: Any, dn: str, *, locked: bool = True) -> None:
    import ldap3

    conn = ldap3.Connection(
        ldap3.Server(f"ldap://127.0.0.1:{slapd.port}"),
        slapd.admin_dn,
        slapd.admin_password,
        auto_bind=True,
    )
    try:
        change = (ldap3.MODIFY_REPLACE, ["000001010000Z"]) if locked else (ldap3.MODIFY_DELETE, [])
        assert conn.modify(dn, {"pwdAccountLockedTime": [change]}), conn.result
    finally:
        conn.unbind()


def _more_users(n: int, base: str) -> str:
    from idsync_dev.sample_users import iter_sample_users_ldif

    # Skip the two named users the fixture already loaded.
    return "".join(list(iter_sample_users_ldif(n + 22, base))[22:])


def test_reload_with_a_broken_scim_provisioner_keeps_the_previous_one(tmp_path: Path) -> None:
    """SIGHUP after the SCIM provisioner became invalid (an endpoint that is not a URL)
    logs ``config.invalid`` naming the file and the key, and the job goes on succeeding
    on the previous configuration."""
    root = scim_project(tmp_path, store_url("sqlite", tmp_path))
    (root / "jobs.d").mkdir()
    (root / "jobs.d" / "every2.toml").write_text(f'schedule = "*/2 * * * * ?"\nmappings = ["{USERS_IN}"]\n',
                                                 encoding="utf-8")
    provider = running()
    server = next(provider)
    server.add_user("bjensen", name={"givenName": "Barbara", "familyName": "Jensen"})
    env = {**os.environ, **scim_env(server)}
    daemon = _Daemon(root, env)

    def successes() -> int:
        done = _idsync(root, env, "status", "--json", "--limit", "100")
        return sum(r["state"] == "SUCCESS" for r in json.loads(done.stdout)) if done.returncode == 0 else 0

    try:
        _wait(successes, 20, "a first run")
        provisioner = root / "conf" / "provisioner.openicf-scim.json"
        config = json.loads(provisioner.read_text(encoding="utf-8"))
        config["configurationProperties"]["SCIMEndpoint"] = 5
        provisioner.write_text(json.dumps(config), encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        invalid = _wait(lambda: [e for e in daemon.events() if e.get("event") == "config.invalid"], 10,
                        "the reload error")
        assert (invalid[0]["file"], invalid[0]["key"]) == (str(provisioner), "configurationProperties.SCIMEndpoint")
        before = successes()
        _wait(lambda: successes() > before, 15, "a successful run on the kept configuration")
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
        provider.close()
