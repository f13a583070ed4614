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
   objects a mapping links that are not among them are deletes too. A managed
   type (``managed/user``) tells no deletes: the objects its mappings link and the
   store no longer holds are its deletes (``LinkSet.sources_missing``), applied
   before its changes.

The mappings of a source are those with ``enableSync`` (PingIDM's switch for
implicit sync and liveSync alike); a source none of them takes is a configuration
error. A managed source is read as a recon reads it (``as_sync_source``: hashed
secrets, ``onRetrieve``).

Applying one mapping's share of a batch is ``changes.py``: deletes run at once,
within the mapping's ``maxDeletes`` counted over the run. A change idsync itself
wrote to the source and reads back (a bidirectional project: the reverse mapping
pushed it) is an *echo*: when everything the mapping reads from the source is
what the reverse mapping would write there from the linked object, the change
says nothing new and is skipped, so the two mappings never bounce a value
between them. An attribute the reverse mapping would not write for that object
(a rule whose condition is false) is not idsync's: the change is skipped only
when the linked object already holds what the mapping makes of it. Store
objects whose push to the source failed are held as in a recon.

A changed object the source answers without an id fails as an entry of each
mapping's run (logged ``livesync.no_id`` at warning with what the source tells of it),
as a recon fails it; it cannot be kept for a retry, and the run goes on with the rest.

A change that fails through a mapping (the target refuses it, a script throws) does
not hold the token back: the object is kept in ``sync_failures`` in the transaction
that moves the token past it, and the source's next runs read it again (by id, as it
is then) and apply it before their new changes, until it goes
through or its retries are spent. Then the provisioner's ``syncFailureHandler`` says
what becomes of it (``config/sync_failures.py``): given up, with a warning or
without, kept as a dead letter, or handed to a script.

Each mapping that had changes to apply records a run (job ``liveSync``) with its
audit entries, like a recon; a run that read nothing records only its count in
``sync_tokens``. An object a source read by stamps reads again within its overlap
(``Change.reread``) counts as a change only where a mapping finds its target not holding
it; a run that read only such objects again, all held, is a run that read nothing.
Dry run: the targets simulate, no link and no token is written.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from idsync.config.mappings import MappingDef
from idsync.config.operation_options import DO_NOTHING
from idsync.config.project import Project
from idsync.config.source_fields import source_fields
from idsync.config.sync_failures import DEAD_LETTER, IGNORE_LOGGED, RETRY_FOREVER, SCRIPT, SyncFailurePolicy
from idsync.errors import (
    ConfigError,
    IdsyncError,
    OperationDenied,
    RunCanceled,
    SafetyLimitExceeded,
    SyncTokenExpired,
    internal_message,
)
from idsync.resource import Change, ChangeBatch, ChangeSource, Resource
from idsync.resources import Resources
from idsync.spool import IdSpool, chunks
from idsync.store.database import Store, store_error
from idsync.store.links import LinkSet
from idsync.store.locks import LIVESYNC
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore, owner_id
from idsync.store.sync_failures import SyncFailures
from idsync.store.tokens import SyncTokens
from idsync.sync.changes import ChangeApplier
from idsync.sync.options import ReconOptions
from idsync.sync.partitions import Splitter
from idsync.sync.qualifiers import LinkQualifiers
from idsync.sync.recon import ReconResult, run_recon
from idsync.sync.referrers import Referrers

__all__ = ["FULL_RECON", "LiveSyncOptions", "LiveSyncResult", "livesync_mappings", "run_livesync"]

log = structlog.get_logger(__name__)

# The ``method`` of a run that reconciled in full instead of reading changes (no token yet,
# or one the source no longer honours; ``full_recon`` says which), as the run and the
# source's state record it: what ran, never an empty method.
FULL_RECON = "full recon"


@dataclass
class LiveSyncOptions:
    dry_run: bool = False
    page_size: int | None = None
    job: str | None = None  # the job that started the run, for its full recons
    cancel: threading.Event = field(default_factory=threading.Event)
    # Cluster mode: a full recon is split over the nodes as a recon job's is (``partitions.py``).
    splitter: Splitter | None = None
    node: str | None = None


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
    onward: list[dict[str, Any]] = field(default_factory=list)  # the runs that carried the writes on
    retried: int = 0  # objects whose earlier change failed, read and applied again
    # Objects whose change failed in this run (kept for a retry, given up, or without an id),
    # and objects of another type applied again that failed (``referrers.py``).
    failed: int = 0
    given_up: int = 0  # objects past their retries: dropped, or kept as dead letters

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "state": self.state, "changes": self.changes, "method": self.method,
                "fullRecon": self.full_recon, "note": self.note, "error": self.message,
                "duration": self.duration_ms, "retried": self.retried, "failed": self.failed,
                "givenUp": self.given_up, "runs": self.runs, "onward": self.onward}


# PingIDM's ``failureHandlers`` in a ``postRetryAction`` script: invoking one hands the
# object to that built-in handler once the script has run (``_run_failure_script``).
_HANDLERS = ("var __handled = null, failureHandlers = {"
             f"loggedIgnore: {{invoke: function () {{ __handled = '{IGNORE_LOGGED}'; }}}}, "
             f"deadLetterQueue: {{invoke: function () {{ __handled = '{DEAD_LETTER}'; }}}}}}; ")


def _failure_policy(project: Project, source: str) -> SyncFailurePolicy:
    """The ``syncFailureHandler`` of the source's provisioner; a managed type's changes
    are retried until they go through (PingIDM's default)."""
    parts = source.split("/")
    provisioner = project.provisioners.get(parts[1]) if parts[0] == "system" and len(parts) > 1 else None
    return provisioner.sync_failure if provisioner is not None else RETRY_FOREVER


def livesync_mappings(project: Project, source: str) -> list[MappingDef]:
    """The mappings a change of ``source`` goes through, in processing order: those
    with ``enableSync`` (PingIDM's switch for implicit sync and liveSync alike)."""
    return [m for m in project.mappings if m.source == source and m.enable_sync]


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
            off = any(m.source == source for m in project.mappings)
            raise ConfigError("sync.json", "enableSync" if off else "source",
                              f"every mapping with {source} as its source has enableSync false, which turns "
                              "liveSync off for it" if off else
                              f"no mapping has {source} as its source, so liveSync has nothing to apply its "
                              "changes through")
        self.runs = RunStore(store)
        self.tokens = SyncTokens(store)
        self.lock = f"{LIVESYNC}{source}"
        self.owner = f"{owner_id()}:{uuid.uuid4()}"
        self.page_size = options.page_size or project.settings.recon.page_size
        self.log = log.bind(source=source, dry_run=options.dry_run)
        self.failures = SyncFailures(store)
        self.policy = _failure_policy(project, source)
        # The objects sync_failures holds for this source, as far as this run knows: whether
        # the change that failed was a delete.
        self._held: dict[str, bool] = {}
        self._scripted: dict[str, tuple[str, str | None]] = {}  # for the postRetryAction script: error, token
        self._referrers: Referrers | None = None  # made at the first change

    def run(self) -> LiveSyncResult:
        started = time.monotonic()
        self.runs.acquire(self.lock, self.owner)
        result = LiveSyncResult(self.source, "FAILED", exit_code=1)
        resources = Resources(self.project, self.store)
        appliers: list[ChangeApplier] = []
        try:
            with structlog.contextvars.bound_contextvars(livesync=self.source):
                self._run(resources, result, appliers)
        except RunCanceled as exc:
            result.state, result.message, result.exit_code = "CANCELED", str(exc), 130
        except IdsyncError as exc:
            result.message, result.exit_code = str(exc), exc.exit_code
        except (OperationalError, InterfaceError) as exc:
            # The store went away mid-run (a connection cut, a restart): the operator's problem, not a bug.
            unavailable = store_error(exc)
            result.message, result.exit_code = str(unavailable), unavailable.exit_code
        except Exception as exc:
            self.log.exception("livesync.crash")
            result.message = f"internal error: {internal_message(exc)}"
        finally:
            try:
                for applier in appliers:
                    run = applier.finish(result.state, result.message)
                    if run is not None:
                        result.runs.append(run)
                    result.onward.extend(applier.onward_runs)
                if self._referrers is not None:
                    result.runs.extend(self._referrers.finish(result.state, result.message))
                    result.failed += self._referrers.failed
                resources.close()
            finally:
                self.runs.release(self.lock, self.owner)
        result.duration_ms = round((time.monotonic() - started) * 1000)
        if not self.options.dry_run:
            self.tokens.record_run(self.source, result.state, result.message, changes=result.changes,
                                   full_recon=result.full_recon is not None, method=result.method)
        self._log_end(result)
        return result

    def _run(self, resources: Resources, result: LiveSyncResult, appliers: list[ChangeApplier]) -> None:
        source = resources.open(self.source)
        if isinstance(source, ManagedResource):
            source = source.as_sync_source()  # as a recon reads it: hashed secrets, onRetrieve
        if not isinstance(source, ChangeSource):
            raise ConfigError("sync.json", "source", f"{self.source} cannot tell its changes: liveSync reads "
                                                     "managed types and LDAP, SCIM, Salesforce, Database Table and "
                                                     "CSV systems (not XML files)")
        why = source.denial("sync")
        if why is not None:
            if source.denied["sync"] != DO_NOTHING:
                raise OperationDenied(f"{why}: no liveSync")
            result.note, result.state, result.exit_code = f"{why}: nothing was read", "SUCCESS", 0
            return
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

        def ready() -> list[ChangeApplier]:
            # Made for the first change only: a run that reads nothing costs nothing more.
            if not appliers:
                appliers.extend(ChangeApplier(self.project, self.store, m, resources, dry_run=self.options.dry_run,
                                              method=feed.method, note=feed.note) for m in self.mappings)
            return appliers

        batches: Iterable[ChangeBatch] = feed.batches
        if isinstance(source, ManagedResource):
            batches = self._with_deleted_objects(source.object_type, batches)
        if feed.complete_ids is not None:
            batches = self._with_gone(ready(), feed.complete_ids, batches)
        if not self.options.dry_run:
            self._held = self.failures.retrying(self.source)
            batches = itertools.chain(self._retried(source, result), batches)
        # The token each batch's changes were read at: the run's, then the last one a batch
        # carried (a syncrepl refresh's batches carry none but the last, its new cookie).
        # Given to the source again it reads them again: what a failure is recorded with.
        read_at = stored.token
        for batch in batches:
            if self.options.cancel.is_set():
                raise RunCanceled("canceled between two batches of changes; the token stays where it was")
            if not batch.retry:
                result.changes += len([c for c in batch.changes if not c.reread])
            # An object read again within a polling overlap is a change only where a mapping
            # found its target not holding it (``ChangeApplier.apply``).
            taken: set[str] = set()
            self._unidentified(batch.changes, result)
            save = batch.token is not None and batch.token != stored.token and not self.options.dry_run
            if batch.changes:
                referrers = self._referrers_of(resources, feed.method, feed.note)
                present = [c.id for c in batch.changes if c.obj is not None and c.id]
                before = referrers.linked(present)
                for index, applier in enumerate(ready()):
                    last = index == len(appliers) - 1
                    saver = self._saver(batch.token if save else None, feed.method, batch.changes,
                                        None if batch.retry else read_at, result, appliers)
                    taken |= applier.apply(batch.changes, saver if last and not self.options.dry_run else None)
                referrers.follow(present, before)
                self._run_failure_script(batch.changes)
            elif save:
                with self.store.begin() as conn:
                    self._saver(batch.token, feed.method)(conn)
            if not batch.retry:
                result.changes += len(taken)
            if batch.token is not None:
                read_at = batch.token
        # Objects retried alone and failing again do not fail the run: liveSync itself works,
        # and what waits is counted (``retrying``, the metric, the mapping's run).
        if result.changes and any(a.counters.error_count for a in appliers) \
                and not any(a.counters.status["SUCCESS"] for a in appliers):
            raise SafetyLimitExceeded("every change failed (see the runs' errors)")
        result.state, result.exit_code = "SUCCESS", 0

    def _referrers_of(self, resources: Resources, method: str, note: str | None) -> Referrers:
        """The other types naming this source's objects (``referrers.py``), made at the first change."""
        if self._referrers is None:
            self._referrers = Referrers(self.project, self.store, self.source, resources,
                                        dry_run=self.options.dry_run, method=method, note=note)
        return self._referrers

    def _unidentified(self, changes: Sequence[Change], result: LiveSyncResult) -> None:
        """Tell each changed object the source answered without an id: it fails as an entry of
        each mapping's run (``ChangeApplier.apply``), as in a recon, and cannot be kept for a
        retry; the run goes on with the others."""
        for change in changes:
            if change.unidentified:
                result.failed += 1
                self.log.warning("livesync.no_id", about=change.about or None)

    def _with_gone(self, appliers: Sequence[ChangeApplier], present: IdSpool,
                   batches: Iterable[ChangeBatch]) -> Iterable[ChangeBatch]:
        """The batches, after one per mapping with the linked objects the source no longer
        lists. Both sides as many as the directory: the linked ids are read and compared a
        page at a time, what is gone spooled, and applied once the links are read."""
        for applier in appliers:
            kept = applier.source_key
            listed = present if kept is None else IdSpool(map(kept, present))
            with closing(IdSpool()) as gone:
                for ids in chunks(applier.linked_source_ids(), self.page_size):
                    gone.update(listed.absent(ids))
                for ids in chunks(gone, self.page_size):
                    applier.apply([Change(sid, None) for sid in ids], None)
            if listed is not present:
                listed.close()
        yield from batches

    def _with_deleted_objects(self, object_type: str, batches: Iterable[ChangeBatch]) -> Iterable[ChangeBatch]:
        """The objects of a managed source that some mapping links and the store no longer
        holds, as deletes, then the batches."""
        gone: dict[str, None] = {}
        for m in self.mappings:
            qualifiers = LinkQualifiers(m, LinkSet.of(self.store, self.project, m))
            for qualifier in qualifiers.all():
                gone.update(dict.fromkeys(qualifiers.links(qualifier).sources_missing(object_type)))
        ids = list(gone)
        for start in range(0, len(ids), self.page_size):
            yield ChangeBatch([Change(sid, None) for sid in ids[start:start + self.page_size]], None)
        yield from batches

    def _saver(self, token: str | None, method: str, changes: Sequence[Change] = (),
               change_token: str | None = None, result: LiveSyncResult | None = None,
               appliers: Sequence[ChangeApplier] = ()) -> Callable[[Connection], None]:
        """What the transaction of a batch's last write does: store ``token`` (when the batch
        moves it) and settle the failures of the batch's ``changes``, so the token never
        moves past a change that is neither applied nor kept for a retry."""
        def save(conn: Connection) -> None:
            if token is not None:
                self.tokens.save(conn, self.source, token, method)
            if result is not None:
                self._settle(conn, changes, change_token, result, appliers)
        return save

    def _retried(self, source: Resource, result: LiveSyncResult) -> Iterable[ChangeBatch]:
        """The objects whose earlier change failed, as they are now. One no longer found is
        deleted again only when its failed change was a delete; after any other change, its
        going (or a new id, an LDAP DN renamed) is a change of its own that the source tells,
        so its retry is over."""
        ids = list(self._held)
        fields = self._fields()
        for start in range(0, len(ids), self.page_size):
            chunk = ids[start:start + self.page_size]
            found = source.get_many(chunk, fields)
            result.retried += len(chunk)
            gone = [i for i in chunk if i not in found and not self._held[i]]
            if gone:
                with self.store.begin() as conn:
                    self.failures.clear(conn, self.source, gone)
                for object_id in gone:
                    del self._held[object_id]
                self.log.info("livesync.retry_not_found", objects=len(gone))
            changes = [Change(i, found.get(i)) for i in chunk if i in found or i in self._held]
            if changes:
                yield ChangeBatch(changes, None, retry=True)

    def _settle(self, conn: Connection, changes: Sequence[Change], token: str | None, result: LiveSyncResult,
                appliers: Sequence[ChangeApplier]) -> None:
        """Keep the batch's failed objects for a retry, forget those that went through, and
        carry out the ``syncFailureHandler`` for those past their retries."""
        failed: dict[str, str] = {}
        for applier in appliers:
            failed.update(applier.failed)
            applier.failed.clear()
        done = [c.id for c in changes if c.id in self._held and c.id not in failed]
        if done:
            self.failures.clear(conn, self.source, done)
            for object_id in done:
                del self._held[object_id]
            self.log.info("livesync.retry_succeeded", objects=len(done))
        if not failed:
            return
        result.failed += len(failed)
        deletes = {c.id for c in changes if c.obj is None and c.id in failed}
        attempts = self.failures.record(conn, self.source, failed, token, deletes)
        self._held.update({object_id: object_id in deletes for object_id in failed})
        spent = {i: n for i, (n, _) in attempts.items() if self.policy.exhausted(n)}
        if not spent:
            return
        result.given_up += len(spent)
        for object_id in spent:
            self._held.pop(object_id, None)
        after = self.policy.after
        for object_id, n in spent.items():
            read_at = attempts[object_id][1]  # the token of its first failure, a retry's as well
            fields = {"object_id": object_id, "attempts": n, "error": failed[object_id], "token": read_at}
            if after == DEAD_LETTER:
                self.log.warning("livesync.dead_letter", **fields)
            elif after == IGNORE_LOGGED:
                self.log.warning("livesync.failure_ignored", **fields)
            elif after == SCRIPT:
                self._scripted[object_id] = (failed[object_id], read_at)
            else:
                self.log.info("livesync.failure_dropped", **fields)
        if after == DEAD_LETTER:
            self.failures.bury(conn, self.source, spent)
        elif after != SCRIPT:
            self.failures.drop(conn, self.source, spent)

    def _run_failure_script(self, changes: Sequence[Change]) -> None:
        """The ``postRetryAction`` script for each object of the batch past its retries, once
        the batch is committed (the script may write through ``openidm``): given PingIDM's
        ``syncFailure``, ``failureCause`` and ``failureHandlers`` (``loggedIgnore`` and
        ``deadLetterQueue``, whose ``invoke`` hands the object to that handler). One that
        ends well gives the object up (or to the handler it invoked); one that throws leaves
        it to be retried, as in PingIDM."""
        if not self._scripted or self.policy.script is None:
            return
        compiled = self.project.scripts.compile(dict(self.policy.script), file=self._provisioner_file(),
                                                key="syncFailureHandler.postRetryAction.script",
                                                base_dir=self.project.settings.project_dir)
        script = compiled.preceded(_HANDLERS, "__handled")
        objects = {c.id: c.obj for c in changes}
        parts = self.source.split("/")
        handled: dict[str, str | None] = {}
        for object_id, (error, token) in list(self._scripted.items()):
            failure = {"token": token, "systemIdentifier": parts[1] if len(parts) > 2 else self.source,
                       "objectType": parts[-1], "uid": object_id, "failedRecord": objects.get(object_id)}
            try:
                handled[object_id] = script(syncFailure=failure, failureCause=error, context={})
            except IdsyncError as exc:
                self.log.warning("livesync.failure_script_failed", object_id=object_id, error=str(exc))
        errors = {object_id: error for object_id, (error, _) in self._scripted.items()}
        self._scripted.clear()
        buried = [i for i, how in handled.items() if how == DEAD_LETTER]
        for object_id, how in handled.items():
            if how is not None:  # the script handed the object to a built-in handler
                event = "livesync.dead_letter" if how == DEAD_LETTER else "livesync.failure_ignored"
                self.log.warning(event, object_id=object_id, error=errors[object_id])
        with self.store.begin() as conn:
            self.failures.bury(conn, self.source, buried)
            self.failures.drop(conn, self.source, [i for i in handled if i not in buried])

    def _provisioner_file(self) -> str:
        parts = self.source.split("/")
        provisioner = self.project.provisioners.get(parts[1]) if parts[0] == "system" else None
        return provisioner.file if provisioner is not None else "sync.json"

    def _fields(self) -> list[str] | None:
        """What to read of a changed object: the union of what each mapping of the source
        reads in a recon (``config.source_fields``: its property rules, conditions and
        correlation queries, or ``sourceQuery._fields``/``defaultSourceFields``); the
        source's default set when one of them may read anything (a script given the object)."""
        fields: set[str] = set()
        for m in self.mappings:
            wanted = source_fields(m)
            if wanted is None:
                return None
            fields.update(wanted)
        return sorted(fields)

    def _full_recon(self, source: ChangeSource, result: LiveSyncResult, reason: str) -> None:
        """Take the source's position, reconcile every mapping in full, then store the position.

        The position is taken before any partition of a split recon starts: a change made
        while the partitions are read, in a range already read, comes with the next run."""
        result.full_recon, result.method = reason, FULL_RECON
        self.log.info("livesync.full_recon", reason=reason)
        token = source.latest_token()
        recons: list[ReconResult] = []
        for m in self.mappings:
            if self.options.cancel.is_set():
                raise RunCanceled("canceled before the full recon of " + m.name)
            recon = run_recon(self.project, self.store, m.name, ReconOptions(
                dry_run=self.options.dry_run, page_size=self.options.page_size, job=self.options.job,
                cancel=self.options.cancel, splitter=self.options.splitter, node=self.options.node))
            recons.append(recon)
            result.runs.append({"mapping": m.name, "id": recon.id, "state": recon.state, "fullRecon": True,
                                "counts": {k: v for k, v in recon.summary.get("changes", {}).items() if v}})
            result.onward.extend(recon.summary.get("onward", []))
            if recon.state != "SUCCESS":
                result.exit_code = recon.exit_code
                result.message = (f"the full recon of {m.name} ended {recon.state}: {recon.message}; "
                                  "no token was stored, the next liveSync run reconciles again")
                result.state = "CANCELED" if recon.state == "CANCELED" else "FAILED"
                return
        if not self.options.dry_run:
            with self.store.begin() as conn:
                self.tokens.save(conn, self.source, token, FULL_RECON)
        result.state, result.exit_code = "SUCCESS", 0

    def _log_end(self, result: LiveSyncResult) -> None:
        fields = {"state": result.state, "changes": result.changes, "method": result.method,
                  "duration_ms": result.duration_ms, "full_recon": result.full_recon, "message": result.message,
                  "failed": result.failed, "retried": result.retried}
        if result.state == "FAILED":
            self.log.error("livesync.end", **fields)
        elif result.state == "CANCELED" or result.failed or any(r.get("state") != "SUCCESS" for r in result.runs):
            # Objects that failed (kept for a retry) are the operator's to see: ``journalctl -p warning``.
            self.log.warning("livesync.end", **fields)
        elif result.changes or result.full_recon:
            self.log.info("livesync.end", **fields)
        else:
            # A run every few seconds that found nothing: not worth a line a run at info.
            self.log.debug("livesync.end", **fields)
