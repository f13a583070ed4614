"""liveSync for Salesforce: the records modified since a token (``ChangeSource``).

Salesforce stamps every record it changes with ``SystemModstamp`` (indexed; the
field its replication guide reads). The token is the newest stamp read, with the
ids of the records carrying exactly that stamp: the next read asks for
``SystemModstamp >= stamp`` (a record changed later within the same millisecond
is not missed) and leaves out those records unless their stamp moved. The first
token is the newest stamp of the object type, read with a query of one record,
and the records sharing it.

Deletes are not read: Salesforce deactivates users (``IsActive`` false, an update
that liveSync applies) rather than deleting them; the deletes of other objects
are left to the next full recon, which each run's summary says.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from idsync.errors import SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Obj

__all__ = ["STAMP", "SalesforceChanges"]

STAMP = "SystemModstamp"
_VERSION = 1
# Salesforce's own form (``2026-12-05T10:00:00.000+0000``); nothing else goes into a query.
_STAMP_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{4})")
_EPOCH = "1970-01-01T00:00:00.000+0000"

Query = Callable[[str, int | None], Iterator[list[Obj]]]


class SalesforceChanges:
    """Reads the changes of one sObject type; ``query`` runs SOQL and yields pages of objects."""

    def __init__(self, system: str, sobject: str, query: Query) -> None:
        self._system = system
        self._type = sobject
        self._query = query

    def latest_token(self) -> str:
        newest = next(self._query(f"SELECT Id, {STAMP} FROM {self._type} ORDER BY {STAMP} DESC LIMIT 1", None), [])
        stamp = str(newest[0].get(STAMP)) if newest and _STAMP_FORM.fullmatch(str(newest[0].get(STAMP))) else _EPOCH
        # Every record of that very stamp (changed in the same millisecond) counts as read.
        same = [o["_id"] for page in self._query(f"SELECT Id, {STAMP} FROM {self._type} WHERE {STAMP} >= "
                                                 f"{_literal(stamp)}", None) for o in page if o.get(STAMP) == stamp]
        return _dump(stamp, same)

    def read(self, token: str, fields: list[str], page_size: int) -> ChangeFeed:
        since, seen = _load(self._system, token)
        soql = (f"SELECT {', '.join(dict.fromkeys([*fields, STAMP]))} FROM {self._type} "
                f"WHERE {STAMP} >= {_literal(since)} ORDER BY {STAMP}")
        objects = [o for page in self._query(soql, page_size) for o in page
                   if not (o.get("_id") in seen and o.get(STAMP) == since)]
        newest = max((str(o[STAMP]) for o in objects if _STAMP_FORM.fullmatch(str(o.get(STAMP)))),
                     key=_moment, default=since)
        at_newest = [o["_id"] for o in objects if o.get(STAMP) == newest]
        token_after = _dump(newest, at_newest if newest != since else [*seen, *at_newest])
        note = None if self._type == "User" else (
            f"deleted {self._type} records are not read: deletes are left to the next full recon")
        return ChangeFeed(_batches(objects, page_size, token_after), STAMP, reports_deletes=False, note=note)


def _batches(objects: Sequence[Obj], page_size: int, token: str) -> Iterator[ChangeBatch]:
    """The changes in batches of ``page_size``; the last one (maybe empty) carries the token."""
    size = max(page_size, 1)
    changes = [Change(str(o["_id"]), o) for o in objects if o.get("_id")]
    last = max(len(changes) - 1, 0) // size * size
    for start in range(0, last, size):
        yield ChangeBatch(changes[start:start + size], None)
    yield ChangeBatch(changes[last:], token)


def _moment(stamp: str) -> dt.datetime:
    text = stamp.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return dt.datetime.fromisoformat(text)


def _literal(stamp: str) -> str:
    """A SOQL dateTime literal (``2026-12-05T10:00:00.123Z``) for a stamp of Salesforce's form."""
    return _moment(stamp).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _dump(stamp: str, ids: Sequence[Any]) -> str:
    return json.dumps({"v": _VERSION, "kind": STAMP, "since": stamp, "seen": sorted(map(str, ids))},
                      separators=(",", ":"))


def _load(system: str, token: str) -> tuple[str, set[str]]:
    try:
        state = json.loads(token)
    except ValueError:
        state = None
    if (not isinstance(state, dict) or state.get("v") != _VERSION or state.get("kind") != STAMP
            or not _STAMP_FORM.fullmatch(str(state.get("since"))) or not isinstance(state.get("seen"), list)):
        raise SyncTokenExpired(f"{system}: the stored token is not one this connector makes")
    return str(state["since"]), {str(i) for i in state["seen"]}
