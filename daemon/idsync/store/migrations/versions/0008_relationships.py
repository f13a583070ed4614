"""Relationships between managed objects (``relationships``): one row per reference,
read from both ends (``store/relationships.py``).

Stores of earlier releases kept a role's ``members`` as the ``userName``s of its
members, and a user's ``roles`` as a list in the user's document. Both become
references: each member name names the managed user with that ``userName``, each
role entry the role with that ``_id`` or ``name`` (or a ``{"_ref": ...}`` already),
and the lists leave the documents, whose revision moves. In a list where some
names match, one that matches no object cannot become a reference: it is dropped
and logged (``store.migration_unresolved``), and the next recon of the groups
restores it. A list where nothing matches (a directory group's member DNs, kept
by a project whose ``members`` is a plain array) is left as it is.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = structlog.get_logger("idsync.store")

_Id = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
_Json = sa.JSON().with_variant(mysql.JSON(), "mysql", "mariadb")

# The two ends, as every release so far named them (role ``members`` sorts before user ``roles``).
_ROLE_END = ("managed/role", "members")
_USER_END = ("managed/user", "roles")


def upgrade() -> None:
    table = op.create_table(
        "relationships",
        sa.Column("id", _Id, primary_key=True),
        sa.Column("rev", sa.String(32), nullable=False),
        sa.Column("first_type", sa.String(64), nullable=False),
        sa.Column("first_id", _Id, nullable=False),
        sa.Column("first_property", sa.String(128), nullable=False),
        sa.Column("second_type", sa.String(64), nullable=False),
        sa.Column("second_id", _Id, nullable=False),
        sa.Column("second_property", sa.String(128), nullable=False),
        sa.Column("properties", _Json, nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ux_relationships_first", "relationships",
                    ["first_type", "first_property", "first_id", "second_type", "second_id"], unique=True)
    op.create_index("ix_relationships_second", "relationships", ["second_type", "second_property", "second_id"])
    _convert(op.get_bind(), table)


def downgrade() -> None:
    op.drop_index("ix_relationships_second", "relationships")
    op.drop_index("ux_relationships_first", "relationships")
    op.drop_table("relationships")


def _objects(conn: sa.Connection, object_type: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    mo = sa.table("managed_objects", sa.column("object_type"), sa.column("id"), sa.column("rev"),
                  sa.column("data", _Json))
    query = sa.select(mo.c.id, mo.c.rev, mo.c.data).where(mo.c.object_type == object_type)
    for row in conn.execute(query):
        yield row.id, row.rev, row.data or {}


def _convert(conn: sa.Connection, table: sa.Table) -> None:
    users_by_name: dict[str, str] = {}
    user_ids: set[str] = set()
    user_roles: dict[str, tuple[str, list[Any]]] = {}
    for user_id, rev, data in _objects(conn, "user"):
        user_ids.add(user_id)
        if isinstance(data.get("userName"), str):
            users_by_name.setdefault(data["userName"], user_id)
        if "roles" in data:
            user_roles[user_id] = (rev, data["roles"] if isinstance(data["roles"], list) else [data["roles"]])
    role_ids: set[str] = set()
    roles_by_name: dict[str, str] = {}
    role_members: dict[str, tuple[str, list[Any]]] = {}
    for role_id, rev, data in _objects(conn, "role"):
        role_ids.add(role_id)
        if isinstance(data.get("name"), str):
            roles_by_name.setdefault(data["name"], role_id)
        if "members" in data:
            role_members[role_id] = (rev, data["members"] if isinstance(data["members"], list) else [])
    pairs: dict[tuple[str, str], None] = {}  # (role id, user id), in order, once each
    converted_roles = _resolved(role_members, "managed/role", "members", "managed/user/", users_by_name, user_ids)
    converted_users = _resolved(user_roles, "managed/user", "roles", "managed/role/", roles_by_name, role_ids)
    for role_id, user_ids_of in converted_roles.items():
        pairs.update(((role_id, u), None) for u in user_ids_of)
    for user_id, role_ids_of in converted_users.items():
        pairs.update(((r, user_id), None) for r in role_ids_of)
    now = datetime.now(UTC)
    rows = [{"id": str(uuid.uuid4()), "rev": "0000000000000001", "first_type": _ROLE_END[0], "first_id": role_id,
             "first_property": _ROLE_END[1], "second_type": _USER_END[0], "second_id": user_id,
             "second_property": _USER_END[1], "properties": None, "created": now} for role_id, user_id in pairs]
    for start in range(0, len(rows), 500):
        conn.execute(table.insert(), rows[start:start + 500])
    _drop_lists(conn, "role", "members", {k: role_members[k] for k in converted_roles})
    _drop_lists(conn, "user", "roles", {k: user_roles[k] for k in converted_users})


def _resolved(lists: dict[str, tuple[str, list[Any]]], collection: str, name: str, prefix: str,
              by_name: dict[str, str], ids: set[str]) -> dict[str, list[str]]:
    """object id -> the ids its list names, for the lists that name at least one object:
    a list naming none (the DNs of a directory's members) is not a list of references
    and stays as it is; in the others, what names nothing is logged and dropped."""
    converted: dict[str, list[str]] = {}
    for object_id, (_, values) in lists.items():
        found = [_referenced(v, prefix, by_name, ids) for v in values]
        if not any(found):
            continue
        for value, target in zip(values, found, strict=True):
            if target is None:
                log.warning("store.migration_unresolved", resource=f"{collection}/{object_id}", property=name,
                            value=str(value)[:200])
        converted[object_id] = [t for t in found if t is not None]
    return converted


def _referenced(value: Any, prefix: str, by_name: dict[str, str], ids: set[str]) -> str | None:
    """The id of the object a stored member or role entry names, if any."""
    if isinstance(value, dict) and isinstance(value.get("_ref"), str) and value["_ref"].startswith(prefix):
        found = value["_ref"][len(prefix):]
        return found if found in ids else None
    if isinstance(value, str):
        value = value.removeprefix(prefix)
        return value if value in ids else by_name.get(value)
    return None


def _drop_lists(conn: sa.Connection, object_type: str, name: str, objects: dict[str, tuple[str, list[Any]]]) -> None:
    """Take ``name`` out of each object's document (it is read from ``relationships``
    now), moving its revision; its rows in the searchable index go too."""
    mo = sa.table("managed_objects", sa.column("object_type"), sa.column("id"), sa.column("rev"),
                  sa.column("data", _Json))
    mp = sa.table("managed_properties", sa.column("object_type"), sa.column("name"))
    ids = list(objects)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        current = {r.id: r.data for r in conn.execute(
            sa.select(mo.c.id, mo.c.data).where(mo.c.object_type == object_type, mo.c.id.in_(chunk)))}
        for object_id in chunk:
            data = {k: v for k, v in (current.get(object_id) or {}).items() if k != name}
            rev = f"{int(objects[object_id][0], 16) + 1:016x}"
            conn.execute(sa.update(mo).where(mo.c.object_type == object_type, mo.c.id == object_id)
                         .values(rev=rev, data=data))
    conn.execute(sa.delete(mp).where(mp.c.object_type == object_type, mp.c.name == name))
