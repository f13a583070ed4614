"""One reconciliation run of one mapping: source phase, target phase, deletes.

The pipeline, per source page (``_source_page``):

1. qualify every object (``validSource``, ``sourceCondition``);
2. one query for the page's links, one ``get_many`` for the linked targets, one
   batched correlation for the unlinked (``correlation.py``);
3. assess each object (situation, then action from the policies) and plan its
   change: a projected target and the diff against the current one; an
   unchanged target plans nothing;
4. write the page's creates and updates with one ``write_batch`` call, then, in
   one store transaction, the links, the claims and the audit entries (the
   same transaction as the writes when the target is the store).

The target phase streams the target's ids, skips those the source phase
claimed (``recon_claims``, so no list of all ids is held here) and those linked
since the run started (the next run's, as in PingIDM), and assesses the rest.
Every DELETE and UNLINK, from either phase, is only recorded (``recon_deferred``);
they run after both phases finished without a read error, and only if their
number is within the mapping's ``maxDeletes`` (``deletes.py``).
In a run where an unlinked source object could not be correlated or assessed,
the target phase's are held instead (that object may own any unclaimed target):
each is an error of its target, and the run fails once the rest is done.

Dry run needs nothing here: the target resource refuses to write (it answers
what it would have done), and links are left alone.

A script of a run (a hook, a transform) may start a recon of another mapping in
its own thread (``managed/recons.py``); one of the run's own mapping is refused
at once, saying so, rather than take the "already running" of its own lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.config.source_fields import source_fields
from idsync.errors import (
    IdsyncError,
    NotFound,
    ReadDenied,
    RunAborted,
    RunCanceled,
    RunLocked,
    RunTakenOver,
    SafetyLimitExceeded,
    internal_message,
)
from idsync.resource import Obj, QuerySpec, Resource, WriteResult, renamed
from idsync.resources import Resources
from idsync.scripts import Script
from idsync.store.database import Store, store_error, utcnow
from idsync.store.links import LinkSet, in_step_side, revision
from idsync.store.objects import ManagedResource
from idsync.store.partitions import Partition, Partitions
from idsync.store.runs import RunStore, owner_id
from idsync.store.system_refs import LinkedReferences
from idsync.sync.assess import Assessor, Plan
from idsync.sync.assignments import Assignments, mapping_assignments
from idsync.sync.changes import OnwardPush
from idsync.sync.collector import quiet_collector
from idsync.sync.correlation import Correlator
from idsync.sync.deletes import DeferredDeletes, writing
from idsync.sync.digests import TargetDigests
from idsync.sync.implicit import ImplicitSync
from idsync.sync.mapping_hooks import on_recon
from idsync.sync.options import ReconOptions
from idsync.sync.partitions import SEQ_SPAN, IdSample, cut, range_filter
from idsync.sync.progress import expected_counts
from idsync.sync.qualifiers import LinkQualifiers
from idsync.sync.referrers import Referrers
from idsync.sync.retry import hold_pending, pending_targets, unrepaired_befores
from idsync.sync.role_fanout import RoleFanout, WrittenRoles
from idsync.sync.summary import Counters
from idsync.sync.system_ids import unfit_id
from idsync.sync.taken_over import summarize_taken_over
from idsync.sync.written import written_values

__all__ = ["ReconResult", "cancel_in_process", "help_partitions", "refuse_own_run", "run_recon"]

log = structlog.get_logger(__name__)

_LOCK_REFRESH = 30.0  # seconds between refreshes of the run's lock (it lasts LOCK_TTL)
_PARTITION_LOST = ("the partition was handed to another worker while this process was silent (paused, starved or "
                   "cut off from the store for longer than the cluster's stall_timeout); that worker reads it, "
                   "and nothing more was written here")
_NOT_READ = "not read to its end: the run ended first"
_SHOWN_EVERY = 1.0  # seconds between updates of a split run's record while its process reads a partition
# The mappings each thread is reconciling now (``_reconciling``).
_threads = threading.local()
# The runs in progress in this process, by run id: what ``cancel_in_process`` stops,
# whoever started them (a job, the API, a script).
_running: dict[str, threading.Event] = {}
_running_lock = threading.Lock()


@dataclass
class ReconResult:
    id: str
    mapping: str
    state: str
    summary: dict[str, Any]
    message: str | None = None
    exit_code: int = 0  # for the CLI: the sysexits code of what stopped the run


def run_recon(project: Project, store: Store, mapping_name: str, options: ReconOptions | None = None) -> ReconResult:
    """Run ``mapping_name`` once; the result is also recorded in the store."""
    options = options or ReconOptions()
    mapping = project.mapping_for_run(mapping_name, options.overrides)
    with _reconciling(mapping.name):
        return _Run(project, store, mapping, options).run()


def cancel_in_process(run_id: str) -> bool:
    """Ask run ``run_id`` to stop at its next page boundary, if it runs in this process."""
    with _running_lock:
        event = _running.get(run_id)
    if event is not None:
        event.set()
    return event is not None


def help_partitions(project: Project, store: Store, run_id: str, node: str, cancel: threading.Event) -> bool:
    """Work on the PENDING partitions of the split run ``run_id`` (another node runs the rest
    of it) until none is left; whether ``cancel`` stopped it (its partition is handed back)."""
    plan = Partitions(store).plan(run_id)
    run = RunStore(store).get(run_id)
    if plan is None or run is None or run["state"] != "ACTIVE":
        return False
    options = ReconOptions(dry_run=bool(run["dry_run"]), allow_create=plan.get("allow_create"),
                           allow_update=plan.get("allow_update"), allow_delete=plan.get("allow_delete"),
                           page_size=plan.get("page_size"), job=run["job"], cancel=cancel, run_id=run_id, node=node,
                           rewrite_write_only=bool(plan.get("rewrite_write_only")), overrides=plan.get("overrides"))
    helper = _Run(project, store, project.mapping_for_run(run["mapping"], options.overrides), options)
    helper._claiming = plan.get("claims", True)
    with structlog.contextvars.bound_contextvars(run_id=run_id, mapping=run["mapping"]), quiet_collector(), \
            _reconciling(run["mapping"]):
        return helper.help()


def refuse_own_run(mapping: str) -> None:
    """``RunLocked`` when this thread is reconciling ``mapping`` (a script of that run asking
    for it again), whether the new run would run here or in a thread of its own."""
    if mapping in (getattr(_threads, "mappings", None) or set()):
        raise RunLocked(f"recon:{mapping} cannot start from a script of its own run (this thread is reconciling "
                        f"{mapping}); start it from elsewhere, such as a scheduled script")


@contextlib.contextmanager
def _reconciling(mapping: str) -> Iterator[None]:
    """This thread reconciles ``mapping`` within the block; ``RunLocked`` if it already does."""
    refuse_own_run(mapping)
    mine: set[str] = getattr(_threads, "mappings", None) or set()
    _threads.mappings = mine | {mapping}
    try:
        yield
    finally:
        _threads.mappings = mine


class _Run:
    def __init__(self, project: Project, store: Store, mapping: MappingDef, options: ReconOptions) -> None:
        self.project = project
        self.store = store
        self.mapping = mapping
        self.options = options
        self.id = options.run_id or str(uuid.uuid4())
        self.runs = RunStore(store)
        self.owner = f"{owner_id()}:{self.id}"
        self.lock = f"recon:{mapping.name}"
        self.page_size = options.page_size or project.settings.recon.page_size
        # ``[recon] audit_unchanged``: an audit entry for each object left as it was too
        # (CONFIRMED with nothing to write, IGNORE, ASYNC; never NOREPORT's).
        self.audit_unchanged = project.settings.recon.audit_unchanged
        self.counters = Counters(mapping.name, mapping.source, mapping.target, dry_run=options.dry_run,
                                 report="result" in mapping.hooks)
        self.links = LinkSet.of(store, project, mapping)
        self.qualifiers = LinkQualifiers(mapping, self.links)
        self.log = log.bind(run_id=self.id, mapping=mapping.name, dry_run=options.dry_run)
        self._deferred = 0
        self._pending: dict[str, str] = {}
        self._assignments: Assignments | None = None
        self._roles: WrittenRoles | None = None
        # The store's objects written are carried on through their type's other mappings (``OnwardPush``).
        self._onward: OnwardPush | None = None
        # The objects of another type naming the source's objects this run links (``referrers.py``).
        self._referrers: Referrers | None = None
        # The last page's write results, for what runs once it is committed (roles, onward).
        self._page_results: list[WriteResult] = []
        # The last batch's creates: (the source linked to each, or None; the target as answered).
        self._batch_creates: list[tuple[str | None, Obj]] = []
        self._unidentified = 0  # source objects without an id: their targets cannot be told apart
        self._unresolved = 0  # unlinked source objects whose correlation or assessment failed
        self._held = 0  # target-phase deletes and unlinks not carried out because of them
        self._grown = 0  # objects and links this run inserted
        self._grown_analyzed = 0  # ... when the store's statistics were last refreshed
        self._analyze_at = 2000
        self._lock_refreshed = time.monotonic()
        self._partition: Partition | None = None  # the partition this run works on, when split
        self._helper = False  # working on another node's split run
        self._expected = 0  # objects in the id-only read of a split run
        self._partitions: list[dict[str, Any]] = []  # the partitions of a split run, for its summary
        # Whether the source phase claims the targets it accounts for, for the target phase
        # to leave them alone (``_visits_targets``).
        self._claiming = True
        self._targets_at = utcnow()  # set again as the run starts (``_prepare``)
        # What a page runs once committed (``_run_after_commit``): onLink, postAction.
        self._after_commit: tuple[list[tuple[Plan, Obj | None, str]], list[tuple[Plan, str | None]]] = ([], [])

    def run(self) -> ReconResult:
        with _running_lock:
            _running[self.id] = self.options.cancel
        try:
            # Every event of the run, the connectors' and the progress callback's included, names it.
            with structlog.contextvars.bound_contextvars(run_id=self.id, mapping=self.mapping.name), \
                    quiet_collector():
                return self._run()
        finally:
            with _running_lock:
                _running.pop(self.id, None)

    def _run(self) -> ReconResult:
        for interrupted in self.runs.fail_abandoned() + self.runs.acquire(self.lock, self.owner):
            # A split run whose process died: its counts are in its partitions.
            summarize_taken_over(self.store, interrupted)
        state, message, exit_code = "FAILED", None, 1
        taken_over = False  # ended elsewhere while this process was silent: its end stands
        stop_now = False  # told to stop at once (a second SIGTERM): nothing more is applied
        resources = Resources(self.project, self.store)
        recorded: str | None = None  # the mapping, once the run and its start event are recorded
        try:
            self.runs.start(self.id, self.mapping.name, job=self.options.job, dry_run=self.options.dry_run,
                            summary=self.counters.to_summary(), node=self.options.node, fire=self.options.fire,
                            started_by=self._started_by())
            recorded = self.mapping.name
            if self.options.recorded is not None:
                self.options.recorded.set()
            if self.options.on_start is not None:
                self.options.on_start()
            self.log.info("recon.start", source=self.mapping.source, target=self.mapping.target, job=self.options.job)
            source, target = self._open(resources)
            refused = self._refused_reads(source, target)
            if refused is None:
                self._execute(source, target)
            else:
                message = refused
                self.log.warning("recon.reads_denied", reason=refused)
            if self.counters.all_failed():
                first = self.counters.errors[0]["message"] if self.counters.errors else ""
                raise RunAborted(f"every object failed ({self.counters.error_count} errors; the first: {first})")
            state = "SUCCESS"
        except RunCanceled as exc:
            state, message = "CANCELED", str(exc)
        except RunTakenOver as exc:
            message, exit_code, taken_over = str(exc), exc.exit_code, True
        except IdsyncError as exc:
            message, exit_code = str(exc), exc.exit_code
        except KeyboardInterrupt:
            state, message, stop_now = "CANCELED", "interrupted", True
        except (OperationalError, InterfaceError) as exc:
            # The store went away mid-run (a connection cut, a restart): the operator's problem, not a bug.
            unavailable = store_error(exc)
            message, exit_code = str(unavailable), unavailable.exit_code
        except Exception as exc:
            self.log.exception("recon.crash")
            message = f"internal error: {internal_message(exc)}"
        finally:
            referrers = self._finish_referrers(state, message) if not taken_over and not stop_now else []
            onward = self._finish_onward(state)
            resources.close()
            self.counters.stage = f"COMPLETED_{state}" if state != "SUCCESS" else "COMPLETED"
            summary = self.counters.to_summary()
            summary["duration"] = round((time.monotonic() - self.counters.started) * 1000)
            if self._partitions:
                summary["partitions"] = self._partitions
            if onward:
                summary["onward"] = onward
            if referrers:
                summary["referrers"] = referrers
            try:
                ended = self.runs.finish(self.id, state, self.counters.stage, summary, message, mapping=recorded)
                taken_over = taken_over or (recorded is not None and not ended)
            finally:
                self.runs.release(self.lock, self.owner)
        if taken_over:
            return self._taken_over(summary, message)
        # A failed run is an error, a canceled one a warning: ``journalctl -p warning`` shows both.
        end = {"SUCCESS": self.log.info, "CANCELED": self.log.warning}.get(state, self.log.error)
        end("recon.end", state=state, message=message, duration_ms=summary["duration"],
                      situations={k: v for k, v in summary["situationSummary"].items() if v},
                      changes={k: v for k, v in summary["changes"].items() if v},
                      errors=self.counters.error_count)
        if state == "SUCCESS":
            exit_code = 0
        elif state == "CANCELED":
            exit_code = 130
        return ReconResult(self.id, self.mapping.name, state, summary, message, exit_code)

    def _taken_over(self, summary: dict[str, Any], message: str | None) -> ReconResult:
        """The result of a run that was ended elsewhere while this process was silent (its
        node taken for dead): the end recorded there stands, and this process says so."""
        recorded = self.runs.get(self.id) or {}
        state, told = recorded.get("state") or "FAILED", recorded.get("message") or message
        self.log.warning("recon.taken_over", state=state, message=told, reason=message)
        return ReconResult(self.id, self.mapping.name, state, summary, told, RunTakenOver.exit_code)

    def _still_held(self) -> None:
        """``RunTakenOver`` unless this run is still ACTIVE and, when it reads a partition,
        this process still owns it: asked before writes that no store transaction can undo
        (a target outside the store), so that a process resumed after its run or partition
        was taken over does not write a page the next commit would have refused."""
        if not self.runs.active(self.id):
            self._ended_elsewhere()
        part = self._partition
        if part is not None and not Partitions(self.store).held(self.id, part.part, owner_id()):
            raise RunTakenOver(_PARTITION_LOST)

    def _ended_elsewhere(self) -> NoReturn:
        """This run is no longer ACTIVE, though this process did not end it: a helper's run
        ended on the node that split it; any other run was ended by another process that took
        this one for dead."""
        if self._helper:
            raise RunCanceled("the run ended on the node that split it")
        raise RunTakenOver()

    # -- phases -------------------------------------------------------------

    def _started_by(self) -> str:
        """What started the run, as its start event says it: a job, or (``""``) someone by hand."""
        return f"job {self.options.job}" if self.options.job else ""

    def help(self) -> bool:
        """``help_partitions``: this run's share of another node's split run."""
        self._helper = True
        resources = Resources(self.project, self.store)
        state = "FAILED"
        try:
            source, target = self._open(resources)
            assessor, correlators = self._prepare(source, target)
            spec = self._source_spec()
            self._work_partitions(Partitions(self.store), source, target, assessor, correlators, spec)
            state = "SUCCESS"
        except RunCanceled:
            state = "CANCELED"
            return self.options.cancel.is_set()
        except RunTakenOver:
            state = "CANCELED"  # the partition is another worker's now: nothing more to do here
        except Exception:
            self.log.exception("recon.partition_crash")
        finally:
            self._finish_referrers(state, None)
            self._finish_onward(state)
            resources.close()
        return False

    def _listed(self, pages: Iterable[list[Obj]], phase: str) -> Iterator[list[Obj]]:
        """``pages``, the time spent waiting for each counted as the phase's listing (PingIDM's
        ``entryListDuration`` in a ``result`` script's statistics)."""
        found = iter(pages)
        while True:
            asked = time.monotonic()
            page = next(found, None)
            self.counters.waited(phase, time.monotonic() - asked)
            if page is None:
                return
            yield page

    def _finish_onward(self, state: str) -> list[dict[str, Any]]:
        """End the runs that carried this run's writes on (``OnwardPush``); never the run's
        failure. What each did (the run's summary lists them under ``onward``)."""
        if self._onward is None:
            return []
        try:
            return self._onward.finish(state)
        except Exception:
            self.log.exception("recon.onward_finish_failed")
            return []

    def _finish_referrers(self, state: str, message: str | None) -> list[dict[str, Any]]:
        """Apply once the objects of another type that name the source's objects this run
        linked (``referrers.py``), whatever ended the run (but a stop at once): the links
        stand, and the next run would not find those objects newly linked. The runs that applied them (the run's
        summary lists them under ``referrers``); never the run's failure."""
        if self._referrers is None:
            return []
        try:
            self._referrers.apply_noted()
        except Exception:
            self.log.exception("recon.referrers_not_applied")
        try:
            return self._referrers.finish(state if state in ("SUCCESS", "CANCELED") else "FAILED", message)
        except Exception:
            self.log.exception("recon.referrers_finish_failed")
            return []

    def _open(self, resources: Resources) -> tuple[Resource, Resource]:
        source = resources.open(self.mapping.source)
        if isinstance(source, ManagedResource):
            source = source.as_sync_source()  # a mapping may push a (hashed) password
        target = resources.open(self.mapping.target, dry_run=self.options.dry_run)
        if isinstance(target, ManagedResource):
            target = target.revealing_secrets()  # compared with a (hashed) password read from the source
            fanout = RoleFanout(self.project, self.store, target.schema, ImplicitSync(self.project, self.store,
                                                                                        resources))
            if fanout.watches and not self.options.dry_run:
                # Roles and assignments written push their users, as changes made through the API do.
                self._roles = WrittenRoles(fanout, ManagedResource(self.store, target.schema, with_secrets=True))
            if not self.options.dry_run:
                self._onward = OnwardPush.of(self.project, self.store, resources, self.mapping,
                                             note=f"carried on from recon {self.id} of {self.mapping.name}")
        referrers = Referrers(self.project, self.store, self.mapping.source, resources,
                              dry_run=self.options.dry_run, method="recon", event="recon",
                              note=f"applied again: recon {self.id} of {self.mapping.name} linked objects they name")
        self._referrers = referrers if referrers.watching and referrers.noting else None
        return source, target

    def _refused_reads(self, source: Resource, target: Resource) -> str | None:
        """Whether a provisioner denies a read this run makes (``operationOptions`` GET or
        SEARCH), checked before anything is read, so that a read refused midway is never
        taken for an empty system: ``ReadDenied`` when one is refused with an exception,
        the run's note when every refusal is ``DO_NOTHING`` (the run then reads and
        changes nothing), None when nothing is denied. A run lists and reads its source by
        id, reads its linked targets by id, and queries the target when it correlates or
        runs its target phase."""
        wanted = [(source, "search"), (source, "get"), (target, "get")]
        if self.mapping.correlations or self.mapping.run_target_phase:
            wanted.append((target, "search"))
        refused: list[str] = []
        for resource, kind in wanted:
            try:
                resource.check_read(kind)
            except ReadDenied as exc:
                if not exc.quiet:
                    raise
                refused.append(str(exc))
        return f"{'; '.join(refused)}: nothing was read" if refused else None

    def _source_spec(self) -> QuerySpec:
        m = self.mapping
        return QuerySpec(filter=m.source_query.filter, native=m.source_query.native,
                         fields=self._source_fields(), page_size=self.page_size)

    def _prepare(self, source: Resource, target: Resource) -> tuple[Assessor, dict[str, Correlator]]:
        m = self.mapping
        # Objects whose pushes failed are compared with the object the first failure recorded,
        # so "merge" lists also lose what those changes took away (``sync/retry.py``).
        previous = unrepaired_befores(self.store, m.name) if m.properties.has_merge() else {}
        assessor = Assessor(m, self.options, self.counters, secrets=self.project.secret_properties(m),
                            previous=previous, target_schema=target.schema if isinstance(target, ManagedResource)
                            else None, assignments=mapping_assignments(self.project, self.store, m),
                            clear_only=target.clear_secrets, denied=target.denied,
                            written=written_values(self.project, m, target), stored=target.stored,
                            recon_id=self.id)
        self._assignments = assessor.assignments
        # Store objects whose change the reverse mapping has not delivered yet are not overwritten.
        self._pending = pending_targets(self.store, self.project, m) if isinstance(target, ManagedResource) else {}
        correlators = self.qualifiers.correlators(target, self.project.queries)
        # The targets the target phase visits: those there now (``_visits_targets``).
        self._targets_at = utcnow()
        empty = isinstance(target, ManagedResource) and target.is_empty()
        if not self._helper:  # a helper of a split run claims as the run's plan says
            self._claiming = self._visits_targets(empty)
        if correlators and not m.correlate_empty_target_set and (empty or target.count() == 0):
            # PingIDM's correlateEmptyTargetSet (default false): nothing to find.
            self.log.info("recon.correlation_skipped", reason="empty target")
            correlators = {}
        return assessor, correlators

    def _visits_targets(self, empty: bool) -> bool:
        """Whether the target phase has objects to visit, which the source phase must claim:
        as PingIDM's, it visits the targets its query found when the run started, less those
        the source phase accounted for, so none where it runs no target phase or where the
        target (the store's type) had no object then. A store object created while the run
        reads, by it or beside it (the API, implicit sync), is never the target phase's
        (``created_before``): a first load writes no claim, and its target phase reads nothing."""
        return self.mapping.run_target_phase and not empty

    def _execute(self, source: Resource, target: Resource) -> None:
        m = self.mapping
        failure = on_recon(m, self.id)
        if failure is not None:  # as in PingIDM, the run fails
            raise RunAborted(f"{failure}; nothing was read")
        source.expect_listing()
        self.counters.source_total = source.count()
        # PingIDM's links.existing.total: the links there before the run, of every qualifier.
        self.counters.links_total = sum(self.qualifiers.links(q).count() for q in self.qualifiers.all()) or None
        assessor, correlators = self._prepare(source, target)
        self._stage("ACTIVE_RECONCILING_SOURCE")
        started = time.monotonic()
        self.counters.phase_started("source")
        spec = self._source_spec()
        bounds = self._split(source, spec, correlating=bool(correlators))
        if bounds is None:
            for page in self._listed(source.pages(spec), "source"):
                self._check_cancel()
                t0 = time.monotonic()
                self._source_page(page, source, target, assessor, correlators)
                self.counters.time("sourcePage", (time.monotonic() - t0) * 1000)
        else:
            self._partitioned(bounds, source, target, assessor, correlators, spec)
        self._revisit(source, target, assessor, correlators)
        self.counters.phases["source"] = time.monotonic() - started
        self.counters.phase_ended("source")
        if self.counters.source_total is None:  # a source not counted up front, now read whole
            self.counters.source_total = self.counters.source_processed
        if self.counters.source_processed == 0 and not m.allow_empty_source_set:
            raise SafetyLimitExceeded(
                f"the source {m.source} returned no objects; refusing to continue "
                "(set allowEmptySourceSet in the mapping if an empty source is expected)")
        if self._unidentified:
            # Their targets would look orphaned in the target phase: stop before it.
            raise SafetyLimitExceeded(
                f"{self._unidentified} source objects had no id (is the id attribute readable?); "
                "the target phase was skipped and nothing was deleted")
        if m.run_target_phase:
            self._analyze_before_target()
            self._stage("ACTIVE_RECONCILING_TARGET")
            started = time.monotonic()
            self.counters.phase_started("target")
            self._target_phase(source, target, assessor)
            self.counters.phases["target"] = time.monotonic() - started
            self.counters.phase_ended("target")
        self._stage("ACTIVE_DELETING")
        DeferredDeletes(
            run_id=self.id, mapping=m, store=self.store, runs=self.runs, links=self.qualifiers,
            counters=self.counters, dry_run=self.options.dry_run, max_deletes=self.options.max_deletes,
            page_size=self.page_size, check_cancel=self._check_cancel, roles=self._roles,
            after_write=self._onward.after if self._onward is not None else None,
        ).run(target)
        if self._held:
            raise SafetyLimitExceeded(
                f"{self._unresolved} source objects could not be correlated or assessed (see the run's errors); "
                f"any of them may own a target no link ties to it, so the target phase's {self._held} deletes "
                "and unlinks were held; fix those objects and run again")
        if "result" in m.hooks:
            # PingIDM's reconciliation statistics: ``global``, and ``source`` and ``target`` per phase.
            self._hook("result", self.counters.statistics(self.id))

    # -- a source phase split over the cluster (``partitions.py``) -----------------

    def _split(self, source: Resource, spec: QuerySpec, *,
               correlating: bool) -> list[tuple[str | None, str | None]] | None:
        """The id ranges to split this run's source phase into, or None to read it whole.

        This machine's workers (``heavy_only``) split only a run that correlates nothing (an
        empty target, or no correlation query): two sources of different ranges that
        correlate to one target could each create it, where one reader finds the first's."""
        splitter = self.options.splitter
        if splitter is None or not source.ranged_ids or (splitter.heavy_only and correlating):
            return None
        total = self.counters.source_total
        if total is not None and total < 2 * splitter.min_size:
            return None
        expected = total if total is not None else expected_counts(self.store, self.mapping.name).get("source")
        if splitter.heavy_only and not self._heavy(expected, splitter.min_size):
            return None  # mostly linked: bound by reading the source, which a split does not speed up
        # Helpers that can start before the partitions exist (a new interpreter each) start
        # as soon as the source is known to be large enough: while its ids are read.
        prepare, prepared, bounds = splitter.prepare, False, None
        ids = IdSample(seed=self.id)
        try:
            for page in source.pages(replace(spec, fields=[])):
                if prepare is not None and not prepared and max(expected or 0, ids.count) >= 2 * splitter.min_size:
                    prepare(self.id)
                    prepared = True
                ids.add(o["_id"] for o in page if o.get("_id"))
            count = min(splitter.partitions(), ids.count // splitter.min_size)
            if count >= 2:
                self._expected = ids.count
                bounds = cut(ids.ids, count)
        finally:
            if prepared and bounds is None and splitter.done is not None:
                splitter.done(self.id)  # not split after all (or the read failed): its helpers end
        return bounds

    def _heavy(self, expected: int | None, min_size: int) -> bool:
        """Whether the mapping links fewer than half of its source's objects (the source's
        count, or the last complete run's where the source does not say): a first load."""
        links = self.links.count()
        return links < min_size if not expected else links * 2 < expected

    def _plan(self) -> dict[str, Any]:
        o = self.options
        return {"allow_create": o.allow_create, "allow_update": o.allow_update, "allow_delete": o.allow_delete,
                "page_size": self.page_size, "rewrite_write_only": o.rewrite_write_only,
                "overrides": dict(o.overrides) if o.overrides else None, "claims": self._claiming}

    def _partitioned(self, bounds: list[tuple[str | None, str | None]], source: Resource, target: Resource,
                     assessor: Assessor, correlators: dict[str, Correlator], spec: QuerySpec) -> None:
        """Split the source phase: queue helpers for the other nodes, work on partitions here
        too, wait for the last, then count what all of them did into this run."""
        assert self.options.splitter is not None
        parts = Partitions(self.store)
        parts.create(self.id, bounds, self._plan())
        self.log.info("recon.split", partitions=len(bounds), objects=self._expected)
        splitter = self.options.splitter
        splitter.spread(self.id, len(bounds) - 1)
        own, read = self.counters, False
        states: list[Partition] = []
        try:
            while True:
                if splitter.reclaim is not None:
                    splitter.reclaim(self.id)
                self._work_partitions(parts, source, target, assessor, correlators, spec)
                states = parts.all(self.id)
                failed = next((p for p in states if p.state == "FAILED"), None)
                if failed is not None:
                    raise RunAborted(f"partition {failed.part} failed: {failed.message or 'read error'}; "
                                     "the target phase was skipped and nothing was deleted")
                if all(p.state == "SUCCESS" for p in states):
                    read = True
                    break
                self._check_cancel()
                self._show_partitions(states, self.counters.source_total)
                time.sleep(0.2)
        finally:
            self.counters = assessor.counters = own
            if splitter.done is not None:
                splitter.done(self.id)
            if not read:
                # The run ends here (a partition failed, the run was canceled): its workers
                # are stopped, and what their partitions committed is still this run's.
                with contextlib.suppress(OperationalError, InterfaceError):
                    states = parts.all(self.id)
            self._count_partitions(states, ended=not read)
        if own.source_processed < self._expected:
            raise SafetyLimitExceeded(
                f"the partitions read {own.source_processed} objects where the source listed {self._expected} "
                "ids: some may have been missed; the target phase was skipped and nothing was deleted")

    def _count_partitions(self, states: list[Partition], *, ended: bool) -> None:
        """Add what the partitions committed into this run's counters and list them;
        ``ended``: the run ends before all were read, and those not read to their end are
        listed CANCELED, as the run's end makes them (``end_unread``)."""
        for p in states:
            tally = (p.summary or {}).get("tally") or {}
            self.counters.absorb(tally)
            self._unidentified += int(tally.get("unidentified", 0))
            self._unresolved += int(tally.get("unresolved", 0))
        unread = {"PENDING", "ACTIVE"} if ended else set()
        self._partitions = [p.to_json() | ({"state": "CANCELED", "message": _NOT_READ} if p.state in unread else {})
                            for p in states]

    def _show_partitions(self, states: list[Partition], total: int | None) -> None:
        """The run's record while its partitions run: their counts added up, and each one's
        state; ``total``: the source's objects, where known."""
        shown = Counters(self.mapping.name, self.mapping.source, self.mapping.target, dry_run=self.options.dry_run)
        shown.source_total = total
        for p in states:
            shown.absorb((p.summary or {}).get("tally") or {})
        shown.stage = "ACTIVE_RECONCILING_SOURCE"
        if not self.runs.progress(self.id, shown.stage,
                                  shown.to_summary() | {"partitions": [p.to_json() for p in states]}):
            self._ended_elsewhere()
        self.runs.refresh(self.lock, self.owner)

    def _work_partitions(self, parts: Partitions, source: Resource, target: Resource, assessor: Assessor,
                         correlators: dict[str, Correlator], spec: QuerySpec) -> None:
        node = self.options.node or owner_id()
        while (part := parts.claim(self.id, owner_id(), node)) is not None:
            self._one_partition(parts, part, source, target, assessor, correlators, spec)

    def _one_partition(self, parts: Partitions, part: Partition, source: Resource, target: Resource,
                       assessor: Assessor, correlators: dict[str, Correlator], spec: QuerySpec) -> None:
        """Read one id range: its counts are its own (in its row), its deletes numbered apart."""
        saved = self.counters, self._deferred, self._unidentified, self._unresolved
        self.counters = assessor.counters = Counters(self.mapping.name, self.mapping.source, self.mapping.target,
                                                     dry_run=self.options.dry_run,
                                                     report="result" in self.mapping.hooks)
        self._deferred, self._unidentified, self._unresolved = part.part * SEQ_SPAN, 0, 0
        if part.attempts > 1:
            # Read before by a process that died or was taken for dead: the writes its pages
            # committed stay counted (this read finds them done), and the deletes they deferred
            # are dropped, to be deferred again by this read, which assesses every object anew.
            earlier = (part.summary or {}).get("tally") or {}
            self.counters.absorb({k: v for k, v in earlier.items() if k != "source_processed"})
            self.runs.undefer(self.id, part.part * SEQ_SPAN, (part.part + 1) * SEQ_SPAN)
        self._partition = part
        state, message = "FAILED", None
        ranged = replace(spec, filter=range_filter(spec.filter, part.low, part.high))
        shown = time.monotonic()
        try:
            for page in self._listed(source.pages(ranged), "source"):
                self._check_cancel()
                t0 = time.monotonic()
                self._source_page(page, source, target, assessor, correlators)
                self.counters.time("sourcePage", (time.monotonic() - t0) * 1000)
                if not self._helper and t0 - shown >= _SHOWN_EVERY:
                    # The run's process reads a partition too: the run's record still tells
                    # how far they all are, as while it waits for them.
                    self._show_partitions(parts.all(self.id), saved[0].source_total)
                    shown = t0
            state = "SUCCESS"
        except RunCanceled:
            state = "PENDING"  # handed back: another worker reads it
            raise
        except RunTakenOver:
            # Handed to another worker while this process was silent: that worker counts it.
            self.log.warning("recon.partition_lost", partition=part.part, message=_PARTITION_LOST)
            state = "LOST"
            raise
        except IdsyncError as exc:
            message = str(exc)
        except (OperationalError, InterfaceError) as exc:
            message = str(store_error(exc))
        except Exception as exc:
            self.log.exception("recon.partition_crash", partition=part.part)
            message = f"internal error: {internal_message(exc)}"
        finally:
            tally = self.counters.tally() | {"unidentified": self._unidentified, "unresolved": self._unresolved}
            if state != "LOST":
                parts.finish(self.id, part.part, owner_id(), state, {"plan": self._plan(), "tally": tally}, message)
            self.counters, self._deferred, self._unidentified, self._unresolved = saved
            assessor.counters = self.counters
            self._partition = None
        if state == "LOST":
            return
        self.log.info("recon.partition_end", partition=part.part, state=state, message=message,
                      objects=tally["source_processed"])

    def _source_fields(self) -> list[str] | None:
        """What to read of each source object: only what the mapping uses (``config.source_fields``)."""
        fields = source_fields(self.mapping)
        if fields is None:
            return None
        schema = self.project.managed.types.get(self.mapping.source.removeprefix("managed/"))
        model = schema.roles if schema is not None and self.mapping.source.startswith("managed/") else None
        # The assignments applied to the target are the source's effective ones (``sync/assignments.py``).
        extra = [model.effective_assignments] if model is not None and model.effective_assignments else []
        return list(fields) + [f for f in extra if f not in fields]

    def _source_page(self, page: list[Obj], source: Resource, target: Resource,
                     assessor: Assessor, correlators: dict[str, Correlator]) -> None:
        unique: dict[str, Obj] = {}
        for obj in page:
            sid = obj.get("_id")
            if not sid:
                self._unidentified += 1
                where = f" ({obj['dn']})" if obj.get("dn") else ""
                self._fail_object(f"a source object has no _id{where}", None, None)
                continue
            unfit = unfit_id("source", sid)
            if unfit is not None:
                self._fail_object(unfit, None, None)
                continue
            if sid in unique:
                self._fail_object(f"duplicate source id {sid} in one page; the second copy was skipped", sid, None)
                continue
            unique[sid] = obj
        self.counters.source_processed += len(page)
        before = self._referrers.linked(list(unique)) if self._referrers is not None else []
        self._assess_page(unique, source, target, assessor, correlators)
        if self._referrers is not None:
            self._referrers.note(list(unique), before)

    def _assess_page(self, unique: dict[str, Obj], source: Resource, target: Resource,
                     assessor: Assessor, correlators: dict[str, Correlator]) -> None:
        assessor.prefetch(list(unique))
        groups, failed = self.qualifiers.of_sources(list(unique.values()))
        for sid, error in failed.items():
            self._unresolved += 1  # its targets are unknown: the target phase must not take them for orphans
            self._fail_object(f"linkQualifiers script failed: {error}", sid, None)
        for qualifier, objs in groups.items():
            # One assessment per source and link qualifier: its own link, situation and target.
            links = self.qualifiers.links(qualifier)
            # A dry run writes nothing: the creates it answered are what a source assessed
            # again must find, as the real run's correlation finds them written and linked.
            simulated: list[tuple[str | None, Obj]] = []
            while objs:
                # A source whose correlation would find a target created earlier in this page
                # is assessed again once that create is written, as in a later page.
                kept, revisions = self._links_of(links, [o["_id"] for o in objs], target, assessor)
                linked = {sid: tid for sid, (tid, _) in kept.items()}
                if assessor.written is not None and assessor.written.enabled and not self.options.rewrite_write_only:
                    assessor.keep_written(links.written_of(list(linked)))
                self.counters.links_processed += len(linked)
                unchanged = self._unchanged(objs, kept, assessor, qualifier, revisions)
                wanted = [tid for sid, tid in linked.items() if sid not in unchanged]
                targets = target.get_many(wanted, self.mapping.default_target_fields) if wanted else {}
                plans = assessor.assess_sources(objs, linked, targets, correlators.get(qualifier), links, source,
                                                unchanged, simulated)
                retry = {p.source_id for p in plans if p.retry}
                self._apply([p for p in plans if not p.retry], target, source,
                            {sid: digest for sid, (_, digest) in kept.items() if sid not in unchanged},
                            (qualifier, unchanged))
                if self.options.dry_run and retry:
                    simulated.extend(self._batch_creates)
                objs = [o for o in objs if o["_id"] in retry]

    def _revisit(self, source: Resource, target: Resource, assessor: Assessor,
                 correlators: dict[str, Correlator]) -> None:
        """Assess once more the source objects whose references to objects of their own
        type could be resolved only once this run linked those (``store/system_refs.py``):
        a Salesforce user read, or pushed, before the run created its manager gets the
        manager now. The objects read count them once; their situations count twice."""
        ids: list[str] = []
        if isinstance(source, LinkedReferences):
            ids.extend(source.revisit())
        if isinstance(target, LinkedReferences):
            ids.extend(self.links.sources_of(target.revisit()).values())
        if not ids:
            return
        found = list(source.get_many(list(dict.fromkeys(ids)), self._source_fields()).values())
        self.log.info("recon.references_revisited", objects=len(found))
        processed = self.counters.source_processed
        for start in range(0, len(found), self.page_size):
            self._check_cancel()
            self._source_page(found[start:start + self.page_size], source, target, assessor, correlators)
        self.counters.source_processed = processed

    @staticmethod
    def _links_of(links: LinkSet, source_ids: list[str], target: Resource, assessor: Assessor,
                  ) -> tuple[dict[str, tuple[str, str | None]], dict[str, str] | None]:
        """The links of ``source_ids`` (source id -> target id, digest) and, where their
        digests may show targets unchanged, the targets' revisions, read with them."""
        if not isinstance(target, ManagedResource) or not assessor.digests.enabled:
            return links.targets_with_digests(source_ids), None
        found = links.targets_with_revisions(source_ids, target.object_type)
        return ({sid: (tid, digest) for sid, (tid, digest, _) in found.items()},
                {tid: rev for tid, _, rev in found.values() if rev is not None})

    @staticmethod
    def _unchanged(objs: list[Obj], kept: dict[str, tuple[str, str | None]], assessor: Assessor, qualifier: str,
                   revisions: dict[str, str] | None) -> dict[str, str]:
        """The linked sources whose target is known unchanged without reading it (``digests.py``);
        ``revisions``: of the linked targets, read with the links (None: no digest is used)."""
        if revisions is None or all(digest is None for _, digest in kept.values()):
            return {}
        return assessor.unchanged(objs, kept, revisions, qualifier)

    def _target_phase(self, source: Resource, target: Resource, assessor: Assessor) -> None:
        m = self.mapping
        # Ids are enough unless something looks at the targets: validTarget, or a
        # policy condition or action script.
        needs_objects = m.valid_target is not None or m.policies.reads_objects
        in_store = isinstance(target, ManagedResource)
        spec = QuerySpec(filter=m.target_query.filter, native=m.target_query.native,
                         fields=None if needs_objects else [], page_size=self.page_size,
                         unclaimed_by=self.id if in_store else None,
                         created_before=self._targets_at if in_store else None)
        total = 0
        if not self._claiming:
            # The store's type had no object when the run started: nothing is the phase's.
            self.counters.target_total = target.count() or 0
            return
        for page in self._listed(target.pages(spec), "target"):
            self._check_cancel()
            t0 = time.monotonic()
            total += len(page)
            ids = [o["_id"] for o in page if o.get("_id")]
            claimed = set() if in_store else self._claimed(target, ids)
            unfit = {o["_id"]: unfit_id("target", o["_id"]) for o in page if o.get("_id")}
            unclaimed = [o for o in page if o.get("_id") and o["_id"] not in claimed and unfit[o["_id"]] is None]
            for message in unfit.values():
                if message is not None:
                    self._fail_object(message, None, None)
            self.counters.target_processed += len(page)
            if unclaimed:
                # A target linked since the run started (by implicit sync, liveSync, the API) is
                # the next run's, as it is in PingIDM, whose target phase visits the ids it listed
                # before its source phase: neither assessed nor counted here.
                groups = list(self.qualifiers.of_targets(unclaimed, linked_before=self._targets_at))
                late = len(unclaimed) - len({t["_id"] for _, targets, _ in groups for t in targets})
                total -= late
                self.counters.target_processed -= late
                for qualifier, targets, sources_of in groups:
                    self.counters.links_processed += len(sources_of)
                    # PingIDM reads each linked source by id, whatever sourceQuery selected.
                    sources = source.get_many(list(sources_of.values()), self._source_fields()) if sources_of else {}
                    assessor.prefetch(list(sources))
                    if not needs_objects:
                        targets = self._with_values(target, targets, sources_of, sources)
                    if assessor.written is not None and assessor.written.enabled \
                            and not self.options.rewrite_write_only:
                        assessor.keep_written(self.qualifiers.links(qualifier).written_of(list(sources_of.values())))
                    self._apply(assessor.assess_targets(targets, sources_of, sources, qualifier), target, source)
            self.counters.time("targetPage", (time.monotonic() - t0) * 1000)
        # The share in maxDeletes is of the whole target, claimed objects included.
        self.counters.target_total = (target.count() or total) if in_store else total

    def _with_values(self, target: Resource, page: list[Obj], sources_of: dict[str, str],
                     sources: dict[str, Obj]) -> list[Obj]:
        """``page`` (ids only) with the targets whose linked source was found read
        in full: they may be updated from it (CONFIRMED), which needs what they hold.
        A target gone since its id was read is left out."""
        wanted = [o["_id"] for o in page if sources_of.get(o["_id"]) in sources]
        if not wanted:
            return page
        found = target.get_many(wanted, self.mapping.default_target_fields)
        wanted_ids = set(wanted)
        return [found[o["_id"]] if o["_id"] in wanted_ids else o for o in page
                if o["_id"] not in wanted_ids or o["_id"] in found]

    # -- acting -------------------------------------------------------------

    def _apply(self, plans: Sequence[Plan], target: Resource, source: Resource,
               kept: dict[str, str | None] | None = None,
               confirmed: tuple[str, Mapping[str, str]] | None = None) -> None:
        """Carry out one page's plans: target writes, then links, claims, audit;
        ``kept``: source id -> the digest its link holds now (``digests.py``);
        ``confirmed``: a link qualifier and its sources known unchanged by their digest
        (source id -> target id), which need no plan: they are counted and claimed.

        With the store as the target it is all one transaction, so a crash between
        the writes and the links cannot leave created objects that nothing links."""
        in_store = isinstance(target, ManagedResource)
        if not in_store and not self.options.dry_run and any(p.op for p in plans):
            self._still_held()  # writes to another system: no rollback would undo them
        # The page is counted as it is written: one the store rolled back (its disk full, its
        # connection cut, a second SIGTERM) wrote nothing of a store target, and counts nothing.
        mark = self.counters.mark() if in_store else None
        try:
            with writing(self.store, target) as conn:
                self._grown += self._apply_page(plans, target, conn, kept or {}, confirmed)
        except BaseException as exc:
            if mark is not None:
                self.counters.rewind(mark)
            if isinstance(exc, IdsyncError) or not isinstance(exc, Exception):
                raise
            # A page colliding with the rows of the process that took this run or partition over
            # while this one was silent (a link it made first: a unique key) rolled back: that
            # is the takeover, which ends this run as it should, not a crash of the run.
            self._still_held()
            raise
        self._run_after_commit()
        written, self._page_results = self._page_results, []
        if self._onward is not None and written:
            self._onward.after(written)
        if self._roles is not None and written:
            pushes = self._roles.after(written)
            if pushes:
                self.log.info("recon.roles_pushed", users=len({p.source_id for p in pushes}),
                              failed=sum(not p.ok for p in pushes))
        if self._grown >= self._analyze_at:
            # Tables that grow fast within one run need fresh planner statistics.
            self._analyze_at *= 4
            self._grown_analyzed = self._grown
            self.store.analyze(quick=True)
        if time.monotonic() - self._lock_refreshed >= _LOCK_REFRESH:
            # The lock lasts LOCK_TTL (ten minutes): refreshing it every page was a
            # transaction per page for nothing.
            self.runs.refresh(self.lock, self.owner)
            self._lock_refreshed = time.monotonic()
        if self.options.on_progress:
            self.options.on_progress(self.counters)

    def _run_after_commit(self) -> None:
        """The page's onLink hooks and policies' postAction scripts, its transaction committed."""
        linked, done = self._after_commit
        self._after_commit = ([], [])
        for plan, wrote, linked_id in linked:
            plan.after_link(self.mapping, self.counters, wrote, linked_id)
        for plan, target_id in done:
            plan.after_action(self.mapping, self.counters, target_id, self.id)

    def _agreed_at(self, plan: Plan, result: WriteResult | None, agreed: Mapping[str, Mapping[str, str]]) -> str | None:
        """The managed revision a written source plan leaves its link's two objects agreeing
        at (``links.in_step``): a managed source's, pushed whole to its target, or a managed
        target's made from the source. An object found unchanged keeps what its link holds,
        so that a recon with nothing to do writes nothing."""
        if plan.defer or not plan.source_phase or (plan.op is None and not plan.link):
            return None
        side = in_step_side(self.mapping)
        if side == "source":
            # Linked only (found by correlation, not compared): nothing says the two agree.
            return revision(plan.source_obj) if plan.op is not None or plan.change == "unchanged" else None
        if side != "target" or plan.op is None or result is None:
            return None
        if plan.op.kind == "create":
            return revision(result.obj)
        # An update carries the source's change: the two agree as a whole only if they did
        # before (a change of the store's own not pushed yet still waits for its replay).
        before = agreed.get(plan.qualifier, {}).get(plan.source_id or "")
        return revision(result.obj) if before is not None and before == revision(plan.target_obj) else None

    def _agreed_before(self, plans: Sequence[Plan]) -> dict[str, dict[str, str]]:
        """Per link qualifier, the managed revisions the links of the page's updates of a
        managed target agreed at before them (``_agreed_at``); none read elsewhere."""
        if in_step_side(self.mapping) != "target":
            return {}
        updated: dict[str, list[str]] = {}
        for plan in plans:
            if plan.op is not None and plan.op.kind == "update" and plan.source_id:
                updated.setdefault(plan.qualifier, []).append(plan.source_id)
        return {q: self.qualifiers.links(q).in_step_of(ids) for q, ids in updated.items()}

    def _apply_page(self, plans: Sequence[Plan], target: Resource, conn: Connection,
                    kept: dict[str, str | None], confirmed: tuple[str, Mapping[str, str]] | None = None) -> int:
        """``_apply`` within ``conn``'s transaction; the number of objects and links it created."""
        hold_pending(plans, self._pending)
        writes = [p for p in plans if p.op is not None and p.op.kind != "delete"]
        results: dict[int, WriteResult] = {}
        if writes:
            if self._roles is not None:
                self._roles.before([p.op for p in writes if p.op])
            for plan, written in zip(writes, target.write_batch([p.op for p in writes if p.op]), strict=True):
                results[id(plan)] = written
            if self._roles is not None or self._onward is not None:
                self._page_results = list(results.values())
        self._batch_creates = [(p.source_id if p.link else None, {**(r.obj or {}), "_id": r.id})
                               for p in writes if p.op is not None and p.op.kind == "create"
                               and (r := results[id(p)]).ok and r.id]
        new_links: list[tuple[str, str, str]] = []
        linked: list[tuple[Plan, Obj | None, str]] = []  # for onLink: the plan, the target written, its id
        relinks: list[tuple[str, str, str]] = []
        claims: list[str] = []
        created = self._created(target, results.values())
        new_claims: list[str] = []  # of objects created here: no claim can hold them yet
        audit: list[dict[str, Any]] = []
        deferred: list[dict[str, Any]] = []
        done: list[tuple[Plan, str | None]] = []
        digests: dict[str, dict[str, str]] = {}  # qualifier -> source id -> the digest its link keeps
        sealed: dict[str, dict[str, str]] = {}  # the same for write-only values written (``written.py``)
        assigned: dict[str, list[Obj]] = {}  # source id -> the assignments now applied (``assignments.py``)
        in_step: dict[str, dict[str, str]] = {}  # the managed revisions written links agree at (``links.py``)
        agreed = self._agreed_before(plans)
        c = self.counters
        if confirmed is not None and confirmed[1]:
            qualifier, unchanged = confirmed
            c.assessed("CONFIRMED", "UPDATE", qualifier, len(unchanged), phase="source", ids=unchanged)
            c.status["SUCCESS"] += len(unchanged)
            c.changes["unchanged"] += len(unchanged)
            claims.extend(unchanged.values())
            if self.audit_unchanged:
                audit.extend({"run_id": self.id, "mapping": self.mapping.name, "situation": "CONFIRMED",
                              "action": "UPDATE", "source_id": sid, "target_id": tid,
                              "status": "DRY_RUN" if self.options.dry_run else "SUCCESS", "message": None,
                              "changes": None, "link_qualifier": qualifier, "phase": "source"}
                             for sid, tid in unchanged.items())
        for plan in plans:
            if plan.situation:  # none when assessing the object failed
                c.assessed(plan.situation, plan.action, plan.qualifier,
                           phase="source" if plan.source_phase else "target",
                           ids=(plan.source_id if plan.source_phase else plan.target_id,))
            result = results.get(id(plan))
            target_id = plan.target_id
            if result is not None and result.ok:
                target_id = result.id or target_id
            if result is not None and isinstance(result.error, NotFound) and plan.op and plan.op.kind == "update":
                # The target went away after it was read: the next run sees MISSING.
                c.status["SUCCESS"] += 1
                c.changes["skipped"] += 1
                continue
            error = plan.error or (str(result.error) if result is not None and not result.ok else None)
            if error is None:
                error = plan.unlinked(self.mapping.target, target_id, result.obj if result is not None else None)
            if target_id:
                (new_claims if target_id in created else claims).append(target_id)
            claims.extend(plan.candidates)
            if plan.unresolved:
                self._unresolved += 1
            if error is None and plan.defer and not plan.source_phase and self._unresolved:
                self._held += 1
                error = (f"{plan.action} held: {self._unresolved} source objects could not be correlated or "
                         "assessed in this run, and one of them may own this target")
            if error is not None:
                self._count_failure(plan, error, audit)
                continue
            c.status["SUCCESS"] += 1
            if plan.change:
                c.changes[plan.change] += 1
            if plan.defer:
                # Audited once, by the deferred step, with what became of it.
                deferred.append({"action": plan.action, "situation": plan.situation, "source_id": plan.source_id,
                                 "target_id": plan.target_id, "message": plan.message or None,
                                 "qualifier": plan.qualifier, "phase": _phase(plan), "unlinks": plan.unlinks})
            if plan.digest is not None and plan.source_id and target_id:
                digest = self._digest(plan, result)
                if digest is not None and (plan.link or kept.get(plan.source_id) != digest):
                    digests.setdefault(plan.qualifier, {})[plan.source_id] = digest
            if plan.assigned is not None and plan.source_id:
                assigned[plan.source_id] = plan.assigned
            if plan.written is not None and plan.source_id and target_id and plan.op is not None:
                sealed.setdefault(plan.qualifier, {})[plan.source_id] = plan.written
            if plan.source_id and target_id and (rev := self._agreed_at(plan, result, agreed)) is not None:
                in_step.setdefault(plan.qualifier, {})[plan.source_id] = rev
            if plan.link and plan.source_id and target_id:
                new_links.append((plan.qualifier, plan.source_id, target_id))
                linked.append((plan, result.obj if result is not None and result.obj else None, target_id))
            elif plan.source_id and target_id and renamed(plan.target_id, target_id):
                # The write renamed the target (a DN id): its link follows it, nothing is recreated.
                relinks.append((plan.qualifier, plan.source_id, target_id))
            if (plan.audit or (self.audit_unchanged and plan.action != "NOREPORT")) and not plan.defer:
                audit.append({**plan.audit_row(self.id, self.mapping.name, target_id, self.options.dry_run),
                              "phase": _phase(plan)})
            if plan.post_action is not None:
                done.append((plan, target_id))
        c.changes["linked"] += len(new_links)
        c.links_created += len(new_links)
        # Run once the page is committed: a hook may write to the store through ``openidm``.
        self._after_commit = (linked if "onLink" in self.mapping.hooks else [], done)
        if not self.options.dry_run:
            if assigned and self._assignments is not None:
                self._assignments.last_sync.record(conn, assigned)
            if new_links or relinks:
                # A page's new links carry what they keep: no UPDATE of the rows just inserted.
                self.qualifiers.add_links(conn, new_links + relinks, digests, new_targets=created, written=sealed,
                                          in_step=in_step)
            linking = {(q, s) for q, s, _ in new_links + relinks}
            for qualifier, found in digests.items():
                self.qualifiers.links(qualifier).set_digests(
                    conn, {s: d for s, d in found.items() if (qualifier, s) not in linking})
            for qualifier, found in sealed.items():
                self.qualifiers.links(qualifier).set_written(
                    conn, {s: w for s, w in found.items() if (qualifier, s) not in linking})
            for qualifier, found in in_step.items():
                self.qualifiers.links(qualifier).set_in_step(
                    conn, {s: r for s, r in found.items() if (qualifier, s) not in linking})
        if not (writes or new_links or relinks or digests or audit or deferred):
            self.store.commit_lazily(conn)
        if self._claiming:
            self.runs.claim(conn, self.id, self._claim_keys(target, [c for c in claims if c]), new=new_claims)
        self.runs.defer(conn, self.id, self._deferred, deferred)
        self._deferred += len(deferred)
        self.runs.audit(conn, audit)
        # The counts commit with the page they count: a run whose process dies says what it wrote.
        # And only while the run is this process's to write: a run or partition taken over while
        # this process was silent (its node taken for dead) is another's, and the page rolls back.
        if self._partition is not None:
            tally = self.counters.tally() | {"unidentified": self._unidentified, "unresolved": self._unresolved}
            if not self.runs.beat(conn, self.id):  # a long partition must not look like a silent run
                self._ended_elsewhere()
            if not Partitions(self.store).progress(conn, self.id, self._partition.part, owner_id(),
                                                   {"plan": self._plan(), "tally": tally}):
                raise RunTakenOver(_PARTITION_LOST)
        elif not self.runs.progress(self.id, self.counters.stage, self.counters.to_summary(), conn):
            self._ended_elsewhere()
        return sum(1 for p in writes if p.op is not None and p.op.kind == "create") + len(new_links)

    # -- helpers ------------------------------------------------------------

    def _claim_keys(self, target: Resource, ids: list[str]) -> list[str]:
        """Target ids as this run claims them: as its links keep them (in lower case where
        the mapping's target ids ignore case), so that the target phase knows them in any
        case; the store's own ids as they are (compared in SQL)."""
        if isinstance(target, ManagedResource) or not self.links.folds_theirs:
            return ids
        return [self.links.key_of_theirs(i) for i in ids]

    def _claimed(self, target: Resource, ids: list[str]) -> set[str]:
        """The ids of ``ids`` (a system target's) this run claimed, in any case where its
        links ignore the case of target ids."""
        keys = self._claim_keys(target, ids)
        held = self.runs.claimed(self.id, keys)
        return held if keys is ids else {i for i, k in zip(ids, keys, strict=True) if k in held}

    def _created(self, target: Resource, results: Iterable[WriteResult]) -> set[str]:
        """The ids of the store objects this page's transaction created under ids it made
        up (none given by the mapping): no claim or link can name them yet."""
        if self.options.dry_run or not isinstance(target, ManagedResource):
            return set()
        return {r.id for r in results
                if r.ok and r.id and r.op.kind == "create" and not r.op.values.get("_id")}

    def _analyze_before_target(self) -> None:
        """Fresh statistics for the target phase's query of unclaimed targets: of the
        claims, which grew from nothing in this run, and of the objects and links when
        the run inserted a tenth as many as it read since they were last refreshed (a
        recon that changed little leaves them as they were: on PostgreSQL each large
        table costs about half a second)."""
        grown = self._grown - self._grown_analyzed
        if grown and grown * 10 >= self.counters.source_processed:
            self._grown_analyzed = self._grown
            self.store.analyze()
        elif self._claiming:
            self.store.analyze(["recon_claims"])

    @staticmethod
    def _digest(plan: Plan, result: WriteResult | None) -> str | None:
        """What the link of a done plan keeps (``digests.py``): its projection's digest and
        the target's revision, once the target is known to equal the projection."""
        if plan.digest is None:
            return None
        if result is None:
            return TargetDigests.kept(plan.digest, plan.rev) if plan.rev else None
        written = result.obj
        if not result.ok or written is None or plan.projected is None or not written.get("_rev"):
            return None
        return TargetDigests.kept(plan.digest, written["_rev"]) if TargetDigests.settled(plan.projected, written) \
            else None

    def _count_failure(self, plan: Plan, message: str, audit: list[dict[str, Any]]) -> None:
        self.counters.status["FAILURE"] += 1
        self.counters.changes["failed"] += 1
        self.counters.error(message, situation=plan.situation or None, source_id=plan.source_id,
                            target_id=plan.target_id, linkQualifier=_shown(plan.qualifier))
        row = plan.audit_row(self.id, self.mapping.name, plan.target_id, self.options.dry_run)
        row.update(status="FAILURE", message=message, phase=_phase(plan))
        audit.append(row)

    def _fail_object(self, message: str, source_id: str | None, target_id: str | None) -> None:
        self.counters.status["FAILURE"] += 1
        self.counters.error(message, source_id=source_id, target_id=target_id)

    def _hook(self, name: str, variables: dict[str, Any]) -> None:
        self._run_script(name, self.mapping.hooks[name], variables)

    def _run_script(self, name: str, script: Script | None, variables: dict[str, Any]) -> None:
        """Run a side-effect script; its failure is recorded, never fatal to the run."""
        if script is None:
            return
        try:
            script(**{"linkQualifier": "default", **variables}, mapping=self.mapping.name)
        except IdsyncError as exc:
            self.counters.error(f"{name} script failed: {exc}")

    def _stage(self, stage: str) -> None:
        self.counters.stage = stage
        if not self.runs.progress(self.id, stage, self.counters.to_summary()):
            self._ended_elsewhere()
        self.log.info("recon.phase", stage=stage)

    def _check_cancel(self) -> None:
        if self.options.cancel.is_set():
            raise RunCanceled("canceled at a page boundary; nothing was deleted")
        if self._helper:
            run = self.runs.get(self.id)
            if run is None or run["state"] != "ACTIVE":
                raise RunCanceled("the run ended on the node that split it")


def _shown(qualifier: str) -> str | None:
    """A link qualifier as errors name it: not at all for a mapping without qualifiers."""
    return None if qualifier == "default" else qualifier


def _phase(plan: Plan) -> str:
    """The recon phase that assessed ``plan``, as its audit entry keeps it (PingIDM's ``reconciling``)."""
    return "source" if plan.source_phase else "target"
