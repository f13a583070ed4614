"""liveSync for SCIM: the resources modified since a token (``ChangeSource``).

SCIM has no change feed, but every resource carries ``meta.lastModified``, and
providers filter on it (RFC 7644 lists ``gt``/``ge`` for dateTime attributes). A
read asks for ``meta.lastModified ge "<token>"`` with the mapped attributes and
``meta``; the token is the newest ``lastModified`` read, with the ids of the
resources that carry exactly it, left out of the next read unless their stamp
moved (so a resource changed within the same instant is neither missed nor read
twice). The first token is the provider's clock, from the ``Date`` header of one
list request of no resource, a second back (the header has whole seconds).

Deletes are not seen: SCIM keeps no tombstones. Each run says so, and the next
full recon finds them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from idsync.connectors.scim.http import ScimClient
from idsync.errors import SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Obj

__all__ = ["ScimChanges"]

_KIND = "meta.lastModified"
_VERSION = 1
# An xsd:dateTime as providers write it; nothing else goes into a filter.
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
# Without a Date header, the first token is this host's clock this far back.
_CLOCK_MARGIN = dt.timedelta(minutes=5)

Decode = Callable[[Sequence[Mapping[str, Any]]], list[Obj]]


class ScimChanges:
    """Reads the changes of one resource type (``endpoint``) of one provider."""

    def __init__(self, system: str, client: ScimClient, endpoint: str) -> None:
        self._system = system
        self._client = client
        self._endpoint = endpoint

    def latest_token(self) -> str:
        response = self._client.request("GET", self._endpoint, params={"count": 0})
        try:
            now = email.utils.parsedate_to_datetime(response.headers["Date"])
        except (KeyError, TypeError, ValueError):
            now = dt.datetime.now(dt.UTC) - _CLOCK_MARGIN
        stamp = (now - dt.timedelta(seconds=1)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _dump(stamp, [])

    def read(self, token: str, attributes: Sequence[str], decode: Decode, page_size: int) -> ChangeFeed:
        since, seen = _load(self._system, token)
        found: list[Mapping[str, Any]] = []
        for page in self._client.list_pages(self._endpoint, filter=f'{_KIND} ge "{since}"',
                                            attributes=[*attributes, "meta"], count=max(page_size, 1)):
            found.extend(r for r in page if not (str(r.get("id")) in seen and _stamp(r) == since))
        stamps = [s for s in map(_stamp, found) if s is not None and _STAMP.fullmatch(s)]
        newest = max(stamps, key=_moment, default=since)
        at_newest = [str(r.get("id")) for r in found if _stamp(r) == newest]
        token_after = _dump(newest, at_newest if newest != since else [*seen, *at_newest])
        note = "SCIM keeps no record of deletes: they are left to the next full recon"
        return ChangeFeed(_batches(found, decode, page_size, token_after), _KIND, reports_deletes=False, note=note)


def _batches(resources: Sequence[Mapping[str, Any]], decode: Decode, page_size: int,
             token: str) -> Iterator[ChangeBatch]:
    """The changes in batches of ``page_size``; the last one (maybe empty) carries the token."""
    size = max(page_size, 1)
    last = max(len(resources) - 1, 0) // size * size
    for start in range(0, last + 1, size):
        objects = decode(resources[start:start + size])
        changes = [Change(str(o["_id"]), o) for o in objects if o.get("_id")]
        yield ChangeBatch(changes, token if start == last else None)


def _stamp(resource: Mapping[str, Any]) -> str | None:
    meta = resource.get("meta")
    value = meta.get("lastModified") if isinstance(meta, Mapping) else None
    return str(value) if value is not None else None


def _moment(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _dump(stamp: str, ids: Sequence[str]) -> str:
    return json.dumps({"v": _VERSION, "kind": _KIND, "since": stamp, "seen": sorted(ids)}, separators=(",", ":"))


def _load(system: str, token: str) -> tuple[str, set[str]]:
    try:
        state = json.loads(token)
    except ValueError:
        state = None
    if (not isinstance(state, dict) or state.get("v") != _VERSION or state.get("kind") != _KIND
            or not _STAMP.fullmatch(str(state.get("since"))) or not isinstance(state.get("seen"), list)):
        raise SyncTokenExpired(f"scim {system}: the stored token is not one this connector makes")
    return str(state["since"]), {str(i) for i in state["seen"]}
