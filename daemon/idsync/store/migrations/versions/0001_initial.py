"""The first store schema: managed objects, searchable properties, links, runs, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Key = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")
_Id = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Json = sa.JSON().with_variant(mysql.JSON(), "mysql", "mariadb")
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "managed_objects",
        sa.Column("object_type", sa.String(64), primary_key=True),
        sa.Column("id", _Id, primary_key=True),
        sa.Column("rev", sa.String(32), nullable=False),
        sa.Column("data", _Json, nullable=False),
        sa.Column("created", _Time, nullable=False),
        sa.Column("updated", _Time, nullable=False),
    )
    op.create_table(
        "managed_properties",
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", _Id, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", _Key, nullable=True),
        sa.Column("value_num", sa.Float, nullable=True),
    )
    op.create_index("ix_managed_properties_lookup", "managed_properties", ["object_type", "name", "value"])
    op.create_index("ix_managed_properties_num", "managed_properties", ["object_type", "name", "value_num"],
                    sqlite_where=sa.text("value_num IS NOT NULL"), postgresql_where=sa.text("value_num IS NOT NULL"))
    op.create_index("ix_managed_properties_object", "managed_properties", ["object_type", "object_id"])
    op.create_table(
        "links",
        sa.Column("id", _Id, primary_key=True),
        sa.Column("linkset", sa.String(128), nullable=False),
        sa.Column("source_id", _Key, nullable=False),
        sa.Column("target_id", _Key, nullable=False),
        sa.Column("qualifier", sa.String(64), nullable=False),
        sa.Column("created", _Time, nullable=False),
    )
    op.create_index("ux_links_source", "links", ["linkset", "source_id", "qualifier"], unique=True)
    op.create_index("ux_links_target", "links", ["linkset", "target_id", "qualifier"], unique=True)
    op.create_table(
        "recon_runs",
        sa.Column("id", _Id, primary_key=True),
        sa.Column("mapping", sa.String(128), nullable=False),
        sa.Column("job", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("started", _Time, nullable=False),
        sa.Column("ended", _Time, nullable=True),
        sa.Column("heartbeat", _Time, nullable=True),
        sa.Column("summary", _Json, nullable=False),
        sa.Column("message", _LongText, nullable=True),
    )
    op.create_index("ix_recon_runs_started", "recon_runs", ["started"])
    op.create_index("ix_recon_runs_mapping", "recon_runs", ["mapping", "started"])
    op.create_table(
        "audit",
        sa.Column("seq", _BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", _Id, nullable=True),
        sa.Column("ts", _Time, nullable=False),
        sa.Column("mapping", sa.String(128), nullable=False),
        sa.Column("situation", sa.String(32), nullable=True),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("source_id", _Key, nullable=True),
        sa.Column("target_id", _Key, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", _LongText, nullable=True),
        sa.Column("changes", _Json, nullable=True),
    )
    op.create_index("ix_audit_run", "audit", ["run_id", "seq"])
    op.create_index("ix_audit_ts", "audit", ["ts"])
    op.create_table(
        "recon_claims",
        sa.Column("run_id", _Id, primary_key=True),
        sa.Column("target_id", _Key, primary_key=True),
    )
    op.create_table(
        "recon_deferred",
        sa.Column("run_id", _Id, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("op", _Json, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("owner", sa.String(191), nullable=False),
        sa.Column("acquired", _Time, nullable=False),
        sa.Column("expires", _Time, nullable=False),
    )
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(191), primary_key=True),
        sa.Column("value", _LongText, nullable=False),
    )


def downgrade() -> None:
    for name in ("store_meta", "locks", "recon_deferred", "recon_claims", "audit",
                 "recon_runs", "links", "managed_properties", "managed_objects"):
        op.drop_table(name)
