"""``/openidm/sync/mappings`` and ``/openidm/config/sync``: the mappings, read-only.

``sync/mappings`` lists mappings in processing order, filtered by
``_queryFilter`` and paged as PingIDM pages them: the cookie is the ``_id`` of
the first mapping of the next page (``_pagedResultsCookie`` starts there),
``_pagedResultsOffset`` counts matches, and ``totalPagedResults`` is the size of
the page returned under the ``EXACT`` policy, as PingIDM answers it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams
from idsync.config.project import Project
from idsync.query import matches

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
        entry: dict[str, Any] = {"_id": m.name, "source": m.source, "target": m.target, "name": m.name, **m.raw}
        entry["name"] = m.name
        entry["sourceRouteReady"] = _ready(project, m.source)
        entry["targetRouteReady"] = _ready(project, m.target)
        out.append(entry)
    return out


async def _list(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    params = QueryParams.of(request)
    found = [m for m in _mappings(ctx.project()) if params.filter is None or matches(params.filter, m)]
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
    return JSONResponse({"_id": "sync", "mappings": [dict(m.raw) for m in project.mappings
                                                     if m.file.endswith("sync.json")]})


mapping_routes = [
    Route("/sync/mappings", _list, methods=["GET"]),
    Route("/config/sync", _config_sync, methods=["GET"]),
]
