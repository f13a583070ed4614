"""Just enough SOQL for the Salesforce stand-in: ``SELECT f, ... FROM T [WHERE c]
[ORDER BY f [ASC|DESC]] [LIMIT n]`` with ``= != < <= > >= LIKE IN``, ``AND OR NOT``,
parentheses, ``null``/``true``/``false``, numbers, dateTime literals
(``2026-12-05T10:00:00Z``, ``...T10:00:00.123+00:00``) and quoted strings with
SOQL's backslash escapes. Text compares without regard to case, as Salesforce does."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Select", "SoqlError", "parse_select"]

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:\\.|[^'\\])*')"
                    r"|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))"
                    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|<=|>=|[=<>(),])"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))")
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}
Row = dict[str, Any]


class SoqlError(Exception):
    pass


@dataclass
class _Str:
    raw: str  # between the quotes, escapes not yet read

    def text(self) -> str:
        return _unescape(self.raw, like=False)

    def like(self) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(self.raw):
            ch = self.raw[i]
            if ch == "\\" and i + 1 < len(self.raw) and self.raw[i + 1] in "%_":
                out += re.escape(self.raw[i + 1])
                i += 2
                continue
            if ch == "\\":
                end = i + 6 if self.raw[i + 1] == "u" else i + 2
                out += re.escape(_unescape(self.raw[i:end], like=False))
                i = end
                continue
            out += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
            i += 1
        return re.compile(out, re.IGNORECASE | re.DOTALL)


def _unescape(raw: str, like: bool) -> str:
    out, i = "", 0
    while i < len(raw):
        if raw[i] != "\\":
            out += raw[i]
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt == "u":
            out += chr(int(raw[i + 2:i + 6], 16))
            i += 6
        elif nxt in _SIMPLE:
            out += _SIMPLE[nxt]
            i += 2
        elif nxt in "%_":
            out += "\\" + nxt if like else nxt
            i += 2
        else:
            raise SoqlError(f"invalid escape sequence \\{nxt}")
    return out


@dataclass
class Select:
    fields: list[str]
    sobject: str
    matches: Callable[[Row], bool] = lambda row: True
    limit: int | None = None
    referenced: list[str] = field(default_factory=list)
    order_by: str | None = None
    descending: bool = False

    def rows(self, rows: list[Row]) -> list[Row]:
        """The matching rows, ordered and limited as the query says."""
        found = [r for r in rows if self.matches(r)]
        if self.order_by is not None:
            key = self.order_by
            found.sort(key=lambda r: (r.get(key) is None, _sortable(r.get(key))), reverse=self.descending)
        return found[:self.limit]


def parse_select(soql: str) -> Select:
    tokens = _tokens(soql)
    parser = _Parser(tokens)
    return parser.select()


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SoqlError(f"unexpected token at position {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            out.append(("val", _Str(value[1:-1])))
        elif kind == "dt":
            out.append(("val", _datetime(value)))
        elif kind == "num":
            out.append(("val", float(value) if "." in value else int(value)))
        elif kind == "word" and value.lower() in ("null", "true", "false"):
            out.append(("val", {"null": None, "true": True, "false": False}[value.lower()]))
        elif kind == "word" and value.upper() in ("SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIKE", "IN",
                                                   "LIMIT", "ORDER", "BY", "ASC", "DESC"):
            out.append(("kw", value.upper()))
        else:
            out.append((kind, value))
    return out


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.referenced: list[str] = []

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", None)

    def take(self, kind: str, value: Any = None) -> Any:
        k, v = self.peek()
        if k != kind or (value is not None and v != value):
            raise SoqlError(f"unexpected token: {v!r}")
        self.i += 1
        return v

    def select(self) -> Select:
        self.take("kw", "SELECT")
        fields = [self.take("word")]
        while self.peek() == ("op", ","):
            self.i += 1
            fields.append(self.take("word"))
        self.take("kw", "FROM")
        sobject = self.take("word")
        result = Select(fields, sobject)
        if self.peek() == ("kw", "WHERE"):
            self.i += 1
            result.matches = self.disjunction()
        if self.peek() == ("kw", "ORDER"):
            self.i += 2
            result.order_by = self.take("word")
            if self.peek()[0] == "kw" and self.peek()[1] in ("ASC", "DESC"):
                result.descending = self.peek()[1] == "DESC"
                self.i += 1
        if self.peek() == ("kw", "LIMIT"):
            self.i += 1
            result.limit = int(self.take("val"))
        if self.peek()[0] != "end":
            raise SoqlError(f"unexpected token: {self.peek()[1]!r}")
        result.referenced = self.referenced
        return result

    def disjunction(self) -> Callable[[Row], bool]:
        items = [self.conjunction()]
        while self.peek() == ("kw", "OR"):
            self.i += 1
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else (lambda row: any(f(row) for f in items))

    def conjunction(self) -> Callable[[Row], bool]:
        items = [self.unary()]
        while self.peek() == ("kw", "AND"):
            self.i += 1
            items.append(self.unary())
        return items[0] if len(items) == 1 else (lambda row: all(f(row) for f in items))

    def unary(self) -> Callable[[Row], bool]:
        if self.peek() == ("kw", "NOT"):
            self.i += 1
            inner = self.unary()
            return lambda row: not inner(row)
        if self.peek() == ("op", "("):
            self.i += 1
            inner = self.disjunction()
            self.take("op", ")")
            return inner
        return self.comparison()

    def comparison(self) -> Callable[[Row], bool]:
        name = self.take("word")
        self.referenced.append(name)
        kind, op = self.peek()
        self.i += 1
        if (kind, op) == ("kw", "LIKE"):
            value = self.take("val")
            if not isinstance(value, _Str):
                raise SoqlError("LIKE needs a string")
            pattern = value.like()
            return lambda row: isinstance(row.get(name), str) and bool(pattern.fullmatch(row[name]))
        if (kind, op) == ("kw", "IN"):
            self.take("op", "(")
            values = [self._value(self.take("val"))]
            while self.peek() == ("op", ","):
                self.i += 1
                values.append(self._value(self.take("val")))
            self.take("op", ")")
            wanted = {_norm(v) for v in values}
            return lambda row: _norm(row.get(name)) in wanted
        if kind != "op" or op not in ("=", "!=", "<", "<=", ">", ">="):
            raise SoqlError(f"unexpected operator {op!r}")
        value = self._value(self.take("val"))
        return lambda row: _compare(row.get(name), op, value)

    @staticmethod
    def _value(value: Any) -> Any:
        return value.text() if isinstance(value, _Str) else value


def _datetime(text: str) -> dt.datetime:
    """A dateTime as SOQL writes it or a record holds it (``2026-12-05T10:00:00.000+0000``)."""
    text = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return dt.datetime.fromisoformat(text)


def _sortable(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-][\d:]+)", value):
        return _datetime(value)
    return _norm(value)


def _compare(found: Any, op: str, wanted: Any) -> bool:
    if wanted is None or found is None:
        same = found is None and wanted is None
        return same if op == "=" else (not same) if op == "!=" else False
    if isinstance(wanted, dt.datetime):
        if not isinstance(found, str):
            return False
        found = _datetime(found)
    a, b = _norm(found), _norm(wanted)
    try:
        return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    except TypeError:
        return False
