"""Opening the identity store: engine, dialect tuning and schema migrations.

``Store.open(url)`` upgrades the schema in place with Alembic (``store/migrations``)
so a newer release can take over an existing database. A new, empty database gets
the declared schema (``tables.py``) at once, stamped with the newest revision: the
same tables, columns, defaults and indexes the migrations build one by one (a test
compares the two on every dialect), without loading Alembic or replaying thirteen
steps of DDL (MariaDB runs each statement of them as a transaction of its own).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import math
import operator
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

import structlog
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from idsync.errors import AuthenticationFailed, ConfigError, PeerError, PeerUnavailable, WriteConflict
from idsync.store.collation import server_exact_collation
from idsync.store.tables import KEY_LENGTH, metadata, store_meta

__all__ = ["Store", "as_utc", "fits_key", "fits_text", "new_id", "new_ids", "pg_array", "store_error", "unfit_at",
           "unfit_key", "utcnow"]

log = structlog.get_logger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pingidm_time(instant: dt.datetime) -> str:
    """A time as PingIDM's answers write it: ISO 8601 in UTC, to the millisecond, ``Z``
    (``2026-12-07T18:26:40.006Z``). A naive one is taken as UTC, as the store keeps them."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@overload
def as_utc(value: dt.datetime) -> dt.datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time read from the store, with its zone: SQLite hands back naive datetimes, and
    everything idsync stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def new_id() -> str:
    """A new object id: a UUIDv7 (RFC 9562), time-ordered.

    Random v4 ids scatter every index insert across the B-trees; on a 100k-user
    first recon into SQLite that cost 2.2x the time of time-ordered ids (same
    rows, same indexes). Ids stay opaque UUID strings to clients.
    """
    return new_ids(1)[0]


# Each id is the 6 bytes of the time and 10 random ones, the first of which carries
# the version (7) and the third the RFC 4122 variant: set for all ids at once.
_VERSION_7 = bytes(0x70 | (b & 0x0F) for b in range(256))
_RFC_4122 = bytes(0x80 | (b & 0x3F) for b in range(256))


def new_ids(count: int) -> list[str]:
    """``count`` new ids (``new_id``) from one read of the system's randomness: a page
    of creates and its links take a thousand or two at once."""
    stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
    random = bytearray(os.urandom(10 * count))
    random[0::10] = random[0::10].translate(_VERSION_7)
    random[2::10] = random[2::10].translate(_RFC_4122)
    h = random.hex()  # str(uuid.UUID(bytes=...)) of each, without building the objects
    head = f"{stamp[:8]}-{stamp[8:]}-"
    return [f"{head}{h[at:at + 4]}-{h[at + 4:at + 8]}-{h[at + 8:at + 20]}" for at in range(0, 20 * count, 20)]


def _has_unfit(item: Any) -> bool:
    # Loops rather than any(generator): this runs on every value a recon writes. A string
    # is scanned for surrogates only when it is not ASCII, which CPython knows without a scan.
    if type(item) is str:
        return "\x00" in item or (not item.isascii() and _has_surrogate(item))
    if isinstance(item, dict):
        for key, value in item.items():
            if type(value) is str:
                if "\x00" in value or (not value.isascii() and _has_surrogate(value)):
                    return True
            elif _has_unfit(value):
                return True
            name = key if type(key) is str else str(key)
            if "\x00" in name or (not name.isascii() and _has_surrogate(name)):
                return True
        return False
    if isinstance(item, list | tuple):
        for value in item:  # noqa: SIM110
            if _has_unfit(value):
                return True
        return False
    if isinstance(item, float):
        return not math.isfinite(item)
    return isinstance(item, str) and _unfit_text(item) is not None


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds an unpaired surrogate (half of a character), which UTF-8
    cannot encode: what a script's ``substring`` makes of an emoji cut in two."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unfit_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii() and _has_surrogate(text):
        return "an unpaired surrogate (half of a character)"
    return None


def fits_text(text: str) -> bool:
    """Whether the store can hold ``text`` (no NUL character, no unpaired surrogate): the
    hot path's test, a scan for surrogates only when the text is not ASCII."""
    return "\x00" not in text and (text.isascii() or not _has_surrogate(text))


def fits_key(text: str) -> bool:
    """Whether ``text`` can be a key the store holds (``unfit_key``)."""
    return len(text) <= KEY_LENGTH and fits_text(text)


def unfit_key(text: str) -> str | None:
    """Why the store cannot keep ``text`` as a system object's id (in a link, an audit
    entry, a liveSync retry), as ``contains ...`` or ``has N characters, ...``, or ``None``.

    A NUL character or an unpaired surrogate no store holds (``unfit_at``); more than
    ``KEY_LENGTH`` characters PostgreSQL and MariaDB refuse and SQLite takes, so the
    limit is checked here for the same answer on every store."""
    what = _unfit_text(text)
    if what is not None:
        return f"contains {what}, which the store cannot hold"
    if len(text) > KEY_LENGTH:
        return f"has {len(text)} characters, more than the {KEY_LENGTH} a link holds"
    return None


def unfit_at(value: Any) -> str | None:
    """What in ``value`` the store cannot hold, as ``the value at POINTER contains ...``
    (``POINTER`` a JSON pointer), or ``None``.

    A NUL character: no store takes one alike: PostgreSQL refuses it in any text column,
    SQLite and MariaDB keep it, and a C client reading the value back would cut it there.
    An unpaired surrogate: no store can encode it (UTF-8 has no form for half of a
    character), and the driver fails the whole statement. NaN or an infinity (a script's
    ``0/0``, a sum past the largest double): JSON has no form for it, so every answer
    holding the object would fail. So idsync refuses such a value on every store, naming
    where it was (never the value).
    """
    if not _has_unfit(value):  # the common case, without building a pointer per value
        return None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        at, item = stack.pop()
        if isinstance(item, str):
            what = _unfit_text(item)
            if what is not None:
                return f"the value at {at or '/'} contains {what}"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"the value at {at or '/'} is {_NON_FINITE.get(repr(item))} (no JSON number)"
        elif isinstance(item, dict):
            for key, inner in item.items():
                shown = str(key).replace("~", "~0").replace("/", "~1").replace("\x00", "\\u0000")
                name = f"{at}/{shown}"
                what = _unfit_text(str(key))
                if what is not None:
                    name = name.encode("utf-8", "backslashreplace").decode("utf-8")
                    return f"the value at {name} contains {what}"
                stack.append((name, inner))
        elif isinstance(item, list | tuple):
            stack.extend((f"{at}/{i}", inner) for i, inner in enumerate(item))
    return None


def pg_array(values: Sequence[str]) -> str:
    """``values`` as the text of a PostgreSQL array, each quoted: psycopg adapting a
    list of strings costs about a microsecond per item, five times this."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


# The tables a recon grows: objects, their searchable values, links, and the run's claims.
_GROWING = ("managed_objects", "managed_properties", "links", "recon_claims")


# One encoder for every value written (json.dumps with options builds one per call).
_dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Store:
    """The SQL identity store: one engine, shared by every run of the process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._turn_rows: set[str] = set()  # MariaDB: the rows ``turn`` locks, known to exist

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, echo: bool = False) -> Store:
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - SQLAlchemy raises several kinds, some quoting the URL
            # Never the parser's words: they may quote the URL, its password included.
            raise ConfigError("idsync.toml", "store.url", "not a database URL (not in the form "
                              "DRIVER://USER:PASSWORD@HOST:PORT/DATABASE)") from None
        # An error's text never lists the statement's parameters: they are the values of objects.
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _dumps, "hide_parameters": True}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            if parsed.get_backend_name() in ("mysql", "mariadb") and "+" not in parsed.drivername:
                parsed = parsed.set(drivername=f"{parsed.get_backend_name()}+pymysql")
            if parsed.get_backend_name() in ("mysql", "mariadb"):
                parsed = parsed.update_query_dict({"charset": "utf8mb4"})
                # As PostgreSQL reads: each statement sees what was committed before it (a
                # check made after ``turn`` sees the writes of the transaction before it).
                kwargs["isolation_level"] = "READ COMMITTED"
        try:
            engine = create_engine(parsed, **kwargs)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "idsync.toml", "store.url", f"the database driver is not installed ({exc.name})"
            ) from None
        except (NoSuchModuleError, ArgumentError):
            raise ConfigError("idsync.toml", "store.url",
                              f"unsupported database {parsed.drivername!r} (use sqlite, postgresql or mysql)") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def as_cluster_node(self, node: str, idle_transaction_timeout: float) -> None:
        """PostgreSQL only: name this process's connections after cluster node ``node``
        (``application_name`` ``idsync:NODE`` in ``pg_stat_activity``), and have the server
        end a transaction of theirs left idle for ``idle_transaction_timeout`` seconds: a
        node frozen inside one (a VM paused, SIGSTOP) would hold its row locks, and keep
        the others from its partition and its run, until its connection ends. The pool's
        connections made before are closed."""
        if self.dialect != "postgresql":
            return
        settings = (("application_name", f"idsync:{node}"[:63]),
                    ("idle_in_transaction_session_timeout", f"{max(1, round(idle_transaction_timeout * 1000))}"))

        def configure(dbapi_conn: Any, _record: Any) -> None:
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True  # a SET in a transaction would be undone by its rollback
            try:
                with dbapi_conn.cursor() as cursor:
                    for name, value in settings:
                        cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
            finally:
                dbapi_conn.autocommit = autocommit

        event.listen(self.engine, "connect", configure)
        self.engine.dispose()

    def migrate(self, *, declared: bool = True) -> None:
        """Bring the schema to the newest revision (no-op when current: one query, and
        Alembic, which costs a command a quarter of a second to import, is not loaded).
        A database holding none of the store's tables gets the declared schema at once
        (``declared=False``: through every migration, as the test comparing them does)."""
        try:
            current = self._revision()
        except DatabaseError as exc:
            if self.dialect != "sqlite" or isinstance(exc, ProgrammingError):
                raise
            # A file that is not a SQLite database (or one damaged): said, not a crash.
            raise store_error(exc, "store: cannot open the database: ") from None
        if current == _head_revision():
            return
        named = self.dialect not in ("sqlite", "postgresql")
        try:
            with self.engine.begin() as conn:
                # Two processes opening a new store at once (the daemon and a
                # manual run) must not both create the tables.
                if self.dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7461032)"))
                else:
                    _wait_for_migration_lock(conn)
                try:
                    if declared and _new_database(conn):
                        if named:  # a server without its exact collation is told so before any table is made
                            server_exact_collation(conn)
                        metadata.create_all(conn)
                        _alembic_version.create(conn)
                        conn.execute(_alembic_version.insert().values(version_num=_head_revision()))
                    else:
                        _upgrade(conn)
                finally:
                    if named:  # the lock is the session's, not the transaction's: a failed upgrade frees it too
                        with contextlib.suppress(DatabaseError, InterfaceError):
                            conn.execute(text(f"SELECT RELEASE_LOCK({_MIGRATION_LOCK})"))
        except OperationalError as exc:
            raise store_error(exc, "store: cannot open the database: ") from None

    def _revision(self) -> str | None:
        """The schema revision the store is at (None before the first migration)."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):
            return None  # no table yet (or the database is unreachable, which migrate() reports)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction; database errors surface as PeerUnavailable (``WriteConflict`` when the
        database rolled it back to break a deadlock: ``store_error``)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, ProgrammingError, InterfaceError) as exc:
            # The database went away or its schema was changed under us.
            raise store_error(exc, "store: ") from None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection to read with; database errors surface as ``begin``'s do."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except (OperationalError, ProgrammingError, InterfaceError) as exc:
            raise store_error(exc, "store: ") from None

    def commit_lazily(self, conn: Connection) -> None:
        """Let the transaction of ``conn`` commit without waiting for the disk: for one
        that holds nothing a crash of the database must keep (a recon's page that
        changed nothing: its claims and the run's counts, which the run's failure
        drops anyway). On PostgreSQL that is the WAL flush of every commit, 2-4 ms
        here, a tenth of a no-change page; SQLite in WAL mode does not flush at commit."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def insert_many(self, conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                    ignore_duplicates: bool = False) -> None:
        """Bulk insert on the driver's executemany, past SQLAlchemy's per-row
        parameter processing (which costs more than the database on this path).

        Values are turned into what each driver takes: JSON columns as text,
        datetimes as SQLite's text format there, as ISO 8601 text in PostgreSQL's
        COPY (which psycopg would otherwise format anew for every row: most of the
        cost of a row of objects), and as datetimes elsewhere.
        """
        if not rows:
            return
        columns = list(rows[0])
        pick = operator.itemgetter(*columns) if len(columns) > 1 else (lambda r: (r[columns[0]],))
        self.insert_rows(conn, table, columns, list(map(pick, rows)), ignore_duplicates=ignore_duplicates)

    def insert_rows(self, conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                    ignore_duplicates: bool = False) -> None:
        """``insert_many`` of rows given as the values of ``columns``, in that order:
        for a caller writing many rows of few columns, without a dict per row."""
        if not rows:
            return
        json_cols = {c.name for c in table.columns if _is_json(c.type)}
        sqlite = self.dialect == "sqlite"
        copying = self.dialect == "postgresql" and not ignore_duplicates
        converters: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(columns):
            if name in json_cols:
                converters.append((i, _dumps))
            elif (sqlite or copying) and _is_datetime(table.c[name].type):
                converters.append((i, _sqlite_time if sqlite else _copy_time))
        params: list[Sequence[Any]] = list(rows)  # a list: what executemany takes
        if converters:
            params = []
            for r in rows:
                values = list(r)
                for i, convert in converters:
                    if values[i] is not None:
                        values[i] = convert(values[i])
                params.append(tuple(values))
        if copying:
            # COPY is 3-4x faster than executemany for the first recon's bulk rows.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            names = ", ".join(self._quote(c) for c in columns)
            with cursor.copy(f"COPY {self._quote(table.name)} ({names}) FROM STDIN") as copy:
                for row in params:
                    copy.write_row(row)
            return
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        cols = ", ".join(self._quote(c) for c in columns)
        marks = ", ".join([mark] * len(columns))
        verb, tail = "INSERT", ""
        if ignore_duplicates:
            if sqlite:
                verb = "INSERT OR IGNORE"
            elif self.dialect == "postgresql":
                tail = " ON CONFLICT DO NOTHING"
            else:
                verb = "INSERT IGNORE"
        conn.exec_driver_sql(f"{verb} INTO {self._quote(table.name)} ({cols}) VALUES ({marks}){tail}", params)

    def in_(self, column: Any, values: Sequence[Any]) -> Any:
        """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter
        instead of a thousand, planned in half the time for a page of ids.

        A value with a NUL character or an unpaired surrogate is left out: no key the store
        holds has one (``unfit_at``); PostgreSQL refuses the one even as a parameter, and no
        driver can encode the other."""
        values = [v for v in values if not isinstance(v, str) or fits_text(v)]
        if self.dialect == "postgresql":
            if all(type(v) is str for v in values):  # ids and searchable values: sent as the array's text
                return column == any_(cast(bindparam(None, pg_array(values), type_=String), ARRAY(String)))
            return column == any_(bindparam(None, values, type_=ARRAY(String)))
        return column.in_(values)

    def analyze(self, tables: Sequence[str] = _GROWING, *, quick: bool = False) -> None:
        """Refresh the planner's statistics of ``tables`` after bulk writes.

        A first recon grows the tables from nothing within one run, before
        autovacuum looks at them; PostgreSQL then keeps planning for an empty
        table and filters 100k link rows per lookup instead of using the index
        (a no-change recon of 100k users went from 40 s to a few seconds). It is
        not free: about a third of a second for the four tables of 100,000 users
        on PostgreSQL, so a run asks only for the tables it grew.

        ``quick``: a sample a tenth of the default's on PostgreSQL (3,000 rows a table,
        60 ms instead of 330 for those four tables). Enough for what a run's own queries
        need from the planner while the tables grow under it (how many rows: an index
        lookup rather than a scan); the run's last refresh keeps the full sample.
        """
        if not tables or self.dialect not in ("postgresql", "mysql", "mariadb"):
            return
        names = ", ".join(self._quote(t) for t in tables)
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                if quick:
                    conn.exec_driver_sql("SET LOCAL default_statistics_target = 10")
                conn.execute(text(f"ANALYZE {names}"))
            else:
                conn.execute(text(f"ANALYZE TABLE {names}"))
            conn.commit()

    def _quote(self, name: str) -> str:
        return str(self.engine.dialect.identifier_preparer.quote(name))

    def turn(self, conn: Connection, name: str) -> None:
        """Wait, within ``conn``'s transaction, until no other transaction holds the turn
        ``name``, and hold it until this one ends: what this transaction checks after it
        (no object holds this unique value) stays true until it commits, whichever
        process or node writes beside it.

        SQLite: the database's write lock, taken now (``BEGIN IMMEDIATE``) rather than at
        the first write; PostgreSQL: an advisory lock of the transaction; MariaDB: a lock
        on a row of ``store_meta`` (read committed, so what the check reads is current)."""
        if self.dialect == "sqlite":
            self.write_lock(conn)
        elif self.dialect == "postgresql":
            key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (key,))
        else:
            row = f"turn:{name}"
            if row not in self._turn_rows:
                with self.engine.connect() as own:  # committed at once: the row is never in a lock's way
                    own.exec_driver_sql(f"INSERT IGNORE INTO {self._quote('store_meta')} ({self._quote('key')}, "
                                        f"{self._quote('value')}) VALUES (%s, '')", (row,))
                    own.commit()
                self._turn_rows.add(row)
            conn.exec_driver_sql(f"SELECT {self._quote('value')} FROM {self._quote('store_meta')} "
                                 f"WHERE {self._quote('key')} = %s FOR UPDATE", (row,))

    def write_lock(self, conn: Connection) -> None:
        """SQLite: take the database's write lock for ``conn``'s transaction now (``BEGIN
        IMMEDIATE``) rather than at its first write, so that what it reads stays current
        until it commits: SQLite's ``SELECT ... FOR UPDATE``. Other stores: nothing (their
        transactions lock the rows they read ``FOR UPDATE``)."""
        if self.dialect != "sqlite":
            return
        dbapi = conn.connection.dbapi_connection
        if dbapi is not None and not dbapi.in_transaction:  # else a write of it holds the lock already
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(store_meta.c.value).where(store_meta.c.key == key)).scalar()

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        conn.execute(store_meta.delete().where(store_meta.c.key == key))
        conn.execute(store_meta.insert().values(key=key, value=value))

    def close(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """The URL without its password (nor one passed as a query parameter, as libpq
        and the MySQL drivers also take it), for logs and status."""
        url = self.engine.url
        hidden = {k: "***" for k in url.query if "pass" in k.lower()}
        return url.update_query_dict(hidden).render_as_string(hide_password=True)


# Alembic's own record of the revision, as Alembic creates it.
_alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                         PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


# MariaDB's named locks are the server's, not a database's: the name holds the database's
# (hashed: a name is at most 64 characters), so stores in other databases never wait for it.
_MIGRATION_LOCK = "CONCAT('idsync_migrate_', MD5(DATABASE()))"
_MIGRATION_LOCK_WAIT = 60  # seconds of each wait for MariaDB's migration lock, between two log lines


def _wait_for_migration_lock(conn: Connection) -> None:
    """Take MariaDB's migration lock of this database (``_MIGRATION_LOCK``), however long
    another process's migration holds it (a table rebuilt can take minutes), as PostgreSQL's
    advisory lock waits: a migration run beside another would do its work again, and fail
    once the other moved the revision on."""
    waited = 0
    while conn.execute(text(f"SELECT GET_LOCK({_MIGRATION_LOCK}, :wait)"),
                       {"wait": _MIGRATION_LOCK_WAIT}).scalar() != 1:
        waited += _MIGRATION_LOCK_WAIT
        log.info("store.migration_waiting", seconds=waited)


def _new_database(conn: Connection) -> bool:
    """Whether the database holds none of the store's tables (nor Alembic's): a new store."""
    present = set(inspect(conn).get_table_names())
    return _alembic_version.name not in present and present.isdisjoint(metadata.tables)


def _upgrade(conn: Connection) -> None:
    """Every migration the database has not had, in ``conn``'s transaction."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _head_revision() -> str:
    """The newest migration's revision: the files are ``NNNN_name.py`` with revision ``NNNN``."""
    return max(path.name.split("_", 1)[0] for path in (_MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _is_json(kind: Any) -> bool:
    kind = getattr(kind, "impl", kind)
    return isinstance(kind, JSON) or any(isinstance(v, JSON) for v in getattr(kind, "_variant_mapping", {}).values())


def _is_datetime(kind: Any) -> bool:
    return isinstance(getattr(kind, "impl", kind), DateTime)


@functools.lru_cache(maxsize=64)  # a batch's rows mostly share the page's timestamps
def _sqlite_time(value: dt.datetime) -> str:
    # SQLAlchemy's own SQLite DATETIME text format, so its reads parse it back.
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@functools.lru_cache(maxsize=64)
def _copy_time(value: dt.datetime) -> str:
    # With its offset (or none, as psycopg sends a naive one): the server reads the same instant.
    return value.isoformat()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # A new store gets 16 KiB pages (SQLite's default is 4): the indexes a recon fills
    # a page of rows at a time have fewer, fuller pages to walk and write, and a first
    # recon costs the engine about 6% less CPU. A store created before keeps its pages
    # (WAL mode fixes them) and works the same.
    cursor.execute("PRAGMA page_size=16384")
    # WAL lets `idsync status` read while a recon writes; NORMAL is durable across
    # process crashes, which is what a sync store needs (it can re-run a page).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-16384")
    cursor.execute("PRAGMA temp_store=MEMORY")
    # `co` and `sw` match case as they do on PostgreSQL and MariaDB (utf8mb4_bin),
    # so one filter selects the same objects whatever the store.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


# The server refused the account: MySQL/MariaDB access denied, PostgreSQL password, role or pg_hba refusal.
_REFUSED_MYSQL = (1044, 1045, 1698)
_REFUSED_POSTGRES = ("password authentication failed", "role \"", "no pg_hba.conf entry", "SSPI authentication",
                     "GSSAPI authentication", "peer authentication failed", "certificate authentication failed")

# The server rolled the transaction back for another's sake: MariaDB's deadlock (ER_LOCK_DEADLOCK),
# PostgreSQL's deadlock_detected and serialization_failure. Running it again is the cure.
_CONFLICT_MYSQL = (1213,)
_CONFLICT_POSTGRES = ("40P01", "40001")




def store_error(exc: SQLAlchemyError, prefix: str = "store: ") -> PeerError:
    """Refused credentials exit 77 like any peer's; anything else is the store being unavailable (69)."""
    reason = _reason(exc)
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    if code in _REFUSED_MYSQL or any(marker in reason for marker in _REFUSED_POSTGRES):
        return AuthenticationFailed(f"{prefix}credentials refused: {reason}")
    if code in _CONFLICT_MYSQL or getattr(orig, "sqlstate", None) in _CONFLICT_POSTGRES:
        return WriteConflict(prefix + reason)
    return PeerUnavailable(prefix + reason)


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
