"""The process running a run that takes no lock (a one-object push: implicit sync, a
retry, ``reconById``, ``performAction``), as ``HOST:PID@START``: a daemon starting ends
as interrupted the ACTIVE ones whose process is gone, which no lock tells it. Runs
written before this revision, and runs that take a lock, have none.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("recon_runs", sa.Column("owner", sa.String(191), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recon_runs") as batch:
        batch.drop_column("owner")
