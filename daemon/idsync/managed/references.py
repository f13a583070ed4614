"""One object's references in a relationship property holding many, as a collection.

PingIDM serves ``managed/TYPE/ID/PROPERTY`` (a role's ``members``, a user's
``roles``) as a collection of its own: a query lists the references, one is read,
replaced (its ``_refProperties``) or deleted by its ``_refProperties._id``, and a
new one is created from ``{"_ref": "managed/TYPE/ID", "_refProperties": {...}}``.
The API (``api/relationships.py``) and the scripts' ``openidm`` (``router.py``)
both answer it from here.

Each change is a patch of the object through ``ManagedObjects``, so it is
validated, revisioned and pushed by implicit synchronization (both ends:
``relationships.py``) like any other change of the object. A reference is
answered as PingIDM answers a relationship: its own ``_id`` and ``_rev`` first,
then ``_ref``, ``_refResourceCollection``, ``_refResourceId`` and
``_refProperties``; fields other than those ask for the referenced object's
(``["*"]`` all of them, ``["_ref", "name"]`` its ``name``), merged in (``expand``)
but for its ``_id`` and ``_rev`` (``_refResourceId`` names it). A filter sees the
reference as answered.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from idsync.config.managed import ManagedType
from idsync.config.project import Project
from idsync.config.roles import CONDITIONAL
from idsync.errors import IdsyncError, NotFound, ObjectRejected, RevisionMismatch
from idsync.managed.relationships import Edit
from idsync.managed.service import ManagedObjects
from idsync.query import parse
from idsync.query.ast import Node
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.held_refs import HeldRefs
from idsync.store.objects import ManagedResource
from idsync.store.relationships import Edges, Ref, ref_shape

__all__ = ["References", "expand", "expand_all", "shown"]

class References:
    """``managed/TYPE/ID/NAME`` for the objects of ``objects``' type; ``NotFound`` when
    ``NAME`` is not a relationship property of the type, ``ObjectRejected`` when it
    holds one reference (that one is read and changed on the object itself)."""

    def __init__(self, project: Project, store: Store, objects: ManagedObjects, name: str, *,
                 answer: bool = False) -> None:
        self._answer = answer  # for an HTTP client: referenced objects without secrets and private properties
        schema = objects.schema
        relation = schema.relationships.get(name)
        if relation is None:
            raise NotFound(f"Resource 'managed/{schema.name}/ID/{name}' not found: {name} is not a relationship "
                           f"property of managed/{schema.name}")
        if not relation.many:
            raise ObjectRejected(f"managed/{schema.name} {name} holds one reference: read and change it on the "
                                 "object itself")
        self._project = project
        self._store = store
        self._objects = objects
        self._schema = schema
        self._relation = relation
        self.name = name

    @property
    def store(self) -> Store:
        return self._store

    def filter_of(self, object_id: str, text: str | None, query_id: str | None) -> Node | None:
        """The filter a query of the references asks for (None: every one), or
        ``ObjectRejected`` for a query that names none."""
        if text is None and query_id not in ("query-all", "query-all-ids"):
            raise ObjectRejected(f"{self._path(object_id)}: " + (
                f"unknown _queryId {query_id!r} (a relationship answers query-all and query-all-ids)" if query_id
                else "a query needs _queryFilter (_queryFilter=true lists every reference)"))
        return None if text is None or text.strip() == "true" else parse(text)

    def held(self, object_id: str) -> HeldRefs:
        """The references of ``object_id`` (``NotFound`` when it does not exist), to be read in
        SQL a page at a time (``store/held_refs.py``), its document alone read now."""
        if ManagedResource(self._store, self._schema).get(object_id, ["_id"]) is None:
            raise NotFound(f"managed/{self._schema.name}/{object_id} not found")
        return HeldRefs(Edges(self._store, self._schema), object_id, self.name)

    def shaped(self, refs: Sequence[Ref], fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        """``refs`` as a query answers them, each expanded with the referenced object's
        ``fields``: the objects read are those of ``refs`` alone, and none when the fields
        name only the reference's own (``_ref``, ``_refProperties``, ``_id``)."""
        answered = [ref_shape(ref) for ref in refs]
        theirs = [f"{self.name}/{f}" for f in fields if not f.strip("/").startswith(("_ref", "_id", "_rev"))]
        if theirs and answered:
            expand(self._project, self._store, self._schema, {self.name: answered}, theirs, answer=self._answer)
        return [shown(ref) for ref in answered]

    def read(self, object_id: str, row: str, fields: Sequence[str] = ()) -> dict[str, Any]:
        """The reference whose ``_refProperties._id`` is ``row`` (``NotFound``), found by its row."""
        return self.shaped([self._row(object_id, row)], fields)[0]

    def _row(self, object_id: str, row: str) -> Ref:
        """Reference ``row`` of ``object_id``, read alone (``NotFound``)."""
        held = self.held(object_id)
        with self._store.engine.connect() as conn:
            ref = held.rows(conn, [row]).get(row)
        if ref is None:
            raise NotFound(f"{self._path(object_id)}/{row} not found")
        return ref

    def create(self, object_id: str, body: Any) -> dict[str, Any]:
        """Add the reference ``body`` asks for; refused when the object already holds it,
        but for the grant a role's condition made, which becomes this direct one."""
        ref = body.get("_ref") if isinstance(body, Mapping) else None
        if not isinstance(ref, str):
            raise ObjectRejected(f'{self._path(object_id)}: a relationship is created with {{"_ref": '
                                 '"managed/TYPE/ID", "_refProperties": {...}}')
        if self._relation.collection_of(ref) is None:
            into = " or ".join(self._relation.collections) or \
                ("a managed type or a system" if self._relation.anywhere else "a managed type")
            raise ObjectRejected(f"{self._path(object_id)}: _ref {ref!r} does not name an object of {into}")
        assert isinstance(body, Mapping)
        target = self._relation.collection_of(ref)
        assert target is not None
        held = self.held(object_id)
        with self._store.engine.connect() as conn:  # the one reference to that object, by an index
            had = held.holding(conn, *target)
        if had is not None and had.properties.get("_grantType") != CONDITIONAL:
            raise _conflict(f"managed/{self._schema.name}/{object_id} {self.name} already holds {ref}")
        value = {"_ref": ref, "_refProperties": body.get("_refProperties") or {}}
        # Answered as a reference, not as the object: none of its properties is read for the answer.
        self._objects.patch(object_id, [{"operation": "add", "field": f"/{self.name}/-", "value": value}], shown=())
        with self._store.engine.connect() as conn:
            kept = held.holding(conn, *target)
        if kept is None:
            raise IdsyncError(f"{self._path(object_id)}: the reference to {ref} was not kept")
        return shown(ref_shape(kept))

    def replace(self, object_id: str, row: str, body: Any, rev: str | None = None) -> dict[str, Any]:
        """Replace the ``_refProperties`` of reference ``row``; its ``_ref`` cannot change.
        ``rev``: the reference's own revision expected (``RevisionMismatch``). The reference
        is found by its row, and changed by what it names (``_one``)."""
        if not isinstance(body, Mapping):
            raise ObjectRejected("a relationship's _ref cannot change: delete it and create another")
        props = body.get("_refProperties") or {}
        if not isinstance(props, Mapping):
            raise ObjectRejected("_refProperties must be an object")
        ref = self._row(object_id, row)
        _expect(ref_shape(ref), rev, f"{self._path(object_id)}/{row}")
        named = f"{ref.collection}/{ref.id}"
        if body.get("_ref", named) != named:
            raise ObjectRejected("a relationship's _ref cannot change: delete it and create another")
        value = {"_ref": named, "_refProperties": {**props, "_id": row}}
        self._one(object_id, row, rev, Edit(replace=[value]))
        return self.read(object_id, row)

    def delete(self, object_id: str, row: str, rev: str | None = None) -> dict[str, Any]:
        """Remove reference ``row``; answers it as it was. ``rev``: as ``replace``'s. The
        reference is found by its row, and removed by what it names (``_one``)."""
        ref = self._row(object_id, row)
        _expect(ref_shape(ref), rev, f"{self._path(object_id)}/{row}")
        return shown(self._one(object_id, row, rev, Edit(remove=[f"{ref.collection}/{ref.id}"])))

    def _one(self, object_id: str, row: str, rev: str | None, edit: Edit) -> Mapping[str, Any]:
        """Make ``edit`` of reference ``row`` (which names one object), the reference still
        ``row`` and at revision ``rev`` (None: any) when the object is written; the reference
        as it was then. Neither the reference nor the write reads the others the property
        holds (``ManagedObjects.edit_references``), but for a type that needs the whole
        object; the object's own revision makes the check hold at the write: another writer
        of its references moves it, and the check is made again on what that writer left."""
        path = f"{self._path(object_id)}/{row}"
        seen: list[Mapping[str, Any]] = []

        def expect(held: Mapping[str, list[dict[str, Any]]]) -> None:
            ref = next((r for r in held.get(self.name, []) if r["_refProperties"]["_id"] == row), None)
            if ref is None:
                raise NotFound(f"{path} not found")
            _expect(ref, rev, path)
            seen[:] = [ref]
        self._objects.edit_references(object_id, {self.name: edit}, expect)
        return seen[0]

    def _path(self, object_id: str) -> str:
        return f"managed/{self._schema.name}/{object_id}/{self.name}"


def shown(ref: Mapping[str, Any]) -> dict[str, Any]:
    """A reference as PingIDM answers a relationship: its own ``_id`` and ``_rev`` first, never
    those of the object it names, which its expansion carries (``_fields``): they are what a
    read, a replace, a delete and ``If-Match`` of the reference take."""
    props = ref.get("_refProperties") or {}
    return {"_id": props.get("_id"), "_rev": props.get("_rev"),
            **{k: v for k, v in ref.items() if k not in ("_id", "_rev")}}


def expand(project: Project, store: Store, schema: ManagedType, obj: dict[str, Any],
           fields: Sequence[str], *, answer: bool = False) -> dict[str, Any]:
    """``obj`` with the relationship properties named ``NAME/*`` or ``NAME/FIELD`` in
    ``fields`` expanded (``expand_all``)."""
    expand_all(project, store, schema, [obj], fields, answer=answer)
    return obj


def expand_all(project: Project, store: Store, schema: ManagedType, objects: Sequence[dict[str, Any]],
               fields: Sequence[str], *, answer: bool = False) -> None:
    """Expand, in place, the relationship properties named ``NAME/*`` or ``NAME/FIELD`` in
    ``fields`` of each of ``objects``: each reference carries the fields of the object it
    points to, a managed object as a read of it answers (after its type's ``onRetrieve``
    and ``onRead`` scripts; ``*``: the fields it shows by default) or a
    system's as its connector reads it now (a reference of a one-way relationship may name
    one: historicalaccountlinking's LDAP accounts). The objects referenced by all of
    ``objects`` are read together, one read per collection (a query's page costs what one
    object does). An object gone is no fields; a system that cannot be read is the
    request's error. ``answer``: for an HTTP client, which never sees a managed object's
    secrets nor its ``"scope": "private"`` properties, even named."""
    wanted: dict[str, set[str]] = {}
    for f in fields:
        name, _, sub = f.strip().strip("/").partition("/")
        if sub and name in schema.relationships:
            wanted.setdefault(name, set()).add(sub)
    refs = [ref for obj in objects for name in wanted for ref in _held(obj, name)]
    if not refs:
        return
    by_collection: dict[str, list[str]] = {}
    for ref in refs:
        by_collection.setdefault(ref["_refResourceCollection"], []).append(ref["_refResourceId"])
    subs_of = {sub.split("/")[0] for subs in wanted.values() for sub in subs}
    found, hidden = _referenced(project, store, by_collection, answer, subs_of)
    for obj in objects:
        for name, subs in wanted.items():
            for ref in _held(obj, name):
                target = found.get(ref["_ref"], {})
                # ``*`` is the object's default fields: a role's members (returnByDefault false) stay out.
                left_out = hidden.get(ref["_ref"], frozenset()) - subs
                picked = {k: v for k, v in target.items() if k not in left_out} if "*" in subs else \
                    {k: v for k, v in target.items() if k in subs or k in ("_id", "_rev")}
                ref.update({k: v for k, v in picked.items() if not k.startswith("_ref")})


def _held(obj: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The references ``obj`` holds in ``name`` (one or many)."""
    value = obj.get(name)
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


def _referenced(project: Project, store: Store, by_collection: Mapping[str, Sequence[str]], answer: bool,
                named: Collection[str]) -> tuple[dict[str, dict[str, Any]], dict[str, frozenset[str]]]:
    """The objects ``by_collection`` names, by their path (``managed/role/ID``), one read per
    collection; and by path, the fields a managed one shows only when named. Of a managed
    one without read scripts, only the relationship and computed properties it shows by
    default and those ``named`` (``*``: the default ones) are read."""
    types = project.managed.types
    found: dict[str, dict[str, Any]] = {}
    hidden: dict[str, frozenset[str]] = {}
    resources: Resources | None = None
    try:
        for collection, ids in by_collection.items():
            kind, _, rest = collection.partition("/")
            if kind == "managed" and (other := types.get(rest)) is not None:
                # Read as a read of it answers, as PingIDM's router reads it: its computed
                # properties, then its onRetrieve and onRead scripts (a virtual property's value).
                managed = ManagedResource(store, other)
                # Whole for its scripts, which may read any property; else only what is shown.
                objects = managed.get_many(ids, related=None if managed.hooks.reads else other.shown_with(named))
                if managed.hooks.reads:
                    objects = {oid: managed.hooks.retrieved(o) for oid, o in objects.items()}
                if answer:  # after the scripts, which see them and may put one back
                    kept_back = other.private | other.secrets
                    objects = {oid: {k: v for k, v in o.items() if k not in kept_back}
                               for oid, o in objects.items()}
                hidden.update((f"{collection}/{oid}", other.hidden) for oid in objects)
            elif kind == "system" and _readable(project, rest):
                resources = resources or Resources(project, store)
                objects = resources.open(collection).get_many(ids)
            else:
                continue
            found.update((f"{collection}/{oid}", o) for oid, o in objects.items())
    finally:
        if resources is not None:
            resources.close()
    return found, hidden


def _readable(project: Project, system_type: str) -> bool:
    """Whether ``SYSTEM/TYPE`` names an object type of an enabled system of the project
    (a reference into anything else has no object to show)."""
    system, _, object_type = system_type.partition("/")
    provisioner = project.provisioners.get(system)
    return bool(object_type) and "/" not in object_type and provisioner is not None and provisioner.enabled


def _expect(ref: Mapping[str, Any], rev: str | None, path: str) -> None:
    """``RevisionMismatch`` when the caller expects another revision of the reference."""
    have = ref["_refProperties"].get("_rev")
    if rev is not None and rev != have:
        raise RevisionMismatch(f"{path}: revision {rev} expected, the reference is at {have}")


def _conflict(message: str) -> ObjectRejected:
    """Refused because of what is there already: the API answers 409, as PingIDM does."""
    rejected = ObjectRejected(message)
    rejected.status = 409
    return rejected
