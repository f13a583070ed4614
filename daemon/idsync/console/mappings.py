"""Mappings: each mapping's source and target, its properties with their transforms,
correlation and policies per situation, with Reconcile and Preview.

Preview is a dry run: the recon assesses every object and records what it would
do, and why (situation, action), in its audit, and writes nothing to any target;
both buttons lead to the run's page, which follows it while it runs.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idsync.api.context import ApiContext
from idsync.config.mappings import MappingDef
from idsync.console.record import record
from idsync.console.web import Form, page, redirect, user_of
from idsync.errors import IdsyncError
from idsync.managed.recons import started
from idsync.store.runs import RunStore

__all__ = ["mapping_routes"]

_START_TIMEOUT = 15.0
_LAST_RUNS = 10
_QUALIFICATION = ("validSource", "validTarget", "sourceCondition", "sourceQuery", "targetQuery")
# The mapping's scripts run at its events (``sync/mapping_hooks.py``), in PingIDM's order.
_SCRIPTS = ("onCreate", "onUpdate", "onDelete", "onLink", "onUnlink", "result", "onRecon")
# The keys the page shows in a section of their own; any other is listed under Settings.
_SHOWN = frozenset({"name", "source", "target", "links", "enableSync", "properties", "policies",
                    "correlationQuery", "correlationScript", *_QUALIFICATION, *_SCRIPTS})


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.console.ctx
    return ctx


def _mapping(ctx: ApiContext, name: str) -> MappingDef:
    for mapping in ctx.project().mappings:
        if mapping.name == name:
            return mapping
    raise HTTPException(404, f"no mapping named {name!r}")


def _shown(value: Any) -> str:
    """A script or a query as the page shows it: its source, or JSON."""
    if isinstance(value, dict) and isinstance(value.get("source"), str):
        return str(value["source"])
    return json.dumps(value, indent=2, ensure_ascii=False)


def describe(mapping: MappingDef) -> dict[str, Any]:
    """What the mapping page shows, from the mapping as written."""
    raw = mapping.written  # as the file holds it: no value an &{NAME} token gave (a secret)
    properties = [{"source": p.get("source", ""), "target": p.get("target", ""),
                   "transform": _shown(p["transform"]) if "transform" in p else "",
                   "condition": _shown(p["condition"]) if "condition" in p else "",
                   "default": json.dumps(p["default"]) if "default" in p else ""}
                  for p in raw.get("properties", []) if isinstance(p, dict)]
    correlation = {k: _shown(raw[k]) for k in ("correlationQuery", "correlationScript") if k in raw}
    policies = [{"situation": p.get("situation", ""), "action": _shown(p.get("action", "")).strip('"'),
                 "condition": _shown(p["condition"]) if "condition" in p else "",
                 "postAction": _shown(p["postAction"]) if "postAction" in p else ""}
                for p in raw.get("policies", []) if isinstance(p, dict)]
    qualification = {k: _shown(raw[k]) for k in _QUALIFICATION if k in raw}
    scripts = {k: _shown(raw[k]) for k in _SCRIPTS if k in raw}
    # Every other key of the mapping as written (linkQualifiers, maxDeletes, allowCreate ...),
    # so that nothing the mapping says is missing from its page.
    settings = {k: json.dumps(v, indent=2, ensure_ascii=False) for k, v in raw.items() if k not in _SHOWN}
    return {"name": mapping.name, "source": mapping.source, "target": mapping.target, "file": mapping.file,
            "links": mapping.links, "enableSync": mapping.enable_sync, "properties": properties,
            "correlation": correlation, "policies": policies, "qualification": qualification,
            "scripts": scripts, "settings": settings}


async def _list(request: Request) -> Response:
    ctx = _ctx(request)
    return page(request, "mappings.html", mappings=[describe(m) for m in ctx.project().mappings])


async def _one(request: Request) -> Response:
    ctx = _ctx(request)
    mapping = _mapping(ctx, request.path_params["name"])
    runs = await run_in_threadpool(RunStore(ctx.store).recent, _LAST_RUNS, mapping.name)
    return page(request, "mapping.html", mapping=describe(mapping), runs=runs)


async def _start(request: Request, dry_run: bool) -> Response:
    ctx = _ctx(request)
    await Form.read(request)
    name = _mapping(ctx, request.path_params["name"]).name
    run_id = str(uuid.uuid4())
    recorded = threading.Event()
    future = await run_in_threadpool(lambda: ctx.start_recon(name, run_id, dry_run=dry_run, recorded=recorded))
    try:
        await run_in_threadpool(started, future, recorded, _START_TIMEOUT)
    except IdsyncError as exc:  # RunLocked: this mapping runs already
        return redirect(request, f"/mappings/{name}", problem=str(exc))
    what = "preview" if dry_run else "reconciliation"
    await run_in_threadpool(lambda: record(
        ctx, "console.recon_started", user=user_of(request), action="PREVIEW" if dry_run else "RECONCILE",
        subject=f"mapping/{name}", message=f"started a {what} of {name} (run {run_id})", mapping=name,
        run_id=run_id, dry_run=dry_run))
    return redirect(request, f"/runs/{run_id}", done=f"Started a {what} of {name}")


async def _reconcile(request: Request) -> Response:
    return await _start(request, dry_run=False)


async def _preview(request: Request) -> Response:
    return await _start(request, dry_run=True)


mapping_routes = [
    Route("/mappings", _list, methods=["GET"]),
    Route("/mappings/{name}", _one, methods=["GET"]),
    Route("/mappings/{name}/reconcile", _reconcile, methods=["POST"]),
    Route("/mappings/{name}/preview", _preview, methods=["POST"]),
]
