"""What a recon last found its target to hold, kept with each link (``links.digest``):
a digest of the projected target and the target's revision. A later recon that
projects the same values onto the same revision knows the target is unchanged
without reading it (``sync/digests.py``). Empty on links made before, or by
anything but a recon into the store: those targets are read and compared.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("links", sa.Column("digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("digest")
