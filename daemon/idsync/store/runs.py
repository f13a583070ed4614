"""Recon run records, their audit trail, and the bookkeeping a run keeps while it works.

* ``recon_runs``: one row per run, its state and a PingIDM-shaped summary,
  refreshed at every page so ``idsync status`` shows a live run.
* ``audit``: one row per non-trivial per-object outcome (never secret values).
  A reconciliation's run adds PingIDM's ``start`` and ``summary`` events (``RUN_EVENTS``,
  their ``phase``): the run's beginning and end, no object of theirs; a run's entries
  (``audit_entries``, ``audit_page``) are the others. A failed implicit-sync push
  may keep, under ``AUDIT_BEFORE`` in its ``changes``, the source object before its
  change (secrets removed) for the push that repairs it; it is bookkeeping, not a
  change, and readers of the trail do not see it.
* ``recon_claims``: target ids the source phase accounted for.
* ``recon_deferred``: deletes and unlinks waiting for the end of the run.
* ``locks``: one holder per name (a mapping, a job) across processes and hosts;
  the lock of a holder that is gone is broken by the next one wanting it
  (``locks.py``).
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, func, insert, or_, select, update

from idsync.errors import PeerError
from idsync.store.database import Store, as_utc, fits_key, utcnow
from idsync.store.idpages import claim_ids
from idsync.store.locks import LOCK_TTL, Locks, end_later, end_runs, process_gone, process_owner
from idsync.store.partitions import end_unread
from idsync.store.tables import audit, claims, deferred, recon_runs

__all__ = ["AUDIT_BEFORE", "LOCK_TTL", "RUN_EVENTS", "RunStore", "is_entry", "owner_id", "shown_audit"]

_CHUNK = 500
AUDIT_BEFORE = "_sourceBefore"
# The ``phase`` of a reconciliation's first and last audit rows (PingIDM's ``entryType``).
RUN_EVENTS = ("start", "summary")
SILENT = "interrupted: the process running it gave no sign of life for {minutes} minutes"


def owner_id() -> str:
    """This process as a lock owner (``locks.py``); a run appends ``:RUN_ID``."""
    return process_owner()


# What an audit entry holds, as RunStore.audit writes it.
_AUDIT_COLUMNS = ("ts", "run_id", "mapping", "situation", "action", "source_id", "target_id", "status", "message",
                  "changes", "link_qualifier", "phase", "ambiguous")


def _told(message: str | None) -> str | None:
    """A message as a text column takes it on every store: a NUL character (from a
    value an error quotes) spelt ``\\u0000``, since PostgreSQL refuses it, and half of a
    character (an unpaired surrogate) spelt as its escape, since no driver encodes it."""
    if not message:
        return message
    if not message.isascii():
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message.replace("\x00", "\\u0000")


def _key(object_id: str | None) -> str | None:
    """An id as an audit entry keeps it: none for one no key column holds (``fits_key``),
    which the entry's message names (``sync/system_ids.py``), so the entry is still written."""
    return object_id if object_id is None or fits_key(object_id) else None


def _keys(ids: Sequence[str] | None) -> list[str] | None:
    """The candidates of an entry (``ambiguous``) spelt as a message spells them (``_told``)."""
    return None if ids is None else [_told(i) or "" for i in ids]


def is_entry() -> ColumnElement[bool]:
    """The audit rows that are a run's entries, not its ``start`` or ``summary``."""
    return or_(audit.c.phase.is_(None), audit.c.phase.not_in(RUN_EVENTS))


def _simple_summary(summary: Mapping[str, Any]) -> str:
    """PingIDM's summary event message: each situation met and how often."""
    counts = summary.get("situationSummary") or {}
    return " ".join(f"{k}: {v}" for k, v in counts.items() if v) or "no objects"


def shown_audit(row: Mapping[Any, Any]) -> dict[str, Any]:
    """An audit row as its readers see it: without the bookkeeping of ``AUDIT_BEFORE``."""
    out = dict(row)
    changes = out.get("changes")
    if isinstance(changes, dict) and AUDIT_BEFORE in changes:
        out["changes"] = {k: v for k, v in changes.items() if k != AUDIT_BEFORE} or None
    return out


class RunStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- runs ------------------------------------------------------------

    def start(self, run_id: str, mapping: str, *, job: str | None, dry_run: bool, summary: Mapping[str, Any],
              node: str | None = None, fire: dt.datetime | None = None, started_by: str | None = None,
              lockless: bool = False) -> None:
        """Record a new ACTIVE run; ``node`` defaults to this host's name, ``fire`` is the scheduled
        fire it runs for (none when started by hand). ``started_by``: a reconciliation's, whose
        start (and, at ``finish``, summary) the audit records as PingIDM's recon events; it
        says what started it (a job, a script; ``""``: someone by hand). ``lockless``: a run
        that takes no lock (a one-object push), recorded with this process as its owner so
        that a daemon starting can end it if this process dies first (``daemon/recovery.py``)."""
        now = utcnow()
        with self.store.begin() as conn:
            conn.execute(insert(recon_runs).values(
                id=run_id, mapping=mapping, job=job, state="ACTIVE", stage="ACTIVE_INITIALIZED",
                dry_run=dry_run, started=now, heartbeat=now, summary=dict(summary),
                node=node or socket.gethostname(), fire=fire, owner=process_owner() if lockless else None))
            if started_by is not None:
                by = f" by {started_by}" if started_by else ""
                self.audit(conn, [{"run_id": run_id, "mapping": mapping, "status": "SUCCESS", "phase": "start",
                                   "message": f"Reconciliation initiated{by}"}])

    def progress(self, run_id: str, stage: str, summary: Mapping[str, Any], conn: Connection | None = None) -> bool:
        """Record the counts of a run still ACTIVE; whether it was (False: it was ended
        elsewhere, such as by a node that took this one for dead: ``RunTakenOver``)."""
        stmt = update(recon_runs).where(recon_runs.c.id == run_id, recon_runs.c.state == "ACTIVE").values(
            stage=stage, summary=dict(summary), heartbeat=utcnow())
        if conn is not None:
            return bool(conn.execute(stmt).rowcount)
        with self.store.begin() as own:
            return bool(own.execute(stmt).rowcount)

    def beat(self, conn: Connection, run_id: str) -> bool:
        """Show the run alive without touching its counts (a split run's pages count in their
        partition); whether it is still ACTIVE, as ``progress``."""
        return bool(conn.execute(update(recon_runs).where(recon_runs.c.id == run_id, recon_runs.c.state == "ACTIVE")
                                 .values(heartbeat=utcnow())).rowcount)

    def active(self, run_id: str) -> bool:
        """Whether run ``run_id`` is still ACTIVE (not ended elsewhere)."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(recon_runs.c.id).where(
                recon_runs.c.id == run_id, recon_runs.c.state == "ACTIVE")).first() is not None

    def finish(self, run_id: str, state: str, stage: str, summary: Mapping[str, Any], message: str | None, *,
               mapping: str | None = None) -> bool:
        """Record the run's end; ``mapping``: a reconciliation's (``start(started_by=...)``),
        whose summary the audit records too. A run is ended once: one that was ended elsewhere
        meanwhile (a node that took this one for dead failed it) keeps that end, and this
        returns False. When the store cannot take it, the run's state
        and message are recorded by this process's next lock taken once it answers
        (``locks.end_later``), the counts being those its last committed write left."""
        try:
            with self.store.begin() as conn:
                ended = conn.execute(update(recon_runs).where(
                    recon_runs.c.id == run_id, recon_runs.c.state == "ACTIVE").values(
                    state=state, stage=stage, summary=dict(summary), message=_told(message), ended=utcnow()))
                if ended.rowcount and mapping is not None:
                    self.audit(conn, [{"run_id": run_id, "mapping": mapping, "phase": "summary",
                                       "status": "SUCCESS" if state == "SUCCESS" else "FAILURE",
                                       "message": _simple_summary(summary)}])
                if ended.rowcount:
                    end_unread(conn, [run_id], state)
                conn.execute(delete(claims).where(claims.c.run_id == run_id))
                conn.execute(delete(deferred).where(deferred.c.run_id == run_id))
        except PeerError:
            end_later(run_id, state, _told(message))
            raise
        return bool(ended.rowcount)

    def resummarize(self, run_id: str, state: str, summary: Mapping[str, Any]) -> bool:
        """Replace the summary of a run that ended in ``state`` elsewhere (taken over: its own
        end never wrote one); whether it had so ended."""
        with self.store.begin() as conn:
            return bool(conn.execute(update(recon_runs).where(recon_runs.c.id == run_id, recon_runs.c.state == state)
                                     .values(summary=dict(summary))).rowcount)

    def retell(self, run_id: str, state: str, message: str | None) -> bool:
        """Say why a run that ended in ``state`` stopped (a job's timeout canceled it);
        whether it had so ended."""
        with self.store.begin() as conn:
            return bool(conn.execute(update(recon_runs).where(recon_runs.c.id == run_id, recon_runs.c.state == state)
                                     .values(message=_told(message))).rowcount)

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(recon_runs).where(recon_runs.c.id == run_id)).mappings().first()
        return self._row(row) if row else None

    def recent(self, limit: int = 20, mapping: str | None = None, *,
               except_jobs: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The newest runs (of ``mapping``), but those of ``except_jobs``."""
        query = select(recon_runs).order_by(recon_runs.c.started.desc()).limit(limit)
        if mapping:
            query = query.where(recon_runs.c.mapping == mapping)
        if except_jobs:
            query = query.where(func.coalesce(recon_runs.c.job, "").not_in(list(except_jobs)))
        with self.store.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query).mappings()]

    def search(self, *, mapping: str | None = None, job: str | None = None, state: str | None = None,
               since: dt.datetime | None = None, until: dt.datetime | None = None,
               before: tuple[dt.datetime, str] | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Runs newest first, filtered; ``before`` (started, id) continues a previous page."""
        rr = recon_runs
        query = select(rr).order_by(rr.c.started.desc(), rr.c.id.desc()).limit(limit)
        for column, value in ((rr.c.mapping, mapping), (rr.c.job, job), (rr.c.state, state)):
            if value:
                query = query.where(column == value)
        if since is not None:
            query = query.where(rr.c.started >= since)
        if until is not None:
            query = query.where(rr.c.started < until)
        if before is not None:
            query = query.where(or_(rr.c.started < before[0], and_(rr.c.started == before[0], rr.c.id < before[1])))
        with self.store.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query).mappings()]

    def fail_abandoned(self, silent_for: dt.timedelta = LOCK_TTL) -> list[str]:
        """Fail the runs left ACTIVE by a process that is gone: the holder of their lock is
        (``locks.py``), or their heartbeat stopped ``silent_for`` ago; the runs failed."""
        failed = Locks(self.store).break_gone()
        cutoff = utcnow() - silent_for
        message = SILENT.format(minutes=round(silent_for.total_seconds() / 60))
        with self.store.begin() as conn:
            silent = [r[0] for r in conn.execute(select(recon_runs.c.id).where(
                recon_runs.c.state == "ACTIVE", recon_runs.c.heartbeat < cutoff))]
            return failed + [run_id for run_id in silent if end_runs(conn, [run_id], "FAILED", message)]

    @staticmethod
    def _row(row: Any) -> dict[str, Any]:
        out = dict(row)
        for key in ("started", "ended", "heartbeat", "fire"):
            out[key] = as_utc(out[key])
        return out

    # -- audit -----------------------------------------------------------

    def audit(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            now = utcnow()
            self.store.insert_rows(conn, audit, _AUDIT_COLUMNS, [
                (now, r.get("run_id"), r["mapping"], r.get("situation"), r.get("action"), _key(r.get("source_id")),
                 _key(r.get("target_id")), r["status"], _told(r.get("message")), r.get("changes"),
                 r.get("link_qualifier"), r.get("phase"), _keys(r.get("ambiguous")))
                for r in rows])

    def audit_entries(self, run_id: str, limit: int = 1000, status: str | None = None) -> list[dict[str, Any]]:
        query = select(audit).where(audit.c.run_id == run_id, is_entry()).order_by(audit.c.seq).limit(limit)
        if status:
            query = query.where(audit.c.status == status)
        with self.store.engine.connect() as conn:
            return [shown_audit(r) for r in conn.execute(query).mappings()]

    def audit_statuses(self, run_id: str) -> set[str]:
        """The statuses a run's entries have (``DRY_RUN`` for a preview's)."""
        query = select(audit.c.status).where(audit.c.run_id == run_id, is_entry()).distinct()
        with self.store.engine.connect() as conn:
            return {r[0] for r in conn.execute(query) if r[0]}

    def audit_page(self, run_id: str, *, after: int = 0, limit: int = 50, text: str | None = None,
                   situation: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """A run's audit in order from ``after`` (a ``seq``); ``text`` is the start of a source or target id."""
        query = (select(audit).where(audit.c.run_id == run_id, audit.c.seq > after, is_entry())
                 .order_by(audit.c.seq).limit(limit))
        if text:
            query = query.where(or_(audit.c.source_id.startswith(text, autoescape=True),
                                    audit.c.target_id.startswith(text, autoescape=True)))
        if situation:
            query = query.where(audit.c.situation == situation)
        if status:
            query = query.where(audit.c.status == status)
        with self.store.engine.connect() as conn:
            return [shown_audit(r) for r in conn.execute(query).mappings()]

    # -- claims and deferred ops -------------------------------------------

    def claim(self, conn: Connection, run_id: str, target_ids: Sequence[str], *, new: Sequence[str] = ()) -> None:
        """Claim ``target_ids`` for ``run_id`` (those claimed already are left alone) and
        ``new``: ids the same transaction just generated for the objects it created, which
        no claim can hold yet: inserted as they are (PostgreSQL's COPY), without the
        duplicate check that costs PostgreSQL a speculative insertion per row."""
        claim_ids(self.store, conn, claims, {"run_id": run_id}, "target_id", target_ids)
        if new:
            self.store.insert_rows(conn, claims, ("run_id", "target_id"), [(run_id, i) for i in new])

    def claimed(self, run_id: str, target_ids: Sequence[str], conn: Connection | None = None) -> set[str]:
        if conn is None:
            with self.store.engine.connect() as own:
                return self.claimed(run_id, target_ids, own)
        found: set[str] = set()
        for start in range(0, len(target_ids), _CHUNK):
            rows = conn.execute(select(claims.c.target_id).where(
                claims.c.run_id == run_id, self.store.in_(claims.c.target_id, target_ids[start:start + _CHUNK])))
            found.update(r[0] for r in rows)
        return found

    def defer(self, conn: Connection, run_id: str, start_seq: int, ops: Sequence[Mapping[str, Any]]) -> None:
        self.store.insert_many(conn, deferred, [
            {"run_id": run_id, "seq": start_seq + i, "op": dict(op)} for i, op in enumerate(ops)])

    def undefer(self, run_id: str, first_seq: int, end_seq: int) -> None:
        """Drop the deferred ops of ``run_id`` numbered from ``first_seq`` up to ``end_seq``
        (excluded): a partition's, which is read again."""
        with self.store.begin() as conn:
            conn.execute(delete(deferred).where(deferred.c.run_id == run_id, deferred.c.seq >= first_seq,
                                                deferred.c.seq < end_seq))

    def deferred_pages(self, run_id: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        last = -1
        while True:
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    select(deferred.c.seq, deferred.c.op)
                    .where(deferred.c.run_id == run_id, deferred.c.seq > last)
                    .order_by(deferred.c.seq).limit(page_size)).all()
            if not rows:
                return
            yield [r.op for r in rows]
            last = rows[-1].seq

    def deferred_count(self, run_id: str) -> int:
        with self.store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(deferred).where(
                deferred.c.run_id == run_id)).scalar_one()

    # -- locks (``locks.py``) ----------------------------------------------

    def acquire(self, name: str, owner: str, ttl: dt.timedelta = LOCK_TTL) -> list[str]:
        return Locks(self.store).acquire(name, owner, ttl)

    def refresh(self, name: str, owner: str, ttl: dt.timedelta = LOCK_TTL) -> None:
        Locks(self.store).refresh(name, owner, ttl)

    def release(self, name: str, owner: str) -> None:
        Locks(self.store).release(name, owner)

    def gone(self, runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Of ``runs`` (as ``recent`` reads them), the ACTIVE ones whose process is gone (a
        ``kill -9``, a crash), by id, with why: what the next start of a daemon, or the next
        run of the mapping, records them FAILED with. Only this host's processes can be told."""
        active = [r for r in runs if r["state"] == "ACTIVE"]
        if not active:
            return {}
        holders = Locks(self.store).holders()
        now = utcnow()
        found: dict[str, str] = {}
        for r in active:
            if r.get("owner"):  # a run without a lock (a push, liveSync)
                why = process_gone(r["owner"])
            else:
                holder = holders.get(f"recon:{r['mapping']}")
                why = holder.gone(now) if holder is not None and holder.run_id == r["id"] else None
            if why is not None:
                found[r["id"]] = why
        return found

    def lock_holder(self, name: str) -> str | None:
        holder = Locks(self.store).holder(name)
        return holder.owner if holder else None
