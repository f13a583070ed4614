"""Two indexes: the audit by source object, so finding whether one object's
last implicit-sync push failed (``sync/retry.py``) is an index hit rather than a
scan of every push since the mapping's last recon; and runs by end time, which
the Prometheus scrape reads incrementally (``api/metrics.py``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_source", "audit", ["source_id", "seq"])
    op.create_index("ix_recon_runs_ended", "recon_runs", ["ended"])


def downgrade() -> None:
    op.drop_index("ix_recon_runs_ended", table_name="recon_runs")
    op.drop_index("ix_audit_source", table_name="audit")
