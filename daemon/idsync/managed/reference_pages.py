"""A page of one object's references, as a query of ``managed/TYPE/ID/PROPERTY`` asks it.

The API (``api/relationships.py``) and the scripts' ``openidm.query`` (``router.py``) both
answer from here, alike. A page is read in SQL (``store/held_refs.py``): the rows of the
page's references alone, then the objects they name when ``fields`` asks for their fields,
so a page of a role of 20,000 members costs what a page of a small one does. A filter, or
a sort by a field that is not the reference's own, streams the references a batch at a
time through it (each batch's objects read when the filter or the sort needs their fields)
and keeps only the sort keys of the matches and the page's references, never every member
whole. The next page's cookie is the offset it starts at.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from idsync.managed.references import References
from idsync.query import matches
from idsync.query.ast import Node
from idsync.query.order import sort_order
from idsync.store.held_refs import HeldRefs
from idsync.store.relationships import Ref

__all__ = ["RefPage", "RefQuery", "query_page"]


@dataclass(frozen=True)
class RefQuery:
    """What a query of the references asks: ``_queryFilter`` ``text`` or ``_queryId``
    (``query-all``, ``query-all-ids``), ``_fields``, ``_sortKeys``, where the page starts
    (``_pagedResultsOffset``, or the cookie), ``_pageSize`` (None: every match) and whether
    the total is asked (``_totalPagedResultsPolicy=EXACT``)."""

    text: str | None = None
    query_id: str | None = None
    fields: Sequence[str] = ()
    sort_keys: Sequence[str] = ()
    offset: int = 0
    page_size: int | None = None
    exact_total: bool = False


@dataclass(frozen=True)
class RefPage:
    """The page's references as answered, the next page's cookie (None: the last page), and
    how many match (None: not asked, and not known)."""

    result: list[dict[str, Any]]
    cookie: str | None
    total: int | None


def query_page(refs: References, object_id: str, query: RefQuery) -> RefPage:
    """The page of ``object_id``'s references ``query`` asks for: in SQL when it filters none
    out and sorts by the reference's own fields, else streamed (``_streamed``)."""
    node = refs.filter_of(object_id, query.text, query.query_id)
    held = refs.held(object_id)
    sort = held.sortable(query.sort_keys)
    start, size = query.offset, query.page_size
    total: int | None = None
    with refs.store.engine.connect() as conn:
        if node is None and sort is not None:
            rows = held.page(conn, start, size + 1 if size is not None else None, sort)
            more = size is not None and len(rows) > size
            page = refs.shaped(rows[:size] if size is not None else rows, query.fields)
            if query.exact_total:
                total = held.count(conn)
        else:
            page, more, total = _streamed(conn, refs, held, node, query)
    if query.query_id == "query-all-ids":
        page = [{k: r[k] for k in ("_id", "_rev", "_ref") if k in r} for r in page]
    return RefPage(page, str(start + size) if more and size is not None else None, total)


def _streamed(conn: Connection, refs: References, held: HeldRefs, node: Node | None,
              query: RefQuery) -> tuple[list[dict[str, Any]], bool, int | None]:
    """The page of the references ``node`` matches (each as answered, with the fields asked),
    sorted by the sort keys; whether another page follows; how many match (when asked, or known).

    The references are streamed in the order a read answers them, a batch at a time, each
    batch shaped (its objects read) for the filter and the sort keys. Unsorted, the page is
    kept as it passes, and the stream stops at the first match after it unless the total is
    asked for. Sorted, only each match's sort key and row are kept, the first ``offset +
    pageSize`` of them by the keys (``heapq.nsmallest``, stable as a sort); the page's
    references are then read again by their rows, and shaped."""
    start = query.offset
    end = start + query.page_size if query.page_size is not None else None
    seen = 0

    def matching() -> Iterator[tuple[dict[str, Any], Ref]]:
        nonlocal seen
        for batch in held.stream(conn):
            for answered, ref in zip(refs.shaped(batch, query.fields), batch, strict=True):
                if node is None or matches(node, answered):
                    seen += 1
                    yield answered, ref

    if not query.sort_keys:
        page: list[dict[str, Any]] = []
        more = False
        for n, (answered, _) in enumerate(matching()):
            if end is not None and n >= end:
                more = True
                if not query.exact_total:
                    break
            elif n >= start:
                page.append(answered)
        return page, more, seen
    order = sort_order(query.sort_keys)
    keyed = ((order(answered), n, ref.row) for n, (answered, ref) in enumerate(matching()))
    first = heapq.nsmallest(end + 1, keyed) if end is not None else sorted(keyed)  # every match counted
    rows = [row for _, _, row in first[start:end]]
    found = held.rows(conn, rows)
    page = refs.shaped([found[r] for r in rows if r in found], query.fields)
    return page, end is not None and len(first) > end, seen
