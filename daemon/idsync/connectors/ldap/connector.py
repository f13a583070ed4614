"""The LDAP connector: ``system/<name>/<objectType>`` over python-ldap, configured by a
PingIDM ``provisioner.openicf-<name>.json`` (see ``config`` for the keys).

Reads (recons, queries, reads by id) are paged searches over each ``baseContexts``, as
OpenICF's are (liveSync alone reads ``baseContextsToSynchronize``: ``changes``), asking
only for the attributes behind the requested fields; ids come from ``uidAttribute``, or are the
entry's DN when it is ``dn`` (as OpenICF's LDAP connector allows): such an id is read
back with a base-scope search of that DN, compared as a DN (case and spacing aside),
and changes when the entry is renamed (the write result carries the new DN).
A write batch first finds the DNs of the objects it updates or deletes in one
search, then applies each op on its own: a refused op fails alone, a dead peer
stops the batch with ``PeerUnavailable``. Multi-valued attributes and group
membership are written as value adds and removes (``members``).

Thread-safety: each resource owns one connection and must be used by one thread at
a time; two resources of one system may run in two threads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ldap.dn
import structlog
from ldap3.utils.dn import escape_rdn, parse_dn

from idsync.connectors.base import System, system_test_report
from idsync.connectors.ldap.adnames import UNIQUE, check_names, check_unique
from idsync.connectors.ldap.changes import LdapChanges
from idsync.connectors.ldap.config import (
    LdapSettings,
    ObjectTypeDef,
    PropertyDef,
    dn_under,
    nested_contexts,
    parse_ldap_config,
)
from idsync.connectors.ldap.connection import LdapConnection, SearchEntry
from idsync.connectors.ldap.groups import Memberships, uid_values
from idsync.connectors.ldap.ignored import ignored_settings
from idsync.connectors.ldap.listing import read_in_child, start_fork_server, two_cores
from idsync.connectors.ldap.member_refs import MemberIds
from idsync.connectors.ldap.members import DELETE, MEMBER_OF, REPLACE, Changes, norm_dn, value_changes
from idsync.connectors.ldap.rootdse import ROOT_DSE_ATTRIBUTES, describe_server, preset_mismatch
from idsync.connectors.ldap.special import encode_special, read_attributes, read_special
from idsync.connectors.ldap.values import (
    decode_entries,
    decode_entry,
    decode_id,
    encode_values,
    id_filter,
    id_key,
    wanted_properties,
)
from idsync.errors import (
    ConfigError,
    ConfigWarning,
    IdsyncError,
    NotFound,
    ObjectError,
    ObjectRejected,
    QueryError,
)
from idsync.query.ast import Path
from idsync.query.ldap import to_ldap
from idsync.resource import ChangeFeed, ChangeSource, Obj, QuerySpec, Resource, WriteOp, WriteResult, failed
from idsync.spool import IdSpool

__all__ = ["LdapResource", "LdapSystem", "open_ldap_system"]

log = structlog.get_logger("idsync.connectors.ldap")

_ID_CHUNK = 500
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*|[0-9]+(\.[0-9]+)+")


def _and(*filters: str) -> str:
    """The AND of LDAP filters, skipping empty ones; bare ``a=b`` gets its parentheses."""
    parts = [f if f.startswith("(") else f"({f})" for f in filters if f]
    if not parts:
        return "(objectClass=*)"
    return parts[0] if len(parts) == 1 else f"(&{''.join(parts)})"


def _valid_dn(text: str) -> bool:
    """Whether ``text`` parses as a DN (a search based on anything else is refused)."""
    try:
        return bool(text.strip()) and bool(parse_dn(text, escape=True, strip=True))
    except Exception:  # noqa: BLE001 - ldap3 raises several kinds for a malformed DN
        return False


class LdapResource(Resource, ChangeSource):
    """One object type of one LDAP system; its changes are read by ``changes.py``."""

    def __init__(self, system: str, settings: LdapSettings, object_type: ObjectTypeDef,
                 *, dry_run: bool = False) -> None:
        self.name = f"system/{system}/{object_type.name}"
        self.dry_run = dry_run
        self._system = system
        self._settings = settings
        self._type = object_type
        self._uid = settings.uid_attribute
        # entryUUID never changes and has an ordering rule (RFC 4530): a recon may range over it.
        self.ranged_ids = self._uid.lower() == "entryuuid"
        self._dn_ids = settings.uid_attribute.lower() == "dn"
        self.renames_ids = self._dn_ids
        readable = {p.name for p in object_type.readable()}
        self.write_only = frozenset(n for n in object_type.properties if n not in readable)
        if settings.password_attribute.lower() == "unicodepwd":
            # AD hashes what it is given: a hash written as a password would become the password.
            self.clear_secrets = frozenset(p.name for p in object_type.properties.values() if p.special == "password")
        self._conn = LdapConnection(system, settings)
        self._memberships = Memberships(self._conn, settings)
        self._member_id_cache: dict[str, str | None] = {}  # member DN -> its id (``_memberId``)
        self._member_refs: MemberIds | None = None
        self._class_filters = tuple(f"(objectClass={c})" for c in object_type.object_classes
                                    if c.lower() != "top")
        self._changes = LdapChanges(system, settings, _and(*self._class_filters, object_type.search_filter),
                                    settings.uid_attribute, class_filter=_and(*self._class_filters),
                                    list_ids=self._all_ids, sync_filters=object_type.sync_filters)

    def close(self) -> None:
        self._conn.close()
        self._changes.close()

    def name_members(self, account: ObjectTypeDef) -> None:
        """A group type's member attribute names ``account`` entries: the store may show its
        members as the managed objects linked to them (``store/system_refs.py``)."""
        members = self._type.by_native(self._settings.group_member_attribute)
        if members is not None and members.special is None:
            self.references = {members.name: account.name}
            self._member_refs = MemberIds(self._conn, self._settings, account)

    def referenced_ids(self, name: str, values: Sequence[Any]) -> list[str | None]:
        if self._member_refs is None or name not in self.references:
            return super().referenced_ids(name, values)
        return self._member_refs.ids([str(v) for v in values])

    def reference_values(self, name: str, ids: Sequence[str]) -> dict[str, Any]:
        if self._member_refs is None or name not in self.references:
            return super().reference_values(name, ids)
        return dict(self._member_refs.dns(ids))

    def latest_token(self) -> str:
        return self._changes.latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        wanted = wanted_properties(self._type, fields)
        return self._changes.read(token, self._attributes(wanted), lambda entries: self._objects(entries, wanted),
                                  page_size)

    def _all_ids(self) -> IdSpool:
        """The id of every entry of the type (liveSync's deletes when ids are not entryUUIDs)."""
        return IdSpool(o["_id"] for page in self._pages(QuerySpec(fields=[]), []) for o in page if o.get("_id"))

    def expect_listing(self) -> None:
        start_fork_server()

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        wanted = wanted_properties(self._type, spec.fields)
        # A whole listing (a recon's) is read and decoded in a second process while the
        # caller works on the pages (``listing.py``); group memberships stay here, where
        # later reads of the run use what the listing found.
        if spec.filter is None and spec.native is None and two_cores() \
                and not any(p.special in ("groups", "member_ids") for p in wanted):
            return read_in_child(_listing, (self._system, self._settings, self._type, spec),
                                 lambda: self._pages(spec, wanted))
        return self._pages(spec, wanted)

    def _pages(self, spec: QuerySpec, wanted: Sequence[PropertyDef]) -> Iterator[list[Obj]]:
        search_filter = _and(*self._class_filters, self._type.search_filter,
                             self._spec_filter(spec))
        if spec.filter is None and spec.native is None:
            self._memberships.start_listing()
        # The directory pages by blockSize (what the server is asked for, RFC 2696); the
        # caller gets batches of its own page size, cut from those pages as they stream in.
        batch = spec.page_size or self._settings.block_size
        pending: list[SearchEntry] = []
        for base in self._settings.read_contexts:
            pages = self._conn.search_pages(base, search_filter, self._attributes(wanted),
                                            self._settings.block_size, base_required=True)
            for entries in pages:
                pending.extend(entries)
                while len(pending) >= batch:
                    yield self._objects(pending[:batch], wanted)
                    del pending[:batch]
        if pending:
            yield self._objects(pending, wanted)

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        wanted = wanted_properties(self._type, fields)
        found: dict[str, Obj] = {}
        unique = list(dict.fromkeys(ids))
        if self._dn_ids:
            for dn, raw in self._read_dns(unique, self._attributes(wanted)).items():
                found[dn] = self._objects([raw], wanted)[0]
            return found
        asked = self._asked(unique)
        for start in range(0, len(unique), _ID_CHUNK):
            for obj in self._search_ids(unique[start:start + _ID_CHUNK], wanted):
                found.update(dict.fromkeys(asked.get(id_key(self._uid.lower(), obj["_id"] or ""), ()), obj))
        return found

    def _asked(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """How the ids asked for are compared (``id_key``) -> the ids as asked: an object
        found is answered under each id that names it, whatever its case."""
        asked: dict[str, list[str]] = {}
        for one in ids:
            asked.setdefault(id_key(self._uid.lower(), one), []).append(one)
        return asked

    def _read_dns(self, dns: Sequence[str], attributes: Sequence[str]) -> dict[str, SearchEntry]:
        """requested DN -> the entry at that DN (one base-scope search each), for the
        DNs under a base context that hold an object of this type."""
        bases = [norm_dn(b) for b in self._settings.read_contexts]
        search_filter = _and(*self._class_filters, self._type.search_filter)
        found: dict[str, SearchEntry] = {}
        for dn in dns:
            key = norm_dn(dn)
            if not _valid_dn(dn) or not any(dn_under(key, b) for b in bases):
                continue  # not an entry this resource reads
            entries = self._conn.search(dn, search_filter, attributes, scope="base")
            if entries:
                found[dn] = entries[0]
        return found

    def _search_ids(self, ids: Sequence[str], wanted: Sequence[PropertyDef]) -> list[Obj]:
        ids_filter = id_filter(self._uid, ids)
        if not ids_filter:
            return []
        search_filter = _and(*self._class_filters, self._type.search_filter, ids_filter)
        objects: list[Obj] = []
        for base in self._settings.read_contexts:
            entries = self._conn.search(base, search_filter, self._attributes(wanted))
            objects.extend(self._objects(entries, wanted))
        return objects

    def _spec_filter(self, spec: QuerySpec) -> str:
        # Both given (liveSync: a mapping's native sourceQuery narrowed to some ids): both must match.
        translated = to_ldap(spec.filter, attribute=self._native_path) if spec.filter is not None else ""
        if spec.native is not None:
            return _and(spec.native.strip(), translated) if translated else spec.native.strip()
        return translated

    def _native_path(self, path: Path) -> str:
        if len(path) != 1:
            raise QueryError(f"{self.name}: no LDAP attribute for /{'/'.join(path)}")
        if path[0] == "_id":
            return "entryDN" if self._dn_ids else self._uid
        prop = self._type.properties.get(path[0])
        if prop is None:
            return path[0]  # not declared: taken as an attribute name, as directories allow
        if prop.special in ("uid", "groups", "enable", "password", "member_ids"):
            attributes = read_attributes(prop, self._settings)
            if prop.special not in ("uid", "groups") or not attributes:
                raise QueryError(f"{self.name}: {path[0]} ({prop.native}) cannot be used in a query filter")
            return attributes[0]
        # entryDN is OpenLDAP's searchable copy of the DN.
        return "entryDN" if prop.is_dn else prop.native

    def _attributes(self, wanted: Sequence[PropertyDef]) -> list[str]:
        names = {} if self._dn_ids else {self._uid.lower(): self._uid}
        for prop in wanted:
            for name in read_attributes(prop, self._settings):
                names.setdefault(name.lower(), name)
        return list(names.values())

    def _objects(self, entries: Sequence[SearchEntry], wanted: Sequence[PropertyDef]) -> list[Obj]:
        objects = decode_entries(entries, wanted, self._uid.lower())
        if self._dn_ids:
            for obj, (dn, _) in zip(objects, entries, strict=True):
                obj["_id"] = dn
        specials = [p for p in wanted if p.special]
        if not specials:
            return objects
        for obj, (dn, raw) in zip(objects, entries, strict=True):
            read_special(obj, dn, raw, specials, self._settings)
        searched = [p for p in specials if p.special == "groups" and not self._settings.groups_attribute]
        if searched and entries:
            groups = self._memberships.groups_of([dn for dn, _ in entries])
            for obj, (dn, _) in zip(objects, entries, strict=True):
                obj.update({p.name: groups[dn] for p in searched})
        member_ids = [p for p in specials if p.special == "member_ids"]
        if member_ids:
            key = self._settings.group_member_attribute.lower()
            for obj, (_, raw) in zip(objects, entries, strict=True):
                ids = self._member_ids([v.decode("utf-8", "replace") for v in raw.get(key) or ()])
                obj.update({p.name: ids for p in member_ids})
        return objects

    def _member_ids(self, dns: Sequence[str]) -> list[str]:
        """The ``uidAttribute`` values of the entries at ``dns`` (OpenICF's ``_memberId``):
        the DNs themselves with DN ids, else one base read per DN not seen before in this
        resource's life; a DN naming no entry is left out."""
        if self._dn_ids:
            return list(dns)
        uid_key = self._uid.lower()
        ids: list[str] = []
        for dn in dns:
            key = norm_dn(dn)
            if key not in self._member_id_cache:
                found = self._conn.search(dn, "(objectClass=*)", [self._uid], scope="base") if _valid_dn(dn) else []
                self._member_id_cache[key] = decode_id(uid_key, found[0][1].get(uid_key)) if found else None
            if (member_id := self._member_id_cache[key]) is not None:
                ids.append(member_id)
        return ids

    # Writes -----------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        dns = self._find_dns([op.id for op in ops if op.kind != "create" and op.id])
        results: list[WriteResult] = []
        for op in ops:
            try:
                if op.kind == "create":
                    results.append(self._create(op))
                    continue
                entry = dns.get(op.id or "")
                if entry is None:
                    raise NotFound(f"ldap: {self._type.name} {op.id} not found")
                if op.kind == "update":
                    results.append(self._update(op, *entry))
                else:
                    self._delete(*entry)
                    results.append(WriteResult(op, id=op.id))
            except ObjectError as error:
                log.info("ldap.write_failed", resource=self.name, kind=op.kind, id=op.id,
                         error=str(error))
                results.append(failed(op, error))
        return results

    def _find_dns(self, ids: Sequence[str]) -> dict[str, tuple[str, Mapping[str, Sequence[bytes]]]]:
        """id -> (DN, raw attributes of every property) for the objects to change."""
        wanted = list(self._type.properties.values())
        found: dict[str, tuple[str, Mapping[str, Sequence[bytes]]]] = {}
        unique = list(dict.fromkeys(ids))
        attributes = self._attributes(wanted)
        if self._settings.maintain_posix_group_membership:
            attributes.append("uid")  # what its POSIX groups name it by
        if self._dn_ids:
            return self._read_dns(unique, attributes)
        asked = self._asked(unique)
        for start in range(0, len(unique), _ID_CHUNK):
            ids_filter = id_filter(self._uid, unique[start:start + _ID_CHUNK])
            if not ids_filter:
                continue
            for base in self._settings.read_contexts:
                for dn, raw in self._conn.search(base, _and(*self._class_filters, ids_filter), attributes):
                    obj_id = decode_entry(dn, raw, (), self._uid.lower())["_id"] or ""
                    found.update(dict.fromkeys(asked.get(id_key(self._uid.lower(), obj_id), ()), (dn, raw)))
        return found

    def _delete(self, dn: str, raw: Mapping[str, Sequence[bytes]]) -> None:
        if self._settings.maintain_group_membership:
            self._memberships.leave_all(dn)
        if self._settings.maintain_posix_group_membership:
            self._memberships.posix_follow(uid_values(raw), [])
        self._conn.delete(dn)

    def _prop_for(self, native: str) -> PropertyDef | None:
        return self._type.by_native(native)

    def _create(self, op: WriteOp) -> WriteResult:
        values = op.values
        dn = self._new_dn(values)
        self._check_ad_names(values, dn, None)
        classes_prop = self._prop_for("objectClass")
        classes = encode_values(classes_prop, values.get(classes_prop.name)) if classes_prop else []
        attributes: dict[str, list[str | bytes]] = {}
        groups = self._groups_prop()
        special: Changes = {}
        for name, value in values.items():
            prop = self._type.properties.get(name)
            if (prop is None or prop.is_dn or prop is classes_prop or prop is groups
                    or "NOT_CREATABLE" in prop.flags):
                continue
            if prop.special == "password":
                password = encode_special(prop, value, None, self._settings)
                attributes.update({a: ops[0][1] for a, ops in password.items()})
            elif prop.special:
                special.update(encode_special(prop, value, None, self._settings))
            elif encoded := encode_values(prop, value):
                attributes[prop.native] = encoded
        object_class: list[str | bytes] = [str(c) for c in classes] or list(self._type.object_classes)
        self._conn.add(dn, {"objectClass": object_class, **attributes})
        if special:  # a lock attribute is operational: set once the entry exists
            self._conn.modify(dn, special)
        if groups is not None and values.get(groups.name) and not (
                groups.special and "NOT_CREATABLE" in groups.flags):
            self._memberships.set_groups(dn, _as_list(values[groups.name]), current=[])
        entries = self._conn.search(dn, "(objectClass=*)", self._attributes(self._type.readable()),
                                    scope="base")
        if not entries:
            raise NotFound(f"ldap: created {dn} but cannot read it back")
        obj = self._objects(entries, self._type.readable())[0]
        return WriteResult(op, id=obj["_id"], obj=obj)

    def _new_dn(self, values: Obj) -> str:
        dn_prop = next((p for p in self._type.properties.values() if p.is_dn), None)
        if dn_prop is not None and values.get(dn_prop.name):
            return str(values[dn_prop.name])
        naming = self._type.naming_attribute
        prop = self._prop_for(naming)
        value = values.get(prop.name) if prop else None
        if isinstance(value, list):
            value = value[0] if value else None
        if value in (None, ""):
            raise ObjectRejected(f"ldap: cannot name the new entry: no {naming} value")
        return f"{naming}={escape_rdn(str(value))},{self._settings.sync_contexts[0]}"

    def _check_ad_names(self, values: Obj, dn: str, raw: Mapping[str, Sequence[bytes]] | None) -> None:
        """Active Directory: fail the object when a ``sAMAccountName`` or
        ``userPrincipalName`` it writes breaks AD's rules (``adnames``)."""
        if not self._settings.active_directory:
            return
        skipped = "NOT_CREATABLE" if raw is None else "NOT_UPDATEABLE"  # not written: not checked
        written = {prop.native: encode_values(prop, value) for name, value in values.items()
                   if (prop := self._type.properties.get(name)) is not None and prop.key in UNIQUE
                   and prop.special is None and skipped not in prop.flags}
        found = check_names(self._type.native_type, written, raw)
        if found:
            check_unique(found, dn, self._settings.base_contexts,
                         lambda base, search: [d for d, _ in self._conn.search(base, search, ["1.1"])])

    def _update(self, op: WriteOp, dn: str, raw: Mapping[str, Sequence[bytes]]) -> WriteResult:
        self._check_ad_names(op.values, dn, raw)
        old_dn, dn, before = dn, self._rename(dn, op.values), raw
        if dn != old_dn:
            raw = _renamed_entry(raw, old_dn, dn)
            if self._settings.maintain_group_membership:
                self._memberships.follow_rename(old_dn, dn)
        changes: Changes = {}
        groups = self._groups_prop()
        naming = _first_rdn(dn)
        for name, value in op.values.items():
            prop = self._type.properties.get(name)
            if prop is not None and naming is not None and any(prop.key == a.lower() for a, _, _ in naming) and \
                    sorted(_as_list(value)) == sorted(_texts(raw.get(prop.key) or ())):
                # The entry holds just these values, its RDN's among them (Active Directory
                # refuses any modify of an RDN attribute, even to its own value: notAllowedOnRDN).
                continue
            if prop is not None and prop is groups:
                if not (prop.special and "NOT_UPDATEABLE" in prop.flags):
                    self._memberships.set_groups(dn, _as_list(value), current=self._listed_groups(prop, raw))
                continue
            if prop is None or prop.is_dn or "NOT_UPDATEABLE" in prop.flags:
                continue
            if prop.special:
                changes.update(encode_special(prop, value, raw, self._settings))
                continue
            encoded = encode_values(prop, value)
            if encoded and prop.is_array and raw.get(prop.key):
                ops = value_changes(prop.native, raw[prop.key], encoded)
                if ops:
                    changes[prop.native] = ops
            elif encoded:
                if not prop.is_array and len(raw.get(prop.key) or ()) > 1 and not isinstance(value, list):
                    # Replacing would drop values idsync was never shown as separate ones.
                    raise ObjectRejected(f"ldap: {prop.name} of {dn} holds {len(raw[prop.key])} values but is "
                                         "declared single-valued; it was not replaced")
                changes[prop.native] = [(REPLACE, encoded)]
            elif raw.get(prop.key):
                # Deleting an absent attribute is an error in LDAP: only remove what is there.
                changes[prop.native] = [(DELETE, [])]
        if changes:
            self._conn.modify(dn, changes)
        if self._settings.maintain_posix_group_membership and "uid" in before and (
                dn != old_dn or any(p.key == "uid" for p in map(self._type.properties.get, op.values) if p)):
            self._memberships.posix_follow(uid_values(before), self._uids(dn))
        # A renamed entry has a new DN: with DN ids that is its new id.
        new_id = dn if self._dn_ids else op.id or ""
        obj = self.get_many([new_id]).get(new_id)
        return WriteResult(op, id=obj["_id"] if obj and self._dn_ids else new_id, obj=obj)

    def _groups_prop(self) -> PropertyDef | None:
        """The property group membership is written through: ``ldapGroups``, or with
        ``maintainLdapGroupMembership`` a ``memberOf``-backed one."""
        virtual = next((p for p in self._type.properties.values() if p.special == "groups"), None)
        if virtual is not None or not self._settings.maintain_group_membership:
            return virtual
        return self._prop_for(MEMBER_OF)

    def _listed_groups(self, prop: PropertyDef, raw: Mapping[str, Sequence[bytes]]) -> Sequence[bytes] | None:
        """The entry's groups as the entry itself lists them, or None to search them."""
        if prop.special is None:
            return raw.get(MEMBER_OF) or []
        if self._settings.groups_attribute:
            return raw.get(self._settings.groups_attribute.lower()) or []
        return None

    def _uids(self, dn: str) -> list[str]:
        entries = self._conn.search(dn, "(objectClass=*)", ["uid"], scope="base")
        return uid_values(entries[0][1]) if entries else []

    def _rename(self, dn: str, values: Obj) -> str:
        """Apply a change of DN first; the new DN. The entry is renamed when the mapping
        gives it a new ``dn``, or a value of the attribute its RDN is made of (``uid=`` or
        ``cn=``, whatever its type's naming attribute) that the RDN does not hold: a
        change of case alone too, which LDAP's matching rules would take for no change."""
        dn_prop = next((p for p in self._type.properties.values() if p.is_dn), None)
        if dn_prop is not None and values.get(dn_prop.name):
            new_dn = str(values[dn_prop.name])
        else:
            new_dn = self._renamed_by_value(dn, values) or dn
        try:
            old_parts, new_parts = ldap.dn.str2dn(dn), ldap.dn.str2dn(new_dn)
        except ldap.DECODING_ERROR:
            raise ObjectRejected(f"ldap: cannot rename {dn} to {new_dn}: not a DN") from None
        if not old_parts or not new_parts:
            raise ObjectRejected(f"ldap: cannot rename {dn} to {new_dn}: not a DN")
        old_parent, new_parent = ldap.dn.dn2str(old_parts[1:]), ldap.dn.dn2str(new_parts[1:])
        moved = norm_dn(new_parent) != norm_dn(old_parent)
        if not moved and _rdn_key(new_parts[0]) == _rdn_key(old_parts[0]):
            return dn
        self._conn.rename(dn, ldap.dn.dn2str(new_parts[:1]), new_parent if moved else None)
        return new_dn

    def _renamed_by_value(self, dn: str, values: Obj) -> str | None:
        """The DN ``values`` give the entry ``dn`` through the attribute of its RDN, or None
        when they leave it as it is (or it is made of several values: ``cn=a+sn=b``)."""
        rdn = _first_rdn(dn)
        if rdn is None or len(rdn) != 1:
            return None
        attribute, current, _ = rdn[0]
        prop = self._prop_for(attribute)
        if prop is None or prop.special or prop.binary or prop.name not in values \
                or "NOT_UPDATEABLE" in prop.flags:
            return None
        wanted = _as_list(values[prop.name])
        if not wanted or current in wanted:
            return None
        # The same name in another case is that name re-cased; otherwise the first value.
        value = next((w for w in wanted if w.lower() == current.lower()), wanted[0])
        return str(ldap.dn.dn2str([[(attribute, value, ldap.AVA_STRING)], *ldap.dn.str2dn(dn)[1:]]))


class LdapSystem(System):
    """One configured LDAP directory and its object types."""

    def __init__(self, name: str, config: Mapping[str, Any], *, file: str) -> None:
        self.name = name
        self._file = file
        self._config = config
        self._settings, self._types = parse_ldap_config(file, config)
        for key, obj_type in self._types.items():
            for prop in obj_type.properties.values():
                if prop.special is None and not _ATTRIBUTE_NAME.fullmatch(prop.native):
                    raise ConfigError(file, f"objectTypes.{key}.properties.{prop.name}.nativeName",
                                      "is not an LDAP attribute name")
        self._resources: list[LdapResource] = []

    def warnings(self) -> list[ConfigError]:
        return [*ignored_settings(self._file, self._config, self._types), *self._nested_base_contexts(),
                *self._unread_sync_contexts()]

    def _nested_base_contexts(self) -> list[ConfigError]:
        """A ``baseContexts`` entry under another (or the same twice): read once, through the other."""
        return [ConfigWarning(self._file, f"configurationProperties.baseContexts[{i}]",
                              "under another of baseContexts (or the same twice): its entries are read once, "
                              "through the other")
                for i in sorted(nested_contexts(self._settings.base_contexts))]

    def _unread_sync_contexts(self) -> list[ConfigError]:
        """A ``baseContextsToSynchronize`` outside every ``baseContexts``: liveSync applies
        changes of entries there that no recon or read by id finds again."""
        bases = [norm_dn(b) for b in self._settings.read_contexts]
        return [ConfigWarning(self._file, f"configurationProperties.baseContextsToSynchronize[{i}]",
                              "not under any of baseContexts: liveSync applies changes of entries there, which "
                              "recons and reads by id do not find (a recon of a mapping from this system takes "
                              "the objects linked to them for SOURCE_MISSING)")
                for i, dn in enumerate(self._settings.sync_contexts)
                if not any(dn_under(norm_dn(dn), b) for b in bases)]

    def resource(self, object_type: str, *, dry_run: bool = False) -> LdapResource:
        obj_type = self._types.get(object_type)
        if obj_type is None:
            raise ConfigError(self._file, "objectTypes",
                              f"no object type {object_type!r} (known: {', '.join(self._types)})")
        resource = LdapResource(self.name, self._settings, obj_type, dry_run=dry_run)
        account = next((t for t in self._types.values() if t.native_type == "__ACCOUNT__"), None)
        if obj_type.native_type == "__GROUP__" and account is not None:
            resource.name_members(account)
        self._resources.append(resource)
        return resource

    def test(self) -> Mapping[str, Any]:
        report = system_test_report(self.name, self._config, "LDAP Connector", ["__ALL__", *self._types])
        connection = LdapConnection(self.name, self._settings)
        try:
            # Each base must exist: a missing one is a configuration error, not an outage.
            for base in dict.fromkeys((*self._settings.base_contexts, *self._settings.sync_contexts)):
                next(connection.search_pages(base, "(objectClass=*)", [], 0, scope="base", base_required=True),
                     None)
            root = connection.search("", "(objectClass=*)", ROOT_DSE_ATTRIBUTES, scope="base")
            if root:
                report["server"] = describe_server(root[0][1])
                if hint := preset_mismatch(root[0][1], self._settings.uid_attribute):
                    report["warning"] = f"uidAttribute: {hint}"
        except IdsyncError as error:
            report.failed(error)
        finally:
            connection.close()
        return report

    def close(self) -> None:
        for resource in self._resources:
            resource.close()
        self._resources.clear()


def _first_rdn(dn: str) -> list[tuple[str, str, int]] | None:
    """The DN's first RDN: its (attribute, value, flags), unescaped; None for no DN."""
    try:
        parts = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR:
        return None
    return parts[0] if parts else None


def _rdn_key(rdn: Sequence[tuple[str, str, int]]) -> list[tuple[str, str]]:
    """An RDN's comparison form: attribute types in any case, values exactly as written
    (a value in another case is a rename the entry is to go through)."""
    return sorted((attribute.lower(), value) for attribute, value, _ in rdn)


def _renamed_entry(raw: Mapping[str, Sequence[bytes]], old_dn: str, new_dn: str) -> dict[str, Sequence[bytes]]:
    """``raw``, the entry read before it was renamed from ``old_dn`` to ``new_dn``, as the
    rename left it: the old RDN's values gone, the new RDN's there (``delold``)."""
    entry = dict(raw)
    old, new = _first_rdn(old_dn) or [], _first_rdn(new_dn) or []
    for attribute, value, _ in old:
        key = attribute.lower()
        entry[key] = [v for v in entry.get(key) or () if _decoded(v).lower() != value.lower()]
    for attribute, value, _ in new:
        key = attribute.lower()
        entry[key] = [v for v in entry.get(key) or () if _decoded(v).lower() != value.lower()] + [value.encode()]
    return entry


def _texts(values: Sequence[bytes | str]) -> list[str]:
    return [_decoded(v) for v in values]


def _decoded(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _as_list(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value]
    return [str(v) for v in items if v not in (None, "")]


def _listing(system: str, settings: LdapSettings, object_type: ObjectTypeDef,
             spec: QuerySpec) -> Iterator[list[Obj]]:
    """The pages of a listing, read on a connection of its own (in the child of ``listing.py``)."""
    resource = LdapResource(system, settings, object_type)
    try:
        yield from resource._pages(spec, wanted_properties(object_type, spec.fields))
    finally:
        resource.close()


def open_ldap_system(name: str, config: Mapping[str, Any], *, file: str) -> LdapSystem:
    """The connector registry's entry point for ``org.identityconnectors.ldap.LdapConnector``."""
    return LdapSystem(name, config, file=file)
