"""What pruned runs counted (``run_totals``): ``prune`` folds the runs it removes into it in
the same transaction, so the Prometheus counters built from the store never decrease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_totals",
        sa.Column("mapping", sa.String(128), primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_totals")
