"""Finding the implicit-sync pushes that failed and were not repaired since.

A push records one audit entry (``implicit.py``). An object needs a retry when
the last push or retry of it through a mapping failed, and no complete,
successful recon of that mapping has run since the failure: such a recon
re-applied every source object, so it repaired the target or recorded its own
failure (then the recon is what to run again).
"""

from __future__ import annotations

from sqlalchemy import select

from idsync.store.database import Store
from idsync.store.tables import audit, recon_runs

__all__ = ["failed_pushes"]

_PUSH_JOBS = ("implicit", "retry")


def failed_pushes(store: Store, mapping: str) -> list[str]:
    """Source ids whose last push through ``mapping`` failed, oldest first."""
    with store.engine.connect() as conn:
        since = conn.execute(
            select(recon_runs.c.started)
            .where(recon_runs.c.mapping == mapping, recon_runs.c.state == "SUCCESS",
                   recon_runs.c.dry_run.is_(False),
                   (recon_runs.c.job.is_(None)) | (recon_runs.c.job.not_in(_PUSH_JOBS)))
            .order_by(recon_runs.c.started.desc()).limit(1)
        ).scalar()
        query = (
            select(audit.c.source_id, audit.c.status)
            .join(recon_runs, recon_runs.c.id == audit.c.run_id)
            .where(recon_runs.c.mapping == mapping, recon_runs.c.job.in_(_PUSH_JOBS),
                   audit.c.source_id.is_not(None))
            .order_by(audit.c.seq)
        )
        if since is not None:
            query = query.where(audit.c.ts >= since)
        last: dict[str, str] = {}
        for source_id, status in conn.execute(query):
            last.pop(source_id, None)  # keep the order of each object's last word
            last[source_id] = status
    return [sid for sid, status in last.items() if status == "FAILURE"]
