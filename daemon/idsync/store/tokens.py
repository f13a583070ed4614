"""liveSync tokens: per source, the position its next liveSync run reads changes from.

A token is written with ``save`` inside the transaction that applies the last
change it covers, so a crash leaves either both or neither: the next run reads
the same changes again at worst (applying a change twice is harmless), never
skips one. ``forget`` drops a token the source can no longer honour; the run
that drops it reconciles in full and saves a fresh one.

The same row counts the source's liveSync runs (``record_run``): these counts
are never pruned, so the metrics built from them never decrease, and a liveSync
run that found no change leaves no run record, only its count here. A run that could
not count itself (its process killed, stopped at once, or unable to reach the store at
its end) is counted when its lock is broken or dropped (``store/locks.py``): FAILED,
or CANCELED at a forced exit, with the reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from idsync.store.database import Store, as_utc, utcnow
from idsync.store.tables import sync_tokens

__all__ = ["SourceState", "SyncTokens"]


@dataclass(frozen=True)
class SourceState:
    """What the store holds about one source's liveSync."""

    source: str
    token: str | None
    method: str | None  # how the last run that read the source did: its connector's method, or "full recon"
    updated: dt.datetime | None
    last_run: dt.datetime | None
    last_state: str | None
    last_message: str | None
    runs: int
    failed: int
    changes: int
    full_recons: int

    def to_json(self) -> dict[str, object]:
        """What ``idsync status``, the status file and the API show (never the token itself)."""
        return {
            "source": self.source,
            "method": self.method,
            "hasToken": self.token is not None,
            "tokenUpdated": _iso(self.updated),
            "lastRun": _iso(self.last_run),
            "lastState": self.last_state,
            "lastMessage": self.last_message,
            "runs": self.runs,
            "failed": self.failed,
            "changes": self.changes,
            "fullRecons": self.full_recons,
        }


class SyncTokens:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, source: str) -> SourceState | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(sync_tokens).where(sync_tokens.c.source == source)).mappings().first()
        return _state(row) if row else None

    def all(self) -> list[SourceState]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(sync_tokens).order_by(sync_tokens.c.source)).mappings().all()
        return [_state(r) for r in rows]

    def save(self, conn: Connection, source: str, token: str, method: str | None) -> None:
        """Store ``token`` as the source's position, in the caller's transaction."""
        self._update(conn, source, token=token, method=method, updated=utcnow())

    def forget(self, source: str) -> None:
        """Drop the source's token: its next run starts with a full recon."""
        with self.store.begin() as conn:
            self._update(conn, source, token=None, method=None, updated=utcnow())

    def record_run(self, source: str, state: str, message: str | None, *, changes: int,
                   full_recon: bool, method: str | None = None) -> None:
        """Count one liveSync run of ``source`` and keep how it ended, and how it read the
        source (``method``: its connector's, or a full recon's) when it came that far."""
        with self.store.begin() as conn:
            self.count_run(conn, source, state, message, changes=changes, full_recon=full_recon, method=method)

    @classmethod
    def count_run(cls, conn: Connection, source: str, state: str, message: str | None, *, changes: int = 0,
                  full_recon: bool = False, method: str | None = None) -> None:
        """``record_run`` in the caller's transaction: also for a run that ended without
        counting itself, whose lock is broken (``store/locks.py``)."""
        c = sync_tokens.c
        read = {"method": method} if method is not None else {}
        cls._update(conn, source, last_run=utcnow(), last_state=state, last_message=message, runs=c.runs + 1,
                    failed=c.failed + (1 if state == "FAILED" else 0), changes=c.changes + changes,
                    full_recons=c.full_recons + (1 if full_recon else 0), **read)

    @staticmethod
    def _update(conn: Connection, source: str, **values: object) -> None:
        """Update the source's row, made first if it has none (one statement when it has)."""
        stmt = update(sync_tokens).where(sync_tokens.c.source == source).values(**values)
        if conn.execute(stmt).rowcount == 0:
            conn.execute(insert(sync_tokens).values(source=source, runs=0, failed=0, changes=0, full_recons=0))
            conn.execute(stmt)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _state(row: object) -> SourceState:
    r = dict(row)  # type: ignore[call-overload]
    return SourceState(
        source=r["source"], token=r["token"], method=r["method"], updated=as_utc(r["updated"]),
        last_run=as_utc(r["last_run"]), last_state=r["last_state"], last_message=r["last_message"],
        runs=int(r["runs"]), failed=int(r["failed"]), changes=int(r["changes"]), full_recons=int(r["full_recons"]))
