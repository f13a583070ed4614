"""Which collation compares exactly on MariaDB and on MySQL (``store/collation.py``): MariaDB's
``utf8mb4_nopad_bin``, MySQL 8's ``utf8mb4_0900_bin`` (MySQL has no ``nopad_bin``, MariaDB no
``0900_bin`` before 11.4), and a clear refusal from a server that has not its own.

No MySQL server runs here: MySQL's side is proven on the collations a MySQL server lists
and on the SQL compiled for SQLAlchemy's MySQL dialect; MariaDB's also against the server."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbs import MARIADB, store_url
from idsync.errors import PeerMisconfigured
from idsync.store.collation import (
    MARIADB_EXACT,
    MYSQL_EXACT,
    choose_exact_collation,
    exact_collation,
    server_exact_collation,
)
from idsync.store.database import Store
from idsync.store.filters import Exact
from idsync.store.tables import managed_objects, metadata
from sqlalchemy import select
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql import mariadb
from sqlalchemy.schema import CreateTable

# What ``SHOW COLLATION LIKE 'utf8mb4%'`` lists (in part) on each server.
_MYSQL_8 = {"utf8mb4_0900_ai_ci", "utf8mb4_0900_as_cs", "utf8mb4_0900_bin", "utf8mb4_bin", "utf8mb4_general_ci"}
_MYSQL_57 = {"utf8mb4_bin", "utf8mb4_general_ci", "utf8mb4_unicode_ci"}
_MARIADB_1011 = {"utf8mb4_bin", "utf8mb4_general_ci", "utf8mb4_nopad_bin", "utf8mb4_general_nopad_ci"}
_MARIADB_101 = {"utf8mb4_bin", "utf8mb4_general_ci", "utf8mb4_unicode_ci"}
_MARIADB_114 = _MARIADB_1011 | {"utf8mb4_0900_bin", "utf8mb4_uca1400_ai_ci"}


def test_each_server_compares_with_its_own_exact_collation() -> None:
    """MySQL 8 takes ``utf8mb4_0900_bin``, MariaDB ``utf8mb4_nopad_bin``, even a MariaDB
    that also lists MySQL's name."""
    assert choose_exact_collation(_MYSQL_8, mariadb=False) == MYSQL_EXACT == "utf8mb4_0900_bin"
    assert choose_exact_collation(_MARIADB_1011, mariadb=True) == MARIADB_EXACT == "utf8mb4_nopad_bin"
    assert choose_exact_collation(_MARIADB_114, mariadb=True) == MARIADB_EXACT


@pytest.mark.parametrize(("available", "is_mariadb", "missing", "since"), [
    (_MYSQL_57, False, "utf8mb4_0900_bin", "MySQL 8.0.17"),
    (_MARIADB_1011, False, "utf8mb4_0900_bin", "MySQL 8.0.17"),
    (_MARIADB_101, True, "utf8mb4_nopad_bin", "MariaDB 10.2"),
    (_MYSQL_8, True, "utf8mb4_nopad_bin", "MariaDB 10.2"),
])
def test_a_server_without_its_exact_collation_is_refused_naming_it(
        available: set[str], is_mariadb: bool, missing: str, since: str) -> None:
    """A server lacking its exact collation (MySQL 5.7, MariaDB 10.1) is refused with a
    message naming the collation and the release that has it, as a peer to fix (exit 78),
    never with a padding or case-blind collation in its place."""
    with pytest.raises(PeerMisconfigured) as refused:
        choose_exact_collation(available, mariadb=is_mariadb)
    assert f"no collation {missing}" in str(refused.value) and f"{since} or later" in str(refused.value)
    assert refused.value.exit_code == 78


def test_the_declared_schema_and_queries_name_the_servers_collation() -> None:
    """The tables a new store gets, and a query comparing exactly, name ``utf8mb4_0900_bin``
    for MySQL and ``utf8mb4_nopad_bin`` for MariaDB: never a collation the server lacks."""
    for dialect, collation, other in ((mysql.dialect(), MYSQL_EXACT, MARIADB_EXACT),
                                      (mariadb.MariaDBDialect(), MARIADB_EXACT, MYSQL_EXACT)):
        assert exact_collation(dialect) == collation
        ddl = "".join(str(CreateTable(table).compile(dialect=dialect)) for table in metadata.sorted_tables)
        objects = str(CreateTable(managed_objects).compile(dialect=dialect))
        assert f"id VARCHAR(64) COLLATE {collation} NOT NULL" in objects
        assert f"COLLATE {collation}" in ddl and other not in ddl
        query = select(managed_objects.c.id).where(Exact(managed_objects.c.rev) == "1")
        assert f"COLLATE {collation}" in str(query.compile(dialect=dialect))


@pytest.mark.parametrize("kind", [MARIADB])
def test_mariadb_is_asked_and_answers_nopad_bin(kind: str, tmp_path: Path) -> None:
    """MariaDB, asked which exact collation it has, answers ``utf8mb4_nopad_bin``: the one the
    declared schema and the queries name for the connected server."""
    store = Store.open(store_url(kind, tmp_path))
    try:
        with store.engine.connect() as conn:
            assert server_exact_collation(conn) == exact_collation(conn.dialect) == MARIADB_EXACT
    finally:
        store.close()
