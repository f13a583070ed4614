#!/usr/bin/env python3
"""CPU seconds of a recon, in process: what a busy machine inflates least.

    .venv/bin/python bench/recon_cpu.py [--users 20000] [--stores sqlite,postgresql] [--repeat 2]

Loads N generated users into a throwaway slapd, then per store runs, in this
process, a first recon (all creates) and two no-change recons of the example
mapping, and prints the CPU seconds per 10,000 entries of this process (the
engine; the listing process is not in it) and, for PostgreSQL, of the server
processes serving this process's connections (read from /proc). Process
start-up is left out. Wall seconds are printed too, but on a shared machine
only the CPU figures compare from one run to the next.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "devtools"))

from idsync_dev.slapd import loaded_slapd  # noqa: E402
from idsync_dev.stores import drop_idsync_tables  # noqa: E402

MAPPING = "systemLdapAccounts_managedUser"
POSTGRES = os.environ.get("IDSYNC_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench")


def _server_cpu(store: Any) -> float:
    """CPU seconds so far of the PostgreSQL backends of this database (0 elsewhere)."""
    if store.dialect != "postgresql":
        return 0.0
    from sqlalchemy import text

    with store.engine.connect() as conn:
        pids = [r[0] for r in conn.execute(text("SELECT pid FROM pg_stat_activity "
                                                "WHERE datname = current_database()"))]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # not on this machine, or gone
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _store_rounds(kind: str, users: int, work: Path, port: int, password: str) -> None:
    from idsync.config.project import load_project
    from idsync.managed.router import run_recon_scripted
    from idsync.store.database import Store
    from idsync.sync.options import ReconOptions

    project = work / f"project-{kind}"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(ROOT / "conf", project / "conf")
    url = f"sqlite:///{project / 'state' / 'idsync.db'}" if kind == "sqlite" else POSTGRES
    if kind != "sqlite":
        drop_idsync_tables(url)
    os.environ.update(IDSYNC_STORE__URL=url, IDSYNC_LDAP_PORT=str(port), IDSYNC_LDAP_PASSWORD=password)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        for label in ("first recon (creates)", "no-change recon", "no-change recon"):
            server, cpu, wall = _server_cpu(store), time.process_time(), time.perf_counter()
            result = run_recon_scripted(loaded, store, MAPPING, ReconOptions())
            cpu, wall, server = time.process_time() - cpu, time.perf_counter() - wall, _server_cpu(store) - server
            shown = f"  server {server * 10_000 / users:5.2f} s/10k" if kind != "sqlite" else ""
            print(f"{kind:<10} {label:<22} engine {cpu * 10_000 / users:5.2f} s/10k{shown}  "
                  f"wall {wall:6.1f} s  {result.state}", flush=True)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    import logging

    import structlog

    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = Path(tempfile.mkdtemp(prefix="idsync-cpu-"))
    try:
        with loaded_slapd(args.users, work) as ldap:
            for _ in range(args.repeat):
                for kind in (s.strip() for s in args.stores.split(",") if s.strip()):
                    _store_rounds(kind, args.users, work, ldap.port, ldap.admin_password)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":  # the listing's fork server imports this module again
    raise SystemExit(main())
