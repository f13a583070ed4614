"""The link qualifier of each audit entry: a mapping with several link qualifiers
(``linkQualifiers``) assesses one source once per qualifier, and its entries must
say which link, situation and target each one is about.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit", sa.Column("link_qualifier", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("link_qualifier")
