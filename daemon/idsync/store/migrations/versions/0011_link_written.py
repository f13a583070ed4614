"""What a mapping last wrote to its target's write-only properties (``links.written``):
a keyed digest of the passwords and other values the target never returns, so that
a later run writes them again only when they change (``sync/written.py``). Empty on
links made before: their write-only values are written once more, then kept.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("links", sa.Column("written", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("written")
