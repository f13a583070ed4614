"""Emptying a SQL database of idsync's tables, for the tests and the benchmarks."""

from __future__ import annotations

from idsync.store.tables import metadata
from sqlalchemy import create_engine, inspect, text

__all__ = ["drop_idsync_tables"]


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
