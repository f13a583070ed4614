"""PingIDM's outbound email service: ``conf/external.email.json``.

The file is PingIDM's; idsync reads these keys of it (``managed/email.py`` sends)::

    host                 the SMTP server (default localhost)
    port                 its port, a number or a string (default 25, 465 with ssl)
    ssl.enable           TLS from the first byte (SMTPS)
    starttls.enable      STARTTLS before anything else is sent; idsync then requires it (a
                         server that does not offer it is an error, not a message in clear)
    auth.enable          log in with auth.username and auth.password
    from                 the From: address of a message that gives none
    connectiontimeout    milliseconds to connect (default 30 s)
    timeout, writetimeout  milliseconds to wait for a read or a write (default 30 s); Python's
                         smtplib has one timeout for both, the larger of the two
    smtpProperties       JavaMail's ``mail.smtp.*`` settings as ``"name=value"`` strings (or an
                         object); those of ``_PROPERTIES`` are followed, for ``mail.smtps.*`` too
    caFile               idsync's own: the PEM CA certificates to verify the server against,
                         instead of the system's (relative to the project directory)

TLS is verified: the chain, and the host name unless ``mail.smtp.ssl.checkserveridentity``
is false; ``mail.smtp.ssl.trust`` set to ``*`` or naming the host turns verification off,
as in JavaMail (``validate`` says so in a note).

``validate`` warns, naming the key, of what idsync reads and does not act on: ``debug``
(idsync never prints the SMTP dialogue, which carries the credentials), ``threadPoolSize``
(a message is sent in the caller's thread), ``mailEndpoint``, and any other
``mail.smtp.*`` property. A key neither idsync's nor PingIDM's is an error with the
nearest known key, as everywhere (a misspelt ``starttls`` must not send in clear), and so
is PingIDM's ``type`` ``msgraph`` (idsync sends over SMTP only).

The password (``auth.password``: a ``$crypto`` value PingIDM or idsync encrypted, a
``&{ENV}`` token, or ``auth.password_file``) is substituted and decrypted only when a
message is sent (``EmailConfig.password``), as a provisioner's secrets are, so commands
that send nothing work without it; ``validate`` resolves it. What scripts read as
``config/external.email`` (``EmailConfig.shown``) never holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from idsync.config.files import load_json, substitute
from idsync.crypto import Keyring, is_encrypted
from idsync.errors import ConfigError, ConfigErrors, ConfigNote, ConfigWarning, CryptoFailed
from idsync.keys import unknown_keys

__all__ = ["FILE_NAME", "EmailConfig", "load_email"]

FILE_NAME = "external.email.json"
_KEYS = {"host", "port", "debug", "from", "auth", "starttls", "ssl", "smtpProperties", "connectiontimeout", "timeout",
         "writetimeout", "threadPoolSize", "type", "mailEndpoint", "caFile", "_id"}
_AUTH_KEYS = {"enable", "username", "password", "password_file", "type"}
_ENABLE_KEYS = {"enable"}
_DEFAULT_TIMEOUT = 30.0
_MAX_TIMEOUT = 3600.0
# JavaMail's names for the TLS protocol versions.
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
# The mail.smtp.* (and mail.smtps.*) properties idsync follows, with what each sets.
_PROPERTIES = {
    "ssl.protocols": "the TLS versions allowed",
    "ssl.trust": "hosts whose certificate is not verified",
    "ssl.checkserveridentity": "whether the host name is checked",
    "connectiontimeout": "connectiontimeout", "timeout": "timeout", "writetimeout": "writetimeout",
    "localhost": "the name said in EHLO",
    "starttls.required": "STARTTLS required (idsync always requires it when starttls.enable is true)",
}
_NOT_FOLLOWED = {
    "debug": "not followed: idsync does not print the SMTP dialogue (it carries the credentials); each message "
             "sent is logged (email.sent)",
    "threadPoolSize": "not used: idsync sends a message in the thread of the script or request that sends it",
    "mailEndpoint": "not used: it belongs to PingIDM's msgraph email service; idsync sends over SMTP",
}


@dataclass(frozen=True)
class EmailConfig:
    """How to reach the SMTP server; ``password()`` when a message is sent."""

    file: str
    host: str = "localhost"
    port: int = 25
    ssl: bool = False
    starttls: bool = False
    auth: bool = False
    username: str | None = None
    sender: str | None = None  # PingIDM's "from"
    connect_timeout: float = _DEFAULT_TIMEOUT
    timeout: float = _DEFAULT_TIMEOUT
    local_hostname: str | None = None
    ca_file: Path | None = None
    verify: bool = True
    check_hostname: bool = True
    tls_versions: tuple[str, ...] = ()
    # The configuration as scripts read it (``config/external.email``): no password.
    shown: Mapping[str, Any] = field(default_factory=dict)
    # What validate tells: keys not acted on, verification turned off.
    notes: tuple[ConfigWarning, ...] = ()
    project_dir: Path = Path(".")
    _secret: Mapping[str, Any] = field(default_factory=dict, repr=False)
    keyring: Keyring | None = field(default=None, compare=False, repr=False)

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def password(self) -> str:
        """``auth.password`` substituted and decrypted; a ConfigError naming the key, never the value."""
        value = substitute(dict(self._secret), file=self.file, base=self.project_dir, key="auth").get("password")
        if is_encrypted(value):
            if self.keyring is None:
                raise ConfigError(self.file, "auth.password", "is encrypted ($crypto) and idsync's key is not at hand")
            try:
                value = self.keyring.decrypt(value)
            except CryptoFailed as exc:  # names the key alias, never the value
                raise ConfigError(self.file, "auth.password", f"{exc}; give it through &{{ENV_NAME}} or "
                                  "auth.password_file instead") from None
        if not isinstance(value, str) or not value:
            raise ConfigError(self.file, "auth.password", "must be a non-empty string")
        return value


def load_email(conf_dir: Path, project_dir: Path, keyring: Keyring | None = None) -> EmailConfig | None:
    """``conf/external.email.json`` checked, or ``None`` without it; a ConfigError (or
    ConfigErrors) naming the file and key of what is wrong."""
    path = conf_dir / FILE_NAME
    if not path.is_file():
        return None
    file = str(path)
    raw = load_json(path, project_dir=project_dir, secrets=False)
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "expected a JSON object")
    auth_raw = _object(raw, "auth", _AUTH_KEYS, file)
    problems = [*unknown_keys(raw, _KEYS, file=file), *unknown_keys(auth_raw, _AUTH_KEYS, file=file, prefix="auth")]
    for key in ("starttls", "ssl"):
        problems += unknown_keys(_object(raw, key, _ENABLE_KEYS, file), _ENABLE_KEYS, file=file, prefix=key)
    if problems:
        raise ConfigErrors(problems) if len(problems) > 1 else problems[0]
    secret = {k: v for k, v in auth_raw.items() if k in ("password", "password_file")}
    # Everything but the password is substituted now: a variable that is not set is told at load.
    plain = substitute({k: v for k, v in raw.items() if k != "auth"}, file=file, base=project_dir)
    auth = substitute({k: v for k, v in auth_raw.items() if k not in secret}, file=file, base=project_dir, key="auth")
    return _parse(plain, auth, secret, file=file, project_dir=project_dir, keyring=keyring)


def _parse(plain: dict[str, Any], auth: dict[str, Any], secret: dict[str, Any], *, file: str, project_dir: Path,
           keyring: Keyring | None) -> EmailConfig:
    if plain.get("type", "smtp") not in ("smtp", "SMTP"):
        raise ConfigError(file, "type", f"{plain['type']!r}: idsync sends mail over SMTP only (type smtp)")
    if auth.get("type", "basic") not in ("basic", "BASIC"):
        raise ConfigError(file, "auth.type", f"{auth['type']!r}: idsync logs in to the SMTP server with a user name "
                          "and password only (type basic)")
    ssl = _bool((plain.get("ssl") or {}).get("enable"), file, "ssl.enable")
    starttls = _bool((plain.get("starttls") or {}).get("enable"), file, "starttls.enable")
    if ssl and starttls:
        raise ConfigError(file, "starttls.enable", "ssl.enable is true: the connection is TLS from the start, so "
                          "STARTTLS cannot follow; enable one of them")
    enabled = _bool(auth.get("enable"), file, "auth.enable")
    username = auth.get("username")
    if enabled and (not isinstance(username, str) or not username):
        raise ConfigError(file, "auth.username", "required when auth.enable is true")
    if enabled and not secret:
        raise ConfigError(file, "auth.password", "required when auth.enable is true")
    host = plain.get("host", "localhost")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise ConfigError(file, "host", "must be a host name or address")
    sender = plain.get("from")
    if sender is not None and (not isinstance(sender, str) or not _is_address(sender)):
        raise ConfigError(file, "from", "must be an email address, such as \"idsync@example.com\" or "
                          "\"Identity team <idsync@example.com>\"")
    props, notes = _smtp_properties(plain.get("smtpProperties"), file, host)
    notes += [ConfigWarning(file, key, why) for key, why in _NOT_FOLLOWED.items()
              if plain.get(key) not in (None, False)]
    verify = not _trusted(props.get("ssl.trust"), host)
    if not verify:
        notes.append(ConfigNote(file, "smtpProperties", f"the certificate of {host} is not verified "
                                "(mail.smtp.ssl.trust): anyone on the path can read the mail and the password"))
    shown = {"_id": "external.email", **plain, "auth": {**auth, "enable": enabled}}
    return EmailConfig(
        file=file, host=host, port=_port(plain.get("port"), file, 465 if ssl else 25), ssl=ssl, starttls=starttls,
        auth=enabled, username=username if enabled else None, sender=sender,
        connect_timeout=_millis(plain, props, "connectiontimeout", file),
        timeout=max(_millis(plain, props, "timeout", file), _millis(plain, props, "writetimeout", file)),
        local_hostname=props.get("localhost") or None, ca_file=_ca_file(plain.get("caFile"), file, project_dir),
        verify=verify, check_hostname=_bool(props.get("ssl.checkserveridentity", True), file, "smtpProperties"),
        tls_versions=_versions(props.get("ssl.protocols"), file), shown=shown, notes=tuple(notes),
        project_dir=project_dir, _secret=secret, keyring=keyring)


def _object(raw: Mapping[str, Any], key: str, known: set[str], file: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(file, key, f"expected an object with {', '.join(sorted(known))}")
    return value


def _bool(value: Any, file: str, key: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    # A "&{VARIABLE}" token becomes a string.
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in ("true", "false"):
        raise ConfigError(file, key, "must be true or false")
    return text == "true"


def _number(value: Any, file: str, key: str, low: float, high: float) -> float:
    try:
        number = float(value.strip()) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or not low <= number <= high:
        raise ConfigError(file, key, f"must be a number from {low:.0f} to {high:.0f}")
    return float(number)


def _port(value: Any, file: str, default: int) -> int:
    if value is None:
        return default
    port = _number(value, file, "port", 1, 65535)
    if port != int(port):
        raise ConfigError(file, "port", "must be a whole number")
    return int(port)


def _millis(plain: Mapping[str, Any], props: Mapping[str, str], key: str, file: str) -> float:
    """A timeout in seconds: the file's key, else its mail.smtp.* property, else the default."""
    if plain.get(key) is not None:
        return _number(plain[key], file, key, 1, _MAX_TIMEOUT * 1000) / 1000
    if key in props:
        try:
            return _number(props[key], file, "smtpProperties", 1, _MAX_TIMEOUT * 1000) / 1000
        except ConfigError as exc:
            raise ConfigError(file, "smtpProperties", f"mail.smtp.{key} (milliseconds) {exc.problem}") from None
    return _DEFAULT_TIMEOUT


def _ca_file(value: Any, file: str, project_dir: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(file, "caFile", "must be the path of a PEM file")
    path = Path(value) if Path(value).is_absolute() else project_dir / value
    if not path.is_file():
        raise ConfigError(file, "caFile", f"file {path} not found")
    return path


def _is_address(text: str) -> bool:
    if any(c in text for c in "\r\n\0"):
        return False
    _name, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in address)


def _smtp_properties(value: Any, file: str, host: str) -> tuple[dict[str, str], list[ConfigWarning]]:
    """The followed ``mail.smtp.*`` properties by their name after ``mail.smtp(s).``, and a
    warning for each of the others."""
    if value is None:
        return {}, []
    items: list[tuple[str, Any, Any]]
    if isinstance(value, dict):
        items = [(f"smtpProperties.{k}", k, v) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for i, entry in enumerate(value):
            name, eq, text = entry.partition("=") if isinstance(entry, str) else ("", "", "")
            if not eq or not name.strip():
                raise ConfigError(file, f"smtpProperties[{i}]", 'expected "name=value", such as '
                                  '"mail.smtp.ssl.protocols=TLSv1.2"')
            items.append((f"smtpProperties[{i}]", name, text))
    else:
        raise ConfigError(file, "smtpProperties", 'expected a list of "name=value" strings')
    props: dict[str, str] = {}
    notes: list[ConfigWarning] = []
    for key, name, text in items:
        name = str(name).strip()
        short = name.removeprefix("mail.smtps.").removeprefix("mail.smtp.")
        if short == name or short not in _PROPERTIES:
            notes.append(ConfigWarning(file, key, f"{name}: not followed: idsync acts on mail.smtp.{{"
                                       f"{','.join(_PROPERTIES)}}} only"))
        else:
            props[short] = str(text).strip()
    return props, notes


def _trusted(value: str | None, host: str) -> bool:
    """Whether JavaMail's ``ssl.trust`` trusts ``host`` without verifying it."""
    return value is not None and (value == "*" or host in value.split())


def _versions(value: str | None, file: str) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(value.split())
    wrong = [n for n in names if n not in TLS_VERSIONS]
    if wrong or not names:
        raise ConfigError(file, "smtpProperties", f"mail.smtp.ssl.protocols: {' '.join(wrong) or 'empty'}: expected "
                          f"some of {' '.join(TLS_VERSIONS)}")
    return names
