"""The cluster queue's schema: created once, upgraded in order, post migrations held while
a node runs another version, and a node too old for the schema refused (``cluster/schema.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_env import reset_queue
from dbs import store_url
from idsync.cluster.schema import MIGRATIONS_TABLE, QueueSchema, plan
from idsync.errors import ConfigError
from idsync.store.database import Store
from procrastinate.schema import SchemaManager
from sqlalchemy import text

SHIPPED = ["02.06.00_01_add_cancel_states.sql", "03.00.00_01_pre_cancel_notification.sql",
           "03.00.00_50_post_cancel_notification.sql", "03.01.00_01_pre_add_heartbeat.sql",
           "03.01.00_50_post_add_heartbeat.sql"]


def test_pending_migrations_apply_in_version_order() -> None:
    """A schema at 2.6 with this node alone: every later migration, pre and post, in version order."""
    decided = plan(list(reversed(SHIPPED)), {SHIPPED[0]}, others_on_other_versions=False)
    assert decided.apply == SHIPPED[1:] and decided.waiting == [] and decided.too_new == []


def test_post_migrations_wait_for_nodes_on_other_versions() -> None:
    """While a live node runs another version, a node applies the pre migrations up to the
    first post one and holds that one and all after it (nothing applied out of order)."""
    decided = plan(SHIPPED, {SHIPPED[0]}, others_on_other_versions=True)
    assert decided.apply == [SHIPPED[1]]
    assert decided.waiting == SHIPPED[2:]


def test_a_post_migration_this_node_does_not_ship_makes_it_too_old() -> None:
    """A post migration in the record that this node does not ship came from a newer
    Procrastinate: named in ``too_new``; an unknown pre migration is harmless."""
    applied = {*SHIPPED, "09.00.00_01_pre_new.sql", "09.00.00_50_post_new.sql"}
    decided = plan(SHIPPED, applied, others_on_other_versions=False)
    assert decided.apply == [] and decided.too_new == ["09.00.00_50_post_new.sql"]


@pytest.fixture
def pg_store(tmp_path: Path) -> Iterator[Store]:
    url = store_url("postgresql", tmp_path)
    reset_queue(url)
    store = Store.open(url)
    yield store
    store.engine.dispose()


def _applied(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(text(f"SELECT name FROM idsync_queue.{MIGRATIONS_TABLE}"))}


@pytest.mark.postgresql
def test_the_queue_schema_is_created_then_upgraded(pg_store: Store) -> None:
    """A node on an empty database creates the schema and records every migration it ships;
    with the last post migration missing from the record (a schema one release older), a
    node on another version alive holds it, and a node alone applies it and records it;
    a record holding a post migration of a newer Procrastinate stops the node with a
    configuration error that says to upgrade idsync on it."""
    schema = QueueSchema(pg_store, "idsync_queue")
    schema.prepare([])
    shipped = {p.name for p in Path(SchemaManager.get_migrations_path()).glob("*.sql")}
    assert _applied(pg_store) == shipped
    last_post = max(n for n in shipped if "_post_" in n)
    with pg_store.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM idsync_queue.{MIGRATIONS_TABLE} WHERE name = :n"), {"n": last_post})
    schema.prepare(["n9 (0.0.1)"])
    assert last_post not in _applied(pg_store)
    schema.prepare([])  # the post migration is written to be applied again (DROP ... IF EXISTS, CREATE)
    assert _applied(pg_store) == shipped
    with pg_store.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO idsync_queue.{MIGRATIONS_TABLE} (name, procrastinate) "
                          "VALUES ('99.00.00_50_post_future.sql', '99.0.0')"))
    with pytest.raises(ConfigError) as refused:
        schema.prepare([])
    assert "99.00.00_50_post_future.sql" in str(refused.value) and "upgrade idsync on this node" in str(refused.value)
