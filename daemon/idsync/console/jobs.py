"""Batch synchronization: the jobs of ``jobs.d/`` and PingIDM schedules, edited,
run, canceled, added and removed.

Save rewrites the job file (``jobfile.py``: checked first, comments kept,
swapped in atomically) and has the daemon reload, so the running scheduler
uses the new schedule at once; the page then shows the next fire the
scheduler itself computed. ``/jobs/cron`` describes an expression and its next
five fire times; the page's script calls it as one types.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idsync.api.context import ApiContext, JobControl
from idsync.config.schedule import CronSchedule, ScheduleError
from idsync.console.dashboard import job_rows
from idsync.console.jobfile import JobEdit, create_job, job_file, remove_job, save_job
from idsync.console.record import record
from idsync.console.web import Form, page, redirect, user_of, when
from idsync.errors import ConfigError

__all__ = ["job_routes"]

log = structlog.get_logger("idsync.console")

_MISFIRE = ("run_once", "skip")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.console.ctx
    return ctx


def _control(ctx: ApiContext) -> JobControl:
    if ctx.jobs is None:
        raise HTTPException(503, "the scheduler runs only inside idsync run")
    return ctx.jobs


def cron_preview(expression: str, timezone: str) -> dict[str, Any]:
    """What the page shows under the expression: its description and next five fires, or why not."""
    if expression.strip().startswith("every "):  # a PingIDM simple schedule, as it is shown
        return {"ok": True, "description": f"{expression.strip()}: the schedule's repeatInterval (type a cron "
                                           "expression to make it a cron schedule)", "fires": []}
    try:
        schedule = CronSchedule.parse(expression, timezone or "UTC")
    except ScheduleError as exc:
        return {"ok": False, "problem": str(exc)}
    fires = schedule.next_fires(5, dt.datetime.now(dt.UTC))
    return {"ok": True, "description": schedule.describe(),
            "fires": [f.strftime("%Y-%m-%d %H:%M:%S %Z") for f in fires]}


async def _cron(request: Request) -> Response:
    preview = cron_preview(request.query_params.get("schedule", ""), request.query_params.get("timezone", "UTC"))
    return page(request, "cron_preview.html", preview=preview)


def _find(ctx: ApiContext, name: str) -> dict[str, Any]:
    for job in job_rows(ctx):
        if job["_id"] == name:
            return job
    raise HTTPException(404, f"no job named {name!r}")


async def _list(request: Request) -> Response:
    ctx = _ctx(request)
    jobs = await run_in_threadpool(job_rows, ctx)
    return page(request, "jobs.html", jobs=jobs, selected=None, scheduler=ctx.jobs is not None)


async def _one(request: Request) -> Response:
    ctx = _ctx(request)
    name = request.path_params["name"]
    jobs = await run_in_threadpool(job_rows, ctx)
    job = next((j for j in jobs if j["_id"] == name), None)
    if job is None:
        raise HTTPException(404, f"no job named {name!r}")
    if request.query_params.get("fragment"):
        return page(request, "job_state.html", job=job)
    form = {"schedule": job["schedule"], "timezone": job["timezone"], "enabled": job["enabled"],
            "misfire": "run_once" if job["misfirePolicy"] == "fireAndProceed" else "skip"}
    return page(request, "jobs.html", jobs=jobs, selected=job, form=form, scheduler=True,
                preview=cron_preview(job["schedule"], job["timezone"]))


def _edits(form: Form) -> dict[str, str | bool | int]:
    misfire = form.get("misfire", "run_once")
    if misfire not in _MISFIRE:
        raise ConfigError("", "misfire", f'expected "run_once" or "skip", not {misfire!r}')
    return {"schedule": form.get("schedule").strip(), "timezone": form.get("timezone", "UTC").strip() or "UTC",
            "enabled": form.has("enabled"), "misfire": misfire}


def _save(ctx: ApiContext, name: str, edits: JobEdit) -> None:
    project = ctx.project()
    settings = project.settings
    path = job_file(settings.jobs_dir, settings.conf_dir, name)
    save_job(path, edits, [m.name for m in project.mappings], jobs_dir=settings.jobs_dir,
             conf_dir=settings.conf_dir)
    _reload(ctx)


def _reload(ctx: ApiContext) -> None:
    state = _control(ctx).reload()
    if state.get("lastReloadOk") is False:
        log.warning("console.reload_with_errors", errors=state.get("errors"))


async def _post(request: Request) -> Response:
    ctx = _ctx(request)
    name = request.path_params["name"]
    form = await Form.read(request)
    job = await run_in_threadpool(_find, ctx, name)
    try:
        edits = _edits(form)
        await run_in_threadpool(_save, ctx, name, edits)
    except (ConfigError, ScheduleError) as exc:
        problem = exc.problem if isinstance(exc, ConfigError) else str(exc)
        key = exc.key if isinstance(exc, ConfigError) else "schedule"
        jobs = await run_in_threadpool(job_rows, ctx)
        values = {"schedule": form.get("schedule"), "timezone": form.get("timezone"),
                  "enabled": form.has("enabled"), "misfire": form.get("misfire")}
        return page(request, "jobs.html", status=400, jobs=jobs, selected=job, form=values, scheduler=True,
                    error=f"{key}: {problem}" if key else problem,
                    preview=cron_preview(form.get("schedule"), form.get("timezone") or "UTC"))
    await run_in_threadpool(lambda: record(
        ctx, "console.job_saved", user=user_of(request), action="UPDATE", subject=f"job/{name}",
        message=f"saved job {name}: schedule {edits['schedule']!r}", job=name, **edits))
    saved = await run_in_threadpool(_find, ctx, name)
    nxt = saved["nextRunDate"]
    message = f"Saved {name}: " + (f"next fire {when(nxt, saved['timezone'])}" if nxt else "not scheduled (disabled)")
    return redirect(request, f"/jobs/{name}", done=message)


async def _run(request: Request) -> Response:
    ctx = _ctx(request)
    name = request.path_params["name"]
    await Form.read(request)
    control = _control(ctx)
    await run_in_threadpool(_find, ctx, name)
    if not await run_in_threadpool(control.trigger, name):
        return redirect(request, f"/jobs/{name}", problem=f"{name} is already running")
    await run_in_threadpool(lambda: record(ctx, "console.job_triggered", user=user_of(request), action="RUN",
                                           subject=f"job/{name}", message=f"ran job {name} now", job=name))
    return redirect(request, f"/jobs/{name}", done=f"Started {name}")


async def _cancel(request: Request) -> Response:
    ctx = _ctx(request)
    name = request.path_params["name"]
    await Form.read(request)
    if not _control(ctx).cancel_job(name):
        return redirect(request, f"/jobs/{name}", problem=f"{name} is not running")
    await run_in_threadpool(lambda: record(ctx, "console.job_canceled", user=user_of(request), action="CANCEL",
                                           subject=f"job/{name}", message=f"canceled job {name}", job=name))
    return redirect(request, f"/jobs/{name}", done=f"Asked {name} to stop at its next page")


async def _new_form(request: Request) -> Response:
    ctx = _ctx(request)
    mappings = [m.name for m in ctx.project().mappings]
    return page(request, "job_new.html", mappings=mappings, form={"schedule": "0 */15 * * * ?", "timezone": "UTC"},
                preview=cron_preview("0 */15 * * * ?", "UTC"))


def _create(ctx: ApiContext, name: str, edits: JobEdit, mappings: list[str]) -> None:
    project = ctx.project()
    create_job(project.settings.jobs_dir, project.settings.conf_dir, name, edits, [m.name for m in project.mappings],
               mappings)
    _reload(ctx)


async def _new(request: Request) -> Response:
    ctx = _ctx(request)
    form = await Form.read(request)
    name = form.get("name").strip()
    chosen = [m for m in form.all("mappings") if m]
    try:
        edits: dict[str, str | bool | int] = {"description": form.get("description").strip(), **_edits(form)}
        await run_in_threadpool(_create, ctx, name, edits, chosen)
    except (ConfigError, ScheduleError) as exc:
        problem = f"{exc.key}: {exc.problem}" if isinstance(exc, ConfigError) and exc.key else (
            exc.problem if isinstance(exc, ConfigError) else str(exc))
        mappings = [m.name for m in ctx.project().mappings]
        values = {"name": name, "schedule": form.get("schedule"), "timezone": form.get("timezone"),
                  "description": form.get("description"), "mappings": chosen}
        return page(request, "job_new.html", status=400, mappings=mappings, form=values, error=problem,
                    preview=cron_preview(form.get("schedule"), form.get("timezone") or "UTC"))
    await run_in_threadpool(lambda: record(ctx, "console.job_added", user=user_of(request), action="CREATE",
                                           subject=f"job/{name}", message=f"added job {name}", job=name,
                                           mappings=chosen, **edits))
    return redirect(request, f"/jobs/{name}", done=f"Added {name}")


def _remove(ctx: ApiContext, name: str) -> str:
    project = ctx.project()
    path = job_file(project.settings.jobs_dir, project.settings.conf_dir, name)
    kept = remove_job(path)
    _reload(ctx)
    return kept.name


async def _delete(request: Request) -> Response:
    ctx = _ctx(request)
    name = request.path_params["name"]
    await Form.read(request)
    await run_in_threadpool(_find, ctx, name)
    try:
        kept = await run_in_threadpool(_remove, ctx, name)
    except ConfigError as exc:
        return redirect(request, f"/jobs/{name}", problem=exc.problem)
    await run_in_threadpool(lambda: record(ctx, "console.job_removed", user=user_of(request), action="DELETE",
                                           subject=f"job/{name}", message=f"removed job {name}", job=name,
                                           kept_as=kept))
    return redirect(request, "/jobs", done=f"Removed {name} (the file is kept as {kept})")


job_routes = [
    Route("/jobs", _list, methods=["GET"]),
    Route("/jobs/cron", _cron, methods=["GET"]),
    Route("/jobs/new", _new_form, methods=["GET"]),
    Route("/jobs/new", _new, methods=["POST"]),
    Route("/jobs/{name}", _one, methods=["GET"]),
    Route("/jobs/{name}", _post, methods=["POST"]),
    Route("/jobs/{name}/run", _run, methods=["POST"]),
    Route("/jobs/{name}/cancel", _cancel, methods=["POST"]),
    Route("/jobs/{name}/delete", _delete, methods=["POST"]),
]
