"""liveSync for Active Directory: the changes since an update sequence number.

Every write on a domain controller takes the next USN of that DC and stamps it on the
entry's ``uSNChanged``; the rootDSE's ``highestCommittedUSN`` is the newest one. The
position (the token) is that number. A read asks for the entries whose ``uSNChanged``
is above it under the sync contexts, and for the tombstones above it (the
*show deleted* control, 1.2.840.113556.1.4.417): a deleted entry keeps its
``objectGUID``, its ``objectClass`` and ``lastKnownParent``, which tells whether it
was under a sync context. The new position is the ``highestCommittedUSN`` read before
the searches, never a ``uSNChanged`` seen during them: a change committed while the
searches run may take a USN below a later one they see, and only the position read
before is known to have every lower USN behind it. What the searches saw above it is
read again next time, harmlessly.

A deleted entry's ``lastKnownParent`` is itself a tombstone when its parent went with it
(a subtree delete: ``OU=sub\\0ADEL:<guid>,CN=Deleted Objects,...``): the parent's own
``lastKnownParent`` is read (a base search with the same control, up the chain, once per
read) until a live DN says where the entry was. When the chain cannot be followed (a
parent's tombstone already purged, no ``lastKnownParent``), the entry is reported
deleted all the same: a tombstone's object is gone for good, so a link to it is stale
wherever it was, and a delete of an id nothing links changes nothing.

The tombstones are read first (the deletes go first: ``changes.py``'s ``_batches``) and
kept in a spool (``spool.py``); the changed entries are read a page at a time as the
caller takes them, so neither a bulk change nor a mass delete is held in memory.

USNs are per domain controller, and per database: a token is only good against the DC
that made it, which the token names (``dsServiceName``) along with the invocation of its
database (the ``invocationId`` of its NTDS Settings, which a restore from backup
changes), and only while the DC's ``highestCommittedUSN`` is not below the token's
(a DC restored from an older backup). Otherwise ``unusable`` says why, the caller raises
``SyncTokenExpired`` and liveSync reconciles in full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import ldap
from ldap.controls import LDAPControl

from idsync.connectors.ldap.reader import read_pages
from idsync.connectors.ldap.values import RawEntry, decode_id
from idsync.spool import IdSpool

__all__ = ["AD_CAPABILITY", "UsnChanges", "UsnServer", "read_usn_changes", "unusable", "usn_server"]

AD_CAPABILITY = "1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID
_SHOW_DELETED = "1.2.840.113556.1.4.417"
# How a tombstone's RDN is marked (``\0ADEL:`` as a DN string escapes the newline).
_DELETED_MARKS = ("\\0adel:", "\ndel:")
# Parents followed up a chain of tombstones: deeper than any OU tree, short of a loop.
_MAX_CHAIN = 64


@dataclass(frozen=True)
class UsnServer:
    """A domain controller's position: which DC, the invocation of its database (string
    form of ``invocationId``, "" when unreadable), its newest USN, its domain's DN."""

    service: str
    invocation: str
    highest: int
    domain: str


@dataclass
class UsnChanges:
    """What one read found: changed entries (read a page at a time as they are taken), the
    objectGUIDs (string form) of the deleted ones (read first, spooled: a mass delete is
    as large as the directory), and the position to store."""

    entries: Iterator[tuple[str, RawEntry]]
    deleted: IdSpool
    highest: int


def usn_server(conn: Any) -> UsnServer | None:
    """The DC's position when ``conn`` talks to Active Directory (or Samba AD), else None."""
    found = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)",
                          ["supportedCapabilities", "highestCommittedUSN", "dsServiceName",
                           "defaultNamingContext"])
    attrs = {k.lower(): v for k, v in (found[0][1] if found else {}).items()}
    capabilities = {v.decode("ascii", "replace") for v in attrs.get("supportedcapabilities") or ()}
    usn = attrs.get("highestcommittedusn")
    if AD_CAPABILITY not in capabilities or not usn or not usn[0].isdigit():
        return None
    service = (attrs.get("dsservicename") or [b""])[0].decode("utf-8", "replace")
    domain = (attrs.get("defaultnamingcontext") or [b""])[0].decode("utf-8", "replace")
    return UsnServer(service, _invocation(conn, service), int(usn[0]), domain)


def _invocation(conn: Any, service: str) -> str:
    """The ``invocationId`` of the DC's NTDS Settings; "" when the bind account cannot read it."""
    if not service:
        return ""
    try:
        found = conn.search_s(service, ldap.SCOPE_BASE, "(objectClass=*)", ["invocationId"])
    except (ldap.NO_SUCH_OBJECT, ldap.INSUFFICIENT_ACCESS):
        return ""
    attrs = {k.lower(): v for k, v in (found[0][1] if found else {}).items()}
    return decode_id("objectguid", attrs.get("invocationid")) or ""


def unusable(server: UsnServer | None, dc: str, invocation: str | None, since: int) -> str | None:
    """Why a token made against ``dc`` (database ``invocation``, None in tokens made
    before it was kept) at USN ``since`` cannot be read from ``server``; None when it can."""
    if server is None or server.service.lower() != dc.lower():
        where = server.service if server else "not Active Directory"
        return (f"the stored USN is of the domain controller {dc}, and the server is {where}: "
                "USNs are per domain controller")
    if invocation is not None and invocation.lower() != server.invocation.lower():
        return (f"the domain controller's database is another invocation ({server.invocation or 'unreadable'}, "
                f"the stored USN is of {invocation}): it was restored from a backup, and its USNs since "
                "cannot be compared with the stored one")
    if since > server.highest:
        return (f"the stored USN {since} is above the domain controller's highestCommittedUSN {server.highest}: "
                "its database was restored from a backup or replaced, and the changes since cannot be told")
    return None


def read_usn_changes(conn: Any, server: UsnServer, since: int, *, bases: Sequence[str], search_filter: str,
                     class_filter: str, attributes: Sequence[str], page_size: int, timeout: float,
                     failed: Callable[[ldap.LDAPError], NoReturn]) -> UsnChanges:
    """The entries changed and the entries deleted after USN ``since`` (``server``: the
    position read just before, which becomes the new one)."""
    above = f"(uSNChanged>={since + 1})"
    places = _Places(conn, timeout, failed)
    deleted = IdSpool()
    for _dn, raw in _tombstones(conn, server.domain, f"(&(isDeleted=TRUE){class_filter}{above})", timeout, failed):
        guid = decode_id("objectguid", raw.get("objectguid"))
        parent = places.live(_first(raw, "lastknownparent"))
        if guid and (parent is None or any(_under(parent, base) for base in bases)):
            deleted.add(guid)

    def entries() -> Iterator[tuple[str, RawEntry]]:
        for base in bases:
            for page in read_pages(conn, base, "sub", f"(&{search_filter}{above})", list(attributes), page_size,
                                   timeout=timeout, base_required=True, failed=failed):
                yield from page

    return UsnChanges(entries(), deleted, server.highest)


@dataclass
class _Places:
    """Where deleted entries were: the live DN above a chain of tombstones, each deleted
    parent's ``lastKnownParent`` read once per read of changes."""

    conn: Any
    timeout: float
    failed: Callable[[ldap.LDAPError], NoReturn]
    _parents: dict[str, str | None] = field(default_factory=dict)

    def live(self, dn: str) -> str | None:
        """The live DN ``dn`` is or was under; None when the chain cannot be followed."""
        for _ in range(_MAX_CHAIN):
            if not dn:
                return None
            if not _deleted(dn):
                return dn
            key = dn.lower()
            if key not in self._parents:
                self._parents[key] = self._parent(dn)
            dn = self._parents[key] or ""
        return None

    def _parent(self, dn: str) -> str | None:
        """A tombstone's ``lastKnownParent``; None when the tombstone is gone (purged).
        Any other failure fails the read: nothing is deleted on a guess."""
        try:
            msgid = self.conn.search_ext(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["lastKnownParent"],
                                         serverctrls=[LDAPControl(_SHOW_DELETED, True, None)])
            _, data, _, _ = self.conn.result3(msgid, all=1, timeout=self.timeout)
        except ldap.NO_SUCH_OBJECT:
            return None
        except ldap.LDAPError as error:
            self.failed(error)
        entry = next((attrs for found, attrs in data or () if found is not None and isinstance(attrs, dict)), {})
        return _first({k.lower(): v for k, v in entry.items()}, "lastknownparent") or None


def _tombstones(conn: Any, domain: str, search_filter: str, timeout: float,
                failed: Callable[[ldap.LDAPError], NoReturn]) -> Iterator[tuple[str, RawEntry]]:
    control = LDAPControl(_SHOW_DELETED, True, None)
    try:
        msgid = conn.search_ext(domain, ldap.SCOPE_SUBTREE, search_filter,
                                ["objectGUID", "lastKnownParent"], serverctrls=[control])
        _, data, _, _ = conn.result3(msgid, all=1, timeout=timeout)
    except ldap.LDAPError as error:
        failed(error)
    for dn, attrs in data or ():
        if dn is not None and isinstance(attrs, dict):
            yield dn, {k.lower(): v for k, v in attrs.items()}


def _first(raw: RawEntry, key: str) -> str:
    return (raw.get(key) or [b""])[0].decode("utf-8", "replace")


def _deleted(dn: str) -> bool:
    # Only a tombstone's name holds the mark: a live name cannot hold a newline.
    text = dn.lower()
    return any(mark in text for mark in _DELETED_MARKS)


def _under(dn: str, base: str) -> bool:
    d, b = dn.lower().replace(" ", ""), base.lower().replace(" ", "")
    return bool(b) and (d == b or d.endswith("," + b))
