"""PingIDM patch operations on one managed object.

A patch is a list of ``{"operation": OPERATION, "field": "/a/b", "value": ...}``, the
operations CREST's: ``add``, ``remove``, ``replace``, ``increment``, ``copy``, ``move``
and ``transform``. ``field`` is a JSON pointer; ``/roles/-`` appends to a list. ``add``
on a list property adds the value (or each value of a list) unless present (a reference
when one with its ``_ref`` and ``_refProperties`` is); ``remove``
with a ``value`` removes only that value, without one the whole property (a reference,
``{"_ref": ...}``, is present when its ``_ref`` is); ``increment`` adds a number (a
result past the largest double, which JSON cannot hold, is refused).
``copy`` and ``move`` take the value at the pointer ``from`` and set ``field`` to it
(``move`` then removes ``from``); a ``from`` that holds nothing changes nothing, as in
PingIDM. ``transform`` sets ``field`` to what a script makes of its value:
``"value": {"script": {"type": "text/javascript", "source": ...}}``, run by a
``Transformer`` the caller gives (``ScriptTransformer``: the project's sandboxed
engine, the value bound as PingIDM's ``content``). The result is a new object; the
input is left alone.

A secret's stored value (its hash) is read by no operation: ``copy`` or ``move`` from
one, or a ``transform`` of one, is refused (``refuse_reading``), as it would put the
hash where it is answered and pushed in the clear, or hand it to a script.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from idsync.errors import ConfigError, ObjectRejected, ScriptError
from idsync.scripts import ScriptEngine

__all__ = ["InvalidPatch", "ScriptTransformer", "Transformer", "apply_patch", "refuse_reading"]

_OPERATIONS = ("add", "copy", "increment", "move", "remove", "replace", "transform")
# The new value of a ``transform``'s field: (its value now, the operation's ``script``, the operation's index).
Transformer = Callable[[Any, Any, int], Any]


class InvalidPatch(ObjectRejected):
    """The patch itself is malformed or cannot apply: fix the operations."""

    exit_code = os.EX_DATAERR


def apply_patch(obj: Mapping[str, Any], operations: Sequence[Any],
                transform: Transformer | None = None) -> dict[str, Any]:
    """``obj`` with ``operations`` applied, in order; a ``transform`` is refused without
    a ``transform`` to run its script."""
    if not isinstance(operations, list):
        raise InvalidPatch("a patch is a list of operations")
    result = copy.deepcopy(dict(obj))
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or op.get("operation") not in _OPERATIONS:
            raise InvalidPatch(f"operation {i}: expected operation to be one of {', '.join(_OPERATIONS)}")
        kind = op["operation"]
        path = _pointer(op.get("field"), i)
        if kind in ("copy", "move"):
            source = _pointer(op.get("from"), i, name="from")
            found, value = _get(result, source)
            if not found:
                continue  # nothing at ``from``: nothing to copy, as PingIDM
            if kind == "move":
                parent, key = _parent(result, source, i, create=False)
                _apply("remove", parent, key, {}, i)
            op = {"value": value}
            kind = "replace"
        elif kind == "transform":
            given = op.get("value")
            script = given.get("script") if isinstance(given, dict) else None
            if script is None:
                raise InvalidPatch(f'operation {i}: transform needs "value": {{"script": {{"type": '
                                   '"text/javascript", "source": ...}}')
            if transform is None:
                raise InvalidPatch(f"operation {i}: transform is not available here")
            op = {"value": transform(_get(result, path)[1], script, i)}
            kind = "replace"
        parent, key = _parent(result, path, i, create=kind != "remove")
        if parent is None:
            continue  # removing below a missing property: nothing to do
        _apply(kind, parent, key, op, i)
    return result


def refuse_reading(operations: Any, hidden: Mapping[str, str]) -> None:
    """``InvalidPatch`` when an operation reads the value of a property of ``hidden`` (its
    name: why it is hidden, ``secret`` or ``private``): ``copy`` and ``move`` from it, a
    ``transform`` of it. Checked before anything is applied."""
    for i, op in enumerate(operations if isinstance(operations, list) else ()):
        kind = op.get("operation") if isinstance(op, Mapping) else None
        name = "from" if kind in ("copy", "move") else "field" if kind == "transform" else None
        pointer = op.get(name) if isinstance(op, Mapping) and name is not None else None
        if not isinstance(pointer, str) or not pointer.strip("/"):
            continue  # not a read, or malformed: apply_patch says why
        read = _pointer(pointer, i, name=str(name))[0]
        if read in hidden:
            raise InvalidPatch(f"operation {i}: {kind} cannot read {read}, a {hidden[read]} property")


class ScriptTransformer:
    """Runs a ``transform``'s script in ``engine`` (the project's: sandboxed, with its time
    and memory limits), the field's value bound as ``content`` (PingIDM's name) and as
    ``value``; the script's result is the field's new value. A script that does not compile
    or throws fails the patch."""

    def __init__(self, engine: ScriptEngine, base_dir: Path) -> None:
        self._engine = engine
        self._base_dir = base_dir

    def __call__(self, value: Any, script: Any, i: int) -> Any:
        key = f"operation {i}: value.script"
        try:
            compiled = self._engine.compile(script, file="patch", key=key, base_dir=self._base_dir)
            return compiled(content=copy.deepcopy(value), value=copy.deepcopy(value))
        except ConfigError as exc:
            raise InvalidPatch(f"{key}: {exc.problem}") from None
        except ScriptError as exc:
            failed = InvalidPatch(f"operation {i}: the transform script failed: {exc}")
            failed.status = exc.status  # a thrown {code, message} answers its code
            raise failed from None


def _pointer(field: Any, i: int, *, name: str = "field") -> list[str]:
    if not isinstance(field, str) or not field.strip("/"):
        raise InvalidPatch(f"operation {i}: {name} must be a JSON pointer such as /mail")
    return [p.replace("~1", "/").replace("~0", "~") for p in field.strip("/").split("/")]


def _get(obj: Mapping[str, Any], path: list[str]) -> tuple[bool, Any]:
    """Whether ``obj`` holds a value at ``path``, and that value (``None`` when not)."""
    node: Any = obj
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdecimal() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, copy.deepcopy(node)


def _parent(obj: dict[str, Any], path: list[str], i: int, *, create: bool) -> tuple[Any, str]:
    node: Any = obj
    for part in path[:-1]:
        if isinstance(node, dict):
            if part not in node:
                if not create:
                    return None, path[-1]
                node[part] = {}
            node = node[part]
        elif isinstance(node, list) and part.isdecimal() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise InvalidPatch(f"operation {i}: /{'/'.join(path)} does not exist")
    if path[0].startswith("_"):
        raise InvalidPatch(f"operation {i}: {path[0]} cannot be patched")
    return node, path[-1]


def _apply(kind: str, parent: Any, key: str, op: Mapping[str, Any], i: int) -> None:
    if isinstance(parent, list):
        _apply_list_item(kind, parent, key, op, i)
        return
    value = op.get("value")
    current = parent.get(key)
    if kind == "replace":
        if value is None:
            parent.pop(key, None)
        else:
            parent[key] = copy.deepcopy(value)
    elif kind == "add":
        if isinstance(current, list):
            for item in value if isinstance(value, list) else [value]:
                if not any(_alike(item, have) for have in current):
                    current.append(copy.deepcopy(item))
        else:
            parent[key] = copy.deepcopy(value)
    elif kind == "remove":
        if "value" in op and isinstance(current, list):
            drop = value if isinstance(value, list) else [value]
            parent[key] = [item for item in current if not any(_same(d, item) for d in drop)]
        else:
            parent.pop(key, None)
    else:  # increment
        if not _number(value) or not (current is None or _number(current)):
            raise InvalidPatch(f"operation {i}: increment needs a number value and a numeric property")
        parent[key] = _sum(current or 0, op["value"], i)


def _apply_list_item(kind: str, items: list[Any], key: str, op: Mapping[str, Any], i: int) -> None:
    if key == "-" and kind == "add":
        items.append(copy.deepcopy(op.get("value")))
        return
    if not key.isdecimal() or int(key) >= len(items) + (kind == "add"):
        raise InvalidPatch(f"operation {i}: no list element {key}")
    index = int(key)
    if kind == "add":
        items.insert(index, copy.deepcopy(op.get("value")))
    elif kind == "remove":
        del items[index]
    elif kind == "replace":
        items[index] = copy.deepcopy(op.get("value"))
    else:
        if not _number(op.get("value")) or not _number(items[index]):
            raise InvalidPatch(f"operation {i}: increment needs numbers")
        items[index] = _sum(items[index], op["value"], i)


def _sum(current: float, value: float, i: int) -> float:
    """An ``increment``'s result; refused when past the largest number (JSON has no infinity)."""
    result = current + value
    if abs(result) > sys.float_info.max or result != result:  # an int past a double's range, inf, NaN
        raise InvalidPatch(f"operation {i}: increment: the result is out of range (at most "
                           f"{sys.float_info.max:.6g} either side of 0)")
    return result


def _same(value: Any, item: Any) -> bool:
    """Whether a patch's ``value`` names list item ``item``: equal, or, for references,
    the same ``_ref`` (a stored reference also carries its ``_refProperties``)."""
    if isinstance(value, dict) and isinstance(item, dict) and "_ref" in value and "_ref" in item:
        return bool(value["_ref"] == item["_ref"])
    return bool(value == item)


def _alike(value: Any, item: Any) -> bool:
    """Whether an ``add`` of ``value`` to a list is already there as ``item``: equal, or, for
    references, the same ``_ref`` with the same ``_refProperties`` (but for the ``_id`` and
    ``_rev`` a stored one carries). A reference to an object the list holds with other
    ``_refProperties`` is added, and the store refuses the two (``store/relationships.py``),
    or makes a direct grant of the conditional one, rather than the add being dropped."""
    if isinstance(value, dict) and isinstance(item, dict) and "_ref" in value and "_ref" in item:
        return bool(value["_ref"] == item["_ref"]) and _ref_props(value) == _ref_props(item)
    return bool(value == item)


def _ref_props(ref: Mapping[str, Any]) -> Any:
    props = ref.get("_refProperties") or {}
    return {k: v for k, v in props.items() if k not in ("_id", "_rev")} if isinstance(props, Mapping) else props


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
