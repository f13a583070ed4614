"""Translate a ``_queryFilter`` into a SCIM filter (RFC 7644 section 3.4.2.2).

The two languages share their operators, so the translation is mostly spelling:
``/userName eq "bjensen"`` -> ``userName eq "bjensen"``, ``!x`` -> ``not (x)``.
Strings are JSON-quoted, booleans and ``null`` written bare (``null`` is a
``compValue`` in the RFC's grammar). ``and`` binds tighter than ``or`` in both
languages; an ``or`` inside an ``and`` is parenthesized.

SCIM has no literal for "every resource", so ``true`` is written ``id pr``
(every SCIM resource has an ``id``, RFC 7643 section 3.1) and ``false``
``not (id pr)``.

The default attribute path joins the pointer's segments with ``.``
(``/name/givenName`` -> ``name.givenName``); a segment that is a schema URN
(``urn:...:User``) is joined to the next with ``:``, as SCIM writes extension
attributes. Attribute paths are checked against the RFC's ``attrPath`` so that a
hostile pointer cannot inject filter syntax.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present, Value
from idsync.query.text import display_pointer

__all__ = ["to_scim"]

_ALL = "id pr"
# attrPath = [URI ":"] ATTRNAME *1subAttr; ATTRNAME = ALPHA *(ALPHA / DIGIT / "-" / "_").
# "$ref" is an attribute name SCIM itself uses, so a leading "$" is allowed too.
_ATTR_PATH = re.compile(
    r"(?:urn:[A-Za-z0-9._:-]+:)?\$?[A-Za-z][A-Za-z0-9_-]*(?:\.\$?[A-Za-z][A-Za-z0-9_-]*)?"
)


def to_scim(node: Node, attribute: Callable[[Path], str] | None = None) -> str:
    """The SCIM filter for ``node``; ``attribute`` names the SCIM attribute path of a pointer."""
    name_of = attribute if attribute is not None else _dotted
    return _filter(node, name_of)


def _filter(node: Node, name_of: Callable[[Path], str]) -> str:
    match node:
        case Literal_(value=value):
            return _ALL if value else f"not ({_ALL})"
        case Present(path=path):
            return f"{_attribute(path, name_of)} pr"
        case Compare(path=path, op=op, value=value):
            return f"{_attribute(path, name_of)} {op} {_value(value)}"
        case Not(item=item):
            return f"not ({_filter(item, name_of)})"
        case And(items=items):
            if not items:
                return _ALL
            return " and ".join(
                f"({_filter(i, name_of)})" if isinstance(i, Or) else _filter(i, name_of)
                for i in items
            )
        case Or(items=items):
            if not items:
                return f"not ({_ALL})"
            return " or ".join(
                f"({_filter(i, name_of)})" if isinstance(i, Or) else _filter(i, name_of)
                for i in items
            )
    raise TypeError(f"not a _queryFilter node: {node!r}")


def _value(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"{value!r} has no SCIM equivalent")
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _attribute(path: Path, name_of: Callable[[Path], str]) -> str:
    name = name_of(path)
    if not _ATTR_PATH.fullmatch(name):
        raise QueryError(f"{name!r} is not a SCIM attribute path (for {display_pointer(path)})")
    return name


def _dotted(path: Path) -> str:
    out = ""
    for i, segment in enumerate(path):
        if i:
            out += ":" if path[i - 1].startswith("urn:") else "."
        out += segment
    return out
