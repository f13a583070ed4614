"""A heavy recon's source phase shared with worker processes on this machine
(``[recon] workers``, ``managed/workers.py``), on a SQLite store."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runner import IDSYNC, run_cli
from cluster_env import (
    Gate,
    add_ldap_livesync,
    add_managed_users,
    assert_each_account_created_once,
    cluster_project,
    gate_pace,
    gated,
    ldap_people,
    select_rows,
)
from idsync.config.project import load_project
from idsync.managed.workers import _JOIN, LocalWorkers
from idsync.resource import WriteOp
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.partitions import Partitions
from idsync.store.runs import RunStore
from idsync.sync.partitions import SEQ_SPAN, IdSample, cut
from idsync_dev.onward import add_onward_csv
from idsync_dev.slapd import Slapd
from sqlalchemy import text
from waiting import wait_for


# A slow mapping's transform takes 100 ms of the interpreter per object until the test opens
# the project's gate (``cluster_env.Gate``), none after: a run waits for its worker (a new
# interpreter, slow to start on a loaded machine) to take a partition, or for the test to
# kill it in the middle of one, rather than racing it; a quiet machine is not held up.
def _project(root: Path, *, workers: int, slow: bool = True, closed_ms: int = 100,
             open_ms: int = 0) -> tuple[Path, str]:
    url = f"sqlite:///{root / 'state' / 'idsync.db'}"
    project = cluster_project(root, url, {"big": "@yearly"},
                              mapping={"properties": gated(closed_ms, open_ms)} if slow else None,
                              job_extra="page_size = 20\n", enabled=False)
    with (project / "conf" / "idsync.toml").open("a", encoding="utf-8") as toml:
        toml.write(f"[recon]\nworkers = {workers}\nmin_partition_size = 50\n")
    return project, url


def _owners(url: str) -> set[str]:
    """The processes that took a partition of a run in the SQLite store ``url``."""
    return {r.owner for r in select_rows(url, "SELECT owner FROM recon_partitions WHERE owner IS NOT NULL")}


def _shared(project: Path, url: str) -> Any:
    """While the block runs, open ``project``'s gate once a second process took a partition."""
    return Gate(project).open_when(lambda: len(_owners(url)) >= 2)


def _outcome(url: str) -> dict[str, Any]:
    audit = Counter((r.run_id, r.action, r.status)
                    for r in select_rows(url, "SELECT run_id, action, status FROM audit"))
    runs = select_rows(url, "SELECT id, state FROM recon_runs ORDER BY started")
    accounts = select_rows(url, "SELECT json_extract(data, '$.name') FROM managed_objects "
                                "WHERE object_type = 'account'")
    return {"accounts": sorted(r[0] for r in accounts),
            "links": select_rows(url, "SELECT count(*) FROM links")[0][0],
            "runs": [(r.state, {k[1:]: v for k, v in audit.items() if k[0] == r.id}) for r in runs]}


def _summaries(url: str) -> list[dict[str, Any]]:
    project_runs = select_rows(url, "SELECT id FROM recon_runs ORDER BY started")
    store = Store.open(url, migrate=False)
    try:
        runs = RunStore(store)
        return [runs.get(r.id)["summary"] for r in project_runs]  # type: ignore[index]
    finally:
        store.close()


def _delete_users(project: Path, names: list[str]) -> None:
    store = Store.open(load_project(project).settings.store_url(), migrate=False)
    try:
        with store.begin() as conn:
            for name in names:
                conn.execute(text("DELETE FROM managed_objects WHERE object_type = 'user' AND "
                                  "json_extract(data, '$.userName') = :n"), {"n": name})
    finally:
        store.close()


def _count_claims(url: str) -> None:
    """Count the claims written into the SQLite store ``url`` from now on, in ``claims_written``."""
    store = Store.open(url, migrate=False)
    try:
        with store.begin() as conn:
            conn.execute(text("CREATE TABLE claims_written (target_id TEXT)"))
            conn.execute(text("CREATE TRIGGER claims_counted AFTER INSERT ON recon_claims "
                              "BEGIN INSERT INTO claims_written VALUES (new.target_id); END"))
    finally:
        store.close()


def test_a_first_load_is_shared_with_a_worker_and_ends_as_one_process_would(tmp_path: Path) -> None:
    """400 users, ``workers = 2``, the job run by hand (``idsync run-job``, as the daemon
    runs it): the first recon (every user a create) splits into four id
    ranges, a worker process takes some of them, and the store ends as a run in one process
    leaves it: the same accounts and links, the same audit counts. The recons after it, with
    every user linked, are not split (a split would not speed up a run that finds little to
    do): unchanged, then 20 users deleted and their 20 accounts deleted once. Only those
    claim their targets: the first found none there when it started."""
    users = 400
    split, split_url = _project(tmp_path / "split", workers=2)
    # The same mapping without the slow transform (it returns the value it is given): the
    # first recon is slowed until the worker, a new interpreter, has taken a range.
    single, single_url = _project(tmp_path / "single", workers=1, slow=False)
    for project in (split, single):
        add_managed_users(project, users)
    _count_claims(split_url)
    for step, deleted in enumerate([[], [], [f"u{i}" for i in range(20)]]):
        if step == 1:
            (split / "conf" / "sync.json").write_text((single / "conf" / "sync.json").read_text())
        for project in (split, single):
            if deleted:
                _delete_users(project, deleted)
            with _shared(split, split_url):
                done = run_cli(["-p", str(project), "run-job", "big"])  # its page size: 20
            assert done.returncode == 0, (step, done.stderr)
        # Into an empty target, no process claims anything: the target phase has nothing to visit.
        claimed = select_rows(split_url, "SELECT count(*) FROM claims_written")[0][0]
        assert (claimed == 0) == (step == 0), (step, claimed)
    ours, theirs = _outcome(split_url), _outcome(single_url)
    assert ours == theirs
    assert len(ours["accounts"]) == users - 20 and ours["links"] == users - 20
    assert ours["runs"][0][1][("CREATE", "SUCCESS")] == users
    assert ours["runs"][2][1][("DELETE", "SUCCESS")] == 20
    first, *later = _summaries(split_url)
    assert [p["state"] for p in first["partitions"]] == ["SUCCESS"] * 4
    assert sum(p["processed"] for p in first["partitions"]) == users
    owners = _owners(split_url)
    assert len(owners) == 2, owners  # this process and the worker
    assert all("partitions" not in s for s in later)
    assert all("partitions" not in s for s in _summaries(single_url))


def test_a_run_that_correlates_is_not_split(tmp_path: Path) -> None:
    """A first load into a target that already holds an object correlates each source (two
    sources in different ranges could otherwise each create the one target they both
    find): it is read by one process, and the existing account is linked, not doubled."""
    project, url = _project(tmp_path / "p", workers=2, slow=False)
    add_managed_users(project, 200)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        accounts = Resources(loaded, store).open("managed/account")
        assert accounts.write_batch([WriteOp("create", values={"name": "u7"})])[0].ok
    finally:
        store.close()
    done = run_cli(["-p", str(project), "recon", "m_big", "--quiet"])
    assert done.returncode == 0, done.stderr
    (summary,) = _summaries(url)
    assert "partitions" not in summary
    assert summary["situationSummary"]["FOUND"] == 1 and summary["changes"]["created"] == 199


def test_an_ldap_first_load_is_split_and_the_next_recon_is_not(tmp_path: Path, slapd: Slapd,
                                                                 ldap_subtree: str) -> None:
    """An LDAP source (entryUUID ids, whose count the directory does not tell): the first
    recon of 240 people splits into four ranges once its id-only read found them (the
    workers start then), and creates each person once; the second, with every person
    linked, reads the directory whole and changes nothing."""
    project, url = _project(tmp_path / "p", workers=2, slow=False)
    add_ldap_livesync(project, slapd, ldap_subtree)
    ldap_people(slapd, ldap_subtree, [f"p{i}" for i in range(240)])
    for _ in range(2):
        done = run_cli(["-p", str(project), "recon", "ldap_person", "--quiet", "--page-size", "20"])
        assert done.returncode == 0, done.stderr
    first, second = _summaries(url)
    assert [p["state"] for p in first["partitions"]] == ["SUCCESS"] * 4
    assert sum(p["processed"] for p in first["partitions"]) == 240
    assert first["changes"]["created"] == 240 and "partitions" not in second
    assert second["changes"]["created"] == 0 and second["changes"]["unchanged"] == 240
    people = select_rows(url, "SELECT count(*), count(DISTINCT data->>'name') FROM managed_objects "
                              "WHERE object_type = 'person'")
    assert people[0] == (240, 240)


def test_a_split_run_s_record_shows_its_progress_while_its_process_reads_a_partition(tmp_path: Path) -> None:
    """400 users in four ranges, ``workers = 2``: while the recon's own process and its worker
    read their first ranges, the run's record (``idsync status``, the API, the status file)
    already counts what their pages committed (before, it said 0 until the recon's process
    had read its range to the end)."""
    project, url = _project(tmp_path / "p", workers=2)
    add_managed_users(project, 400)
    recon = subprocess.Popen([IDSYNC, "-p", str(project), "recon", "m_big", "--quiet", "--page-size", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The gate closed, a range takes 10 s: the record is seen before any range ends.
        shown = wait_for(lambda: _shown_while_read(url), 240, "the run's record counting its partitions' creates")
        Gate(project).open()
        _, err = recon.communicate(timeout=240)
    finally:
        if recon.poll() is None:
            recon.kill()
    assert recon.returncode == 0, err
    assert shown["changes"]["created"] > 0 and shown["partitions"]


def _shown_while_read(url: str) -> dict[str, Any] | None:
    """The summary of the run's record, if it counts creates while no partition has ended yet."""
    try:
        parts = select_rows(url, "SELECT state FROM recon_partitions")
        runs = select_rows(url, "SELECT summary FROM recon_runs")
    except Exception:  # noqa: BLE001 - the tables are being made
        return None
    if not parts or not runs or any(p.state not in ("PENDING", "ACTIVE") for p in parts):
        return None
    summary: dict[str, Any] = json.loads(runs[0].summary)
    return summary if (summary.get("changes") or {}).get("created") else None


def test_a_killed_worker_s_partition_is_read_again(tmp_path: Path) -> None:
    """A worker killed with SIGKILL in the middle of its partition: the run hands the partition
    back and reads it itself; the run ends SUCCESS with one account and one link per user, each
    account created once, and the command leaves no process behind. The run counts every
    create, those of the pages the worker committed before it died included (before, the
    second read counted them as unchanged, and the first read's counts were lost)."""
    users = 400
    project, url = _project(tmp_path / "p", workers=2)
    add_managed_users(project, users)
    recon, busy, err = _kill_the_worker(project, lambda pid: _worker_partition(url, pid),
                                        "a partition read by the worker")
    assert recon.returncode == 0, err
    (summary,) = _summaries(url)
    taken = next(p for p in summary["partitions"] if p["partition"] == busy.part)
    assert taken["attempts"] == 2 and taken["state"] == "SUCCESS"
    assert_each_account_created_once(url, users)
    assert summary["changes"]["created"] == users and summary["progress"]["source"]["existing"]["processed"] == users
    assert "worker_lost" in err
    assert not _children_left(recon.pid)


def test_a_killed_worker_s_deferred_deletes_are_deferred_once(tmp_path: Path) -> None:
    """400 users, 40 of them linked to accounts by a first run, then no longer qualified
    (``UNQUALIFIED``: ``DELETE``): a worker killed once its partition has deferred some of
    their deletes. The partition read again defers them anew in place of the first read's
    (before, its first delete collided with the first read's numbers: the run FAILED on an
    internal error); the run ends SUCCESS, with 360 accounts created and 40 deleted, once each."""
    project, url = _project(tmp_path / "p", workers=2)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    mapping = sync["mappings"][0]
    del mapping["correlationQuery"]  # a run that correlates nothing is split though it links some
    mapping["validSource"] = {"type": "text/javascript", "source": "source.userName.endsWith('7')"}
    sync_file.write_text(json.dumps(sync))
    add_managed_users(project, 400)
    gate = Gate(project)
    gate.open()  # the first run need not be slow
    first = run_cli(["-p", str(project), "recon", "m_big", "--quiet"])
    assert first.returncode == 0, first.stderr
    gate.path.unlink()
    mapping["validSource"]["source"] = "!source.userName.endsWith('7')"
    sync_file.write_text(json.dumps(sync))
    recon, busy, err = _kill_the_worker(project, lambda pid: _worker_deferring(url, pid),
                                        "a worker's partition with deferred deletes")
    assert recon.returncode == 0, err
    _, summary = _summaries(url)
    assert next(p for p in summary["partitions"] if p["partition"] == busy.part)["attempts"] == 2
    assert summary["changes"]["created"] == 360 and summary["changes"]["deleted"] == 40, summary["changes"]
    names = [r[0] for r in select_rows(url, "SELECT json_extract(data, '$.name') FROM managed_objects "
                                            "WHERE object_type = 'account'")]
    assert sorted(names) == sorted(f"u{i}" for i in range(400) if not str(i).endswith("7"))
    deletes = select_rows(url, "SELECT target_id, count(*) FROM audit WHERE action = 'DELETE' GROUP BY target_id")
    assert len(deletes) == 40 and {d[1] for d in deletes} == {1}


def _kill_the_worker(project: Path, busy_partition: Callable[[int], Any],
                     what: str) -> tuple[subprocess.Popen[str], Any, str]:
    """``idsync recon m_big`` with its worker killed (SIGKILL) once ``busy_partition`` of the
    recon's pid finds the partition the worker reads (the project's gate closed until then:
    a range takes 10 s, so the worker is in the middle of one however late it started);
    the ended command, that partition and the command's stderr."""
    recon = subprocess.Popen([IDSYNC, "-p", str(project), "recon", "m_big", "--quiet", "--page-size", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        busy = wait_for(lambda: busy_partition(recon.pid), 240, what)
        os.kill(_pid(busy.owner), signal.SIGKILL)
        Gate(project).open()
        _, err = recon.communicate(timeout=240)
    finally:
        if recon.poll() is None:
            recon.kill()
    return recon, busy, err


def _worker_deferring(url: str, parent: int) -> Any:
    """An ACTIVE partition of a worker (not ``parent``) that has deferred a delete, if any."""
    busy = _worker_partition(url, parent)
    if busy is None:
        return None
    deferred = select_rows(url, f"SELECT count(*) FROM recon_deferred WHERE seq >= {busy.part * SEQ_SPAN} "
                                f"AND seq < {(busy.part + 1) * SEQ_SPAN}")[0][0]
    return busy if deferred else None


@pytest.mark.parametrize("found_by", ["daemon start", "next recon"])
def test_a_split_run_whose_process_died_counts_what_its_partitions_committed(tmp_path: Path, found_by: str) -> None:
    """The recon's process and its worker killed with SIGKILL in the middle of a split first
    load; at the next daemon start (``recover_interrupted``), or when the next ``idsync
    recon`` of the mapping breaks its lock, the run is FAILED and its summary lists its
    partitions and counts what they committed (its creates are its successful CREATE audit
    rows), not the zeros it started with (before, the next recon left them at zero)."""
    from idsync.daemon.recovery import recover_interrupted

    project, url = _project(tmp_path / "p", workers=2)
    add_managed_users(project, 400)
    recon = subprocess.Popen([IDSYNC, "-p", str(project), "recon", "m_big", "--quiet", "--page-size", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        busy = wait_for(lambda: _worker_partition(url, recon.pid), 240, "a partition read by the worker")
        os.kill(_pid(busy.owner), signal.SIGKILL)
        recon.kill()
        recon.communicate(timeout=60)
    finally:
        if recon.poll() is None:
            recon.kill()
    Gate(project).open()  # the next recon need not be slow
    (run_id,) = [r.id for r in select_rows(url, "SELECT id FROM recon_runs")]
    (created,) = select_rows(url, "SELECT count(*) AS n FROM audit WHERE action = 'CREATE' AND status = 'SUCCESS'")
    if found_by == "next recon":
        done = run_cli(["-p", str(project), "recon", "m_big", "--quiet"])
        assert done.returncode == 0, done.stderr
    store = Store.open(url)
    try:
        if found_by == "daemon start":
            assert run_id in recover_interrupted(store)
        run = RunStore(store).get(run_id)
    finally:
        store.close()
    assert run is not None and run["state"] == "FAILED"
    summary = run["summary"]
    assert summary["partitions"] and {p["state"] for p in summary["partitions"]} <= {"SUCCESS", "CANCELED", "ACTIVE",
                                                                                    "PENDING"}
    assert created.n > 0 and summary["changes"]["created"] == created.n, (summary["changes"], created.n)


def test_a_canceled_split_run_stops_its_worker_at_a_page_boundary(tmp_path: Path) -> None:
    """Ctrl-C while a worker reads a range: the command exits 130 within seconds, the run is
    CANCELED with nothing deleted, the worker is gone (it stops at its page boundary), and
    the partitions not read to their end are CANCELED (before, they showed PENDING, as
    if still to be read, for good). The run's summary counts what its partitions committed
    and lists them as they ended (before, a split run that was canceled, or whose partition
    failed, said it had created nothing)."""
    # 25 ms per object until the worker is seen in its range: 50 s of work (37 s before the
    # last range is taken), so the worker takes a range however late it starts; then 10 ms
    # (a page is 0.1 s), the worker's range seconds of work from its end when asked.
    project, url = _project(tmp_path / "p", workers=2, closed_ms=25, open_ms=10)
    add_managed_users(project, 2000)
    recon = subprocess.Popen([IDSYNC, "-p", str(project), "recon", "m_big", "--quiet", "--page-size", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        busy = wait_for(lambda: _worker_partition(url, recon.pid), 240, "a partition read by the worker")
        Gate(project).open()
        recon.send_signal(signal.SIGINT)
        asked = time.monotonic()
        _, err = recon.communicate(timeout=60)
        took = time.monotonic() - asked
    finally:
        if recon.poll() is None:
            recon.kill()
    assert recon.returncode == 130, err
    # The worker stopped by itself at a page boundary, not killed once the run's wait for
    # its workers (_JOIN) was over, nor after reading its range to the end: a bound in the
    # process's own terms, which a loaded machine does not reach as it may a few seconds.
    assert took < _JOIN, took
    (run,) = select_rows(url, "SELECT state FROM recon_runs")
    assert run.state == "CANCELED"
    (cut_short,) = select_rows(url, f"SELECT state FROM recon_partitions WHERE part = {busy.part}")
    assert cut_short.state == "CANCELED", (cut_short, took)
    assert not _children_left(recon.pid)
    parts = Counter(r.state for r in select_rows(url, "SELECT state FROM recon_partitions"))
    assert set(parts) <= {"SUCCESS", "CANCELED"} and parts["CANCELED"] >= 1, parts
    (summary,) = _summaries(url)
    (created,) = select_rows(url, "SELECT count(*) AS n FROM audit WHERE action = 'CREATE' AND status = 'SUCCESS'")
    assert created.n > 0 and summary["changes"]["created"] == created.n, (summary["changes"], created.n)
    assert Counter(p["state"] for p in summary["partitions"]) == parts


def _worker_partition(url: str, parent: int) -> Any:
    """An ACTIVE partition that a worker (not ``parent``) has read a page of (10 objects), if any."""
    if not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        rows = select_rows(url, "SELECT owner, part, summary FROM recon_partitions WHERE state = 'ACTIVE'")
    except Exception:  # noqa: BLE001 - the tables are being made
        return None
    return next((r for r in rows if r.owner and _pid(r.owner) != parent
                 and json.loads(r.summary or "{}").get("tally", {}).get("source_processed", 0) >= 10), None)


def _children_left(parent: int) -> list[str]:
    """Worker processes that ``parent`` started and that still run."""
    found = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if _parent(int(pid)) == parent]


def _pid(owner: str) -> int:
    """The process of a partition's owner (``HOST:PID@START``)."""
    return int(owner.split(":")[1].split("@")[0])


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def test_reclaim_hands_back_only_the_dead_workers_partitions(tmp_path: Path) -> None:
    """``LocalWorkers.reclaim``: the ACTIVE partition of a worker that exited goes back to
    PENDING; a live process's partition and a finished one stay as they are."""
    project, url = _project(tmp_path / "p", workers=2, slow=False)
    loaded = load_project(project)
    store = Store.open(url)
    try:
        RunStore(store).start("r1", "m", job=None, dry_run=False, summary={})  # partitions are an ACTIVE run's
        parts = Partitions(store)
        parts.create("r1", [(None, "b"), ("b", "m"), ("m", None)], {})
        context = multiprocessing.get_context("spawn")
        dead = context.Process(target=os._exit, args=(3,))
        dead.start()
        dead.join()
        host = socket.gethostname()
        assert parts.claim("r1", f"{host}:{dead.pid}@12345", host) is not None
        assert parts.claim("r1", f"{host}:{os.getpid()}@1", host) is not None
        done = parts.claim("r1", f"{host}:{dead.pid}@12345", host)
        assert done is not None and parts.finish("r1", done.part, f"{host}:{dead.pid}@12345", "SUCCESS", {}, None)
        workers = LocalWorkers(loaded, store)
        workers._procs["r1"] = [dead]
        workers.reclaim("r1")
        assert [(p.part, p.state) for p in parts.all("r1")] == [(0, "PENDING"), (1, "ACTIVE"), (2, "SUCCESS")]
        started = time.monotonic()
        workers.stop("r1")
        # Not the wait for a live worker (_JOIN): the dead one is joined at once.
        assert time.monotonic() - started < _JOIN / 2 and "r1" not in workers._procs
    finally:
        store.close()


def test_cuts_from_a_sample_balance_the_ranges_and_hold_only_the_sample() -> None:
    """``IdSample`` over 200,000 time-ordered ids bunched like a bulk load's (half of them
    in one narrow stretch): it counts them all and keeps 10,000; the four ranges cut at
    the sample's quantiles hold a quarter of the ids each, within 5%. A source no larger
    than the sample is kept whole, so its cuts are exact."""
    ids = [f"{i:08x}-0000" for i in range(100_000)] + [f"{0x7000000 + i:08x}-0000" for i in range(100_000)]
    sample = IdSample(seed="run")
    sample.add(iter(ids))
    assert sample.count == 200_000 and len(sample.ids) == 10_000
    bounds = cut(sample.ids, 4)
    shares = Counter(next(k for k, (low, high) in enumerate(bounds)
                          if (low is None or i >= low) and (high is None or i < high)) for i in ids)
    assert all(abs(n - 50_000) <= 2_500 for n in shares.values()), shares
    small = IdSample(seed="run")
    small.add(iter(ids[:8_000]))
    assert cut(small.ids, 4) == cut(ids[:8_000], 4)


def test_a_split_first_load_keeps_unique_values_unique(tmp_path: Path) -> None:
    """Accounts whose ``name`` is unique, 400 users giving 100 names (four each), the users
    of one name in different id ranges, a transform of 12 ms (100 ms until the worker has
    taken a range: ``Gate``), and an ``onCreate`` script that takes 12 ms between
    the check of a page's names and their write: the ranges' processes check and write
    their pages' unique values in turn (``Store.turn``), so each name is created once, as
    one process creates it, and the other 300 users fail the ``unique`` policy."""
    project, url = _project(tmp_path / "p", workers=2)
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    account = next(o for o in managed["objects"] if o["name"] == "account")
    account["schema"]["properties"]["name"]["policies"] = [{"policyId": "unique"}]
    # 12 ms per create between the check of a page's names and their write.
    account["onCreate"] = {"type": "text/javascript", "source": "var t = Date.now(); while (Date.now() - t < 12) {}"}
    managed_file.write_text(json.dumps(managed))
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"][0]["properties"] = [{"source": "userName", "target": "name", "transform": {
        "type": "text/javascript",
        "source": gate_pace(100, 12) + "'n' + (parseInt(source.substring(1)) % 100)"}}]
    sync_file.write_text(json.dumps(sync))
    add_managed_users(project, 400)
    with _shared(project, url):
        done = run_cli(["-p", str(project), "run-job", "big"])
    assert done.returncode == 0, done.stderr
    (summary,) = _summaries(url)
    assert [p["state"] for p in summary["partitions"]] == ["SUCCESS"] * 4
    assert len(_owners(url)) == 2
    names = Counter(r[0] for r in select_rows(url, "SELECT json_extract(data, '$.name') FROM managed_objects "
                                                   "WHERE object_type = 'account'"))
    assert sorted(names) == sorted(f"n{i}" for i in range(100))
    assert set(names.values()) == {1}, {n: c for n, c in names.items() if c > 1}
    assert summary["changes"]["created"] == 100 and summary["errorCount"] == 300


def test_a_scheduled_scripts_first_load_is_shared_with_a_worker(tmp_path: Path) -> None:
    """A PingIDM scheduled script that starts a recon (``openidm.action('recon', ...)``)
    shares a first load with a worker process as its job's own recons would: ``idsync
    run-job`` of the schedule, 400 users, ``workers = 2``: the recon (job ``script:recon``)
    splits into ranges, two processes read them, every user is created once."""
    project, url = _project(tmp_path, workers=2)
    (project / "conf" / "schedule-nightly.json").write_text(json.dumps({
        "type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
        "invokeContext": {"script": {"type": "text/javascript",
                                     "source": "openidm.action('recon', 'recon', {}, {mapping: 'm_big'});"}}}))
    add_managed_users(project, 400)
    with _shared(project, url):
        done = run_cli(["-p", str(project), "run-job", "nightly"])
    assert done.returncode == 0, done.stdout + done.stderr
    (recon,) = [r for r in select_rows(url, "SELECT id, job, state FROM recon_runs") if r.job == "script:recon"]
    assert recon.state == "SUCCESS"
    (summary,) = [s for s in _summaries(url) if s.get("partitions")]
    assert sum(p["processed"] for p in summary["partitions"]) == 400
    owners = _owners(url)
    assert len(owners) == 2, owners  # this process and the worker
    assert len(_outcome(url)["accounts"]) == 400


def test_a_split_first_load_carries_its_writes_on_from_every_process(tmp_path: Path) -> None:
    """400 users, ``workers = 2``, and a mapping from the accounts the recon creates to a CSV
    file (``OnwardPush``): each process carries the creates of the ranges it read on to the
    file, in a run of the onward mapping of its own, and the file ends with every account
    once."""
    users = 400
    project, url = _project(tmp_path, workers=2)
    hr = tmp_path / "accounts.csv"
    add_onward_csv(project, hr, source="managed/account",
                   properties=[{"source": "name", "target": "uid"}, {"source": "mail", "target": "mail"}])
    add_managed_users(project, users)
    with _shared(project, url):
        done = run_cli(["-p", str(project), "run-job", "big"])
    assert done.returncode == 0, done.stderr
    owners = _owners(url)
    assert len(owners) == 2, owners  # this process and the worker
    with hr.open(newline="") as f:
        rows = [r["uid"] for r in csv.DictReader(f)]
    assert sorted(rows) == sorted(f"u{i}" for i in range(users))
    onward = [s for s in _summaries(url) if "implicit" in s]
    assert len(onward) == 2 and sum(s["changes"]["created"] for s in onward) == users, onward
    assert all(s["changes"]["failed"] == 0 for s in onward)
