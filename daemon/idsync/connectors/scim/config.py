"""The SCIM connector's configuration: a ``provisioner.openicf-<name>.json`` read into
frozen dataclasses, every problem a ``ConfigError`` naming the file and the key.

``configurationProperties`` keeps the OpenICF SCIM connector's names (``SCIMEndpoint``,
``SCIMVersion``, ``authenticationMethod`` OAUTH/TOKEN/BASIC, ``clientId``,
``clientSecret``, ``tokenEndpoint``, ``authToken``, ``user``, ``password``); ``null``
is accepted for whatever the chosen method does not use. ``objectTypes`` maps each
property to a SCIM attribute path (``nativeName``): ``userName``, ``name.givenName``,
``emails[type eq "work"].value``, an extension's ``urn:...:User:employeeNumber``,
or a group's ``members`` (a core attribute may carry its schema URN; the enterprise
URN of either version is read as the configured version's). Without ``objectTypes`` a
default ``account`` and ``group`` are served. Secrets arrive substituted and never appear in messages.

A key of ``configurationProperties`` a letter or two off a known one (``pageSise``) is
an error naming the key meant: the setting it meant would keep its default in silence.
Any other unknown key, and a PingIDM setting idsync does not act on set to something
that asks for it (a proxy, no host name check), is a ``validate`` warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from idsync.connectors.scim.paths import AttrPath, parse_path
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import unknown_settings

__all__ = [
    "ScimObjectType",
    "ScimProperty",
    "ScimSettings",
    "parse_scim_config",
    "schema_urns",
]

_ENTERPRISE = {
    1: "urn:scim:schemas:extension:enterprise:1.0",
    2: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
}
_CORE = {
    1: {"User": "urn:scim:schemas:core:1.0", "Group": "urn:scim:schemas:core:1.0"},
    2: {"User": "urn:ietf:params:scim:schemas:core:2.0:User", "Group": "urn:ietf:params:scim:schemas:core:2.0:Group"},
}
# The keys of configurationProperties idsync reads (``_settings``).
_USED = frozenset({
    "SCIMEndpoint", "SCIMVersion", "authenticationMethod", "clientId", "clientSecret", "tokenEndpoint", "scope",
    "grantType", "authToken", "user", "password", "acceptSelfSignedCertificates", "caFile", "connectTimeout",
    "readTimeout", "pageSize", "maximumRetries", "maximumRetryWait", "tokenRenewSeconds", "liveSyncOverlap",
})
# OpenICF SCIM connector settings idsync does not act on -> why, told when set to ask for something.
_NOT_ACTED_ON: Mapping[str, str] = {
    "httpProxyHost": "set HTTPS_PROXY in idsync's environment to go through a proxy",
    "httpProxyPort": "set HTTPS_PROXY in idsync's environment to go through a proxy",
    "httpProxyUsername": "set HTTPS_PROXY in idsync's environment to go through a proxy",
    "httpProxyPassword": "set HTTPS_PROXY in idsync's environment to go through a proxy",
    "disableHostNameVerifier": "the certificate's host name is always checked (acceptSelfSignedCertificates "
                               "turns all TLS checks off)",
}
# The HTTP client's connection pool sizes itself: asks for nothing idsync would not do.
_HARMLESS = frozenset({"maximumConnections"})
_NATIVE_TYPES = {"__ACCOUNT__": ("Users", "User"), "__GROUP__": ("Groups", "Group")}
_DEFAULT_TYPES: Mapping[str, Any] = {
    "account": {"nativeType": "__ACCOUNT__", "properties": {
        "userName": {"type": "string", "required": True},
        "displayName": {"type": "string"},
        "givenName": {"type": "string", "nativeName": "name.givenName"},
        "familyName": {"type": "string", "nativeName": "name.familyName"},
        "email": {"type": "string", "nativeName": 'emails[primary eq true].value'},
        "active": {"type": "boolean"},
    }},
    "group": {"nativeType": "__GROUP__", "properties": {
        "displayName": {"type": "string", "required": True},
        "members": {"type": "array", "memberReference": "userName"},
    }},
}


@dataclass(frozen=True)
class ScimProperty:
    """One property of an object type and the SCIM attribute path behind it."""

    name: str
    path: AttrPath
    is_array: bool
    flags: frozenset[str]
    # For a Group's ``members``: the User attribute members are named by
    # (``userName``), or None for the SCIM ids themselves.
    member_reference: str | None = None

    @property
    def is_members(self) -> bool:
        return self.path.attribute == "members" and self.path.urn is None


@dataclass(frozen=True)
class ScimObjectType:
    """One object type (``account``, ``group``) and the SCIM endpoint it lives at."""

    name: str
    native_type: str
    endpoint: str  # "Users", "Groups"
    resource_type: str  # "User", "Group"
    properties: Mapping[str, ScimProperty]

    def readable(self) -> list[ScimProperty]:
        hidden = {"NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"}
        return [p for p in self.properties.values() if not p.flags & hidden]

    def members(self) -> ScimProperty | None:
        return next((p for p in self.properties.values() if p.is_members), None)


@dataclass(frozen=True)
class ScimSettings:
    """``configurationProperties`` of one SCIM system."""

    endpoint: str
    version: int
    auth_method: str  # OAUTH, TOKEN, BASIC, NONE
    client_id: str | None
    client_secret: str | None
    token_endpoint: str | None
    scope: str | None
    auth_token: str | None
    user: str | None
    password: str | None
    verify_tls: bool
    ca_file: str | None
    connect_timeout: float
    read_timeout: float
    page_size: int
    max_retries: int
    max_retry_wait: float
    token_renew_seconds: float
    # liveSync asks this far back before its high-water mark (see ``changes``).
    live_sync_overlap: float = 60.0
    # What the file asks for that idsync does not do, for ``validate``.
    warnings: tuple[ConfigWarning, ...] = ()


def schema_urns(version: int, resource_type: str) -> tuple[str, str]:
    """(core schema URN, enterprise extension URN) of a SCIM version."""
    return _CORE[version][resource_type], _ENTERPRISE[version]


def _str(file: str, props: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = props.get(key, default)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(file, f"configurationProperties.{key}", "must be a string")
    return value


def _flag(file: str, props: Mapping[str, Any], key: str) -> bool:
    """A true/false key, off when absent; ``"&{VAR|false}"`` substitutions arrive as strings."""
    value = props.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(file, f"configurationProperties.{key}", "must be true or false")


def _number(file: str, props: Mapping[str, Any], key: str, default: float, *, millis: bool = False) -> float:
    value = props.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(file, f"configurationProperties.{key}", "must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(file, f"configurationProperties.{key}", "must be a number") from None
    if not math.isfinite(number):
        raise ConfigError(file, f"configurationProperties.{key}", "must be a finite number")
    if number < 0:
        raise ConfigError(file, f"configurationProperties.{key}", "must not be negative")
    # OpenICF writes timeouts in milliseconds; a value above 1000 is taken as such.
    seconds = number / 1000 if millis and number > 1000 else number
    if seconds > 86_400:
        # Past a day a timeout means "never" and only overflows the clock arithmetic below it.
        raise ConfigError(file, f"configurationProperties.{key}", "must be at most a day")
    return seconds


def _url(file: str, props: Mapping[str, Any], key: str) -> str | None:
    """An http(s) URL with a host (and a valid port, if any), or None when absent."""
    value = _str(file, props, key)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(file, f"configurationProperties.{key}", "must be an http(s) URL")
    return value


def _ca_file(file: str, props: Mapping[str, Any]) -> str | None:
    value = _str(file, props, "caFile")
    if value is not None and not Path(value).is_file():
        raise ConfigError(file, "configurationProperties.caFile", f"file {value} not found")
    return value


def _ignored(file: str, props: Mapping[str, Any]) -> list[ConfigWarning]:
    """Warnings for the unknown keys, and for the settings idsync does not act on that ask
    for something; raises ConfigError for a key that is a misspelling of a known one."""
    warnings = unknown_settings(props, {*_USED, *_NOT_ACTED_ON, *_HARMLESS}, file=file)
    for key, why in _NOT_ACTED_ON.items():
        if props.get(key) not in (None, "", False, "false", 0):
            warnings.append(ConfigWarning(file, f"configurationProperties.{key}", f"not acted on: {why}"))
    return warnings


def _settings(file: str, props: Mapping[str, Any]) -> ScimSettings:
    warnings = _ignored(file, props)
    endpoint = _url(file, props, "SCIMEndpoint")
    if not endpoint:
        raise ConfigError(file, "configurationProperties.SCIMEndpoint", "must be an http(s) URL")
    raw_version = str(props.get("SCIMVersion") or "2").strip()
    version = {"1": 1, "1.1": 1, "2": 2, "2.0": 2}.get(raw_version)
    if version is None:
        raise ConfigError(file, "configurationProperties.SCIMVersion", "must be 1 (SCIM 1.1) or 2 (SCIM 2.0)")
    client_id, auth_token, user = (_str(file, props, k) for k in ("clientId", "authToken", "user"))
    method = (_str(file, props, "authenticationMethod") or "").upper()
    if not method:  # inferred from what is filled in
        method = "OAUTH" if client_id else "TOKEN" if auth_token else "BASIC" if user else "NONE"
    needed = {"OAUTH": ("clientId", "clientSecret", "tokenEndpoint"), "TOKEN": ("authToken",),
              "BASIC": ("user", "password"), "NONE": ()}
    if method not in needed:
        raise ConfigError(file, "configurationProperties.authenticationMethod", "must be OAUTH, TOKEN, BASIC or NONE")
    for key in needed[method]:
        if not props.get(key):
            raise ConfigError(file, f"configurationProperties.{key}", f"is required with authenticationMethod {method}")
    grant = _str(file, props, "grantType", "client_credentials")
    if method == "OAUTH" and grant != "client_credentials":
        raise ConfigError(file, "configurationProperties.grantType", "only client_credentials is supported")
    return ScimSettings(
        endpoint=endpoint.rstrip("/"), version=version, auth_method=method, scope=_str(file, props, "scope"),
        verify_tls=not _flag(file, props, "acceptSelfSignedCertificates"),
        ca_file=_ca_file(file, props),
        connect_timeout=_number(file, props, "connectTimeout", 10.0, millis=True),
        read_timeout=_number(file, props, "readTimeout", 30.0, millis=True),
        page_size=int(_number(file, props, "pageSize", 100)) or 100,
        max_retries=int(_number(file, props, "maximumRetries", 4)),
        max_retry_wait=_number(file, props, "maximumRetryWait", 60.0),
        token_renew_seconds=_number(file, props, "tokenRenewSeconds", 60.0),
        live_sync_overlap=_number(file, props, "liveSyncOverlap", 60.0),
        client_id=client_id, client_secret=_str(file, props, "clientSecret"),
        token_endpoint=_url(file, props, "tokenEndpoint"), auth_token=auth_token,
        user=user, password=_str(file, props, "password"), warnings=tuple(warnings),
    )


def _native_path(path: AttrPath, version: int, resource_type: str) -> AttrPath:
    """``path`` as the provider's SCIM version spells it: a core attribute written with
    its schema URN (``urn:...:core:2.0:User:userName``) is the top-level attribute, and
    the enterprise extension's URN is the version's own, so one mapping serves both."""
    if path.urn is None:
        return path
    urn = path.urn.lower()
    if urn in (_CORE[1][resource_type].lower(), _CORE[2][resource_type].lower()):
        return replace(path, urn=None)
    if urn in (_ENTERPRISE[1].lower(), _ENTERPRISE[2].lower()) and resource_type == "User":
        return replace(path, urn=_ENTERPRISE[version])
    return path


def _object_type(file: str, name: str, raw: Any, version: int) -> ScimObjectType:
    where = f"objectTypes.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(file, where, "must be an object")
    native = str(raw.get("nativeType") or ("__GROUP__" if name == "group" else "__ACCOUNT__"))
    if native not in _NATIVE_TYPES:
        raise ConfigError(file, f"{where}.nativeType", "must be __ACCOUNT__ or __GROUP__")
    endpoint, resource_type = _NATIVE_TYPES[native]
    props: dict[str, ScimProperty] = {}
    for prop_name, spec in (raw.get("properties") or {}).items():
        if prop_name in ("_id", "__UID__", "__NAME__") or not isinstance(spec, Mapping):
            continue
        native_name = str(spec.get("nativeName") or prop_name)
        try:
            path = _native_path(parse_path(native_name), version, resource_type)
        except ValueError as exc:
            raise ConfigError(file, f"{where}.properties.{prop_name}.nativeName", str(exc)) from None
        raw_flags = spec.get("flags") or []
        if not isinstance(raw_flags, list):
            raise ConfigError(file, f"{where}.properties.{prop_name}.flags", "must be a list of flags")
        flags = frozenset(str(f) for f in raw_flags)
        reference = spec.get("memberReference")
        props[prop_name] = ScimProperty(prop_name, path, spec.get("type") == "array", flags,
                                        str(reference) if reference else None)
    return ScimObjectType(name, native, endpoint, resource_type, props)


def parse_scim_config(file: str, config: Mapping[str, Any]) -> tuple[ScimSettings, dict[str, ScimObjectType]]:
    """The settings and object types of a SCIM provisioner file."""
    props = config.get("configurationProperties")
    if not isinstance(props, Mapping):
        raise ConfigError(file, "configurationProperties", "must be an object")
    settings = _settings(file, props)
    raw_types = config.get("objectTypes") or _DEFAULT_TYPES
    if not isinstance(raw_types, Mapping):
        raise ConfigError(file, "objectTypes", "must be an object")
    return settings, {name: _object_type(file, name, raw, settings.version) for name, raw in raw_types.items()}
