"""liveSync for SCIM: what changed at a provider since a token (``ChangeSource``), asked
with a filter on ``meta.lastModified`` (RFC 7643 §3.1; RFC 7644 §3.4.2.2).

The token holds a high-water mark (``since``: the newest ``meta.lastModified`` seen)
and the ids seen at the end of the window with their ``meta.lastModified`` and
``meta.version`` (``seen``; the version tells two writes within one tick of a
coarse clock apart). A read asks for ``meta.lastModified ge (since - overlap)``: a change
stamped just before the mark but committed after the last read (a provider's
transaction, another node's clock, two changes in the same instant at the window's
boundary) is still asked for, and the objects of the overlap already applied are
recognised by their unchanged ``meta.lastModified`` and skipped. Nothing is missed,
and a run without changes applies nothing. One of the overlap the token does not keep
(below) is handed on as read again (``Change.reread``): a change only where its target
does not hold it. ``liveSyncOverlap`` (seconds, default
60) must cover how late a provider may commit a change after stamping it.

The token keeps ``_SEEN`` of those ids at most, the newest stamps: under a bulk change
the others are read again by the next runs and assessed again, which writes nothing
where the target already holds the change, so the token (and the read's memory) stays
that size whatever the change (``livesync.lastmodified_seen_bounded`` says a read
dropped some). The overlap is needed only while a change stamped in it may still be
committed: the token also keeps a *mark*, the newest stamp and when (this host's
clock) the read that first saw it ended; a read that begins a whole overlap after that
has every change stamped up to the mark, and its token makes the next read ask from
the mark's stamp (``start``). Once a provider is quiet, its last changes stop being
read again a minute after they were first read. A token without a mark (an older one)
is read from ``since`` less the overlap; a mark or start this connector does not write
(not a stamp, after ``since``, a time that is no number) raises ``SyncTokenExpired``.
The window and its token are the store's liveSync's too (``idsync/stamps.py``).

Reading, when the provider announces sorting (``ServiceProviderConfig``
``sort.supported``): pages sorted by ``meta.lastModified`` ascending, each one asked
from the newest stamp of the page before (``ge``), so a change made while the read
runs (which moves an object to the end) never shifts an unread object out of an
index page; each page's batch carries the token that covers it. A run of equal
stamps longer than a page is read by index (``eq``), the list's shrinking stopping
the read as in a recon; when ``eq`` does not find them (stamps finer than the
microsecond a filter here can name), the rest of the window is read as without
sorting. Without sorting, the window is read by index like a recon and only the
read's last batch carries the token.

The first position (``latest_token``) is the newest ``meta.lastModified`` at the
provider (one resource asked for, sorted descending), or the provider's clock (the
``Date`` of its answer) when it does not sort; the ids and stamps of the overlap
before it are read too (ids and ``meta`` only), as the full recon that follows
reads them in that state. The first request checks that the
provider filters on ``meta.lastModified``: one that does not (filtering not
announced, the filter refused, resources without the attribute) fails the first
liveSync with ``PeerMisconfigured`` naming that limitation, before any recon: a
recon on a schedule is the way to follow such a provider.

A token ahead of the provider's clock (the ``Date`` of its answers) by more than the
overlap belongs to a provider restored from a backup, or to another one: it raises
``SyncTokenExpired`` (a full recon follows), as a token this connector did not make.

SCIM filters do not show deleted resources: the feed says deletes are left to the
next full recon (as LDAP's polling does). A resource answered without an ``id`` is a
change of its own (``Change.unidentified``, named by its ``userName``, ``displayName``,
``externalId`` and ``meta.location``): it fails as an entry of the run, as in a recon.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog

from idsync.connectors.base import utc_datetime
from idsync.connectors.scim.http import ScimClient
from idsync.errors import ObjectRejected, PeerError, PeerMisconfigured, SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Obj
from idsync.stamps import Mark, Read, StampWindow, load_stamps, stamp_text

__all__ = ["ScimChanges"]

log = structlog.get_logger("idsync.connectors.scim")

_KIND = "lastModified"
_STAMP = "meta.lastModified"
_VERSION = "meta.version"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NOTE = ("SCIM filters on meta.lastModified do not show deleted resources: "
         "deletes are left to the next full recon")
# How many resources seen within the overlap a token keeps (the newest): a bulk change
# would otherwise make the token (and the read's memory) as large as the change.
_SEEN = 2000

Decode = Callable[[Sequence[Mapping[str, Any]]], list[Obj]]


class ScimChanges:
    """Reads the changes of one endpoint (``Users``, ``Groups``) of one provider."""

    def __init__(self, resource: str, client: ScimClient, endpoint: str, overlap: float) -> None:
        self._name = resource
        self._client = client
        self._endpoint = endpoint
        self._overlap = dt.timedelta(seconds=overlap)

    # -- the token ----------------------------------------------------------

    def latest_token(self) -> str:
        features = self._client.features()
        if not features.filter:
            raise self._unsupported("its ServiceProviderConfig does not announce filtering")
        params: dict[str, Any] = {"filter": f'{_STAMP} gt "{stamp_text(_EPOCH)}"', "attributes": f"id,{_STAMP}",
                                  "startIndex": 1, "count": 1}
        if features.sort:
            params.update(sortBy=_STAMP, sortOrder="descending")
        try:
            response = self._client.request("GET", self._endpoint, params=params)
        except ObjectRejected as error:
            raise self._unsupported(f"it refuses a filter on {_STAMP} ({error})") from None
        body = self._client.body("GET", self._endpoint, response)
        resources = _resources(self._name, self._endpoint, body)
        if resources and features.sort:
            position = self._stamp(resources[0])
        else:
            position = self._clock() or dt.datetime.now(dt.UTC)
        # What the overlap holds now is what the recon that follows reads (unless it changes
        # again, and then its stamp or version differs): seen, so the next read skips it.
        window = _Window(self._name, position, {}, self._overlap)
        size = self._page_size(self._client.settings.page_size)
        reader = self._sorted if features.sort else self._unsorted
        for _ in reader(window, ["id", _STAMP, _VERSION], lambda _: [], size):
            pass
        return window.token(last=True)

    def _clock(self) -> dt.datetime | None:
        """The provider's time, from the Date of its last answer (this run's)."""
        try:
            clock = email.utils.parsedate_to_datetime(self._client.last_date) if self._client.last_date else None
        except (TypeError, ValueError):
            return None
        return clock.astimezone(dt.UTC) if clock is not None else None

    def _unsupported(self, why: str) -> PeerMisconfigured:
        return PeerMisconfigured(f"{self._name}: liveSync needs a provider that filters on {_STAMP}, and "
                                 f"this one cannot: {why}; follow it with a scheduled recon instead")

    # -- reading --------------------------------------------------------------

    def read(self, token: str, attributes: Sequence[str], decode: Decode, page_size: int) -> ChangeFeed:
        since, seen, start, mark = load_stamps(token, _KIND, f"{self._name}: the stored token is not one this "
                                                             "connector makes")
        features = self._client.features()
        if not features.filter:
            raise self._unsupported("its ServiceProviderConfig does not announce filtering")
        clock = self._clock()
        if clock is not None and since > clock + self._overlap:
            raise SyncTokenExpired(f"{self._name}: the stored token ({stamp_text(since)}) is ahead of the "
                                   f"provider's clock ({stamp_text(clock)}): restored from a backup, or another "
                                   "provider; what changed since cannot be told")
        window = _Window(self._name, since, seen, self._overlap, start=start, mark=mark)
        wanted = list(dict.fromkeys([*attributes, _STAMP, _VERSION]))
        size = self._page_size(page_size)
        batches = self._sorted(window, wanted, decode, size) if features.sort \
            else self._unsorted(window, wanted, decode, size)
        return ChangeFeed(batches, _KIND, reports_deletes=False, note=_NOTE)

    def _page_size(self, wanted: int) -> int:
        size = max(1, min(wanted, self._client.settings.page_size))
        limit = self._client.features().max_results
        return min(size, limit) if limit else size

    def _sorted(self, window: _Window, attributes: list[str], decode: Decode, size: int) -> Iterator[ChangeBatch]:
        """Keyset pages: each asked from the newest stamp of the one before (after the
        window's start when a read passed it: ``StampWindow.past``)."""
        op, bound = "gt" if window.past else "ge", window.start
        while True:
            body = self._client.json("GET", self._endpoint, params={
                "filter": f'{_STAMP} {op} "{stamp_text(bound)}"', "sortBy": _STAMP, "sortOrder": "ascending",
                "attributes": ",".join(attributes), "startIndex": 1, "count": size})
            resources = _resources(self._name, self._endpoint, body)
            stamps = [self._stamp(r) for r in resources]
            if stamps != sorted(stamps):
                raise PeerError(f"{self._name}: the provider announces sorting but answered a list not sorted "
                                f"by {_STAMP}; the changes cannot be read in order")
            total = int(body.get("totalResults") or 0) if isinstance(body, dict) else 0
            done = not resources or len(resources) >= total
            yield window.batch(resources, stamps, decode, with_token=True, last=done)
            if done:
                return
            last = stamps[-1]
            if stamps[0] == last:
                # More objects share one stamp than a page holds: read them by index, then go past them.
                equal = f'{_STAMP} eq "{stamp_text(last)}"'
                found = 0
                for page in self._client.list_pages(self._endpoint, filter=equal, attributes=attributes, count=size):
                    found += len(page)
                    yield window.batch(page, [self._stamp(r) for r in page], decode, with_token=True)
                if found < len(resources):
                    # The provider's stamps are finer than a microsecond (eq never matches them
                    # exactly): the rest of the window is read by index, as without sorting.
                    yield from self._unsorted(window, attributes, decode, size, since=last)
                    return
                op, bound = "gt", last
            else:
                op, bound = "ge", last

    def _unsorted(self, window: _Window, attributes: list[str], decode: Decode, size: int,
                  since: dt.datetime | None = None) -> Iterator[ChangeBatch]:
        """The window (or its rest from ``since``) by index, like a recon; the token only
        once it is all read."""
        op = "gt" if since is None and window.past else "ge"
        search = f'{_STAMP} {op} "{stamp_text(since or window.start)}"'
        for page in self._client.list_pages(self._endpoint, filter=search, attributes=attributes, count=size):
            yield window.batch(page, [self._stamp(r) for r in page], decode, with_token=False)
        yield ChangeBatch([], window.token(last=True))

    def _stamp(self, resource: Mapping[str, Any]) -> dt.datetime:
        meta = resource.get("meta")
        value = meta.get("lastModified") if isinstance(meta, Mapping) else None
        parsed = utc_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise PeerMisconfigured(f"{self._name}: the provider answers resources without a readable {_STAMP} "
                                    f"(resource {resource.get('id')!r}), so liveSync cannot tell what changed; "
                                    "follow it with a scheduled recon instead")
        return parsed


class _Window(StampWindow):
    """The read's position (``StampWindow``), and the resources it hands on."""

    def __init__(self, name: str, since: dt.datetime, seen: dict[str, str], overlap: dt.timedelta,
                 *, start: dt.datetime | None = None, mark: Mark | None = None) -> None:
        super().__init__(name, _KIND, since, seen, overlap, keep=_SEEN, start=start, mark=mark)

    def dropped(self, read: int, kept: int) -> None:
        log.info("livesync.lastmodified_seen_bounded", system=self.name, read=read, kept=kept,
                 reason="more resources changed within the overlap than the token keeps: the others are "
                        "read again by the next runs and assessed again")

    def batch(self, resources: Sequence[Mapping[str, Any]], stamps: Sequence[dt.datetime], decode: Decode,
              *, with_token: bool, last: bool = False) -> ChangeBatch:
        fresh: list[Mapping[str, Any]] = []
        again: list[bool] = []
        for resource, stamp in zip(resources, stamps, strict=True):
            # One without an id is kept by what is known of it, so a run within the overlap
            # does not fail it again.
            key = str(resource["id"]) if _identified(resource) else f"?{_about(resource)}"
            found = self.saw(key, stamp_text(stamp) + _version(resource), stamp)
            if found is not Read.KNOWN:
                fresh.append(resource)
                again.append(found is Read.AGAIN)
        # One object per resource, in order (``latest_token`` decodes none: it only reads the overlap).
        changes = [Change(str(o["_id"]), o, reread=a) if _identified(r) else Change("", o, about=_about(r))
                   for r, o, a in zip(fresh, decode(fresh), again, strict=False)]
        return ChangeBatch(changes, self.token(last=last) if with_token else None)


def _identified(resource: Mapping[str, Any]) -> bool:
    return resource.get("id") not in (None, "")


def _about(resource: Mapping[str, Any]) -> str:
    """What a resource answered without an id tells of itself, for the failure's message:
    the attributes that name it, never its other values (a password may be among them)."""
    meta = resource.get("meta")
    named = {"userName": resource.get("userName"), "displayName": resource.get("displayName"),
             "externalId": resource.get("externalId"),
             "meta.location": meta.get("location") if isinstance(meta, Mapping) else None}
    return ", ".join(f"{k} {v!r}" for k, v in named.items() if isinstance(v, str) and v) or "nothing that names it"


def _version(resource: Mapping[str, Any]) -> str:
    """``#`` and the resource's ``meta.version`` when it has one: two writes within one
    stamp of a coarse clock still differ there."""
    meta = resource.get("meta")
    version = meta.get("version") if isinstance(meta, Mapping) else None
    return f"#{version}" if isinstance(version, str) and version else ""


def _resources(name: str, endpoint: str, body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise PeerError(f"{name}: GET {endpoint}: not a ListResponse")
    return [r for r in body.get("Resources") or [] if isinstance(r, dict)]
