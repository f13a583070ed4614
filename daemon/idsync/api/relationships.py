"""Relationship properties over the API, as PingIDM serves them.

``/openidm/managed/TYPE/ID/PROPERTY`` is the collection of one object's references
in a relationship property that holds many (a role's ``members``, a user's
``roles``): ``GET`` with ``_queryFilter`` lists them, ``POST ?_action=create``
with ``{"_ref": "managed/user/ID", "_refProperties": {...}}`` adds one (201),
``GET``/``PUT``/``DELETE`` on ``.../PROPERTY/REF_ID`` read one, replace its
``_refProperties`` or remove it. Each change is a patch of the object through
``ManagedObjects``, so it is validated, revisioned and pushed by implicit
synchronization (both ends: ``managed/relationships.py``) like any other.

``expand`` answers ``_fields=roles/*`` (or ``roles/name``) on a read: each
reference of ``roles`` with the fields of the object it points to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import envelope, read_json
from idsync.config.managed import ManagedType
from idsync.errors import NotFound, QueryError
from idsync.managed.router import scripting
from idsync.managed.service import ManagedObjects
from idsync.query import matches, parse
from idsync.resources import Resources
from idsync.store.objects import ManagedResource

__all__ = ["expand", "relationship_routes"]


def _schema(ctx: ApiContext, object_type: str, name: str) -> ManagedType:
    types = ctx.project().managed.types
    if object_type not in types:
        raise ApiError(404, f"Resource 'managed/{object_type}' not found")
    schema = types[object_type]
    relation = schema.relationships.get(name)
    if relation is None:
        raise ApiError(404, f"Resource 'managed/{object_type}/ID/{name}' not found: {name} is not a relationship "
                       f"property of managed/{object_type}")
    if not relation.many:
        raise ApiError(400, f"managed/{object_type} {name} holds one reference: read and change it on the "
                       "object itself")
    return schema


def _refs(obj: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = obj.get(name)
    return value if isinstance(value, list) else []


def _answer(ref: dict[str, Any], status: int = 200) -> JSONResponse:
    """A reference as PingIDM answers a relationship: its own ``_id`` and ``_rev`` first."""
    props = ref.get("_refProperties") or {}
    body = {"_id": props.get("_id"), "_rev": props.get("_rev"), **ref}
    return JSONResponse(body, status_code=status, headers={"ETag": f'"{props.get("_rev", "")}"'})


def _patched(ctx: ApiContext, object_type: str, object_id: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
    project = ctx.project()
    resources = Resources(project, ctx.store)
    try:
        service = ManagedObjects(project, ctx.store, resources, object_type)
        with scripting(project, ctx.store, resources=resources):
            change = service.patch(object_id, operations)
    finally:
        resources.close()
    assert change.object is not None
    return change.object


def _read(ctx: ApiContext, schema: ManagedType, object_id: str) -> dict[str, Any]:
    obj = ManagedResource(ctx.store, schema).get(object_id)
    if obj is None:
        raise NotFound(f"managed/{schema.name}/{object_id} not found")
    return obj


def _create(ctx: ApiContext, schema: ManagedType, object_id: str, name: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("_ref"), str):
        raise ApiError(400, 'a relationship is created with {"_ref": "managed/TYPE/ID", "_refProperties": {...}}')
    before = {r["_refProperties"]["_id"] for r in _refs(_read(ctx, schema, object_id), name)}
    value = {"_ref": body["_ref"], "_refProperties": body.get("_refProperties") or {}}
    after = _patched(ctx, schema.name, object_id, [{"operation": "add", "field": f"/{name}/-", "value": value}])
    for ref in _refs(after, name):
        if ref["_ref"] == body["_ref"]:
            if ref["_refProperties"]["_id"] in before:
                raise ApiError(409, f"managed/{schema.name}/{object_id} {name} already holds {body['_ref']}")
            return ref
    raise ApiError(500, f"managed/{schema.name}/{object_id} {name}: the reference was not kept")


def _one(ctx: ApiContext, schema: ManagedType, object_id: str, name: str, row: str) -> tuple[int, dict[str, Any]]:
    for i, ref in enumerate(_refs(_read(ctx, schema, object_id), name)):
        if ref["_refProperties"]["_id"] == row:
            return i, ref
    raise NotFound(f"managed/{schema.name}/{object_id}/{name}/{row} not found")


def _delete(ctx: ApiContext, schema: ManagedType, object_id: str, name: str, row: str) -> dict[str, Any]:
    index, ref = _one(ctx, schema, object_id, name, row)
    _patched(ctx, schema.name, object_id, [{"operation": "remove", "field": f"/{name}/{index}"}])
    return ref


def _replace(ctx: ApiContext, schema: ManagedType, object_id: str, name: str, row: str,
             body: Any) -> dict[str, Any]:
    index, ref = _one(ctx, schema, object_id, name, row)
    if not isinstance(body, dict) or body.get("_ref", ref["_ref"]) != ref["_ref"]:
        raise ApiError(400, "a relationship's _ref cannot change: delete it and create another")
    if not isinstance(body.get("_refProperties") or {}, dict):
        raise ApiError(400, "_refProperties must be an object")
    props = {**(body.get("_refProperties") or {}), "_id": row}
    after = _patched(ctx, schema.name, object_id, [
        {"operation": "replace", "field": f"/{name}/{index}", "value": {"_ref": ref["_ref"], "_refProperties": props}}])
    return _one_of(after, name, row)


def _one_of(obj: dict[str, Any], name: str, row: str) -> dict[str, Any]:
    for ref in _refs(obj, name):
        if ref["_refProperties"]["_id"] == row:
            return ref
    raise NotFound(f"{name}/{row} not found")


def _query(ctx: ApiContext, schema: ManagedType, object_id: str, name: str, text: str | None,
           fields: Sequence[str]) -> dict[str, Any]:
    if text is None:
        raise ApiError(400, "a query needs _queryFilter (_queryFilter=true lists every reference)")
    try:
        node = None if text.strip() == "true" else parse(text)
    except QueryError as exc:
        raise ApiError(400, str(exc)) from None
    obj = _read(ctx, schema, object_id)
    if fields:
        obj = expand(ctx, schema, obj, [f"{name}/{f}" for f in fields])
    refs = [r for r in _refs(obj, name) if node is None or matches(node, r)]
    return envelope([{"_id": r["_refProperties"]["_id"], "_rev": r["_refProperties"]["_rev"], **r} for r in refs],
                    cookie=None, params=None, total=None)


def expand(ctx: ApiContext, schema: ManagedType, obj: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``obj`` with the relationship properties named ``NAME/*`` or ``NAME/FIELD`` in
    ``fields`` expanded: each reference carries the fields of the object it points to."""
    wanted: dict[str, set[str]] = {}
    for f in fields:
        name, _, sub = f.strip().strip("/").partition("/")
        if sub and name in schema.relationships:
            wanted.setdefault(name, set()).add(sub)
    types = ctx.project().managed.types
    for name, subs in wanted.items():
        value = obj.get(name)
        refs = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        by_type: dict[str, list[str]] = {}
        for ref in refs:
            by_type.setdefault(ref["_refResourceCollection"], []).append(ref["_refResourceId"])
        found: dict[str, dict[str, Any]] = {}
        for collection, ids in by_type.items():
            other = types.get(collection.split("/", 1)[1])
            if other is not None:
                for oid, o in ManagedResource(ctx.store, other).get_many(ids).items():
                    found[f"{collection}/{oid}"] = o
        for ref in refs:
            target = found.get(ref["_ref"], {})
            shown = target if "*" in subs else {k: v for k, v in target.items() if k in subs or k in ("_id", "_rev")}
            ref.update({k: v for k, v in shown.items() if not k.startswith("_ref")})
    return obj


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id, name = (request.path_params[k] for k in ("type", "id", "property"))
    schema = await run_in_threadpool(_schema, ctx, object_type, name)
    if request.method == "GET":
        raw_fields = request.query_params.get("_fields") or ""
        fields = [f.strip() for f in raw_fields.split(",") if f.strip()]
        return JSONResponse(await run_in_threadpool(_query, ctx, schema, object_id, name,
                                                    request.query_params.get("_queryFilter"), fields))
    action = request.query_params.get("_action", "create")
    if action != "create":
        raise ApiError(400, f"unknown _action {action!r} (supported: create)")
    body = await read_json(request, ctx.settings.max_body_bytes)
    return _answer(await run_in_threadpool(_create, ctx, schema, object_id, name, body), 201)


async def _member(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id, name, row = (request.path_params[k] for k in ("type", "id", "property", "ref"))
    schema = await run_in_threadpool(_schema, ctx, object_type, name)
    if request.method == "GET":
        _, ref = await run_in_threadpool(_one, ctx, schema, object_id, name, row)
        return _answer(ref)
    if request.method == "DELETE":
        return _answer(await run_in_threadpool(_delete, ctx, schema, object_id, name, row))
    body = await read_json(request, ctx.settings.max_body_bytes)
    return _answer(await run_in_threadpool(_replace, ctx, schema, object_id, name, row, body))


relationship_routes = [
    Route("/managed/{type}/{id}/{property}", _collection, methods=["GET", "POST"]),
    Route("/managed/{type}/{id}/{property}/{ref}", _member, methods=["GET", "PUT", "DELETE"]),
]
