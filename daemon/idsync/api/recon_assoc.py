"""``/openidm/recon/assoc``: what each reconciliation found for each object, in PingIDM's
association shape.

PingIDM keeps a run's associations when it is started with ``persistAssociations=true``;
idsync keeps them for every reconciliation, as its audit entries (``audit/recon``), for
as long as the run's record is kept (an object a run leaves unchanged has one only with
``[recon] audit_unchanged = true``). The same entries answer here under PingIDM's names:

    GET recon/assoc?_queryFilter=true                  one summary a run, newest first:
                                                       _id (the run's), mapping,
                                                       sourceResourceCollection,
                                                       targetResourceCollection, isAnalysis
                                                       (a dry run), finishTime
    GET recon/assoc/RUN                                that summary
    GET recon/assoc/RUN/entry?_queryFilter=...         the run's entries in the order it made
                                                       them (``_sortKeys=-_id``: the
                                                       last first): reconId, sourceObjectId,
                                                       targetObjectId, situation, action,
                                                       status, message, messageDetail,
                                                       exception, linkQualifier, phase,
                                                       ambiguousTargetObjectIds

An entry's ``phase`` is the recon phase that met the object, as its audit entry keeps it
(``reconciling`` in ``audit/recon``); an entry written before store migration 0014 has it
told by its situation (``target`` for ``UNASSIGNED``, ``TARGET_IGNORED`` and
``SOURCE_MISSING``). The filters and paging are ``audit/recon``'s (the fields of an
entry, ``phase`` among them, ``_pageSize``, its cookie); ``messageDetail`` and
``ambiguousTargetObjectIds`` cannot be filtered on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.audit import RECON_TOPIC, audit_page, mapping_ends
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, envelope, listed
from idsync.errors import QueryError
from idsync.query.ast import And, Compare, Node, Not, Or, Present
from idsync.store.database import pingidm_time
from idsync.store.runs import RunStore

__all__ = ["recon_assoc_routes"]

_SYNC_JOBS = RECON_TOPIC.jobs  # implicit sync's, its retries' and liveSync's runs: not reconciliations
_LIST_LIMIT = 1000  # the newest runs a summary query looks at
_TARGET_PHASE = frozenset({"UNASSIGNED", "TARGET_IGNORED", "SOURCE_MISSING"})
_ENTRY_FIELDS = ("reconId", "sourceObjectId", "targetObjectId", "situation", "action", "status", "message",
                 "messageDetail", "exception", "linkQualifier", "ambiguousTargetObjectIds")


def _summary(row: dict[str, Any], ends: dict[str, tuple[str, str]]) -> dict[str, Any]:
    source, target = ends.get(row["mapping"], (None, None))
    summary = row.get("summary") or {}
    ended = row.get("ended")
    return {"_id": row["id"], "mapping": row["mapping"],
            "sourceResourceCollection": source or summary.get("sourceObject"),
            "targetResourceCollection": target or summary.get("targetObject"),
            "isAnalysis": bool(row.get("dry_run")),
            "finishTime": pingidm_time(ended) if ended is not None else None}


def _recon(ctx: ApiContext, run_id: str) -> dict[str, Any]:
    """The reconciliation ``run_id``'s record; 404 for none, or for a run of implicit sync or liveSync."""
    row = RunStore(ctx.store).get(run_id)
    if row is None or row.get("job") in _SYNC_JOBS:
        raise ApiError(404, f"Reconciliation association with id {run_id} not found.")
    return row


async def _summaries(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    params = QueryParams.of(request)
    rows = await run_in_threadpool(RunStore(ctx.store).recent, _LIST_LIMIT)
    ends = mapping_ends(ctx)
    return JSONResponse(listed([_summary(r, ends) for r in rows if r.get("job") not in _SYNC_JOBS], params))


async def _one(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    row = await run_in_threadpool(_recon, ctx, request.path_params["run_id"])
    return JSONResponse(_summary(row, mapping_ends(ctx)))


def _entry(event: dict[str, Any]) -> dict[str, Any]:
    entry = {"_id": event["_id"], **{k: event.get(k) for k in _ENTRY_FIELDS}}
    # Kept with the entry since migration 0014; told by the situation for older ones.
    entry["phase"] = event.get("reconciling") or ("target" if event.get("situation") in _TARGET_PHASE else "source")
    return entry


def _as_audit(node: Node) -> Node:
    """A filter on an entry's fields as one on the audit's: ``phase`` is ``reconciling``."""
    match node:
        case Compare(path=("phase",)) | Present(path=("phase",)):
            return replace(node, path=("reconciling",))
        case And(items=items) | Or(items=items):
            return replace(node, items=tuple(_as_audit(i) for i in items))
        case Not(item=item):
            return replace(node, item=_as_audit(item))
    return node


async def _entries(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    run_id = request.path_params["run_id"]
    await run_in_threadpool(_recon, ctx, run_id)
    params = QueryParams.of(request)
    if params.sort_keys not in ([], ["_id"], ["+_id"], ["-_id"]):
        raise ApiError(400, "association entries sort by _id alone: _id (the order the run made them) or -_id")
    # The run's entries, not its start and summary events.
    own: Node = And((Compare(("reconId",), "eq", run_id), Compare(("entryType",), "eq", "entry")))
    wanted = own if params.filter is None else And((own, _as_audit(params.filter)))
    try:
        events, cookie, total = await audit_page(ctx, RECON_TOPIC, params, wanted,
                                                 descending=params.sort_keys == ["-_id"])
    except QueryError as exc:
        raise ApiError(400, str(exc).replace("audit events", "association entries")) from None
    return JSONResponse(envelope([params.shape(_entry(e)) for e in events], cookie=cookie, params=params,
                                 total=total))


# Before ``recon/{run_id}``, which would take ``assoc`` for a run's id.
recon_assoc_routes = [
    Route("/recon/assoc", _summaries, methods=["GET"]),
    Route("/recon/assoc/{run_id}", _one, methods=["GET"]),
    Route("/recon/assoc/{run_id}/entry", _entries, methods=["GET"]),
]
