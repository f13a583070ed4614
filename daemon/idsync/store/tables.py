"""The identity store's tables (SQLAlchemy Core).

Managed objects are JSON documents; the properties that ``managed.json`` marks
searchable are also copied, one row per value, into ``managed_properties`` so a
correlation lookup or a ``_queryFilter`` on them is an index hit on every
dialect (SQLite, PostgreSQL, MariaDB) without dialect-specific expression
indexes. Non-searchable properties are still queryable through the dialect's
JSON functions, just not indexed.

The schema is versioned by Alembic (``store/migrations``); this module is the
current shape and must change only together with a new migration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.ext.compiler import compiles

from idsync.store.collation import exact_collation

__all__ = [
    "ID_LENGTH",
    "KEY_LENGTH",
    "ExactVarchar",
    "audit",
    "claims",
    "cluster_nodes",
    "deferred",
    "last_sync",
    "links",
    "locks",
    "managed_objects",
    "managed_properties",
    "metadata",
    "recon_partitions",
    "recon_runs",
    "relationships",
    "run_totals",
    "store_meta",
    "sync_failures",
    "sync_tokens",
]

metadata = MetaData()

# What an id column (a managed object's, a run's, a link's) and a key column (a system
# object's id in a link, a searchable value) hold, in characters. PostgreSQL and MariaDB
# refuse more and SQLite takes any length, so a client-chosen id is checked against these
# before it is written, for the same answer on every store.
ID_LENGTH = 64
KEY_LENGTH = 255
# Exact, case-sensitive comparison on every dialect, in code point order as SQLite's:
# MariaDB's default collation would otherwise make "BJensen" equal "bjensen" there and
# nowhere else, and its utf8mb4_bin "alice" equal "alice " (PAD SPACE; migrations 0019 and
# 0022); a PostgreSQL database made with a language's collation (en_US.UTF-8) would order
# "a" < "B" < "b", so ranges, paging and split recons would differ there (migration 0020).


class ExactVarchar(mysql.VARCHAR):
    """MariaDB's and MySQL's ``VARCHAR`` in the server's exact collation (``collation.py``):
    MariaDB's ``utf8mb4_nopad_bin``, MySQL's ``utf8mb4_0900_bin``."""

    __visit_name__ = "VARCHAR"


@compiles(ExactVarchar, "mysql")
@compiles(ExactVarchar, "mariadb")
def _exact_varchar(type_: ExactVarchar, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(mysql.VARCHAR(type_.length, collation=exact_collation(compiler.dialect)), **kw))


_Key = String(KEY_LENGTH).with_variant(ExactVarchar(KEY_LENGTH), "mysql", "mariadb") \
    .with_variant(postgresql.VARCHAR(KEY_LENGTH, collation="C"), "postgresql")
_Id = String(ID_LENGTH).with_variant(ExactVarchar(ID_LENGTH), "mysql", "mariadb") \
    .with_variant(postgresql.VARCHAR(ID_LENGTH, collation="C"), "postgresql")


def _name(length: int) -> String:
    """A name (a type's, a property's, a mapping's, a job's, a liveSync source's, a lock's):
    told apart by case and trailing spaces on MariaDB too (migrations 0019 and 0022), where
    ``mail`` and ``Mail``, the locks of jobs ``j`` and ``J`` were one."""
    return String(length).with_variant(ExactVarchar(length), "mysql", "mariadb")


_LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Json = JSON().with_variant(mysql.JSON(), "mysql", "mariadb")
_BigId = BigInteger().with_variant(Integer(), "sqlite")
# To the microsecond everywhere: MariaDB's plain DATETIME keeps whole seconds (migration 0021).
_Time = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# A double everywhere: ``Float`` is MySQL's and MariaDB's 4-byte FLOAT (migration 0016).
_Double = Float().with_variant(mysql.DOUBLE(), "mysql", "mariadb")

managed_objects = Table(
    "managed_objects",
    metadata,
    Column("object_type", _name(64), primary_key=True),
    Column("id", _Id, primary_key=True),
    Column("rev", String(32), nullable=False),
    Column("data", _Json, nullable=False),
    Column("created", _Time, nullable=False),
    Column("updated", _Time, nullable=False),
    # Migration 0009: liveSync of a managed type reads the objects written since a stamp.
    Index("ix_managed_objects_updated", "object_type", "updated"),
)

managed_properties = Table(
    "managed_properties",
    metadata,
    Column("object_type", _name(64), nullable=False),
    Column("object_id", _Id, nullable=False),
    Column("name", _name(128), nullable=False),
    Column("value", _Key, nullable=True),
    Column("value_num", _Double, nullable=True),
    Index("ix_managed_properties_lookup", "object_type", "name", "value"),
    # Numbers are rare among identity attributes: index only the rows that have one.
    Index("ix_managed_properties_num", "object_type", "name", "value_num",
          sqlite_where=text("value_num IS NOT NULL"), postgresql_where=text("value_num IS NOT NULL")),
    Index("ix_managed_properties_object", "object_type", "object_id"),
)

# References between managed objects (migration 0008): one row per reference, seen from
# both ends. The end whose (type, property) sorts first is "first", so a two-way
# relationship (user ``roles``, role ``members``) is one row whichever end wrote it;
# a one-way one has an empty ``second_property``. ``store/relationships.py``.
relationships = Table(
    "relationships",
    metadata,
    Column("id", _Id, primary_key=True),
    Column("rev", String(32), nullable=False),
    Column("first_type", _name(64), nullable=False),
    Column("first_id", _Id, nullable=False),
    Column("first_property", _name(128), nullable=False),
    Column("second_type", _name(64), nullable=False),
    # 255 (migration 0013): a one-way reference may point at a system's object, by its id (an LDAP DN).
    Column("second_id", _Key, nullable=False),
    Column("second_property", _name(128), nullable=False),
    Column("properties", _Json, nullable=True),
    Column("created", _Time, nullable=False),
    Index("ux_relationships_first", "first_type", "first_property", "first_id", "second_type", "second_id",
          unique=True),
    Index("ix_relationships_second", "second_type", "second_property", "second_id"),
)

links = Table(
    "links",
    metadata,
    Column("id", _Id, primary_key=True),
    Column("linkset", _name(128), nullable=False),
    Column("source_id", _Key, nullable=False),
    Column("target_id", _Key, nullable=False),
    Column("qualifier", _name(64), nullable=False, default="default"),
    Column("created", _Time, nullable=False),
    # The recon's digest of the projected target and that target's revision (migration 0007).
    Column("digest", String(64), nullable=True),
    # The digest of the write-only values (passwords) last written through the link (migration 0011).
    Column("written", String(64), nullable=True),
    # The managed object's revision the two objects were last known to agree at (migration 0017).
    Column("in_step", String(32), nullable=True),
    Index("ux_links_source", "linkset", "source_id", "qualifier", unique=True),
    Index("ux_links_target", "linkset", "target_id", "qualifier", unique=True),
)

# PingIDM's ``lastSync``: the assignments of a mapping last applied to a managed source's
# targets (migration 0010), so that only those are unassigned (``store/last_sync.py``).
last_sync = Table(
    "last_sync",
    metadata,
    Column("object_type", _name(64), primary_key=True),
    Column("object_id", _Id, primary_key=True),
    Column("mapping", _name(128), primary_key=True),
    Column("assignments", _Json, nullable=False),
    Column("updated", _Time, nullable=False),
    Index("ix_last_sync_mapping", "mapping"),
)

recon_runs = Table(
    "recon_runs",
    metadata,
    Column("id", _Id, primary_key=True),
    Column("mapping", _name(128), nullable=False),
    Column("job", _name(128), nullable=True),
    Column("state", _name(16), nullable=False),
    Column("stage", _name(64), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("started", _Time, nullable=False),
    Column("ended", _Time, nullable=True),
    Column("heartbeat", _Time, nullable=True),
    Column("summary", _Json, nullable=False),
    Column("message", _LongText, nullable=True),
    # Migration 0006: the node that ran it (cluster mode; the host name otherwise) and the
    # scheduled fire it ran for (none for a run started by hand).
    Column("node", _name(191), nullable=True),
    Column("fire", _Time, nullable=True),
    # Migration 0015: the process running a run that takes no lock (``HOST:PID@START``), so
    # that a daemon starting can end such a run whose process is gone (``daemon/recovery.py``).
    Column("owner", _name(191), nullable=True),
    Index("ix_recon_runs_started", "started"),
    Index("ix_recon_runs_mapping", "mapping", "started"),
    Index("ix_recon_runs_ended", "ended"),  # migration 0002
)

audit = Table(
    "audit",
    metadata,
    Column("seq", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", _Id, nullable=True),
    Column("ts", _Time, nullable=False),
    Column("mapping", _name(128), nullable=False),
    Column("situation", _name(32), nullable=True),
    Column("action", _name(16), nullable=True),
    Column("source_id", _Key, nullable=True),
    Column("target_id", _Key, nullable=True),
    Column("status", _name(16), nullable=False),
    Column("message", _LongText, nullable=True),
    Column("changes", _Json, nullable=True),
    Column("link_qualifier", _name(64), nullable=True),  # migration 0004
    # A recon's phase that met the object, "source" or "target" (migration 0014; none elsewhere).
    Column("phase", _name(8), nullable=True),
    # The ids of the targets a correlation found when it found several: AMBIGUOUS (migration 0014).
    Column("ambiguous", _Json, nullable=True),
    Index("ix_audit_run", "run_id", "seq"),
    Index("ix_audit_ts", "ts"),
    Index("ix_audit_source", "source_id", "seq"),  # migration 0002
)

# Target ids a run's source phase accounted for; the target phase skips them.
claims = Table(
    "recon_claims",
    metadata,
    Column("run_id", _Id, primary_key=True),
    Column("target_id", _Key, primary_key=True),
)

# Deletes and unlinks decided during a run, carried out only after both phases
# completed without a read error and within the run's safety limits.
deferred = Table(
    "recon_deferred",
    metadata,
    Column("run_id", _Id, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("op", _Json, nullable=False),
)

locks = Table(
    "locks",
    metadata,
    Column("name", _name(191), primary_key=True),
    Column("owner", _name(191), nullable=False),
    Column("acquired", _Time, nullable=False),
    Column("expires", _Time, nullable=False),
)

# What pruned runs counted, so the metrics' counters never go down (migration 0003):
# per mapping, ``runs``/STATE, ``situationSummary``/SITUATION, ``actionSummary``/ACTION,
# ``duration``/``count`` and ``duration``/``sum`` (seconds).
run_totals = Table(
    "run_totals",
    metadata,
    Column("mapping", _name(128), primary_key=True),
    Column("metric", _name(32), primary_key=True),
    Column("name", _name(64), primary_key=True),
    Column("value", Double, nullable=False),
)

# liveSync's position per source and the counts of its runs (migration 0005): ``tokens.py``.
sync_tokens = Table(
    "sync_tokens",
    metadata,
    Column("source", _name(191), primary_key=True),
    Column("token", _LongText, nullable=True),
    Column("method", _name(32), nullable=True),
    Column("updated", _Time, nullable=True),
    Column("last_run", _Time, nullable=True),
    Column("last_state", _name(16), nullable=True),
    Column("last_message", _LongText, nullable=True),
    Column("runs", BigInteger, nullable=False, server_default="0"),
    Column("failed", BigInteger, nullable=False, server_default="0"),
    Column("changes", BigInteger, nullable=False, server_default="0"),
    Column("full_recons", BigInteger, nullable=False, server_default="0"),
)

# liveSync's changes that failed (migration 0012), per source and object: retried by the
# source's next runs, or kept as dead letters once the retries are spent
# (``syncFailureHandler``): ``sync_failures.py``.
sync_failures = Table(
    "sync_failures",
    metadata,
    Column("source", _name(191), primary_key=True),
    Column("object_id", _Key, primary_key=True),
    Column("state", _name(16), nullable=False),  # RETRYING or DEAD
    Column("attempts", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),  # whether the change that failed last was a delete
    Column("token", _LongText, nullable=True),  # the token of the change that first failed
    Column("error", _LongText, nullable=False),
    Column("first_failed", _Time, nullable=False),
    Column("last_failed", _Time, nullable=False),
)

# Cluster mode (migration 0006): the nodes that joined the cluster, their queue worker
# (whose heartbeat, in the queue's own table, tells whether the node is alive).
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", _name(191), primary_key=True),
    Column("owner", _name(191), nullable=False),
    Column("worker_id", BigInteger, nullable=True),
    Column("version", _name(32), nullable=False),
    Column("started", _Time, nullable=False),
    Column("seen", _Time, nullable=False),
    Column("running", _Json, nullable=True),
    # Its conf/ and jobs.d/ files, a digest each (migration 0018): nodes deployed apart say so.
    Column("config", _Json, nullable=True),
)

# The source partitions of a recon split over the nodes (migration 0006): bounds on the
# source id, who works on it, and the counts it committed.
recon_partitions = Table(
    "recon_partitions",
    metadata,
    Column("run_id", _Id, primary_key=True),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("low", _Key, nullable=True),
    Column("high", _Key, nullable=True),
    Column("state", _name(16), nullable=False),
    Column("node", _name(191), nullable=True),
    Column("owner", _name(191), nullable=True),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("started", _Time, nullable=True),
    Column("ended", _Time, nullable=True),
    Column("summary", _Json, nullable=True),
    Column("message", _LongText, nullable=True),
)

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", _name(191), primary_key=True),
    Column("value", _LongText, nullable=False),
)
