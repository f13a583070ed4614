"""liveSync's changes that failed (``sync_failures``): per source and object, how often
applying it failed and the last error; retried by the source's next liveSync runs, then
given up or kept as a dead letter, as the provisioner's ``syncFailureHandler`` says.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Key = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "sync_failures",
        sa.Column("source", sa.String(191), primary_key=True),
        sa.Column("object_id", _Key, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("token", _LongText, nullable=True),
        sa.Column("error", _LongText, nullable=False),
        sa.Column("first_failed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_failures")
