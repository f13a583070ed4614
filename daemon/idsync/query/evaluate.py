"""Evaluate a ``_queryFilter`` against one object in memory.

Used where a mapping filters objects it already holds (``sourceCondition``,
``validTarget`` given as a filter, policy conditions). The rules:

* a path walks nested mappings; a list on the way fans out to its elements, and a
  decimal segment indexes into a list (``/emails/0/value``);
* a comparison holds when any of the values found satisfies it;
* ``eq null`` holds when nothing (or only ``null``) is found; any other operator
  with ``null`` never holds;
* numbers compare numerically, strings lexicographically (``co`` and ``sw`` only
  apply to strings), booleans only by ``eq``; a type mismatch never holds, so
  ``"5" eq 5`` is false;
* ``pr`` holds when a value is found that is not ``null``, ``""`` or ``[]``;
* ``ignore_case=True`` compares strings case-insensitively, as LDAP does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from idsync.query.ast import And, Compare, Literal_, Node, Not, Op, Or, Path, Present

__all__ = ["matches", "values_at"]


def matches(node: Node, obj: Mapping[str, Any], *, ignore_case: bool = False) -> bool:
    """Whether ``obj`` satisfies the filter ``node``."""
    match node:
        case Literal_(value=value):
            return value
        case Present(path=path):
            return any(v is not None and v != "" for v in values_at(obj, path))
        case Compare(path=path, op=op, value=expected):
            found = list(values_at(obj, path))
            if expected is None:
                return op == "eq" and all(v is None for v in found)
            return any(_compare(v, op, expected, ignore_case) for v in found)
        case Not(item=item):
            return not matches(item, obj, ignore_case=ignore_case)
        case And(items=items):
            return all(matches(item, obj, ignore_case=ignore_case) for item in items)
        case Or(items=items):
            return any(matches(item, obj, ignore_case=ignore_case) for item in items)
    raise TypeError(f"not a _queryFilter node: {node!r}")


def values_at(obj: Any, path: Path) -> Iterator[Any]:
    """Every value ``path`` reaches in ``obj``; lists (on the way and at the end) are fanned out."""
    if not path:
        if _is_list(obj):
            yield from obj
        else:
            yield obj
        return
    head, rest = path[0], path[1:]
    if isinstance(obj, Mapping):
        if head in obj:
            yield from values_at(obj[head], rest)
    elif _is_list(obj):
        if head.isdecimal() and head.isascii():
            index = int(head)
            if index < len(obj):
                yield from values_at(obj[index], rest)
        else:
            for element in obj:
                yield from values_at(element, path)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _compare(actual: Any, op: Op, expected: Any, ignore_case: bool) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        if ignore_case:
            actual, expected = actual.casefold(), expected.casefold()
        return (
            _ordered(actual, op, expected)
            if op not in ("co", "sw")
            else (expected in actual if op == "co" else actual.startswith(expected))
        )
    if _is_number(actual) and _is_number(expected):
        return op not in ("co", "sw") and _ordered(actual, op, expected)
    if isinstance(actual, bool) and isinstance(expected, bool):
        return op == "eq" and actual == expected
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ordered(actual: Any, op: Op, expected: Any) -> bool:
    if op == "eq":
        return bool(actual == expected)
    if op == "gt":
        return bool(actual > expected)
    if op == "ge":
        return bool(actual >= expected)
    if op == "lt":
        return bool(actual < expected)
    if op == "le":
        return bool(actual <= expected)
    return False
