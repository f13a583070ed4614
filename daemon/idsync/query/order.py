"""``_sortKeys``: the order of JSON values a query's answer is sorted in.

Each key is a name or a JSON pointer (``address/city``, ``/address/city``), ``-`` before
it descends and ``+`` ascends; values compare in JSON's order (``json_order``): missing
or null, then false and true, numbers by value, strings, and arrays and objects last.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from idsync.errors import QueryError

__all__ = ["sort_key", "sort_order"]


def sort_key(key: str) -> tuple[tuple[str, ...], bool]:
    """A ``_sortKeys`` entry as (JSON pointer segments, descending): ``-address/city``,
    ``+/address/city``; ``QueryError`` for one that names no field."""
    pointer = key[1:] if key[:1] in "+-" else key
    path = tuple(pointer.removeprefix("/").split("/"))
    if not pointer or "" in path:
        raise QueryError(f"_sortKeys: {key!r} is not a field (a name or a JSON pointer such as /address/city)")
    return path, key.startswith("-")


def _json_order(value: Any) -> tuple[int, Any]:
    """Where ``value`` sorts among JSON values."""
    if value is None:
        return 0, 0
    if isinstance(value, bool):
        return 1, value
    if isinstance(value, int | float):
        return 2, value
    if isinstance(value, str):
        return 3, value
    return 4, json.dumps(value, sort_keys=True)


def sort_order(keys: Sequence[str]) -> Callable[[dict[str, Any]], Any]:
    """The sort key of ``_sortKeys``, values in JSON's order: numbers by value, missing
    values first. Objects equal by every key keep their order (``sorted`` is stable)."""
    paths = [sort_key(k) for k in keys]

    def compare(a: list[tuple[int, Any]], b: list[tuple[int, Any]]) -> int:
        for x, y, (_, descending) in zip(a, b, paths, strict=True):
            if x != y:
                return (1 if x < y else -1) if descending else (-1 if x < y else 1)
        return 0

    wrap = functools.cmp_to_key(compare)

    def order(obj: dict[str, Any]) -> Any:
        values = []
        for path, _ in paths:
            value: Any = obj
            for segment in path:
                value = value.get(segment) if isinstance(value, dict) else None
            values.append(_json_order(value))
        return wrap(values)

    return order
