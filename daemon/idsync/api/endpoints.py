"""``/openidm/endpoint/NAME``: a project's custom endpoints (``config/endpoints.py``).

Each request runs the endpoint's script, in a worker thread, with PingIDM's
variables: ``request`` (``method``: ``create``, ``read``, ``update``, ``patch``,
``delete``, ``query`` or ``action``; ``resourcePath``, the part of the path below
the endpoint; ``content``, the JSON body; ``additionalParameters``, the query
string's own parameters; ``newResourceId``, ``revision``, ``action``,
``patchOperations``, ``queryFilter``, ``queryId``, ``queryExpression``,
``pageSize``, ``pagedResultsCookie``, ``pagedResultsOffset``, ``sortKeys`` (``["-name"]``),
``totalPagedResultsPolicy``, ``fields``) and
``context`` (``security.authenticationId`` and ``authorization.roles``, the
caller; ``http.method`` and ``http.headers`` without credentials; ``current``,
PingIDM's older shape of the same). ``openidm`` is bound to the store as in a
mapping's script. The script's value is the answer: for a query, a list of
results (or an object with ``result``, and the paging it did: ``pagedResultsCookie``,
``totalPagedResults``...), wrapped as PingIDM wraps query results.

The script throwing ``{"code": 404, "message": "..."}`` answers that status
(4xx and 5xx) and message; any other error is a 500 naming the endpoint, logged
with the script's message.

How HTTP maps to the request's ``method``, as PingIDM's REST layer does: ``GET``
is ``read``, or ``query`` with ``_queryFilter``/``_queryId``/``_queryExpression``;
``POST`` is ``action`` (``_action``), or ``create`` (``_action=create``, or none);
``PUT`` is ``update`` (``create`` with ``If-None-Match: *``); ``PATCH`` is ``patch``;
``DELETE`` is ``delete``.
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.config.endpoints import Endpoint
from idsync.errors import IdsyncError, ScriptError
from idsync.managed.router import scripting
from idsync.scripts import Script
from idsync.store import strict_json

__all__ = ["endpoint_routes", "script_context", "script_failure", "script_request", "thrown_status"]

log = structlog.get_logger("idsync.api")

_QUERY = ("_queryFilter", "_queryId", "_queryExpression")
# What a query's script may answer of its paging besides its results.
_PAGING = ("pagedResultsCookie", "totalPagedResultsPolicy", "totalPagedResults", "remainingPagedResults")
_RESERVED = {"_action", "_fields", "_prettyPrint", "_pageSize", "_pagedResultsCookie", "_pagedResultsOffset",
             "_sortKeys", "_totalPagedResultsPolicy", "_mimeType", *_QUERY}
_SECRET_HEADERS = {"authorization", "cookie", "x-openidm-password", "x-openidm-username"}
_MAX_BODY = 1_048_576


async def _serve(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    project = ctx.project()
    name = request.path_params["name"]
    path = request.path_params.get("path", "")
    endpoint = project.endpoints.get(name)
    if endpoint is None or (path and not endpoint.subpaths):
        raise ApiError(404, f"Resource 'endpoint/{name}{'/' + path if path else ''}' not found")
    call = await script_request(request, path)
    user = getattr(request.state, "user", None)
    variables = {"request": call, "context": script_context(request, user)}
    result = await run_in_threadpool(_run, ctx, project, endpoint, variables)
    if call["method"] == "query":
        return JSONResponse(_query_answer(result))
    if result is None and call["method"] != "action":
        # PingIDM answers a resource that a create, read, update, patch or delete script did
        # not give as missing; an action's answer may be null, and is answered so.
        raise ApiError(404, f"endpoint/{name}: script returned null")
    return JSONResponse(result)


def _run(ctx: ApiContext, project: Any, endpoint: Endpoint, variables: dict[str, Any]) -> Any:
    try:
        with scripting(project, ctx.store):
            return endpoint.script(**variables)
    except ScriptError as exc:
        thrown = thrown_status(exc)
        if thrown is not None:
            log.info("endpoint.refused", endpoint=endpoint.name, status=thrown.code, error=str(exc))
            raise thrown from None
        log.warning("endpoint.failed", endpoint=endpoint.name, error=str(exc))
        raise ApiError(500, f"endpoint/{endpoint.name}: the script failed: {script_failure(exc, endpoint.script)}") \
            from None
    except IdsyncError as exc:
        log.warning("endpoint.failed", endpoint=endpoint.name, error=str(exc))
        raise ApiError(500, f"endpoint/{endpoint.name}: {exc}") from None


def script_failure(exc: ScriptError, script: Script) -> str:
    """What a client is told of a script that failed: the error, without where the script
    lives (the server's files, which the log keeps)."""
    return str(exc).removeprefix(f"{exc.where or script.name}: ")


def thrown_status(exc: ScriptError) -> ApiError | None:
    """The answer a thrown ``{code, message}`` or ``{code, message, detail}`` asks for
    (PingIDM's way to answer an error): its status, message and detail."""
    if exc.status is None:
        return None
    return ApiError(exc.status, exc.thrown_message or "", detail=exc.thrown_detail)


async def script_request(request: Request, path: str) -> dict[str, Any]:
    """PingIDM's ``request`` of a script serving this HTTP request (a custom endpoint's, a
    managed object's action), ``path`` its ``resourcePath``."""
    params = request.query_params
    method = request.method
    action = params.get("_action")
    query = next((q for q in _QUERY if q in params), None)
    if method == "GET":
        kind = "query" if query else "read"
    elif method == "POST":
        kind = "create" if action in (None, "create") else "action"
    elif method == "PUT":
        kind = "create" if request.headers.get("if-none-match") == "*" else "update"
    elif method == "PATCH":
        kind = "patch"
    else:
        kind = "delete"
    body = await _body(request) if method in ("POST", "PUT", "PATCH") else None
    call: dict[str, Any] = {
        "method": kind,
        "resourcePath": path,
        "resourcePathObject": path.split("/") if path else [],
        "additionalParameters": {k: v for k, v in params.items() if k not in _RESERVED},
        "fields": [f for f in params.get("_fields", "").split(",") if f],
        "content": body if kind != "patch" else None,
        "revision": (request.headers.get("if-match") or "").strip('"') or None,
        "newResourceId": path.rsplit("/", 1)[-1] if kind == "create" and method == "PUT" and path else None,
    }
    if kind == "action":
        call["action"] = action
    if kind == "patch":
        call["patchOperations"] = body if isinstance(body, list) else []
    if kind == "query":
        call.update(queryFilter=params.get("_queryFilter"), queryId=params.get("_queryId"),
                    queryExpression=params.get("_queryExpression"),
                    pageSize=_int(params.get("_pageSize"), "_pageSize"),
                    pagedResultsCookie=params.get("_pagedResultsCookie"),
                    pagedResultsOffset=_int(params.get("_pagedResultsOffset"), "_pagedResultsOffset"),
                    sortKeys=[k.strip() for k in params.get("_sortKeys", "").split(",") if k.strip()],
                    totalPagedResultsPolicy=params.get("_totalPagedResultsPolicy", "NONE").upper())
    return call


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ApiError(413, f"the body is larger than {_MAX_BODY} bytes")
    if not raw.strip():
        return None
    try:
        return strict_json.loads(raw)
    except strict_json.UnfitNumber as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None


def _int(value: str | None, name: str) -> int:
    if value is None or value == "":
        return 0
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name}: expected a whole number, not {value!r}") from None
    if number < 0:
        raise ApiError(400, f"{name}: expected 0 or more")
    return number


def script_context(request: Request, user: str | None) -> dict[str, Any]:
    """PingIDM's ``context`` of such a script: the caller and the HTTP request, without credentials."""
    security = {"authenticationId": user, "authorization": {"id": user, "component": "internal/user",
                                                           "roles": ["internal/role/openidm-admin",
                                                                     "internal/role/openidm-authorized"]}}
    http = {"method": request.method, "path": request.url.path,
            "headers": {k: v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS}}
    return {"security": security, "http": http, "current": {"security": security, "http": http}}


def _query_answer(result: Any) -> dict[str, Any]:
    """The script's results in PingIDM's query envelope, with the paging it answered (its
    ``pagedResultsCookie``, ``totalPagedResults``...), when it answered an object."""
    if isinstance(result, dict) and isinstance(result.get("result"), list):
        found, paging = result["result"], result
    elif isinstance(result, list):
        found, paging = result, {}
    else:
        raise ApiError(500, "a query endpoint's script must answer a list of results (or {result: [...]})")
    answer = {"result": found, "resultCount": len(found), "pagedResultsCookie": None,
              "totalPagedResultsPolicy": "NONE", "totalPagedResults": -1, "remainingPagedResults": -1}
    answer.update((k, paging[k]) for k in _PAGING if paging.get(k) is not None)
    return answer


endpoint_routes = [
    Route("/endpoint/{name}", _serve, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    Route("/endpoint/{name}/{path:path}", _serve, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
