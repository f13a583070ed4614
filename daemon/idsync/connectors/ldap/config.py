"""The LDAP connector's configuration: a ``provisioner.openicf-<name>.json`` read
into frozen dataclasses, with every problem reported as a ``ConfigError`` naming the
file and the key. Secrets arrive already substituted; they are never put in messages."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ldap.filter import escape_filter_chars

from idsync.connectors.ldap.members import norm_dn
from idsync.errors import ConfigError
from idsync.keys import misspelling_of
from idsync.query.ldap import filter_problem

__all__ = ["PASSWORD_HASHES", "LdapSettings", "ObjectTypeDef", "PropertyDef", "parse_ldap_config"]

NAME_ATTRIBUTE = "__NAME__"
# OpenICF's special attribute names (lower case) -> what they stand for in an LDAP entry:
# the DN, the uidAttribute's value, the account's lock state, the password attribute
# (write-only), the groups whose member attribute holds the entry's DN, and (on a group)
# the uidAttribute values of its members (read-only).
SPECIAL_NAMES = {"__name__": "name", "__uid__": "uid", "__enable__": "enable",
                 "__password__": "password", "ldapgroups": "groups", "__groups__": "groups",
                 "_memberid": "member_ids"}
# Past a day a timeout means "never" and only overflows the clock arithmetic below it.
_MAX_TIMEOUT = 86_400.0
# RFC 2696's page size is an LDAP INTEGER (0 .. 2**31-1).
_MAX_BLOCK_SIZE = 2**31 - 1
_BINARY_NATIVE_TYPES = {"JAVA_TYPE_BYTE_ARRAY", "byte[]", "binary"}
# Attributes whose syntax is binary in the standard schemas (RFC 4523 certificates, cosine's
# and inetOrgPerson's photos and PKCS#12, Active Directory's GUIDs, SIDs and photos): binary
# unless a property's nativeType says otherwise, as OpenICF takes them from the server's
# schema. Declared a plain string, such a value read as base64 was written back as its text.
_BINARY_ATTRIBUTES = frozenset({
    "jpegphoto", "photo", "audio", "usercertificate", "cacertificate", "crosscertificatepair",
    "certificaterevocationlist", "authorityrevocationlist", "deltarevocationlist", "usersmimecertificate",
    "userpkcs12", "supportedalgorithms", "thumbnailphoto", "objectguid", "objectsid", "sidhistory",
    "tokengroups", "msexchmailboxguid", "ms-ds-consistencyguid", "logonhours", "mscertificatetemplate",
})
# OpenICF virtual attributes idsync does not implement (besides the ``_``-prefixed names).
_UNSUPPORTED = {"posixgroups"}


@dataclass(frozen=True)
class PropertyDef:
    """One property of an object type and the LDAP attribute behind it."""

    name: str
    native: str  # attribute name as configured, or "__NAME__" for the DN
    is_array: bool
    binary: bool
    flags: frozenset[str]

    @functools.cached_property
    def is_dn(self) -> bool:
        return self.native == NAME_ATTRIBUTE

    @functools.cached_property
    def special(self) -> str | None:
        """``name``, ``uid``, ``enable``, ``password``, ``groups`` or ``member_ids`` for OpenICF's
        special names (``SPECIAL_NAMES``), None for a plain attribute."""
        return SPECIAL_NAMES.get(self.native.lower())

    @functools.cached_property
    def key(self) -> str:
        """Attribute name as compared: LDAP attribute names ignore case."""
        return self.native.lower()


@dataclass(frozen=True)
class ObjectTypeDef:
    """One object type (``account``, ``group``...) and how to find and name its entries."""

    name: str
    native_type: str
    object_classes: tuple[str, ...]
    search_filter: str
    naming_attribute: str
    properties: Mapping[str, PropertyDef]
    # Properties under an OpenICF special name idsync does not implement
    # (``__CURRENT_PASSWORD__``, ``_memberId``...): name -> nativeName. They are
    # left out of ``properties`` (never read or written) and ``validate`` warns.
    unsupported: Mapping[str, str] = field(default_factory=dict)
    # What else an entry's change must match for liveSync to apply it (OpenICF's
    # ``accountSynchronizationFilter`` or ``groupSynchronizationFilter``,
    # ``objectClassesToSynchronize`` for accounts, ``modifiersNamesToFilterOut``): the
    # parts of an AND, none when every change of the type's entries is applied.
    sync_filters: tuple[str, ...] = ()

    def readable(self) -> list[PropertyDef]:
        """The properties returned when no fields are asked for."""
        hidden = {"NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"}
        return [p for p in self.properties.values() if not p.flags & hidden and p.special != "password"]

    def by_native(self, attribute: str) -> PropertyDef | None:
        key = attribute.lower()
        return next((p for p in self.properties.values() if p.key == key), None)


@dataclass(frozen=True)
class LdapSettings:
    """``configurationProperties`` of one LDAP system."""

    host: str
    port: int
    ssl: bool
    start_tls: bool
    principal: str | None
    credentials: str | None
    base_contexts: tuple[str, ...]
    sync_contexts: tuple[str, ...]
    uid_attribute: str
    group_member_attribute: str
    block_size: int
    connect_timeout: float
    read_timeout: float
    ca_file: str | None
    verify_certificate: bool
    maintain_group_membership: bool = False
    maintain_posix_group_membership: bool = False
    group_search_filter: str = ""
    # The attribute ``__PASSWORD__`` writes (OpenICF's ``passwordAttribute``).
    password_attribute: str = "userPassword"
    # idsync's own keys. ``ldapGroupsAttribute``: an attribute the directory keeps on
    # each entry listing its groups (memberOf, isMemberOf), read for ``ldapGroups``
    # instead of searching the groups. ``accountLockAttribute``/``accountLockValue``:
    # what ``__ENABLE__`` false sets (``userAccountControl`` means AD's bit 2).
    groups_attribute: str | None = None
    lock_attribute: str = "pwdAccountLockedTime"
    lock_value: str = "000001010000Z"
    # Active Directory (objectGUID ids): its naming rules are checked before a write.
    active_directory: bool = False
    # OpenICF's ``passwordHashAlgorithm`` where idsync hashes with it (``SSHA``, ``SHA``,
    # ``SMD5``, ``MD5``): a clear password is hashed before it is written.
    password_hash: str | None = None
    # OpenICF's ``failover``: the servers to connect to, in order, when the one before
    # cannot be reached (scheme, host, port: ``ldaps`` is TLS from the start).
    failover: tuple[tuple[str, str, int], ...] = ()

    @functools.cached_property
    def read_contexts(self) -> tuple[str, ...]:
        """``baseContexts`` without those under another: each entry is read once."""
        nested = nested_contexts(self.base_contexts)
        return tuple(b for i, b in enumerate(self.base_contexts) if i not in nested)

    @functools.cached_property
    def unwatched_contexts(self) -> tuple[str, ...]:
        """The ``read_contexts`` under no ``baseContextsToSynchronize``: recons read entries
        there whose changes liveSync does not see."""
        synced = [norm_dn(s) for s in self.sync_contexts]
        return tuple(b for b in self.read_contexts if not any(dn_under(norm_dn(b), s) for s in synced))

    @property
    def active_directory_lock(self) -> bool:
        return self.lock_attribute.lower() == "useraccountcontrol"

    @property
    def scheme(self) -> str:
        return "ldaps" if self.ssl else "ldap"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def servers(self) -> tuple[LdapSettings, ...]:
        """These settings for each server, in the order they are tried: ``host`` and
        ``port``, then each of ``failover`` (TLS from the start for ``ldaps``, StartTLS
        for ``ldap`` where ``startTLS`` asks for it)."""
        return (self, *(dataclasses.replace(self, host=host, port=port, ssl=scheme == "ldaps",
                                            start_tls=self.start_tls and scheme == "ldap", failover=())
                        for scheme, host, port in self.failover))


class _Reader:
    """Typed access to one JSON object, raising ConfigError with the dotted key."""

    def __init__(self, file: str, prefix: str, data: Mapping[str, Any]) -> None:
        self.file, self.prefix, self.data = file, prefix, data

    def _error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, f"{self.prefix}.{key}" if self.prefix else key, problem)

    def missing(self, key: str) -> ConfigError:
        """``key`` is required and not set: the error names a misspelling of it that is
        set instead (``baseContext``), or else says it is required."""
        meant = next((k for k in sorted(self.data) if misspelling_of(k, (key,)) is not None), None)
        if meant is not None:
            return self._error(meant, f"unknown setting, did you mean {key}? ({key} is required)")
        return self._error(key, "is required")

    def str_(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key, default)
        if value in (None, "") and required:
            raise self.missing(key)
        if value is not None and not isinstance(value, str):
            raise self._error(key, "must be a string")
        return value or default

    def bool_(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if value is None:
            return default
        # "&{LDAP_SSL|false}" substitutions arrive as strings.
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise self._error(key, "must be true or false")
        return value

    def number(self, key: str, default: float, *, minimum: float = 1, maximum: float) -> float:
        value = self.data.get(key, default)
        if value is None:
            return default
        problem = f"must be a number from {minimum:g} to {maximum:g}"
        if isinstance(value, str):  # "&{LDAP_PORT|389}" substitutions arrive as strings
            try:
                value = float(value.strip())
            except ValueError:
                raise self._error(key, problem) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
            raise self._error(key, problem)
        return float(value)

    def dns(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        """A list of DNs, each checked for DN syntax (RFC 4514)."""
        values = self.strings(key, default)
        for i, dn in enumerate(values):
            problem = dn_problem(dn)
            if problem:
                raise self._error(f"{key}[{i}]", f"{dn!r} is not a DN: {problem}")
        return values

    def strings(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None or value == []:
            return tuple(default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._error(key, "must be a list of non-empty strings")
        return tuple(value)


def _settings(file: str, props: Mapping[str, Any]) -> LdapSettings:
    read = _Reader(file, "configurationProperties", props)
    ssl = read.bool_("ssl", False)
    start_tls = read.bool_("startTLS", False)
    if ssl and start_tls:
        raise ConfigError(file, "configurationProperties.startTLS", "cannot be used with ssl: true")
    base_contexts = read.dns("baseContexts")
    if not base_contexts:
        raise read.missing("baseContexts")
    lock_attribute = str(_attribute_name(file, read, "accountLockAttribute", _lock_attribute_default(props)))
    credentials = props.get("credentials")
    if credentials is not None and not isinstance(credentials, str):
        # The value itself is left out on purpose: it is a secret.
        raise ConfigError(file, "configurationProperties.credentials", "must be a string")
    return LdapSettings(
        host=str(read.str_("host", required=True)),
        port=int(read.number("port", 636 if ssl else 389, maximum=65535)),
        ssl=ssl,
        start_tls=start_tls,
        principal=read.str_("principal"),
        credentials=credentials or None,
        base_contexts=base_contexts,
        sync_contexts=read.dns("baseContextsToSynchronize", base_contexts),
        uid_attribute=str(read.str_("uidAttribute", "entryUUID")),
        group_member_attribute=str(read.str_("groupMemberAttribute", "uniqueMember")),
        block_size=int(read.number("blockSize", 1000, maximum=_MAX_BLOCK_SIZE)),
        connect_timeout=read.number("connectTimeout", 10, minimum=0.1, maximum=_MAX_TIMEOUT),
        read_timeout=read.number("readTimeout", 60, minimum=0.1, maximum=_MAX_TIMEOUT),
        ca_file=read.str_("caFile"),
        verify_certificate=read.bool_("verifyCertificate", True),
        maintain_group_membership=read.bool_("maintainLdapGroupMembership", False),
        maintain_posix_group_membership=read.bool_("maintainPosixGroupMembership", False),
        group_search_filter=_group_filter(file, read),
        password_attribute=str(_attribute_name(file, read, "passwordAttribute", _password_default(props))),
        groups_attribute=_attribute_name(file, read, "ldapGroupsAttribute", None) or None,
        lock_attribute=lock_attribute,
        lock_value=str(read.str_("accountLockValue", _lock_default(lock_attribute))),
        active_directory=reads_active_directory(props),
        failover=_failover(file, read),
        password_hash=_password_hash(read),
    )


# OpenICF's passwordHashAlgorithm values idsync hashes with (``special.hash_password``).
PASSWORD_HASHES = ("SSHA", "SHA", "SMD5", "MD5")


def _password_hash(read: _Reader) -> str | None:
    value = (read.str_("passwordHashAlgorithm") or "").strip().upper()
    return value if value in PASSWORD_HASHES else None  # another (WIN-AD, unknown): validate says


_LDAP_URL = re.compile(r"(?i)(ldaps?)://(\[[0-9A-Fa-f:.]+\]|[^/:?#\s\[\]]+)(?::([0-9]{1,5}))?/?")


def _failover(file: str, read: _Reader) -> tuple[tuple[str, str, int], ...]:
    """OpenICF's ``failover``: LDAP URLs (RFC 4516) naming a server each, ``ldap://host:port/``."""
    servers = []
    for i, url in enumerate(read.strings("failover")):
        found = _LDAP_URL.fullmatch(url.strip())
        port = int(found.group(3)) if found and found.group(3) else None
        if found is None or (port is not None and not 0 < port <= 65535):
            raise ConfigError(file, f"configurationProperties.failover[{i}]",
                              f"{url!r} is not an LDAP server's URL such as ldap://ldap2.example.com:389/ or "
                              "ldaps://ldap2.example.com:636/ (nothing after the host and port)")
        scheme = found.group(1).lower()
        if scheme == "ldap" and read.bool_("ssl", False):
            raise ConfigError(file, f"configurationProperties.failover[{i}]",
                              f"{url!r} would bind without TLS where ssl is true, sending the password in clear; "
                              "write ldaps://")
        servers.append((scheme, found.group(2), port or (636 if scheme == "ldaps" else 389)))
    return tuple(servers)


_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*|[0-9]+(\.[0-9]+)+")


def _attribute_name(file: str, read: _Reader, key: str, default: str | None) -> str | None:
    value = read.str_(key, default)
    if value and not _ATTRIBUTE.fullmatch(value):
        raise ConfigError(file, f"configurationProperties.{key}", f"{value!r} is not an LDAP attribute name")
    return value


def reads_active_directory(props: Mapping[str, Any]) -> bool:
    """Whether the provisioner reads Active Directory (or AD LDS), as its objectGUID ids tell."""
    return str(props.get("uidAttribute") or "").lower() == "objectguid"


def _lock_attribute_default(props: Mapping[str, Any]) -> str:
    """Where ``__ENABLE__`` lives, as the ids tell the directory: AD's userAccountControl
    (objectGUID), 389 DS's nsAccountLock (nsUniqueId), else OpenLDAP ppolicy's lock."""
    if reads_active_directory(props):
        return "userAccountControl"
    if str(props.get("uidAttribute") or "").lower() == "nsuniqueid":
        return "nsAccountLock"
    return "pwdAccountLockedTime"


def _password_default(props: Mapping[str, Any]) -> str:
    return "unicodePwd" if reads_active_directory(props) else "userPassword"


def _lock_default(attribute: str) -> str:
    """``__ENABLE__`` false as each directory spells it: ppolicy's permanent lock
    (OpenLDAP), TRUE for nsAccountLock (389 DS) and ds-pwp-account-disabled (PingDS)."""
    return "000001010000Z" if attribute.lower() == "pwdaccountlockedtime" else "TRUE"


def _group_filter(file: str, read: _Reader) -> str:
    text = (read.str_("groupSearchFilter") or "").strip()
    if text and (problem := filter_problem(text)):
        raise ConfigError(file, "configurationProperties.groupSearchFilter", problem)
    return text


def _property(file: str, prefix: str, name: str, raw: Any) -> PropertyDef:
    if not isinstance(raw, Mapping):
        raise ConfigError(file, prefix, "must be an object")
    read = _Reader(file, prefix, raw)
    flags = read.strings("flags")
    native_type = read.str_("nativeType") or ""
    native = str(read.str_("nativeName", name))
    return PropertyDef(
        name=name,
        native=native,
        is_array=read.str_("type") == "array",
        binary=native_type in _BINARY_NATIVE_TYPES or read.str_("encoding") == "base64" or (
            not native_type and native.split(";")[0].lower() in _BINARY_ATTRIBUTES),
        flags=frozenset(flags),
    )


def _object_type(file: str, name: str, raw: Any, props: Mapping[str, Any]) -> ObjectTypeDef:
    prefix = f"objectTypes.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(file, prefix, "must be an object")
    native_type = str(_Reader(file, prefix, raw).str_("nativeType", name))
    read = _Reader(file, "configurationProperties", props)
    if native_type == "__ACCOUNT__":
        classes = read.strings("accountObjectClasses",
                               ("top", "person", "organizationalPerson", "inetOrgPerson"))
        search_filter = read.str_("accountSearchFilter") or ""
        naming = read.strings("accountUserNameAttributes", ("uid",))[0]
    elif native_type == "__GROUP__":
        classes = read.strings("groupObjectClasses", ("top", "groupOfUniqueNames"))
        search_filter = read.str_("groupSearchFilter") or ""
        naming = read.strings("groupNameAttributes", ("cn",))[0]
    else:
        # Any other native type is an object class, named by cn as the LDAP
        # connector does for generic object classes.
        classes, search_filter, naming = ("top", native_type), "", "cn"
    properties = raw.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise ConfigError(file, f"{prefix}.properties", "must be an object")
    defs = {key: _property(file, f"{prefix}.properties.{key}", key, value)
            for key, value in properties.items()}
    unsupported = {key: p.native for key, p in defs.items()
                   if p.special is None and (p.native.startswith("_") or p.native.lower() in _UNSUPPORTED)}
    defs = {key: p for key, p in defs.items() if key not in unsupported}
    search_key = "accountSearchFilter" if native_type == "__ACCOUNT__" else "groupSearchFilter"
    if search_filter.strip() and (problem := filter_problem(search_filter)):
        raise ConfigError(file, f"configurationProperties.{search_key}", problem)
    return ObjectTypeDef(name=name, native_type=native_type, object_classes=classes,
                         search_filter=search_filter.strip(), naming_attribute=naming,
                         properties=defs, unsupported=unsupported,
                         sync_filters=_sync_filters(file, read, native_type, props))


def _sync_filters(file: str, read: _Reader, native_type: str, props: Mapping[str, Any]) -> tuple[str, ...]:
    """The conditions OpenICF puts on the changes liveSync applies, as LDAP filters."""
    parts: list[str] = []
    key = {"__ACCOUNT__": "accountSynchronizationFilter", "__GROUP__": "groupSynchronizationFilter"}.get(native_type)
    text = ((read.str_(key) or "") if key else "").strip()
    if key and text:
        if problem := filter_problem(text):
            raise ConfigError(file, f"configurationProperties.{key}", problem)
        parts.append(text if text.startswith("(") else f"({text})")
    if reads_active_directory(props):
        # OpenICF's AD reading (DirSync) takes the accounts by accountObjectClasses, and AD
        # keeps no modifiersName: ignored.py warns about either key there.
        return tuple(parts)
    classes = read.strings("objectClassesToSynchronize")
    if native_type == "__ACCOUNT__" and classes:
        parts.append("(|" + "".join(f"(objectClass={escape_filter_chars(c)})" for c in classes) + ")")
    parts.extend(f"(!(modifiersName={escape_filter_chars(dn)}))" for dn in read.dns("modifiersNamesToFilterOut"))
    return tuple(parts)


def parse_ldap_config(
    file: str, config: Mapping[str, Any]
) -> tuple[LdapSettings, dict[str, ObjectTypeDef]]:
    """Validate a provisioner configuration; ConfigError names the first bad key."""
    props = config.get("configurationProperties")
    if not isinstance(props, Mapping):
        raise ConfigError(file, "configurationProperties", "is required and must be an object")
    settings = _settings(file, props)
    types = config.get("objectTypes")
    if not isinstance(types, Mapping) or not types:
        raise ConfigError(file, "objectTypes", "is required and must name at least one type")
    return settings, {name: _object_type(file, name, raw, props) for name, raw in types.items()}


def dn_problem(dn: str) -> str | None:
    """Why ``dn`` is not a DN, or None. Read as libldap reads DNs: RFC 4514, and spaces
    around separators (``ou=People, dc=example, dc=com``), which directories and
    OpenICF's JNDI accept too."""
    import ldap.dn

    try:
        parts = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR:
        return "not in DN syntax (attribute=value pairs separated by commas; a comma, plus sign, " \
            "quote, backslash, angle bracket or semicolon in a value escaped with a backslash)"
    return None if parts else "empty"


def dn_under(dn: str, base: str) -> bool:
    """Whether ``dn`` is ``base`` or below it (both in ``norm_dn``'s form)."""
    return dn == base or dn.endswith("," + base)


def nested_contexts(dns: Sequence[str]) -> set[int]:
    """The positions in ``dns`` of those under another one, or the same as one before."""
    keys = [norm_dn(b) for b in dns]
    return {i for i, key in enumerate(keys)
            if any(j != i and dn_under(key, other) and (key != other or j < i) for j, other in enumerate(keys))}
