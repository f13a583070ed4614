#!/usr/bin/env python3
"""Cluster benchmark: the first recon of N generated LDAP users, one node against a split
recon on two nodes, in one run on one machine.

    .venv/bin/python bench/cluster_bench.py [--users 100000] [--nodes 2]

Loads N inetOrgPerson entries into a throwaway slapd, then into an empty PostgreSQL
store (``IDSYNC_BENCH_CLUSTER_POSTGRES``, default database ``idsync_bench_cluster``):

1. one daemon's recon: ``idsync recon`` as a subprocess;
2. the same recon split over ``--nodes`` ``idsync run`` nodes in cluster mode, one queue
   slot each, triggered through the API of the first.

Each figure is the run's own duration as the store recorded it (start to end of the
recon run, process start-up excluded), next to the ``ldapsearch`` floor on the same
data. Figures on a shared machine are noisy: compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "devtools"))
sys.path.insert(0, str(ROOT / "tests"))

from api_server import ADMIN, ADMIN_HASH, free_port  # noqa: E402
from idsync_dev.slapd import loaded_slapd  # noqa: E402
from recon_bench import MAPPING, _reset_store, _timed  # noqa: E402

IDSYNC = str(Path(sys.executable).parent / "idsync")
# A database of its own: recon_bench.py's, or a test run's, must not be dropped under it.
POSTGRES = os.environ.get("IDSYNC_BENCH_CLUSTER_POSTGRES",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench_cluster")


def _last_run(url: str) -> tuple[str, float, dict[str, Any]]:
    """The latest run's state, seconds (so far) and summary; ("NONE", 0, {}) before the first."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT state, started, ended, summary FROM recon_runs "
                                "ORDER BY started DESC LIMIT 1")).first()
    engine.dispose()
    if row is None:
        return "NONE", 0.0, {}
    ended = row.ended or row.started
    return row.state, (ended - row.started).total_seconds(), row.summary


def _project(work: Path, name: str, cluster: str) -> Path:
    project = work / name
    shutil.copytree(ROOT / "conf", project / "conf")
    for extra in (project / "conf").glob("mapping-*.json"):
        extra.unlink()
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "first.toml").write_text(f'schedule = "@yearly"\nmappings = ["{MAPPING}"]\n',
                                                     encoding="utf-8")
    (project / "conf" / "idsync.toml").write_text(f'state_dir = "state"\n{cluster}', encoding="utf-8")
    return project


def _cluster_run(project: Path, env: dict[str, str], url: str, nodes: int) -> None:
    import httpx

    port = free_port()
    api = {"IDSYNC_API__ENABLED": "true", "IDSYNC_API__PORT": str(port),
           "IDSYNC_API__ACCOUNTS": json.dumps({"openidm-admin": ADMIN_HASH})}
    procs = []
    try:
        for i in range(nodes):
            node_env = {**env, "IDSYNC_CLUSTER__NODE_NAME": f"node{i}", **(api if i == 0 else {})}
            procs.append(subprocess.Popen([IDSYNC, "-p", str(project), "run"], env=node_env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            try:
                alive = httpx.get(f"http://127.0.0.1:{port}/openidm/cluster", headers=ADMIN, timeout=5).json()
                if sum(n["alive"] for n in alive["result"]) == nodes:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the nodes did not start")
            time.sleep(0.5)
        httpx.post(f"http://127.0.0.1:{port}/openidm/scheduler/job/first?_action=trigger", headers=ADMIN,
                   timeout=30).raise_for_status()
        while _last_run(url)[0] in ("NONE", "ACTIVE"):
            time.sleep(0.5)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="idsync-cluster-bench-"))
    results: list[tuple[str, str, float]] = []
    try:
        with loaded_slapd(args.users, work) as ldap:
            floor, _, _, _ = _timed(["ldapsearch", "-x", "-LLL", "-H", ldap.url, "-D", ldap.admin_dn,
                                     "-w", ldap.admin_password, "-b", f"ou=People,{ldap.base_dn}",
                                     "-E", "pr=1000/noprompt", "(objectClass=inetOrgPerson)"])
            results.append(("ldapsearch floor", "-", floor))
            env = {**os.environ, "IDSYNC_STORE__URL": POSTGRES, "IDSYNC_LDAP_PORT": str(ldap.port),
                   "IDSYNC_LDAP_PASSWORD": ldap.admin_password, "IDSYNC_LOG__LEVEL": "warning"}
            _reset_store(POSTGRES)
            single = _project(work, "single", "")
            _timed([IDSYNC, "-p", str(single), "recon", MAPPING, "--quiet", "--json"], env=env)
            state, seconds, _ = _last_run(POSTGRES)
            results.append(("one node", state, seconds))
            print(f"one node: {state} in {seconds:.1f} s", flush=True)
            _reset_store(POSTGRES)
            split = _project(work, "cluster", "[cluster]\nenabled = true\nconcurrency = 1\nheartbeat = 1\n"
                                              f"stall_timeout = 3\npartitions = {args.nodes}\n"
                                              "min_partition_size = 1000\n")
            _cluster_run(split, env, POSTGRES, args.nodes)
            state, seconds, summary = _last_run(POSTGRES)
            parts = summary.get("partitions") or []
            results.append((f"{args.nodes} nodes, {len(parts)} partitions", state, seconds))
            print(f"{args.nodes} nodes: {state} in {seconds:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[1][2]
    print(f"\n{args.users:,} users, first recon (all creates) into PostgreSQL\n")
    print("| run | state | seconds | entries/s | speed-up |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, state, seconds in results:
        speed = f"{base / seconds:.2f}x" if label != "ldapsearch floor" else ""
        print(f"| {label} | {state} | {seconds:.1f} | {args.users / seconds:,.0f} | {speed} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
