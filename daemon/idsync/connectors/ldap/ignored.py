"""What an LDAP provisioner asks for that idsync does not do: ``validate`` warnings.

OpenICF's LDAP connector has settings idsync has no use for (it has no liveSync,
no connection pool, no VLV searches) and some it does not implement. A stock
provisioner carries all of them, mostly at values that ask for nothing; a key is
reported only when its value asks for something idsync would not do, so a
project copied from PingIDM gets one warning per real difference, naming the
file, the key and why. Keys only liveSync reads are not: without liveSync
nothing reads them, and a schedule that would run liveSync is a warning itself.
Properties under an OpenICF special name idsync does not implement are reported
too (they are never read or written), and so is a key unknown to both, with the
nearest known one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from idsync.connectors.ldap.config import PASSWORD_HASHES, ObjectTypeDef
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import suggest

__all__ = ["ignored_settings"]

# Keys idsync reads and acts on (``config``), and its own.
_USED = {
    "host", "port", "ssl", "startTLS", "principal", "credentials", "baseContexts",
    "baseContextsToSynchronize", "accountObjectClasses", "accountSearchFilter",
    "accountUserNameAttributes", "groupObjectClasses", "groupSearchFilter", "groupNameAttributes",
    "groupMemberAttribute", "uidAttribute", "blockSize", "connectTimeout", "readTimeout", "caFile",
    "verifyCertificate", "maintainLdapGroupMembership", "maintainPosixGroupMembership",
    "passwordAttribute", "ldapGroupsAttribute", "accountLockAttribute", "accountLockValue", "failover",
    # Paging is always RFC 2696's; these only say so, or tune what it replaces.
    "usePagedResultControl", "useBlocks", "vlvSortAttribute",
    # Property types come from objectTypes (values that are not UTF-8 read as base64).
    "readSchema",
}


def _unset(value: Any) -> bool:
    return value in (None, "", [], {}, False)


def _is(expected: Any) -> Callable[[Any], bool]:
    def asks_nothing(value: Any) -> bool:
        return value is None or str(value).lower() == str(expected).lower()
    return asks_nothing


# Keys only liveSync reads: idsync has no liveSync, and a schedule that would run it
# is a warning of its own, so they ask for nothing here.
_LIVE_SYNC_ONLY = {
    "accountSynchronizationFilter", "groupSynchronizationFilter", "attributesToSynchronize",
    "modifiersNamesToFilterOut", "passwordAttributeToSynchronize", "passwordDecryptionKey",
    "passwordDecryptionInitializationVector", "filterWithOrInsteadOfAnd", "useTimestampsForSync",
    "objectClassesToSynchronize", "changeLogBlockSize", "changeNumberAttribute",
    "removeLogEntryObjectClassFromFilter",
}

# key -> (whether its value asks for nothing, why idsync does not act on it)
_NOT_ACTED_ON: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "synchronizePasswords": (_unset, "passwords changed in the directory are not synchronized (no liveSync)"),
    "passwordHashAlgorithm": (lambda v: _unset(v) or str(v).strip().upper() in ("WIN-AD", *PASSWORD_HASHES),
                              f"not a scheme idsync hashes with ({', '.join(PASSWORD_HASHES)}): the mapped "
                              "value is written as it is (the store keeps passwords hashed)"),
    "respectResourcePasswordPolicyChangeAfterReset": (
        _unset, "the password policy's change-after-reset is not applied to password writes"),
    "referralsHandling": (_is("ignore"), "referrals are not followed"),
    "alternateKeyStore": (_unset, "use caFile for the certificate authority"),
    "alternateKeyStorePassword": (_unset, "use caFile for the certificate authority"),
    "alternateKeyStoreType": (_unset, "use caFile for the certificate authority"),
}


def ignored_settings(file: str, config: Mapping[str, Any], types: Mapping[str, ObjectTypeDef]) -> list[ConfigError]:
    """One warning for each setting, property or key of ``config`` idsync does not act on."""
    warnings: list[ConfigError] = []
    props = config.get("configurationProperties") or {}
    for key, value in props.items():
        prefix = f"configurationProperties.{key}"
        if key in _LIVE_SYNC_ONLY:
            continue
        if key in _NOT_ACTED_ON:
            asks_nothing, why = _NOT_ACTED_ON[key]
            if not asks_nothing(value):
                warnings.append(ConfigWarning(file, prefix, f"not acted on: {why}"))
        elif key not in _USED:
            known = {*_USED, *_NOT_ACTED_ON, *_LIVE_SYNC_ONLY}
            warnings.append(ConfigWarning(file, prefix, f"{suggest(key, known)}; it is ignored"))
    if props.get("useBlocks") is True and props.get("usePagedResultControl") is False:
        warnings.append(ConfigWarning(file, "configurationProperties.useBlocks",
                                      "not acted on: searches are paged with RFC 2696's control, not VLV"))
    for name, obj_type in types.items():
        for prop, native in obj_type.unsupported.items():
            warnings.append(ConfigWarning(file, f"objectTypes.{name}.properties.{prop}.nativeName",
                                          f"not acted on: {native} is not implemented, so {prop} is never "
                                          "read or written"))
    return warnings
