"""Cluster nodes that stall rather than die: a node paused (SIGSTOP: a frozen VM, a host
swapping, a long pause) for longer than ``stall_timeout`` is taken for dead and its work
is taken over; once it runs again it must write nothing more for that work, leave the
queue's records of it alone, and go back to work as a node like the others. The nodes
are ``idsync run`` subprocesses on one PostgreSQL store (``cluster_env``)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from api_server import free_port
from cluster_env import (
    Gate,
    Node,
    add_managed_users,
    api_node,
    api_up,
    assert_each_account_created_once,
    cluster_project,
    fresh_store,
    gated,
    helper_under_way,
    run_under_way,
    select_rows,
    trigger,
    wait_for,
)
from dbs import store_url
from idsync.cli import main as cli_main
from sqlalchemy.exc import OperationalError

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return fresh_store(store_url("postgresql", tmp_path))


def _two_nodes(tmp_path: Path, url: str, users: int, cluster: str) -> tuple[list[int], list[Node]]:
    """Nodes n0 and n1 (API ports) of a project whose job ``big`` reconciles ``users`` users
    slowly (about 5 ms each, 20 a page; 50 ms until the test opens the project's gate, once it
    has seen what it waits for: ``_opened``; at full speed once the test has seen what must
    happen while the run works: ``_let_go``), with the ``[cluster]`` settings ``cluster``."""
    project = cluster_project(tmp_path / "project", url, {"big": "@yearly"}, mapping={"properties": gated(50, 5)},
                              job_extra="page_size = 20\n", cluster=cluster)
    add_managed_users(project, users)
    ports = [free_port(), free_port()]
    return ports, [api_node(project, "n0", ports[0]), api_node(project, "n1", ports[1])]


def _run_big(nodes: list[Node], ports: list[int]) -> None:
    wait_for(lambda: all(n.events("daemon.start") for n in nodes) and all(api_up(p) for p in ports), 60,
             "two nodes started")
    trigger(ports[0], "big")


def _opened(nodes: list[Node], seen: Any) -> Any:
    """``seen``, the project's gate opened: the run, held at 50 ms an object until the test saw
    what it waits for (however slow the machine), goes on at 5 ms."""
    Gate(nodes[0].log_path.parent / "project").open()  # ``_two_nodes``' project, beside the nodes' logs
    return seen


def _let_go(nodes: list[Node]) -> None:
    """The runs of ``_two_nodes``' project at full speed from now on: what they were held
    slow for has been seen."""
    Gate(nodes[0].log_path.parent / "project").pace(0)


def _helper_under_way(nodes: list[Node], url: str) -> tuple[Any, Node, Node]:
    """A partition read on the node that did not split the run: (it, that node, the other)."""
    busy = _opened(nodes, wait_for(lambda: helper_under_way(url, 40), 120, "a partition read on the other node"))
    helper = next(n for n in nodes if n.name == busy.node)
    return busy, helper, next(n for n in nodes if n is not helper)


def _run_ended_well(url: str) -> Any:
    """The run of job ``big``, once ended: SUCCESS, nothing failed."""
    wait_for(lambda: select_rows(url, "SELECT id FROM recon_runs WHERE job = 'big' AND state <> 'ACTIVE'"),
             90, "the run's end")
    (run,) = select_rows(url, "SELECT state, summary FROM recon_runs")
    assert run.state == "SUCCESS", run.summary.get("errors")
    assert run.summary["changes"]["failed"] == 0, run.summary.get("errors")
    return run


def _resumed_node_runs_alone(resumed: Node, other: Node, port: int, url: str) -> None:
    """The other node stopped, the resumed one runs job ``big`` again, triggered through its
    own API: a working node again, not one that only looks alive. Then it stops."""
    other.proc.send_signal(signal.SIGTERM)
    # Out of the cluster once it says so; its process ends meanwhile.
    wait_for(lambda: other.events("daemon.exit"), 60, "the other node's exit")
    trigger(port, "big")
    wait_for(lambda: select_rows(url, "SELECT id FROM recon_runs WHERE state = 'SUCCESS' "
                                      f"AND node = '{resumed.name}'"), 60, "a run on the resumed node")
    # The run's helper queue job, taken once its run has ended (this node runs one at a time).
    wait_for(lambda: not select_rows(url, "SELECT id FROM idsync_queue.procrastinate_jobs "
                                          "WHERE status IN ('todo', 'doing')"), 30, "the queue done")
    assert resumed.stop(60) == 0
    assert other.wait(60) == 0


def _pause_between_pages(node: Node, url: str, part: int) -> dt.datetime:
    """SIGSTOP ``node`` outside a page's transaction (one stopped inside it would hold the
    partition's row, or the run's, which a page beats before it counts the partition, until
    it runs again, and no node could take the partition over or go on with the run: a
    frozen transaction, which PostgreSQL ends only when the connection does); when it was paused."""
    for _ in range(20):
        stopped = dt.datetime.now(dt.UTC)
        node.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        try:
            select_rows(url, "SELECT 1 FROM recon_partitions p JOIN recon_runs r ON r.id = p.run_id "
                             f"WHERE p.part = {part} FOR UPDATE NOWAIT")
        except OperationalError:
            node.proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
            continue
        return stopped
    raise AssertionError("the node was always paused inside a page's transaction")


def _created_before(url: str, part: int, moment: dt.datetime) -> int:
    """The accounts created, of the sources of partition ``part``, before ``moment``."""
    ((low, high),) = select_rows(url, f"SELECT low, high FROM recon_partitions WHERE part = {part}")
    return sum(1 for a in select_rows(url, "SELECT source_id, ts FROM audit WHERE action = 'CREATE' "
                                           "AND status = 'SUCCESS'")
               if (low is None or a.source_id >= low) and (high is None or a.source_id < high) and a.ts < moment)


def test_a_paused_helper_writes_nothing_once_its_partition_is_taken_over(tmp_path: Path, pg_url: str) -> None:
    """A split recon whose helper node is paused (SIGSTOP) in the middle of its partition
    for longer than ``stall_timeout``: the other node takes the partition over and reads it
    again. The helper, resumed while that partition is read by the other node, writes no
    page of it (``recon.partition_lost`` in its log): the run ends SUCCESS without an
    error, the other node finds unchanged only what the helper created before its pause,
    each account is created once, and the queue job the other node now runs is not
    finished under it. Then, the other node stopped, the resumed node runs the job again,
    triggered through its own API: it is a working node again, not one that only looks alive."""
    users = 600
    ports, nodes = _two_nodes(tmp_path, pg_url, users, "partitions = 2\nmin_partition_size = 100\nconcurrency = 1\n")
    try:
        _run_big(nodes, ports)
        busy, paused, other = _helper_under_way(nodes, pg_url)
        stopped = _pause_between_pages(paused, pg_url, busy.part)
        try:
            wait_for(lambda: select_rows(pg_url, f"SELECT 1 FROM recon_partitions WHERE part = {busy.part} "
                                                 f"AND state = 'ACTIVE' AND node = '{other.name}'"),
                     60, "the partition taken over by the other node")
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: paused.events("recon.partition_lost"), 60, "the resumed helper saying it lost its partition")
        _let_go(nodes)
        run = _run_ended_well(pg_url)
        # The other node found unchanged what the paused one created before its pause, and no more.
        assert run.summary["changes"]["unchanged"] == _created_before(pg_url, busy.part, stopped)
        _resumed_node_runs_alone(paused, other, ports[nodes.index(paused)], pg_url)
    finally:
        for n in nodes:
            n.kill()
    assert_each_account_created_once(pg_url, users)
    (lost,) = paused.events("recon.partition_lost")
    assert lost["partition"] == busy.part
    assert not [e for e in paused.events() if "never retrieved" in e["event"] or e["level"] == "error"]
    queued = select_rows(pg_url, "SELECT id, task_name, args, status, queue_name, attempts "
                                 "FROM idsync_queue.procrastinate_jobs")
    assert {q.status for q in queued} == {"succeeded"}, queued


def test_a_paused_runner_leaves_its_run_as_the_takeover_ended_it(tmp_path: Path, pg_url: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A node paused (SIGSTOP) in the middle of a recon that is not split, for longer than
    ``stall_timeout``: its run is failed ("interrupted") and the job runs again on the other
    node. Resumed while that second run works, the paused node writes no page more
    (``recon.taken_over`` in its log, no error but its job's end): the first run stays
    FAILED as the takeover recorded it, never turned SUCCESS by its late end, the second
    ends SUCCESS without an error, and each account is created once. ``idsync status``
    names the node of each run."""
    # Both runs held at 50 ms an object (the gate closed: 20 s for all) until the resumed node
    # has ended its job, however slow the machine: the second run works meanwhile.
    users = 400
    ports, nodes = _two_nodes(tmp_path, pg_url, users, "partitions = 1\n")
    try:
        _run_big(nodes, ports)
        first = wait_for(lambda: run_under_way(pg_url, 40), 120, "a run with some pages committed")
        paused = next(n for n in nodes if n.name == first.node)
        paused.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: select_rows(pg_url, f"SELECT 1 FROM recon_runs WHERE id <> '{first.id}' "
                                                 "AND state = 'ACTIVE'"), 60, "the job running again elsewhere")
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: paused.events("job.end"), 60, "the resumed node's end of its job")
        _let_go(nodes)
        wait_for(lambda: select_rows(pg_url, f"SELECT 1 FROM recon_runs WHERE id <> '{first.id}' "
                                             "AND state <> 'ACTIVE'"), 90, "the second run's end")
        codes = [n.stop(60) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert codes == [0, 0]
    runs = {r.id: r for r in select_rows(pg_url, "SELECT id, node, state, message, summary FROM recon_runs")}
    assert len(runs) == 2
    assert runs[first.id].state == "FAILED" and "interrupted" in runs[first.id].message
    (second,) = [r for r in runs.values() if r.id != first.id]
    assert second.state == "SUCCESS" and second.node != paused.name
    assert second.summary["changes"]["failed"] == 0, second.summary.get("errors")
    assert_each_account_created_once(pg_url, users)
    (taken,) = paused.events("recon.taken_over")
    assert taken["run_id"] == first.id and taken["state"] == "FAILED"
    assert cli_main(["-p", str(tmp_path / "project"), "status"]) == 0
    shown = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert paused.name in shown[first.id[:8]] and second.node in shown[second.id[:8]]
    # The job's end says its run failed, as recorded; nothing else went wrong on the resumed node.
    assert not [e for e in paused.events() if e["level"] == "error" and e["event"] != "job.end"]


def test_a_split_run_taken_over_counts_what_its_partitions_committed(tmp_path: Path, pg_url: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The node running a split recon (reading a partition itself) is paused while the other
    node reads a partition, for longer than ``stall_timeout``: its run is failed
    ("interrupted"). The failed run's summary (``idsync status RUN --json``)
    lists its partitions and counts what they committed: its creates are the run's
    successful CREATE audit rows. Before, it kept the zeros its node wrote when the
    partitions started, and no partitions."""
    users = 1000
    ports, nodes = _two_nodes(tmp_path, pg_url, users, "partitions = 4\nmin_partition_size = 100\nconcurrency = 1\n")
    try:
        _run_big(nodes, ports)
        busy, _, _ = _helper_under_way(nodes, pg_url)
        paused = next(n for n in nodes if n.name == busy.runner)
        paused.proc.send_signal(signal.SIGSTOP)
        _let_go(nodes)  # the other node's reads need not be slow while the takeover comes
        try:
            (first,) = wait_for(lambda: select_rows(pg_url, "SELECT id FROM recon_runs WHERE state = 'FAILED'"),
                                60, "the run taken over")
            wait_for(lambda: select_rows(pg_url, "SELECT 1 FROM recon_runs WHERE state = 'FAILED' "
                                                 "AND summary::jsonb ? 'partitions'"), 30, "the run's summary rebuilt")
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        # Resumed, its node finds the run ended elsewhere, and leaves its summary alone.
        wait_for(lambda: paused.events("recon.taken_over") or paused.events("recon.partition_lost"), 60,
                 "the resumed node's word that its run was taken over")
    finally:
        for n in nodes:
            n.kill()
    (created,) = select_rows(pg_url, "SELECT count(*) AS n FROM audit WHERE action = 'CREATE' "
                                     f"AND status = 'SUCCESS' AND run_id = '{first.id}'")
    assert cli_main(["-p", str(tmp_path / "project"), "status", first.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    summary = shown.get("summary", shown)
    parts = summary["partitions"]
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    assert {p["state"] for p in parts} <= {"SUCCESS", "CANCELED"} and "CANCELED" in {p["state"] for p in parts}
    assert created.n > 0 and summary["changes"]["created"] == created.n
    assert summary["situationSummary"]["ABSENT"] == created.n
    assert summary["progress"]["source"]["existing"]["processed"] == sum(p["processed"] for p in parts) >= created.n


def _pause_inside_a_transaction(node: Node, url: str) -> int:
    """SIGSTOP ``node`` while one of its store connections (``application_name``
    ``idsync:NODE``) is inside a transaction, which then stays open: that backend's pid."""
    for _ in range(200):
        node.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        rows = select_rows(url, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                f"'idsync:{node.name}' AND state = 'idle in transaction'")
        if rows:
            return int(rows[0].pid)
        node.proc.send_signal(signal.SIGCONT)
        time.sleep(0.01 * (1 + len(rows)))
    raise AssertionError("the node was never paused inside a transaction")


def test_a_helper_frozen_inside_a_transaction_has_it_ended_by_the_server(tmp_path: Path, pg_url: str) -> None:
    """A split recon's helper node paused (SIGSTOP) inside a page's transaction: its
    connection holds what the transaction locked (the run's row, the links of its page's
    sources), on which the other node, reading the partition again, would wait for as long
    as the pause lasts. PostgreSQL ends that transaction once it has been idle for twice
    ``stall_timeout`` (``idle_in_transaction_session_timeout``, set on a node's
    connections), the other node takes the partition over, and the run ends SUCCESS with
    each account created once; the helper, resumed, goes on working."""
    users = 600
    ports, nodes = _two_nodes(tmp_path, pg_url, users, "partitions = 2\nmin_partition_size = 100\nconcurrency = 1\n")
    try:
        _run_big(nodes, ports)
        busy, paused, other = _helper_under_way(nodes, pg_url)
        frozen = _pause_inside_a_transaction(paused, pg_url)
        try:
            # stall_timeout is 3 s here: the transaction ends after 6 s idle.
            wait_for(lambda: not select_rows(pg_url, f"SELECT 1 FROM pg_stat_activity WHERE pid = {frozen}"),
                     30, "the frozen transaction ended by the server")
            wait_for(lambda: select_rows(pg_url, f"SELECT 1 FROM recon_partitions WHERE part = {busy.part} "
                                                 f"AND state IN ('ACTIVE', 'SUCCESS') AND node = '{other.name}'"),
                     60, "the partition taken over by the other node")
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        _let_go(nodes)
        _run_ended_well(pg_url)
        _resumed_node_runs_alone(paused, other, ports[nodes.index(paused)], pg_url)
    finally:
        for n in nodes:
            n.kill()
    assert_each_account_created_once(pg_url, users)
