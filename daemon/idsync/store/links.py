"""Links: the persisted pairs that tie a source object to its target.

A link set is named after the mapping that owns it. A mapping declaring
``"links": "other"`` reads and writes ``other``'s set from the other side, so
the two directions of a bidirectional sync agree on who is whom. Every read
here takes a whole page of ids: one query per page, never one per object.

A mapping with ``"enableLinking": false`` (PingIDM's) records no link and reads
none: its link set is one where nothing is ever found and every write does
nothing, so each run finds its targets by correlation alone.

``"sourceIdsCaseSensitive": false`` / ``"targetIdsCaseSensitive": false`` on the
mapping that owns the links (PingIDM's, for a directory whose ids are DNs) keep
that side's ids in lower case and look them up in lower case: an id the system
gives back in another case still finds its link. Each read answers under the
ids it was asked for, as they were given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, bindparam, exists, func, select, update

from idsync.store.database import Store, new_ids, utcnow
from idsync.store.idpages import delete_ids, select_ids
from idsync.store.tables import links as lt
from idsync.store.tables import managed_objects as mo

if TYPE_CHECKING:
    from idsync.config.mappings import MappingDef
    from idsync.config.project import Project

__all__ = ["LinkSet", "in_step_side", "revision"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class LinkSet:
    """The links of one mapping, seen from that mapping's source and target."""

    store: Store
    name: str
    reversed: bool = False
    qualifier: str = "default"
    linking: bool = True  # False: ``enableLinking: false``, nothing is read or written
    # The owning mapping's sourceIdsCaseSensitive / targetIdsCaseSensitive false: the ids
    # of that column are kept and looked up in lower case.
    fold_source: bool = False
    fold_target: bool = False

    @classmethod
    def of(cls, store: Store, project: Project, mapping: MappingDef, *, flipped: bool = False) -> LinkSet:
        """The links ``mapping`` reads and writes (its own, or those of the mapping its
        ``links`` names), seen from its source (``flipped``: from its target)."""
        owner = project.mapping(mapping.links) if mapping.links is not None else mapping
        # Never a managed side: the store finds an object by its id exactly as kept.
        return cls(store, mapping.linkset, reversed=project.linkset_reversed(mapping) != flipped,
                   linking=mapping.enable_linking,
                   fold_source=not owner.source_ids_case_sensitive and not owner.source.startswith("managed/"),
                   fold_target=not owner.target_ids_case_sensitive and not owner.target.startswith("managed/"))

    def _folds(self, column) -> bool:  # type: ignore[no-untyped-def]
        return self.fold_source if column is lt.c.source_id else self.fold_target

    @property
    def folds_mine(self) -> bool:
        """Whether this side's ids are kept in lower case."""
        return self._folds(self._mine)

    @property
    def folds_theirs(self) -> bool:
        """Whether the other side's ids are kept in lower case."""
        return self._folds(self._theirs)

    def key_of_mine(self, object_id: str) -> str:
        """How this side's id is kept in a link (lower case where its ids ignore case)."""
        return object_id.lower() if self._folds(self._mine) else object_id

    def key_of_theirs(self, object_id: str) -> str:
        """How the other side's id is kept in a link."""
        return object_id.lower() if self._folds(self._theirs) else object_id

    def _kept(self, column, ids: Sequence[str]) -> Sequence[str]:  # type: ignore[no-untyped-def]
        return list(dict.fromkeys(i.lower() for i in ids)) if self._folds(column) else ids

    def _answered(self, column, ids: Sequence[str], found: dict[str, _T]) -> dict[str, _T]:  # type: ignore[no-untyped-def]
        """``found`` (keyed by the ids as kept) under the ids as asked for."""
        if not self._folds(column):
            return found
        return {i: found[k] for i in ids if (k := i.lower()) in found}

    @property
    def _mine(self):  # type: ignore[no-untyped-def]
        return lt.c.target_id if self.reversed else lt.c.source_id

    @property
    def _theirs(self):  # type: ignore[no-untyped-def]
        return lt.c.source_id if self.reversed else lt.c.target_id

    def targets_of(self, source_ids: Sequence[str], conn: Connection | None = None) -> dict[str, str]:
        """source id -> linked target id, for the sources that have a link."""
        return {k: v for k, (v, _) in self._lookup(self._mine, self._theirs, source_ids, conn).items()}

    def targets_with_digests(self, source_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """source id -> (linked target id, the link's digest), for the sources that have a link."""
        return self._lookup(self._mine, self._theirs, source_ids, None)

    def targets_with_revisions(self, source_ids: Sequence[str],
                               object_type: str) -> dict[str, tuple[str, str | None, str | None]]:
        """source id -> (linked target id, the link's digest, the target's revision), for the
        sources that have a link, their targets managed objects of ``object_type`` (None
        for a target that is gone): a no-change recon's one read of a page's links and
        revisions (``sync/digests.py``), where two would each probe a thousand ids."""
        if not source_ids or not self.linking:
            return {}
        with self.store.engine.connect() as conn:
            rows = select_ids(self.store, conn, lt, (self._mine.name, self._theirs.name, "digest"), self._mine.name,
                              self._kept(self._mine, source_ids), {"linkset": self.name, "qualifier": self.qualifier},
                              join=(mo, "id", self._theirs.name, "rev", object_type))
        return self._answered(self._mine, source_ids, {k: (v, digest, rev) for k, v, digest, rev in rows})

    def written_of(self, source_ids: Sequence[str]) -> dict[str, str]:
        """source id -> the digest of the write-only values last written through its link
        (``sync/written.py``), for the linked sources that have one."""
        return self._values("written", self._mine, source_ids)

    def in_step_of(self, ids: Sequence[str], *, by_target: bool = False) -> dict[str, str]:
        """source id (target id with ``by_target``) -> the managed revision its link's two
        objects last agreed at, for the linked ones that have one (``set_in_step``)."""
        return self._values("in_step", self._theirs if by_target else self._mine, ids)

    def _values(self, name: str, column, ids: Sequence[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
        """id of ``column`` -> the link's ``name`` column, for the linked ids whose value is set."""
        if not ids or not self.linking:
            return {}
        with self.store.engine.connect() as conn:
            rows = select_ids(self.store, conn, lt, (column.name, name), column.name,
                              self._kept(column, ids), {"linkset": self.name, "qualifier": self.qualifier})
        return self._answered(column, ids, {k: v for k, v in rows if v is not None})

    def sources_of(self, target_ids: Sequence[str], conn: Connection | None = None) -> dict[str, str]:
        """target id -> linked source id, for the targets that have a link."""
        return {k: v for k, (v, _) in self._lookup(self._theirs, self._mine, target_ids, conn).items()}

    def linked_since(self, target_ids: Sequence[str], instant: dt.datetime) -> set[str]:
        """Of ``target_ids`` (as asked for), those whose link was made at or after
        ``instant``: linked beside a run that started then (``sync/recon.py``)."""
        if not target_ids or not self.linking:
            return set()
        with self.store.engine.connect() as conn:
            found = set(conn.execute(select(self._theirs).where(
                lt.c.linkset == self.name, lt.c.qualifier == self.qualifier, lt.c.created >= instant,
                self._theirs.in_(self._kept(self._theirs, target_ids)))).scalars())
        return {i for i in target_ids if self.key_of_theirs(i) in found}

    def _lookup(self, key, value, ids: Sequence[str],  # type: ignore[no-untyped-def]
                conn: Connection | None) -> dict[str, tuple[str, str | None]]:
        if not ids or not self.linking:
            return {}
        if conn is None:
            with self.store.engine.connect() as own:
                return self._lookup(key, value, ids, own)
        rows = select_ids(self.store, conn, lt, (key.name, value.name, "digest"), key.name, self._kept(key, ids),
                          {"linkset": self.name, "qualifier": self.qualifier})
        return self._answered(key, ids, {k: (v, digest) for k, v, digest in rows})

    def count(self) -> int:
        """The links of this link set and qualifier."""
        if not self.linking:
            return 0
        with self.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(lt).where(
                lt.c.linkset == self.name, lt.c.qualifier == self.qualifier)).scalar_one())

    def source_ids(self, page_size: int = 5000) -> Iterator[str]:
        """Every linked source id as kept (``key_of_mine``), read a page at a time (in id order)."""
        last: str | None = None
        while self.linking:
            query = select(self._mine).where(lt.c.linkset == self.name, lt.c.qualifier == self.qualifier)
            if last is not None:
                query = query.where(self._mine > last)
            with self.store.engine.connect() as conn:
                page = [r[0] for r in conn.execute(query.order_by(self._mine).limit(page_size))]
            yield from page
            if len(page) < page_size:
                return
            last = page[-1]

    def sources_missing(self, object_type: str) -> list[str]:
        """The linked source ids whose managed object (of ``object_type``) no longer exists:
        one anti-join on the store's primary key, however many links there are."""
        if not self.linking:
            return []
        gone = ~exists(select(mo.c.id).where(mo.c.object_type == object_type, mo.c.id == self._mine))
        query = select(self._mine).where(lt.c.linkset == self.name, lt.c.qualifier == self.qualifier, gone)
        with self.store.engine.connect() as conn:
            return [r[0] for r in conn.execute(query)]

    def add(self, conn: Connection, pairs: Sequence[tuple[str, str]],
            digests: Mapping[str, str] | None = None, *, new_targets: Collection[str] = (),
            written: Mapping[str, str] | None = None, in_step: Mapping[str, str] | None = None) -> None:
        """Link (source id, target id) pairs, replacing any link either side had;
        ``digests``: source id -> the digest its new link keeps (``sync/digests.py``);
        ``new_targets``: ids of objects the same transaction created (on the target
        side), which no link can name yet: nothing to replace; ``written``: source id
        -> the digest of the write-only values written (``sync/written.py``); ``in_step``:
        source id -> the managed revision the two objects agree at (``set_in_step``)."""
        if not pairs or not self.linking:
            return
        self.remove_sources(conn, [s for s, _ in pairs])
        self.remove_targets(conn, [t for _, t in pairs if t not in new_targets])
        now = utcnow()
        digests, written, in_step = digests or {}, written or {}, in_step or {}
        rows = []
        for (source_id, target_id), link_id in zip(pairs, new_ids(len(pairs)), strict=True):
            first, second = (target_id, source_id) if self.reversed else (source_id, target_id)
            first = first.lower() if self.fold_source else first
            second = second.lower() if self.fold_target else second
            rows.append({"id": link_id, "linkset": self.name, "source_id": first, "target_id": second,
                         "qualifier": self.qualifier, "created": now, "digest": digests.get(source_id),
                         "written": written.get(source_id), "in_step": in_step.get(source_id)})
        self.store.insert_many(conn, lt, rows)

    def set_digests(self, conn: Connection, digests: Mapping[str, str | None]) -> None:
        """Keep ``digests`` (source id -> digest) with the links of those sources: one
        executemany for a page."""
        self._set(conn, "digest", self._mine, digests)

    def set_written(self, conn: Connection, written: Mapping[str, str]) -> None:
        """Keep ``written`` (source id -> digest of the write-only values written) with the
        links of those sources."""
        self._set(conn, "written", self._mine, written)

    def set_in_step(self, conn: Connection, revisions: Mapping[str, str], *, by_target: bool = False) -> None:
        """Keep ``revisions`` (source id, or target id with ``by_target``, -> the revision of
        the link's managed object) as the one its two objects agree at (``links.in_step``)."""
        self._set(conn, "in_step", self._theirs if by_target else self._mine, revisions)

    def _set(self, conn: Connection, name: str, column, values: Mapping[str, str | None]) -> None:  # type: ignore[no-untyped-def]
        if values and self.linking:
            conn.execute(update(lt).where(lt.c.linkset == self.name, lt.c.qualifier == self.qualifier,
                                          column == bindparam("b_id")).values({name: bindparam("b_value")}),
                         [{"b_id": i.lower() if self._folds(column) else i, "b_value": v}
                          for i, v in values.items()])

    def remove_sources(self, conn: Connection, source_ids: Sequence[str]) -> None:
        self._remove(conn, self._mine, source_ids)

    def remove_targets(self, conn: Connection, target_ids: Sequence[str]) -> None:
        self._remove(conn, self._theirs, target_ids)

    def _remove(self, conn: Connection, column, ids: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
        if not self.linking:
            return
        delete_ids(self.store, conn, lt, column.name, self._kept(column, ids),
                   {"linkset": self.name, "qualifier": self.qualifier})


def in_step_side(mapping: MappingDef) -> str | None:
    """Which side of ``mapping`` is the managed object whose revision its links keep as the
    one the two objects agree at (``links.in_step``): ``"source"`` or ``"target"``; ``None``
    when neither or both are managed types (no single revision to keep)."""
    source, target = mapping.source.startswith("managed/"), mapping.target.startswith("managed/")
    if source == target:
        return None
    return "source" if source else "target"


def revision(obj: Mapping[str, object] | None) -> str | None:
    """A managed object's revision (``None``: no object, or none known)."""
    rev = obj.get("_rev") if obj is not None else None
    return rev if isinstance(rev, str) and rev else None
