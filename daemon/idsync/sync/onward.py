"""A recon's writes into a managed type carried on through the type's other mappings.

PingIDM pushes every change of a managed object through each mapping whose source is
its type (implicit synchronization), whoever made the change: a recon into
``managed/user`` fills the systems ``managed/user`` maps to in the same run (OpenIDM's
sample5: a recon from one XML file into the store fills the other file). ``OnwardPush``
does that for a recon, a page at a time: once a page's transaction is committed, the
objects it created, updated or deleted are applied through each other mapping of the
type as liveSync applies a batch of changes (``changes.py``), one assessment and one
batch of writes per page, recorded as one run of that mapping (job ``implicit``) per
recon, whose failed objects ``idsync sync retry`` pushes again (``retry.py``).

Never back to the system the recon read (its own reverse mapping): the store now holds
what that system holds, and two mappings would otherwise bounce changes between them.
A target that refuses an object, or cannot be reached, fails that push, never the recon:
the store's change stands, and the onward run records the failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.errors import IdsyncError
from idsync.resource import Change, Obj, WriteResult
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.sync.changes import ChangeApplier
from idsync.sync.implicit import IMPLICIT_JOB, ImplicitSync
from idsync.sync.summary import Counters

__all__ = ["OnwardPush"]

log = structlog.get_logger(__name__)


class OnwardPush:
    """Carries one run's writes into a managed type on through the type's other mappings."""

    def __init__(self, project: Project, store: Store, resources: Resources, mapping: MappingDef,
                 mappings: Sequence[MappingDef], run_id: str) -> None:
        self._project, self._store, self._resources = project, store, resources
        self._mapping, self._run_id = mapping, run_id
        self.mappings = list(mappings)
        self._note = f"carried on from recon {run_id} of {mapping.name}"
        self._appliers: dict[str, ChangeApplier] = {}
        # The mappings whose applier could not be made (the target could not be opened): the run
        # recording their failed objects, and its counts.
        self._unstarted: dict[str, tuple[str, Counters]] = {}
        source = resources.open(mapping.target)
        assert isinstance(source, ManagedResource)
        self._reader = source.as_sync_source()  # as a push reads its source: hashed secrets, onRetrieve

    @classmethod
    def of(cls, project: Project, store: Store, resources: Resources, mapping: MappingDef,
           run_id: str) -> OnwardPush | None:
        """The onward push of ``mapping``'s writes, or None when its target is not a managed
        type that another mapping (``enableSync`` on) takes elsewhere than the recon's source."""
        if not mapping.target.startswith("managed/"):
            return None
        onward = [m for m in ImplicitSync(project, store, resources).mappings(mapping.target)
                  if m.target != mapping.source and m.name != mapping.name]
        return cls(project, store, resources, mapping, onward, run_id) if onward else None

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
        try:
            applier = self._applier(mapping)
            applier.compare_with(befores)
            applier.apply(changes, None)
        except IdsyncError as exc:
            # The target could not be opened or refused the batch as a whole (maxDeletes):
            # each object's push failed, and ``idsync sync retry`` takes them up again.
            self._fail(mapping, changes, str(exc))

    def _applier(self, mapping: MappingDef) -> ChangeApplier:
        applier = self._appliers.get(mapping.name)
        if applier is None:
            applier = ChangeApplier(self._project, self._store, mapping, self._resources, dry_run=False,
                                    method="recon", note=self._note,
                                    job=IMPLICIT_JOB)
            self._appliers[mapping.name] = applier
        return applier

    def _fail(self, mapping: MappingDef, changes: Sequence[Change], error: str) -> None:
        """Audit every object of ``changes`` as failed through ``mapping``, in its onward run
        (one is started when the applier could not be)."""
        log.warning("recon.push_failed", onward=mapping.name, objects=len(changes), error=error)
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
                runs.start(started, mapping.name, job=IMPLICIT_JOB, dry_run=False, summary=fresh.to_summary())
                self._unstarted[mapping.name] = (started, fresh)
            run_id, counters = self._unstarted[mapping.name]
        rows = [{"run_id": run_id, "mapping": mapping.name, "situation": None, "action": None,
                 "source_id": c.id, "target_id": None, "status": "FAILURE", "message": error, "changes": None,
                 "link_qualifier": "default"} for c in changes]
        with self._store.begin() as conn:
            runs.audit(conn, rows)
        counters.source_processed += len(changes)
        counters.status["FAILURE"] += len(changes)
        counters.changes["failed"] += len(changes)
        counters.error(error)

    def finish(self, state: str) -> None:
        """End the onward runs as the recon ended (``state``); one whose every object failed
        ends FAILED."""
        for applier in self._appliers.values():
            applier.finish(state, f"recon {self._run_id} ended {state}")
        runs = RunStore(self._store)
        for run_id, counters in self._unstarted.values():
            counters.stage = "COMPLETED_FAILED"
            summary = counters.to_summary()
            summary["implicit"] = {"note": self._note}
            runs.finish(run_id, "FAILED", counters.stage, summary, counters.errors[0]["message"] if counters.errors
                        else None)
