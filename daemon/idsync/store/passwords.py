"""Secret properties at rest: one-way hashes in a scheme LDAP servers verify.

A managed property marked secret in ``managed.json`` (``"secret": true``,
``secureHash`` or ``encryption``) is hashed before it reaches the store, so the
store never holds a clear value. The hash is written in RFC 3112 form,
``{CRYPT}$6$rounds=N$salt$hash`` (SHA-512 crypt): the same string can be pushed
unchanged to an LDAP ``userPassword``, where OpenLDAP, 389-ds and PingDS verify
binds against it. That is why a hash, and not reversible encryption, is used:
nothing in idsync ever needs the clear password back, and no key has to be kept.

A value that already carries a ``{SCHEME}`` prefix is taken as hashed and kept
as it is (imports from another directory keep working).

Where the C ``crypt`` module is missing (Python 3.13 removed it), ``{SSHA}``
(salted SHA-1, understood by every LDAP server) is the fallback; it is weaker
against offline guessing, so the fallback is logged once.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import warnings
from typing import Any

import structlog

__all__ = ["hash_secret", "is_hashed"]

log = structlog.get_logger(__name__)

_HASHED = re.compile(r"^\{[A-Za-z0-9.-]+\}.+", re.DOTALL)
_ROUNDS = 20_000

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt
    except ImportError:  # pragma: no cover - Python 3.13+
        _crypt = None  # type: ignore[assignment]


def is_hashed(value: Any) -> bool:
    """Whether ``value`` is already in ``{SCHEME}...`` form."""
    return isinstance(value, str) and bool(_HASHED.match(value))


def hash_secret(value: Any) -> Any:
    """The at-rest form of a secret: ``None`` and hashed values pass through."""
    if value is None or is_hashed(value):
        return value
    text = value if isinstance(value, str) else str(value)
    if _crypt is not None and _crypt.METHOD_SHA512 in _crypt.methods:
        return "{CRYPT}" + _crypt.crypt(text, _crypt.mksalt(_crypt.METHOD_SHA512, rounds=_ROUNDS))
    log.warning("passwords.weak_fallback", scheme="SSHA")  # pragma: no cover
    salt = os.urandom(8)  # pragma: no cover
    digest = hashlib.sha1(text.encode() + salt).digest()  # LDAP SSHA: the fallback only
    return "{SSHA}" + base64.b64encode(digest + salt).decode()  # pragma: no cover
