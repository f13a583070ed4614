"""``/openidm/scheduler/job``: the daemon's jobs, listed and triggered; ``/openidm/cluster``:
the nodes of a cluster (``docs/cluster.md``), in the shape of PingIDM's cluster instances.
Both lists take a query's parameters (``_queryFilter``, ``_sortKeys``, paging, ``_fields``;
without a filter, everything).

Only ``idsync run`` has a scheduler; it hands the API its side of the
``JobControl`` protocol (``idsync.daemon.jobs.DaemonJobs``). A trigger runs the
job at once in a worker thread, under the same job lock as a scheduled fire
(409 while it runs).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext, JobControl
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, listed
from idsync.store.database import pingidm_time
from idsync.store.nodes import Node, Nodes

__all__ = ["control", "job_routes"]


def control(request: Request) -> JobControl:
    """The daemon's scheduler (503 outside ``idsync run``)."""
    ctx: ApiContext = request.app.state.ctx
    if ctx.jobs is None:
        raise ApiError(503, "the scheduler runs only inside idsync run")
    return ctx.jobs


async def _list(request: Request) -> JSONResponse:
    params = QueryParams.of(request, required=False)
    jobs = await run_in_threadpool(control(request).job_list)
    return JSONResponse(listed(jobs, params))


async def _one(request: Request) -> JSONResponse:
    scheduler = control(request)
    name = request.path_params["name"]
    if request.method == "GET":
        for job in await run_in_threadpool(scheduler.job_list):
            if job["_id"] == name:
                return JSONResponse(job)
        raise ApiError(404, f"Job {name} not found")
    action = request.query_params.get("_action")
    if action != "trigger":
        raise ApiError(400, f"unknown _action {action!r} (supported: trigger)")
    if not await run_in_threadpool(scheduler.trigger, name):  # cluster mode: a write to the queue
        raise ApiError(409, f"Job {name} is already running")
    return JSONResponse({"_id": name, "action": "trigger", "status": "TRIGGERED"})


async def _cluster(request: Request) -> JSONResponse:
    """Every node that joined the cluster (none outside cluster mode): alive or not, what it runs."""
    ctx: ApiContext = request.app.state.ctx
    params = QueryParams.of(request, required=False)
    settings = ctx.project().settings.cluster
    if not settings.enabled:
        nodes: list[Node] = []
    else:
        nodes = await run_in_threadpool(Nodes(ctx.store, dt.timedelta(seconds=settings.stall_timeout)).all)
    return JSONResponse(listed([_instance(n) for n in nodes], params))


def _instance(node: Node) -> dict[str, Any]:
    """A node as PingIDM's cluster instance, its times as PingIDM writes them (UTC, to the millisecond)."""
    started, seen = pingidm_time(node.started), pingidm_time(node.seen)
    return {"_id": node.name, "instanceId": node.name, "state": "running" if node.alive else "down",
            "startup": started, "shutdown": "" if node.alive else seen,
            **node.to_json(), "started": started, "seen": seen}


job_routes = [
    Route("/scheduler/job", _list, methods=["GET"]),
    Route("/scheduler/job/{name}", _one, methods=["GET", "POST"]),
    Route("/cluster", _cluster, methods=["GET"]),
]
