"""The store's audit read as PingIDM's audit topics: ``audit/recon`` and ``audit/sync``.

Every run records one audit row per object it touched (``runs.RunStore.audit``). PingIDM
keeps the same events under two topics, by what made them: a reconciliation's
(``recon``) and a change carried by implicit synchronization or liveSync (``sync``).
A topic is a set of run jobs: ``Topic(jobs, exclude=True)`` is every run but those
(the recon topic), ``Topic(jobs)`` only those; the caller, which knows the job names,
builds it (``api/audit.py``).

An event is answered with PingIDM's field names (``reconId``, ``sourceObjectId``,
``linkQualifier``...; ``_id`` is the row's sequence number), and a ``_queryFilter``
names those fields: it becomes SQL over the audit table's columns, its values bound.
``sourceObjectId`` and ``targetObjectId`` are answered as resource paths
(``system/ldap/account/<id>``); a filter may give the path or the bare id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, func, literal, not_, null, or_, select, true
from sqlalchemy.sql.elements import ColumnElement as _CE

from idsync.errors import QueryError
from idsync.query.ast import Compare, Node, Present, Value
from idsync.store.database import Store, pingidm_time
from idsync.store.filters import BooleanSql, Exact, compare_op, one_page
from idsync.store.runs import RUN_EVENTS, shown_audit
from idsync.store.tables import audit, recon_runs

__all__ = ["FIELDS", "AuditQuery", "Topic", "audit_event", "query_audit", "read_audit", "sort_key",
           "without_hidden"]

# The job of a reconciliation of one object (``reconAction`` ``reconById``; every other run's is ``recon``).
RECON_BY_ID = "reconById"
# Runs of scheduled scripts and task scans record their tasks under these names, not a mapping's.
_TASK_PREFIXES = ("script/", "taskscanner/")

FIELDS = ("_id", "eventName", "transactionId", "reconId", "timestamp", "mapping", "situation", "action",
          "sourceObjectId", "targetObjectId", "status", "message", "exception", "linkQualifier", "entryType",
          "messageDetail", "reconciling", "ambiguousTargetObjectIds", "reconAction")
_COLUMNS: dict[str, _CE[Any]] = {
    "transactionId": audit.c.run_id, "reconId": audit.c.run_id, "timestamp": audit.c.ts,
    "mapping": audit.c.mapping, "situation": audit.c.situation, "action": audit.c.action,
    "status": audit.c.status, "message": audit.c.message, "exception": audit.c.message,
    "linkQualifier": audit.c.link_qualifier,
    # An entry's phase of the run; a start or a summary is of none.
    "reconciling": case((audit.c.phase.in_(("source", "target")), audit.c.phase), else_=null()),
    "entryType": case((audit.c.phase.in_(RUN_EVENTS), audit.c.phase), else_=literal("entry")),
    "reconAction": case((audit.c.run_id.in_(select(recon_runs.c.id).where(recon_runs.c.job == RECON_BY_ID)),
                         literal(RECON_BY_ID)), else_=literal("recon")),
}
_SORTS = {"_id": audit.c.seq, "timestamp": audit.c.seq}  # rows are written in time order
# The comparisons of a time given to the millisecond, as the millisecond [start, end).
_WITHIN_MS: dict[str, Callable[[Any, dt.datetime, dt.datetime], ColumnElement[bool]]] = {
    "eq": lambda c, start, end: and_(c >= start, c < end), "gt": lambda c, start, end: c >= end,
    "ge": lambda c, start, end: c >= start, "lt": lambda c, start, end: c < start,
    "le": lambda c, start, end: c < end,
}


@dataclass(frozen=True)
class Topic:
    """The runs a topic holds: those of ``jobs``, or (``exclude``) all the others."""

    name: str
    jobs: frozenset[str]
    exclude: bool = False


@dataclass(frozen=True)
class AuditQuery:
    filter: Node | None
    page_size: int = 0  # 0: all
    after: int | None = None  # keyset: the last _id of the page before (in the sort's direction)
    offset: int = 0
    descending: bool = False
    exact_total: bool = False


def audit_event(topic: str, row: Mapping[str, Any], ends: Mapping[str, tuple[str, str]],
                hidden: Mapping[str, Collection[str]] | None = None) -> dict[str, Any]:
    """One audit row as PingIDM answers an event of ``topic``; ``ends``: each mapping's
    source and target resources, which make its ids paths; ``hidden``: the properties
    of each mapping's target that no answer shows (``"scope": "private"``)."""
    row = without_hidden(shown_audit(row), (hidden or {}).get(row["mapping"], ()))
    source, target = ends.get(row["mapping"], ("", ""))
    failed = row["status"] == "FAILURE"
    ts = row["ts"]
    if isinstance(ts, dt.datetime) and ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    event = {
        "_id": str(row["seq"]), "eventName": topic, "transactionId": row["run_id"], "timestamp":
        pingidm_time(ts) if isinstance(ts, dt.datetime) else ts,
        "mapping": row["mapping"], "situation": row["situation"], "action": row["action"],
        "sourceObjectId": _path(source, row["source_id"]), "targetObjectId": _path(target, row["target_id"]),
        "status": row["status"], "message": row["message"], "exception": row["message"] if failed else None,
        "linkQualifier": row["link_qualifier"], "messageDetail": row["changes"],
    }
    if topic == "recon":
        ambiguous, phase = row.get("ambiguous"), row.get("phase")
        event.update(reconId=row["run_id"], entryType=phase if phase in RUN_EVENTS else "entry",
                     reconciling=phase if phase in ("source", "target") else None,
                     reconAction=RECON_BY_ID if row.get("run_job") == RECON_BY_ID else "recon",
                     ambiguousTargetObjectIds=[_path(target, str(i)) for i in ambiguous] if ambiguous else None)
    return event


def without_hidden(row: Mapping[str, Any], hidden: Collection[str]) -> dict[str, Any]:
    """An audit row whose recorded changes leave out the ``hidden`` properties."""
    changes = row.get("changes")
    if not hidden or not isinstance(changes, dict):
        return dict(row)
    return {**row, "changes": {k: v for k, v in changes.items() if k not in hidden} or None}


def _path(resource: str, object_id: str | None) -> str | None:
    return f"{resource}/{object_id}" if resource and object_id is not None else object_id


def read_audit(store: Store, topic: Topic, event_id: str) -> Mapping[str, Any] | None:
    """The row of event ``event_id`` in ``topic``, or ``None``."""
    if not event_id.isdecimal() or len(event_id) > 18:
        return None
    query = _in_topic(_rows(), topic).where(audit.c.seq == int(event_id))
    with store.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def query_audit(store: Store, topic: Topic, spec: AuditQuery,
                ends: Mapping[str, tuple[str, str]]) -> tuple[list[dict[str, Any]], int | None]:
    """A page of ``topic``'s rows matching ``spec`` in time order (or the reverse), one
    more than the page size when there are more; and the count of all matches when
    ``spec.exact_total``. ``QueryError`` names a field no event has."""
    where = _Translator(ends).visit(spec.filter) if spec.filter is not None else true()
    order = audit.c.seq.desc() if spec.descending else audit.c.seq.asc()
    after = None if spec.after is None else audit.c.seq < spec.after if spec.descending else audit.c.seq > spec.after
    query = one_page(_in_topic(_rows(), topic).where(where).order_by(order), after, spec.offset, spec.page_size)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        total = (int(conn.execute(_in_topic(select(func.count()).select_from(audit), topic).where(where))
                     .scalar_one()) if spec.exact_total else None)
    return rows, total


def sort_key(key: str) -> tuple[str, bool]:
    """``_sortKeys``' one key as (field, descending); only time order is kept."""
    name = key.lstrip("+-").strip("/")
    if name not in _SORTS:
        raise QueryError(f"audit events sort by timestamp or _id only, not {name!r}")
    return name, key.startswith("-")


def _rows() -> Select[Any]:
    """The audit's rows, each with its run's job (``run_job``: which says its ``reconAction``)."""
    return (select(audit, recon_runs.c.job.label("run_job"))
            .select_from(audit.outerjoin(recon_runs, recon_runs.c.id == audit.c.run_id)))


def _in_topic(query: Select[Any], topic: Topic) -> Select[Any]:
    runs = select(recon_runs.c.id).where(recon_runs.c.job.in_(sorted(topic.jobs)))
    if topic.exclude:
        query = query.where(or_(audit.c.run_id.is_(None), audit.c.run_id.not_in(runs)))
        return query.where(*(not_(audit.c.mapping.startswith(p, autoescape=True)) for p in _TASK_PREFIXES))
    return query.where(audit.c.run_id.in_(runs))


class _Translator(BooleanSql):
    def __init__(self, ends: Mapping[str, tuple[str, str]]) -> None:
        self.ends = ends

    def leaf(self, node: Compare | Present) -> ColumnElement[bool]:
        name = self._field(node.path)
        if isinstance(node, Present):
            if name in ("_id", "eventName", "entryType", "reconAction"):
                return true()
            return self._column(name).is_not(None)
        return self._compare(name, node)

    @staticmethod
    def _field(path: Sequence[str]) -> str:
        if len(path) != 1 or path[0] not in FIELDS:
            raise QueryError(f"audit events have no field /{'/'.join(path)} (they have {', '.join(FIELDS)})")
        return path[0]

    def _column(self, name: str) -> _CE[Any]:
        if name in ("sourceObjectId", "targetObjectId"):
            return audit.c.source_id if name == "sourceObjectId" else audit.c.target_id
        if name in ("messageDetail", "ambiguousTargetObjectIds"):
            raise QueryError(f"{name} cannot be filtered on")
        return _COLUMNS[name]

    def _compare(self, name: str, node: Compare) -> ColumnElement[bool]:
        op, value = node.op, node.value
        if isinstance(value, str) and "\x00" in value:
            return false()  # no stored value holds one
        if name == "_id":
            if not (isinstance(value, str) and value.isdecimal() and len(value) <= 18):
                return false()
            return compare_op(audit.c.seq, op, int(value))
        if name == "eventName":
            return true() if op == "eq" else false()  # answered for what the topic holds
        if name in ("sourceObjectId", "targetObjectId"):
            return self._object_id(name, op, value)
        column = self._column(name)
        if value is None:
            return column.is_(None) if op == "eq" else false()
        if name == "timestamp":
            if not isinstance(value, str):
                return false()
            try:
                when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise QueryError(f"timestamp must be an ISO 8601 date and time, not {value!r}") from None
            when = when.astimezone(dt.UTC) if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
            if when.microsecond % 1000 == 0 and op in _WITHIN_MS:
                # A time to the millisecond, as the events show theirs, is that whole millisecond:
                # an event is equal to the time it shows, and not after it.
                return _WITHIN_MS[op](column, when, when + dt.timedelta(milliseconds=1))
            return compare_op(column, op, when)
        return compare_op(Exact(column), op, value if isinstance(value, str) else str(value))

    def _object_id(self, name: str, op: str, value: Value) -> ColumnElement[bool]:
        """A path names the mapping's resource and the id; anything else is the bare id."""
        column = audit.c.source_id if name == "sourceObjectId" else audit.c.target_id
        if value is None:
            return column.is_(None) if op == "eq" else false()
        text = str(value)
        side = 0 if name == "sourceObjectId" else 1
        by_path = [and_(audit.c.mapping == mapping, compare_op(column, op, text[len(ends[side]) + 1:]))
                   for mapping, ends in self.ends.items() if text.startswith(ends[side] + "/")]
        return or_(compare_op(column, op, text), *by_path)
