"""``/openidm/scheduler/job``: the daemon's jobs, listed and triggered.

Only ``idsync run`` has a scheduler; ``DaemonJobs`` is its side of the
``JobControl`` protocol. A trigger runs the job at once in a worker thread,
under the same job lock as a scheduled fire (409 while it runs).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from idsync.api.context import ApiContext, JobControl
from idsync.api.errors import ApiError

if TYPE_CHECKING:
    from idsync.daemon.service import Daemon

__all__ = ["DaemonJobs", "job_routes"]


class DaemonJobs:
    """The scheduler of a running ``Daemon``, seen from the API."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def job_list(self) -> list[dict[str, Any]]:
        return [_shape(name, status) for name, status in self._daemon.jobs_status().items()]

    def trigger(self, name: str) -> bool:
        daemon = self._daemon
        if name not in daemon.config.jobs:
            raise ApiError(404, f"Job {name} not found")
        if daemon.is_running(name):
            return False
        threading.Thread(target=daemon.fire, args=(name, "api"), name=f"api-{name}", daemon=True).start()
        return True

    def cancel_job(self, name: str) -> bool:
        return self._daemon.cancel_job(name)

    def config_state(self) -> dict[str, Any]:
        reload = self._daemon.last_reload
        return {"errors": len(self._daemon.config.errors), "lastReload": reload[0] if reload else None,
                "lastReloadOk": reload[1] if reload else None}


def _shape(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "_id": name,
        "enabled": status["enabled"],
        "type": "cron",
        "schedule": status["schedule"],
        "scheduleDescription": status["scheduleDescription"],
        "timezone": status["timezone"],
        "misfirePolicy": "fireAndProceed" if status["misfire"] == "run_once" else "doNothing",
        "invokeService": "sync",
        "invokeContext": {"action": "reconcile", "mappings": status["mappings"]},
        "description": status["description"],
        "nextRunDate": status["nextFire"],
        "running": status["running"],
        "lastRun": status["lastRun"],
    }


def _control(request: Request) -> JobControl:
    ctx: ApiContext = request.app.state.ctx
    if ctx.jobs is None:
        raise ApiError(503, "the scheduler runs only inside idsync run")
    return ctx.jobs


async def _list(request: Request) -> JSONResponse:
    jobs = await run_in_threadpool(_control(request).job_list)
    return JSONResponse({"result": jobs, "resultCount": len(jobs), "pagedResultsCookie": None,
                         "totalPagedResultsPolicy": "NONE", "totalPagedResults": -1, "remainingPagedResults": -1})


async def _one(request: Request) -> JSONResponse:
    control = _control(request)
    name = request.path_params["name"]
    if request.method == "GET":
        for job in await run_in_threadpool(control.job_list):
            if job["_id"] == name:
                return JSONResponse(job)
        raise ApiError(404, f"Job {name} not found")
    action = request.query_params.get("_action")
    if action != "trigger":
        raise ApiError(400, f"unknown _action {action!r} (supported: trigger)")
    if not control.trigger(name):
        raise ApiError(409, f"Job {name} is already running")
    return JSONResponse({"_id": name, "action": "trigger", "status": "TRIGGERED"})


job_routes = [
    Route("/scheduler/job", _list, methods=["GET"]),
    Route("/scheduler/job/{name}", _one, methods=["GET", "POST"]),
]
