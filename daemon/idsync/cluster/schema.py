"""The queue's schema in the store's database: created by the first node, upgraded by the nodes.

Procrastinate ships its schema whole (``schema.sql``) and, for each release that changes
it, migration files named ``VERSION_NN_[pre_|post_]what.sql``. A *pre* migration keeps the
previous release's workers working, so it may be applied while older nodes still run; a
*post* migration may break them, so it waits until every live node runs this node's
version (migrations before 3.0 carry no mark and count as *pre*). Procrastinate keeps no
record of what was applied: idsync keeps one, ``idsync_queue.idsync_migrations``, a row
per migration file applied (or contained in the schema as it was created).

At start, under a PostgreSQL advisory lock (nodes starting together do it once), a node:

* creates the schema when it is missing, and records every migration it ships as applied;
* applies, in order, the migrations it ships and the record lacks, stopping before the
  first *post* one while a live node runs another version (``cluster.queue_migrations_waiting``;
  the last node of a rolling upgrade to start applies them);
* refuses to start (``ConfigError``, exit 78) when the record holds a *post* migration it
  does not ship: a newer node upgraded the queue past what this node's Procrastinate reads.

``plan`` decides from the two lists alone; ``QueueSchema.prepare`` reads them and acts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import structlog
from procrastinate import __version__
from procrastinate.schema import SchemaManager
from sqlalchemy import Connection, text

from idsync.errors import ConfigError
from idsync.store.database import Store

__all__ = ["MIGRATIONS_TABLE", "Plan", "QueueSchema", "plan"]

log = structlog.get_logger("idsync.cluster")

MIGRATIONS_TABLE = "idsync_migrations"
_LOCK = 7461033  # pg_advisory_xact_lock: one node at a time creates or upgrades the queue's schema
_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_(pre_|post_)?")


def _is_post(name: str) -> bool:
    match = _NAME.match(name)
    return bool(match and match.group(5) == "post_")


def _order(name: str) -> tuple[int, ...]:
    match = _NAME.match(name)
    if match is None:
        return (1 << 30,)
    return tuple(int(part) for part in match.group(1, 2, 3, 4))


@dataclass(frozen=True)
class Plan:
    """What a node does to the queue's schema: ``apply`` now, in order; ``waiting``, post
    migrations (and what follows them) held for nodes on other versions; ``too_new``, post
    migrations a newer node applied that this node does not know."""

    apply: list[str]
    waiting: list[str]
    too_new: list[str]


def plan(shipped: list[str], applied: set[str], others_on_other_versions: bool) -> Plan:
    """Decide from the migration files this node ships and the names the record holds."""
    pending = sorted((n for n in shipped if n not in applied), key=_order)
    apply: list[str] = []
    for name in pending:
        if _is_post(name) and others_on_other_versions:
            break
        apply.append(name)
    too_new = sorted((n for n in applied - set(shipped) if _is_post(n)), key=_order)
    return Plan(apply=apply, waiting=pending[len(apply):], too_new=too_new)


def _shipped() -> dict[str, Path]:
    return {p.name: p for p in Path(SchemaManager.get_migrations_path()).glob("*.sql")}


class QueueSchema:
    """The queue's schema ``schema`` in ``store``'s database."""

    def __init__(self, store: Store, schema: str) -> None:
        self.store = store
        self.schema = schema

    def prepare(self, other_versions: list[str]) -> None:
        """Create or upgrade the schema (module docstring); ``other_versions``: the live nodes
        running another idsync version than this one, whose presence holds post migrations."""
        shipped = _shipped()
        with self.store.engine.begin() as conn:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK})"))
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"))
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {self.schema}.{MIGRATIONS_TABLE} (name text PRIMARY KEY, "
                              "applied timestamptz NOT NULL DEFAULT now(), procrastinate text NOT NULL)"))
            conn.execute(text(f"SET LOCAL search_path = {self.schema}"))
            applied = {r[0] for r in conn.execute(text(f"SELECT name FROM {MIGRATIONS_TABLE}"))}
            exists = conn.execute(text("SELECT to_regclass(:t)"), {"t": f"{self.schema}.procrastinate_jobs"}).scalar()
            if exists is None:
                self._run(conn, SchemaManager.get_schema())
                self._record(conn, list(shipped))
                log.info("cluster.queue_created", schema=self.schema, procrastinate=__version__)
                return
            if not applied:
                # Made before the record was kept, by this release's Procrastinate.
                self._record(conn, list(shipped))
                return
            decided = plan(list(shipped), applied, bool(other_versions))
            if decided.too_new:
                raise ConfigError("conf/idsync.toml", "cluster.enabled", (
                    f"the queue's schema ({self.schema}) was upgraded by a node with a newer Procrastinate "
                    f"(migration {decided.too_new[-1]}); this node has Procrastinate {__version__}: "
                    "upgrade idsync on this node (docs/cluster.md, Upgrading)"))
            for name in decided.apply:
                self._run(conn, shipped[name].read_text(encoding="utf-8"))
                self._record(conn, [name])
            if decided.apply:
                log.warning("cluster.queue_upgraded", schema=self.schema, procrastinate=__version__,
                            migrations=decided.apply)
            if decided.waiting:
                log.warning("cluster.queue_migrations_waiting", schema=self.schema, migrations=decided.waiting,
                            nodes=other_versions, action="the first node to start once every node runs this "
                            "version applies them")

    @staticmethod
    def _run(conn: Connection, sql: str) -> None:
        # The driver's own execute: a file holds many statements and literal % signs.
        conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]

    @staticmethod
    def _record(conn: Connection, names: list[str]) -> None:
        conn.execute(text(f"INSERT INTO {MIGRATIONS_TABLE} (name, procrastinate) VALUES (:n, :v) "
                          "ON CONFLICT (name) DO NOTHING"), [{"n": n, "v": __version__} for n in names])
