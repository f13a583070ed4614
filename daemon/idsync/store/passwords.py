"""Secret properties at rest: one-way hashes.

Three settings of a managed property (``managed.json``) keep a secret, as in PingIDM:

* ``encryption`` asks for reversible encryption with the project's key
  (``objects.py`` and ``idsync.crypto``);
* ``secureHash`` (``{"algorithm": "SHA-256"}``) is PingIDM's salted hash, stored in
  its ``$crypto`` ``salted-hash`` form (``idsync.crypto.hash_value``), so that a store
  exported from PingIDM, or to it, keeps verifying;
* ``"secret": true`` alone is idsync's own: an RFC 3112 ``{CRYPT}$6$rounds=N$salt$hash``
  (SHA-512 crypt), which can be pushed unchanged to an LDAP ``userPassword``, where
  OpenLDAP, 389-ds and PingDS verify binds against it: nothing needs the clear
  password back, and no key has to be kept.

SHA-512 crypt is computed by libpass (the maintained fork of passlib), not by the C
``crypt`` module: that module is gone from Python 3.13, and libxcrypt refuses keys of
512 bytes and more (it answers ``*0``, which would have stored a hash no password
matches). libpass runs the same algorithm on ``hashlib`` on every Python idsync
supports, for secrets up to ``MAX_SECRET_BYTES``; a longer one is refused with a
message rather than cut.

A value that already carries a ``{SCHEME}`` prefix is taken as hashed and kept
as it is (imports from another directory keep working). A clear value that the
stored hash verifies is the same secret (``same_secret``): the stored hash is
kept, so setting a password again, or reading one back in clear from a
directory, does not make a new salt and a new revision every time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Any

from passlib.context import CryptContext
from passlib.hash import sha512_crypt

from idsync.crypto import Keyring, hash_value, is_encrypted, matches
from idsync.crypto import is_hashed as is_salted_hash
from idsync.errors import CryptoFailed, ObjectRejected

__all__ = ["MAX_SECRET_BYTES", "hash_secret", "is_hashed", "is_one_way", "same_secret"]

_HASHED = re.compile(r"^\{[A-Za-z0-9.-]+\}.+", re.DOTALL)
_ROUNDS = 20_000
# SHA-512 crypt's work grows with the secret's length (each of its 20,000 rounds hashes
# the whole secret): a bound keeps one write from costing seconds of CPU.
MAX_SECRET_BYTES = 1024
_SHA512_CRYPT = sha512_crypt.using(rounds=_ROUNDS)
# What a stored {CRYPT} may hold: SHA-512 crypt, and what an imported directory may have.
_VERIFIED = CryptContext(schemes=["sha512_crypt", "sha256_crypt", "md5_crypt"])


def is_hashed(value: Any) -> bool:
    """Whether ``value`` is already in ``{SCHEME}...`` form."""
    return isinstance(value, str) and bool(_HASHED.match(value))


def is_one_way(value: Any) -> bool:
    """Whether ``value`` is a hash the store keeps of a secret, in either form
    (``{SCHEME}...`` or PingIDM's ``$crypto`` salted hash): never the secret itself."""
    return is_hashed(value) or is_salted_hash(value)


def _clear_text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:  # no LDAP server takes one in a crypt hash: refuse it rather than hash another secret
        raise ObjectRejected("a secret cannot contain a NUL character")
    if len(text.encode()) > MAX_SECRET_BYTES:
        raise ObjectRejected(f"a secret can be at most {MAX_SECRET_BYTES} bytes long")
    return text


def hash_secret(value: Any, algorithm: str | None = None) -> Any:
    """The at-rest form of a secret: ``None`` and hashed values pass through.
    ``algorithm`` (``secureHash``'s) makes PingIDM's ``$crypto`` salted hash instead of
    ``{CRYPT}``."""
    if value is None or is_hashed(value) or is_encrypted(value):
        return value
    text = _clear_text(value)
    if algorithm is not None:
        try:
            return hash_value(text, algorithm)
        except CryptoFailed as exc:
            raise ObjectRejected(str(exc)) from None
    return "{CRYPT}" + _SHA512_CRYPT.hash(text)


def same_secret(value: Any, stored: Any, keyring: Keyring | None = None) -> bool:
    """Whether ``value`` (clear or hashed) is the secret ``stored`` holds; an encrypted
    ``stored`` (``$crypto``) is decrypted with ``keyring`` to compare, a salted hash verified."""
    if value == stored:
        return True
    if is_salted_hash(stored):
        return isinstance(value, str) and matches(value, stored)
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
    if len(value.encode()) > MAX_SECRET_BYTES:
        return False
    scheme, _, hashed = stored.partition("}")
    if scheme.upper() == "{CRYPT":
        try:
            return bool(_VERIFIED.identify(hashed)) and bool(_VERIFIED.verify(value, hashed))
        except ValueError:  # not a well-formed crypt string
            return False
    if scheme.upper() == "{SSHA":
        # Written by earlier releases where the C crypt module was missing.
        try:
            raw = base64.b64decode(hashed, validate=True)
        except (binascii.Error, ValueError):
            return False
        digest, salt = raw[:20], raw[20:]
        return len(raw) > 20 and hmac.compare_digest(hashlib.sha1(value.encode() + salt).digest(), digest)
    return False
