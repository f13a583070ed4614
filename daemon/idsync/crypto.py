"""PingIDM's ``$crypto`` values: reversible encryption and salted hashes.

Two shapes, as OpenIDM writes them (its ``SimpleEncryptor`` and ``CryptoServiceImpl``)::

    {"$crypto": {"type": "x-simple-encryption",
                 "value": {"cipher": "AES/CBC/PKCS5Padding", "key": "openidm-sym-default",
                           "iv": "<base64>", "data": "<base64>"}}}
    {"$crypto": {"type": "salted-hash",
                 "value": {"algorithm": "SHA-256", "data": "<base64 of digest + 16-byte salt>"}}}

The encrypted ``data`` is AES-CBC (PKCS#7 padding, a random IV) of the value's JSON
text, so a string is encrypted with its quotes and any JSON value round-trips. A
hash is the digest of the UTF-8 text followed by a random 16-byte salt, the salt
appended to the digest. PingIDM 7 writes a newer form with keys derived per value
(``salt``, ``keySize``, ``mac``, ``stableId``) whose derivation it does not publish:
such a value is refused with a clear message rather than decrypted unchecked.

A ``Keyring`` holds the symmetric keys by alias. Key bytes never appear in a message,
a log event or a ``repr``; neither does a clear value: a failed decryption says
which alias and what went wrong, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from idsync.errors import ConfigError, CryptoFailed

__all__ = ["DEFAULT_ALIAS", "DEFAULT_CIPHER", "CryptoCalls", "Keyring", "create_key_file", "decode_key", "hash_value",
           "is_encrypted", "is_hashed", "load_key", "matches"]

DEFAULT_ALIAS = "openidm-sym-default"
DEFAULT_CIPHER = "AES/CBC/PKCS5Padding"
_ENCRYPTED = "x-simple-encryption"
_HASHED = "salted-hash"
_SALT_BYTES = 16
_DIGESTS = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}
_KEY_SIZES = (16, 24, 32)


def _crypto(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get("$crypto"), Mapping):
        return value["$crypto"]  # type: ignore[no-any-return]
    return None


def is_encrypted(value: Any) -> bool:
    """Whether ``value`` is a ``$crypto`` object (encrypted or hashed, as PingIDM's ``isEncrypted``)."""
    inner = _crypto(value)
    return inner is not None and isinstance(inner.get("type"), str) and isinstance(inner.get("value"), Mapping)


def is_hashed(value: Any) -> bool:
    """Whether ``value`` is a ``salted-hash`` ``$crypto`` object."""
    inner = _crypto(value)
    return (inner is not None and isinstance(inner.get("value"), Mapping)
            and "algorithm" in inner["value"])


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise CryptoFailed(f"the encrypted value has no {what}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoFailed(f"the encrypted value's {what} is not base64") from None


class Keyring:
    """Symmetric keys by alias; ``default_alias`` is the one ``encrypt`` uses unless told.

    ``loader`` gives the keys on first use instead (a key file is read, or made, only
    when a value is encrypted or decrypted, not when a command merely loads the project).
    """

    def __init__(self, keys: Mapping[str, bytes] | None = None, default_alias: str = DEFAULT_ALIAS,
                 *, loader: Callable[[], Mapping[str, bytes]] | None = None) -> None:
        self._keys: dict[str, bytes] | None = None
        self._seal_key: bytes | None = None
        self._loader = loader
        if keys is not None:
            self._keys = self._checked(keys)
        self.default_alias = default_alias

    def __repr__(self) -> str:
        return f"<Keyring default={self.default_alias}>"

    @staticmethod
    def _checked(keys: Mapping[str, bytes]) -> dict[str, bytes]:
        for alias, key in keys.items():
            if len(key) not in _KEY_SIZES:
                raise ValueError(f"key {alias} must be 16, 24 or 32 bytes (AES), not {len(key)}")
        return dict(keys)

    def _all(self) -> dict[str, bytes]:
        if self._keys is None:
            self._keys = self._checked(self._loader() if self._loader else {})
        return self._keys

    def check(self) -> None:
        """Load the keys now: ``ConfigError`` if they cannot be read."""
        self._all()

    def _key(self, alias: Any) -> bytes:
        keys = self._all()
        if not isinstance(alias, str) or alias not in keys:
            known = ", ".join(sorted(keys)) or "none"
            raise CryptoFailed(f"no key {alias!r} in idsync's keyring (it has: {known}); see [crypto] in "
                               "docs/configuration.md")
        return keys[alias]

    def encrypt(self, value: Any, cipher: str | None = None, alias: str | None = None) -> dict[str, Any]:
        """``value`` (any JSON value) as an ``x-simple-encryption`` object."""
        cipher = cipher or DEFAULT_CIPHER
        if cipher != DEFAULT_CIPHER:
            raise CryptoFailed(f"cipher {cipher!r} is not supported (only {DEFAULT_CIPHER})")
        alias = alias or self.default_alias
        key = self._key(alias)
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        clear = padder.update(json.dumps(value, separators=(",", ":")).encode()) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        data = encryptor.update(clear) + encryptor.finalize()
        return {"$crypto": {"type": _ENCRYPTED, "value": {
            "cipher": cipher, "key": alias, "iv": base64.b64encode(iv).decode(),
            "data": base64.b64encode(data).decode()}}}

    def decrypt(self, value: Any) -> Any:
        """The clear value of an ``x-simple-encryption`` object; anything else is returned as it is
        (as PingIDM's ``decrypt`` leaves a plain value alone)."""
        inner = _crypto(value)
        if inner is None:
            return value
        if inner.get("type") != _ENCRYPTED:
            raise CryptoFailed(f"a {inner.get('type')!r} value cannot be decrypted"
                               + (" (a hash is one-way)" if inner.get("type") == _HASHED else ""))
        body = inner.get("value")
        if not isinstance(body, Mapping):
            raise CryptoFailed("the encrypted value has no value object")
        if "mac" in body or "salt" in body or "stableId" in body:
            raise CryptoFailed("the value was encrypted by PingIDM 7 or later with a derived key, which idsync "
                               "cannot read: set it again in clear")
        cipher = body.get("cipher")
        if cipher != DEFAULT_CIPHER:
            raise CryptoFailed(f"cipher {cipher!r} is not supported (only {DEFAULT_CIPHER})")
        alias = body.get("key")
        key = self._key(alias)
        iv, data = _b64(body.get("iv"), "iv"), _b64(body.get("data"), "data")
        if len(iv) != 16 or not data or len(data) % 16:
            raise CryptoFailed(f"the value encrypted with key {alias} is damaged (wrong iv or data length)")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        try:
            padded = decryptor.update(data) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            return json.loads(unpadder.update(padded) + unpadder.finalize())
        except ValueError:  # bad padding, not UTF-8, not JSON: all mean the same to the operator
            raise CryptoFailed(f"the value cannot be decrypted with key {alias}: the key is not the one it "
                               "was encrypted with, or the value is damaged") from None

    def decrypt_if_encrypted(self, value: Any) -> Any:
        return self.decrypt(value) if is_encrypted(value) and not is_hashed(value) else value

    def seal(self, data: bytes) -> str:
        """A keyed digest of ``data`` (HMAC-SHA-256, 64 hex digits) under a key derived from the
        default key: what tells a value seen again without keeping it, and cannot be tried
        against guesses without the key (``sync/written.py``)."""
        if self._seal_key is None:
            self._seal_key = hmac.new(self._key(self.default_alias), b"idsync sealed values 1",
                                      hashlib.sha256).digest()
        return hmac.new(self._seal_key, data, hashlib.sha256).hexdigest()


def hash_value(value: Any, algorithm: str | None = None) -> dict[str, Any]:
    """``value`` as a ``salted-hash`` object (a string as it is, anything else as JSON text)."""
    algorithm = algorithm or "SHA-256"
    name = _DIGESTS.get(algorithm)
    if name is None:
        raise CryptoFailed(f"hash algorithm {algorithm!r} is not supported ({', '.join(_DIGESTS)})")
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.new(name, text.encode() + salt).digest()
    return {"$crypto": {"type": _HASHED, "value": {
        "algorithm": algorithm, "data": base64.b64encode(digest + salt).decode()}}}


def matches(clear: Any, hashed: Any) -> bool:
    """Whether ``clear`` is the value ``hashed`` (a ``salted-hash`` object) was made from."""
    if not is_hashed(hashed) or not isinstance(clear, str):
        return False
    body = hashed["$crypto"]["value"]
    name = _DIGESTS.get(body.get("algorithm"))
    if name is None or not isinstance(body.get("data"), str):
        return False
    try:
        raw = base64.b64decode(body["data"], validate=True)
    except (binascii.Error, ValueError):
        return False
    size = hashlib.new(name).digest_size
    digest, salt = raw[:size], raw[size:]
    if not salt:
        return False
    encoded = clear.encode()
    # OpenIDM copies only as many bytes as the text has UTF-16 units: for a text beyond
    # ASCII its hashes cover a prefix of the UTF-8 bytes. Both forms are accepted.
    java = encoded[:len(clear.encode("utf-16-le")) // 2]
    return any(hmac.compare_digest(hashlib.new(name, text + salt).digest(), digest) for text in {encoded, java})


def load_key(path: Path, *, file: str, key: str) -> bytes:
    """A key file: the key's bytes in base64 (one line), as ``idsync`` creates it."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not base64 text"
        raise ConfigError(file, key, f"cannot read the key file {path}: {reason}") from None
    return decode_key(text, file=file, key=key, where=f"the key file {path}")


def decode_key(text: str, *, file: str, key: str, where: str = "the key") -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(file, key, f"{where} is not base64") from None
    if len(raw) not in _KEY_SIZES:
        raise ConfigError(file, key, f"{where} holds {len(raw)} bytes; an AES key has 16, 24 or 32")
    return raw


def create_key_file(path: Path) -> bool:
    """Write a new random 256-bit key to ``path`` (mode 0600) unless one is there; whether it did.

    The key is written to a file of its own first and linked into place, so a process
    reading ``path`` at the same moment sees a whole key or none, and two processes
    making one at once agree on the one that was linked first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(scratch, 0o600)
        try:
            os.link(scratch, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(scratch)


class CryptoCalls:
    """Answers the crypto functions of the scripts' ``openidm`` object (an ``OpenidmRouter``):
    ``encrypt(value, cipher, alias)``, ``decrypt(value)``, ``isEncrypted(value)``,
    ``hash(value, algorithm)``, ``isHashed(value)``, ``matches(clear, hashed)``."""

    FUNCTIONS = frozenset({"encrypt", "decrypt", "isEncrypted", "hash", "isHashed", "matches"})

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def call(self, function: str, arguments: list[Any]) -> Any:
        value, second, third = [*arguments, None, None, None][:3]
        if function == "encrypt":
            return None if value is None else self.keyring.encrypt(value, second, third)
        if function == "decrypt":
            # A hash is left as it is, as PingIDM's decryption leaves types it has no decryptor for.
            return value if is_hashed(value) else self.keyring.decrypt(value)
        if function == "isEncrypted":
            return is_encrypted(value)
        if function == "hash":
            return None if value is None else hash_value(value, second)
        if function == "isHashed":
            return is_hashed(value)
        if function == "matches":
            return matches(value, second)
        raise CryptoFailed(f"openidm.{function} is not available here: only the crypto functions are "
                           "(no store or system is bound)")
