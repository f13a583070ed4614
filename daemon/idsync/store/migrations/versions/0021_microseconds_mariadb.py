"""Times to the microsecond on MariaDB, as on SQLite and PostgreSQL.

MariaDB's ``DATETIME`` keeps whole seconds: there, and there alone, a run's ``started`` and
``ended`` lost their fractions (``GET recon/ID`` answered a run of 0.3 s as lasting 0 ms,
or 1000), and so did the audit's event times (``audit/recon``'s ``timestamp``), the
managed objects' stamps, the locks' and the liveSync tokens'. Every time column becomes a
``DATETIME(6)``; the times already kept stay the whole seconds they are. Each table named
is rebuilt once; nothing changes on the other stores.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from idsync.store.migrations.columns import alter_tables

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Table -> its time columns: (name, nullable).
_COLUMNS: dict[str, list[tuple[str, bool]]] = {
    "managed_objects": [("created", False), ("updated", False)],
    "relationships": [("created", False)],
    "links": [("created", False)],
    "last_sync": [("updated", False)],
    "recon_runs": [("started", False), ("ended", True), ("heartbeat", True), ("fire", True)],
    "audit": [("ts", False)],
    "locks": [("acquired", False), ("expires", False)],
    "sync_tokens": [("updated", True), ("last_run", True)],
    "sync_failures": [("first_failed", False), ("last_failed", False)],
    "cluster_nodes": [("started", False), ("seen", False)],
    "recon_partitions": [("started", True), ("ended", True)],
}


def upgrade() -> None:
    _precision("DATETIME(6)")


def downgrade() -> None:
    _precision("DATETIME")


def _precision(kind: str) -> None:
    alter_tables(("mysql", "mariadb"), _COLUMNS, lambda c: f"MODIFY `{c[0]}` {kind} {'NULL' if c[1] else 'NOT NULL'}")
