"""liveSync for Salesforce: what changed in an sObject since a token (``ChangeSource``),
read with the REST replication resources, sObject Get Updated and sObject Get Deleted
(``/sobjects/<type>/updated/`` and ``/deleted/``, ``?start=&end=``).

Why these and not a ``SystemModstamp`` query: they are Salesforce's own answer to
"what changed since", and the only one that tells deletes (a query sees no deleted
record, and ``queryAll`` only those still in the recycle bin); their
``latestDateCovered`` is a position Salesforce vouches for, held back while a
long transaction is still open, where a query's newest stamp can pass a change
committed later with an earlier stamp. The changed ids are then read in one SOQL
``Id IN (...)`` query per batch, with the fields the mappings need.

The token is the ``latestDateCovered`` of the last read (the smaller of the two
resources' answers), stored as Salesforce wrote it. The resources take their dates
to the minute and want ``start`` more than a minute before ``end``: a read less
than that after the token asks nothing and reports no change (changes show up to
a minute or two after they are made). ``end`` is this host's clock; the answer
never covers more than the org's own clock has passed.

A token Salesforce can no longer honour raises ``SyncTokenExpired``: it answers
``INVALID_REPLICATION_DATE`` for a start more than 30 days back (updated) or
before what its delete log still holds (15 days, less when an administrator
purged the recycle bin), and ``earliestDateAvailable`` after the start says the
same; more than 600,000 changed ids (``EXCEEDED_ID_LIMIT``) is answered by a full
recon too. The caller then reconciles in full and starts from a fresh token.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from idsync.connectors.base import utc_datetime
from idsync.connectors.salesforce.client import SalesforceClient, error_text, errors_of
from idsync.errors import PeerError, PeerMisconfigured, PeerUnavailable, SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Obj

__all__ = ["SalesforceChanges"]

_TOKEN_VERSION = 1
_KIND = "replication"
_METHOD = "updated/deleted"
# "start must precede end by more than one minute"; a second more for the two clocks' rounding.
_SHORTEST = dt.timedelta(seconds=61)
# The first position is asked for a window this long, ending now (the shortest one taken).
_PROBE = dt.timedelta(minutes=2)
_EXPIRED = frozenset({"INVALID_REPLICATION_DATE", "EXCEEDED_ID_LIMIT"})

Fetch = Callable[[Sequence[str]], dict[str, Obj]]


class SalesforceChanges:
    """Reads the changes of one sObject type of one org."""

    def __init__(self, resource: str, client: SalesforceClient, sobject: str) -> None:
        self._name = resource
        self._client = client
        self._type = sobject

    def latest_token(self) -> str:
        """The org's position now: the ``latestDateCovered`` of a short window ending now."""
        end = _now()
        body = self._window("updated", end - _PROBE, end)
        return _dump(_covered(self._name, body)[0])

    def read(self, token: str, fetch: Fetch, page_size: int) -> ChangeFeed:
        since_text = _load(self._name, token)
        since = utc_datetime(since_text)
        if since is None:
            raise SyncTokenExpired(f"{self._name}: the stored token is not one this connector makes")
        end = _now()
        if end - since <= _SHORTEST:
            return ChangeFeed(iter([ChangeBatch([], None)]), _METHOD)
        updated = self._window("updated", since, end)
        deleted = self._window("deleted", since, end)
        earliest = utc_datetime(str(deleted.get("earliestDateAvailable") or ""))
        if earliest is not None and earliest > since:
            raise SyncTokenExpired(f"{self._name}: Salesforce's delete log starts at {earliest.isoformat()}, after "
                                   f"the stored token ({since_text}): deletes made before it are no longer told")
        covered = min(_covered(self._name, updated), _covered(self._name, deleted), key=lambda c: c[1])
        token = _dump(covered[0]) if covered[1] > since else token
        gone = list(dict.fromkeys(str(r.get("id")) for r in deleted.get("deletedRecords") or []
                                  if isinstance(r, dict) and r.get("id")))
        deletes = set(gone)
        changed = [str(i) for i in dict.fromkeys(updated.get("ids") or []) if i and str(i) not in deletes]
        return ChangeFeed(_batches(changed, gone, fetch, page_size, token), _METHOD)

    def _window(self, kind: str, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        path = f"{self._client.base}/sobjects/{self._type}/{kind}/"
        response = self._client.call("GET", path, params={"start": _text(start), "end": _text(end)})
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise PeerError(f"{self._name}: GET .../{kind}/: the answer is not a JSON object")
            return body
        errors = errors_of(response)
        codes = {str(e.get("errorCode") or "") for e in errors}
        text = error_text(errors)
        if codes & _EXPIRED:
            raise SyncTokenExpired(f"{self._name}: Salesforce cannot tell the {kind} records since "
                                   f"{_text(start)}: {text}")
        if response.status_code == 404 or "NOT_FOUND" in codes or "INVALID_TYPE" in codes:
            raise PeerMisconfigured(f"{self._name}: Salesforce has no {kind} records resource for {self._type} "
                                    f"(an API version before 29.0, or an sObject that is not replicable): {text}")
        if response.status_code == 400:
            raise PeerError(f"{self._name}: GET .../{kind}/ was refused: {text}")
        raise PeerUnavailable(f"{self._name}: GET .../{kind}/ failed: {text}")


def _batches(changed: list[str], gone: list[str], fetch: Fetch, page_size: int, token: str) -> Iterator[ChangeBatch]:
    """The deletes, then the records read by id a batch at a time; the token with the last
    batch (the ids are in no order the window can be cut by). Deletes go first because a
    record deleted and another made in its place in one window (a user recreated with the
    same Username) must find the managed object unlinked: applied after, the new record
    correlated to the object still linked to the old Id, failed, and the old Id's delete
    then removed that object. A changed id no query finds was deleted after the window:
    the next read tells it. The deletes are batches of their own: the changes of one batch
    are assessed together, before any of them is applied."""
    size = max(page_size, 1)
    for start in range(0, len(gone), size):
        yield ChangeBatch([Change(i, None) for i in gone[start:start + size]], None)
    pending: list[Change] = []
    for start in range(0, len(changed), size):
        ids = changed[start:start + size]
        found = fetch(ids)
        pending.extend(Change(i, found[i]) for i in ids if i in found)
        if len(pending) >= size:
            yield ChangeBatch(pending, None)
            pending = []
    yield ChangeBatch(pending, token)


def _covered(name: str, body: dict[str, Any]) -> tuple[str, dt.datetime]:
    """``latestDateCovered`` as Salesforce wrote it (the token keeps that), and as a date."""
    covered = body.get("latestDateCovered")
    moment = utc_datetime(covered) if isinstance(covered, str) else None
    if not isinstance(covered, str) or moment is None:
        raise PeerError(f"{name}: Salesforce's answer has no latestDateCovered")
    return covered, moment


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _text(moment: dt.datetime) -> str:
    """A date as the resources take it (UTC, ISO 8601; the query string encodes the ``+``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _dump(covered: str) -> str:
    return json.dumps({"v": _TOKEN_VERSION, "kind": _KIND, "latestDateCovered": covered},
                      sort_keys=True, separators=(",", ":"))


def _load(name: str, token: str) -> str:
    try:
        state = json.loads(token)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != _TOKEN_VERSION or state.get("kind") != _KIND \
            or not isinstance(state.get("latestDateCovered"), str):
        raise SyncTokenExpired(f"{name}: the stored token is not one this connector makes")
    return str(state["latestDateCovered"])
