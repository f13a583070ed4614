"""Cluster nodes deployed with different files: each node writes a digest of each file of
its ``conf/``, ``jobs.d/`` and ``script/`` with its heartbeat, and the nodes say which files differ
(``cluster/fingerprint.py``). The nodes are ``idsync run`` subprocesses on one PostgreSQL
store (``cluster_env``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, free_port, running
from cluster_env import (
    Node,
    api_node,
    api_up,
    cluster_project,
    fresh_store,
    reset_queue,
    select_rows,
    trigger,
    wait_for,
)
from dbs import store_url
from idsync.cli import main as cli_main
from idsync.cluster.fingerprint import defines_job, project_files
from idsync.cluster.queue import COMMON_QUEUE, JOB_TASK, SCHEMA, Queue, node_queue
from idsync.cluster.schema import QueueSchema
from idsync.store.database import Store
from idsync.store.nodes import Nodes

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return fresh_store(store_url("postgresql", tmp_path))


def test_the_digest_covers_the_scripts_a_node_runs(tmp_path: Path) -> None:
    """A script edited on one node is a file the nodes disagree on (a mapping would run other
    code there), as a job file is; ``idsync.toml``, a node's own, is not."""
    for name, text in (("conf/sync.json", "{}"), ("conf/idsync.toml", "x"), ("jobs.d/a.toml", "a"),
                       ("script/lib/cn.js", "1")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = project_files(tmp_path)
    assert sorted(before) == ["conf/sync.json", "jobs.d/a.toml", "script/lib/cn.js"]
    (tmp_path / "script/lib/cn.js").write_text("2")
    assert {k for k, v in project_files(tmp_path).items() if before.get(k) != v} == {"script/lib/cn.js"}


def test_nodes_deployed_with_different_job_files_say_so(tmp_path: Path, pg_url: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Two nodes whose ``jobs.d/tick.toml`` differ (another schedule, deployed to one node
    only): each logs ``cluster.config_differs`` naming that file and the other node, and
    ``idsync status --nodes`` shows two configuration digests and the file that differs.
    Once the second node gets the same file and reloads (SIGHUP), both log
    ``cluster.config_agrees``."""
    first = cluster_project(tmp_path / "a", pg_url, {"tick": "@yearly"})
    second = tmp_path / "b" / "project"
    shutil.copytree(first, second)
    job = second / "jobs.d" / "tick.toml"
    job.write_text(job.read_text(encoding="utf-8").replace("@yearly", "@daily"), encoding="utf-8")
    nodes = [Node(first, "n0"), Node(second, "n1")]
    try:
        for n, other in ((nodes[0], "n1"), (nodes[1], "n0")):
            told = wait_for(lambda n=n: n.events("cluster.config_differs"), 60, f"{n.name} saying so")
            assert told[-1]["nodes"] == {other: ["jobs.d/tick.toml"]}
        assert cli_main(["-p", str(first), "status", "--nodes", "--json"]) == 0
        shown = {n["name"]: n["config"] for n in json.loads(capsys.readouterr().out)}
        assert cli_main(["-p", str(first), "status", "--nodes"]) == 0
        text = capsys.readouterr().out
        shutil.copy(first / "jobs.d" / "tick.toml", job)
        nodes[1].proc.send_signal(signal.SIGHUP)
        for n in nodes:
            wait_for(lambda n=n: n.events("cluster.config_agrees"), 60, f"{n.name} agreeing again")
        codes = [n.stop(60) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0]
    assert shown["n0"] and shown["n1"] and shown["n0"] != shown["n1"]
    assert "configuration differs: n1 and n0 in jobs.d/tick.toml" in text, text


def test_a_reload_during_a_heartbeat_is_written_with_the_next_one() -> None:
    """A reload's files (``deployed``) that arrive while a heartbeat is being written are
    written with the next heartbeat: before, that heartbeat marked them written, and the
    other nodes compared with the files of before the reload until the next one (seen as
    ``config_agrees`` never logged after a SIGHUP on a busy machine)."""
    from idsync.cluster.node import ClusterNode

    written: list[dict[str, str] | None] = []
    node = ClusterNode.__new__(ClusterNode)  # the heartbeat's own state, without a queue or store
    node.name, node.owner, node._running = "n1", "p", lambda: []

    class Nodes:
        def beat(self, name: str, owner: str, running: list[str], files: dict[str, str] | None) -> None:
            written.append(files)
            if len(written) == 1:
                node.deployed({"jobs.d/tick.toml": "new"})  # a SIGHUP's reload, meanwhile

    node.nodes = Nodes()  # type: ignore[assignment]
    node.deployed({"jobs.d/tick.toml": "old"})
    for _ in range(3):
        asyncio.run(node._beat())
    assert written == [{"jobs.d/tick.toml": "old"}, {"jobs.d/tick.toml": "new"}, None]


def test_a_job_fired_by_a_node_runs_on_a_node_deployed_with_it(tmp_path: Path, pg_url: str) -> None:
    """A job every second in the first node's ``jobs.d/`` only (a deploy that has not reached
    the second node): a fire the second node takes is put back in the first node's own
    queue (``cluster.handed_back to=n0``), never dropped, so every fire queued runs once, on
    the first node. (Before, it was put back in the common queue a second later, and the
    second node, polling just after, could take it again ten times and drop it.)"""
    first = cluster_project(tmp_path / "a", pg_url, {"tick": "@yearly", "new": "* * * * * ?"},
                            cluster="concurrency = 1\n")
    second = tmp_path / "b" / "project"
    shutil.copytree(first, second)
    (second / "jobs.d" / "new.toml").unlink()
    nodes = [Node(first, "n0"), Node(second, "n1")]
    try:
        # Fires the second node took (handed back; before, dropped as unknown), and runs since.
        wait_for(lambda: len(nodes[1].events("cluster.handed_back") + nodes[1].events("job.skipped")) >= 2, 90,
                 "fires the second node took")
        wait_for(lambda: select_rows(pg_url, "SELECT count(*) FROM recon_runs WHERE job = 'new' "
                                             "AND state = 'SUCCESS'")[0][0] >= 4, 90, "fires run")
        # While both run: once the first node stops, the second has no node to hand to (to=None).
        handed = nodes[1].events("cluster.handed_back")
        codes = [n.stop(60) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0]
    queued = select_rows(pg_url, "SELECT (args->>'timestamp')::bigint AS ts, status "
                                 "FROM idsync_queue.procrastinate_jobs WHERE args->>'job' = 'new' AND status <> 'todo'")
    runs = select_rows(pg_url, "SELECT fire, node, state FROM recon_runs WHERE job = 'new'")
    # A fire queued just before the nodes stopped may have been handed over, not run.
    ran = {int(r.fire.timestamp()) for r in runs if r.state == "SUCCESS"}
    assert {q.ts for q in queued if q.status == "succeeded"} - ran <= {max(q.ts for q in queued)}, (queued, ran)
    assert {r.node for r in runs} == {"n0"} and len(ran) == len(runs)
    assert not [e for n in nodes for e in n.events("job.skipped") if e["reason"] == "unknown"]
    assert len(handed) >= 2 and {e["to"] for e in handed} == {"n0"}, handed


def test_a_job_handed_to_a_node_no_longer_alive_goes_back_to_the_common_queue(tmp_path: Path, pg_url: str) -> None:
    """A job waiting in the queue of a node that stopped or died before taking it (handed to
    it by a node without the job) is put back in the common queue by the next heartbeat of
    any node (``Queue.rehome``); a job waiting in a live node's queue stays there."""
    reset_queue(pg_url)
    store = Store.open(pg_url)
    QueueSchema(store, SCHEMA).prepare([])
    queue = Queue(store, max_connections=2)

    async def scenario() -> list[int]:
        await queue.open()
        try:
            for node in ("gone", "alive"):
                await queue.app.configure_task(JOB_TASK, queue=node_queue(node)).defer_async(
                    job=f"for-{node}", trigger="schedule")
            return await queue.rehome(["alive", "other"])
        finally:
            await queue.close()

    try:
        rehomed = asyncio.run(scenario())
        rows = select_rows(pg_url, "SELECT id, args->>'job' AS job, queue_name FROM idsync_queue.procrastinate_jobs")
    finally:
        store.engine.dispose()
    assert {r.job: r.queue_name for r in rows} == {"for-gone": COMMON_QUEUE, "for-alive": "node:alive"}
    assert rehomed == [r.id for r in rows if r.job == "for-gone"]


def test_a_node_has_a_job_when_its_files_define_it() -> None:
    """A job comes from ``jobs.d/NAME.toml`` or PingIDM's ``conf/schedule-NAME.json``."""
    files = {"jobs.d/new.toml": "1", "conf/schedule-reconcile.json": "2", "conf/sync.json": "3"}
    assert defines_job(files, "new") and defines_job(files, "reconcile")
    assert not defines_job(files, "sync") and not defines_job(files, "schedule-reconcile")


def test_each_nodes_status_file_follows_the_runs_of_the_others(tmp_path: Path, pg_url: str) -> None:
    """Two nodes with a status file each: a run of the job on the first node shows, within
    the refresh interval (10 s), as the job's last run in the second node's status file too,
    with its node, though the second node ran nothing since (before, an idle node's file kept
    its own last run for as long as it stayed idle)."""
    project = cluster_project(tmp_path / "p", pg_url, {"tick": "@yearly"})
    port = free_port()
    files = {n: tmp_path / f"{n}-status.json" for n in ("n0", "n1")}
    nodes = [api_node(project, "n0", port, IDSYNC_STATUS_FILE=str(files["n0"])),
             Node(project, "n1", IDSYNC_STATUS_FILE=str(files["n1"]))]

    def last(node: str) -> dict[str, Any]:
        shown = json.loads(files[node].read_text(encoding="utf-8")) if files[node].exists() else {}
        return ((shown.get("jobs") or {}).get("tick") or {}).get("lastRun") or {}

    try:
        wait_for(lambda: all(n.events("daemon.start") for n in nodes) and api_up(port), 60, "two nodes started")
        while True:  # until the latest run is the first node's
            before = len(select_rows(pg_url, "SELECT id FROM recon_runs"))
            trigger(port, "tick")
            wait_for(lambda b=before: len(select_rows(pg_url, "SELECT id FROM recon_runs WHERE state <> 'ACTIVE'")) > b,
                     60, "the run")
            ((run_id, node),) = select_rows(pg_url, "SELECT id, node FROM recon_runs ORDER BY started DESC LIMIT 1")
            if node == "n0":
                break
        wait_for(lambda: last("n1").get("id") == run_id, 30, "the run in the second node's status file")
        codes = [n.stop(60) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0]
    assert last("n1")["node"] == "n0"
    shown = json.loads(files["n1"].read_text(encoding="utf-8"))
    assert shown["jobs"]["tick"]["recentRuns"][0]["node"] == "n0"


def test_the_api_writes_a_nodes_times_as_pingidm(tmp_path: Path, pg_url: str) -> None:
    """GET cluster answers a node's startup, and its other times, in UTC to the millisecond
    as PingIDM's cluster instances (``shutdown`` empty while it lives)."""
    project = cluster_project(tmp_path, pg_url, {"tick": "@yearly"})
    store = Store.open(pg_url)
    try:
        Nodes(store, dt.timedelta(seconds=3)).claim("n1", "pid-1", "1.0")
    finally:
        store.close()
    with running(project) as port:
        (node,) = httpx.get(f"http://127.0.0.1:{port}/openidm/cluster", headers=ADMIN, timeout=30).json()["result"]
    assert (node["instanceId"], node["state"], node["shutdown"]) == ("n1", "running", ""), node
    for key in ("startup", "started", "seen"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", node[key]), node
