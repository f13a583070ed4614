"""The names of mappings, jobs, liveSync sources, link qualifiers and locks compared exactly
on MariaDB too.

Migration 0019 made MariaDB's ids, keys and the names of types, properties and link sets
exact; the other names the store keeps still took the database's default collation, which
ignores case and trailing spaces. Two mappings, jobs or liveSync sources whose names
differ only so are two in PingIDM, and were one there: the recon (or job) lock of
``Employees`` kept ``employees`` from running ("already running"), the runs of one were
listed as the other's, one source's liveSync token and retries overwrote the other's,
the totals of their pruned runs failed the prune on a duplicate key, and a source could
not be linked under two link qualifiers differing only by case. Every such column (the
names, and the states, owners and nodes written beside them) takes the server's exact
collation, as ``store/collation.py`` chooses it: the same comparison as on SQLite and
PostgreSQL, where nothing changes. Each table named is rebuilt once; no value changes,
and none can clash (a unique key that took more values as one let no two of them in).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from idsync.store.collation import server_exact_collation
from idsync.store.migrations.columns import alter_tables

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# Table -> its name columns: (name, length, nullable).
_COLUMNS: dict[str, list[tuple[str, int, bool]]] = {
    "recon_runs": [("mapping", 128, False), ("job", 128, True), ("state", 16, False), ("stage", 64, False),
                   ("node", 191, True), ("owner", 191, True)],
    "audit": [("mapping", 128, False), ("situation", 32, True), ("action", 16, True), ("status", 16, False),
              ("link_qualifier", 64, True), ("phase", 8, True)],
    "links": [("qualifier", 64, False)],
    "locks": [("name", 191, False), ("owner", 191, False)],
    "run_totals": [("mapping", 128, False), ("metric", 32, False), ("name", 64, False)],
    "sync_tokens": [("source", 191, False), ("method", 32, True), ("last_state", 16, True)],
    "sync_failures": [("source", 191, False), ("state", 16, False)],
    "cluster_nodes": [("name", 191, False), ("owner", 191, False), ("version", 32, False)],
    "recon_partitions": [("state", 16, False), ("node", 191, True), ("owner", 191, True)],
    "store_meta": [("key", 191, False)],
}


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        _collate(f"CHARACTER SET utf8mb4 COLLATE {server_exact_collation(op.get_bind())}")


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        _collate("")  # the table's own collation, as before


def _collate(collation: str) -> None:
    alter_tables(("mysql", "mariadb"), _COLUMNS, lambda c: (
        f"MODIFY `{c[0]}` VARCHAR({c[1]}) {collation} {'NULL' if c[2] else 'NOT NULL'}"))
