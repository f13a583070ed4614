#!/usr/bin/env python3
"""The spools' cost: N entries put into an ``EntrySpool`` and read back, in process.

    .venv/bin/python bench/spool_bench.py [--entries 100000] [--repeat 5]

Each entry is shaped as a liveSync refresh spools an inetOrgPerson: its DN and a dozen
attributes of byte strings (a ``userPassword`` hash among them), some 600 bytes. The
entries go into the spool by ``put`` (held in memory while few, then in the temporary
file under ``SQLITE_TMPDIR``, ``TMPDIR`` or ``/var/tmp``) and are read back by ``items``;
then as many ids go through an ``IdSpool`` and are asked back. Printed: the CPU
seconds of each step, the best of ``--repeat`` and the median, per 100,000 entries.
Compare CPU seconds, not wall-clock ones, on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

from idsync.spool import EntrySpool, IdSpool  # noqa: E402


def _entry(n: int) -> tuple[str, dict[str, list[bytes]]]:
    uid = f"user{n:07d}"
    return (f"uid={uid},ou=People,dc=example,dc=com", {
        "uid": [uid.encode()], "cn": [f"User {n} Example".encode()], "sn": [b"Example"],
        "givenname": [f"User {n}".encode()], "mail": [f"{uid}@example.com".encode()],
        "telephonenumber": [f"+1 555 {n:07d}".encode()], "employeenumber": [str(n).encode()],
        "description": [f"Bulk change {n}: a description of ordinary length".encode()],
        "userpassword": [b"{SSHA}" + f"{n:032x}".encode() + b"Zm9vYmFyYmF6cXV4"],
        "objectclass": [b"top", b"person", b"organizationalPerson", b"inetOrgPerson"],
        "entryuuid": [f"{n:08x}-0000-4000-8000-000000000000".encode()],
        "modifytimestamp": [b"20261207235959Z"]})


def _cpu(step: Callable[[], Any]) -> float:
    start = time.process_time()
    step()
    return time.process_time() - start


def _put(spool: EntrySpool, entries: list[tuple[str, tuple[str, dict[str, list[bytes]]]]]) -> None:
    for key, entry in entries:
        spool.put(key, entry)


def _round(entries: list[tuple[str, tuple[str, dict[str, list[bytes]]]]]) -> dict[str, float]:
    spool = EntrySpool()
    ids = IdSpool()
    try:
        put = _cpu(lambda: _put(spool, entries))
        read = _cpu(lambda: sum(1 for _ in spool.items()))
        add = _cpu(lambda: ids.update(k for k, _ in entries))
        ask = _cpu(lambda: ids.absent([k for k, _ in entries]))
    finally:
        spool.close()
        ids.close()
    return {"entries put": put, "entries read": read, "ids added": add, "ids asked": ask}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    entries = [(f"{n:08x}-0000-4000-8000-000000000000", _entry(n)) for n in range(args.entries)]
    rounds = [_round(entries) for _ in range(args.repeat)]
    scale = 100_000 / args.entries
    for step in rounds[0]:
        times = [r[step] * scale for r in rounds]
        print(f"{step:14} best {min(times):6.3f} s  median {statistics.median(times):6.3f} s  (CPU, per 100,000)")


if __name__ == "__main__":
    main()
