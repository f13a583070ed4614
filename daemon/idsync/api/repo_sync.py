"""``/openidm/repo/synchronisation/...``: what PingIDM keeps of liveSync in its repository.

``pooledSyncStage/ID``: a source's liveSync position (``ID`` as PingIDM names it, the
source's path without slashes, upper-cased: ``SYSTEMLDAPACCOUNT``). ``GET`` answers
whether a token is stored, how it was read and when it moved (the token itself is not
shown); ``DELETE`` forgets it, as PingIDM's administrators reset liveSync: the
source's next run reconciles in full and stores a fresh one (``idsync livesync
SOURCE --reset``).

``deadLetterQueue/SYSTEM``: liveSync's dead letters.

Where PingIDM keeps a change of system SYSTEM that liveSync gave up on under
``"postRetryAction": "dead-letter-queue"`` (``syncFailureHandler``), idsync answers
its own (``store/sync_failures.py``), with PingIDM's names: ``token``,
``systemIdentifier``, ``objectType``, ``uid``, ``failureCause``, and idsync's
``source``, ``attempts``, ``error``, ``firstFailed``, ``lastFailed``. One entry per
object (``_id`` is the object's id, where PingIDM uses the change's token).
``GET`` queries (``_queryFilter``, ``_queryId=query-all-ids``, paged by offset) or
reads one; ``DELETE`` removes one once an administrator has dealt with it. An object
whose change arrives again and goes through is not a dead letter any more.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, listed
from idsync.store.sync_failures import DEAD, SyncFailure, SyncFailures
from idsync.store.tokens import SyncTokens

__all__ = ["repo_sync_routes"]


def _stage_id(source: str) -> str:
    return source.replace("/", "").upper()


def _stage(ctx: ApiContext, stage_id: str, *, remove: bool) -> dict[str, Any]:
    tokens = SyncTokens(ctx.store)
    for state in tokens.all():
        if _stage_id(state.source) == stage_id.upper() and (state.token is not None or not remove):
            if remove:
                tokens.forget(state.source)
            return {"_id": _stage_id(state.source), **state.to_json()}
    raise ApiError(404, f"Resource 'repo/synchronisation/pooledSyncStage/{stage_id}' not found")


async def _read_stage(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    return JSONResponse(await run_in_threadpool(_stage, ctx, request.path_params["id"], remove=False))


async def _delete_stage(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    return JSONResponse(await run_in_threadpool(_stage, ctx, request.path_params["id"], remove=True))


def _letters(ctx: ApiContext, system: str) -> list[SyncFailure]:
    if system not in ctx.project().provisioners:
        raise ApiError(404, f"Resource 'repo/synchronisation/deadLetterQueue/{system}' not found")
    return [f for f in SyncFailures(ctx.store).entries(state=DEAD) if f.source.startswith(f"system/{system}/")]


async def _query(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    params = QueryParams.of(request)
    found = [f.to_json() for f in await run_in_threadpool(_letters, ctx, request.path_params["system"])]
    return JSONResponse(listed(found, params))


def _one(ctx: ApiContext, system: str, object_id: str, *, remove: bool) -> dict[str, Any]:
    for letter in _letters(ctx, system):
        if letter.object_id == object_id:
            if remove:
                SyncFailures(ctx.store).forget(letter.source, object_id)
            return letter.to_json()
    raise ApiError(404, f"Resource 'repo/synchronisation/deadLetterQueue/{system}/{object_id}' not found")


async def _read(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    p = request.path_params
    return JSONResponse(await run_in_threadpool(_one, ctx, p["system"], p["id"], remove=False))


async def _delete(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    p = request.path_params
    return JSONResponse(await run_in_threadpool(_one, ctx, p["system"], p["id"], remove=True))


repo_sync_routes = [
    Route("/repo/synchronisation/pooledSyncStage/{id}", _read_stage, methods=["GET"]),
    Route("/repo/synchronisation/pooledSyncStage/{id}", _delete_stage, methods=["DELETE"]),
    Route("/repo/synchronisation/deadLetterQueue/{system}", _query, methods=["GET"]),
    Route("/repo/synchronisation/deadLetterQueue/{system}/{id:path}", _read, methods=["GET"]),
    Route("/repo/synchronisation/deadLetterQueue/{system}/{id:path}", _delete, methods=["DELETE"]),
]
