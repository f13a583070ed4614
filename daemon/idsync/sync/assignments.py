"""Role assignments applied to the targets of the mapping they name, as PingIDM's sync engine does.

An assignment (``managed/assignment``) names a mapping and a list of attributes, each
with a ``value``, an ``assignmentOperation`` (default ``replaceTarget``) and an
``unassignmentOperation`` (default ``removeFromTarget``). When a user is synchronized
through that mapping (recon or implicit sync), after the mapping's property rules:

1. each attribute of an assignment of the mapping the user does *not* hold has its
   unassignment applied; so has each attribute of an assignment the user held before
   the change (implicit sync knows the object before it) that changed or went away;
2. each attribute of every assignment the user holds (``effectiveAssignments``,
   ``store/roles.py``) has its assignment applied, in order.

The operations (PingIDM's ``roles/*.js``): ``replaceTarget`` sets the value (two
assignments replacing one attribute merge theirs); ``mergeWithTarget`` adds the values
to those the target has (a list keeps its other values; a single value is replaced);
``removeFromTarget`` takes the values out of the target's (a single value is cleared
only when it is the assignment's value); ``noOp`` does nothing.

PingIDM decides what to unassign from the assignments it recorded on the user at the
last synchronization (``lastSync``); idsync records nothing, and unassigns every
assignment of the mapping that the user does not hold: ``removeFromTarget`` removes only
the values such an assignment would have set, so a value the target got elsewhere stays
unless it is one of them. An assignment restricted to ``linkQualifiers`` applies only
through those.
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
from idsync.store.objects import ManagedResource

__all__ = ["Assignments", "mapping_assignments"]

_DEFAULT_ASSIGN = "replaceTarget"
_DEFAULT_UNASSIGN = "removeFromTarget"


def mapping_assignments(project: Project, store: Store, mapping: MappingDef) -> Assignments | None:
    """The assignments of ``mapping`` (None: its source grants no roles)."""
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
    return Assignments(mapping.name, model.effective_assignments, found)


class Assignments:
    """Applies the assignments of one mapping to projected targets."""

    def __init__(self, mapping: str, prop: str, existing: Sequence[Obj]) -> None:
        self.mapping = mapping
        self.prop = prop
        self.existing = list(existing)

    def held(self, source: Mapping[str, Any] | None, qualifier: str) -> dict[str, Obj]:
        """The assignments of this mapping ``source`` holds, by id."""
        value = source.get(self.prop) if source is not None else None
        return {a["_id"]: dict(a) for a in value or [] if isinstance(a, Mapping)
                and a.get("mapping") == self.mapping and "_id" in a and _qualifies(a, qualifier)}

    def apply(self, target: Obj, existing: Obj | None, source: Obj, before: Obj | None, qualifier: str) -> Obj:
        """``target`` (projected by the property rules) with the assignments applied."""
        held = self.held(source, qualifier)
        old = {a["_id"]: a for a in self.existing if a["_id"] not in held}
        old.update({k: v for k, v in self.held(before, qualifier).items() if held.get(k) != v})
        if not held and not old:
            return target
        result = dict(target)
        base = copy.deepcopy(dict(existing)) if existing is not None else None
        for assignment_id, assignment in old.items():
            now = {_key(a) for a in _attributes(held.get(assignment_id))}
            for attr in _attributes(assignment):
                if _key(attr) not in now:
                    self._unassign(result, base, attr)
        replaced: set[str] = set()
        for assignment in held.values():
            for attr in _attributes(assignment):
                self._assign(result, base, attr, replaced)
        return result

    @staticmethod
    def _unassign(result: dict[str, Any], base: dict[str, Any] | None, attr: Mapping[str, Any]) -> None:
        name, value = attr["name"], attr.get("value")
        operation = attr.get("unassignmentOperation") or _DEFAULT_UNASSIGN
        if operation != "removeFromTarget" or base is None:
            return  # noOp, a script operation (validate names it), or nothing there to remove from
        current = result.get(name, base.get(name))
        gone = value if isinstance(value, list) else [value]
        if isinstance(current, list):
            kept = [v for v in current if v not in gone]
        elif current is not None and current in gone:
            kept = None
        else:
            return
        result[name] = kept
        base[name] = kept

    @staticmethod
    def _assign(result: dict[str, Any], base: dict[str, Any] | None, attr: Mapping[str, Any],
                replaced: set[str]) -> None:
        name, value = attr["name"], copy.deepcopy(attr.get("value"))
        operation = attr.get("assignmentOperation") or _DEFAULT_ASSIGN
        if operation == "replaceTarget" and name not in replaced:
            replaced.add(name)
            result[name] = value
        elif operation in ("replaceTarget", "mergeWithTarget"):
            start = result.get(name)
            if operation == "mergeWithTarget" and base is not None and base.get(name) is not None:
                start = _merge(start, base[name])
            result[name] = _merge(start, value)


def _merge(current: Any, value: Any) -> Any:
    if isinstance(current, list):
        merged = list(current)
        for v in value if isinstance(value, list) else [value]:
            if v not in merged:
                merged.append(v)
        return merged
    if isinstance(current, dict) and isinstance(value, Mapping):
        return {**current, **value}
    return value


def _attributes(assignment: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    attrs = assignment.get("attributes") if assignment is not None else None
    return [a for a in attrs or [] if isinstance(a, Mapping) and isinstance(a.get("name"), str)]


def _key(attr: Mapping[str, Any]) -> str:
    return json.dumps(attr, sort_keys=True, default=str)


def _qualifies(assignment: Mapping[str, Any], qualifier: str) -> bool:
    wanted = assignment.get("linkQualifiers")
    return not isinstance(wanted, list) or qualifier in wanted
