"""Cleaning up after a process that died mid-run, at daemon start.

A run's lock in the store is owned by ``host:pid:run-id``. When the daemon
starts, a run still ACTIVE is left over from a crash if its lock is gone,
belongs to another run, or is owned by a process of this host that no longer
exists: it is marked FAILED ("interrupted") and the dead process's locks are
released, so the next fire is not turned away by a lock nobody refreshes. Runs
and locks held by live processes, or by another host, are left alone (a lock of
another host expires by itself when its holder stops refreshing it).
"""

from __future__ import annotations

import os
import socket

import structlog
from sqlalchemy import delete, select, update

from idsync.store.database import Store, utcnow
from idsync.store.runs import RunStore
from idsync.store.tables import locks, recon_runs

__all__ = ["recover_interrupted", "release_own_runs"]

log = structlog.get_logger(__name__)

INTERRUPTED = "interrupted: the process running it stopped before the run ended"


def recover_interrupted(store: Store) -> list[str]:
    """Mark runs of dead processes FAILED and drop their locks; returns the run ids."""
    RunStore(store).fail_abandoned()
    host = socket.gethostname()
    with store.engine.connect() as conn:
        holders = {row.name: row.owner for row in conn.execute(select(locks.c.name, locks.c.owner))}
        active = list(conn.execute(select(recon_runs.c.id, recon_runs.c.mapping).where(recon_runs.c.state == "ACTIVE")))
    dead_locks = [name for name, owner in holders.items() if _dead_local(owner, host)]
    failed: list[str] = []
    for run in active:
        owner = holders.get(f"recon:{run.mapping}")
        if owner is None or not owner.endswith(f":{run.id}") or _dead_local(owner, host):
            failed.append(run.id)
    with store.begin() as conn:
        if failed:
            conn.execute(
                update(recon_runs)
                .where(recon_runs.c.id.in_(failed), recon_runs.c.state == "ACTIVE")
                .values(state="FAILED", stage="COMPLETED_FAILED", ended=utcnow(), message=INTERRUPTED)
            )
        if dead_locks:
            conn.execute(delete(locks).where(locks.c.name.in_(dead_locks)))
    for run_id in failed:
        log.warning("run.interrupted", run_id=run_id)
    for name in dead_locks:
        log.warning("lock.released_stale", lock=name, owner=holders[name])
    return failed


def release_own_runs(store: Store, state: str, message: str) -> list[str]:
    """At a forced exit: record this process's ACTIVE runs as ``state`` and drop its locks."""
    prefix = f"{socket.gethostname()}:{os.getpid()}:"
    with store.engine.connect() as conn:
        mine = {
            row.name: row.owner
            for row in conn.execute(select(locks.c.name, locks.c.owner))
            if row.owner.startswith(prefix)
        }
    run_ids = [owner.rsplit(":", 1)[1] for name, owner in mine.items() if name.startswith("recon:")]
    with store.begin() as conn:
        if run_ids:
            conn.execute(
                update(recon_runs)
                .where(recon_runs.c.id.in_(run_ids), recon_runs.c.state == "ACTIVE")
                .values(state=state, stage=f"COMPLETED_{state}", ended=utcnow(), message=message)
            )
        if mine:
            conn.execute(delete(locks).where(locks.c.name.in_(list(mine))))
    return run_ids


def _dead_local(owner: str, host: str) -> bool:
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
