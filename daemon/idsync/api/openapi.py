"""The API's OpenAPI 3.1 description, served at ``/openidm/openapi.json``.

Written as a table of operations rather than generated from the handlers, so
the description says what clients may rely on (PingIDM's parameters and
shapes), not whatever a handler happens to accept.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from idsync import __version__

__all__ = ["openapi", "spec"]

_QUERY = ["_queryFilter", "_queryId", "_fields", "_sortKeys", "_pageSize", "_pagedResultsCookie",
          "_pagedResultsOffset", "_totalPagedResultsPolicy"]
_INTEGER = {"_pageSize", "_pagedResultsOffset"}
_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT = {"type": "object", "additionalProperties": True}

_LIST = {"type": "array", "items": _OBJECT}

# path, method, summary, query parameters, request body, success status
_OPERATIONS: list[tuple[str, str, str, list[str], dict[str, Any] | None, str]] = [
    ("/openidm/info/ping", "get", "Health check (no credentials needed)", [], None, "200"),
    ("/openidm/recon", "get", "List recent reconciliation runs", ["mapping"], None, "200"),
    ("/openidm/recon", "post", "Start a reconciliation (_action=recon) or reconcile one object (_action=reconById)",
     ["_action", "mapping", "id", "waitForCompletion"], None, "200"),
    ("/openidm/recon/{id}", "get", "One run's summary in PingIDM's shape", [], None, "200"),
    ("/openidm/recon/{id}", "post", "Cancel a running reconciliation (_action=cancel)", ["_action"], None, "200"),
    ("/openidm/managed/{type}", "get", "Query managed objects", _QUERY, None, "200"),
    ("/openidm/managed/{type}", "post", "Create a managed object (_action=create)", ["_action"], _OBJECT, "201"),
    ("/openidm/managed/{type}/{id}", "get", "Read a managed object", ["_fields"], None, "200"),
    ("/openidm/managed/{type}/{id}", "put", "Create (If-None-Match: *) or replace (If-Match) a managed object",
     [], _OBJECT, "200"),
    ("/openidm/managed/{type}/{id}", "patch", "Patch a managed object (PingIDM patch operations)", [],
     {"type": "array", "items": _OBJECT}, "200"),
    ("/openidm/managed/{type}/{id}", "delete", "Delete a managed object", [], None, "200"),
    ("/openidm/system", "post", "Test every configured system (_action=test)", ["_action"], None, "200"),
    ("/openidm/system/{system}/{type}", "get", "Query an external system's objects", _QUERY, None, "200"),
    ("/openidm/system/{system}/{type}/{id}", "get", "Read one external object", [], None, "200"),
    ("/openidm/sync/mappings", "get", "The mappings in processing order", _QUERY, None, "200"),
    ("/openidm/config/sync", "get", "The mappings of conf/sync.json", [], None, "200"),
    ("/openidm/scheduler/job", "get", "The daemon's jobs, next fire times and last runs", [], None, "200"),
    ("/openidm/scheduler/job/{name}", "post", "Run a job now (_action=trigger)", ["_action"], None, "200"),
]


def spec() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, params, body, status in _OPERATIONS:
        parameters = [{"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
                      for p in path.split("/") if p.startswith("{")]
        parameters += [{"name": p, "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0} if p in _INTEGER else {"type": "string"}}
                       for p in params]
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": parameters,
            "responses": {status: {"description": "success", "content": {"application/json": {
                "schema": _LIST if path == "/openidm/system" else _OBJECT}}},
                          "default": {"description": "error",
                                      "content": {"application/json": {"schema": _ERROR}}}},
        }
        if path != "/openidm/info/ping":
            operation["security"] = [{"openidmHeaders": [], "openidmPassword": []}, {"basic": []}]
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "idsync", "version": __version__,
                 "description": "PingIDM-compatible REST API of the idsync daemon"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "openidmHeaders": {"type": "apiKey", "in": "header", "name": "X-OpenIDM-Username"},
                "openidmPassword": {"type": "apiKey", "in": "header", "name": "X-OpenIDM-Password"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {"Error": {"type": "object", "required": ["code", "reason", "message"], "properties": {
                "code": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"}}}},
        },
    }


async def openapi(_request: Request) -> JSONResponse:
    return JSONResponse(spec())
