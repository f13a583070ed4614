"""A MariaDB store whose ids and keys compared with a PAD SPACE collation (schema 0018),
upgraded in place by opening it (migration 0019): what it held is kept, and values that
differ only by trailing spaces are two from then on, as on SQLite and PostgreSQL, which
the migration leaves as they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbs import BACKENDS, old_store, store_url
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
