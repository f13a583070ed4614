"""What the connectors share: a configured external system (``System``) and the
answer of its ``system?_action=test``. The objects a system serves are
``idsync.resource.Resource``s, the protocol the store speaks too."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from os import EX_UNAVAILABLE
from typing import Any, TypeVar

from idsync.errors import ConfigError, IdsyncError
from idsync.resource import QuerySpec, Resource

T = TypeVar("T")

__all__ = [
    "ColumnObjectType",
    "ColumnProperty",
    "System",
    "SystemTestReport",
    "account_properties",
    "object_type_named",
    "refuse_native",
    "system_test_report",
    "utc_datetime",
]


class System(ABC):
    """One configured external system (a ``provisioner.openicf-NAME.json``)."""

    name: str

    @abstractmethod
    def resource(self, object_type: str, *, dry_run: bool = False) -> Resource:
        """The resource ``system/NAME/object_type``; ConfigError if unknown."""

    @abstractmethod
    def test(self) -> Mapping[str, Any]:
        """PingIDM's ``system?_action=test`` shape: name, enabled, config, objectTypes, ok, error."""

    def warnings(self) -> list[ConfigError]:
        """What the provisioner asks for that the connector does not do (``ConfigWarning``)."""
        return []

    # An administrator's consent (OAuth 2.0 authorization code): a system that takes one
    # answers ``needs_consent`` with a bool and implements the two steps.

    def needs_consent(self) -> bool | None:
        """None when the system takes no consent; else whether it has no credential yet."""
        return None

    def consent_url(self, redirect_uri: str, state: str, code_challenge: str) -> str:
        """The provider's page where the administrator logs in and allows access."""
        raise ConfigError("", "", f"system {self.name} takes no consent")

    def complete_consent(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        """Exchange the code the provider sent back and keep the credential where this
        system reads it; a description of the outcome, without any secret."""
        raise ConfigError("", "", f"system {self.name} takes no consent")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class SystemTestReport(dict[str, Any]):
    """A ``system?_action=test`` answer. ``exit_code`` (not in the answer) is the exit code of
    the failure for ``idsync test``: 77 refused credentials, 78 configuration, 69 unreachable."""

    exit_code: int = 0

    def failed(self, error: IdsyncError | str, exit_code: int | None = None) -> None:
        self.update(ok=False, error=str(error))
        self.exit_code = exit_code or (error.exit_code if isinstance(error, IdsyncError) else EX_UNAVAILABLE)


def system_test_report(name: str, config: Mapping[str, Any], display_name: str,
                       object_types: list[str]) -> SystemTestReport:
    """The ``system?_action=test`` answer of a system that works; ``failed`` records a failure."""
    return SystemTestReport({
        "name": name,
        "enabled": bool(config.get("enabled", True)),
        "config": f"config/provisioner.openicf/{name}",
        "connectorRef": dict(config.get("connectorRef") or {}),
        "displayName": display_name,
        # PingIDM's provisioner adds the __ALL__ object class to every connector's types.
        "objectTypes": ["__ALL__", *(t for t in object_types if t != "__ALL__")],
        "ok": True,
    })


def utc_datetime(value: str) -> dt.datetime | None:
    """An ISO 8601 date a peer wrote (``Z``, ``+00:00`` or ``+0000``; none: UTC) in UTC,
    or None when it is not one."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def account_properties(file: str, raw: Any, connector: str,
                       types: Collection[str]) -> Iterator[tuple[str, list[tuple[str, str, Mapping[str, Any]]]]]:
    """The ``objectTypes`` of a connector that serves ``__ACCOUNT__`` rows only (a CSV file,
    a database table): each type's name and its properties as (key prefix, name, spec),
    every spec an object whose ``type`` is one of ``types``; ``ConfigError`` naming the key
    of the first that is not."""
    if not isinstance(raw, dict):
        raise ConfigError(file, "objectTypes", "expected an object")
    for type_name, spec in raw.items():
        at = f"objectTypes.{type_name}"
        if not isinstance(spec, dict):
            raise ConfigError(file, at, "expected an object")
        native = spec.get("nativeType", spec.get("id", "__ACCOUNT__"))
        if native != "__ACCOUNT__":
            raise ConfigError(file, f"{at}.nativeType", f"the {connector} serves __ACCOUNT__ rows only, not {native!r}")
        props = spec.get("properties") or {}
        if not isinstance(props, dict):
            raise ConfigError(file, f"{at}.properties", "expected an object")
        found: list[tuple[str, str, Mapping[str, Any]]] = []
        for name, prop in props.items():
            where = f"{at}.properties.{name}"
            if not isinstance(prop, dict):
                raise ConfigError(file, where, "expected an object")
            kind = prop.get("type", "string")
            if kind not in types:
                raise ConfigError(file, f"{where}.type", f"a column holds one value: {kind!r} is not one of "
                                                         f"{', '.join(sorted(types))}")
            found.append((where, name, prop))
        yield type_name, found


@dataclass(frozen=True)
class ColumnProperty:
    """One property of a row-shaped object type (a CSV file, a database table) and the
    column behind it."""

    name: str
    column: str
    type: str  # string, boolean, integer or number: what a read makes of the column's value
    required: bool
    flags: frozenset[str]

    @property
    def readable(self) -> bool:
        return "NOT_READABLE" not in self.flags and "NOT_RETURNED_BY_DEFAULT" not in self.flags


@dataclass(frozen=True)
class ColumnObjectType:
    name: str
    properties: tuple[ColumnProperty, ...]  # empty: one property per column


def object_type_named(types: Mapping[str, T], name: str, file: str) -> T:
    """The object type ``name`` of a provisioner's ``objectTypes``; ``ConfigError`` naming
    the ones there are."""
    found = types.get(name)
    if found is None:
        raise ConfigError(file, "objectTypes", f"no object type {name!r} (known: {', '.join(types)})")
    return found


def refuse_native(spec: QuerySpec, resource: str, connector: str) -> None:
    """A connector that reads by ``_queryFilter`` only refuses a native query, naming itself."""
    if spec.native is not None:
        raise ConfigError(resource, "nativeQuery",
                          f"the {connector} connector takes a _queryFilter, not a native query")
