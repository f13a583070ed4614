"""``/openidm/policy/managed/TYPE``: PingIDM's policy service over HTTP.

``GET`` answers the policies of a type, property by property (``required`` and
the property types included). ``POST ...?_action=validateObject`` checks a whole
object, ``_action=validateProperty`` only the properties the body holds, against
the policies, as the object ``ID`` (``unique`` does not count the object itself)
or a new one (no ``ID``, or ``*``); nothing is written. Both answer
``{"result": true|false, "failedPolicyRequirements": [...]}`` with status 200, as
PingIDM does; a change that breaks a policy is refused with 403 (``errors.py``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import read_json
from idsync.config.managed import ManagedType
from idsync.config.objectmodel import describe
from idsync.store.objects import ManagedResource
from idsync.store.validation import valid_types

__all__ = ["policy_routes"]

_ACTIONS = ("validateObject", "validateProperty")


def _schema(ctx: ApiContext, object_type: str) -> ManagedType:
    types = ctx.project().managed.types
    if object_type not in types:
        raise ApiError(404, f"Resource 'policy/managed/{object_type}' not found")
    return types[object_type]


def _described(schema: ManagedType) -> dict[str, Any]:
    return describe(schema.model, schema.name, schema.required,
                    {name: valid_types(p) for name, p in schema.properties.items()})


async def _all(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    types = ctx.project().managed.types
    return JSONResponse({"_id": "", "resources": [_described(t) for _, t in sorted(types.items())]})


async def _policy(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    schema = _schema(ctx, request.path_params["type"])
    object_id = request.path_params.get("id")
    object_id = None if object_id in (None, "*") else object_id
    if request.method == "GET":
        return JSONResponse(_described(schema))
    action = request.query_params.get("_action")
    if action not in _ACTIONS:
        raise ApiError(400, f"unknown _action {action!r} (supported: {', '.join(_ACTIONS)})")
    body = await read_json(request, ctx.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "the body is the object to validate, a JSON object")
    values = {k: v for k, v in body.items() if not k.startswith("_")}
    only = list(values) if action == "validateProperty" else None
    failures = await run_in_threadpool(ManagedResource(ctx.store, schema).check_policies, values, object_id,
                                       only=only)
    return JSONResponse({"result": not failures, "failedPolicyRequirements": failures})


policy_routes = [
    Route("/policy", _all, methods=["GET"]),
    Route("/policy/managed/{type}", _policy, methods=["GET", "POST"]),
    Route("/policy/managed/{type}/{id}", _policy, methods=["GET", "POST"]),
]
