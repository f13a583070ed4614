"""Deciding what to do with each object of a page: situation, action, change.

Everything needed (links, linked targets, correlation candidates) has been
fetched for the whole page before ``Assessor`` sees it; the Assessor only
computes. Its output is a list of ``Plan``: what would be written, linked,
deferred or reported, with a human message, which ``recon.py`` then carries
out (or, in a dry run, the resources simulate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idsync.config.managed import ManagedType
from idsync.config.mappings import MappingDef
from idsync.config.policies import Situation
from idsync.config.properties import diff
from idsync.errors import IdsyncError, ScriptError
from idsync.query import matches
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Present
from idsync.resource import UNREADABLE, Obj, Resource, WriteOp, renamed
from idsync.scripts import Script, kind_of
from idsync.store.links import LinkSet
from idsync.store.passwords import is_one_way, same_secret
from idsync.sync.assignments import Assignments
from idsync.sync.correlation import PlannedTargets
from idsync.sync.digests import TargetDigests
from idsync.sync.mapping_hooks import hook_variables, run_hook
from idsync.sync.situations import assess_source, assess_source_deleted, assess_target
from idsync.sync.system_ids import unfit_id
from idsync.sync.written import WrittenValues

if TYPE_CHECKING:
    from idsync.sync.correlation import Correlator
    from idsync.sync.options import ReconOptions
    from idsync.sync.summary import Counters

__all__ = ["FORCED_ACTIONS", "SECRET_NAMES", "Assessor", "Forced", "Plan", "SituationChanged"]

SECRET_NAMES = frozenset({"password", "userpassword", "credentials", "secret", "clientsecret", "unicodepwd"})
_MASK = "********"
_SCALAR_TYPES = frozenset({"string", "number", "integer", "boolean"})
_NODES = (Compare, Present, And, Or, Not, Literal_)


@dataclass
class Plan:
    situation: str
    action: str
    source_id: str | None
    target_id: str | None
    op: WriteOp | None = None
    link: bool = False
    defer: bool = False
    change: str | None = None  # created, updated, unchanged, skipped
    error: str | None = None
    audit: bool = False
    changes: dict[str, Any] | None = None
    message: str = ""
    post_action: Script | None = None
    source_phase: bool = True
    # Targets this source correlated to without being linked (AMBIGUOUS): they belong
    # to a live source, so the target phase must not take them for orphans.
    candidates: tuple[str, ...] = ()
    # An unlinked source whose correlation or assessment failed: it may own a target
    # nothing claims, so the run's target phase must not delete or unlink.
    unresolved: bool = False
    # A source whose correlation matches a target created earlier in the same batch:
    # assessed again once that create is written, as it would be in a later page.
    retry: bool = False
    # The link qualifier this plan was assessed for: its link, its situation, its target.
    qualifier: str = "default"
    # The digest of the projected target (``digests.py``), the projection, and the
    # target's revision when no write is planned: what the link keeps once done.
    digest: str | None = None
    projected: Obj | None = None
    rev: str | None = None
    # The role assignments to record as applied once the plan is done (``assignments.py``).
    assigned: list[Obj] | None = None
    # The digest of the write-only values the target holds once the plan is done, when the
    # link must keep a new one (``written.py``).
    written: str | None = None
    # The source and target objects as assessed, for the mapping's hooks (``mapping_hooks.py``).
    source_obj: Obj | None = None
    target_obj: Obj | None = None
    # A DELETE of a linked target: its link goes too, and onUnlink runs once the target
    # is deleted, as PingIDM's DELETE falls through to its UNLINK.
    unlinks: bool = False

    def before_unlink(self, mapping: MappingDef, counters: Counters) -> None:
        """The mapping's onDelete (the plan deletes its target) or onUnlink, run before."""
        if not self.defer or not self.target_id or self.error is not None:
            return
        run_hook(mapping, "onDelete" if self.op is not None and self.op.kind == "delete" else "onUnlink", counters,
                 source=self.source_obj or ({"_id": self.source_id} if self.source_id else None),
                 target=self.target_obj or {"_id": self.target_id}, situation=self.situation,
                 qualifier=self.qualifier)

    def after_delete(self, mapping: MappingDef, counters: Counters) -> None:
        """The mapping's onUnlink, once the plan's DELETE of a linked target is done."""
        if not self.unlinks or self.error is not None:
            return
        run_hook(mapping, "onUnlink", counters,
                 source=self.source_obj or ({"_id": self.source_id} if self.source_id else None),
                 target=self.target_obj or {"_id": self.target_id}, situation=self.situation,
                 qualifier=self.qualifier)

    def after_link(self, mapping: MappingDef, counters: Counters, written: Obj | None, target_id: str) -> None:
        """The mapping's onLink, once the plan's link is stored: given the target as written
        (a create, an update) or as assessed."""
        run_hook(mapping, "onLink", counters, source=self.source_obj or {"_id": self.source_id},
                 target={**(written or self.target_obj or {}), "_id": target_id}, situation=self.situation,
                 qualifier=self.qualifier)

    def after_action(self, mapping: MappingDef, counters: Counters, target_id: str | None,
                     recon_id: str | None) -> None:
        """The policy's ``postAction``, once the plan's action is done: given the ids, what
        was decided, and the recon's id (``None`` outside a recon, as in PingIDM)."""
        if self.post_action is None:
            return
        try:
            self.post_action(source={"_id": self.source_id} if self.source_id else None,
                             target={"_id": target_id} if target_id else None, situation=self.situation,
                             action=self.action, sourceAction=self.source_phase, reconId=recon_id,
                             linkQualifier=self.qualifier, mapping=mapping.name)
        except IdsyncError as exc:
            counters.error(f"postAction script failed: {exc}", situation=self.situation, source_id=self.source_id,
                           target_id=target_id)

    def unlinked(self, target: str, target_id: str | None, written: Obj | None) -> str | None:
        """Why a plan is not done although nothing failed: it must link its source (or
        move its link to a target the write renamed), and there is no target id to link
        to (the target's id attribute could not be read, after a create or on the target
        found), or one no link can hold (``system_ids.py``: a peer answering a create with
        an id over ``KEY_LENGTH`` characters). ``None`` when nothing is missing."""
        if not self.source_id or not (self.link or renamed(self.target_id, target_id)):
            return None
        created = self.op is not None and self.op.kind == "create"
        if target_id:
            return unfit_id("target", target_id, f"{self.action or 'the write'} {target}: "
                            f"{'created' if created else 'written'}, but not linked to its source")
        if created:
            where = f" {written['dn']}" if written and written.get("dn") else ""
            return (f"CREATE {target}{where}: created, but its id could not be read back, so it was not "
                    "linked to its source (is the id attribute readable?)")
        return (f"{self.situation}: the {target} object found has no id, so it cannot be linked to its source "
                "(is the id attribute readable?)")

    def audit_row(self, run_id: str, mapping: str, target_id: str | None, dry_run: bool) -> dict[str, Any]:
        return {"run_id": run_id, "mapping": mapping, "situation": self.situation or None,
                "action": self.action or None,
                "source_id": self.source_id, "target_id": target_id or self.target_id,
                "status": "DRY_RUN" if dry_run else "SUCCESS", "message": self.message or None,
                "changes": self.changes, "link_qualifier": self.qualifier,
                # The targets a correlation found when it found several (AMBIGUOUS, or UNQUALIFIED).
                "ambiguous": list(self.candidates) or None}


FORCED_ACTIONS = ("CREATE", "UPDATE", "DELETE", "LINK", "UNLINK", "EXCEPTION", "IGNORE", "REPORT", "NOREPORT",
                  "ASYNC")


class SituationChanged(IdsyncError):
    """The object's situation is not the one the caller expected (``Forced.situation``)."""


@dataclass(frozen=True)
class Forced:
    """An action chosen by hand for one object (PingIDM's ``performAction``), taken
    whatever the mapping's policies say; ``situation``, when given, is the situation the
    caller saw, and the action is refused (``SituationChanged``) if the object is no
    longer in it."""

    action: str
    situation: str | None = None

    def action_for(self, situation: Situation) -> str:
        if self.situation is not None and self.situation != str(situation):
            raise SituationChanged(f"Expected situation does not match. Expected: {self.situation}, "
                                   f"Found: {situation}")
        return self.action


@dataclass
class Assessor:
    mapping: MappingDef
    options: ReconOptions
    counters: Counters
    secrets: frozenset[str] = field(default_factory=frozenset)
    # Implicit sync only: each source's value before the change, for "merge" lists.
    previous: Mapping[str, Obj] = field(default_factory=dict)
    # Whether ``previous`` is PingIDM's ``oldSource`` (implicit sync), given to property
    # conditions and ``onUpdate`` when a target is updated; a recon's is not (PingIDM's
    # ``oldSource`` is undefined in recons and liveSync).
    old_source: bool = False
    # A managed target's type: its single-valued properties never take several values.
    target_schema: ManagedType | None = None
    # The role assignments naming this mapping (``assignments.py``), applied after the property rules.
    assignments: Assignments | None = None
    # The target's properties that take a secret in clear only (``Resource.clear_secrets``).
    clear_only: frozenset[str] = frozenset()
    # The write-only properties this mapping writes (``written.py``), and per source id the
    # digest its link keeps of what was last written to them (``keep_written``).
    written: WrittenValues | None = None
    kept_written: Mapping[str, str] = field(default_factory=dict)
    # An action given by hand (``Forced``: PingIDM's ``performAction``) in place of the policies'.
    forced: Forced | None = None
    # The writes the target's system denies (``Resource.denied``): one whose ``onDeny`` is
    # DO_NOTHING is not planned but skipped; any other fails at the write.
    denied: Mapping[str, str] = field(default_factory=dict)
    # How the target's system stores a projection (``Resource.stored``): what an update
    # compares with the target read, so a value the system keeps as a type of its own
    # (text into an integer column) is no change once written.
    stored: Callable[[Obj], Obj] | None = None
    # The recon this assessor's plans are part of (``None``: implicit sync, liveSync),
    # for an action script's ``recon.actionParam.reconId``.
    recon_id: str | None = None
    # A push of a change (implicit sync, its onward pushes) through a mapping whose target
    # also syncs into its source: an update of a target that agreed with the source before
    # the change (``agreed``: source id -> the managed revision its link's two objects last
    # agreed at, ``links.in_step``) writes only what the change moved (``previous`` to the
    # source as it is), never a target value the change left alone, which is then a change
    # of the target's that the other mapping has not carried back yet.
    changes_only: bool = False
    agreed: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        o, m = self.options, self.mapping
        self.single_valued = {p.name: p.type for p in self.target_schema.properties.values()
                              if _SCALAR_TYPES.issuperset((p.type, *p.also))} if self.target_schema is not None else {}
        self.allow_create = m.allow_create if o.allow_create is None else o.allow_create
        self.allow_update = m.allow_update if o.allow_update is None else o.allow_update
        self.allow_delete = m.allow_delete if o.allow_delete is None else o.allow_delete
        self.unordered = m.target.startswith("system/")
        self.secret_names = SECRET_NAMES | {s.lower() for s in self.secrets}
        # The mapped properties an audit shows as they are (no secret, not the store's own):
        # most projections have no other, and are shown without a look at each name.
        self._shown_as_is = frozenset(name for name in m.properties.target_fields()
                                      if name.lower() not in self.secret_names and not name.startswith("_"))
        stored_secrets = {s.lower() for s in self.target_schema.secrets} if self.target_schema is not None else set()
        self.digests = TargetDigests.of(m, managed_target=self.target_schema is not None and not self.previous,
                                        single_valued=self.single_valued,
                                        secret_names=self.secret_names | stored_secrets)

    # -- source phase -------------------------------------------------------

    def unchanged(self, objs: Sequence[Obj], links: Mapping[str, tuple[str, str | None]],
                  revisions: Mapping[str, str], qualifier: str = "default") -> dict[str, str]:
        """source id -> linked target id, for the sources of ``objs`` whose link's digest says
        the target is unchanged (``digests.py``): ``links`` source id -> (target id, digest),
        ``revisions`` target id -> its current revision."""
        found: dict[str, str] = {}
        if not self.digests.enabled:
            return found
        for s in objs:
            sid = s["_id"]
            tid, kept = links.get(sid, ("", None))
            rev = revisions.get(tid)
            if kept is None or rev is None or UNREADABLE in s:
                continue
            try:
                if not self.qualifies(s, qualifier) or self._assigning(s):
                    continue  # an assignment applied or taken away is assessed in full
                digest = self.digests.projection(self.project(s, None, qualifier), qualifier)
            except IdsyncError:
                continue  # assessed in full, which records the failure
            if digest is not None and TargetDigests.kept(digest, rev) == kept:
                found[sid] = tid
        return found

    def assess_sources(self, objs: Sequence[Obj], linked: Mapping[str, str], targets: Mapping[str, Obj],
                       correlator: Correlator | None, links: LinkSet, source: Resource | None = None,
                       unchanged: Mapping[str, str] | None = None,
                       simulated: Sequence[tuple[str | None, Obj]] = ()) -> list[Plan]:
        """The plans of ``objs`` for the link qualifier of ``links`` (one plan per object);
        ``unchanged`` (from ``unchanged``): the sources whose target need not be read, which
        get no plan: each is CONFIRMED, UPDATE, unchanged, and the caller counts them so.
        ``simulated``: the creates a dry run answered for an earlier batch of the page, as
        (the source linked to it or ``None``, the target with its id): nothing was written,
        so correlation finds them here, as the real run's correlation finds them written."""
        plans: list[Plan] = []
        qualified: dict[str, bool] = {}
        projections: dict[str, Obj] = {}
        q = links.qualifier

        def projected(s: Obj) -> Obj:
            if s["_id"] not in projections:
                projections[s["_id"]] = self.project(s, None, q)
            return projections[s["_id"]]

        # A failure below leaves the object without a situation: it is an error of that
        # object, and (unlinked) a source that might own any unclaimed target.
        unchanged = unchanged or {}
        for s in objs:
            if s["_id"] in unchanged:
                qualified[s["_id"]] = True
                continue
            why = s.get(UNREADABLE)
            if why is not None:
                # Its id was read, so the object is known (its link claims its target); not
                # what it holds, so nothing is decided for it.
                plans.append(Plan("", "", s["_id"], linked.get(s["_id"]), unresolved=s["_id"] not in linked,
                                  error=f"the source object could not be read: {why}", qualifier=q))
                continue
            try:
                qualified[s["_id"]] = self.qualifies(s, q)
            except IdsyncError as exc:
                plans.append(Plan("", "", s["_id"], linked.get(s["_id"]), unresolved=s["_id"] not in linked,
                                  error=f"validSource/sourceCondition failed: {exc}", qualifier=q))
        # Unqualified sources are correlated too, as PingIDM does: one that finds a target is
        # UNQUALIFIED (not SOURCE_IGNORED) and claims it, so the target phase leaves it alone.
        to_correlate = [s for s in objs if s["_id"] in qualified and s["_id"] not in linked]
        candidates: dict[str, Any] = {}
        queries: Mapping[str, Node] = {}
        if correlator is not None and to_correlate:
            candidates, queries = correlator.correlate(to_correlate, projected)
        for sid, node in queries.items() if simulated else ():
            found = candidates.get(sid)
            if isinstance(found, list):
                candidates[sid] = found + [t for _, t in simulated if matches(node, t, ignore_case=True)]
        singles = [c[0]["_id"] for c in candidates.values() if isinstance(c, list) and len(c) == 1]
        owners = dict(links.sources_of(singles)) if singles else {}
        if source is not None and source.renames_ids:
            owners = dict(_live_owners(owners, source, {s["_id"] for s in objs}))
        owners.update({t["_id"]: owner for owner, t in simulated if owner is not None})
        creating = PlannedTargets()  # what this batch creates, in order: later sources must find it
        for s in objs:
            sid = s["_id"]
            if sid not in qualified:
                continue
            if sid in unchanged:
                continue  # what reading and comparing the target would conclude (``digests.py``)
            query = queries.get(sid)
            if query is not None and creating.matched_by(query):
                plans.append(Plan("", "", sid, None, retry=True, qualifier=q))
                continue
            try:
                plan = self._source_plan(s, qualified[sid], linked.get(sid), targets, candidates.get(sid), owners, q)
            except IdsyncError as exc:
                plan = Plan("", "", sid, linked.get(sid), unresolved=sid not in linked, error=str(exc), qualifier=q)
            if plan.op is not None and plan.op.kind == "create":
                creating.add(plan.op.values)
            elif plan.link and plan.target_id:
                # A later source of the page correlating to this target finds it linked, as it
                # would once this page is written (FOUND_ALREADY_LINKED), not free.
                owners.setdefault(plan.target_id, sid)
            plans.append(self._recording(plan, s))
        return plans

    def prefetch(self, ids: Sequence[str]) -> None:
        """Read what the assignments of a page of sources need at once (``assignments.py``)."""
        if self.assignments is not None:
            self.assignments.prefetch(ids)

    def _assigning(self, s: Obj) -> bool:
        return self.assignments is not None and self.assignments.to_record(s) is not None

    def _recording(self, plan: Plan, s: Obj | None) -> Plan:
        """``plan`` marked with the assignments to record once it is done: those a CREATE,
        UPDATE or LINK leaves applied, as PingIDM's ``postMapping`` records them."""
        if self.assignments is not None and s is not None and plan.error is None and plan.change != "skipped" \
                and plan.action in ("CREATE", "UPDATE", "LINK"):
            plan.assigned = self.assignments.to_record(s)
        return plan

    def _source_plan(self, s: Obj, qualifies: bool, tid: str | None, targets: Mapping[str, Obj],
                     found: Any, owners: Mapping[str, str], qualifier: str) -> Plan:
        sid = s["_id"]
        if isinstance(found, IdsyncError):
            if qualifies:
                return Plan("", "", sid, None, unresolved=True, error=f"correlation failed: {found}",
                            qualifier=qualifier)
            # A source the mapping turns away whose correlation cannot be made (the transforms it
            # runs refuse what validSource keeps out) finds nothing: SOURCE_IGNORED, as such a
            # source was before unqualified sources were correlated, not a failure of the run.
            found = []
        cands: list[Obj] = found or []
        target = targets.get(tid) if tid else None
        already = len(cands) == 1 and owners.get(cands[0]["_id"], sid) != sid
        situation = assess_source(qualifies=qualifies, link_exists=tid is not None, target_found=target is not None,
                                  correlated=len(cands), correlated_already_linked=already)
        current = target if target is not None else (cands[0] if len(cands) == 1 else None)
        context = {"source": s, "target": current, "linkQualifier": qualifier}
        action, post = self._decide(situation, context,
                                    ambiguous=[c["_id"] for c in cands] if len(cands) > 1 else None)
        plan = Plan(str(situation), action, sid, tid or (current or {}).get("_id"), post_action=post,
                    candidates=tuple(c["_id"] for c in cands) if len(cands) > 1 else (), qualifier=qualifier,
                    source_obj=s, target_obj=current)
        return self._plan_action(plan, s, current, linked=tid is not None, candidates=len(cands))

    # -- target phase -------------------------------------------------------

    def assess_targets(self, unclaimed: Sequence[Obj], sources_of: Mapping[str, str],
                       sources: Mapping[str, Obj], qualifier: str = "default") -> list[Plan]:
        plans: list[Plan] = []
        q = qualifier
        for t in unclaimed:
            tid = t["_id"]
            sid = sources_of.get(tid)
            src = sources.get(sid) if sid else None
            try:
                target_ok = self._valid(self.mapping.valid_target, {"target": t, "object": t}, q) \
                    if self.mapping.valid_target else True
                source_ok = self.qualifies(src, q) if src is not None else False
                situation = assess_target(target_qualifies=target_ok, link_exists=sid is not None,
                                          source_found=src is not None, source_qualifies=source_ok)
                action, post = self._decide(situation, {"source": src, "target": t, "linkQualifier": q},
                                            source_phase=False)
                plan = Plan(str(situation), action, sid, tid, post_action=post, source_phase=False, qualifier=q,
                            source_obj=src, target_obj=t)
                plans.append(self._recording(self._plan_action(plan, src, t, linked=sid is not None, candidates=0),
                                             src))
            except IdsyncError as exc:
                plans.append(Plan("UNASSIGNED", "EXCEPTION", sid, tid, error=str(exc), qualifier=q))
        return plans

    # -- deletion events (implicit sync, liveSync) ----------------------------

    def plan_deleted(self, source_id: str, tid: str | None, found: Obj | None, qualifier: str = "default") -> Plan:
        """The plan for a source object that was deleted: ``tid`` its linked target's id
        (through the link of ``qualifier``), ``found`` that target as read (``None``: gone).
        ``defer`` marks a link that must go."""
        try:
            situation = assess_source_deleted(
                link_exists=tid is not None, target_found=found is not None,
                target_qualifies=found is not None and self.valid_target(found, qualifier))
            action, post = self._decide(situation, {"source": None, "target": found, "linkQualifier": qualifier})
        except IdsyncError as exc:
            # A validTarget or policy script that fails fails this object's delete, not the
            # run: the link stays, and the change is kept for a retry.
            situation = assess_source_deleted(link_exists=tid is not None, target_found=found is not None,
                                              target_qualifies=True)
            return Plan(str(situation), "EXCEPTION", source_id, tid, error=str(exc), qualifier=qualifier,
                        target_obj=found)
        plan = Plan(str(situation), action, source_id, tid, audit=True, qualifier=qualifier, target_obj=found,
                    post_action=post)
        if action == "DELETE" and found is not None and tid:
            if not self.allow_delete:
                plan.change, plan.message = "skipped", "delete skipped: deletes are switched off"
            elif not self._left_undone(plan, "delete"):
                plan.op, plan.change = WriteOp("delete", id=tid), "deleted"
                plan.message = f"DELETE {self.mapping.target}/{tid}"
                plan.unlinks = True
        elif action == "EXCEPTION":
            plan.error = f"{situation}: policy says EXCEPTION"
        # A link to a source that is gone is never useful, whatever the policy.
        plan.defer = tid is not None and plan.change != "skipped"
        return plan

    # -- shared -------------------------------------------------------------

    def _plan_action(self, plan: Plan, s: Obj | None, current: Obj | None, *, linked: bool,
                     candidates: int) -> Plan:
        action, m = plan.action, self.mapping
        plan.audit = plan.situation != "CONFIRMED"
        if action == "CREATE":
            if s is None or current is not None:
                plan.error = f"{plan.situation}: CREATE is not possible here (no source, or the target exists)"
                return plan
            if not self.allow_create:
                plan.change, plan.message = "skipped", "create skipped: creates are switched off"
                return plan
            if self._left_undone(plan, "create"):
                return plan
            target = self.project(s, None, plan.qualifier)
            plan.digest, plan.projected = self.digests.projection(target, plan.qualifier), target
            if "onCreate" in m.hooks:
                target = self._hook_target(m.hooks["onCreate"], {"source": s, "target": target,
                                                                 "situation": plan.situation,
                                                                 "linkQualifier": plan.qualifier})
            if self._several_values(plan, target):
                return plan
            target = self._hashes_left_out(target)
            if self.written is not None:
                plan.written = self.written.sealed(target, plan.qualifier)
            plan.op, plan.link, plan.change = WriteOp("create", values=target), m.enable_linking, "created"
            plan.changes = self._mask(target)
            plan.message = f"CREATE {m.target}"
        elif action == "UPDATE":
            if s is None or current is None:
                plan.error = f"{plan.situation}: UPDATE needs both a source and a target"
                return plan
            if not current.get("_id"):
                plan.error = (f"{plan.situation}: the {m.target} object found has no id, so it can be neither "
                              "updated nor linked (is the id attribute readable?)")
                return plan
            before = self.previous.get(s["_id"])
            old_source = before if self.old_source else None
            target = self.project(s, current, plan.qualifier, old_source)
            if self._several_values(plan, target):
                return plan
            was = self.project(before, current, plan.qualifier) if before else None
            left = self._left_alone(target, was, before)
            target = m.properties.merge_lists(target, current, was)
            if self.stored is not None:
                target = self.stored(target)
            changes = self._hashes_left_out(self._secrets_kept(diff(target, current, unordered=self.unordered),
                                                               current))
            changes = self._written_left_out(plan, changes, current, target)
            changes = {k: v for k, v in changes.items() if k not in left}
            plan.link = not linked and m.enable_linking
            plan.digest, plan.projected = self.digests.projection(target, plan.qualifier), target
            if "onUpdate" in m.hooks and self.allow_update and self.denied.get("update") != "DO_NOTHING":
                # As in PingIDM, onUpdate runs on every UPDATE, before the target is compared: a
                # script may set what no property rule maps, or act on a source attribute no rule
                # reads (OpenIDM's historicalaccountlinking records an account's state so).
                hooked = self._hook_target(m.hooks["onUpdate"], {
                    "source": s, "target": {**current, **target}, "oldTarget": current,
                    "situation": plan.situation, "linkQualifier": plan.qualifier,
                    **({"oldSource": old_source} if old_source is not None else {})})
                if self.stored is not None:
                    hooked = self.stored(hooked)
                changes = self._hashes_left_out(self._secrets_kept(
                    diff({k: hooked.get(k) for k in set(hooked) - {"_id", "_rev"}}, current,
                         unordered=self.unordered), current))
                changes = self._written_left_out(plan, changes, current, hooked)
                # What the script itself set is written; a value it left as projected is not.
                changes = {k: v for k, v in changes.items() if k not in left or hooked.get(k) != target.get(k)}
            if not changes:
                plan.change, plan.rev = "unchanged", current.get("_rev")
                plan.audit = plan.audit or plan.link
            elif not self.allow_update:
                plan.change, plan.audit = "skipped", True
                plan.message = "update skipped: updates are switched off"
            elif self._left_undone(plan, "update"):
                pass
            else:
                plan.op = WriteOp("update", id=current["_id"], values=changes, before=current,
                                  rev=current.get("_rev"))
                plan.change, plan.audit = "updated", True
                plan.changes = self._mask(changes)
                plan.message = f"UPDATE {m.target}/{current['_id']}: {', '.join(sorted(changes))}"
        elif action == "LINK":
            if current is None or s is None:
                plan.error = f"{plan.situation}: LINK needs a source and a target"
            else:
                plan.link, plan.audit = not linked and m.enable_linking, True
        elif action in ("DELETE", "UNLINK"):
            if not self.allow_delete:
                # The kill switch covers unlinks too: either one loses what ties the objects.
                plan.change, plan.audit = "skipped", True
                plan.message = f"{action.lower()} skipped: deletes are switched off"
                return plan
            if action == "DELETE" and current is None:
                # PingIDM's DELETE does nothing without a target (UNQUALIFIED: of several found).
                plan.error = None if plan.situation in ("MISSING", "ALL_GONE", "UNQUALIFIED") else \
                    f"{plan.situation}: nothing to delete"
                plan.defer = linked
                plan.action = "UNLINK" if linked else action
                return plan
            if action == "DELETE" and not self.allow_delete:
                plan.change, plan.audit = "skipped", True
                plan.message = "delete skipped: deletes are switched off"
                return plan
            if action == "DELETE" and self._left_undone(plan, "delete"):
                return plan
            plan.defer = action == "DELETE" or linked
            plan.unlinks = action == "DELETE" and linked
            plan.message = f"{action} {m.target}/{plan.target_id}"
        elif action == "EXCEPTION":
            plan.error = _exception_message(plan.situation, candidates)
        elif action == "REPORT":
            plan.audit = True
        else:  # IGNORE, NOREPORT, ASYNC
            plan.audit = False
        return plan

    def _left_alone(self, target: Obj, was: Obj | None, before: Obj | None) -> frozenset[str]:
        """Under ``changes_only``, the properties of the projection ``target`` that the change
        did not move (``was``: the projection of ``before``, the source before it), where the
        link's two objects agreed at ``before``'s revision: an update leaves them as the target
        has them. A target that did not agree (found by correlation and only linked, or
        changed by a push that failed) is updated whole. Secrets and write-only values are
        judged as ever (the target does not show them; their digests say what was written)."""
        if not self.changes_only or was is None or before is None:
            return frozenset()
        agreed = self.agreed.get(before.get("_id", ""))
        if agreed is None or agreed != before.get("_rev"):
            return frozenset()
        moved = diff(target, was, unordered=self.unordered).keys()
        written = self.written.names if self.written is not None else frozenset()
        return frozenset(k for k in target if k not in moved and k not in written
                         and k.lower() not in self.secret_names and k not in self.clear_only)

    def _left_undone(self, plan: Plan, kind: str) -> bool:
        """Whether the target's system denies writes of ``kind`` and says to do nothing then
        (``operationOptions``): the plan is then skipped, saying why."""
        if self.denied.get(kind) != "DO_NOTHING":
            return False
        plan.change, plan.audit = "skipped", True
        plan.message = (f"{kind} skipped: {self.mapping.target}'s provisioner denies it (operationOptions."
                        f"{kind.upper()}.denied, onDeny DO_NOTHING)")
        return True

    def _several_values(self, plan: Plan, target: Obj) -> bool:
        """Refuse (``plan.error``) a target giving several values to a single-valued property."""
        problems = self.mapping.properties.several_values(target, self.single_valued)
        if problems:
            plan.error = f"{self.mapping.target}: {'; '.join(problems)}; nothing was written"
        return bool(problems)

    def qualifies(self, s: Obj, qualifier: str = "default") -> bool:
        m = self.mapping
        if m.valid_source is not None and not self._valid(m.valid_source, {"source": s, "object": s}, qualifier):
            return False
        cond = m.source_condition
        if cond is None:
            return True
        if isinstance(cond, Script):
            return cond(source=s, object=s, linkQualifier=qualifier) is True
        return matches(cond, {"source": s, "object": s, "linkQualifier": qualifier, **s})

    def project(self, s: Obj, existing: Obj | None, qualifier: str = "default", old_source: Obj | None = None) -> Obj:
        target = self.mapping.properties.project(
            s, existing, run_transform=_run_transform, eval_condition=_eval_condition, link_qualifier=qualifier,
            old_source=old_source)
        if self.assignments is None:
            return target
        return self.assignments.apply(target, existing, s, self.previous.get(s.get("_id", "")), qualifier)

    def decide(self, situation: Situation, context: dict[str, Any]) -> str:
        """The action the mapping's policies give ``situation`` (implicit sync's deletes)."""
        return self._decide(situation, context)[0]

    def valid_target(self, target: Obj, qualifier: str = "default") -> bool:
        """Whether ``target`` passes ``validTarget`` (true when there is none)."""
        script = self.mapping.valid_target
        return self._valid(script, {"target": target, "object": target}, qualifier) if script else True

    def _decide(self, situation: Situation, context: dict[str, Any], *, source_phase: bool = True,
                ambiguous: list[str] | None = None) -> tuple[str, Script | None]:
        """The action, and the policy's ``postAction`` script (run once the action is done);
        ``source_phase``: false in a recon's target phase; ``ambiguous``: the targets an
        ``AMBIGUOUS`` correlation found."""
        if self.forced is not None:
            return self.forced.action_for(situation), None
        decision = self.mapping.policies.decide(
            situation,
            evaluate_condition=lambda cond: _eval_condition(cond, {**context, "object": context.get("source")}),
            evaluate_action_script=lambda script: str(_run_transform(
                script, self._action_scope(situation, context, source_phase, ambiguous))),
        )
        post = decision.post_action if isinstance(decision.post_action, Script) else None
        return str(decision.action), post

    def _action_scope(self, situation: Situation, context: dict[str, Any], source_phase: bool,
                      ambiguous: list[str] | None) -> dict[str, Any]:
        """An action script's variables, as PingIDM gives them: ``source``, ``target``,
        ``linkQualifier``, ``sourceAction`` (false in a target phase) and ``recon.actionParam``,
        the operation as ``sync?_action=performAction`` takes it (the action it names is the
        situation's default, which the script's answer replaces)."""
        source, target = context.get("source"), context.get("target")
        param: dict[str, Any] = {
            "_action": "performAction", "reconId": self.recon_id, "mapping": self.mapping.name,
            "situation": str(situation), "action": str(self.mapping.policies.defaults[situation]),
            "sourceId": source.get("_id") if source else None, "linkQualifier": context.get("linkQualifier")}
        if target:
            param["targetId"] = target.get("_id")
        if ambiguous:
            param["ambiguousTargetIds"] = ambiguous
        return {**context, "situation": str(situation), "sourceAction": source_phase, "recon": {"actionParam": param}}

    def _hook_target(self, hook: Script, variables: dict[str, Any]) -> Obj:
        """``onCreate``'s or ``onUpdate``'s target, as the hook left it (``mapping_hooks.py``)."""
        named = {k: v for k, v in variables.items() if k not in ("source", "target", "situation", "linkQualifier")}
        bound = hook_variables(self.mapping, hook, source=variables["source"], target=variables["target"],
                               situation=variables["situation"], qualifier=variables["linkQualifier"], **named)
        result = hook.run_returning(bound, "target")
        return result if isinstance(result, dict) else variables["target"]

    def _valid(self, script: Script, variables: dict[str, Any], qualifier: str) -> bool:
        """What ``validSource`` or ``validTarget`` answers, which must be true or false, as in
        PingIDM: anything else (a file's string "false", undefined) fails the object rather
        than let its truthiness qualify it."""
        answer = script(**variables, linkQualifier=qualifier)
        if not isinstance(answer, bool):
            hint = " (compare it: === 'true')" if answer in ("true", "false") else ""
            raise ScriptError(f"{script.name}: must answer true or false, not {kind_of(answer)}{hint}")
        return answer

    def _secrets_kept(self, changes: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
        """``changes`` without the secrets the target already holds: a clear password (a mapping's
        ``default``, an LDAP value) against the hash the target stores is no change, so a run that
        changes nothing says so (the store would keep the hash anyway)."""
        keyring = self.target_schema.keyring if self.target_schema is not None else None
        return {k: v for k, v in changes.items()
                if not (k.lower() in self.secret_names and current.get(k) is not None
                        and same_secret(v, current.get(k), keyring))}

    def _hashes_left_out(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` without the store's hashes of secrets the target takes in clear only
        (Active Directory's password): such a secret reaches the target when it is set
        through idsync (implicit sync pushes the clear value), never as its hash, which
        would become the password. Nothing to write for it is no change."""
        if not self.clear_only or self.clear_only.isdisjoint(values):
            return values
        return {k: v for k, v in values.items()
                if not (k in self.clear_only and is_one_way(v))}

    def keep_written(self, kept: Mapping[str, str]) -> None:
        """The digests of written write-only values the links of the sources about to be
        assessed keep (source id -> digest; ``written.py``)."""
        self.kept_written = kept

    def _written_left_out(self, plan: Plan, changes: dict[str, Any], current: Obj, target: Obj) -> dict[str, Any]:
        """``changes`` without the write-only values the target was last given (``written.py``);
        ``plan.written`` the digest of those the target holds once it is done."""
        if self.written is None or not self.written.enabled:
            return changes
        sealed = self.written.sealed(self._hashes_left_out({**target, **changes}), plan.qualifier)
        kept = self.kept_written.get(plan.source_id or "")
        plan.written = sealed if sealed != kept else None
        return self.written.left_out(changes, current, sealed, kept)

    def _mask(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if self._shown_as_is.issuperset(values):
            return dict(values)
        return {k: (_MASK if k.lower() in self.secret_names else v) for k, v in values.items() if not k.startswith("_")}


def _run_transform(script: object, variables: Mapping[str, Any]) -> Any:
    if not isinstance(script, Script):
        raise TypeError(f"not a compiled script: {script!r}")
    return script(**variables)


def _eval_condition(cond: Any, variables: Mapping[str, Any]) -> bool:
    """Whether a property's, a policy's or ``sourceCondition``'s condition holds. A script's
    holds when it answers ``true``, as PingIDM's conditions do: anything else (a file's text
    "false", a value that is there) does not, so that "false" never selects a DELETE."""
    if isinstance(cond, Script):
        return cond(**variables) is True
    if isinstance(cond, _NODES):
        return matches(cond, variables)
    return bool(cond)


def _exception_message(situation: str, candidates: int) -> str:
    return {
        "AMBIGUOUS": f"AMBIGUOUS: correlation found {candidates} targets; link one by hand or refine the query",
        "FOUND_ALREADY_LINKED": "FOUND_ALREADY_LINKED: the correlated target is linked to another source",
        "MISSING": "MISSING: the linked target no longer exists",
        "SOURCE_MISSING": "SOURCE_MISSING: the linked source no longer exists; target kept (no DELETE policy)",
        "UNQUALIFIED": "UNQUALIFIED: the source no longer qualifies; target kept (no DELETE policy)",
        "UNASSIGNED": "UNASSIGNED: target object has no link and no source",
        "LINK_ONLY": "LINK_ONLY: a link exists but neither object was found",
    }.get(situation, f"{situation}: policy says EXCEPTION")


def _live_owners(owners: Mapping[str, str], source: Resource, present: set[str]) -> dict[str, str]:
    """``owners`` (target id -> linked source id) without the links whose source id is
    gone from a source whose ids change on rename: the entry was renamed, and the
    source now correlating to that target takes the link over (FOUND, not
    FOUND_ALREADY_LINKED) instead of a delete of the target and a create."""
    unknown = [sid for sid in owners.values() if sid not in present]
    existing = set(source.get_many(unknown, [])) if unknown else set()
    return {tid: sid for tid, sid in owners.items() if sid in present or sid in existing}
