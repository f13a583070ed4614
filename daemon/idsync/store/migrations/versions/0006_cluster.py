"""Cluster mode: the node and the scheduled fire of each run (``recon_runs.node``,
``recon_runs.fire``), the nodes of the cluster (``cluster_nodes``) and the source
partitions of a recon split over them (``recon_partitions``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Json = sa.JSON().with_variant(mysql.JSON(), "mysql", "mariadb")
_Key = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")
_Id = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("recon_runs") as batch:
        batch.add_column(sa.Column("node", sa.String(191), nullable=True))
        batch.add_column(sa.Column("fire", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "cluster_nodes",
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("owner", sa.String(191), nullable=False),
        sa.Column("worker_id", sa.BigInteger, nullable=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("running", _Json, nullable=True),
    )
    op.create_table(
        "recon_partitions",
        sa.Column("run_id", _Id, primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("low", _Key, nullable=True),
        sa.Column("high", _Key, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("node", sa.String(191), nullable=True),
        sa.Column("owner", sa.String(191), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", _Json, nullable=True),
        sa.Column("message", _LongText, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("recon_partitions")
    op.drop_table("cluster_nodes")
    with op.batch_alter_table("recon_runs") as batch:
        batch.drop_column("fire")
        batch.drop_column("node")
