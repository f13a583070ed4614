"""Runs: the history, filtered by mapping, job, state and time; one run's summary in
PingIDM's shape (situations, actions, durations, errors) with a progress bar that
moves while it runs, and its per-object audit, searchable and paged, each entry
linking to the objects it names.

Both lists page by keyset (the history on (started, id), the audit on its
sequence number), so a page costs the same at the 10,000th run as at the first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idsync.api.context import ApiContext
from idsync.api.recon import run_summary
from idsync.console.web import page
from idsync.store.runs import RunStore

__all__ = ["audit_statuses", "object_link", "progress_percent", "run_routes"]

_PAGE = 50
_STATES = ("ACTIVE", "SUCCESS", "FAILED", "CANCELED")
_USUAL = ("SUCCESS", "FAILURE", "NOT_APPLICABLE")
_STATUSES = (*_USUAL, "DRY_RUN")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.console.ctx
    return ctx


def _time(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name}: expected a date and time such as 2026-12-05T10:00") from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=dt.UTC)


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {k: q.get(k, "").strip() for k in ("mapping", "job", "state", "since", "until")}


async def _list(request: Request) -> Response:
    ctx = _ctx(request)
    f = _filters(request)
    before: tuple[dt.datetime, str] | None = None
    cursor = request.query_params.get("before", "")
    if cursor:
        started, _, run_id = cursor.partition("|")
        at = _time(started, "before")
        if at is None or not run_id:
            raise HTTPException(400, "before: expected the cursor of a page of runs, a start time and a run id "
                                     "such as 2026-12-05T10:00:00+00:00|ID")
        before = (at, run_id)
    rows = await run_in_threadpool(lambda: RunStore(ctx.store).search(
        mapping=f["mapping"] or None, job=f["job"] or None, state=f["state"] or None,
        since=_time(f["since"], "since"), until=_time(f["until"], "until"), before=before, limit=_PAGE + 1))
    more = len(rows) > _PAGE
    rows = rows[:_PAGE]
    next_cursor = f"{rows[-1]['started'].isoformat()}|{rows[-1]['id']}" if more else None
    mappings = [m.name for m in ctx.project().mappings]
    return page(request, "runs.html", runs=[run_summary(r) for r in rows], filters=f, states=_STATES,
                mappings=mappings, next_cursor=next_cursor)


def progress_percent(summary: dict[str, Any]) -> int | None:
    """How far a run is, from its processed and total counts; None while a total is unknown."""
    done = total = 0
    for phase in ("source", "target"):
        existing = (summary.get("progress", {}).get(phase) or {}).get("existing") or {}
        if not str(existing.get("total", "?")).isdecimal():
            return None
        done += int(existing.get("processed") or 0)
        total += int(existing["total"])
    return 100 if total == 0 else min(100, round(100 * done / total))


def object_link(resource: str | None, object_id: str | None) -> str | None:
    """The console page of object ``object_id`` of ``resource`` (managed/TYPE or system/NAME/TYPE)."""
    if not resource or not object_id:
        return None
    return f"/{resource}/{object_id}"


async def _one(request: Request) -> Response:
    ctx = _ctx(request)
    run_id = request.path_params["run_id"]
    row = await run_in_threadpool(RunStore(ctx.store).get, run_id)
    if row is None:
        raise HTTPException(404, f"no run {run_id}")
    summary = run_summary(row)
    values: dict[str, Any] = {"run": summary, "percent": progress_percent(summary)}
    if request.query_params.get("fragment"):
        return page(request, "run_summary.html", **values)
    q = request.query_params
    after = int(q.get("after", "0")) if q.get("after", "0").isdecimal() else 0
    search = {"text": q.get("text", "").strip(), "situation": q.get("situation", "").strip(),
              "status": q.get("status", "").strip()}
    entries = await run_in_threadpool(lambda: RunStore(ctx.store).audit_page(
        run_id, after=after, limit=_PAGE + 1, text=search["text"] or None, situation=search["situation"] or None,
        status=search["status"] or None))
    found = await run_in_threadpool(RunStore(ctx.store).audit_statuses, run_id)
    more = len(entries) > _PAGE
    entries = entries[:_PAGE]
    source, target = _resources(ctx, row["mapping"], summary)
    for entry in entries:
        entry["source_link"] = object_link(source, entry.get("source_id"))
        entry["target_link"] = object_link(target, entry.get("target_id"))
        # An AMBIGUOUS correlation's candidates, each linked: one of them is to be linked by hand.
        entry["candidates"] = [(str(i), object_link(target, str(i))) for i in entry.get("ambiguous") or ()]
    return page(request, "run.html", **values, entries=entries, search=search, after=after,
                statuses=audit_statuses(found, search["status"]), next_after=entries[-1]["seq"] if more else None)


def audit_statuses(found: set[str], selected: str) -> list[str]:
    """The Status filter's choices: the usual ones (SUCCESS, FAILURE, NOT_APPLICABLE: asking
    for failures and finding none says something), then any other the run's entries have
    (a preview's ``DRY_RUN``) and the one selected."""
    chosen = set(_USUAL) | found | ({selected} if selected else set())
    return [s for s in _STATUSES if s in chosen] + sorted(chosen - set(_STATUSES))


def _resources(ctx: ApiContext, mapping_name: str, summary: dict[str, Any]) -> tuple[str | None, str | None]:
    for mapping in ctx.project().mappings:
        if mapping.name == mapping_name:
            return mapping.source, mapping.target
    params = summary.get("parameters", {})
    return params.get("sourceQuery", {}).get("resourceName"), params.get("targetQuery", {}).get("resourceName")


run_routes = [
    Route("/runs", _list, methods=["GET"]),
    Route("/runs/{run_id}", _one, methods=["GET"]),
]
