#!/usr/bin/env python3
"""Reconciliation benchmark across directory servers: N generated users read from
OpenLDAP and from 389 Directory Server in one run, each next to its own floor.

    .venv/bin/python bench/directory_bench.py [--users 100000] [--servers openldap,389ds]

Each server gets the same N inetOrgPerson entries, loaded offline (``slapadd``;
``ns-slapd ldif2db``), then ``ldapsearch -E pr=1000/noprompt`` pages through them
into /dev/null (the floor: what the server and libldap cost) and ``idsync recon``
of the example configuration (conf/) creates them in a SQLite store, then runs again
with no change. 389 DS is read as docs/389ds.md says: ``nsUniqueId`` ids, bound as
the service account. Active Directory is not in it: Samba adds about 150 users a
second here (``ldbadd`` offline is slower), so 100,000 would take most of an hour to load.
Figures on a shared machine are noisy: compare ratios within a run.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "devtools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idsync_dev.dirsrv import DirSrv  # noqa: E402
from idsync_dev.sample_users import iter_sample_users_ldif  # noqa: E402
from idsync_dev.slapd import Slapd  # noqa: E402
from recon_bench import MAPPING, _timed  # noqa: E402

PEOPLE = "ou=People,dc=example,dc=com"


@contextmanager
def _openldap(ldif: Path, work: Path) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """(URL, bind DN, password, provisioner changes) of a loaded slapd."""
    with Slapd(admin_password="bench-secret", tls=False, directory=work / "slapd") as server:
        server.bulk_load(ldif)
        yield server.url, server.admin_dn, server.admin_password, {"port": str(server.port)}


@contextmanager
def _dirsrv(ldif: Path, work: Path) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    with DirSrv() as server:
        server.bulk_load(ldif)
        yield server.url, server.service_dn, server.service_password, {
            "port": str(server.port), "principal": server.service_dn, "uidAttribute": "nsUniqueId"}


SERVERS = {"openldap": _openldap, "389ds": _dirsrv}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--servers", default="openldap,389ds")
    args = parser.parse_args()
    idsync = str(Path(sys.executable).parent / "idsync")
    work = Path(tempfile.mkdtemp(prefix="idsync-dirbench-"))
    work.chmod(0o755)  # 389 DS's import runs as the dirsrv user
    rows: list[tuple[str, str, float, float]] = []
    try:
        ldif = work / "users.ldif"
        with ldif.open("w") as f:
            f.writelines(iter_sample_users_ldif(args.users, PEOPLE))
        ldif.chmod(0o644)
        for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
            started = time.perf_counter()
            with SERVERS[name](ldif, work) as (url, bind_dn, password, changes):
                print(f"{name}: loaded {args.users:,} users in {time.perf_counter() - started:.1f} s", flush=True)
                floor, _, _, cpu = _timed(["ldapsearch", "-x", "-LLL", "-H", url, "-D", bind_dn, "-w", password,
                                           "-b", PEOPLE, "-E", "pr=1000/noprompt", "(objectClass=inetOrgPerson)"])
                rows.append((name, "ldapsearch floor", floor, cpu))
                project = work / f"project-{name}"
                shutil.copytree(ROOT / "conf", project / "conf")
                prov_file = project / "conf" / "provisioner.openicf-ldap.json"
                prov = json.loads(prov_file.read_text())
                prov["configurationProperties"].update(changes)
                prov_file.write_text(json.dumps(prov))
                env = {**os.environ, "IDSYNC_STORE__URL": f"sqlite:///{project / 'idsync.db'}",
                       "IDSYNC_LDAP_PASSWORD": password, "IDSYNC_LOG__LEVEL": "warning"}
                for label in ("first recon (creates)", "no-change recon"):
                    seconds, _, code, cpu = _timed([idsync, "-p", str(project), "recon", MAPPING, "--quiet", "--json"],
                                                   env=env)
                    rows.append((name, label if code == 0 else f"{label} FAILED", seconds, cpu))
                    print(f"  {label:<24} {seconds:7.1f} s  {args.users / seconds:9,.0f} entries/s", flush=True)
                stored = subprocess.run([idsync, "-p", str(project), "managed", "query", "user", "--fields", "_id"],
                                        env=env, capture_output=True, text=True, check=True).stdout
                print(f"  users in the store: {len(json.loads(stored)):,}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.users:,} users, SQLite store\n")
    print("| server | run | seconds | entries/s | idsync CPU s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, label, seconds, cpu in rows:
        print(f"| {name} | {label} | {seconds:.1f} | {args.users / seconds:,.0f} | {cpu:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
