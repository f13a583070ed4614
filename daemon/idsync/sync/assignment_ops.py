"""The operations an assignment's attributes name, and its ``onAssignment``/``onUnassignment`` scripts.

PingIDM runs each operation as a script (``roles/replaceTarget.js`` and its siblings)
with ``sourceObject``, ``targetObject`` (the target projected so far),
``existingTargetObject`` (the target as read, ``null`` on a create),
``linkQualifier``, ``attributeName``, ``attributeValue`` and ``attributesInfo``, and
takes ``value`` (and ``attributesInfo``) from the object it answers. idsync does the
four named operations itself (``Builtin``):

- ``replaceTarget`` sets the value; a second ``replaceTarget`` of the same attribute
  in one synchronization merges its value with the first's;
- ``mergeWithTarget`` adds the values to those the target has (a list keeps its other
  values; an object takes the new keys; a single value is replaced);
- ``removeFromTarget`` takes the values out of the target's (a single value is cleared
  only when it is the assignment's value);
- ``noOp`` does nothing.

An operation given as a script object (``{"type": "text/javascript", "source": ...}``
or ``"file"``) runs in JavaScript with PingIDM's variables, its other keys as variables
too; one naming PingIDM's own ``roles/<operation>.js`` is that operation. An
assignment's ``onAssignment`` (each synchronization that applies it) and
``onUnassignment`` (the one that finds it gone) scripts see the same variables
and ``attributes``; an object they answer replaces the target.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idsync.errors import ConfigError, IdsyncError
from idsync.scripts import Script, ScriptEngine

__all__ = ["OperationContext", "Operations"]

_BUILTIN = ("replaceTarget", "mergeWithTarget", "removeFromTarget", "noOp")


class OperationContext:
    """One synchronization's view of the target: the projected target (``result``), the
    target as read (``base``, changed by unassignments as PingIDM's is), and what one
    operation tells the next about an attribute (``attributesInfo``)."""

    def __init__(self, result: dict[str, Any], base: dict[str, Any] | None, source: Mapping[str, Any],
                 qualifier: str) -> None:
        self.result = result
        self.base = base
        self.source = source
        self.qualifier = qualifier
        self.info: dict[str, dict[str, Any]] = {}

    def variables(self) -> dict[str, Any]:
        return {"sourceObject": dict(self.source), "targetObject": self.result, "existingTargetObject": self.base,
                "linkQualifier": self.qualifier}


class Operations:
    """Runs operations and assignment scripts; compiles each script object once."""

    def __init__(self, engine: ScriptEngine, base_dir: Path) -> None:
        self._engine = engine
        self._base_dir = base_dir
        self._compiled: dict[str, Script] = {}

    def assign(self, ctx: OperationContext, attr: Mapping[str, Any], where: str) -> None:
        operation = attr.get("assignmentOperation") or "replaceTarget"
        self._run(ctx, operation, attr, where, assigning=True)

    def unassign(self, ctx: OperationContext, attr: Mapping[str, Any], where: str) -> None:
        operation = attr.get("unassignmentOperation") or "removeFromTarget"
        self._run(ctx, operation, attr, where, assigning=False)

    def on_event(self, ctx: OperationContext, assignment: Mapping[str, Any], event: str) -> None:
        """Run the assignment's ``onAssignment`` or ``onUnassignment`` script, if it has one."""
        config = assignment.get(event) or (assignment.get("unAssignment") if event == "onUnassignment" else None)
        if config is None:
            return
        where = f"managed/assignment/{assignment.get('_id', '')}: {event}"
        answer = self._script(config, where)(**ctx.variables(), attributes=assignment.get("attributes") or [])
        if isinstance(answer, dict):
            ctx.result.clear()
            ctx.result.update(answer)

    def _run(self, ctx: OperationContext, operation: Any, attr: Mapping[str, Any], where: str, *,
             assigning: bool) -> None:
        name = attr["name"]
        builtin = _builtin_name(operation)
        if builtin is None:
            info = ctx.info.setdefault(name, {})
            answer = self._script(operation, where)(**ctx.variables(), attributeName=name,
                                                    attributeValue=copy.deepcopy(attr.get("value")),
                                                    attributesInfo=info)
            if not isinstance(answer, dict) or "value" not in answer:
                raise IdsyncError(f"{where}: the operation must answer an object with a value")
            _settle(ctx, name, answer["value"], assigning)
            if isinstance(answer.get("attributesInfo"), dict):
                ctx.info[name] = answer["attributesInfo"]
        elif builtin == "removeFromTarget":
            _remove(ctx, name, attr.get("value"))
        elif builtin == "replaceTarget":
            replaced = ctx.info.setdefault(name, {}).setdefault("replaced", {})
            value = copy.deepcopy(attr.get("value"))
            _settle(ctx, name, _merge(ctx.result.get(name), value) if replaced.get(name) else value, assigning)
            replaced[name] = True
        elif builtin == "mergeWithTarget":
            start = ctx.result.get(name)
            if ctx.base is not None and ctx.base.get(name) is not None:
                start = _merge(start, ctx.base[name])
            _settle(ctx, name, _merge(start, copy.deepcopy(attr.get("value"))), assigning)

    def _script(self, config: Any, where: str) -> Script:
        key = json.dumps(config, sort_keys=True, default=str)
        script = self._compiled.get(key)
        if script is None:
            try:
                script = self._engine.compile(config, file=where.split(":")[0], key=where.partition(": ")[2],
                                              base_dir=self._base_dir)
            except ConfigError as exc:
                raise IdsyncError(str(exc)) from None
            self._compiled[key] = script
        return script


def _builtin_name(operation: Any) -> str | None:
    """The built-in operation ``operation`` names (``None``: a script of its own)."""
    if isinstance(operation, str):
        if operation not in _BUILTIN:
            raise IdsyncError(f"unsupported assignment operation {operation!r} (known: {', '.join(_BUILTIN)})")
        return operation
    if isinstance(operation, Mapping) and "source" not in operation:
        stem = str(operation.get("file") or "").removeprefix("roles/").removesuffix(".js")
        if stem in _BUILTIN and str(operation.get("file")).startswith("roles/"):
            return stem
    return None


def _settle(ctx: OperationContext, name: str, value: Any, assigning: bool) -> None:
    ctx.result[name] = value
    if not assigning and ctx.base is not None:
        # PingIDM carries an unassignment into the target as read, for the operations after it.
        ctx.base[name] = value


def _remove(ctx: OperationContext, name: str, value: Any) -> None:
    if ctx.base is None:
        return  # nothing there to remove from
    current = ctx.result.get(name, ctx.base.get(name))
    gone = value if isinstance(value, list) else [value]
    if isinstance(current, list):
        kept: Any = [v for v in current if v not in gone]
    elif current is not None and current in gone:
        kept = None
    else:
        return
    _settle(ctx, name, kept, assigning=False)


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
