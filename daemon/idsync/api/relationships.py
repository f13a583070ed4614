"""Relationship properties over the API, as PingIDM serves them.

``/openidm/managed/TYPE/ID/PROPERTY`` is the collection of one object's references
in a relationship property that holds many (a role's ``members``, a user's
``roles``): ``GET`` with ``_queryFilter`` lists them (sorted and paged as a query asks),
``POST ?_action=create``
with ``{"_ref": "managed/user/ID", "_refProperties": {...}}`` adds one (201),
``GET``/``PUT``/``DELETE`` on ``.../PROPERTY/REF_ID`` read one, replace its
``_refProperties`` or remove it, ``If-Match`` naming the reference's own ``_rev``
(412 on another). What each does is ``managed/references.py``'s, and a page of a
query ``managed/reference_pages.py``'s (read in SQL, a page at a time), which the
scripts' ``openidm`` answers from too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.managed import if_match
from idsync.api.query import QueryParams, envelope, read_json
from idsync.managed.reference_pages import RefQuery, query_page
from idsync.managed.references import References
from idsync.managed.router import scripting
from idsync.managed.service import ManagedObjects
from idsync.resources import Resources

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


def _query(refs: References, object_id: str, params: QueryParams, text: str | None,
           query_id: str | None) -> dict[str, Any]:
    """A page of ``object_id``'s references as the query asks (``query_page``)."""
    found = query_page(refs, object_id, RefQuery(
        text, query_id, params.fields or (), params.sort_keys, params.start_offset(),
        params.page_size if params.paged else None, params.exact_total))
    return envelope(found.result, cookie=found.cookie, params=params, total=found.total)


def _answer(ref: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(ref, status_code=status, headers={"ETag": f'"{ref.get("_rev") or ""}"'})


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id, name = (request.path_params[k] for k in ("type", "id", "property"))
    if request.method == "GET":
        params = QueryParams.of(request, required=False)  # refs.filter_of says what a query needs
        text, query_id = request.query_params.get("_queryFilter"), request.query_params.get("_queryId")
        return JSONResponse(await run_in_threadpool(
            _with, ctx, object_type, name, lambda refs: _query(refs, object_id, params, text, query_id)))
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
