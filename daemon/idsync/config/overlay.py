"""A system's connection settings saved in the admin console: ``<state_dir>/connectors/NAME.json``.

``conf/`` stays read-only to the daemon (its systemd unit mounts it so); what an
administrator sets in the console (Systems, a system's Settings: PingIDM's Enable,
Login URL, Consumer Key and Consumer Secret) is kept beside the daemon's other state
and laid over the provisioner's ``configurationProperties`` when the project is
loaded, by the daemon and by every command (``validate``, ``test``, ``recon``)::

    {"enabled": true, "loginUrl": "https://login.salesforce.com/services/oauth2/token",
     "clientId": "3MVG9...", "clientSecret": {"$crypto": {"type": "x-simple-encryption", ...}}}

A key present here wins over the provisioner file's (and over its ``KEY_file`` and
``&{...}`` tokens, which are then not read). The secret is encrypted with idsync's
own key (``[crypto]``), as ``$crypto`` values are; it is decrypted only when a
connection is opened. The directory is 0700, the file 0600, written whole or not
at all (a scratch file renamed into place).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from idsync.config.files import load_json
from idsync.crypto import Keyring, is_encrypted
from idsync.errors import ConfigError, CryptoFailed

__all__ = ["OVERLAY_KEYS", "PROPERTY_KEYS", "SECRET_KEYS", "check_login_url", "clear_properties", "overlay_file",
           "read_overlay", "write_overlay"]

PROPERTY_KEYS = ("loginUrl", "clientId", "clientSecret")  # laid over configurationProperties
OVERLAY_KEYS = ("enabled", *PROPERTY_KEYS)
SECRET_KEYS = frozenset({"clientSecret"})
_MAX_TEXT = 2000


def overlay_file(state_dir: Path, name: str) -> Path:
    return state_dir / "connectors" / f"{name}.json"


def check_login_url(url: str, *, file: str, key: str = "loginUrl") -> str:
    """``url`` if it is an https URL with a host and nothing that could carry a secret
    or change where a token request goes (no user, password, query or fragment)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(file, key, "is not a URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(file, key, "must be an https URL with a host name")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(file, key, "must not hold a user name, password, query or fragment")
    return url


def _text(value: Any, *, file: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, key, "must be a non-empty string")
    if len(value) > _MAX_TEXT or any(ord(c) < 32 for c in value):
        raise ConfigError(file, key, f"must be one line of at most {_MAX_TEXT} characters")
    return value.strip()


def _checked(raw: Any, *, file: str) -> dict[str, Any]:
    """The overlay's values, each checked; errors name the file and the key, never a value."""
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "expected a JSON object")
    unknown = sorted(set(raw) - set(OVERLAY_KEYS))
    if unknown:
        raise ConfigError(file, unknown[0], f"unknown key (known: {', '.join(OVERLAY_KEYS)})")
    out: dict[str, Any] = {}
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise ConfigError(file, "enabled", "must be true or false")
        out["enabled"] = raw["enabled"]
    if "loginUrl" in raw:
        out["loginUrl"] = check_login_url(_text(raw["loginUrl"], file=file, key="loginUrl"), file=file)
    if "clientId" in raw:
        out["clientId"] = _text(raw["clientId"], file=file, key="clientId")
    if "clientSecret" in raw:
        if not is_encrypted(raw["clientSecret"]):
            raise ConfigError(file, "clientSecret", "must be encrypted ($crypto): save it again in the console")
        out["clientSecret"] = raw["clientSecret"]
    return out


def read_overlay(state_dir: Path | None, name: str) -> dict[str, Any]:
    """The console's settings of system ``name`` (``{}`` without any), the secret still encrypted."""
    if state_dir is None:
        return {}
    path = overlay_file(state_dir, name)
    try:
        path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:  # the state directory is the service's own (0700): run as its user
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}; run idsync as the service's user") from None
    raw = load_json(path, secrets=False)  # a secret in it is encrypted, never a token to substitute
    return _checked(raw, file=str(path))


def clear_properties(overlay: Mapping[str, Any], keyring: Keyring | None, *, file: str) -> dict[str, Any]:
    """The overlay's ``configurationProperties`` keys with the secret decrypted."""
    out: dict[str, Any] = {}
    for key in PROPERTY_KEYS:
        if key not in overlay:
            continue
        if key in SECRET_KEYS:
            if keyring is None:
                raise ConfigError(file, key, "is encrypted and idsync's key is not at hand")
            try:
                out[key] = keyring.decrypt(overlay[key])
            except CryptoFailed as exc:  # idsync's key changed since it was saved
                raise ConfigError(file, key, f"{exc}; save it again in the console") from None
        else:
            out[key] = overlay[key]
    return out


def write_overlay(state_dir: Path, name: str, values: Mapping[str, Any]) -> Path:
    """Check ``values`` (the secret already encrypted) and write them as system ``name``'s
    overlay, replacing the previous one whole; nothing is written if a value is refused."""
    path = overlay_file(state_dir, name)
    checked = _checked(dict(values), file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(checked, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path
