"""How long run records and their audit entries are kept.

Every recon, and every implicit-sync push, is a run with its audit entries, so
a store that is never pruned grows without bound under a busy API. ``prune``
removes the finished runs that ended before a cutoff, with their audit, except
what idsync still reads:

* the newest complete, successful, non-dry-run recon of each mapping: it is the
  point from which ``sync/retry.py`` looks for failed pushes;
* every push (``implicit``, ``retry``, ``reconById``) since that recon, whatever its age: the
  last push of each object says whether it is still waiting for a retry, and
  dropping any of them could turn a repaired object back into a pending one, or
  forget one that is pending. A mapping that only ever pushes keeps its pushes
  until a recon of it succeeds; schedule one.

Runs still ACTIVE are never touched. What the deleted runs counted is folded into
``run_totals`` (``store/totals.py``) in the same transaction, so the metrics' counters
never go down.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, func, not_, or_, select

from idsync.config.jobs import NOT_RECON_JOBS, PUSH_JOBS
from idsync.store.database import Store
from idsync.store.tables import audit, recon_runs
from idsync.store.totals import fold

__all__ = ["Pruned", "prune"]

_CHUNK = 500


@dataclass(frozen=True)
class Pruned:
    runs: int
    audit: int


def _anchors(conn: Connection) -> dict[str, dt.datetime]:
    """Mapping -> start of its newest complete, successful recon."""
    full = and_(recon_runs.c.state == "SUCCESS", recon_runs.c.dry_run.is_(False),
                or_(recon_runs.c.job.is_(None), recon_runs.c.job.not_in(NOT_RECON_JOBS)))
    rows = conn.execute(select(recon_runs.c.mapping, func.max(recon_runs.c.started))
                        .where(full).group_by(recon_runs.c.mapping))
    return {mapping: started for mapping, started in rows}


def prune(store: Store, older_than: dt.datetime, *, dry_run: bool = False) -> Pruned:
    """Delete the runs that ended before ``older_than`` and are not needed (above)."""
    with store.begin() as conn:
        anchors = _anchors(conn)
        ended = and_(recon_runs.c.state != "ACTIVE", recon_runs.c.ended.is_not(None),
                     recon_runs.c.ended < older_than)
        # Not ``job IN (...)``: a NULL job would make the whole NOT(...) below NULL, keeping the row.
        is_push = func.coalesce(recon_runs.c.job, "").in_(PUSH_JOBS)
        keep = [and_(recon_runs.c.mapping == mapping, or_(recon_runs.c.started == started,
                                                             and_(is_push, recon_runs.c.started > started)))
                for mapping, started in anchors.items()]
        # A push through a mapping that has no complete recon at all is kept too.
        keep.append(and_(is_push, recon_runs.c.mapping.not_in(list(anchors) or [""])))
        doomed = [r for (r,) in conn.execute(select(recon_runs.c.id).where(ended, not_(or_(*keep))))]
        removed_audit = 0
        if not dry_run:
            for i in range(0, len(doomed), _CHUNK):
                chunk = doomed[i:i + _CHUNK]
                fold(conn, conn.execute(select(recon_runs.c.mapping, recon_runs.c.state, recon_runs.c.summary,
                                               recon_runs.c.started, recon_runs.c.ended)
                                        .where(recon_runs.c.id.in_(chunk))))
                removed_audit += conn.execute(delete(audit).where(audit.c.run_id.in_(chunk))).rowcount or 0
                conn.execute(delete(recon_runs).where(recon_runs.c.id.in_(chunk)))
        else:
            for i in range(0, len(doomed), _CHUNK):
                removed_audit += conn.execute(select(func.count()).select_from(audit).where(
                    audit.c.run_id.in_(doomed[i:i + _CHUNK]))).scalar_one()
    return Pruned(runs=len(doomed), audit=removed_audit)
