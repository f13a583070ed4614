"""Secret properties at rest: one-way hashes in a scheme LDAP servers verify.

A managed property marked secret in ``managed.json`` (``"secret": true`` or
``secureHash``) is hashed before it reaches the store, so the store never holds a
clear value. (``encryption`` asks for reversible encryption, as in PingIDM: those
are encrypted with the project's key instead, see ``objects.py`` and ``idsync.crypto``.)
The hash is written in RFC 3112 form, ``{CRYPT}$6$rounds=N$salt$hash`` (SHA-512
crypt): the same string can be pushed unchanged to an LDAP ``userPassword``, where OpenLDAP, 389-ds and PingDS verify
binds against it: nothing needs the clear password back, and no key has to be kept.

A value that already carries a ``{SCHEME}`` prefix is taken as hashed and kept
as it is (imports from another directory keep working). A clear value that the
stored hash verifies is the same secret (``same_secret``): the stored hash is
kept, so setting a password again, or reading one back in clear from a
directory, does not make a new salt and a new revision every time.

Where the C ``crypt`` module is missing (Python 3.13 removed it), ``{SSHA}``
(salted SHA-1, understood by every LDAP server) is the fallback; it is weaker
against offline guessing, so the fallback is logged once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import warnings
from typing import Any

import structlog

from idsync.crypto import Keyring, is_encrypted
from idsync.errors import CryptoFailed, ObjectRejected

__all__ = ["hash_secret", "is_hashed", "same_secret"]

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
    if "\x00" in text:  # crypt(3) ends a key at NUL: refuse it rather than hash a shorter secret
        raise ObjectRejected("a secret cannot contain a NUL character")
    if _crypt is not None and _crypt.METHOD_SHA512 in _crypt.methods:
        return "{CRYPT}" + _crypt.crypt(text, _crypt.mksalt(_crypt.METHOD_SHA512, rounds=_ROUNDS))
    log.warning("passwords.weak_fallback", scheme="SSHA")  # pragma: no cover
    salt = os.urandom(8)  # pragma: no cover
    digest = hashlib.sha1(text.encode() + salt).digest()  # LDAP SSHA: the fallback only
    return "{SSHA}" + base64.b64encode(digest + salt).decode()  # pragma: no cover


def same_secret(value: Any, stored: Any, keyring: Keyring | None = None) -> bool:
    """Whether ``value`` (clear or hashed) is the secret ``stored`` holds; an encrypted
    ``stored`` (``$crypto``) is decrypted with ``keyring`` to compare."""
    if value == stored:
        return True
    if is_encrypted(stored):
        if keyring is None or is_encrypted(value):
            return False
        try:
            clear = keyring.decrypt_if_encrypted(stored)
        except CryptoFailed:
            return False
        if isinstance(clear, str) and isinstance(value, str):
            return hmac.compare_digest(clear.encode(), value.encode())
        return bool(clear == value)
    if not isinstance(value, str) or not isinstance(stored, str) or is_hashed(value) or "\x00" in value:
        return False
    scheme, _, hashed = stored.partition("}")
    if scheme.upper() == "{CRYPT" and _crypt is not None and hashed:
        return hmac.compare_digest(_crypt.crypt(value, hashed) or "", hashed)
    if scheme.upper() == "{SSHA":
        try:
            raw = base64.b64decode(hashed, validate=True)
        except (binascii.Error, ValueError):
            return False
        digest, salt = raw[:20], raw[20:]
        return len(raw) > 20 and hmac.compare_digest(hashlib.sha1(value.encode() + salt).digest(), digest)
    return False
