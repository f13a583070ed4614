"""The objects of another type that name a liveSync source's objects: applied again
once those objects are first linked.

An LDAP group mapped to a role reads its ``uniqueMember`` (or ``member``) DNs as
references to the managed users linked to those accounts (``store/system_refs.py``);
a member whose account is not linked yet is left out of the role. When the group's
change is applied before the account's (the groups' liveSync ran first, or the user
was added to the group as it was made), the account's liveSync then links it, but the
group has not changed since: without more, the role would miss the member until the
group changed again or a full recon of the groups read it.

``Referrers`` closes that gap from the account's side. Before a batch of the source's
changes is applied, it notes which of the changed objects each watched reference
property already finds linked; after, the ones linked by the batch (created or
correlated) are looked up as the referring type's values (their DNs), the objects
naming them are searched (``uniqueMember eq DN``, a few hundred values per search)
and applied through that type's liveSync mappings, as a change of theirs would be:
their runs are recorded beside the source's. A batch that links nothing costs one
link query per watched property before and after; a source that no other type
names through a linked reference is not watched at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.query.ast import Compare, Or
from idsync.resource import Change, QuerySpec, Resource
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.system_refs import LinkedReferences, ReferenceLinks
from idsync.sync.changes import ChangeApplier

__all__ = ["Referrers"]

log = structlog.get_logger(__name__)

_SEARCH = 200  # member values per search of the referring objects


@dataclass
class _Watch:
    """One reference property of another resource that names the source's objects."""

    resource: LinkedReferences
    prop: str
    ref: ReferenceLinks
    mappings: list[MappingDef]


class Referrers:
    """The watched references of one liveSync source, and the appliers of their mappings."""

    def __init__(self, project: Project, store: Store, source: str, resources: Resources, *,
                 dry_run: bool, method: str, note: str | None) -> None:
        self._project, self._store, self._resources = project, store, resources
        self._dry_run, self._method, self._note = dry_run, method, note
        self._watches = [] if dry_run else _watches(project, source, resources)
        self._appliers: dict[str, ChangeApplier] = {}

    def linked(self, changes: Sequence[Change]) -> list[set[str]]:
        """Per watched property, which of the changed objects are linked now."""
        ids = [c.id for c in changes if c.obj is not None and c.id]
        return [set(w.ref.links.targets_of(ids)) if ids else set() for w in self._watches]

    def follow(self, changes: Sequence[Change], before: list[set[str]]) -> None:
        """Apply again the referring objects that name an object the batch linked."""
        after = self.linked(changes)
        for watch, was, now in zip(self._watches, before, after, strict=True):
            fresh = sorted(now - was)
            if not fresh:
                continue
            values = list(watch.resource.inner.reference_values(watch.prop, fresh).values())
            found = {o["_id"]: o for o in self._naming(watch, values) if o.get("_id")}
            if not found:
                continue
            log.info("livesync.referrers_applied", resource=watch.resource.name, property=watch.prop,
                     linked=len(fresh), objects=len(found))
            batch = [Change(str(i), o) for i, o in found.items()]
            for m in watch.mappings:
                self._applier(m).apply(batch, None)

    def finish(self, state: str, message: str | None) -> list[dict[str, Any]]:
        """End the runs of the referring mappings that applied something (``ChangeApplier.finish``)."""
        runs = [applier.finish(state, message) for applier in self._appliers.values()]
        return [r for r in runs if r is not None]

    def _naming(self, watch: _Watch, values: list[Any]) -> Iterator[dict[str, Any]]:
        for start in range(0, len(values), _SEARCH):
            chunk = values[start:start + _SEARCH]
            spec = QuerySpec(filter=Or(tuple(Compare((watch.prop,), "eq", str(v)) for v in chunk)))
            for page in watch.resource.pages(spec):
                yield from page

    def _applier(self, mapping: MappingDef) -> ChangeApplier:
        if mapping.name not in self._appliers:
            self._appliers[mapping.name] = ChangeApplier(self._project, self._store, mapping, self._resources,
                                                         dry_run=self._dry_run, method=self._method,
                                                         note=self._note)
        return self._appliers[mapping.name]


def _watches(project: Project, source: str, resources: Resources) -> list[_Watch]:
    """The reference properties of the other system resources with liveSync mappings
    whose values name ``source``'s objects through links."""
    parts = source.split("/")
    if len(parts) != 3 or parts[0] != "system":
        return []
    by_source: dict[str, list[MappingDef]] = {}
    for m in project.mappings:
        if m.enable_sync and m.source != source and m.source.startswith(f"system/{parts[1]}/"):
            by_source.setdefault(m.source, []).append(m)
    watches: list[_Watch] = []
    for name, mappings in by_source.items():
        resource: Resource = resources.open(name)
        if not isinstance(resource, LinkedReferences):
            continue
        for prop, ref in resource.properties.items():
            if not ref.own and resource.inner.references.get(prop) == parts[2]:
                watches.append(_Watch(resource, prop, ref, mappings))
    return watches
