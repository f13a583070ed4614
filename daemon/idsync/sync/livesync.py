"""liveSync: one source's changes since its stored token, applied at once.

A run of one source (``system/ldap/account``):

1. reads the token stored for the source (``store/tokens.py``). Without one, or
   when the source says it can no longer honour it (``SyncTokenExpired``: a
   trimmed change log, a restored server; logged at warning), the run takes the
   source's position *first* (``latest_token``), reconciles every mapping of the
   source in full, and stores that position once every recon succeeded: nothing
   changed during the recon is missed, and a failed recon leaves no token, so
   the next run tries again. Never a silent skip;
2. reads the changes (``ChangeSource.read_changes``) with the fields its mappings
   need, and applies each batch through every mapping whose source it is, with
   the assessment of implicit sync (``Assessor``: link, correlation, situation,
   policy, projected target): creates, updates and renames as a source page of
   a recon, deletes as PingIDM's deletion events (``Assessor.plan_deleted``).
   One batch of one mapping is one store transaction (its links, its audit, the
   store target's writes); the transaction of the last mapping for the batch
   that carries the new token stores the token too;
3. when the source listed every object it holds (an LDAP present phase), the
   objects a mapping links that are not among them are deletes too.

Deletes run at once (there is no target phase to wait for), within the
mapping's ``maxDeletes`` counted over the run. A change idsync itself wrote to
the source and reads back (a bidirectional project: the reverse mapping pushed
it) is an *echo*: when everything the mapping reads from the source is what the
reverse mapping would write there from the linked object, the change says
nothing new and is skipped, so the two mappings never bounce a value between
them. Store objects whose push to the source failed are held as in a recon.

Each mapping that had changes to apply records a run (job ``liveSync``) with its
audit entries, like a recon; a run that read nothing records only its count in
``sync_tokens``. Dry run: the targets simulate, no link and no token is written.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection

from idsync.config.jobs import LIVESYNC_JOB
from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.config.properties import diff
from idsync.errors import (
    ConfigError,
    IdsyncError,
    NotFound,
    RunCanceled,
    SafetyLimitExceeded,
    SyncTokenExpired,
    internal_message,
)
from idsync.query.ast import And, Compare, Node, Or
from idsync.resource import (
    Change,
    ChangeBatch,
    ChangeSource,
    Obj,
    QuerySpec,
    Resource,
    WriteOp,
    WriteResult,
    renamed,
)
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from idsync.store.passwords import same_secret
from idsync.store.runs import RunStore, owner_id
from idsync.store.tokens import SyncTokens
from idsync.sync.assess import Assessor, Plan
from idsync.sync.correlation import Correlator
from idsync.sync.deletes import delete_cap, joined
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync.sync.retry import hold_pending, pending_targets
from idsync.sync.summary import Counters

__all__ = ["LiveSyncOptions", "LiveSyncResult", "livesync_mappings", "run_livesync"]

log = structlog.get_logger(__name__)


@dataclass
class LiveSyncOptions:
    dry_run: bool = False
    page_size: int | None = None
    job: str | None = None  # the job that started the run, for its full recons
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class LiveSyncResult:
    """What one liveSync run of a source did: ``state`` SUCCESS, FAILED or CANCELED;
    ``runs`` the recorded runs (one per mapping that had changes, or the full recons)."""

    source: str
    state: str
    changes: int = 0
    method: str | None = None
    full_recon: str | None = None  # why the run reconciled in full instead
    note: str | None = None
    message: str | None = None
    exit_code: int = 0
    duration_ms: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "state": self.state, "changes": self.changes, "method": self.method,
                "fullRecon": self.full_recon, "note": self.note, "error": self.message,
                "duration": self.duration_ms, "runs": self.runs}


def livesync_mappings(project: Project, source: str) -> list[MappingDef]:
    """The mappings a change of ``source`` goes through, in processing order."""
    return [m for m in project.mappings if m.source == source]


def run_livesync(project: Project, store: Store, source: str, options: LiveSyncOptions | None = None) -> LiveSyncResult:
    """One liveSync run of ``source``; ``RunLocked`` if one already runs."""
    return _LiveRun(project, store, source, options or LiveSyncOptions()).run()


class _LiveRun:
    def __init__(self, project: Project, store: Store, source: str, options: LiveSyncOptions) -> None:
        self.project = project
        self.store = store
        self.source = source
        self.options = options
        self.mappings = livesync_mappings(project, source)
        if not self.mappings:
            raise ConfigError("sync.json", "source", f"no mapping has {source} as its source, so liveSync "
                                                     "has nothing to apply its changes through")
        self.runs = RunStore(store)
        self.tokens = SyncTokens(store)
        self.lock = f"livesync:{source}"
        self.owner = f"{owner_id()}:{uuid.uuid4()}"
        self.page_size = options.page_size or project.settings.recon.page_size
        self.log = log.bind(source=source, dry_run=options.dry_run)

    def run(self) -> LiveSyncResult:
        started = time.monotonic()
        self.runs.acquire(self.lock, self.owner)
        result = LiveSyncResult(self.source, "FAILED", exit_code=1)
        resources = Resources(self.project, self.store)
        appliers: list[_Applier] = []
        try:
            with structlog.contextvars.bound_contextvars(livesync=self.source):
                self._run(resources, result, appliers)
        except RunCanceled as exc:
            result.state, result.message, result.exit_code = "CANCELED", str(exc), 130
        except IdsyncError as exc:
            result.message, result.exit_code = str(exc), exc.exit_code
        except Exception as exc:
            self.log.exception("livesync.crash")
            result.message = f"internal error: {internal_message(exc)}"
        finally:
            try:
                for applier in appliers:
                    applier.finish(result)
                resources.close()
            finally:
                self.runs.release(self.lock, self.owner)
        result.duration_ms = round((time.monotonic() - started) * 1000)
        if not self.options.dry_run:
            self.tokens.record_run(self.source, result.state, result.message, changes=result.changes,
                                   full_recon=result.full_recon is not None)
        self._log_end(result)
        return result

    def _run(self, resources: Resources, result: LiveSyncResult, appliers: list[_Applier]) -> None:
        source = resources.open(self.source)
        if not isinstance(source, ChangeSource):
            raise ConfigError("sync.json", "source", f"{self.source} cannot tell its changes: liveSync reads "
                                                     "LDAP, SCIM and Salesforce systems (a periodic recon covers "
                                                     "the others)")
        stored = self.tokens.get(self.source)
        if stored is None or stored.token is None:
            self._full_recon(source, result, "no token yet: the first liveSync of a source starts with a full recon")
            return
        try:
            feed = source.read_changes(stored.token, self._fields(), self.page_size)
        except SyncTokenExpired as exc:
            self.log.warning("livesync.token_expired", reason=str(exc))
            self._full_recon(source, result, f"the stored token can no longer be honoured: {exc}")
            return
        result.method, result.note = feed.method, feed.note
        appliers.extend(_Applier(self, m, resources, feed.method, feed.note) for m in self.mappings)
        batches: Iterable[ChangeBatch] = feed.batches
        if feed.complete_ids is not None:
            batches = self._with_gone(appliers, feed.complete_ids, batches)
        for batch in batches:
            if self.options.cancel.is_set():
                raise RunCanceled("canceled between two batches of changes; the token stays where it was")
            result.changes += len(batch.changes)
            save = batch.token is not None and batch.token != stored.token and not self.options.dry_run
            for index, applier in enumerate(appliers):
                last = index == len(appliers) - 1
                applier.apply(batch.changes, self._saver(batch.token, feed.method) if save and last else None)
        if any(a.counters.error_count for a in appliers) and not any(a.counters.status["SUCCESS"] for a in appliers):
            raise SafetyLimitExceeded("every change failed (see the runs' errors)")
        result.state, result.exit_code = "SUCCESS", 0

    def _with_gone(self, appliers: Sequence[_Applier], present: frozenset[str],
                   batches: Iterable[ChangeBatch]) -> Iterable[ChangeBatch]:
        """The batches, after one per mapping with the linked objects the source no longer lists."""
        for applier in appliers:
            gone = [sid for sid in applier.links.source_ids() if sid not in present]
            for start in range(0, len(gone), self.page_size):
                applier.apply([Change(sid, None) for sid in gone[start:start + self.page_size]], None)
        yield from batches

    def _saver(self, token: str | None, method: str) -> Callable[[Connection], None]:
        def save(conn: Connection) -> None:
            if token is not None:
                self.tokens.save(conn, self.source, token, method)
        return save

    def _fields(self) -> list[str] | None:
        """What to read of a changed object: everything some mapping of the source reads."""
        fields: set[str] = set()
        for m in self.mappings:
            wanted = m.source_query.fields if m.source_query.fields is not None else m.default_source_fields
            if wanted is None:
                return None
            fields.update(wanted)
        return sorted(fields)

    def _full_recon(self, source: ChangeSource, result: LiveSyncResult, reason: str) -> None:
        """Take the source's position, reconcile every mapping in full, then store the position."""
        result.full_recon = reason
        self.log.info("livesync.full_recon", reason=reason)
        token = source.latest_token()
        recons: list[ReconResult] = []
        for m in self.mappings:
            if self.options.cancel.is_set():
                raise RunCanceled("canceled before the full recon of " + m.name)
            recon = run_recon(self.project, self.store, m.name, ReconOptions(
                dry_run=self.options.dry_run, page_size=self.options.page_size, job=self.options.job,
                cancel=self.options.cancel))
            recons.append(recon)
            result.runs.append({"mapping": m.name, "id": recon.id, "state": recon.state, "fullRecon": True})
            if recon.state != "SUCCESS":
                result.exit_code = recon.exit_code
                result.message = (f"the full recon of {m.name} ended {recon.state}: {recon.message}; "
                                  "no token was stored, the next liveSync run reconciles again")
                result.state = "CANCELED" if recon.state == "CANCELED" else "FAILED"
                return
        if not self.options.dry_run:
            with self.store.begin() as conn:
                self.tokens.save(conn, self.source, token, None)
        result.state, result.exit_code = "SUCCESS", 0

    def _log_end(self, result: LiveSyncResult) -> None:
        fields = {"state": result.state, "changes": result.changes, "method": result.method,
                  "duration_ms": result.duration_ms, "full_recon": result.full_recon, "message": result.message}
        if result.state == "FAILED":
            self.log.error("livesync.end", **fields)
        elif result.state == "CANCELED":
            self.log.warning("livesync.end", **fields)
        elif result.changes or result.full_recon:
            self.log.info("livesync.end", **fields)
        else:
            # A run every few seconds that found nothing: not worth a line a run at info.
            self.log.debug("livesync.end", **fields)


class _Applier:
    """Applies changes of the source through one mapping; records its run on first use."""

    def __init__(self, live: _LiveRun, mapping: MappingDef, resources: Resources, method: str,
                 note: str | None) -> None:
        self.live = live
        self.mapping = mapping
        self.store = live.store
        self.dry_run = live.options.dry_run
        self.method, self.note = method, note
        self.run_id: str | None = None
        self.counters = Counters(mapping.name, mapping.source, mapping.target, dry_run=self.dry_run)
        self.echoes = 0
        self.deletes = 0
        self.source = resources.open(mapping.source)
        target = resources.open(mapping.target, dry_run=self.dry_run)
        if isinstance(target, ManagedResource):
            target = target.revealing_secrets()  # compared with a (hashed) password read from the source
        self.target: Resource = target
        project = live.project
        self.links = LinkSet(self.store, mapping.linkset, reversed=project.linkset_reversed(mapping))
        self.assessor = Assessor(mapping, ReconOptions(dry_run=self.dry_run), self.counters,
                                 secrets=project.secret_properties(mapping),
                                 target_schema=target.schema if isinstance(target, ManagedResource) else None)
        self.correlator = Correlator(mapping.correlation, target, mapping.default_target_fields) \
            if mapping.correlation else None
        self.pending = pending_targets(self.store, project, mapping) if isinstance(target, ManagedResource) else {}
        limit = mapping.max_deletes
        total = target.count() if isinstance(limit, float) else None
        self.cap = delete_cap(limit, total, 0) if not isinstance(limit, float) or total is not None else None
        self.reverse = _reverse_assessor(project, mapping, self.counters)

    # -- deciding -------------------------------------------------------------

    def apply(self, changes: Sequence[Change], save: Callable[[Connection], None] | None) -> None:
        present = self._in_scope([c.obj for c in changes if c.obj is not None])
        deleted = [c.id for c in changes if c.obj is None]
        if not present and not deleted:
            if save is not None:
                with self.store.begin() as conn:
                    save(conn)
            return
        self._start()
        t0 = time.monotonic()
        plans: list[Plan] = []
        objs = present
        while objs:
            linked = self.links.targets_of([o["_id"] for o in objs])
            targets = self.target.get_many(list(linked.values()), self.mapping.default_target_fields) \
                if linked else {}
            mine = [o for o in objs if not self._echo(o, targets.get(linked.get(o["_id"], "")))]
            self.echoes += len(objs) - len(mine)
            found = self.assessor.assess_sources(mine, linked, targets, self.correlator, self.links, self.source)
            retry = {p.source_id for p in found if p.retry}
            done = [p for p in found if not p.retry]
            for plan in done:
                if plan.defer and plan.action == "DELETE" and plan.target_id and plan.op is None:
                    plan.op, plan.change = WriteOp("delete", id=plan.target_id), "deleted"
            if retry:
                # A source correlating to a target created in this batch: assessed again once it exists.
                self._write(done, None)
                objs = [o for o in objs if o["_id"] in retry]
                continue
            plans.extend(done)
            objs = []
        plans.extend(self._deleted(deleted))
        self._write(plans, save)
        self.counters.source_processed += len(present) + len(deleted)
        self.counters.time("liveSyncBatch", (time.monotonic() - t0) * 1000)

    def _deleted(self, ids: Sequence[str]) -> list[Plan]:
        if not ids:
            return []
        linked = self.links.targets_of(ids)
        found = self.target.get_many(list(linked.values()), self.mapping.default_target_fields) if linked else {}
        plans = []
        for sid in ids:
            tid = linked.get(sid)
            if tid is None:
                continue  # never linked through this mapping (out of its scope): nothing to do
            plan = self.assessor.plan_deleted(sid, tid, found.get(tid))
            if plan.op is not None and plan.op.kind == "delete":
                self.deletes += 1
                if self.cap is not None and self.deletes > self.cap:
                    raise SafetyLimitExceeded(
                        f"{self.mapping.name}: the changes would delete more than maxDeletes ({self.cap}) target "
                        "objects in one liveSync run; stopped before that delete, the token was not moved")
            plans.append(plan)
        return plans

    def _in_scope(self, objs: list[Obj]) -> list[Obj]:
        """The objects the mapping's ``sourceQuery`` takes. The source answers (a native
        query is its own language, and a filter may name what the change did not read):
        one search of the query narrowed to these ids, 50 at a time."""
        query = self.mapping.source_query
        if not objs or (query.filter is None and query.native is None):
            return objs
        taken: set[str] = set()
        for start in range(0, len(objs), 50):
            terms = tuple(Compare(("_id",), "eq", o["_id"]) for o in objs[start:start + 50])
            ids: Node = Or(terms) if len(terms) > 1 else terms[0]
            node = And((query.filter, ids)) if query.filter is not None else ids
            taken.update(o["_id"] for o in self.source.find(QuerySpec(filter=node, native=query.native, fields=[])))
        return [o for o in objs if o["_id"] in taken]

    def _echo(self, s: Obj, linked_target: Obj | None) -> bool:
        """Whether ``s`` holds exactly what the reverse mapping would write to it from its
        linked object: then the change is idsync's own write read back, and says nothing new."""
        if self.reverse is None or linked_target is None:
            return False
        reads = self.mapping.properties.source_fields()
        if reads is None or not reads <= self.reverse.mapping.properties.target_fields():
            return False  # the change may hold something the reverse mapping never writes
        try:
            projected = self.reverse.project(linked_target, s)
        except IdsyncError:
            return False
        changed = diff({k: v for k, v in projected.items() if k in reads}, s, unordered=True)
        # A secret the source holds hashed is the same when it verifies against the clear one.
        return all(k.lower() in self.reverse.secret_names and same_secret(v, s.get(k)) for k, v in changed.items())

    # -- acting ---------------------------------------------------------------

    def _write(self, plans: Sequence[Plan], save: Callable[[Connection], None] | None) -> None:
        """Write the plans' changes, then in one store transaction their links, audit and ``save``."""
        hold_pending(plans, self.pending)
        with self.store.begin() as conn, joined(self.target, conn):
            ops = [p for p in plans if p.op is not None]
            results: dict[int, WriteResult] = {}
            if ops:
                for plan, written in zip(ops, self.target.write_batch([p.op for p in ops if p.op]), strict=True):
                    results[id(plan)] = written
            add: list[tuple[str, str]] = []
            drop: list[str] = []
            audit: list[dict[str, Any]] = []
            for plan in plans:
                target_id = self._outcome(plan, results.get(id(plan)), audit)
                if target_id is None:
                    continue
                if plan.defer:
                    drop.append(target_id)
                elif plan.source_id and (plan.link or renamed(plan.target_id, target_id)):
                    add.append((plan.source_id, target_id))
            if not self.dry_run:
                self.links.remove_targets(conn, drop)
                self.links.add(conn, add)
            self.counters.links_created += len([p for p in plans if p.link and not p.error])
            self.live.runs.audit(conn, audit)
            if self.run_id is not None:
                self.live.runs.progress(self.run_id, "ACTIVE_LIVESYNC", self._summary(), conn)
            if save is not None:
                save(conn)

    def _outcome(self, plan: Plan, result: WriteResult | None, audit: list[dict[str, Any]]) -> str | None:
        """Count one plan and add its audit row; the target id to link or unlink, if done."""
        c = self.counters
        if plan.situation:
            c.situations[plan.situation] += 1
            c.actions[plan.action] += 1
        target_id = (result.id if result is not None and result.ok else None) or plan.target_id
        gone = result is not None and isinstance(result.error, NotFound)
        error = plan.error
        if error is None and result is not None and not result.ok and not gone:
            error = str(result.error)
        if error is None:
            error = plan.unlinked(self.mapping.target, target_id, result.obj if result is not None else None)
        row = plan.audit_row(self.run_id or "", self.mapping.name, target_id, self.dry_run)
        if error is not None:
            c.status["FAILURE"] += 1
            c.changes["failed"] += 1
            c.error(error, situation=plan.situation or None, source_id=plan.source_id, target_id=plan.target_id)
            audit.append({**row, "status": "FAILURE", "message": error})
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

    def _start(self) -> None:
        if self.run_id is None:
            self.run_id = str(uuid.uuid4())
            self.live.runs.start(self.run_id, self.mapping.name, job=LIVESYNC_JOB, dry_run=self.dry_run,
                                 summary=self._summary())

    def _summary(self) -> dict[str, Any]:
        summary = self.counters.to_summary()
        summary["liveSync"] = {"source": self.mapping.source, "method": self.method, "echoes": self.echoes,
                               "note": self.note}
        return summary

    def finish(self, result: LiveSyncResult) -> None:
        """End this mapping's run record (when it had one) as the liveSync run ended."""
        if self.run_id is None:
            return
        state = result.state if result.state in ("SUCCESS", "CANCELED") else "FAILED"
        if state == "SUCCESS" and self.counters.error_count and not self.counters.status["SUCCESS"]:
            state = "FAILED"
        self.counters.stage = "COMPLETED" if state == "SUCCESS" else f"COMPLETED_{state}"
        summary = self._summary()
        summary["duration"] = round((time.monotonic() - self.counters.started) * 1000)
        message = result.message if state != "SUCCESS" else self.note
        with contextlib.suppress(IdsyncError):
            self.live.runs.finish(self.run_id, state, self.counters.stage, summary, message)
        result.runs.append({"mapping": self.mapping.name, "id": self.run_id, "state": state,
                            "counts": {k: v for k, v in summary["changes"].items() if v},
                            "echoes": self.echoes, "errors": self.counters.error_count})


def _reverse_assessor(project: Project, mapping: MappingDef, counters: Counters) -> Assessor | None:
    """The assessor of the mapping writing the other way over the same links, if any."""
    for other in project.mappings:
        if (other.name != mapping.name and other.source == mapping.target and other.target == mapping.source
                and other.linkset == mapping.linkset):
            return Assessor(other, ReconOptions(dry_run=True), counters, secrets=project.secret_properties(other))
    return None
