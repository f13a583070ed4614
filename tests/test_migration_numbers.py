"""A store whose searchable index kept numbers in MySQL's and MariaDB's 4-byte FLOAT
(schema 0015), upgraded in place by opening it (migration 0016): its numbers compare
exactly again, in filters and in correlation. SQLite and PostgreSQL kept doubles
all along; the migration leaves them as they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbs import BACKENDS, old_store, store_url
from idsync.config.managed import parse_managed
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync.store.database import Store
from idsync.store.objects import ManagedResource

_USERS = parse_managed({"objects": [{"name": "user", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True}, "n": {"type": "number", "searchable": True}}}}]}).get("user")
_NUMBERS = {"tenth": 0.1, "half": 30.5, "big": 1234567890, "next": 1234567891, "minus": -2.75}


def _old_store(url: str) -> None:
    """The store at schema 0015, its users' numbers written into the index as it then was."""
    store = old_store(url, "0015")
    try:
        for name, n in _NUMBERS.items():
            ManagedResource(store, _USERS).create({"userName": name, "n": n})
    finally:
        store.close()


def _found(users: ManagedResource, text: str) -> list[str]:
    return sorted(o["userName"] for page in users.pages(QuerySpec(filter=parse(text))) for o in page)


@pytest.mark.parametrize("kind", BACKENDS)
def test_numbers_compare_exactly_once_the_store_is_opened(kind: str, tmp_path: Path) -> None:
    """Opened, the old store finds each number by ``eq``, ranges and a batched
    correlation: 0.1 and 1234567890 (which a FLOAT keeps as 0.100000001 and 1234567936)
    each their own user, 1234567890 and 1234567891 two values."""
    url = store_url(kind, tmp_path, empty=True)
    _old_store(url)
    store = Store.open(url)
    try:
        users = ManagedResource(store, _USERS)
        for name, n in _NUMBERS.items():
            assert _found(users, f"n eq {n!r}") == [name], (name, n)
        assert _found(users, "n gt 1234567890") == ["next"]
        assert _found(users, "n lt 0.2") == ["minus", "tenth"]
        found = users.find_matching((("n",),), [(n,) for n in _NUMBERS.values()])
        assert {k[0]: [o["userName"] for o in v] for k, v in found.items()} == \
            {n: [name] for name, n in _NUMBERS.items()}
    finally:
        store.close()
