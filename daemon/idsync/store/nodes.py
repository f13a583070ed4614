"""The nodes of a cluster (``cluster_nodes``): who joined, which process it is, and when it
was last seen.

A node writes ``seen`` at every heartbeat (``[cluster] heartbeat``); a node not seen for
``[cluster] stall_timeout`` is dead: any node then breaks its locks (failing the recon runs
they guarded) and hands its partitions back (``take_over``). A node's row outlives the
process by a day, so ``idsync status`` still shows a node that died.

Every time here is the store's (PostgreSQL's ``now()``), written and compared alike: a
node whose own clock is off neither looks dead to the others nor takes them for dead,
nor looks alive long after it died.

A name belongs to one live process at a time: a node that starts under the name of a
node still alive is refused (``claim``); a name whose process is gone (its heartbeat
stopped, or on this host its pid is gone) is taken over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from idsync.errors import ConfigError
from idsync.store.database import Store, as_utc, utcnow
from idsync.store.locks import Holder, Locks
from idsync.store.tables import cluster_nodes, recon_partitions

__all__ = ["Node", "Nodes"]

_FORGET_AFTER = dt.timedelta(days=1)


@dataclass(frozen=True)
class Node:
    name: str
    owner: str
    version: str
    started: dt.datetime
    seen: dt.datetime
    alive: bool
    running: list[str]
    # Its configuration files (``conf/``, ``jobs.d/``): relative path -> digest of the content.
    config: dict[str, str] = field(default_factory=dict)

    @property
    def config_digest(self) -> str:
        """One digest of all its files: equal on nodes deployed with the same files."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:12]

    def differs(self, other: Node) -> list[str]:
        """The files whose content differs between the two nodes, or that one lacks."""
        return sorted(f for f in self.config.keys() | other.config.keys() if self.config.get(f) != other.config.get(f))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "process": self.owner, "version": self.version,
                "started": self.started.isoformat(), "seen": self.seen.isoformat(), "alive": self.alive,
                "running": self.running, "config": self.config_digest if self.config else None}


class Nodes:
    """The ``cluster_nodes`` table of a store, with ``stall`` as the time that makes a node dead."""

    def __init__(self, store: Store, stall: dt.timedelta) -> None:
        self.store = store
        self.stall = stall

    def _now(self, conn: Connection) -> dt.datetime:
        """The store's time: the same for every node, whatever its own clock says."""
        if self.store.dialect != "postgresql":
            return utcnow()  # a cluster runs on PostgreSQL; another store only shows its rows
        return as_utc(conn.execute(select(func.now())).scalar_one())

    def claim(self, name: str, owner: str, version: str, config: dict[str, str] | None = None) -> None:
        """Register this process as node ``name``; ``ConfigError`` if a live node has the name."""
        with self.store.begin() as conn:
            now = self._now(conn)
            row = conn.execute(select(cluster_nodes).where(cluster_nodes.c.name == name)
                               .with_for_update()).mappings().first()
            if row is not None and row["owner"] != owner:
                holder = Holder(row["owner"], as_utc(row["seen"]) + self.stall)
                if holder.gone(now) is None:
                    raise ConfigError("conf/idsync.toml", "cluster.node_name",
                                      f"node name {name!r} is in use by {holder.describe()}, a node still alive; "
                                      "give each node a name of its own")
                conn.execute(delete(cluster_nodes).where(cluster_nodes.c.name == name))
            elif row is not None:
                conn.execute(delete(cluster_nodes).where(cluster_nodes.c.name == name))
            conn.execute(insert(cluster_nodes).values(name=name, owner=owner, version=version, started=now,
                                                      seen=now, running=[], config=config or {}))

    def beat(self, name: str, owner: str, running: list[str], config: dict[str, str] | None = None) -> None:
        """This node is alive and runs ``running``; ``config``: its files, when they changed."""
        changed = {} if config is None else {"config": config}
        with self.store.begin() as conn:
            conn.execute(update(cluster_nodes).where(cluster_nodes.c.name == name, cluster_nodes.c.owner == owner)
                         .values(seen=self._now(conn), running=running, **changed))

    def leave(self, name: str, owner: str) -> None:
        """A node stopping cleanly: it is not alive any more (its row stays a day)."""
        with self.store.begin() as conn:
            conn.execute(update(cluster_nodes).where(cluster_nodes.c.name == name, cluster_nodes.c.owner == owner)
                         .values(seen=self._now(conn) - self.stall - dt.timedelta(seconds=1), running=[]))

    def all(self) -> list[Node]:
        with self.store.engine.connect() as conn:
            now = self._now(conn)
            rows = conn.execute(select(cluster_nodes).order_by(cluster_nodes.c.name)).mappings().all()
        return [Node(r["name"], r["owner"], r["version"], as_utc(r["started"]), as_utc(r["seen"]),
                     as_utc(r["seen"]) >= now - self.stall, list(r["running"] or []), dict(r["config"] or {}))
                for r in rows]

    def alive(self) -> list[Node]:
        return [n for n in self.all() if n.alive]

    def take_over(self) -> list[str]:
        """Break the locks of every dead node and hand its ACTIVE partitions back; the
        recon runs this failed. Forgets nodes dead for a day."""
        dead = [n for n in self.all() if not n.alive]
        failed: list[str] = []
        if not dead:
            return failed
        owners = {n.owner: n.name for n in dead}
        lock_rows = Locks(self.store).holders()
        for lock_name, holder in lock_rows.items():
            node_owner = holder.owner.rsplit(":", 1)[0] if holder.run_id else holder.owner
            if node_owner in owners:
                failed += Locks(self.store).break_(
                    lock_name, holder, f"interrupted: node {owners[node_owner]} stopped its heartbeat")
        with self.store.begin() as conn:
            conn.execute(update(recon_partitions).where(
                recon_partitions.c.state == "ACTIVE",
                recon_partitions.c.owner.in_(list(owners))).values(state="PENDING", owner=None))
            conn.execute(delete(cluster_nodes).where(cluster_nodes.c.seen < self._now(conn) - _FORGET_AFTER))
        return failed
