"""Correlation: finding the target of a source object that has no link yet.

Per page, every source's correlation query is built first (a bound template, a
script's answer, or an expression tree over the projected target); queries that
are equalities of the same shape (``/userName eq X``) are then answered by one
batched ``find_matching`` call per shape, so a page of 1000 costs one indexed
query rather than 1000. Anything else (``co``, ``or``...) falls back to one
query per object.

A page's sources are correlated together, before any of the page is written, so
``PlannedTargets`` lets the later sources of a page see the targets planned for
earlier ones: a source whose query matches one is assessed again once it is
written, as it would be had it come in a later page.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from idsync.config.mappings import Correlation
from idsync.errors import IdsyncError, QueryError, ScriptError
from idsync.query import bind, equality_terms, matches, parse
from idsync.query.ast import And, Compare, Node, Or, Path
from idsync.query.evaluate import values_at
from idsync.query.named import NamedQueries
from idsync.resource import Obj, QuerySpec, Resource
from idsync.scripts import kind_of

__all__ = ["ChosenTarget", "Correlator", "PlannedTargets", "lookup"]


def lookup(root: Any, dotted: str) -> Any:
    value = root
    for part in dotted.replace("/", ".").split("."):
        if not part:
            continue
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


_PLACEHOLDER = re.compile(r"^\$\{([^{}]+)\}$")


class Correlator:
    """Finds the candidate targets of a page of sources, for one link qualifier."""

    def __init__(self, correlation: Correlation, target: Resource, fields: Sequence[str] | None,
                 queries: NamedQueries | None = None, qualifier: str = "default") -> None:
        self.correlation = correlation
        self.target = target
        self.fields = fields
        self.queries = queries or NamedQueries()
        self.qualifier = qualifier

    def correlate(
        self, sources: Sequence[Obj], projected: Callable[[Obj], Obj]
    ) -> tuple[dict[str, list[Obj] | IdsyncError], dict[str, Node]]:
        """source id -> the candidate targets (or the error that stopped correlating it);
        and source id -> the query that found them (none for a script's own answer)."""
        out: dict[str, list[Obj] | IdsyncError] = {}
        queries: dict[str, Node | None] = {}
        self._build(sources, projected, queries, out)
        # One batch per shape, and per position holding a boolean or not: the answers are
        # keyed by the values, where Python has ``(True,) == (1,)``.
        groups: dict[tuple[tuple[Path, ...], tuple[bool, ...]], list[tuple[str, tuple[Any, ...]]]] = {}
        for sid, node in queries.items():
            if node is None:
                out[sid] = []
                continue
            terms = equality_terms(node)
            if terms is None:
                try:
                    out[sid] = self.target.find(QuerySpec(filter=node, fields=self.fields), limit=10)
                except IdsyncError as exc:
                    out[sid] = exc
                continue
            paths = tuple(p for p, _ in terms)
            booleans = tuple(isinstance(v, bool) for _, v in terms)
            groups.setdefault((paths, booleans), []).append((sid, tuple(v for _, v in terms)))
        for (paths, _), members in groups.items():
            found = self.target.find_matching(paths, [v for _, v in members], self.fields)
            for sid, values in members:
                out[sid] = list(found.get(values, []))
        return out, {sid: node for sid, node in queries.items() if node is not None}

    def _build(
        self, sources: Sequence[Obj], projected: Callable[[Obj], Obj],
        queries: dict[str, Node | None], out: dict[str, list[Obj] | IdsyncError],
    ) -> None:
        c = self.correlation
        if c.kind == "filter" and c.template is not None:
            template = c.template
            for s in sources:
                try:
                    queries[s["_id"]] = bind(template, functools.partial(self._resolve, source=s, projected=projected))
                except IdsyncError as exc:
                    out[s["_id"]] = exc
        elif c.kind == "tree":
            for s in sources:
                try:
                    target = projected(s)
                except IdsyncError as exc:
                    out[s["_id"]] = exc
                    continue
                terms = [Compare((p,), "eq", target.get(p)) for p in c.tree_props if target.get(p) is not None]
                if not terms or (c.tree_mode == "all" and len(terms) < len(c.tree_props)):
                    queries[s["_id"]] = None
                elif len(terms) == 1:
                    queries[s["_id"]] = terms[0]
                else:
                    queries[s["_id"]] = And(tuple(terms)) if c.tree_mode == "all" else Or(tuple(terms))
        elif c.kind == "named":
            named = self.queries.get(c.query_id)
            for s in sources:
                resolve = functools.partial(self._resolve, source=s, projected=projected)
                try:
                    params = {k: _param(v, resolve) for k, v in c.query_params.items()}
                    queries[s["_id"]] = named.bind(params)
                except IdsyncError as exc:
                    out[s["_id"]] = exc
        elif c.script is not None:
            answers = c.script.call_many([{"source": s, "linkQualifier": self.qualifier} for s in sources])
            for s, answer in zip(sources, answers, strict=True):
                sid = s["_id"]
                if isinstance(answer, ScriptError):
                    out[sid] = answer
                elif isinstance(answer, list):
                    out[sid] = _candidates(answer, c.script.name)
                elif answer is None:
                    queries[sid] = None
                else:
                    try:
                        queries[sid] = _query_of(answer, self.queries)
                    except IdsyncError as exc:
                        out[sid] = exc

    @staticmethod
    def _resolve(expr: str, *, source: Obj, projected: Callable[[Obj], Obj]) -> Any:
        head, _, rest = expr.partition(".")
        if head == "source":
            return lookup(source, rest)
        if head == "target":
            return lookup(projected(source), rest)
        raise QueryError(f"unknown placeholder ${{{expr}}}: use ${{source.NAME}} or ${{target.NAME}}")


class ChosenTarget(Correlator):
    """The target an administrator named for a source (``performAction``'s ``targetId``),
    its one candidate in place of the mapping's correlation."""

    def __init__(self, chosen: Obj) -> None:  # none of Correlator's own state is needed
        self.chosen = chosen

    def correlate(
        self, sources: Sequence[Obj], projected: Callable[[Obj], Obj]
    ) -> tuple[dict[str, list[Obj] | IdsyncError], dict[str, Node]]:
        return {s["_id"]: [self.chosen] for s in sources}, {}


class PlannedTargets:
    """The targets a batch plans to create, in order, and whether a correlation query
    would find one of them. Case is ignored (a directory compares that way): a false
    match only costs the source a second assessment against the written target."""

    def __init__(self) -> None:
        self._objs: list[Obj] = []
        self._keys: dict[tuple[Path, ...], set[tuple[Hashable, ...]]] = {}

    def add(self, obj: Obj) -> None:
        self._objs.append(obj)
        for paths, keys in self._keys.items():
            keys.update(_keys(obj, paths))

    def matched_by(self, query: Node) -> bool:
        if not self._objs:
            return False
        terms = equality_terms(query)
        if terms is None:
            return any(matches(query, o, ignore_case=True) for o in self._objs)
        paths = tuple(p for p, _ in terms)
        if paths not in self._keys:  # equality queries of one shape: a set lookup, not a scan
            self._keys[paths] = {k for o in self._objs for k in _keys(o, paths)}
        return tuple(_folded(v) for _, v in terms) in self._keys[paths]


def _keys(obj: Obj, paths: tuple[Path, ...]) -> list[tuple[Hashable, ...]]:
    per_path = [[_folded(v) for v in values_at(obj, p) if v is not None] for p in paths]
    return [k for k in itertools.product(*per_path) if all(isinstance(v, Hashable) for v in k)]


def _folded(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


# Correlation scripts mostly answer `field eq "value"`; this skips the general
# parser for that shape (it costs more than the lookup on a large first recon).
_SIMPLE_EQ = re.compile(r'^\s*/?([A-Za-z_][\w-]*)\s+eq\s+"([^"\\]*)"\s*$')


def _parse(text: str) -> Node:
    simple = _SIMPLE_EQ.match(text)
    if simple:
        return Compare((simple.group(1),), "eq", simple.group(2))
    return parse(text)


def _param(value: Any, resolve: Callable[[str], Any]) -> Any:
    """A named query's parameter as the mapping gives it: ``${source.x}`` is that value."""
    found = _PLACEHOLDER.match(value) if isinstance(value, str) else None
    return resolve(found.group(1).strip()) if found else value


def _candidates(answer: list[Any], script: str) -> list[Obj] | IdsyncError:
    """A correlation script's list of candidate targets, each an object with its ``_id`` (as
    ``openidm.query(...).result`` holds them). Anything else fails the source: taken for no
    candidate, an id given alone (``['bjensen']``) would have its source's target made again."""
    for i, item in enumerate(answer):
        if not isinstance(item, dict) or not item.get("_id"):
            what = "an object without an _id" if isinstance(item, dict) else kind_of(item)
            return ScriptError(f"{script}: item {i} of the candidates it answered is {what}: a correlation "
                               "script answers the candidate targets as openidm.query(...).result holds them, "
                               "each with its _id")
    return answer


def _query_of(answer: Any, named: NamedQueries) -> Node | None:
    if isinstance(answer, str):
        return _parse(answer)
    if isinstance(answer, dict):
        text = answer.get("_queryFilter", answer.get("queryFilter"))
        if isinstance(text, str):
            try:
                return _parse(text)
            except QueryError as exc:
                raise QueryError(f"the correlation script returned a bad _queryFilter: {exc}") from None
        if "_queryId" in answer:
            query = named.get(answer["_queryId"])
            if query.matches_all:
                raise QueryError(f"the correlation script returned _queryId {query.name}, which matches every "
                                 "object: a correlation must find the one target of a source")
            # The other keys are the query's parameters, bound as values (never as query text).
            return query.bind({k: v for k, v in answer.items() if not k.startswith("_")})
    raise QueryError("the correlation script must return {\"_queryFilter\": \"...\"} or "
                     "{\"_queryId\": \"...\", parameters}")
