"""A project's own named queries: the ``WHERE`` clause of PingIDM repository SQL as a filter.

A ``repo.*.json`` query such as ``SELECT * FROM ${unquoted:_resource} WHERE
mail = ${mail} AND accountStatus <> 'inactive'`` becomes the ``_queryFilter``
tree ``/mail eq ${mail} and !(/accountStatus eq "inactive")``, whose
placeholders ``NamedQuery.bind`` fills with values. Only the ``WHERE`` clause is
read (up to ``ORDER BY``, ``GROUP BY``, ``SKIP``, ``LIMIT``, ``OFFSET``): what
is selected, paging and order are the caller's.

Understood: ``AND``, ``OR``, ``NOT``, parentheses; ``= <> != < <= > >=``;
``[NOT] LIKE``; ``IS [NOT] NULL``; on one side a field (a column, ``obj.col``,
``json_extract_path_text(fullobject, 'a', 'b')``, ``json_extract(fullobject,
'$.a.b')`` / ``json_value``, or a field parameter ``${unquoted:field}``), on the
other a parameter ``${name}`` or a literal. A condition on the collection
itself (``objtype.objecttype = ${_resource}``) always holds. Anything else
(joins on the properties table, ``IN``, sub-selects, other functions) is
refused with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Op, Or, Path, Present, Value
from idsync.query.named import NamedQuery, field_param, like_node, like_param, value_param

__all__ = ["parse_sql_query"]

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<cast>::\s*[A-Za-z_]\w*)
  | (?P<string>'(?:[^']|'')*')
  | (?P<param>\$\{[^{}]*\})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<word>[A-Za-z_@][\w@$]*)
  | (?P<op><=|>=|<>|!=|=|<|>|\(|\)|,|\.|\*|;)
""", re.VERBOSE)
_ENDS = {"ORDER", "GROUP", "SKIP", "LIMIT", "OFFSET", "FETCH"}
# Parameters the repository itself fills: the collection, the schema, tables, paging.
_COLLECTION = re.compile(r"^_(resource|dbSchema|mainTable|propTable|table|pageSize|pagedResultsOffset)$")
_IDS = {"objectid": "_id", "_openidm_id": "_id", "rev": "_rev", "@version": "_rev", "@rid": "_id"}
_COMPARE: dict[str, Op] = {"=": "eq", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_PATH_FUNCTIONS = {"json_extract_path_text", "json_extract_path"}
_DOLLAR_FUNCTIONS = {"json_extract", "json_value", "json_unquote"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class _Field:
    path: Path
    param: str | None = None  # a field given by a parameter


@dataclass(frozen=True)
class _Val:
    value: Value
    param: str | None = None  # a value given by a parameter
    collection: bool = False


def parse_sql_query(name: str, text: str, origin: str) -> NamedQuery:
    """The named query ``name`` defined by the SQL ``text``; ``QueryError`` says why not."""
    tokens = _tokens(text)
    where = _where(tokens)
    if where is None:
        return NamedQuery(name, Literal_(True), origin=origin)
    parser = _Parser(where)
    node = parser.expr()
    if parser.i < len(where):
        raise QueryError(f"cannot read {where[parser.i].text!r} in the WHERE clause", position=where[parser.i].pos)
    return NamedQuery(name, _simplified(node), frozenset(parser.params), origin=origin)


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None:
            raise QueryError(f"cannot read {text[pos]!r}", position=pos)
        kind = found.lastgroup or ""
        if kind not in ("ws", "cast"):  # PostgreSQL's casts (fullobject::text) change nothing here
            out.append(_Tok(kind, found.group(), pos))
        pos = found.end()
    return out


def _where(tokens: list[_Tok]) -> list[_Tok] | None:
    """The tokens of the top-level WHERE clause, or ``None`` without one."""
    depth, start = 0, None
    for i, tok in enumerate(tokens):
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        elif tok.kind == "word" and tok.text.upper() == "SELECT" and start is not None:
            raise QueryError("a sub-select cannot be translated", position=tok.pos)
        elif depth == 0 and tok.kind == "word":
            word = tok.text.upper()
            if word == "WHERE" and start is None:
                start = i + 1
            elif word in _ENDS and start is not None:
                return tokens[start:i]
            elif word == "UNION":
                raise QueryError("UNION cannot be translated", position=tok.pos)
    if start is None:
        return None
    return [t for t in tokens[start:] if t.text != ";"]


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0
        self.params: set[str] = set()

    def peek(self, ahead: int = 0) -> _Tok | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def word(self, *words: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.kind == "word" and tok.text.upper() in words

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise QueryError("the WHERE clause ends too early")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise QueryError(f"expected {text!r}, found {tok.text!r}", position=tok.pos)

    def expr(self) -> Node:
        items = [self._and()]
        while self.word("OR"):
            self.i += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Node:
        items = [self._not()]
        while self.word("AND"):
            self.i += 1
            items.append(self._not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _not(self) -> Node:
        if self.word("NOT"):
            self.i += 1
            return Not(self._not())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.i += 1
            node = self.expr()
            self.expect(")")
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        start = self.peek()
        left = self._operand()
        if self.word("IS"):
            self.i += 1
            negated = self.word("NOT")
            if negated:
                self.i += 1
            if not self.word("NULL"):
                raise QueryError("expected NULL after IS", position=start.pos if start else None)
            self.i += 1
            if _collection(left):
                return Literal_(True)
            present = Present(self._field(left, start))
            return present if negated else Not(present)
        negated = self.word("NOT")
        if negated:
            self.i += 1
        if self.word("LIKE"):
            self.i += 1
            right = self._operand()
            return Not(self._like(left, right, start)) if negated else self._like(left, right, start)
        if negated or self.word("IN", "BETWEEN", "EXISTS"):
            tok = self.peek()
            raise QueryError(f"{tok.text if tok else 'NOT'} cannot be translated (only = <> < <= > >= LIKE, "
                             "IS NULL, AND, OR, NOT)", position=tok.pos if tok else None)
        op_tok = self.take()
        if op_tok.text not in (*_COMPARE, "<>", "!="):
            raise QueryError(f"expected a comparison, found {op_tok.text!r}", position=op_tok.pos)
        right = self._operand()
        if isinstance(left, _Val) and isinstance(right, _Field):  # ${uid} = userName
            left, right = right, left
            op_text = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op_tok.text, op_tok.text)
        else:
            op_text = op_tok.text
        if _collection(left) or _collection(right):
            return Literal_(True)
        path = self._field(left, start)  # a parameter there names the field: ${unquoted:field} = ${value}
        if not isinstance(right, _Val):
            raise QueryError("a field can only be compared with a parameter or a literal, not another field",
                             position=op_tok.pos)
        value = value_param(right.param) if right.param is not None else right.value
        if right.param is not None:
            self.params.add(right.param)
        if op_text in ("<>", "!="):
            return Not(Compare(path, "eq", value))
        return Compare(path, _COMPARE[op_text], value)

    def _like(self, left: _Field | _Val, right: _Field | _Val, start: _Tok | None) -> Node:
        if _collection(left) or _collection(right):
            return Literal_(True)
        path = self._field(left, start)
        if not isinstance(right, _Val) or (right.param is None and not isinstance(right.value, str)):
            raise QueryError("LIKE needs a parameter or a string pattern", position=start.pos if start else None)
        if right.param is not None:
            self.params.add(right.param)
            return Compare(path, "eq", like_param(right.param))
        try:
            return like_node(path, str(right.value))
        except QueryError as exc:
            raise QueryError(str(exc), position=start.pos if start else None) from None

    def _field(self, operand: _Field | _Val, start: _Tok | None) -> Path:
        """The path a comparison's field side names; a parameter there is a field parameter."""
        param = operand.param
        if isinstance(operand, _Val) and param is None:
            raise QueryError("a comparison needs a field on one side", position=start.pos if start else None)
        if param is not None:
            self.params.add(param)
            return (field_param(param),)
        assert isinstance(operand, _Field)
        return operand.path

    def _operand(self) -> _Field | _Val:
        tok = self.take()
        if tok.kind == "param":
            name = tok.text[2:-1].strip()
            kind, _, bare = name.partition(":")
            param = bare.strip() if bare else kind.strip()
            if not param:
                raise QueryError("an empty parameter ${}", position=tok.pos)
            if _COLLECTION.match(param):
                return _Val(None, param, collection=True)
            return _Val(None, param)
        if tok.kind == "string":
            return _Val(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "number":
            return _Val(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "word":
            upper = tok.text.upper()
            if upper in ("TRUE", "FALSE"):
                return _Val(upper == "TRUE")
            if upper == "NULL":
                raise QueryError("compare with NULL using IS NULL", position=tok.pos)
            nxt = self.peek()
            if nxt is not None and nxt.text == "(":
                return self._function(tok)
            parts = [tok.text]
            while self.peek() is not None and self.peek().text == ".":  # type: ignore[union-attr]
                self.i += 1
                part = self.take()
                if part.kind not in ("word", "param"):
                    raise QueryError(f"cannot read {part.text!r}", position=part.pos)
                parts.append(part.text)
            return self._column(parts, tok)
        raise QueryError(f"expected a field or a value, found {tok.text!r}", position=tok.pos)

    def _column(self, parts: list[str], tok: _Tok) -> _Field | _Val:
        if any(p.startswith("${") for p in parts):
            if any(_COLLECTION.match(p[2:-1].partition(":")[2] or p[2:-1]) for p in parts if p.startswith("${")):
                return _Val(None, "_table", collection=True)
            raise QueryError("a column named by a parameter cannot be translated", position=tok.pos)
        # obj.userName: the table alias goes; OrientDB's name.givenName is a nested property.
        if len(parts) > 1 and parts[0].lower() in ("obj", "objtype", "o", "t"):
            parts = parts[1:]
        if parts[-1].lower() in ("propkey", "propvalue", "objecttypes_id", "fullobject"):
            raise QueryError(f"{'.'.join(parts)}: a condition on the repository's own columns (the properties "
                             "table, fullobject) cannot be translated; compare the property itself", position=tok.pos)
        if parts[0].lower() == "objecttype":
            return _Val(None, "_resource", collection=True)
        if len(parts) == 1 and parts[0].lower() in _IDS:
            return _Field((_IDS[parts[0].lower()],))
        return _Field(tuple(parts))

    def _function(self, name_tok: _Tok) -> _Field:
        name = name_tok.text.lower()
        self.expect("(")
        args: list[_Tok] = []
        depth = 1
        while depth:
            tok = self.take()
            if tok.text == "(":
                if name != "json_unquote":
                    raise QueryError(f"{name_tok.text}(...) cannot be translated", position=name_tok.pos)
                depth += 1
            elif tok.text == ")":
                depth -= 1
                if depth == 0:
                    break
            args.append(tok)
        values = [a for a in args if a.text not in (",", "(", ")")]
        if name in _PATH_FUNCTIONS and values and values[0].text.lower() == "fullobject":
            rest = values[1:]
            if len(rest) == 1 and rest[0].kind == "param":
                return _Field((), rest[0].text[2:-1].partition(":")[2] or rest[0].text[2:-1])
            if rest and all(a.kind == "string" for a in rest):
                return _Field(tuple(a.text[1:-1] for a in rest))
        if name in _DOLLAR_FUNCTIONS:
            strings = [a for a in values if a.kind == "string"]
            if len(strings) == 1 and strings[0].text[1:-1].startswith("$."):
                return _Field(tuple(strings[0].text[3:-1].split(".")))
        raise QueryError(f"{name_tok.text}(...) cannot be translated (only json_extract_path_text(fullobject, "
                         "'name') and json_extract(fullobject, '$.name'))", position=name_tok.pos)


def _collection(operand: _Field | _Val) -> bool:
    return isinstance(operand, _Val) and operand.collection


def _simplified(node: Node) -> Node:
    """``node`` without the conditions that always hold (those on the collection)."""
    match node:
        case Not(item=item):
            inner = _simplified(item)
            return Literal_(not inner.value) if isinstance(inner, Literal_) else Not(inner)
        case And(items=items):
            kept = [n for n in (_simplified(i) for i in items) if n != Literal_(True)]
            if Literal_(False) in kept:
                return Literal_(False)
            return Literal_(True) if not kept else kept[0] if len(kept) == 1 else And(tuple(kept))
        case Or(items=items):
            kept = [_simplified(i) for i in items]
            if Literal_(True) in kept:
                return Literal_(True)
            return kept[0] if len(kept) == 1 else Or(tuple(kept))
    return node
