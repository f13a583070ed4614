"""A MariaDB store whose times were whole seconds (schema 0020), upgraded in place by
opening it (migration 0021): what it held is kept, and a time written from then on keeps
its microseconds, as on SQLite and PostgreSQL, which the migration leaves as they are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dbs import BACKENDS, old_store, store_url
from idsync.store.database import Store, as_utc
from idsync.store.runs import RunStore
from idsync.store.tables import locks
from sqlalchemy import insert, select


@pytest.mark.parametrize("kind", BACKENDS)
def test_times_keep_their_microseconds_once_the_store_is_opened(kind: str, tmp_path: Path) -> None:
    """The store at schema 0020 holding a run, opened: the run is still read, and a lock
    taken at 12:00:00.123456 reads back so."""
    url = store_url(kind, tmp_path, empty=True)
    store = old_store(url, "0020")
    try:
        RunStore(store).start("r1", "m", job=None, dry_run=False, summary={})
    finally:
        store.close()
    store = Store.open(url)
    try:
        assert RunStore(store).get("r1") is not None
        when = dt.datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=dt.UTC)
        with store.begin() as conn:
            conn.execute(insert(locks).values(name="l", owner="o", acquired=when, expires=when))
        with store.engine.connect() as conn:
            assert as_utc(conn.execute(select(locks.c.acquired)).scalar_one()) == when
    finally:
        store.close()
