"""``/openidm/system``: external systems, tested and read through their connectors.

``POST system?_action=test`` answers one entry per configured system (``name``,
``enabled``, ``config``, ``connectorRef``, ``displayName``, ``objectTypes``, ``ok``, and
``error`` when not ok); ``POST system/NAME?_action=test`` answers that system's entry
alone, as PingIDM's provisioner does. A paged query in the system's order (no
``_sortKeys``, no ``EXACT`` count) is walked by cookie: the connector's read is held
between pages (``walks.py``), so each page reads on from where the last ended. A sorted
or counted query reads the whole system for each page and its cookie is the offset of
the next result; a cookie of digits is taken as such an offset by any query.

``POST system/NAME/TYPE?_action=liveSync`` (or ``POST system?_action=liveSync&source=system/NAME/TYPE``)
runs one liveSync of that source now
(``sync/livesync.py``) and answers its outcome once it ended; 409 while another
liveSync of the source runs, 400 for a source no mapping reads or that cannot
tell its changes. Without an object type (``POST system/NAME?_action=liveSync``,
``source=system/NAME``, or PingIDM's ``__ALL__`` type) it runs liveSync of each of the
system's object types a mapping reads, in the provisioner's order of ``objectTypes``
(accounts before the groups that hold them), and answers them all. One whose liveSync
already runs stops it with a 409 whose ``detail`` holds the outcomes of the types that
ran before it (``sources``, as the answer would, and their sum) and ``notRun``.

A provisioner denying ``GET`` or ``SEARCH`` (``operationOptions``) makes a read of the
system 403, or with ``onDeny: DO_NOTHING`` an empty query result and a 404 read.

Objects are answered as OpenIDM's provisioner builds them from what the connector
returns (``_Answered``): a property ``_fields`` names that the object type declares
readable is answered ``null`` by an object without it (the connector returns each
attribute asked for, empty when absent); one it does not declare is left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import QueryParams, envelope, no_query, sort_objects
from idsync.api.walks import Walk
from idsync.config.project import Project
from idsync.errors import IdsyncError, ReadDenied, http_status
from idsync.managed.router import run_livesync_scripted
from idsync.resource import QuerySpec, Resource
from idsync.resources import Resources
from idsync.sync.livesync import LiveSyncOptions, livesync_mappings

__all__ = ["system_routes"]

_READ_PAGE = 500
# PingIDM's object type of every object of a system: a liveSync of it reads each type's changes.
_ALL = "__ALL__"


def _test(ctx: ApiContext, system: str | None = None) -> list[dict[str, Any]] | dict[str, Any]:
    """Every system's connection test, or ``system``'s alone."""
    project = ctx.project()
    if system is not None and system not in project.provisioners:
        raise ApiError(404, f"Resource 'system/{system}' not found")
    resources = Resources(project, ctx.store)
    try:
        return resources.test_all() if system is None else resources.test(system)
    finally:
        resources.close()


@dataclass(frozen=True)
class _Answered:
    """What the answers of one system object type hold besides an object's values:
    ``readable``, the properties it declares and does not flag ``NOT_READABLE``."""

    readable: frozenset[str]

    @classmethod
    def of(cls, ctx: ApiContext, system: str, object_type: str) -> _Answered:
        props = ctx.project().provisioners[system].properties(object_type)
        return cls(frozenset(n for n, p in props.items() if "NOT_READABLE" not in (p.get("flags") or ())))

    def shown(self, obj: dict[str, Any], fields: Sequence[str] | None, ids_only: bool) -> dict[str, Any]:
        """``obj`` with the ids only, or with the ``fields`` named (``_id`` and ``_rev``
        always; a readable property it lacks as ``null``), or whole."""
        shown: dict[str, Any] = {k: obj[k] for k in ("_id", "_rev") if k in obj}
        if ids_only:
            return shown
        if fields is None or "*" in fields:
            return obj
        for name in dict.fromkeys(f.strip("/").split("/")[0] for f in fields):
            if name in obj:
                shown[name] = obj[name]
            elif name in self.readable:
                shown[name] = None
        return shown


def _open(ctx: ApiContext, system: str, object_type: str) -> tuple[Resource, Resources]:
    project = ctx.project()
    if system not in project.provisioners:
        raise ApiError(404, f"Resource 'system/{system}' not found")
    resources = Resources(project, ctx.store)
    try:
        return resources.open(f"system/{system}/{object_type}"), resources
    except Exception:
        resources.close()
        raise


def _query(ctx: ApiContext, system: str, object_type: str, params: QueryParams) -> dict[str, Any]:
    if params.paged and not params.sort_keys and not params.exact_total:
        return _walked(ctx, system, object_type, params)
    return _read_whole(ctx, system, object_type, params)


def _walked(ctx: ApiContext, system: str, object_type: str, params: QueryParams) -> dict[str, Any]:
    """A page of a walk (``walks.py``): the one its cookie continues, or a new one from
    ``_pagedResultsOffset`` (or an offset cookie); the next page's cookie when more follow."""
    provisioner = ctx.project().provisioners.get(system)
    config = provisioner.raw if provisioner is not None else None
    key = (system, object_type, repr(params.filter), tuple(params.fields or ()), params.ids_only)
    cookie = params.cookie if params.cookie is not None and not params.cookie.isdecimal() else None
    walk = ctx.walks.resume(cookie, key, config) if cookie else _start_walk(ctx, system, object_type, params, key,
                                                                            config)
    try:
        answered = _Answered.of(ctx, system, object_type)
        if cookie is None:
            walk.skip(params.start_offset())
        page, more = walk.take(params.page_size)
    except BaseException:
        ctx.walks.end(walk, "failed")
        raise
    if more:
        ctx.walks.keep(walk)
    else:
        ctx.walks.end(walk)
    return envelope([answered.shown(o, params.fields, params.ids_only) for o in page],
                    cookie=walk.cookie if more else None, params=params, total=None)


def _start_walk(ctx: ApiContext, system: str, object_type: str, params: QueryParams, key: tuple[Any, ...],
                config: Any) -> Walk:
    """A new walk of ``params``' query: the connector's read opened, nothing read yet."""
    resource, resources = _open(ctx, system, object_type)
    spec = QuerySpec(filter=params.filter, fields=[] if params.ids_only else params.fields, page_size=params.page_size)
    try:
        pages = _pages(resource, spec)
    except BaseException:
        resources.close()
        raise

    def close() -> None:
        try:
            getattr(pages, "close", lambda: None)()  # the connector's read stops (LDAP: abandoned)
        finally:
            resources.close()

    return Walk(key=key, config=config, pages=pages, close=close, system=system, object_type=object_type,
                holder=ctx.walks.node)


def _read_whole(ctx: ApiContext, system: str, object_type: str, params: QueryParams) -> dict[str, Any]:
    """A query read from the system's start: sorted, counted or not paged."""
    resource, resources = _open(ctx, system, object_type)
    answered = _Answered.of(ctx, system, object_type)
    try:
        start = params.start_offset()
        spec = QuerySpec(filter=params.filter, fields=[] if params.ids_only else params.fields, page_size=_READ_PAGE)
        wanted_end = start + params.page_size if params.paged and not params.sort_keys else None
        matched: list[dict[str, Any]] = []
        seen = 0
        more = False
        for page in _pages(resource, spec):
            for obj in page:
                if wanted_end is not None and seen >= wanted_end:
                    more = True
                    if not params.exact_total:
                        break
                elif params.sort_keys or seen >= start:
                    matched.append(obj)
                seen += 1
            if more and not params.exact_total:
                break
        if params.sort_keys:
            matched = sort_objects(matched, params.sort_keys)
            total = len(matched)
            end = start + params.page_size if params.paged else total
            more = end < total
            matched = matched[start:end]
        else:
            total = seen
            end = start + len(matched)
        cookie = str(end) if params.paged and more else None
        exact = total if params.exact_total else None
        return envelope([answered.shown(o, params.fields, params.ids_only) for o in matched], cookie=cookie,
                        params=params, total=exact)
    finally:
        resources.close()


def _pages(resource: Resource, spec: QuerySpec) -> Iterator[list[dict[str, Any]]]:
    """``resource.pages``; none when its provisioner denies SEARCH with ``onDeny: DO_NOTHING``
    (with an exception, the query is refused: 403)."""
    try:
        return resource.pages(spec)
    except ReadDenied as exc:
        if not exc.quiet:
            raise
        return iter(())


def _get(ctx: ApiContext, system: str, object_type: str, object_id: str, fields: list[str] | None) -> dict[str, Any]:
    resource, resources = _open(ctx, system, object_type)
    answered = _Answered.of(ctx, system, object_type)
    ids_only = fields is not None and set(fields) <= {"_id", "_rev"}
    try:
        obj = resource.get(object_id, [] if ids_only else fields)
    except ReadDenied as exc:
        if not exc.quiet:
            raise  # 403
        obj = None  # onDeny DO_NOTHING: nothing read, nothing found
    finally:
        resources.close()
    if obj is None:
        raise ApiError(404, f"Object {object_id} not found on system/{system}/{object_type}")
    return answered.shown(obj, fields, ids_only)


async def _root(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    action = request.query_params.get("_action")
    if request.method == "POST" and action == "test":
        return JSONResponse(await run_in_threadpool(_test, ctx))
    if request.method == "POST" and action == "liveSync":
        # PingIDM's other spelling: the source as a parameter (``source=system/ldap/account``).
        parts = (request.query_params.get("source") or "").split("/")
        if len(parts) not in (2, 3) or parts[0] != "system" or not all(parts):
            raise ApiError(400, "liveSync needs the source parameter: source=system/NAME/TYPE (or system/NAME "
                                "for each of its object types)")
        return JSONResponse(await run_in_threadpool(_livesync, ctx, parts[1], parts[2] if len(parts) == 3 else _ALL))
    if request.method == "GET":
        no_query(request, "system")
        project = ctx.project()
        return JSONResponse([{"name": n, "enabled": p.enabled, "config": f"config/provisioner.openicf/{n}",
                              "connectorRef": p.raw.get("connectorRef", {})}
                             for n, p in sorted(project.provisioners.items())])
    raise ApiError(400, f"unknown _action {action!r} (supported: test, liveSync)")


async def _system(request: Request) -> JSONResponse:
    """``system/NAME``: the system itself, which PingIDM's provisioner answers only its ``test``."""
    ctx: ApiContext = request.app.state.ctx
    action = request.query_params.get("_action")
    system = request.path_params["system"]
    if request.method != "POST":
        raise ApiError(404, f"Resource 'system/{system}' not found: a system's objects are at system/{system}/TYPE")
    if action == "liveSync":
        return JSONResponse(await run_in_threadpool(_livesync, ctx, system, _ALL))
    if action != "test":
        raise ApiError(400, f"system/{system}: unknown _action {action!r} (supported: test, liveSync)")
    return JSONResponse(await run_in_threadpool(_test, ctx, system))


async def _collection(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    p = request.path_params
    if request.method == "POST":
        action = request.query_params.get("_action")
        if action != "liveSync":
            raise ApiError(400, f"unknown _action {action!r} (supported: liveSync)")
        return JSONResponse(await run_in_threadpool(_livesync, ctx, p["system"], p["type"]))
    params = QueryParams.of(request, ctx.project().queries)
    return JSONResponse(await run_in_threadpool(_query, ctx, p["system"], p["type"], params))


def _livesync(ctx: ApiContext, system: str, object_type: str) -> dict[str, Any]:
    project = ctx.project()
    if system not in project.provisioners:
        raise ApiError(404, f"Resource 'system/{system}' not found")
    source = f"system/{system}/{object_type}"
    if object_type == _ALL and not livesync_mappings(project, source):
        return _livesync_all(ctx, project, system)
    if not livesync_mappings(project, source):
        raise ApiError(400, f"no mapping has {source} as its source, so liveSync has nothing to apply its changes "
                            "through")
    try:
        return run_livesync_scripted(project, ctx.store, source, LiveSyncOptions()).to_json()
    finally:
        ctx.changed()


def _livesync_all(ctx: ApiContext, project: Project, system: str) -> dict[str, Any]:
    """One liveSync of each object type of ``system`` a mapping reads, in its provisioner's
    order of ``objectTypes`` (then the mappings'): their outcomes, and in sum."""
    declared = project.provisioners[system].raw.get("objectTypes")
    prefix = f"system/{system}/"
    named = [f"{prefix}{t}" for t in declared] if isinstance(declared, Mapping) else []
    named += [m.source for m in project.mappings if m.source.startswith(prefix)]
    sources = [s for s in dict.fromkeys(named) if livesync_mappings(project, s)]
    if not sources:
        raise ApiError(400, f"no mapping with enableSync reads an object type of system/{system}, so liveSync has "
                            "nothing to apply its changes through")
    outcomes: list[dict[str, Any]] = []
    try:
        for source in sources:
            outcomes.append(run_livesync_scripted(project, ctx.store, source, LiveSyncOptions()).to_json())
    except IdsyncError as exc:
        # A type whose liveSync already runs (409), or a store gone: the types before it
        # have run, and their outcomes are the error's detail, as PingIDM details an error.
        left = sources[len(outcomes):]
        ran = f"; ran before it: {', '.join(o['source'] for o in outcomes)}" if outcomes else ""
        raise ApiError(http_status(exc), f"{exc}{ran}; not run: {', '.join(left)}",
                       detail={**_summed(f"{prefix}{_ALL}", outcomes), "notRun": left}) from None
    finally:
        ctx.changed()
    return _summed(f"{prefix}{_ALL}", outcomes)


def _summed(source: str, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The liveSync runs of a system's object types, and in sum."""
    states = {o["state"] for o in outcomes}
    return {"source": source, "state": next((s for s in ("FAILED", "CANCELED") if s in states), "SUCCESS"),
            "changes": sum(o["changes"] for o in outcomes), "duration": sum(o["duration"] for o in outcomes),
            "sources": outcomes}


async def _one(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    p = request.path_params
    text = request.query_params.get("_fields")
    fields = [f.strip() for f in text.split(",") if f.strip()] if text else None
    return JSONResponse(await run_in_threadpool(_get, ctx, p["system"], p["type"], p["id"], fields))


system_routes = [
    Route("/system", _root, methods=["GET", "POST"]),
    Route("/system/{system}", _system, methods=["GET", "POST"]),
    Route("/system/{system}/{type}", _collection, methods=["GET", "POST"]),
    Route("/system/{system}/{type}/{id:path}", _one, methods=["GET"]),
]
