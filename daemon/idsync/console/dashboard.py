"""The dashboard: the daemon's state, every job with its next fire and last result,
runs failing now, pushes waiting for retry, each liveSync source (its last run, its
changes waiting for a retry and its dead letters) and what the store holds.

The page reloads its body (``?fragment=1``) every few seconds while open.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idsync.api.context import ApiContext
from idsync.console.web import page
from idsync.store.runs import RunStore
from idsync.store.sync_failures import livesync_sources
from idsync.store.tables import links, managed_objects, recon_runs
from idsync.sync.retry import pending_counts

__all__ = ["dashboard_routes", "failing_runs", "job_rows"]

_RECENT = 200


def job_rows(ctx: ApiContext) -> list[dict[str, Any]]:
    """The scheduler's jobs as the pages show them (none outside ``idsync run``)."""
    return ctx.jobs.job_list() if ctx.jobs is not None else []


def failing_runs(ctx: ApiContext) -> list[dict[str, Any]]:
    """The latest run of each mapping, where it FAILED."""
    latest: dict[str, dict[str, Any]] = {}
    for row in RunStore(ctx.store).recent(_RECENT):
        if row["state"] != "ACTIVE":
            latest.setdefault(row["mapping"], row)
    return [row for row in latest.values() if row["state"] == "FAILED"]


def _counts(ctx: ApiContext) -> dict[str, int]:
    mo = managed_objects
    with ctx.store.engine.connect() as conn:
        counts = {f"managed/{t}": int(n) for t, n in conn.execute(
            select(mo.c.object_type, func.count()).group_by(mo.c.object_type))}
        counts["links"] = int(conn.execute(select(func.count()).select_from(links)).scalar_one())
        counts["runs"] = int(conn.execute(select(func.count()).select_from(recon_runs)).scalar_one())
    return counts


def _state(ctx: ApiContext) -> dict[str, Any]:
    if ctx.jobs is None:
        return {"state": "API only (no scheduler)", "errors": 0, "problems": []}
    return ctx.jobs.config_state()


def _gather(ctx: ApiContext) -> dict[str, Any]:
    return {"daemon": _state(ctx), "jobs": job_rows(ctx), "failing": failing_runs(ctx),
            "pending": pending_counts(ctx.store), "livesync": livesync_sources(ctx.store), "counts": _counts(ctx)}


async def _dashboard(request: Request) -> Response:
    ctx: ApiContext = request.app.state.console.ctx
    values = await run_in_threadpool(_gather, ctx)
    template = "dashboard_body.html" if request.query_params.get("fragment") else "dashboard.html"
    return page(request, template, **values)


dashboard_routes = [Route("/", _dashboard, methods=["GET"], name="dashboard")]
