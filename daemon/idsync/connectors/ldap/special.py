"""OpenICF's special attribute names, as the LDAP connector maps them onto an entry.

A provisioner's property may name, instead of an LDAP attribute, one of the
names OpenICF gives to what every connector has:

- ``__NAME__``: the entry's DN (read as the DN; written as a create's DN or a rename);
- ``__UID__``: the value of ``uidAttribute``, the same as ``_id`` (read only);
- ``__ENABLE__``: whether the account may log in. Active Directory keeps it in
  ``userAccountControl`` bit 2 (ACCOUNTDISABLE); other directories in a lock
  attribute, ``accountLockAttribute`` (OpenLDAP's ppolicy ``pwdAccountLockedTime``
  by default, ``nsAccountLock`` for 389 DS, ``ds-pwp-account-disabled`` for PingDS)
  holding ``accountLockValue`` when disabled. False sets the lock value; true
  removes the attribute (which also lifts a lockout after failed binds);
- ``__PASSWORD__``: ``passwordAttribute``, write-only: never read, never listed.
  ``unicodePwd`` (AD) is written as AD wants it, the quoted password in UTF-16LE,
  and only over LDAPS or StartTLS;
- ``ldapGroups`` / ``__GROUPS__``: the groups the entry belongs to (``groups``);
- ``_memberId`` (on a group, read-only): the ``uidAttribute`` values of the entries
  its ``groupMemberAttribute`` names, resolved by the connector (``member_ids``).

This module turns the raw attributes of an entry into those values and back; it
holds no connection.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from idsync.connectors.ldap.config import LdapSettings, PropertyDef
from idsync.connectors.ldap.members import DELETE, REPLACE, Changes
from idsync.connectors.ldap.values import decode_id
from idsync.errors import ObjectRejected

__all__ = ["Changes", "encode_special", "hash_password", "read_attributes", "read_special"]

_ACCOUNT_DISABLE = 0x2
_NORMAL_ACCOUNT = 0x200


def read_attributes(prop: PropertyDef, settings: LdapSettings) -> list[str]:
    """The LDAP attributes to ask for to read ``prop`` (a special name's or its own)."""
    kind = prop.special
    if kind is None:
        return [prop.native]
    if kind == "enable":
        return [settings.lock_attribute]
    if kind == "uid":
        return [] if settings.uid_attribute.lower() == "dn" else [settings.uid_attribute]
    if kind == "groups" and settings.groups_attribute:
        return [settings.groups_attribute]
    if kind == "member_ids":
        return [settings.group_member_attribute]
    return []  # the DN comes with every entry; a password is never read; groups are searched


def read_special(obj: dict[str, Any], dn: str, raw: Mapping[str, Sequence[bytes]],
                 wanted: Sequence[PropertyDef], settings: LdapSettings) -> None:
    """Fill ``obj``'s special properties other than the DN and the groups."""
    for prop in wanted:
        if prop.special == "enable":
            obj[prop.name] = _enabled(raw.get(settings.lock_attribute.lower()) or (), settings)
        elif prop.special == "uid":
            uid_key = settings.uid_attribute.lower()
            obj[prop.name] = dn if uid_key == "dn" else decode_id(uid_key, raw.get(uid_key))
        elif prop.special == "password":
            obj.pop(prop.name, None)
        elif prop.special == "groups" and settings.groups_attribute:
            values = raw.get(settings.groups_attribute.lower()) or ()
            obj[prop.name] = [v.decode("utf-8", "replace") for v in values]


def _enabled(values: Sequence[bytes], settings: LdapSettings) -> bool:
    if settings.active_directory_lock:
        return not _flags(values) & _ACCOUNT_DISABLE
    lock = settings.lock_value.lower()
    return not any(v.decode("utf-8", "replace").lower() == lock for v in values)


def _flags(values: Sequence[bytes]) -> int:
    try:
        return int(values[0]) if values else _NORMAL_ACCOUNT
    except ValueError:
        return _NORMAL_ACCOUNT


def _boolean(prop: PropertyDef, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ObjectRejected(f"ldap: {prop.name} (__ENABLE__) must be true or false, not {type(value).__name__}")


def encode_special(prop: PropertyDef, value: Any, raw: Mapping[str, Sequence[bytes]] | None,
                   settings: LdapSettings) -> Changes:
    """The modify operations writing ``value`` to a special property; ``raw`` is the
    entry's current attributes, None for an entry being created (then every op is an add)."""
    if prop.special == "enable" and value is not None:
        return _enable_changes(_boolean(prop, value), raw, settings)
    if prop.special == "password" and value not in (None, ""):
        return {settings.password_attribute: [(REPLACE, [_password(prop, value, settings)])]}
    return {}  # the DN is a rename, __UID__ cannot be written, groups are written on the groups


def _enable_changes(enabled: bool, raw: Mapping[str, Sequence[bytes]] | None, settings: LdapSettings) -> Changes:
    attribute = settings.lock_attribute
    current = (raw or {}).get(attribute.lower()) or ()
    if settings.active_directory_lock:
        flags = _flags(current)
        wanted = flags & ~_ACCOUNT_DISABLE if enabled else flags | _ACCOUNT_DISABLE
        if raw is not None and current and wanted == flags:
            return {}
        return {attribute: [(REPLACE, [str(wanted)])]}
    if enabled:
        return {attribute: [(DELETE, [])]} if current else {}
    if _enabled(current, settings) or len(current) > 1:
        return {attribute: [(REPLACE, [settings.lock_value])]}
    return {}


def _password(prop: PropertyDef, value: Any, settings: LdapSettings) -> str | bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ObjectRejected(f"ldap: {prop.name} (__PASSWORD__) must be a string")
    if settings.password_attribute.lower() != "unicodepwd":
        if settings.password_hash is None or _HASHED.match(value):
            return value  # a hash (the store's own, say) is written as it is: hashed again it would verify nothing
        return hash_password(value, settings.password_hash)
    if not (settings.ssl or settings.start_tls):
        # AD refuses it anyway (Samba does not): a password is never sent in clear.
        raise ObjectRejected(f"ldap: {prop.name} (__PASSWORD__): Active Directory's unicodePwd is written only "
                             "over LDAPS or StartTLS; set ssl or startTLS in configurationProperties")
    if value.startswith("{") and "}" in value:
        # AD hashes what it is given: a hash written as a password would become the password.
        raise ObjectRejected(f"ldap: {prop.name} (__PASSWORD__): Active Directory's unicodePwd needs the "
                             "clear password, and the value is a hash")
    return f'"{value}"'.encode("utf-16-le")


# A value already hashed, as userPassword holds them (RFC 2307: "{SCHEME}...").
_HASHED = re.compile(r"\{[A-Za-z0-9.-]+\}")
_HASHES = {"SHA": hashlib.sha1, "SSHA": hashlib.sha1, "MD5": hashlib.md5, "SMD5": hashlib.md5}


def hash_password(password: str, scheme: str) -> str:
    """``password`` hashed as OpenICF's ``passwordHashAlgorithm`` asks (``SSHA``, ``SHA``,
    ``SMD5``, ``MD5``), in the RFC 2307 form directories verify at bind: the salted schemes
    append 8 random bytes to the password and to the digest."""
    salt = os.urandom(8) if scheme in ("SSHA", "SMD5") else b""
    digest = _HASHES[scheme](password.encode("utf-8") + salt).digest()  # the schemes directories verify
    return f"{{{scheme}}}{base64.b64encode(digest + salt).decode('ascii')}"
