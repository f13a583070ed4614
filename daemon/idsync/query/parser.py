"""Parse ``_queryFilter`` text (ForgeRock CREST / PingIDM syntax) into the syntax tree.

Grammar, lowest precedence first::

    Expr    := Or
    Or      := And ('or' And)*
    And     := Not ('and' Not)*
    Not     := '!' Primary | Primary
    Primary := '(' Expr ')' | Pointer Op Value | Pointer 'pr' | 'true' | 'false'

Keywords and operators are case-insensitive. A pointer is a JSON pointer whose
leading ``/`` is optional (``~1`` is ``/``, ``~0`` is ``~``). A value is a JSON
value, and strings may also be single-quoted. ``+`` is an ordinary character:
URL decoding belongs to the HTTP layer, not here.

The text is first cut into tokens (parentheses, ``!``, quoted strings, and
"words": runs of anything else up to whitespace or a parenthesis), then a
recursive descent builds the tree. Every error names the 0-based position of
the offending character.

A filter is bounded: parentheses nest at most ``MAX_DEPTH`` deep (the descent
recurses once per level) and it has at most ``MAX_TERMS`` terms (comparisons,
``pr``, ``true``/``false``): a 3,000-term OR took 14 s to plan and run on
PostgreSQL. Past either, the error names the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Op, Or, Path, Present, Value

__all__ = ["MAX_DEPTH", "MAX_TERMS", "parse", "parse_pointer"]

MAX_DEPTH = 32
MAX_TERMS = 256

_OPS: frozenset[str] = frozenset(get_args(Op))
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<frac>\.[0-9]+)?(?P<exp>[eE][+-]?[0-9]+)?")
_SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_WORD_END = frozenset(" \t\r\n\f\v()")

_Kind = Literal["(", ")", "!", "string", "word", "end"]


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str  # the source text of the token (for words: the word; for strings: the decoded value)
    pos: int


def parse(text: str) -> Node:
    """The syntax tree of ``text``; raises :class:`QueryError` naming the position of a mistake."""
    if not isinstance(text, str):
        raise QueryError(f"a _queryFilter must be a string, not {type(text).__name__}")
    tokens = _tokenize(text)
    if tokens[0].kind == "end":
        raise QueryError("empty _queryFilter", text, 0)
    parser = _Parser(text, tokens)
    node = parser.expr()
    last = parser.peek()
    if last.kind != "end":
        raise QueryError(f"unexpected {_show(last)}", text, last.pos)
    return node


def parse_pointer(pointer: str, text: str = "", pos: int = 0) -> Path:
    """The segments of a JSON pointer (leading ``/`` optional): ``/a~1b/c`` -> ``("a/b", "c")``.

    ``text`` and ``pos`` place the pointer in a larger filter for error positions.
    """
    body = pointer[1:] if pointer.startswith("/") else pointer
    offset = pos + (len(pointer) - len(body))
    if not body:
        raise QueryError("empty JSON pointer", text or pointer, pos)
    segments: list[str] = []
    for raw in body.split("/"):
        if not raw:
            raise QueryError(f"empty segment in JSON pointer {pointer}", text or pointer, offset)
        bad = re.search(r"~(?![01])", raw)
        if bad is not None:
            raise QueryError(
                "'~' must be followed by 0 or 1 in a JSON pointer",
                text or pointer,
                offset + bad.start(),
            )
        segments.append(raw.replace("~1", "/").replace("~0", "~"))
        offset += len(raw) + 1
    return tuple(segments)


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self._text = text
        self._tokens = tokens
        self._i = 0
        self._depth = 0
        self._terms = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self.peek()
        self._i += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.text.lower() == word

    def expr(self) -> Node:
        items = [self._and()]
        while self._keyword("or"):
            self._next()
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(_flatten(items, Or))

    def _and(self) -> Node:
        items = [self._not()]
        while self._keyword("and"):
            self._next()
            items.append(self._not())
        return items[0] if len(items) == 1 else And(_flatten(items, And))

    def _not(self) -> Node:
        if self.peek().kind == "!":
            self._next()
            return Not(self._primary())
        return self._primary()

    def _primary(self) -> Node:
        token = self._next()
        if token.kind == "(":
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise QueryError(f"parentheses nest deeper than {MAX_DEPTH} levels", self._text, token.pos)
            inner = self.expr()
            self._depth -= 1
            close = self._next()
            if close.kind != ")":
                raise QueryError(
                    f"expected ')' to close the '(' at {token.pos}, found {_show(close)}",
                    self._text,
                    close.pos,
                )
            return inner
        if token.kind != "word":
            raise QueryError(
                f"expected a JSON pointer, 'true' or 'false', found {_show(token)}",
                self._text,
                token.pos,
            )
        self._terms += 1
        if self._terms > MAX_TERMS:
            raise QueryError(f"more than {MAX_TERMS} terms in one filter", self._text, token.pos)
        after = self.peek()
        is_operator = after.kind == "word" and (
            after.text.lower() in _OPS or after.text.lower() == "pr"
        )
        if token.text.lower() in ("true", "false") and not is_operator:
            return Literal_(token.text.lower() == "true")
        path = parse_pointer(token.text, self._text, token.pos)
        if not is_operator:
            where = after.pos if after.kind != "end" else token.pos + len(token.text)
            found = "" if after.kind == "end" else f", found {_show(after)}"
            raise QueryError(f"expected an operator after {token.text}{found}", self._text, where)
        op = self._next().text.lower()
        if op == "pr":
            return Present(path)
        return Compare(path, _as_op(op), self._value(token.text, op))

    def _value(self, pointer: str, op: str) -> Value:
        token = self._next()
        if token.kind == "string":
            return token.text
        if token.kind != "word":
            raise QueryError(
                f"expected a value after {pointer} {op}, found {_show(token)}",
                self._text,
                token.pos,
            )
        word = token.text
        lowered = word.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        number = _NUMBER.fullmatch(word)
        if number is None:
            raise QueryError(
                f"unexpected '{word}': a value is a quoted string, a number, true, false or null",
                self._text,
                token.pos,
            )
        if number.group("frac") or number.group("exp"):
            value = float(word)
            if value in (float("inf"), float("-inf")):
                raise QueryError(f"number out of range '{word}'", self._text, token.pos)
            return value
        return int(word)


def _as_op(word: str) -> Op:
    # The caller has checked that ``word`` is one of _OPS.
    return cast(Op, word)


def _flatten(items: list[Node], kind: type[And] | type[Or]) -> tuple[Node, ...]:
    # "(a and b) and c" is the same filter as "a and b and c": one shape for equal meanings.
    out: list[Node] = []
    for item in items:
        if isinstance(item, kind):
            out.extend(item.items)
        else:
            out.append(item)
    return tuple(out)


def _show(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the filter"
    if token.kind == "string":
        return "a string"
    return f"'{token.text}'"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()!":
            tokens.append(_Token(cast(_Kind, ch), ch, i))
            i += 1
        elif ch in "\"'":
            value, i = _string(text, i)
            tokens.append(value)
        else:
            start = i
            while i < n and text[i] not in _WORD_END and not text[i].isspace():
                i += 1
            tokens.append(_Token("word", text[start:i], start))
    tokens.append(_Token("end", "", n))
    return tokens


def _string(text: str, start: int) -> tuple[_Token, int]:
    quote_char = text[start]
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == quote_char:
            return _Token("string", "".join(out), start), i + 1
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            break
        esc = text[i + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc == "u":
            code = _hex4(text, i)
            i += 6
            # A UTF-16 surrogate pair written as two \u escapes is one character.
            if 0xD800 <= code <= 0xDBFF and text.startswith("\\u", i):
                low = _hex4(text, i)
                if 0xDC00 <= low <= 0xDFFF:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
            out.append(chr(code))
        else:
            raise QueryError(f"unknown escape '\\{esc}' in a string", text, i)
    raise QueryError("unterminated string", text, start)


def _hex4(text: str, i: int) -> int:
    digits = text[i + 2 : i + 6]
    if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise QueryError("'\\u' must be followed by 4 hexadecimal digits", text, i)
    return int(digits, 16)
