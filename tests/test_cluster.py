"""Cluster mode end to end: several ``idsync run`` nodes on one PostgreSQL store, as
subprocesses, observed through the store (each run records its node and its fire),
the queue's own tables, ``idsync status --nodes`` and the status file."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, free_port
from cluster_env import (
    LIVE_SOURCE,
    Beats,
    Gate,
    Node,
    add_ldap_livesync,
    add_managed_users,
    api_node,
    api_up,
    assert_each_account_created_once,
    cluster_project,
    fresh_store,
    gated,
    helper_under_way,
    ldap_people,
    reset_queue,
    run_under_way,
    second_database,
    select_rows,
    trigger,
    wait_for,
)
from dbs import store_url
from idsync.cli import main as cli_main
from idsync.resource import QuerySpec
from idsync.store.database import Store
from idsync_dev.slapd import Slapd
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.postgresql


@pytest.fixture
def empty_pg_url(tmp_path: Path) -> str:
    """A PostgreSQL database without idsync's tables or the queue's schema."""
    url = store_url("postgresql", tmp_path, empty=True)
    reset_queue(url)
    return url  # commits wait for no disk flush (dbs.store_url)


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return fresh_store(store_url("postgresql", tmp_path))


def _stop_all(nodes: list[Node]) -> list[int]:
    for n in nodes:
        if n.proc.poll() is None:
            n.proc.send_signal(15)
    return [n.wait() for n in nodes]


def _restart(node: Node, project: Path) -> Node:
    """SIGTERM ``node``, wait for its exit 0, start it again under its name and wait for its start."""
    assert node.stop(60) == 0
    again = Node(project, node.name)
    wait_for(lambda: len(again.events("daemon.start")) == 2, 60, f"{node.name} started again")
    return again


def test_fires_run_once_through_a_rolling_restart_and_a_reload(tmp_path: Path, pg_url: str, slapd: Slapd,
                                                               ldap_subtree: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Three nodes schedule the same fifteen every-second jobs (150 fires and more), and a
    liveSync job of LDAP every second (slapd with a sync provider), while
    one node reloads its configuration (SIGHUP, as ``systemctl reload`` sends, every job
    file changed) and the two others are restarted one after the other: each fire in that
    window runs exactly once cluster-wide (one SUCCESS run per job and fire in the store,
    one queue job per fire; a run a stopping node handed over is recorded CANCELED and
    runs again elsewhere under the same fire), no fire is lost but those dropped because
    a run of the job was already waiting, every node does some of the work, and
    ``idsync status --nodes``, the API's ``cluster``, the metrics and the status file show
    three nodes alive. The liveSync job's fires are queued once each (one queue job per
    fire, none missing), the store counts as many liveSync runs as the queue gave out
    (less those skipped, plus those canceled by a stopping node), and the people added to
    and changed in LDAP meanwhile arrive in the store once each (one CREATE per person, one
    UPDATE for the one changed)."""
    jobs = {f"j{i:02}": "* * * * * ?" for i in range(15)}
    # A node starved of CPU for a few seconds must not be taken for dead here: not what this test is about.
    project = cluster_project(tmp_path / "project", pg_url, jobs, stall_timeout=15)
    for name in jobs:  # a queued fire runs however late: no fire is dropped as a misfire
        job = project / "jobs.d" / f"{name}.toml"
        job.write_text(job.read_text(encoding="utf-8").replace('"skip"', '"run_once"'), encoding="utf-8")
    add_ldap_livesync(project, slapd, ldap_subtree)
    ldap_people(slapd, ldap_subtree, ["p0", "p1"])
    port = free_port()
    nodes = [api_node(project, "n0", port), Node(project, "n1"), Node(project, "n2")]
    try:
        wait_for(lambda: all(n.events("daemon.start") for n in nodes) and api_up(port), 60, "three nodes started")
        # The first liveSync (a full read) done before the job files change: a run of it the
        # reload cancels would read p0 only after its change below, a create, not an update.
        wait_for(lambda: _people(pg_url) == {"p0": "p0@example.com", "p1": "p1@example.com"}, 60, "p0 and p1 read")
        start = dt.datetime.now(dt.UTC)
        for name in [*jobs, "live"]:
            job = project / "jobs.d" / f"{name}.toml"
            job.write_text(f'description = "reloaded"\n{job.read_text(encoding="utf-8")}', encoding="utf-8")
        nodes[0].proc.send_signal(signal.SIGHUP)
        ldap_people(slapd, ldap_subtree, ["p2", "p3", "p4"])
        nodes[1] = _restart(nodes[1], project)
        slapd.add_ldif(f"dn: uid=p0,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: p0@example.org\n")
        ldap_people(slapd, ldap_subtree, ["p5", "p6", "p7"])
        nodes[2] = _restart(nodes[2], project)
        ldap_people(slapd, ldap_subtree, ["p8", "p9"])
        restarted = dt.datetime.now(dt.UTC)
        # 150 fires run since the reload, 75 of them once the restarts are over (some 10 s on a
        # quiet machine; longer on a busy one, where more fires are dropped because a run of
        # their job already waits).
        counted = (f"SELECT count(*) FILTER (WHERE fire > '{start.isoformat()}') >= 150 AND count(*) FILTER "
                   f"(WHERE fire > '{restarted.isoformat()}') >= 75 FROM recon_runs WHERE state = 'SUCCESS'")
        wait_for(lambda: select_rows(pg_url, counted)[0][0], 300, "150 fires run, 75 since the restarts")
        wait_for(lambda: _people(pg_url) == {f"p{i}": "p0@example.org" if i == 0 else f"p{i}@example.com"
                                             for i in range(10)}, 60, "the LDAP changes in the store")
        end = dt.datetime.now(dt.UTC).replace(microsecond=0)
        instances = httpx.get(f"http://127.0.0.1:{port}/openidm/cluster", headers=ADMIN, timeout=30).json()
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=ADMIN, timeout=30).text
        assert cli_main(["-p", str(project), "status", "--nodes", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        status_file = json.loads((project / "state" / "status.json").read_text(encoding="utf-8"))
        codes = _stop_all(nodes)
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0, 0]
    assert sorted(n["name"] for n in shown if n["alive"]) == ["n0", "n1", "n2"]
    assert status_file["daemon"]["cluster"]["alive"] == 3
    assert sorted((i["instanceId"], i["state"]) for i in instances["result"]) == [
        ("n0", "running"), ("n1", "running"), ("n2", "running")]
    assert all(f'idsync_cluster_node_last_seen_timestamp_seconds{{node="{n}"}}' in metrics for n in ("n0", "n1"))
    (reloaded,) = nodes[0].events("daemon.reloaded")
    assert sorted(reloaded["changed"]) == sorted([*jobs, "live"])
    # The fires before the nodes began to stop at the end: the last ones may have been handed over.
    runs = select_rows(pg_url, "SELECT job, fire, node, state, message FROM recon_runs "
                               f"WHERE fire < '{end.isoformat()}'")
    done = Counter((r.job, r.fire) for r in runs if r.state == "SUCCESS")
    assert max(done.values()) == 1, [k for k, v in done.items() if v > 1]
    assert {r.state for r in runs} <= {"SUCCESS", "CANCELED"}, [r for r in runs if r.state == "FAILED"]
    assert {r.node for r in runs if r.state == "SUCCESS"} == {"n0", "n1", "n2"}
    queued = select_rows(pg_url, "SELECT args->>'job' AS job, args->>'timestamp' AS ts, status "
                           "FROM idsync_queue.procrastinate_jobs WHERE (args->>'timestamp')::bigint < "
                           f"{int(end.timestamp())}")
    assert max(Counter((q.job, q.ts) for q in queued).values()) == 1
    assert {q.status for q in queued} == {"succeeded"}
    dropped = {(e["job"], dt.datetime.fromisoformat(e["fire_time"])) for n in nodes
               for e in n.events("job.skipped") if e.get("reason") == "queued" and e.get("fire_time")}
    # Every queued fire ran once, but those a stopping node took (or began, then canceled)
    # and dropped for the run waiting next.
    assert {(r.job, r.fire) for r in runs} - set(done) <= dropped
    ran = {(j, int(f.timestamp())) for j, f in done}
    assert {(q.job, int(q.ts)) for q in queued if q.job in jobs} - ran <= {(j, int(f.timestamp())) for j, f in dropped}
    assert ran <= {(q.job, int(q.ts)) for q in queued}
    window = [start.replace(microsecond=0) + dt.timedelta(seconds=s + 1)
              for s in range(int((end - start).total_seconds()) - 1)]
    # Fires a node merged into the next (its scheduler late past them: a loaded machine) were never queued by it.
    merged = {(e["job"], dt.datetime.fromisoformat(f)) for n in nodes for e in n.events("job.skipped")
              if e.get("reason") == "coalesced" for f in e["fire_times"]}
    missing = [(j, f) for j in jobs for f in window if (j, f) not in done and (j, f) not in dropped | merged]
    assert not missing
    assert len(done) >= 125, len(done)
    _assert_livesync_fires_ran_once(pg_url, nodes, window, dropped)


def _people(url: str) -> dict[str, str]:
    return dict(select_rows(url, "SELECT data->>'name', data->>'mail' FROM managed_objects "
                                 "WHERE object_type = 'person'"))


def _assert_livesync_fires_ran_once(url: str, nodes: list[Node], window: list[dt.datetime],
                                    dropped: set[tuple[str, dt.datetime]]) -> None:
    """The liveSync job ``live`` of the rolling-restart test: each fire queued once, every fire
    of the window queued (or dropped for a run already waiting), the store's count of liveSync
    runs equal to the queue jobs run (less those a worker skipped, plus those a stopping node
    canceled and handed back), and each LDAP change applied once."""
    queued = select_rows(url, "SELECT (args->>'timestamp')::bigint AS ts, status FROM idsync_queue.procrastinate_jobs "
                        "WHERE args->>'job' = 'live'")
    assert max(Counter(q.ts for q in queued).values()) == 1
    ours = {q.ts for q in queued} | {int(f.timestamp()) for j, f in dropped if j == "live"}
    assert not [f for f in window if int(f.timestamp()) not in ours]
    events = [e for n in nodes for e in n.events() if e.get("job") == "live"]
    # Skipped by the worker that took the queue job (a fire skipped at queueing has no queue job).
    skipped = [e for e in events if e["event"] == "job.skipped" and (
        e["reason"] in ("locked", "unknown") or (e["reason"] == "running" and "trigger" in e)
        or (e["reason"] == "queued" and "node" in e))]
    # Canceled once its liveSync ran (a cancel before it started ends the job with no run: "runs" empty).
    canceled = [e for e in events if e["event"] == "job.end" and e.get("state") == "CANCELED" and e.get("runs")]
    ((runs, failed),) = select_rows(url, f"SELECT runs, failed FROM sync_tokens WHERE source = '{LIVE_SOURCE}'")
    succeeded = sum(q.status == "succeeded" for q in queued)
    assert (runs, failed) == (succeeded - len(skipped) + len(canceled), 0), (succeeded, skipped, canceled)
    assert runs > 0  # every fire of the window was queued or dropped (above); a busy machine drops many
    audit = Counter((a.action, a.source_id) for a in select_rows(
        url, "SELECT action, source_id FROM audit WHERE mapping = 'ldap_person' AND status = 'SUCCESS' "
             "AND action IS NOT NULL"))
    creates = [k for k in audit if k[0] == "CREATE"]
    assert len(creates) == 10 and {audit[k] for k in creates} == {1}
    assert sum(n for (action, _), n in audit.items() if action == "UPDATE") == 1, audit


def test_cluster_needs_a_postgresql_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``[cluster] enabled = true`` on a SQLite store is a configuration error naming the file
    and key: ``idsync run`` exits 78 before it starts, ``idsync validate`` says the same."""
    project = cluster_project(tmp_path / "project", f"sqlite:///{tmp_path / 'idsync.db'}", {"j": "@hourly"})
    for command in (["run"], ["validate"]):
        assert cli_main(["-p", str(project), *command]) == 78
        said = "".join(capsys.readouterr())
        assert "idsync.toml" in said and "cluster.enabled" in said and "PostgreSQL" in said, said


def test_a_killed_nodes_run_is_taken_over(tmp_path: Path, pg_url: str) -> None:
    """A node killed with SIGKILL in the middle of a recon (some pages committed) has its run
    failed ("interrupted") and the job run again by the other node within ``stall_timeout``
    (3 s) plus two heartbeats (1 s) plus the queue's poll, with a margin for a loaded
    machine; the second run completes, and the store ends as one run would leave it: one
    account and one link per user, each account created once (no second create in the
    audit of either run)."""
    users = 300
    # 50 ms per object until the node is killed (15 s of work: it is killed in the middle
    # however slow the machine), none after.
    project = cluster_project(tmp_path / "project", pg_url, {"big": "*/4 * * * * ?"},
                              mapping={"properties": gated(50)}, job_extra="page_size = 20\n")
    add_managed_users(project, users)
    nodes = [Node(project, "n0"), Node(project, "n1")]
    try:
        first = wait_for(lambda: run_under_way(pg_url, 40), 120, "a run with some pages committed")
        victim = next(n for n in nodes if n.name == first.node)
        survivor = next(n for n in nodes if n is not victim)
        beats = Beats(pg_url, survivor.name)
        victim.kill()
        killed = dt.datetime.now(dt.UTC)
        Gate(project).open()

        def completed() -> list[Any]:
            beats.poll()
            return select_rows(pg_url, "SELECT id, started, ended FROM recon_runs WHERE state = 'SUCCESS'")

        done = wait_for(completed, 60, "a run completed by the survivor")[0]
        codes = _stop_all([survivor])
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0]
    runs = {r.id: r for r in select_rows(pg_url, "SELECT id, node, state, message, started, ended FROM recon_runs")}
    assert runs[first.id].state == "FAILED" and "interrupted" in runs[first.id].message
    assert runs[done.id].node == survivor.name
    # Counted in the survivor's heartbeats (1 s each), not the test's wall clock: a loaded
    # machine spaces the beats out as it slows the survivor's checks of the others, where a
    # takeover on a longer timer than the heartbeat's takes many more of them. The killed
    # run failed at the beat that found the victim silent for stall_timeout (3 s) ...
    taken = runs[first.id].ended
    said = {"beats to the takeover": beats.between(killed, taken), "to the new run": beats.between(taken, done.started),
            "seconds": (done.started - killed).total_seconds()}
    assert killed < taken < done.started, said
    assert beats.between(killed, taken) <= 3 + 1 + 2, said
    # ... and the job ran again a heartbeat (its queue job put back) and the queue's poll
    # later, or at its next fire (every 4 s), with a margin for starting the run.
    assert beats.between(taken, done.started) <= 1 + 1 + 4, said
    assert_each_account_created_once(pg_url, users)


def _delete_users(project: Path, names: list[str]) -> None:
    from idsync.config.project import load_project
    from idsync.resource import WriteOp
    from idsync.resources import Resources

    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        users = Resources(loaded, store).open("managed/user")
        ids = [u["_id"] for page in users.pages(QuerySpec(fields=["userName"])) for u in page
               if u.get("userName") in set(names)]
        assert all(r.ok for r in users.write_batch([WriteOp("delete", id=i) for i in ids]))
    finally:
        store.engine.dispose()


def _outcome(url: str) -> dict[str, Any]:
    """What a store holds after the runs: accounts, links, each run's state and audit counts."""
    runs = select_rows(url, "SELECT id, state FROM recon_runs ORDER BY started")
    audit = {r.id: Counter({(a.action, a.status): a.n for a in select_rows(
        url, f"SELECT action, status, count(*) AS n FROM audit WHERE run_id = '{r.id}' GROUP BY 1, 2")})
        for r in runs}
    return {"accounts": sorted(r[0] for r in select_rows(url, "SELECT data->>'name' FROM managed_objects "
                                                       "WHERE object_type = 'account'")),
            "links": select_rows(url, "SELECT count(*) FROM links")[0][0],
            "runs": [(r.state, audit[r.id]) for r in runs]}


def test_a_split_recon_ends_as_one_run_would(tmp_path: Path, pg_url: str) -> None:
    """A recon of 300 users split into four id ranges on two nodes (each node reads some)
    leaves the store as one run on a single daemon does, run after run: the same accounts
    and links, the same audit counts per action; then, with 20 users deleted, the same 20
    deletes (the target phase and the deletes once, after every partition); then, with 60
    more deleted and ``max_deletes = 40``, the same FAILED run with nothing deleted, though
    each partition's share stays under the limit: it holds for the run's total. The console's
    page of a run names its node and lists its partitions."""
    users, jobs = 300, {"big": "@yearly"}
    extra = "max_deletes = 40\npage_size = 15\n"
    split = cluster_project(tmp_path / "cluster", pg_url, jobs, mapping={"properties": gated(50)}, job_extra=extra,
                            cluster="partitions = 4\nmin_partition_size = 40\n")
    single_url = second_database(pg_url)
    # The same mapping without the slow transform (it returns the value it is given): the
    # cluster's first run is slowed until both nodes read ranges (``Gate``), one daemon's need not be.
    single = cluster_project(tmp_path / "single", single_url, jobs, job_extra=extra, enabled=False)
    for project in (split, single):
        add_managed_users(project, users)
    port = free_port()
    nodes = [api_node(split, "n0", port), Node(split, "n1")]
    both = Gate(split).open_when(lambda: len(select_rows(pg_url, "SELECT DISTINCT node FROM recon_partitions "
                                                                 "WHERE node IS NOT NULL")) == 2)
    try:
        wait_for(lambda: all(n.events("daemon.start") for n in nodes) and api_up(port), 60, "two nodes started")
        with both, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            for step, deleted in enumerate([[], [f"u{i}" for i in range(20)], [f"u{i}" for i in range(20, 80)]]):
                if deleted:
                    _delete_users(split, deleted)
                    _delete_users(single, deleted)
                r = api.post("/openidm/scheduler/job/big?_action=trigger", headers=ADMIN)
                assert r.status_code == 200, r.text
                wait_for(lambda n=step + 1: len(select_rows(pg_url, "SELECT id FROM recon_runs "
                                                                    "WHERE state <> 'ACTIVE'")) == n,
                         240, f"split run {step + 1}")
                assert cli_main(["-p", str(single), "run-job", "big"]) in (0, 1)
            # The console's page of the first run names its node and lists its partitions.
            api.get("/admin/login")
            token = next(v for k, v in api.cookies.items() if k == "idsync_console_login")
            api.post("/admin/login", data={"username": "openidm-admin", "password": "openidm-admin", "csrf": token})
            first_run = select_rows(pg_url, "SELECT id, node FROM recon_runs ORDER BY started LIMIT 1")[0]
            page = api.get(f"/admin/runs/{first_run.id}").text
        codes = _stop_all(nodes)
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0]
    ours, theirs = _outcome(pg_url), _outcome(single_url)
    assert ours == theirs
    assert [state for state, _ in ours["runs"]] == ["SUCCESS", "SUCCESS", "FAILED"]
    assert len(ours["accounts"]) == users - 20
    assert ours["runs"][1][1][("DELETE", "SUCCESS")] == 20
    summaries = [r.summary for r in select_rows(pg_url, "SELECT summary FROM recon_runs ORDER BY started")]
    parts = [p for s in summaries for p in s["partitions"]]
    assert {p["state"] for p in parts} == {"SUCCESS"} and len(parts) == 12
    assert {p["node"] for p in parts} == {"n0", "n1"}
    assert f"node {first_run.node}" in page and "<h2>Partitions</h2>" in page


def test_a_killed_nodes_partition_is_read_by_another(tmp_path: Path, pg_url: str) -> None:
    """A split recon whose helper node is killed with SIGKILL in the middle of its partition:
    the partition goes back to the queue of ranges within ``stall_timeout`` plus a heartbeat,
    the node running the job reads it again, and the same run ends SUCCESS with one account
    and one link per user, each account created once."""
    users = 600
    # 50 ms per object until the helper is killed (a range is 15 s of work: the other node
    # takes one and is killed in the middle of it however slow the machine), none after.
    project = cluster_project(tmp_path / "project", pg_url, {"big": "@yearly"}, mapping={"properties": gated(50)},
                              job_extra="page_size = 20\n",
                              cluster="partitions = 2\nmin_partition_size = 100\nconcurrency = 1\n")
    add_managed_users(project, users)
    port = free_port()
    nodes = [api_node(project, "n0", port), Node(project, "n1")]
    try:
        wait_for(lambda: all(n.events("daemon.start") for n in nodes) and api_up(port), 60, "two nodes started")
        trigger(port, "big")
        busy = wait_for(lambda: helper_under_way(pg_url, 40), 120, "a partition read on the other node")
        victim = next(n for n in nodes if n.name == busy.node)
        beats = Beats(pg_url, next(n for n in nodes if n is not victim).name)
        victim.kill()
        killed_at = dt.datetime.now(dt.UTC)
        killed = time.monotonic()
        Gate(project).open()

        def ended() -> list[Any]:
            beats.poll()
            return select_rows(pg_url, "SELECT id, ended FROM recon_runs WHERE state <> 'ACTIVE'")

        (end,) = wait_for(ended, 60, "the run's end")
        took = time.monotonic() - killed
        codes = _stop_all([n for n in nodes if n is not victim])
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0]
    (run,) = select_rows(pg_url, "SELECT state, summary FROM recon_runs")
    assert run.state == "SUCCESS", run.summary.get("errors")
    taken = next(p for p in run.summary["partitions"] if p["partition"] == busy.part)
    assert taken["attempts"] == 2 and taken["node"] != busy.node
    # Counted in the other node's heartbeats (1 s each), not the test's wall clock, which
    # runs on while a loaded machine slows the node: the partition was taken again within
    # stall_timeout (3 s) and a heartbeat, with a margin (not on a longer timer) ...
    (again,) = select_rows(pg_url, f"SELECT started, ended FROM recon_partitions WHERE part = {busy.part}")
    said = {"beats to the takeover": beats.between(killed_at, again.started),
            "to the partition's end": beats.between(again.started, again.ended),
            "to the run's end": beats.between(again.ended, end.ended), "seconds": took}
    assert killed_at < again.started < again.ended <= end.ended, said
    assert beats.between(killed_at, again.started) <= 3 + 1 + 1 + 2, said
    # ... the rest of the partition read again (its pace no longer held back), and the run
    # ended once it was read.
    assert beats.between(again.started, again.ended) <= 15 and beats.between(again.ended, end.ended) <= 3, said
    assert_each_account_created_once(pg_url, users)


def _cancel_waiting(url: str) -> None:
    """The queue jobs that wait, canceled (as Procrastinate cancels one not yet taken)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL search_path = idsync_queue"))  # where its triggers find their types
            conn.execute(text("UPDATE procrastinate_jobs SET status = 'cancelled' WHERE status = 'todo'"))
    finally:
        engine.dispose()


def test_nodes_starting_together_on_an_empty_database_then_a_missed_fire(tmp_path: Path, empty_pg_url: str) -> None:
    """Three nodes started at once on an empty database create idsync's tables and the
    queue's schema once (store migrations and queue schema each under an advisory lock) and
    run the job; then, every node stopped, the job is given a schedule that fired once since
    (at one second of each minute, just past) and ``misfire = "run_once"``: two nodes
    started together find that fire and no other, whenever each starts within the minute
    (one whose catch-up comes after the other's run started finds nothing missed), the
    queue keeps one run of it, and the run records its fire."""
    pg_url = empty_pg_url
    project = cluster_project(tmp_path / "project", pg_url, {"tick": "*/2 * * * * ?"})
    job = project / "jobs.d" / "tick.toml"
    job.write_text(job.read_text(encoding="utf-8").replace('misfire = "skip"', 'misfire = "run_once"'),
                   encoding="utf-8")
    first = [Node(project, f"n{i}") for i in range(3)]
    try:
        wait_for(lambda: all(n.events("daemon.start") for n in first), 60, "three nodes started")
        wait_for(lambda: select_rows(pg_url, "SELECT id FROM recon_runs WHERE state = 'SUCCESS'"), 60, "a first run")
        assert _stop_all(first) == [0, 0, 0]
    finally:
        for n in first:
            n.kill()
    assert select_rows(pg_url, "SELECT count(*) FROM alembic_version")[0][0] == 1
    shipped = select_rows(pg_url, "SELECT count(*), count(DISTINCT procrastinate) FROM idsync_queue.idsync_migrations")
    assert shipped[0][0] > 30 and shipped[0][1] == 1
    assert sum(len(n.events("cluster.queue_created")) for n in first) == 1
    # A fire queued as the nodes stopped, which none took, would wait for the nodes below and
    # take the missed fire in (``job.skipped reason=queued``): not what this test is about.
    _cancel_waiting(pg_url)
    # The next whole second after every run started: a fire the nodes below all missed, and
    # the only one of its schedule for a minute, so both find this one whenever they start.
    missed = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    job.write_text(job.read_text(encoding="utf-8").replace("*/2 * * * * ?", f"{missed.second} * * * * ?"),
                   encoding="utf-8")
    time.sleep(max((missed - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 0.05)
    nodes = [Node(project, "n3"), Node(project, "n4")]
    try:
        wait_for(lambda: all(n.events("daemon.start") for n in nodes)
                 and select_rows(pg_url, f"SELECT id FROM recon_runs WHERE fire = '{missed.isoformat()}' "
                                   "AND state <> 'ACTIVE'"), 50, "the missed fire's run")
        codes = _stop_all(nodes)
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0]
    # A node whose catch-up comes after the other's run started finds nothing missed any more.
    found = [e["fire_time"] for n in nodes for e in n.events("job.misfire")]
    assert found and set(found) == {missed.isoformat()}, found
    (run,) = select_rows(pg_url, f"SELECT state, node FROM recon_runs WHERE fire = '{missed.isoformat()}'")
    assert run.state == "SUCCESS" and run.node in ("n3", "n4")
    (queued,) = select_rows(pg_url, "SELECT count(*) FROM idsync_queue.procrastinate_jobs "
                                    f"WHERE (args->>'timestamp')::bigint = {int(missed.timestamp())}")
    assert queued == (1,)
    per_fire = Counter(r.fire for r in select_rows(pg_url, "SELECT fire FROM recon_runs"))
    assert max(per_fire.values()) == 1
