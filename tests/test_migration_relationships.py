"""A store of the released 0.1.0 (schema 0003), with role members kept as user names
and user roles as lists in the documents, upgraded in place by opening it: the names
become references seen from both ends, lists that name nothing are left alone, and
the users' assignments start with no ``lastSync`` record."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dbs import BACKENDS, migrate_to, store_url
from idsync.config.managed import DEFAULT_MANAGED, parse_managed
from idsync.store.database import Store
from idsync.store.last_sync import LastSync
from idsync.store.objects import ManagedResource
from idsync.store.tables import managed_objects
from sqlalchemy import create_engine, insert, select


def _old_store(url: str) -> None:
    """The store as the released 0.1.0 left it: migrated to 0003, with its objects."""
    engine = create_engine(url)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def row(kind: str, object_id: str, data: dict[str, object]) -> dict[str, object]:
        return {"object_type": kind, "id": object_id, "rev": "0000000000000003", "data": data,
                "created": now, "updated": now}

    with engine.begin() as conn:
        migrate_to(conn, "0003")
        conn.execute(insert(managed_objects), [
            row("user", "u1", {"userName": "bjensen"}),
            row("user", "u2", {"userName": "jdoe", "roles": ["auditors", "managed/role/r1"]}),
            row("user", "u3", {"userName": "kcarter", "roles": ["no-such-role"]}),
            row("role", "r1", {"name": "admins", "members": ["bjensen", "jdoe", "gone"]}),
            row("role", "r2", {"name": "auditors", "members": []}),
            row("role", "r3", {"name": "ldap", "members": ["uid=a,ou=people,dc=example,dc=com"]}),
        ])
    engine.dispose()


@pytest.mark.parametrize("kind", BACKENDS)
def test_member_names_become_references_when_the_store_is_opened(kind: str, tmp_path: Path) -> None:
    """Opening the old store migrates it: admins' members bjensen and jdoe are references
    to those users (the unknown name is dropped), jdoe's role list becomes references to
    auditors and admins, so each end sees the other; the converted documents no longer
    hold the lists and their revision moved; lists naming no object stay as they were."""
    url = store_url(kind, tmp_path, empty=True)
    _old_store(url)
    store = Store.open(url)
    try:
        schema = parse_managed(DEFAULT_MANAGED)
        users = ManagedResource(store, schema.get("user"))
        roles = ManagedResource(store, schema.get("role"))
        admins = roles.get("r1")
        assert admins is not None
        assert sorted(m["_ref"] for m in admins["members"]) == ["managed/user/u1", "managed/user/u2"]
        assert admins["_rev"] > "0000000000000003"
        assert sorted(r["_ref"] for r in users.get("u2")["roles"]) == ["managed/role/r1", "managed/role/r2"]  # type: ignore[index]
        assert [m["_ref"] for m in roles.get("r2")["members"]] == ["managed/user/u2"]  # type: ignore[index]
        assert [r["_ref"] for r in users.get("u1")["roles"]] == ["managed/role/r1"]  # type: ignore[index]
        with store.engine.connect() as conn:
            data = dict(conn.execute(select(managed_objects.c.id, managed_objects.c.data)).all())
        assert "members" not in data["r1"] and "roles" not in data["u2"]
        assert data["r3"]["members"] == ["uid=a,ou=people,dc=example,dc=com"]  # not names of users: untouched
        assert data["u3"]["roles"] == ["no-such-role"]
        assert LastSync(store, "user", "managedUser_systemLdapAccounts").read(["u1", "u2"]) == {}
    finally:
        store.close()
