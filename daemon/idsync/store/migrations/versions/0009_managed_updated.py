"""An index on the managed objects' ``updated`` stamps, per type: liveSync of a managed
type reads the objects written since its token (``store/changes.py``).

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-10
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_managed_objects_updated", "managed_objects", ["object_type", "updated"])


def downgrade() -> None:
    op.drop_index("ix_managed_objects_updated", "managed_objects")
