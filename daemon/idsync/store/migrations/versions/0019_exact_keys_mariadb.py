"""Ids, searchable values and names compared exactly on MariaDB too.

The id and key columns were ``utf8mb4_bin``, a PAD SPACE collation: MariaDB compares
``"alice"`` and ``"alice "`` as equal there, so on MariaDB alone ``userName eq "alice"``
also found ``"alice "``, a correlation of ``"alice"`` met a value it did not ask for (and
failed its page), and ids ``"x"`` and ``"x "`` could not both exist. The names of managed
types, properties and link sets took the database's default collation, which ignores
case: ``mail eq`` found the objects whose ``Mail`` matched, and ``managed/User/a`` could
not exist beside ``managed/user/a``. They take the server's exact collation, MariaDB's
``utf8mb4_nopad_bin`` or MySQL 8's ``utf8mb4_0900_bin`` (``store/collation.py``; a server
without it fails naming it, before anything changes): the same exact, case-sensitive
comparison, every character counted, as on SQLite and PostgreSQL. Nothing changes on the
other stores. Each table named is rebuilt once; no value changes, and none
can clash (a unique index that took more values as one let no two of them in).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from idsync.store.collation import server_exact_collation
from idsync.store.migrations.columns import alter_tables

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# Table -> its id, key and name columns: (name, length, nullable).
_COLUMNS: dict[str, list[tuple[str, int, bool]]] = {
    "managed_objects": [("object_type", 64, False), ("id", 64, False)],
    "managed_properties": [("object_type", 64, False), ("object_id", 64, False), ("name", 128, False),
                           ("value", 255, True)],
    "relationships": [("id", 64, False), ("first_type", 64, False), ("first_id", 64, False),
                      ("first_property", 128, False), ("second_type", 64, False), ("second_id", 255, False),
                      ("second_property", 128, False)],
    "links": [("id", 64, False), ("linkset", 128, False), ("source_id", 255, False), ("target_id", 255, False)],
    "last_sync": [("object_type", 64, False), ("object_id", 64, False), ("mapping", 128, False)],
    "recon_runs": [("id", 64, False)],
    "audit": [("run_id", 64, True), ("source_id", 255, True), ("target_id", 255, True)],
    "recon_claims": [("run_id", 64, False), ("target_id", 255, False)],
    "recon_deferred": [("run_id", 64, False)],
    "sync_failures": [("object_id", 255, False)],
    "recon_partitions": [("run_id", 64, False), ("low", 255, True), ("high", 255, True)],
}


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        _collate(server_exact_collation(op.get_bind()))


def downgrade() -> None:
    _collate("utf8mb4_bin")


def _collate(collation: str) -> None:
    alter_tables(("mysql", "mariadb"), _COLUMNS, lambda c: (
        f"MODIFY `{c[0]}` VARCHAR({c[1]}) CHARACTER SET utf8mb4 COLLATE {collation} {'NULL' if c[2] else 'NOT NULL'}"))
