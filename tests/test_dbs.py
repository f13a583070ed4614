"""The server databases the tests reuse between runs (``tests/dbs.py``,
``idsync_dev.stores``): a store a test gets is built from the schema files of the code
under test, never left as an earlier run's files made it, even at the same revision."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbs import MARIADB, POSTGRESQL, store_url
from idsync_dev.stores import empty_idsync_tables
from sqlalchemy import create_engine, inspect, text


def _audit_indexes(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {i["name"] for i in inspect(engine).get_indexes("audit")}
    finally:
        engine.dispose()


def _run(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", [POSTGRESQL, MARIADB])
def test_a_schema_built_by_other_files_is_built_again(kind: str, tmp_path: Path) -> None:
    """A database at the newest revision whose schema was built before a migration (or
    ``tables.py``) was edited, as a previous run on the same server left it (here: without
    an index the files declare), is built again when a test asks for a store: the tests
    never run on what the old files made. One built from these files is only emptied."""
    url = store_url(kind, tmp_path)
    _run(url, "DROP INDEX ix_audit_ts" + (" ON audit" if kind == "mariadb" else ""))
    empty_idsync_tables(url)  # built from these files: kept, only its rows deleted
    assert "ix_audit_ts" not in _audit_indexes(url)
    _run(url, "UPDATE idsync_test_schema SET digest = 'built by the files of an earlier run'")
    empty_idsync_tables(url)
    assert "ix_audit_ts" in _audit_indexes(url)
    store_url(kind, tmp_path)  # the next test's store: current, as the files declare it
    assert "ix_audit_ts" in _audit_indexes(url)
