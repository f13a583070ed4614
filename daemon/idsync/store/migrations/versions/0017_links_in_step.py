"""The managed object's revision a link's two objects were last known to agree at
(``links.in_step``): the revision a push carried to the linked system object, or the
one a write made from it. liveSync of a managed type skips an object still at that
revision: its change is there already, and replaying it would put back what the
system object held before a change made there since (``sync/changes.py``). Empty on
links made before: their objects are replayed once more, as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("links", sa.Column("in_step", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("in_step")
