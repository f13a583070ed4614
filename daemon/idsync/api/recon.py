"""``/openidm/recon``: start, list, read and cancel reconciliation runs.

``POST recon?_action=reconById&mapping=M&id=ID`` reconciles one source object
at once. ``POST recon?_action=recon&mapping=M`` answers ``{"_id", "state"}`` as soon as
the run is recorded ACTIVE (or, with ``waitForCompletion=true``, once it
ended); its JSON body, if any, holds PingIDM's settings for that run alone
(``sourceQuery``, ``targetQuery``, ``runTargetPhase``, ``allowEmptySourceSet``), a
setting idsync does not take refused with 400. ``analyze=true`` is PingIDM's analysis
run, idsync's dry run; ``persistAssociations`` is taken (every run audits each object);
any other parameter is a 400 naming it. A mapping already running, here or in any process on the same store,
is refused with 409: the recon's own store lock decides, as for the scheduler.

``DELETE recon/ID`` purges a finished run's statistics, as PingIDM's does: its record and
its audit (``store/retention.py``), answering the record as it was; 404 for no such run,
409 for one still running or one the retries of failed pushes still read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import no_query, read_json
from idsync.config.jobs import LIVESYNC_JOB, PERFORM_JOB
from idsync.managed.recons import flag, pushed, recon_by_id, started
from idsync.managed.router import scripting
from idsync.resources import Resources
from idsync.store.database import pingidm_time, utcnow
from idsync.store.retention import RunKept, delete_run
from idsync.store.runs import RunStore
from idsync.sync.implicit import IMPLICIT_JOB, RETRY_JOB, PushResult

__all__ = ["recon_routes", "run_summary"]

_LIST_LIMIT = 100
# What ``recon?_action=recon`` takes besides CREST's own ``_...`` parameters.
_START_PARAMS = ("mapping", "waitForCompletion", "rewriteWriteOnly", "analyze", "persistAssociations")
_START_TIMEOUT = 30.0
_NOT_LISTED = (IMPLICIT_JOB, RETRY_JOB, LIVESYNC_JOB, PERFORM_JOB)


def run_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A run record in PingIDM's ``recon/ID`` shape."""
    summary = dict(row.get("summary") or {})
    started, ended = row["started"], row.get("ended")
    # PingIDM's duration is ended less started as it writes them, to the millisecond.
    duration = (_to_ms(ended) - _to_ms(started)) // dt.timedelta(milliseconds=1) if ended else None
    # The store records a success as plain COMPLETED; PingIDM names every end COMPLETED_<state>.
    stage = f"COMPLETED_{row['state']}" if row["stage"] == "COMPLETED" else row["stage"]
    out: dict[str, Any] = {
        "_id": row["id"],
        "mapping": row["mapping"],
        "state": row["state"],
        "stage": stage,
        "stageDescription": _STAGES.get(stage, stage.replace("_", " ").lower()),
        "progress": _progress(summary.get("progress") or {}, row["state"]),
        "situationSummary": summary.get("situationSummary", {}),
        "statusSummary": summary.get("statusSummary", {}),
        "durationSummary": summary.get("durationSummary", {}),
        "parameters": {"sourceQuery": {"resourceName": summary.get("sourceObject")},
                       "targetQuery": {"resourceName": summary.get("targetObject")}},
        "started": pingidm_time(started),
        "ended": pingidm_time(ended) if ended else "",
        "duration": duration,
    }
    for key in ("actionSummary", "changes", "dryRun", "errorCount", "errors", "linkQualifierSummary", "partitions",
                "onward", "referrers"):
        if key in summary:
            out[key] = summary[key]
    if row.get("job"):
        out["job"] = row["job"]
    if row.get("node"):
        out["node"] = row["node"]
    if row.get("message"):
        out["message"] = row["message"]
    return out


def _to_ms(instant: dt.datetime) -> dt.datetime:
    """``instant`` to the millisecond, as ``pingidm_time`` writes it."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def _live(row: dict[str, Any]) -> dict[str, Any]:
    """``run_summary`` as the API answers it: a running run's ``duration`` is the time it
    has run so far, as PingIDM's."""
    out = run_summary(row)
    if out["duration"] is None:
        out["duration"] = max(int((utcnow() - row["started"]).total_seconds() * 1000), 0)
    return out


def _progress(progress: dict[str, Any], state: str) -> dict[str, Any]:
    """The run's ``progress`` as PingIDM tells it: a run that found no link when it began
    (``links.existing.total`` ``"?"``) counts, once it succeeded, the links it processed."""
    existing = (progress.get("links") or {}).get("existing") or {}
    if state != "SUCCESS" or existing.get("total", "?") != "?" or "processed" not in existing:
        return progress
    links = {**progress["links"], "existing": {**existing, "total": str(existing["processed"])}}
    return {**progress, "links": links}


_STAGES = {
    "ACTIVE_INITIALIZED": "initialized",
    "ACTIVE_QUERY_ENTRIES": "querying source and target entries",
    "ACTIVE_RECONCILING_SOURCE": "reconciling source entries",
    "ACTIVE_RECONCILING_TARGET": "reconciling target entries",
    "ACTIVE_DELETING": "deleting target entries no source claims",
    "COMPLETED_SUCCESS": "reconciliation completed.",
    "COMPLETED_FAILED": "reconciliation failed",
    "COMPLETED_CANCELED": "reconciliation aborted.",
}


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    if request.method == "GET":
        no_query(request, "recon")  # the last runs, newest first: not sorted or paged otherwise
        mapping = request.query_params.get("mapping")
        # Reconciliations only, as PingIDM lists them (reconById's included): not the runs of
        # implicit sync, its retries, liveSync or performAction, which would crowd them out.
        rows = await run_in_threadpool(lambda: RunStore(ctx.store).recent(_LIST_LIMIT, mapping,
                                                                          except_jobs=_NOT_LISTED))
        return JSONResponse({"reconciliations": [_live(r) for r in rows]})
    action = request.query_params.get("_action")
    if action == "recon":
        return await _start(request, ctx)
    if action == "reconById":
        mapping, object_id = request.query_params.get("mapping"), request.query_params.get("id")
        if not mapping or not object_id:
            raise ApiError(400, "reconById needs the mapping and id parameters")
        return JSONResponse(pushed(await run_in_threadpool(_recon_by_id, ctx, mapping, object_id)))
    raise ApiError(400, f"unknown _action {action!r} (supported: recon, reconById)")


def _recon_by_id(ctx: ApiContext, mapping_name: str, object_id: str) -> PushResult:
    """One source object through one mapping (``managed/recons.py``), its scripts' ``openidm`` bound."""
    project = ctx.project()
    resources = Resources(project, ctx.store)
    try:
        with scripting(project, ctx.store, resources=resources):
            return recon_by_id(project, ctx.store, resources, mapping_name, object_id)
    finally:
        resources.close()
        ctx.changed()


async def _start(request: Request, ctx: ApiContext) -> JSONResponse:
    mapping = request.query_params.get("mapping")
    if not mapping:
        raise ApiError(400, "the mapping parameter is required")
    unknown = sorted(k for k in request.query_params if not k.startswith("_") and k not in _START_PARAMS)
    if unknown:
        raise ApiError(400, f"recon: unknown parameter {', '.join(unknown)} (taken: {', '.join(_START_PARAMS)})")
    run_id = str(uuid.uuid4())
    rewrite = flag(request.query_params, "rewriteWriteOnly")
    # PingIDM's analysis run: every action decided, none carried out (idsync's dry run).
    analyze = flag(request.query_params, "analyze")
    flag(request.query_params, "persistAssociations")  # every run keeps them: its audit entries
    overrides = await _overrides(request, ctx)
    recorded = threading.Event()
    future = await run_in_threadpool(ctx.start_recon, mapping, run_id, rewrite_write_only=rewrite,
                                     overrides=overrides, dry_run=analyze, recorded=recorded)
    if request.query_params.get("waitForCompletion", "").lower() == "true":
        result = await asyncio.wrap_future(future)  # RunLocked surfaces here as 409
        return JSONResponse({"_id": result.id, "state": result.state})
    # Answer once the run is recorded: a lock refused before that is still a 409.
    ended = await run_in_threadpool(started, future, recorded, _START_TIMEOUT)
    return JSONResponse({"_id": ended.id, "state": ended.state} if ended is not None else
                        {"_id": run_id, "state": "ACTIVE"})


async def _overrides(request: Request, ctx: ApiContext) -> dict[str, Any] | None:
    """PingIDM's settings for this run alone, the request's JSON body (``sourceQuery``,
    ``targetQuery``, ``runTargetPhase``...: ``Project.mapping_for_run``); none without one."""
    found = await read_json(request, ctx.settings.max_body_bytes, required=False)
    if found is None:
        return None
    if not isinstance(found, dict):
        raise ApiError(400, "the body must be a JSON object of settings for this run")
    return found or None


async def _one(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    run_id = request.path_params["run_id"]
    if request.method == "DELETE":
        return JSONResponse(run_summary(await run_in_threadpool(_delete, ctx, run_id)))
    row = await run_in_threadpool(RunStore(ctx.store).get, run_id)
    if row is None:
        raise ApiError(404, f"Reconciliation with id {run_id} not found.")
    if request.method == "GET":
        return JSONResponse(_live(row))
    action = request.query_params.get("_action")
    if action != "cancel":
        raise ApiError(400, f"unknown _action {action!r} (supported: cancel)")
    if row["state"] != "ACTIVE":
        raise ApiError(409, f"Reconciliation {run_id} is not running ({row['state']})")
    if not ctx.cancel(run_id, row.get("job")):
        raise ApiError(409, f"Reconciliation {run_id} runs in another process; cancel it there")
    return JSONResponse({"_id": run_id, "action": "cancel", "status": "INITIATED"})


def _delete(ctx: ApiContext, run_id: str) -> dict[str, Any]:
    try:
        return delete_run(ctx.store, run_id)
    except RunKept as exc:
        raise ApiError(409, str(exc)) from None
    finally:
        ctx.changed()


recon_routes = [
    Route("/recon", _collection, methods=["GET", "POST"]),
    Route("/recon/{run_id}", _one, methods=["GET", "POST", "DELETE"]),
]
