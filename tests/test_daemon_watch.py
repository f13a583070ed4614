"""The daemon's watch on its configuration files (``daemon/watch.py``, ``config/on_disk.py``):
an edited, added or removed file is reloaded as SIGHUP would, once the files are quiet;
``[daemon] watch_config = false`` leaves it to SIGHUP; ``idsync jobs`` and ``idsync status``
say when the files differ from what the running daemon loaded. The daemon runs as
``idsync run`` in a subprocess, observed through its log, the store and the status file."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from idsync.config.on_disk import changed_files, config_files
from idsync.daemon.watch import POLL, QUIET, ConfigWatch
from idsync.store.database import Store
from idsync.store.runs import RunStore
from waiting import wait_for

IDSYNC = Path(sys.executable).parent / "idsync"
_YEARLY = '"0 0 1 1 *"'


# -- which files, and when a change is ripe for a reload ------------------------------------


def test_the_files_a_load_reads_are_watched_and_nothing_else(tmp_path: Path) -> None:
    """``conf/*.json``, ``conf/idsync.toml``, ``jobs.d/*.toml`` and ``script/`` at any depth
    are watched; editors' backup and swap files, hidden names and other endings are not. An
    edit of the same size, a file renamed over another, an added and a removed file are told."""
    for name in ("conf/sync.json", "conf/idsync.toml", "conf/schedule-live.json", "jobs.d/a.toml",
                 "script/cn.js", "script/lib/util.js", "conf/sync.json~", "conf/.sync.json.swp",
                 "jobs.d/#a.toml#", "conf/boot/boot.properties", "jobs.d/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    before = config_files(tmp_path)
    assert list(before) == ["conf/idsync.toml", "conf/schedule-live.json", "conf/sync.json", "jobs.d/a.toml",
                            "script/cn.js", "script/lib/util.js"]
    (tmp_path / "conf/sync.json").write_text("[]")  # same size
    os.utime(tmp_path / "conf/sync.json", ns=(1, 1))  # an old time, as `cp -p` leaves
    (tmp_path / "jobs.d/b.toml").write_text("x")
    (tmp_path / "script/lib/util.js").unlink()
    (tmp_path / "new.js").write_text("{}")
    os.replace(tmp_path / "new.js", tmp_path / "script/cn.js")  # an editor's save: a new inode
    (tmp_path / "conf/sync.json~").write_text("backup")
    assert changed_files(before, config_files(tmp_path)) == ["conf/sync.json", "jobs.d/b.toml", "script/cn.js",
                                                             "script/lib/util.js"]


def test_scripts_under_a_linked_folder_are_watched_and_a_loop_is_not_followed(tmp_path: Path) -> None:
    """``script/lib -> ../shared/lib`` (a Kubernetes ConfigMap's nested keys make such links):
    the scripts a load reads through the link are watched; a link back up the tree is
    followed once, not round and round."""
    (tmp_path / "shared/lib").mkdir(parents=True)
    (tmp_path / "shared/lib/util.js").write_text("1")
    (tmp_path / "script").mkdir()
    (tmp_path / "script/lib").symlink_to(tmp_path / "shared/lib")
    (tmp_path / "shared/lib/again").symlink_to(tmp_path / "script")
    before = config_files(tmp_path)
    assert list(before) == ["script/lib/util.js"]
    (tmp_path / "shared/lib/util.js").write_text("22")
    assert changed_files(before, config_files(tmp_path)) == ["script/lib/util.js"]


def test_a_change_is_reloaded_once_the_files_are_quiet() -> None:
    """Files as loaded call for nothing; changed files call for a reload only once they have
    stayed as they are for ``QUIET`` seconds, every write meanwhile starting the wait again;
    a load (SIGHUP's, or one that failed) takes the files as they are, and a change undone
    before it settled calls for nothing."""
    watch = ConfigWatch(Path("/nonexistent"))
    watch.files = {"jobs.d/a.toml": "1:10:7"}
    assert watch.poll(0.0, {"jobs.d/a.toml": "1:10:7"}) == []
    first = {"jobs.d/a.toml": "2:5:7"}
    assert watch.poll(10.0, first) == [] and watch.settling
    second = {"jobs.d/a.toml": "3:12:7", "jobs.d/b.toml": "3:1:8"}
    assert watch.poll(10.5, second) == []  # written again: the wait starts over
    assert watch.poll(10.5 + QUIET / 2, second) == []
    assert watch.poll(10.5 + QUIET, second) == ["jobs.d/a.toml", "jobs.d/b.toml"]
    watch.files = second  # what ``loading()`` takes at the reload
    assert watch.poll(20.0, second) == [] and not watch.settling
    watch.poll(30.0, {"jobs.d/a.toml": "9:9:9"})
    assert watch.poll(30.0 + QUIET, second) == [] and not watch.settling  # undone in time


# -- the real daemon --------------------------------------------------------------------------


class _Daemon:
    """``idsync run`` in a subprocess, its JSON log lines in a file, systemd's notification
    socket stood in for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_path = root / "daemon.log"
        self._log = self.log_path.open("ab")
        self.notices: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(root / "notify.sock"))
        self._sock.setblocking(False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDSYNC_", "NOTIFY_", "WATCHDOG_"))}
        env.update(NOTIFY_SOCKET=str(root / "notify.sock"), PYTHONFAULTHANDLER="1")
        self.proc = subprocess.Popen([str(IDSYNC), "-p", str(root), "--log-format", "json", "run"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: self.events("daemon.start") and self.readies(), 30, "the daemon's READY=1")

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [e for e in (json.loads(line) for line in lines if line.startswith("{")) if e.get("event") == name]

    def readies(self) -> int:
        while True:
            try:
                self.notices.append(self._sock.recv(4096).decode())
            except BlockingIOError:
                return sum(m.startswith("READY=1") for m in self.notices)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._sock.close()
        return self.proc.returncode


def _project(root: Path, *, watch: bool | None = None) -> Path:
    """A project with one mapping of the store's own users, a yearly job ``tick`` and a
    PingIDM liveSync schedule of ``managed/user``, disabled, as OpenIDM's samples ship it."""
    (root / "conf").mkdir(parents=True)
    (root / "jobs.d").mkdir()
    mapping = {"name": "m1", "source": "managed/user", "target": "managed/role",
               "properties": [{"source": "userName", "target": "name"}]}
    (root / "conf" / "sync.json").write_text(json.dumps({"mappings": [mapping]}), encoding="utf-8")
    (root / "conf" / "idsync.toml").write_text('state_dir = "state"\n' + (
        "" if watch is None else f"[daemon]\nwatch_config = {'true' if watch else 'false'}\n"), encoding="utf-8")
    _schedule(root, enabled=False)
    (root / "jobs.d" / "tick.toml").write_text(f'schedule = {_YEARLY}\nmappings = ["m1"]\n', encoding="utf-8")
    Store.open(f"sqlite:///{root / 'state' / 'idsync.db'}").engine.dispose()
    return root


def _schedule(root: Path, *, enabled: bool) -> None:
    (root / "conf" / "schedule-liveSync.json").write_text(json.dumps({
        "enabled": enabled, "type": "cron", "schedule": "*/1 * * * * ?", "persisted": True,
        "invokeService": "provisioner", "invokeContext": {"action": "liveSync", "source": "managed/user"},
    }, indent=4), encoding="utf-8")


# How long a wait for the daemon may last: only a deadline for a daemon that never gets
# there. How soon it noticed a change is judged by its own log's time (``_noticed_in_time``).
_DEADLINE = 60


def _noticed_in_time(changed: dict[str, Any], *written: Path) -> None:
    """``daemon.config_changed`` was logged within a poll, the looks while the files settle
    and the quiet time after the last write (the files' mtime), with as much again for a
    loaded machine: by the daemon's log time, not the test's wait, which also holds the
    test's own delays and the reload's work."""
    late = dt.datetime.fromisoformat(changed["timestamp"]).timestamp() - max(p.stat().st_mtime for p in written)
    assert 0 <= late <= 2 * (POLL + 2 * QUIET), f"noticed {late:.1f} s after the write"


def _jobs_run(root: Path) -> set[str]:
    store = Store.open(f"sqlite:///{root / 'state' / 'idsync.db'}")
    try:
        return {r["job"] for r in RunStore(store).recent(100)}
    finally:
        store.close()


def _status(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / "state" / "status.json").read_text(encoding="utf-8")))


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[_Daemon]]:
    """The daemons a test starts; each is stopped (SIGTERM) at the end."""
    daemons: list[_Daemon] = []
    yield daemons
    for d in daemons:
        d.close()


def test_an_edited_schedule_and_job_file_run_without_a_signal(tmp_path: Path, started: list[_Daemon]) -> None:
    """As OpenIDM's samples say to: ``"enabled": true`` written into ``schedule-liveSync.json``
    and a job file given a schedule that fires, with no SIGHUP, are loaded within seconds
    (``daemon.config_changed`` naming both files, then the reload's own events and READY=1
    again) and both jobs run; the status file records the load."""
    root = _project(tmp_path / "project")
    daemon = _Daemon(root)
    started.append(daemon)
    assert daemon.events("daemon.start")[0]["watch_config"] is True
    first_load = _status(root)["daemon"]["configLoaded"]
    _schedule(root, enabled=True)
    (root / "jobs.d" / "tick.toml").write_text('schedule = "*/1 * * * * ?"\nmappings = ["m1"]\n', encoding="utf-8")
    changed = wait_for(lambda: daemon.events("daemon.config_changed"), _DEADLINE, "the change noticed")
    assert changed[0]["files"] == ["conf/schedule-liveSync.json", "jobs.d/tick.toml"]
    _noticed_in_time(changed[0], root / "conf" / "schedule-liveSync.json", root / "jobs.d" / "tick.toml")
    (reloaded,) = wait_for(lambda: daemon.events("daemon.reloaded"), _DEADLINE, "the reload")
    assert sorted(reloaded["changed"]) == ["schedule-liveSync", "tick"]
    assert [e["trigger"] for e in daemon.events("daemon.reload")] == ["files"]
    wait_for(lambda: _jobs_run(root) >= {"schedule-liveSync", "tick"}, 30, "both jobs to run")
    assert daemon.readies() == 2
    status = _status(root)["daemon"]
    assert status["configLoaded"] > first_load and status["configFiles"]["jobs.d/tick.toml"]
    assert status["watchConfig"] is True and status["configErrors"] == []
    assert daemon.close() == 0
    assert len(daemon.events("daemon.config_changed")) == 1  # one reload for the two files


def test_a_broken_edit_is_reported_and_the_old_job_kept_until_fixed(tmp_path: Path,
                                                                   started: list[_Daemon]) -> None:
    """A job file edited into one that does not parse is reloaded by itself like a SIGHUP's:
    ``config.invalid`` naming the file and key, ``daemon.reload_failed``, READY=1 again, the
    previous version of the job kept (its schedule in the status file, among its
    configuration errors); a second edit fixing it is applied and clears the errors."""
    root = _project(tmp_path / "project")
    daemon = _Daemon(root)
    started.append(daemon)
    job = root / "jobs.d" / "tick.toml"
    job.write_text('schedule = "now and then"\nmappings = ["m1"]\n', encoding="utf-8")
    (invalid,) = wait_for(lambda: daemon.events("config.invalid"), _DEADLINE, "the broken file reported")
    _noticed_in_time(daemon.events("daemon.config_changed")[0], job)
    assert (invalid["file"], invalid["key"]) == (str(job), "schedule")
    assert invalid["consequence"] == "kept the previous version of this job"
    wait_for(lambda: daemon.events("daemon.reload_failed") and daemon.readies() == 2, _DEADLINE, "the failed reload")
    wait_for(lambda: _status(root)["daemon"]["configErrors"], _DEADLINE, "the error in the status file")
    assert _status(root)["jobs"]["tick"]["schedule"] == "0 0 1 1 *"
    time.sleep(4)  # no reload again and again of the same broken file
    assert len(daemon.events("daemon.reload")) == 1

    job.write_text('schedule = "*/1 * * * * ?"\nmappings = ["m1"]\n', encoding="utf-8")
    wait_for(lambda: daemon.events("daemon.reloaded"), _DEADLINE, "the fixed file reloaded")
    _noticed_in_time(daemon.events("daemon.config_changed")[1], job)
    wait_for(lambda: not _status(root)["daemon"]["configErrors"], _DEADLINE, "the errors cleared")
    assert _status(root)["jobs"]["tick"]["schedule"] == "*/1 * * * * ?"
    wait_for(lambda: "tick" in _jobs_run(root), 30, "the fixed job to run")


def test_with_watch_config_off_only_sighup_reloads_and_jobs_says_so(tmp_path: Path,
                                                                    started: list[_Daemon]) -> None:
    """``[daemon] watch_config = false``: an edited schedule is not loaded (no reload, the job
    does not run); meanwhile ``idsync jobs`` marks the job and says the running daemon has
    not loaded the change and how to reload it, in text and JSON, and ``idsync status``
    says it too. After SIGHUP the job runs and neither says it any more."""
    root = _project(tmp_path / "project", watch=False)
    daemon = _Daemon(root)
    started.append(daemon)
    assert daemon.events("daemon.start")[0]["watch_config"] is False
    _schedule(root, enabled=True)
    written = time.monotonic()
    shown = run_cli(["-p", str(root), "jobs"], env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown
    assert "the daemon has not loaded the change yet" in shown.stdout
    note = (f"note: the running daemon (pid {daemon.proc.pid}) has not loaded the change yet: "
            "conf/schedule-liveSync.json changed on disk after its last load at ")
    assert note in shown.stderr and "watch_config is off: reload it with `systemctl reload idsync`" in shown.stderr
    as_json = json.loads(run_cli(["-p", str(root), "jobs", "--json"]).stdout)
    assert {j["name"]: j["notLoaded"] for j in as_json["jobs"]} == {"schedule-liveSync": True, "tick": False}
    assert as_json["daemon"]["notLoaded"] == ["conf/schedule-liveSync.json"]
    status = run_cli(["-p", str(root), "status"])
    assert status.returncode == 0 and note in status.stdout, status
    time.sleep(max(0.0, written + 5 - time.monotonic()))  # more than a poll and the quiet time after it
    assert not daemon.events("daemon.config_changed") and not daemon.events("daemon.reload")
    assert "schedule-liveSync" not in _jobs_run(root)

    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("daemon.reloaded"), _DEADLINE, "the SIGHUP reload")
    wait_for(lambda: "schedule-liveSync" in _jobs_run(root), 30, "the liveSync job to run")
    wait_for(lambda: "has not loaded" not in run_cli(["-p", str(root), "jobs"]).stderr, _DEADLINE, "jobs to agree")
    assert json.loads(run_cli(["-p", str(root), "jobs", "--json"]).stdout)["daemon"] is None


def test_an_idle_daemon_watching_many_files_costs_next_to_nothing(tmp_path: Path,
                                                                  started: list[_Daemon]) -> None:
    """Idle, with 500 scripts under ``script/`` to look at every two seconds, the daemon uses
    well under 2% of a core (no busy loop), and still notices a change after that."""
    root = _project(tmp_path / "project")
    for i in range(500):
        path = root / "script" / f"d{i % 10}" / f"s{i}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("source;\n", encoding="utf-8")
    daemon = _Daemon(root)
    started.append(daemon)
    time.sleep(2)  # past the start's own work
    cpu, wall = daemon.cpu_seconds(), time.monotonic()
    time.sleep(3 * POLL)  # three looks at the files
    share = (daemon.cpu_seconds() - cpu) / (time.monotonic() - wall)
    assert share < 0.02, f"{share:.1%} of a core while idle"
    (root / "script" / "d3" / "s3.js").write_text("other;\n", encoding="utf-8")
    changed = wait_for(lambda: daemon.events("daemon.config_changed"), _DEADLINE, "the change noticed")
    assert changed[0]["files"] == ["script/d3/s3.js"]
    _noticed_in_time(changed[0], root / "script" / "d3" / "s3.js")
