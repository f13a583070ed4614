"""``/openidm/audit/recon`` and ``/openidm/audit/sync``: what each run did to each object.

PingIDM's audit topics, read from the store's audit (``store/audit_events.py``):
``recon`` holds the events of reconciliations (``reconById`` included), ``sync`` those
of implicit synchronization, its retries and liveSync. ``GET audit/TOPIC?_queryFilter=...``
(or ``_queryId=query-all``) pages through the events in time order (``_sortKeys=-timestamp``:
newest first), ``GET audit/TOPIC/ID`` reads one:

    curl -u ... 'http://127.0.0.1:8080/openidm/audit/recon?_queryFilter=/reconId eq "RUN" and status eq "FAILURE"'

idsync keeps no other topic (``access``, ``activity``, ``authentication``, ``config``):
asking for one is a 404 saying so. As in PingIDM, each reconciliation has a ``start``
and a ``summary`` event besides its entries (``entryType``); a summary's
``messageDetail`` is the run's ``recon/ID`` record.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, envelope
from idsync.api.recon import run_summary
from idsync.config.jobs import LIVESYNC_JOB
from idsync.config.project import Project
from idsync.errors import QueryError
from idsync.query.ast import Node
from idsync.store.audit_events import AuditQuery, Topic, audit_event, query_audit, read_audit, sort_key
from idsync.store.runs import RunStore
from idsync.sync.implicit import IMPLICIT_JOB, RETRY_JOB

__all__ = ["RECON_TOPIC", "audit_page", "audit_routes", "mapping_ends", "private_by_mapping"]

_SYNC_JOBS = frozenset({IMPLICIT_JOB, RETRY_JOB, LIVESYNC_JOB})
RECON_TOPIC = Topic("recon", _SYNC_JOBS, exclude=True)  # the reconciliations' entries: every run but sync's
_TOPICS = {"recon": RECON_TOPIC, "sync": Topic("sync", _SYNC_JOBS)}
_NOT_KEPT = {"access": "HTTP requests are counted in /metrics and logged", "activity": "changes to managed "
             "objects are recorded by the runs that push them (audit/sync)", "authentication": "failed logins "
             "are logged", "config": "configuration changes are logged when the daemon reloads"}


def _topic(request: Request) -> Topic:
    name = request.path_params["topic"]
    if name in _TOPICS:
        return _TOPICS[name]
    why = f": {_NOT_KEPT[name]}" if name in _NOT_KEPT else ""
    raise ApiError(404, f"idsync keeps no {name} audit (it keeps recon and sync){why}")


def mapping_ends(ctx: ApiContext) -> dict[str, tuple[str, str]]:
    """Each mapping's source and target resources, which make the audit's ids paths."""
    return {m.name: (m.source, m.target) for m in ctx.project().mappings}


def private_by_mapping(project: Project) -> dict[str, frozenset[str]]:
    """Each mapping's target properties that no answer shows: a managed target's
    ``"scope": "private"`` ones (a recorded change of one is left out, as the object's)."""
    types = project.managed.types
    return {m.name: types[m.target.split("/", 1)[1]].private for m in project.mappings
            if m.target.startswith("managed/") and m.target.split("/", 1)[1] in types}


async def _query(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    topic = _topic(request)
    params = QueryParams.of(request)
    if len(params.sort_keys) > 1:
        raise ApiError(400, "audit events sort by one key: timestamp or -timestamp")
    try:
        descending = sort_key(params.sort_keys[0])[1] if params.sort_keys else False
    except QueryError as exc:
        raise ApiError(400, str(exc)) from None
    events, next_cookie, total = await audit_page(ctx, topic, params, params.filter, descending=descending)
    return JSONResponse(envelope([params.shape(e) for e in events], cookie=next_cookie, params=params, total=total))


async def audit_page(ctx: ApiContext, topic: Topic, params: QueryParams, where: Node | None, *,
                     descending: bool) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """A page of ``topic``'s events matching ``where``, in PingIDM's shape and paged as
    ``params`` asks (``_pageSize``, the cookie, an offset); the next page's cookie, and the
    count of all matches when ``params`` asks for it. ``QueryError`` names a field no event has."""
    cookie = params.cookie
    if cookie is not None and not (cookie.isdecimal() and len(cookie) <= 18):
        raise ApiError(400, "_pagedResultsCookie is not one this API answered")
    spec = AuditQuery(where, params.page_size, int(cookie) if cookie else None, params.offset,
                      descending, params.exact_total)
    ends = mapping_ends(ctx)
    rows, total = await run_in_threadpool(query_audit, ctx.store, topic, spec, ends)
    next_cookie = None
    if params.page_size and len(rows) > params.page_size:
        rows = rows[: params.page_size]
        next_cookie = str(rows[-1]["seq"])
    hidden = private_by_mapping(ctx.project())
    events = [audit_event(topic.name, r, ends, hidden) for r in rows]
    await run_in_threadpool(_summarized, ctx, events)
    return events, next_cookie, total


def _summarized(ctx: ApiContext, events: list[dict[str, Any]]) -> None:
    """Each summary event's ``messageDetail``: its run's record, as PingIDM's summary holds it."""
    runs = RunStore(ctx.store)
    for event in events:
        if event.get("entryType") == "summary":
            row = runs.get(event["reconId"])
            event["messageDetail"] = run_summary(row) if row is not None else None


async def _read(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    topic = _topic(request)
    event_id = request.path_params["id"]
    row = await run_in_threadpool(read_audit, ctx.store, topic, event_id)
    if row is None:
        raise ApiError(404, f"audit/{topic.name}/{event_id} not found")
    event = audit_event(topic.name, row, mapping_ends(ctx), private_by_mapping(ctx.project()))
    await run_in_threadpool(_summarized, ctx, [event])
    return JSONResponse(event)


audit_routes = [
    Route("/audit/{topic}", _query, methods=["GET"]),
    Route("/audit/{topic}/{id}", _read, methods=["GET"]),
]
