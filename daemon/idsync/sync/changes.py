"""Applying a source's changes through one mapping (liveSync, ``livesync.py``).

A batch of changes is assessed as a source page of a recon (``Assessor``: link,
correlation, situation, policy, projected target) and a deleted object as a
deletion event (``Assessor.plan_deleted``), then written at once: the target's
writes, then in one store transaction the links, the audit entries and what the
caller adds (the token, with the batch that carries it). Deletes do not wait for
the end of a run (there is no target phase); they count against the mapping's
``maxDeletes`` over the run. A change the reverse mapping would have written
itself (an echo of idsync's own write) is skipped; an attribute the reverse mapping
would leave alone (its condition false) is nothing new only when the linked object
holds it already. The mapping's run is recorded (job ``liveSync``) at its first
change only.

A mapping with ``linkQualifiers`` assesses each changed object once per qualifier
the object has (``qualifiers.py``), each with its own link, correlation and target,
as a recon does; a deleted object, once per qualifier whose link holds it.

Writes into a managed type go on through the type's other mappings (``OnwardPush``), as
PingIDM's implicit sync carries any change of a managed object: a recon into
``managed/user`` fills the systems ``managed/user`` maps to in the same run (OpenIDM's
sample5), and so does liveSync (sample6: Active Directory to the store to OpenDJ). Once
a page's (or a batch's) transaction is committed, the objects it created, updated or
deleted are applied through each other mapping of the type by a ``ChangeApplier``, one
assessment and one batch of writes a page, recorded as one run of that mapping (job
``implicit``) per run carried on, whose failed objects ``idsync sync retry`` pushes again
(``retry.py``). Never back to the system the run read (its own reverse mapping): the
store now holds what that system holds, and two mappings would otherwise bounce changes
between them. A target that refuses an object, or cannot be reached, fails that push,
never the run: the store's change stands, and the onward run records the failure.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import Connection

from idsync.config.jobs import LIVESYNC_JOB
from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.config.properties import diff
from idsync.config.source_fields import source_fields
from idsync.errors import IdsyncError, NotFound, SafetyLimitExceeded
from idsync.query.ast import And, Compare, Node, Or
from idsync.resource import Change, Obj, QuerySpec, Resource, WriteOp, WriteResult, renamed
from idsync.resources import Resources
from idsync.store.database import Store, fits_key
from idsync.store.links import LinkSet, in_step_side, revision
from idsync.store.objects import ManagedResource
from idsync.store.passwords import same_secret
from idsync.store.runs import AUDIT_BEFORE, RunStore
from idsync.sync.assess import Assessor, Plan
from idsync.sync.assignments import mapping_assignments
from idsync.sync.deletes import writing
from idsync.sync.implicit import IMPLICIT_JOB, ImplicitSync, merge_baseline
from idsync.sync.options import ReconOptions
from idsync.sync.qualifiers import LinkQualifiers
from idsync.sync.retry import failed_among, hold_pending, pending_targets
from idsync.sync.summary import Counters
from idsync.sync.system_ids import unfit_id
from idsync.sync.written import written_values

__all__ = ["ChangeApplier", "OnwardPush"]

log = structlog.get_logger(__name__)


class ChangeApplier:
    """Applies changes of a source through one mapping; records its run on first use."""

    def __init__(self, project: Project, store: Store, mapping: MappingDef, resources: Resources, *,
                 dry_run: bool, method: str, note: str | None, job: str = LIVESYNC_JOB) -> None:
        self.mapping = mapping
        self.job = job  # ``implicit``: a recon's writes carried on (``OnwardPush``)
        self.store = store
        self.project = project
        self.resources = resources
        self.runs = RunStore(store)
        self.dry_run = dry_run
        self.method, self.note = method, note
        self.run_id: str | None = None
        self.counters = Counters(mapping.name, mapping.source, mapping.target, dry_run=self.dry_run)
        self.echoes = 0
        self.deletes = 0
        source = resources.open(mapping.source)
        # A managed source as a recon reads it (hashed secrets, onRetrieve), as its changes were read.
        self.source = source.as_sync_source() if isinstance(source, ManagedResource) else source
        target = resources.open(mapping.target, dry_run=self.dry_run)
        if isinstance(target, ManagedResource):
            target = target.revealing_secrets()  # compared with a (hashed) password read from the source
        self.target: Resource = target
        self.qualifiers = LinkQualifiers(mapping, LinkSet.of(self.store, project, mapping))
        self.assessor = Assessor(mapping, ReconOptions(dry_run=self.dry_run), self.counters,
                                 secrets=project.secret_properties(mapping),
                                 target_schema=target.schema if isinstance(target, ManagedResource) else None,
                                 assignments=mapping_assignments(project, store, mapping),
                                 clear_only=target.clear_secrets, denied=target.denied,
                                 written=written_values(project, mapping, target), stored=target.stored,
                                 changes_only=job == IMPLICIT_JOB and project.reverse_of(mapping) is not None)
        self.correlators = self.qualifiers.correlators(target, project.queries)
        self.pending = pending_targets(self.store, project, mapping) if isinstance(target, ManagedResource) else {}
        self._at_least = 0  # how many objects the target is known to hold (for a maxDeletes share)
        # The source objects whose change failed through this mapping since ``failed`` was last
        # emptied, and why (``livesync.py`` keeps them for a retry: ``syncFailureHandler``).
        self.failed: dict[str, str] = {}
        self.reverse = _reverse_assessor(project, mapping, self.counters)
        # Between a managed type and a system: the links keep the managed revision the two
        # objects agree at (``links.in_step``). A managed source's object still at it is not
        # replayed; a write into a managed target from an object that agreed keeps the new one.
        self._in_step = in_step_side(mapping)
        self._agreed: dict[str, str] = {}  # source id -> the in-step revision of its managed target
        self._onward: OnwardPush | None = None  # made at the first write into a managed type
        self._onward_checked = False  # ... or found not needed (no other mapping of the type)
        self._kept: dict[str, Obj] = {}  # source id -> its failure's AUDIT_BEFORE (``compare_with``)
        self._again: set[str] = set()  # the ids of the batch under way read again (``Change.reread``)
        self.onward_runs: list[dict[str, Any]] = []  # the runs that carried this one's writes on (``finish``)

    # -- deciding -------------------------------------------------------------

    def compare_with(self, befores: Mapping[str, Obj], kept: Mapping[str, Obj] | None = None) -> None:
        """The objects as they were before the changes applied next (a recon's updates, which
        ``OnwardPush`` carries on), so "merge" lists lose what a change took away, as a push's do;
        ``kept``: what the audit entry of each object's failure keeps for the push that repairs
        it (``merge_baseline``)."""
        self.assessor.previous = dict(befores)
        self._kept = dict(kept or {})

    def apply(self, changes: Sequence[Change], save: Callable[[Connection], None] | None) -> set[str]:
        """Apply ``changes`` through the mapping, then ``save`` in the transaction of their
        last write. The objects read again (``Change.reread``) whose target holds what the
        mapping makes of them already are no change: not written, audited nor counted, and a
        batch of nothing else records no run. What is returned: the ids of those read again
        that are changes."""
        # An object without an id, or with one no link can hold, fails alone, and is not kept
        # for a retry (``system_ids.py``); a deleted one was never linked, and its lookup finds nothing.
        unfit = [why for c in changes if c.obj is not None
                 and (why := _no_id(c) if c.unidentified else unfit_id("source", c.id)) is not None]
        present = self._in_scope([c.obj for c in changes if c.obj is not None and c.id and fits_key(c.id)])
        deleted = [c.id for c in changes if c.obj is None]
        rereads = {c.id for c in changes if c.reread and c.obj is not None}
        self._again = {o["_id"] for o in present if o["_id"] in rereads}
        if not present and not deleted and not unfit:
            if save is not None:
                with self.store.begin() as conn:
                    save(conn)
            return set()
        if deleted or unfit or any(o["_id"] not in self._again for o in present):
            self.start()
        t0 = time.monotonic()
        plans = [Plan("", "", None, None, error=why) for why in unfit]
        groups, failed = self.qualifiers.of_sources(present)
        for sid, error in failed.items():
            plans.append(Plan("", "", sid, None, error=f"linkQualifiers script failed: {error}"))
        for qualifier, objs in groups.items():
            plans.extend(self._assessed(objs, qualifier))
        plans.extend(self._deleted(deleted))
        taken = {p.source_id for p in plans if p.source_id in self._again and not _settled(p)}
        held = self._again - taken  # read again as their targets hold them: no change
        self._keep_in_step([p for p in plans if p.source_id in held])
        plans = [p for p in plans if p.source_id not in held]
        if plans or self.run_id is not None:
            self._write(plans, save)
        elif save is not None:
            with self.store.begin() as conn:
                save(conn)
        self.counters.source_processed += len(present) + len(deleted) + len(unfit) - len(held)
        self.counters.time("liveSyncBatch", (time.monotonic() - t0) * 1000)
        self._again = set()
        return {sid for sid in taken if sid is not None}

    def _assessed(self, objs: list[Obj], qualifier: str) -> list[Plan]:
        """The plans of ``objs`` for one link qualifier; a source correlating to a target
        created in this batch is assessed again once that create is written."""
        links = self.qualifiers.links(qualifier)
        plans: list[Plan] = []
        if self._in_step == "source":
            agreed = links.in_step_of([o["_id"] for o in objs])
            if self.assessor.changes_only:
                self.assessor.agreed = agreed
            fresh = [o for o in objs if agreed.get(o["_id"]) is None or agreed[o["_id"]] != o.get("_rev")]
            self._echoed(objs, fresh)
            objs = fresh
        freed: set[str] = set()
        while objs:
            linked = links.targets_of([o["_id"] for o in objs])
            if self._in_step == "target":
                self._agreed.update(links.in_step_of(list(linked)))
            if self.assessor.written is not None and self.assessor.written.enabled:
                self.assessor.keep_written(links.written_of(list(linked)))
            targets = self.target.get_many(list(linked.values()), self.mapping.default_target_fields) \
                if linked else {}
            mine = [o for o in objs if not self._echo(o, targets.get(linked.get(o["_id"], "")), qualifier)]
            self._echoed(objs, mine)
            self.assessor.prefetch([o["_id"] for o in mine])
            found = self.assessor.assess_sources(mine, linked, targets, self.correlators.get(qualifier), links,
                                                 self.source)
            stale = self._owners_gone(found, links, freed)
            if stale:
                # The target a source correlated to is linked to a source object that is gone:
                # deleted and made again under a new id, on a source that tells no deletes (or
                # not yet). A recon takes that link for SOURCE_MISSING in its target phase, and
                # creates or links the new object at its next run: the gone object's deletion
                # event is applied first, then the source assessed again (once).
                freed.update(stale)
                self._write(self._deleted(list(dict.fromkeys(stale.values()))), None)
                for plan in found:
                    plan.retry = plan.retry or plan.source_id in stale
            retry = {p.source_id for p in found if p.retry}
            done = [p for p in found if not p.retry]
            for plan in done:
                if plan.defer and plan.action == "DELETE" and plan.target_id and plan.op is None:
                    plan.op, plan.change = WriteOp("delete", id=plan.target_id), "deleted"
            if not retry:
                return plans + done
            self._write(done, None)
            objs = [o for o in objs if o["_id"] in retry]
        return plans

    def _keep_in_step(self, plans: Sequence[Plan]) -> None:
        """Keep with the links of ``plans`` (settled: their targets hold their sources) the
        managed revision the two objects agree at (``links.in_step``), as ``_write`` keeps a
        plan's: so the next read of an object still at it skips it at once."""
        found: dict[str, dict[str, str]] = {}
        for plan in plans:
            if plan.source_id and plan.target_id and (rev := self._agreed_at(plan, None)) is not None:
                found.setdefault(plan.qualifier, {})[plan.source_id] = rev
        if found and not self.dry_run:
            with self.store.begin() as conn:
                for qualifier, revs in found.items():
                    self.qualifiers.links(qualifier).set_in_step(conn, revs)

    def _echoed(self, objs: Sequence[Obj], kept: Sequence[Obj]) -> None:
        """Count the echoes among ``objs`` (those not ``kept``), but those read again: an
        object read again as its target holds it is no change at all."""
        left = {o["_id"] for o in kept}
        self.echoes += len([o for o in objs if o["_id"] not in left and o["_id"] not in self._again])

    def _owners_gone(self, plans: Sequence[Plan], links: LinkSet, freed: set[str]) -> dict[str, str]:
        """Source id -> the source id its correlated target is linked to, for the sources found
        ``FOUND_ALREADY_LINKED`` (and not freed already) whose target's linked source is gone."""
        taken = {p.source_id: p.target_id for p in plans if p.situation == "FOUND_ALREADY_LINKED"
                 and p.source_id and p.target_id and p.source_id not in freed}
        if not taken:
            return {}
        owners = links.sources_of([t for t in taken.values() if t])
        present = self.source.get_many(list(dict.fromkeys(owners.values())), [])
        return {sid: owners[tid] for sid, tid in taken.items()
                if sid is not None and tid in owners and owners[tid] not in present}

    @property
    def source_key(self) -> Callable[[str], str] | None:
        """How a source id is kept in this mapping's links (None: as it is)."""
        links = self.qualifiers.links("default")  # every qualifier's links compare ids alike
        return links.key_of_mine if links.folds_mine else None

    def linked_source_ids(self) -> Iterator[str]:
        """Every source id a link of the mapping holds, whatever its qualifier."""
        for qualifier in self.qualifiers.all():
            yield from self.qualifiers.links(qualifier).source_ids()

    def gone_sources(self, object_type: str) -> list[str]:
        """The linked source ids (any qualifier) whose managed object of ``object_type`` is gone."""
        gone = (self.qualifiers.links(q).sources_missing(object_type) for q in self.qualifiers.all())
        return list(dict.fromkeys(sid for ids in gone for sid in ids))

    def _deleted(self, ids: Sequence[str]) -> list[Plan]:
        if not ids:
            return []
        plans = []
        for qualifier in self.qualifiers.all():
            linked = self.qualifiers.links(qualifier).targets_of(ids)
            found = self.target.get_many(list(linked.values()), self.mapping.default_target_fields) \
                if linked else {}
            # A source never linked through this mapping (out of its scope): nothing to do.
            for sid, tid in linked.items():
                plan = self.assessor.plan_deleted(sid, tid, found.get(tid), qualifier)
                if plan.op is not None and plan.op.kind == "delete":
                    self.deletes += 1
                plans.append(plan)
        if not self._within_max_deletes():
            raise SafetyLimitExceeded(
                f"{self.mapping.name}: the changes would delete {self.deletes} target "
                f"object{'s' if self.deletes != 1 else ''} in one liveSync run, "
                f"more than maxDeletes ({_shown(self.mapping.max_deletes)}{self._of_target()}) allows; nothing of "
                "this batch was "
                "written and the token was not moved")
        return plans

    def _of_target(self) -> str:
        """How many objects the target holds, as far as a share of it was counted, for a
        refusal's message: "10% of the target" of three objects allows one delete only."""
        if not isinstance(self.mapping.max_deletes, float):
            return ""
        return f", which holds {self._at_least} object{'s' if self._at_least != 1 else ''}"

    def _within_max_deletes(self) -> bool:
        """Whether the run's deletes so far are within the mapping's ``maxDeletes``. A share is
        of the target as it is: rather than counting it all (a scan of a million rows each
        run), the target is read until it holds enough objects for the deletes to be within it."""
        limit = self.mapping.max_deletes
        if limit is None or not self.deletes:
            return True
        if not isinstance(limit, float):
            return self.deletes <= limit
        if limit <= 0:
            return False
        # The target must hold this many objects for the share to allow the deletes
        # (``share_cap``: one delete needs a target it would not empty).
        need = 2 if self.deletes == 1 else math.ceil(self.deletes / limit - 1e-9)
        if self._at_least < need:
            seen = 0
            for page in self.target.pages(QuerySpec(fields=[], page_size=min(need, 5000))):
                seen += len(page)
                if seen >= need:
                    break
            self._at_least = max(self._at_least, seen)
        return self._at_least >= need

    def _in_scope(self, objs: list[Obj]) -> list[Obj]:
        """The objects the mapping's ``sourceQuery`` takes, and those it leaves out that
        the mapping links, unless it runs no target phase: a recon meets these in its
        target phase, reads them by id and assesses them as they are (an update,
        ``UNQUALIFIED``...), and so does liveSync. The source answers (a native query is
        its own language, and a filter may name what the change did not read): one search
        of the query narrowed to these ids, 50 at a time."""
        query = self.mapping.source_query
        if not objs or (query.filter is None and query.native is None):
            return objs
        taken: set[str] = set()
        for start in range(0, len(objs), 50):
            terms = tuple(Compare(("_id",), "eq", o["_id"]) for o in objs[start:start + 50])
            ids: Node = Or(terms) if len(terms) > 1 else terms[0]
            node = And((query.filter, ids)) if query.filter is not None else ids
            taken.update(o["_id"] for o in self.source.find(QuerySpec(filter=node, native=query.native, fields=[])))
        left = [o["_id"] for o in objs if o["_id"] not in taken] if self.mapping.run_target_phase else []
        for qualifier in self.qualifiers.all() if left else ():
            taken.update(self.qualifiers.links(qualifier).targets_of(left))
        return [o for o in objs if o["_id"] in taken]

    def _echo(self, s: Obj, linked_target: Obj | None, qualifier: str) -> bool:
        """Whether ``s`` holds exactly what the reverse mapping would write to it from its
        linked object: then the change is idsync's own write read back (or one the linked
        object holds already), and says nothing new.

        An attribute the reverse mapping leaves alone for this object (its rule's condition
        does not hold: a description written only when the store has one) is not idsync's
        to judge by: whatever ``s`` holds there may be someone else's change. It says
        nothing new only when the linked object already holds what this mapping makes of it.
        """
        if self.reverse is None or linked_target is None:
            return False
        # Every attribute the mapping reads, not only its rules': one that only a hook,
        # validSource or a policy script reads may be the whole change (an account
        # disabled, which onUpdate records), and anything reading the whole source may
        # read anything (``source_fields``: None).
        fields = source_fields(self.mapping)
        reads = set(fields) if fields is not None else None
        if reads is None or not reads <= self.reverse.mapping.properties.target_fields():
            return False  # the change may hold something the reverse mapping never writes
        try:
            projected = self.reverse.project(linked_target, s, qualifier)
        except IdsyncError:
            return False
        changed = diff({k: v for k, v in projected.items() if k in reads}, s, unordered=True)
        # A secret the source holds hashed is the same when it verifies against the clear one.
        if not all(k.lower() in self.reverse.secret_names and same_secret(v, s.get(k)) for k, v in changed.items()):
            return False
        unwritten = reads - projected.keys()
        return not unwritten or self._held(s, linked_target, unwritten, qualifier)

    def _held(self, s: Obj, linked_target: Obj, fields: set[str], qualifier: str) -> bool:
        """Whether ``linked_target`` holds what this mapping projects from ``fields`` of ``s``."""
        try:
            projected = self.assessor.project(s, linked_target, qualifier)
        except IdsyncError:
            return False
        reading = self.mapping.properties.targets_reading(fields)
        return not diff({k: v for k, v in projected.items() if k in reading}, linked_target,
                        unordered=self.assessor.unordered)

    # -- acting ---------------------------------------------------------------

    def _write(self, plans: Sequence[Plan], save: Callable[[Connection], None] | None) -> None:
        """Write the plans' changes, then in one store transaction their links, audit and ``save``.
        The mapping's onDelete and onUnlink run before, its onLink after (``mapping_hooks.py``)."""
        if plans:
            self.start()
        hold_pending(plans, self.pending)
        linked: list[tuple[Plan, Obj | None, str]] = []
        acted: list[tuple[Plan, str | None]] = []  # the plans done whose policy has a postAction
        for plan in plans if not self.dry_run else ():
            plan.before_unlink(self.mapping, self.counters)
        with writing(self.store, self.target) as conn:
            ops = [p for p in plans if p.op is not None]
            results: dict[int, WriteResult] = {}
            if ops:
                for plan, written in zip(ops, self.target.write_batch([p.op for p in ops if p.op]), strict=True):
                    results[id(plan)] = written
            add: list[tuple[str, str, str]] = []
            drop: list[tuple[str, str]] = []
            audit: list[dict[str, Any]] = []
            assigned: dict[str, list[Obj]] = {}
            sealed: dict[str, dict[str, str]] = {}  # qualifier -> source id -> digest (``written.py``)
            in_step: dict[str, dict[str, str]] = {}  # qualifier -> source id -> managed revision agreed at
            for plan in plans:
                target_id = self._outcome(plan, results.get(id(plan)), audit)
                if target_id is not None and not plan.defer and plan.source_id and \
                        (rev := self._agreed_at(plan, results.get(id(plan)))) is not None:
                    in_step.setdefault(plan.qualifier, {})[plan.source_id] = rev
                if plan.error is None and plan.post_action is not None:
                    acted.append((plan, target_id))
                if target_id is None:
                    continue
                if plan.assigned is not None and plan.source_id:
                    assigned[plan.source_id] = plan.assigned
                if plan.written is not None and plan.op is not None and plan.source_id and not plan.defer:
                    sealed.setdefault(plan.qualifier, {})[plan.source_id] = plan.written
                if plan.defer:
                    drop.append((plan.qualifier, target_id))
                elif plan.source_id and (plan.link or renamed(plan.target_id, target_id)):
                    add.append((plan.qualifier, plan.source_id, target_id))
                    if plan.link:
                        outcome = results.get(id(plan))
                        linked.append((plan, outcome.obj if outcome is not None else None, target_id))
            if not self.dry_run:
                self.qualifiers.remove_targets(conn, drop)
                self.qualifiers.add_links(conn, add, written=sealed)
                linking = {(q, s) for q, s, _ in add}
                for qualifier, found in sealed.items():
                    self.qualifiers.links(qualifier).set_written(
                        conn, {s: w for s, w in found.items() if (qualifier, s) not in linking})
                for qualifier, found in in_step.items():
                    self.qualifiers.links(qualifier).set_in_step(conn, found)
                if assigned and self.assessor.assignments is not None:
                    self.assessor.assignments.last_sync.record(conn, assigned)
            self.counters.links_created += len([p for p in plans if p.link and not p.error])
            self.runs.audit(conn, audit)
            if self.run_id is not None:
                self.runs.progress(self.run_id, "ACTIVE_LIVESYNC" if self.job == LIVESYNC_JOB else "ACTIVE",
                                   self._summary(), conn)
            if save is not None:
                save(conn)
        # A DELETE of a linked target is also its UNLINK: onUnlink once both are done.
        for plan in plans if not self.dry_run else ():
            if plan.op is not None and plan.op.kind == "delete" and id(plan) in results:
                plan.after_delete(self.mapping, self.counters)
        for plan, obj, target_id in linked if not self.dry_run and "onLink" in self.mapping.hooks else ():
            plan.after_link(self.mapping, self.counters, obj, target_id)
        for plan, target_id in acted if not self.dry_run else ():
            plan.after_action(self.mapping, self.counters, target_id, None)
        if not self.dry_run and isinstance(self.target, ManagedResource):
            self._push_on([r for p in plans if (r := results.get(id(p))) is not None])

    def _agreed_at(self, plan: Plan, result: WriteResult | None) -> str | None:
        """The managed revision at which ``plan``, done, leaves its two objects agreeing (``None``:
        none known). A managed source's object is now what its target holds, written or found
        equal. A managed target written from the source holds the source's change; it agrees
        with it as a whole only if it did before (a change of its own not yet pushed, made
        with implicit sync off, still waits for its replay) or is new."""
        if self._in_step == "source":
            # Linked only (found by correlation, not compared): nothing says the two agree.
            return revision(plan.source_obj) if plan.op is not None or plan.change == "unchanged" else None
        if self._in_step != "target" or result is None or not result.ok:
            return None
        if plan.target_obj is not None and self._agreed.get(plan.source_id or "") != revision(plan.target_obj):
            return None
        return revision(result.obj)

    def _push_on(self, results: Sequence[WriteResult]) -> None:
        """Carry the store's changes on through the managed type's other mappings, as implicit
        sync carries a change made through the API: never back to the system they came from
        (its own reverse mapping), so two mappings do not bounce a change between them."""
        if not self._onward_checked:
            self._onward_checked = True
            self._onward = OnwardPush.of(self.project, self.store, self.resources, self.mapping,
                                         note=f"carried on from {self.job} of {self.mapping.name}")
        if self._onward is not None:
            self._onward.after(results)

    def _outcome(self, plan: Plan, result: WriteResult | None, audit: list[dict[str, Any]]) -> str | None:
        """Count one plan and add its audit row; the target id to link or unlink, if done."""
        c = self.counters
        if plan.situation:
            c.assessed(plan.situation, plan.action, plan.qualifier)
        target_id = (result.id if result is not None and result.ok else None) or plan.target_id
        gone = result is not None and isinstance(result.error, NotFound)
        error = plan.error
        if error is None and result is not None and not result.ok and not gone:
            error = str(result.error)
        if error is None:
            error = plan.unlinked(self.mapping.target, target_id, result.obj if result is not None else None)
        row = plan.audit_row(self.run_id or "", self.mapping.name, target_id, self.dry_run)
        if error is not None:
            plan.error = error  # the plan failed: no postAction follows
            if plan.source_id:
                self.failed[plan.source_id] = error
            c.status["FAILURE"] += 1
            c.changes["failed"] += 1
            c.error(error, situation=plan.situation or None, source_id=plan.source_id, target_id=plan.target_id)
            audit.append(_keeping({**row, "status": "FAILURE", "message": error}, self._kept.get(plan.source_id or "")))
            return None
        c.status["SUCCESS"] += 1
        if gone and plan.op is not None and plan.op.kind == "update":
            c.changes["skipped"] += 1  # the target went away since it was read: the next read sees MISSING
            return None
        if plan.change:
            c.changes[plan.change] += 1
        elif plan.defer:
            c.changes["unlinked"] += 1
        if plan.audit or plan.defer:
            audit.append(row)
        return target_id

    def start(self) -> None:
        """Record this mapping's run, unless it is recorded already: one no lock names (the
        lock of a liveSync or a recon names theirs), so it records its process as owner."""
        if self.run_id is None:
            self.run_id = str(uuid.uuid4())
            self.runs.start(self.run_id, self.mapping.name, job=self.job, dry_run=self.dry_run,
                            summary=self._summary(), lockless=True)

    def _summary(self) -> dict[str, Any]:
        summary = self.counters.to_summary()
        if self.job == LIVESYNC_JOB:
            summary["liveSync"] = {"source": self.mapping.source, "method": self.method, "echoes": self.echoes,
                                   "note": self.note}
        else:
            summary["implicit"] = {"note": self.note}
        return summary

    def finish(self, state: str, message: str | None) -> dict[str, Any] | None:
        """End this mapping's run record (when it had one) as the liveSync run ended
        (``state``, ``message``); what the liveSync result lists of it."""
        if self._onward is not None:
            self.onward_runs = self._onward.finish(state if state in ("SUCCESS", "CANCELED") else "FAILED")
        if self.run_id is None:
            return None
        state = state if state in ("SUCCESS", "CANCELED") else "FAILED"
        if state == "SUCCESS" and self.counters.error_count and not self.counters.status["SUCCESS"]:
            state = "FAILED"
        self.counters.stage = "COMPLETED" if state == "SUCCESS" else f"COMPLETED_{state}"
        summary = self._summary()
        summary["duration"] = round((time.monotonic() - self.counters.started) * 1000)
        if self.onward_runs:
            summary["onward"] = self.onward_runs  # as a recon's: `idsync status RUN`, recon/ID, the console
        with contextlib.suppress(IdsyncError):
            self.runs.finish(self.run_id, state, self.counters.stage, summary,
                             message if state != "SUCCESS" else self.note)
        return {"mapping": self.mapping.name, "id": self.run_id, "state": state,
                "counts": {k: v for k, v in summary["changes"].items() if v},
                "echoes": self.echoes, "errors": self.counters.error_count}


class OnwardPush:
    """Carries one run's writes into a managed type on through the type's other mappings."""

    def __init__(self, project: Project, store: Store, resources: Resources, mapping: MappingDef,
                 mappings: Sequence[MappingDef], note: str) -> None:
        self._project, self._store, self._resources = project, store, resources
        self._mapping = mapping
        self.mappings = list(mappings)
        self._note = note  # the onward runs' summary says what they carried on
        self._appliers: dict[str, ChangeApplier] = {}
        # The mappings whose applier could not be made (the target could not be opened): the run
        # recording their failed objects, and its counts.
        self._unstarted: dict[str, tuple[str, Counters]] = {}
        source = resources.open(mapping.target)
        assert isinstance(source, ManagedResource)
        self._reader = source.as_sync_source()  # as a push reads its source: hashed secrets, onRetrieve

    @classmethod
    def of(cls, project: Project, store: Store, resources: Resources, mapping: MappingDef, *,
           note: str) -> OnwardPush | None:
        """The onward push of ``mapping``'s writes, or None when its target is not a managed
        type that another mapping (``enableSync`` on) takes elsewhere than the recon's source."""
        if not mapping.target.startswith("managed/"):
            return None
        pusher = ImplicitSync(project, store, resources)
        pusher.tell_disabled(mapping.target)  # a mapping to a disabled system is left out, said once
        onward = [m for m in pusher.mappings(mapping.target) if m.target != mapping.source and m.name != mapping.name]
        return cls(project, store, resources, mapping, onward, note) if onward else None

    def after(self, results: Sequence[WriteResult]) -> None:
        """Carry on the objects ``results`` wrote (a committed page's creates, updates and
        deletes)."""
        done = [r for r in results if r.ok and r.id is not None and r.op is not None]
        if not done:
            return
        kept = [r.id for r in done if r.op.kind != "delete" and r.id is not None]
        stored = self._reader.get_many(kept) if kept else {}
        changes: list[Change] = []
        befores: dict[str, Obj] = {}
        for r in done:
            assert r.id is not None
            if r.op.kind == "delete":
                changes.append(Change(r.id, None))
            elif (obj := stored.get(r.id)) is not None:  # gone since: its delete is carried on by its writer
                changes.append(Change(r.id, obj))
                if r.op.before is not None:
                    befores[r.id] = r.op.before
        for m in self.mappings:
            self._apply(m, changes, befores)

    def _apply(self, mapping: MappingDef, changes: list[Change], befores: dict[str, Obj]) -> None:
        compared, kept = self._baselines(mapping, changes, befores)
        try:
            applier = self._applier(mapping)
            applier.compare_with(compared, kept)
            applier.apply(changes, None)
        except IdsyncError as exc:
            # The target could not be opened or refused the batch as a whole (maxDeletes):
            # each object's push failed, and ``idsync sync retry`` takes them up again.
            self._fail(mapping, changes, str(exc), kept)

    def _baselines(self, mapping: MappingDef, changes: list[Change], befores: dict[str, Obj],
                   ) -> tuple[dict[str, Obj], dict[str, Obj]]:
        """What each change's "merge" lists are compared with through ``mapping``, and what
        its failure keeps for ``idsync sync retry``, as a single push decides (``merge_baseline``):
        a change while an earlier one has not arrived compares with the object before that one."""
        changes_only = self._project.reverse_of(mapping) is not None
        if not (changes_only or mapping.properties.has_merge()):
            return befores, {}
        secrets = self._project.secret_properties(mapping)
        # The page's objects only: the onward run's own entries grow with the recon.
        pending = failed_among(self._store, mapping.name, [c.id for c in changes])
        compared: dict[str, Obj] = {}
        kept: dict[str, Obj] = {}
        for change in changes:
            base, keep = merge_baseline(self._store, mapping, change.id, change.obj, befores.get(change.id), secrets,
                                        pending, changes_only=changes_only)
            if base is not None:
                compared[change.id] = base
            if keep is not None:
                kept[change.id] = keep
        return compared, kept

    def _applier(self, mapping: MappingDef) -> ChangeApplier:
        applier = self._appliers.get(mapping.name)
        if applier is None:
            applier = ChangeApplier(self._project, self._store, mapping, self._resources, dry_run=False,
                                    method="recon", note=self._note,
                                    job=IMPLICIT_JOB)
            self._appliers[mapping.name] = applier
        return applier

    def _fail(self, mapping: MappingDef, changes: Sequence[Change], error: str, kept: Mapping[str, Obj]) -> None:
        """Audit every object of ``changes`` as failed through ``mapping``, in its onward run
        (one is started when the applier could not be)."""
        log.warning("onward.push_failed", onward=mapping.name, objects=len(changes), error=error)
        applier = self._appliers.get(mapping.name)
        runs = RunStore(self._store)
        if applier is not None:
            applier.start()
            assert applier.run_id is not None
            run_id, counters = applier.run_id, applier.counters
        else:
            if mapping.name not in self._unstarted:
                started = str(uuid.uuid4())
                fresh = Counters(mapping.name, mapping.source, mapping.target)
                runs.start(started, mapping.name, job=IMPLICIT_JOB, dry_run=False, summary=fresh.to_summary(),
                           lockless=True)
                self._unstarted[mapping.name] = (started, fresh)
            run_id, counters = self._unstarted[mapping.name]
        rows = [_keeping({"run_id": run_id, "mapping": mapping.name, "situation": None, "action": None,
                          "source_id": c.id, "target_id": None, "status": "FAILURE", "message": error,
                          "changes": None, "link_qualifier": "default"}, kept.get(c.id)) for c in changes]
        with self._store.begin() as conn:
            runs.audit(conn, rows)
        counters.source_processed += len(changes)
        counters.status["FAILURE"] += len(changes)
        counters.changes["failed"] += len(changes)
        counters.error(error)

    def finish(self, state: str) -> list[dict[str, Any]]:
        """End the onward runs as the recon ended (``state``); one whose every object failed
        ends FAILED. What each did, as a liveSync result lists its runs (the recon's summary
        and the liveSync result list them under ``onward``)."""
        done: list[dict[str, Any]] = []
        for applier in self._appliers.values():
            run = applier.finish(state, f"{self._note}: ended {state}")
            if run is not None:
                done.append({k: v for k, v in run.items() if k != "echoes"})
        runs = RunStore(self._store)
        for name, (run_id, counters) in self._unstarted.items():
            counters.stage = "COMPLETED_FAILED"
            summary = counters.to_summary()
            summary["implicit"] = {"note": self._note}
            with contextlib.suppress(IdsyncError):  # the store gone: the run is failed as abandoned later
                runs.finish(run_id, "FAILED", counters.stage, summary,
                            counters.errors[0]["message"] if counters.errors else None)
            done.append({"mapping": name, "id": run_id, "state": "FAILED",
                         "counts": {k: v for k, v in summary["changes"].items() if v},
                         "errors": counters.error_count})
        return done


def _settled(plan: Plan) -> bool:
    """Whether ``plan`` leaves everything as it is: no write, link or unlink, no failure, no
    postAction, nothing skipped; its target holds what the mapping makes of the source."""
    return plan.op is None and not plan.link and not plan.defer and plan.error is None and not plan.retry \
        and plan.post_action is None and plan.change in (None, "unchanged")


def _no_id(change: Change) -> str:
    """The failure of a changed object the source answered without an id, as a recon words it."""
    return f"a source object has no _id ({change.about or 'nothing else is known of it'}); the object was skipped"


def _keeping(row: dict[str, Any], before: Obj | None) -> dict[str, Any]:
    """A failure's audit row keeping ``before`` for the push that repairs it (``AUDIT_BEFORE``)."""
    if before is not None:
        row["changes"] = {**(row["changes"] or {}), AUDIT_BEFORE: before}
    return row


def _shown(limit: int | float | None) -> str:
    return f"{limit:.0%} of the target" if isinstance(limit, float) else str(limit)


def _reverse_assessor(project: Project, mapping: MappingDef, counters: Counters) -> Assessor | None:
    """The assessor of the mapping writing the other way over the same links, if any."""
    other = project.reverse_of(mapping)
    return Assessor(other, ReconOptions(dry_run=True), counters, secrets=project.secret_properties(other)) \
        if other is not None else None
