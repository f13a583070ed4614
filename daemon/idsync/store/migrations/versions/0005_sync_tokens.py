"""liveSync's position per source (``sync_tokens``): the token a source's next liveSync
run reads the changes from, committed in the transaction of the last change it covers,
and the counts of the source's liveSync runs (``idsync status`` and the metrics read
them; they are never pruned, so the counters never decrease).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "sync_tokens",
        sa.Column("source", sa.String(191), primary_key=True),
        sa.Column("token", _LongText, nullable=True),
        sa.Column("method", sa.String(32), nullable=True),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_state", sa.String(16), nullable=True),
        sa.Column("last_message", _LongText, nullable=True),
        sa.Column("runs", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("changes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("full_recons", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("sync_tokens")
