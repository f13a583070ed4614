"""``/openidm/repo/link``: the links, read as PingIDM's repository answers them.

``GET repo/link?_queryFilter=...`` queries them by PingIDM's fields (``linkType``,
``linkQualifier``, ``firstId``, ``secondId``, ``_id``; ``store/link_rows.py``), in
``_id`` order, paged by ``_pageSize`` and the last ``_id`` as cookie (or
``_pagedResultsOffset``), counted with ``_totalPagedResultsPolicy=EXACT``;
``_queryId=query-all-ids`` and ``query-all`` too, and PingIDM's ``links-for-firstId``,
``links-for-secondId`` and ``links-for-linkType``. ``GET repo/link/ID`` reads one.

Read only: a link is made and removed by a recon, implicit sync or ``sync?_action=
performAction`` (``LINK``, ``UNLINK``), which keep the targets and the audit in step
with it; PingIDM's raw writes of ``repo/link`` are not served.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, envelope
from idsync.store.link_rows import LINK_QUERIES, LinkQuery, query_links, read_link

__all__ = ["repo_link_routes"]


def _query(ctx: ApiContext, params: QueryParams) -> dict[str, Any]:
    if params.sort_keys and [k.lstrip("+") for k in params.sort_keys] != ["_id"]:
        raise ApiError(400, f"links are answered in _id order: _sortKeys {','.join(params.sort_keys)} is not taken")
    spec = LinkQuery(filter=params.filter, after=params.cookie, offset=0 if params.cookie else params.offset,
                     page_size=params.page_size, exact_total=params.exact_total)
    rows, total = query_links(ctx.store, spec)
    more = bool(params.page_size) and len(rows) > params.page_size
    rows = rows[:params.page_size] if params.page_size else rows
    cookie = rows[-1]["_id"] if more else None
    return envelope([params.shape(r) for r in rows], cookie=cookie, params=params, total=total)


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    params = QueryParams.of(request, LINK_QUERIES)
    return JSONResponse(await run_in_threadpool(_query, ctx, params))


async def _one(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    link_id = request.path_params["id"]
    found = await run_in_threadpool(read_link, ctx.store, link_id)
    if found is None:
        raise ApiError(404, f"Object repo/link/{link_id} not found")
    return JSONResponse(found)


repo_link_routes = [
    Route("/repo/link", _collection, methods=["GET"]),
    Route("/repo/link/{id}", _one, methods=["GET"]),
]
