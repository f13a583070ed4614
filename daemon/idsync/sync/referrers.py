"""The objects of another type that name a source's objects: applied again once those
objects are first linked.

An LDAP group mapped to a role reads its ``uniqueMember`` (or ``member``) DNs as
references to the managed users linked to those accounts (``store/system_refs.py``);
a member whose account is not linked yet is left out of the role. When the group's
change is applied before the account's (the groups' liveSync or recon ran first, or
the user was added to the group as it was made), a run of the accounts then links
it, but the group has not changed since: without more, the role would miss the
member until the group changed again or a full recon of the groups read it.

``Referrers`` closes that gap from the account's side. Before a batch of the source's
objects is applied (a liveSync batch, a recon page, a ``reconById``), it notes which of
them each watched reference property already finds linked; after, the ones linked by
the batch (created or correlated) are looked up as the referring type's values (their
DNs) and the objects naming them are searched (``uniqueMember eq DN``, a few hundred
values per search). A liveSync or a ``reconById`` applies those at once (``follow``)
through the referring type's liveSync mappings, as a change of theirs would be. A recon
only notes them (``note``), the ones those mappings linked already, and applies each
once at its end (``apply_noted``), with every member its pages linked; a recon that
starts with none of them linked (a first load, the groups read later) does nothing more.
Their runs are recorded beside the source's. A batch that links nothing costs one link
query per watched property before and after; a source that no other type names
through a linked reference is not watched at all.

A referring object that fails through its mapping (the role refuses the write, a script
throws) is counted in that mapping's run and, when its own source is read by liveSync
(it holds a token), kept in ``sync_failures`` for that source's next liveSync to apply
again (``livesync.py``), as a change of its own that failed would be; otherwise a
recon of its mapping repairs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.query.ast import Compare, Or
from idsync.resource import Change, QuerySpec, Resource
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.sync_failures import SyncFailures
from idsync.store.system_refs import LinkedReferences, ReferenceLinks
from idsync.store.tokens import SyncTokens
from idsync.sync.changes import ChangeApplier
from idsync.sync.qualifiers import LinkQualifiers

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
    """The watched references of one source, and the appliers of their mappings."""

    def __init__(self, project: Project, store: Store, source: str, resources: Resources, *,
                 dry_run: bool, method: str, note: str | None, event: str = "livesync") -> None:
        self._project, self._store, self._resources = project, store, resources
        self._dry_run, self._method, self._note, self._event = dry_run, method, note, event
        self._watches = [] if dry_run else _watches(project, source, resources)
        self._appliers: dict[str, ChangeApplier] = {}
        # A recon's: per watch, the referring objects to apply at its end, and how many
        # objects its pages linked; whether its mappings had linked any object when it started.
        self._noted: list[set[str]] = [set() for _ in self._watches]
        self._linked: list[int] = [0 for _ in self._watches]
        self._mapped_any: list[bool] | None = None
        self.failed = 0  # referring objects whose application failed

    @property
    def watching(self) -> bool:
        return bool(self._watches)

    @property
    def noting(self) -> bool:
        """Whether ``note`` may keep anything: a mapping of a watched property had linked an
        object when the recon began (asked once)."""
        return any(self._mapped_before(index) for index in range(len(self._watches)))

    def linked(self, ids: Sequence[str]) -> list[set[str]]:
        """Per watched property, which of the objects ``ids`` are linked now."""
        chosen = [i for i in ids if i]
        return [set(w.ref.links.targets_of(chosen)) if chosen else set() for w in self._watches]

    def follow(self, ids: Sequence[str], before: list[set[str]]) -> None:
        """Apply again now the referring objects that name an object the batch linked."""
        for _, watch, fresh in self._fresh(ids, before):
            found = {o["_id"]: o for o in self._naming(watch, fresh, None) if o.get("_id")}
            self._apply(watch, len(fresh), found)

    def note(self, ids: Sequence[str], before: list[set[str]]) -> None:
        """Keep, for ``apply_noted``, the referring objects that name an object the page
        linked and that their mappings linked before."""
        for index, watch, fresh in self._fresh(ids, before):
            if not self._mapped_before(index):
                continue
            self._linked[index] += len(fresh)
            named = [str(o["_id"]) for o in self._naming(watch, fresh, []) if o.get("_id")]
            self._noted[index].update(self._mapped(watch, named))

    def apply_noted(self) -> None:
        """Apply once the referring objects ``note`` kept, read as they are now."""
        for index, watch in enumerate(self._watches):
            ids, linked = sorted(self._noted[index]), self._linked[index]
            self._noted[index], self._linked[index] = set(), 0
            for start in range(0, len(ids), _SEARCH):
                self._apply(watch, linked, watch.resource.get_many(ids[start:start + _SEARCH]))

    def finish(self, state: str, message: str | None) -> list[dict[str, Any]]:
        """End the runs of the referring mappings that applied something (``ChangeApplier.finish``)."""
        runs = [applier.finish(state, message) for applier in self._appliers.values()]
        return [r for r in runs if r is not None]

    def _fresh(self, ids: Sequence[str], before: list[set[str]]) -> Iterator[tuple[int, _Watch, list[str]]]:
        """Per watched property, the objects of ``ids`` linked since ``before``."""
        if not self._watches:
            return
        after = self.linked(ids)
        for index, (watch, was, now) in enumerate(zip(self._watches, before, after, strict=True)):
            fresh = sorted(now - was)
            if fresh:
                yield index, watch, fresh

    def _naming(self, watch: _Watch, linked: list[str], fields: list[str] | None) -> Iterator[dict[str, Any]]:
        """The referring objects naming any of the ``linked`` objects (``fields``: what to read of them)."""
        values = list(watch.resource.inner.reference_values(watch.prop, linked).values())
        for start in range(0, len(values), _SEARCH):
            chunk = values[start:start + _SEARCH]
            spec = QuerySpec(filter=Or(tuple(Compare((watch.prop,), "eq", str(v)) for v in chunk)), fields=fields)
            for page in watch.resource.pages(spec):
                yield from page

    def _mapped_before(self, index: int) -> bool:
        """Whether the mappings of watch ``index`` had linked any object when the recon began
        (asked once): on a first load, before those mappings ran, nothing is searched."""
        if self._mapped_any is None:
            self._mapped_any = [any(qualifiers.links(q).count() for qualifiers in self._qualifiers(w)
                                    for q in qualifiers.all()) for w in self._watches]
        return self._mapped_any[index]

    def _mapped(self, watch: _Watch, ids: list[str]) -> set[str]:
        """The objects of ``ids`` that a mapping of ``watch`` links (it applied them before)."""
        found: set[str] = set()
        for qualifiers in self._qualifiers(watch) if ids else ():
            for q in qualifiers.all():
                found.update(qualifiers.links(q).targets_of(ids))
        return found

    def _qualifiers(self, watch: _Watch) -> list[LinkQualifiers]:
        return [LinkQualifiers(m, LinkSet.of(self._store, self._project, m)) for m in watch.mappings]

    def _apply(self, watch: _Watch, linked: int, found: Mapping[str, dict[str, Any]]) -> None:
        if not found:
            return
        log.info(f"{self._event}.referrers_applied", resource=watch.resource.name, property=watch.prop,
                 linked=linked, objects=len(found))
        batch = [Change(str(i), o) for i, o in found.items()]
        for m in watch.mappings:
            applier = self._applier(m)
            applier.apply(batch, None)
            self._keep_failed(watch.resource.name, applier)

    def _keep_failed(self, source: str, applier: ChangeApplier) -> None:
        """Count the referring objects that failed through ``applier`` and keep them for a
        retry of their source's liveSync, when it has one (it holds a token)."""
        failed = dict(applier.failed)
        applier.failed.clear()
        if not failed:
            return
        self.failed += len(failed)
        state = SyncTokens(self._store).get(source)
        retried = state is not None and state.token is not None
        if retried:
            with self._store.begin() as conn:
                SyncFailures(self._store).record(conn, source, failed, None)
        log.warning(f"{self._event}.referrers_failed", resource=source, mapping=applier.mapping.name,
                    objects=len(failed), kept_for_livesync=retried, first_error=next(iter(failed.values())))

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
