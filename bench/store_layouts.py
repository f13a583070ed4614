#!/usr/bin/env python3
"""What other layouts of the searchable values would cost a first recon's writes, in SQLite.

    .venv/bin/python bench/store_layouts.py [--users 100000] [--repeat 2]

Loads N generated users into a throwaway slapd and runs a first recon of the
example mapping into a new SQLite store, in this process. Then the rows that recon
left (objects, searchable values, links, audit, and a claim per object) are read
back and written again, with the standard library's ``sqlite3`` alone (no engine, no
SQLAlchemy), into new databases with the store's pragmas (16 KiB pages, WAL,
``synchronous=NORMAL``), a page of 1,000 objects a transaction as a recon writes
them, once per layout below and round after round, layouts taking turns, so that a
machine's changing speed falls on each alike. It prints each layout's seconds
(median and range) and file size:

- ``as is``: the store's schema (``managed_properties``, one row per searchable
  value, with its three indexes);
- ``values without the per-object index``: ``ix_managed_properties_object`` left out
  (what a store would save if it found an object's values another way);
- ``values without the lookup index``: ``ix_managed_properties_lookup`` left out;
- ``values without indexes``: the rows alone;
- ``expression indexes``: no ``managed_properties`` at all, but one index per
  searchable property on the objects' JSON (``json_extract(data, '$.NAME')``, partial
  on the type), the layout a store without a values table would need;
- ``no searchable values``: the floor under any layout of them.

Only writes and commits are timed. The figures are SQLite's own cost: a recon adds
its engine on top (``bench/recon_bench.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "devtools"))

from idsync_dev.slapd import loaded_slapd  # noqa: E402

MAPPING = "systemLdapAccounts_managedUser"
_PAGE = 1000
_PRAGMAS = ("PRAGMA page_size=16384", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
            "PRAGMA cache_size=-16384", "PRAGMA temp_store=MEMORY")
_LOOKUP = re.compile(r"CREATE INDEX ix_managed_properties_lookup [^;]*;")
_OBJECT = re.compile(r"CREATE INDEX ix_managed_properties_object [^;]*;")
_VALUES = re.compile(r"CREATE TABLE managed_properties .*?\);|CREATE INDEX ix_managed_properties_\w+ [^;]*;", re.S)


class _Rows:
    """The first recon's rows, read back from its store, and the store's schema."""

    def __init__(self, path: Path) -> None:
        db = sqlite3.connect(path)
        self.schema = ";\n".join(sql for (sql,) in db.execute(
            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")) + ";"
        self.objects = db.execute("SELECT * FROM managed_objects ORDER BY rowid").fetchall()
        self.values: dict[str, list[tuple[Any, ...]]] = {}
        for row in db.execute("SELECT object_type, object_id, name, value, value_num FROM managed_properties"):
            self.values.setdefault(row[1], []).append(row)
        self.names = sorted({r[2] for rows in self.values.values() for r in rows})
        self.links = db.execute("SELECT * FROM links ORDER BY rowid").fetchall()
        audit = [c[1] for c in db.execute("PRAGMA table_info(audit)") if c[1] != "seq"]
        self.audit_columns = ", ".join(audit)
        self.audit = db.execute(f"SELECT {self.audit_columns} FROM audit WHERE action = 'CREATE' "
                                "ORDER BY seq").fetchall()
        db.close()

    def write(self, path: Path, schema: str, values: bool) -> float:
        """Seconds to write every page into a new database at ``path`` of ``schema``."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        for pragma in _PRAGMAS:
            db.execute(pragma)
        db.executescript(schema)
        marks = {"audit": ", ".join("?" * len(self.audit_columns.split(", ")))}
        taken = 0.0
        for start in range(0, len(self.objects), _PAGE):
            page = self.objects[start:start + _PAGE]
            began = time.perf_counter()
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO managed_objects VALUES ({', '.join('?' * len(page[0]))})", page)
            if values:
                db.executemany("INSERT INTO managed_properties (object_type, object_id, name, value, value_num) "
                               "VALUES (?, ?, ?, ?, ?)", [v for o in page for v in self.values.get(o[1], ())])
            links = self.links[start:start + _PAGE]
            db.executemany(f"INSERT INTO links VALUES ({', '.join('?' * len(links[0]))})", links)
            db.executemany("INSERT INTO recon_claims VALUES (?, ?)", [("run", o[1]) for o in page])
            db.executemany(f"INSERT INTO audit ({self.audit_columns}) VALUES ({marks['audit']})",
                           self.audit[start:start + _PAGE])
            db.execute("COMMIT")
            taken += time.perf_counter() - began
        db.close()
        return taken


def _layouts(rows: _Rows) -> dict[str, tuple[Callable[[str], str], bool]]:
    """Each layout: how it changes the store's schema, and whether it writes value rows."""
    expression = "".join(f"CREATE INDEX ix_user_{n} ON managed_objects (json_extract(data, '$.{n}')) "
                         f"WHERE object_type = 'user';" for n in rows.names)
    return {
        "as is": (lambda s: s, True),
        "values without the per-object index": (lambda s: _OBJECT.sub("", s), True),
        "values without the lookup index": (lambda s: _LOOKUP.sub("", s), True),
        "values without indexes": (lambda s: _OBJECT.sub("", _LOOKUP.sub("", s)), True),
        "expression indexes": (lambda s: _VALUES.sub("", s) + expression, False),
        "no searchable values": (lambda s: _VALUES.sub("", s), False),
    }


def _first_recon(users: int, work: Path, port: int, password: str) -> Path:
    import logging

    import structlog
    from idsync.config.project import load_project
    from idsync.managed.router import run_recon_scripted
    from idsync.store.database import Store
    from idsync.sync.options import ReconOptions

    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    project = work / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    path = project / "state" / "idsync.db"
    os.environ.update(IDSYNC_STORE__URL=f"sqlite:///{path}", IDSYNC_LDAP_PORT=str(port), IDSYNC_LDAP_PASSWORD=password)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        result = run_recon_scripted(loaded, store, MAPPING, ReconOptions())
    finally:
        store.close()
    print(f"first recon of {users:,} users: {result.state}", flush=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="idsync-layouts-"))
    try:
        with loaded_slapd(args.users, work) as ldap:
            store = _first_recon(args.users, work, ldap.port, ldap.admin_password)
        rows = _Rows(store)
        layouts = _layouts(rows)
        seconds: dict[str, list[float]] = {name: [] for name in layouts}
        sizes: dict[str, int] = {}
        out = work / "layout.db"
        for round_ in range(args.repeat):
            for name, (change, values) in layouts.items():
                seconds[name].append(rows.write(out, change(rows.schema), values))
                sizes[name] = out.stat().st_size
                print(f"  round {round_ + 1}  {name:<38} {seconds[name][-1]:6.2f} s", flush=True)
        print(f"\n{args.users:,} users' first-recon rows written again with sqlite3, "
              f"medians of {args.repeat} (range)\n")
        print("| layout | seconds | entries/s | file |")
        print("| --- | ---: | ---: | ---: |")
        for name, taken in seconds.items():
            median = statistics.median(taken)
            print(f"| {name} | {median:.2f} ({min(taken):.2f}-{max(taken):.2f}) | {args.users / median:,.0f} | "
                  f"{sizes[name] / 1e6:.0f} MB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":  # the listing's fork server imports this module again
    raise SystemExit(main())
