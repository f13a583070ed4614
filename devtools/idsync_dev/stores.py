"""Emptying a SQL database of idsync's tables, for the tests and the benchmarks."""

from __future__ import annotations

from idsync.store.database import Store, _head_revision
from idsync.store.tables import audit, metadata
from sqlalchemy import Connection, create_engine, inspect, text

__all__ = ["drop_idsync_tables", "empty_idsync_tables"]


def drop_idsync_tables(url: str) -> None:
    """Drop every table of idsync's schema (``store/tables.py``, whatever migration added
    it), the migrations' own ``alembic_version`` and cluster mode's queue schema, where
    they exist; other tables of the database are left alone."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn, checkfirst=True)
            if "alembic_version" in inspect(conn).get_table_names():
                conn.execute(text("DROP TABLE alembic_version"))
            if conn.dialect.name == "postgresql":
                conn.execute(text("DROP SCHEMA IF EXISTS idsync_queue CASCADE"))
    finally:
        engine.dispose()


def empty_idsync_tables(url: str) -> None:
    """Leave the database as a new store: idsync's schema at the newest revision, no row in
    any of its tables, the audit numbered from 1 again and no cluster queue schema.

    Where the schema is already current (the previous test's store), only its rows are
    deleted, in one transaction: dropping and creating the tables again costs a server a
    disk flush per statement (MariaDB's DDL is not transactional), ten times as long.
    Anything else (no tables, an older revision a migration test left) is dropped and
    created afresh. Other tables of the database are left alone."""
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
    if "alembic_version" not in present or not present.issuperset(metadata.tables):
        return False
    return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [_head_revision()]

