"""A group's member DNs as the ids of the accounts they name, and back.

An LDAP group names its members by DN (``uniqueMember``, ``member``); the store
knows accounts by their ids (``uidAttribute``), through links. With DN ids
(``"uidAttribute": "dn"``) the two are the same strings. With any other id
(``entryUUID``, ``objectGUID``) each DN is read once for its id and each id
searched once for its DN, and both are kept for the life of the resource (one
run): a few are read one at a time, more than a few (a groups recon) from one
listing of every account, which costs one paged search instead of a read per
member. A DN that names no account (a nested group, an entry outside the
synchronized contexts) has no id.
"""

from __future__ import annotations

from collections.abc import Sequence

from ldap3.utils.dn import parse_dn

from idsync.connectors.ldap.config import LdapSettings, ObjectTypeDef
from idsync.connectors.ldap.connection import LdapConnection, SearchEntry
from idsync.connectors.ldap.groups import dn_key
from idsync.connectors.ldap.values import decode_id, id_filter

__all__ = ["MemberIds"]

# Up to this many unknown DNs are read one at a time; more make one listing of every account.
_DIRECT = 64
_ID_CHUNK = 500


class MemberIds:
    """Member DNs <-> ids of the accounts of one object type, over one connection."""

    def __init__(self, conn: LdapConnection, settings: LdapSettings, account: ObjectTypeDef) -> None:
        self._conn = conn
        self._settings = settings
        self._uid = settings.uid_attribute
        self._dn_ids = self._uid.lower() == "dn"
        classes = [f"(objectClass={c})" for c in account.object_classes if c.lower() != "top"]
        if account.search_filter:
            search = account.search_filter.strip()
            classes.append(search if search.startswith("(") else f"({search})")
        self._filter = classes[0] if len(classes) == 1 else f"(&{''.join(classes)})"
        self._ids: dict[str, str | None] = {}  # DN key -> id
        self._dns: dict[str, str] = {}  # id -> DN
        self._listed = False

    def ids(self, dns: Sequence[str]) -> list[str | None]:
        """The id of the account each DN names (``None`` for none)."""
        if self._dn_ids:
            return list(dns)
        todo = list(dict.fromkeys(k for k in map(dn_key, dns) if k not in self._ids))
        if len(todo) > _DIRECT and not self._listed:
            self._list_all()
        for dn in dns:
            key = dn_key(dn)
            if key not in self._ids:
                found = self._conn.search(dn, self._filter, [self._uid], scope="base") if _valid(dn) else []
                self._learn(found[0] if found else None, key)
        return [self._ids.get(dn_key(dn)) for dn in dns]

    def dns(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> the DN of the account with that id (an id naming none is absent)."""
        if self._dn_ids:
            return {i: i for i in ids}
        todo = [i for i in dict.fromkeys(ids) if i not in self._dns]
        for start in range(0, len(todo), _ID_CHUNK):
            ids_filter = id_filter(self._uid, todo[start:start + _ID_CHUNK])
            if not ids_filter:
                continue
            for base in self._settings.read_contexts:
                for entry in self._conn.search(base, f"(&{self._filter}{ids_filter})", [self._uid]):
                    self._learn(entry, dn_key(entry[0]))
        return {i: self._dns[i] for i in ids if i in self._dns}

    def _list_all(self) -> None:
        self._listed = True
        for base in self._settings.read_contexts:
            for page in self._conn.search_pages(base, self._filter, [self._uid], self._settings.block_size):
                for entry in page:
                    self._learn(entry, dn_key(entry[0]))

    def _learn(self, entry: SearchEntry | None, key: str) -> None:
        if entry is None:
            self._ids[key] = None
            return
        dn, raw = entry
        found = decode_id(self._uid.lower(), raw.get(self._uid.lower()))
        self._ids[key] = found
        if found is not None:
            self._dns[found] = dn


def _valid(dn: str) -> bool:
    """Whether ``dn`` parses as a DN (a search based on anything else is refused)."""
    try:
        return bool(dn.strip()) and bool(parse_dn(dn, escape=True, strip=True))
    except Exception:  # noqa: BLE001 - ldap3 raises several kinds for a malformed DN
        return False
