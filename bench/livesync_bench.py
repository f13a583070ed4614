#!/usr/bin/env python3
"""liveSync benchmark: a large directory, a handful of changes, and an idle daemon.

    .venv/bin/python bench/livesync_bench.py [--users 100000] [--store sqlite] [--idle 60] [--bulk 20000]

Loads N inetOrgPerson entries with slapadd into a throwaway slapd that is a sync
provider (syncprov with a session log), then in one process:

1. the first liveSync of ``system/ldap/account`` (no token: a full recon of the
   mapping into the store, then the token);
2. 100 changes made with ldapmodify (70 modifies, 20 adds, 9 deletes, 1 rename),
   then one liveSync run: its wall time (from reading the changes to the token
   committed) and what it applied;
3. no-change liveSync runs: the median and worst of 20;

then, with ``--bulk N``, N users modified at once and the liveSync that applies them
(its wall time, this process's CPU time, and how much its peak RSS grew: a refresh is read to its
end before its first change is applied, into a spool on disk), and finally starts
``idsync run`` with a job running liveSync every 5 seconds and reads its CPU time
from /proc/PID/stat over ``--idle`` seconds with nothing
changing: the share of one core it holds while idle. Figures on a shared machine
are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "devtools"))  # the test helpers (not part of the package)

from idsync_dev.sample_users import iter_sample_users_ldif  # noqa: E402
from idsync_dev.slapd import Slapd  # noqa: E402

SOURCE = "system/ldap/account"
PEOPLE = "ou=People,dc=example,dc=com"


def _project(work: Path, ldap: Slapd, store_url: str) -> Path:
    """The repository's example project with only the two-way mappings of ``sync.json``."""
    project = work / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    for extra in (project / "conf").glob("mapping-*.json"):
        extra.unlink()
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{store_url}"\n[log]\nlevel = "warning"\n')
    os.environ.update(IDSYNC_LDAP_PORT=str(ldap.port), IDSYNC_LDAP_PASSWORD=ldap.admin_password)
    return project


def _changes(ldap: Slapd, users: int) -> None:
    """70 modifies, 20 adds, 9 deletes and a rename, spread over the directory."""
    step = max(users // 100, 1)
    records = []
    for i in range(70):
        records.append(f"dn: uid=user.{(i * step) % users},{PEOPLE}\nchangetype: modify\n"
                       f"replace: telephoneNumber\ntelephoneNumber: +1 555 {i:07d}\n")
    for i in range(20):
        records.append(f"dn: uid=new.{i},{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: new.{i}\n"
                       f"cn: New {i}\nsn: N{i}\ngivenName: New\nmail: new.{i}@example.com\n")
    for i in range(9):
        records.append(f"dn: uid=user.{(i * step + step // 2) % users},{PEOPLE}\nchangetype: delete\n")
    records.append(f"dn: uid=user.{users - 3},{PEOPLE}\nchangetype: modrdn\nnewrdn: uid=renamed.1\n"
                   "deleteoldrdn: 1\n")
    ldap.add_ldif("\n".join(records))


def _bulk(ldap: Slapd, users: int, count: int) -> None:
    """One new description on each of the first ``count`` users ``_changes`` left, in one ldapmodify."""
    step = max(users // 100, 1)
    gone = {(i * step + step // 2) % users for i in range(9)} | {users - 3}
    ldap.add_ldif("\n".join(f"dn: uid=user.{i},{PEOPLE}\nchangetype: modify\nreplace: description\n"
                            f"description: bulk {i}\n" for i in range(count + len(gone)) if i not in gone))


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (after state: fields 14 and 15 of stat)


def _idle_daemon(project: Path, seconds: float) -> tuple[float, int]:
    """Share of one core ``idsync run`` holds over ``seconds`` with a liveSync job every 5 s;
    the number of liveSync runs counted meanwhile."""
    from idsync.config.project import load_project
    from idsync.store.database import Store
    from idsync.store.tokens import SyncTokens

    (project / "jobs.d").mkdir(exist_ok=True)
    (project / "jobs.d" / "live.toml").write_text(f'schedule = "*/5 * * * * ?"\nlivesync = "{SOURCE}"\n'
                                                  'misfire = "skip"\n')
    loaded = load_project(project)
    tokens = SyncTokens(Store.open(loaded.settings.store_url()))
    before = _runs(tokens)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "idsync"), "-p", str(project), "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(12)  # start-up and the first fires: not idle yet
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), _cpu_ticks(proc.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), _cpu_ticks(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return (c1 - c0) / hz / (t1 - t0) * 100, _runs(tokens) - before


def _runs(tokens: Any) -> int:
    state = tokens.get(SOURCE)
    return state.runs if state is not None else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--store", default="sqlite",
                        help="sqlite, or the SQLAlchemy URL of a database the benchmark may empty")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle daemon to measure (0: skip)")
    parser.add_argument("--bulk", type=int, default=0,
                        help="then modify this many users at once and time the liveSync that applies them, "
                             "with the growth of this process's peak RSS (0: skip)")
    args = parser.parse_args()

    from idsync.config.project import load_project
    from idsync.log import configure_logging
    from idsync.managed.router import run_livesync_scripted
    from idsync.store.database import Store
    from idsync.sync.livesync import LiveSyncOptions

    configure_logging("console", "warning")
    work = Path(tempfile.mkdtemp(prefix="idsync-livesync-bench-"))
    try:
        ldif = work / "users.ldif"
        t0 = time.perf_counter()
        with ldif.open("w") as f:
            f.writelines(iter_sample_users_ldif(args.users, PEOPLE))
        with Slapd(admin_password="bench-secret", tls=False, directory=work / "slapd", session_log=10000) as ldap:
            ldap.bulk_load(ldif)
            print(f"loaded {args.users:,} users in {time.perf_counter() - t0:.1f} s; slapd at {ldap.url}")
            url = f"sqlite:///{work / 'idsync.db'}" if args.store == "sqlite" else args.store
            if args.store != "sqlite":
                from recon_bench import _reset_store  # a database of its own, emptied

                _reset_store(url)
            project = _project(work, ldap, url)
            loaded = load_project(project)
            store = Store.open(loaded.settings.store_url())

            t = time.perf_counter()
            first = run_livesync_scripted(loaded, store, SOURCE, LiveSyncOptions())
            print(f"first liveSync (full recon, then token): {first.state} in {time.perf_counter() - t:.1f} s")
            if first.state != "SUCCESS":
                print(first.message, file=sys.stderr)
                return 1

            _changes(ldap, args.users)
            t = time.perf_counter()
            applied = run_livesync_scripted(loaded, store, SOURCE, LiveSyncOptions())
            wall = time.perf_counter() - t
            counts = applied.runs[0]["counts"] if applied.runs else {}
            print(f"100 changes: {applied.state}, {applied.changes} read by {applied.method}, applied {counts} "
                  f"in {wall * 1000:.0f} ms wall ({applied.duration_ms} ms inside the run)")

            idle = []
            for _ in range(20):
                t = time.perf_counter()
                done = run_livesync_scripted(loaded, store, SOURCE, LiveSyncOptions())
                idle.append((time.perf_counter() - t) * 1000)
                assert done.changes == 0 and done.state == "SUCCESS", done.to_json()
            print(f"no-change liveSync: median {statistics.median(idle):.1f} ms, worst {max(idle):.1f} ms "
                  "(20 runs, in process)")

            if args.bulk > 0:
                _bulk(ldap, args.users, min(args.bulk, args.users - 10))
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                t, cpu = time.perf_counter(), time.process_time()
                done = run_livesync_scripted(loaded, store, SOURCE, LiveSyncOptions())
                took, cpu = time.perf_counter() - t, time.process_time() - cpu
                grown = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak, 0) / 1024
                print(f"bulk change of {args.bulk:,} users: {done.state}, {done.changes:,} read by {done.method} "
                      f"in {took:.1f} s ({done.changes / took:,.0f} changes/s, {cpu:.1f} CPU s in this process); "
                      f"peak RSS grew {grown:.0f} MB")

            if args.idle > 0:
                share, runs = _idle_daemon(project, args.idle)
                print(f"idle daemon, liveSync every 5 s: {share:.2f}% of one core over {args.idle:.0f} s "
                      f"({runs} liveSync runs)")
            print(json.dumps({"users": args.users, "store": args.store, "changes_wall_ms": round(wall * 1000),
                              "changes_run_ms": applied.duration_ms, "counts": counts,
                              "idle_median_ms": round(statistics.median(idle), 1),
                              "idle_worst_ms": round(max(idle), 1)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
