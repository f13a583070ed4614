"""PingIDM's ``$crypto`` values (idsync.crypto): known vectors made with other tools,
round trips, and failures that name the key alias but never the value or the key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from idsync.config.project import keyring
from idsync.crypto import CryptoCalls, Keyring, hash_value, is_encrypted, is_hashed, matches
from idsync.errors import ConfigError, CryptoFailed
from idsync.settings import load_settings

KEY = bytes(range(16))
# `printf '"Passw0rd"' | openssl enc -aes-128-cbc -K 000102...0f -iv 101112...1f | base64`:
# OpenIDM encrypts the value's JSON text, quotes included.
OPENSSL_VALUE = {"$crypto": {"type": "x-simple-encryption", "value": {
    "cipher": "AES/CBC/PKCS5Padding", "key": "openidm-sym-default",
    "iv": "EBESExQVFhcYGRobHB0eHw==", "data": "eCJ3re9EeAG88z259zOM5w=="}}}
# sha256("Passw0rd" + bytes 0x20..0x2f), the salt appended, in base64 (sha256sum, by hand).
SHA256_VALUE = {"$crypto": {"type": "salted-hash", "value": {
    "algorithm": "SHA-256", "data": "FSlZ+NxkHm0g9wYVJOToIAJhFBc0/+mEyelaXwEANjUgISIjJCUmJygpKissLS4v"}}}


def test_decrypts_a_value_made_by_openssl_with_a_known_key_and_iv() -> None:
    """An x-simple-encryption value whose data another implementation made decrypts to the clear text."""
    assert Keyring({"openidm-sym-default": KEY}).decrypt(OPENSSL_VALUE) == "Passw0rd"


def test_encrypt_decrypt_round_trip_in_pingidm_shape() -> None:
    """encrypt gives PingIDM's shape with a fresh IV each time; any JSON value comes back as it was."""
    ring = Keyring({"openidm-sym-default": KEY})
    first, second = ring.encrypt("Passw0rd"), ring.encrypt("Passw0rd")
    body = first["$crypto"]["value"]
    assert first["$crypto"]["type"] == "x-simple-encryption"
    assert set(body) == {"cipher", "key", "iv", "data"} and body["cipher"] == "AES/CBC/PKCS5Padding"
    assert body["key"] == "openidm-sym-default" and len(base64.b64decode(body["iv"])) == 16
    assert body["iv"] != second["$crypto"]["value"]["iv"]
    assert "Passw0rd" not in json.dumps(first)
    for value in ("Passw0rd", "é ☃", {"a": [1, None, True]}, 42):
        assert ring.decrypt(ring.encrypt(value)) == value
    assert is_encrypted(first) and not is_hashed(first) and not is_encrypted("Passw0rd")


def test_wrong_key_is_a_clear_error_without_the_secret() -> None:
    """A value decrypted with another key fails with a message naming the alias, not the value or key."""
    other = Keyring({"openidm-sym-default": bytes(range(100, 116))})
    with pytest.raises(CryptoFailed, match="cannot be decrypted with key openidm-sym-default") as caught:
        other.decrypt(OPENSSL_VALUE)
    message = str(caught.value)
    assert "Passw0rd" not in message and base64.b64encode(bytes(range(100, 116))).decode() not in message
    with pytest.raises(CryptoFailed, match="no key 'other'"):
        body = {**OPENSSL_VALUE["$crypto"]["value"], "key": "other"}
        Keyring({"openidm-sym-default": KEY}).decrypt({"$crypto": {"type": "x-simple-encryption", "value": body}})


def test_pingidm_7_derived_key_values_are_refused_clearly() -> None:
    """A value carrying PingIDM 7's salt/mac/stableId is refused rather than decrypted unchecked."""
    value = {"$crypto": {"type": "x-simple-encryption", "value": {
        **OPENSSL_VALUE["$crypto"]["value"], "stableId": "openidm-sym-default", "salt": "AAAA", "mac": "AAAA"}}}
    with pytest.raises(CryptoFailed, match="PingIDM 7"):
        Keyring({"openidm-sym-default": KEY}).decrypt(value)


def test_salted_hash_known_vector_and_round_trip() -> None:
    """matches verifies a hand-made SHA-256 salted hash; hash makes one that matches and nothing else."""
    assert matches("Passw0rd", SHA256_VALUE) and not matches("passw0rd", SHA256_VALUE)
    for algorithm in ("SHA-256", "SHA-512", "SHA-1"):
        hashed = hash_value("Passw0rd", algorithm)
        assert is_hashed(hashed) and hashed["$crypto"]["value"]["algorithm"] == algorithm
        assert matches("Passw0rd", hashed) and not matches("Passw0rd!", hashed)
    with pytest.raises(CryptoFailed, match="not supported"):
        hash_value("x", "SHA-3")


def test_crypto_calls_answer_the_openidm_functions() -> None:
    """The crypto functions of scripts: decrypt leaves plain values and hashes alone, encrypt(null) is null."""
    calls = CryptoCalls(Keyring({"openidm-sym-default": KEY}))
    assert calls.call("decrypt", [OPENSSL_VALUE]) == "Passw0rd"
    assert calls.call("decrypt", ["plain"]) == "plain"
    assert calls.call("decrypt", [SHA256_VALUE]) == SHA256_VALUE
    assert calls.call("encrypt", [None]) is None
    assert calls.call("isEncrypted", [calls.call("encrypt", ["x", None, None])]) is True
    assert calls.call("matches", ["Passw0rd", calls.call("hash", ["Passw0rd", "SHA-512"])]) is True


def test_key_from_settings_file_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[crypto] key_file is read; with no key configured one is made once (mode 0600) and reused;
    a malformed key is a ConfigError naming the setting, never the key."""
    (tmp_path / "conf").mkdir()
    made = keyring(load_settings(tmp_path))
    value = made.encrypt("Passw0rd")
    key_file = tmp_path / "state" / "keys" / "openidm-sym-default.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert keyring(load_settings(tmp_path)).decrypt(value) == "Passw0rd"

    (tmp_path / "k").write_text(base64.b64encode(KEY).decode() + "\n")
    (tmp_path / "conf" / "idsync.toml").write_text('[crypto]\nkey_file = "k"\n')
    assert keyring(load_settings(tmp_path)).decrypt(OPENSSL_VALUE) == "Passw0rd"

    monkeypatch.setenv("IDSYNC_CRYPTO__KEY", "bm90IGEga2V5")  # "not a key": 9 bytes
    with pytest.raises(ConfigError, match=r"crypto\.key: the key holds 9 bytes") as caught:
        keyring(load_settings(tmp_path)).check()
    assert "bm90IGEga2V5" not in str(caught.value)


def test_config_show_masks_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`idsync config show` (``effective``) never prints the key."""
    from idsync.cli.config import effective

    (tmp_path / "conf").mkdir()
    monkeypatch.setenv("IDSYNC_CRYPTO__KEY", base64.b64encode(KEY).decode())
    shown = effective(load_settings(tmp_path))
    assert shown["crypto"]["key"] != base64.b64encode(KEY).decode() and shown["crypto"]["key"]
    assert base64.b64encode(KEY).decode() not in json.dumps(shown)


def test_store_encrypts_encryption_properties_and_keeps_crypto_values(tmp_path: Path) -> None:
    """In the store, an ``encryption`` property is encrypted (the same value again keeps the stored
    form); a ``$crypto`` value from a PingIDM export is kept as it is, for an encrypted and a
    hashed property alike, rather than hashed as text."""
    from idsync.config.managed import parse_managed
    from idsync.store.database import Store
    from idsync.store.objects import ManagedResource

    schema = parse_managed({"objects": [{"name": "user", "schema": {"properties": {
        "userName": {"type": "string"}, "password": {"type": "string", "encryption": {"key": "openidm-sym-default"}},
        "answer": {"type": "string", "secureHash": {"algorithm": "SHA-256"}}}}}]},
        keyring=Keyring({"openidm-sym-default": KEY})).types["user"]
    users = ManagedResource(Store.open(f"sqlite:///{tmp_path / 's.db'}"), schema, with_secrets=True)
    made = users.create({"userName": "ada", "password": "Passw0rd", "answer": "blue"})
    stored = users.get(made["_id"]) or {}
    assert Keyring({"openidm-sym-default": KEY}).decrypt(stored["password"]) == "Passw0rd"
    # secureHash: PingIDM's salted hash, in its $crypto form, verified on a second write
    assert is_hashed(stored["answer"]) and stored["answer"]["$crypto"]["value"]["algorithm"] == "SHA-256"
    assert matches("blue", stored["answer"]) and not matches("red", stored["answer"])
    again = users.update(made["_id"], {"password": "Passw0rd", "answer": "blue"})
    assert again["_rev"] == made["_rev"]
    imported = users.create({"userName": "bob", "password": OPENSSL_VALUE, "answer": SHA256_VALUE})
    kept = users.get(imported["_id"]) or {}
    assert kept["password"] == OPENSSL_VALUE and kept["answer"] == SHA256_VALUE
