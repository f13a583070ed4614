"""Stores whose ids and keys compared otherwise than SQLite's, upgraded in place by opening
them: MariaDB's PAD SPACE and case-blind collations (schema 0018; migration 0019), after
which values that differ only by trailing spaces, and names only by case, are two, and
PostgreSQL's database collation (schema 0019; migration 0020), after which they order by
code point. What they held is kept; each
migration leaves the other stores as they are. Such a migration rebuilds tables, which can
take minutes: a process opening the store meanwhile waits for it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from dbs import BACKENDS, MARIADB, POSTGRESQL_EN, old_store, store_url
from idsync.config.managed import parse_managed
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from sqlalchemy import create_engine, text

_USERS = parse_managed({"objects": [{"name": "user", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True}, "mail": {"type": "string", "searchable": True},
    "Mail": {"type": "string", "searchable": True}}}}]}).get("user")


def _found(users: ManagedResource, text: str) -> list[str]:
    return sorted(o["_id"] for page in users.pages(QuerySpec(filter=parse(text))) for o in page)


@pytest.mark.parametrize("kind", BACKENDS)
def test_trailing_spaces_count_once_the_store_is_opened(kind: str, tmp_path: Path) -> None:
    """The store at schema 0018, holding a user ``alice `` (whose ``Mail`` is set) and a
    link of source ``s ``, opened: both are kept, a user ``alice`` with the id ``x`` and a
    link of source ``s`` are added beside them, each found alone, and ``mail`` is not
    ``Mail``."""
    url = store_url(kind, tmp_path, empty=True)
    store = old_store(url, "0018")
    try:
        ManagedResource(store, _USERS).create({"_id": "x ", "userName": "alice ", "Mail": "m@example.com"})
        with store.begin() as conn:
            LinkSet(store, "m").add(conn, [("s ", "x ")])
    finally:
        store.close()
    store = Store.open(url)
    try:
        users = ManagedResource(store, _USERS)
        users.create({"_id": "x", "userName": "alice"})
        links = LinkSet(store, "m")
        with store.begin() as conn:
            links.add(conn, [("s", "x")])
        assert _found(users, 'userName eq "alice"') == ["x"]
        assert _found(users, 'userName eq "alice "') == ["x "]
        assert _found(users, 'mail eq "m@example.com"') == []
        assert _found(users, 'Mail eq "m@example.com"') == ["x "]
        assert links.targets_of(["s", "s "]) == {"s": "x", "s ": "x "}
    finally:
        store.close()


@pytest.mark.parametrize("kind", [*BACKENDS, POSTGRESQL_EN])
def test_ids_order_by_code_point_once_the_store_is_opened(kind: str, tmp_path: Path) -> None:
    """The store at schema 0019, on PostgreSQL in a database ordered as English text is
    ("a" < "B"), opened (migration 0020): its objects are kept and come in code point order
    ("B" < "a"), by ``_id`` and by a searchable value's range, as on every other store."""
    url = store_url(kind, tmp_path, empty=True)
    store = old_store(url, "0019")
    names = ["b", "B", "a", "A"]
    try:
        for name in names:
            ManagedResource(store, _USERS).create({"_id": name, "userName": name})
    finally:
        store.close()
    store = Store.open(url)
    try:
        users = ManagedResource(store, _USERS)
        assert [o["_id"] for page in users.pages(QuerySpec(page_size=3)) for o in page] == ["A", "B", "a", "b"]
        assert _found(users, 'userName lt "a"') == ["A", "B"]
    finally:
        store.close()


@pytest.mark.parametrize("kind", [MARIADB])
def test_a_store_opened_while_another_process_migrates_it_waits(kind: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A store opened while another session holds MariaDB's migration lock longer than one
    wait for it (a long migration of another process) waits until that lock is released,
    then migrates: it neither goes on beside the other nor fails."""
    from idsync.store import database

    monkeypatch.setattr(database, "_MIGRATION_LOCK_WAIT", 1)
    url = store_url(kind, tmp_path, empty=True)
    old_store(url, "0019").close()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    opened: list[str | None] = []
    try:
        with engine.connect() as holder:
            assert holder.execute(text("SELECT GET_LOCK(CONCAT('idsync_migrate_', MD5(DATABASE())), 5)")).scalar() == 1
            opening = threading.Thread(target=lambda: opened.append(_opened_revision(url)), daemon=True)
            opening.start()
            opening.join(3.5)
            assert opening.is_alive() and not opened
            assert holder.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0019"
            holder.execute(text("SELECT RELEASE_LOCK(CONCAT('idsync_migrate_', MD5(DATABASE())))"))
        opening.join(60)
        assert opened == [database._head_revision()]
    finally:
        engine.dispose()  # the lock is the session's: closed, it is released whatever happened


def _opened_revision(url: str) -> str | None:
    store = Store.open(url)
    try:
        return store._revision()
    finally:
        store.close()
