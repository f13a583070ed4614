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

``delete_run`` deletes one finished run now, whatever its age (PingIDM's ``DELETE
recon/ID``, which purges a reconciliation's statistics), under the same rule: a run
``prune`` would keep is refused with ``RunKept`` saying why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, not_, or_, select

from idsync.config.jobs import NOT_RECON_JOBS, PUSH_JOBS
from idsync.errors import IdsyncError, NotFound
from idsync.store.database import Store, as_utc
from idsync.store.tables import audit, claims, deferred, recon_partitions, recon_runs
from idsync.store.totals import fold

__all__ = ["Pruned", "RunKept", "delete_run", "prune"]

_CHUNK = 500


@dataclass(frozen=True)
class Pruned:
    runs: int
    audit: int


class RunKept(IdsyncError):
    """The run is still needed (running, or read by the retries of failed pushes): it is
    not deleted; the message says why and when it can be."""


def _anchors(conn: Connection, mapping: str | None = None) -> dict[str, dt.datetime]:
    """Mapping (or ``mapping`` alone) -> start of its newest complete, successful recon."""
    full = and_(recon_runs.c.state == "SUCCESS", recon_runs.c.dry_run.is_(False),
                or_(recon_runs.c.job.is_(None), recon_runs.c.job.not_in(NOT_RECON_JOBS)))
    if mapping is not None:
        full = and_(full, recon_runs.c.mapping == mapping)
    rows = conn.execute(select(recon_runs.c.mapping, func.max(recon_runs.c.started))
                        .where(full).group_by(recon_runs.c.mapping))
    return {mapping: started for mapping, started in rows}


def _remove(conn: Connection, run_ids: Sequence[str]) -> int:
    """Delete these finished runs with everything kept of them, what they counted folded
    into ``run_totals`` first; the audit entries removed."""
    fold(conn, conn.execute(select(recon_runs.c.mapping, recon_runs.c.state, recon_runs.c.summary,
                                   recon_runs.c.started, recon_runs.c.ended)
                            .where(recon_runs.c.id.in_(run_ids))))
    removed = conn.execute(delete(audit).where(audit.c.run_id.in_(run_ids))).rowcount or 0
    for table in (claims, deferred, recon_partitions):
        conn.execute(delete(table).where(table.c.run_id.in_(run_ids)))
    conn.execute(delete(recon_runs).where(recon_runs.c.id.in_(run_ids)))
    return removed


def delete_run(store: Store, run_id: str) -> dict[str, Any]:
    """Delete one finished run and its audit now; answer its record as it was. ``NotFound``
    for no such run, ``RunKept`` for one still running or one ``prune`` keeps: the newest
    complete recon of its mapping (failed pushes are looked for since it, so deleting it
    would make pushes it repaired look failed again) or a push since it (the last push of an
    object says whether it waits for a retry)."""
    with store.begin() as conn:
        found = conn.execute(select(recon_runs).where(recon_runs.c.id == run_id).with_for_update()).mappings().first()
        if found is None:
            raise NotFound(f"Reconciliation with id {run_id} not found.")
        row = dict(found)
        if row["state"] == "ACTIVE" or row["ended"] is None:
            raise RunKept(f"Reconciliation {run_id} is running: cancel it first (POST recon/{run_id}?_action=cancel), "
                          "then delete it")
        anchor = _anchors(conn, row["mapping"]).get(row["mapping"])
        is_push = (row["job"] or "") in PUSH_JOBS
        if anchor is not None and row["started"] == anchor and not is_push:
            raise RunKept(f"{run_id} is the last complete reconciliation of mapping {row['mapping']}: failed "
                          "pushes are retried from it, so it is kept until another one completes")
        if is_push and (anchor is None or row["started"] > anchor):
            raise RunKept(f"{run_id} is a push ({row['job']}) through mapping {row['mapping']} since its last complete "
                          "reconciliation: whether its object waits for a retry is read from it, so it is kept until "
                          "the next complete reconciliation of the mapping")
        _remove(conn, [run_id])
    for key in ("started", "ended", "heartbeat", "fire"):
        if key in row:
            row[key] = as_utc(row[key])
    return row


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
                removed_audit += _remove(conn, doomed[i:i + _CHUNK])
        else:
            for i in range(0, len(doomed), _CHUNK):
                removed_audit += conn.execute(select(func.count()).select_from(audit).where(
                    audit.c.run_id.in_(doomed[i:i + _CHUNK]))).scalar_one()
    return Pruned(runs=len(doomed), audit=removed_audit)
