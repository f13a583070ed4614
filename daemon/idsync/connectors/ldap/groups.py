"""Group membership of entries: OpenICF's virtual ``ldapGroups`` attribute, and the
upkeep of ``maintainLdapGroupMembership`` and ``maintainPosixGroupMembership``.

An entry's ``ldapGroups`` are the DNs of the groups whose ``groupMemberAttribute``
(``uniqueMember``, ``member``) holds the entry's DN, found under ``baseContexts``
(and ``groupSearchFilter`` when set), as OpenICF's LDAP connector finds them.
With ``ldapGroupsAttribute`` (``memberOf``, ``isMemberOf``) the directory's own
list on the entry is read instead, and nothing is searched.

Reading is done per run, not per entry: a listing (a recon page, or a read of
many ids) is answered from one paged search of every group, taken when first
needed and kept for the life of the resource (one run, one request), that maps
each member DN to its groups (``GroupIndex``); only a read of a few entries (an
implicit sync of one object) searches their groups directly.
Writes change the groups: joining adds the entry's DN to a group's member
attribute, leaving removes that one value (never a replace of the member list).
A change always starts from the entry's groups read afresh, and the index is
kept in step with what this connector writes.

``maintainLdapGroupMembership``: a renamed entry's DN is replaced by its new DN
in its groups, and a deleted entry leaves its groups first. (With OpenLDAP's
memberof overlay and ``olcMemberOfRefInt``, or the refint overlay, the directory
has done it already and nothing is left to do.) ``maintainPosixGroupMembership``
does the same for ``posixGroup`` entries, whose ``memberUid`` holds the entry's
``uid`` values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from idsync.connectors.ldap.config import LdapSettings
from idsync.connectors.ldap.connection import LdapConnection, LdapRefused
from idsync.connectors.ldap.members import ADD, DELETE, Changes, group_changes, norm_dn
from idsync.errors import NotFound, ObjectRejected
from idsync.query.ldap import escape_ldap_value

__all__ = ["GroupIndex", "Memberships", "dn_key", "uid_values"]

# Up to this many entries, their groups are searched one entry at a time; a
# larger read, or reads past _DIRECT_TOTAL entries in all, are answered from the
# index of every group.
_DIRECT_LOOKUPS = 8
_DIRECT_TOTAL = 64
_SEPARATORS = re.compile(r"\s*([,=+])\s*")
# A value already there (add) or already gone (remove): what was wanted.
_DONE_ALREADY = frozenset({"attributeOrValueExists", "noSuchAttribute"})
_POSIX_MEMBER = "memberUid"


def dn_key(dn: str) -> str:
    """A DN's comparison key: lower case, no spaces around separators. Plain DNs
    take a fast path; one with escapes or quotes is parsed (``norm_dn``)."""
    if "\\" in dn or '"' in dn:
        return norm_dn(dn)
    return _SEPARATORS.sub(r"\1", dn.strip()).lower()


class GroupIndex:
    """member DN key -> the DNs of its groups, from one listing of every group."""

    def __init__(self) -> None:
        # member key -> group key -> the group's DN as first listed: an entry of many groups
        # is added to each in constant time.
        self._groups: dict[str, dict[str, str]] = {}

    def add(self, member: str, group: str) -> None:
        self.add_members(group, [member])

    def add_members(self, group: str, members: Iterable[str]) -> None:
        key = dn_key(group)
        for member in members:
            self._groups.setdefault(dn_key(member), {}).setdefault(key, group)

    def remove(self, member: str, group: str) -> None:
        key = dn_key(member)
        groups = self._groups.get(key)
        if groups is not None:
            groups.pop(dn_key(group), None)
            if not groups:
                del self._groups[key]

    def of(self, member: str) -> list[str]:
        return list(self._groups.get(dn_key(member), {}).values())


class Memberships:
    """Reads and writes the groups of one object type's entries over one connection."""

    def __init__(self, conn: LdapConnection, settings: LdapSettings) -> None:
        self._conn = conn
        self._settings = settings
        self._member = settings.group_member_attribute
        self._index: GroupIndex | None = None
        self._listing_started = False
        self._direct = 0

    # Reading ----------------------------------------------------------------

    def start_listing(self) -> None:
        """A listing of every entry starts: its pages are answered from the index,
        whatever their size. The index is taken once per resource, which lives for one
        run (or one request): the correlation queries of a run do not list the groups
        again, and an implicit sync of one object, which lists nothing, never lists them."""
        self._listing_started = True

    def groups_of(self, dns: Sequence[str]) -> dict[str, list[str]]:
        """DN -> the DNs of its groups, for each of ``dns``."""
        direct = (self._index is None and not self._listing_started and len(dns) <= _DIRECT_LOOKUPS
                  and self._direct + len(dns) <= _DIRECT_TOTAL)
        if direct:
            self._direct += len(dns)
            return {dn: self.current(dn) for dn in dns}
        index = self._listing()
        return {dn: index.of(dn) for dn in dns}

    def current(self, dn: str) -> list[str]:
        """The groups holding ``dn`` now: one search, whatever the index says."""
        return self._search_groups(f"({self._member}={escape_ldap_value(dn)})")

    def _listing(self) -> GroupIndex:
        if self._index is None:
            index = GroupIndex()
            member_key = self._member.lower()
            search_filter = _and(f"({self._member}=*)", self._settings.group_search_filter)
            for base in self._settings.base_contexts:
                for page in self._conn.search_pages(base, search_filter, [self._member],
                                                    self._settings.block_size, base_required=True):
                    # A large group's members sent in ranges (Active Directory's
                    # member;range=0-1499) come whole: the reader follows the ranges.
                    for group_dn, raw in page:
                        index.add_members(group_dn, (m.decode("utf-8", "replace") for m in raw.get(member_key) or ()))
            self._index = index
        return self._index

    def _search_groups(self, member_filter: str) -> list[str]:
        search_filter = _and(member_filter, self._settings.group_search_filter)
        found: dict[str, str] = {}
        for base in self._settings.base_contexts:
            for group_dn, _ in self._conn.search(base, search_filter, []):
                found.setdefault(dn_key(group_dn), group_dn)
        return list(found.values())

    # Writing ----------------------------------------------------------------

    def set_groups(self, dn: str, wanted: Iterable[str], current: Sequence[str | bytes] | None = None) -> None:
        """Make ``dn`` a member of exactly the ``wanted`` groups. ``current``: its
        groups as the entry lists them (``memberOf``), else they are searched."""
        have = self.current(dn) if current is None else current
        join, leave = group_changes(have, [str(g) for g in wanted if g])
        for group in join:
            self._modify(group, [(ADD, dn)], "join")
            if self._index is not None:
                self._index.add(dn, group)
        for group in leave:
            self._modify(group, [(DELETE, dn)], "leave")
            if self._index is not None:
                self._index.remove(dn, group)

    def follow_rename(self, old_dn: str, new_dn: str) -> None:
        """Replace ``old_dn`` by ``new_dn`` in every group that still holds it."""
        for group in self.current(old_dn):
            self._modify(group, [(DELETE, old_dn), (ADD, new_dn)], "rename in")
        if self._index is not None:
            for group in self._index.of(old_dn):
                self._index.remove(old_dn, group)
                self._index.add(new_dn, group)

    def leave_all(self, dn: str) -> None:
        """Take ``dn`` out of every group that holds it (before the entry is deleted)."""
        for group in self.current(dn):
            self._modify(group, [(DELETE, dn)], "leave")
            if self._index is not None:
                self._index.remove(dn, group)

    def posix_follow(self, old_uids: Sequence[str], new_uids: Sequence[str]) -> None:
        """``memberUid`` values that go (a uid changed or removed) are replaced in their
        POSIX groups by the entry's first new uid, or just removed when it has none."""
        kept = {u.lower() for u in new_uids}
        for uid in (u for u in old_uids if u.lower() not in kept):
            for group in self._search_groups(f"({_POSIX_MEMBER}={escape_ldap_value(uid)})"):
                ops = [(DELETE, uid)]
                if new_uids:
                    ops.append((ADD, new_uids[0]))
                self._modify(group, ops, "rename in", attribute=_POSIX_MEMBER)

    def _modify(self, group: str, ops: Sequence[tuple[str, str]], what: str, *,
                attribute: str | None = None) -> None:
        """Apply value adds and removes to one group's member attribute. A value already
        there (add) or already gone (remove) is what was wanted: not an error."""
        name = attribute or self._member
        changes: Changes = {name: [(kind, [value]) for kind, value in ops]}
        try:
            self._conn.modify(group, changes)
        except LdapRefused as refused:
            if refused.result not in _DONE_ALREADY:
                raise ObjectRejected(f"ldap: cannot {what} group {group}: {_reason(refused)}") from None
            if len(ops) > 1:
                for op in ops:
                    self._modify(group, [op], what, attribute=attribute)
        except NotFound as missing:
            # A group that is not there fails the object, never as "not found": that would
            # read as the entry itself being gone.
            raise ObjectRejected(f"ldap: cannot {what} group {group}: {_reason(missing)}") from None


def _reason(error: Exception) -> str:
    """What the directory said, without the "ldap: update DN refused: " in front."""
    text = str(error)
    return text.split(" refused: ", 1)[1] if " refused: " in text else text


def _and(*filters: str) -> str:
    parts = [f if f.startswith("(") else f"({f})" for f in filters if f]
    return parts[0] if len(parts) == 1 else f"(&{''.join(parts)})"


def uid_values(raw: Mapping[str, Sequence[bytes]]) -> list[str]:
    """The entry's ``uid`` values, which POSIX groups name their members by."""
    return [v.decode("utf-8", "replace") for v in raw.get("uid") or ()]
