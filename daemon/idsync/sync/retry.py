"""Finding the implicit-sync pushes that failed and were not repaired since,
and keeping the other direction from overwriting them meanwhile.

A push records one audit entry (``implicit.py``). An object needs a retry when
the last push or retry of it through a mapping failed, and no complete,
successful recon of that mapping has run since the failure: such a recon
re-applied every source object, so it repaired the target or recorded its own
failure (then the recon is what to run again).

Until then, the store holds a change the target has not seen. A recon of the
reverse mapping (the one sharing the link set, target to store) would take the
target's older value for the newer one and lose the change (or, for a deletion
not yet pushed, unlink the target entry and later bring the object back), so it
holds those objects: their UPDATE, DELETE and UNLINK are skipped and audited
(``hold_pending``), and the store-to-target recon or ``idsync sync retry``
pushes them as they are.

A "merge" list of the target keeps the values idsync did not put there, so a
push removes only the values its change took away, by comparing the object
with the object before the change. A failed push that begins a run of failures
records that earlier object (secrets removed) in its audit entry
(``AUDIT_BEFORE``); the next push or retry compares with it (``unrepaired``), so
the values every change of the run removed are removed too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, func, select

from idsync.config.jobs import NOT_RECON_JOBS as _NOT_RECON_JOBS
from idsync.config.jobs import PUSH_JOBS as _PUSH_JOBS
from idsync.store.database import Store
from idsync.store.runs import AUDIT_BEFORE
from idsync.store.tables import audit, recon_runs

if TYPE_CHECKING:
    from idsync.config.mappings import MappingDef
    from idsync.config.project import Project
    from idsync.resource import Obj
    from idsync.sync.assess import Plan

__all__ = ["Unrepaired", "failed_among", "failed_pushes", "hold_pending", "pending_counts", "pending_targets",
           "unrepaired", "unrepaired_befores"]

_HELD_ACTIONS = ("UPDATE", "DELETE", "UNLINK")
_CHUNK = 1000  # source ids a query asks about at once


def _pushes_since_recon(conn: Connection, mapping: str) -> Select[str, str, str | None]:
    """The audit entries (source id, status, link qualifier) of pushes through
    ``mapping`` since its last complete recon, oldest first."""
    since = conn.execute(
        select(recon_runs.c.started)
        .where(recon_runs.c.mapping == mapping, recon_runs.c.state == "SUCCESS",
               recon_runs.c.dry_run.is_(False),
               (recon_runs.c.job.is_(None)) | (recon_runs.c.job.not_in(_NOT_RECON_JOBS)))
        .order_by(recon_runs.c.started.desc()).limit(1)
    ).scalar()
    query = (
        select(audit.c.source_id, audit.c.status, audit.c.link_qualifier)
        .join(recon_runs, recon_runs.c.id == audit.c.run_id)
        .where(recon_runs.c.mapping == mapping, recon_runs.c.job.in_(_PUSH_JOBS),
               audit.c.source_id.is_not(None))
        .order_by(audit.c.seq)
    )
    return query.where(audit.c.ts >= since) if since is not None else query


@dataclass(frozen=True)
class Unrepaired:
    """The last push of an object failed and is not repaired yet. ``before``: the
    object before the change whose push began this run of failures, as that push
    recorded it (without secrets), or ``None`` when it recorded none (a create,
    or an entry written before pushes recorded it)."""

    before: Obj | None


def unrepaired(store: Store, mapping: str, source_id: str) -> Unrepaired | None:
    """Whether the last push of ``source_id`` through ``mapping`` failed and is not
    repaired yet (``None``: it did not), and what it left to deliver."""
    with store.engine.connect() as conn:
        pushes = _pushes_since_recon(conn, mapping).where(audit.c.source_id == source_id).order_by(None)
        # The run of failures is what follows the last push that did not fail; its first entry kept the object.
        last_ok = conn.execute(pushes.with_only_columns(func.max(audit.c.seq))
                               .where(audit.c.status != "FAILURE")).scalar()
        run = pushes.add_columns(audit.c.changes).order_by(audit.c.seq).limit(1)
        first = conn.execute(run.where(audit.c.seq > last_ok) if last_ok is not None else run).first()
    if first is None:
        return None
    recorded = (first.changes or {}).get(AUDIT_BEFORE) if isinstance(first.changes, dict) else None
    return Unrepaired(dict(recorded) if isinstance(recorded, dict) else None)


def unrepaired_befores(store: Store, mapping: str) -> dict[str, Obj]:
    """Source id -> the object its unrepaired pushes through ``mapping`` must be
    compared with (``unrepaired``), for the objects that recorded one: what a
    store-to-target recon needs as the assessor's ``previous`` so that it also
    removes from "merge" lists the values those failed changes took away."""
    found = {sid: unrepaired(store, mapping, sid) for sid in failed_pushes(store, mapping)}
    return {sid: u.before for sid, u in found.items() if u is not None and u.before is not None}


def failed_pushes(store: Store, mapping: str) -> list[str]:
    """Source ids whose last push through ``mapping`` failed, oldest first; with link
    qualifiers, whose last push of any qualifier failed (a push of one qualifier does
    not repair another's)."""
    with store.engine.connect() as conn:
        return _failed(conn.execute(_pushes_since_recon(conn, mapping)))


def failed_among(store: Store, mapping: str, source_ids: Sequence[str]) -> set[str]:
    """Those of ``source_ids`` whose last push through ``mapping`` failed (``failed_pushes``
    for a page of objects: their audit entries only, by the index on the source id)."""
    found: set[str] = set()
    with store.engine.connect() as conn:
        pushes = _pushes_since_recon(conn, mapping)
        for start in range(0, len(source_ids), _CHUNK):
            chunk = list(source_ids[start:start + _CHUNK])
            found.update(_failed(conn.execute(pushes.where(store.in_(audit.c.source_id, chunk)))))
    return found


def _failed(rows: Iterable[Any]) -> list[str]:
    """Of push audit entries (source id, status, link qualifier) in time order, the source
    ids whose last word (of any link qualifier) is a failure, oldest first."""
    last: dict[tuple[str, str], str] = {}
    for source_id, status, qualifier in rows:
        key = (source_id, qualifier or "default")
        last.pop(key, None)  # keep the order of each object's last word
        last[key] = status
    return list(dict.fromkeys(sid for (sid, _), status in last.items() if status == "FAILURE"))


def pending_counts(store: Store, mappings: Sequence[str] | None = None) -> dict[str, int]:
    """Mapping name -> how many objects wait for ``idsync sync retry`` (only those
    with any), among ``mappings`` (default: every mapping a push ever failed through)."""
    if mappings is None:
        with store.engine.connect() as conn:
            names = conn.execute(select(recon_runs.c.mapping).distinct().where(
                recon_runs.c.job.in_(_PUSH_JOBS), recon_runs.c.state == "FAILED")).scalars()
            mappings = sorted(str(n) for n in names)
    counts = {name: len(failed_pushes(store, name)) for name in mappings}
    return {name: n for name, n in counts.items() if n}


def pending_targets(store: Store, project: Project, mapping: MappingDef) -> dict[str, str]:
    """Target ids of ``mapping`` (store objects) holding a change that a push
    through a reverse mapping failed to deliver -> the name of that mapping."""
    pending: dict[str, str] = {}
    for other in project.mappings:
        if other.name != mapping.name and other.source == mapping.target and other.linkset == mapping.linkset:
            for object_id in failed_pushes(store, other.name):
                pending.setdefault(object_id, other.name)
    return pending


def hold_pending(plans: Sequence[Plan], pending: dict[str, str]) -> None:
    """Turn the UPDATE, DELETE or UNLINK of a pending object into an audited skip."""
    if not pending:
        return
    for plan in plans:
        through = pending.get(plan.target_id or "")
        if through is None or plan.action not in _HELD_ACTIONS or (plan.op is None and not plan.defer):
            continue
        plan.op, plan.defer, plan.change, plan.audit, plan.changes = None, False, "skipped", True, None
        plan.message = (f"{plan.action.lower()} held: a change of this object has not reached the target of "
                        f"{through} yet (`idsync sync retry` or a recon of {through} pushes it)")
