"""``_queryFilter`` to SQL over managed objects.

A comparison on a searchable property becomes an ``EXISTS`` over the
``managed_properties`` index (one row per value, so a multi-valued property
matches when any value does); ``_id`` is the primary key; anything else goes
through the dialect's JSON functions (correct, but not indexed). Values are
always bound parameters, never spliced into SQL text.

Both ways answer alike. A multi-valued property matches when any of its values
does; an object (or an array inside an array) is no value, so it never matches
through its JSON text. Types compare as JSON has them (``query/evaluate.py``): a
string matches strings, a number numbers, a boolean booleans. A comparison is
never NULL, so ``!(f eq v)`` holds of an object without ``f``, as in PingIDM.

The index keeps the first ``INDEXED_LENGTH`` characters of a string (what
MariaDB's index takes). A comparison with a string that long or longer still
starts from the index, then the candidates are checked again against their own
values (``_AnyValue``); a shorter string compares exactly on the cut values
alone, and ``co`` re-checks only the values that reach the cut.

No stored value holds a NUL character or half of a character (an unpaired surrogate:
``database.unfit_at``), so a string with one equals, contains or starts no stored
value, and orders as its part before it does; it never reaches the database, which
may refuse it (or its driver cannot even encode it).

A secret's stored value (its hash, its ciphertext) never leaves the store, and a filter
is a way out: ``password sw "{CRYPT}$6$r"`` answers a character at a time. So a reader
that is not shown the secrets cannot filter on them either (``refuse_hidden``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Select,
    String,
    and_,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement as _CE

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Op, Or, Path, Present, Value, paths
from idsync.store.collation import exact_collation
from idsync.store.tables import managed_objects as mo
from idsync.store.tables import managed_properties as mp

__all__ = ["INDEXED_LENGTH", "BooleanSql", "Exact", "compare_op", "one_page", "property_value", "refuse_hidden",
           "to_sql"]

INDEXED_LENGTH = 255  # characters of a string the searchable index keeps


def property_value(value: Any) -> tuple[str | None, float | None]:
    """How one property value is kept in the searchable index: text and number."""
    if type(value) is str:  # nearly every value: decided first
        return value[:INDEXED_LENGTH], None
    if value is None:
        return None, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int | float):
        return _number_text(value)[:INDEXED_LENGTH], float(value)
    if isinstance(value, dict | list):
        return None, None
    text = str(value)
    return text[:INDEXED_LENGTH], None


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def refuse_hidden(node: Node | None, hidden: Mapping[str, str], *, what: str = "_queryFilter") -> None:
    """``QueryError`` when the filter compares or tests a property of ``hidden`` (its name:
    why it is hidden, ``secret`` or ``private``), before anything is read."""
    for path in paths(node) if node is not None else ():
        if path and path[0] in hidden:
            raise QueryError(f"{what}: {path[0]} is a {hidden[path[0]]} property: no query filters or "
                             "sorts on it")


def to_sql(node: Node, object_type: str, searchable: Collection[str]) -> ColumnElement[bool]:
    return _Translator(object_type, searchable).visit(node)


class BooleanSql:
    """A filter's ``and``, ``or``, ``not``, ``true`` and ``false`` as SQL; a subclass
    answers its comparisons and presence tests (``leaf``)."""

    def visit(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Literal_):
            return true() if node.value else false()
        if isinstance(node, And):
            return and_(*(self.visit(item) for item in node.items))
        if isinstance(node, Or):
            return or_(*(self.visit(item) for item in node.items))
        if isinstance(node, Not):
            return not_(self.visit(node.item))
        return self.leaf(node)

    def leaf(self, node: Compare | Present) -> ColumnElement[bool]:
        raise NotImplementedError


class _Translator(BooleanSql):
    def __init__(self, object_type: str, searchable: Collection[str]) -> None:
        self.object_type = object_type
        self.searchable = searchable

    def leaf(self, node: Compare | Present) -> ColumnElement[bool]:
        return self._present(node) if isinstance(node, Present) else self._compare(node)

    def _present(self, node: Present) -> ColumnElement[bool]:
        if any(_unfit(p) >= 0 for p in node.path):
            return false()
        if node.path in (("_id",), ("_rev",)):
            return true()
        if len(node.path) == 1 and node.path[0] in self.searchable:
            return self._exists(node.path[0], mp.c.value.is_not(None))
        present: ColumnElement[bool] = mo.c.data[list(node.path)].as_string().is_not(None)
        return present

    def _compare(self, node: Compare) -> ColumnElement[bool]:
        path, op, value = node.path, node.op, node.value
        if any(_unfit(p) >= 0 for p in path):
            return false()
        cut = _unfit(value) if isinstance(value, str) else -1
        if cut >= 0:
            if op in ("eq", "co", "sw"):
                return false()
            # "x" < "x\0..." < any longer stored string: past the NUL (or the half) only the prefix counts.
            value, op = str(value)[:cut], ("gt" if op in ("gt", "ge") else "le")
        if path in (("_id",), ("_rev",)):  # columns of their own, always strings
            return compare_op(mo.c.id if path == ("_id",) else mo.c.rev, op, value) if isinstance(value, str) \
                else false()
        if len(path) == 1 and path[0] in self.searchable:
            return self._indexed(path[0], op, value)
        if value is None:
            return mo.c.data[list(path)].as_string().is_(None) if op == "eq" else false()
        return _AnyValue(path, op, value)

    def _indexed(self, name: str, op: Op, value: Value) -> ColumnElement[bool]:
        if value is None:
            cond = not_(self._exists(name, mp.c.value.is_not(None)))
            return cond if op == "eq" else false()
        # A number's row has its value_num, a string's and a boolean's none; a boolean's text
        # is a string's too, so those two are told apart by the document (_AnyValue).
        if isinstance(value, bool):
            found = self._exists(name, compare_op(mp.c.value, op, "true" if value else "false"))
            return and_(found, _AnyValue((name,), op, value)) if op == "eq" else false()
        if isinstance(value, int | float):
            return self._exists(name, compare_op(mp.c.value_num, op, float(value))) if op not in ("co", "sw") \
                else false()
        text, _ = property_value(value)
        assert text is not None
        typed = and_(mp.c.value_num.is_(None), compare_op(mp.c.value, op, text))
        if value in ("true", "false"):
            return and_(self._exists(name, typed), _AnyValue((name,), op, value))
        # A stored value past the cut starts with its INDEXED_LENGTH characters: any string
        # shorter than that compares with the cut value as with the whole one, but for ``co``.
        reaching_cut = func.length(mp.c.value) >= INDEXED_LENGTH  # MariaDB counts bytes: more, never fewer
        if len(value) < INDEXED_LENGTH:
            found = self._exists(name, typed)
            if op != "co":
                return found
            return or_(found, and_(self._exists(name, reaching_cut), _AnyValue((name,), op, value)))
        candidates = {"eq": mp.c.value == text, "sw": mp.c.value == text, "co": reaching_cut,
                      "gt": mp.c.value >= text, "ge": mp.c.value >= text,
                      "lt": mp.c.value <= text, "le": mp.c.value <= text}[op]
        return and_(self._exists(name, candidates), _AnyValue((name,), op, value))

    def _exists(self, name: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        # ``id IN (...)``, not a correlated EXISTS: SQLite then starts from the property index
        # and reads only the matches, where EXISTS walked every object of the type (0.3 s at 100k).
        return mo.c.id.in_(
            select(mp.c.object_id).where(
                mp.c.object_type == self.object_type,
                mp.c.name == name,
                condition,
            )
        )


def one_page(query: Select[Any], after: ColumnElement[bool] | None, offset: int | None,
             page_size: int | None) -> Select[Any]:
    """``query`` (in its order) limited to a page of a paged answer: past the cookie's row
    (``after``) or ``offset`` rows, and one row more than ``page_size``, which tells
    whether there are more."""
    if after is not None:
        query = query.where(after)
    elif offset:
        query = query.offset(offset)
    return query.limit(page_size + 1) if page_size else query


def compare_op(column: _CE[Any], op: str, value: Value | dt.datetime) -> ColumnElement[bool]:
    """``column OP value`` for a filter's operator; ``co`` and ``sw`` as LIKE with the value escaped."""
    if op == "eq":
        return column == value
    if op == "gt":
        return column > value
    if op == "ge":
        return column >= value
    if op == "lt":
        return column < value
    if op == "le":
        return column <= value
    if op == "co":
        return column.like(f"%{_like_escape(str(value))}%", escape="\\")
    if op == "sw":
        return _StartsWith(column, str(value))
    raise ValueError(f"unknown operator {op}")


class Exact(ColumnElement[str]):
    """``column`` compared as the id and key columns are on every store: exactly, in code
    point order (a column of the database's own collation: MariaDB's ignores case, accents
    and trailing spaces, PostgreSQL's may be a language's order)."""

    type = String()
    inherit_cache = False

    def __init__(self, column: _CE[Any]) -> None:
        self.column = column


@compiles(Exact)
def _exact(element: Exact, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(Exact, "postgresql")
def _exact_postgresql(element: Exact, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.column, **kw)}) COLLATE "C"'


@compiles(Exact, "mysql")
@compiles(Exact, "mariadb")
def _exact_mariadb(element: Exact, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.column, **kw)}) COLLATE {exact_collation(compiler.dialect)}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _StartsWith(ColumnElement[bool]):
    """``column`` starts with ``prefix``: a ``LIKE``, but on MariaDB a range of the column."""

    type = Boolean()
    inherit_cache = False

    def __init__(self, column: _CE[Any], prefix: str) -> None:
        self.column = column
        self.prefix = prefix


@compiles(_StartsWith)
def _starts_with(element: _StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.like(f"{_like_escape(element.prefix)}%", escape="\\"), **kw)


@compiles(_StartsWith, "mysql")
@compiles(_StartsWith, "mariadb")
def _starts_with_mariadb(element: _StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    # MariaDB reads an index for LIKE 'a%' up to "a" and U+FFFF, so a value whose character
    # after the prefix is past U+FFFF (an emoji, "a😀b") was not found. The prefix's range,
    # from the prefix to the prefix with its last character the next one, is read whole;
    # the LEFT holds it to the prefix where the column's collation is not exact.
    column, prefix = element.column, element.prefix
    start = column >= prefix
    end = _after(prefix)
    cond = and_(start, column < end) if end else start
    return compiler.process(and_(cond, func.left(column, len(prefix)) == prefix), **kw)


def _after(prefix: str) -> str:
    """The least string past every string that starts with ``prefix``, in code point order
    ("" when there is none: the prefix is all U+10FFFF)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(0xE000 if last == 0xD800 else last)
        prefix = prefix[:-1]
    return ""



class _AnyValue(ColumnElement[bool]):
    """Whether any value of the managed object's document at ``path`` (the value, or
    the elements of an array, but never an object nor a nested array) compares with
    ``value`` by ``op``, as a correlated ``EXISTS`` over the values, typed as JSON
    types them. Each dialect lists the values its own way (``_any_*``)."""

    type = Boolean()
    inherit_cache = False

    def __init__(self, path: Path, op: Op, value: str | int | float | bool) -> None:
        self.path = path
        self.filter_op = op
        self.value = value


def _typed(op: Op, value: str | int | float | bool, text: str, number: str, boolean: str) -> _CE[bool] | None:
    """The condition on one listed value, given its SQL as a string (or NULL), as a number (or
    NULL), and the condition that it is the boolean ``true``/``false`` asked; None: never."""
    if isinstance(value, bool):
        return literal_column(boolean.format("true" if value else "false"), Boolean()) if op == "eq" else None
    if isinstance(value, int | float):
        return compare_op(literal_column(number), op, float(value)) if op not in ("co", "sw") else None
    return compare_op(literal_column(text), op, value)


def _render(element: _AnyValue, compiler: SQLCompiler, kw: Any, template: str, cond: _CE[bool] | None) -> str:
    if cond is None:
        return compiler.process(false(), **kw)
    found = mo.c.data[list(element.path)]
    path = literal(list(element.path), JSON.JSONPathType())
    return template.format(doc=compiler.process(found, **kw), data=compiler.process(mo.c.data, **kw),
                           path=compiler.process(path, **kw), cond=compiler.process(cond, **kw))


@compiles(_AnyValue, "sqlite")
def _any_sqlite(element: _AnyValue, compiler: SQLCompiler, **kw: Any) -> str:
    # json_each lists an array's elements, a scalar itself, and an object's members:
    # those, keyed by name rather than by position, are left out. It reads the document
    # itself at the path: JSON_EXTRACT would have turned true and false into 1 and 0.
    # A number is a double, as in the index and on the other stores: SQLite would compare
    # an integer past a double's 53 bits exactly.
    cond = _typed(element.filter_op, element.value, "CASE WHEN e.type = 'text' THEN e.value END",
                  "CASE WHEN e.type IN ('integer', 'real') THEN CAST(e.value AS REAL) END", "e.type = '{}'")
    return _render(element, compiler, kw, "EXISTS (SELECT 1 FROM json_each({data}, {path}) AS e "
                   "WHERE (e.key IS NULL OR typeof(e.key) = 'integer') AND {cond})", cond)


@compiles(_AnyValue, "postgresql")
def _any_postgresql(element: _AnyValue, compiler: SQLCompiler, **kw: Any) -> str:
    # As the id and key columns: in code point order, whatever the database's collation.
    cond = _typed(element.filter_op, element.value,
                  "CASE WHEN json_typeof(e.v) = 'string' THEN (e.v #>> '{}') COLLATE \"C\" END",
                  "CASE WHEN json_typeof(e.v) = 'number' THEN (e.v #>> '{}')::float8 END",
                  "(json_typeof(e.v) = 'boolean' AND e.v::text = '{}')")
    return _render(element, compiler, kw, "EXISTS (SELECT 1 FROM json_array_elements(CASE WHEN json_typeof({doc}) "
                   "= 'array' THEN {doc} ELSE json_build_array({doc}) END) AS e(v) WHERE {cond})", cond)


@compiles(_AnyValue, "mysql")
@compiles(_AnyValue, "mariadb")
def _any_mariadb(element: _AnyValue, compiler: SQLCompiler, **kw: Any) -> str:
    # As the id and key columns: every character counted ("a" is not "a "), case included.
    cond = _typed(element.filter_op, element.value, "CASE WHEN JSON_TYPE(e.v) = 'STRING' THEN JSON_UNQUOTE(e.v) "
                  f"COLLATE {exact_collation(compiler.dialect)} END",
                  "CASE WHEN JSON_TYPE(e.v) IN ('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL') "
                  "THEN CAST(JSON_UNQUOTE(e.v) AS DOUBLE) END",
                  "(JSON_TYPE(e.v) = 'BOOLEAN' AND JSON_UNQUOTE(e.v) = '{}')")
    return _render(element, compiler, kw, "EXISTS (SELECT 1 FROM JSON_TABLE(IF(JSON_TYPE({doc}) = 'ARRAY', {doc}, "
                   "JSON_ARRAY({doc})), '$[*]' COLUMNS (v JSON PATH '$')) AS e WHERE {cond})", cond)


def _unfit(text: str) -> int:
    """Where ``text`` first holds what no stored value does (a NUL character, half of a
    character), or -1."""
    at = text.find("\x00")
    if not text.isascii():
        for i, char in enumerate(text[:at] if at >= 0 else text):
            if "\ud800" <= char <= "\udfff":
                return i
    return at
