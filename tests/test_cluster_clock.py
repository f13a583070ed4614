"""Cluster nodes whose clocks disagree: whether a node is alive is judged on the store's
clock, never on one node's own. A node's clock is set ahead with libfaketime (the
``libfaketime`` Debian package), the test skipped where it is not installed; the nodes are
``idsync run`` subprocesses on one PostgreSQL store (``cluster_env``)."""

from __future__ import annotations

import json
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
    run_under_way,
    select_rows,
    trigger,
    wait_for,
)
from dbs import store_url
from idsync.cli import main as cli_main

pytestmark = pytest.mark.postgresql

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return fresh_store(store_url("postgresql", tmp_path))


def _beats(url: str, name: str, seen: set[Any]) -> set[Any]:
    """``seen`` with the time node ``name`` last beat added (None before it joined)."""
    seen.update(r.seen for r in select_rows(url, f"SELECT seen FROM cluster_nodes WHERE name = '{name}'"))
    return seen


def _nodes(project: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, bool]:
    """``idsync status --nodes --json``: each node's name and whether it is alive."""
    assert cli_main(["-p", str(project), "status", "--nodes", "--json"]) == 0
    return {n["name"]: n["alive"] for n in json.loads(capsys.readouterr().out)}


@pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed (apt-get install libfaketime)")
def test_a_node_whose_clock_is_ahead_takes_no_one_for_dead(tmp_path: Path, pg_url: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A node whose clock runs 30 s ahead (``stall_timeout`` 3 s) joins while another node
    runs a recon: it does not take the other for dead (the run is not interrupted and ends
    SUCCESS on its node, no ``cluster.run_taken_over``), ``idsync status --nodes`` shows both
    alive, and once the node ahead is killed it shows it gone within ``stall_timeout`` and
    a heartbeat, not 30 s later."""
    users = 600
    # 100 ms per object (a minute's run) until the node ahead has judged the others at three
    # of its beats, however late it started; none after.
    project = cluster_project(tmp_path / "project", pg_url, {"big": "@yearly"}, mapping={"properties": gated(100)},
                              job_extra="page_size = 20\n", cluster="partitions = 1\n")
    add_managed_users(project, users)
    port = free_port()
    first = api_node(project, "n0", port)
    nodes = [first]
    try:
        wait_for(lambda: first.events("daemon.start") and api_up(port), 60, "the first node started")
        trigger(port, "big")
        run = wait_for(lambda: run_under_way(pg_url, 20), 60, "the first node's run under way")
        ahead = Node(project, "n1", LD_PRELOAD=str(FAKETIME), FAKETIME="+30s", FAKETIME_DONT_FAKE_MONOTONIC="1")
        nodes.append(ahead)
        wait_for(lambda: ahead.events("daemon.start"), 120, "the node ahead started")
        beats: set[Any] = set()
        wait_for(lambda: len(_beats(pg_url, "n1", beats)) >= 3, 60, "three beats of the node ahead")
        Gate(project).open()
        wait_for(lambda: select_rows(pg_url, f"SELECT 1 FROM recon_runs WHERE id = '{run.id}' AND state <> 'ACTIVE'"),
                 120, "the run's end")
        alive = _nodes(project, capsys)
        ahead.kill()
        killed = time.monotonic()
        # Looked at every half second: shown gone once stall_timeout (3 s) and a heartbeat have
        # passed. Judged by the node's own clock (30 s ahead), it would show alive 30 s longer.
        # A test slowed by a loaded machine only looks later, which shows the node gone all the same.

        def gone_or_late() -> bool:
            return not _nodes(project, capsys)["n1"] or time.monotonic() - killed > 30

        wait_for(gone_or_late, 60, "the killed node shown gone", interval=0.5)
        looked_after = time.monotonic() - killed
        gone = not _nodes(project, capsys)["n1"]
        assert first.stop(60) == 0
    finally:
        for n in nodes:
            n.kill()
    (ended,) = select_rows(pg_url, f"SELECT node, state, message FROM recon_runs WHERE id = '{run.id}'")
    assert (ended.node, ended.state, ended.message) == ("n0", "SUCCESS", None)
    assert not ahead.events("cluster.run_taken_over") and not first.events("cluster.run_taken_over")
    assert alive == {"n0": True, "n1": True}
    assert gone and looked_after < 30, looked_after  # shown gone well before the node's clock would say so
    assert_each_account_created_once(pg_url, users)
