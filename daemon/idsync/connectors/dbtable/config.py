"""The Database Table connector's configuration: a ``provisioner.openicf-<name>.json``
whose ``connectorRef`` names OpenICF's ``DatabaseTableConnector``, read into a frozen
dataclass; every problem a ``ConfigError`` naming the file and the key, never a secret.

``configurationProperties`` keeps OpenICF's names. Where the table is: ``jdbcDriver``,
``jdbcUrlTemplate``, ``host``, ``port``, ``database`` or ``url``, ``user``,
``password`` (``jdbc.py``; the pooled variant's ``driverClassName`` and ``username``
too). What it is: ``table`` (``schema.table`` names a schema), ``keyColumn``
(required: each row's ``_id``, ``__NAME__`` and ``__UID__``), ``passwordColumn``
(``__PASSWORD__``, written and never read), ``changeLogColumn`` (liveSync,
``changes.py``). How: ``quoting`` (any quoting takes the names exactly as written;
none, the default, as the database takes unquoted names: PostgreSQL folds them to
lower case), ``enableEmptyString`` (false: an empty string is written as NULL),
``validConnectionQuery`` (what ``idsync test`` runs). Accepted and not acted on, a
``validate`` warning each when set to what idsync does not do: ``nativeTimestamps``,
``allNative``, ``rethrowAllSQLExceptions`` false, ``suppressPassword`` false,
``datasource``, ``jndiProperties`` and the connection pool's settings. A key a
letter or two off one of these is an error naming the key meant; any other is a
``validate`` warning, with the nearest known key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.connectors.base import ColumnObjectType, ColumnProperty, account_properties
from idsync.connectors.dbtable.jdbc import Database, parse_database
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import unknown_settings

__all__ = ["DbObjectType", "DbProperty", "DbTableSettings", "parse_dbtable_config"]

_WHERE = "configurationProperties"
_CONNECTION = frozenset({"host", "port", "database", "user", "password", "jdbcDriver", "jdbcUrlTemplate", "url",
                         "username", "driverClassName"})
_KNOWN = _CONNECTION | {"table", "keyColumn", "passwordColumn", "changeLogColumn", "quoting", "enableEmptyString",
                        "validConnectionQuery", "validationQuery", "rethrowAllSQLExceptions", "nativeTimestamps",
                        "allNative", "suppressPassword", "datasource", "jndiProperties"}
# The pooled variant's Tomcat JDBC pool settings: idsync keeps a small pool of its own.
_POOL = frozenset({"initialSize", "maxActive", "maxIdle", "minIdle", "maxWait", "testOnBorrow", "testOnReturn",
                   "testWhileIdle", "validationInterval", "timeBetweenEvictionRunsMillis", "numTestsPerEvictionRun",
                   "minEvictableIdleTimeMillis", "removeAbandoned", "removeAbandonedTimeout", "logAbandoned",
                   "defaultAutoCommit", "defaultReadOnly", "defaultTransactionIsolation", "defaultCatalog",
                   "connectionProperties", "initSQL", "jdbcInterceptors", "jmxEnabled", "fairQueue", "maxAge",
                   "useEquals", "abandonWhenPercentageFull", "suspectTimeout", "alternateUsernameAllowed",
                   "commitOnReturn", "rollbackOnReturn", "useDisposableConnectionFacade", "logValidationErrors",
                   "propagateInterruptState", "accessToUnderlyingConnectionAllowed", "validatorClassName"})
# Set to these values, a flag asks for what idsync does not do (its default is what idsync does).
_NOT_ACTED_ON = {
    "nativeTimestamps": (True, "timestamps and dates are always read as ISO 8601 text"),
    "allNative": (True, "each value is read as its property's type (string unless objectTypes says otherwise)"),
    "rethrowAllSQLExceptions": (False, "idsync reports every SQL error"),
    "suppressPassword": (False, "the password column is never read back"),
}
_QUOTING = frozenset({"", "none", "double", "single", "back", "brackets"})
_TYPES = {"string": "string", "null": "string", "boolean": "boolean", "integer": "integer", "number": "number",
          "double": "number"}
_ACCOUNT: Mapping[str, Any] = {"nativeType": "__ACCOUNT__", "properties": {}}


# A table's column behind a property, and the object type of the rows (``connectors/base.py``).
DbProperty = ColumnProperty
DbObjectType = ColumnObjectType


@dataclass(frozen=True)
class DbTableSettings:
    database: Database
    table: str
    schema: str | None
    key: str
    password: str | None
    change_log: str | None
    exact_names: bool  # ``quoting`` set: names are taken as written, case included
    empty_strings: bool  # ``enableEmptyString``
    valid_query: str | None
    types: Mapping[str, DbObjectType]
    warnings: tuple[ConfigWarning, ...]


def parse_dbtable_config(file: str, config: Mapping[str, Any], base: Path) -> DbTableSettings:
    """The settings of one Database Table provisioner, its secrets substituted;
    ``base``: what a relative SQLite path is under."""
    props = config.get("configurationProperties") or {}
    # First: a misspelt key (``keyColum``) is the error to tell, not the setting it left unset.
    warnings: list[ConfigWarning] = unknown_settings(props, _KNOWN | _POOL, file=file, prefix=_WHERE)
    datasource = props.get("datasource")
    if datasource and not any(props.get(k) for k in ("url", "jdbcUrlTemplate", "jdbcDriver", "driverClassName")):
        raise ConfigError(file, f"{_WHERE}.datasource", "a JNDI data source of an application server, which idsync "
                          "cannot look up: set jdbcDriver and jdbcUrlTemplate (or url) instead")
    if datasource or props.get("jndiProperties"):
        warnings.append(ConfigWarning(file, f"{_WHERE}.{'datasource' if datasource else 'jndiProperties'}",
                                      "not acted on: idsync connects by the JDBC URL, never through JNDI"))
    database, url_warnings = parse_database(file, props, base)
    warnings += url_warnings
    table = _name(file, props, "table", required=True)
    assert table is not None
    schema, _, bare = table.rpartition(".") if "." in table else (database.schema or "", "", table)
    key = _name(file, props, "keyColumn", required=True)
    assert key is not None
    password = _name(file, props, "passwordColumn")
    change_log = _name(file, props, "changeLogColumn")
    if password is not None and password.casefold() == key.casefold():
        raise ConfigError(file, f"{_WHERE}.passwordColumn", "must differ from keyColumn")
    if change_log is not None and change_log.casefold() in {key.casefold(), (password or "").casefold()}:
        raise ConfigError(file, f"{_WHERE}.changeLogColumn", "must differ from keyColumn and passwordColumn")
    quoting = props.get("quoting") or ""
    if not isinstance(quoting, str) or quoting.lower() not in _QUOTING:
        raise ConfigError(file, f"{_WHERE}.quoting", "expected none, double, single, back or brackets")
    flags = {k: _flag(file, props, k) for k in ("enableEmptyString", *_NOT_ACTED_ON)}
    for key_name, (odd, why) in _NOT_ACTED_ON.items():
        if flags[key_name] is odd:
            warnings.append(ConfigWarning(file, f"{_WHERE}.{key_name}", f"not acted on: {why}"))
    query = props.get("validConnectionQuery") or props.get("validationQuery")
    if query is not None and not isinstance(query, str):
        raise ConfigError(file, f"{_WHERE}.validConnectionQuery", "expected an SQL query")
    pool = sorted(k for k in props if k in _POOL)
    if pool:
        warnings.append(ConfigWarning(file, f"{_WHERE}.{pool[0]}", f"not acted on: {', '.join(pool)}: idsync "
                                      "keeps a small pool of connections of its own per system"))
    return DbTableSettings(
        database=database, table=bare, schema=schema or None, key=key, password=password, change_log=change_log,
        exact_names=quoting.lower() not in ("", "none"), empty_strings=flags["enableEmptyString"] is True,
        valid_query=query or None, types=_object_types(file, config.get("objectTypes") or {"account": _ACCOUNT},
                                                       key, password),
        warnings=tuple(warnings))


def _name(file: str, props: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = props.get(key)
    if value is None or value == "":
        if required:
            raise ConfigError(file, f"{_WHERE}.{key}", "required: " + (
                "the table's name" if key == "table" else "the column whose value is each row's id and name"))
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, f"{_WHERE}.{key}", "expected a name")
    return value.strip()


def _flag(file: str, props: Mapping[str, Any], key: str) -> bool | None:
    value = props.get(key)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is not None and not isinstance(value, bool):
        raise ConfigError(file, f"{_WHERE}.{key}", "expected true or false")
    return value


def _object_types(file: str, raw: Any, key: str, password: str | None) -> dict[str, DbObjectType]:
    types: dict[str, DbObjectType] = {}
    for type_name, props in account_properties(file, raw, "Database Table connector", _TYPES):
        found: list[DbProperty] = []
        for where, name, prop in props:
            column = str(prop.get("nativeName") or name)
            if column in ("__NAME__", "__UID__"):
                column = key
            elif column == "__PASSWORD__":
                if password is None:
                    raise ConfigError(file, f"{where}.nativeName",
                                      "__PASSWORD__ needs configurationProperties.passwordColumn")
                column = password
            elif column.startswith("__") and column.endswith("__"):
                raise ConfigError(file, f"{where}.nativeName", f"the Database Table connector "
                                  f"has no {column}: name a column of the table")
            flags = prop.get("flags") or []
            found.append(DbProperty(name=name, column=column, type=_TYPES[prop.get("type", "string")],
                                    required=prop.get("required") is True,
                                    flags=frozenset(str(f) for f in flags if isinstance(f, str))))
        types[type_name] = DbObjectType(type_name, tuple(found))
    return types
