"""Secrets at rest without a database: {CRYPT} SHA-512 crypt on every Python idsync
supports (3.13 has no crypt module; the lowest-versions run covers it), long secrets,
and the hashes earlier releases wrote."""

from __future__ import annotations

import base64
import hashlib
import sys

import pytest
from idsync.crypto import hash_value
from idsync.errors import ObjectRejected
from idsync.store.passwords import MAX_SECRET_BYTES, hash_secret, is_hashed, same_secret


def test_sha512_crypt_on_this_python() -> None:
    """A clear secret becomes {CRYPT}$6$ with 20,000 rounds and a fresh salt, which
    verifies it and nothing else, whether or not this Python has a crypt module."""
    first, second = hash_secret("Tr0ub4dor&3"), hash_secret("Tr0ub4dor&3")
    assert first.startswith("{CRYPT}$6$rounds=20000$") and first != second, sys.version
    assert same_secret("Tr0ub4dor&3", first) and not same_secret("Tr0ub4dor&4", first)
    assert hash_secret(first) == first and is_hashed(first)  # a hashed value is kept as it is


@pytest.mark.parametrize("size", [512, MAX_SECRET_BYTES])
def test_long_secrets_hash_and_verify(size: int) -> None:
    """Secrets of 512 bytes and more (libxcrypt answered *0 for them, a hash no
    password matches) hash properly, up to 1,024 bytes, and differ in their last byte."""
    secret = "é" + "x" * (size - 2)
    assert len(secret.encode()) == size
    hashed = hash_secret(secret)
    assert "*0" not in hashed and same_secret(secret, hashed)
    assert not same_secret(secret[:-1] + "y", hashed)


def test_refusals_name_the_problem_not_the_value() -> None:
    """A secret beyond 1,024 bytes or with a NUL is refused with a message that does not quote it."""
    with pytest.raises(ObjectRejected, match="at most 1024 bytes") as caught:
        hash_secret("z" * (MAX_SECRET_BYTES + 1))
    assert "zzz" not in str(caught.value)
    with pytest.raises(ObjectRejected, match="NUL"):
        hash_secret("a\x00b")


def test_earlier_hashes_and_secure_hash_verify() -> None:
    """{SSHA} (written where crypt was missing) still verifies; secureHash's algorithm
    makes PingIDM's salted hash, which same_secret verifies."""
    salt = b"12345678"
    ssha = "{SSHA}" + base64.b64encode(hashlib.sha1(b"old-secret" + salt).digest() + salt).decode()
    assert same_secret("old-secret", ssha) and not same_secret("other", ssha)
    salted = hash_secret("blue", "SHA-512")
    assert salted["$crypto"]["value"]["algorithm"] == "SHA-512"
    assert same_secret("blue", salted) and not same_secret("red", salted)
    assert same_secret("blue", hash_value("blue"))
