"""``/openidm/managed/TYPE``: managed users and roles, read and changed as PingIDM does.

An answer never holds a secret nor a ``"scope": "private"`` property (PingIDM leaves
those out of what its REST callers get; scripts and the sync engine see them), and a
query can neither filter nor sort on one: a filter answers what the field holds a
character at a time (``password sw "{CRYPT}$6$r"``).
Changes go through ``managed.service.ManagedObjects`` (validation against
``managed.json``, revisions, secrets hashed) and each runs implicit
synchronization before the answer. Queries page by keyset on ``_id``: the
cookie is the last ``_id`` of the page, so paging stays cheap and stable while
objects are added; ``_pagedResultsOffset`` and ``_sortKeys`` are honoured too. A
sorted page streams every match through the sort keys and keeps only the objects up to
the page's end (``_sorted_page``), then reads those as an unsorted page is read; the cost
grows with the matches and the page's offset, the memory only with the latter. A sort by
a relationship or a virtual property, or with ``executeOnRetrieve``, reads every match
whole, as the values are worked out by the read.
"""

from __future__ import annotations

import heapq
from typing import Any

import structlog
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, envelope, read_json, sort_objects
from idsync.config.managed import ManagedType
from idsync.errors import AlreadyExists, NotFound
from idsync.managed.patch import refuse_reading
from idsync.managed.references import expand, expand_all
from idsync.managed.router import scripting
from idsync.managed.service import Change, ManagedObjects
from idsync.query.ast import And, Present
from idsync.query.order import sort_order
from idsync.resources import Resources
from idsync.store.filters import refuse_hidden, to_sql
from idsync.store.hooks import ObjectHooks
from idsync.store.objects import ManagedResource
from idsync.store.tables import managed_objects as mo

__all__ = ["change_managed", "changed_view", "if_match", "managed_routes", "managed_type", "read_managed", "shaped"]

log = structlog.get_logger("idsync.api")

_UPSERT_ROUNDS = 3
_REREADS = 5  # a query page read again while references written meanwhile move its revisions
_STREAM = 2000  # rows fetched at a time while a sorted page streams the matches


def managed_type(ctx: ApiContext, object_type: str) -> ManagedType:
    """The type ``managed/TYPE`` names; 404 for one managed.json does not define."""
    types = ctx.project().managed.types
    if object_type not in types:
        raise ApiError(404, f"Resource 'managed/{object_type}' not found")
    return types[object_type]


def _query(ctx: ApiContext, object_type: str, params: QueryParams) -> dict[str, Any]:
    schema = managed_type(ctx, object_type)
    hidden = {**dict.fromkeys(schema.private, "private"), **dict.fromkeys(schema.secrets, "secret")}
    refuse_hidden(params.filter, hidden)
    refuse_hidden(And(tuple(Present(key) for key in params.sort_paths())), hidden, what="_sortKeys")
    where = [mo.c.object_type == object_type]
    if params.filter is not None:
        where.append(to_sql(params.filter, object_type, schema.searchable))
    hooks = ObjectHooks(schema)
    # As PingIDM's: a query runs the type's onRetrieve scripts only when asked to, on the whole
    # object (its default fields, and those named), before the fields asked for are picked.
    retrieving = params.execute_on_retrieve and hooks.reads
    whole = retrieving or bool(params.sort_keys)
    columns = [mo.c.id, mo.c.rev] if params.ids_only and not whole else [mo.c.id, mo.c.rev, mo.c.data]
    query = select(*columns).where(*where).order_by(mo.c.id)
    sorted_mode = bool(params.sort_keys)
    page_ids: list[str] | None = None
    if sorted_mode and params.paged and not retrieving and _stored(schema, params):
        # A sorted page of stored values: the objects streamed, only the page's kept.
        page_ids, cookie_at = _sorted_page(ctx, schema, query, params)
        query = select(*columns).where(*where, mo.c.id.in_(page_ids))
        sorted_mode = False
    elif not sorted_mode:
        if params.cookie:
            query = query.where(mo.c.id > params.cookie)
        elif params.offset:
            query = query.offset(params.offset)
        if params.paged:
            query = query.limit(params.page_size + 1)
    resource = ManagedResource(ctx.store, schema)
    named = ([f.strip("/").split("/")[0] for f in params.fields] if params.fields else None) \
        or shown_by_default(schema)
    if retrieving:
        named = list(dict.fromkeys([*shown_by_default(schema), *named]))
    elif params.ids_only:
        named = []  # as PingIDM's query-all-ids: no relationships read
    for _ in range(_REREADS):
        with ctx.store.engine.connect() as conn:
            rows = conn.execute(query).all()
            total = (conn.execute(select(func.count()).select_from(mo).where(*where)).scalar_one()
                     if params.exact_total else None)
        objects = [_object(schema, r) for r in rows]
        if schema.relationships or schema.roles is not None:
            resource.complete(objects, named)
        # References are read by a statement of their own: a write of references committed
        # in between moves the revisions of both ends, and the page is read again.
        if resource.settled({r.id: r.rev for r in rows}, named):
            break
    if retrieving:
        objects = [hooks.retrieved(o, "query") for o in objects]
    cookie: str | None = None
    if page_ids is not None:
        placed = {o["_id"]: o for o in objects}
        objects = [placed[i] for i in page_ids if i in placed]  # one deleted since is left out
        cookie = cookie_at
    elif sorted_mode:
        start = params.start_offset()
        objects = sort_objects(objects, params.sort_keys)
        end = start + params.page_size if params.paged else len(objects)
        cookie = str(end) if params.paged and end < len(objects) else None
        objects = objects[start:end]
    elif params.paged and len(objects) > params.page_size:
        objects = objects[: params.page_size]
        cookie = objects[-1]["_id"]
    if params.fields and schema.relationships:  # ``roles/*``: the page's references read at once
        expand_all(ctx.project(), ctx.store, schema, objects, params.fields, answer=True)
    # As a read answers each: the default fields, or those named (``*`` the default ones), never
    # a private property (an onRetrieve script may have put one back).
    shown = [params.shape(o) if params.ids_only else _picked(schema, o, params.fields) for o in objects]
    return envelope(shown, cookie=cookie, params=params, total=total)


def _stored(schema: ManagedType, params: QueryParams) -> bool:
    """Whether every sort key names a value the objects' rows hold (not a relationship nor a
    virtual property, which a read works out)."""
    for path in params.sort_paths():
        prop = schema.properties.get(path[0])
        if prop is not None and (prop.relation is not None or prop.virtual):
            return False
    return True


def _sorted_page(ctx: ApiContext, schema: ManagedType, query: Any,
                 params: QueryParams) -> tuple[list[str], str | None]:
    """The ids of a sorted page, in order, and the next page's cookie: every object of the
    query streamed in id order (a batch at a time), and only the ``offset + pageSize`` first
    by the sort keys kept (``heapq.nsmallest``, stable as a sort), never the whole type."""
    start = params.start_offset()
    need = start + params.page_size + 1  # one more tells whether a page follows
    order = sort_order(params.sort_keys)
    with ctx.store.engine.connect() as conn:
        rows = conn.execution_options(yield_per=_STREAM).execute(query)
        first = heapq.nsmallest(need, ((order(_object(schema, r)), n, r.id) for n, r in enumerate(rows)))
    end = start + params.page_size
    return [i for _, _, i in first[start:end]], str(end) if len(first) > end else None


def shown_by_default(schema: ManagedType) -> list[str]:
    """The properties a read answers when ``_fields`` names none: all but those whose
    ``returnByDefault`` is false (relationships, unless managed.json says otherwise)."""
    return [name for name in schema.properties if name not in schema.hidden]


def _default_view(schema: ManagedType, obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in schema.hidden and k not in schema.private}


def _object(schema: ManagedType, row: Any) -> dict[str, Any]:
    data = getattr(row, "data", None) or {}
    left_out = schema.secrets | schema.private
    obj = {"_id": row.id, "_rev": row.rev, **{k: v for k, v in data.items() if k not in left_out}}
    return obj


def _service(ctx: ApiContext, object_type: str) -> tuple[ManagedObjects, Resources]:
    managed_type(ctx, object_type)
    project = ctx.project()
    resources = Resources(project, ctx.store)
    return ManagedObjects(project, ctx.store, resources, object_type), resources


def change_managed(ctx: ApiContext, object_type: str, kind: str, object_id: str | None, body: Any,
                   rev: str | None, fields: str | None = None) -> Change:
    """Create, update, upsert, patch or delete one managed object (or push it as it is:
    ``sync_check``, PingIDM's ``triggerSyncCheck``) as every caller over HTTP
    does (the API and the console): validated against ``managed.json``, at revision ``rev``,
    with the ``openidm`` router bound for the scripts that the change and its implicit
    synchronization run; a failed push is logged. ``Change.object`` is the object after
    the change (before it, for a delete); of a patch, its relationship properties only those
    its answer's ``_fields`` show (``ManagedObjects.patch``)."""
    service, resources = _service(ctx, object_type)
    try:
        with scripting(ctx.project(), ctx.store, resources=resources):
            if kind == "create":
                change = service.create(body, object_id=object_id)
            elif kind == "upsert":
                change = _upsert(service, object_id or "", body)
            elif kind == "update":
                change = service.update(object_id or "", body, rev=rev)
            elif kind == "patch":
                if not isinstance(body, list):
                    raise ApiError(400, "a PATCH body is a JSON array of operations")
                refuse_reading(body, dict.fromkeys(service.schema.private, "private"))  # as it is never answered
                named = {f.strip().strip("/").split("/")[0] for f in (fields or "").split(",") if f.strip()}
                change = service.patch(object_id or "", body, rev=rev, shown=named)
            elif kind == "sync_check":
                change = service.sync_check(object_id or "")
            else:
                before = service.get(object_id or "")
                change = service.delete(object_id or "", rev=rev)
                change = Change(before, change.pushes)
    finally:
        resources.close()
    _log_pushes(service.name, change)
    assert change.object is not None
    return change


def _upsert(service: ManagedObjects, object_id: str, body: Any) -> Change:
    """A PUT without a precondition: replace the object, or create it when there is none.
    Another request may create or delete it in between; the PUT follows it (a create that
    lost to another's replaces what that one made), and gives up after a few rounds."""
    for _ in range(_UPSERT_ROUNDS - 1):
        try:
            return service.update(object_id, body)
        except NotFound:
            pass
        try:
            return service.create(body, object_id=object_id)
        except AlreadyExists:
            pass
    return service.update(object_id, body)


def changed_view(ctx: ApiContext, object_type: str, kind: str, object_id: str | None, body: Any,
                 rev: str | None, fields: str | None = None) -> dict[str, Any]:
    """``change_managed``, answered as a read with the same ``_fields`` answers the object."""
    obj = change_managed(ctx, object_type, kind, object_id, body, rev).object
    assert obj is not None
    return shaped(ctx, managed_type(ctx, object_type), obj, fields)


def _log_pushes(resource: str, change: Change) -> None:
    for push in change.pushes:
        if not push.ok:
            log.warning("api.implicit_sync_failed", resource=resource, mapping=push.mapping, run_id=push.run_id,
                        source_id=push.source_id, message=push.message)


def if_match(request: Request) -> str | None:
    """The revision ``If-Match`` asks for; ``None`` for any."""
    value = request.headers.get("if-match")
    if value is None or value.strip() == "*":
        return None
    return value.strip().strip('"')


def _answer(obj: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers={"ETag": f'"{obj.get("_rev", "")}"'})


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type = request.path_params["type"]
    if request.method == "GET":
        params = QueryParams.of(request, ctx.project().queries)
        return JSONResponse(await run_in_threadpool(_query, ctx, object_type, params))
    action = request.query_params.get("_action", "create")
    if action != "create":
        raise ApiError(400, f"unknown _action {action!r} (supported: create)")
    body = await read_json(request, ctx.settings.max_body_bytes)
    # The new id: the body's ``_id``, else the ``_id`` parameter (``ManagedObjects.create``).
    new_id = request.query_params.get("_id") or None
    return _answer(await run_in_threadpool(changed_view, ctx, object_type, "create", new_id, body, None,
                                           request.query_params.get("_fields")), 201)


async def _one(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id = request.path_params["type"], request.path_params["id"]
    method = request.method

    fields = request.query_params.get("_fields")

    async def change(kind: str, body: Any, rev: str | None) -> JSONResponse:
        done = await run_in_threadpool(change_managed, ctx, object_type, kind, object_id, body, rev, fields)
        assert done.object is not None
        shown = await run_in_threadpool(shaped, ctx, managed_type(ctx, object_type), done.object, fields)
        return _answer(shown, 201 if done.created else 200)

    if method == "GET":
        return _answer(await run_in_threadpool(read_managed, ctx, object_type, object_id, fields))
    if method == "DELETE":
        return await change("delete", None, if_match(request))
    body = await read_json(request, ctx.settings.max_body_bytes)
    if method == "PATCH":
        return await change("patch", body, if_match(request))
    # PUT: If-None-Match: * creates (412 if it exists), If-Match updates, neither upserts.
    # A create answers 201, as CREST does; whether it created is the store's say (``AlreadyExists``).
    # The path names the object: a body's ``_id`` (read back from another object) is not read.
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "_id"}
    if request.headers.get("if-none-match", "").strip() == "*":
        return await change("create", body, None)
    if request.headers.get("if-match") is not None:
        return await change("update", body, if_match(request))
    return await change("upsert", body, None)


def read_managed(ctx: ApiContext, object_type: str, object_id: str, fields: str | None) -> dict[str, Any]:
    """One object as ``GET managed/TYPE/ID`` answers it, shaped by ``_fields`` (``shaped``)."""
    service, resources = _service(ctx, object_type)
    resources.close()
    named = {f.strip().strip("/").split("/")[0] for f in (fields or "").split(",")}
    return shaped(ctx, managed_type(ctx, object_type), service.get(object_id, shown=named), fields)


def shaped(ctx: ApiContext, schema: ManagedType, obj: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """``obj`` with only the ``_fields`` given (comma-separated; ``NAME/*`` and ``NAME/FIELD``
    expand a relationship; ``*`` stands for the properties shown by default, so ``*,roles``
    is the whole object and its roles), or the properties shown by default; ``_id`` and
    ``_rev`` always. A read and the answer of a change are shaped alike, as in PingIDM."""
    names = [f.strip() for f in (fields or "").split(",") if f.strip()]
    if not names:
        return _default_view(schema, obj)
    return _picked(schema, expand(ctx.project(), ctx.store, schema, obj, names, answer=True), names)


def _picked(schema: ManagedType, obj: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """``obj`` with the fields ``names`` names (``*``: those shown by default), ``_id`` and
    ``_rev`` always; without names, the fields shown by default."""
    if not names:
        return _default_view(schema, obj)
    keep = {"_id", "_rev", *(f.strip("/").split("/")[0] for f in names)}
    if "*" in keep:
        keep |= set(_default_view(schema, obj))
    return {k: v for k, v in obj.items() if k in keep and k not in schema.private}


managed_routes = [
    Route("/managed/{type}", _collection, methods=["GET", "POST"]),
    Route("/managed/{type}/{id}", _one, methods=["GET", "PUT", "PATCH", "DELETE"]),
]
