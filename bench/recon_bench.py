#!/usr/bin/env python3
"""Reconciliation benchmark: N generated LDAP users into the SQL identity store.

    .venv/bin/python bench/recon_bench.py [--users 100000] [--stores sqlite,postgresql] [--repeat 3]

Loads N inetOrgPerson entries with slapadd into a throwaway slapd, then, for each
store, runs ``idsync recon`` as a subprocess three times: the first recon (all
creates), a second with no change, and one after 1% of the entries changed. It
prints entries per second, the peak RSS and the CPU seconds of each run (idsync's
own, which a busy machine inflates far less than wall time), next to the floor on
the same data: ``ldapsearch -E pr=1000/noprompt`` paging everything into
/dev/null. With ``--repeat N`` the floor and each store's three recons run N
times (the store emptied in between) and the table gives the median and the
range. Figures on a shared machine are noisy: compare ratios within a run.
idsync's modules are compiled to bytecode first, as an installed package's are.
``--workers 1,0`` runs each store once per ``[recon] workers`` value (one process,
then one per core), so the table compares them in one run.

``--onward`` adds a second system to the project: a mapping from ``managed/user`` to
a CSV file, which every recon into the store carries its writes on to
(``OnwardPush``); the file is emptied with the store between rounds.

The store has a floor too: after each store's recons, the rows its first recon
wrote (objects, searchable values, links, claims, audit) are written again into
copies of those tables, indexes and all, a page of 1,000 users a transaction,
without the engine (``idsync_dev/store_floor.py``): what the database alone costs
for a first load, through idsync's own bulk path (rows converted as the engine
converts them: JSON, timestamps). ``--floor-by-table`` writes them again once more
per table, that table left out: what each table costs, by difference.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "devtools"))  # the test directory (not part of the package)

from idsync_dev.onward import add_onward_csv  # noqa: E402
from idsync_dev.sample_users import iter_sample_users_ldif  # noqa: E402
from idsync_dev.slapd import Slapd  # noqa: E402
from idsync_dev.stores import drop_idsync_tables  # noqa: E402

MAPPING = "systemLdapAccounts_managedUser"
# Own databases, so a test run on the same server cannot drop tables under the benchmark.
POSTGRES = os.environ.get("IDSYNC_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench")
_FLOOR = "store floor (the first recon's rows, no engine)"
_FLOOR_TABLES = ("managed_objects", "managed_properties", "links", "recon_claims", "audit")
MARIADB = os.environ.get("IDSYNC_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/idsync_bench")


def _timed(cmd: list[str], env: dict[str, str] | None = None,
           stdout: int | None = None) -> tuple[float, int, int, float]:
    """Wall seconds, peak RSS (MB), exit code and CPU seconds of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  command failed ({code}): {' '.join(cmd)}\n{err[-2000:]}", file=sys.stderr)
    return elapsed, usage.ru_maxrss // 1024, code, usage.ru_utime + usage.ru_stime


def _reset_store(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    server = create_engine(parsed.set(database="postgres" if parsed.get_backend_name() == "postgresql" else ""),
                           isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        if parsed.get_backend_name() == "postgresql":
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                {"d": parsed.database}).scalar():
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        else:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`"))
    server.dispose()
    drop_idsync_tables(url)


def _change_one_percent(ldap: Slapd, users: int, workdir: Path, round_: int) -> None:
    step = 100
    lines = []
    for i in range(0, users - 2, step):
        lines.append(f"dn: uid=user.{i},ou=People,{ldap.base_dn}\nchangetype: modify\n"
                     f"replace: telephoneNumber\ntelephoneNumber: +1 555 {round_} {i:07d}\n")
    path = workdir / "change.ldif"
    path.write_text("\n".join(lines))
    subprocess.run(["ldapmodify", "-x", "-H", ldap.url, "-D", ldap.admin_dn, "-w", ldap.admin_password,
                    "-f", str(path)], check=True, stdout=subprocess.DEVNULL)


def _store_floor(url: str, without: str | None = None) -> tuple[float, dict[str, int]]:
    """``store_floor`` in a process of its own: its seconds and rows written. In this
    process, the rows it reads would stay in this process's memory, and Linux counts a
    forked child's copy of it in the peak RSS of every recon started after."""
    path = os.pathsep.join([str(ROOT / "daemon"), str(ROOT / "devtools")])
    done = subprocess.run([sys.executable, "-m", "idsync_dev.store_floor", url, *([without] if without else [])],
                          capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": path})
    found = json.loads(done.stdout)
    return found["seconds"], found["written"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", default="", help="comma-separated `[recon] workers` values to run each "
                        "store with (e.g. 1,0: one process, then one per core); default: the configured")
    parser.add_argument("--onward", action="store_true",
                        help="add a mapping from managed/user to a CSV file, which each recon carries its writes on "
                        "to (no store floor then: the store holds two mappings' links)")
    parser.add_argument("--floor-by-table", action="store_true",
                        help="also write the store floor once with each of its tables left out: what each costs")
    parser.add_argument("--no-store-floor", dest="store_floor", action="store_false",
                        help="leave out the store's floor: the first recon's rows written again without the engine")
    args = parser.parse_args()
    idsync = str(Path(sys.executable).parent / "idsync")
    # As an installed package is (pip compiles it): where PYTHONDONTWRITEBYTECODE is set,
    # every run would otherwise compile idsync's modules again, 0.15-0.2 s of CPU a start.
    compileall.compile_dir(ROOT / "daemon" / "idsync", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="idsync-bench-"))
    rows: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    try:
        ldif = work / "users.ldif"
        t0 = time.perf_counter()
        with ldif.open("w") as f:
            f.writelines(iter_sample_users_ldif(args.users, "ou=People,dc=example,dc=com"))
        with Slapd(admin_password="bench-secret", tls=False, directory=work / "slapd") as ldap:
            ldap.bulk_load(ldif)
            print(f"loaded {args.users} users in {time.perf_counter() - t0:.1f}s; slapd at {ldap.url}")
            for _ in range(args.repeat):
                floor, rss, _, cpu = _timed(["ldapsearch", "-x", "-LLL", "-H", ldap.url, "-D", ldap.admin_dn,
                                        "-w", ldap.admin_password, "-b", f"ou=People,{ldap.base_dn}",
                                        "-E", "pr=1000/noprompt", "(objectClass=inetOrgPerson)"])
                rows.setdefault(("ldapsearch floor", "-"), []).append((floor, rss, cpu))
            stores = [s.strip() for s in args.stores.split(",") if s.strip()]
            workers = [w.strip() for w in args.workers.split(",") if w.strip()] or [""]
            variants = [(k, w) for k in stores for w in workers]
            for round_, (kind, count) in enumerate(variants * args.repeat):
                shown = kind if count == "" else f"{kind}, workers={count}"
                project = work / f"project-{kind}"
                shutil.rmtree(project, ignore_errors=True)
                shutil.copytree(ROOT / "conf", project / "conf")
                if args.onward:
                    add_onward_csv(project, work / f"onward-{kind}.csv")
                url = {"sqlite": f"sqlite:///{project / 'state' / 'idsync.db'}", "postgresql": POSTGRES,
                       "mariadb": MARIADB}[kind]
                if kind != "sqlite":
                    try:
                        _reset_store(url)
                    except Exception as exc:  # noqa: BLE001
                        print(f"skipping {kind}: {exc}")
                        continue
                # This checkout's idsync, whichever the virtualenv installed (a worktree of
                # another commit, run with the same venv, measures its own code).
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                           str(ROOT / "daemon"), os.environ.get("PYTHONPATH")])),
                       "IDSYNC_STORE__URL": url, "IDSYNC_LDAP_PORT": str(ldap.port),
                       "IDSYNC_LDAP_PASSWORD": ldap.admin_password, "IDSYNC_LOG__LEVEL": "warning",
                       "IDSYNC_RECON__PAGE_SIZE": str(args.page_size)}
                if count:
                    env["IDSYNC_RECON__WORKERS"] = count
                cmd = [idsync, "-p", str(project), "recon", MAPPING, "--quiet", "--json"]
                for label in ("first recon (creates)", "no-change recon", "after 1% changed"):
                    if label.startswith("after"):
                        _change_one_percent(ldap, args.users, work, round_)
                    seconds, rss, code, cpu = _timed(cmd, env=env)
                    rows.setdefault((label if code == 0 else f"{label} FAILED", shown), []).append((seconds, rss, cpu))
                    print(f"  {shown:<10} {label:<24} {seconds:7.1f} s  {args.users / seconds:9,.0f} entries/s  "
                          f"{rss:5d} MB  {cpu:6.1f} s CPU", flush=True)
                if args.store_floor and not args.onward and count in ("", workers[0]):
                    seconds, written = _store_floor(url)
                    rows.setdefault((_FLOOR, kind), []).append((seconds, 0, 0.0))
                    print(f"  {kind:<10} {_FLOOR}: {seconds:.1f} s for {written['managed_objects']:,} objects, "
                          f"{args.users / seconds:,.0f} entries/s", flush=True)
                    for table in _FLOOR_TABLES if args.floor_by_table else ():
                        seconds, _ = _store_floor(url, table)
                        rows.setdefault((f"{_FLOOR} without {table}", kind), []).append((seconds, 0, 0.0))
                        print(f"  {kind:<10} {_FLOOR} without {table}: {seconds:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.users:,} users, page size {args.page_size}, medians of {args.repeat} (range)\n")
    print("| run | store | seconds | entries/s | peak RSS | CPU s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (label, kind), runs in rows.items():
        seconds = statistics.median(s for s, _, _ in runs)
        fast, slow = min(s for s, _, _ in runs), max(s for s, _, _ in runs)
        spread = f" ({fast:.1f}-{slow:.1f})" if len(runs) > 1 else ""
        rate = f"{args.users / seconds:,.0f}" + (f" ({args.users / slow:,.0f}-{args.users / fast:,.0f})"
                                                 if len(runs) > 1 else "")
        cpu = statistics.median(c for _, _, c in runs)
        shown = ("-", "-") if label.startswith(_FLOOR) else (f"{max(r for _, r, _ in runs)} MB", f"{cpu:.1f}")
        print(f"| {label} | {kind} | {seconds:.1f}{spread} | {rate} | {shown[0]} | {shown[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
