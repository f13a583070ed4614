#!/usr/bin/env python3
"""A system query walked page by page through the API: N generated LDAP users.

    .venv/bin/python bench/api_paging_bench.py [--users 20000] [--page-size 1000] [--repeat 3] [--trees A,B]

Loads N inetOrgPerson entries with slapadd into a throwaway slapd, then walks
``GET /openidm/system/ldap/account`` by ``_pagedResultsCookie`` from the first page to
the last, twice: ``_queryId=query-all-ids`` (ids only) and ``_queryFilter=uid sw "user."``
with every field. The API is the tests' server (``tests/api_server.py``: the daemon's
``ApiServer`` in a thread), started in a child process for each walk. ``--trees`` names
source trees (checkouts of idsync, this one by default) whose code serves the walks,
one after the other in each round, so two versions compare under the same load. It
prints each walk's seconds, pages, the CPU seconds of the serving process (a listing
read in a second process, ``connectors/ldap/listing.py``, is not counted there) and
slapd's CPU seconds during the walk (what the directory did: it grows with the entries
it sends, and moves far less than wall time on a busy machine), and the median of the
rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
_QUERIES = {"query-all-ids": "_queryId=query-all-ids", "filter, all fields": "_queryFilter=uid+sw+%22user.%22"}


def _walk(project: Path, query: str, page_size: int) -> None:
    """In the child: serve the API over ``project``, walk ``query`` by cookie, print the figures."""
    from api_server import ADMIN, serve

    with serve(project) as api:
        started, cpu = time.perf_counter(), time.process_time()
        url = f"/openidm/system/ldap/account?{query}&_pageSize={page_size}"
        cookie, pages, entries = None, 0, 0
        while True:
            answer = api.get(url + (f"&_pagedResultsCookie={quote(cookie)}" if cookie else ""), headers=ADMIN)
            answer.raise_for_status()
            page = answer.json()
            pages, entries = pages + 1, entries + page["resultCount"]
            cookie = page["pagedResultsCookie"]
            if cookie is None:
                break
        print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                          "pages": pages, "entries": entries}))


def _cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(runs: dict[tuple[str, str], list[dict[str, float]]]) -> str:
    """The walks' medians as a Markdown table, a row per tree and query."""
    lines = ["| tree | query | seconds | CPU s | slapd CPU s |", "| --- | --- | ---: | ---: | ---: |"]
    for (tree, label), figures in runs.items():
        median = {name: statistics.median(f[name] for f in figures) for name in ("seconds", "cpu", "slapd")}
        spread = min(f["seconds"] for f in figures), max(f["seconds"] for f in figures)
        lines.append(f"| {Path(tree).name} | {label} | {median['seconds']:.2f} ({spread[0]:.2f}-{spread[1]:.2f}) "
                     f"| {median['cpu']:.2f} | {median['slapd']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trees", default=str(ROOT), help="comma-separated idsync source trees to compare")
    parser.add_argument("--walk", nargs=2, metavar=("PROJECT", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.walk:
        _walk(Path(args.walk[0]), args.walk[1], args.page_size)
        return 0
    sys.path.insert(0, str(ROOT / "devtools"))
    from idsync_dev.slapd import loaded_slapd

    trees = [Path(t).resolve() for t in args.trees.split(",") if t.strip()]
    work = Path(tempfile.mkdtemp(prefix="idsync-paging-bench-"))
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        t0 = time.perf_counter()
        with loaded_slapd(args.users, work) as ldap:
            print(f"loaded {args.users:,} users in {time.perf_counter() - t0:.1f}s; slapd at {ldap.url}", flush=True)
            slapd_pid = int((ldap.directory / "run" / "slapd.pid").read_text())
            project = work / "project"
            shutil.copytree(ROOT / "conf", project / "conf")
            base = {"IDSYNC_STORE__URL": f"sqlite:///{project / 'state' / 'idsync.db'}",
                    "IDSYNC_LDAP_PORT": str(ldap.port), "IDSYNC_LDAP_PASSWORD": ldap.admin_password,
                    "IDSYNC_LOG__LEVEL": "warning"}
            for round_ in range(args.repeat):
                for tree in trees:
                    env = {**os.environ, **base, "PYTHONPATH": os.pathsep.join(
                        str(tree / d) for d in ("daemon", "devtools", "tests"))}
                    for label, query in _QUERIES.items():
                        directory = _cpu(slapd_pid)
                        out = subprocess.run([sys.executable, __file__, "--page-size", str(args.page_size),
                                              "--walk", str(project), query], env=env, check=True,
                                             capture_output=True, text=True).stdout
                        figures = json.loads(out.strip().splitlines()[-1])
                        figures["slapd"] = _cpu(slapd_pid) - directory
                        runs.setdefault((str(tree), label), []).append(figures)
                        print(f"  round {round_ + 1} {tree.name:<20} {label:<20} {figures['seconds']:7.2f} s "
                              f"{figures['cpu']:7.2f} s CPU {figures['slapd']:7.2f} s slapd CPU  "
                              f"{figures['pages']} pages, {figures['entries']:,} entries", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.users:,} entries, _pageSize={args.page_size}, medians of {args.repeat} (range)\n")
    print(_summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
