"""The keys of a Salesforce ``provisioner.openicf-<name>.json``.

PingIDM's ``configurationProperties`` are read as documented for its Salesforce
connector: ``loginUrl`` (the OAuth token endpoint of production, a sandbox or a
My Domain; a bare host gets ``/services/oauth2/token`` appended), ``clientId``,
``clientSecret``, ``refreshToken``, ``instanceUrl`` (optional: the token response
names the instance too), ``version`` (API version, ``44`` or ``"44.0"``),
``connectTimeout`` (ms) and ``idleCheckInterval`` (ms: a kept-alive connection
idle for longer is not reused; sessions themselves are refreshed when Salesforce
says they expired rather than by polling).

idsync adds ``readTimeout`` (ms), ``caFile`` (a PEM bundle to trust instead of
the system's), ``verifyTls`` (true unless explicitly false), ``maxRetries`` and
``retryBackoff`` (ms, doubled per attempt) for REQUEST_LIMIT_EXCEEDED and 503,
``queryBatchSize`` (200 to 2000 records per query page) and ``objectTypes``
(``{"User": {"properties": {"Email": {}, ...}}}``: the fields read by default).

A key a letter or two off one of these (``versoin``, ``maxRetires``) is an error naming
the key meant, since the setting it meant would keep its default in silence; any other
unknown key, and a proxy setting (not acted on: ``HTTPS_PROXY`` is), is a ``validate``
warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import unknown_settings

__all__ = ["DEFAULT_USER_FIELDS", "SalesforceSettings", "parse_salesforce_config", "token_url"]

_TOKEN_PATH = "/services/oauth2/token"
_PRESETS = {
    "production": "https://login.salesforce.com",
    "sandbox": "https://test.salesforce.com",
}
# The keys of configurationProperties idsync reads (``parse_salesforce_config``).
_USED = frozenset({
    "loginUrl", "clientId", "clientSecret", "refreshToken", "instanceUrl", "version", "connectTimeout",
    "readTimeout", "idleCheckInterval", "caFile", "verifyTls", "maxRetries", "retryBackoff", "queryBatchSize",
})
# PingIDM's proxy settings: told when set, as idsync goes through the proxy its environment names.
_PROXY = frozenset({"proxyHost", "proxyPort", "proxyUri", "proxyUsername", "proxyPassword"})
# The HTTP client's connection pool sizes itself: asks for nothing idsync would not do.
_HARMLESS = frozenset({"maximumConnections"})
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_OBJECT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# What a Salesforce User carries that identity sync usually needs; read when
# neither the mapping nor the provisioner names the fields.
DEFAULT_USER_FIELDS: tuple[str, ...] = (
    "Username", "FirstName", "LastName", "Email", "Alias", "IsActive", "Phone", "MobilePhone", "Title",
    "Department", "CompanyName", "FederationIdentifier", "CommunityNickname", "TimeZoneSidKey",
    "LocaleSidKey", "EmailEncodingKey", "LanguageLocaleKey", "ProfileId", "LastModifiedDate",
)


@dataclass(frozen=True)
class SalesforceSettings:
    token_url: str
    client_id: str
    client_secret: str
    refresh_token: str  # empty until an administrator's consent supplies one (``needs_consent``)
    instance_url: str | None
    version: str  # "v44.0"
    connect_timeout: float  # seconds
    read_timeout: float
    idle_check_interval: float  # seconds an idle kept-alive connection may be reused
    verify: bool | str  # True, False, or a CA bundle path
    max_retries: int
    retry_backoff: float  # seconds
    query_batch_size: int | None
    object_types: Mapping[str, tuple[str, ...]]  # type -> default fields
    # What the file asks for that idsync does not do, for ``validate``.
    warnings: tuple[ConfigWarning, ...] = ()

    def __repr__(self) -> str:  # never print the secrets
        return f"SalesforceSettings(token_url={self.token_url!r}, instance_url={self.instance_url!r})"


def token_url(login_url: str, file: str, key: str = "configurationProperties.loginUrl") -> str:
    """The OAuth token endpoint for a ``loginUrl`` written as a preset, a host or the full URL."""
    url = _PRESETS.get(login_url.strip().lower(), login_url.strip())
    parts = _split(url)
    if parts is None:
        raise ConfigError(file, key, "must be an https URL (or 'production' / 'sandbox')")
    path = parts.path.rstrip("/")
    if not path.endswith(_TOKEN_PATH):
        path += _TOKEN_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


def _split(url: str) -> SplitResult | None:
    """``url`` split, or None unless it is an http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts if parts.scheme in ("https", "http") and parts.hostname else None


def _ms(props: Mapping[str, Any], key: str, default: int, file: str) -> float:
    value = props.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    # Past a day a duration means "never" and only overflows the clock arithmetic below it.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 86_400_000:
        raise ConfigError(file, f"configurationProperties.{key}", "must be a number of milliseconds up to a day")
    return value / 1000


def _version(value: Any, file: str) -> str:
    text = str(value if value is not None else "59.0").strip().lstrip("vV")
    if not re.fullmatch(r"\d{2,3}(\.0)?", text):
        raise ConfigError(file, "configurationProperties.version", "must be an API version such as 44 or 59.0")
    return f"v{text if '.' in text else text + '.0'}"


def _required(props: Mapping[str, Any], key: str, file: str) -> str:
    value = props.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, f"configurationProperties.{key}", "is required")
    return value.strip()


def _ignored(file: str, props: Mapping[str, Any]) -> list[ConfigWarning]:
    """Warnings for the unknown keys and a proxy asked for; raises ConfigError for a key
    that is a misspelling of a known one."""
    warnings = unknown_settings(props, _USED | _PROXY | _HARMLESS, file=file)
    warnings += [ConfigWarning(file, f"configurationProperties.{key}", "not acted on: set HTTPS_PROXY in "
                               "idsync's environment to go through a proxy")
                 for key in sorted(_PROXY) if props.get(key) not in (None, "", 0)]
    return warnings


def _object_types(raw: Any, file: str) -> dict[str, tuple[str, ...]]:
    types: dict[str, tuple[str, ...]] = {"User": DEFAULT_USER_FIELDS}
    if raw is None:
        return types
    if not isinstance(raw, Mapping):
        raise ConfigError(file, "objectTypes", "must be an object of object types")
    for name, definition in raw.items():
        if name == "__ALL__":
            continue
        if not _OBJECT_TYPE.fullmatch(name):
            raise ConfigError(file, f"objectTypes.{name}", "is not an sObject name")
        props = (definition or {}).get("properties") if isinstance(definition, Mapping) else None
        fields = [f for f in (props or {}) if f not in ("__NAME__", "__UID__", "Id", "_id")]
        for field in fields:
            if not _FIELD.fullmatch(field):
                raise ConfigError(file, f"objectTypes.{name}.properties.{field}", "is not a field name")
        types[name] = tuple(fields) or types.get(name, ())
    return types


def parse_salesforce_config(file: str, config: Mapping[str, Any], *,
                            stored_token: str | None = None) -> SalesforceSettings:
    """Validate the provisioner's configuration; errors name the key, never a value.
    ``stored_token``, the refresh token of an administrator's consent in the console, is
    used instead of ``refreshToken``; ``""`` says a consent can supply one, so none need be
    configured yet; None (no state directory to keep one in) makes ``refreshToken`` required."""
    props = config.get("configurationProperties") or {}
    if not isinstance(props, Mapping):
        raise ConfigError(file, "configurationProperties", "must be an object")
    warnings = _ignored(file, props)
    instance = props.get("instanceUrl")
    if instance:
        parts = _split(str(instance).strip())
        if parts is None:
            raise ConfigError(file, "configurationProperties.instanceUrl", "must be an https URL")
        instance = f"{parts.scheme}://{parts.netloc}"
    verify: bool | str = props.get("verifyTls", True) is not False
    if props.get("caFile"):
        if not isinstance(props["caFile"], str) or not Path(props["caFile"]).is_file():
            raise ConfigError(file, "configurationProperties.caFile", "must name an existing CA certificate file")
        verify = props["caFile"] if verify else False
    batch = props.get("queryBatchSize")
    if batch is not None and (not isinstance(batch, int) or not 200 <= batch <= 2000):
        raise ConfigError(file, "configurationProperties.queryBatchSize", "must be a number from 200 to 2000")
    retries = props.get("maxRetries", 5)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(file, "configurationProperties.maxRetries", "must be a number of retries")
    return SalesforceSettings(
        token_url=token_url(str(props.get("loginUrl") or "production"), file),
        client_id=_required(props, "clientId", file),
        client_secret=_required(props, "clientSecret", file),
        refresh_token=stored_token or (_required(props, "refreshToken", file) if stored_token is None
                                       else str(props.get("refreshToken") or "").strip()),
        instance_url=str(instance) if instance else None,
        version=_version(props.get("version"), file),
        connect_timeout=_ms(props, "connectTimeout", 120000, file),
        read_timeout=_ms(props, "readTimeout", 120000, file),
        idle_check_interval=_ms(props, "idleCheckInterval", 10000, file),
        verify=verify,
        max_retries=retries,
        retry_backoff=_ms(props, "retryBackoff", 1000, file),
        query_batch_size=batch,
        object_types=_object_types(config.get("objectTypes"), file),
        warnings=tuple(warnings),
    )
