"""``/openidm/sync/mappings``, ``/openidm/config/sync`` and ``/openidm/config/mapping/NAME``:
the mappings, read-only;
``/openidm/sync?_action=getLinkedResources`` and ``performAction``: links seen and set
by hand, and a policy's action taken by hand for one object (``sync/manual_links.py``).

``sync/mappings`` lists mappings in processing order (or as ``_sortKeys`` asks), filtered by
``_queryFilter`` and paged as PingIDM pages them: the cookie is the ``_id`` of
the first mapping of the next page (``_pagedResultsCookie`` starts there),
``_pagedResultsOffset`` counts matches, and ``totalPagedResults`` is the size of
the page returned under the ``EXACT`` policy, as PingIDM answers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, sort_objects
from idsync.config.project import Project
from idsync.managed.router import scripting
from idsync.query import matches
from idsync.resources import Resources
from idsync.sync.assess import FORCED_ACTIONS
from idsync.sync.manual_links import link, linked_resources, perform, unlink

__all__ = ["mapping_routes"]


def _ready(project: Project, resource: str) -> bool:
    parts = resource.split("/")
    if len(parts) == 2 and parts[0] == "managed":
        return parts[1] in project.managed.types
    if len(parts) == 3 and parts[0] == "system":
        provisioner = project.provisioners.get(parts[1])
        return provisioner is not None and provisioner.enabled
    return False


def _mappings(project: Project) -> list[dict[str, Any]]:
    out = []
    for m in project.mappings:
        # Keys in the order PingIDM answers them (seed 003), then the rest of the mapping.
        # As the file holds it: a value an ``&{NAME}`` token gave (a secret) is not shown.
        entry: dict[str, Any] = {"_id": m.name, "source": m.source, "target": m.target, "name": m.name,
                                 **m.written}
        entry["name"] = m.name
        entry["sourceRouteReady"] = _ready(project, m.source)
        entry["targetRouteReady"] = _ready(project, m.target)
        out.append(entry)
    return out


async def _list(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    params = QueryParams.of(request)
    found = sort_objects([m for m in _mappings(ctx.project()) if params.filter is None or matches(params.filter, m)],
                         params.sort_keys)
    start = params.offset
    if params.cookie is not None:
        ids = [m["_id"] for m in found]
        if params.cookie not in ids:
            raise ApiError(400, f"invalid _pagedResultsCookie {params.cookie!r}")
        start = ids.index(params.cookie)
    end = start + params.page_size if params.paged else len(found)
    page = [params.shape(m) for m in found[start:end]]
    return JSONResponse({
        "result": page,
        "resultCount": len(page),
        "pagedResultsCookie": found[end]["_id"] if params.paged and end < len(found) else None,
        "totalPagedResultsPolicy": "EXACT",
        "totalPagedResults": len(page),
        "remainingPagedResults": -1,
    })


async def _config_sync(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    project = ctx.project()
    return JSONResponse({"_id": "sync", "mappings": [dict(m.written) for m in project.mappings
                                                     if m.file.endswith("sync.json")]})


async def _config_mapping(request: Request) -> JSONResponse:
    """A mapping of its own file (``conf/mapping-NAME.json``) as PingIDM's ``config/mapping/NAME``
    answers it: the file's content, ``_id`` ``mapping/NAME``; those of ``sync.json`` are in
    ``config/sync``."""
    ctx: ApiContext = request.app.state.ctx
    name = request.path_params["name"]
    for m in ctx.project().mappings:
        if m.name == name and not m.file.endswith("sync.json"):
            return JSONResponse({"_id": f"mapping/{name}", **dict(m.written)})
    raise ApiError(404, f"no configuration mapping/{name} (conf/mapping-{name}.json); "
                        "the mappings of conf/sync.json are in config/sync")


def _required(request: Request, *names: str) -> list[str]:
    values = [request.query_params.get(n) or "" for n in names]
    missing = [n for n, v in zip(names, values, strict=True) if not v]
    if missing:
        raise ApiError(400, f"{request.query_params.get('_action')} needs the {', '.join(missing)} parameter"
                            + ("s" if len(missing) > 1 else ""))
    return values


def _linked(ctx: ApiContext, resource: str) -> list[dict[str, Any]]:
    project = ctx.project()
    resources = Resources(project, ctx.store)
    try:
        return [r.answer() for r in linked_resources(project, ctx.store, resources, resource)]
    finally:
        resources.close()


def _perform(ctx: ApiContext, action: str, mapping: str, params: Mapping[str, str]) -> None:
    project = ctx.project()
    source_id, target_id = params.get("sourceId") or None, params.get("targetId") or None
    qualifier = params.get("linkQualifier") or "default"
    situation = params.get("situation") or None
    recon_id = params.get("reconId") or None  # the run whose report this settles: audited there too
    on_target = "target" in params  # PingIDM's ``target`` parameter: the target phase's action
    if on_target and not target_id:
        raise ApiError(400, "performAction on a target (the target parameter) needs the targetId parameter")
    if not on_target and not source_id:
        raise ApiError(400, "performAction needs the sourceId parameter (or target=true and targetId)")
    if action == "UNLINK" and situation is None and not on_target:
        unlink(project, ctx.store, mapping, source_id or "", qualifier, recon_id)
        return
    resources = Resources(project, ctx.store)
    try:
        if action == "LINK" and situation is None and not on_target:
            if not target_id:
                raise ApiError(400, "performAction LINK needs the targetId parameter")
            link(project, ctx.store, resources, mapping, source_id or "", target_id, qualifier, recon_id)
            return
        with scripting(project, ctx.store, resources=resources):
            perform(project, ctx.store, resources, mapping, action, source_id=None if on_target else source_id,
                    target_id=target_id, situation=situation, qualifier=qualifier, recon_id=recon_id)
    finally:
        resources.close()


async def _sync(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    action = request.query_params.get("_action")
    if action == "getLinkedResources":
        (resource,) = _required(request, "resourceName")
        return JSONResponse(await run_in_threadpool(_linked, ctx, resource))
    if action == "performAction":
        mapping, what = _required(request, "mapping", "action")
        if what.upper() not in FORCED_ACTIONS:
            raise ApiError(400, f"performAction: unknown action {what!r} (actions: {', '.join(FORCED_ACTIONS)})")
        await run_in_threadpool(_perform, ctx, what.upper(), mapping, dict(request.query_params))
        return JSONResponse({"status": "OK"})
    raise ApiError(400, f"unknown _action {action!r} (supported: getLinkedResources, performAction)")


mapping_routes = [
    Route("/sync", _sync, methods=["POST"]),
    Route("/sync/mappings", _list, methods=["GET"]),
    Route("/config/sync", _config_sync, methods=["GET"]),
    Route("/config/mapping/{name}", _config_mapping, methods=["GET"]),
]
