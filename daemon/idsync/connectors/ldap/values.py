"""Conversions between LDAP attribute values (bytes on the wire) and object values.

Reading: text values are UTF-8; anything declared binary, or not valid UTF-8, becomes
a base64 string, so one odd value never stops a page. Ids come from the configured
uid attribute: ``objectGUID`` (Active Directory, 16 bytes) in AD's own canonical
mixed-endian form, anything else (``entryUUID``, ``nsUniqueId``...) as text.
Writing goes the other way, and a value that cannot be written rejects the object.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from idsync.connectors.ldap.config import ObjectTypeDef, PropertyDef
from idsync.errors import ObjectRejected, PeerError
from idsync.query.ldap import escape_ldap_bytes, escape_ldap_value

__all__ = [
    "RawEntry",
    "decode_entries",
    "decode_entry",
    "decode_id",
    "encode_values",
    "guid_from_bytes",
    "guid_to_bytes",
    "id_filter",
    "id_key",
    "merge_ranges",
    "wanted_properties",
]

# Attribute names in lower case -> the values as the server sent them.
RawEntry = Mapping[str, Sequence[bytes]]

_GUID_ATTRIBUTES = {"objectguid"}
# Ids the server compares without case (UUIDs in text, AD's objectGUID as its 16 bytes).
_CASELESS_IDS = {"objectguid", "entryuuid", "nsuniqueid"}


def guid_from_bytes(value: bytes) -> str:
    """AD's string form of a 16-byte objectGUID: the first three groups are
    little-endian, which is exactly how ``uuid`` reads ``bytes_le``."""
    return str(uuid.UUID(bytes_le=value))


def guid_to_bytes(text: str) -> bytes:
    """The 16 bytes of an objectGUID written in AD's string form (for filters)."""
    return uuid.UUID(text).bytes_le


def _text(value: bytes, binary: bool) -> str:
    if not binary:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return base64.b64encode(value).decode("ascii")


def decode_id(uid_key: str, values: Sequence[bytes] | None) -> str | None:
    """The object id from the raw values of the uid attribute (``uid_key`` lower case)."""
    if not values:
        return None
    if uid_key in _GUID_ATTRIBUTES and len(values[0]) == 16:
        return guid_from_bytes(values[0])
    return _text(values[0], binary=False)


def id_key(uid_key: str, text: str) -> str:
    """What two ids of ``uid_key`` (lower case) are compared by: their text, or for the
    UUID-like ids (objectGUID, entryUUID, nsUniqueId) the canonical lower-case form, as
    the server finds ``E1F3BF7E-...`` and ``e1f3bf7e-...`` alike."""
    if uid_key in _GUID_ATTRIBUTES:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return text.lower()
    return text.lower() if uid_key in _CASELESS_IDS else text


def decode_entry(
    dn: str, raw: RawEntry, wanted: Sequence[PropertyDef], uid_key: str
) -> dict[str, Any]:
    """One object: ``_id``, then each wanted property; arrays are always lists
    (empty when the attribute is absent), single values are absent when missing.
    A single-valued property whose attribute holds several values is read as the
    list of them, never cut to one: what receives it decides (a single-valued
    target property refuses it, as PingIDM's connector refuses to read it)."""
    return decode_entries([(dn, raw)], wanted, uid_key)[0]


def decode_entries(
    entries: Sequence[tuple[str, RawEntry]], wanted: Sequence[PropertyDef], uid_key: str
) -> list[dict[str, Any]]:
    """``decode_entry`` for a page of entries (what to read of each is worked out once)."""
    plan = [(p.name, p.key, p.is_dn, p.is_array, p.binary) for p in wanted]
    objects: list[dict[str, Any]] = []
    for dn, raw in entries:
        obj: dict[str, Any] = {"_id": decode_id(uid_key, raw.get(uid_key))}
        for name, key, is_dn, is_array, binary in plan:
            if is_dn:
                obj[name] = dn
                continue
            values = raw.get(key)
            if not values:
                if is_array:
                    obj[name] = []
            elif is_array or len(values) > 1:
                obj[name] = [_text(v, binary) for v in values]
            else:
                obj[name] = _text(values[0], binary)
        objects.append(obj)
    return objects


def _one(prop: PropertyDef, value: Any) -> str | bytes:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        if not prop.binary:
            return value
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ObjectRejected(f"ldap: {prop.name}: binary value is not base64") from None
    if isinstance(value, bytes):
        return value
    raise ObjectRejected(f"ldap: {prop.name}: cannot store a {type(value).__name__} value")


def encode_values(prop: PropertyDef, value: Any) -> list[str | bytes]:
    """The attribute values to write for a property value; ``[]`` removes it."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [_one(prop, item) for item in items if item is not None and item != ""]


def id_filter(uid_attribute: str, ids: Sequence[str]) -> str:
    """``(|(uid=a)(uid=b)...)`` for ids as ``decode_id`` makes them."""
    terms = []
    for one in ids:
        if uid_attribute.lower() in _GUID_ATTRIBUTES:
            try:
                escaped = escape_ldap_bytes(guid_to_bytes(one))
            except ValueError:
                continue  # not a GUID: cannot match any entry
        else:
            escaped = escape_ldap_value(one)
        terms.append(f"({uid_attribute}={escaped})")
    if not terms:
        return ""
    return terms[0] if len(terms) == 1 else f"(|{''.join(terms)})"


def wanted_properties(obj_type: ObjectTypeDef, fields: Sequence[str] | None) -> list[PropertyDef]:
    """The properties to read for ``fields`` (None: the type's default set);
    unknown field names are ignored, as a directory has no such attribute."""
    if fields is None:
        return obj_type.readable()
    tops = {f.split("/")[0] for f in fields}
    # OpenICF's NOT_READABLE: never read, even when asked for by name.
    return [p for name, p in obj_type.properties.items() if name in tops and "NOT_READABLE" not in p.flags]


def merge_ranges(dn: str, raw: RawEntry, fetch: Callable[[str, str], RawEntry]) -> RawEntry:
    """``raw`` with each ranged attribute (Active Directory's ``member;range=0-1499``,
    sent when an attribute holds more values than the server's MaxValRange) made
    whole under its plain name: ``fetch(dn, "member;range=1500-*")`` reads the next
    range until the server marks the last one with ``*``. A range that does not
    come back, or does not continue where the previous one stopped, raises
    ``PeerError``: half a group's members must never pass for all of them."""
    merged: dict[str, Sequence[bytes]] = {}
    for key, values in raw.items():
        name, ranged, bounds = key.partition(";range=")
        if not ranged:
            merged.setdefault(key, values)
            continue
        collected = list(values)
        high = bounds.partition("-")[2]
        while high != "*":
            if not high.isdigit():
                raise PeerError(f"ldap: {dn}: unreadable value range {key!r}")
            wanted = f"{name};range={int(high) + 1}-*"
            answer = next(((k, v) for k, v in fetch(dn, wanted).items()
                           if k.partition(";range=")[0] == name and ";range=" in k), None)
            low, _, next_high = answer[0].partition(";range=")[2].partition("-") if answer else ("", "", "")
            if answer is None or low != str(int(high) + 1):
                raise PeerError(f"ldap: {dn}: the values of {name} from {int(high) + 1} on could not be read "
                                f"({wanted} was not answered), so the entry would be incomplete")
            collected.extend(answer[1])
            high = next_high
        merged[name] = collected
    return merged
