"""Locks and run recovery in the store (``store/locks.py``, ``RunStore.fail_abandoned``):
who may break whose lock, what a run whose process is gone is recorded as, and
``idsync unlock``. Against real stores; the end-to-end cases (``kill -9`` of a
recon, a database outage during a job, signals) are in test_recon_interruptions.py."""

from __future__ import annotations

import datetime as dt
import os
import pty
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from dbs import BACKENDS, store_url
from idsync.daemon.recovery import recover_interrupted
from idsync.errors import PeerUnavailable, RunLocked
from idsync.store.database import Store, utcnow
from idsync.store.locks import Locks, _start_ticks
from idsync.store.runs import RunStore, owner_id
from idsync.store.tables import claims, deferred, locks, recon_runs
from pg_outage import outage
from sqlalchemy import insert, select, update

IDSYNC = str(Path(sys.executable).parent / "idsync")
HOST = socket.gethostname()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(store_url(request.param, tmp_path))
    yield s
    s.close()


def _dead_process() -> tuple[int, int | None]:
    """The pid and start time of a process of this host that has ended."""
    proc = subprocess.Popen(["sleep", "30"])
    ticks = _start_ticks(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, ticks


def _active_run(store: Store, run_id: str, mapping: str = "m", *, created: int = 0,
                heartbeat: dt.datetime | None = None) -> None:
    """An ACTIVE run that committed ``created`` creates, with a claim and a deferred delete."""
    runs = RunStore(store)
    runs.start(run_id, mapping, job=None, dry_run=False, summary={})
    runs.progress(run_id, "ACTIVE_RECONCILING_SOURCE", {"changes": {"created": created}})
    with store.begin() as conn:
        runs.claim(conn, run_id, ["t1", "t2"])
        runs.defer(conn, run_id, 0, [{"action": "DELETE", "target_id": "t3"}])
        if heartbeat is not None:
            conn.execute(update(recon_runs).where(recon_runs.c.id == run_id).values(heartbeat=heartbeat))


def _hold(store: Store, name: str, owner: str, expires: dt.timedelta = dt.timedelta(minutes=10)) -> None:
    """A lock row as another process would have left it."""
    now = utcnow()
    with store.begin() as conn:
        conn.execute(insert(locks).values(name=name, owner=owner, acquired=now, expires=now + expires))


def _leftovers(store: Store, run_id: str) -> int:
    with store.engine.connect() as conn:
        return len(conn.execute(select(claims.c.target_id).where(claims.c.run_id == run_id)).all()) + len(
            conn.execute(select(deferred.c.seq).where(deferred.c.run_id == run_id)).all())


def test_lock_of_a_dead_local_process_is_broken_at_once(store: Store) -> None:
    """The lock of a process of this host that no longer exists (``kill -9``) is broken by the next
    acquire, not 10 minutes later; its run is FAILED naming the pid and host, keeps the counts its
    pages committed, and loses its claims and deferred deletes."""
    pid, ticks = _dead_process()
    _active_run(store, "r1", created=3000)
    _hold(store, "recon:m", f"{HOST}:{pid}@{ticks}:r1")
    RunStore(store).acquire("recon:m", f"{owner_id()}:r2")
    run = RunStore(store).get("r1")
    assert run is not None and run["state"] == "FAILED" and run["ended"] is not None
    assert run["message"] == f"interrupted: owner process {pid} on {HOST} is gone"
    assert run["summary"]["changes"]["created"] == 3000
    assert _leftovers(store, "r1") == 0
    assert RunStore(store).lock_holder("recon:m") == f"{owner_id()}:r2"


def test_a_reused_pid_does_not_keep_a_dead_holder_alive(store: Store) -> None:
    """A pid that now belongs to another process (its start time differs from the one recorded)
    does not keep the dead holder's lock; the same pid with the recorded start time does."""
    with subprocess.Popen(["sleep", "30"]) as proc:
        try:
            ticks = _start_ticks(proc.pid)
            assert ticks is not None
            _hold(store, "job:j", f"{HOST}:{proc.pid}@{ticks}:x")
            with pytest.raises(RunLocked, match=f"held by process {proc.pid} on {HOST}"):
                Locks(store).acquire("job:j", "me:1:y")
            _hold(store, "job:k", f"{HOST}:{proc.pid}@{ticks - 1}:x")  # the pid's earlier owner
            Locks(store).acquire("job:k", "me:1:y")
        finally:
            proc.kill()


def test_expired_lock_of_another_host_is_taken_over(store: Store) -> None:
    """A lock of another host past its expiry (its holder stopped refreshing it) is taken over,
    and the run it guarded is FAILED; within its expiry it is refused."""
    _active_run(store, "r1")
    _hold(store, "recon:m", "otherhost:4242@77:r1", expires=dt.timedelta(seconds=-1))
    _hold(store, "recon:n", "otherhost:4242@77:r9")
    RunStore(store).acquire("recon:m", "me:1:r2")
    run = RunStore(store).get("r1")
    assert run is not None and run["state"] == "FAILED"
    assert run["message"] == "interrupted: owner process 4242 on otherhost stopped refreshing its lock"
    with pytest.raises(RunLocked, match="held by process 4242 on otherhost"):
        RunStore(store).acquire("recon:n", "me:1:r3")


def test_a_refreshed_lock_is_not_taken_over(store: Store) -> None:
    """``refresh`` by its holder pushes the expiry forward, so a lock about to expire stays
    held; a refresh by anyone else changes nothing."""
    runs = RunStore(store)
    runs.acquire("recon:m", "otherhost:1:r1", ttl=dt.timedelta(seconds=-1))  # as good as expired
    runs.refresh("recon:m", "otherhost:2:intruder")
    runs.acquire("recon:x", "otherhost:1:r1", ttl=dt.timedelta(seconds=-1))
    runs.refresh("recon:x", "otherhost:1:r1")
    runs.acquire("recon:m", "me:1:r2")  # the intruder's refresh kept nothing
    with pytest.raises(RunLocked):
        runs.acquire("recon:x", "me:1:r3")
    holder = Locks(store).holder("recon:x")
    assert holder is not None and holder.expires > utcnow() + dt.timedelta(minutes=9)


def test_a_lock_in_use_by_this_process_is_not_broken_by_it(store: Store) -> None:
    """Within the process holding it (the daemon and the API share one), a lock in use stays
    held even past its expiry, as after a store outage that kept it from being refreshed."""
    RunStore(store).acquire("recon:m", f"{owner_id()}:r1", ttl=dt.timedelta(seconds=-1))
    with pytest.raises(RunLocked, match=f"held by process {os.getpid()} on {HOST}"):
        RunStore(store).acquire("recon:m", f"{owner_id()}:r2")
    RunStore(store).release("recon:m", f"{owner_id()}:r1")


def test_fail_abandoned_fails_silent_runs_past_the_cutoff_only(store: Store) -> None:
    """A run ACTIVE with no heartbeat for longer than the cutoff is FAILED (claims and deferred
    rows dropped, counts kept); one whose heartbeat is within the cutoff stays ACTIVE, and so
    does a silent one whose page's progress just renewed its heartbeat."""
    now = utcnow()
    _active_run(store, "old", created=7, heartbeat=now - dt.timedelta(minutes=11))
    _active_run(store, "recent", heartbeat=now - dt.timedelta(minutes=9))
    _active_run(store, "revived", heartbeat=now - dt.timedelta(minutes=11))
    RunStore(store).progress("revived", "ACTIVE_RECONCILING_SOURCE", {})
    assert RunStore(store).fail_abandoned() == ["old"]
    revived = RunStore(store).get("revived")
    assert revived is not None and revived["state"] == "ACTIVE"
    old, recent = RunStore(store).get("old"), RunStore(store).get("recent")
    assert old is not None and old["state"] == "FAILED" and "no sign of life for 10 minutes" in old["message"]
    assert old["summary"]["changes"]["created"] == 7 and _leftovers(store, "old") == 0
    assert recent is not None and recent["state"] == "ACTIVE" and _leftovers(store, "recent") == 3
    assert RunStore(store).fail_abandoned(dt.timedelta(minutes=5)) == ["recent"]  # revived is within 5 minutes
    recent = RunStore(store).get("recent")
    assert recent is not None and recent["state"] == "FAILED"


def test_daemon_start_drops_claims_and_deferred_rows_of_ended_runs(store: Store) -> None:
    """At daemon start, claims and deferred deletes of runs that are no longer ACTIVE (an older
    version failed them without) are dropped; those of a live run are kept, and a one-object
    push in progress elsewhere (it takes no lock) is not taken for an interrupted recon."""
    _active_run(store, "ended")
    with store.begin() as conn:
        conn.execute(update(recon_runs).where(recon_runs.c.id == "ended").values(state="FAILED"))
    _active_run(store, "live")
    _hold(store, "recon:m", "otherhost:1@1:live")
    RunStore(store).start("push", "m", job="implicit", dry_run=False, summary={})  # pushes take no lock
    assert recover_interrupted(store) == []
    assert _leftovers(store, "ended") == 0 and _leftovers(store, "live") == 3
    push = RunStore(store).get("push")
    assert push is not None and push["state"] == "ACTIVE"
    live = RunStore(store).get("live")
    assert live is not None and live["state"] == "ACTIVE"


def test_daemon_start_leaves_a_run_another_node_starts_meanwhile(store: Store,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon starting reads the runs and the locks to find the interrupted ones; a run
    another process starts while it reads (its lock, then its row, as a recon takes them)
    is not taken for one whose lock is gone. Here a run starts right after each read of the
    locks: read before the runs, the last one would have been failed as interrupted."""
    holders = Locks.holders
    started: list[str] = []

    def read_then_start(self: Locks) -> dict[str, object]:
        found = holders(self)
        run_id = f"r{len(started)}"
        Locks(store).acquire(f"recon:m{run_id}", f"{owner_id()}:{run_id}")
        RunStore(store).start(run_id, f"m{run_id}", job="j", dry_run=False, summary={})
        started.append(run_id)
        return found  # type: ignore[return-value]

    monkeypatch.setattr(Locks, "holders", read_then_start)
    assert recover_interrupted(store) == []
    monkeypatch.undo()
    assert started and all((RunStore(store).get(r) or {}).get("state") == "ACTIVE" for r in started), [
        (r, (RunStore(store).get(r) or {}).get("message")) for r in started]


def test_daemon_start_ends_the_lockless_runs_of_a_process_gone(store: Store) -> None:
    """At daemon start, a one-object push (and an onward run) left ACTIVE by a process of
    this host that has ended is recorded FAILED as interrupted, naming the process, and
    logged ``run.interrupted`` at once (not after ``LOCK_TTL`` of silence); those of a
    live process, of another host, and of this process stay ACTIVE."""
    pid, ticks = _dead_process()
    live = subprocess.Popen(["sleep", "30"])
    runs = RunStore(store)
    try:
        owners = {"dead": f"{HOST}:{pid}@{ticks}", "dead-onward": f"{HOST}:{pid}@{ticks}",
                  "live": f"{HOST}:{live.pid}@{_start_ticks(live.pid)}", "elsewhere": "otherhost:1@1"}
        for run_id, owner in owners.items():
            runs.start(run_id, "m", job="retry" if run_id == "dead-onward" else "implicit", dry_run=False,
                       summary={}, lockless=True)
            with store.begin() as conn:
                conn.execute(update(recon_runs).where(recon_runs.c.id == run_id).values(owner=owner))
        runs.start("mine", "m", job="implicit", dry_run=False, summary={}, lockless=True)
        with structlog.testing.capture_logs() as logs:
            ended = recover_interrupted(store)
        states = {run_id: runs.get(run_id) for run_id in (*owners, "mine")}
    finally:
        live.kill()
        live.wait()
    assert sorted(ended) == ["dead", "dead-onward"]
    assert sorted(e["run_id"] for e in logs if e["event"] == "run.interrupted") == ["dead", "dead-onward"]
    for run_id, record in states.items():
        assert record is not None
        if run_id.startswith("dead"):
            assert (record["state"], record["message"]) == ("FAILED", f"interrupted: owner process {pid} on {HOST} "
                                                                      "is gone")
        else:
            assert record["state"] == "ACTIVE", run_id


@pytest.mark.postgresql
def test_a_release_that_failed_while_the_store_was_down_is_not_held_against_this_process(tmp_path: Path) -> None:
    """When releasing fails because the database is unreachable (connections cut server-side),
    the next acquire in the same process, once the database is back, takes the lock at once and
    records the run whose end could not be written FAILED; it also retries the other releases
    that failed, so no lock of this process is left behind for other processes to wait on."""
    url = store_url("postgresql", tmp_path)
    store = Store.open(url)
    runs = RunStore(store)
    owner = f"{owner_id()}:r1"
    runs.acquire("recon:m", owner)
    runs.acquire("job:j", f"{owner_id()}:jr")
    _active_run(store, "r1", created=5)
    with outage(url):
        with pytest.raises(PeerUnavailable):
            runs.release("recon:m", owner)
        with pytest.raises(PeerUnavailable):
            runs.release("job:j", f"{owner_id()}:jr")
    assert runs.lock_holder("recon:m") == owner and runs.lock_holder("job:j") is not None
    runs.acquire("recon:m", f"{owner_id()}:r2")
    assert runs.lock_holder("job:j") is None
    run = runs.get("r1")
    assert run is not None and run["state"] == "FAILED" and "could not record the end" in run["message"]
    assert run["summary"]["changes"]["created"] == 5
    store.close()


# -- idsync unlock ------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "idsync.toml").write_text('state_dir = "state"\n', encoding="utf-8")
    return tmp_path


def _project_store(project: Path) -> Store:
    return Store.open(f"sqlite:///{project / 'state' / 'idsync.db'}")


def _unlock(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IDSYNC, "-p", str(project), "unlock", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_unlock_removes_a_lock_of_a_gone_host_with_yes_only(project: Path) -> None:
    """``idsync unlock`` off a terminal refuses (64) without ``--yes`` and leaves the lock; with
    ``--yes`` it removes the lock of the other host and records its run FAILED."""
    store = _project_store(project)
    _active_run(store, "r1", mapping="people")
    _hold(store, "recon:people", "deadhost:77@5:r1")
    refused = _unlock(project, "people")
    assert refused.returncode == os.EX_USAGE, refused
    assert "recon:people is held by process 77 on deadhost, run r1" in refused.stdout
    assert "--yes" in refused.stderr
    assert RunStore(store).lock_holder("recon:people") == "deadhost:77@5:r1"
    done = _unlock(project, "people", "--yes")
    assert done.returncode == 0, done
    assert "recon:people: lock removed; run r1 recorded FAILED" in done.stdout
    assert RunStore(store).lock_holder("recon:people") is None
    run = RunStore(store).get("r1")
    assert run is not None and run["state"] == "FAILED" and "removed by idsync unlock" in run["message"]
    assert _unlock(project, "people").stdout.startswith("people: not locked")


def test_unlock_asks_on_a_terminal(project: Path) -> None:
    """On a terminal ``idsync unlock`` asks y/N: anything but yes leaves the lock (exit 1), y removes it."""
    store = _project_store(project)
    _hold(store, "job:nightly", "deadhost:77@5:jr")
    for answer, code, holder in (("n", 1, "deadhost:77@5:jr"), ("y", 0, None)):
        leader, follower = pty.openpty()
        proc = subprocess.Popen([IDSYNC, "-p", str(project), "unlock", "nightly"], stdin=follower,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(follower)
        os.write(leader, f"{answer}\n".encode())
        out, err = proc.communicate(timeout=60)
        os.close(leader)
        assert proc.returncode == code, out + err
        assert RunStore(store).lock_holder("job:nightly") == holder


def test_unlock_refuses_the_lock_of_a_live_local_process(project: Path) -> None:
    """A lock held by a process of this host that runs is not removed, even with ``--yes`` (75);
    one of a dead process of this host is removed without asking."""
    store = _project_store(project)
    _hold(store, "job:live", f"{owner_id()}:jr")
    pid, ticks = _dead_process()
    _hold(store, "job:dead", f"{HOST}:{pid}@{ticks}:jr")
    live = _unlock(project, "job:live", "--yes")
    assert live.returncode == os.EX_TEMPFAIL and f"kill {os.getpid()}" in live.stderr, live
    assert RunStore(store).lock_holder("job:live") is not None
    started = time.monotonic()
    dead = _unlock(project, "dead")
    assert dead.returncode == 0 and "job:dead: lock removed" in dead.stdout, dead
    assert time.monotonic() - started < 30
