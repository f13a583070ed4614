"""liveSync for LDAP: what changed in a directory since a token (``ChangeSource``).

Two ways of reading, chosen when the token is made (``latest_token``) and written
in it, so a token never silently changes meaning:

* ``usn``: Active Directory (``usn.py``): the entries whose ``uSNChanged`` is above
  the token's, and the tombstones above it (deletes, by objectGUID).
* ``syncrepl``: RFC 4533 content synchronization in refreshOnly mode against a
  server with a sync provider (OpenLDAP's ``syncprov``, 389 DS's content sync
  plugin). The token holds the sync cookie. The first one is made from the
  database's ``contextCSN``, read before the full recon that starts liveSync (a
  full refresh through the control would be slow: its decoding is pure Python);
  389 DS keeps no contextCSN, and the cookie of a probe (a base-scope refresh with
  the object type's filter, which 389 DS's cookie names along with the bind DN and
  base) is the first one.
  A refresh the server can answer from its session log sends the changed entries
  and the entryUUIDs of the deleted ones; when the log no longer covers the
  cookie (trimmed) or the server keeps none, it answers with a *present phase*:
  the changed entries and the entryUUID of every unchanged one, anything else
  being gone. That answer is complete too: ``ChangeFeed.complete_ids`` carries it,
  and the caller deletes what it links and the server no longer has (the
  ``livesync.present_phase`` warning says it happened, as it costs a read of
  every id). A server that asks for a full reload (``e-syncRefreshRequired``) or
  refuses the cookie raises ``SyncTokenExpired``. 389 DS answers from its retro
  changelog and says nothing when that was trimmed past the cookie's change number:
  its root DSE's ``firstchangenumber`` is read after the refresh, and a gap raises
  ``SyncTokenExpired`` too.
  A changed entry keeps only the attributes asked for. 389 DS ignores the list in a
  delta: every user attribute (``userPassword``'s hash included), no operational one
  (``nsAccountLock``, ``modifyTimestamp``, ``nsUniqueId``); the entries missing an
  attribute asked for are read again by id (``_completed``: a search per 100). slapd
  honours the list, operational attributes included: nothing is read again there.
* ``poll``: a server without a sync provider is searched for entries whose
  ``entryCSN`` (OpenLDAP) or ``modifyTimestamp`` (others) is at or after the token's
  ``since``. That is the newest stamp a read saw less an overlap and the read's own
  duration: a change is stamped before it is committed, and a paged read passes over
  an entry changed after its page was read while a later page holds a later change,
  so the next read starts before either. The token keeps the entries seen since then
  (``seen``: DN -> stamp and a digest of the values read, which tells two changes
  within one ``modifyTimestamp`` second apart); they are not applied again. It keeps
  ``_POLL_SEEN`` of them at most, the newest stamps: under a bulk change the others
  are read again by the next runs and assessed again, which writes and counts nothing
  where the target already holds the change (``Change.reread``: an entry of the overlap
  the token does not keep, stamped up to the newest stamp a read before saw; after a
  token without a mark, the first after a full recon, any entry), so the
  token (and the read's memory) stays that size whatever the change. The overlap is
  needed only while a change stamped in it may still be committed: the token also
  keeps a *mark*, the newest stamp seen and when (this host's clock) the read that
  first saw it ended; a read that begins a whole overlap after that has every change
  stamped up to the mark, and the next read asks for the entries stamped after it
  (``after``: however many a bulk change stamped within that one ``modifyTimestamp``
  second, they are not read again). Once a
  directory is quiet, its last changes stop being read again a minute after they were
  first read. The entries are handed on a batch at a time as the pages come
  (``_polled``), never held whole; the last batch carries the token.
  Deletes are not seen; the feed says so and the next full recon finds them.

Deleted entries are known by their entryUUID only (389 DS sends its nsUniqueId
there, as a UUID; AD its objectGUID): they become deletes of objects when
``uidAttribute`` is that attribute (``entryUUID`` is OpenICF's default). With any
other id (``dn``, ``uid``...), a read that saw deletes (or a present phase) lists the
ids of every entry of the object type (``list_ids``: a paged search for the id
attribute only) and hands them over as ``ChangeFeed.complete_ids``: the caller
deletes the linked objects that are not among them. That costs a read of every id,
only in a run that has deletes.

Changes are read under ``baseContextsToSynchronize``, of the entries that also match
OpenICF's sync filters (``ObjectTypeDef.sync_filters``); recons read ``baseContexts``.
Where the two differ (a wider ``baseContexts``, a sync filter), an entry a refresh
calls deleted may only have left what liveSync reads: it is deleted only when no
base holds it, and a present phase lists the ids of the rest before it deletes.

The reading uses python-ldap's sync controls on a connection of its own
(``LdapConnection``: the resource's TLS, bind and error handling), opened per
reader; polling pages with the resource's reader (``reader.read_pages``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import ldap
import structlog
from ldap.filter import escape_filter_chars
from ldap.syncrepl import SyncDoneControl, SyncInfoMessage, SyncRequestControl, SyncStateControl

from idsync.connectors.ldap.config import LdapSettings
from idsync.connectors.ldap.connection import LdapConnection
from idsync.connectors.ldap.reader import read_pages
from idsync.connectors.ldap.syncber import RESPONSE_CONTROLS, SyncInfo, sync_info
from idsync.connectors.ldap.usn import UsnServer, read_usn_changes, unusable, usn_server
from idsync.connectors.ldap.values import RawEntry
from idsync.errors import PeerError, PeerUnavailable, SyncTokenExpired
from idsync.resource import Change, ChangeBatch, ChangeFeed, Obj
from idsync.spool import EntrySpool, IdSpool, chunks

__all__ = ["LdapChanges"]

log = structlog.get_logger("idsync.connectors.ldap")

_REFRESH_REQUIRED = 4096  # e-syncRefreshRequired (RFC 4533)
_UNAVAILABLE_EXTENSION = 12  # unavailableCriticalExtension: no sync provider on this database
_UNWILLING = 53
_ID_CHUNK = 100  # entryUUIDs per search when deletes are checked
# What this connector writes in a token: a cookie the server ignored (it would answer with
# the whole content, deletes unseen) must never be sent.
_COOKIE = re.compile(r"rid=\d{3}(,sid=[0-9a-f]{3})?,csn=\d{14}\.\d{6}Z#[0-9a-f]{6}#[0-9a-f]{3}#[0-9a-f]{6}"
                     r"(;\d{14}\.\d{6}Z#[0-9a-f]{6}#[0-9a-f]{3}#[0-9a-f]{6})*")
# 389 DS's: its host:port, then the bind DN, base and filter of the search, then a change number.
_DS389_COOKIE = re.compile(r"[^#\s]+:\d+#[^#]*#\d+")
_CSN = re.compile(r"\d{14}\.\d{6}Z#[0-9a-f]{6}#[0-9a-f]{3}#[0-9a-f]{6}")
_TIMESTAMP = re.compile(r"\d{14}Z")
# A token made from this host's clock (no contextCSN to read) starts this far back:
# a change is seen again rather than missed when the clocks disagree.
_CLOCK_MARGIN = dt.timedelta(minutes=5)
# How far before its newest stamp a polling read starts the next one (besides its own
# duration): a change is stamped when it starts and seen once committed, and a paged read
# passes over an entry changed after its page was read.
_POLL_OVERLAP = dt.timedelta(seconds=60)
# How many entries seen within that overlap a polling token keeps (the newest): a bulk change
# would otherwise make the token (and the read's memory) as large as the change.
_POLL_SEEN = 2000
_TOKEN_VERSION = 1


@dataclass
class _Refreshes:
    """What the refreshOnly searches of one read answered, every base's together: an entry
    in two bases' answers is the later one's. Spooled (``spool.py``): a bulk change or a
    present phase is as large as the directory."""

    changed: EntrySpool = field(default_factory=EntrySpool)  # entryUUID -> (DN, attributes)
    deleted: IdSpool = field(default_factory=IdSpool)
    present: IdSpool = field(default_factory=IdSpool)
    present_phase: bool = False
    cookie: str | None = None  # the latest cookie of the refresh under way
    cookies: dict[str, str | None] = field(default_factory=dict)  # base -> the cookie its refresh ended with
    asked: frozenset[str] = frozenset()  # the attributes asked for, lower case
    unasked: bool = False  # an entry came with attributes not asked for: the server ignored the list

    def close(self) -> None:
        for spool in (self.changed, self.deleted, self.present):
            spool.close()


class LdapChanges:
    """Reads the changes of one object type of one directory.

    ``decode`` turns (DN, raw attributes) entries into objects with the resource's own
    decoding; ``search_filter`` is the object type's filter (object classes and
    ``searchFilter``); ``uid_attribute`` tells whether deleted entryUUIDs are ids;
    ``list_ids`` lists the ids of every entry, for deletes when they are not;
    ``sync_filters``: what else a changed entry must match for its change to be read
    (``ObjectTypeDef.sync_filters``)."""

    def __init__(self, system: str, settings: LdapSettings, search_filter: str, uid_attribute: str,
                 *, class_filter: str = "", list_ids: Callable[[], IdSpool] | None = None,
                 sync_filters: Sequence[str] = ()) -> None:
        self._system = system
        self._settings = settings
        self._filter = search_filter
        # The changes read: of the entries that also match the sync filters. An entry that
        # does not (any more) is no delete: the refreshes' deletes are checked, and a present
        # phase lists the ids of the sync contexts too.
        self._changed = f"(&{search_filter}{''.join(sync_filters)})" if sync_filters else search_filter
        self._filtered = bool(sync_filters)
        self._class_filter = class_filter or search_filter
        self._uid_key = uid_attribute.lower()
        self._list_ids = list_ids
        self._conn = LdapConnection(system, settings)
        # Recons read entries there whose absence from a refresh is no delete.
        self._unwatched = settings.unwatched_contexts

    def close(self) -> None:
        self._conn.close()

    def _open(self) -> Any:
        """The bound connection (``LdapConnection.open``: AuthenticationFailed, TLSError
        saying why, PeerUnavailable)."""
        return self._conn.open()

    # -- the token ----------------------------------------------------------

    def latest_token(self) -> str:
        """A syncrepl cookie from ``contextCSN`` when the server has a sync provider for
        the sync contexts, else a polling position (``entryCSN`` when the server keeps
        one, else ``modifyTimestamp``) taken from the server's newest CSN or this host's clock."""
        conn = self._open()
        bases = self._settings.sync_contexts
        try:
            ad = usn_server(conn)
        except ldap.LDAPError as error:
            raise self._failure("read of the root DSE", bases[0], error) from None
        if ad is not None:
            return _usn_token(ad, ad.highest)
        csn = self._context_csn(conn, bases[0])
        if not csn:
            # 389 DS's cookies name the search: one probe per base, each a cookie of its own.
            cookies = {base: self._probe(conn, base, [])[1] for base in bases}
            if all(c is not None and _DS389_COOKIE.fullmatch(c) for c in cookies.values()):
                return _dump({"kind": "syncrepl", "cookies": cookies})
        provider, answered = self._probe(conn, bases[0], csn)
        # A database loaded offline may have no contextCSN yet: the probe's own cookie is the position.
        cookie = f"rid=000,csn={';'.join(csn)}" if csn else answered
        if provider and cookie is not None and _COOKIE.fullmatch(cookie):
            return _dump({"kind": "syncrepl", "cookies": dict.fromkeys(bases, cookie),
                          "bases": self._base_ids(conn, bases)})
        if csn:
            return _dump({"kind": "poll", "attribute": "entryCSN", "since": max(csn)})
        start = dt.datetime.now(dt.UTC) - _CLOCK_MARGIN
        if self._keeps_entry_csn(conn, bases[0]):
            return _dump({"kind": "poll", "attribute": "entryCSN",
                          "since": start.strftime("%Y%m%d%H%M%S.%fZ#000000#000#000000")})
        return _dump({"kind": "poll", "attribute": "modifyTimestamp", "since": start.strftime("%Y%m%d%H%M%SZ")})

    def read(self, token: str, attributes: Sequence[str], decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]],
             page_size: int) -> ChangeFeed:
        state = _load(token)
        if state.get("kind") == "syncrepl":
            return self._read_syncrepl(state, attributes, decode, page_size)
        if state.get("kind") == "poll":
            return self._read_poll(state, attributes, decode, page_size)
        if state.get("kind") == "usn":
            return self._read_usn(state, attributes, decode, page_size)
        raise SyncTokenExpired(f"{self._system}: the stored token is not one this connector makes")

    # -- syncrepl -------------------------------------------------------------

    def _read_syncrepl(self, state: dict[str, Any], attributes: Sequence[str],
                       decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]], page_size: int) -> ChangeFeed:
        cookies: dict[str, str] = dict(state.get("cookies") or {})
        if set(cookies) != set(self._settings.sync_contexts):
            raise SyncTokenExpired(f"{self._system}: the stored token was made for other base contexts "
                                   f"({', '.join(cookies) or 'none'})")
        if any(c is None or not (_COOKIE.fullmatch(c) or _DS389_COOKIE.fullmatch(c)) for c in cookies.values()):
            raise SyncTokenExpired(f"{self._system}: the stored sync cookie is not one this connector makes")
        # 389 DS names entries by nsUniqueId in the sync UUIDs, and ends every refresh, a
        # delta from its retro changelog included, as if it were a present phase.
        ds389 = any(_DS389_COOKIE.fullmatch(c) for c in cookies.values())
        conn = self._open()
        read = _Refreshes(asked=frozenset(a.lower() for a in attributes))
        try:
            return self._syncrepl_feed(conn, read, state, cookies, ds389, attributes, decode, page_size)
        except BaseException:
            read.close()
            raise

    def _syncrepl_feed(self, conn: Any, read: _Refreshes, state: dict[str, Any], cookies: dict[str, str],
                       ds389: bool, attributes: Sequence[str],
                       decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]], page_size: int) -> ChangeFeed:
        for base, cookie in cookies.items():
            self._refresh(conn, base, cookie, attributes, read)
        kept = {"bases": state["bases"]} if isinstance(state.get("bases"), dict) else {}
        new_token = _dump({"kind": "syncrepl", "cookies": {b: read.cookies.get(b) or c for b, c in cookies.items()},
                           **kept})
        present_phase = not ds389 and read.present_phase
        if present_phase and kept:
            # A directory rebuilt (reloaded without its entryUUIDs) or another one answers a
            # present phase too, of entries all new: its deletes would be every linked object.
            now = self._base_ids(conn, list(cookies))
            changed = next((b for b, u in kept["bases"].items() if b in now and now[b] != u), None)
            if changed is not None:
                raise SyncTokenExpired(f"{self._system}: the entry {changed} is not the one the stored cookie was "
                                       "taken under (its entryUUID changed): the directory was rebuilt or replaced")
        if ds389:
            self._check_changelog(conn, cookies)
        uuid_ids = self._uid_key == ("nsuniqueid" if ds389 else "entryuuid")
        as_id = _ns_unique_id if ds389 else str
        known = "nsUniqueId" if ds389 else "entryUUID"
        entries: Iterable[tuple[str, tuple[str, RawEntry]]] = read.changed.items()
        if ds389 and uuid_ids:
            entries = ((u, _with_id(u, e)) for u, e in entries)
        if ds389 or read.unasked:
            entries = self._completed(conn, entries, attributes, as_id, known)
        # An entry one base's refresh no longer finds may be under another (changed or moved
        # there): with several bases, slapd's session log names in each refresh the entries
        # changed anywhere that its search does not match. Only what no base holds is deleted.
        # Likewise an entry moved out of the sync contexts into the rest of baseContexts, which
        # recons still read: it is not deleted.
        seen = read.present  # from here on, every entry the refreshes named present or changed
        seen.update(read.changed.keys())
        if present_phase:
            log.warning("livesync.present_phase", system=self._system,
                        reason="the server's session log does not cover the stored cookie (trimmed, or none kept)",
                        present=len(seen))
        deleted = IdSpool(as_id(u) for ids in chunks(read.deleted, _ID_CHUNK) for u in seen.absent(ids))
        if deleted and (len(cookies) > 1 or self._unwatched or self._filtered):
            still_gone = IdSpool(self._still_gone(conn, deleted, known))
            deleted.close()
            deleted = still_gone
        complete: IdSpool | None = None
        if present_phase and uuid_ids:
            # A present phase names the entries of the sync contexts; those of the rest of
            # baseContexts (linked by recons) are listed too, or they would look deleted.
            complete = seen
            listed = (*self._settings.sync_contexts, *self._unwatched) if self._filtered else self._unwatched
            if listed:
                complete.update(self._ids_under(conn, listed, known))
        if not uuid_ids:
            complete = self._all_ids(bool(deleted) or present_phase, known)
            deleted.close()
            deleted = IdSpool()
        note = None if uuid_ids or self._list_ids is not None else (
            f"deleted entries are known by {known} only and uidAttribute is not {known}: "
            "deletes are left to the next full recon")
        spools: list[IdSpool | EntrySpool | _Refreshes] = [read, deleted]
        if complete is not None and complete is not seen:
            spools.append(complete)
        batches = _closing(_batches((e for _, e in entries), deleted, decode, page_size, new_token), spools)
        return ChangeFeed(batches, "syncrepl", reports_deletes=uuid_ids or self._list_ids is not None, note=note,
                          complete_ids=complete)

    def _base_ids(self, conn: Any, bases: Sequence[str]) -> dict[str, str]:
        """Each base entry's entryUUID (none for a base without one): what tells a directory
        rebuilt or replaced from the one a cookie was taken from."""
        found: dict[str, str] = {}
        for base in bases:
            try:
                answer = conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["entryUUID"])
            except ldap.LDAPError as error:
                raise self._failure("read of the base entry", base, error) from None
            values = next((v for k, v in answer[0][1].items() if k.lower() == "entryuuid"), None) if answer else None
            if values:
                found[base] = values[0].decode("ascii", "replace").lower()
        return found

    def _still_gone(self, conn: Any, ids: Iterable[str], attribute: str) -> Iterator[str]:
        """Of ``ids`` (entries a refresh called deleted), those neither a sync context nor
        a base context holds: a search of every base for them, by chunks."""
        for chunk in chunks(ids, _ID_CHUNK):
            found: set[str] = set()
            wanted = "".join(f"({attribute}={escape_filter_chars(i)})" for i in chunk)
            for base in (*self._settings.sync_contexts, *self._unwatched):
                for _, raw in self._paged(conn, base, f"(&{self._filter}(|{wanted}))", [attribute]):
                    found.update(v.decode("ascii", "replace").lower() for v in raw.get(attribute.lower()) or ())
            yield from (i for i in chunk if i.lower() not in found)

    def _completed(self, conn: Any, changed: Iterable[tuple[str, tuple[str, RawEntry]]], attributes: Sequence[str],
                   as_id: Callable[[str], str], known: str) -> Iterator[tuple[str, tuple[str, RawEntry]]]:
        """``changed`` (sync UUID, entry) with the entries that lack an attribute asked for
        read again, when the server answered the refresh without honouring the attribute list:
        389 DS sends a delta's entries with every user attribute and no operational one
        (``nsAccountLock``, ``modifyTimestamp``...), whatever is asked. One search per
        ``_ID_CHUNK`` entries under each base, with the refresh's filter. An entry no
        longer found there was deleted or moved out after the refresh: that change is
        after the refresh's cookie, and the next read has it."""
        wanted = {a.lower() for a in attributes} - {"1.1"}
        for chunk in chunks(changed, _ID_CHUNK):
            short = [u for u, (_, raw) in chunk if not wanted <= {k.partition(";")[0] for k in raw}]
            if not short:
                yield from chunk
                continue
            by_id = {as_id(u).lower(): u for u in short}
            found: dict[str, tuple[str, RawEntry]] = {}
            terms = "".join(f"({known}={escape_filter_chars(as_id(u))})" for u in short)
            for base in (*self._settings.sync_contexts, *self._unwatched):
                for dn, raw in self._paged(conn, base, f"(&{self._changed}(|{terms}))", [*attributes, known]):
                    for value in raw.get(known.lower()) or ():
                        if (u := by_id.get(value.decode("ascii", "replace").lower())) is not None:
                            found[u] = (dn, raw)
            gone = set(short) - found.keys()
            if gone:
                log.info("livesync.changed_entry_gone", system=self._system, ids=sorted(as_id(u) for u in gone),
                         reason="deleted or moved out since the refresh: the next read has that change")
            yield from ((u, found.get(u, e)) for u, e in chunk if u not in gone)

    def _check_changelog(self, conn: Any, cookies: dict[str, str]) -> None:
        """389 DS answers a refresh from its retro changelog, from the change after the
        cookie's on: when the changelog was trimmed past that change (its root DSE's
        ``firstchangenumber`` is above it), the changes in between are missing from the
        answer, which does not say so. Read after the refreshes, so a trim during them
        is seen too."""
        try:
            root = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["firstchangenumber", "lastchangenumber"])
        except ldap.LDAPError as error:
            raise self._failure("read of the root DSE", next(iter(cookies)), error) from None
        attrs = {k.lower(): v for k, v in root[0][1].items()} if root else {}
        first, last = (_number(attrs.get(name)) for name in ("firstchangenumber", "lastchangenumber"))
        since = min(int(c.rsplit("#", 1)[1]) for c in cookies.values() if _DS389_COOKIE.fullmatch(c))
        if last is not None and last > since and (first is None or first > since + 1):
            raise SyncTokenExpired(f"{self._system}: the retro changelog now starts at change {first}, and the stored "
                                   f"cookie needs the changes from {since + 1} on: they were trimmed, so a refresh "
                                   "would silently miss them")

    def _ids_under(self, conn: Any, bases: Sequence[str], attribute: str) -> Iterator[str]:
        """The ``attribute`` (an entryUUID) of every entry of the object type under ``bases``."""
        for base in bases:
            for _, raw in self._paged(conn, base, self._filter, [attribute]):
                yield from (v.decode("ascii", "replace").lower() for v in raw.get(attribute.lower()) or ())

    def _all_ids(self, needed: bool, known: str) -> IdSpool | None:
        """The ids of every entry, when deletes were seen that cannot be named by id."""
        if not needed or self._list_ids is None:
            return None
        log.info("livesync.listing_ids", system=self._system,
                 reason=f"deleted entries are known by {known} and uidAttribute is not {known}: the entries "
                        "still present are listed to find the deleted ones")
        return self._list_ids()

    def _refresh(self, conn: Any, base: str, cookie: str | None, attributes: Sequence[str], out: _Refreshes) -> None:
        """One refreshOnly search under ``base``, its answer added to ``out`` as it comes."""
        control = SyncRequestControl(cookie=cookie, mode="refreshOnly")
        out.cookie = None
        try:
            msgid = conn.search_ext(base, ldap.SCOPE_SUBTREE, self._changed, list(attributes) or ["1.1"],
                                    serverctrls=[control])
            while True:
                kind, messages, _, controls = conn.result4(msgid, all=0, add_ctrls=1, add_intermediates=1,
                                                           timeout=self._settings.read_timeout,
                                                           resp_ctrl_classes=RESPONSE_CONTROLS)[:4]
                if kind == ldap.RES_SEARCH_ENTRY:
                    for dn, attrs, entry_controls in messages:
                        self._entry(out, dn, attrs, entry_controls)
                elif kind == ldap.RES_INTERMEDIATE:
                    for name, value, _ in messages:
                        if name == SyncInfoMessage.responseName:
                            _info(out, sync_info(value))
                elif kind == ldap.RES_SEARCH_RESULT:
                    for c in controls:
                        if isinstance(c, SyncDoneControl):
                            out.cookie = c.cookie or out.cookie
                            out.present_phase = out.present_phase or not c.refreshDeletes
                    out.cookies[base] = out.cookie
                    return
        except ldap.LDAPError as error:
            raise self._failure("sync refresh", base, error) from None
        except ValueError as error:  # ``syncber``: a sync value not as RFC 4533 has it
            self.close()
            raise PeerError(f"{self._system}: the sync refresh under {base} answered a value idsync cannot "
                            f"read: {error}") from None

    # -- Active Directory -------------------------------------------------------

    def _read_usn(self, state: dict[str, Any], attributes: Sequence[str],
                  decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]], page_size: int) -> ChangeFeed:
        since, dc, invocation = state.get("since"), state.get("dc"), state.get("invocation")
        if not isinstance(since, int) or not isinstance(dc, str) or not isinstance(invocation, str | None):
            raise SyncTokenExpired(f"{self._system}: the stored USN token is not one this connector makes")
        conn = self._open()
        bases = self._settings.sync_contexts
        try:
            server = usn_server(conn)
        except ldap.LDAPError as error:
            raise self._failure("read of the root DSE", bases[0], error) from None
        why = unusable(server, dc, invocation, since)
        if why is not None or server is None:
            raise SyncTokenExpired(f"{self._system}: {why} ({self._conn.where})")

        def failed(error: ldap.LDAPError) -> NoReturn:
            raise self._failure("search", bases[0], error) from None

        found = read_usn_changes(conn, server, since, bases=bases, search_filter=self._changed,
                                 class_filter=self._class_filter, attributes=attributes,
                                 page_size=self._settings.block_size, timeout=self._settings.read_timeout,
                                 failed=failed)
        token = _usn_token(server, found.highest)
        guids = self._uid_key == "objectguid"
        complete = None if guids else self._all_ids(bool(found.deleted), "objectGUID")
        note = None if guids or self._list_ids is not None else (
            "deleted entries are known by objectGUID and uidAttribute is not objectGUID: "
            "deletes are left to the next full recon")
        batches = _batches(found.entries, found.deleted if guids else [], decode, page_size, token)
        return ChangeFeed(_closing(batches, [found.deleted, *([complete] if complete is not None else [])]),
                          "uSNChanged", reports_deletes=guids or self._list_ids is not None, note=note,
                          complete_ids=complete)

    @staticmethod
    def _entry(out: _Refreshes, dn: str, attrs: dict[str, list[bytes]], controls: Sequence[Any]) -> None:
        for c in controls:
            if not isinstance(c, SyncStateControl):
                continue
            if c.state == "present":
                out.present.add(c.entryUUID)
            elif c.state == "delete":
                out.deleted.add(c.entryUUID)
            else:
                # Only what was asked for is kept: a server that ignores the list (389 DS)
                # sends every user attribute, userPassword's hash included.
                raw = {k.lower(): v for k, v in attrs.items()}
                kept = {k: v for k, v in raw.items() if k.partition(";")[0] in out.asked}
                out.unasked = out.unasked or len(kept) < len(raw)
                out.changed.put(c.entryUUID, (dn, kept))
            out.cookie = c.cookie or out.cookie

    # -- polling --------------------------------------------------------------

    def _read_poll(self, state: dict[str, Any], attributes: Sequence[str],
                   decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]], page_size: int) -> ChangeFeed:
        attribute, since, seen = str(state.get("attribute")), str(state.get("since")), state.get("seen", {})
        form = {"entryCSN": _CSN, "modifyTimestamp": _TIMESTAMP}.get(attribute)
        mark, after = state.get("mark"), state.get("after", False)
        if form is None or not form.fullmatch(since) or not isinstance(seen, dict) \
                or not all(isinstance(v, str) for v in seen.values()) or not _mark_ok(mark, form) \
                or not isinstance(after, bool):
            raise SyncTokenExpired(f"{self._system}: the stored polling token is not one this connector makes")
        # ``after``: every change stamped ``since`` was read already (``_polled``), so the
        # entries of that stamp, as many as a bulk change made within one second, are not asked again.
        search_filter = f"(&{self._changed}(!({attribute}<={since})))" if after \
            else f"(&{self._changed}({attribute}>={since}))"
        conn = self._open()
        note = (f"the server has no sync provider: changes are found by {attribute}, "
                "and deletes are left to the next full recon")
        return ChangeFeed(self._polled(conn, attribute, since, seen, mark, search_filter, [*attributes, attribute],
                                       decode, page_size), attribute, reports_deletes=False, note=note)

    def _polled(self, conn: Any, attribute: str, since: str, seen: dict[str, str], mark: dict[str, Any] | None,
                search_filter: str, wanted: list[str], decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]],
                page_size: int) -> Iterator[ChangeBatch]:
        """The entries a polling read finds changed, in batches as its pages come (a bulk
        change is never held whole); the last batch carries the new token."""
        started, began = time.monotonic(), _now()
        size = max(page_size, 1)
        pending: list[tuple[str, RawEntry]] = []
        # The pending entries read again: not kept by the token, and stamped up to the newest
        # stamp a read before saw (the mark's). A token without a mark (the position a full
        # recon started from: the newest contextCSN, or this host's clock five minutes back,
        # whose skew a stamp cannot be judged by) may have had any of them applied.
        again: set[str] = set()
        known = max(since, mark["stamp"]) if mark is not None else None
        newest: str | None = None
        kept: dict[str, str] = {}  # what this read saw, at most twice the bound (``_newest``)
        read, pruned = 0, False
        for base in self._settings.sync_contexts:
            for dn, raw in self._paged(conn, base, search_filter, wanted):
                stamps = raw.get(attribute.lower())
                stamp = stamps[0].decode("ascii", "replace") if stamps else ""
                newest = max(newest or stamp, stamp)
                version, key = f"{stamp}#{_digest(raw)}", dn.lower()
                if version not in (seen.get(key), kept.get(key)):  # kept: an entry under two bases
                    pending.append((dn, raw))
                    if key not in seen and key not in kept and (known is None or stamp <= known):
                        again.add(key)
                kept[key] = version
                read += 1
                if len(kept) >= 2 * _POLL_SEEN:
                    kept, pruned = _newest(kept), True
                if len(pending) > size:  # one more than a batch: the last batch is never empty-handed
                    yield ChangeBatch(_reread(_changes(pending[:size], decode), pending[:size], again), None)
                    del pending[:size]
        # The next read starts before the newest stamp by the overlap and this read's time,
        # so before any change made while it ran; the entries seen since are skipped then.
        back = _POLL_OVERLAP + dt.timedelta(seconds=time.monotonic() - started)
        floor = max(since, _poll_floor(attribute, newest, back) or since) if newest else since
        after = False
        if mark is not None and began >= mark["ended"] + _POLL_OVERLAP.total_seconds():
            # Every change stamped up to the mark's stamp was committed before this read
            # began, so this read had it: the next one starts after that stamp.
            floor = max(floor, mark["stamp"])
            after = floor == mark["stamp"]
        if newest is not None and (mark is None or newest > mark["stamp"]):
            mark = {"stamp": newest, "ended": _now()}
        window = {k: v for k, v in kept.items() if v.rpartition("#")[0] >= floor}
        if len(window) > _POLL_SEEN or (pruned and len(window) == _POLL_SEEN):
            log.info("livesync.poll_seen_bounded", system=self._system, read=read, kept=_POLL_SEEN,
                     reason="more entries changed within the overlap than the token keeps: the others are "
                            "read again by the next runs and assessed again")
        token = _dump({"kind": "poll", "attribute": attribute, "since": floor, "seen": _newest(window),
                       **({"mark": mark} if mark is not None else {}), **({"after": True} if after else {})})
        yield ChangeBatch(_reread(_changes(pending, decode), pending, again), token)

    def _paged(self, conn: Any, base: str, search_filter: str,
               attributes: Sequence[str]) -> Iterator[tuple[str, RawEntry]]:
        def failed(error: ldap.LDAPError) -> NoReturn:
            if isinstance(error, ldap.NO_SUCH_OBJECT):
                raise PeerError(f"{self._system}: the base context {base} does not exist") from None
            raise self._failure("search", base, error) from None

        for page in read_pages(conn, base, "sub", search_filter, attributes, self._settings.block_size,
                               timeout=self._settings.read_timeout, base_required=True, failed=failed):
            yield from page

    # -- the server -----------------------------------------------------------

    def _context_csn(self, conn: Any, base: str) -> list[str]:
        """The ``contextCSN`` values of the database holding ``base`` (none when the server keeps none)."""
        try:
            root = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
            contexts = [v.decode() for v in (root[0][1].get("namingContexts") or [])] if root else []
            suffix = max((c for c in contexts if _under(base, c)), key=len, default=base)
            found = conn.search_s(suffix, ldap.SCOPE_BASE, "(objectClass=*)", ["contextCSN"])
        except ldap.LDAPError as error:
            raise self._failure("read of contextCSN", base, error) from None
        values = found[0][1].get("contextCSN") if found else None
        return sorted(v.decode("ascii", "replace") for v in values or ())

    def _keeps_entry_csn(self, conn: Any, base: str) -> bool:
        try:
            found = conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["entryCSN"])
        except ldap.LDAPError as error:
            raise self._failure("read of entryCSN", base, error) from None
        return bool(found and found[0][1].get("entryCSN"))

    def _probe(self, conn: Any, base: str, csn: list[str]) -> tuple[bool, str | None]:
        """Whether a refresh under ``base`` is answered (a base-scope probe, so it costs one
        entry at most), and the cookie the answer ends with (with the object type's filter,
        which 389 DS's cookie names)."""
        cookie = f"rid=000,csn={';'.join(csn)}" if csn else None
        try:
            msgid = conn.search_ext(base, ldap.SCOPE_BASE, self._changed, ["1.1"],
                                    serverctrls=[SyncRequestControl(cookie=cookie, mode="refreshOnly")])
            controls = conn.result4(msgid, all=1, add_ctrls=1, timeout=self._settings.read_timeout)[3]
        except ldap.UNAVAILABLE_CRITICAL_EXTENSION:
            return False, None
        except ldap.LDAPError as error:
            if _code(error) == _UNAVAILABLE_EXTENSION:
                return False, None
            raise self._failure("sync probe", base, error) from None
        done = next((c for c in controls if isinstance(c, SyncDoneControl)), None)
        return True, done.cookie if done is not None else None

    def _failure(self, what: str, base: str, error: ldap.LDAPError) -> PeerError:
        """The error a failed read raises; the connection is dropped (the next read opens another)."""
        code = _code(error)
        if code == _REFRESH_REQUIRED:
            return SyncTokenExpired(f"{self._system}: the server asks for a full reload under {base} "
                                    "(e-syncRefreshRequired): it cannot tell the changes since the stored cookie")
        self.close()
        if what == "sync refresh" and (isinstance(error, ldap.UNAVAILABLE_CRITICAL_EXTENSION)
                                       or code == _UNAVAILABLE_EXTENSION):
            # The sync provider is gone (removed, or a replica without one took over).
            return SyncTokenExpired(f"{self._system}: the server no longer answers content synchronization "
                                    f"under {base} (no sync provider): the stored cookie cannot be used")
        if isinstance(error, ldap.SERVER_DOWN | ldap.TIMEOUT | ldap.UNAVAILABLE | ldap.BUSY):
            return PeerUnavailable(f"{self._system}: {what} under {base} failed: {_describe(error)}")
        if code == _UNWILLING and what == "sync refresh":
            # slapd: "consumer state is newer than provider" (restored from a backup, or another server).
            return SyncTokenExpired(f"{self._system}: the server refused the stored cookie under {base}: "
                                    f"{_describe(error)}")
        return PeerError(f"{self._system}: {what} under {base} failed: {_describe(error)}")


def _info(out: _Refreshes, message: SyncInfo) -> None:
    if message.newcookie is not None:
        out.cookie = message.newcookie
        return
    for phase, present in ((message.refreshPresent, True), (message.refreshDelete, False)):
        if phase is not None:
            out.present_phase = out.present_phase or present
            out.cookie = phase.get("cookie") or out.cookie
    if message.syncIdSet is not None:
        ids = message.syncIdSet
        (out.deleted if ids["refreshDeletes"] else out.present).update(ids["syncUUIDs"])
        out.cookie = ids.get("cookie") or out.cookie


def _number(values: Sequence[bytes] | None) -> int | None:
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


def _ns_unique_id(sync_uuid: str) -> str:
    """389 DS's nsUniqueId (four groups of eight hex digits) from the same 16 bytes as a UUID."""
    digits = sync_uuid.replace("-", "")
    return "-".join(digits[i:i + 8] for i in range(0, 32, 8))


def _with_id(sync_uuid: str, entry: tuple[str, RawEntry]) -> tuple[str, RawEntry]:
    """The entry with its nsUniqueId, which 389 DS leaves out of a refresh's changed entries."""
    dn, raw = entry
    return (dn, raw) if raw.get("nsuniqueid") else (dn, {**raw, "nsuniqueid": [_ns_unique_id(sync_uuid).encode()]})


def _batches(entries: Iterable[tuple[str, RawEntry]], deleted: Iterable[str],
             decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]], page_size: int,
             token: str) -> Iterator[ChangeBatch]:
    """The deletes, then the changed entries, in batches of ``page_size``; only the last
    one carries the new token (a refresh's cookie covers the whole refresh). Deletes go
    first, in batches of their own (a batch's changes are assessed together): an entry
    deleted and another added at its DN in one window (a new entryUUID) must find the
    object unlinked, or it correlates to the object still linked to the old entry, fails,
    and the old entry's delete then removes that object."""
    size = max(page_size, 1)
    for ids in chunks(deleted, size):
        yield ChangeBatch([Change(uuid, None) for uuid in ids], None)
    changes: list[Change] = []
    for page in chunks(entries, size):
        changes.extend(_changes(page, decode))
        while len(changes) > size:
            yield ChangeBatch(changes[:size], None)
            del changes[:size]
    yield ChangeBatch(changes, token)


def _closing(batches: Iterator[ChangeBatch],
             spools: Sequence[IdSpool | EntrySpool | _Refreshes]) -> Iterator[ChangeBatch]:
    """``batches``, and the spools they were read from closed once they are read or dropped."""
    try:
        yield from batches
    finally:
        for spool in spools:
            spool.close()


def _changes(entries: list[tuple[str, RawEntry]],
             decode: Callable[[list[tuple[str, RawEntry]]], list[Obj]]) -> list[Change]:
    """``entries`` as changes. An entry without the id attribute (unreadable to the bind DN,
    or absent) fails as an entry of the run, named by its DN."""
    return [Change(o["_id"], o) if o.get("_id") else Change("", o, about=f"dn {dn!r}")
            for (dn, _), o in zip(entries, decode(entries), strict=True)]


def _reread(changes: list[Change], entries: list[tuple[str, RawEntry]], again: set[str]) -> list[Change]:
    """``changes`` (of ``entries``, in order), those of the DNs in ``again`` marked read again
    (``Change.reread``); ``again`` loses them."""
    if not again:
        return changes
    marked = []
    for change, (dn, _) in zip(changes, entries, strict=True):
        key = dn.lower()
        marked.append(replace(change, reread=True) if key in again and change.id else change)
        again.discard(key)
    return marked


def _digest(raw: RawEntry) -> str:
    """What tells two versions of an entry with the same stamp apart (a ``modifyTimestamp``
    has one-second steps): a digest of the values read."""
    text = repr(sorted((k, sorted(v)) for k, v in raw.items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _newest(seen: dict[str, str]) -> dict[str, str]:
    """The ``_POLL_SEEN`` entries of ``seen`` (DN -> stamp and digest) with the newest stamps."""
    if len(seen) <= _POLL_SEEN:
        return seen
    return dict(heapq.nlargest(_POLL_SEEN, seen.items(), key=lambda item: (item[1].rpartition("#")[0], item[0])))


def _now() -> float:
    """This host's clock, in seconds (the polling mark's)."""
    return time.time()


def _mark_ok(mark: Any, form: re.Pattern[str]) -> bool:
    return mark is None or (isinstance(mark, dict) and isinstance(mark.get("stamp"), str)
                            and bool(form.fullmatch(mark["stamp"])) and isinstance(mark.get("ended"), int | float))


def _poll_floor(attribute: str, newest: str, back: dt.timedelta) -> str | None:
    """The stamp ``back`` before ``newest`` (a CSN or a generalized time), in the form of
    ``attribute``; None when ``newest`` is not a time."""
    try:
        moment = dt.datetime.strptime(newest[:14], "%Y%m%d%H%M%S") - back
    except ValueError:
        return None
    return moment.strftime("%Y%m%d%H%M%S.%fZ#000000#000#000000" if attribute == "entryCSN" else "%Y%m%d%H%M%SZ")


def _usn_token(server: UsnServer, since: int) -> str:
    return _dump({"kind": "usn", "dc": server.service, "invocation": server.invocation, "since": since})


def _dump(state: dict[str, Any]) -> str:
    return json.dumps({"v": _TOKEN_VERSION, **state}, sort_keys=True, separators=(",", ":"))


def _load(token: str) -> dict[str, Any]:
    try:
        state = json.loads(token)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != _TOKEN_VERSION:
        raise SyncTokenExpired("the stored token is not one this connector makes")
    return state


def _under(dn: str, suffix: str) -> bool:
    d, s = dn.lower().replace(" ", ""), suffix.lower().replace(" ", "")
    return bool(s) and (d == s or d.endswith("," + s))


def _code(error: ldap.LDAPError) -> int | None:
    info = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    code = info.get("result")
    return int(code) if isinstance(code, int) else None


def _describe(error: ldap.LDAPError) -> str:
    info = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    text = str(info.get("desc") or type(error).__name__)
    return f"{text}: {info['info']}" if info.get("info") else text
