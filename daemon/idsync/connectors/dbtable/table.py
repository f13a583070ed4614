"""The table of one system as the database has it: the connection, the columns, and
what a database's failure means to the caller.

The engine is made on first use: ``idsync validate`` reads the configuration and
never connects. It holds a small pool (a recon reads pages while it writes a batch;
the API may ask meanwhile), checks a pooled connection before it is used, and is
given no password in its URL: the password goes to the driver as an argument, so no
URL SQLAlchemy shows or logs carries it, and statements' parameters are left out of
SQLAlchemy's own messages. SQLite files are opened read-write, never created (a
wrong path is an error, not an empty database), with SQLite's savepoints working
(pysqlite's own transaction handling is switched off and ``BEGIN`` sent by hand, as
SQLAlchemy documents).

The table and its columns are reflected once per system: names as written when
``quoting`` is set, otherwise as the database takes unquoted names (the exact name
first, else the one name equal to it but for case). A column the configuration names
and the table lacks is ``PeerMisconfigured``, naming the file, the key and the
columns there are: every read and write stops until the configuration or the table
is fixed. Errors of the database map to idsync's: refused credentials
``AuthenticationFailed``, a lost or refused connection ``PeerUnavailable``, anything
else ``PeerError``; each says which system and database, and the driver's first line,
with the password (when a driver would echo it) replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    URL,
    Column,
    ColumnElement,
    Connection,
    Engine,
    MetaData,
    Row,
    Select,
    String,
    Table,
    create_engine,
    event,
    inspect,
    type_coerce,
)
from sqlalchemy.exc import InterfaceError, NoSuchTableError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from idsync.connectors.dbtable.config import DbTableSettings
from idsync.connectors.dbtable.values import kind_of
from idsync.errors import AuthenticationFailed, PeerError, PeerMisconfigured, PeerUnavailable

__all__ = ["Col", "DbTable", "Shape"]

_REFUSED_MYSQL = (1044, 1045, 1698)
_REFUSED_POSTGRES = ("password authentication failed", "no pg_hba.conf entry", "peer authentication failed",
                     "certificate authentication failed", "SSPI authentication", "GSSAPI authentication")
_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}


@dataclass(frozen=True)
class Col:
    """One column of the table, as reflected."""

    name: str
    column: Column[Any]
    kind: str  # ``values.kind_of``
    aware: bool  # a timestamp with a time zone

    def read(self, sqlite: bool) -> ColumnElement[Any]:
        """What a SELECT names: SQLite's timestamps as the text they are, since a value
        another program wrote in another form would fail SQLAlchemy's parsing of it."""
        if sqlite and self.kind in ("datetime", "date", "time"):
            return type_coerce(self.column, String).label(self.name)
        return self.column


@dataclass(frozen=True)
class Shape:
    """The reflected table: the key, password and change log columns, and each column a
    property names (by the name the configuration gives it)."""

    table: Table
    key: Col
    password: Col | None
    change_log: Col | None
    named: Mapping[str, Col]
    columns: tuple[Col, ...]  # all of them, in the table's order
    key_unique: bool


class DbTable:
    def __init__(self, system: str, file: str, settings: DbTableSettings) -> None:
        self.system = system
        self.file = file
        self.settings = settings
        self.sqlite = settings.database.kind == "sqlite"
        self._engine: Engine | None = None
        self._shape: Shape | None = None
        self._lock = threading.Lock()  # one engine, whichever thread asks first

    @property
    def description(self) -> str:
        table = f"{self.settings.schema}.{self.settings.table}" if self.settings.schema else self.settings.table
        return f"table {table} of {self.settings.database.describe()}"

    # -- connecting ----------------------------------------------------------------

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = _engine(self.settings, self.system)
            return self._engine

    @contextlib.contextmanager
    def connect(self, what: str) -> Iterator[Connection]:
        """A connection for reads; any failure of the database is a ``PeerError``."""
        try:
            with self.engine().connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self.error(exc, what) from None

    @contextlib.contextmanager
    def begin(self, what: str) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end (a failure rolls it back)."""
        try:
            with self.engine().begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self.error(exc, what) from None

    def fetch(self, statement: Select[Any], what: str) -> Sequence[Row[Any]]:
        with self.connect(what) as conn:
            return conn.execute(statement).all()

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def error(self, exc: SQLAlchemyError, what: str) -> PeerError:
        reason = self.reason(exc)
        orig = getattr(exc, "orig", None)
        code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
        where = f"system {self.system}: {what} ({self.description})"
        if code in _REFUSED_MYSQL or any(marker in reason for marker in _REFUSED_POSTGRES):
            return AuthenticationFailed(f"{where}: credentials refused: {reason}")
        if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
            return PeerUnavailable(f"{where}: {reason}")
        return PeerError(f"{where}: {reason}")

    def reason(self, exc: BaseException) -> str:
        """The driver's first line (never SQLAlchemy's statement and parameters), without the password."""
        orig = getattr(exc, "orig", None)
        lines = str(orig if isinstance(orig, BaseException) else exc).strip().splitlines()
        return self.scrub(lines[0].split("[SQL:")[0].strip() if lines else type(exc).__name__)

    def scrub(self, text: str, *secrets: Any) -> str:
        for secret in (self.settings.database.password, *secrets):
            if isinstance(secret, str) and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    # -- the table -------------------------------------------------------------------

    def shape(self) -> Shape:
        shape = self._shape
        if shape is None:
            shape = self._shape = self._reflect()
        return shape

    def _reflect(self) -> Shape:
        s = self.settings
        with self.connect("reading the table's columns") as conn:
            inspector = inspect(conn)
            names = inspector.get_table_names(schema=s.schema) + inspector.get_view_names(schema=s.schema)
            actual = self._match(s.table, names)
            if actual is None:
                raise PeerMisconfigured(f"{self.file}: configurationProperties.table: no table {s.table!r} in "
                                        f"{s.database.describe()}" + (f", schema {s.schema}" if s.schema else ""))
            try:
                table = Table(actual, MetaData(), schema=s.schema, autoload_with=conn)
            except NoSuchTableError:
                raise PeerMisconfigured(f"{self.file}: configurationProperties.table: {self.description} "
                                        "cannot be read") from None
            unique: list[list[str]] = []
            with contextlib.suppress(NotImplementedError):  # a view has neither
                unique += [list(u["column_names"]) for u in inspector.get_unique_constraints(actual, schema=s.schema)]
                unique += [[str(c) for c in i["column_names"]] for i in inspector.get_indexes(actual, schema=s.schema)
                           if i.get("unique")]
        columns = tuple(Col(c.name, c, kind_of(c.type), bool(getattr(c.type, "timezone", False)))
                        for c in table.columns)
        by_name = {c.name: c for c in columns}
        wanted: list[tuple[str, str | None]] = [("keyColumn", s.key), ("passwordColumn", s.password),
                                                 ("changeLogColumn", s.change_log)]
        wanted += [(f"objectTypes.{t.name}.properties.{p.name}.nativeName", p.column)
                   for t in s.types.values() for p in t.properties]
        named: dict[str, Col] = {}
        missing: list[str] = []
        for setting, column in wanted:
            if column is None or column in named:
                continue
            found = self._match(column, list(by_name))
            if found is None:
                missing.append(f"{setting}: {column!r}")
            else:
                named[column] = by_name[found]
        if missing:
            raise PeerMisconfigured(f"{self.file}: {self.description} has no column {'; '.join(missing)} "
                                    f"(it has: {', '.join(list(by_name)[:30])})")
        key = named[s.key]
        if key.kind in ("binary", "json", "float"):
            raise PeerMisconfigured(f"{self.file}: configurationProperties.keyColumn: {key.name} holds "
                                    f"{key.kind} values, which cannot be ids")
        change_log = named.get(s.change_log) if s.change_log else None
        if change_log is not None and change_log.kind not in ("integer", "decimal", "datetime", "date", "text"):
            raise PeerMisconfigured(f"{self.file}: configurationProperties.changeLogColumn: {change_log.name} "
                                    "must hold a timestamp or an increasing number")
        primary = [c.name for c in table.primary_key.columns]
        return Shape(table=table, key=key, password=named.get(s.password) if s.password else None,
                     change_log=change_log, named=named, columns=columns,
                     key_unique=primary == [key.name] or [key.name] in unique)

    def _match(self, name: str, names: list[str]) -> str | None:
        if name in names:
            return name
        if self.settings.exact_names:
            return None
        folded = [n for n in names if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None


def _engine(settings: DbTableSettings, system: str) -> Engine:
    db = settings.database
    if db.kind == "sqlite":
        path = db.path
        assert path is not None

        def opened() -> sqlite3.Connection:
            return sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=30)

        engine = create_engine(URL.create("sqlite", database=str(path)), creator=opened, hide_parameters=True)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    args: dict[str, Any] = dict(db.options)
    if db.password:
        args["password"] = db.password
    query = {"charset": "utf8mb4"} if db.kind == "mysql" else {}
    if db.kind == "mysql" and db.tls == "off":
        args["ssl_disabled"] = True
    elif db.kind == "mysql" and db.tls != "preferred":
        # PREFERRED is left to PyMySQL (1.2 encrypts when the server offers TLS): a
        # context given to it makes TLS required.
        args["ssl"] = _tls_context(db.tls, db.ca_file)
    engine = create_engine(URL.create(_DRIVERS[db.kind], username=db.user, host=db.host, port=db.port,
                                      database=db.name, query=query),
                           connect_args=args, pool_size=2, max_overflow=2, pool_pre_ping=True, pool_recycle=1800,
                           hide_parameters=True)
    if db.kind == "mysql" and db.tls not in ("off", "preferred"):
        def encrypted(dbapi_connection: Any, _record: Any) -> None:
            # PyMySQL goes on in clear when the server offers no TLS: a mode that requires it must not.
            if not isinstance(getattr(dbapi_connection, "_sock", None), ssl.SSLSocket):
                dbapi_connection.close()
                raise PeerUnavailable(f"system {system}: {db.describe()} offers no TLS, and the JDBC URL "
                                      "requires it (sslMode, useSSL)")

        event.listen(engine, "connect", encrypted)
    return engine


def _tls_context(mode: str, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if mode == "required":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
    return context
