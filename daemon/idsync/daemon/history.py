"""A job's past as the store remembers it: the recon runs recorded under its name.

The daemon keeps each job's last outcome in memory while it runs; these
queries answer the same question for ``idsync jobs``, for a daemon that just
started, and for the misfire check at start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.store.tables import recon_runs

__all__ = ["last_run_of_job", "last_started_by_job", "recent_runs_of_job"]


def last_started_by_job(store: Store) -> dict[str, dt.datetime]:
    """When each job last started a recon run (any state), by job name."""
    query = (
        select(recon_runs.c.job, func.max(recon_runs.c.started))
        .where(recon_runs.c.job.is_not(None))
        .group_by(recon_runs.c.job)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return {job: _aware(started) for job, started in rows if started is not None}


def last_run_of_job(store: Store, job: str) -> dict[str, Any] | None:
    """The latest recon run recorded for ``job``, shaped like the status file's ``lastRun``."""
    query = select(recon_runs.c.id).where(recon_runs.c.job == job).order_by(recon_runs.c.started.desc()).limit(1)
    with store.engine.connect() as conn:
        run_id = conn.execute(query).scalar()
    if run_id is None:
        return None
    run = RunStore(store).get(run_id)
    if run is None:
        return None
    summary = run["summary"] or {}
    counts = {k: v for k, v in (summary.get("changes") or {}).items() if v}
    if summary.get("errorCount"):
        counts["errors"] = summary["errorCount"]
    return {
        "id": run["id"],
        "state": run["state"],
        "mapping": run["mapping"],
        "dryRun": run["dry_run"],
        "node": run["node"],
        "started": run["started"].isoformat() if run["started"] else None,
        "ended": run["ended"].isoformat() if run["ended"] else None,
        "counts": counts,
        "error": run["message"] if run["state"] != "SUCCESS" else None,
    }


def recent_runs_of_job(store: Store, job: str, limit: int = 5) -> list[dict[str, Any]]:
    """The job's latest recon runs, newest first, in brief (id, mapping, state, times, node)."""
    query = (
        select(
            recon_runs.c.id,
            recon_runs.c.mapping,
            recon_runs.c.state,
            recon_runs.c.started,
            recon_runs.c.ended,
            recon_runs.c.node,
        )
        .where(recon_runs.c.job == job)
        .order_by(recon_runs.c.started.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "id": r.id,
            "mapping": r.mapping,
            "state": r.state,
            "started": _aware(r.started).isoformat(),
            "ended": _aware(r.ended).isoformat() if r.ended is not None else None,
            "node": r.node,
        }
        for r in rows
    ]


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
