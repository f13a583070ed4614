"""The phase of a recon that met each object (``source`` or ``target``): PingIDM's
``reconciling`` of a recon audit event, the ``phase`` of an association entry. Entries
written before this revision have none; implicit sync's and liveSync's never have one.
And the ids of the targets an ``AMBIGUOUS`` correlation found (PingIDM's
``ambiguousTargetObjectIds``), which the entry's message only counted.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_Json = sa.JSON().with_variant(mysql.JSON(), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("audit", sa.Column("phase", sa.String(8), nullable=True))
    op.add_column("audit", sa.Column("ambiguous", _Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("ambiguous")
        batch.drop_column("phase")
