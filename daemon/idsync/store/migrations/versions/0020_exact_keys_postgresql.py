"""Ids and searchable values in code point order on PostgreSQL, whatever the database's collation.

The id and key columns took the database's collation. On a database made with a
language's (``en_US.UTF-8``, an ICU locale: what ``initdb`` gives a host set up in
English) ``"a" < "B" < "b"`` and punctuation barely counts, where SQLite and MariaDB
compare code points (``"B" < "a"``): ``_id gt``, ``userName lt`` and the order of a
query's pages (the ``_id`` its cookie is) answered otherwise there, and a recon split
into id ranges cut in code point order could read an object twice or not at all. They
take the ``"C"`` collation now (which also lets ``sw`` read the index). Values do not
change; only the indexes on those columns are rebuilt. Nothing changes on the other
stores.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from idsync.store.migrations.columns import alter_tables

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# Table -> its id and key columns: (name, length).
_COLUMNS: dict[str, list[tuple[str, int]]] = {
    "managed_objects": [("id", 64)],
    "managed_properties": [("object_id", 64), ("value", 255)],
    "relationships": [("id", 64), ("first_id", 64), ("second_id", 255)],
    "links": [("id", 64), ("source_id", 255), ("target_id", 255)],
    "last_sync": [("object_id", 64)],
    "recon_runs": [("id", 64)],
    "audit": [("run_id", 64), ("source_id", 255), ("target_id", 255)],
    "recon_claims": [("run_id", 64), ("target_id", 255)],
    "recon_deferred": [("run_id", 64)],
    "sync_failures": [("object_id", 255)],
    "recon_partitions": [("run_id", 64), ("low", 255), ("high", 255)],
}


def upgrade() -> None:
    _collate('"C"')


def downgrade() -> None:
    _collate('"default"')


def _collate(collation: str) -> None:
    alter_tables(("postgresql",), _COLUMNS, lambda c: f'ALTER COLUMN "{c[0]}" TYPE VARCHAR({c[1]}) COLLATE {collation}')
