"""The deferred step of a reconciliation run: its deletes and unlinks.

Neither phase deletes or unlinks anything; each only records the DELETE or
UNLINK it decided (``recon_deferred``). Once both phases finished without a read
error, this step counts them against the mapping's ``maxDeletes`` (or the run's
own cap) and either refuses the lot, before touching anything, or carries them
out page by page: the onDelete/onUnlink hooks, one ``write_batch`` of deletes,
then, in one store transaction, the dropped links and the audit entries (the
same transaction as the deletes when the target is the store), then the onUnlink
of each DELETE of a linked target (PingIDM's DELETE falls through to its UNLINK). Each delete and
unlink has one audit entry, written here with what became of it: done
(``SUCCESS``), failed or refused by the cap (``FAILURE``), or ``DRY_RUN``.

A delete that fails fails that object: its link is kept, so the next run sees
it again. A target already gone counts as deleted. One whose target's link changed
since the run decided it (an orphan linked meanwhile, by implicit sync finding it
for a user created beside the run) is not carried out, and counted skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from idsync.config.mappings import MappingDef
from idsync.errors import RunTakenOver, SafetyLimitExceeded
from idsync.resource import Resource, WriteOp, WriteResult
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.sync.mapping_hooks import run_hook
from idsync.sync.qualifiers import LinkQualifiers
from idsync.sync.summary import Counters

if TYPE_CHECKING:
    from idsync.sync.role_fanout import WrittenRoles

__all__ = ["DeferredDeletes", "delete_cap", "joined", "share_cap", "writing"]


def delete_cap(limit: int | float | None, target_total: int | None, created: int) -> int | None:
    """How many deletes and unlinks a run may make; None: no cap.

    ``limit`` is a count, or a share of the target as it was before this run:
    objects the run created itself do not widen the cap. A share guards a target
    against a wipe, so it allows one delete of a target that one delete would not
    empty: "10%" of seven objects would otherwise never allow any."""
    if limit is None:
        return None
    if isinstance(limit, int):
        return limit
    before = max((target_total or 0) - created, 0)
    return share_cap(limit, before)


def share_cap(share: float, target: int) -> int:
    """How many deletes a share of a target of ``target`` objects allows: rounded down,
    but at least one where the target holds two objects or more (and the share is not 0)."""
    allowed = int(share * target)
    return max(allowed, 1) if share > 0 and target > 1 else allowed


@dataclass(frozen=True)
class DeferredDeletes:
    """What the deferred step needs from its run, and nothing more."""

    run_id: str
    mapping: MappingDef
    store: Store
    runs: RunStore
    links: LinkQualifiers
    counters: Counters
    dry_run: bool
    max_deletes: int | float | None  # the run's own cap; None: the mapping's maxDeletes
    page_size: int
    check_cancel: Callable[[], None]  # raises RunCanceled once the run is asked to stop
    roles: WrittenRoles | None = None  # deleted roles and assignments push their users (``role_fanout.py``)
    # Told each page's results once committed: the store's deletes carried on (``OnwardPush``).
    after_write: Callable[[Sequence[WriteResult]], None] | None = None

    def run(self, target: Resource) -> None:
        """Refuse every recorded delete and unlink if they exceed the cap, else carry them out."""
        count = self.runs.deferred_count(self.run_id)
        if not count:
            return
        limit = self.max_deletes if self.max_deletes is not None else self.mapping.max_deletes
        # A dry run's creates are counted but never made: the target it counted holds none of them.
        created = 0 if self.dry_run else self.counters.changes["created"]
        allowed = delete_cap(limit, self.counters.target_total, created)
        if allowed is not None and count > allowed:
            message = (f"the run would delete or unlink {count} target objects, more than maxDeletes allows "
                       f"({allowed}); nothing was deleted")
            self._refuse(message, count)
            raise SafetyLimitExceeded(message)
        for page in self.runs.deferred_pages(self.run_id, self.page_size):
            self.check_cancel()
            ops = self._as_decided(page)
            if not ops:
                continue
            found = self._run_hooks(ops, target)
            deleted = self._apply_page(ops, target)
            self._run_unlink_hooks([o for o in ops if o["action"] == "DELETE" and o.get("unlinks")
                                    and o["target_id"] in deleted], found)

    def _as_decided(self, ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page's deletes and unlinks whose target is linked as it was when the run
        decided them; the others are left to the next run, audited and counted skipped:
        a target linked since to a source (a user created for it, its implicit sync finding
        it by correlation), or whose link went or changed meanwhile, is no longer the
        orphan or the object the run assessed."""
        wanted: dict[str, list[str]] = {}
        for o in ops:
            if o["target_id"]:
                wanted.setdefault(o.get("qualifier", "default"), []).append(o["target_id"])
        now = {q: self.links.links(q).sources_of(ids) for q, ids in wanted.items()}
        kept: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for o in ops:
            links = self.links.links(o.get("qualifier", "default"))
            linked = o["action"] == "UNLINK" or bool(o.get("unlinks"))
            then = links.key_of_mine(o["source_id"]) if linked and o["source_id"] else None
            current = now.get(o.get("qualifier", "default"), {}).get(o["target_id"]) if o["target_id"] else None
            if current == then:
                kept.append(o)
                continue
            how = "linked" if then is None else "unlinked" if current is None else "linked to another source"
            changed.append(self._audit_row(o, f"not carried out: {o['target_id']} was {how} since the run "
                                              "assessed it; the next run assesses it again", False))
        if changed:
            self.counters.changes["skipped"] += len(changed)
            with self.store.begin() as conn:
                self.runs.audit(conn, changed)
        return kept

    def _refuse(self, message: str, count: int) -> None:
        """Audit every recorded delete and unlink as not carried out, and why; count them
        failed (each was counted a success when the run decided it), the reason once."""
        for ops in self.runs.deferred_pages(self.run_id, self.page_size):
            with self.store.begin() as conn:
                self.runs.audit(conn, [{**self._audit_row(o, f"not carried out: {message}", True),
                                        "status": "FAILURE"} for o in ops])
        self._failed(count)
        self.counters.error(message)
        self.counters.error_count += count - 1

    def _failed(self, count: int) -> None:
        """``count`` deferred operations, counted successes when decided, failed in the end."""
        self.counters.status["SUCCESS"] = max(0, self.counters.status["SUCCESS"] - count)
        self.counters.status["FAILURE"] += count

    def _run_hooks(self, ops: Sequence[dict[str, Any]], target: Resource) -> dict[str, Any]:
        """The page's onDelete and onUnlink hooks, each given the target as it is now; the
        targets read for them (id -> object)."""
        hooks = self.mapping.hooks
        hooked = [o for o in ops if ("onDelete" if o["action"] == "DELETE" else "onUnlink") in hooks
                  or (o["action"] == "DELETE" and o.get("unlinks") and "onUnlink" in hooks)]
        ids = [o["target_id"] for o in hooked if o["target_id"]]
        found = target.get_many(ids, self.mapping.default_target_fields) if ids else {}
        for o in hooked:
            self._hook("onDelete" if o["action"] == "DELETE" else "onUnlink", o, found)
        return found

    def _run_unlink_hooks(self, ops: Sequence[dict[str, Any]], found: dict[str, Any]) -> None:
        """The onUnlink of the page's DELETEs of linked targets, once the targets are deleted
        and unlinked (in the transaction of the deletes when the target is the store), given
        each target as read before: PingIDM's DELETE falls through to its UNLINK."""
        for o in ops if not self.dry_run and "onUnlink" in self.mapping.hooks else ():
            self._hook("onUnlink", o, found)

    def _hook(self, name: str, op: dict[str, Any], found: dict[str, Any]) -> None:
        run_hook(self.mapping, name, self.counters, source={"_id": op["source_id"]} if op["source_id"] else None,
                 target=found.get(op["target_id"]) or {"_id": op["target_id"]}, situation=op["situation"],
                 qualifier=op.get("qualifier", "default"))

    def _apply_page(self, ops: Sequence[dict[str, Any]], target: Resource) -> set[str]:
        """Carry out the page's deletes and unlinks; the ids of the targets deleted."""
        to_delete = [o for o in ops if o["action"] == "DELETE" and o["target_id"]]
        # A store target deletes in the same transaction that drops the links.
        deletes = [WriteOp("delete", id=o["target_id"], rev=None) for o in to_delete]
        if self.roles is not None:
            self.roles.before(deletes)
        external = not isinstance(target, ManagedResource)
        if deletes and external and not self.dry_run and not self.runs.active(self.run_id):
            raise RunTakenOver()  # no rollback would undo deletes in another system
        with writing(self.store, target) as conn:
            results = target.write_batch(deletes)
            failed = {r.op.id: r.error for r in results if not r.ok and type(r.error).__name__ != "NotFound"}
            notes = {r.op.id: r.message for r in results if r.message}
            audit: list[dict[str, Any]] = []
            unlink_targets: list[tuple[str, str]] = []
            for o in ops:
                error = failed.get(o["target_id"]) if o["action"] == "DELETE" else None
                if error:
                    self.counters.error(str(error), source_id=o["source_id"], target_id=o["target_id"])
                    self.counters.changes["failed"] += 1
                    self._failed(1)
                else:
                    self.counters.changes["deleted" if o["action"] == "DELETE" else "unlinked"] += 1
                    if o["target_id"]:
                        unlink_targets.append((o.get("qualifier", "default"), o["target_id"]))
                message = str(error) if error else notes.get(o["target_id"]) or o.get("message")
                audit.append(self._audit_row(o, message, bool(error)))
            if not self.dry_run:
                self.links.remove_targets(conn, unlink_targets)
            self.runs.audit(conn, audit)
            if not self.runs.progress(self.run_id, self.counters.stage, self.counters.to_summary(), conn):
                raise RunTakenOver()  # ended elsewhere meanwhile: this page rolls back
        if self.after_write is not None and not self.dry_run:
            self.after_write(results)
        if self.roles is not None:
            self.roles.after(results)
        return {o["target_id"] for o in to_delete if o["target_id"] not in failed}

    def _audit_row(self, op: dict[str, Any], message: str | None, failed: bool) -> dict[str, Any]:
        status = "DRY_RUN" if self.dry_run else "FAILURE" if failed else "SUCCESS"
        return {"run_id": self.run_id, "mapping": self.mapping.name, "situation": op["situation"],
                "action": op["action"], "source_id": op["source_id"], "target_id": op["target_id"],
                "status": status, "message": message, "changes": None,
                "link_qualifier": op.get("qualifier", "default"), "phase": op.get("phase")}


@contextlib.contextmanager
def writing(store: Store, target: Resource) -> Iterator[Connection]:
    """One store transaction that a store target writes into too; once it is committed,
    the ``post`` scripts of the managed objects it wrote run (``store/hooks.py``)."""
    with store.begin() as conn, joined(target, conn):
        yield conn
    if isinstance(target, ManagedResource):
        target.after_commit()


def joined(target: Resource, conn: Connection) -> AbstractContextManager[None]:
    """The store target writes into the page's transaction; other targets write on their own."""
    return target.joined(conn) if isinstance(target, ManagedResource) else contextlib.nullcontext()
