"""The common query parameters of a collection and the envelope of its answer.

``_queryFilter`` or ``_queryId`` (a named query: the stock ones, the project's
``repo.*.json`` ones; its parameters are the other request parameters, bound as
values), ``_fields``, ``_sortKeys``,
``_pageSize``, ``_pagedResultsCookie``, ``_pagedResultsOffset`` and
``_totalPagedResultsPolicy`` (``NONE`` or ``EXACT``), answered as PingIDM does:
``result``, ``resultCount``, ``pagedResultsCookie``, ``totalPagedResultsPolicy``,
``totalPagedResults``, ``remainingPagedResults`` (-1, as PingIDM's). ``executeOnRetrieve=true`` asks a query
of managed objects to run their type's ``onRetrieve`` scripts, as PingIDM's does.

A collection held in memory (the jobs, the cluster's nodes, dead letters) is
answered by ``listed``: filtered, sorted and paged here as the store would. A read
that answers a list but is no query (``recon``, ``taskscanner``, ``system``) refuses
these parameters with a 400 naming the one sent (``no_query``), as PingIDM refuses a
parameter a request does not take: a client asking for a sorted or paged answer is
never given another one without a word.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from idsync.api.errors import ApiError
from idsync.errors import QueryError
from idsync.query import matches, parse
from idsync.query.ast import Node
from idsync.query.named import NamedQueries
from idsync.query.order import sort_key, sort_order
from idsync.store import strict_json
from idsync.store.database import unfit_at
from idsync.store.hooks import execute_on_retrieve

__all__ = ["MAX_JSON_DEPTH", "QueryParams", "envelope", "listed", "no_query", "read_json", "sort_objects", "sort_order"]

_MAX_PAGE = 10_000
# What a database's OFFSET takes (a signed 64-bit integer); more is a 400, not a crash.
_MAX_OFFSET = 2**63 - 1
MAX_JSON_DEPTH = 64  # arrays and objects in a request body; no managed object nests anywhere near it
# What only a query takes (CREST's query request parameters).
_QUERY_ONLY = ("_queryFilter", "_queryId", "_queryExpression", "_sortKeys", "_pageSize", "_pagedResultsCookie",
               "_pagedResultsOffset", "_totalPagedResultsPolicy")


@dataclass(frozen=True)
class QueryParams:
    filter: Node | None
    ids_only: bool
    fields: list[str] | None
    sort_keys: list[str]
    page_size: int
    cookie: str | None
    offset: int
    exact_total: bool
    execute_on_retrieve: bool = False

    @property
    def paged(self) -> bool:
        return self.page_size > 0

    @classmethod
    def of(cls, request: Request, queries: NamedQueries | None = None, *, required: bool = True) -> QueryParams:
        """The parameters of ``request``; ``queries``: the named queries it may use
        (none given: only ``query-all`` and ``query-all-ids``). Not ``required``: a
        request with neither ``_queryFilter`` nor ``_queryId`` asks for everything."""
        q = request.query_params
        text = q.get("_queryFilter")
        query_id = q.get("_queryId")
        if text is None and query_id is None and required:
            raise ApiError(400, "a query needs _queryFilter or _queryId")
        if text is not None and query_id is not None:
            raise ApiError(400, "a query takes _queryFilter or _queryId, not both")
        node = None if text is None or text.strip() == "true" else parse(text)
        ids_only = False
        if query_id is not None:
            if queries is None and query_id not in ("query-all-ids", "query-all"):
                raise ApiError(400, f"unknown _queryId {query_id} (known here: query-all, query-all-ids)")
            named = (queries or NamedQueries()).get(query_id)
            # The request's other parameters are the query's: values in the filter, never its text.
            node = named.filter(q)
            ids_only = named.ids_only
        fields = [f.strip() for f in q["_fields"].split(",") if f.strip()] if q.get("_fields") else None
        ids_only = ids_only or (fields is not None and set(fields) <= {"_id", "_rev"})
        policy = q.get("_totalPagedResultsPolicy", "NONE").upper()
        if policy not in ("NONE", "EXACT", "ESTIMATE"):
            raise ApiError(400, f"unknown _totalPagedResultsPolicy {policy}")
        return cls(
            filter=node,
            ids_only=ids_only,
            fields=fields,
            sort_keys=_sort_keys(q.get("_sortKeys", "")),
            page_size=_int(q, "_pageSize", 0, _MAX_PAGE),
            cookie=q.get("_pagedResultsCookie") or None,
            offset=_int(q, "_pagedResultsOffset", 0, _MAX_OFFSET),
            exact_total=policy != "NONE",
            execute_on_retrieve=execute_on_retrieve(q.get("executeOnRetrieve")),
        )

    def sort_paths(self) -> list[tuple[str, ...]]:
        """The fields ``_sortKeys`` sorts by, as JSON pointer segments."""
        return [_sort_key(key)[0] for key in self.sort_keys]

    def start_offset(self) -> int:
        """Where a page counted by offset (a sorted one, a system's) starts: the cookie of the
        page before (the offset it ended at), or ``_pagedResultsOffset``; 400 for a cookie
        that is no such offset, rather than the first page again."""
        if self.cookie is None:
            return self.offset
        if not (self.cookie.isdecimal() and self.cookie.isascii()) or int(self.cookie) > _MAX_OFFSET:
            raise ApiError(400, f"_pagedResultsCookie {self.cookie!r} is not one this query answered")
        return int(self.cookie)

    def page(self, found: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
        """The page of ``found`` (already filtered and sorted) this request asks for, counted
        by offset (``start_offset``), and the next page's cookie (the offset this one ends at)."""
        start = self.start_offset()
        end = start + self.page_size if self.paged else len(found)
        return list(found[start:end]), str(end) if end < len(found) else None

    def shape(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The object with only the requested fields (``_id`` and ``_rev`` always)."""
        if self.ids_only:
            return {k: obj[k] for k in ("_id", "_rev") if k in obj}
        if self.fields is None or "*" in self.fields:
            return obj
        keep = {"_id", "_rev", *(f.strip("/").split("/")[0] for f in self.fields)}
        return {k: v for k, v in obj.items() if k in keep}


def _sort_keys(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for key in keys:
        _sort_key(key)  # a key that names no field is a 400 before anything is read
    return keys


def _int(q: Any, name: str, default: int, maximum: int) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if value < 0 or value > maximum:
        raise ApiError(400, f"{name} must be between 0 and {maximum}")
    return value


def _sort_key(key: str) -> tuple[tuple[str, ...], bool]:
    """A ``_sortKeys`` entry as (JSON pointer segments, descending); 400 for one that names no field."""
    try:
        return sort_key(key)
    except QueryError as exc:
        raise ApiError(400, str(exc)) from None


def sort_objects(objects: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """``objects`` sorted by ``_sortKeys`` (``sort_order``), in place."""
    objects.sort(key=sort_order(keys))
    return objects


def listed(found: Sequence[dict[str, Any]], params: QueryParams) -> dict[str, Any]:
    """A collection held in memory answered as a query: ``params``' filter, sort keys and
    page, each object with the fields asked for."""
    kept = [obj for obj in found if params.filter is None or matches(params.filter, obj)]
    page, cookie = params.page(sort_objects(kept, params.sort_keys))
    return envelope([params.shape(obj) for obj in page], cookie=cookie, params=params, total=len(kept))


def no_query(request: Request, what: str) -> None:
    """400 naming the first query parameter ``request`` holds: ``what`` (``recon``) is read, not queried."""
    sent = next((name for name in _QUERY_ONLY if name in request.query_params), None)
    if sent is not None:
        raise ApiError(400, f"{what} is read, not queried: it does not take {sent}")


def envelope(result: list[dict[str, Any]], *, cookie: str | None, params: QueryParams | None,
             total: int | None) -> dict[str, Any]:
    """PingIDM's answer to a query: ``totalPagedResults`` only when ``EXACT`` was asked,
    ``remainingPagedResults`` always -1, as PingIDM's (CREST's count of what remains is not
    kept by any of its resources)."""
    exact = params is not None and params.exact_total and total is not None
    return {
        "result": result,
        "resultCount": len(result),
        "pagedResultsCookie": cookie,
        "totalPagedResultsPolicy": "EXACT" if exact else "NONE",
        "totalPagedResults": total if exact else -1,
        "remainingPagedResults": -1,
    }


async def read_json(request: Request, limit: int, *, required: bool = True) -> Any:
    """The request body as JSON; 413 past ``limit`` bytes, 400 with the position when
    malformed, nested deeper than ``MAX_JSON_DEPTH`` or holding what the store cannot hold
    (``NaN``, ``Infinity``, a number past a double: ``strict_json``; a NUL character, an
    unpaired surrogate: ``unfit_at``). An empty body is a 400, or
    None when not ``required``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
    if not body.strip():
        if not required:
            return None
        raise ApiError(400, "a JSON body is required")
    try:
        value = strict_json.loads(body)
    except strict_json.UnfitNumber as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                            f"(position {exc.pos})") from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid JSON: not UTF-8") from None
    except RecursionError:
        raise ApiError(400, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ApiError(400, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    unfit = unfit_at(value)
    if unfit is not None:
        raise ApiError(400, f"{unfit}, which the store cannot hold")
    return value


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((inner, depth) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest
