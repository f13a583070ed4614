"""The source partitions of a recon split over a cluster's nodes (``recon_partitions``).

One row per partition of a run: its id bounds (``low`` included, ``high`` excluded,
none for an open end), its state (PENDING, ACTIVE, SUCCESS, FAILED; CANCELED for one the run ended without:
``end_unread``), who works on it
(``owner``, the process, and ``node``) and the counts it committed (``summary``).

A worker takes a PENDING partition with ``claim``: one conditional update, so two
workers never take the same one, on every dialect. Its counts go in with each page's
transaction (``progress``), and ``progress`` and ``finish`` only count while the worker
still owns the partition: a partition handed back after its node was taken for dead
(``Nodes.take_over``) and taken by another worker is that worker's alone, and a page of
the first worker that finds it so is rolled back (``RunTakenOver``). Only a run still
ACTIVE has partitions to take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Exists, exists, insert, select, update

from idsync.store.database import Store, utcnow
from idsync.store.tables import recon_partitions, recon_runs

__all__ = ["Partition", "Partitions", "end_unread"]

_P = recon_partitions


@dataclass(frozen=True)
class Partition:
    part: int
    low: str | None
    high: str | None
    state: str
    node: str | None
    attempts: int
    summary: dict[str, Any] | None
    message: str | None

    def to_json(self) -> dict[str, Any]:
        counts = (self.summary or {}).get("tally", {})
        return {"partition": self.part, "state": self.state, "node": self.node, "attempts": self.attempts,
                "processed": counts.get("source_processed", 0), "message": self.message}


class Partitions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, run_id: str, bounds: Sequence[tuple[str | None, str | None]], plan: Mapping[str, Any]) -> None:
        """The PENDING partitions of ``run_id``; ``plan`` (what helpers need to run them) goes in each."""
        with self.store.begin() as conn:
            conn.execute(insert(_P), [{"run_id": run_id, "part": i, "low": low, "high": high, "state": "PENDING",
                                       "attempts": 0, "summary": {"plan": dict(plan)}}
                                      for i, (low, high) in enumerate(bounds)])

    def plan(self, run_id: str) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(_P.c.summary).where(_P.c.run_id == run_id, _P.c.part == 0)).first()
        return dict((row.summary or {}).get("plan") or {}) if row else None

    def claim(self, run_id: str, owner: str, node: str) -> Partition | None:
        """Take the first PENDING partition of ``run_id`` for ``owner``; None when none is left,
        or the run is no longer ACTIVE."""
        while True:
            with self.store.engine.connect() as conn:
                row = conn.execute(select(_P.c.part).where(_P.c.run_id == run_id, _P.c.state == "PENDING",
                                                           _run_active(run_id)).order_by(_P.c.part).limit(1)).first()
            if row is None:
                return None
            with self.store.begin() as conn:
                taken = conn.execute(update(_P).where(_P.c.run_id == run_id, _P.c.part == row.part,
                                                      _P.c.state == "PENDING", _run_active(run_id))
                                     .values(state="ACTIVE", owner=owner, node=node, attempts=_P.c.attempts + 1,
                                             started=utcnow(), ended=None, message=None))
            if taken.rowcount:
                return next(p for p in self.all(run_id) if p.part == row.part)

    def progress(self, conn: Connection, run_id: str, part: int, owner: str, summary: Mapping[str, Any]) -> bool:
        """Record the counts of a partition ``owner`` still works on; whether it does."""
        return bool(conn.execute(update(_P).where(_P.c.run_id == run_id, _P.c.part == part, _P.c.owner == owner,
                                                  _P.c.state == "ACTIVE").values(summary=dict(summary))).rowcount)

    def held(self, run_id: str, part: int, owner: str) -> bool:
        """Whether ``owner`` still works on the partition."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(_P.c.part).where(_P.c.run_id == run_id, _P.c.part == part, _P.c.owner == owner,
                                                        _P.c.state == "ACTIVE")).first() is not None

    def finish(self, run_id: str, part: int, owner: str, state: str, summary: Mapping[str, Any],
               message: str | None) -> bool:
        """Record the end of a partition this worker still owns; whether it did."""
        with self.store.begin() as conn:
            done = conn.execute(update(_P).where(_P.c.run_id == run_id, _P.c.part == part, _P.c.owner == owner,
                                                 _P.c.state == "ACTIVE")
                                .values(state=state, summary=dict(summary), message=message, ended=utcnow()))
        return bool(done.rowcount)

    def hand_back(self, run_id: str, processes: Sequence[str]) -> int:
        """Make PENDING again the ACTIVE partitions of ``run_id`` that the dead ``processes``
        (``HOST:PID``, as lock owners start) held; how many there were."""
        with self.store.begin() as conn:
            held = [r.part for r in conn.execute(select(_P.c.part, _P.c.owner).where(
                _P.c.run_id == run_id, _P.c.state == "ACTIVE"))
                if r.owner is not None and any(r.owner == p or r.owner.startswith(f"{p}@") for p in processes)]
            if held:
                conn.execute(update(_P).where(_P.c.run_id == run_id, _P.c.state == "ACTIVE", _P.c.part.in_(held))
                             .values(state="PENDING", owner=None))
        return len(held)

    def all(self, run_id: str) -> list[Partition]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(_P).where(_P.c.run_id == run_id).order_by(_P.c.part)).mappings().all()
        return [Partition(r["part"], r["low"], r["high"], r["state"], r["node"], r["attempts"],
                          dict(r["summary"]) if r["summary"] else None, r["message"]) for r in rows]


def end_unread(conn: Connection, run_ids: Sequence[str], state: str) -> None:
    """The partitions of ``run_ids``, which just ended in ``state`` (failed, canceled, taken
    over), still waiting or being read: CANCELED, so that none shows as still to be read.
    A worker still reading one finds it no longer its own at its next page."""
    if state == "SUCCESS" or not run_ids:
        return
    conn.execute(update(_P).where(_P.c.run_id.in_(list(run_ids)), _P.c.state.in_(("PENDING", "ACTIVE")))
                 .values(state="CANCELED", owner=None, ended=utcnow(),
                         message=f"not read to its end: the run ended {state} first"))


def _run_active(run_id: str) -> Exists:
    return exists().where(recon_runs.c.id == run_id, recon_runs.c.state == "ACTIVE")
