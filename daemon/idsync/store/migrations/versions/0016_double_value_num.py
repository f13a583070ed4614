"""The searchable index's numbers in double precision on MySQL and MariaDB.

``managed_properties.value_num`` was SQLAlchemy's ``Float``: a double on SQLite and
PostgreSQL, but MySQL's and MariaDB's 4-byte ``FLOAT`` there, whose 24 bits keep
neither 0.1 nor 1234567890: ``n eq 0.1`` and a correlation by such a number found
nothing, and 1234567890 and 1234567891 were one value. The column becomes a
``DOUBLE``, and each number is taken again from the row's own text (the number as
``filters.property_value`` wrote it, exactly). Nothing changes on the other stores.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    op.alter_column("managed_properties", "value_num", existing_type=sa.Float(), type_=mysql.DOUBLE(),
                    existing_nullable=True)
    # A number's text is whole below the index's 255 characters (a longer one, 1e255 and
    # up written out, keeps the value it had).
    op.execute("UPDATE managed_properties SET value_num = CAST(value AS DOUBLE) "
               "WHERE value_num IS NOT NULL AND CHAR_LENGTH(value) < 255")


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    op.alter_column("managed_properties", "value_num", existing_type=mysql.DOUBLE(), type_=sa.Float(),
                    existing_nullable=True)
