"""A project directory as a whole: ``conf/`` (settings, managed types, mappings,
provisioners) and ``jobs.d/``.

``load_project`` stops at the first problem (a run must not start on a broken
configuration); ``validate_project`` reads every file independently and
returns every problem it finds, for ``idsync validate``, with a warning
(``ConfigWarning``) for each PingIDM file or key idsync does not act on
(``config/unused.py``). A provisioner whose connector idsync does not have is
one error naming the mappings that need it; their own problems wait.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from idsync.config.actions import load_actions
from idsync.config.email import EmailConfig, load_email
from idsync.config.endpoints import Endpoint, load_endpoints
from idsync.config.files import UnsetVariable, load_json, substitute
from idsync.config.jobs import JobDef
from idsync.config.managed import DEFAULT_MANAGED, ManagedSchema, parse_managed
from idsync.config.mappings import MappingDef, QueryDef, load_mappings, mapping_key, parse_mapping, query_def
from idsync.config.objectmodel import load_object_models
from idsync.config.operation_options import denied_operations
from idsync.config.overlay import PROPERTY_KEYS, clear_properties, overlay_file, read_overlay
from idsync.config.queries import load_queries
from idsync.config.schema_keys import misspelt, object_type_key_sets
from idsync.config.sync_failures import SyncFailurePolicy, parse_sync_failure
from idsync.config.unused import mapping_systems, unused_configuration
from idsync.crypto import CryptoCalls, Keyring, create_key_file, decode_key, is_encrypted, load_key
from idsync.errors import (
    ConfigError,
    ConfigErrors,
    ConfigNote,
    ConfigWarning,
    CryptoFailed,
    IdsyncError,
    ObjectRejected,
    QueryError,
)
from idsync.keys import misspelling_of, unknown_keys
from idsync.query import parse as parse_filter
from idsync.query.ast import paths
from idsync.query.ldap import filter_problem
from idsync.query.named import NamedQueries
from idsync.scripts import ScriptEngine
from idsync.settings import Settings, load_settings

__all__ = ["RUN_OVERRIDES", "Project", "Provisioner", "UnsupportedConnector", "keyring", "load_project",
           "project_job_problems", "schedulable_jobs", "validate_project"]

# What a recon request may set for its one run (PingIDM's overriding configuration).
RUN_OVERRIDES = ("sourceQuery", "targetQuery", "runTargetPhase", "allowEmptySourceSet", "sourceQueryFullEntry",
                 "targetQueryFullEntry")

log = structlog.get_logger(__name__)

# A provisioner's own keys, PingIDM's and idsync's (``connectorType``); what is inside
# ``configurationProperties`` is the connector's to judge (OpenICF connectors carry many).
_PROVISIONER_KEYS = {
    "name", "enabled", "connectorRef", "connectorType", "configurationProperties", "objectTypes",
    "operationOptions", "poolConfigOption", "operationTimeout", "resultsHandlerConfig", "syncFailureHandler",
    "producerBufferSize", "systemActions", "displayName", "description", "_id", "connectorPoolingSupported",
    "excludeUnmodified",
}


# The ``configurationProperties`` an administrator's consent in the console gives (``token_file``).
_CONSENT_KEYS = {"salesforce": ("refreshToken", "instanceUrl")}
_AVAILABLE = "idsync has LDAP, SCIM, Salesforce, Database Table, CSV and XML file connectors"


class UnsupportedConnector(ConfigError):
    """A provisioner whose connector idsync does not have. ``validate`` gives one line
    for it, naming the mappings that need the system instead of their own problems."""

    def __init__(self, file: str, key: str, connector: str, system: str, needed_by: Sequence[str] = ()) -> None:
        self.connector = connector
        self.system = system
        self.needed_by = tuple(needed_by)
        problem = f"unsupported connector {connector} ({_AVAILABLE})"
        if needed_by:
            problem += (f"; the mappings using system {system!r} cannot run and are not checked further "
                        f"(found: {', '.join(needed_by)})")
        super().__init__(file, key, problem)

    def with_mappings(self, names: Sequence[str]) -> UnsupportedConnector:
        return UnsupportedConnector(self.file, self.key, self.connector, self.system, names)


@dataclass(frozen=True)
class Provisioner:
    """One ``provisioner.openicf-NAME.json``: an external system's connection."""

    name: str
    file: str
    kind: str  # ldap, scim, salesforce, csv, xml, dbtable
    raw: Mapping[str, Any]  # as written: secrets not yet substituted
    project_dir: Path = Path(".")
    # The daemon's state directory: the one place the daemon may write under its systemd unit.
    state_dir: Path | None = None
    # What the console saved for this system (``config/overlay.py``), its secret encrypted,
    # and the key that decrypts it.
    overlay: Mapping[str, Any] = field(default_factory=dict)
    keyring: Keyring | None = field(default=None, compare=False, repr=False)

    @property
    def token_file(self) -> Path | None:
        """Where the refresh token an administrator's consent obtained (the console's
        OAuth step) is kept: ``<state_dir>/oauth/<name>.refresh-token``, mode 0600."""
        return self.state_dir / "oauth" / f"{self.name}.refresh-token" if self.state_dir is not None else None

    def properties(self, object_type: str) -> Mapping[str, Mapping[str, Any]]:
        """The properties ``objectTypes`` declares for ``object_type`` (none: it declares
        none, or no such type)."""
        types = self.raw.get("objectTypes")
        spec = types.get(object_type) if isinstance(types, Mapping) else None
        props = spec.get("properties") if isinstance(spec, Mapping) else None
        if not isinstance(props, Mapping):
            return {}
        return {name: prop for name, prop in props.items() if isinstance(prop, Mapping)}

    def denied_for(self, object_type: str) -> Mapping[str, str]:
        """The writes denied on ``object_type`` of the system (its ``objectFeatures`` counted)."""
        types = self.raw.get("objectTypes")
        spec = types.get(object_type) if isinstance(types, Mapping) else None
        native = spec.get("nativeType") if isinstance(spec, Mapping) else None
        return denied_operations(self.raw.get("operationOptions"), file=self.file, object_type=object_type,
                                 native_type=native if isinstance(native, str) else None)

    @property
    def sync_failure(self) -> SyncFailurePolicy:
        """What liveSync does with a change it could not apply (``syncFailureHandler``)."""
        return parse_sync_failure(self.raw.get("syncFailureHandler"), file=self.file)

    @property
    def overlay_path(self) -> Path | None:
        return overlay_file(self.state_dir, self.name) if self.state_dir is not None else None

    def console_keys(self) -> list[str]:
        """The keys whose value comes from the console's overlay, not from the file."""
        return [k for k in ("enabled", *PROPERTY_KEYS) if k in self.overlay]

    def console_properties(self) -> dict[str, Any]:
        """The overlay's ``configurationProperties`` keys, the secret decrypted."""
        return clear_properties(self.overlay, self.keyring, file=str(self.overlay_path))

    @property
    def config(self) -> Mapping[str, Any]:
        """The configuration with secrets substituted and the console's overlay laid
        over it: only when a connection is opened, so `idsync status` works without
        the system's secrets at hand. A key the overlay sets is not read from the file
        (nor its ``KEY_file``, nor the variable its token names). A ``$crypto`` value of
        ``configurationProperties`` (a password PingIDM or idsync encrypted) is decrypted
        with idsync's key. A key the console's consent gives (``_consent_gives``) whose
        variable is not set is left out, not an error."""
        raw = self.raw
        props = raw.get("configurationProperties")
        if self.overlay or isinstance(props, Mapping):
            props = {k: v for k, v in (props or {}).items() if k not in self.overlay
                     and k.removesuffix("_file") not in self.overlay and not self._consent_gives(k, v)}
            raw = {**raw, "configurationProperties": props}
        out = self._decrypted(substitute(raw, file=self.file, base=self.project_dir))
        if not self.overlay:
            return out
        out["configurationProperties"].update(self.console_properties())
        if "enabled" in self.overlay:
            out["enabled"] = self.overlay["enabled"]
        return out

    def _consent_gives(self, key: str, value: Any) -> bool:
        """Whether ``key`` of ``configurationProperties`` names a variable that is not set, for a
        key an administrator's consent in the console gives instead (Salesforce's
        ``refreshToken``, kept in ``token_file``): left out, as if the file did not set it, so
        the console's Settings and Authorize work before the variable exists, and the consent's
        token after. Without a state directory to keep a consent in, the variable is needed."""
        if key not in _CONSENT_KEYS.get(self.kind, ()) or self.token_file is None:
            return False
        try:
            substitute(value, file=self.file, base=self.project_dir, key=f"configurationProperties.{key}")
        except UnsetVariable:
            return True
        return False

    def _decrypted(self, config: dict[str, Any]) -> dict[str, Any]:
        props = config.get("configurationProperties")
        if not isinstance(props, dict):
            return config
        for key, value in props.items():
            if not is_encrypted(value):
                continue
            where = f"configurationProperties.{key}"
            if self.keyring is None:
                raise ConfigError(self.file, where, "is encrypted ($crypto) and idsync's key is not at hand")
            try:
                props[key] = self.keyring.decrypt(value)
            except CryptoFailed as exc:  # the message names the key alias, never the value
                raise ConfigError(self.file, where, f"{exc}; give it through &{{ENV_NAME}} or {key}_file "
                                  "instead") from None
        return config

    @property
    def enabled(self) -> bool:
        if "enabled" in self.overlay:
            return self.overlay["enabled"] is True
        return self.raw.get("enabled", True) is not False

    def unsupported(self) -> UnsupportedConnector:
        """The error for a connector idsync knows by name but does not have yet."""
        ref = self.raw.get("connectorRef")
        ref = ref if isinstance(ref, dict) else {}
        for key in ("connectorName", "bundleName"):
            if isinstance(ref.get(key), str) and ref[key]:
                return UnsupportedConnector(self.file, f"connectorRef.{key}", ref[key], self.name)
        return UnsupportedConnector(self.file, "connectorRef", self.kind, self.name)


@dataclass
class Project:
    settings: Settings
    managed: ManagedSchema
    mappings: list[MappingDef]
    provisioners: dict[str, Provisioner] = field(default_factory=dict)
    # Named queries (``_queryId``): the stock ones and the project's ``repo.*.json`` ones.
    queries: NamedQueries = field(default_factory=NamedQueries)
    # The engine of the mappings' scripts (bind an ``openidm`` router to it) and the keys of
    # ``$crypto`` values; a project made by hand (tests) gets its own.
    scripts: ScriptEngine = field(default_factory=ScriptEngine)
    keyring: Keyring | None = None
    # Custom endpoints (``conf/endpoint-NAME.json``) the API serves at ``endpoint/NAME``.
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    # PingIDM's outbound email service (``conf/external.email.json``), if configured.
    email: EmailConfig | None = None

    def mapping(self, name: str) -> MappingDef:
        for m in self.mappings:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.mappings) or "none configured"
        raise ConfigError(str(self.settings.conf_dir / "sync.json"), "mappings",
                          f"unknown mapping {name!r} (known: {known})")

    def mapping_for_run(self, name: str, overrides: Mapping[str, Any] | None) -> MappingDef:
        """The mapping ``name`` with PingIDM's settings for one run (a recon request's body):
        ``sourceQuery``, ``targetQuery`` (a ``_queryFilter``, a ``_queryId`` or a native
        query), ``runTargetPhase`` and ``allowEmptySourceSet``; the ``sourceQueryFullEntry``
        and ``targetQueryFullEntry`` flags are taken and, as in a mapping, not needed. Any
        other key, or a bad value, is refused naming it (``ObjectRejected``): never ignored."""
        mapping = self.mapping(name)
        if not overrides:
            return mapping
        where = f"recon {name}"
        unknown = sorted(set(overrides) - set(RUN_OVERRIDES))
        if unknown:
            raise ObjectRejected(f"{where}: {', '.join(unknown)} cannot be set for one run (PingIDM's settings "
                                 f"for one run: {', '.join(RUN_OVERRIDES)})")

        def query(text: Any, key: str) -> Any:
            if not isinstance(text, str):
                raise ConfigError("the request", key, "expected a _queryFilter string")
            try:
                return parse_filter(text)
            except QueryError as exc:
                raise ConfigError("the request", key, f"bad _queryFilter: {exc}") from None

        changes: dict[str, Any] = {}
        try:
            for side in ("source", "target"):
                key = f"{side}Query"
                if key not in overrides:
                    continue
                found = query_def(overrides[key], "the request", key, query)
                if found.query_id is not None:
                    found = replace(found, filter=self.queries.get(found.query_id).filter(found.query_params))
                changes[f"{side}_query"] = found
        except (ConfigError, QueryError) as exc:
            raise ObjectRejected(f"{where}: {exc}") from None
        for key, attr in (("runTargetPhase", "run_target_phase"), ("allowEmptySourceSet", "allow_empty_source_set"),
                          ("sourceQueryFullEntry", None), ("targetQueryFullEntry", None)):
            if key not in overrides:
                continue
            if not isinstance(overrides[key], bool):
                raise ObjectRejected(f"{where}: {key} must be true or false")
            if attr is not None:
                changes[attr] = overrides[key]
        return replace(mapping, **changes)

    def secret_properties(self, mapping: MappingDef) -> frozenset[str]:
        """The target properties of ``mapping`` that hold a secret, to be masked in audit
        entries: the secrets of a managed target, and whatever a managed source's
        secret is mapped to."""
        names: set[str] = set()
        for side in (mapping.source, mapping.target):
            kind, _, type_name = side.partition("/")
            if kind == "managed" and type_name in self.managed.types:
                names |= self.managed.types[type_name].secrets
        source_secrets = names if mapping.source.startswith("managed/") else set()
        for rule in mapping.properties.rules:
            if rule.source and rule.source[0] in source_secrets:
                names.add(rule.target[0])
        return frozenset(names)

    def disabled_files(self, resources: Iterable[str]) -> list[str]:
        """The provisioner files of the disabled systems (``"enabled": false``, or the
        console's Enabled unticked) among ``resources`` (``system/ldap/account``, ...)."""
        files: list[str] = []
        for name in resources:
            pieces = name.split("/")
            provisioner = self.provisioners.get(pieces[1]) if len(pieces) >= 2 and pieces[0] == "system" else None
            if provisioner is not None and not provisioner.enabled and provisioner.file not in files:
                files.append(provisioner.file)
        return files

    def reverse_of(self, mapping: MappingDef) -> MappingDef | None:
        """The mapping writing the other way over ``mapping``'s links, if any (the
        bidirectional sample's pair: LDAP to the store and the store to LDAP)."""
        for other in self.mappings:
            if (other.name != mapping.name and other.source == mapping.target and other.target == mapping.source
                    and other.linkset == mapping.linkset):
                return other
        return None

    def linkset_reversed(self, mapping: MappingDef) -> bool:
        """Whether ``mapping`` sees its link set from the other side."""
        if mapping.links is None:
            return False
        owner = self.mapping(mapping.links)
        return owner.source == mapping.target and owner.target == mapping.source


def keyring(settings: Settings) -> Keyring:
    """The project's key, read (or, by default, made) on first use: ``[crypto]``."""
    alias = settings.crypto.key_alias
    file = str(settings.conf_dir / "idsync.toml")

    def load() -> dict[str, bytes]:
        if settings.crypto.key:
            return {alias: decode_key(settings.crypto.key, file=file, key="crypto.key")}
        if settings.crypto.key_file is not None:
            return {alias: load_key(settings.path(settings.crypto.key_file), file=file, key="crypto.key_file")}
        path = settings.path(settings.state_dir) / "keys" / f"{alias}.key"
        if create_key_file(path):
            log.warning("crypto.key_created", file=str(path), alias=alias)
        return {alias: load_key(path, file=file, key="crypto.key_file")}

    return Keyring(default_alias=alias, loader=load)


def load_project(project_dir: Path) -> Project:
    settings = load_settings(project_dir)
    conf = settings.conf_dir
    if not conf.is_dir():
        raise ConfigError(str(conf), "", "the configuration directory does not exist")
    keys = keyring(settings)
    managed_file = conf / "managed.json"
    managed_raw = load_json(managed_file, project_dir=project_dir) if managed_file.exists() else DEFAULT_MANAGED
    managed = parse_managed(managed_raw, file=str(managed_file), keyring=keys)
    state_dir = settings.path(settings.state_dir)
    provisioners = {p.name: p for p in (_provisioner(f, project_dir, state_dir, keys)
                                        for f in _provisioner_files(conf))}
    engine = ScriptEngine(time_limit=settings.scripts.time_limit,
                          memory_limit=settings.scripts.memory_limit_mb * 1024 * 1024,
                          max_calls=settings.scripts.max_calls, router=CryptoCalls(keys))
    models = load_object_models(managed_raw, conf, project_dir, engine, file=str(managed_file))
    actions = load_actions(managed_raw, project_dir, engine, file=str(managed_file))
    mappings = load_mappings(conf, engine)
    names = frozenset(m.name for m in mappings)
    managed = ManagedSchema({name: replace(t, model=models.get(name), actions=actions.get(name, {}),
                                           mapping_names=names)
                             for name, t in managed.types.items()})
    queries, _ = load_queries(conf)
    project = Project(settings, managed, mappings, provisioners, queries, scripts=engine,
                      keyring=keys, endpoints=load_endpoints(conf, project_dir, engine),
                      email=load_email(conf, project_dir, keys))
    for m in project.mappings:
        _check_resources(project, m)
        _check_named_queries(project, m)
    return project


def validate_project(project_dir: Path,
                     check_system: Callable[[Provisioner], Sequence[IdsyncError]]) -> list[IdsyncError]:
    """Every problem of every file (each file is read on its own), then the warnings
    (``ConfigWarning``) about what idsync does not act on. ``check_system`` lets the connector read an
    enabled provisioner's configuration, secrets substituted, without connecting,
    and returns its warnings (``idsync.resources.check_system``): connectors sit
    above the configuration, so it is handed in."""
    problems: list[IdsyncError] = []
    try:
        settings = load_settings(project_dir)
    except IdsyncError as exc:
        return [exc]
    conf = settings.conf_dir
    if not conf.is_dir():
        return [ConfigError(str(conf), "", "the configuration directory does not exist")]
    try:
        settings.store_url()
    except IdsyncError as exc:
        problems.append(exc)
    if settings.crypto.key or settings.crypto.key_file is not None:
        try:
            keyring(settings).check()  # reads the key: a wrong one is told now, not mid-run
        except IdsyncError as exc:
            problems.append(exc)
    if (conf / "managed.json").exists():
        try:
            parse_managed(load_json(conf / "managed.json", project_dir=project_dir), file=str(conf / "managed.json"))
        except IdsyncError as exc:
            problems.append(exc)
    else:
        # Not an error (a project of systems only needs none), but a file left out of a
        # deployment would run with other secrets, defaults and indexes than the operator's.
        problems.append(ConfigWarning(str(conf / "managed.json"), "", "file not found: the built-in managed/user, "
                                      "managed/role and managed/assignment types are used"))
    unsupported: dict[str, UnsupportedConnector] = {}
    state_dir = settings.path(settings.state_dir)
    systems: set[str] = set()
    for f in _provisioner_files(conf):
        try:
            provisioner = _provisioner(f, project_dir, state_dir, keyring(settings))
            systems.add(provisioner.name)
            problems.extend(_overlay_notes(provisioner))
            problems.extend(check_system(provisioner))
        except UnsupportedConnector as exc:
            unsupported[exc.system] = exc
            problems.append(exc)
        except IdsyncError as exc:
            problems.append(exc)
    problems.extend(_stray_overlays(state_dir, systems))
    problems.extend(_email_problems(conf, project_dir, keyring(settings)))
    try:
        problems.extend(load_queries(conf)[1])
    except IdsyncError as exc:
        problems.append(exc)
    needing: dict[str, list[str]] = {name: [] for name in unsupported}
    problems += _mapping_problems(conf, project_dir, needing)
    problems = [p.with_mappings(needing[p.system]) if isinstance(p, UnsupportedConnector) else p for p in problems]
    if all(isinstance(p, ConfigWarning) for p in problems):
        try:
            project = load_project(project_dir)
        except IdsyncError as exc:
            problems.append(exc)
        else:
            from idsync.config.pingidm_schedules import load_all_jobs

            jobs, job_problems = load_all_jobs(settings.jobs_dir, settings.conf_dir,
                                               [m.name for m in project.mappings])
            problems.extend(job_problems)
            problems.extend(project_job_problems(project, jobs.values()))
            problems.extend(_java_problems(project))
            problems.extend(_lacking_function_problems(project))
            problems.extend(_sync_failure_problems(project))
            problems.extend(_property_name_problems(project))
            problems.extend(_dn_id_problems(project))
    return problems + unused_configuration(conf, skip={name: exc.file for name, exc in unsupported.items()})


def _java_problems(project: Project) -> list[ConfigError]:
    """A script (once every script of the project is compiled) naming Java that idsync's
    JavaScript lacks: Rhino let PingIDM's scripts reach any class; this one fails there."""
    return [ConfigWarning(file, key, f"the script reaches for Java ({name}), which idsync runs without: it fails "
                                     "there. Of Java, scripts have java.lang.System.out.println (and err, print, "
                                     "currentTimeMillis), java.lang.String and java.util.UUID.randomUUID")
            for (file, key), name in project.scripts.java.items()]


def _lacking_function_problems(project: Project) -> list[ConfigError]:
    """A compiled script calling a function of a module idsync provides (its lodash subset,
    its versions of PingIDM's stock modules) that idsync's version lacks: the call throws
    there, each time the script runs."""
    return [ConfigWarning(file, key, f"the script calls {', '.join(names)}, which idsync's version of that module "
                                     "does not have: it fails there (docs/mappings.md lists idsync's lodash, "
                                     "docs/pingidm.md#pingidms-stock-scripts the other modules)")
            for (file, key), names in project.scripts.lacking.items()]


def _dn_id_problems(project: Project) -> list[ConfigError]:
    """A mapping keeping the links of an LDAP side whose ids are DNs (``uidAttribute: dn``)
    case-sensitive, PingIDM's default: LDAP compares DNs ignoring case, so an entry renamed in
    case only (``uid=jdoe`` to ``uid=JDoe``) no longer finds its link and is taken for a new
    one (``ABSENT``: a second target), while its old link still reads the entry by its old DN."""
    found: list[ConfigError] = []
    for m in project.mappings:
        if m.links is not None:
            continue  # compares ids as the mapping owning the links says
        for side, resource, sensitive in (("source", m.source, m.source_ids_case_sensitive),
                                          ("target", m.target, m.target_ids_case_sensitive)):
            parts = resource.split("/")
            provisioner = project.provisioners.get(parts[1]) if len(parts) == 3 and parts[0] == "system" else None
            if not sensitive or provisioner is None or provisioner.kind != "ldap":
                continue
            properties = provisioner.raw.get("configurationProperties")
            uid = properties.get("uidAttribute") if isinstance(properties, Mapping) else None
            if isinstance(uid, str) and uid.strip().lower() == "dn":
                found.append(ConfigWarning(m.file, mapping_key(m, f"{side}IdsCaseSensitive"), (
                    f"the ids of {resource} are DNs (uidAttribute dn), which LDAP compares ignoring case, "
                    "and its links compare them exactly: an entry renamed in case only is taken for a new "
                    f"{side} beside its old link; set {side}IdsCaseSensitive to false")))
    return found


def _property_name_problems(project: Project) -> list[ConfigError]:
    """A mapping naming a property its side does not declare: on a system (whose
    ``objectTypes`` are what the connector reads and writes) the value is never read
    or written; on a managed type (which may hold properties it does not declare) only a
    name one or two letters off a declared one, a likely typo. Property rules, and the
    fields a correlation ``_queryFilter`` compares on the target."""
    found: list[ConfigError] = []
    for m in project.mappings:
        named: list[tuple[str, tuple[str, ...] | None, str]] = []
        for i, rule in enumerate(m.properties.rules):
            named += [(m.source, rule.source, mapping_key(m, f"properties[{i}].source")),
                      (m.target, rule.target, mapping_key(m, f"properties[{i}].target"))]
        for c in m.correlations:
            if c.kind == "filter" and c.template is not None:
                named += [(m.target, path, c.key) for path in paths(c.template)]  # c.key is whole
        for resource, path, key in named:
            declared, on_system = _declared(project, resource)
            if not path or not declared or path[0] in declared or path[0].startswith("_"):
                continue
            near = misspelling_of(path[0], declared)
            if near is not None and re.sub(r"\d", "", near) == re.sub(r"\d", "", path[0]):
                near = None  # a numbered sibling (address1 beside address2), not a typo
            hint = f"; did you mean {near}?" if near else ""
            if on_system:
                found.append(ConfigWarning(m.file, key, f"{path[0]!r} is not a property of {resource} "
                                           f"(its objectTypes declare {', '.join(sorted(declared))}): the "
                                           f"connector neither reads nor writes it{hint}"))
            elif near:
                found.append(ConfigWarning(m.file, key, f"{path[0]!r} is not a property of {resource}{hint}"))
    return found


def _declared(project: Project, resource: str) -> tuple[frozenset[str], bool]:
    """The properties ``resource`` declares (none: it declares none, or is unknown), and
    whether it is a system's."""
    parts = resource.split("/")
    if len(parts) == 2 and parts[0] == "managed" and parts[1] in project.managed.types:
        return frozenset(project.managed.types[parts[1]].properties), False
    if len(parts) == 3 and parts[0] == "system" and parts[1] in project.provisioners:
        types = project.provisioners[parts[1]].raw.get("objectTypes")
        spec = types.get(parts[2]) if isinstance(types, Mapping) else None
        props = spec.get("properties") if isinstance(spec, Mapping) else None
        return (frozenset(props) if isinstance(props, Mapping) else frozenset()), True
    return frozenset(), False


def _sync_failure_problems(project: Project) -> list[ConfigError]:
    """A ``syncFailureHandler`` script that does not compile."""
    problems: list[ConfigError] = []
    for provisioner in project.provisioners.values():
        policy = provisioner.sync_failure
        if policy.script is None:
            continue
        try:
            project.scripts.compile(dict(policy.script), file=provisioner.file,
                                    key="syncFailureHandler.postRetryAction.script",
                                    base_dir=project.settings.project_dir)
        except ConfigError as exc:
            problems.append(exc)
    return problems


def project_job_problems(project: Project, jobs: Iterable[JobDef]) -> list[ConfigError]:
    """Every job's problems with ``project``, each naming the job's file and key."""
    jobs = list(jobs)
    return _livesync_problems(project, jobs) + _task_problems(project, jobs)


def schedulable_jobs(project: Project, jobs: Mapping[str, JobDef]) -> tuple[dict[str, JobDef], list[ConfigError]]:
    """The jobs without a problem with ``project`` (those the daemon schedules), and the problems."""
    problems = project_job_problems(project, jobs.values())
    files = {problem.file for problem in problems}
    return {name: job for name, job in jobs.items() if job.file not in files}, problems


def _livesync_problems(project: Project, jobs: Iterable[JobDef]) -> list[ConfigError]:
    """A liveSync job's sources that cannot tell their changes (a system with no
    provisioner or no such object type, a managed type that does not exist, an XML file,
    a database table without a ``changeLogColumn``) or whose changes no mapping applies."""
    return [ConfigError(job.file, "livesync", problem) for job in jobs for source in job.livesync
            if (problem := _source_problem(project, source) or _mapping_problem(project, source)) is not None]


def _source_problem(project: Project, source: str) -> str | None:
    parts = source.split("/")
    if parts[0] == "managed":
        return None if parts[1] in project.managed.types else f"no managed type {parts[1]!r}"
    provisioner = project.provisioners.get(parts[1])
    if provisioner is None:
        known = ", ".join(sorted(project.provisioners)) or "none"
        return f"no provisioner for system {parts[1]!r} (configured: {known})"
    types = provisioner.raw.get("objectTypes") or {}
    if isinstance(types, dict) and types and parts[2] not in types:
        return f"system {parts[1]} has no object type {parts[2]!r} (it has: {', '.join(sorted(types))})"
    if provisioner.kind == "xml":
        return (f"{source} is an XML file, whose connector tells no changes: reconcile its mappings on a schedule "
                "instead")
    if provisioner.kind == "dbtable" and not (provisioner.raw.get("configurationProperties") or {}).get(
            "changeLogColumn"):
        return (f"{source} is a database table without a changeLogColumn ({provisioner.file}), so its changes "
                "cannot be told: set one (a timestamp or an increasing number the database moves on every change), "
                "or reconcile its mappings on a schedule instead")
    return None


def _mapping_problem(project: Project, source: str) -> str | None:
    """Why no change of ``source`` would be applied: no mapping reads it, or every one that
    does has ``enableSync`` false (PingIDM's switch for implicit sync and liveSync alike)."""
    reading = [m for m in project.mappings if m.source == source]
    if any(m.enable_sync for m in reading):
        return None
    if reading:
        return (f"every mapping with {source} as its source has enableSync false, which turns liveSync off for it "
                f"({', '.join(m.name for m in reading)})")
    sources = sorted({m.source for m in project.mappings}) or ["none"]
    return (f"no mapping has {source} as its source, so liveSync would have nothing to apply its changes through "
            f"(the mappings' sources: {', '.join(sources)})")


def _task_problems(project: Project, jobs: Iterable[Any]) -> list[ConfigError]:
    """A scheduled script or task scan whose script does not compile, or that scans a
    managed type that does not exist."""
    problems: list[ConfigError] = []
    for job in jobs:
        task = job.task
        if task is None:
            continue
        object_type = getattr(task, "object_type", None)
        if object_type is not None and object_type not in project.managed.types:
            known = ", ".join(sorted(project.managed.types)) or "none"
            problems.append(ConfigError(job.file, "invokeContext.scan.object",
                                        f"no managed type {object_type!r} (managed.json has: {known})"))
        try:
            project.scripts.compile(dict(task.script), file=job.file, key=task.script_key,
                                    base_dir=project.settings.project_dir)
        except ConfigError as exc:
            problems.append(exc)
    return problems


def _email_problems(conf: Path, project_dir: Path, keys: Keyring) -> list[IdsyncError]:
    """``external.email.json``'s errors, or its warnings and notes; its password is
    resolved, so that a variable not set or a key that does not decrypt it is told now."""
    try:
        email = load_email(conf, project_dir, keys)
        if email is not None and email.auth:
            email.password()
    except ConfigErrors as exc:
        return list(exc.errors)
    except IdsyncError as exc:
        return [exc]
    return list(email.notes) if email is not None else []


def _overlay_notes(provisioner: Provisioner) -> list[ConfigNote]:
    keys = provisioner.console_keys()
    if not keys:
        return []
    named = ", ".join(k if k == "enabled" else f"configurationProperties.{k}" for k in keys)
    return [ConfigNote(provisioner.file, "", f"system {provisioner.name}: {named} set in the admin console "
                       f"({provisioner.overlay_path}), which take precedence over this file")]


def _stray_overlays(state_dir: Path, systems: set[str]) -> list[ConfigNote]:
    """Console settings of a system that has no provisioner any more: told, not used."""
    folder = state_dir / "connectors"
    if not folder.is_dir():
        return []
    return [ConfigNote(str(f), "", f"no provisioner for system {f.stem}: these console settings are not used")
            for f in sorted(folder.glob("*.json")) if f.stem not in systems]


def _mapping_problems(conf: Path, project_dir: Path, needing: dict[str, list[str]]) -> list[IdsyncError]:
    """The problems of every mapping, each read on its own. A mapping that uses a system
    in ``needing`` (one whose connector idsync does not have) is not read: it cannot run
    anyway, and its name goes to that system's list for the connector's one error."""
    problems: list[IdsyncError] = []
    files = ([conf / "sync.json"] if (conf / "sync.json").exists() else []) + sorted(conf.glob("mapping-*.json"))
    for f in files:
        try:
            data = load_json(f, project_dir=project_dir)
            items = data.get("mappings") if f.name == "sync.json" and isinstance(data, dict) else [data]
            if not isinstance(items, list):
                raise ConfigError(str(f), "mappings", "expected a list of mappings")
            for i, raw in enumerate(items):
                try:
                    if f.name != "sync.json" and isinstance(raw, dict) and "name" not in raw:
                        raw = {**raw, "name": f.stem[len("mapping-"):]}
                    if isinstance(raw, dict) and (systems := mapping_systems(raw) & set(needing)):
                        for system in sorted(systems):
                            needing[system].append(str(raw.get("name") or f"mappings[{i}]"))
                        continue
                    key = f"mappings[{i}]" if f.name == "sync.json" else ""
                    problems.extend(parse_mapping(raw, file=str(f), key=key, base_dir=project_dir).warnings)
                except ConfigErrors as exc:
                    problems.extend(exc.errors)
                except IdsyncError as exc:
                    problems.append(exc)
        except IdsyncError as exc:
            problems.append(exc)
    return problems


def _provisioner_files(conf: Path) -> list[Path]:
    return sorted(conf.glob("provisioner.openicf-*.json"))


def _provisioner(path: Path, project_dir: Path, state_dir: Path | None = None,
                 keys: Keyring | None = None) -> Provisioner:
    raw = load_json(path, project_dir=project_dir, secrets=False)
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "", "expected a JSON object")
    name = raw.get("name") or path.stem[len("provisioner.openicf-"):]
    if not isinstance(name, str) or not name:
        raise ConfigError(str(path), "name", "expected the system's name")
    ref = raw.get("connectorRef") or {}
    if not isinstance(ref, dict):
        raise ConfigError(str(path), "connectorRef", "expected an object")
    kind = _connector_kind(ref, str(raw.get("connectorType") or name), file=str(path), system=name)
    if not isinstance(raw.get("configurationProperties", {}), dict):
        raise ConfigError(str(path), "configurationProperties", "expected an object")
    problems = unknown_keys(raw, _PROVISIONER_KEYS, file=str(path))
    # An object type's keys cannot all be listed (each connector has its own): a misspelling
    # of a known one (nativeNme) is an error, another key a warning (config/unused.py).
    problems += misspelt(object_type_key_sets(raw.get("objectTypes")), str(path))
    if problems:
        raise ConfigErrors(problems) if len(problems) > 1 else problems[0]
    parse_sync_failure(raw.get("syncFailureHandler"), file=str(path))
    denied_operations(raw.get("operationOptions"), file=str(path))
    return Provisioner(name=name, file=str(path), kind=kind, raw=raw, project_dir=project_dir, state_dir=state_dir,
                       overlay=read_overlay(state_dir, name), keyring=keys)


_KINDS = ("ldap", "scim", "salesforce", "csv", "xml", "dbtable")
# What else names a connector in connectorRef: OpenICF's package name for it.
_MARKERS = {"databasetable": "dbtable"}


def _connector_kind(ref: Mapping[str, Any], fallback: str, *, file: str, system: str) -> str:
    """The connector a provisioner uses. ``connectorRef`` decides when it names one
    (``connectorName`` or ``bundleName``), whatever the system is called: an XML
    connector in ``provisioner.openicf-ldap.json`` is not LDAP. Without it,
    idsync's ``connectorType``, then the system's name."""
    named = [str(ref[k]) for k in ("connectorName", "bundleName") if isinstance(ref.get(k), str) and ref[k]]
    if named:
        text = " ".join(named).lower()
        for marker, kind in (*_MARKERS.items(), *((k, k) for k in _KINDS)):
            if marker in text:
                return kind
        raise UnsupportedConnector(file, "connectorRef.connectorName" if ref.get("connectorName")
                                   else "connectorRef.bundleName", named[0], system)
    kind = _MARKERS.get(fallback.lower(), fallback.lower())
    if kind not in _KINDS:
        raise ConfigError(file, "connectorRef.connectorName",
                          "unknown connector: no connectorRef.connectorName, and the connectorType or system "
                          f"name {fallback!r} is not one of LDAP, SCIM, Salesforce, CSV, XML, dbtable")
    return kind


def _native_key(m: MappingDef, side: str) -> str:
    name = f"{side}Query"
    if isinstance(m.raw.get(name), dict):
        name += ".nativeQuery" if "nativeQuery" in m.raw[name] else "._nativeQuery"
    return name if m.file.endswith(f"mapping-{m.name}.json") else f"mappings[{m.name}].{name}"


def _check_named_queries(project: Project, m: MappingDef) -> None:
    """A correlation naming a query (``_queryId``) names one that exists, with every
    parameter; a ``sourceQuery``/``targetQuery`` naming one becomes its filter."""
    for side in ("source", "target"):
        query: QueryDef = getattr(m, f"{side}_query")
        if query.query_id is None:
            continue
        key = f"{side}Query._queryId" if m.file.endswith(f"mapping-{m.name}.json") \
            else f"mappings[{m.name}].{side}Query._queryId"
        try:
            node = project.queries.get(query.query_id).filter(query.query_params)
        except QueryError as exc:
            raise ConfigError(m.file, key, str(exc)) from None
        setattr(m, f"{side}_query", dataclasses.replace(query, filter=node))
    for c in m.correlations:
        if c.kind != "named":
            continue
        try:
            named = project.queries.get(c.query_id)
            # Placeholders (${source.x}) are bound per object; checked here with a stand-in value.
            named.bind({p: "x" if isinstance(v, str) and v.startswith("${") else v
                        for p, v in c.query_params.items()})
        except QueryError as exc:
            raise ConfigError(m.file, f"{c.key}._queryId", str(exc)) from None
        if named.matches_all:
            raise ConfigError(m.file, f"{c.key}._queryId", f"{c.query_id} matches every object: a correlation "
                              "must find the one target of a source")


def _check_resources(project: Project, m: MappingDef) -> None:
    for side in ("source", "target"):
        resource = getattr(m, side)
        parts = resource.split("/")
        key = side if m.file.endswith(f"mapping-{m.name}.json") else f"mappings[{m.name}].{side}"
        if parts[0] == "managed":
            project.managed.get(parts[1], file=m.file, key=key)
        elif parts[1] not in project.provisioners:
            known = ", ".join(sorted(project.provisioners)) or "none"
            raise ConfigError(m.file, key, f"no provisioner for system {parts[1]!r} (configured: {known})")
        else:
            provisioner = project.provisioners[parts[1]]
            types = provisioner.raw.get("objectTypes") or {}
            if isinstance(types, dict) and types and parts[2] not in types:
                raise ConfigError(m.file, key, f"system {parts[1]} has no object type {parts[2]!r} "
                                  f"(it has: {', '.join(sorted(types))})")
            query = m.source_query if side == "source" else m.target_query
            if provisioner.kind == "ldap" and query.native is not None:
                # Checked here, not at the first search of a run: a typo in a filter must not
                # wait for the night's run to surface as a failed read.
                problem = filter_problem(query.native)
                if problem:
                    raise ConfigError(m.file, _native_key(m, side), problem)
