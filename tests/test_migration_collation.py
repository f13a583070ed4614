"""Stores whose ids and keys compared otherwise than SQLite's, upgraded in place by opening
them: MariaDB's PAD SPACE collation (schema 0018; migration 0019), after which values that
differ only by trailing spaces are two, and PostgreSQL's database collation (schema 0019;
migration 0020), after which they order by code point. What they held is kept; each
migration leaves the other stores as they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbs import BACKENDS, POSTGRESQL_EN, old_store, store_url
from idsync.config.managed import parse_managed
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource

_USERS = parse_managed({"objects": [{"name": "user", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True}}}}]}).get("user")


def _found(users: ManagedResource, text: str) -> list[str]:
    return sorted(o["_id"] for page in users.pages(QuerySpec(filter=parse(text))) for o in page)


@pytest.mark.parametrize("kind", BACKENDS)
def test_trailing_spaces_count_once_the_store_is_opened(kind: str, tmp_path: Path) -> None:
    """The store at schema 0018, holding a user ``alice `` and a link of source ``s ``,
    opened: both are kept, and a user ``alice`` with the id ``x`` and a link of source
    ``s`` are added beside them, each found alone."""
    url = store_url(kind, tmp_path, empty=True)
    store = old_store(url, "0018")
    try:
        ManagedResource(store, _USERS).create({"_id": "x ", "userName": "alice "})
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
