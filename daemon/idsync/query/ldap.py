"""Translate a ``_queryFilter`` into an LDAP search filter (RFC 4515).

=====================  ==============================
``_queryFilter``       LDAP
=====================  ==============================
``/a eq "v"``          ``(a=v)``
``/a eq null``         ``(!(a=*))``
``/a co "v"``          ``(a=*v*)``
``/a sw "v"``          ``(a=v*)``
``/a ge "v"``          ``(a>=v)`` (``le``: ``<=``)
``/a gt "v"``          ``(&(a>=v)(!(a=v)))`` (``lt`` alike)
``/a pr``              ``(a=*)``
``true`` / ``false``   ``(objectClass=*)`` / ``(!(objectClass=*))``
=====================  ==============================

Values are escaped (``*``, ``(``, ``)``, ``\\`` and NUL as ``\\xx``; other text
stays UTF-8), booleans are written ``TRUE``/``FALSE`` as LDAP's Boolean syntax
wants. Attribute names are checked against RFC 4512, so a hostile pointer cannot
smuggle filter syntax in through the attribute side either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present, Value
from idsync.query.text import display_pointer

__all__ = ["escape_ldap_bytes", "escape_ldap_value", "filter_problem", "to_ldap"]

_ALL = "(objectClass=*)"
_NONE = "(!(objectClass=*))"
_SPECIALS = {"\\": r"\5c", "*": r"\2a", "(": r"\28", ")": r"\29", "\0": r"\00"}
# attributedescription: a name or an OID, then ";option"s (RFC 4512 section 2.5).
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*")


def to_ldap(node: Node, attribute: Callable[[Path], str] | None = None) -> str:
    """The RFC 4515 filter for ``node``.

    ``attribute`` names the LDAP attribute of a path (default: the path's last
    segment); it may raise :class:`QueryError` for a path the directory cannot express.
    """
    name_of = attribute if attribute is not None else _last_segment
    return _filter(node, name_of)


def escape_ldap_value(value: str) -> str:
    """``value`` safe inside a filter assertion: ``*)(uid=*`` -> ``\\2a\\29\\28uid=\\2a``."""
    return "".join(_SPECIALS.get(ch, ch) for ch in value)


def escape_ldap_bytes(value: bytes) -> str:
    """Every byte as ``\\xx``: how binary values (``objectGUID``) are matched."""
    return "".join(f"\\{b:02x}" for b in value)


def _filter(node: Node, name_of: Callable[[Path], str]) -> str:
    match node:
        case Literal_(value=value):
            return _ALL if value else _NONE
        case Present(path=path):
            return f"({_attribute(path, name_of)}=*)"
        case Compare():
            return _compare(node, name_of)
        case Not(item=item):
            return f"(!{_filter(item, name_of)})"
        case And(items=items):
            return f"(&{''.join(_filter(item, name_of) for item in items)})" if items else _ALL
        case Or(items=items):
            return f"(|{''.join(_filter(item, name_of) for item in items)})" if items else _NONE
    raise TypeError(f"not a _queryFilter node: {node!r}")


def _compare(node: Compare, name_of: Callable[[Path], str]) -> str:
    a = _attribute(node.path, name_of)
    if node.value is None:
        if node.op == "eq":
            return f"(!({a}=*))"
        raise QueryError(f"'{node.op} null' has no LDAP equivalent (only 'eq null' does)")
    v = _value(node.value)
    match node.op:
        case "eq":
            return f"({a}={v})"
        case "co":
            return f"({a}=*{v}*)" if v else f"({a}=*)"
        case "sw":
            return f"({a}={v}*)" if v else f"({a}=*)"
        case "ge":
            return f"({a}>={v})"
        case "le":
            return f"({a}<={v})"
        case "gt":
            return f"(&({a}>={v})(!({a}={v})))"
        case "lt":
            return f"(&({a}<={v})(!({a}={v})))"
    raise QueryError(f"unknown operator {node.op!r}")


def _value(value: Value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"{value!r} has no LDAP equivalent")
        return str(int(value)) if value.is_integer() else repr(value)
    return escape_ldap_value(str(value))


def _attribute(path: Path, name_of: Callable[[Path], str]) -> str:
    name = name_of(path)
    if not _ATTRIBUTE.fullmatch(name):
        raise QueryError(f"{name!r} is not an LDAP attribute name (for {display_pointer(path)})")
    return name


def _last_segment(path: Path) -> str:
    return path[-1]


def filter_problem(text: str) -> str | None:
    """Why ``text`` is not an LDAP search filter (RFC 4515) as ldap3 will read it, or None.

    A bare ``a=b`` is accepted: the connector puts it in parentheses."""
    from ldap3.core.exceptions import LDAPException
    from ldap3.operation.search import parse_filter

    text = text.strip()
    try:
        parse_filter(text if text.startswith("(") else f"({text})", None, auto_escape=True, auto_encode=True,
                     validator=None, check_names=False)
    except LDAPException as exc:
        return (f"not a valid LDAP filter ({exc}): check the parentheses, and write ( ) * \\ "
                "inside values as \\28 \\29 \\2a \\5c")
    return None
