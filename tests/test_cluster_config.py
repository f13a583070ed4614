"""Cluster nodes deployed with different files: each node writes a digest of each file of
its ``conf/`` and ``jobs.d/`` with its heartbeat, and the nodes say which files differ
(``cluster/fingerprint.py``). The nodes are ``idsync run`` subprocesses on one PostgreSQL
store (``cluster_env``)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from cluster_env import Node, cluster_project, fresh_store, wait_for
from dbs import store_url
from idsync.cli import main as cli_main

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return fresh_store(store_url("postgresql", tmp_path))


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
