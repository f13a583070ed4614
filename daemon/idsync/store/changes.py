"""liveSync of a managed type: the store's objects changed since a token (``ChangeSource``).

Implicit sync pushes a managed change at once; liveSync of ``managed/TYPE`` replays
what changed since its token through the mappings whose source the type is, so a
change the pushes never carried still arrives: one made with implicit sync off
(``--no-sync``, a bulk load), or written by a recon or liveSync *into* the type (those
push nowhere), or whose push was lost with its process. Applying a change already
pushed finds the target as projected and writes nothing.

Every write of an object moves its ``_rev`` and its ``updated`` stamp (a change to
its relationships too). The token holds a high-water mark (``since``: the newest
stamp read) and the objects read within ``_OVERLAP`` before it, with their stamp and
revision (``seen``). A read asks for the objects stamped at or after
``since - _OVERLAP``, in (stamp, id) order through the index on
(``object_type``, ``updated``): a write stamped before the mark but committed after
the last read (a long transaction, another node's clock) is still read, and an
object of the overlap already applied is known by its unchanged revision and
skipped. A run without changes reads one short index range and applies nothing.

Deleted objects leave no row to read: the caller finds them by the links whose
source object is gone (``LinkSet.sources_missing``), which needs no token.

A token ahead of the store's newest stamp by more than the overlap belongs to a
store restored from an older backup (or another store): ``SyncTokenExpired``, and
a full recon follows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from sqlalchemy import and_, func, or_, select

from idsync.errors import SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Resource, dump_window, load_window
from idsync.store.database import Store
from idsync.store.tables import managed_objects as mo

__all__ = ["ManagedChanges"]

_KIND = "updated"
# How late a write may commit after its stamp, or how far two nodes' clocks may differ.
_OVERLAP = dt.timedelta(seconds=30)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ManagedChanges:
    """Reads the changes of one managed type of ``store``, as ``resource`` (that type) shows its objects."""

    def __init__(self, store: Store, object_type: str, resource: Resource) -> None:
        self._store = store
        self._resource = resource
        self._type = object_type

    def latest_token(self) -> str:
        """The newest stamp of the type (now, when it has no object), the overlap's objects seen:
        the full recon that follows reads them as they are."""
        with self._store.engine.connect() as conn:
            newest = conn.execute(select(func.max(mo.c.updated)).where(mo.c.object_type == self._type)).scalar()
        window = _Window(_utc(newest) if newest is not None else dt.datetime.now(dt.UTC), {})
        for _ in self._stamps(window):
            pass
        return window.token()

    def read(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        since, seen = _load(self._resource.name, token)
        with self._store.engine.connect() as conn:
            newest = conn.execute(select(func.max(mo.c.updated)).where(mo.c.object_type == self._type)).scalar()
        if newest is not None and since > _utc(newest) + _OVERLAP:
            raise SyncTokenExpired(f"{self._resource.name}: the stored token ({_text(since)}) is newer than any "
                                   f"object of the store ({_text(_utc(newest))}): restored from an older backup, or "
                                   "another store; what changed since cannot be told")
        window = _Window(since, seen)
        return ChangeFeed(self._batches(window, fields, max(page_size, 1)), _KIND)

    def _batches(self, window: _Window, fields: Sequence[str] | None, size: int) -> Iterator[ChangeBatch]:
        fresh: list[str] = []
        for object_id, fresh_one in self._stamps(window, size):
            if fresh_one:
                fresh.append(object_id)
            if len(fresh) >= size:
                yield self._batch(fresh, fields, None)
                fresh = []
        yield self._batch(fresh, fields, window.token())

    def _batch(self, ids: list[str], fields: Sequence[str] | None, token: str | None) -> ChangeBatch:
        found = self._resource.get_many(ids, fields) if ids else {}
        # An object deleted since its stamp was read is left to the deletes of the run.
        return ChangeBatch([Change(i, found[i]) for i in ids if i in found], token)

    def _stamps(self, window: _Window, size: int = 1000) -> Iterator[tuple[str, bool]]:
        """(id, whether it is new to the window) of every object stamped in the window, in
        (stamp, id) order, read in keyset pages of ids, revisions and stamps only."""
        after: tuple[dt.datetime, str] | None = None
        while True:
            query = select(mo.c.id, mo.c.rev, mo.c.updated).where(mo.c.object_type == self._type,
                                                                   mo.c.updated >= window.start)
            if after is not None:
                query = query.where(or_(mo.c.updated > after[0], and_(mo.c.updated == after[0], mo.c.id > after[1])))
            with self._store.engine.connect() as conn:
                rows = conn.execute(query.order_by(mo.c.updated, mo.c.id).limit(size)).all()
            for row in rows:
                yield row.id, window.saw(row.id, row.rev, _utc(row.updated))
            if len(rows) < size:
                return
            after = (rows[-1].updated, rows[-1].id)


class _Window:
    """The read's position: the high-water mark and the revisions seen near it."""

    def __init__(self, since: dt.datetime, seen: dict[str, str]) -> None:
        self.since = since
        self.seen = dict(seen)
        self.start = since - _OVERLAP

    def saw(self, object_id: str, rev: str, stamp: dt.datetime) -> bool:
        """Note ``object_id`` at ``rev``; whether that revision is new to the window."""
        value = f"{_text(stamp)}#{rev}"
        fresh = self.seen.get(object_id) != value
        self.seen[object_id] = value
        self.since = max(self.since, stamp)
        return fresh

    def token(self) -> str:
        floor = self.since - _OVERLAP
        kept = {k: v for k, v in self.seen.items() if _parse(v.split("#", 1)[0]) >= floor}
        return dump_window(_KIND, _text(self.since), kept)


def _utc(moment: dt.datetime) -> dt.datetime:
    """A stamp as the store returns it (naive on SQLite and MariaDB: UTC) in UTC."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> dt.datetime:
    try:
        return _utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return _EPOCH


def _load(name: str, token: str) -> tuple[dt.datetime, dict[str, str]]:
    text, seen, _ = load_window(token, _KIND, f"{name}: the stored token is not one the store makes")
    since = _parse(text)
    if since == _EPOCH:
        raise SyncTokenExpired(f"{name}: the stored token is not one the store makes")
    return since, seen
