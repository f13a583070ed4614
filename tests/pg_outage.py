"""A real PostgreSQL outage of one test database, without restarting the shared server:
new connections to it are refused (``ALLOW_CONNECTIONS false``) and the open ones
are cut server-side (``pg_terminate_backend``), until the block ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def outage(url: str) -> Iterator[None]:
    """The database of ``url`` is unreachable inside the block (it must be a ``test*`` database)."""
    database = make_url(url).database or ""
    assert database.startswith("test"), f"refusing to cut off {database!r}: not a test database"
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database})
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()
