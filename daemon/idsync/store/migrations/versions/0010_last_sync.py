"""PingIDM's ``lastSync`` (``last_sync``): per managed source and mapping, the
assignments last applied to its targets, so that a removed assignment unassigns
exactly what was applied (``store/last_sync.py``). Empty after the upgrade: a
source's first synchronization records what it holds, and until then (as PingIDM
without a ``lastSync``) nothing is unassigned but what implicit sync knows the
object held before its change.

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_Id = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
_Json = sa.JSON().with_variant(mysql.JSON(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "last_sync",
        sa.Column("object_type", sa.String(64), primary_key=True),
        sa.Column("object_id", _Id, primary_key=True),
        sa.Column("mapping", sa.String(128), primary_key=True),
        sa.Column("assignments", _Json, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_last_sync_mapping", "last_sync", ["mapping"])


def downgrade() -> None:
    op.drop_index("ix_last_sync_mapping", "last_sync")
    op.drop_table("last_sync")
