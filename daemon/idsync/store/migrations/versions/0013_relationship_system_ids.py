"""A reference may point at a system's object (``system/ldap/account/DN``): the id of
the end a reference points at (``relationships.second_id``) takes 255 characters, as an
LDAP DN may need, where it took a managed object's 64 (SQLite copies the table into
its new shape; PostgreSQL and MariaDB change the column in place).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _id(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("relationships") as batch:
        batch.alter_column("second_id", type_=_id(255), existing_type=_id(64), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("relationships") as batch:
        batch.alter_column("second_id", type_=_id(64), existing_type=_id(255), existing_nullable=False)
