"""The API's OpenAPI 3.1 description, served at ``/openidm/openapi.json``.

Written as a table of operations rather than generated from the handlers, so
the description says what clients may rely on (PingIDM's parameters and
shapes), not whatever a handler happens to accept. The answer schemas name the
fields a PingIDM script reads (the query envelope, a recon's ``_id`` and
``state``), so a property-based run checks them on every generated request.
Names that come from the configuration (managed types, systems, mappings) and
the ``_action`` of each operation are listed as enums, so a client (or a
generator of requests) sees what this deployment serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request

from idsync import __version__
from idsync.api.answer import JSONResponse
from idsync.config.managed import ManagedType, PropertyDef
from idsync.config.project import Project

__all__ = ["openapi", "spec"]

_QUERY = ["_queryFilter", "_queryId", "_fields", "_sortKeys", "_pageSize", "_pagedResultsCookie",
          "_pagedResultsOffset", "_totalPagedResultsPolicy"]
_INTEGER = {"_pageSize", "_pagedResultsOffset"}
_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
_MANAGED = {"$ref": "#/components/schemas/ManagedObject"}
_PAGED = {"$ref": "#/components/schemas/QueryResult"}
_RUN = {"type": "object", "required": ["_id", "state"], "properties": {
    "_id": {"type": "string"}, "state": {"type": "string"}}}
_RUNS = {"type": "object", "required": ["reconciliations"], "properties": {
    "reconciliations": {"type": "array", "items": {"$ref": "#/components/schemas/ReconSummary"}}}}
_SYSTEM = {"type": "object", "required": ["name", "enabled", "config"], "properties": {
    "name": {"type": "string"}, "enabled": {"type": "boolean"}, "config": {"type": "string"},
    "objectTypes": {"type": "array", "items": {"type": "string"}}, "ok": {"type": "boolean"},
    "error": {"type": "string"}}}
_SYSTEMS = {"type": "array", "items": _SYSTEM}
_TEXT = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_LIVESYNC = {"type": "object", "required": ["source", "state", "changes", "method", "fullRecon", "duration", "runs"],
             "properties": {
                 "source": {"type": "string"}, "state": {"enum": ["SUCCESS", "FAILED", "CANCELED"]},
                 "changes": _COUNT, "method": _TEXT, "fullRecon": _TEXT, "note": _TEXT, "error": _TEXT,
                 "duration": _COUNT, "retried": _COUNT, "failed": _COUNT, "givenUp": _COUNT,
                 "runs": {"type": "array", "items": {"type": "object", "required": ["mapping", "id", "state"]}},
                 "onward": {"type": "array", "items": _OBJECT}}}
# A whole system's liveSync (PingIDM's __ALL__ object type): each type's run, and their sum.
_LIVESYNC_ALL = {"type": "object", "required": ["source", "state", "changes", "duration", "sources"],
                 "properties": {"source": {"type": "string"}, "state": {"enum": ["SUCCESS", "FAILED", "CANCELED"]},
                                "changes": _COUNT, "duration": _COUNT,
                                "sources": {"type": "array", "items": _LIVESYNC}}}
_ACTION = {"type": "object", "required": ["_id", "status"], "properties": {
    "_id": {"type": "string"}, "status": {"type": "string"}}}
_TASK = {"type": "object", "required": ["_id", "progress"], "properties": {
    "_id": {"type": "string"}, "name": {"type": "string"}, "progress": {
        "type": "object", "required": ["state", "processed", "total", "successes", "failures"], "properties": {
            "state": {"type": "string"}, "processed": {"type": "integer"}, "total": {"type": "integer"},
            "successes": {"type": "integer"}, "failures": {"type": "integer"}}}}}
_TASKS = {"type": "object", "required": ["tasks"], "properties": {"tasks": {"type": "array", "items": _TASK}}}
_REFERENCE = {"type": "object", "required": ["_ref"], "additionalProperties": True, "properties": {
    "_ref": {"type": "string"}, "_refProperties": {"type": "object"}}}
_CONTENT = {"type": "object", "additionalProperties": True}  # an action's body: the script's request.content
_ADDRESSES = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_MAIL = {"type": "object", "additionalProperties": True, "properties": {
    "from": {"type": "string"}, "to": _ADDRESSES, "cc": _ADDRESSES, "bcc": _ADDRESSES, "subject": {"type": "string"},
    "body": {"type": "string"}, "type": {"enum": ["text/plain", "text/html", "text/xml"]}}}
_SENT = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"},
                                                                  "message": {"type": "string"}}}
_PATCH = {"type": "array", "items": {"type": "object", "required": ["operation", "field"], "properties": {
    "operation": {"type": "string"}, "field": {"type": "string"}, "value": {}}}}

# Listed when the project has conf/external.email.json.
_EMAIL = "/openidm/external/email"
# path, method, summary, query parameters, request body, {success status: answer schema}
_OPERATIONS: list[tuple[str, str, str, list[str], dict[str, Any] | None, dict[str, dict[str, Any]]]] = [
    ("/openidm/info/ping", "get", "Health check (no credentials needed)", [], None, {"200": {
        "type": "object", "required": ["state"], "properties": {"state": {"type": "string"}}}}),
    ("/openidm/info/version", "get", "The daemon's version", [], None, {"200": _OBJECT}),
    ("/openidm/openapi.json", "get", "This description", [], None, {"200": _OBJECT}),
    ("/openidm/recon", "get", "List recent reconciliation runs", ["mapping"], None, {"200": _RUNS}),
    ("/openidm/sync", "post", "The objects linked to one (_action=getLinkedResources&resourceName=...), or a "
     "policy's action taken by hand for one object, whatever the policies say (_action=performAction&mapping=..."
     "&action=CREATE|UPDATE|DELETE|LINK|UNLINK|EXCEPTION|IGNORE|REPORT|NOREPORT|ASYNC&sourceId=...[&targetId=...]"
     "[&situation=...][&reconId=... the run whose report it settles, which audits it too]; target=true&targetId=... "
     "for a target as the target phase sees it)",
     ["_action", "resourceName", "mapping", "action", "sourceId", "targetId", "target", "situation",
      "linkQualifier", "reconId"], None,
     {"200": {}}),
    ("/openidm/audit/{topic}", "get", "Query audit events: recon (what each recon did to each object) or sync "
     "(implicit sync and liveSync), by PingIDM's field names; time order, -timestamp newest first", _QUERY, None,
     {"200": _PAGED}),
    ("/openidm/audit/{topic}/{id}", "get", "One audit event", [], None, {"200": _OBJECT}),
    ("/openidm/repo/synchronisation/pooledSyncStage/{id}", "get", "A source's liveSync position (SYSTEMLDAPACCOUNT "
     "for system/ldap/account): whether a token is stored, how it was read, when it moved", [], None,
     {"200": _OBJECT}),
    ("/openidm/repo/synchronisation/pooledSyncStage/{id}", "delete", "Forget a source's liveSync token: its next "
     "run reconciles in full and stores a fresh one", [], None, {"200": _OBJECT}),
    ("/openidm/repo/synchronisation/deadLetterQueue/{system}", "get", "The changes of a system liveSync gave up "
     "on and kept (syncFailureHandler postRetryAction dead-letter-queue), one per object", _QUERY, None,
     {"200": _PAGED}),
    ("/openidm/repo/synchronisation/deadLetterQueue/{system}/{id}", "get", "One dead letter", [], None,
     {"200": _OBJECT}),
    ("/openidm/repo/synchronisation/deadLetterQueue/{system}/{id}", "delete", "Remove a dead letter once dealt "
     "with", [], None, {"200": _OBJECT}),
    ("/openidm/repo/link", "get", "The links as PingIDM's repository answers them (linkType, linkQualifier, "
     "firstId: the owning mapping's source object, secondId: its target), in _id order", _QUERY, None,
     {"200": _PAGED}),
    ("/openidm/repo/link/{id}", "get", "One link", [], None, {"200": _OBJECT}),
    ("/openidm/recon", "post", "Start a reconciliation (_action=recon) or reconcile one object (_action=reconById)",
     ["_action", "mapping", "id", "waitForCompletion", "rewriteWriteOnly", "analyze", "persistAssociations"], None,
     {"200": _RUN}),
    ("/openidm/recon/assoc", "get", "Reconciliation association summaries, newest first: each recon's mapping, "
     "source and target collections, isAnalysis (a dry run) and finishTime", _QUERY, None, {"200": _PAGED}),
    ("/openidm/recon/assoc/{id}", "get", "One recon's association summary", [], None, {"200": _OBJECT}),
    ("/openidm/recon/assoc/{id}/entry", "get", "What one recon found for each object (its audit entries by "
     "PingIDM's association names: sourceObjectId, targetObjectId, situation, action, status, phase...)", _QUERY,
     None, {"200": _PAGED}),
    ("/openidm/recon/{id}", "get", "One run's summary in PingIDM's shape", [], None,
     {"200": {"$ref": "#/components/schemas/ReconSummary"}}),
    ("/openidm/recon/{id}", "post", "Cancel a running reconciliation (_action=cancel)", ["_action"], None,
     {"200": _ACTION}),
    ("/openidm/recon/{id}", "delete", "Purge a finished reconciliation's statistics (its record and audit); "
     "answers its summary as it was", [], None, {"200": {"$ref": "#/components/schemas/ReconSummary"}}),
    ("/openidm/managed/{type}", "get", "Query managed objects", _QUERY, None, {"200": _PAGED}),
    ("/openidm/managed/{type}", "post", "Create a managed object (_action=create)", ["_action", "_id"], _OBJECT,
     {"201": _MANAGED}),
    ("/openidm/managed/{type}/{id}", "get", "Read a managed object", ["_fields"], None, {"200": _MANAGED}),
    ("/openidm/managed/{type}/{id}", "put", "Create (If-None-Match: *) or replace (If-Match) a managed object",
     [], _OBJECT, {"200": _MANAGED, "201": _MANAGED}),
    ("/openidm/managed/{type}/{id}", "patch", "Patch a managed object (PingIDM patch operations)", [], _PATCH,
     {"200": _MANAGED}),
    ("/openidm/managed/{type}/{id}", "delete", "Delete a managed object (answers it as it was)", [], None,
     {"200": _MANAGED}),
    ("/openidm/managed/{type}/{id}", "post", "Run an action on the object: PingIDM's patch (a body of patch "
     "operations) or triggerSyncCheck (push it through its mappings now), or one of the type's custom actions "
     "(managed.json's actions); answers the object read again", ["_action", "_fields"], _CONTENT,
     {"200": _MANAGED}),
    ("/openidm/managed/{type}/{id}/{property}", "get", "Query one object's references in a relationship property",
     _QUERY, None, {"200": _PAGED}),
    ("/openidm/managed/{type}/{id}/{property}", "post", "Add a reference to a relationship property (_action=create)",
     ["_action"], _REFERENCE, {"201": _REFERENCE}),
    ("/openidm/managed/{type}/{id}/{property}/{ref}", "get", "Read one reference", [], None, {"200": _REFERENCE}),
    ("/openidm/managed/{type}/{id}/{property}/{ref}", "put", "Replace one reference's _refProperties", [],
     _REFERENCE, {"200": _REFERENCE}),
    ("/openidm/managed/{type}/{id}/{property}/{ref}", "delete", "Remove one reference (answers it)", [], None,
     {"200": _REFERENCE}),
    ("/openidm/system", "get", "The configured systems", [], None, {"200": _SYSTEMS}),
    ("/openidm/system", "post", "Test every configured system (_action=test), or run liveSync of a source now "
     "(_action=liveSync&source=system/NAME/TYPE, or system/NAME for each of its object types a mapping reads)",
     ["_action", "source"], None, {"200": {"anyOf": [_SYSTEMS, _LIVESYNC, _LIVESYNC_ALL]}}),
    ("/openidm/system/{system}", "post", "Test one configured system (_action=test), or run liveSync of each of "
     "its object types a mapping reads, in the provisioner's order of objectTypes (_action=liveSync); 409 when "
     "one of them already runs, its detail listing the types that ran before", ["_action"], None,
     {"200": {"anyOf": [_SYSTEM, _LIVESYNC_ALL]}}),
    ("/openidm/system/{system}/{type}", "get", "Query an external system's objects", _QUERY, None,
     {"200": _PAGED}),
    ("/openidm/system/{system}/{type}", "post", "Run one liveSync of the source now and answer its outcome once "
     "it ended (_action=liveSync; the type __ALL__ for each object type); 409 while another liveSync of it runs",
     ["_action"], None, {"200": {"anyOf": [_LIVESYNC, _LIVESYNC_ALL]}}),
    ("/openidm/system/{system}/{type}/{id}", "get", "Read one external object", [], None, {"200": {
        "type": "object", "required": ["_id"], "properties": {"_id": {"type": "string"}}}}),
    ("/openidm/sync/mappings", "get", "The mappings in processing order (or as _sortKeys asks)", _QUERY, None,
     {"200": _PAGED}),
    ("/openidm/config/sync", "get", "The mappings of conf/sync.json", [], None, {"200": {
        "type": "object", "required": ["_id", "mappings"], "properties": {
            "_id": {"type": "string"}, "mappings": {"type": "array", "items": _OBJECT}}}}),
    ("/openidm/config/mapping/{name}", "get", "A mapping of its own file (conf/mapping-NAME.json)", [], None,
     {"200": {"type": "object", "required": ["_id", "name"], "properties": {"_id": {"type": "string"}}}}),
    ("/openidm/scheduler/job", "get", "The daemon's jobs, next fire times and last runs (all of them without a "
     "_queryFilter)", _QUERY, None, {"200": _PAGED}),
    ("/openidm/scheduler/job/{name}", "get", "One job", [], None, {"200": {"$ref": "#/components/schemas/Job"}}),
    ("/openidm/scheduler/job/{name}", "post", "Run a job now (_action=trigger)", ["_action"], None,
     {"200": _ACTION}),
    ("/openidm/cluster", "get", "The nodes of a cluster, alive or down, and what each runs (all of them without a "
     "_queryFilter)", _QUERY, None, {"200": _PAGED}),
    ("/openidm/taskscanner", "get", "The task scans' runs, newest first", [], None, {"200": _TASKS}),
    ("/openidm/taskscanner", "post", "Run a schedule's task scan now (_action=execute&name=schedule/NAME)",
     ["_action", "name"], None, {"200": _ACTION}),
    ("/openidm/taskscanner/{id}", "get", "One task scan's run", [], None, {"200": _TASK}),
    ("/openidm/taskscanner/{id}", "post", "Cancel a running task scan (_action=cancel)", ["_action"], None,
     {"200": _ACTION}),
    (_EMAIL, "post", "Send an email through conf/external.email.json's SMTP server (_action=send)", ["_action"],
     _MAIL, {"200": _SENT}),
]
# Optimistic concurrency, as PingIDM takes it: a revision, or * for "must (not) exist".
_CONDITIONS = {"put": ["If-Match", "If-None-Match"], "patch": ["If-Match"], "delete": ["If-Match"]}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["code", "reason", "message"], "properties": {
        "code": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"},
        "detail": {"description": "what the error leaves to say (a policy's failed requirements, the runs a "
                                  "whole system's liveSync made before a 409)"}}},
    "ManagedObject": {"type": "object", "required": ["_id", "_rev"], "additionalProperties": True,
                      "properties": {"_id": {"type": "string"}, "_rev": {"type": "string"}}},
    "QueryResult": {
        "type": "object",
        "required": ["result", "resultCount", "pagedResultsCookie", "totalPagedResultsPolicy", "totalPagedResults",
                     "remainingPagedResults"],
        "properties": {
            "result": {"type": "array", "items": {"type": "object", "required": ["_id"]}},
            "resultCount": {"type": "integer", "minimum": 0},
            "pagedResultsCookie": {"type": ["string", "null"]},
            "totalPagedResultsPolicy": {"enum": ["NONE", "EXACT"]},
            "totalPagedResults": {"type": "integer", "minimum": -1},
            "remainingPagedResults": {"type": "integer", "minimum": -1},
        },
    },
    "ReconSummary": {
        "type": "object",
        "required": ["_id", "mapping", "state", "stage", "progress", "situationSummary", "statusSummary",
                     "durationSummary", "started", "ended", "duration"],
        "properties": {
            "_id": {"type": "string"}, "mapping": {"type": "string"},
            "state": {"enum": ["ACTIVE", "SUCCESS", "FAILED", "CANCELED"]}, "stage": {"type": "string"},
            "progress": _OBJECT, "situationSummary": _OBJECT, "statusSummary": _OBJECT, "durationSummary": _OBJECT,
            "started": {"type": "string"}, "ended": {"type": "string"}, "duration": {"type": ["integer", "null"]},
        },
    },
    "Job": {"type": "object", "required": ["_id", "enabled", "schedule", "nextRunDate", "running", "lastRun"],
            "properties": {"_id": {"type": "string"}, "enabled": {"type": "boolean"},
                           "schedule": {"type": "string"}, "nextRunDate": {"type": ["string", "null"]},
                           "running": {"type": "boolean"}, "lastRun": {"type": ["object", "null"]},
                           "heldBy": {"type": "object", "description": "the job's mappings (or liveSync sources) "
                                      "its schedule's fires leave out, each with the provisioner files that "
                                      "disable their system"}}},
}


_ACTIONS = {("/openidm/recon", "post"): ["recon", "reconById"], ("/openidm/recon/{id}", "post"): ["cancel"],
            ("/openidm/managed/{type}", "post"): ["create"], ("/openidm/system", "post"): ["test", "liveSync"],
            ("/openidm/system/{system}", "post"): ["test", "liveSync"],
            ("/openidm/system/{system}/{type}", "post"): ["liveSync"],
            ("/openidm/managed/{type}/{id}/{property}", "post"): ["create"],
            ("/openidm/scheduler/job/{name}", "post"): ["trigger"], ("/openidm/taskscanner", "post"): ["execute"],
            ("/openidm/taskscanner/{id}", "post"): ["cancel"], (_EMAIL, "post"): ["send", "sendEmail"],
            ("/openidm/sync", "post"): ["getLinkedResources", "performAction"]}
# An object's POST runs PingIDM's instance actions and its type's own (managed.json): their names the enum.
_CUSTOM_ACTION = ("/openidm/managed/{type}/{id}", "post")
# create is also what a bare POST does
_OPTIONAL_ACTION = {("/openidm/managed/{type}", "post"), ("/openidm/managed/{type}/{id}/{property}", "post")}
_ENUMS = {"_queryId": ["query-all-ids"], "_totalPagedResultsPolicy": ["NONE", "EXACT"],
          "waitForCompletion": ["true", "false"], "rewriteWriteOnly": ["true", "false"], "analyze": ["true", "false"],
          "persistAssociations": ["true", "false"], "topic": ["recon", "sync"],
          "action": ["LINK", "UNLINK"]}


def _schema(name: str, path: str, method: str, names: dict[str, list[str]]) -> dict[str, Any]:
    if name in _INTEGER:
        return {"type": "integer", "minimum": 0}
    if name == "_action" and "_action" in names:
        return {"enum": names["_action"]}
    if name == "_action" and (path, method) in _ACTIONS:
        return {"enum": _ACTIONS[(path, method)]}
    if name in ("system", "mapping") and names[name]:
        return {"enum": names[name]}
    if name in _ENUMS:
        return {"enum": _ENUMS[name]}
    return {"type": "string"}


def _parameters(path: str, generic: str, method: str, query: list[str],
                names: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``path``'s parameters; ``generic`` is its row in the table (``managed/{type}`` for a managed type)."""
    out = [{"name": p.strip("{}"), "in": "path", "required": True, "schema": _schema(p.strip("{}"), path, method,
                                                                                        names)}
           for p in path.split("/") if p.startswith("{")]
    path = generic
    required = ((path, method) in _ACTIONS or "_action" in names) and (path, method) not in _OPTIONAL_ACTION
    out += [{"name": p, "in": "query", "required": p == "_action" and required,
             "schema": _schema(p, path, method, names)} for p in query]
    if path.startswith("/openidm/managed/"):
        out += [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                for h in _CONDITIONS.get(method, [])]
    return out


def _property(prop: PropertyDef) -> dict[str, Any] | None:
    if prop.type == "relationship":
        return None
    if prop.type == "array":
        return {"type": "array", "items": {"type": prop.items}} if prop.items not in (None, "relationship") else {
            "type": "array"}
    return {"type": prop.type}


def _managed_body(managed: ManagedType) -> dict[str, Any]:
    """What managed.json says an object of this type holds (validated the same way on write)."""
    properties = {n: schema for n, p in managed.properties.items() if (schema := _property(p)) is not None}
    return {"type": "object", "required": list(managed.required), "properties": properties,
            "additionalProperties": True}


def _managed_answer(managed: ManagedType) -> dict[str, Any]:
    """An object as answered: ``_id`` and ``_rev`` always, a secret or private property never."""
    properties: dict[str, Any] = {"_id": {"type": "string"}, "_rev": {"type": "string"}}
    properties.update({name: False for name in sorted(managed.secrets | managed.private)})
    return {"type": "object", "required": ["_id", "_rev"], "properties": properties, "additionalProperties": True}


def _operation_id(path: str, method: str) -> str:
    words = [w.strip("{}_") for w in path.removeprefix("/openidm/").replace(".", "/").split("/") if w]
    return method + "".join(w[:1].upper() + w[1:] for w in words)


def _operations(project: Project) -> list[tuple[str, str, str, list[str], dict[str, Any] | None,
                                                dict[str, dict[str, Any]]]]:
    """The table, with one path per managed type of managed.json (each with its own body and answer)."""
    out = []
    for path, method, summary, params, body, answers in _OPERATIONS:
        if not path.startswith("/openidm/managed/{type}"):
            if path != _EMAIL or project.email is not None:
                out.append((path, method, summary, params, body, answers))
            continue
        for name, managed in sorted(project.managed.types.items()):
            typed = {status: _managed_answer(managed) if schema is _MANAGED else schema
                     for status, schema in answers.items()}
            typed_body = _managed_body(managed) if body is _OBJECT else body
            out.append((path.replace("{type}", name), method, summary, params, typed_body, typed))
    for name, endpoint in sorted(project.endpoints.items()):
        paths = [f"/openidm/endpoint/{name}"] + ([f"/openidm/endpoint/{name}/{{path}}"] if endpoint.subpaths else [])
        for path in paths:
            for method in ("get", "post", "put", "patch", "delete"):
                out.append((path, method, f"Custom endpoint {name} ({Path(endpoint.file).name}): its script "
                           "answers", [], {} if method in ("post", "put", "patch") else None, {"200": {}}))
    return out


def _served_actions(managed: ManagedType) -> list[str]:
    own = {name for name, action in managed.actions.items() if action.script is not None}
    return sorted(own | {"patch", "triggerSyncCheck"})


def _links(path: str, method: str, status: str) -> dict[str, Any]:
    """Where the ``_id`` of a created object or a started run can be used next (OpenAPI links)."""
    if path.startswith("/openidm/managed/") and path.count("/") == 3 and method == "post":
        return {m: {"operationId": _operation_id(path + "/{id}", m), "parameters": {"id": "$response.body#/_id"}}
                for m in ("get", "put", "patch", "delete")}
    if path == "/openidm/recon" and method == "post" and status == "200":
        return {m: {"operationId": _operation_id("/openidm/recon/{id}", m),
                    "parameters": {"id": "$response.body#/_id"}} for m in ("get", "post")}
    return {}


def spec(project: Project) -> dict[str, Any]:
    """The description of the API serving ``project``."""
    names = {"system": sorted(project.provisioners), "mapping": [m.name for m in project.mappings]}
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, params, body, answers in _operations(project):
        generic = path.replace(path.split("/")[3], "{type}", 1) if path.startswith("/openidm/managed/") else path
        here = names
        if (generic, method) == _CUSTOM_ACTION:
            here = {**names, "_action": _served_actions(project.managed.types[path.split("/")[3]])}
        responses: dict[str, Any] = {}
        for status, schema in answers.items():
            responses[status] = {"description": "success", "content": {"application/json": {"schema": schema}}}
            if links := _links(path, method, status):
                responses[status]["links"] = links
        responses["default"] = {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        operation: dict[str, Any] = {"operationId": _operation_id(path, method), "summary": summary,
                                     "parameters": _parameters(path, generic, method, params, here),
                                     "responses": responses}
        if path != "/openidm/info/ping":
            operation["security"] = [{"openidmHeaders": [], "openidmPassword": []}, {"basic": []}]
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = operation
    paths["/metrics"] = {"get": {
        "operationId": "getMetrics",
        "summary": "Prometheus metrics (runs by state, objects by situation and action, durations, job successes)",
        "security": [{"basic": []}, {"openidmHeaders": [], "openidmPassword": []}],
        "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                      "default": {"description": "error", "content": {"application/json": {"schema": _ERROR}}}},
    }}
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
            "schemas": _SCHEMAS,
        },
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(spec(request.app.state.ctx.project()))
