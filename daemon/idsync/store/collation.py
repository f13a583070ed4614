"""The collation that compares strings exactly on MariaDB and MySQL, whichever the server is.

SQLite, and PostgreSQL's ``"C"``, compare strings by code point, every character counted.
On MariaDB and MySQL that takes a binary collation that does not pad (``"alice"`` is not
``"alice "``), and the two servers name theirs differently, neither having the other's:
MariaDB's is ``utf8mb4_nopad_bin`` (10.2 and later), MySQL's ``utf8mb4_0900_bin`` (8.0.17
and later). ``exact_collation`` names the one of a connected server, for the declared
schema and the queries; ``server_exact_collation`` also asks the server whether it has it,
before a migration or a new store names it, and says what is missing when it has not.

Only MariaDB is tested against a server; the choice for MySQL (``choose_exact_collation``)
is tested as a unit, with the collations a MySQL 8 server lists.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.engine import Dialect

from idsync.errors import PeerMisconfigured

__all__ = ["MARIADB_EXACT", "MYSQL_EXACT", "choose_exact_collation", "exact_collation", "server_exact_collation"]

MARIADB_EXACT = "utf8mb4_nopad_bin"
MYSQL_EXACT = "utf8mb4_0900_bin"

# Each server's exact collation, and the first release of it that has the collation.
_WANTED = {True: (MARIADB_EXACT, "MariaDB 10.2"), False: (MYSQL_EXACT, "MySQL 8.0.17")}


def exact_collation(dialect: Dialect) -> str:
    """The exact collation of the server ``dialect`` is connected to: MariaDB's, else MySQL's."""
    return _WANTED[_is_mariadb(dialect)][0]


def choose_exact_collation(available: Collection[str], *, mariadb: bool) -> str:
    """The exact collation a server with the collations ``available`` compares with (MariaDB's
    when ``mariadb``, else MySQL's), or ``PeerMisconfigured`` naming the one it lacks and the
    release that brings it."""
    wanted, since = _WANTED[mariadb]
    if wanted in available:
        return wanted
    server = "MariaDB" if mariadb else "MySQL"
    raise PeerMisconfigured(
        f"store: this {server} server has no collation {wanted}, which idsync needs to compare ids and names "
        f"exactly (every character and its case counted): use {since} or later")


def server_exact_collation(conn: Connection) -> str:
    """``choose_exact_collation`` for the server ``conn`` is open on, asked which of the two it has."""
    names = [name for name, _ in _WANTED.values()]
    available = set(conn.execute(
        text("SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN :names")
        .bindparams(bindparam("names", expanding=True)), {"names": names}).scalars())
    return choose_exact_collation(available, mariadb=_is_mariadb(conn.dialect))


def _is_mariadb(dialect: Dialect | Any) -> bool:
    # SQLAlchemy's MySQL dialect knows which server it is connected to (``mysql://`` URLs
    # reach MariaDB too); ``mariadb://`` URLs say it from the start.
    return bool(getattr(dialect, "is_mariadb", False)) or dialect.name == "mariadb"
