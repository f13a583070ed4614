"""Implicit synchronization: a managed object's change pushed at once through
every mapping whose source is its resource (unless ``enableSync`` is false).

One push is one object through one mapping, assessed exactly as a recon would
(``Assessor``: link, correlation, situation, policy, projected target) and
applied at once; a DELETE does not wait for the end of a run, as there is no
run to wait for. A deleted source is assessed with ``assess_source_deleted``.

Each push is recorded like a tiny recon run (job ``implicit``, or ``retry``)
with one audit entry, so ``idsync status`` lists it and ``idsync sync retry``
finds the failed ones again (``retry.py``). The store change was made before
the push and stands whatever happens here: a target that refuses the object or
cannot be reached fails the push, never the change; so does a bug (an exception
that is no ``IdsyncError``), recorded as ``internal error: ...``, so that no push run
is left ACTIVE by the process that ran it. Audit entries hold masked
values only (``Assessor`` masks secret names such as ``userPassword``).

A mapping that reads or writes a disabled system (``"enabled": false``) is left out, as
PingIDM leaves a disabled provisioner unstarted: no run is recorded for it, and the first
change it leaves out says so at warning (later ones at debug), the first again after
each reload of the configuration (``forget_told_disabled``: the daemon's SIGHUP or
watch), which may have enabled the system and disabled it again. A
``reconById`` or ``idsync sync retry`` of it, asked for by hand, still fails naming the file.

A "merge" list is changed by what the change itself added and removed, found by
comparing with the object before it. The failed push that begins a run of
failures keeps that earlier object, secrets removed, in its audit entry; the
next push or retry of the object compares with it instead, so the removals of
every change that never arrived are applied too (``retry.unrepaired``).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from idsync.config.jobs import PERFORM_JOB
from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.errors import IdsyncError, NotFound, internal_message
from idsync.resource import Obj, Resource, WriteOp, renamed
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.hooks import ObjectHooks
from idsync.store.links import LinkSet, in_step_side, revision
from idsync.store.objects import ManagedResource
from idsync.store.runs import AUDIT_BEFORE, RunStore
from idsync.sync.assess import SECRET_NAMES, Assessor, Forced, Plan
from idsync.sync.assignments import Assignments, mapping_assignments
from idsync.sync.correlation import ChosenTarget, Correlator
from idsync.sync.mapping_hooks import on_recon
from idsync.sync.options import ReconOptions
from idsync.sync.qualifiers import LinkQualifiers
from idsync.sync.retry import unrepaired
from idsync.sync.summary import Counters
from idsync.sync.written import written_values

__all__ = ["IMPLICIT_JOB", "RECON_BY_ID_JOB", "RETRY_JOB", "ImplicitSync", "PushResult", "forget_told_disabled",
           "merge_baseline", "read_source"]

log = structlog.get_logger(__name__)

IMPLICIT_JOB = "implicit"
RETRY_JOB = "retry"
RECON_BY_ID_JOB = "reconById"  # the API's one-object recon: a push like the others (``sync/retry.py``)
INTERRUPTED = "interrupted: the process stopped during the push"
# The mappings whose disabled system a push has told of at warning (``tell_disabled``), with
# the files, since the configuration was last loaded (``forget_told_disabled``).
_told_disabled: set[tuple[str, tuple[str, ...]]] = set()
_told_lock = threading.Lock()


def forget_told_disabled() -> None:
    """Forget which mappings' disabled systems were told of: the configuration was reloaded,
    so the next change a disabled system leaves out says so at warning again."""
    with _told_lock:
        _told_disabled.clear()


@dataclass(frozen=True)
class PushResult:
    """What one push did: the run recording it, the situation and action (empty
    when the push failed before it could assess the object, e.g. the target was
    unreachable), and the error that stopped it (``ok`` false), if any."""

    mapping: str
    run_id: str
    source_id: str
    situation: str
    action: str
    ok: bool
    target_id: str | None = None
    message: str | None = None
    qualifier: str = "default"


class ImplicitSync:
    """Pushes changes of managed objects to the targets of their mappings."""

    def __init__(self, project: Project, store: Store, resources: Resources) -> None:
        self.project = project
        self.store = store
        self.resources = resources
        self.runs = RunStore(store)
        self._hooks: dict[str, ObjectHooks] = {}

    def mappings(self, resource: str) -> list[MappingDef]:
        """The mappings a change of ``resource`` is pushed through, in processing order: those
        with ``enableSync`` whose systems are enabled."""
        return [m for m in self._enabled(resource) if not self.project.disabled_files((m.source, m.target))]

    def _enabled(self, resource: str) -> list[MappingDef]:
        return [m for m in self.project.mappings if m.source == resource and m.enable_sync]

    def push(self, resource: str, object_id: str, current: Obj | None, *, before: Obj | None = None,
             job: str = IMPLICIT_JOB, clear: Mapping[str, Any] | None = None,
             not_to: str | None = None) -> list[PushResult]:
        """Push ``current`` (``None``: the object was deleted) through every mapping;
        ``before`` (the object before the change) lets "merge" lists drop what it lost.
        Both are the stored objects, which the mappings see as the type's ``onRetrieve``
        scripts show them. ``clear``: the secrets the change set, as given (the store
        keeps their hashes), for a target that takes a secret in clear only. ``not_to``:
        a target not to push to (where the change came from). A mapping to or from a
        disabled system is left out (``tell_disabled``)."""
        self.tell_disabled(resource)
        mappings = [m for m in self.mappings(resource) if m.target != not_to]
        if mappings and resource.startswith("managed/"):
            current, before = self._retrieved(resource, current), self._retrieved(resource, before)
        return [r for m in mappings
                for r in self.push_qualified(m, object_id, current, before=before, job=job, clear=clear)]

    def tell_disabled(self, resource: str) -> None:
        """Say that a change of ``resource`` is not pushed through the mappings whose system is
        disabled, as PingIDM does not start a disabled provisioner: at warning the first time
        since the configuration was loaded for each mapping and set of files, then at debug.
        No run is recorded."""
        for m in self._enabled(resource):
            files = tuple(self.project.disabled_files((m.source, m.target)))
            if not files:
                continue
            with _told_lock:
                told = (m.name, files) in _told_disabled
                _told_disabled.add((m.name, files))
            (log.debug if told else log.warning)(
                "implicit_sync.skipped", reason="disabled", mapping=m.name, resource=resource, files=list(files),
                message=f"changes of {resource} are not pushed through {m.name}: it reads or writes a disabled "
                        f"system (\"enabled\": false in {', '.join(files)}); once the system is enabled, a recon of "
                        f"{m.name} brings it up to date")

    def _retrieved(self, resource: str, obj: Obj | None) -> Obj | None:
        if obj is None:
            return None
        if resource not in self._hooks:
            self._hooks[resource] = ObjectHooks(self.project.managed.get(resource.split("/", 1)[1]))
        hooks = self._hooks[resource]
        return hooks.retrieved(obj, "query") if hooks.reads else obj

    def push_one(self, mapping: MappingDef, object_id: str, current: Obj | None, *, before: Obj | None = None,
                 job: str = IMPLICIT_JOB) -> PushResult:
        """``push_qualified`` told as one result: the first failed push, else the first."""
        results = self.push_qualified(mapping, object_id, current, before=before, job=job)
        failed = [r for r in results if not r.ok]
        if failed or results:
            return (failed or results)[0]
        return PushResult(mapping.name, "", object_id, "", "", True, message="no link qualifier applies")

    def push_qualified(self, mapping: MappingDef, object_id: str, current: Obj | None, *,
                       before: Obj | None = None, job: str = IMPLICIT_JOB,
                       clear: Mapping[str, Any] | None = None) -> list[PushResult]:
        """One push per link qualifier of the object (``linkQualifiers``; ``default`` without)."""
        links = LinkSet.of(self.store, self.project, mapping)
        qualifiers = LinkQualifiers(mapping, links)
        try:
            if current is None:
                # A deleted source: every qualifier it is linked by (it has no value to ask a script about).
                names = tuple(n for n in qualifiers.all() if qualifiers.links(n).targets_of([object_id]))
                names = names or qualifiers.all()[:1]
            else:
                names = qualifiers.of_source(current, before)
        except IdsyncError as exc:
            return [self._push(mapping, object_id, current, before, job, qualifiers, "default",
                               f"linkQualifiers script failed: {exc}")]
        return [self._push(mapping, object_id, current, before, job, qualifiers, name, clear=clear) for name in names]

    def perform(self, mapping: MappingDef, forced: Forced, *, source: Obj | None, target: Obj | None,
                qualifier: str = "default") -> PushResult:
        """PingIDM's ``performAction``: ``forced.action`` taken for one object, recorded as a
        run of its own (job ``performAction``). With ``source``, for that source as a push
        assesses it; ``target`` is then the target the caller chose for it (in place of its
        correlation). With no ``source``, for ``target`` as a recon's target phase assesses it."""
        qualifiers = LinkQualifiers(mapping, LinkSet.of(self.store, self.project, mapping))
        if source is None:
            if target is None:
                raise ValueError("perform needs a source or a target")
            return self._push(mapping, "", None, None, PERFORM_JOB, qualifiers, qualifier, forced=forced,
                              target_only=target)
        return self._push(mapping, source["_id"], source, None, PERFORM_JOB, qualifiers, qualifier,
                          forced=forced, chosen=target)

    def _push(self, mapping: MappingDef, object_id: str, current: Obj | None, before: Obj | None, job: str,
              qualifiers: LinkQualifiers, qualifier: str, failure: str | None = None, *,
              clear: Mapping[str, Any] | None = None, forced: Forced | None = None, chosen: Obj | None = None,
              target_only: Obj | None = None) -> PushResult:
        secrets = self.project.secret_properties(mapping)
        # A reconById or a performAction repairs the whole object; a push writes its change.
        changes_only = job not in (RECON_BY_ID_JOB, PERFORM_JOB) and self.project.reverse_of(mapping) is not None
        before, kept = merge_baseline(self.store, mapping, object_id, current, before, secrets,
                                      changes_only=changes_only)
        run_id = str(uuid.uuid4())
        counters = Counters(mapping.name, mapping.source, mapping.target)
        bound = log.bind(run_id=run_id, mapping=mapping.name, source_id=object_id, job=job)
        if mapping.qualified:
            bound = bound.bind(link_qualifier=qualifier)
        # reconById is a reconciliation of one object: its start and summary are recon events.
        events = job == RECON_BY_ID_JOB
        self.runs.start(run_id, mapping.name, job=job, dry_run=False, summary=counters.to_summary(),
                        started_by=f"reconById of {object_id}" if events else None, lockless=True)
        # Until assessed (the target may be unreachable) a push has no situation or action.
        plan = Plan("", "", object_id, None, qualifier=qualifier)
        error: str | None = failure
        try:
            if failure is None and events and (failure := on_recon(mapping, run_id)) is not None:
                error = f"{failure}; nothing was changed"  # as in PingIDM, a failed onRecon fails the run
            if failure is None:
                target = self.resources.open(mapping.target)
                links = qualifiers.links(qualifier)
                assessor = Assessor(mapping, ReconOptions(), counters, secrets=secrets,
                                    previous={object_id: before} if before else {}, old_source=True,
                                    assignments=mapping_assignments(self.project, self.store, mapping),
                                    clear_only=target.clear_secrets, denied=target.denied,
                                    written=written_values(self.project, mapping, target), forced=forced,
                                    stored=target.stored, changes_only=changes_only)
                if assessor.written is not None and assessor.written.enabled:
                    assessor.keep_written(links.written_of([object_id]))
                if changes_only:
                    assessor.agreed = links.in_step_of([object_id])
                if clear and target.clear_secrets and current is not None:
                    # The change's own secrets as given: this target takes none as a hash.
                    current = {**current, **clear}
                if target_only is not None:
                    plan = self._assess_target(mapping, assessor, links, target_only)
                elif current is None:
                    plan = self._assess_deleted(assessor, target, links, object_id)
                else:
                    correlator = ChosenTarget(chosen) if chosen is not None else \
                        qualifiers.correlators(target, self.project.queries).get(qualifier)
                    plan = self._assess_present(mapping, assessor, target, links, current, correlator)
                error = self._apply(plan, target, links, assessor.assignments, mapping, counters)
        except IdsyncError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug fails this push (recorded, retried), never the change
            error = f"internal error: {internal_message(exc)}"
            bound.error("implicit_sync.crashed", error=error, exc_info=exc)
        except BaseException:
            # Stopped here (a forced exit): the run is ended before the exit goes on, if the
            # store answers (else the daemon's next start ends it: ``daemon/recovery.py``).
            with contextlib.suppress(Exception):
                self._record(run_id, mapping, counters, plan, INTERRUPTED, kept, events=events)
            raise
        # The first failure of a run keeps what the push repairing it must compare with.
        self._record(run_id, mapping, counters, plan, error, kept if error else None, events=events)
        if error is None:
            bound.info("implicit_sync.pushed", situation=plan.situation, action=plan.action,
                       target_id=plan.target_id, change=plan.change)
        else:
            bound.warning("implicit_sync.failed", situation=plan.situation, action=plan.action, error=error)
        return PushResult(mapping.name, run_id, object_id or plan.source_id or "", plan.situation, plan.action,
                          error is None, plan.target_id, error, qualifier)

    # -- deciding -------------------------------------------------------------

    def _assess_present(self, mapping: MappingDef, assessor: Assessor, target: Resource, links: LinkSet,
                        current: Obj, correlator: Correlator | None) -> Plan:
        linked = links.targets_of([current["_id"]])
        tid = linked.get(current["_id"])
        targets = target.get_many([tid], mapping.default_target_fields) if tid else {}
        (plan,) = assessor.assess_sources([current], linked, targets, correlator, links)
        if plan.defer and plan.action == "DELETE" and plan.target_id:
            plan.op, plan.change = WriteOp("delete", id=plan.target_id), "deleted"
        return plan

    def _assess_target(self, mapping: MappingDef, assessor: Assessor, links: LinkSet, target: Obj) -> Plan:
        """One target, as a recon's target phase assesses it: with the source its link names."""
        tid = target["_id"]
        sources_of = links.sources_of([tid])
        sid = sources_of.get(tid)
        sources: dict[str, Obj] = {}
        if sid and (found := read_source(self.resources, mapping, sid)) is not None:
            sources[sid] = found
        (plan,) = assessor.assess_targets([target], sources_of, sources, links.qualifier)
        if plan.defer and plan.action == "DELETE" and plan.target_id:
            plan.op, plan.change = WriteOp("delete", id=plan.target_id), "deleted"
        return plan

    def _assess_deleted(self, assessor: Assessor, target: Resource, links: LinkSet, source_id: str) -> Plan:
        tid = links.targets_of([source_id]).get(source_id)
        found = target.get(tid, assessor.mapping.default_target_fields) if tid else None
        return assessor.plan_deleted(source_id, tid, found, links.qualifier)

    # -- acting ---------------------------------------------------------------

    def _apply(self, plan: Plan, target: Resource, links: LinkSet, assignments: Assignments | None,
               mapping: MappingDef, counters: Counters) -> str | None:
        """Write the plan's change, then its link and the assignments it applied; the error, or
        ``None``. The mapping's onDelete or onUnlink runs before its delete or unlink (a
        DELETE of a linked target runs onUnlink too, once the target is deleted), its
        onLink once the link is stored (``mapping_hooks.py``)."""
        if plan.error is not None:
            return plan.error
        target_id = plan.target_id
        op = plan.op
        written: Obj | None = None
        plan.before_unlink(mapping, counters)
        if op is not None:
            (result,) = target.write_batch([op])
            gone = op.kind == "delete" and isinstance(result.error, NotFound)
            if not result.ok and not gone:
                return str(result.error)
            target_id, written = result.id or target_id, result.obj
            plan.message = result.message or plan.message
            if op.kind == "delete":
                plan.after_delete(mapping, counters)
        unlinked = plan.unlinked(target.name, target_id, written)
        if unlinked is not None:
            return unlinked
        with self.store.begin() as conn:
            # ``defer`` marks the plans whose link must go: DELETE, UNLINK, a source gone.
            if plan.defer and target_id:
                links.remove_targets(conn, [target_id])
            elif (plan.link or renamed(plan.target_id, target_id)) and plan.source_id and target_id:
                # A target renamed by the write (a DN id) keeps its link under its new id.
                links.add(conn, [(plan.source_id, target_id)],
                          written={plan.source_id: plan.written} if plan.written and op is not None else None)
            elif plan.written is not None and op is not None and plan.source_id and target_id:
                links.set_written(conn, {plan.source_id: plan.written})
            if not plan.defer and plan.source_id and target_id and in_step_side(mapping) == "source" and \
                    (op is not None or plan.change == "unchanged") and (rev := revision(plan.source_obj)) is not None:
                # The target now holds this revision: liveSync of the type need not replay it.
                links.set_in_step(conn, {plan.source_id: rev})
            if plan.assigned is not None and plan.source_id and assignments is not None:
                assignments.last_sync.record(conn, {plan.source_id: plan.assigned})
        if plan.link and plan.source_id and target_id and not plan.defer:
            plan.after_link(mapping, counters, written, target_id)
        plan.after_action(mapping, counters, target_id, None)
        plan.target_id = target_id
        return None

    def _record(self, run_id: str, mapping: MappingDef, counters: Counters, plan: Plan, error: str | None,
                before: Obj | None = None, *, events: bool = False) -> None:
        counters.source_processed = 1
        if plan.situation:
            counters.assessed(plan.situation, plan.action, plan.qualifier)
        counters.status["FAILURE" if error else "SUCCESS"] += 1
        if error:
            counters.changes["failed"] += 1
            counters.error(error, situation=plan.situation or None, source_id=plan.source_id,
                           target_id=plan.target_id)
        elif plan.change:
            counters.changes[plan.change] += 1
        if plan.link and not error:
            counters.links_created += 1
        state = "FAILED" if error else "SUCCESS"
        counters.stage = "COMPLETED" if not error else "COMPLETED_FAILED"
        summary = counters.to_summary()
        summary["duration"] = round((time.monotonic() - counters.started) * 1000)
        row = plan.audit_row(run_id, mapping.name, plan.target_id, False)
        row.update(situation=plan.situation or None, action=plan.action or None)
        if error:
            row.update(status="FAILURE", message=error)
        if before is not None:
            row["changes"] = {**(row["changes"] or {}), AUDIT_BEFORE: before}
        with self.store.begin() as conn:
            # Every push is audited, even an unchanged one: retry reads the last word per object.
            self.runs.audit(conn, [row])
        self.runs.finish(run_id, state, counters.stage, summary, error, mapping=mapping.name if events else None)


def read_source(resources: Resources, mapping: MappingDef, object_id: str) -> Obj | None:
    """One source object of ``mapping`` as a push reads it (``None``: there is none): a
    managed source with its hashed secrets, which the mapping may push."""
    source = resources.open(mapping.source)
    if isinstance(source, ManagedResource):
        source = source.as_sync_source()
    return source.get(object_id, mapping.default_source_fields)


def merge_baseline(store: Store, mapping: MappingDef, object_id: str, current: Obj | None, before: Obj | None,
                   secrets: frozenset[str], pending: Collection[str] | None = None, *,
                   changes_only: bool = False) -> tuple[Obj | None, Obj | None]:
    """For a push of ``current`` (``before``: the object before its change) through
    ``mapping``: the object its "merge" lists (and, ``changes_only``, its whole update:
    ``Assessor.changes_only``) are compared with, and what the push's audit entry keeps
    should it fail (``AUDIT_BEFORE``). The first failure of a run of failures keeps the
    object before the change, without secrets; while earlier changes never arrived, a
    push compares with the object before the first of them, and keeps nothing; a push
    of a failure whose entry kept no object (written before entries kept one) compares
    with none, and writes the whole projection. ``pending``: the ids whose last push
    through ``mapping`` failed, when the caller has them (``retry.failed_among``);
    others are not looked up."""
    if current is None or not (changes_only or mapping.properties.has_merge()):
        return before, None
    earlier = unrepaired(store, mapping.name, object_id) if pending is None or object_id in pending else None
    if earlier is None:
        return before, _without_secrets(before, secrets) if before is not None else None
    return (_with_secrets(earlier.before, current, secrets) if earlier.before is not None else None), None


def _secret(name: str, secrets: frozenset[str]) -> bool:
    return name.lower() in SECRET_NAMES or name.lower() in {s.lower() for s in secrets}


def _without_secrets(obj: Obj, secrets: frozenset[str]) -> Obj:
    """``obj`` fit for an audit entry: no secret property, hashed or not."""
    return {k: v for k, v in obj.items() if not _secret(k, secrets)}


def _with_secrets(recorded: Obj, current: Obj, secrets: frozenset[str]) -> Obj:
    """A recorded earlier object with the current secrets, which it lacks: a
    secret compares as unchanged rather than as removed."""
    return {**recorded, **{k: v for k, v in current.items() if _secret(k, secrets)}}
