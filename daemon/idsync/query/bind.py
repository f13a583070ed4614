"""Fill a correlation filter template with one object's values.

A correlation filter such as ``/userName eq "${source.uid}"`` is parsed once;
:func:`bind` then substitutes values into the *tree*, never into text, so a
value like ``x") or (true`` stays one string value: escaping is correct by
construction. A placeholder is a Compare value that is exactly ``${expr}``.

What a resolved value does to its comparison:

* ``None`` or ``[]``: the comparison can never hold;
* a one-element list: that element;
* a longer list: an ``or`` of the same comparison on each distinct element.

The result is then simplified (``false and x`` is ``false``, ``false or x`` is
``x``, ``!false`` is ``true``); a filter that can never match binds to ``None``,
so the caller skips the lookup altogether.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Value

__all__ = ["bind", "equality_terms", "placeholders"]

_PLACEHOLDER = re.compile(r"\$\{([^{}]+)\}")
_FALSE = Literal_(False)
_TRUE = Literal_(True)


def bind(node: Node, resolve: Callable[[str], Any]) -> Node | None:
    """``node`` with each ``${expr}`` value replaced by ``resolve(expr)``.

    ``None`` when the bound filter can never match.
    """
    bound = _simplify(_substitute(node, resolve))
    return None if bound == _FALSE else bound


def placeholders(node: Node) -> set[str]:
    """The expressions of every ``${expr}`` placeholder in ``node``."""
    match node:
        case Compare(value=value):
            expr = _placeholder(value)
            return set() if expr is None else {expr}
        case Not(item=item):
            return placeholders(item)
        case And(items=items) | Or(items=items):
            return set().union(*(placeholders(item) for item in items))
    return set()


def equality_terms(node: Node) -> tuple[tuple[Path, Value], ...] | None:
    """The ``(path, value)`` pairs, sorted by path, of an ``eq`` or an ``and`` of ``eq``s.

    The paths must be distinct; any other shape gives ``None``. Filters of the
    same shape (same paths) can be looked up together in one query. ``eq null``
    does not qualify: "absent" cannot be batched as a value.
    """
    items = node.items if isinstance(node, And) else (node,)
    terms: dict[Path, Value] = {}
    for item in items:
        if (
            not isinstance(item, Compare)
            or item.op != "eq"
            or item.value is None
            or item.path in terms
        ):
            return None
        terms[item.path] = item.value
    return tuple(sorted(terms.items(), key=lambda term: term[0])) if terms else None


def _placeholder(value: Value) -> str | None:
    if not isinstance(value, str):
        return None
    found = _PLACEHOLDER.fullmatch(value)
    return found.group(1).strip() if found is not None else None


def _substitute(node: Node, resolve: Callable[[str], Any]) -> Node:
    match node:
        case Compare(path=path, op=op, value=value):
            expr = _placeholder(value)
            if expr is None:
                return node
            values = _distinct(_values_of(expr, resolve(expr)))
            if not values:
                return _FALSE
            compares: list[Node] = [Compare(path, op, v) for v in values]
            return compares[0] if len(compares) == 1 else Or(tuple(compares))
        case Not(item=item):
            return Not(_substitute(item, resolve))
        case And(items=items):
            return And(tuple(_substitute(item, resolve) for item in items))
        case Or(items=items):
            return Or(tuple(_substitute(item, resolve) for item in items))
    return node


def _values_of(expr: str, resolved: Any) -> list[Value]:
    many = (
        resolved
        if isinstance(resolved, Sequence) and not isinstance(resolved, str | bytes)
        else [resolved]
    )
    out: list[Value] = []
    for value in many:
        if value is None:
            continue
        if not isinstance(value, str | int | float | bool):
            raise QueryError(
                f"${{{expr}}} is a {type(value).__name__}, not a string, number or boolean"
            )
        out.append(value)
    return out


def _distinct(values: list[Value]) -> list[Value]:
    # Keyed by type too: True == 1 in Python, but not in a filter.
    seen: set[tuple[type, Value]] = set()
    out: list[Value] = []
    for value in values:
        key = (type(value), value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _simplify(node: Node) -> Node:
    match node:
        case Not(item=item):
            inner = _simplify(item)
            if isinstance(inner, Literal_):
                return Literal_(not inner.value)
            return Not(inner)
        case And(items=items):
            return _junction(
                And, [_simplify(item) for item in items], absorbing=_FALSE, neutral=_TRUE
            )
        case Or(items=items):
            return _junction(
                Or, [_simplify(item) for item in items], absorbing=_TRUE, neutral=_FALSE
            )
    return node


def _junction(
    kind: type[And] | type[Or], items: list[Node], *, absorbing: Literal_, neutral: Literal_
) -> Node:
    if absorbing in items:
        return absorbing
    kept: list[Node] = []
    for item in items:
        if item == neutral:
            continue
        # A list placeholder inside an "or" made an "or": keep the tree flat, as the parser does.
        kept.extend(item.items if isinstance(item, kind) else (item,))
    if not kept:
        return neutral
    return kept[0] if len(kept) == 1 else kind(tuple(kept))
