#!/usr/bin/env python3
"""Cluster benchmark: the first recon of N generated LDAP users, one node against a split
recon on two nodes, in one run on one machine.

    .venv/bin/python bench/cluster_bench.py [--users 100000] [--nodes 2]
    .venv/bin/python bench/cluster_bench.py --compare [--users 200000] [--nodes 2]

Loads N inetOrgPerson entries into a throwaway slapd, then into an empty PostgreSQL
store (``IDSYNC_BENCH_CLUSTER_POSTGRES``, default database ``idsync_bench_cluster``):

1. one daemon's recon: ``idsync recon`` as a subprocess;
2. the same recon split over ``--nodes`` ``idsync run`` nodes in cluster mode, one queue
   slot each, triggered through the API of the first.

Each figure is the run's own duration as the store recorded it (start to end of the
recon run, process start-up excluded), next to the ``ldapsearch`` floor on the same
data. Figures on a shared machine are noisy: compare the ratio within one run.

``--compare`` checks results instead of timing them: one daemon (``idsync run-job`` on a
store of its own, ``IDSYNC_BENCH_CLUSTER_SINGLE``) and the split recon on ``--nodes``
nodes run the same three recons of the same directory: the first (all creates); one
after 1% of the users were deleted from LDAP (deletes, under ``max_deletes`` = 2%); one
after 4% more were (``max_deletes`` tripped: FAILED, nothing deleted). After each, both
stores must hold the same managed users (their data but ``_id`` and ``_rev``), the same
links (by source id), the same run states and audit counts per action and status. Exit
1 on any difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "devtools"))
sys.path.insert(0, str(ROOT / "tests"))

from api_server import ADMIN, ADMIN_HASH, free_port  # noqa: E402
from idsync_dev.slapd import Slapd, loaded_slapd  # noqa: E402
from recon_bench import MAPPING, _reset_store, _timed  # noqa: E402

IDSYNC = str(Path(sys.executable).parent / "idsync")
# A database of its own: recon_bench.py's, or a test run's, must not be dropped under it.
POSTGRES = os.environ.get("IDSYNC_BENCH_CLUSTER_POSTGRES",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench_cluster")
SINGLE = os.environ.get("IDSYNC_BENCH_CLUSTER_SINGLE",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench_cluster_single")


def _cpu() -> tuple[int, int]:
    """(busy, all) jiffies of the whole machine so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def _cores_busy(before: tuple[int, int]) -> float:
    """How many of the machine's cores were busy on average since ``before`` (every
    process: slapd, PostgreSQL and the nodes), the ceiling a second node runs into."""
    busy, total = _cpu()
    return (os.cpu_count() or 1) * (busy - before[0]) / max(1, total - before[1])


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


def _project(work: Path, name: str, cluster: str, job_extra: str = "") -> Path:
    project = work / name
    shutil.copytree(ROOT / "conf", project / "conf")
    for extra in (project / "conf").glob("mapping-*.json"):
        extra.unlink()
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "first.toml").write_text(f'schedule = "@yearly"\nmappings = ["{MAPPING}"]\n{job_extra}',
                                                     encoding="utf-8")
    (project / "conf" / "idsync.toml").write_text(f'state_dir = "state"\n{cluster}', encoding="utf-8")
    return project


@contextlib.contextmanager
def _nodes(project: Path, env: dict[str, str], count: int) -> Iterator[Callable[[], None]]:
    """``count`` nodes on ``project``; yields a function that triggers the job ``first``
    through the first node's API and returns when its run ended."""
    import httpx

    port = free_port()
    api = {"IDSYNC_API__ENABLED": "true", "IDSYNC_API__PORT": str(port),
           "IDSYNC_API__ACCOUNTS": json.dumps({"openidm-admin": ADMIN_HASH})}
    url = env["IDSYNC_STORE__URL"]
    procs = []
    try:
        for i in range(count):
            node_env = {**env, "IDSYNC_CLUSTER__NODE_NAME": f"node{i}", **(api if i == 0 else {})}
            procs.append(subprocess.Popen([IDSYNC, "-p", str(project), "run"], env=node_env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while True:
            try:
                alive = httpx.get(f"http://127.0.0.1:{port}/openidm/cluster", headers=ADMIN, timeout=5).json()
                if sum(n["alive"] for n in alive["result"]) == count:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the nodes did not start")
            time.sleep(0.5)

        def trigger() -> None:
            before = _runs(url)
            httpx.post(f"http://127.0.0.1:{port}/openidm/scheduler/job/first?_action=trigger", headers=ADMIN,
                       timeout=30).raise_for_status()
            while _runs(url) == before or _last_run(url)[0] == "ACTIVE":
                time.sleep(0.5)

        yield trigger
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def _runs(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM recon_runs")).scalar() or 0
    engine.dispose()
    return count


def _outcome(url: str) -> dict[str, Any]:
    """What a store holds: its managed users (a digest of their data but ids and revisions),
    its links (a digest of their source ids), each run's state and audit counts."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        users = conn.execute(text(
            "SELECT count(*), md5(string_agg((data::jsonb - '_id' - '_rev')::text, ',' "
            "ORDER BY data->>'userName')) FROM managed_objects WHERE object_type = 'user'")).one()
        links = conn.execute(text("SELECT count(*), md5(string_agg(source_id, ',' ORDER BY source_id)) "
                                  "FROM links")).one()
        runs = conn.execute(text("SELECT id, state FROM recon_runs ORDER BY started")).all()
        audit = [(state, sorted((a.action, a.status, a.n) for a in conn.execute(text(
            "SELECT action, status, count(*) AS n FROM audit WHERE run_id = :r GROUP BY 1, 2"), {"r": run_id})))
            for run_id, state in runs]
    engine.dispose()
    return {"users": tuple(users), "links": tuple(links), "runs": audit}


def _delete_users(ldap: Slapd, first: int, count: int) -> None:
    ldap.add_ldif("".join(f"dn: uid=user.{i},ou=People,{ldap.base_dn}\nchangetype: delete\n\n"
                          for i in range(first, first + count)))


def _compare(args: argparse.Namespace, ldap: Slapd, work: Path) -> int:
    """Three recons, one daemon against the split recon on the nodes: the same stores after each."""
    env = {**os.environ, "IDSYNC_LDAP_PORT": str(ldap.port), "IDSYNC_LDAP_PASSWORD": ldap.admin_password,
           "IDSYNC_LOG__LEVEL": "warning"}
    limit = f"max_deletes = {args.users // 50}\n"
    single = _project(work, "single", "", limit)
    split = _project(work, "cluster", "[cluster]\nenabled = true\nconcurrency = 1\nheartbeat = 1\n"
                                      f"stall_timeout = 5\npartitions = {args.nodes}\n"
                                      "min_partition_size = 1000\n", limit)
    for url in (SINGLE, POSTGRES):
        _reset_store(url)
    steps = [("first recon", 0, 0), ("1% deleted", 0, args.users // 100), ("4% more deleted (maxDeletes)",
                                                                         args.users // 100, args.users // 25)]
    differ = 0
    with _nodes(split, {**env, "IDSYNC_STORE__URL": POSTGRES}, args.nodes) as trigger:
        for label, first, count in steps:
            if count:
                _delete_users(ldap, first, count)
            started = time.monotonic()
            # Exit 1 on the last step: the run fails on maxDeletes, as it must.
            code = subprocess.run([IDSYNC, "-p", str(single), "run-job", "first"], capture_output=True,
                                  env={**env, "IDSYNC_STORE__URL": SINGLE}, check=False).returncode
            seconds, started = time.monotonic() - started, time.monotonic()
            trigger()
            ours, theirs = _outcome(POSTGRES), _outcome(SINGLE)
            same = ours == theirs
            differ += not same
            state, _, summary = _last_run(POSTGRES)
            print(f"{label}: one node {seconds:.1f} s (exit {code}), {args.nodes} nodes "
                  f"{time.monotonic() - started:.1f} s, {len(summary.get('partitions') or [])} partitions, "
                  f"{state}: {'same' if same else 'DIFFERENT'}", flush=True)
            if not same:
                print(f"  one node: {theirs}\n  cluster:  {ours}", flush=True)
    final = _outcome(POSTGRES)
    print(f"users {final['users'][0]}, links {final['links'][0]}, runs "
          f"{[state for state, _ in final['runs']]}")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--compare", action="store_true", help="check the split recon's results against "
                        "one daemon's, with deletes and a tripped maxDeletes, instead of timing it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="idsync-cluster-bench-"))
    results: list[tuple[str, str, float, float | None]] = []
    try:
        with loaded_slapd(args.users, work) as ldap:
            if args.compare:
                return _compare(args, ldap, work)
            floor, _, _, _ = _timed(["ldapsearch", "-x", "-LLL", "-H", ldap.url, "-D", ldap.admin_dn,
                                     "-w", ldap.admin_password, "-b", f"ou=People,{ldap.base_dn}",
                                     "-E", "pr=1000/noprompt", "(objectClass=inetOrgPerson)"])
            results.append(("ldapsearch floor", "-", floor, None))
            env = {**os.environ, "IDSYNC_STORE__URL": POSTGRES, "IDSYNC_LDAP_PORT": str(ldap.port),
                   "IDSYNC_LDAP_PASSWORD": ldap.admin_password, "IDSYNC_LOG__LEVEL": "warning"}
            _reset_store(POSTGRES)
            single = _project(work, "single", "")
            before = _cpu()
            _timed([IDSYNC, "-p", str(single), "recon", MAPPING, "--quiet", "--json"], env=env)
            cores = _cores_busy(before)
            state, seconds, _ = _last_run(POSTGRES)
            results.append(("one node", state, seconds, cores))
            print(f"one node: {state} in {seconds:.1f} s", flush=True)
            _reset_store(POSTGRES)
            split = _project(work, "cluster", "[cluster]\nenabled = true\nconcurrency = 1\nheartbeat = 1\n"
                                              f"stall_timeout = 3\npartitions = {args.nodes}\n"
                                              "min_partition_size = 1000\n")
            with _nodes(split, {**env, "IDSYNC_STORE__URL": POSTGRES}, args.nodes) as trigger:
                before = _cpu()
                trigger()
                cores = _cores_busy(before)
            state, seconds, summary = _last_run(POSTGRES)
            parts = summary.get("partitions") or []
            results.append((f"{args.nodes} nodes, {len(parts)} partitions", state, seconds, cores))
            print(f"{args.nodes} nodes: {state} in {seconds:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[1][2]
    print(f"\n{args.users:,} users, first recon (all creates) into PostgreSQL\n")
    print(f"| run | state | seconds | entries/s | speed-up | cores busy (of {os.cpu_count()}) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, state, seconds, cores in results:
        speed = f"{base / seconds:.2f}x" if label != "ldapsearch floor" else ""
        busy = f"{cores:.2f}" if cores is not None else ""
        print(f"| {label} | {state} | {seconds:.1f} | {args.users / seconds:,.0f} | {speed} | {busy} |")
    one = results[1][3] or 1.0
    print(f"\nOne node kept {one:.2f} of {os.cpu_count()} cores busy (slapd, PostgreSQL and idsync together): "
          f"a split recon on this machine can at best be {(os.cpu_count() or 1) / one:.2f}x as fast.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
