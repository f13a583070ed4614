"""What an LDAP provisioner asks for that idsync does not do: ``validate`` warnings.

OpenICF's LDAP connector has settings idsync has no use for (no connection pool,
no VLV searches, no changelog to read) and some it does not implement. A stock
provisioner carries all of them, mostly at values that ask for nothing; a key is
reported only when its value asks for something idsync would not do, so a
project copied from PingIDM gets one warning per real difference, naming the
file, the key and why. The keys that tell OpenICF how to read a changelog ask
for nothing: idsync's liveSync reads changes its own way (``changes.py``). Of the
ones that choose which changes liveSync applies, the filters per object type, the
account object classes and the skipped modifiers are followed (``config``), not
the attributes that must have changed, which is reported when set (and the two
that Active Directory does not allow). Properties under an OpenICF special name idsync does not
implement are reported too (they are never read or written), and so is a key
unknown to both, with the nearest known one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from idsync.connectors.ldap.config import PASSWORD_HASHES, ObjectTypeDef, reads_active_directory
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import suggest

__all__ = ["ignored_settings"]

# Keys idsync reads and acts on (``config``), and its own.
_USED = {
    # What liveSync applies (config._sync_filters).
    "accountSynchronizationFilter", "groupSynchronizationFilter", "modifiersNamesToFilterOut",
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


# How OpenICF reads a changelog (and the password it decrypts from one, which
# synchronizePasswords asks for): idsync's liveSync reads changes its own way.
_CHANGELOG_READING = {
    "passwordAttributeToSynchronize", "passwordDecryptionKey", "passwordDecryptionInitializationVector",
    "filterWithOrInsteadOfAnd", "useTimestampsForSync", "changeLogBlockSize", "changeNumberAttribute",
    "removeLogEntryObjectClassFromFilter",
}
_EVERY_CHANGE = "liveSync applies every change of the object type's entries"

# key -> (whether its value asks for nothing, why idsync does not act on it)
_NOT_ACTED_ON: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "synchronizePasswords": (_unset, "liveSync does not read the passwords changed in the directory"),
    "attributesToSynchronize": (_unset, f"{_EVERY_CHANGE}, whichever attributes changed (a change to no "
                                "mapped attribute writes nothing)"),
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
        if key in _CHANGELOG_READING:
            continue
        if key == "objectClassesToSynchronize":
            warnings += _object_classes_to_synchronize(file, value, types, ad=reads_active_directory(props))
            continue
        if key == "modifiersNamesToFilterOut" and not _unset(value) and reads_active_directory(props):
            warnings.append(ConfigWarning(file, prefix, f"not acted on: {_EVERY_CHANGE}, whoever made it "
                                          "(Active Directory keeps no modifiersName)"))
            continue
        if key in _NOT_ACTED_ON:
            asks_nothing, why = _NOT_ACTED_ON[key]
            if not asks_nothing(value):
                warnings.append(ConfigWarning(file, prefix, f"not acted on: {why}"))
        elif key not in _USED:
            known = {*_USED, *_NOT_ACTED_ON, *_CHANGELOG_READING, "objectClassesToSynchronize"}
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


def _object_classes_to_synchronize(file: str, value: Any, types: Mapping[str, ObjectTypeDef], *,
                                   ad: bool) -> list[ConfigError]:
    """liveSync skips the change of an account entry having none of these object classes,
    as OpenICF does (``config._sync_filters``). Nothing to say when every account type's
    entries have one of them (OpenICF's default, ``inetOrgPerson``, with the default
    ``accountObjectClasses``); otherwise a warning: the accounts whose entries lack them
    are never applied (or, on Active Directory, where it is not acted on, all are)."""
    wanted = {str(c).lower() for c in value} if isinstance(value, list) else set()
    accounts = [t for t in types.values() if t.native_type == "__ACCOUNT__"]
    if not wanted or all(wanted & {c.lower() for c in t.object_classes} for t in accounts):
        return []
    listed = ", ".join(sorted(wanted))
    return [ConfigWarning(file, "configurationProperties.objectClassesToSynchronize",
                          f"not acted on: {_EVERY_CHANGE}, not only those of entries having one of {listed} "
                          "(Active Directory: accounts are read by accountObjectClasses)" if ad else
                          f"none of accountObjectClasses is among {listed}: liveSync applies the changes of "
                          "the account entries having one of these classes only, and no others")]

