"""Waiting for something a daemon or another process does, with a deadline."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text

__all__ = ["wait_for", "wait_until_blocked"]

# What a thread waiting for a lock another transaction holds shows, per database: SQLite's
# writer sits in the driver's call of a statement that needs the write lock; the servers
# list the session as waiting for a lock (PostgreSQL's ``Lock`` waits: a row, a transaction,
# an advisory lock; MariaDB's InnoDB ``LOCK WAIT`` or a session waiting in GET_LOCK).
_SQLITE_WRITES = ("BEGIN IMMEDIATE", "INSERT", "UPDATE", "DELETE", "REPLACE")
_PG_LOCK_WAITS = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock'")
# MariaDB's information_schema.INNODB_TRX is a cache refreshed now and then (it can miss a
# wait altogether): the engine's status is read instead, its transactions' "LOCK WAIT"
# lines with the thread ids they name, matched to this database's sessions.
_MARIADB_WAITING = re.compile(r"LOCK WAIT .*\n(?:MariaDB|MySQL) thread id (\d+)")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """The first true value of ``predicate()``, asked every ``interval`` seconds; an
    AssertionError naming ``what`` when ``timeout`` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def _in_sqlite_write(thread: threading.Thread) -> bool:
    """``thread`` is in the driver's call of a statement that needs SQLite's write lock."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        statement = frame.f_locals.get("statement") if frame.f_code.co_name.startswith("do_execute") else None
        if isinstance(statement, str):
            return statement.lstrip().upper().startswith(_SQLITE_WRITES)
        frame = frame.f_back
    return False


def wait_until_blocked(thread: threading.Thread, url: Any, timeout: float = 60) -> None:
    """Return once ``thread`` has ended or waits for a lock another transaction of the
    database at ``url`` holds (the test holding it): what a fixed wait would only hope
    the thread reached by then, on a machine of any speed."""
    dialect = str(url).split(":", 1)[0].split("+", 1)[0]
    if dialect == "sqlite":
        wait_for(lambda: not thread.is_alive() or _in_sqlite_write(thread), timeout, "a lock wait", 0.01)
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            wait_for(lambda: not thread.is_alive() or _waiting(conn), timeout, "a lock wait", 0.01)
    finally:
        engine.dispose()


def _waiting(conn: Any) -> bool:
    """A session of ``conn``'s database waits for a lock."""
    if conn.dialect.name == "postgresql":
        return bool(conn.execute(_PG_LOCK_WAITS).scalar())
    ours = {r[0]: r[1] for r in conn.execute(text(
        "SELECT ID, STATE FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID != CONNECTION_ID()"))}
    if "User lock" in ours.values():  # waiting in GET_LOCK
        return True
    status = conn.execute(text("SHOW ENGINE INNODB STATUS")).one()[2]
    return any(int(i) in ours for i in _MARIADB_WAITING.findall(status))
