"""Write a syntax tree back as canonical ``_queryFilter`` text.

The text always parses back to the same tree (``parse(to_text(node)) == node`` for
every tree :func:`~idsync.query.parser.parse` produces): pointers get their
leading ``/`` and ``~0``/``~1`` escapes, strings are JSON-quoted, ``and`` inside
``or`` needs no parentheses, ``or`` inside ``and`` gets them, and the operand of
``!`` is always parenthesized.
"""

from __future__ import annotations

import json
import math

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present, Value

__all__ = ["display_pointer", "format_pointer", "quote", "to_text"]

# Characters that end a word in the parser: a pointer segment holding one cannot be written.
_UNWRITABLE = frozenset(" \t\r\n\f\v()")


def to_text(node: Node) -> str:
    """Canonical filter text for ``node``: ``/mail eq "a\\"b" and /active eq true``."""
    match node:
        case Literal_(value=value):
            return "true" if value else "false"
        case Present(path=path):
            return f"{format_pointer(path)} pr"
        case Compare(path=path, op=op, value=value):
            return f"{format_pointer(path)} {op} {quote(value)}"
        case Not(item=item):
            return f"!({to_text(item)})"
        case And(items=items):
            return " and ".join(_operand(item, Or) for item in _nonempty(items, "and"))
        case Or(items=items):
            return " or ".join(_operand(item, Or) for item in _nonempty(items, "or"))
    raise TypeError(f"not a _queryFilter node: {node!r}")


def quote(value: Value) -> str:
    """A value as filter text: ``"O'Brien"``, ``42``, ``1.5``, ``true``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"{value!r} cannot be written in a _queryFilter")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"not a _queryFilter value: {value!r}")


def format_pointer(path: Path) -> str:
    """A path as a JSON pointer with a leading ``/``: ``("a/b", "c")`` -> ``/a~1b/c``."""
    if not path:
        raise QueryError("an empty path cannot be written as a JSON pointer")
    for segment in path:
        if not segment or _UNWRITABLE.intersection(segment):
            raise QueryError(f"the path segment {segment!r} cannot be written in a _queryFilter")
    return display_pointer(path)


def display_pointer(path: Path) -> str:
    """A path as a JSON pointer for messages; unlike :func:`format_pointer` it never fails."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in path) or "/"


def _operand(item: Node, looser: type[Or]) -> str:
    # Only "or" binds looser than "and"; inside an "or", an "and" reads right without parentheses.
    text = to_text(item)
    return f"({text})" if isinstance(item, looser) else text


def _nonempty(items: tuple[Node, ...], word: str) -> tuple[Node, ...]:
    if not items:
        raise QueryError(f"an empty '{word}' cannot be written in a _queryFilter")
    return items
