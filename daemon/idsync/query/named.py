"""Named queries (PingIDM's ``_queryId``): a name for a ``_queryFilter`` with parameters.

``{"_queryId": "for-userName", "uid": "bjensen"}`` names a query and gives its
parameters. A ``NamedQuery`` holds the query as a ``_queryFilter`` tree whose
parameters are placeholders, and :meth:`NamedQuery.bind` puts the parameters in
as *values* of that tree, so a parameter holding ``*)(uid=*`` or ``' OR 1=1``
is compared, never read as query syntax, whatever the resource translates the
tree to (SQL, an LDAP filter, SCIM, SOQL).

A placeholder stands for a value (``${uid}``, a ``Compare`` value), a field name
(a path segment ``${field}``: ``get-by-field-value``), or a SQL ``LIKE``
pattern (``${like:name}``: ``abc%`` becomes ``sw``, ``%abc%`` ``co``, no ``%``
``eq``). A field name from a parameter must be a plain name or pointer
(``userName``, ``/name/givenName``, ``name.givenName``).

``STOCK`` holds OpenIDM's own query ids, defined here by what they mean on a
collection of objects rather than by their SQL; the ids of OpenIDM's default
repository configuration that query its internal tables (links, cluster state,
audit, relationships) are in ``INTERNAL`` and refused with that reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present
from idsync.query.bind import bind

__all__ = ["INTERNAL", "STOCK", "NamedQueries", "NamedQuery", "field_param", "like_node", "like_param", "value_param"]

_FIELD = re.compile(r"^\$\{([^{}]+)\}$")
_LIKE = re.compile(r"^\$\{like:([^{}]+)\}$")
_SEGMENT = re.compile(r"^[A-Za-z_@][\w@$-]*$")


def value_param(name: str) -> str:
    """The placeholder of a value parameter."""
    return f"${{{name}}}"


def field_param(name: str) -> str:
    """The path segment standing for a field-name parameter."""
    return f"${{{name}}}"


def like_param(name: str) -> str:
    """The placeholder of a ``LIKE`` pattern parameter."""
    return f"${{like:{name}}}"


@dataclass(frozen=True)
class NamedQuery:
    """A ``_queryId``: its filter (``Literal_(True)``: every object), its parameters,
    and where it was defined (``stock``, or ``FILE: KEY``)."""

    name: str
    template: Node
    params: frozenset[str] = field(default_factory=frozenset)
    ids_only: bool = False
    origin: str = "stock"

    @property
    def matches_all(self) -> bool:
        return self.template == Literal_(True)

    def bind(self, params: Mapping[str, Any]) -> Node | None:
        """The filter with ``params`` in place; ``None`` when it can never match
        (a parameter given as ``null`` or ``[]``). A missing parameter is an error."""
        missing = sorted(p for p in self.params if p not in params)
        if missing:
            raise QueryError(f"_queryId {self.name} needs the parameter{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}")
        node = _fields(self.template, self.name, params)
        return bind(node, lambda expr: params.get(expr))

    def filter(self, params: Mapping[str, Any]) -> Node | None:
        """``bind`` as a query's filter: None for every object, ``Literal_(False)`` for
        none. Keys starting with ``_`` (``_queryId``, ``_pageSize``, ...) are the
        request's own, not the query's parameters."""
        bound = self.bind({k: v for k, v in params.items() if not str(k).startswith("_")})
        return None if bound == Literal_(True) else Literal_(False) if bound is None else bound


def _fields(node: Node, query: str, params: Mapping[str, Any]) -> Node:
    """``node`` with field parameters and ``LIKE`` patterns replaced (values are left to ``bind``)."""
    match node:
        case Compare(path=path, op=op, value=value):
            path = _path(path, query, params)
            like = _LIKE.match(value) if isinstance(value, str) else None
            if like is None:
                return Compare(path, op, value)
            return _like(path, params.get(like.group(1)), query, like.group(1))
        case Present(path=path):
            return Present(_path(path, query, params))
        case Not(item=item):
            return Not(_fields(item, query, params))
        case And(items=items):
            return And(tuple(_fields(i, query, params) for i in items))
        case Or(items=items):
            return Or(tuple(_fields(i, query, params) for i in items))
    return node


def _path(path: Path, query: str, params: Mapping[str, Any]) -> Path:
    if len(path) != 1 or (found := _FIELD.match(path[0])) is None:
        return path
    name = found.group(1)
    value = params.get(name)
    if not isinstance(value, str) or not value.strip("/"):
        raise QueryError(f"_queryId {query}: the parameter {name} must name a field")
    text = value.strip().lstrip("/")
    segments = tuple(text.split("/") if "/" in text else text.split("."))
    if not all(_SEGMENT.match(s) for s in segments):
        raise QueryError(f"_queryId {query}: the parameter {name} must name a field (letters, digits, _ -, "
                         f"parts joined by / or .), not {value!r}")
    return segments


def like_node(path: Path, pattern: str) -> Node:
    """A SQL ``LIKE`` pattern as a comparison: ``%`` only at the ends; ``_`` is an ordinary character."""
    inner = pattern.strip("%")
    if "%" in inner or not inner:
        raise QueryError(f"the LIKE pattern {pattern!r} cannot be translated: use % only at its start and end "
                         "(abc%, %abc%), around some text")
    if pattern.startswith("%") and pattern.endswith("%"):
        return Compare(path, "co", inner)
    if pattern.endswith("%"):
        return Compare(path, "sw", inner)
    if pattern.startswith("%"):
        raise QueryError(f"the LIKE pattern {pattern!r} (ends with) cannot be translated: use abc% or %abc%")
    return Compare(path, "eq", inner)


def _like(path: Path, value: Any, query: str, name: str) -> Node:
    if value is None:
        return Literal_(False)
    if not isinstance(value, str):
        raise QueryError(f"_queryId {query}: the parameter {name} is a LIKE pattern and must be a string")
    try:
        return like_node(path, value)
    except QueryError as exc:
        raise QueryError(f"_queryId {query}: {exc}") from None


def _eq(path: str, param: str) -> Compare:
    return Compare((path,), "eq", value_param(param))


STOCK: dict[str, NamedQuery] = {q.name: q for q in (
    NamedQuery("query-all-ids", Literal_(True), ids_only=True),
    NamedQuery("query-all", Literal_(True)),
    NamedQuery("for-userName", _eq("userName", "uid"), frozenset({"uid"})),
    NamedQuery("get-by-field-value", Compare((field_param("field"),), "eq", value_param("value")),
               frozenset({"field", "value"})),
    NamedQuery("credential-query", And((_eq("userName", "username"),
                                        Not(Compare(("accountStatus",), "eq", "inactive")))),
               frozenset({"username"})),
    NamedQuery("scan-tasks", And((Compare((field_param("property"),), "lt", value_param("condition.before")),
                                  Not(Present((field_param("taskState.completed"),))))),
               frozenset({"property", "condition.before", "taskState.completed"})),
)}

INTERNAL: frozenset[str] = frozenset({
    "query-all-count", "query-all-ids-count", "links-for-firstId", "links-for-secondId", "links-for-linkType",
    "credential-internaluser-query", "for-internalcredentials", "get-notifications-for-user",
    "query-cluster-events", "query-cluster-failed-instances", "query-cluster-instances",
    "find-relationships-for-resource", "find-relationship-edges", "get-recons",
})


@dataclass(frozen=True)
class NamedQueries:
    """The query ids a project can use: its own (``repo.*.json``) and the stock ones.

    A stock id is always the stock query, whatever text a project's repository file
    gives it (those files repeat OpenIDM's SQL for its own tables). ``unusable``:
    the project's queries that could not be translated, with the reason.
    """

    own: Mapping[str, NamedQuery] = field(default_factory=dict)
    unusable: Mapping[str, str] = field(default_factory=dict)

    def get(self, query_id: Any) -> NamedQuery:
        """The query named ``query_id``; ``QueryError`` naming it when there is none."""
        if not isinstance(query_id, str) or not query_id:
            raise QueryError(f"_queryId must be a query name, not {query_id!r}")
        if query_id in STOCK:
            return STOCK[query_id]
        if query_id in self.own:
            return self.own[query_id]
        if query_id in self.unusable:
            raise QueryError(f"_queryId {query_id} cannot be used: {self.unusable[query_id]}")
        if query_id in INTERNAL:
            raise QueryError(f"_queryId {query_id} queries OpenIDM's internal tables (links, cluster, audit, "
                             "relationships, counts), which idsync keeps otherwise; use a _queryFilter (the links' "
                             "own are served on repo/link)")
        known = ", ".join(sorted({*STOCK, *self.own}))
        raise QueryError(f"unknown _queryId {query_id} (known: {known}; a project defines more in "
                         "conf/repo.*.json \"queries\")")
