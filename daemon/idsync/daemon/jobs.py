"""The daemon's side of the API's ``JobControl`` protocol (``scheduler/job``):
its jobs listed in PingIDM's shape, triggered, cancelled. A trigger runs the job
at once in a worker thread, under the same job lock as a scheduled fire."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from idsync.api.errors import ApiError

if TYPE_CHECKING:
    from idsync.daemon.service import Daemon

__all__ = ["DaemonJobs"]


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
