"""The SQL stores the suite runs against: SQLite always; PostgreSQL and MariaDB
when they answer on this machine (skipped with the reason otherwise).

Under ``CI=true`` a database that does not answer fails the test instead: a CI host
without PostgreSQL or MariaDB must not go green with their tests quietly skipped.

Under pytest-xdist each worker gets a database of its own (``test_gw0``, ``test_gw1``, made
on first use next to the configured one), since the tests empty or drop idsync's tables;
``postgresql-en`` is a database beside that one whose collation is English's (``NAME_en``)."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest
from idsync.store.database import Store
from idsync_dev.stores import drop_idsync_tables, empty_idsync_tables
from sqlalchemy import Connection, create_engine, make_url, text

POSTGRES_URL = os.environ.get("IDSYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("IDSYNC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")

_VARIABLES = {"postgresql": "IDSYNC_TEST_POSTGRES", "postgresql-en": "IDSYNC_TEST_POSTGRES",
              "mariadb": "IDSYNC_TEST_MARIADB"}


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _unavailable(kind: str, url: str, why: str) -> None:
    """Skip, or under CI=true fail, saying which database and how to point at another."""
    shown = make_url(url).render_as_string(hide_password=True)
    message = (f"{kind} at {shown} is not usable: {why}; start it, or set {_VARIABLES[kind]} "
               "to the SQLAlchemy URL of a database the tests may drop idsync's tables in")
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: a database the suite expects must be there)", pytrace=False)
    pytest.skip(message)


@functools.cache
def _worker_url(url: str) -> str:
    """``url``, or under an xdist worker the worker's own database beside it (created once)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    parsed = make_url(url)
    if not worker or not parsed.database:
        return url
    name = f"{parsed.database}_{worker}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
    finally:
        admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


def store_url(kind: str, tmp_path: Path, *, empty: bool = False) -> str:
    """A fresh store of ``kind`` (sqlite, postgresql, postgresql-en, mariadb): a new SQLite file, or the
    worker's server database as a new store leaves it (idsync's schema at the newest
    revision, no rows: ``empty_idsync_tables``). ``empty``: without any of idsync's tables,
    for a test of how a store is created or migrated (a new SQLite file is always empty)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'idsync.db'}"
    url, default_port = (MARIADB_URL, 3306) if kind == "mariadb" else (POSTGRES_URL, 5432)
    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or default_port
    if not _port_open(host, port):
        _unavailable(kind, url, f"nothing answers on {host}:{port}")
    try:
        url = _worker_url(url)
        if kind == "postgresql-en":
            url = _english(url)
        url = _client_options(url)
        if empty:
            drop_idsync_tables(url)
        else:
            empty_idsync_tables(url)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        _unavailable(kind, url, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return url


@functools.cache
def _english(url: str) -> str:
    """The database beside ``url``'s ordered as English text is (ICU's ``en-US``, as a host
    set up in English gives ``initdb``: "a" < "B" < "b"), made on first use."""
    parsed = make_url(url)
    name = f"{parsed.database}_en"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                conn.execute(text(f"CREATE DATABASE \"{name}\" LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                                  "TEMPLATE template0"))
    finally:
        admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


def _client_options(url: str) -> str:
    """``url`` with the options the tests connect with, which change nothing they check."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # Commits wait for no disk flush: what the tests check (each commit seen by the next
        # statement, of any connection or process) is the same, in a fraction of the time.
        options = {"options": "-c synchronous_commit=off"}
    elif not any(key.startswith("ssl") for key in parsed.query):
        # PyMySQL otherwise loads the CA certificates of a TLS context at each new connection
        # (30 ms), to use TLS if the server offers it: nothing the tests check depends on TLS,
        # and the suite opens thousands of connections. A URL with ssl options keeps them.
        options = {"ssl_disabled": "true"}
    else:
        return url
    return parsed.update_query_dict(options).render_as_string(hide_password=False)


POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.postgresql)
MARIADB = pytest.param("mariadb", marks=pytest.mark.mariadb)
# PostgreSQL on a database whose collation is a language's, not code point order.
POSTGRESQL_EN = pytest.param("postgresql-en", marks=pytest.mark.postgresql)
# What differs between stores (SQL, locks, migrations) is tested on all three.
BACKENDS = ["sqlite", POSTGRESQL, MARIADB]
# A long end-to-end scenario runs on SQLite and one server store; the scenarios take
# PostgreSQL and MariaDB in turn, so each server store still meets every part of the engine.
WITH_POSTGRESQL = ["sqlite", POSTGRESQL]
WITH_MARIADB = ["sqlite", MARIADB]


def migrate_to(conn: Connection, revision: str) -> None:
    """Bring the store ``conn`` is open on to schema ``revision`` and no further, as an
    older release left it (``conn``'s transaction commits it)."""
    from alembic import command
    from alembic.config import Config
    from idsync.store import database

    config = Config()
    config.set_main_option("script_location", str(database._MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def old_store(url: str, revision: str) -> Store:
    """The store at ``url`` brought to schema ``revision`` and opened without migrating
    further, for a test to write what an older release wrote; closed by the caller."""
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate_to(conn, revision)
    engine.dispose()
    return Store.open(url, migrate=False)
