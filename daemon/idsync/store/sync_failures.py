"""liveSync's failed changes: per source and object, how often applying it failed.

A change that fails through any mapping of its source is ``record``-ed in the
transaction that moves the source's token past it, so the token never moves past a
change that is not either applied or kept here. The source's next liveSync runs read
the ``retrying`` objects again and apply them before their new changes; one that goes
through is ``cleared``. Whether the change was a delete is kept too: an object a
retry no longer finds is deleted again only when its failed change was a delete.
Once its retries are spent (``syncFailureHandler.maxRetries``) the run either
``drop``-s it or, with ``dead-letter-queue``, ``bury``-s it: a dead letter stays
for an administrator to read (``idsync livesync SOURCE --failures``, the API's
``repo/synchronisation/deadLetterQueue/SYSTEM``), to ``revive`` once its cause is dealt
with, or to ``forget``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, delete, func, select, update

from idsync.store.database import Store, as_utc, utcnow
from idsync.store.tables import sync_failures
from idsync.store.tokens import SyncTokens

__all__ = ["DEAD", "RETRYING", "SyncFailure", "SyncFailures", "livesync_sources"]

RETRYING = "RETRYING"
DEAD = "DEAD"


@dataclass(frozen=True)
class SyncFailure:
    source: str
    object_id: str
    state: str
    attempts: int
    deleted: bool
    token: str | None
    error: str
    first_failed: dt.datetime
    last_failed: dt.datetime

    def to_json(self) -> dict[str, object]:
        """As ``idsync livesync SOURCE --failures --json`` shows it, with PingIDM's dead letter's
        names (``systemIdentifier``, ``objectType``, ``uid``, ``failureCause``) beside."""
        parts = self.source.split("/")
        return {"_id": self.object_id, "source": self.source, "state": self.state, "attempts": self.attempts,
                "delete": self.deleted, "error": self.error, "firstFailed": _iso(self.first_failed),
                "lastFailed": _iso(self.last_failed),
                "token": self.token, "systemIdentifier": parts[1] if len(parts) > 1 else self.source,
                "objectType": parts[2] if len(parts) > 2 else "", "uid": self.object_id,
                "failureCause": self.error}


class SyncFailures:
    def __init__(self, store: Store) -> None:
        self.store = store

    def retrying(self, source: str) -> dict[str, bool]:
        """The objects of ``source`` to try again, the longest waiting first: whether the
        change that failed was a delete."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(sync_failures.c.object_id, sync_failures.c.deleted)
                .where(sync_failures.c.source == source, sync_failures.c.state == RETRYING)
                .order_by(sync_failures.c.first_failed, sync_failures.c.object_id))
            return {object_id: bool(deleted) for object_id, deleted in rows}

    def record(self, conn: Connection, source: str, failed: Mapping[str, str], token: str | None,
               deletes: Set[str] = frozenset()) -> dict[str, tuple[int, str | None]]:
        """One more failed attempt for each object of ``failed`` (object id -> error; those
        of ``deletes`` failed to be deleted): for each, the attempts made so far and the
        token it was read at when it first failed (``token`` for one failing the first time).
        A dead letter failing again is retried anew."""
        if not failed:
            return {}
        now = utcnow()
        held = {r.object_id: (r.attempts, r.token) for r in conn.execute(
            select(sync_failures.c.object_id, sync_failures.c.attempts, sync_failures.c.token)
            .where(sync_failures.c.source == source, sync_failures.c.object_id.in_(list(failed)),
                   sync_failures.c.state == RETRYING))}
        fresh = [i for i in failed if i not in held]
        if fresh:  # a dead letter whose object changed and failed again starts over
            conn.execute(delete(sync_failures).where(sync_failures.c.source == source,
                                                     sync_failures.c.object_id.in_(fresh)))
        for object_id, (attempts, _) in held.items():
            conn.execute(update(sync_failures)
                         .where(sync_failures.c.source == source, sync_failures.c.object_id == object_id)
                         .values(attempts=attempts + 1, error=failed[object_id], last_failed=now,
                                 deleted=object_id in deletes))
        new = [{"source": source, "object_id": i, "state": RETRYING, "attempts": 1, "deleted": i in deletes,
                "token": token, "error": failed[i], "first_failed": now, "last_failed": now}
               for i in failed if i not in held]
        if new:
            conn.execute(sync_failures.insert(), new)
        return {i: (held[i][0] + 1, held[i][1]) if i in held else (1, token) for i in failed}

    def clear(self, conn: Connection, source: str, ids: Iterable[str]) -> int:
        """Forget the retries of objects that went through (dead letters stay)."""
        chosen = list(ids)
        if not chosen:
            return 0
        done = 0
        for start in range(0, len(chosen), 500):
            done += conn.execute(delete(sync_failures).where(
                sync_failures.c.source == source, sync_failures.c.state == RETRYING,
                sync_failures.c.object_id.in_(chosen[start:start + 500]))).rowcount or 0
        return done

    def bury(self, conn: Connection, source: str, ids: Iterable[str]) -> None:
        """Keep these objects as dead letters: retried no more."""
        chosen = list(ids)
        if chosen:
            conn.execute(update(sync_failures).where(sync_failures.c.source == source,
                                                     sync_failures.c.object_id.in_(chosen)).values(state=DEAD))

    def drop(self, conn: Connection, source: str, ids: Iterable[str]) -> None:
        chosen = list(ids)
        if chosen:
            conn.execute(delete(sync_failures).where(sync_failures.c.source == source,
                                                     sync_failures.c.object_id.in_(chosen)))

    def entries(self, source: str | None = None, state: str | None = None) -> list[SyncFailure]:
        query = select(sync_failures).order_by(sync_failures.c.source, sync_failures.c.first_failed,
                                               sync_failures.c.object_id)
        if source is not None:
            query = query.where(sync_failures.c.source == source)
        if state is not None:
            query = query.where(sync_failures.c.state == state)
        with self.store.engine.connect() as conn:
            return [_failure(r) for r in conn.execute(query).mappings()]

    def get(self, source: str, object_id: str) -> SyncFailure | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(sync_failures).where(sync_failures.c.source == source,
                                                           sync_failures.c.object_id == object_id)).mappings().first()
        return _failure(row) if row is not None else None

    def counts(self) -> dict[str, dict[str, int]]:
        """source -> state -> how many objects."""
        out: dict[str, dict[str, int]] = {}
        with self.store.engine.connect() as conn:
            for source, state, n in conn.execute(select(sync_failures.c.source, sync_failures.c.state,
                                                        func.count()).group_by(sync_failures.c.source,
                                                                               sync_failures.c.state)):
                out.setdefault(source, {})[state] = n
        return out

    def revive(self, source: str, object_id: str | None = None) -> int:
        """Have the source's next liveSync run try a dead letter (one, or every one of
        ``source``) again, its retries counted anew; how many."""
        with self.store.begin() as conn:
            query = update(sync_failures).where(sync_failures.c.source == source, sync_failures.c.state == DEAD)
            if object_id is not None:
                query = query.where(sync_failures.c.object_id == object_id)
            return conn.execute(query.values(state=RETRYING, attempts=0)).rowcount or 0

    def forget(self, source: str, object_id: str | None = None) -> int:
        """Remove one object's entry, or every entry of ``source``; how many went."""
        with self.store.begin() as conn:
            query = delete(sync_failures).where(sync_failures.c.source == source)
            if object_id is not None:
                query = query.where(sync_failures.c.object_id == object_id)
            return conn.execute(query).rowcount or 0


def livesync_sources(store: Store) -> list[dict[str, object]]:
    """Each source's liveSync state as ``idsync status``, the status file and the API show
    it, with how many of its objects wait for a retry (``retrying``) and are dead letters
    (``deadLetters``)."""
    counts = SyncFailures(store).counts()
    return [{**s.to_json(), "retrying": counts.get(s.source, {}).get(RETRYING, 0),
             "deadLetters": counts.get(s.source, {}).get(DEAD, 0)} for s in SyncTokens(store).all()]


def _failure(row: RowMapping) -> SyncFailure:
    return SyncFailure(row["source"], row["object_id"], row["state"], int(row["attempts"]), bool(row["deleted"]),
                       row["token"], row["error"], as_utc(row["first_failed"]), as_utc(row["last_failed"]))


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
