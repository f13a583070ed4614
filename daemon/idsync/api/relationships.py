"""Relationship properties over the API, as PingIDM serves them.

``/openidm/managed/TYPE/ID/PROPERTY`` is the collection of one object's references
in a relationship property that holds many (a role's ``members``, a user's
``roles``): ``GET`` with ``_queryFilter`` lists them (sorted and paged as a query asks),
``POST ?_action=create``
with ``{"_ref": "managed/user/ID", "_refProperties": {...}}`` adds one (201),
``GET``/``PUT``/``DELETE`` on ``.../PROPERTY/REF_ID`` read one, replace its
``_refProperties`` or remove it, ``If-Match`` naming the reference's own ``_rev``
(412 on another). What each does is ``managed/references.py``'s, which the
scripts' ``openidm`` answers from too.

A page is read in SQL (``store/held_refs.py``): the rows of the page's references alone,
then the objects they name when ``_fields`` asks for their fields, so a page of a role of
20,000 members costs what a page of a small one does. A filter, or a sort by a field
that is not the reference's own, streams the references a batch at a time through it
(each batch's objects read when the filter or the sort needs their fields) and keeps
only the sort keys of the matches and the page's references, never every member whole.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.managed import if_match
from idsync.api.query import QueryParams, envelope, read_json, sort_order
from idsync.managed.references import References
from idsync.managed.router import scripting
from idsync.managed.service import ManagedObjects
from idsync.query import matches
from idsync.query.ast import Node
from idsync.resources import Resources
from idsync.store.held_refs import HeldRefs
from idsync.store.relationships import Ref

__all__ = ["relationship_routes"]


def _with(ctx: ApiContext, object_type: str, name: str, work: Callable[[References], Any]) -> Any:
    """``work`` done on ``managed/TYPE/ID/name``, its changes pushed as any managed change."""
    project = ctx.project()
    if object_type not in project.managed.types:
        raise ApiError(404, f"Resource 'managed/{object_type}' not found")
    resources = Resources(project, ctx.store)
    try:
        objects = ManagedObjects(project, ctx.store, resources, object_type)
        with scripting(project, ctx.store, resources=resources):
            return work(References(project, ctx.store, objects, name, answer=True))
    finally:
        resources.close()


def _query(ctx: ApiContext, refs: References, object_id: str, params: QueryParams, text: str | None,
           query_id: str | None) -> dict[str, Any]:
    """A page of ``object_id``'s references as the query asks: in SQL when it filters none out
    and sorts by the reference's own fields, else streamed (``_streamed``)."""
    node = refs.filter_of(object_id, text, query_id)
    held = refs.held(object_id)
    fields = params.fields or ()
    start = params.start_offset()
    sort = held.sortable(params.sort_keys)
    total: int | None = None
    with ctx.store.engine.connect() as conn:
        if node is None and sort is not None:
            rows = held.page(conn, start, params.page_size + 1 if params.paged else None, sort)
            more = params.paged and len(rows) > params.page_size
            page = refs.shaped(rows[:params.page_size] if params.paged else rows, fields)
            if params.exact_total:
                total = held.count(conn)
        else:
            page, more, total = _streamed(conn, refs, held, node, params, fields)
    if query_id == "query-all-ids":
        page = [{k: r[k] for k in ("_id", "_rev", "_ref") if k in r} for r in page]
    cookie = str(start + params.page_size) if more else None
    return envelope(page, cookie=cookie, params=params, total=total)


def _streamed(conn: Connection, refs: References, held: HeldRefs, node: Node | None, params: QueryParams,
              fields: Sequence[str]) -> tuple[list[dict[str, Any]], bool, int | None]:
    """The page of the references ``node`` matches (each as answered, with ``fields``), sorted
    by ``_sortKeys``; whether another page follows; how many match (when asked, or known).

    The references are streamed in the order a read answers them, a batch at a time, each
    batch shaped (its objects read) for the filter and the sort keys. Unsorted, the page is
    kept as it passes, and the stream stops at the first match after it unless the total is
    asked for. Sorted, only each match's sort key and row are kept, the first ``offset +
    pageSize`` of them by the keys (``heapq.nsmallest``, stable as a sort); the page's
    references are then read again by their rows, and shaped."""
    start = params.start_offset()
    end = start + params.page_size if params.paged else None
    seen = 0

    def matching() -> Iterator[tuple[dict[str, Any], Ref]]:
        nonlocal seen
        for batch in held.stream(conn):
            for answered, ref in zip(refs.shaped(batch, fields), batch, strict=True):
                if node is None or matches(node, answered):
                    seen += 1
                    yield answered, ref

    if not params.sort_keys:
        page: list[dict[str, Any]] = []
        more = False
        for n, (answered, _) in enumerate(matching()):
            if end is not None and n >= end:
                more = True
                if not params.exact_total:
                    break
            elif n >= start:
                page.append(answered)
        return page, more, seen
    order = sort_order(params.sort_keys)
    keyed = ((order(answered), n, ref.row) for n, (answered, ref) in enumerate(matching()))
    first = heapq.nsmallest(end + 1, keyed) if end is not None else sorted(keyed)  # every match counted
    rows = [row for _, _, row in first[start:end]]
    found = held.rows(conn, rows)
    page = refs.shaped([found[r] for r in rows if r in found], fields)
    return page, end is not None and len(first) > end, seen


def _answer(ref: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(ref, status_code=status, headers={"ETag": f'"{ref.get("_rev") or ""}"'})


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id, name = (request.path_params[k] for k in ("type", "id", "property"))
    if request.method == "GET":
        params = QueryParams.of(request, required=False)  # refs.filter_of says what a query needs
        text, query_id = request.query_params.get("_queryFilter"), request.query_params.get("_queryId")
        return JSONResponse(await run_in_threadpool(
            _with, ctx, object_type, name, lambda refs: _query(ctx, refs, object_id, params, text, query_id)))
    action = request.query_params.get("_action", "create")
    if action != "create":
        raise ApiError(400, f"unknown _action {action!r} (supported: create)")
    body = await read_json(request, ctx.settings.max_body_bytes)
    return _answer(await run_in_threadpool(_with, ctx, object_type, name, lambda refs: refs.create(object_id, body)),
                   201)


async def _member(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id, name, row = (request.path_params[k] for k in ("type", "id", "property", "ref"))
    if request.method == "GET":
        return _answer(await run_in_threadpool(_with, ctx, object_type, name, lambda refs: refs.read(object_id, row)))
    rev = if_match(request)  # the reference's own revision, as PingIDM checks it
    if request.method == "DELETE":
        return _answer(await run_in_threadpool(_with, ctx, object_type, name,
                                               lambda refs: refs.delete(object_id, row, rev)))
    body = await read_json(request, ctx.settings.max_body_bytes)
    return _answer(await run_in_threadpool(_with, ctx, object_type, name,
                                           lambda refs: refs.replace(object_id, row, body, rev)))


relationship_routes = [
    Route("/managed/{type}/{id}/{property}", _collection, methods=["GET", "POST"]),
    Route("/managed/{type}/{id}/{property}/{ref}", _member, methods=["GET", "PUT", "DELETE"]),
]
