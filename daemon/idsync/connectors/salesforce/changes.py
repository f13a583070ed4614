"""liveSync for Salesforce: the records modified since a token (``ChangeSource``).

Salesforce stamps every record it changes with ``SystemModstamp`` (indexed; the
field its replication guide reads). A read asks for ``SystemModstamp >= <token>``
with the mapped fields; the token is a ``connectors.stamps.StampToken`` (the
newest stamp read and the ids at it). The first token is the newest stamp of the
object type (one query of one record) and the records sharing it.

Deletes are not read: Salesforce deactivates users (``IsActive`` false, an update
that liveSync applies) rather than deleting them; the deletes of other objects
are left to the next full recon, which each run's summary says.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator

from idsync.connectors.stamps import StampToken, batches, moment
from idsync.resource import Change, ChangeFeed, Obj

__all__ = ["STAMP", "SalesforceChanges"]

STAMP = "SystemModstamp"
# Salesforce's own form (``2026-12-05T10:00:00.000+0000``); nothing else goes into a query.
_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{4})")
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
        stamp = str(newest[0].get(STAMP)) if newest and _FORM.fullmatch(str(newest[0].get(STAMP))) else _EPOCH
        # Every record of that very stamp (changed in the same millisecond) counts as read.
        same = [o for page in self._query(f"SELECT Id, {STAMP} FROM {self._type} WHERE {STAMP} >= "
                                          f"{_literal(stamp)}", None) for o in page]
        return StampToken(STAMP, stamp, frozenset(str(o["_id"]) for o in same if o.get(STAMP) == stamp)).dump()

    def read(self, token: str, fields: list[str], page_size: int) -> ChangeFeed:
        since = StampToken.load(self._system, STAMP, token, _FORM)
        soql = (f"SELECT {', '.join(dict.fromkeys([*fields, STAMP]))} FROM {self._type} "
                f"WHERE {STAMP} >= {_literal(since.since)} ORDER BY {STAMP}")
        found = [o for page in self._query(soql, page_size) for o in page if o.get("_id")]
        fresh, after = since.new(found, lambda o: str(o["_id"]), lambda o: _stamp(o), _FORM)
        note = None if self._type == "User" else (
            f"deleted {self._type} records are not read: deletes are left to the next full recon")
        changes = [Change(str(o["_id"]), o) for o in fresh]
        return ChangeFeed(batches(changes, page_size, after.dump()), STAMP, reports_deletes=False, note=note)


def _stamp(obj: Obj) -> str | None:
    value = obj.get(STAMP)
    return str(value) if value is not None else None


def _literal(stamp: str) -> str:
    """A SOQL dateTime literal (``2026-12-05T10:00:00.123Z``) for a stamp of Salesforce's form."""
    return moment(stamp).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
