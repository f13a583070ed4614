"""One object's references in one relationship property, read in SQL a page at a time.

A role of a million members is listed, counted and asked whether it holds a user without
its members read: ``HeldRefs`` selects the rows of the references of one end
(``relationships.py``) in the order a read of the property answers them (the referenced
object's collection, then its id; with ``_sortKeys`` on those, or on the reference's own
``_id``, in the order they ask), a page at a time (``LIMIT``/``OFFSET``), all of them
streamed, or only the one that names a given object. A role's ``members`` are the
``first`` end of their rows, whose unique index walks them in that order; a property some
of whose collections sort before its own type's is stored on both sides, and the two
selects are then one ``UNION`` ordered as one.

Strings are ordered by code point on every store, as Python orders them: the id columns
compare exactly (``tables.py``), and on PostgreSQL the type columns are ordered in its
``"C"`` collation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, false, func, or_, select, union_all

from idsync.store.database import Store
from idsync.store.relationships import Edges, Ref, orientation
from idsync.store.tables import relationships as rt

__all__ = ["HeldRefs"]

_STREAM = 1000  # rows fetched at a time while every reference is streamed


@dataclass(frozen=True)
class HeldRefs:
    """The references ``object_id`` holds in its relationship property ``name``."""

    edges: Edges
    object_id: str
    name: str

    @property
    def _store(self) -> Store:
        return self.edges.store

    def sortable(self, keys: Sequence[str]) -> list[tuple[str, bool]] | None:
        """``_sortKeys`` as (column, descending) pairs, or None when one of them is not
        ordered in SQL. The reference's own ``_id``, the referenced object's collection and
        id, and ``_ref`` where the property reaches one collection are; a field of the
        referenced objects, or of ``_refProperties``, is not."""
        relation = self.edges.schema.relationships[self.name]
        columns = {"_id": "id", "_refResourceCollection": "other_type", "_refResourceId": "other_id"}
        if len(relation.collections) == 1:
            columns["_ref"] = "other_id"  # one collection: the _ref orders as its id
        found = []
        for key in keys:
            pointer = key[1:] if key[:1] in "+-" else key
            column = columns.get(pointer.removeprefix("/"))
            if column is None:
                return None
            found.append((column, key.startswith("-")))
        return found

    def count(self, conn: Connection) -> int:
        """How many references the property holds."""
        return int(conn.execute(select(func.count()).select_from(self._union().subquery())).scalar_one())

    def page(self, conn: Connection, offset: int, limit: int | None,
             sort: Sequence[tuple[str, bool]] = ()) -> list[Ref]:
        """The references from ``offset`` on (``limit`` of them, None: all), ordered by ``sort``
        (``sortable``'s) and then as a read answers them."""
        query = self._ordered(sort).offset(offset)
        return [_ref(r) for r in conn.execute(query.limit(limit) if limit is not None else query)]

    def after(self, conn: Connection, last: tuple[str, str] | None, limit: int) -> list[Ref]:
        """``limit`` references in the order a read answers them, from the one after the
        object ``last`` (its collection and id; None: from the first): a page by keyset."""
        if last is None:
            return self.page(conn, 0, limit)
        union = self._union().subquery()
        kind, ident = self._exact(union.c.other_type), union.c.other_id
        query = self._ordered((), union).where(or_(kind > last[0], and_(kind == last[0], ident > last[1])))
        return [_ref(r) for r in conn.execute(query.limit(limit))]

    def stream(self, conn: Connection) -> Iterator[list[Ref]]:
        """Every reference in the order a read answers them, a batch at a time, by one
        statement (the rows fetched as they are used, never all held)."""
        rows = conn.execution_options(yield_per=_STREAM).execute(self._ordered(()))
        for batch in rows.partitions():
            yield [_ref(r) for r in batch]

    def rows(self, conn: Connection, rows: Sequence[str]) -> dict[str, Ref]:
        """The references among ``rows`` (their ``_refProperties._id``) the property holds."""
        if not rows:
            return {}
        found = self._union(rt.c.id.in_(list(rows)))
        return {r.id: _ref(r) for r in conn.execute(found)}

    def holding(self, conn: Connection, collection: str, object_id: str) -> Ref | None:
        """The reference to ``collection/object_id``, if the property holds it (``Edges.holding``:
        one probe of an index)."""
        return self.edges.holding(conn, self.object_id, self.name, collection, object_id)

    # -- the statements ---------------------------------------------------------

    def _ordered(self, sort: Sequence[tuple[str, bool]], union: Any = None) -> Select[Any]:
        """Every reference, ordered by ``sort`` and then by the referenced object's
        collection and id (and the row's, should two rows ever name one object)."""
        union = self._union().subquery() if union is None else union
        keys: list[Any] = []
        # A property into one collection is ordered by the ids alone: its index's order.
        one = len(self.edges.schema.relationships[self.name].collections) == 1
        natural = [("other_id", False)] if one else [("other_type", False), ("other_id", False), ("id", False)]
        for column, descending in [*sort, *natural]:
            key = self._exact(union.c[column]) if column == "other_type" else union.c[column]
            keys.append(key.desc() if descending else key)
        return select(union).order_by(*keys)

    def _union(self, *where: ColumnElement[bool]) -> Select[Any]:
        """The rows of the references from either side, as (id, rev, other_type, other_id,
        properties)."""
        sides = [self._side(first=True, where=where), self._side(first=False, where=where)]
        used = [s for s in sides if s is not None]
        if not used:
            return select(rt.c.id, rt.c.rev, rt.c.second_type.label("other_type"),
                          rt.c.second_id.label("other_id"), rt.c.properties).where(false())
        if len(used) == 1:
            return used[0]
        return select(union_all(*used).subquery())

    def _side(self, *, first: bool, where: Sequence[ColumnElement[bool]]) -> Select[Any] | None:
        """The rows of the references stored with this end as ``first`` (or ``second``), or
        None when the property is never stored so."""
        mine = (rt.c.first_type, rt.c.first_id, rt.c.first_property) if first else \
            (rt.c.second_type, rt.c.second_id, rt.c.second_property)
        other = (rt.c.second_type, rt.c.second_id) if first else (rt.c.first_type, rt.c.first_id)
        reached = self._reached(other[0], first=first)
        if reached is None:
            return None
        return select(rt.c.id, rt.c.rev, other[0].label("other_type"), other[1].label("other_id"),
                      rt.c.properties).where(mine[0] == self.edges.collection, mine[1] == self.object_id,
                                             mine[2] == self.name, reached, *where)

    def _reached(self, other: Any, *, first: bool) -> ColumnElement[bool] | None:
        """Which other ends the property holds on this side (``Edges._mine`` in SQL), or
        None when it holds none there."""
        relation = self.edges.schema.relationships[self.name]
        mine = self.edges.collection
        if relation.collections:
            here = [c for c in relation.collections if orientation(mine, self.name, relation, c) == first]
            return other.in_(here) if here else None
        if relation.reverse is None:  # one-way: always the first end, at any managed or system object
            return or_(other.like("managed/%"), other.like("system/%")) if first else None
        # Any managed collection: the end sorting first by (collection, property) is first.
        ahead = self._exact(other) > mine if first else self._exact(other) < mine
        same = other == mine if ((mine, self.name) <= (mine, relation.reverse)) == first else false()
        return and_(other.like("managed/%"), or_(ahead, same))

    def _exact(self, column: Any) -> Any:
        """``column`` (a type's name) compared and ordered by code point, as Python compares."""
        return column.collate("C") if self._store.dialect == "postgresql" else column


def _ref(row: Any) -> Ref:
    return Ref(row.id, row.rev, row.other_type, row.other_id, row.properties or {})
