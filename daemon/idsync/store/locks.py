"""Locks in the store: one holder per name (``recon:MAPPING``, ``job:JOB``) across
processes and hosts, and what happens when the holder is gone.

An owner reads ``HOST:PID@START:RUN``: the host name, the process id, the
process's start time (clock ticks since boot, so a pid the system gave to
another process since is not taken for the holder) and the run it guards (a
recon run id for ``recon:`` locks, a job run id for ``job:`` locks). Owners
written by older versions lack ``@START``; their pid alone is checked.

A holder is *gone* when

* its lock expired: it stopped refreshing it for ``LOCK_TTL`` (any host);
* it is a process of this host that no longer exists, or whose pid now belongs
  to a process started at another time;
* it is this very process, but nothing in it holds the lock any more: its
  release failed (the store was unreachable at that moment) and is done now.

The next ``acquire`` of a gone holder's lock breaks it at once, and the recon run
that lock guarded, if still ACTIVE, is marked FAILED ("interrupted: owner process
N on HOST is gone") with the counts its pages committed, its claims and deferred
deletes dropped. A ``livesync:SOURCE`` lock broken so guarded a liveSync run that
never counted itself: it is counted FAILED with that reason in the source's counters
(``tokens.py``), and the runs of its mappings, which take no lock, are ended too when
their process is gone.

A run no lock names (a liveSync mapping's, a one-object push) whose end could not be
written because the store was unreachable is ended likewise by this process's next
``acquire`` once the store answers, with the state and message it ended with
(``end_later``): a daemon that lives through a store outage shows no run ACTIVE for
good. A live holder, and a holder on another host whose lock has not
expired, are never touched: processes that share a host name must share their
process ids too (containers on the host network need host names of their own).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from idsync.errors import RunLocked
from idsync.store.database import Store, as_utc, utcnow
from idsync.store.partitions import end_unread
from idsync.store.tables import claims, deferred, locks, recon_runs
from idsync.store.tokens import SyncTokens

__all__ = ["LIVESYNC", "LOCK_TTL", "Holder", "Locks", "count_interrupted", "end_later", "end_runs", "end_unlocked",
           "forget_own", "process_gone", "process_owner"]

log = structlog.get_logger(__name__)

LOCK_TTL = dt.timedelta(minutes=10)
# The lock of a source's liveSync run: ``livesync:system/ldap/account``.
LIVESYNC = "livesync:"

# The owners this process holds now, and the locks whose release failed (name: owner).
# Process state by nature: it tells a lock this process still uses from one whose
# release failed while the store was down, and which releases to retry.
_held: set[str] = set()
_unreleased: dict[str, str] = {}
# The runs of this process whose end could not be written: their state and message, by id.
_unended: dict[str, tuple[str, str | None]] = {}
_held_guard = threading.Lock()


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def process_owner() -> str:
    """This process as a lock owner: ``HOST:PID@START`` (``HOST:PID`` where start times are unknown)."""
    pid = os.getpid()
    ticks = _start_ticks(pid)
    return f"{socket.gethostname()}:{pid}" + (f"@{ticks}" if ticks is not None else "")


@dataclass(frozen=True)
class Holder:
    """A lock's owner, read back: who holds it, and whether they are gone."""

    owner: str
    expires: dt.datetime
    acquired: dt.datetime | None = None

    @property
    def host(self) -> str:
        return self.owner.split(":", 1)[0]

    @property
    def pid(self) -> int | None:
        parts = self.owner.split(":")
        pid = parts[1].split("@", 1)[0] if len(parts) > 1 else ""
        return int(pid) if pid.isdigit() else None

    @property
    def started(self) -> int | None:
        parts = self.owner.split(":")
        ticks = parts[1].partition("@")[2] if len(parts) > 1 else ""
        return int(ticks) if ticks.isdigit() else None

    @property
    def run_id(self) -> str | None:
        parts = self.owner.split(":")
        return parts[2] if len(parts) > 2 and parts[2] else None

    @property
    def process(self) -> str:
        """The holding process, as ``process_owner`` names it (the owner less its run)."""
        return ":".join(self.owner.split(":")[:2])

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}" if self.pid is not None else self.owner

    def gone(self, now: dt.datetime) -> str | None:
        """Why this holder is gone (the message its run is failed with), or None while it may live."""
        local = self.host == socket.gethostname() and self.pid is not None
        if local and self.pid == os.getpid() and self.started == _start_ticks(os.getpid()):
            with _held_guard:
                if self.owner in _held:
                    return None  # in use here, even if a store outage kept it from being refreshed
            return f"interrupted: owner {self.describe()} could not record the end (the store was unreachable)"
        if local and self.pid is not None and not _alive(self.pid, self.started):
            return f"interrupted: owner {self.describe()} is gone"
        if self.expires < now:
            return f"interrupted: owner {self.describe()} stopped refreshing its lock"
        return None


def process_gone(owner: str) -> str | None:
    """Why the process ``owner`` names (``process_owner``) is gone, when it is a process of
    this host that ended; None for this process, and for another host's, which cannot be
    told from here."""
    holder = Holder(owner, expires=dt.datetime.max.replace(tzinfo=dt.UTC))
    if holder.host != socket.gethostname() or holder.pid is None or holder.pid == os.getpid():
        return None
    return None if _alive(holder.pid, holder.started) else f"interrupted: owner {holder.describe()} is gone"


def forget_own(owners: Sequence[str]) -> None:
    """These owners of this process hold nothing any more (a forced exit is releasing them)."""
    with _held_guard:
        _held.difference_update(owners)


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    if started is None:
        return True
    now_started = _start_ticks(pid)
    return now_started is None or now_started == started


def end_later(run_id: str, state: str, message: str | None) -> None:
    """Run ``run_id`` ended in ``state`` but the store could not record it: the next
    ``acquire`` of this process does, once the store answers."""
    with _held_guard:
        _unended[run_id] = (state, message)


def end_runs(conn: Connection, run_ids: Sequence[str], state: str, message: str | None) -> int:
    """Record the ACTIVE runs among ``run_ids`` as ended in ``state``; drop their claims and deferred rows.

    Their summary stays what their last committed page wrote."""
    if not run_ids:
        return 0
    ids = list(run_ids)
    stage = "COMPLETED" if state == "SUCCESS" else f"COMPLETED_{state}"
    # Those still ACTIVE (locked to the end of the transaction): a run that ended elsewhere keeps its partitions.
    active = [r[0] for r in conn.execute(select(recon_runs.c.id).where(
        recon_runs.c.id.in_(ids), recon_runs.c.state == "ACTIVE").with_for_update())]
    if not active:
        return 0
    result = conn.execute(
        update(recon_runs)
        .where(recon_runs.c.id.in_(active), recon_runs.c.state == "ACTIVE")
        .values(state=state, stage=stage, ended=utcnow(), message=message))
    end_unread(conn, active, state)
    conn.execute(delete(claims).where(claims.c.run_id.in_(ids)))
    conn.execute(delete(deferred).where(deferred.c.run_id.in_(ids)))
    return result.rowcount or 0


def end_unlocked(conn: Connection, process: str, state: str, message: str) -> list[str]:
    """End the ACTIVE runs that take no lock (a liveSync mapping's, a one-object push) of
    ``process`` (``process_owner``), which is gone or leaving; their ids."""
    run_ids = [r[0] for r in conn.execute(select(recon_runs.c.id).where(
        recon_runs.c.state == "ACTIVE", recon_runs.c.owner == process))]
    end_runs(conn, run_ids, state, message)
    return run_ids


def count_interrupted(conn: Connection, name: str, state: str, message: str) -> None:
    """A lock ``name`` broken or dropped while its holder ran: a liveSync run's is counted
    in its source's counters as ``state``, since it never counted itself."""
    if name.startswith(LIVESYNC):
        SyncTokens.count_run(conn, name.removeprefix(LIVESYNC), state, message)


class Locks:
    """The ``locks`` table of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def acquire(self, name: str, owner: str, ttl: dt.timedelta = LOCK_TTL) -> list[str]:
        """Take ``name`` for ``owner``, breaking the lock of a gone holder; ``RunLocked`` if it
        lives. The recon runs failed as their lock was broken."""
        self._retry_releases()
        # Held from before the row exists: another thread of this process checking the lock
        # between the insert and this would take it for one whose release failed, and break it.
        with _held_guard:
            _held.add(owner)
        failed: list[str] = []
        try:
            for _attempt in range(3):
                now = utcnow()
                try:
                    with self.store.begin() as conn:
                        conn.execute(insert(locks).values(name=name, owner=owner, acquired=now, expires=now + ttl))
                except IntegrityError:
                    holder = self.holder(name)
                    if holder is None:
                        continue  # released in between
                    reason = holder.gone(now)
                    if reason is None:
                        raise RunLocked(f"{name} is already running (held by {holder.describe()})") from None
                    failed += self.break_(name, holder, reason)
                    continue
                return failed
        except BaseException:
            with _held_guard:
                _held.discard(owner)
            raise
        with _held_guard:
            _held.discard(owner)
        raise RunLocked(f"{name} is already running (held by {self.holder(name) or 'another process'})")

    def refresh(self, name: str, owner: str, ttl: dt.timedelta = LOCK_TTL) -> None:
        with self.store.begin() as conn:
            conn.execute(update(locks).where(locks.c.name == name, locks.c.owner == owner).values(
                expires=utcnow() + ttl))

    def release(self, name: str, owner: str) -> None:
        """Give ``name`` up. Should the store fail here, the lock is no longer this process's
        to keep: the next ``acquire`` of it, in this process or another, breaks it."""
        try:
            with self.store.begin() as conn:
                conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))
        except Exception:
            with _held_guard:
                _held.discard(owner)
                _unreleased[name] = owner
            raise
        with _held_guard:  # only now: until the row is gone, it is a lock this process holds
            _held.discard(owner)

    def _retry_releases(self) -> None:
        """Release now what failed to release before (and fail the run it guarded), then
        record the ends of this process's runs that could not be written."""
        with _held_guard:
            pending = dict(_unreleased)
        for name, owner in pending.items():
            holder = self.holder(name)
            if holder is not None and holder.owner == owner:
                reason = holder.gone(utcnow())
                if reason is not None:
                    self.break_(name, holder, reason)
            with _held_guard:
                if _unreleased.get(name) == owner:
                    del _unreleased[name]
        with _held_guard:
            unended = dict(_unended)
        if not unended:
            return
        with self.store.begin() as conn:
            ended = {run_id: end_runs(conn, [run_id], state, message)
                     for run_id, (state, message) in unended.items()}
        with _held_guard:
            for run_id in unended:
                _unended.pop(run_id, None)
        for run_id, (state, message) in unended.items():
            if ended[run_id]:
                log.warning("run.ended_late", run_id=run_id, state=state, message=message)

    def holder(self, name: str) -> Holder | None:
        with self.store.connect() as conn:
            row = conn.execute(select(locks.c.owner, locks.c.expires, locks.c.acquired)
                               .where(locks.c.name == name)).first()
        return Holder(row.owner, as_utc(row.expires), as_utc(row.acquired)) if row else None

    def holders(self) -> dict[str, Holder]:
        with self.store.connect() as conn:
            return {r.name: Holder(r.owner, as_utc(r.expires), as_utc(r.acquired))
                    for r in conn.execute(select(locks.c.name, locks.c.owner, locks.c.expires, locks.c.acquired))}

    def break_(self, name: str, holder: Holder, reason: str) -> list[str]:
        """Remove ``holder``'s lock ``name`` and fail the recon run it guarded (a liveSync run:
        count it FAILED, and end its mappings' runs when its process is gone); the runs failed."""
        run_ids = [holder.run_id] if name.startswith("recon:") and holder.run_id else []
        with self.store.begin() as conn:
            removed = conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == holder.owner))
            failed = end_runs(conn, run_ids, "FAILED", reason) if removed.rowcount else 0
            if removed.rowcount:
                count_interrupted(conn, name, "FAILED", reason)
                if name.startswith(LIVESYNC) and process_gone(holder.process) is not None:
                    end_unlocked(conn, holder.process, "FAILED", reason)
        if removed.rowcount:
            log.warning("lock.released_stale", lock=name, owner=holder.owner, reason=reason)
        return run_ids if failed else []

    def break_gone(self) -> list[str]:
        """Break every lock whose holder is gone; the recon runs this failed."""
        now = utcnow()
        failed: list[str] = []
        for name, holder in self.holders().items():
            reason = holder.gone(now)
            if reason is not None:
                failed += self.break_(name, holder, reason)
        return failed
