"""liveSync for SCIM: the resources modified since a token (``ChangeSource``).

SCIM has no change feed, but every resource carries ``meta.lastModified``, and
providers filter on it (RFC 7644 lists ``gt``/``ge`` for dateTime attributes). A
read asks for ``meta.lastModified ge "<token>"`` with the mapped attributes and
``meta``; the token is a ``connectors.stamps.StampToken`` (the newest
``lastModified`` read and the ids at it). The first token is the provider's clock, from the ``Date`` header of one
list request of no resource, a second back (the header has whole seconds).

Deletes are not seen: SCIM keeps no tombstones. Each run says so, and the next
full recon finds them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from idsync.connectors.scim.http import ScimClient
from idsync.connectors.stamps import StampToken, batches
from idsync.resource import Change, ChangeFeed, Obj

__all__ = ["ScimChanges"]

_KIND = "meta.lastModified"
# An xsd:dateTime as providers write it; nothing else goes into a filter.
_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
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
        return StampToken(_KIND, (now - dt.timedelta(seconds=1)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          ).dump()

    def read(self, token: str, attributes: Sequence[str], decode: Decode, page_size: int) -> ChangeFeed:
        since = StampToken.load(f"scim {self._system}", _KIND, token, _FORM)
        found: list[Mapping[str, Any]] = []
        for page in self._client.list_pages(self._endpoint, filter=f'{_KIND} ge "{since.since}"',
                                            attributes=[*attributes, "meta"], count=max(page_size, 1)):
            found.extend(page)
        fresh, after = since.new(found, lambda r: str(r.get("id")), _stamp, _FORM)
        changes = [Change(str(o["_id"]), o) for o in decode(fresh) if o.get("_id")]
        note = "SCIM keeps no record of deletes: they are left to the next full recon"
        return ChangeFeed(batches(changes, page_size, after.dump()), _KIND, reports_deletes=False, note=note)


def _stamp(resource: Mapping[str, Any]) -> str | None:
    meta = resource.get("meta")
    value = meta.get("lastModified") if isinstance(meta, Mapping) else None
    return str(value) if value is not None else None
