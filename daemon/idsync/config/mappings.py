"""Mappings: ``conf/sync.json`` and ``conf/mapping-NAME.json``, PingIDM's shapes.

Order is PingIDM's: the mappings of ``sync.json`` in file order, then the
individual mapping files, each placed after the mappings its ``syncAfter``
names (file name order among equals). Every script and filter is compiled here,
at load time, so a typo is a ``file: key: problem`` line from ``idsync
validate``, not a failed run at 3 a.m.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from idsync.config.files import load_json
from idsync.config.policies import Action, PolicySet, Situation, parse_policies
from idsync.config.properties import PropertyMap, compile_properties
from idsync.errors import ConfigError, ConfigErrors, ConfigWarning, QueryError
from idsync.keys import suggest, unknown_keys
from idsync.query import parse
from idsync.query.ast import Node
from idsync.scripts import Script, ScriptEngine, compile_script

__all__ = [
    "Correlation",
    "MappingDef",
    "MappingWarning",
    "QueryDef",
    "concatenates_values",
    "load_mappings",
    "mapping_key",
    "parse_mapping",
    "query_def",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOOKS = ("onCreate", "onUpdate", "onDelete", "onLink", "onUnlink", "onRecon", "result")
_KNOWN = {
    "name", "source", "target", "links", "enableSync", "properties", "policies", "validSource",
    "sourceCondition", "validTarget", "sourceQuery", "targetQuery", "correlationQuery",
    "correlationScript", "defaultSourceFields", "defaultTargetFields", "syncAfter",
    "allowEmptySourceSet", "maxDeletes", "allowCreate", "allowUpdate", "allowDelete",
    "runTargetPhase", "displayName", "description", "consentRequired", "icon", "_id",
    "taskThreads", "prefetchLinks", "sourceQueryFullEntry", "targetQueryFullEntry",
    "reconSourceQueryPaging", "reconSourceQueryPageSize", "correlateEmptyTargetSet",
    "sourceIdsCaseSensitive", "targetIdsCaseSensitive", *_HOOKS,
    "linkQualifiers", "enableLinking",
    # PingIDM's, accepted and not acted on (``idsync validate`` says so: config/unused.py)
    "onMapping", "postMapping", "optimizeAssignmentSync", "feedSize",
    "clusteredSourceReconEnabled", "defaultMapping",
}
# A correlation script that pastes a value into the filter text: a value holding a quote
# changes the filter (``evil" or userName eq "victim``) instead of being compared.
_CONCATENATION = re.compile(
    r"""['"`]\s*\+\s*(?:JSON\.stringify\s*\(\s*|String\s*\(\s*)?(?:source|target|object)\b"""
    r"""|\b(?:source|target|object)(?:\.\w+|\[[^\]]*\])*\s*\)?\s*\+\s*['"`]"""
    r"""|\$\{\s*(?:JSON\.stringify\s*\(\s*)?(?:source|target|object)\b""")
_SAFE_CORRELATION = '{"_queryFilter": "/userName eq \\"${source.uid}\\""}'


class MappingWarning(ConfigWarning):
    """A mapping that loads and runs, but not as its author likely meant: ``idsync
    validate`` prints it as a warning; the daemon logs it as ``event`` when it loads
    the project."""

    def __init__(self, file: str, key: str, problem: str, event: str) -> None:
        super().__init__(file, key, problem)
        self.event = event


@dataclass(frozen=True)
class QueryDef:
    """``sourceQuery``/``targetQuery``: a ``_queryFilter`` or a native query, and fields.

    A named query (``{"_queryId": ..., params}``) keeps its id and parameters until the
    project's named queries are known; loading the project turns it into ``filter``."""

    filter: Node | None = None
    native: str | None = None
    fields: tuple[str, ...] | None = None
    query_id: str | None = None
    query_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Correlation:
    """How a source finds its target when there is no link.

    ``filter``: a ``_queryFilter`` with ``${source.x}`` placeholders (declarative,
    batched per page); ``script``: PingIDM's script returning ``{"_queryFilter":
    ...}`` or ``{"_queryId": ..., params}``; ``tree``: PingIDM's ``expressionTree``
    (``all``/``any`` of target properties, compared with the projected target's
    values); ``named``: ``{"_queryId": "for-userName", "uid": "${source.uid}"}``,
    a named query whose parameters are values or placeholders (``query_params``).

    ``link_qualifier``: the link qualifier it correlates for; ``None`` (a string
    filter, a ``correlationScript``) for every qualifier of the mapping.
    """

    kind: Literal["filter", "script", "tree", "named"]
    template: Node | None = None
    script: Script | None = None
    tree_mode: Literal["all", "any"] = "all"
    tree_props: tuple[str, ...] = ()
    link_qualifier: str | None = "default"
    query_id: str | None = None
    query_params: Mapping[str, Any] = field(default_factory=dict)
    key: str = "correlationQuery"


@dataclass
class MappingDef:
    name: str
    source: str
    target: str
    file: str
    properties: PropertyMap
    policies: PolicySet
    links: str | None = None
    enable_sync: bool = True
    valid_source: Script | None = None
    source_condition: Node | Script | None = None
    valid_target: Script | None = None
    source_query: QueryDef = QueryDef()
    target_query: QueryDef = QueryDef()
    correlation: Correlation | None = None
    # One per link qualifier (``correlationQuery`` as a list); ``correlation`` is the first.
    correlations: tuple[Correlation, ...] = ()
    # ``linkQualifiers``: a static list, or a script answering one per source object.
    link_qualifiers: tuple[str, ...] | Script = ("default",)
    hooks: dict[str, Script] = field(default_factory=dict)
    default_source_fields: tuple[str, ...] | None = None
    default_target_fields: tuple[str, ...] | None = None
    sync_after: tuple[str, ...] = ()
    allow_empty_source_set: bool = False
    max_deletes: int | float | None = None  # a count, or a share of the target (0.0-1.0)
    allow_create: bool = True
    allow_update: bool = True
    allow_delete: bool = True
    run_target_phase: bool = True
    correlate_empty_target_set: bool = False
    # ``enableLinking: false``: targets are found by correlation each time, no link is recorded.
    enable_linking: bool = True
    # ``sourceIdsCaseSensitive`` / ``targetIdsCaseSensitive: false``: the links (this mapping's
    # own) keep that side's ids in lower case (``store/links.py``).
    source_ids_case_sensitive: bool = True
    target_ids_case_sensitive: bool = True
    raw: dict[str, Any] = field(default_factory=dict)
    # The mapping as its file holds it, its ``&{NAME}`` tokens not substituted: what the API
    # answers with (``raw`` may hold a secret an environment variable gave).
    written: dict[str, Any] = field(default_factory=dict)
    # What validate warns about: a correlation script that pastes values into its filter, a
    # mapping without links that cannot find its targets again, a LINK that records nothing.
    warnings: tuple[MappingWarning, ...] = ()

    @property
    def linkset(self) -> str:
        return self.links or self.name

    @property
    def qualified(self) -> bool:
        """Whether the mapping links a source to several targets (link qualifiers)."""
        return isinstance(self.link_qualifiers, Script) or self.link_qualifiers != ("default",)

    def correlation_for(self, qualifier: str) -> Correlation | None:
        """The correlation of ``qualifier`` (PingIDM: the ``correlationQuery`` entry naming
        it; a script or a bare filter serves every qualifier)."""
        if not self.qualified:
            return self.correlation
        for c in self.correlations:
            if c.link_qualifier is None or c.link_qualifier == qualifier:
                return c
        return None


def load_mappings(conf_dir: Path, engine: ScriptEngine | None = None) -> list[MappingDef]:
    """All mappings of a project, in processing order."""
    base = conf_dir.parent
    mappings: list[MappingDef] = []
    sync_file = conf_dir / "sync.json"
    if sync_file.exists():
        data = load_json(sync_file, project_dir=base)
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), list):
            raise ConfigError(str(sync_file), "mappings", "expected a list of mappings")
        written = load_json(sync_file, secrets=False)["mappings"]
        for i, raw in enumerate(data["mappings"]):
            m = parse_mapping(raw, file=str(sync_file), key=f"mappings[{i}]", base_dir=base, engine=engine)
            mappings.append(replace(m, written=written[i]))
    singles: list[MappingDef] = []
    for path in sorted(conf_dir.glob("mapping-*.json")):
        raw, written = load_json(path, project_dir=base), load_json(path, secrets=False)
        if isinstance(raw, dict) and "name" not in raw:
            raw = {**raw, "name": path.stem[len("mapping-"):]}
            written = {**written, "name": raw["name"]}
        m = parse_mapping(raw, file=str(path), key="", base_dir=base, engine=engine)
        singles.append(replace(m, written=written))
    mappings.extend(_order_sync_after(singles, {m.name for m in mappings}))
    seen: dict[str, str] = {}
    for m in mappings:
        if m.name in seen:
            raise ConfigError(m.file, "name", f"mapping {m.name} is also defined in {seen[m.name]}")
        seen[m.name] = m.file
    names = set(seen)
    for m in mappings:
        if m.links is not None and m.links not in names:
            raise ConfigError(m.file, mapping_key(m, "links"), f"no mapping named {m.links}")
        for after in m.sync_after:
            if after not in names:
                raise ConfigError(m.file, mapping_key(m, "syncAfter"), f"no mapping named {after}")
    return mappings


def mapping_key(m: MappingDef, key: str) -> str:
    """``key`` of mapping ``m`` as its file names it (in ``sync.json``, under ``mappings[NAME]``)."""
    return key if m.file.endswith(f"mapping-{m.name}.json") else f"mappings[{m.name}].{key}"


def _order_sync_after(singles: list[MappingDef], placed: set[str]) -> list[MappingDef]:
    ordered: list[MappingDef] = []
    pending = list(singles)
    done = set(placed)
    local = {m.name for m in singles}
    while pending:
        ready = [m for m in pending if all(a in done or a not in local | placed for a in m.sync_after)]
        if not ready:
            cycle = ", ".join(m.name for m in pending)
            raise ConfigError(pending[0].file, "syncAfter", f"syncAfter forms a cycle among: {cycle}")
        for m in ready:
            ordered.append(m)
            done.add(m.name)
            pending.remove(m)
    return ordered


def parse_mapping(raw: Any, *, file: str, key: str, base_dir: Path,
                  engine: ScriptEngine | None = None) -> MappingDef:
    def at(name: str) -> str:
        return f"{key}.{name}" if key else name

    if not isinstance(raw, dict):
        raise ConfigError(file, key or "(top)", "a mapping must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(file, at("name"), "a mapping needs a name of letters, digits, _ . -")
    for required in ("source", "target"):
        value = raw.get(required)
        if not isinstance(value, str) or not re.match(r"^(managed/[\w-]+|system/[\w.-]+/[\w.-]+)$", value):
            raise ConfigError(file, at(required), "expected a resource such as managed/user or system/ldap/account")
    problems: list[ConfigError] = unknown_keys(raw, _KNOWN, file=file, prefix=key)

    def script(value: Any, k: str) -> Script:
        return compile_script(value, file=file, key=k, base_dir=base_dir, engine=engine)

    def query(text: Any, k: str) -> Node:
        if not isinstance(text, str):
            raise ConfigError(file, k, "expected a _queryFilter string")
        try:
            return parse(text)
        except QueryError as exc:
            raise ConfigError(file, k, f"bad _queryFilter: {exc}") from None

    def opt_script(name_: str) -> Script | None:
        return script(raw[name_], at(name_)) if raw.get(name_) is not None else None

    def condition(value: Any, k: str) -> Node | Script:
        return query(value, k) if isinstance(value, str) else script(value, k)

    def attempt(build: Callable[[], Any], fallback: Any = None) -> Any:
        # Keep going after a bad section so `idsync validate` reports every problem.
        try:
            return build()
        except ConfigErrors as exc:
            problems.extend(exc.errors)
        except ConfigError as exc:
            problems.append(exc)
        return fallback

    properties = attempt(lambda: compile_properties(
        raw.get("properties", []), file=file, key=at("properties"), compile_script=script, compile_filter=query))
    policies = attempt(lambda: parse_policies(
        raw.get("policies", []), file=file, key=at("policies"), compile_script=script, compile_filter=query))
    links = raw.get("links")
    if links is not None and not isinstance(links, str):
        problems.append(ConfigError(file, at("links"), "expected the name of another mapping"))
    hooks: dict[str, Script] = {}
    for h in _HOOKS:
        if raw.get(h) is not None:
            compiled = attempt(functools.partial(script, raw[h], at(h)))
            if compiled is not None:
                hooks[h] = compiled
    fields = {
        "enable_sync": attempt(lambda: _bool(raw, "enableSync", True, file, at), True),
        "valid_source": attempt(lambda: opt_script("validSource")),
        "source_condition": attempt(lambda: condition(raw["sourceCondition"], at("sourceCondition")))
        if raw.get("sourceCondition") is not None else None,
        "valid_target": attempt(lambda: opt_script("validTarget")),
        "source_query": attempt(lambda: query_def(raw.get("sourceQuery"), file, at("sourceQuery"), query), QueryDef()),
        "target_query": attempt(lambda: query_def(raw.get("targetQuery"), file, at("targetQuery"), query), QueryDef()),
        "correlations": attempt(lambda: _correlations(raw, file, at, script, query), ()),
        "link_qualifiers": attempt(lambda: _link_qualifiers(raw.get("linkQualifiers"), file,
                                                            at("linkQualifiers"), script), ("default",)),
        "default_source_fields": attempt(
            lambda: _fields(raw.get("defaultSourceFields"), file, at("defaultSourceFields"))),
        "default_target_fields": attempt(
            lambda: _fields(raw.get("defaultTargetFields"), file, at("defaultTargetFields"))),
        "sync_after": attempt(lambda: _names(raw.get("syncAfter"), file, at("syncAfter")), ()),
        "allow_empty_source_set": attempt(lambda: _bool(raw, "allowEmptySourceSet", False, file, at), False),
        "max_deletes": attempt(lambda: _max_deletes(raw.get("maxDeletes"), file, at("maxDeletes"))),
        "allow_create": attempt(lambda: _bool(raw, "allowCreate", True, file, at), True),
        "allow_update": attempt(lambda: _bool(raw, "allowUpdate", True, file, at), True),
        "allow_delete": attempt(lambda: _bool(raw, "allowDelete", True, file, at), True),
        "run_target_phase": attempt(lambda: _bool(raw, "runTargetPhase", True, file, at), True),
        "correlate_empty_target_set": attempt(
            lambda: _bool(raw, "correlateEmptyTargetSet", False, file, at), False),
        "enable_linking": attempt(lambda: _bool(raw, "enableLinking", True, file, at), True),
        "source_ids_case_sensitive": attempt(lambda: _bool(raw, "sourceIdsCaseSensitive", True, file, at), True),
        "target_ids_case_sensitive": attempt(lambda: _bool(raw, "targetIdsCaseSensitive", True, file, at), True),
    }
    if not problems:
        attempt(lambda: _check_qualifiers(fields["link_qualifiers"], fields["correlations"], file,
                                          at("correlationQuery")))
    if problems:
        raise ConfigErrors(problems) if len(problems) > 1 else problems[0]
    fields["correlation"] = fields["correlations"][0] if fields["correlations"] else None
    warnings = _concatenations(raw, file, at)
    warnings += _unread_sources(properties, fields["source_query"], fields["default_source_fields"], file, at)
    if not fields["enable_linking"] and not fields["correlations"]:
        warnings.append(MappingWarning(file, at("enableLinking"), _UNLINKED, "config.unlinked_without_correlation"))
    if not fields["enable_linking"]:
        warnings += [MappingWarning(file, at(f"policies[{i}].action"), _LINK_WITHOUT_LINKS, "config.link_without_links")
                     for i, policy in policies.for_situation(Situation.FOUND) if policy.action == Action.LINK]
    return MappingDef(
        name=name, source=raw["source"], target=raw["target"], file=file, properties=properties,
        policies=policies, links=links, hooks=hooks, raw=raw, warnings=tuple(warnings), **fields,
    )


def _bool(raw: Mapping[str, Any], name: str, default: bool, file: str, at: Callable[[str], str]) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(file, at(name), "expected true or false")
    return value


def _names(value: Any, file: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(file, key, "expected a list of mapping names")


def _fields(value: Any, file: str, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(file, key, "expected a list of field names")


# What a query's ``_fields`` may name besides attributes: ids only make PingIDM read each
# object whole (its ``sourceQueryFullEntry`` told from the answer), "*" is every attribute.
_ID_FIELDS = frozenset({"_id", "_rev"})


def _query_fields(value: Any, file: str, key: str) -> tuple[str, ...] | None:
    """A query's ``_fields``: a list, or CREST's comma-separated string (``"uid, mail"``).
    ``None``: what the mapping needs is read (``source_fields``). A list of ids alone
    (``"_id"``) asks for that too, as PingIDM reads whole each object such a query
    returns: read as written, every mapped property would be projected empty."""
    if isinstance(value, str):
        value = value.split(",")
    names = _fields(value, file, key)
    if names is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ConfigError(file, key, "names no field: leave _fields out to read what the mapping uses")
    if "*" in names or _ID_FIELDS.issuperset(names):
        return None
    return names


def _max_deletes(value: Any, file: str, key: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?%", value.strip()):
        share = float(value.strip()[:-1]) / 100
        if share <= 1:
            return share
    raise ConfigError(file, key, "expected a number of objects (10) or a share of the target (\"5%\")")


# What a sourceQuery/targetQuery object holds: one query, and the fields to read.
_QUERIES = ("_queryFilter", "queryFilter", "_queryId", "nativeQuery", "_nativeQuery")
_QUERY_KEYS = (*_QUERIES, "_fields", "fields")


def query_def(value: Any, file: str, key: str, query: Callable[[Any, str], Node]) -> QueryDef:
    """A ``sourceQuery``/``targetQuery`` (a mapping's, or one run's): a key it does not
    know is an error, never a query left out, which would read every object."""
    if value is None:
        return QueryDef()
    if isinstance(value, str):
        if value.lstrip().startswith("("):
            return QueryDef(native=value.strip())
        return QueryDef(filter=query(value, key))
    if not isinstance(value, dict):
        raise ConfigError(file, key, "expected {\"_queryFilter\": ...} or a native query string")
    given = [k for k in _QUERIES if k in value]
    if len(given) > 1:
        raise ConfigError(file, key, f"gives {' and '.join(given)}: a query is one of them")
    # With a _queryId, the other keys are its parameters; a parameter never starts with "_".
    for name in value:
        if name not in _QUERY_KEYS and (name.startswith("_") or "_queryId" not in value):
            raise ConfigError(file, f"{key}.{name}", suggest(name, _QUERY_KEYS)
                              + "; a query that is not understood would read every object")
    fields = _query_fields(value.get("_fields", value.get("fields")), file, f"{key}._fields")
    if "_queryFilter" in value or "queryFilter" in value:
        text = value.get("_queryFilter", value.get("queryFilter"))
        return QueryDef(filter=query(text, f"{key}._queryFilter"), fields=fields)
    native = value.get("nativeQuery", value.get("_nativeQuery"))
    if isinstance(native, str):
        return QueryDef(native=native.strip(), fields=fields)
    query_id = value.get("_queryId")
    if query_id in ("query-all-ids", "query-all", None):
        return QueryDef(fields=fields)
    if not isinstance(query_id, str) or not query_id:
        raise ConfigError(file, f"{key}._queryId", "expected the name of a query")
    params = {k: v for k, v in value.items() if not k.startswith("_") and k not in ("fields", "queryFilter")}
    return QueryDef(fields=fields, query_id=query_id, query_params=params)


def _link_qualifiers(value: Any, file: str, key: str, script: Callable[[Any, str], Script],
                     ) -> tuple[str, ...] | Script:
    if value is None:
        return ("default",)
    if isinstance(value, dict):
        return script(value, key)
    if not isinstance(value, list) or not value:
        raise ConfigError(file, key, "expected a list of link qualifiers, or a script returning one")
    for i, q in enumerate(value):
        if not isinstance(q, str) or not _NAME.match(q) or len(q) > 64:
            raise ConfigError(file, f"{key}[{i}]", "a link qualifier is a name of letters, digits, _ . - "
                              "(at most 64)")
    if len(set(value)) != len(value):
        raise ConfigError(file, key, "a link qualifier is listed twice")
    return tuple(value)


def _check_qualifiers(qualifiers: tuple[str, ...] | Script, correlations: tuple[Correlation, ...],
                      file: str, key: str) -> None:
    seen: set[str | None] = set()
    if len(correlations) > 1 and qualifiers == ("default",):
        raise ConfigError(file, key, "several correlation queries need the mapping's linkQualifiers, "
                          "one per query's linkQualifier")
    for c in correlations:
        if c.link_qualifier in seen:
            raise ConfigError(file, c.key, f"a second correlation for link qualifier {c.link_qualifier}")
        seen.add(c.link_qualifier)
        if (isinstance(qualifiers, tuple) and qualifiers != ("default",) and c.link_qualifier is not None
                and c.link_qualifier not in qualifiers):
            raise ConfigError(file, f"{c.key}.linkQualifier",
                              f"link qualifier {c.link_qualifier!r} is not one of the mapping's linkQualifiers "
                              f"({', '.join(qualifiers)})")


def _correlations(
    raw: Mapping[str, Any], file: str, at: Callable[[str], str],
    script: Callable[[Any, str], Script], query: Callable[[Any, str], Node],
) -> tuple[Correlation, ...]:
    value = raw.get("correlationQuery")
    key = at("correlationQuery")
    if value is None and raw.get("correlationScript") is not None:
        return (Correlation(kind="script", script=script(raw["correlationScript"], at("correlationScript")),
                            link_qualifier=None, key=at("correlationScript")),)
    if value is None:
        return ()
    if isinstance(value, list):
        if not value:
            raise ConfigError(file, key, "expected at least one correlation query")
        return tuple(_correlation(v, file, f"{key}[{i}]", script, query) for i, v in enumerate(value))
    return (_correlation(value, file, key, script, query),)


def _correlation(value: Any, file: str, key: str, script: Callable[[Any, str], Script],
                 query: Callable[[Any, str], Node]) -> Correlation:
    if isinstance(value, str):
        return Correlation(kind="filter", template=query(value, key), link_qualifier=None, key=key)
    if not isinstance(value, dict):
        raise ConfigError(file, key, "expected a script, {\"_queryFilter\": ...} or {\"_queryId\": ...}")
    qualifier = value.get("linkQualifier", "default")
    if not isinstance(qualifier, str) or not qualifier:
        raise ConfigError(file, f"{key}.linkQualifier", "expected the name of a link qualifier")
    if "expressionTree" in value:
        tree = value["expressionTree"]
        if not isinstance(tree, dict) or len(tree) != 1 or next(iter(tree)) not in ("all", "any"):
            raise ConfigError(file, f"{key}.expressionTree", "expected {\"all\": [...]} or {\"any\": [...]}")
        mode = next(iter(tree))
        props = _fields(tree[mode], file, f"{key}.expressionTree.{mode}") or ()
        return Correlation(kind="tree", tree_mode="all" if mode == "all" else "any", tree_props=props,
                           link_qualifier=qualifier, key=key)
    if "_queryFilter" in value:
        return Correlation(kind="filter", template=query(value["_queryFilter"], f"{key}._queryFilter"),
                           link_qualifier=qualifier, key=key)
    if "_queryId" in value:
        query_id = value["_queryId"]
        if not isinstance(query_id, str) or not query_id:
            raise ConfigError(file, f"{key}._queryId", "expected the name of a query")
        params = {k: v for k, v in value.items() if not k.startswith("_") and k != "linkQualifier"}
        return Correlation(kind="named", query_id=query_id, query_params=params, link_qualifier=qualifier, key=key)
    if "source" not in value and "file" not in value:
        # Neither a query nor a script: name what was given (a misspelt _queryFilter, say).
        odd = sorted(k for k in value if k not in ("type", "globals", "linkQualifier"))
        if odd:
            raise ConfigError(file, f"{key}.{odd[0]}", suggest(odd[0], _CORRELATION_KEYS))
    return Correlation(kind="script", script=script(value, key), link_qualifier=qualifier, key=key)


_CORRELATION_KEYS = ("_queryFilter", "_queryId", "expressionTree", "linkQualifier", "type", "source", "file", "globals")


def concatenates_values(script_source: str) -> bool:
    """Whether a correlation script builds its filter text by pasting in a source,
    target or object value (``'userName eq "' + source.uid + '"'``)."""
    return _CONCATENATION.search(script_source) is not None


def _concatenations(raw: Mapping[str, Any], file: str, at: Callable[[str], str]) -> list[MappingWarning]:
    """A warning for each correlation script (``correlationScript``, a script of
    ``correlationQuery``) that pastes a value into its filter text."""
    value, key = raw.get("correlationQuery"), at("correlationQuery")
    if value is None:
        value, key = raw.get("correlationScript"), at("correlationScript")
    entries = [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
    return [MappingWarning(file, k, _PASTES, "config.correlation_concatenates") for k, v in entries
            if isinstance(v, dict) and not {"expressionTree", "_queryFilter", "_queryId"} & set(v)
            and isinstance(v.get("source"), str) and concatenates_values(v["source"])]


_PASTES = ("the correlation script pastes a value into the filter text: a value holding a quote or a backslash "
           "changes the filter or breaks it; use the declarative form, whose placeholders are bound as values: "
           f"\"correlationQuery\": {_SAFE_CORRELATION}")


def _unread_sources(properties: PropertyMap, source_query: QueryDef, default_fields: tuple[str, ...] | None,
                    file: str, at: Callable[[str], str]) -> list[MappingWarning]:
    """A warning when the source fields a recon reads (``sourceQuery._fields``, else
    ``defaultSourceFields``) leave out an attribute a property rule reads: the source
    object would not hold it, so the rule would project it empty over the target's value."""
    key, fields = (("sourceQuery._fields", source_query.fields) if source_query.fields is not None
                   else ("defaultSourceFields", default_fields))
    if fields is None:
        return []
    read = {name.split("/")[0] for name in fields}
    missing = sorted({rule.source[0] for rule in properties.rules if rule.source} - read)
    missing = [name for name in missing if not name.startswith("_")]
    if not missing:
        return []
    names = ", ".join(missing)
    problem = (f"leaves out {names}, which the properties map: a recon would not read them, so it would "
               "project them empty over the target's values; list them here too")
    return [MappingWarning(file, at(key), problem, "config.source_fields_incomplete")]


_UNLINKED = ("enableLinking is false and the mapping has no correlationQuery or correlationScript: with no link "
             "to remember them by, every run finds no target for any source and creates them all again")
_LINK_WITHOUT_LINKS = ("FOUND's action is LINK and enableLinking is false: with no link to record, LINK does "
                       "nothing, as in PingIDM, and the target found is left as it is; UPDATE updates it")
