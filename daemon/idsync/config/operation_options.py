"""A provisioner's ``operationOptions``: the writes PingIDM refuses on the system.

    "operationOptions": {"DELETE": {"denied": true, "onDeny": "DO_NOTHING"}}

idsync follows ``denied`` for ``CREATE``, ``UPDATE`` and ``DELETE``: such a write to the
system fails (403, ``OperationDenied``) from wherever it comes (a recon, implicit sync,
liveSync, a script, the API). With ``"onDeny": "DO_NOTHING"`` the sync engine does not
even attempt it: the object's action is recorded as skipped, saying why, and nothing
fails; ``THROW_EXCEPTION`` (the default, as OpenIDM's) fails the object. ``validate``
names the other operations' ``denied`` (``GET``, ``SEARCH``, ``SYNC``...), which idsync
does not follow, and ``objectFeatures``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from idsync.errors import ConfigError

__all__ = ["DO_NOTHING", "FOLLOWED", "THROW_EXCEPTION", "denied_operations"]

DO_NOTHING = "DO_NOTHING"
THROW_EXCEPTION = "THROW_EXCEPTION"
# The operations whose ``denied`` idsync follows: PingIDM's name -> the write's kind.
FOLLOWED = {"CREATE": "create", "UPDATE": "update", "DELETE": "delete"}


def denied_operations(raw: object, *, file: str) -> Mapping[str, str]:
    """The write kinds ``operationOptions`` denies -> their ``onDeny``."""
    key = "operationOptions"
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        raise ConfigError(file, key, "expected an object such as {\"DELETE\": {\"denied\": true}}")
    found: dict[str, str] = {}
    for name, option in raw.items():
        if not isinstance(option, Mapping):
            raise ConfigError(file, f"{key}.{name}", "expected an object such as {\"denied\": true}")
        denied = option.get("denied", False)
        if not isinstance(denied, bool):
            raise ConfigError(file, f"{key}.{name}.denied", f"expected true or false, not {denied!r}")
        on_deny = option.get("onDeny", THROW_EXCEPTION)
        if on_deny not in (DO_NOTHING, THROW_EXCEPTION):
            raise ConfigError(file, f"{key}.{name}.onDeny", f"expected {DO_NOTHING} or {THROW_EXCEPTION}, "
                                                            f"not {on_deny!r}")
        if denied and name in FOLLOWED:
            found[FOLLOWED[name]] = on_deny
    return MappingProxyType(found)
