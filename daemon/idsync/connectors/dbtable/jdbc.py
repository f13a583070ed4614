"""From a provisioner's JDBC settings to a database idsync reaches: PostgreSQL
(psycopg), MySQL and MariaDB (PyMySQL) or SQLite.

OpenICF connects with a JDBC driver class (``jdbcDriver``; the pooled variant's
``driverClassName``) and a URL: ``url`` as written, or ``jdbcUrlTemplate`` with
``%h``, ``%p`` and ``%d`` replaced by ``host``, ``port`` and ``database``
(OpenICF's defaults are Oracle's driver and ``jdbc:oracle:thin:@%h:%p:%d``). The
URL's scheme names the database and the driver class must be one of its drivers;
any other database (Oracle, SQL Server, DB2, H2...) is a ``ConfigError`` naming the
key and the databases idsync reaches.

Of a URL idsync keeps the host, port and database (SQLite: the file, relative to
the project directory), a user and password it carries, and the parameters that
change where or how safely it connects: PostgreSQL's ``sslmode`` (libpq's values),
``ssl=true`` (``verify-full``, as pgJDBC), ``sslfactory=...NonValidatingFactory``
(``require``), ``sslrootcert``/``sslcert``/``sslkey``, ``currentSchema``,
``connectTimeout``/``loginTimeout`` (seconds) and ``ApplicationName``; MySQL's and
MariaDB's ``sslMode``, ``useSSL``/``useSsl``, ``requireSSL``,
``verifyServerCertificate``, ``trustServerCertificate``, ``serverSslCert`` (a CA
file) and ``connectTimeout`` (milliseconds). Any other parameter is a warning: it
is not carried over. The password never reaches a message, a log or a ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from idsync.errors import ConfigError, ConfigWarning

__all__ = ["REACHES", "Database", "parse_database"]

Kind = Literal["postgresql", "mysql", "sqlite"]
REACHES = "idsync's Database Table connector reaches PostgreSQL, MySQL, MariaDB and SQLite"
_WHERE = "configurationProperties"
_DEFAULT_DRIVER = "oracle.jdbc.driver.OracleDriver"
_DEFAULT_TEMPLATE = "jdbc:oracle:thin:@%h:%p:%d"

_DRIVERS: Mapping[str, Kind] = {
    "org.postgresql.Driver": "postgresql", "com.mysql.jdbc.Driver": "mysql", "com.mysql.cj.jdbc.Driver": "mysql",
    "org.mariadb.jdbc.Driver": "mysql", "org.gjt.mm.mysql.Driver": "mysql", "org.sqlite.JDBC": "sqlite"}
_SCHEMES: Mapping[str, Kind] = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
# Drivers and URL schemes of the databases idsync does not reach, for a message that names them.
_OTHER_DRIVERS = (("oracle.", "Oracle"), ("com.microsoft.sqlserver.", "SQL Server"),
                  ("net.sourceforge.jtds.", "SQL Server (jTDS)"), ("com.ibm.db2.", "DB2"), ("com.ibm.as400.", "DB2"),
                  ("org.h2.", "H2"), ("org.apache.derby.", "Derby"), ("org.hsqldb.", "HSQLDB"),
                  ("com.sybase.", "Sybase"), ("org.firebirdsql.", "Firebird"), ("com.informix.", "Informix"))
_OTHER_SCHEMES = {"oracle": "Oracle", "sqlserver": "SQL Server", "jtds": "SQL Server (jTDS)", "db2": "DB2",
                  "as400": "DB2", "h2": "H2", "derby": "Derby", "hsqldb": "HSQLDB", "sybase": "Sybase",
                  "firebirdsql": "Firebird", "informix-sqli": "Informix"}
_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB", "sqlite": "SQLite"}
_PG_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# MySQL's and MariaDB's sslMode values -> how idsync connects (``table.py`` makes the TLS context).
_MYSQL_SSLMODES = {"disabled": "off", "disable": "off", "preferred": "preferred", "required": "required",
                   "trust": "required", "verify_ca": "verify-ca", "verify-ca": "verify-ca",
                   "verify_identity": "verify-identity", "verify-full": "verify-identity"}
# Parameters that change nothing idsync does: it always talks UTF-8 (utf8mb4), fetches
# the server's RSA key itself and reconnects a dropped connection at its next use.
_MYSQL_SILENT = frozenset({"useunicode", "characterencoding", "allowpublickeyretrieval", "autoreconnect"})
# How long one statement may wait for the database (JDBC's socketTimeout, 0 = forever by
# default there): a hung or locked database fails the run instead of holding its job forever.
_READ_TIMEOUT = 300


@dataclass(frozen=True)
class Database:
    """Where one system's table is. ``tls`` (MySQL/MariaDB): off, preferred, required,
    verify-ca or verify-identity; PostgreSQL's TLS settings are in ``options``."""

    kind: Kind
    host: str | None = None
    port: int | None = None
    name: str | None = None
    path: Path | None = None  # SQLite's file
    schema: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)  # the driver's connect arguments
    tls: str = "off"
    ca_file: str | None = None

    def describe(self) -> str:
        """Which database, for messages: never the user or the password."""
        if self.kind == "sqlite":
            return f"SQLite file {self.path}"
        return f"{_NAMES[self.kind]} database {self.name or '(default)'} at {self.host}:{self.port}"


def _text(file: str, props: Mapping[str, Any], *keys: str) -> tuple[str | None, str]:
    """The first of ``keys`` set to a non-empty value, and its key."""
    for key in keys:
        value = props.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ConfigError(file, f"{_WHERE}.{key}", "expected a string")
        return str(value).strip(), key
    return None, keys[0]


def parse_database(file: str, props: Mapping[str, Any], base: Path) -> tuple[Database, list[ConfigWarning]]:
    """The database a provisioner's ``configurationProperties`` name; ``base``: what a
    relative SQLite path is under. Errors name ``file`` and the key, never a secret."""
    driver, driver_key = _text(file, props, "jdbcDriver", "driverClassName")
    url, url_key = _text(file, props, "url")
    if url is None:
        template, url_key = _text(file, props, "jdbcUrlTemplate")
        if driver is None and template is None:
            raise ConfigError(file, f"{_WHERE}.jdbcDriver", "not set, and OpenICF's default is Oracle's driver "
                              f"({_DEFAULT_DRIVER}), a database idsync does not reach: set jdbcDriver and "
                              f"jdbcUrlTemplate (or url); {REACHES}")
        url = _filled(file, props, template or _DEFAULT_TEMPLATE)
    where = f"{_WHERE}.{url_key}"
    if not url.lower().startswith("jdbc:"):
        raise ConfigError(file, where, "expected a JDBC URL (jdbc:postgresql://..., jdbc:mysql://..., "
                          "jdbc:mariadb://..., jdbc:sqlite:...)")
    scheme = url[5:].split(":", 1)[0].lower()
    warnings: list[ConfigWarning] = []
    if driver is not None:
        driver_kind = _DRIVERS.get(driver)
        if driver_kind is None:
            other = next((name for prefix, name in _OTHER_DRIVERS if driver.startswith(prefix)), None)
            if other is not None:
                raise ConfigError(file, f"{_WHERE}.{driver_key}",
                                  f"{driver} is {other}'s driver, a database idsync does not reach: {REACHES}")
            warnings.append(ConfigWarning(file, f"{_WHERE}.{driver_key}", f"{driver} is not a driver idsync knows; "
                                          "the URL alone decides which database it is"))
        elif scheme in _SCHEMES and _SCHEMES[scheme] != driver_kind:
            raise ConfigError(file, f"{_WHERE}.{driver_key}", f"{driver} is a {_NAMES[driver_kind]} driver, "
                              f"and {url_key} names a {_NAMES[_SCHEMES[scheme]]} database")
    kind = _SCHEMES.get(scheme)
    if kind is None:
        other = _OTHER_SCHEMES.get(scheme)
        named = f"{other} ({scheme} URL)" if other else f"a jdbc:{scheme} URL"
        raise ConfigError(file, where, f"{named} is not a database idsync reaches: {REACHES}")
    if kind == "sqlite":
        return _sqlite(file, where, url, base), warnings
    return _server(file, where, kind, scheme, url, props, base, warnings), warnings


def _filled(file: str, props: Mapping[str, Any], template: str) -> str:
    """OpenICF's ``formatUrlTemplate``: ``%h``, ``%p``, ``%d`` replaced by host, port, database."""
    out = template
    for mark, key in (("%h", "host"), ("%p", "port"), ("%d", "database")):
        if mark in out:
            value, _ = _text(file, props, key)
            if value is None:
                raise ConfigError(file, f"{_WHERE}.{key}", f"required: the jdbcUrlTemplate names {mark}")
            out = out.replace(mark, value)
    return out


def _sqlite(file: str, where: str, url: str, base: Path) -> Database:
    rest = url[len("jdbc:sqlite:"):].split("?", 1)[0]
    if rest.startswith("file:"):
        rest = unquote(rest[5:].removeprefix("//"))
    if not rest or rest.startswith(":"):
        raise ConfigError(file, where, "expected the path of a SQLite file (jdbc:sqlite:PATH); an in-memory "
                          "database would be empty at every connection")
    path = Path(rest)
    return Database("sqlite", path=path if path.is_absolute() else base / path)


def _server(file: str, where: str, kind: Kind, scheme: str, url: str, props: Mapping[str, Any], base: Path,
            warnings: list[ConfigWarning]) -> Database:
    rest = url[5 + len(scheme) + 1:]
    if not rest.startswith("//"):
        if kind == "mysql":
            raise ConfigError(file, where, f"expected jdbc:{scheme}://host[:port]/database (load-balanced, "
                              "replication and DNS SRV URLs are not supported)")
        rest = "///" + rest.lstrip("/")  # pgJDBC's jdbc:postgresql:database, on localhost
    parts = urlsplit("x:" + rest)
    if "," in parts.netloc:
        raise ConfigError(file, where, "names several hosts; idsync connects to one: name the primary")
    try:
        port = parts.port or (5432 if kind == "postgresql" else 3306)
    except ValueError:
        raise ConfigError(file, where, "the port is not a number from 1 to 65535") from None
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    user, _ = _text(file, props, "user", "username")
    password = props.get("password")
    if password is not None and not isinstance(password, str):
        # The value is left out on purpose: it is a secret.
        raise ConfigError(file, f"{_WHERE}.password", "expected a string (or &{ENV}, password_file, $crypto)")
    database = Database(
        kind, host=parts.hostname or "localhost", port=port, name=unquote(parts.path.lstrip("/")) or None,
        user=user or params.pop("user", None) or (unquote(parts.username) if parts.username else None),
        password=password or params.pop("password", None) or (unquote(parts.password) if parts.password else None))
    params.pop("user", None)
    params.pop("password", None)
    if kind == "postgresql":
        return _postgresql(file, where, database, params, base, warnings)
    return _mysql(file, where, database, params, scheme, base, warnings)


def _postgresql(file: str, where: str, db: Database, params: dict[str, str], base: Path,
                warnings: list[ConfigWarning]) -> Database:
    options: dict[str, Any] = {"connect_timeout": 10}
    schema = None
    read_timeout: int | None = _READ_TIMEOUT
    for name, value in params.items():
        low = name.lower()
        if low == "sslmode":
            if value not in _PG_SSLMODES:
                raise ConfigError(file, where, f"sslmode {value!r} is not one of {', '.join(sorted(_PG_SSLMODES))}")
            options["sslmode"] = value
        elif low == "ssl":
            if value.lower() in ("", "true"):
                options.setdefault("sslmode", "verify-full")  # pgJDBC: ssl=true verifies the server's name
        elif low == "sslfactory" and value.endswith("NonValidatingFactory"):
            options["sslmode"] = "require"
        elif low in ("sslrootcert", "sslcert", "sslkey"):
            options[low] = str(base / value)
        elif low == "currentschema":
            schema = value.split(",", 1)[0] or None
        elif low in ("connecttimeout", "logintimeout"):
            options["connect_timeout"] = _seconds(file, where, name, value, 1)
        elif low == "sockettimeout":
            read_timeout = _limit(file, where, name, value, 1)
        elif low == "applicationname":
            options["application_name"] = value
        else:
            warnings.append(_not_carried(file, where, name))
    # The server ends a statement that runs longer; keepalives end a connection that went silent.
    options.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    if read_timeout is not None:
        options.update(options=f"-c statement_timeout={read_timeout * 1000}", tcp_user_timeout=read_timeout * 1000)
    return Database(db.kind, db.host, db.port, db.name, schema=schema, user=db.user, password=db.password,
                    options=options)


def _mysql(file: str, where: str, db: Database, params: dict[str, str], scheme: str, base: Path,
           warnings: list[ConfigWarning]) -> Database:
    # Connector/J 8 encrypts when the server offers it (PREFERRED, left to PyMySQL); MariaDB's
    # does not by default.
    tls = "preferred" if scheme == "mysql" else "off"
    verify = True
    ca_file = None
    timeout = 10
    read_timeout: int | None = _READ_TIMEOUT
    asked = False
    for name, value in params.items():
        low, flag = name.lower(), value.strip().lower() in ("", "true", "1", "yes")
        if low == "sslmode":
            mode = _MYSQL_SSLMODES.get(value.strip().lower())
            if mode is None:
                raise ConfigError(file, where, f"sslMode {value!r} is not one of DISABLED, PREFERRED, REQUIRED, "
                                  "VERIFY_CA, VERIFY_IDENTITY (MariaDB: disable, trust, verify-ca, verify-full)")
            tls, asked = mode, True
        elif low in ("usessl", "requiressl"):
            if not asked:  # verified as Connector/J 5 and MariaDB's driver do (Connector/J 8 does not)
                strict = "verify-identity" if scheme == "mariadb" else "verify-ca"
                tls = strict if flag else ("off" if low == "usessl" else tls)
        elif low in ("verifyservercertificate", "trustservercertificate"):
            verify = flag if low == "verifyservercertificate" else not flag
        elif low == "serversslcert":
            ca_file = str(base / value)
        elif low == "connecttimeout":
            timeout = _seconds(file, where, name, value, 1000)
        elif low == "sockettimeout":
            read_timeout = _limit(file, where, name, value, 1000)
        elif low not in _MYSQL_SILENT:
            warnings.append(_not_carried(file, where, name))
    if tls in ("verify-ca", "verify-identity") and not verify and not asked:
        tls = "required"
    return Database(db.kind, db.host, db.port, db.name, user=db.user, password=db.password,
                    options={"connect_timeout": timeout, **({"read_timeout": read_timeout,
                                                             "write_timeout": read_timeout} if read_timeout else {})},
                    tls=tls, ca_file=ca_file)


def _seconds(file: str, where: str, name: str, value: str, unit: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(file, where, f"{name} {value!r} is not a whole number") from None
    return max(1, -(-number // unit)) if number > 0 else 10


def _limit(file: str, where: str, name: str, value: str, unit: int) -> int | None:
    """JDBC's ``socketTimeout`` in whole seconds (rounded up); 0 is no limit, as in JDBC."""
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(file, where, f"{name} {value!r} is not a whole number") from None
    return -(-number // unit) if number > 0 else None


def _not_carried(file: str, where: str, name: str) -> ConfigWarning:
    return ConfigWarning(file, where, f"the JDBC parameter {name} is not carried over (idsync connects with its "
                         "own driver); it is ignored")
