"""A provisioner's ``operationOptions``: the operations PingIDM refuses on the system.

    "operationOptions": {"DELETE": {"denied": true, "onDeny": "DO_NOTHING"}}

idsync follows ``denied`` for ``CREATE``, ``UPDATE`` and ``DELETE``: such a write to the
system fails (403, ``OperationDenied``) from wherever it comes (a recon, implicit sync,
liveSync, a script, the API). With ``"onDeny": "DO_NOTHING"`` the sync engine does not
even attempt it: the object's action is recorded as skipped, saying why, and nothing
fails; ``THROW_EXCEPTION`` (the default, as OpenIDM's) fails the object. ``SYNC`` denied
refuses liveSync of the system: the run fails, or with ``DO_NOTHING`` reads nothing and
says so. ``GET`` (a read by id) and ``SEARCH`` (a query, a listing) denied keep every
read of that kind from the system (``ReadDenied``, ``resource.py``): a recon that
would read it reads nothing and fails, or with ``DO_NOTHING`` ends having done nothing,
saying so (a read refused is never taken for an empty system); the API answers 403,
or with ``DO_NOTHING`` an empty result (a query) or 404 (a read). ``validate`` names
the other operations' ``denied`` (``AUTHENTICATE``, ``TEST``, ``SCHEMA``...), which
idsync does not follow.

An operation's ``objectFeatures`` decide for one object type of the system, as
OpenICF's provisioner reads them: keyed by the type's name in ``objectTypes``
(``account``) or by its ``nativeType`` (``__ACCOUNT__``), an entry's ``denied`` and
``onDeny`` stand for that type in place of the operation's own (the ones it leaves out
are the operation's):

    "CREATE": {"denied": false, "objectFeatures": {"group": {"denied": true}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from idsync.errors import ConfigError

__all__ = ["DO_NOTHING", "FOLLOWED", "THROW_EXCEPTION", "denied_operations"]

DO_NOTHING = "DO_NOTHING"
THROW_EXCEPTION = "THROW_EXCEPTION"
# The operations whose ``denied`` idsync follows: PingIDM's name -> the write's kind,
# "sync" (liveSync of the system: ``sync/livesync.py``), or the read's: "get", "search"
# (``Resource.check_read``).
FOLLOWED = {"CREATE": "create", "UPDATE": "update", "DELETE": "delete", "SYNC": "sync", "GET": "get",
            "SEARCH": "search"}


def denied_operations(raw: object, *, file: str, object_type: str | None = None,
                      native_type: str | None = None) -> Mapping[str, str]:
    """The write kinds ``operationOptions`` denies -> their ``onDeny``: on the system as a
    whole, or on its ``object_type`` (with ``native_type``), its ``objectFeatures`` counted.
    Every entry is checked, whatever the type asked about."""
    key = "operationOptions"
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        raise ConfigError(file, key, "expected an object such as {\"DELETE\": {\"denied\": true}}")
    found: dict[str, str] = {}
    for name, option in raw.items():
        if not isinstance(option, Mapping):
            raise ConfigError(file, f"{key}.{name}", "expected an object such as {\"denied\": true}")
        base = _denial(option, False, THROW_EXCEPTION, file=file, key=f"{key}.{name}")
        denied, on_deny = base
        features = option.get("objectFeatures")
        if features is not None and not isinstance(features, Mapping):
            raise ConfigError(file, f"{key}.{name}.objectFeatures",
                              "expected an object keyed by object type, such as {\"account\": {\"denied\": true}}")
        for type_name, feature in (features or {}).items():
            if not isinstance(feature, Mapping):
                raise ConfigError(file, f"{key}.{name}.objectFeatures.{type_name}",
                                  "expected an object such as {\"denied\": true}")
            own = _denial(feature, *base, file=file, key=f"{key}.{name}.objectFeatures.{type_name}")
            if object_type is not None and type_name in (object_type, native_type):
                denied, on_deny = own
        if denied and name in FOLLOWED:
            found[FOLLOWED[name]] = on_deny
    return MappingProxyType(found)


def _denial(option: Mapping[str, object], denied: bool, on_deny: str, *, file: str, key: str) -> tuple[bool, str]:
    """``option``'s ``denied`` and ``onDeny``, each defaulting to the one given."""
    value = option.get("denied", denied)
    if not isinstance(value, bool):
        raise ConfigError(file, f"{key}.denied", f"expected true or false, not {value!r}")
    policy = option.get("onDeny", on_deny)
    if policy not in (DO_NOTHING, THROW_EXCEPTION):
        raise ConfigError(file, f"{key}.onDeny", f"expected {DO_NOTHING} or {THROW_EXCEPTION}, not {policy!r}")
    return value, str(policy)
