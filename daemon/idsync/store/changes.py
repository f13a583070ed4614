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
``since - _OVERLAP`` (or the token's ``start``, below), in (stamp, id) order through the index on
(``object_type``, ``updated``): a write stamped before the mark but committed after
the last read (a long transaction, another node's clock) is still read, and an
object of the overlap already applied is known by its unchanged revision and
skipped. A run without changes reads one short index range and applies nothing. One of
the overlap the token does not keep (below) is handed on as read again
(``Change.reread``): a change only where its target does not hold it.

The token keeps ``_SEEN`` of those objects at most, the newest stamps: under a bulk
change (an import with implicit sync off) the others are read again by the next runs
and assessed again, which writes nothing where the target already holds the change, so
the token (and the read's memory) stays that size whatever the change
(``livesync.updated_seen_bounded`` says a read dropped some). The overlap is needed
only while a write stamped in it may still be committed: the token also keeps a *mark*,
the newest stamp and when (this host's clock) the read that first saw it ended; a read
that begins a whole overlap after that has every write stamped up to the mark, and its
token makes the next read ask for the objects stamped after the mark's stamp
(``start``). Once the store is quiet, its last changes stop being read again an
overlap after they were first read, however many share the newest stamp (a recon's
page into the type is written at one stamp). A
token without a mark (an older one) is read from ``since`` less the overlap; a mark or
start the store does not write raises ``SyncTokenExpired``. The window and its token
are SCIM's too (``idsync/stamps.py``).

Deleted objects leave no row to read: the caller finds them by the links whose
source object is gone (``LinkSet.sources_missing``), which needs no token.

A token ahead of the store's newest stamp by more than the overlap belongs to a
store restored from an older backup (or another store): ``SyncTokenExpired``, and
a full recon follows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import structlog
from sqlalchemy import and_, func, or_, select

from idsync.errors import SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Resource
from idsync.stamps import Read, StampWindow, load_stamps, stamp_text
from idsync.store.database import Store
from idsync.store.tables import managed_objects as mo

__all__ = ["ManagedChanges"]

log = structlog.get_logger(__name__)

_KIND = "updated"
# How late a write may commit after its stamp, or how far two nodes' clocks may differ.
_OVERLAP = dt.timedelta(seconds=30)
# How many objects seen within the overlap a token keeps (the newest): a bulk change
# would otherwise make the token (and the read's memory) as large as the change.
_SEEN = 2000


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
        position = _utc(newest) if newest is not None else dt.datetime.now(dt.UTC)
        window = _Window(self._resource.name, _KIND, position, {}, _OVERLAP, keep=_SEEN)
        for _ in self._stamps(window):
            pass
        return window.token(last=True)

    def read(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        since, seen, start, mark = load_stamps(token, _KIND, f"{self._resource.name}: the stored token is not one "
                                                             "the store makes")
        with self._store.engine.connect() as conn:
            newest = conn.execute(select(func.max(mo.c.updated)).where(mo.c.object_type == self._type)).scalar()
        if newest is not None and since > _utc(newest) + _OVERLAP:
            raise SyncTokenExpired(f"{self._resource.name}: the stored token ({stamp_text(since)}) is newer than "
                                   f"any object of the store ({stamp_text(_utc(newest))}): restored from an older "
                                   "backup, or another store; what changed since cannot be told")
        window = _Window(self._resource.name, _KIND, since, seen, _OVERLAP, keep=_SEEN, start=start, mark=mark)
        return ChangeFeed(self._batches(window, fields, max(page_size, 1)), _KIND)

    def _batches(self, window: _Window, fields: Sequence[str] | None, size: int) -> Iterator[ChangeBatch]:
        fresh: dict[str, bool] = {}  # id -> read again (``Read.AGAIN``)
        for object_id, found in self._stamps(window, size):
            if found is not Read.KNOWN:
                fresh[object_id] = found is Read.AGAIN
            if len(fresh) >= size:
                yield self._batch(fresh, fields, None)
                fresh = {}
        yield self._batch(fresh, fields, window.token(last=True))

    def _batch(self, ids: dict[str, bool], fields: Sequence[str] | None, token: str | None) -> ChangeBatch:
        found = self._resource.get_many(list(ids), fields) if ids else {}
        # An object deleted since its stamp was read is left to the deletes of the run.
        return ChangeBatch([Change(i, found[i], reread=again) for i, again in ids.items() if i in found], token)

    def _stamps(self, window: _Window, size: int = 1000) -> Iterator[tuple[str, Read]]:
        """(id, what it is to the window) of every object stamped in the window, in
        (stamp, id) order, read in keyset pages of ids, revisions and stamps only."""
        after: tuple[dt.datetime, str] | None = None
        first = mo.c.updated > window.start if window.past else mo.c.updated >= window.start
        while True:
            query = select(mo.c.id, mo.c.rev, mo.c.updated).where(mo.c.object_type == self._type, first)
            if after is not None:
                query = query.where(or_(mo.c.updated > after[0], and_(mo.c.updated == after[0], mo.c.id > after[1])))
            with self._store.engine.connect() as conn:
                rows = conn.execute(query.order_by(mo.c.updated, mo.c.id).limit(size)).all()
            for row in rows:
                stamp = _utc(row.updated)
                yield row.id, window.saw(row.id, f"{stamp_text(stamp)}#{row.rev}", stamp)
            if len(rows) < size:
                return
            after = (rows[-1].updated, rows[-1].id)


class _Window(StampWindow):
    """The read's position (``StampWindow``) in the objects of one type."""

    def dropped(self, read: int, kept: int) -> None:
        log.info("livesync.updated_seen_bounded", system=self.name, read=read, kept=kept,
                 reason="more objects were written within the overlap than the token keeps: the others are "
                        "read again by the next runs and assessed again")


def _utc(moment: dt.datetime) -> dt.datetime:
    """A stamp as the store returns it (naive on SQLite and MariaDB: UTC) in UTC."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
