"""Database Table connector's benchmark: N generated users in a table of PostgreSQL
(and MariaDB with ``--mariadb``), reconciled into a SQLite store by ``idsync recon`` (a
subprocess): the first recon (all creates) and one with no change; then the store out
to a new table (creates) and a no-change run of that. The floor is the same table read
once by the driver alone (``SELECT`` of every row, fetched in batches of 1,000).

    .venv/bin/python bench/dbtable_bench.py [--users 100000] [--mariadb] [--repeat 1]

The databases are those of ``IDSYNC_BENCH_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench``) and
``IDSYNC_BENCH_MARIADB`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``); the
tables ``bench_people`` and ``bench_out`` are made and dropped there. Prints entries
per second, peak RSS and CPU seconds. Figures on a shared machine are noisy: compare
within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from file_bench import print_table, timed, write_in_out  # the bench directory is the script's own
from sqlalchemy import Engine, create_engine, make_url, text

ROOT = Path(__file__).resolve().parent.parent
URLS = {"postgresql": os.environ.get("IDSYNC_BENCH_POSTGRES",
                                     "postgresql+psycopg://postgres@127.0.0.1:5432/idsync_bench"),
        "mariadb": os.environ.get("IDSYNC_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")}
DRIVERS = {"postgresql": ("org.postgresql.Driver", "jdbc:postgresql://%h:%p/%d"),
           "mariadb": ("org.mariadb.jdbc.Driver", "jdbc:mariadb://%h:%p/%d")}
PROPS = {"uid": {"nativeName": "__NAME__"}, "givenName": {"nativeName": "given_name"}, "sn": {},
         "mail": {}, "telephoneNumber": {"nativeName": "phone"}}


def _load(engine: Engine, users: int) -> None:
    with engine.begin() as conn:
        for table in ("bench_people", "bench_out"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text("CREATE TABLE bench_people (uid VARCHAR(64) PRIMARY KEY, given_name VARCHAR(64), "
                          "sn VARCHAR(64), mail VARCHAR(128), phone VARCHAR(32))"))
        conn.execute(text("CREATE TABLE bench_out (uid VARCHAR(64) PRIMARY KEY, sn VARCHAR(64), mail VARCHAR(128))"))
        insert = text("INSERT INTO bench_people VALUES (:u, :g, :s, :m, :p)")
        for start in range(0, users, 10_000):
            conn.execute(insert, [{"u": f"user.{i:07d}", "g": f"Given{i % 997}", "s": f"Surname{i}",
                                   "m": f"user.{i}@example.com", "p": f"+1 555 {i:07d}"}
                                  for i in range(start, min(users, start + 10_000))])


def _floor(engine: Engine) -> float:
    start = time.perf_counter()
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=1000).execute(
            text("SELECT uid, given_name, sn, mail, phone FROM bench_people"))
        for _ in result.partitions():
            pass
    return time.perf_counter() - start


def _project(work: Path, kind: str) -> Path:
    url = make_url(URLS[kind])
    driver, template = DRIVERS[kind]
    base = {"jdbcDriver": driver, "jdbcUrlTemplate": template, "host": url.host or "127.0.0.1",
            "port": str(url.port or (5432 if kind == "postgresql" else 3306)), "database": url.database,
            "user": url.username, "password": url.password or "", "keyColumn": "uid"}
    ref = {"connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"}
    project = work / f"project-{kind}"
    shutil.rmtree(project, ignore_errors=True)
    (project / "conf").mkdir(parents=True)
    shutil.copy(ROOT / "conf" / "managed.json", project / "conf" / "managed.json")
    for name, table, props in (("people", "bench_people", PROPS),
                               ("out", "bench_out", {"uid": {"nativeName": "__NAME__"}, "sn": {}, "mail": {}})):
        (project / "conf" / f"provisioner.openicf-{name}.json").write_text(json.dumps(
            {"connectorRef": ref, "configurationProperties": {**base, "table": table},
             "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": props}}}))
    write_in_out(project)
    return project


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--mariadb", action="store_true", help="MariaDB too")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    idsync = str(ROOT / ".venv" / "bin" / "idsync")
    kinds = ["postgresql", *(["mariadb"] if args.mariadb else [])]
    rows: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    work = Path(tempfile.mkdtemp(prefix="idsync-dbtable-"))
    try:
        for kind in kinds:
            engine = create_engine(URLS[kind])
            try:
                for _ in range(args.repeat):
                    _load(engine, args.users)
                    rows.setdefault((kind, "floor (the table read once by the driver)"), []).append(
                        (_floor(engine), 0, 0.0))
                    project = _project(work, kind)
                    for label, mapping in (("first recon (creates)", "in"), ("no-change recon", "in"),
                                           ("store to a new table (creates)", "out"),
                                           ("store to the table, no change", "out")):
                        measured = timed([idsync, "-p", str(project), "recon", mapping, "--quiet"])
                        rows.setdefault((kind, label), []).append(measured)
                        print(f"  {kind:10} {label:38} {measured[0]:6.1f} s  {args.users / measured[0]:9,.0f} "
                              f"entries/s  {measured[1]:4d} MB  {measured[2]:5.1f} s CPU", flush=True)
            finally:
                with engine.begin() as conn:
                    for table in ("bench_people", "bench_out"):
                        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
                engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table("database", rows, args.users, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
