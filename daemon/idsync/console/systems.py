"""Systems: each connection with its last test result and a Test button, where each
key the console can set comes from (``conf/`` or the console) with a link to the
system's settings (``connection.py``), an Authorize button for a system that takes an administrator's consent
(``consent.py``), and a read-only browse of a system's objects (first page by
page, then one object).

Testing reaches every peer, which can take a connection timeout, so the page
shows the last result (tested on the first visit) and Test tests again; once a reload
changed the provisioners (a system disabled, added, removed or pointed elsewhere), the
next visit tests again rather than show what the files no longer say.
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

from idsync.api.context import ApiContext
from idsync.console.connection import settable_systems
from idsync.console.consent import consent_systems, csp_allowing
from idsync.console.web import Console, Form, console_of, page, redirect, user_of
from idsync.errors import IdsyncError, ReadDenied
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync.resources import Resources

__all__ = ["system_routes"]

log = structlog.get_logger("idsync.console")

_PAGE = 50


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.console.ctx
    return ctx


def _test(console: Console) -> tuple[dt.datetime, list[dict[str, Any]]]:
    ctx = console.ctx
    project = ctx.project()
    resources = Resources(project, ctx.store)
    try:
        console.tested = (dt.datetime.now(dt.UTC), [dict(r) for r in resources.test_all()])
        console.tested_for = dict(project.provisioners)
    finally:
        resources.close()
    return console.tested


def _object_types(ctx: ApiContext) -> dict[str, list[str]]:
    return {name: sorted((p.raw.get("objectTypes") or {}).keys())
            for name, p in sorted(ctx.project().provisioners.items())}


async def _list(request: Request) -> Response:
    console = console_of(request)
    ctx = console.ctx
    tested = console.tested
    if tested is None or console.tested_for != ctx.project().provisioners:
        tested = await run_in_threadpool(_test, console)
    consents = await run_in_threadpool(consent_systems, ctx)
    response = page(request, "systems.html", tested_at=tested[0], results=tested[1], object_types=_object_types(ctx),
                    consents=consents, settable=settable_systems(ctx.project()))
    response.headers["Content-Security-Policy"] = csp_allowing([c["origin"] for c in consents.values() if c["origin"]])
    return response


async def _retest(request: Request) -> Response:
    await Form.read(request)
    _at, results = await run_in_threadpool(_test, console_of(request))
    failed = [r["name"] for r in results if not r.get("ok")]
    log.info("console.systems_tested", user=user_of(request), failed=failed)
    if failed:
        return redirect(request, "/systems", problem="Failed: " + ", ".join(failed))
    return redirect(request, "/systems", done="Every system answered")


def _browse(ctx: ApiContext, system: str, object_type: str, query_filter: str, start: int) -> list[dict[str, Any]]:
    project = ctx.project()
    if system not in project.provisioners:
        raise HTTPException(404, f"no system named {system!r}")
    resources = Resources(project, ctx.store)
    try:
        resource = resources.open(f"system/{system}/{object_type}")
        spec = QuerySpec(filter=parse(query_filter) if query_filter else None, page_size=_PAGE + 1)
        out: list[dict[str, Any]] = []
        seen = 0
        for chunk in resource.pages(spec):
            for obj in chunk:
                if seen >= start:
                    out.append(obj)
                seen += 1
                if len(out) > _PAGE:
                    return out
        return out
    finally:
        resources.close()


async def _objects(request: Request) -> Response:
    ctx = _ctx(request)
    system, object_type = request.path_params["system"], request.path_params["type"]
    query_filter = request.query_params.get("_queryFilter", "").strip()
    start = int(request.query_params.get("start", "0") or 0) if request.query_params.get(
        "start", "0").isdecimal() else 0
    try:
        rows = await run_in_threadpool(_browse, ctx, system, object_type, query_filter, start)
    except IdsyncError as exc:
        # 403: the provisioner denies reading the system (operationOptions); 400: a bad filter or system.
        status = 403 if isinstance(exc, ReadDenied) else 400
        return page(request, "system_objects.html", status=status, system=system, object_type=object_type, rows=[],
                    columns=[], query_filter=query_filter, error=str(exc), next_start=None)
    more = len(rows) > _PAGE
    rows = rows[:_PAGE]
    columns = sorted({k for r in rows for k in r if k != "_id" and not isinstance(r[k], dict | list)})[:6]
    return page(request, "system_objects.html", system=system, object_type=object_type, rows=rows, columns=columns,
                query_filter=query_filter, next_start=start + _PAGE if more else None)


def _read(ctx: ApiContext, system: str, object_type: str, object_id: str) -> dict[str, Any] | None:
    resources = Resources(ctx.project(), ctx.store)
    try:
        return resources.open(f"system/{system}/{object_type}").get(object_id)
    finally:
        resources.close()


async def _object(request: Request) -> Response:
    ctx = _ctx(request)
    p = request.path_params
    try:
        obj = await run_in_threadpool(_read, ctx, p["system"], p["type"], p["id"])
    except IdsyncError as exc:
        raise HTTPException(403 if isinstance(exc, ReadDenied) else 503, str(exc)) from None
    if obj is None:
        raise HTTPException(404, f"system/{p['system']}/{p['type']}/{p['id']} not found")
    return page(request, "system_object.html", system=p["system"], object_type=p["type"], obj=obj)


system_routes = [
    Route("/systems", _list, methods=["GET"]),
    Route("/systems/test", _retest, methods=["POST"]),
    Route("/system/{system}/{type}", _objects, methods=["GET"]),
    Route("/system/{system}/{type}/{id:path}", _object, methods=["GET"]),
]
