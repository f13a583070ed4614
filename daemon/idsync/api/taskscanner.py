"""``/openidm/taskscanner``: PingIDM's task scans (``managed/tasks.py``), past and running,
one triggered now, one canceled.

A task scan's run is a run like a recon's, recorded under ``taskscanner/JOB``; the
routes read them from the store, in PingIDM's shape (``progress``: ``state``,
``processed``, ``total``, ``successes``, ``failures``). ``_action=execute`` runs the
task scan of a schedule now (``name``: ``schedule/NAME`` as PingIDM names its
configuration, or ``NAME``), through the daemon's scheduler, as
``scheduler/job/NAME?_action=trigger`` does; only ``idsync run`` has one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.jobs import control
from idsync.api.query import no_query
from idsync.store.runs import RunStore

__all__ = ["taskscanner_routes"]

_PREFIX = "taskscanner/"
_STATES = {"ACTIVE": "ACTIVE", "SUCCESS": "COMPLETED", "FAILED": "COMPLETED", "CANCELED": "CANCELED"}
_LISTED = 100


async def _list(request: Request) -> JSONResponse:
    """The task scans' runs, newest first (the last hundred), and ``_action=execute``."""
    if request.method == "POST":
        return await _execute(request)
    no_query(request, "taskscanner")
    ctx: ApiContext = request.app.state.ctx
    runs = await run_in_threadpool(RunStore(ctx.store).recent, 1000)
    tasks = [_task(r) for r in runs if str(r["mapping"]).startswith(_PREFIX)][:_LISTED]
    return JSONResponse({"tasks": tasks})


async def _one(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    run_id = request.path_params["id"]
    run = await run_in_threadpool(RunStore(ctx.store).get, run_id)
    if run is None or not str(run["mapping"]).startswith(_PREFIX):
        raise ApiError(404, f"Task scan {run_id} not found")
    if request.method == "GET":
        return JSONResponse(_task(run))
    action = request.query_params.get("_action")
    if action != "cancel":
        raise ApiError(400, f"unknown _action {action!r} (supported: cancel)")
    canceled = run["state"] == "ACTIVE" and bool(run["job"]) and \
        await run_in_threadpool(control(request).cancel_job, run["job"])
    return JSONResponse({"_id": run_id, "action": "cancel", "status": "SUCCESS" if canceled else "FAILURE"})


async def _execute(request: Request) -> JSONResponse:
    action = request.query_params.get("_action")
    if action != "execute":
        raise ApiError(400, f"unknown _action {action!r} (supported: execute)")
    name = request.query_params.get("name", "").removeprefix("schedule/")
    if not name:
        raise ApiError(400, "name the task scan's schedule: name=schedule/NAME")
    jobs = control(request)
    found = next((j for j in await run_in_threadpool(jobs.job_list) if j["_id"] == name), None)
    if found is None or found.get("invokeService") != "taskscanner":
        raise ApiError(404, f"no task scan schedule {name!r}")
    if not await run_in_threadpool(jobs.trigger, name):
        raise ApiError(409, f"Task scan {name} is already running")
    return JSONResponse({"_id": name, "action": "execute", "status": "TRIGGERED"})


def _task(run: dict[str, Any]) -> dict[str, Any]:
    tally = (run.get("summary") or {}).get("task") or {}
    return {
        "_id": run["id"],
        "name": f"schedule/{run['job']}" if run.get("job") else run["mapping"],
        "started": _iso(run["started"]),
        "ended": _iso(run["ended"]),
        "progress": {"state": _STATES.get(run["state"], run["state"]), "result": run["state"],
                     "processed": tally.get("processed", 0), "total": tally.get("total", 0),
                     "successes": tally.get("successes", 0), "failures": tally.get("failures", 0)},
        "message": run.get("message"),
    }


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if isinstance(moment, dt.datetime) else moment


taskscanner_routes = [
    Route("/taskscanner", _list, methods=["GET", "POST"]),
    Route("/taskscanner/{id}", _one, methods=["GET", "POST"]),
]
