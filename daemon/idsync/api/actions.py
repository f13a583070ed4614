"""``POST /openidm/managed/TYPE/ID?_action=NAME``: a managed type's custom actions
(``managed.json``'s ``actions``, compiled by ``config/actions.py``), as PingIDM runs them.

The object is read (with ``_fields`` when given) and the action's script runs, in a
worker thread, with ``object`` (the object as read), ``request`` (PingIDM's: method
``action``, ``action``, ``resourcePath`` ``managed/TYPE/ID``, ``content`` the body,
``additionalParameters`` the query string's own parameters, ``fields``),
``resourcePath`` and ``context``, built as for a custom endpoint (``endpoints.py``),
and ``openidm`` bound to the store. What the script changes in ``object`` is not
stored: only what it does through ``openidm`` (``openidm.patch(resourcePath, ...)``)
is. Its value is ignored; the answer is the object read again.

PingIDM's own instance actions come first: ``patch`` (the body a list of patch
operations, ``If-Match`` honoured, as ``PATCH``) and ``triggerSyncCheck`` (the object
pushed through its mappings as it is now; a target in step is not written). An
action the type does not have is 400 ``Action NAME is not supported.`` (PingIDM's
words); one whose
script loads a module of PingIDM's that idsync does not provide is 501 with why
(the default ``resetPassword`` is served: ``scripts/modules.py`` has ``ui/resetPassword``);
a missing object 404.
A thrown ``{code, message}`` answers that status; any other failure is a 500 naming
the action, logged (``managed.action_failed``).
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.endpoints import script_context, script_failure, script_request, thrown_status
from idsync.api.errors import ApiError
from idsync.api.managed import changed_view, if_match, managed_type, read_managed
from idsync.api.query import read_json
from idsync.config.actions import ManagedAction
from idsync.errors import ScriptError
from idsync.managed.router import scripting

__all__ = ["action_routes"]

log = structlog.get_logger("idsync.api")


async def _act(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    object_type, object_id = request.path_params["type"], request.path_params["id"]
    schema = managed_type(ctx, object_type)
    name = request.query_params.get("_action")
    if not name:
        raise ApiError(400, f"POST managed/{object_type}/ID runs one of the type's actions: give _action "
                            f"(managed.json defines {', '.join(sorted(schema.actions)) or 'none'})")
    # PingIDM's own instance actions come before a type's.
    fields = request.query_params.get("_fields")
    if name == "patch":
        body = await read_json(request, ctx.settings.max_body_bytes)
        return JSONResponse(await run_in_threadpool(changed_view, ctx, object_type, "patch", object_id, body,
                                                    if_match(request), fields))
    if name == "triggerSyncCheck":
        return JSONResponse(await run_in_threadpool(changed_view, ctx, object_type, "sync_check", object_id,
                                                    None, None, fields))
    action = schema.actions.get(name)
    if action is None:
        raise ApiError(400, f"Action {name} is not supported.")
    if action.script is None:
        raise ApiError(501, f"Action {name} of managed/{object_type} is not served by idsync: {action.why}")
    call = await script_request(request, f"managed/{object_type}/{object_id}")
    variables = {"request": call, "resourcePath": call["resourcePath"],
                 "context": script_context(request, getattr(request.state, "user", None))}
    return JSONResponse(await run_in_threadpool(_run, ctx, action, object_type, object_id, fields, variables))


def _run(ctx: ApiContext, action: ManagedAction, object_type: str, object_id: str, fields: str | None,
         variables: dict[str, Any]) -> dict[str, Any]:
    """Read the object, run the action on it, and read it again (what the script did through ``openidm``)."""
    assert action.script is not None
    obj = read_managed(ctx, object_type, object_id, fields)
    try:
        with scripting(ctx.project(), ctx.store):
            action.script(object=obj, **variables)
    except ScriptError as exc:
        thrown = thrown_status(exc)
        if thrown is not None:
            log.info("managed.action_refused", resource=f"managed/{object_type}", object_id=object_id,
                     action=action.name, status=thrown.code, error=str(exc))
            raise thrown from None
        log.warning("managed.action_failed", resource=f"managed/{object_type}", object_id=object_id,
                    action=action.name, error=str(exc))
        raise ApiError(500, f"managed/{object_type}/{object_id} action {action.name}: the script failed: "
                            f"{script_failure(exc, action.script)}") from None
    return read_managed(ctx, object_type, object_id, fields)


action_routes = [Route("/managed/{type}/{id}", _act, methods=["POST"])]
