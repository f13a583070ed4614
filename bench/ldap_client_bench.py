#!/usr/bin/env python3
"""LDAP client benchmark: what reading and writing costs the client, per library.

    .venv/bin/python bench/ldap_client_bench.py [--users 50000] [--writes 2000] [--repeat 3]

Loads N generated users into a throwaway slapd, then, in one run on the same data:

* reads every user, all attributes and the 8 a mapping reads, paged by 1000, with
  ``ldapsearch`` (the floor), with idsync's connector (python-ldap, pages asked for
  ahead), with python-ldap's plain synchronous paging, and with ldap3;
* modifies ``--writes`` entries (one replace each), with ldap3 and with python-ldap.

It prints the median wall and client CPU seconds of each (CPU as a multiple of
``ldapsearch``'s). Client CPU is what the library costs; wall also counts slapd.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "devtools"))

import ldap  # noqa: E402
import ldap3  # noqa: E402
from idsync.connectors.ldap.connector import LdapSystem  # noqa: E402
from idsync.resource import QuerySpec  # noqa: E402
from idsync_dev.sample_users import iter_sample_users_ldif  # noqa: E402
from idsync_dev.slapd import Slapd  # noqa: E402
from ldap.controls import SimplePagedResultsControl  # noqa: E402

BASE = "ou=People,dc=example,dc=com"
FILTER = "(objectClass=inetOrgPerson)"
MAPPED = ["entryUUID", "uid", "cn", "sn", "givenName", "mail", "telephoneNumber", "description"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(work: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """Median wall and client CPU seconds of ``work``, and what it returned."""
    walls, cpus, count = [], [], 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu()
        count = work()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus), count


def _ldapsearch(server: Slapd, attributes: list[str]) -> Callable[[], int]:
    def run() -> int:
        subprocess.run(["ldapsearch", "-x", "-LLL", "-H", server.url, "-D", server.admin_dn, "-w",
                        server.admin_password, "-b", BASE, "-E", "pr=1000/noprompt", FILTER, *attributes],
                       check=True, stdout=subprocess.DEVNULL)
        return 0
    return run


def _child_cpu(run: Callable[[], int]) -> Callable[[], float]:
    def measure() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return measure


def _connector(server: Slapd, fields: list[str] | None) -> Callable[[], int]:
    config = {
        "configurationProperties": {
            "host": "127.0.0.1", "port": server.port, "principal": server.admin_dn,
            "credentials": server.admin_password, "baseContexts": [BASE], "blockSize": 1000},
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            name: {"type": "string"} for name in MAPPED[1:]} | {
            "employeeType": {"type": "array"}, "objectClass": {"type": "array"}}}},
    }

    def run() -> int:
        system = LdapSystem("ldap", config, file="bench")
        try:
            return sum(len(page) for page in system.resource("account").pages(QuerySpec(fields=fields)))
        finally:
            system.close()
    return run


def _python_ldap(server: Slapd, attributes: list[str] | None) -> Callable[[], int]:
    def run() -> int:
        conn = ldap.initialize(server.url)
        conn.simple_bind_s(server.admin_dn, server.admin_password)
        control, count = SimplePagedResultsControl(True, size=1000, cookie=b""), 0
        while True:
            msgid = conn.search_ext(BASE, ldap.SCOPE_SUBTREE, FILTER, attributes, serverctrls=[control])
            _, data, _, controls = conn.result3(msgid, resp_ctrl_classes={control.controlType: type(control)})
            count += len(data)
            cookie = next((c.cookie for c in controls if c.controlType == control.controlType), b"")
            if not cookie:
                conn.unbind_s()
                return count
            control.cookie = cookie
    return run


def _ldap3(server: Slapd, attributes: list[str] | str) -> Callable[[], int]:
    def run() -> int:
        conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), server.admin_dn,
                                server.admin_password, auto_bind=True)
        count = sum(1 for _ in conn.extend.standard.paged_search(BASE, FILTER, attributes=attributes,
                                                                 paged_size=1000, generator=True))
        conn.unbind()
        return count
    return run


def _writes_ldap3(server: Slapd, dns: list[str]) -> Callable[[], int]:
    def run() -> int:
        conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), server.admin_dn,
                                server.admin_password, auto_bind=True)
        for n, dn in enumerate(dns):
            conn.modify(dn, {"description": [(ldap3.MODIFY_REPLACE, [f"ldap3 write {n}"])]})
        conn.unbind()
        return len(dns)
    return run


def _writes_python_ldap(server: Slapd, dns: list[str]) -> Callable[[], int]:
    def run() -> int:
        conn = ldap.initialize(server.url)
        conn.simple_bind_s(server.admin_dn, server.admin_password)
        for n, dn in enumerate(dns):
            conn.modify_ext_s(dn, [(ldap.MOD_REPLACE, "description", [f"python-ldap write {n}".encode()])])
        conn.unbind_s()
        return len(dns)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="idsync-ldap-bench-"))
    rows: list[tuple[str, float, float, float]] = []
    try:
        ldif = work / "users.ldif"
        with ldif.open("w") as f:
            f.writelines(iter_sample_users_ldif(args.users, BASE))
        with Slapd(admin_password="bench-secret", tls=False, directory=work / "slapd") as server:
            server.bulk_load(ldif)
            print(f"{args.users:,} users in slapd at {server.url}; medians of {args.repeat} runs")
            for label, attrs, fields in (("all attributes", [], None), ("8 attributes", MAPPED, MAPPED[1:])):
                floor_cpu = statistics.median(_child_cpu(_ldapsearch(server, attrs))() for _ in range(args.repeat))
                floor_wall, _, _ = _measure(_ldapsearch(server, attrs), args.repeat)
                rows.append((f"read, {label}: ldapsearch", floor_wall, floor_cpu, 1.0))
                for name, run in (("idsync connector (python-ldap, prefetch)", _connector(server, fields)),
                                  ("python-ldap, synchronous pages", _python_ldap(server, attrs or None)),
                                  ("ldap3 paged_search", _ldap3(server, attrs or ldap3.ALL_ATTRIBUTES))):
                    wall, cpu, count = _measure(run, args.repeat)
                    assert count == args.users, (name, count)
                    rows.append((f"read, {label}: {name}", wall, cpu, cpu / floor_cpu))
                    print(f"  {rows[-1][0]:<62} {wall:6.2f} s wall {cpu:6.2f} s CPU")
            dns = [f"uid=user.{i},{BASE}" for i in range(min(args.writes, args.users - 2))]
            for name, run in (("ldap3", _writes_ldap3(server, dns)), ("python-ldap", _writes_python_ldap(server, dns))):
                wall, cpu, count = _measure(run, args.repeat)
                rows.append((f"{count:,} modifies: {name}", wall, cpu, 0.0))
                print(f"  {rows[-1][0]:<62} {wall:6.2f} s wall {cpu:6.2f} s CPU")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.users:,} users, {os.cpu_count()} CPUs\n")
    print("| what | wall s | client CPU s | CPU / ldapsearch |")
    print("| --- | ---: | ---: | ---: |")
    for label, wall, cpu, ratio in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {f'{ratio:.1f}x' if ratio else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
