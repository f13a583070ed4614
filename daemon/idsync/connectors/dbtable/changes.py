"""liveSync for a Database Table: the rows whose ``changeLogColumn`` moved past the
token, as OpenICF's connector reads them (``changeLogColumn > token``).

The column is one that moves forward on every change of a row: a timestamp (MySQL's
``ON UPDATE CURRENT_TIMESTAMP``, a trigger) or an increasing number (a sequence). A
token holds the highest value read (``since``) and the keys of the rows read at that
value (``seen``). A read asks for ``column >= since`` in keyset pages ordered by
(column, key) and skips the rows of ``seen`` still at ``since``, so a row changed
within the same tick of a coarse clock (MySQL's ``DATETIME`` keeps whole seconds)
after the last read is not missed, and a read without changes applies nothing. Each
batch carries the token that covers it, except one that ends inside a run of more than
10,000 rows sharing one value (the stored token then stays until a later batch); a
read whose highest value more than 10,000 rows share ends with a token without
``seen``, read with ``column > since`` next time, as OpenICF does.

``latest_token`` answers the highest value now and the keys at it (two short queries,
no row read); a table without a row yet gives a token from which every row is read.

What this cannot see: a deleted row (left to the next full recon: the feed says so), a
row whose column is NULL, a value moved backwards or committed after a read that saw
later ones (a clock set back, a long transaction that stamped its rows when it began),
and a table restored from a backup (reconcile in full). A token of another column or
kind raises ``SyncTokenExpired``: a full recon follows. A changed row with a value not
of its property's type stops the read, naming the row (``PeerError``): applying the
change without the value would lose it. On SQLite a timestamp is compared as the text
it is stored as, so its writers must use one form.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, or_, select, type_coerce

from idsync.connectors.dbtable.table import Col, DbTable
from idsync.connectors.dbtable.values import id_text
from idsync.errors import ConfigError, PeerError, SyncTokenExpired
from idsync.resource import UNREADABLE, Change, ChangeBatch, ChangeFeed, Obj

__all__ = ["DbTableChanges"]

_KIND = "dbtable"
_METHOD = "changeLogColumn"
_MAX_SEEN = 10_000
_NOTE = ("a Database Table's changeLogColumn does not show deleted rows: deletes are left to the next "
         "full recon")

Selected = Callable[[set[str] | None], list[ColumnElement[Any]]]
ToObject = Callable[[Mapping[Any, Any], set[str] | None], Obj]


class DbTableChanges:
    def __init__(self, resource: str, table: DbTable, selected: Selected, to_object: ToObject) -> None:
        self._name = resource
        self._table = table
        self._selected = selected
        self._object = to_object

    def latest_token(self) -> str:
        col, value, kind = self._column()
        key = self._table.shape().key
        with self._table.connect("reading the change log column") as conn:
            top = conn.execute(select(func.max(value))).scalar()
            if top is None:
                return _dump(col.name, kind, None, [])
            keys = conn.execute(select(key.column).where(value == top).limit(_MAX_SEEN + 1)).scalars().all()
        texts = [id_text(k) for k in keys]
        return _dump(col.name, kind, _text(top), texts if len(texts) <= _MAX_SEEN else None)

    def read(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        col, value, kind = self._column()
        since, seen = self._load(token, col.name, kind)
        wanted = None if fields is None else {*fields, "_id"}
        return ChangeFeed(self._batches(token, col, value, kind, since, seen, wanted, max(page_size, 1)),
                          method=_METHOD, reports_deletes=False, note=_NOTE)

    def _column(self) -> tuple[Col, ColumnElement[Any], str]:
        """The change log column, what compares it, and the kind of its token."""
        settings = self._table.settings
        if settings.change_log is None:
            raise ConfigError(self._table.file, "configurationProperties.changeLogColumn",
                              f"liveSync of {self._name} needs a column the database moves forward on every change "
                              "(a timestamp or an increasing number): set it, or reconcile on a schedule instead")
        col = self._table.shape().change_log
        assert col is not None
        if self._table.sqlite and col.kind in ("datetime", "date", "time"):
            return col, type_coerce(col.column, String), "text"
        return col, col.column, col.kind

    def _batches(self, token: str, col: Col, value: ColumnElement[Any], kind: str, since: Any, seen: set[str] | None,
                 wanted: set[str] | None, size: int) -> Iterator[ChangeBatch]:
        key = self._table.shape().key
        since_text = None if since is None else _text(since)
        condition = and_(value.is_not(None), key.column.is_not(None))
        if since is not None:
            condition = and_(condition, value > since if seen is None else value >= since)
        top, top_seen = since_text, seen  # the highest value read and the keys read at it
        label = f"{col.name}__changed"
        columns = [*self._selected(wanted), value.label(label)]
        after: tuple[Any, Any] | None = None
        while True:
            statement = select(*columns).where(condition)
            if after is not None:
                statement = statement.where(or_(value > after[0], and_(value == after[0], key.column > after[1])))
            rows = self._table.fetch(statement.order_by(value, key.column).limit(size), "reading changed rows")
            changes: list[Change] = []
            for row in rows:
                mapping = row._mapping
                stamp, row_id = _text(mapping[label]), id_text(mapping[key.name])
                if not (stamp == since_text and seen is not None and row_id in seen):
                    obj = self._object(mapping, wanted)
                    if "_id" not in obj or UNREADABLE in obj:
                        raise PeerError(f"liveSync of {self._name}: {obj.get(UNREADABLE) or obj.get('dn')}; fix "
                                        "the row, or reconcile (that fails the row alone)")
                    changes.append(Change(obj["_id"], obj))
                if stamp != top or top_seen is None:
                    top, top_seen = stamp, set()
                top_seen.add(row_id)
            if len(rows) < size:
                if after is None and not rows:
                    yield ChangeBatch([], token)  # nothing changed: the token stays as it is
                else:
                    kept = top_seen if top_seen is not None and len(top_seen) <= _MAX_SEEN else None
                    yield ChangeBatch(changes, _dump(col.name, kind, top, kept))
                return
            last = rows[-1]._mapping
            after = (last[label], last[key.name])
            full = top_seen is not None and len(top_seen) > _MAX_SEEN
            yield ChangeBatch(changes, None if full else _dump(col.name, kind, top, top_seen))

    def _load(self, token: str, column: str, kind: str) -> tuple[Any, set[str] | None]:
        refused = f"{self._name}: the stored token is not one this connector made for changeLogColumn {column}"
        try:
            state = json.loads(token)
        except ValueError:
            state = None
        if not isinstance(state, dict) or state.get("v") != 1 or state.get("kind") != _KIND \
                or state.get("column") != column or state.get("type") != kind:
            raise SyncTokenExpired(refused)
        since, seen = state.get("since"), state.get("seen")
        if since is None:
            return None, set()
        if not isinstance(since, str) or not (seen is None or isinstance(seen, list)):
            raise SyncTokenExpired(refused)
        try:
            value = _parse(since, kind)
        except (ValueError, decimal.InvalidOperation):
            raise SyncTokenExpired(refused) from None
        return value, None if seen is None else {str(s) for s in seen}


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _parse(text: str, kind: str) -> Any:
    if kind == "integer":
        return int(text)
    if kind == "decimal":
        return decimal.Decimal(text)
    if kind == "datetime":
        return dt.datetime.fromisoformat(text)
    if kind == "date":
        return dt.date.fromisoformat(text)
    return text


def _dump(column: str, kind: str, since: str | None, seen: Sequence[str] | set[str] | None) -> str:
    return json.dumps({"v": 1, "kind": _KIND, "column": column, "type": kind, "since": since,
                       "seen": None if seen is None else sorted(seen)}, separators=(",", ":"))
