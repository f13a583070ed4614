"""Links seen and set by hand, and actions taken by hand: PingIDM's
``sync?_action=getLinkedResources`` and ``sync?_action=performAction``.

``linked_resources(resource)`` answers every object linked to one object, through
every mapping whose source or target is its collection, each link qualifier: the
other side's path, its content as read now (``None`` when it is gone), the
qualifier and the link set (PingIDM's ``linkType``).

``link`` and ``perform`` refuse, before anything is done, an id that no link can hold
(``system_ids.py``: more characters than a link holds, a NUL, half of a character).

``link`` and ``unlink`` are how an administrator settles what a recon could not: a
source that correlated to several targets (``AMBIGUOUS``), or a link that must go.
``link`` ties a source to a target that both exist and that no other link holds (a
409 ``LinkConflict`` names the link in the way; the same link again changes nothing);
``unlink`` removes the source's link. Each writes one audit entry (action ``LINK`` or
``UNLINK``, no run), seen in ``audit/recon``. The objects' values are not written: the
next recon, or ``recon?_action=reconById``, assesses the pair as ``CONFIRMED``.

``perform`` takes any other action of a policy (``CREATE``, ``UPDATE``, ``DELETE``,
``EXCEPTION``, ``IGNORE``, ``REPORT``, ``NOREPORT``, ``ASYNC``; ``LINK`` and ``UNLINK``
too when a situation is expected) for one object, whatever the mapping's policies say:
the way to carry out what a recon only reported (a policy of ``REPORT`` or ``ASYNC`` for
creates an administrator approves one by one). The object is assessed as a recon would
assess it (a source with its link or correlation, or the target the caller names; a
target with the source its link names); with ``situation``, the action is refused
(409) unless the object is still in it. The action is done through the mapping (the
projection, ``onCreate``/``onUpdate``, the kill switches) and recorded as a run of
its own (job ``performAction``) with one audit entry. ``EXCEPTION`` records the
object's failure, as PingIDM's does, and answers no error.

With PingIDM's ``reconId`` (the run of the mapping whose report the action settles),
the action's audit entry is also one of that run's, as in PingIDM: a query of the
run's entries (``audit/recon``, ``idsync status RUN --audit``) shows what became of the
object it reported. A ``reconId`` that is not a run of the mapping is refused before
anything is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.errors import NotFound, ObjectRejected
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.store.tables import audit
from idsync.sync.assess import FORCED_ACTIONS, Forced
from idsync.sync.implicit import ImplicitSync, PushResult, read_source
from idsync.sync.qualifiers import LinkQualifiers
from idsync.sync.system_ids import unfit_id

__all__ = ["ActionFailed", "LinkConflict", "LinkedResource", "link", "linked_resources", "perform", "unlink"]


class LinkConflict(ObjectRejected):
    """Another link holds the source or the target."""

    status = 409


class ActionFailed(ObjectRejected):
    """The action was taken and failed: the object's situation changed, the mapping
    cannot do it here (a CREATE for a source whose target exists), or the target
    refused it. The run that recorded it is named in the message."""

    status = 409


@dataclass(frozen=True)
class LinkedResource:
    resource_name: str
    content: dict[str, Any] | None
    link_qualifier: str
    link_type: str

    def answer(self) -> dict[str, Any]:
        """As PingIDM's ``getLinkedResources`` answers one."""
        return {"resourceName": self.resource_name, "content": self.content, "linkQualifier": self.link_qualifier,
                "linkType": self.link_type}


def linked_resources(project: Project, store: Store, resources: Resources, resource: str) -> list[LinkedResource]:
    """Every object linked to ``resource`` (``managed/user/ID``, ``system/ldap/account/ID``)."""
    collection, _, object_id = resource.strip("/").rpartition("/")
    if not collection or not object_id:
        raise ObjectRejected(f"resourceName must name one object (managed/user/<id>), not {resource!r}")
    found: dict[tuple[str, str, str], LinkedResource] = {}
    for mapping in project.mappings:
        for mine, other, forward in ((mapping.source, mapping.target, True), (mapping.target, mapping.source, False)):
            if mine != collection:
                continue
            qualifiers = _qualifiers(project, store, mapping)
            for name in qualifiers.all():
                links = qualifiers.links(name)
                linked = (links.targets_of([object_id]) if forward else links.sources_of([object_id])).get(object_id)
                key = (f"{other}/{linked}", name, mapping.linkset)
                if linked is None or key in found:
                    continue
                content = resources.open(other).get(linked)
                found[key] = LinkedResource(key[0], content, name, mapping.linkset)
    return list(found.values())


def link(project: Project, store: Store, resources: Resources, mapping_name: str, source_id: str,
         target_id: str, qualifier: str = "default", recon_id: str | None = None) -> None:
    """Link ``source_id`` to ``target_id`` through ``mapping_name`` (both must exist)."""
    mapping = project.mapping(mapping_name)
    if not mapping.enable_linking:
        raise ObjectRejected(f"{mapping.name} keeps no links (enableLinking is false): nothing to link")
    _recon_of(store, mapping, recon_id)
    _linkable(source_id, target_id)
    links = _qualified(project, store, mapping, qualifier)
    for side, object_id in ((mapping.source, source_id), (mapping.target, target_id)):
        if resources.open(side).get(object_id) is None:
            raise NotFound(f"{side}/{object_id} not found")
    current = links.targets_of([source_id]).get(source_id)
    if current is not None and current == links.key_of_theirs(target_id):
        return  # (as the link keeps it: in lower case where the mapping ignores its case)
    if current is not None:
        raise LinkConflict(f"{mapping.source}/{source_id} is linked to {mapping.target}/{current} through "
                           f"{mapping.name} ({qualifier}); unlink it first")
    holder = links.sources_of([target_id]).get(target_id)
    if holder is not None:
        raise LinkConflict(f"{mapping.target}/{target_id} is linked to {mapping.source}/{holder} through "
                           f"{mapping.name} ({qualifier}); unlink that first")
    with store.begin() as conn:
        links.add(conn, [(source_id, target_id)])
        _audit(store, conn, mapping, "LINK", source_id, target_id, qualifier, recon_id)


def unlink(project: Project, store: Store, mapping_name: str, source_id: str, qualifier: str = "default",
           recon_id: str | None = None) -> str:
    """Remove the link of ``source_id`` through ``mapping_name``; answers the target it held."""
    mapping = project.mapping(mapping_name)
    _recon_of(store, mapping, recon_id)
    links = _qualified(project, store, mapping, qualifier)
    target_id = links.targets_of([source_id]).get(source_id)
    if target_id is None:
        raise NotFound(f"{mapping.source}/{source_id} has no link through {mapping.name} ({qualifier})")
    with store.begin() as conn:
        links.remove_sources(conn, [source_id])
        _audit(store, conn, mapping, "UNLINK", source_id, target_id, qualifier, recon_id)
    return target_id


def _qualifiers(project: Project, store: Store, mapping: MappingDef) -> LinkQualifiers:
    return LinkQualifiers(mapping, LinkSet.of(store, project, mapping))


def _qualified(project: Project, store: Store, mapping: MappingDef, qualifier: str) -> LinkSet:
    qualifiers = _qualifiers(project, store, mapping)
    if qualifier not in qualifiers.all():
        raise ObjectRejected(f"{mapping.name} has no link qualifier {qualifier!r} "
                             f"(it has {', '.join(qualifiers.all())})")
    return qualifiers.links(qualifier)


def _audit(store: Store, conn: Any, mapping: MappingDef, action: str, source_id: str, target_id: str,
           qualifier: str, recon_id: str | None) -> None:
    RunStore(store).audit(conn, [{"run_id": recon_id, "mapping": mapping.name, "situation": None, "action": action,
                                  "source_id": source_id, "target_id": target_id, "status": "SUCCESS",
                                  "message": f"{action} by hand (performAction)", "link_qualifier": qualifier}])


def _linkable(source_id: str | None, target_id: str | None) -> None:
    """Refuse ids no link can hold (``system_ids.py``: over ``KEY_LENGTH`` characters, a NUL,
    half of a character) before anything is read or written: the same 400 on every store."""
    for side, object_id in (("source", source_id), ("target", target_id)):
        why = unfit_id(side, object_id, "it cannot be linked") if object_id else None
        if why is not None:
            raise ObjectRejected(why)


def _recon_of(store: Store, mapping: MappingDef, recon_id: str | None) -> None:
    """Refuse a ``reconId`` that is not a run of ``mapping`` (before anything is done)."""
    if recon_id is None:
        return
    run = RunStore(store).get(recon_id)
    if run is None or run["mapping"] != mapping.name:
        raise ObjectRejected(f"reconId {recon_id!r} is not a run of {mapping.name}")


def _also_in(store: Store, run_id: str, recon_id: str) -> None:
    """The audit entries of run ``run_id`` (a performAction's) recorded in run ``recon_id`` too."""
    columns = [c for c in audit.c if c.name not in ("seq", "run_id")]
    with store.begin() as conn:
        rows = [dict(r) for r in conn.execute(select(*columns).where(audit.c.run_id == run_id)
                                              .order_by(audit.c.seq)).mappings()]
        if rows:
            RunStore(store).audit(conn, [{**r, "run_id": recon_id} for r in rows])


def perform(project: Project, store: Store, resources: Resources, mapping_name: str, action: str, *,
            source_id: str | None, target_id: str | None, situation: str | None = None,
            qualifier: str = "default", recon_id: str | None = None) -> PushResult:
    """Take ``action`` for one object through ``mapping_name``: for ``source_id`` (with
    ``target_id``, the target chosen for it), or with no source for ``target_id`` as the
    target phase sees it. ``ActionFailed`` when it failed (but for ``EXCEPTION``)."""
    mapping = project.mapping(mapping_name)
    action = action.upper()
    if action not in FORCED_ACTIONS:
        raise ObjectRejected(f"unknown action {action!r} (actions: {', '.join(FORCED_ACTIONS)})")
    if situation is not None:
        situation = situation.upper()
    _recon_of(store, mapping, recon_id)
    _linkable(source_id, target_id)
    links = _qualified(project, store, mapping, qualifier)
    source = target = None
    if source_id and (source := read_source(resources, mapping, source_id)) is None:
        raise NotFound(f"{mapping.source}/{source_id} not found")
    if target_id:
        target = resources.open(mapping.target).get(target_id, mapping.default_target_fields)
        if target is None:
            raise NotFound(f"{mapping.target}/{target_id} not found")
    if source is None and target is None:
        raise ObjectRejected("performAction needs the sourceId parameter, or the targetId parameter for an "
                             "action on a target")
    if source is not None and target is not None:
        current = links.targets_of([source_id or ""]).get(source_id or "")
        if current is not None and current != target_id:
            raise LinkConflict(f"{mapping.source}/{source_id} is linked to {mapping.target}/{current} through "
                               f"{mapping.name} ({qualifier}); unlink it first")
    pushed = ImplicitSync(project, store, resources).perform(mapping, Forced(action, situation), source=source,
                                                             target=target, qualifier=qualifier)
    if recon_id is not None:
        _also_in(store, pushed.run_id, recon_id)
    if not pushed.ok and action != "EXCEPTION":
        raise ActionFailed(f"{action} {'source ' + source_id if source_id else 'target ' + str(target_id)} "
                           f"through {mapping.name}: {pushed.message} (run {pushed.run_id})")
    return pushed
