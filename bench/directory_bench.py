#!/usr/bin/env python3
"""Reconciliation benchmark across directory servers: N generated users read from
OpenLDAP, 389 Directory Server and Active Directory (Samba) in one run, each next to
its own floor.

    .venv/bin/python bench/directory_bench.py [--users 100000] [--servers openldap,389ds,samba]

Each server gets the same N users, loaded offline (``slapadd``; ``ns-slapd ldif2db``;
for Samba, ``user`` objects added by ``ldbadd`` in batch mode into ``sam.ldb``, the
loaded domain cached in /var/cache/idsync-tests: the first run spends some minutes
there, later ones seconds), then ``ldapsearch -E pr=1000/noprompt`` pages through them
into /dev/null (the floor: what the server and libldap cost) and ``idsync recon``
creates them in a SQLite store, then runs again with no change. OpenLDAP runs the
example configuration (conf/); 389 DS the same, read as docs/389ds.md says
(``nsUniqueId`` ids, bound as the service account); Samba the Active Directory sample
(samples/sync-with-active-directory: ``objectGUID`` ids, ``memberOf``), bound as the
administrator, on the plain port like the others. Figures on a shared machine are
noisy: compare ratios within a run.
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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "devtools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from idsync_dev import samba_ad  # noqa: E402
from idsync_dev.dirsrv import DirSrv  # noqa: E402
from idsync_dev.samba_ad import SambaDC  # noqa: E402
from idsync_dev.sample_users import iter_sample_ad_users_ldif, iter_sample_users_ldif  # noqa: E402
from idsync_dev.slapd import Slapd  # noqa: E402
from recon_bench import MAPPING, _timed  # noqa: E402

PEOPLE = "ou=People,dc=example,dc=com"
AD_PEOPLE = f"OU=People,{samba_ad.BASE_DN}"


@dataclass
class Loaded:
    """A running server with the users: where to read them and how idsync is set up."""

    url: str
    bind_dn: str
    password: str
    base: str
    search_filter: str
    conf: Path
    changes: dict[str, Any]


@contextmanager
def _openldap(users: int, work: Path) -> Iterator[Loaded]:
    with Slapd(admin_password="bench-secret", tls=False, directory=work / "slapd") as server:
        server.bulk_load(_ldif(work / "users.ldif", iter_sample_users_ldif(users, PEOPLE)))
        yield Loaded(server.url, server.admin_dn, server.admin_password, PEOPLE, "(objectClass=inetOrgPerson)",
                     ROOT / "conf", {"port": str(server.port)})


@contextmanager
def _dirsrv(users: int, work: Path) -> Iterator[Loaded]:
    with DirSrv() as server:
        server.bulk_load(_ldif(work / "users.ldif", iter_sample_users_ldif(users, PEOPLE)))
        yield Loaded(server.url, server.service_dn, server.service_password, PEOPLE, "(objectClass=inetOrgPerson)",
                     ROOT / "conf", {"port": str(server.port), "principal": server.service_dn,
                                     "uidAttribute": "nsUniqueId"})


@contextmanager
def _samba(users: int, work: Path) -> Iterator[Loaded]:
    ou = f"dn: {AD_PEOPLE}\nobjectClass: organizationalUnit\n\n"
    ldif = _ldif(work / "ad-users.ldif", [ou, *iter_sample_ad_users_ldif(users, AD_PEOPLE, "idsync.test")])
    with SambaDC(preload=ldif) as server:
        yield Loaded(server.url, server.admin_dn, server.admin_password, AD_PEOPLE, "(objectCategory=person)",
                     ROOT / "samples" / "sync-with-active-directory" / "conf",
                     {"host": server.address, "port": server.port, "ssl": False,
                      "baseContextsToSynchronize": [AD_PEOPLE]})


def _ldif(path: Path, entries: Iterable[str]) -> Path:
    with path.open("w") as f:
        f.writelines(entries)
    path.chmod(0o644)
    return path


SERVERS = {"openldap": _openldap, "389ds": _dirsrv, "samba": _samba}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--servers", default="openldap,389ds,samba")
    args = parser.parse_args()
    idsync = str(Path(sys.executable).parent / "idsync")
    work = Path(tempfile.mkdtemp(prefix="idsync-dirbench-"))
    work.chmod(0o755)  # 389 DS's import runs as the dirsrv user
    rows: list[tuple[str, str, float, float]] = []
    try:
        for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
            started = time.perf_counter()
            with SERVERS[name](args.users, work) as loaded:
                print(f"{name}: loaded {args.users:,} users in {time.perf_counter() - started:.1f} s", flush=True)
                floor, _, _, cpu = _timed(["ldapsearch", "-x", "-LLL", "-H", loaded.url, "-D", loaded.bind_dn,
                                           "-w", loaded.password, "-b", loaded.base, "-E", "pr=1000/noprompt",
                                           loaded.search_filter], stdout=subprocess.DEVNULL)
                rows.append((name, "ldapsearch floor", floor, cpu))
                project = work / f"project-{name}"
                shutil.copytree(loaded.conf, project / "conf")
                prov_file = project / "conf" / "provisioner.openicf-ldap.json"
                prov = json.loads(prov_file.read_text())
                prov["configurationProperties"].update(loaded.changes)
                prov_file.write_text(json.dumps(prov))
                env = {**os.environ, "IDSYNC_STORE__URL": f"sqlite:///{project / 'idsync.db'}",
                       "IDSYNC_LDAP_PASSWORD": loaded.password, "IDSYNC_LOG__LEVEL": "warning"}
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
