"""Changing managed objects the way PingIDM's ``managed/`` endpoint does.

``create``, ``update`` (replace), ``patch`` and ``delete`` each validate the
result against ``managed.json``, honour an expected revision (optimistic
concurrency: ``RevisionMismatch`` when the object moved on), write one store
transaction, and then run implicit synchronization for the changed object
(``sync/implicit.py``). Without an expected revision a change is built from the
object as read and written at that revision; when another writer came between, it
is read and built again (``_written``), so no concurrent change is lost. The store
change is committed before the push, so a target that fails never loses it; the
push results say what happened.

Every write goes through the store's object scripts and policies (``store/hooks.py``),
which refuse what breaks them; reads (``get``, ``retrieved``) run the type's
``onRetrieve`` and ``onRead`` scripts. A null the caller gives to a property that says
``"nullable": false`` is refused here, where a null given can still be told from a
property left out (``store/validation.py``).

Secret properties are write-only: hashed by the store, never in a returned
object, and no patch reads one (``copy``/``move`` from it, ``transform`` of it).
``update`` keeps a secret the caller did not send (it cannot have read it), and gives
a property it leaves out its ``managed.json`` default, as a create would.
A change that changes nothing (same values, ``_rev`` unmoved) is not pushed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from idsync.config.managed import ManagedType
from idsync.config.project import Project
from idsync.crypto import is_encrypted
from idsync.errors import AlreadyExists, IdsyncError, NotFound, ObjectRejected, RevisionMismatch
from idsync.managed.patch import ScriptTransformer, apply_patch, refuse_reading
from idsync.managed.relationships import Edit, RelatedPushes, incremental, reference_edits
from idsync.resource import Obj, WriteOp
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.passwords import is_hashed
from idsync.store.relationships import Edges, RefChanges, ref_shape, wanted_refs
from idsync.store.validation import InvalidObject, json_type, refuse_nulls
from idsync.sync.implicit import ImplicitSync, PushResult
from idsync.sync.role_fanout import RoleFanout

__all__ = ["Change", "ManagedObjects"]

log = structlog.get_logger(__name__)

# How often a write without a revision is tried before it gives up to the writers beside
# it: each lost race is another writer's won, so a burst of N writes settles in N tries.
_ATTEMPTS = 20


@dataclass
class Change:
    """The object as stored after a change (secrets left out; ``None`` after a
    delete) and what implicit synchronization did with it."""

    object: Obj | None
    pushes: list[PushResult] = field(default_factory=list)
    created: bool = False  # the change created the object (a PUT that did answers 201)

    @property
    def synced(self) -> bool:
        return all(p.ok for p in self.pushes)


class ManagedObjects:
    """The managed objects of one type, changed with implicit synchronization."""

    def __init__(self, project: Project, store: Store, resources: Resources, object_type: str,
                 *, sync: bool = True) -> None:
        self.schema: ManagedType = project.managed.get(object_type, key="type")
        self.name = f"managed/{object_type}"
        self._resource = ManagedResource(store, self.schema)
        self._internal = ManagedResource(store, self.schema, with_secrets=True)
        self._sync = ImplicitSync(project, store, resources) if sync else None
        self._related = RelatedPushes(project, store, self.schema, self._sync)
        self._fanout = RoleFanout(project, store, self.schema, self._sync)
        self._targets = {m.name: m.target for m in project.mappings}
        self._transform = ScriptTransformer(project.scripts, project.settings.project_dir)
        self._compensating = False  # undoing a change whose push failed (``_compensate``)

    def get(self, object_id: str, *, shown: Collection[str] | None = None) -> Obj:
        """The object as a client reads it: its ``onRetrieve`` and ``onRead`` scripts run, on
        the whole object. ``shown``: the top-level fields the client asks for; of a type without
        read scripts, only the relationship and computed properties it shows then are read."""
        related = None if shown is None or self._resource.hooks.reads else self.schema.shown_with(shown)
        obj = self._resource.get_many([object_id], related=related).get(object_id)
        if obj is None:
            raise NotFound(f"{self.name}/{object_id} not found")
        return self.retrieved(obj)

    def retrieved(self, obj: Obj, method: str = "read") -> Obj:
        """``obj`` (as stored) after the type's read scripts (``store/hooks.py``)."""
        hooks = self._resource.hooks
        return hooks.retrieved(obj, method) if hooks.reads else obj

    def create(self, data: Mapping[str, Any], *, object_id: str | None = None) -> Change:
        """Create the object under the ``_id`` its content holds, else under ``object_id``,
        else a new one: PingIDM's ``createInstance`` takes the content's over the one the
        request names (``AlreadyExists`` when an object holds it, or another writer's create
        of it came first; ``InvalidObject`` for an ``_id`` that is no string or holds a ``/``)."""
        object_id = self._new_id(data, object_id)
        values = _own(data)
        refuse_nulls(self.schema, values)
        if object_id is not None:
            if self._resource.get(object_id) is not None:
                raise AlreadyExists(f"{self.name}/{object_id} already exists")
            values["_id"] = object_id
        created = self._resource.create(values)
        return self._pushed(created["_id"], created, clear=self._clear_secrets(values))

    def _new_id(self, data: Mapping[str, Any], object_id: str | None) -> str | None:
        given = data.get("_id") if isinstance(data, Mapping) else None
        if given is None or given == "":
            given = object_id
        if given is None or given == "":
            return None
        if not isinstance(given, str):
            raise InvalidObject(self.name, [f"an _id is a string, not {json_type(given)}"])
        if "/" in given:
            raise InvalidObject(self.name, ["an _id cannot contain '/': the object could not be addressed as "
                                            f"{self.name}/ID"])
        return given

    def update(self, object_id: str, data: Mapping[str, Any], *, rev: str | None = None) -> Change:
        values = _own(data)
        refuse_nulls(self.schema, values)  # a null given, not a property left out (a replace drops it)
        for name, prop in self.schema.properties.items():
            if prop.default is not None and values.get(name) is None:
                values[name] = copy.deepcopy(prop.default)  # as a create with the same data would have it

        def replaced(current: Obj) -> dict[str, Any]:
            changes: dict[str, Any] = dict(values)
            for name in current:
                if not name.startswith("_") and name not in values and name not in self.schema.secrets \
                        and name not in self.schema.relationships:
                    changes[name] = None  # a replace drops what it does not repeat
            return changes
        return self._changed(object_id, rev, replaced)

    def patch(self, object_id: str, operations: Sequence[Any], *, rev: str | None = None,
              shown: Collection[str] | None = None) -> Change:
        """Apply the PATCH ``operations`` (at revision ``rev``). ``shown``: the top-level fields
        the caller answers (as ``get``'s; None: all): a patch that only adds or removes
        references of a property it does not answer is written without that property read
        (``_edited``)."""
        refuse_nulls(self.schema, _nulled(operations))
        refuse_reading(operations, dict.fromkeys(self.schema.secrets, "secret"))  # its hash stays in the store
        edits = reference_edits(self.schema, operations) if self._alone(shown) else {}
        if edits and not set(edits) & set(self.schema.shown_with(shown or ())):
            return self._edited(object_id, edits, rev, self.schema.shown_with(shown or ()))

        def patched(current: Obj) -> dict[str, Any]:
            after = apply_patch(current, operations, self._transform)
            changes = {k: v for k, v in after.items() if not k.startswith("_") and current.get(k) != v}
            changes.update({k: None for k in current if not k.startswith("_") and k not in after})
            changes.update(incremental(self.schema, current, changes))
            return changes
        return self._changed(object_id, rev, patched)

    def edit_references(self, object_id: str, edits: Mapping[str, Edit],
                        expect: Callable[[Mapping[str, list[Obj]]], None] | None = None) -> Change:
        """Add, replace (their ``_refProperties``) and remove the references ``edits`` name, by
        property: as a ``patch`` of them alone does (``_edited``), never reading the others the
        property holds, where the type allows it (``_alone``); else applied to the
        object as read, whole. ``expect``: called with the references the edits name that the
        object holds (by property, as a read shows them), as read for the write; it refuses
        the change by raising (the reference's own revision, ``RevisionMismatch``), and is
        called again when another writer came between the read and the write. The object
        answered carries none of its relationship properties."""
        if self._alone(()):
            return self._edited(object_id, edits, None, [n for n in self.schema.shown_with(()) if n not in edits],
                                expect)

        def edited(current: Obj) -> dict[str, Any]:
            held = {name: [ref for ref in current.get(name) or [] if ref["_ref"] in _named(self.schema, name, edit)]
                    for name, edit in edits.items()}
            if expect is not None:
                expect(held)
            return incremental(self.schema, current, {name: edit.applied(current.get(name) or [])
                                                      for name, edit in edits.items()})
        return self._changed(object_id, None, edited)

    def _alone(self, shown: Collection[str] | None) -> bool:
        """Whether a change of some references of this type needs nothing but those: the
        caller answers only the fields ``shown``, no mapping reads the type, no script of the
        type sees the object written, no role model works out its users' properties from
        the whole user (``store/roles.py``), and this is no dry run."""
        hooks = self._resource.hooks
        users_of_roles = self.schema.roles is not None and self.schema.name == self.schema.roles.user
        return not (shown is None or self._resource.dry_run or users_of_roles
                    or (self._sync is not None and self._sync.mappings(self.name))
                    or hooks.reads or hooks.model.scripts or hooks.model.compensate
                    or any(prop.scripts for prop in hooks.model.properties.values()))

    def _edited(self, object_id: str, edits: Mapping[str, Edit], rev: str | None, shown: Sequence[str],
                expect: Callable[[Mapping[str, list[Obj]]], None] | None = None) -> Change:
        """``patch`` of references added, replaced and removed alone (``reference_edits``,
        ``edit_references``, ``_alone``).
        The object is read without the properties edited; each object they name is looked
        for among those the property holds by an index (``Edges.holding``), and the change
        made from what it finds, as a patch of the whole property would (a reference held
        alike is kept, one held with other ``_refProperties`` refused, a grant of a role's
        condition made direct); the write finds each reference by an index again
        (``ManagedResource.write_references``). The other ends are pushed as after any change
        (``RelatedPushes``, ``RoleFanout``), from the object before and after with only those
        references in the property."""
        kept = [name for name in self.schema.properties if name not in edits]
        edges = Edges(self._resource.store, self.schema)
        attempt = 1
        while True:
            before = self._internal.get_many([object_id], related=kept).get(object_id)
            if before is None:
                raise NotFound(f"{self.name}/{object_id} not found")
            if rev is not None and before.get("_rev") != rev:
                raise RevisionMismatch(f"{self.name}/{object_id}: revision {rev} expected, {before.get('_rev')} found")
            held = self._held(edges, object_id, edits)
            if expect is not None:  # checked against what the write is made at: ``before``'s revision
                expect(held)
            changes = {name: RefChanges(RefChanges.between(self.schema, name, held[name],
                                                           [*edit.replaced(held[name]), *edit.add]).add,
                                        tuple(edit.remove))
                       for name, edit in edits.items()}
            result = self._resource.write_references(
                WriteOp("update", id=object_id, values=changes, rev=before.get("_rev")), shown)
            if not isinstance(result.error, RevisionMismatch) or rev is not None or attempt == _ATTEMPTS:
                break
            attempt += 1
        if result.error is not None:
            raise result.error
        written = result.obj
        answer = self._resource.complete([dict(written)], shown)[0] if written is not None else None
        if written is None or written.get("_rev") == before.get("_rev"):
            return Change(answer)
        after = self._internal.get_many([object_id], related=kept).get(object_id) or written
        old, new = {**before, **held}, {**after, **self._held(edges, object_id, edits)}
        self._on_sync("notifyUpdate", object_id, old, new, [])
        related = self._related.push(old, new)
        return Change(answer, related + self._fanout.push(old, new, related))

    def _held(self, edges: Edges, object_id: str, edits: Mapping[str, Edit]) -> dict[str, list[Obj]]:
        """Of the references ``edits`` name, by property, those ``object_id`` holds, as a read shows them."""
        held: dict[str, list[Obj]] = {}
        with self._resource.store.engine.connect() as conn:
            for name, edit in edits.items():
                relation = self.schema.relationships[name]
                named = [(w.collection, w.id) for w in wanted_refs(self.schema, name, [*edit.add, *edit.replace])]
                named += [key for ref in edit.remove if (key := relation.collection_of(ref)) is not None]
                found = (edges.holding(conn, object_id, name, *key) for key in dict.fromkeys(named))
                held[name] = [ref_shape(ref) for ref in found if ref is not None]
        return held

    def delete(self, object_id: str, *, rev: str | None = None) -> Change:
        before = self._written(object_id, rev, lambda current: WriteOp("delete", id=object_id))[0]
        pushes = self._sync.push(self.name, object_id, None) if self._sync else []
        self._on_sync("notifyDelete", object_id, before, None, pushes)
        related = self._related.push(before, None)
        return Change(None, pushes + related + self._fanout.push(before, None, related))

    def sync_check(self, object_id: str) -> Change:
        """PingIDM's ``triggerSyncCheck``: push the object as it is now through its
        mappings (a target already in step is not written) and answer it."""
        stored = self._current(object_id)
        pushes = self._sync.push(self.name, object_id, stored) if self._sync else []
        self._on_sync("notifyUpdate", object_id, stored, stored, pushes, compensable=False)
        answer = self._resource.get(object_id)
        return Change(self.retrieved(answer) if answer is not None else None, pushes)

    def _current(self, object_id: str) -> Obj:
        obj = self._internal.get(object_id)
        if obj is None:
            raise NotFound(f"{self.name}/{object_id} not found")
        return obj

    def _write(self, op: WriteOp) -> Obj | None:
        (result,) = self._resource.write_batch([op])
        if result.error is not None:
            raise result.error
        return result.obj

    def _written(self, object_id: str, rev: str | None,
                 make: Callable[[Obj], WriteOp]) -> tuple[Obj, WriteOp, Obj | None]:
        """Write the op ``make`` builds from the object as read (``_current``), at the revision
        read: (the object read, the op, the object written).

        With ``rev`` (``If-Match``) the object must be at that revision, read or written
        (``RevisionMismatch``). Without, the op applies to the object as it is: one that
        loses a race to another writer between the read and the write (the store writes
        only at the revision read) reads it again and is built anew from what the other
        writer left, so that ten concurrent increments count ten."""
        attempt = 1
        while True:
            current = self._current(object_id)
            if rev is not None and current.get("_rev") != rev:
                raise RevisionMismatch(f"{self.name}/{object_id}: revision {rev} expected, "
                                       f"{current.get('_rev')} found")
            op = dataclasses.replace(make(current), rev=current.get("_rev"))
            try:
                return current, op, self._write(op)
            except RevisionMismatch:
                if rev is not None or attempt == _ATTEMPTS:
                    raise
            attempt += 1

    def _changed(self, object_id: str, rev: str | None, changes: Callable[[Obj], dict[str, Any]]) -> Change:
        """Write the update of ``changes`` (from the object as read: ``_written``); push
        it unless it changed nothing (``_rev`` did not move)."""
        current, op, written = self._written(
            object_id, rev, lambda current: WriteOp("update", id=object_id, values=changes(current)))
        if written is not None and written.get("_rev") == current.get("_rev"):
            return Change(self._answer(object_id, written))
        return self._pushed(object_id, written, current, clear=self._clear_secrets(op.values))

    def _clear_secrets(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The secrets ``values`` set in clear: the store keeps a hash of each, and a target
        that takes a secret in clear only (Active Directory's password) gets it from here."""
        return {k: v for k, v in values.items()
                if k in self.schema.secrets and isinstance(v, str) and v and not is_hashed(v) and not is_encrypted(v)}

    def _pushed(self, object_id: str, written: Obj | None, before: Obj | None = None, *,
                clear: Mapping[str, Any] | None = None) -> Change:
        """Push the object as stored (hashed secrets included) and answer it as ``written``."""
        stored = self._internal.get(object_id)
        pushes = (self._sync.push(self.name, object_id, stored, before=before, clear=clear)
                  if self._sync and stored else [])
        self._on_sync("notifyCreate" if before is None else "notifyUpdate", object_id, before, stored, pushes)
        related = self._related.push(before, stored)
        return Change(self._answer(object_id, written), pushes + related + self._fanout.push(before, stored, related),
                      created=before is None)

    def _answer(self, object_id: str, written: Obj | None) -> Obj | None:
        """The object as this change wrote it (its revision and content: never what another
        writer made of it a moment later), with its references and computed properties as
        they are now and its read scripts run; as it is now when the write did not say."""
        answer = self._resource.complete([dict(written)], None)[0] if written is not None \
            else self._resource.get(object_id)
        return self.retrieved(answer) if answer is not None else None

    def _on_sync(self, action: str, object_id: str, before: Obj | None, after: Obj | None,
                 pushes: list[PushResult], *, compensable: bool = True) -> None:
        """The type's ``onSync`` (PingIDM's), once the change was pushed: with implicit
        synchronization on (``sync``), whether or not a mapping reads the type, as PingIDM
        runs it after every synchronization of the object."""
        hooks = self._resource.hooks
        if self._sync is None:
            return
        if hooks.model.compensate and compensable:
            self._compensate(action, object_id, before, pushes)
        if "onSync" not in hooks.model.scripts:
            return  # most types have none: no report to build
        post = hooks.synced(action, object_id, before, after, [{
            "mapping": p.mapping, "targetObjectSet": self._targets.get(p.mapping), "sourceId": p.source_id,
            "targetId": p.target_id, "situation": p.situation or None, "action": p.action or None,
            "linkQualifier": p.qualifier, "result": "SUCCESSFUL" if p.ok else "FAILED",
            **({"message": p.message} if p.message else {})} for p in pushes])
        if post is not None:
            hooks.run_posts([post])

    def _compensate(self, action: str, object_id: str, before: Obj | None, pushes: list[PushResult]) -> None:
        """OpenIDM's compensate.js (all-or-nothing synchronization): a change one of whose
        pushes failed is undone (a create deleted, an update put back, a delete created
        again under its id), which pushes the undoing to the targets the change reached,
        and the caller gets the first failure. The undoing is not undone in turn."""
        failed = next((p for p in pushes if not p.ok), None)
        if failed is None or self._compensating:
            return
        self._compensating = True
        try:
            if action == "notifyCreate":
                self.delete(object_id)
            elif action == "notifyUpdate" and before is not None:
                self.update(object_id, before)
            elif action == "notifyDelete" and before is not None:
                self.create(before, object_id=object_id)
        except IdsyncError as exc:
            log.warning("managed.compensation_failed", resource=self.name, object_id=object_id, error=str(exc))
        finally:
            self._compensating = False
        log.warning("managed.compensated", resource=self.name, object_id=object_id, action=action,
                    mapping=failed.mapping)
        rejected = ObjectRejected(f"{self.name}/{object_id}: {failed.mapping}: {failed.message or 'the push failed'}; "
                                  "the change was undone, and so were its pushes (onSync compensate.js)")
        rejected.status = 409
        raise rejected


def _named(schema: ManagedType, name: str, edit: Edit) -> set[str]:
    """The ``_ref`` of each reference ``edit`` of ``name`` adds, replaces or removes."""
    return {f"{w.collection}/{w.id}" for w in wanted_refs(schema, name, [*edit.add, *edit.replace])} | set(edit.remove)


def _nulled(operations: Sequence[Any]) -> dict[str, None]:
    """The properties a patch sets to null (``add`` or ``replace`` of a null value at ``/NAME``),
    which its result cannot show: a null removes a property there."""
    found: dict[str, None] = {}
    for op in operations if isinstance(operations, list) else ():
        if isinstance(op, Mapping) and op.get("operation") in ("add", "replace") and "value" in op \
                and op["value"] is None and isinstance(op.get("field"), str):
            path = op["field"].strip("/").split("/")
            if len(path) == 1 and path[0]:
                found[path[0]] = None
    return found


def _own(data: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's properties: ``_id`` and ``_rev`` belong to the store."""
    if not isinstance(data, Mapping):
        raise InvalidObject("managed object", ["expected a JSON object"])
    return {k: v for k, v in data.items() if not k.startswith("_")}
