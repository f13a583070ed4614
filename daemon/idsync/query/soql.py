"""Translate a ``_queryFilter`` into a SOQL ``WHERE`` expression (Salesforce).

=====================  ==================================
``_queryFilter``       SOQL
=====================  ==================================
``/a eq "v"``          ``a = 'v'``   (``gt ge lt le``: ``> >= < <=``)
``/a eq null``         ``a = null``
``/a co "v"``          ``a LIKE '%v%'``
``/a sw "v"``          ``a LIKE 'v%'``
``/a pr``              ``a != null``
``!x``                 ``NOT (x)``
``true`` / ``false``   ``Id != null`` / ``Id = null``
=====================  ==================================

Strings are single-quoted with SOQL's escape sequences (``\\'``, ``\\"``,
``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\f``, ``\\uXXXX`` for other control
characters); inside ``LIKE`` the wildcards ``%`` and ``_`` of the value are
escaped too, so ``50%_off`` matches only itself. Numbers and booleans are bare
(numbers never in exponent notation, which SOQL does not read). Compound
operands are always parenthesized: SOQL refuses ``a AND b OR c`` without them.

The default field joins the pointer's segments with ``.``, which is how SOQL
follows relationships (``/Account/Name`` -> ``Account.Name``); field names are
checked so that a hostile pointer cannot inject SOQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present, Value
from idsync.query.text import display_pointer

__all__ = ["escape_soql_string", "to_soql"]

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_LIKE_ESCAPES = {"%": "\\%", "_": "\\_"}
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*")
_OPERATORS = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def to_soql(node: Node, field: Callable[[Path], str] | None = None) -> str:
    """The SOQL condition for ``node``; ``field`` names the Salesforce field of a path."""
    name_of = field if field is not None else _dotted
    return _condition(node, name_of)


def escape_soql_string(value: str, *, like: bool = False) -> str:
    """``value`` as a quoted SOQL string literal: ``O'Brien`` -> ``'O\\'Brien'``."""
    table = {**_ESCAPES, **_LIKE_ESCAPES} if like else _ESCAPES
    return "'" + "".join(table.get(ch, _control(ch)) for ch in value) + "'"


def _condition(node: Node, name_of: Callable[[Path], str]) -> str:
    match node:
        case Literal_(value=value):
            return "Id != null" if value else "Id = null"
        case Present(path=path):
            return f"{_field(path, name_of)} != null"
        case Compare():
            return _compare(node, name_of)
        case Not(item=item):
            return f"NOT ({_condition(item, name_of)})"
        case And(items=items):
            return _junction(items, "AND", name_of) if items else "Id != null"
        case Or(items=items):
            return _junction(items, "OR", name_of) if items else "Id = null"
    raise TypeError(f"not a _queryFilter node: {node!r}")


def _junction(items: tuple[Node, ...], word: str, name_of: Callable[[Path], str]) -> str:
    return f" {word} ".join(
        f"({_condition(i, name_of)})" if isinstance(i, And | Or) else _condition(i, name_of)
        for i in items
    )


def _compare(node: Compare, name_of: Callable[[Path], str]) -> str:
    f = _field(node.path, name_of)
    if node.value is None:
        if node.op == "eq":
            return f"{f} = null"
        raise QueryError(f"'{node.op} null' has no SOQL equivalent (only 'eq null' does)")
    if node.op in ("co", "sw"):
        text = node.value if isinstance(node.value, str) else _literal(node.value).strip("'")
        pattern = escape_soql_string(text, like=True)[1:-1]
        return f"{f} LIKE '%{pattern}%'" if node.op == "co" else f"{f} LIKE '{pattern}%'"
    return f"{f} {_OPERATORS[node.op]} {_literal(node.value)}"


def _literal(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"{value!r} has no SOQL equivalent")
        return format(Decimal(repr(value)), "f")
    return escape_soql_string(value)


def _control(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch


def _field(path: Path, name_of: Callable[[Path], str]) -> str:
    name = name_of(path)
    if not _FIELD.fullmatch(name):
        raise QueryError(f"{name!r} is not a SOQL field name (for {display_pointer(path)})")
    return name


def _dotted(path: Path) -> str:
    return ".".join(path)
