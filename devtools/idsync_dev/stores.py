"""Emptying a SQL database of idsync's tables, for the tests and the benchmarks.

A database the suite used before keeps idsync's schema between runs (a CI host's, a
developer's), and the next run only deletes its rows when that schema is current: at
the newest revision, and built from these very files. The revision alone would not do:
a migration or ``tables.py`` edited since, the newest revision unchanged, would leave the
tests running on the schema the old files made, hiding what the new ones do. So the
database records a digest of the files that define the schema (``SCHEMA_FILES``) when
its tables are dropped, to be built again by this code; another digest makes them built
anew."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import idsync.store
from idsync.store.database import Store, _head_revision
from idsync.store.tables import audit, metadata
from sqlalchemy import Column, Connection, MetaData, String, Table, create_engine, inspect, select, text

__all__ = ["SCHEMA_FILES", "SCHEMA_RECORD", "drop_idsync_tables", "empty_idsync_tables", "schema_digest"]

# What makes the store's schema, under ``idsync/store``: the declared tables, the
# migrations, the collation they name and the code that builds a new store.
SCHEMA_FILES = ("tables.py", "collation.py", "database.py", "migrations/**/*.py")

# The table of the digest of the files the database's idsync schema was built from: this
# module's own, not the store's.
SCHEMA_RECORD = "idsync_test_schema"
_built_from = Table(SCHEMA_RECORD, MetaData(), Column("digest", String(64), nullable=False))


@functools.cache
def schema_digest() -> str:
    """A digest of the files that define the store's schema (``SCHEMA_FILES``), as they are now."""
    root = Path(idsync.store.__file__).parent
    digest = hashlib.sha256()
    for path in sorted({p for pattern in SCHEMA_FILES for p in root.glob(pattern)}):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def drop_idsync_tables(url: str) -> None:
    """Drop every table of idsync's schema (``store/tables.py``, whatever migration added
    it), the migrations' own ``alembic_version`` and cluster mode's queue schema, where
    they exist; other tables of the database are left alone. What is built next, by this
    code, is recorded as built from these files (``schema_digest``)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn, checkfirst=True)
            if "alembic_version" in inspect(conn).get_table_names():
                conn.execute(text("DROP TABLE alembic_version"))
            if conn.dialect.name == "postgresql":
                conn.execute(text("DROP SCHEMA IF EXISTS idsync_queue CASCADE"))
            _built_from.create(conn, checkfirst=True)
            conn.execute(_built_from.delete())
            conn.execute(_built_from.insert().values(digest=schema_digest()))
    finally:
        engine.dispose()


def empty_idsync_tables(url: str) -> None:
    """Leave the database as a new store: idsync's schema at the newest revision, no row in
    any of its tables, the audit numbered from 1 again and no cluster queue schema.

    Where the schema is already current (the previous test's store: the newest revision,
    built from the files of this code, ``schema_digest``), only its rows are deleted, in
    one transaction: dropping and creating the tables again costs a server a disk flush per
    statement (MariaDB's DDL is not transactional), ten times as long. Anything else (no
    tables, an older revision a migration test left, a schema built before a migration or
    ``tables.py`` was edited) is dropped and created afresh. Other tables of the database are
    left alone."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            emptied = _schema_is_current(conn)
            if emptied:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
                # The audit numbered from 1 again (``audit.seq``: the audit events' ``_id``).
                if conn.dialect.name == "postgresql":
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{audit.name}', 'seq'), 1, false)"))
                    conn.execute(text("DROP SCHEMA IF EXISTS idsync_queue CASCADE"))
                elif conn.dialect.name in ("mysql", "mariadb"):
                    conn.execute(text(f"ALTER TABLE {audit.name} AUTO_INCREMENT = 1"))  # commits the deletes
    finally:
        engine.dispose()
    if not emptied:
        drop_idsync_tables(url)
        Store.open(url).close()


def _schema_is_current(conn: Connection) -> bool:
    present = set(inspect(conn).get_table_names())
    if not {"alembic_version", _built_from.name} <= present or not present.issuperset(metadata.tables):
        return False
    return (list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [_head_revision()]
            and list(conn.execute(select(_built_from.c.digest)).scalars()) == [schema_digest()])

