"""What of a PingIDM project idsync reads and does not act on.

A PingIDM project's ``conf/`` holds far more than idsync implements: the admin UI,
self-service, workflows, custom endpoints, the policy service, managed-object
scripts, the server's own plumbing. Passing over them in silence would let an
administrator believe that a password policy or an ``onCreate`` script still runs.
So ``idsync validate`` names each of them as a warning (``NotUsed``) saying what
PingIDM does with it and what idsync does instead:

* files idsync does not read, one line per kind of file (all the ``ui-*.json``
  files on one line), the server's plumbing (web server, OSGi, logging, cluster)
  on one terse line;
* keys of the files idsync does read (``managed.json``, ``sync.json`` and
  ``mapping-*.json``, provisioners), one line per object and reason, the keys
  written ``objects[0].{onCreate,postCreate}``; a relationship's change notification
  (``notify``, ``notifySelf``, ``notifyRelationships``) where following it would
  make a difference (``config/notify.py``); in ``managed.json``'s schemas and
  a provisioner's ``objectTypes``, the keys idsync does not know and takes for no
  misspelling of a known one (``config/schema_keys.py``);
* the scripts of those files that call a service idsync's scripts cannot reach
  (``config/script_reach.py``): the call throws each time the script runs.

These are warnings only: nothing here changes how a project loads, and a file
that does not parse is left to the code that reads it to report.
docs/pingidm.md lists the same table.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.config.actions import unserved
from idsync.config.endpoints import not_served
from idsync.config.files import load_json
from idsync.config.notify import notified
from idsync.config.objectmodel import NOT_ENFORCED_POLICIES, js_regexp, not_run
from idsync.config.operation_options import FOLLOWED
from idsync.config.relationships import demoted
from idsync.config.schema_keys import MANAGED_TYPE_KEYS, KeySet, object_type_key_sets, schema_key_sets
from idsync.config.script_reach import REACHED, script_objects, script_text, unreachable_calls
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import misspelling_of
from idsync.scripts.paths import ScriptPaths

__all__ = ["NotUsed", "mapping_systems", "unused_configuration"]


class NotUsed(ConfigWarning):
    """A PingIDM file or key idsync does not act on: the file, the key and why."""


@dataclass(frozen=True)
class _Kind:
    patterns: tuple[str, ...]  # file names under conf/, fnmatch patterns
    why: str


# The files idsync reads; anything else under conf/ gets a line.
_READ = ("idsync.toml", "managed.json", "sync.json", "mapping-*.json", "provisioner.openicf-*.json",
         "schedule-*.json", "policy.json", "external.email.json")

_UI = "the admin and end-user UI's configuration; idsync has the command line, the HTTP API and the status file"
_KINDS = (
    _Kind(("authentication.json",), "not used by idsync: how PingIDM authenticates callers of its REST API; "
          "idsync's HTTP API has its own accounts ([api] in conf/idsync.toml)"),
    _Kind(("audit.json",), "not used by idsync: PingIDM's audit event handlers and topics; idsync records every "
          "run and every change in its store (idsync status, the HTTP API) and logs events"),
    _Kind(("router.json",), "not run: scripts PingIDM runs around requests (authorization, policy enforcement); "
          "idsync's HTTP API authorizes with its own accounts and runs no request scripts"),
    _Kind(("endpoint-*.json",), "not served: PingIDM's own endpoints (for its admin UI: their scripts are "
          "PingIDM's, or load its modules) and Groovy ones; idsync serves a project's JavaScript endpoints at "
          "openidm/endpoint/NAME"),
    _Kind(("script.json",), "not read: PingIDM's script engine settings (script directories, Groovy options); "
          "idsync runs text/javascript in its own sandbox ([scripts] in conf/idsync.toml)"),
    _Kind(("workflow.json", "process-*.json"), "not used by idsync: the embedded workflow engine and who may "
          "start which process; idsync has no workflows"),
    _Kind(("selfservice*.json", "consent.json"), "not used by idsync: end-user self-service (registration, "
          "password reset, security questions); idsync has no end-user UI"),
    _Kind(("ui-*.json", "ui.context-*.json", "themeconfig.json"), f"not used by idsync: {_UI}"),
    _Kind(("info-*.json",), "not served: PingIDM's info endpoints (openidm/info/...); idsync tells its health "
          "by idsync status, the status file and the HTTP API"),
    _Kind(("servletfilter-*.json",), "not used by idsync: filters of PingIDM's web server (CORS, trusted "
          "headers)"),
    _Kind(("external.*.json", "messaging.json"), "not used by idsync: services PingIDM's scripts and "
          "workflows call (REST, JMS messages); idsync's scripts cannot call them (they send mail: "
          "external.email.json)"),
    _Kind(("identityProviders.json",), "not used by idsync: social sign-in to PingIDM's UI"),
    _Kind(("provisioner.openicf.connectorinfoprovider.json",), "not used by idsync: OpenICF remote connector "
          "servers; idsync's connectors are built in"),
    _Kind(("repo.*.json", "datasource.*.json"), "not read but for a repo file's queries (named queries, "
          "_queryId): PingIDM's repository; idsync keeps managed objects, "
          "links and runs in its own store ([store] url in conf/idsync.toml), and no data moves by itself"),
    _Kind(("boot/boot.properties",), "not read: PingIDM's startup properties (ports, keystores, node id); "
          "a &{name} token in a file idsync reads takes the environment variable name (or NAME with _ for .)"),
    _Kind(("jetty.xml", "logging.properties", "config.properties", "system.properties", "felix.webconsole.json",
           "cluster.json", "scheduler.json", "jaas.conf", "webserver*.json", "metrics.json"),
          "not read: PingIDM's server plumbing (web server, OSGi framework, logging, cluster, scheduler threads); "
          "idsync's own settings are in conf/idsync.toml"),
)

_MANAGED_EVENTS = ("onCreate", "onRead", "onUpdate", "onDelete", "onValidate", "onRetrieve", "onStore", "onSync",
                   "postCreate", "postUpdate", "postDelete")
_ON_SYNC_ROLES = "; idsync pushes the users of a changed role or assignment itself"
_ASSIGNMENTS = ("; idsync's sync engine applies assignments as PingIDM's roles/defaultMapping.js does, their "
                "onAssignment/onUnassignment scripts and script operations included, and keeps each user's lastSync "
                "in its own table (docs/pingidm.md#roles)")
_EFFECTIVE = ("effectiveRoles", "effectiveAssignments")
_COMPUTED = ("idsync computes effectiveRoles and effectiveAssignments itself, on every read, with roles' conditions "
             "and temporal constraints (docs/store.md#roles-and-assignments)")
# A managed type's keys idsync uses, or that only describe it in PingIDM's UI.
_MANAGED_KEYS = ("name", "schema", "title", "description", "displayName", "iconClass", "iconSrc", "type")
_PROPERTY_SCRIPTS = ("queryConfig",)
_MAPPING_SCRIPTS = ("defaultMapping", "postMapping", "onMapping")
_MAPPING_TUNING = ("taskThreads", "prefetchLinks", "feedSize", "reconSourceQueryPaging", "reconSourceQueryPageSize",
                   "sourceQueryFullEntry", "targetQueryFullEntry", "clusteredSourceReconEnabled",
                   "optimizeAssignmentSync")
_CONNECTOR_TUNING = ("poolConfigOption", "operationTimeout", "resultsHandlerConfig", "producerBufferSize",
                     "connectorPoolingSupported", "excludeUnmodified")


def unused_configuration(conf_dir: Path, skip: Mapping[str, str] | None = None) -> list[NotUsed]:
    """Every PingIDM file and key under ``conf_dir`` that idsync does not act on.
    ``skip`` maps systems whose connector idsync does not have to their provisioner
    files: their error says enough, so neither those files' keys nor the keys of the
    mappings that use them are gone through."""
    if not conf_dir.is_dir():
        return []
    skip = skip or {}
    found = list(_files(conf_dir))
    found += _managed(conf_dir / "managed.json")
    found += _policy_json(conf_dir / "policy.json")
    for path in ([conf_dir / "sync.json"] if (conf_dir / "sync.json").is_file() else []):
        found += _sync(path, set(skip))
    for path in sorted(conf_dir.glob("mapping-*.json")):
        raw = _json(path)
        if isinstance(raw, dict) and not mapping_systems(raw) & set(skip):
            found += _mapping(str(path), "", raw)
    for path in sorted(conf_dir.glob("provisioner.openicf-*.json")):
        if str(path) not in skip.values():
            found += _provisioner(path)
    found += _script_calls(conf_dir, set(skip))
    return found


def mapping_systems(raw: Mapping[str, Any]) -> set[str]:
    """The systems a mapping's source and target name (``system/NAME/type``)."""
    sides = (raw.get("source"), raw.get("target"))
    return {side.split("/")[1] for side in sides
            if isinstance(side, str) and side.startswith("system/") and side.count("/") == 2}


def _files(conf: Path) -> Iterator[NotUsed]:
    names = sorted(p.relative_to(conf).as_posix() + ("/" if p.is_dir() else "") for p in _conf_files(conf))
    claimed: set[str] = {n for n in names if _matches(n, _READ) or _only_queries(conf, n)
                         or (_matches(n, ("endpoint-*.json",)) and not_served(conf / n, conf.parent) is None)}
    for kind in _KINDS:
        group = [n for n in names if n not in claimed and _matches(n, kind.patterns)]
        claimed.update(group)
        if group:
            yield _group(conf, group, kind.why)
    others = [n for n in names if n not in claimed]
    if others:
        yield _group(conf, others, "not read: not a file idsync knows (PingIDM may read it; idsync does not)")


def _script_calls(conf: Path, skip: Collection[str]) -> list[NotUsed]:
    """A line for each script, of the files idsync runs scripts from, that calls a service
    idsync's scripts cannot reach (``config/script_reach.py``)."""
    paths = ScriptPaths(conf.parent)
    found = []
    files = [conf / "managed.json", conf / "sync.json", *sorted(conf.glob("mapping-*.json")),
             *sorted(conf.glob("schedule-*.json")),
             *(p for p in sorted(conf.glob("endpoint-*.json")) if not_served(p, conf.parent) is None)]
    for path in files:
        raw = _json(path) if path.is_file() else None
        if path.name == "sync.json" and isinstance(raw, dict) and isinstance(raw.get("mappings"), list):
            raw = {"mappings": [m if not (isinstance(m, dict) and mapping_systems(m) & set(skip)) else None
                                for m in raw["mappings"]]}
        elif path.name.startswith("mapping-") and isinstance(raw, dict) and mapping_systems(raw) & set(skip):
            continue
        for key, config in script_objects(raw):
            source = script_text(config, paths)
            calls = unreachable_calls(source) if source is not None else []
            if calls:
                found.append(NotUsed(str(path), key, f"fails where it calls: {config.get('file') or 'the script'} "
                                     f"calls a service idsync's scripts cannot reach, which throws each time the "
                                     f"script runs: {'; '.join(calls)} (they reach {REACHED})"))
    return found


def _only_queries(conf: Path, name: str) -> bool:
    """A ``repo.*.json`` holding nothing but ``queries``, which idsync reads (``_queryId``)."""
    if not fnmatch.fnmatchcase(name, "repo.*.json"):
        return False
    raw = _json(conf / name)
    return isinstance(raw, dict) and set(raw) == {"queries"}


def _conf_files(conf: Path) -> Iterator[Path]:
    for path in conf.iterdir():
        if path.name.startswith("."):
            continue
        if path.is_dir():
            # Only boot/ is PingIDM's; another folder is named whole.
            if path.name == "boot":
                yield from (p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            else:
                yield path
        else:
            yield path


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _group(conf: Path, names: list[str], why: str) -> NotUsed:
    if len(names) == 1:
        return NotUsed(str(conf / names[0]), "", why)
    return NotUsed(str(conf), ", ".join(names), why)


def _keys(prefix: str, names: Sequence[str]) -> str:
    """``objects[0].onCreate``, or ``objects[0].{onCreate,postCreate}`` for several."""
    inner = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
    return f"{prefix}.{inner}" if prefix else inner


def _json(path: Path) -> Any:
    try:
        return load_json(path, secrets=False)
    except ConfigError:
        return None  # reported by the code that reads the file


def _managed(path: Path) -> list[NotUsed]:
    raw = _json(path) if path.is_file() else None
    if not isinstance(raw, dict) or not isinstance(objects := raw.get("objects"), list):
        return []
    file = str(path)
    found = [NotUsed(file, key, "not read: idsync reads only objects from managed.json") for key in raw
             if key != "objects"]
    plain = demoted(raw)
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            continue
        name = f"managed/{obj.get('name')}"
        at = f"objects[{i}]"
        # A misspelling of a key is an error of managed.json's own (``config/managed.py``), not told here.
        others = [k for k in obj if k not in (*_MANAGED_KEYS, *_MANAGED_EVENTS, "actions")
                  and misspelling_of(k, MANAGED_TYPE_KEYS) is None]
        if others:
            found.append(NotUsed(file, _keys(at, others), f"not read: idsync does not use these keys of {name}"))
        paths = ScriptPaths(path.parent.parent)
        roles = obj.get("name") in ("role", "assignment")
        found += [NotUsed(file, f"{at}.{k}", f"not run: {why}" + (_ON_SYNC_ROLES if k == "onSync" and roles else "")
                          + (_ASSIGNMENTS if k == "onSync" and obj.get("name") == "assignment" else ""))
                  for k in _MANAGED_EVENTS if (why := not_run(obj.get(k), paths)) is not None]
        found += [NotUsed(file, f"{at}.actions.{action}", f"not served: {why}; POST {name}/ID?_action={action} "
                          "answers 501") for action, why in unserved(obj.get("actions"), paths).items()]
        schema = obj.get("schema")
        if isinstance(schema, dict):
            found += _not_known(file, schema_key_sets(f"{at}.schema", name, schema))
        props = schema.get("properties") if isinstance(schema, dict) else None
        if isinstance(props, dict):
            found += _managed_properties(file, f"{at}.schema.properties", name, props,
                                         {p for t, p in plain if t == obj.get("name")})
    found += [NotUsed(file, f"objects[{i}].schema.properties.{n.key}", n.why)
              for i, n in notified(objects, ScriptPaths(path.parent.parent))]
    return found


def _managed_properties(file: str, at: str, name: str, props: Mapping[str, Any],
                        plain: Collection[str]) -> list[NotUsed]:
    policies, scripted, relations, protected = [], [], [], []
    stock: list[tuple[str, str]] = []
    paths = ScriptPaths(Path(file).parent.parent)
    found_policies: list[NotUsed] = []
    for pname, pdef in props.items():
        if not isinstance(pdef, dict):
            continue
        pattern = pdef.get("pattern")
        if _is_string(pdef) and isinstance(pattern, str) and js_regexp(pattern) is None:
            policies.append(f"{pname}.pattern")
        scripted += [f"{pname}.{k}" for k in _PROPERTY_SCRIPTS if pdef.get(k) not in (None, False)]
        if pdef.get("isProtected") is True:
            protected.append(f"{pname}.isProtected")
        found_policies += _policy_ids(file, f"{at}.{pname}.policies", pdef.get("policies"))
        stock += [(f"{pname}.{k}", _COMPUTED if k == "onRetrieve" and pname in _EFFECTIVE else why)
                  for k in ("onRetrieve", "onStore", "onValidate")
                  if (why := not_run(pdef.get(k), paths)) is not None]
        if pname in plain:
            relations.append(pname)
    found = found_policies
    if policies:
        found.append(NotUsed(file, _keys(at, policies), f"not enforced: a pattern of {name} that Python's regular "
                             "expressions cannot run (PingIDM runs it as JavaScript's); idsync enforces a string's "
                             "other patterns and its minLength"))
    if scripted:
        found.append(NotUsed(file, _keys(at, scripted), f"not used: how PingIDM queries virtual properties of {name}"))
    found += [NotUsed(file, f"{at}.{key}", f"not run: {why}") for key, why in stock]
    if protected:
        found.append(NotUsed(file, _keys(at, protected), "not enforced: PingIDM asks end users for their password "
                             "before they change a protected property through self-service; idsync has no end-user "
                             "self-service, and its API and scripts change these as they change any other property"))
    if relations:
        found.append(NotUsed(file, _keys(at, relations), "kept as plain values: idsync keeps references "
                             "between managed objects, both ends pointing to each other; these point elsewhere "
                             "(internal/role), or their reverse end does not point back"))
    return found


def _not_known(file: str, sets: Iterable[KeySet]) -> list[NotUsed]:
    """A line for each object holding keys idsync does not know, nor takes for a misspelling."""
    return [NotUsed(file, _keys(s.at, unknown), f"not read: not a key idsync knows of {s.what} (PingIDM's "
                    "UI, a later PingIDM or another tool may read it); if it is misspelt, correct it")
            for s in sets if (unknown := s.unknown())]


def _is_string(pdef: Mapping[str, Any]) -> bool:
    kind = pdef.get("type")
    return "string" in (kind if isinstance(kind, list) else [kind])


def _policy_ids(file: str, at: str, entries: Any) -> list[NotUsed]:
    """The policies idsync accepts but does not enforce (PingIDM's UI and internal ones)."""
    found = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        policy_id = entry.get("policyId") if isinstance(entry, dict) else None
        why = NOT_ENFORCED_POLICIES.get(policy_id) if isinstance(policy_id, str) else None
        if why is not None:
            found.append(NotUsed(file, f"{at}[{i}]", f"not enforced: policy {policy_id}: {why}"))
    return found


def _policy_json(path: Path) -> list[NotUsed]:
    raw = _json(path) if path.is_file() else None
    if not isinstance(raw, dict):
        return []
    file = str(path)
    found = [NotUsed(file, key, "not read: idsync reads resources and additionalFiles from policy.json")
             for key in raw if key not in ("resources", "additionalFiles", "type", "file")]
    if raw.get("file") not in (None, "policy.js"):
        found.append(NotUsed(file, "file", "not run: idsync has PingIDM's built-in policies itself and adds the "
                             "custom ones of additionalFiles; put custom policies there"))
    return found


def _sync(path: Path, skip: Collection[str]) -> list[NotUsed]:
    raw = _json(path)
    if not isinstance(raw, dict):
        return []
    file = str(path)
    found = [NotUsed(file, key, "not read: idsync reads only mappings from sync.json") for key in raw
             if key != "mappings"]
    mappings = raw.get("mappings")
    for i, mapping in enumerate(mappings if isinstance(mappings, list) else []):
        if isinstance(mapping, dict) and not mapping_systems(mapping) & set(skip):
            found += _mapping(file, f"mappings[{i}]", mapping)
    return found


def _mapping(file: str, at: str, raw: Mapping[str, Any]) -> list[NotUsed]:
    found = []
    scripts = [k for k in _MAPPING_SCRIPTS if raw.get(k) is not None]
    if scripts:
        found.append(NotUsed(file, _keys(at, scripts), "not run: PingIDM runs defaultMapping/postMapping for role "
                             "assignments; idsync applies the assignments of a mapping in its sync engine itself "
                             "(docs/pingidm.md#roles)"))
    if raw.get("consentRequired") is True:
        found.append(NotUsed(file, f"{at}.consentRequired", "not followed: PingIDM synchronizes through this "
                             "mapping only the users who consented to it (their consentedMappings); idsync "
                             "synchronizes every source object: a validSource or sourceCondition on "
                             "consentedMappings keeps the others out"))
    tuning = [k for k in _MAPPING_TUNING if k in raw]
    if tuning:
        found.append(NotUsed(file, _keys(at, tuning), "not used: PingIDM's reconciliation tuning; idsync reads and "
                             "writes a page at a time ([recon] page_size in conf/idsync.toml, the LDAP "
                             "provisioner's blockSize), looks links up once per page, and shares a first "
                             "load with worker processes ([recon] workers, one per core)"))
    sides = [side for side in ("sourceIdsCaseSensitive", "targetIdsCaseSensitive") if side in raw]
    if sides and raw.get("links") is not None:
        found.append(NotUsed(file, _keys(at, sides), "not used: a mapping that uses another's links (links) "
                             "compares ids as that mapping says, as in PingIDM"))
    elif sides:
        managed = [side for side in sides if raw.get(side) is False
                   and str(raw.get("source" if side.startswith("source") else "target", "")).startswith("managed/")]
        if managed:
            found.append(NotUsed(file, _keys(at, managed), "not used on a managed side: the store finds an object "
                                 "by its id exactly as kept, so its links keep that id as it is"))
    return found


def _provisioner(path: Path) -> list[NotUsed]:
    raw = _json(path)
    if not isinstance(raw, dict):
        return []
    file = str(path)
    found = _not_known(file, object_type_key_sets(raw.get("objectTypes")))
    tuning = [k for k in _CONNECTOR_TUNING if k in raw]
    if tuning:
        found.append(NotUsed(file, _keys("", tuning), "not used: OpenICF framework settings (connection pools, "
                             "timeouts, buffers); idsync's connectors are built in"))
    if raw.get("systemActions"):
        found.append(NotUsed(file, "systemActions", "not served: scripts PingIDM runs on the system "
                             "(POST system/NAME?_action=script)"))
    options = raw.get("operationOptions")
    denied = [op for op, opt in options.items() if isinstance(opt, dict) and opt.get("denied") is True
              and op not in FOLLOWED] if isinstance(options, dict) else []
    if denied:
        found.append(NotUsed(file, _keys("operationOptions", [f"{op}.denied" for op in denied]),
                             "not followed: PingIDM refuses these operations on the system; idsync follows denied "
                             "for CREATE, UPDATE, DELETE, GET, SEARCH and SYNC only"))
    features = [op for op, opt in options.items() if isinstance(opt, dict) and opt.get("objectFeatures")
                and op not in FOLLOWED] if isinstance(options, dict) else []
    if features:
        found.append(NotUsed(file, _keys("operationOptions", [f"{op}.objectFeatures" for op in features]),
                             "not followed: OpenICF's per-object-type options of operations idsync does not "
                             "follow; it follows objectFeatures' denied and onDeny for CREATE, UPDATE, DELETE, "
                             "GET, SEARCH and SYNC"))
    return found
