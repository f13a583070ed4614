"""The references of managed objects' relationship properties (``relationships`` table).

A reference is one row, whichever end wrote it: user ``roles`` and role
``members`` read the same rows from their two sides, so the two ends cannot
disagree, whoever changes them and however concurrently. The end whose
``(collection, property)`` sorts first is stored as ``first``
(``orientation``); a one-way relationship is always ``first``, with an empty
``second_property``.

Writing an end (``Edges.replace``) compares the references wanted with those
stored: a reference kept keeps its row (its ``_refProperties._id``), one gone is
deleted, one new is inserted. Every object whose references change, at either
end, gets a new revision in the same transaction. The objects referenced are
locked first (``lock``: an ``UPDATE`` of their rows, which also finds the missing
ones: a property with PingIDM's ``"validate": true`` refuses a reference to a
missing object, one without it keeps the reference until that object exists), so a
reference is never written to an object being deleted; deleting an object deletes
its rows (``drop``). The objects a write lets go of (the other ends of the references
it removes, or of an object it deletes) are locked with them, and with the objects
written: all in one (collection, id) order, before anything is written, so that a
user's ``roles`` and a role's ``members`` written at once wait for each other in turn,
never in a circle.

The shape is PingIDM's: ``{"_ref": "managed/role/ID", "_refResourceCollection":
"managed/role", "_refResourceId": "ID", "_refProperties": {..., "_id": ROW,
"_rev": REV}}``. A property holding many references lists them by ``_ref``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, or_, select, update

from idsync.config.managed import ManagedType
from idsync.config.relationships import Relation
from idsync.config.roles import CONDITIONAL
from idsync.errors import NotFound, ObjectRejected
from idsync.resource import WriteOp, WriteResult, failed
from idsync.store.database import Store, new_id, utcnow
from idsync.store.tables import ID_LENGTH, KEY_LENGTH
from idsync.store.tables import managed_objects as mo
from idsync.store.tables import relationships as rt
from idsync.store.validation import InvalidObject

__all__ = ["Edges", "Ref", "RefChanges", "Wanted", "changed_refs", "orientation", "ref_shape", "wanted_refs",
           "write_related"]

_CHUNK = 500
_PROBES = 100  # references changed at once looked for one by one (``Edges.change``); more: one read
Key = tuple[str, str]  # (collection "managed/user", object id)


@dataclass(frozen=True)
class Ref:
    """One stored reference seen from one end."""

    row: str
    rev: str
    collection: str
    id: str
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class Wanted:
    """One reference a write asks for: its target, and its row when the caller read it."""

    collection: str
    id: str
    properties: Mapping[str, Any] | None = None  # None: keep what the row holds
    row: str | None = None


@dataclass(frozen=True)
class RefChanges:
    """A change to a property holding many references, as what it adds and removes
    rather than the whole list: applied to the references stored when the write
    happens, so two writers adding members to one role at once both keep theirs."""

    add: tuple[Wanted, ...] = ()
    remove: tuple[str, ...] = ()  # the _ref of each reference to remove

    @classmethod
    def between(cls, schema: ManagedType, name: str, before: Any, after: Any) -> RefChanges:
        """What turns ``before`` (the references read) into ``after`` (the list a patch made)."""
        old = {item["_ref"]: item for item in (before or []) if isinstance(item, Mapping) and "_ref" in item}
        wanted = wanted_refs(schema, name, after)
        new = {f"{w.collection}/{w.id}" for w in wanted}
        added = []
        for w in wanted:
            had = old.get(f"{w.collection}/{w.id}")
            if had is None or (w.properties is not None and dict(w.properties) != _own(had.get("_refProperties"))):
                added.append(w)
        return cls(tuple(added), tuple(ref for ref in old if ref not in new))


def changed_refs(before: Any, after: Any) -> set[str]:
    """The ``_ref`` of each reference that one of ``before`` and ``after`` (the values of a
    relationship property: one reference, a list of them, or none) holds and the other does
    not, or that both hold with other ``_refProperties`` (``_own``: a grant's window): the
    other ends that a change of the property changes."""
    old, new = _props_by_ref(before), _props_by_ref(after)
    changed = old.keys() ^ new.keys()
    # Most references are unchanged, their properties equal as read (``_id`` and ``_rev`` too).
    changed.update(ref for ref in old.keys() & new.keys() if old[ref] != new[ref] and _own(old[ref]) != _own(new[ref]))
    return changed


def _props_by_ref(value: Any) -> dict[str, Any]:
    return {item["_ref"]: item.get("_refProperties") for item in (value if isinstance(value, list) else [value])
            if isinstance(item, Mapping) and isinstance(item.get("_ref"), str)}


def ref_shape(ref: Ref) -> dict[str, Any]:
    """A reference as PingIDM answers it."""
    return {"_ref": f"{ref.collection}/{ref.id}", "_refResourceCollection": ref.collection,
            "_refResourceId": ref.id, "_refProperties": {**ref.properties, "_id": ref.row, "_rev": ref.rev}}


def wanted_refs(schema: ManagedType, name: str, value: Any) -> list[Wanted]:
    """The references ``value`` asks ``name`` to hold (``ObjectRejected`` naming the
    property when it is not a reference, or a list of them, into its collections).

    The store keeps one reference per object: an object named twice alike is one
    reference, named twice with different ``_refProperties`` is refused (naming both),
    never one of them dropped (``_one``)."""
    relation = schema.relationships[name]
    where = f"managed/{schema.name}: {name}"
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not relation.many and isinstance(value, list):
        raise ObjectRejected(f"{where} holds one reference, not a list")
    wanted: dict[Key, Wanted] = {}
    named: dict[Key, int] = {}  # where each object was first named
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if relation.many else where
        ref = item.get("_ref") if isinstance(item, Mapping) else None
        target = relation.collection_of(ref) if isinstance(ref, str) else None
        if target is None:
            into = " or ".join(relation.collections) or ("a managed type or a system" if relation.anywhere
                                                         else "a managed type")
            example = relation.collections[0] if relation.collections else "managed/TYPE"
            raise ObjectRejected(f'{at}: expected a reference {{"_ref": "{example}/ID"}} into {into}')
        # What the columns hold, on every store: no managed object has a longer id, and a
        # system's (a DN) is kept in a key column.
        longest = ID_LENGTH if target[0].startswith("managed/") else KEY_LENGTH
        if len(target[1]) > longest:
            raise ObjectRejected(f"{at}: the id of {target[0]}/{target[1][:40]}... has {len(target[1])} characters, "
                                 f"more than the {longest} a reference to {target[0]} holds")
        assert isinstance(item, Mapping)
        props = item.get("_refProperties")
        if props is not None and not isinstance(props, Mapping):
            raise ObjectRejected(f"{at}: _refProperties must be an object")
        row = props.get("_id") if isinstance(props, Mapping) else None
        asked = Wanted(target[0], target[1], _own(props) if props is not None else None,
                       row if isinstance(row, str) else None)
        first = wanted.get(target)
        if first is None:
            wanted[target], named[target] = asked, i
            continue
        one = _one(first, asked)
        if one is None:
            hint = " (its temporalConstraints may list several windows)" if any(
                "temporalConstraints" in (w.properties or {}) for w in (first, asked)) else ""
            raise InvalidObject(where, [
                f"{target[0]}/{target[1]} is named twice ({name}[{named[target]}] and {name}[{i}]) "
                f"with different _refProperties; {name} holds one reference to each object: name it once, "
                f"with the _refProperties wanted{hint}"])
        wanted[target] = one
    return list(wanted.values())


def _own(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a reference's ``_refProperties`` ask for: the properties but for ``_id``, ``_rev``
    and the other underscored ones the store sets, ``_grantType`` ``conditional`` kept (the
    grant a role's condition made, which a write of the user as read leaves as it is)."""
    own = {k: v for k, v in (props or {}).items() if not k.startswith("_")}
    if (props or {}).get("_grantType") == CONDITIONAL:
        own["_grantType"] = CONDITIONAL
    return own


def _one(first: Wanted, again: Wanted) -> Wanted | None:
    """The one reference a write naming an object twice asks for (the store keeps one per
    object), or None when the two ask for different ones. A direct reference beside the
    conditional grant (a ``PATCH`` adding ``/roles/-`` to a user as read) makes that grant
    direct, keeping its row; two alike (``_id`` and ``_rev`` aside, no ``_refProperties`` as
    empty ones, as PingIDM compares them) are one."""
    a, b = first.properties, again.properties
    if _conditional(a) != _conditional(b):
        direct, grant = (again, first) if _conditional(a) else (first, again)
        return Wanted(direct.collection, direct.id, dict(direct.properties or {}), direct.row or grant.row)
    if dict(a or {}) != dict(b or {}):
        return None
    return first if first.row or not again.row else dataclasses.replace(first, row=again.row)


def _conditional(properties: Mapping[str, Any] | None) -> bool:
    return properties is not None and properties.get("_grantType") == CONDITIONAL


def orientation(collection: str, name: str, relation: Relation, other: str) -> bool:
    """Whether the end ``(collection, name)`` is stored as ``first`` against ``other``."""
    if relation.reverse is None:
        return True
    return (collection, name) <= (other, relation.reverse)


@dataclass
class Edges:
    """The references of one managed type's relationship properties."""

    store: Store
    schema: ManagedType
    collection: str = field(init=False)
    _seen_any: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.collection = f"managed/{self.schema.name}"

    # -- reading -------------------------------------------------------------

    def read(self, conn: Connection, ids: Sequence[str], names: Iterable[str]) -> dict[str, dict[str, list[Ref]]]:
        """id -> property -> references, for the relationship properties ``names``."""
        names = [n for n in names if n in self.schema.relationships]
        found: dict[str, dict[str, list[Ref]]] = {}
        if not names or not ids:
            return found
        as_first, as_second = self._sides(names)
        for start in range(0, len(ids), _CHUNK):
            chunk = list(ids[start:start + _CHUNK])
            if as_first:
                rows = conn.execute(select(rt).where(
                    rt.c.first_type == self.collection, rt.c.first_property.in_(as_first),
                    self.store.in_(rt.c.first_id, chunk)))
                for r in rows:
                    if self._mine(r.first_property, r.second_type, first=True):
                        found.setdefault(r.first_id, {}).setdefault(r.first_property, []).append(
                            Ref(r.id, r.rev, r.second_type, r.second_id, r.properties or {}))
            if as_second:
                rows = conn.execute(select(rt).where(
                    rt.c.second_type == self.collection, rt.c.second_property.in_(as_second),
                    self.store.in_(rt.c.second_id, chunk)))
                for r in rows:
                    if self._mine(r.second_property, r.first_type, first=False):
                        found.setdefault(r.second_id, {}).setdefault(r.second_property, []).append(
                            Ref(r.id, r.rev, r.first_type, r.first_id, r.properties or {}))
        for by_name in found.values():
            for refs in by_name.values():
                refs.sort(key=lambda ref: (ref.collection, ref.id))
        return found

    def any(self, conn: Connection) -> bool:
        """Whether any object of this type may hold a reference: one cheap query, which
        spares the pages of a recon over a store without references (a directory's users,
        no roles) the reading of them. Once some are seen, they are always read."""
        if not self._seen_any:
            self._seen_any = conn.execute(select(rt.c.id).where(or_(
                rt.c.first_type == self.collection, rt.c.second_type == self.collection)).limit(1)).first() is not None
        return self._seen_any

    def _sides(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Which of ``names`` may be stored as the first end, which as the second."""
        first: list[str] = []
        second: list[str] = []
        for name in names:
            relation = self.schema.relationships[name]
            if relation.collections:
                sides = {orientation(self.collection, name, relation, other) for other in relation.collections}
            else:  # any managed collection: the other end may sort either side
                sides = {True, relation.reverse is None}
            if True in sides:
                first.append(name)
            if False in sides:
                second.append(name)
        return first, second

    def _mine(self, name: str, other: str, *, first: bool) -> bool:
        relation = self.schema.relationships.get(name)
        return (relation is not None and relation.reaches(other)
                and orientation(self.collection, name, relation, other) == first)

    def attach(self, objects: Sequence[dict[str, Any]], fields: Sequence[str] | None) -> None:
        """Fill each object's relationship properties (those in ``fields``, or all)."""
        names = [n for n in self.schema.relationships if fields is None or n in fields]
        if not names or not objects:
            return
        with self.store.engine.connect() as conn:
            found = self.read(conn, [o["_id"] for o in objects], names) if self.any(conn) else {}
        self.shape(objects, found, names)

    def shape(self, objects: Sequence[dict[str, Any]], found: Mapping[str, Mapping[str, list[Ref]]],
              names: Sequence[str]) -> None:
        """Set the relationship properties ``names`` of ``objects`` to the references ``found``."""
        many = [n for n in names if self.schema.relationships[n].many]
        for obj in objects:
            mine = found.get(obj["_id"])
            if mine is None:  # the common case: nothing to shape
                for name in many:
                    obj[name] = []
                for name in names:
                    if name not in many:
                        obj.pop(name, None)
            else:
                _fill(self.schema, obj, mine, names)

    def one(self, conn: Connection, object_id: str, name: str, row: str) -> Ref:
        """One reference of ``object_id``'s ``name`` by its row id (``NotFound``)."""
        for ref in self.read(conn, [object_id], [name]).get(object_id, {}).get(name, []):
            if ref.row == row:
                return ref
        raise NotFound(f"{self.collection}/{object_id}/{name}/{row} not found")

    # -- writing -------------------------------------------------------------

    def lock(self, conn: Connection, keys: Iterable[Key]) -> set[Key]:
        """Lock the objects ``keys`` for the transaction; the ones that do not exist."""
        wanted = sorted(set(keys))
        if not wanted:
            return set()
        now = utcnow()
        conn.execute(update(mo).where(mo.c.object_type == bindparam("b_type"), mo.c.id == bindparam("b_id"))
                     .values(updated=now), [{"b_type": c.split("/", 1)[1], "b_id": i} for c, i in wanted])
        present: set[Key] = set()
        by_type: dict[str, list[str]] = {}
        for c, i in wanted:
            by_type.setdefault(c, []).append(i)
        for c, ids in by_type.items():
            for start in range(0, len(ids), _CHUNK):
                rows = conn.execute(select(mo.c.id).where(mo.c.object_type == c.split("/", 1)[1],
                                                          self.store.in_(mo.c.id, ids[start:start + _CHUNK])))
                present.update((c, r.id) for r in rows)
        return set(wanted) - present

    def replace(self, conn: Connection, object_id: str, name: str, wanted: Sequence[Wanted]) -> set[Key]:
        """Make ``object_id``'s ``name`` hold exactly ``wanted``; the objects whose
        references changed (``object_id`` among them when anything did)."""
        relation = self.schema.relationships[name]
        if not relation.many and len(wanted) > 1:
            raise ObjectRejected(f"{self.collection}/{object_id}: {name} holds one reference")
        stored = self.read(conn, [object_id], [name]).get(object_id, {}).get(name, [])
        by_row = {r.row: r for r in stored}
        by_target = {(r.collection, r.id): r for r in stored}
        kept: set[str] = set()
        inserts: list[Wanted] = []
        changed_props: list[tuple[Ref, Mapping[str, Any]]] = []
        for w in wanted:
            match = by_row.get(w.row or "")
            if match is None or (match.collection, match.id) != (w.collection, w.id):
                match = by_target.get((w.collection, w.id))
            if match is None or match.row in kept:
                inserts.append(w)
                continue
            kept.add(match.row)
            if w.properties is not None and dict(w.properties) != dict(match.properties):
                changed_props.append((match, w.properties))
        removed = [r for r in stored if r.row not in kept]
        return self._apply(conn, object_id, name, removed, changed_props, inserts)

    def change(self, conn: Connection, object_id: str, name: str, changes: RefChanges) -> set[Key]:
        """Apply ``changes`` to the references ``object_id``'s ``name`` holds now: each
        reference added or removed found by the object it names (``holding``, one probe of
        an index), never the whole property read, which a role of a million members holds.
        Past ``_PROBES`` references changed at once (a condition newly matching many users)
        one read of the property costs less than a probe each, and is made instead."""
        relation = self.schema.relationships[name]
        if not relation.many or len(changes.add) + len(changes.remove) > _PROBES:
            # A single reference, or many changed: from what the property holds, read once.
            stored = self.read(conn, [object_id], [name]).get(object_id, {}).get(name, [])
            gone_refs = set(changes.remove)
            kept = {(r.collection, r.id): Wanted(r.collection, r.id, None, r.row) for r in stored
                    if f"{r.collection}/{r.id}" not in gone_refs}
            return self.replace(conn, object_id, name, list({**kept, **{(w.collection, w.id): w
                                                                         for w in changes.add}}.values()))
        gone = [key for ref in changes.remove if (key := relation.collection_of(ref)) is not None]
        removed = [ref for key in gone if (ref := self.holding(conn, object_id, name, *key)) is not None]
        inserts: list[Wanted] = []
        changed_props: list[tuple[Ref, Mapping[str, Any]]] = []
        for w in changes.add:
            match = self.holding(conn, object_id, name, w.collection, w.id)
            if match is None or match in removed:
                inserts.append(w)
            elif w.properties is not None and dict(w.properties) != dict(match.properties):
                changed_props.append((match, w.properties))
        return self._apply(conn, object_id, name, removed, changed_props, inserts)

    def _apply(self, conn: Connection, object_id: str, name: str, removed: Sequence[Ref],
               changed_props: Sequence[tuple[Ref, Mapping[str, Any]]], inserts: Sequence[Wanted]) -> set[Key]:
        """Delete the references ``removed``, give those ``changed_props`` their new
        ``_refProperties``, insert ``inserts``; the objects whose references changed."""
        touched: set[Key] = {(r.collection, r.id) for r in removed} | {(w.collection, w.id) for w in inserts}
        touched |= {(r.collection, r.id) for r, _ in changed_props}
        if not touched:
            return set()
        self._delete_rows(conn, [r.row for r in removed])
        for ref, props in changed_props:
            conn.execute(update(rt).where(rt.c.id == ref.row).values(
                properties=dict(props) or None, rev=_next(ref.rev)))
        touched |= self._insert(conn, object_id, name, self.schema.relationships[name], inserts)
        touched.add((self.collection, object_id))
        return touched

    def holding(self, conn: Connection, object_id: str, name: str, collection: str, target: str) -> Ref | None:
        """The reference ``object_id``'s ``name`` holds to ``collection/target``, if any: one
        probe of the unique index of the rows' ``first`` end, from whichever end it is."""
        relation = self.schema.relationships[name]
        if not relation.reaches(collection):
            return None
        mine = (self.collection, name, object_id)
        theirs = (collection, relation.reverse or "", target)
        first, second = (mine, theirs) if orientation(self.collection, name, relation, collection) else (theirs, mine)
        row = conn.execute(select(rt.c.id, rt.c.rev, rt.c.properties).where(
            rt.c.first_type == first[0], rt.c.first_property == first[1], rt.c.first_id == first[2],
            rt.c.second_type == second[0], rt.c.second_id == second[2], rt.c.second_property == second[1])).first()
        return None if row is None else Ref(row.id, row.rev, collection, target, row.properties or {})

    def _insert(self, conn: Connection, object_id: str, name: str, relation: Relation,
                inserts: Sequence[Wanted]) -> set[Key]:
        """Insert references from ``object_id``; the third objects that lost theirs
        (the old manager of a user given a new one through ``reports``)."""
        touched: set[Key] = set()
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for w in inserts:
            if relation.reverse is not None and not relation.reverse_many.get(w.collection, True):
                # The other end holds one reference: it lets go of the one it had.
                touched |= self.clear(conn, w.collection, w.id, relation.reverse, name, self.collection)
            me = (self.collection, object_id, name)
            other = (w.collection, w.id, relation.reverse or "")
            first, second = (me, other) if orientation(self.collection, name, relation, w.collection) \
                else (other, me)
            rows.append({"id": new_id(), "rev": _next(None), "first_type": first[0], "first_id": first[1],
                         "first_property": first[2], "second_type": second[0], "second_id": second[1],
                         "second_property": second[2], "properties": dict(w.properties or {}) or None,
                         "created": now})
        if rows:
            self.store.insert_many(conn, rt, rows)
            self._seen_any = True
        return touched

    def clear(self, conn: Connection, collection: str, object_id: str, name: str, reverse: str,
              other: str) -> set[Key]:
        """Delete the references ``collection/object_id`` holds in ``name`` (whose reverse
        end is ``other``'s ``reverse``); the objects at their other ends."""
        first = (collection, name) <= (other, reverse)
        mine = (rt.c.first_type, rt.c.first_id, rt.c.first_property) if first else \
            (rt.c.second_type, rt.c.second_id, rt.c.second_property)
        theirs = (rt.c.second_type, rt.c.second_id) if first else (rt.c.first_type, rt.c.first_id)
        where = and_(mine[0] == collection, mine[1] == object_id, mine[2] == name)
        rows = conn.execute(select(rt.c.id, *theirs).where(where)).all()
        self._delete_rows(conn, [r[0] for r in rows])
        return {(r[1], r[2]) for r in rows} | ({(collection, object_id)} if rows else set())

    def drop(self, conn: Connection, object_ids: Sequence[str]) -> set[Key]:
        """Delete every reference to or from the objects ``object_ids`` (being deleted);
        the objects at the other ends."""
        touched: set[Key] = set()
        for rows, ends in self._referencing(conn, object_ids):
            touched |= ends
            self._delete_rows(conn, rows)
        return touched

    def ends(self, conn: Connection, object_ids: Sequence[str]) -> set[Key]:
        """The objects at the other ends of the references to or from ``object_ids`` (those
        that show them), as read now: what a delete of them locks first."""
        return {key for _, ends in self._referencing(conn, object_ids) for key in ends}

    def parting(self, conn: Connection, plans: Mapping[str, Mapping[str, list[Wanted] | RefChanges]]) -> set[Key]:
        """The objects the references that ``plans`` (object id -> property -> what it is to
        hold) let go of point at, as read now: what a write locks first, with those it adds."""
        replaced = {name for plan in plans.values() for name, w in plan.items() if not isinstance(w, RefChanges)}
        stored = self.read(conn, list(plans), replaced) if replaced and self.any(conn) else {}
        keys: set[Key] = set()
        for object_id, plan in plans.items():
            for name, wanted in plan.items():
                if isinstance(wanted, RefChanges):
                    relation = self.schema.relationships[name]
                    keys.update(key for ref in wanted.remove if (key := relation.collection_of(ref)) is not None)
                else:
                    kept = {(w.collection, w.id) for w in wanted}
                    keys.update((r.collection, r.id) for r in stored.get(object_id, {}).get(name, [])
                                if (r.collection, r.id) not in kept)
        return keys

    def _referencing(self, conn: Connection, object_ids: Sequence[str]) -> Iterator[tuple[list[str], set[Key]]]:
        """Per chunk of ``object_ids``: the rows of the references to or from them, and the
        objects at their other ends that show them (a one-way reference's target does not)."""
        for start in range(0, len(object_ids), _CHUNK):
            chunk = list(object_ids[start:start + _CHUNK])
            where = or_(and_(rt.c.first_type == self.collection, self.store.in_(rt.c.first_id, chunk)),
                        and_(rt.c.second_type == self.collection, self.store.in_(rt.c.second_id, chunk)))
            rows = conn.execute(select(rt.c.id, rt.c.first_type, rt.c.first_id, rt.c.second_type,
                                       rt.c.second_id, rt.c.second_property).where(where)).all()
            gone = set(chunk)
            ends: set[Key] = set()
            for r in rows:
                if not (r.first_type == self.collection and r.first_id in gone):
                    ends.add((r.first_type, r.first_id))
                elif r.second_property and not (r.second_type == self.collection and r.second_id in gone):
                    ends.add((r.second_type, r.second_id))
            yield [r.id for r in rows], ends

    def _delete_rows(self, conn: Connection, rows: Sequence[str]) -> None:
        for start in range(0, len(rows), _CHUNK):
            conn.execute(delete(rt).where(rt.c.id.in_(list(rows[start:start + _CHUNK]))))

    def bump(self, conn: Connection, keys: Iterable[Key]) -> dict[Key, str]:
        """A new revision for each of ``keys`` (objects whose references changed). Their
        revisions are read locked: another writer of one of them (a write of its document)
        may hold it until it commits, and the new revision must follow the one that writer
        gives it, never repeat it."""
        revs: dict[Key, str] = {}
        by_type: dict[str, list[str]] = {}
        for c, i in sorted(set(keys)):
            by_type.setdefault(c, []).append(i)
        for c, ids in by_type.items():
            object_type = c.split("/", 1)[1]
            for start in range(0, len(ids), _CHUNK):
                rows = conn.execute(select(mo.c.id, mo.c.rev).where(
                    mo.c.object_type == object_type, self.store.in_(mo.c.id, ids[start:start + _CHUNK]))
                    .with_for_update())
                for r in rows:
                    revs[(c, r.id)] = _next(r.rev)
            params = [{"b_type": c.split("/", 1)[1], "b_id": i, "b_rev": revs[(c, i)]} for i in ids
                      if (c, i) in revs]
            if params:
                conn.execute(update(mo).where(mo.c.object_type == bindparam("b_type"), mo.c.id == bindparam("b_id"))
                             .values(rev=bindparam("b_rev"), updated=utcnow()), params)
        return revs


def _next(rev: str | None) -> str:
    return f"{(int(rev, 16) if rev else 0) + 1:016x}"


def write_related(edges: Edges, conn: Connection, ops: Sequence[WriteOp],
                  write_objects: Callable[[Sequence[WriteOp]], list[WriteResult]],
                  shown: Collection[str] | None = None) -> list[WriteResult]:
    """Write ``ops`` whose values may hold relationship properties, in ``conn``'s transaction;
    the objects answered carry the relationship properties ``shown`` (None: all).

    The references each op asks for are checked (shape, then existence: the objects
    referenced are locked first, so none is deleted before the references are in),
    the documents are written without them (``write_objects``), then each end is
    replaced and every object whose references changed gets a new revision.
    A delete takes the object's references with it."""
    schema = edges.schema
    results: dict[int, WriteResult] = {}
    plans: dict[int, dict[str, list[Wanted] | RefChanges]] = {}
    plain: dict[int, WriteOp] = {}
    for i, op in enumerate(ops):
        if op.kind == "delete" or schema.relationships.keys().isdisjoint(op.values):
            plain[i] = op
            continue
        related = {k: v for k, v in op.values.items() if k in schema.relationships}
        try:
            plans[i] = {k: v if isinstance(v, RefChanges) else wanted_refs(schema, k, v) for k, v in related.items()}
        except ObjectRejected as exc:
            results[i] = failed(op, exc)
            continue
        plain[i] = dataclasses.replace(op, values={k: v for k, v in op.values.items() if k not in related})
    # Every object the batch changes is locked now, in one (collection, id) order as every
    # writer locks them, so that two writers never wait for each other in a circle: the
    # objects written, those their references are added to, and those their references or
    # deletes let go of (as read now: one another writer gives a reference meanwhile is the
    # rare deadlock the database breaks, and ``ManagedResource`` runs the batch again).
    # A system's object (a one-way reference at an account) is neither locked nor checked.
    locked: list[Key] = [(w.collection, w.id) for plan in plans.values() for ws in plan.values() for w in _adds(ws)]
    locked += [(edges.collection, op.id) for i, op in plain.items() if op.id and (i in plans or op.kind == "delete")]
    locked += edges.parting(conn, {op.id: plans[i] for i, op in plain.items() if i in plans and op.id})
    locked += edges.ends(conn, [op.id for op in plain.values() if op.kind == "delete" and op.id])
    locked = [key for key in locked if key[0].startswith("managed/")]
    # Objects this batch creates under a given _id exist by the time references are written.
    creating = {(edges.collection, str(op.values["_id"])) for op in plain.values()
                if op.kind == "create" and op.values.get("_id")}
    missing = edges.lock(conn, locked) - creating
    for i, plan in list(plans.items()):
        absent = sorted(f"{w.collection}/{w.id}" for name, ws in plan.items() for w in _adds(ws)
                        if (w.collection, w.id) in missing and schema.relationships[name].validate)
        if absent:
            results[i] = failed(plain.pop(i), ObjectRejected(
                f"{edges.collection}: references to objects that do not exist: {', '.join(absent[:5])}"))
            del plans[i]
    order = sorted(plain)
    for i, result in zip(order, write_objects([plain[i] for i in order]), strict=True):
        results[i] = result if result.op is ops[i] else dataclasses.replace(result, op=ops[i])
    touched: set[Key] = set()
    for i, plan in plans.items():
        result = results[i]
        if result.ok and result.id:
            for name, wanted in plan.items():
                if isinstance(wanted, RefChanges):
                    touched |= edges.change(conn, result.id, name, wanted)
                else:
                    touched |= edges.replace(conn, result.id, name, wanted)
    deleted = [r.id for r in results.values() if r.ok and r.op.kind == "delete" and r.id]
    if deleted:
        touched |= edges.drop(conn, deleted)
    revs = edges.bump(conn, {k for k in touched if k[0].startswith("managed/")}
                      - {(edges.collection, d) for d in deleted})
    shown_objects = [r.obj for r in results.values() if r.ok and r.obj is not None and r.op.kind != "delete"]
    if shown_objects:
        names = [n for n in schema.relationships if shown is None or n in shown]
        found = edges.read(conn, [o["_id"] for o in shown_objects], names) \
            if names and (plans or touched or edges.any(conn)) else {}
        for obj in shown_objects:
            obj["_rev"] = revs.get((edges.collection, obj["_id"]), obj["_rev"])
        edges.shape(shown_objects, found, names)
    return [results[i] for i in range(len(ops))]


def _adds(wanted: list[Wanted] | RefChanges) -> Sequence[Wanted]:
    return wanted.add if isinstance(wanted, RefChanges) else wanted


def _fill(schema: ManagedType, obj: dict[str, Any], refs: Mapping[str, list[Ref]],
          names: Iterable[str] | None = None) -> None:
    """Set ``obj``'s relationship properties (``names``, or all) to ``refs``, as PingIDM shows them."""
    for name in schema.relationships if names is None else names:
        relation = schema.relationships[name]
        shaped = [ref_shape(r) for r in refs.get(name, [])]
        if relation.many:
            obj[name] = shaped
        elif shaped:
            obj[name] = shaped[0]
        else:
            obj.pop(name, None)
