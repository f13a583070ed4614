"""``_queryFilter`` to a SQL condition on the table's columns.

A value is always a bound parameter, converted to what its column takes
(``values.to_column``), never SQL text. A property holds one value (its column's),
so a path of more than one name, or a name no readable property has, reaches no
value: ``eq null`` holds, anything else does not. A value its column cannot hold
(``abc`` for an integer column) matches nothing. A comparison with a NULL column is
false, never unknown, so ``!(x eq "a")`` holds for a row without ``x``, as for an
object in memory; ``pr`` is false for NULL and for an empty string. ``co`` and
``sw`` are ``LIKE`` with ``%``, ``_`` and ``\\`` escaped (on the column's text for
a column that is not text). Case and collation are the database's: PostgreSQL
compares case-sensitively, MySQL and MariaDB usually not, SQLite's ``LIKE`` ignores
the case of ASCII letters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, false, not_, or_, true

from idsync.connectors.dbtable.table import Col
from idsync.connectors.dbtable.values import to_column
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present

__all__ = ["to_condition"]


def to_condition(node: Node, column_of: Callable[[Path], Col | None]) -> ColumnElement[bool]:
    """The SQL condition of ``node``; ``column_of`` names the column of a path (None: no value)."""
    if isinstance(node, Literal_):
        return true() if node.value else false()
    if isinstance(node, And):
        return and_(*(to_condition(item, column_of) for item in node.items))
    if isinstance(node, Or):
        return or_(*(to_condition(item, column_of) for item in node.items))
    if isinstance(node, Not):
        return not_(to_condition(node.item, column_of))
    col = column_of(node.path)
    if isinstance(node, Present):
        if col is None:
            return false()
        present = col.column.is_not(None)
        return and_(present, col.column != "") if col.kind == "text" else present
    return _compare(node, col)


def _compare(node: Compare, col: Col | None) -> ColumnElement[bool]:
    op, value = node.op, node.value
    if col is None:
        return true() if op == "eq" and value is None else false()
    if value is None:
        return col.column.is_(None) if op == "eq" else false()
    column: ColumnElement[Any] = col.column
    if op in ("co", "sw"):
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        pattern = _escaped(text)
        target = column if col.kind == "text" else cast(column, String)
        matched = target.like(f"%{pattern}%" if op == "co" else f"{pattern}%", escape="\\")
        return and_(column.is_not(None), matched)
    try:
        bound = to_column("/".join(node.path), col.kind, value, aware=col.aware, empty_strings=True)
    except ValueError:
        return false()
    if bound is None:
        return false()
    compared: ColumnElement[bool]
    if op == "eq":
        compared = column == bound
    elif op == "gt":
        compared = column > bound
    elif op == "ge":
        compared = column >= bound
    elif op == "lt":
        compared = column < bound
    else:
        compared = column <= bound
    return and_(column.is_not(None), compared) if col.column.nullable else compared


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
