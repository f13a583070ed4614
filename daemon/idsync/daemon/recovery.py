"""Cleaning up after a process that died mid-run, at daemon start, and this
process's own runs at a forced exit (a liveSync run among them is counted in its
source's counters: ``store/locks.py``).

At start, every lock whose holder is gone is broken and the run it guarded
marked FAILED ("interrupted", ``store/locks.py``); so is a recon still ACTIVE
whose lock is gone or belongs to another run, a run that takes no lock (a
one-object push, an onward or liveSync mapping's run) whose owner process on
this host is gone, and any run silent for ``LOCK_TTL`` (a lockless run of another
host, or of an older version that recorded no owner: only its silence counts). Claims
and deferred rows of runs no longer ACTIVE (left by older versions) are dropped.
Runs and locks held by live processes, or by another host within their expiry,
are left alone. A split run failed here has its summary counted from what its
partitions committed, as a cluster's takeover does (``sync/taken_over.py``).
"""

from __future__ import annotations

import structlog
from sqlalchemy import delete, func, select

from idsync.config.jobs import NOT_RECON_JOBS
from idsync.store.database import Store
from idsync.store.locks import (
    Locks,
    count_interrupted,
    end_runs,
    end_unlocked,
    forget_own,
    process_gone,
    process_owner,
)
from idsync.store.runs import RunStore
from idsync.store.tables import claims, deferred, locks, recon_runs
from idsync.sync.taken_over import summarize_taken_over

__all__ = ["recover_interrupted", "release_own_runs"]

log = structlog.get_logger(__name__)

INTERRUPTED = "interrupted: the process running it stopped before the run ended"


def recover_interrupted(store: Store) -> list[str]:
    """Mark runs of dead processes FAILED and drop their locks; returns the run ids."""
    failed = Locks(store).break_gone()
    failed += RunStore(store).fail_abandoned()
    with store.engine.connect() as conn:
        active = list(conn.execute(select(recon_runs.c.id, recon_runs.c.mapping).where(
            recon_runs.c.state == "ACTIVE", recon_runs.c.owner.is_(None),
            func.coalesce(recon_runs.c.job, "").not_in(NOT_RECON_JOBS))))
        lockless = list(conn.execute(select(recon_runs.c.id, recon_runs.c.owner).where(
            recon_runs.c.state == "ACTIVE", recon_runs.c.owner.is_not(None))))
    # The locks are read after the runs: a run takes its lock before its row exists, so a
    # run ACTIVE above shows its lock below, or has ended (and end_runs leaves it alone).
    # Read before, a run another node started in between looked lockless, and was failed.
    holders = Locks(store).holders()
    orphans = []
    for run in active:
        holder = holders.get(f"recon:{run.mapping}")
        if holder is None or holder.run_id != run.id:
            orphans.append(run.id)
    abandoned = [(run.id, why) for run in lockless if (why := process_gone(run.owner)) is not None]
    with store.begin() as conn:
        end_runs(conn, orphans, "FAILED", INTERRUPTED)
        for run_id, why in abandoned:
            end_runs(conn, [run_id], "FAILED", why)
    # The stale rows are found by a plain read, then deleted by their runs' ids: a DELETE
    # scanning the tables (NOT IN the live runs) would lock, on MariaDB, the rows and gaps
    # another daemon's running recon is writing into, and wait for it or deadlock with it.
    with store.engine.connect() as conn:
        live = {r[0] for r in conn.execute(select(recon_runs.c.id).where(recon_runs.c.state == "ACTIVE"))}
        stale = {table: [r[0] for r in conn.execute(select(table.c.run_id).distinct()) if r[0] not in live]
                 for table in (claims, deferred)}
    for table, run_ids in stale.items():
        if run_ids:
            with store.begin() as conn:
                conn.execute(delete(table).where(table.c.run_id.in_(run_ids)))
    ended = failed + orphans + [run_id for run_id, _ in abandoned]
    for run_id in ended:
        log.warning("run.interrupted", run_id=run_id)
        # A split run's counts are in its partitions until its end adds them up: a run whose
        # process died keeps the zeros it started with unless they are counted now.
        summarize_taken_over(store, run_id)
    return ended


def release_own_runs(store: Store, state: str, message: str) -> list[str]:
    """At a forced exit: record this process's ACTIVE runs as ``state`` (those its locks
    guard and those that take none, a liveSync mapping's), count its liveSync runs in their
    sources' counters, and drop its locks."""
    own = process_owner()
    mine = {name: holder for name, holder in Locks(store).holders().items() if holder.owner.startswith(f"{own}:")}
    run_ids = [h.run_id for name, h in mine.items() if name.startswith("recon:") and h.run_id]
    forget_own([h.owner for h in mine.values()])
    with store.begin() as conn:
        end_runs(conn, run_ids, state, message)
        run_ids += end_unlocked(conn, own, state, message)
        for name in mine:
            count_interrupted(conn, name, state, message)
        if mine:
            conn.execute(delete(locks).where(locks.c.name.in_(list(mine))))
    return run_ids
