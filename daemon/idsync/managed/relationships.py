"""The other ends of a managed change: objects whose relationship properties changed
because another object's did.

A patch of a property holding many references is written as what it adds and
removes (``incremental``), so concurrent patches of one role's members all count.

Adding a user to a role's ``members`` changes the user's ``roles`` too; deleting
a role takes it out of every member's ``roles``. The store keeps both ends in one
row (``store/relationships.py``); here each object at another end whose
references changed is pushed by implicit synchronization like the object
changed itself, so a mapping of user ``roles`` sees the new role at once. A reference
kept whose ``_refProperties`` changed (a grant given a window, or its window taken
away) is changed for both ends too: the user of a grant whose window now ended has
lost the role's effects, and is pushed like a user whose grant was removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from idsync.config.managed import ManagedType
from idsync.config.project import Project
from idsync.resource import Obj
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.relationships import RefChanges, changed_refs
from idsync.sync.implicit import ImplicitSync, PushResult

__all__ = ["Edit", "RelatedPushes", "incremental", "reference_edits"]


def incremental(schema: ManagedType, current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The changes of a patch to properties holding many references, as what they add
    and remove (``RefChanges``): a patch adding a member to a role adds that member to
    the members the role has when the change is written, not to those it had when read."""
    return {name: RefChanges.between(schema, name, current.get(name), value)
            for name, value in changes.items()
            if name in schema.relationships and schema.relationships[name].many}


@dataclass
class Edit:
    """What a patch does to one property holding many references, when that is all it does;
    or a change of one reference (``References``: a ``PUT`` of its ``_refProperties``)."""

    add: list[Any] = field(default_factory=list)  # the values of each ``add`` of ``/NAME/-``
    remove: list[str] = field(default_factory=list)  # the _ref of each ``remove`` of ``/NAME`` by value
    replace: list[Any] = field(default_factory=list)  # new values of references held, found by their _ref

    def replaced(self, held: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The references ``held`` with those the edit replaces in their place."""
        new = {value["_ref"]: value for value in self.replace}
        return [new.get(ref["_ref"], ref) for ref in held]

    def applied(self, held: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The references ``held`` after the edit: those it removes left out, those it
        replaces in their place, those it adds last."""
        return [ref for ref in self.replaced(held) if ref["_ref"] not in self.remove] + self.add


def reference_edits(schema: ManagedType, operations: Sequence[Any]) -> dict[str, Edit]:
    """The references ``operations`` add and remove, by property, when that is all they do
    (each an ``add`` of ``/NAME/-``, or a ``remove`` of ``/NAME`` whose value is ``{"_ref":
    ...}``, NAME a relationship property holding many); else none: such a patch is a change
    of those references alone, which needs none of the others the property holds."""
    edits: dict[str, Edit] = {}
    for op in operations if isinstance(operations, list) else ():
        if not isinstance(op, Mapping) or not isinstance(op.get("field"), str) or "value" not in op:
            return {}
        name, _, end = op["field"].strip("/").partition("/")
        relation = schema.relationships.get(name)
        if relation is None or not relation.many:
            return {}
        value = op["value"]
        if op.get("operation") == "add" and end == "-":
            edits.setdefault(name, Edit()).add.append(value)
        elif op.get("operation") == "remove" and not end and isinstance(value, Mapping) \
                and isinstance(value.get("_ref"), str):
            edits.setdefault(name, Edit()).remove.append(value["_ref"])
        else:
            return {}
    return edits


class RelatedPushes:
    """Pushes the objects at the other ends of one type's changed references."""

    def __init__(self, project: Project, store: Store, schema: ManagedType, sync: ImplicitSync | None) -> None:
        self._project = project
        self._store = store
        self._schema = schema
        self._sync = sync

    def push(self, before: Obj | None, after: Obj | None) -> list[PushResult]:
        """Push each object referenced by ``before`` or ``after`` but not both, or by both
        with other ``_refProperties`` (``changed_refs``)."""
        if self._sync is None or not self._schema.relationships:
            return []
        changed = set().union(*(changed_refs((before or {}).get(name), (after or {}).get(name))
                                for name in self._schema.relationships))
        pushes: list[PushResult] = []
        for ref in sorted(changed):
            collection, _, object_id = ref.rpartition("/")
            if not self._sync.mappings(collection):
                continue
            other = self._project.managed.types.get(collection.split("/", 1)[1])
            if other is None:
                continue
            stored = ManagedResource(self._store, other, with_secrets=True).get(object_id)
            if stored is not None:
                pushes.extend(self._sync.push(collection, object_id, stored))
        return pushes
