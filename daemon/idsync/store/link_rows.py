"""The links read as PingIDM's repository keeps them: ``repo/link`` objects.

PingIDM stores each link as ``{_id, _rev, linkType, linkQualifier, firstId, secondId}``:
``linkType`` is the link set (the name of the mapping that owns it; a mapping with
``"links": "other"`` reads and writes ``other``'s), ``firstId`` the owning mapping's
source object and ``secondId`` its target. Administrators query them to see why an
object is (or is not) linked: ``linkType eq "systemLdapAccounts_managedUser" and
secondId eq "<managed user id>"``. A ``_queryFilter`` names those fields and becomes SQL
over the links table, its values bound; results come in ``_id`` order, paged by keyset
(the cookie is the last ``_id``). idsync keeps no revision of a link: ``_rev`` is ``"0"``.
Ids of a mapping whose ids are not case-sensitive are kept, and so matched, in lower case.
PingIDM's query ids of its links table are served too (``LINK_QUERIES``):
``links-for-firstId`` and ``links-for-secondId`` (``linkType`` and the id as parameters)
and ``links-for-linkType``, their parameters compared as values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, false, func, literal, select, true
from sqlalchemy.sql.elements import ColumnElement as _CE

from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Node, Present
from idsync.query.named import NamedQueries, NamedQuery, value_param
from idsync.store.database import Store
from idsync.store.filters import BooleanSql, Exact, compare_op, one_page
from idsync.store.tables import links

__all__ = ["FIELDS", "LINK_QUERIES", "LinkQuery", "link_object", "query_links", "read_link"]

FIELDS = ("_id", "_rev", "linkType", "linkQualifier", "firstId", "secondId")
_COLUMNS: dict[str, _CE[Any]] = {"_id": links.c.id, "linkType": links.c.linkset, "linkQualifier": links.c.qualifier,
                                 "firstId": links.c.source_id, "secondId": links.c.target_id}
_REV = "0"


def _links_for(*params: str) -> NamedQuery:
    compares = tuple(Compare((p,), "eq", value_param(p)) for p in params)
    return NamedQuery(f"links-for-{params[-1]}", compares[0] if len(compares) == 1 else And(compares),
                      frozenset(params))


LINK_QUERIES = NamedQueries(own={q.name: q for q in (
    _links_for("linkType", "firstId"), _links_for("linkType", "secondId"), _links_for("linkType"))})


@dataclass(frozen=True)
class LinkQuery:
    filter: Node | None = None
    after: str | None = None  # the last ``_id`` of the page before
    offset: int = 0
    page_size: int = 0  # 0: every match
    exact_total: bool = False


def link_object(row: Mapping[Any, Any]) -> dict[str, Any]:
    """One row of the links table as PingIDM's link object."""
    return {"_id": row["id"], "_rev": _REV, "linkType": row["linkset"], "linkQualifier": row["qualifier"],
            "firstId": row["source_id"], "secondId": row["target_id"]}


def read_link(store: Store, link_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(links).where(Exact(links.c.id) == link_id)).mappings().first()
    return link_object(row) if row is not None else None


def query_links(store: Store, spec: LinkQuery) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the links matching ``spec`` in ``_id`` order, one more than the page size
    when there are more; and the count of all matches when ``spec.exact_total``.
    ``QueryError`` names a field links do not have."""
    where = _Translator().visit(spec.filter) if spec.filter is not None else true()
    query = one_page(select(links).where(where).order_by(links.c.id),
                     Exact(links.c.id) > spec.after if spec.after is not None else None, spec.offset, spec.page_size)
    with store.engine.connect() as conn:
        rows = [link_object(r) for r in conn.execute(query).mappings()]
        total = (int(conn.execute(select(func.count()).select_from(links).where(where)).scalar_one())
                 if spec.exact_total else None)
    return rows, total


class _Translator(BooleanSql):
    def leaf(self, node: Compare | Present) -> ColumnElement[bool]:
        name = _field(node.path)
        if isinstance(node, Present):
            return true()  # every link has every field
        value = node.value
        if value is None or (isinstance(value, str) and "\x00" in value):
            return false()  # no link holds a null or a NUL
        text = value if isinstance(value, str) else json.dumps(value)
        if name == "_rev":
            return compare_op(literal(_REV), node.op, text)
        return compare_op(Exact(_COLUMNS[name]), node.op, text)


def _field(path: Sequence[str]) -> str:
    if len(path) != 1 or path[0] not in FIELDS:
        raise QueryError(f"links have no field /{'/'.join(path)} (they have {', '.join(FIELDS)})")
    return path[0]
