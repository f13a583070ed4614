"""The SQL stores the suite runs against: SQLite always; PostgreSQL and MariaDB
when they answer on this machine (skipped with the reason otherwise)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

POSTGRES_URL = os.environ.get("IDSYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("IDSYNC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")

_TABLES = ("managed_properties", "managed_objects", "links", "audit", "recon_runs", "recon_claims",
           "recon_deferred", "locks", "store_meta", "run_totals", "alembic_version")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        for table in _TABLES:
            if table in existing:
                conn.execute(text(f"DROP TABLE {table}"))
    engine.dispose()


def store_url(kind: str, tmp_path: Path) -> str:
    """A fresh, empty store of ``kind`` (sqlite, postgresql, mariadb)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'idsync.db'}"
    url, port = (POSTGRES_URL, 5432) if kind == "postgresql" else (MARIADB_URL, 3306)
    if not _port_open(port):
        pytest.skip(f"{kind} is not running on 127.0.0.1:{port}")
    try:
        _reset(url)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        pytest.skip(f"{kind} at {url} is not usable: {exc}")
    return url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql),
            pytest.param("mariadb", marks=pytest.mark.mariadb)]
