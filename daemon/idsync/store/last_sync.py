"""PingIDM's ``lastSync``: the assignments last applied through each mapping to a managed object.

PingIDM keeps ``lastSync: {mapping: {effectiveAssignments, timestamp}}`` in the user's
document (a private property) and unassigns, at the next synchronization, only the
assignments recorded there that the user no longer holds, or whose attributes changed
(``sync/assignments.py``). idsync keeps the same record in ``last_sync``, one row per
object and mapping, apart from the document: writing it moves no revision, runs no
object script and pushes nothing, as PingIDM's ``postMapping`` writes it with
synchronization switched off. The row of a deleted object goes with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, select

from idsync.resource import Obj
from idsync.store.database import Store, utcnow
from idsync.store.tables import last_sync as ls

__all__ = ["LastSync", "forget_objects"]

_CHUNK = 500


class LastSync:
    """The ``lastSync`` records of one managed type's objects for one mapping."""

    def __init__(self, store: Store, object_type: str, mapping: str) -> None:
        self.store = store
        self.object_type = object_type
        self.mapping = mapping

    def _mine(self) -> ColumnElement[bool]:
        return (ls.c.object_type == self.object_type) & (ls.c.mapping == self.mapping)

    def any(self) -> bool:
        """Whether any object has a record for this mapping (none: nothing to unassign)."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(ls.c.object_id).where(self._mine()).limit(1)).first() is not None

    def read(self, ids: Sequence[str]) -> dict[str, list[Obj]]:
        """object id -> the assignments recorded, for the objects of ``ids`` that have a record."""
        found: dict[str, list[Obj]] = {}
        unique = list(dict.fromkeys(ids))
        if not unique:
            return found
        with self.store.engine.connect() as conn:
            for start in range(0, len(unique), _CHUNK):
                rows = conn.execute(select(ls.c.object_id, ls.c.assignments).where(
                    self._mine(), self.store.in_(ls.c.object_id, unique[start:start + _CHUNK]))).all()
                found.update({oid: list(value or []) for oid, value in rows})
        return found

    def record(self, conn: Connection, applied: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Record ``applied`` (object id -> the assignments now applied) in ``conn``'s transaction."""
        if not applied:
            return
        ids = list(applied)
        for start in range(0, len(ids), _CHUNK):
            conn.execute(delete(ls).where(self._mine(), ls.c.object_id.in_(ids[start:start + _CHUNK])))
        now = utcnow()
        self.store.insert_many(conn, ls, [
            {"object_type": self.object_type, "object_id": oid, "mapping": self.mapping,
             "assignments": [dict(a) for a in assignments], "updated": now}
            for oid, assignments in applied.items()])


def forget_objects(conn: Connection, object_type: str, ids: Sequence[str]) -> None:
    """Drop the records of deleted objects, for every mapping."""
    for start in range(0, len(ids), _CHUNK):
        conn.execute(delete(ls).where(ls.c.object_type == object_type, ls.c.object_id.in_(ids[start:start + _CHUNK])))
