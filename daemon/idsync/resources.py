"""Resolving resource names (``managed/user``, ``system/ldap/account``) to Resources.

Systems are opened lazily and kept for the life of a ``Resources`` (one recon,
one CLI command), so one LDAP connection serves a whole run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from idsync.config.project import Project, Provisioner
from idsync.config.relationships import Relation
from idsync.connectors.base import System, SystemTestReport
from idsync.errors import ConfigError, IdsyncError
from idsync.resource import Resource

if TYPE_CHECKING:  # the store's code when a resource is opened: ``idsync validate`` checks systems without it
    from idsync.store.database import Store
    from idsync.store.system_refs import ReferenceLinks

__all__ = ["Resources", "check_connectors", "check_system", "open_system"]


def _ldap(p: Provisioner) -> System:
    from idsync.connectors.ldap.connector import open_ldap_system

    return open_ldap_system(p.name, p.config, file=p.file)


def _csv(p: Provisioner) -> System:
    from idsync.connectors.csv.connector import open_csv_system

    state = p.state_dir if p.state_dir is not None else p.project_dir / "state"
    return open_csv_system(p.name, p.config, file=p.file, base=p.project_dir, state=state)


def _xml(p: Provisioner) -> System:
    from idsync.connectors.xml.connector import open_xml_system

    return open_xml_system(p.name, p.config, file=p.file, base=p.project_dir)


def _dbtable(p: Provisioner) -> System:
    from idsync.connectors.dbtable.connector import open_dbtable_system

    return open_dbtable_system(p.name, p.config, file=p.file, base=p.project_dir)


def _salesforce(p: Provisioner) -> System:
    from idsync.connectors.salesforce.connector import open_salesforce_system

    return open_salesforce_system(p.name, p.config, file=p.file, token_file=p.token_file)


def _scim(p: Provisioner) -> System:
    from idsync.connectors.scim.connector import open_scim_system

    return open_scim_system(p.name, p.config, file=p.file)


_OPENERS: Mapping[str, Callable[[Provisioner], System]] = {"ldap": _ldap, "salesforce": _salesforce, "scim": _scim,
                                                           "csv": _csv, "xml": _xml, "dbtable": _dbtable}
# The connectors whose systems take an administrator's consent (``System.needs_consent``).
_CONSENTING = frozenset({"salesforce"})


def open_system(provisioner: Provisioner) -> System:
    opener = _OPENERS.get(provisioner.kind)
    if opener is None:
        raise provisioner.unsupported()
    if not provisioner.enabled:
        raise ConfigError(provisioner.file, "enabled", f"system {provisioner.name} is disabled")
    return opener(provisioner)


def check_connectors(project: Project) -> None:
    """Let every enabled system read its configuration, secrets substituted, without
    connecting: the first problem raises ``ConfigError``."""
    for provisioner in project.provisioners.values():
        check_system(provisioner)


def check_system(provisioner: Provisioner) -> list[ConfigError]:
    """Substitute the secrets (a missing one is a problem) and let the connector read
    its configuration, without connecting; the warnings (``ConfigWarning``) it has."""
    if not provisioner.enabled:
        return []
    system = open_system(provisioner)
    try:
        return system.warnings()
    finally:
        system.close()


class Resources:
    def __init__(self, project: Project, store: Store) -> None:
        self.project = project
        self.store = store
        self._systems: dict[str, System] = {}

    def open(self, name: str, *, dry_run: bool = False) -> Resource:
        from idsync.store.objects import ManagedResource
        from idsync.store.system_refs import linked_references

        parts = name.split("/")
        if len(parts) == 2 and parts[0] == "managed":
            return ManagedResource(self.store, self.project.managed.get(parts[1], key="resource"), dry_run=dry_run)
        if len(parts) == 3 and parts[0] == "system":
            resource = self.system(parts[1]).resource(parts[2], dry_run=dry_run)
            resource.denied = self.project.provisioners[parts[1]].denied_for(parts[2])
            return linked_references(resource, self._reference_links(parts[1], resource))
        raise ConfigError("sync.json", "source/target", f"not a resource name: {name!r}")

    def _reference_links(self, system: str, resource: Resource) -> dict[str, ReferenceLinks]:
        """For each reference property of ``resource`` that a mapping carries to or from a
        managed relationship, the links between the objects it references and a managed
        type: those of the first mapping between the two. A property mapped to a plain
        property (OpenIDM's sample2d copies ``uniqueMember`` DNs) is left as it is."""
        from idsync.store.links import LinkSet
        from idsync.store.system_refs import ReferenceLinks

        found: dict[str, ReferenceLinks] = {}
        for name, object_type in resource.references.items():
            relation = self._related(resource.name, name)
            if relation is None:
                continue
            referenced = f"system/{system}/{object_type}"
            own = referenced == resource.name  # a Salesforce User's ManagerId names another User
            for m in self.project.mappings:
                if m.source == referenced and m.target.startswith("managed/"):
                    links = LinkSet.of(self.store, self.project, m)
                    found[name] = ReferenceLinks(links, m.target, many=relation.many, own=own)
                    break
                if m.target == referenced and m.source.startswith("managed/"):
                    links = LinkSet.of(self.store, self.project, m, flipped=True)
                    found[name] = ReferenceLinks(links, m.source, many=relation.many, own=own)
                    break
        return found

    def _related(self, resource: str, name: str) -> Relation | None:
        """The relationship property of a managed type that a mapping of ``resource``
        carries its property ``name`` to or from, if any."""
        for m in self.project.mappings:
            pairs: list[tuple[tuple[str, ...] | None, tuple[str, ...] | None]]
            if m.source == resource and m.target.startswith("managed/"):
                pairs = [(r.source, r.target) for r in m.properties.rules]
                managed = m.target
            elif m.target == resource and m.source.startswith("managed/"):
                pairs = [(r.target, r.source) for r in m.properties.rules]
                managed = m.source
            else:
                continue
            kind = self.project.managed.types.get(managed.split("/", 1)[1])
            if kind is None:
                continue
            for mine, theirs in pairs:
                if mine and theirs and mine[0] == name and theirs[0] in kind.relationships:
                    return kind.relationships[theirs[0]]
        return None

    def system(self, name: str) -> System:
        if name not in self._systems:
            provisioner = self.project.provisioners.get(name)
            if provisioner is None:
                known = ", ".join(sorted(self.project.provisioners)) or "none"
                raise ConfigError(str(self.project.settings.conf_dir), f"provisioner.openicf-{name}.json",
                                  f"no such system (configured: {known})")
            self._systems[name] = open_system(provisioner)
        return self._systems[name]

    def consent_systems(self) -> list[str]:
        """The enabled systems whose connector takes an administrator's consent (OAuth)."""
        return sorted(n for n, p in self.project.provisioners.items() if p.kind in _CONSENTING and p.enabled)

    def test_all(self) -> list[dict[str, Any]]:
        """Each system's test answer (``test``), in the order of their names."""
        return [self.test(name) for name in sorted(self.project.provisioners)]

    def test(self, name: str) -> SystemTestReport:
        """One system's test answer, a ``SystemTestReport`` carrying the exit code of its
        failure; a system that is disabled, or cannot even be opened, is a failed report too
        (with what its provisioner says: its connector and object types), never an error."""
        p = self.project.provisioners[name]
        if not p.enabled:
            disabled = _unopened(p)
            disabled.failed(f'system {name} is disabled ("enabled": false)', os.EX_CONFIG)
            return disabled
        try:
            report = self.system(name).test()
            return report if isinstance(report, SystemTestReport) else SystemTestReport(report)
        except Exception as exc:  # noqa: BLE001 - a test reports, never raises
            failure = _unopened(p)
            failure.failed(exc if isinstance(exc, IdsyncError) else f"internal error: {exc}",
                           None if isinstance(exc, IdsyncError) else os.EX_SOFTWARE)
            return failure

    def close(self) -> None:
        for system in self._systems.values():
            system.close()
        self._systems.clear()


def _unopened(p: Provisioner) -> SystemTestReport:
    """The test answer of a system whose connector was not opened: what its provisioner
    file says, as PingIDM's answers it (``__ALL__`` first among the object types)."""
    ref, types = p.raw.get("connectorRef"), p.raw.get("objectTypes")
    names = [t for t in types if t != "__ALL__"] if isinstance(types, Mapping) else []
    return SystemTestReport(name=p.name, enabled=p.enabled, config=f"config/provisioner.openicf/{p.name}",
                            connectorRef=dict(ref) if isinstance(ref, Mapping) else {},
                            objectTypes=["__ALL__", *names])
