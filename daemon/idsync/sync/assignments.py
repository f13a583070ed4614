"""Role assignments applied to the targets of the mapping they name, as PingIDM's sync engine does.

An assignment (``managed/assignment``) names a mapping and a list of attributes, each
with a ``value``, an ``assignmentOperation`` (default ``replaceTarget``) and an
``unassignmentOperation`` (default ``removeFromTarget``), applied by
``assignment_ops.py``. When a user is synchronized through that mapping (recon or
implicit sync), after the mapping's property rules:

1. each assignment recorded as applied at the user's last synchronization through the
   mapping (``lastSync``, ``store/last_sync.py``) that the user no longer holds has its
   ``onUnassignment`` script run and every attribute unassigned; one still held has
   the attributes unassigned whose definition changed since (PingIDM's
   ``roles/defaultMapping.js``). Without a record (the first synchronization) nothing
   is unassigned, but what implicit sync knows the user held before its change;
2. each assignment the user holds (``effectiveAssignments``, ``store/roles.py``) has its
   ``onAssignment`` script run and its attributes assigned, in order. An assignment
   restricted to ``linkQualifiers`` applies only through those.

Once the target is written (or found equal), the mapping's assignments the user holds
are recorded (``Assessor`` marks the plan, recon and implicit sync write it with the
page), when they differ from the record. So a value a target got elsewhere is never
removed by an assignment that was never applied, and removing a role unassigns
exactly what it applied.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.query.ast import Compare
from idsync.resource import Obj, QuerySpec
from idsync.store.database import Store
from idsync.store.last_sync import LastSync
from idsync.store.objects import ManagedResource
from idsync.sync.assignment_ops import OperationContext, Operations

__all__ = ["Assignments", "mapping_assignments"]


def mapping_assignments(project: Project, store: Store, mapping: MappingDef) -> Assignments | None:
    """The assignments of ``mapping`` (None: its source grants no roles, or no assignment
    names the mapping and none was ever applied through it)."""
    types = project.managed.types
    user = types.get(mapping.source.removeprefix("managed/")) if mapping.source.startswith("managed/") else None
    model = user.roles if user is not None else None
    if user is None or model is None or model.user != user.name or model.assignment is None \
            or not model.effective_assignments:
        return None
    kind = types.get(model.assignment.name)
    if kind is None:
        return None
    spec = QuerySpec(filter=Compare(("mapping",), "eq", mapping.name))
    found = [a for page in ManagedResource(store, kind).pages(spec) for a in page]
    last_sync = LastSync(store, user.name, mapping.name)
    if not found and not last_sync.any():
        return None
    return Assignments(mapping.name, model.effective_assignments, last_sync,
                       Operations(project.scripts, project.settings.project_dir))


class Assignments:
    """Applies the assignments of one mapping to projected targets, and says what to record."""

    def __init__(self, mapping: str, prop: str, last_sync: LastSync, operations: Operations) -> None:
        self.mapping = mapping
        self.prop = prop
        self.last_sync = last_sync
        self._operations = operations
        self._recorded: dict[str, list[Obj]] = {}
        self._fetched: set[str] = set()

    def prefetch(self, ids: Sequence[str]) -> None:
        """Read the records of a page of sources at once (one query), forgetting the previous page's."""
        self._recorded = self.last_sync.read(ids)
        self._fetched = set(ids)

    def recorded(self, source_id: str) -> list[Obj] | None:
        """The assignments of this mapping last applied to ``source_id``'s targets (None: no record)."""
        if source_id not in self._fetched:
            self._recorded.update(self.last_sync.read([source_id]))
            self._fetched.add(source_id)
        found = self._recorded.get(source_id)
        return None if found is None else [a for a in found if a.get("mapping") == self.mapping]

    def held(self, source: Mapping[str, Any] | None, qualifier: str | None = None) -> dict[str, Obj]:
        """The assignments of this mapping ``source`` holds, by id (through ``qualifier``, if given)."""
        value = source.get(self.prop) if source is not None else None
        return {a["_id"]: dict(a) for a in value or [] if isinstance(a, Mapping)
                and a.get("mapping") == self.mapping and "_id" in a
                and (qualifier is None or _qualifies(a, qualifier))}

    def to_record(self, source: Mapping[str, Any]) -> list[Obj] | None:
        """What to record for ``source`` once synchronized (None: the record says it already)."""
        now = list(self.held(source).values())
        before = self.recorded(str(source.get("_id", "")))
        if before is None and not now:
            return None
        return now if _canonical(now) != _canonical(before or []) else None

    def apply(self, target: Obj, existing: Obj | None, source: Obj, before: Obj | None, qualifier: str) -> Obj:
        """``target`` (projected by the property rules) with the assignments applied."""
        held = self.held(source, qualifier)
        old = self.recorded(str(source.get("_id", "")))
        if old is None and before is not None:
            old = list(self.held(before).values())
        if not held and not old:
            return target
        current = self.held(source)
        ctx = OperationContext(dict(target), copy.deepcopy(dict(existing)) if existing is not None else None,
                               source, qualifier)
        for assignment in old or []:
            now = current.get(assignment.get("_id", ""))
            if now is None:
                self._operations.on_event(ctx, assignment, "onUnassignment")
            for i, attr in enumerate(_attributes(assignment)):
                if now is None or not _still(attr, _attributes(now)):
                    self._operations.unassign(ctx, attr, _where(assignment, i, "unassignmentOperation"))
        for assignment in held.values():
            self._operations.on_event(ctx, assignment, "onAssignment")
            for i, attr in enumerate(_attributes(assignment)):
                self._operations.assign(ctx, attr, _where(assignment, i, "assignmentOperation"))
        return ctx.result


def _still(attr: Mapping[str, Any], current: list[Mapping[str, Any]]) -> bool:
    """Whether ``attr`` is unchanged in ``current`` (the first attribute of the same name)."""
    same = next((a for a in current if a["name"] == attr["name"]), None)
    return same is not None and _canonical(same) == _canonical(attr)


def _where(assignment: Mapping[str, Any], i: int, key: str) -> str:
    return f"managed/assignment/{assignment.get('_id', '')}: attributes[{i}].{key}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _attributes(assignment: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    attrs = assignment.get("attributes") if assignment is not None else None
    return [a for a in attrs or [] if isinstance(a, Mapping) and isinstance(a.get("name"), str)]


def _qualifies(assignment: Mapping[str, Any], qualifier: str) -> bool:
    wanted = assignment.get("linkQualifiers")
    return not isinstance(wanted, list) or qualifier in wanted
