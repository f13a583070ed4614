"""Effective roles and assignments of users, and the grants of conditional roles.

``effectiveRoles`` and ``effectiveAssignments`` are PingIDM's virtual properties: idsync
computes them on every read of a user (``Grants.fill``), never stores them, so they are
never stale. A user's effective roles are the roles it is granted (``roles``) whose grant
and whose role are both in effect now (``temporalConstraints``, ``config/roles.py``);
its effective assignments are the assignments of those roles, each once. Reading a page
of users costs one query for their grants and, when any has one, one for the roles, one
for the roles' assignments and one for the assignments.

A role's ``condition`` grants it to the users it matches, as grants whose
``_refProperties._grantType`` is ``conditional``; idsync keeps them current in the
transaction of every write of a user (``for_users``: the conditions evaluated against
the user as written) and of a role (``for_role``: the condition as a query of users).
A direct grant is never touched, and a conditional one only by its role's condition
or by a direct grant of the same role, which it becomes (``store/relationships.py``).
A grant's ``_refProperties.temporalConstraints`` are checked when written
(``check_grants``), as a role's are (``check_role``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from idsync.config import roles as roles_config
from idsync.config.managed import RoleModel
from idsync.config.roles import CONDITIONAL, edges, in_effect
from idsync.errors import QueryError
from idsync.query import parse
from idsync.query.ast import Node
from idsync.query.evaluate import matches
from idsync.resource import Obj, WriteOp
from idsync.store.database import Store
from idsync.store.filters import to_sql
from idsync.store.relationships import Edges, Key, Ref, RefChanges, Wanted
from idsync.store.tables import managed_objects as mo
from idsync.store.tables import relationships as rt
from idsync.store.validation import InvalidObject

__all__ = ["Grants", "check_grants", "check_role", "due"]

_CHUNK = 500


def check_role(op: WriteOp, name: str) -> None:
    """Refuse a role whose ``condition`` or ``temporalConstraints`` cannot be read."""
    condition = op.values.get("condition")
    where = f"managed/{name}" + (f"/{op.id}" if op.id else "")
    if condition is not None:
        if not isinstance(condition, str):
            raise InvalidObject(where, ["condition must be a _queryFilter string"])
        try:
            parse(condition)
        except QueryError as exc:
            raise InvalidObject(where, [f"condition: {exc}"]) from None
    try:
        roles_config.windows(op.values.get("temporalConstraints"))
    except ValueError as exc:
        raise InvalidObject(where, [str(exc)]) from None


def check_grants(op: WriteOp, name: str, prop: str) -> None:
    """Refuse grants in ``prop`` (a user's roles, a role's members) whose
    ``_refProperties.temporalConstraints`` cannot be read or are never in effect, as
    ``check_role`` refuses a role's: such a grant would silently grant nothing."""
    value = op.values.get(prop)
    grants: list[tuple[Any, Any]]
    if isinstance(value, RefChanges):  # a patch: only the grants it adds or changes
        grants = [(f"{w.collection}/{w.id}", w.properties) for w in value.add]
    else:
        items = value if isinstance(value, list) else [value]
        grants = [(item.get("_ref"), item.get("_refProperties")) for item in items if isinstance(item, Mapping)]
    for ref, props in grants:
        if isinstance(props, Mapping) and props.get("temporalConstraints") is not None:
            try:
                roles_config.windows(props["temporalConstraints"], "_refProperties.temporalConstraints")
            except ValueError as exc:
                where = f"managed/{name}" + (f"/{op.id}" if op.id else "")
                raise InvalidObject(where, [f"{prop}: the grant of {ref}: {exc}"]) from None


class Grants:
    """The role model seen from the store: effective properties and conditional grants."""

    def __init__(self, store: Store, model: RoleModel) -> None:
        self.store = store
        self.model = model
        self.users = Edges(store, model.user_type)
        self.roles = Edges(store, model.role)
        self.role_collection = f"managed/{model.role.name}"
        self.user_collection = f"managed/{model.user}"

    # -- effective roles and assignments ---------------------------------------

    def fill(self, conn: Connection, users: Sequence[Obj], names: Sequence[str]) -> None:
        """Set the effective properties ``names`` of ``users`` (read now)."""
        if not users:
            return
        at = roles_config.now()
        found = self.users.read(conn, [u["_id"] for u in users], [self.model.roles]) if self.users.any(conn) else {}
        grants = {uid: [r for r in by.get(self.model.roles, []) if r.collection == self.role_collection
                        and in_effect(r.properties.get("temporalConstraints"), at)]
                  for uid, by in found.items()}
        role_docs = self._docs(conn, self.model.role.name, {r.id for refs in grants.values() for r in refs})
        live = [rid for rid, doc in role_docs.items() if in_effect(doc.get("temporalConstraints"), at)]
        given = self._assignments(conn, live) if self.model.effective_assignments in names else {}
        for user in users:
            roles = list(dict.fromkeys(r.id for r in grants.get(user["_id"], []) if r.id in live))
            if self.model.effective_roles in names:
                user[str(self.model.effective_roles)] = [{"_ref": f"{self.role_collection}/{rid}"} for rid in roles]
            if self.model.effective_assignments in names:
                assignments = {a["_id"]: a for rid in roles for a in given.get(rid, [])}
                user[str(self.model.effective_assignments)] = list(assignments.values())

    def _assignments(self, conn: Connection, role_ids: Sequence[str]) -> dict[str, list[Obj]]:
        """role id -> the assignment objects it names (as a read answers them)."""
        kind = self.model.assignment
        if not role_ids or self.model.assignments is None or kind is None:
            return {}
        refs = self.roles.read(conn, role_ids, [self.model.assignments])
        named = {rid: [r.id for r in by.get(self.model.assignments, [])] for rid, by in refs.items()}
        docs = self._docs(conn, kind.name, {i for ids in named.values() for i in ids}, revs=True)
        shown = {i: {k: v for k, v in d.items() if k not in kind.secrets and k not in kind.relationships}
                 for i, d in docs.items()}
        return {rid: [shown[i] for i in ids if i in shown] for rid, ids in named.items()}

    def _docs(self, conn: Connection, object_type: str, ids: set[str], *, revs: bool = False) -> dict[str, Obj]:
        found: dict[str, Obj] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), _CHUNK):
            for r in conn.execute(select(mo.c.id, mo.c.rev, mo.c.data).where(
                    mo.c.object_type == object_type, self.store.in_(mo.c.id, wanted[start:start + _CHUNK]))):
                found[r.id] = {**r.data, "_id": r.id, "_rev": r.rev} if revs else {**r.data, "_id": r.id}
        return found

    # -- conditional grants ---------------------------------------------------

    def conditions(self, conn: Connection) -> list[tuple[str, Node]]:
        """(role id, condition) of every conditional role."""
        found = []
        for r in conn.execute(select(mo.c.id, mo.c.data).where(mo.c.object_type == self.model.role.name)):
            condition = (r.data or {}).get("condition")
            if isinstance(condition, str) and condition.strip():
                try:
                    found.append((r.id, parse(condition)))
                except QueryError:
                    continue  # refused when written; an older one grants nothing
        return found

    def for_users(self, conn: Connection, users: Sequence[Obj]) -> set[Key]:
        """Grant and take back the conditional roles of ``users`` (as just written)."""
        if not users:
            return set()
        conditions = self.conditions(conn)
        conditional = {rid for rid, _ in conditions}
        found = self.users.read(conn, [u["_id"] for u in users], [self.model.roles]) if self.users.any(conn) else {}
        touched: set[Key] = set()
        for user in users:
            refs = found.get(user["_id"], {}).get(self.model.roles, [])
            if not refs and not conditions:
                continue  # no role to grant or take back: most users of a model without conditional roles
            held = {r.id: r for r in refs if r.collection == self.role_collection}
            wanted = {rid for rid, node in conditions if matches(node, user)}
            add = tuple(Wanted(self.role_collection, rid, {"_grantType": CONDITIONAL})
                        for rid in sorted(wanted - set(held)))
            remove = tuple(f"{self.role_collection}/{rid}" for rid, ref in sorted(held.items())
                           if _conditional(ref) and (rid not in wanted or rid not in conditional))
            if add or remove:
                touched |= self.users.change(conn, user["_id"], self.model.roles, RefChanges(add, remove))
        return touched

    def for_role(self, conn: Connection, role_id: str, condition: Any) -> set[Key]:
        """Make the conditional members of ``role_id`` the users its ``condition`` matches."""
        refs = self.roles.read(conn, [role_id], [self.model.members]).get(role_id, {}).get(self.model.members, [])
        held = {r.id: r for r in refs if r.collection == self.user_collection}
        had = {uid for uid, ref in held.items() if _conditional(ref)}
        if not isinstance(condition, str) or not condition.strip():
            wanted: set[str] = set()
        else:
            wanted = set(self._matching(conn, parse(condition)))
        add = tuple(Wanted(self.user_collection, uid, {"_grantType": CONDITIONAL})
                    for uid in sorted(wanted - set(held)))
        remove = tuple(f"{self.user_collection}/{uid}" for uid in sorted(had - wanted))
        if not add and not remove:
            return set()
        return self.roles.change(conn, role_id, self.model.members, RefChanges(add, remove))

    def _matching(self, conn: Connection, node: Node) -> Iterator[str]:
        user = self.users.schema
        query = select(mo.c.id).where(mo.c.object_type == user.name, to_sql(node, user.name, user.searchable))
        for r in conn.execute(query):
            yield r.id


def _conditional(ref: Ref) -> bool:
    return ref.properties.get("_grantType") == CONDITIONAL


def due(store: Store, model: RoleModel, since: dt.datetime, until: dt.datetime) -> set[str]:
    """The users whose effective roles changed between ``since`` (excluded) and ``until``
    (included): members of a role, or holders of a grant, whose window opened or closed."""
    grants = Grants(store, model)
    found: set[str] = set()
    with store.engine.connect() as conn:
        timed = [r.id for r in conn.execute(select(mo.c.id, mo.c.data).where(mo.c.object_type == model.role.name))
                 if any(since < t <= until for t in edges((r.data or {}).get("temporalConstraints")))]
        for by in grants.roles.read(conn, timed, [model.members]).values():
            found.update(r.id for r in by.get(model.members, []) if r.collection == grants.user_collection)
        role_end = (rt.c.first_type == grants.role_collection) | (rt.c.second_type == grants.role_collection)
        user_end = (rt.c.first_type == grants.user_collection) | (rt.c.second_type == grants.user_collection)
        for r in conn.execute(select(rt.c.first_type, rt.c.first_id, rt.c.second_id, rt.c.properties)
                              .where(role_end, user_end, rt.c.properties.isnot(None))):
            constraints = (r.properties or {}).get("temporalConstraints")
            if constraints and any(since < t <= until for t in edges(constraints)):
                found.add(r.first_id if r.first_type == grants.user_collection else r.second_id)
    return found
