"""A system's references as managed references, through links.

A SCIM group's ``members`` are SCIM user ids; the managed role it maps to holds
references to managed users. The two meet through the links of the mapping
between those SCIM users and managed users: a member whose SCIM user is linked to
managed user ``U`` is ``{"_ref": "managed/user/U"}``, whatever either is called.
A user renamed on either side keeps its link, so it keeps its memberships; a
member with no link (not reconciled yet) is left out, and counted in a
``store.references_unlinked`` warning.

An LDAP group's ``uniqueMember`` (or ``member``) works the same way: its DNs name
LDAP accounts (the connector turns them into the accounts' ids and back,
``Resource.referenced_ids``/``reference_values``), and a member is the managed user
linked to that account. A renamed entry keeps its link (the link follows the new
DN), so the role's reference to the user, unchanged, is written as the new DN.

``LinkedReferences`` wraps a system resource whose ``references`` name such
properties, for which a mapping links the referenced objects with a managed type:
it reads them as references (one link query per page) and writes references back
as the system's values. Any other value (a plain id) is written as it is. A value
read with no link (a member no mapping manages, or not reconciled yet) is not lost
when the object is written back: the values of the object as last read that
named no linked object are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from idsync.resource import ChangeBatch, ChangeFeed, ChangeSource, Obj, QuerySpec, Resource, WriteOp, WriteResult
from idsync.store.links import LinkSet

__all__ = ["LinkedReferences", "ReferenceLinks", "linked_references"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReferenceLinks:
    """How one property's system ids meet managed objects: a link set seen with the
    system's objects as its sources, and the managed collection on the other side."""

    links: LinkSet
    collection: str  # "managed/user"


class LinkedReferences(Resource):
    """``inner`` with its reference properties read and written as managed references."""

    def __init__(self, inner: Resource, properties: Mapping[str, ReferenceLinks]) -> None:
        self.inner = inner
        self.name = inner.name
        self.dry_run = inner.dry_run
        self.renames_ids = inner.renames_ids
        self._properties = properties
        # (object id, property) -> the values last read that named no linked object.
        self._unlinked: dict[tuple[str, str], list[Any]] = {}

    # -- reading -----------------------------------------------------------

    def pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        for page in self.inner.pages(spec):
            yield self._read(page)

    def get_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        found = self.inner.get_many(ids, fields)
        self._read(list(found.values()))
        return found

    def count(self) -> int | None:
        return self.inner.count()

    def close(self) -> None:
        self.inner.close()

    def _read(self, page: list[Obj]) -> list[Obj]:
        for name, ref in self._properties.items():
            held = [(obj, _values(obj[name])) for obj in page if name in obj]
            values = [v for _, vals in held for v in vals]
            if not values:
                continue
            ids = self.inner.referenced_ids(name, values)
            managed = ref.links.targets_of(list(dict.fromkeys(i for i in ids if i is not None)))
            unlinked = 0
            at = 0
            for obj, vals in held:
                mine = ids[at:at + len(vals)]
                at += len(vals)
                obj[name] = [{"_ref": f"{ref.collection}/{t}"}
                             for t in sorted({managed[i] for i in mine if i is not None and i in managed})]
                kept = [v for v, i in zip(vals, mine, strict=True) if i is None or i not in managed]
                unlinked += len(kept)
                if obj.get("_id") is not None:
                    self._unlinked[(str(obj["_id"]), name)] = kept
            if unlinked:
                log.warning("store.references_unlinked", resource=self.name, property=name, count=unlinked)
        return page

    # -- writing -----------------------------------------------------------

    def write_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        shown = [self._written(op) for op in ops]
        results = self.inner.write_batch(shown)
        out: list[WriteResult] = []
        for op, result in zip(ops, results, strict=True):
            if result.obj is not None:
                self._read([result.obj])
            out.append(replace(result, op=op))
        return out

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        return self.write_batch(ops)  # never reached: write_batch is the inner resource's

    def _written(self, op: WriteOp) -> WriteOp:
        """``op`` with the references of its reference properties as the system's values."""
        values = dict(op.values)
        for name, ref in self._properties.items():
            if values.get(name) is None:
                continue
            items = _values(values[name])
            wanted = [_managed_id(item, ref.collection) for item in items]
            ids = [w for w in wanted if w is not None]
            system = ref.links.sources_of(ids) if ids else {}
            native = self.inner.reference_values(name, list(dict.fromkeys(system.values())))
            out: list[Any] = []
            for item, w in zip(items, wanted, strict=True):
                if w is None:
                    out.append(item)  # not a reference: the system's own value
                elif w in system and system[w] in native:
                    out.append(native[system[w]])
            missing = len(ids) - sum(1 for w in ids if w in system and system[w] in native)
            if missing:
                log.warning("store.references_unlinked", resource=self.name, property=name, count=missing)
            if op.kind == "update" and op.id is not None:
                out.extend(self._unlinked.get((op.id, name), ()))
            values[name] = out
        return replace(op, values=values)


class LinkedChanges(LinkedReferences, ChangeSource):
    """``LinkedReferences`` of a resource that also tells its changes (liveSync)."""

    def latest_token(self) -> str:
        assert isinstance(self.inner, ChangeSource)
        return self.inner.latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        assert isinstance(self.inner, ChangeSource)
        feed = self.inner.read_changes(token, fields, page_size)

        def batches() -> Iterator[ChangeBatch]:
            for batch in feed.batches:
                self._read([c.obj for c in batch.changes if c.obj is not None])
                yield batch

        return replace(feed, batches=batches())


def linked_references(inner: Resource, properties: Mapping[str, ReferenceLinks]) -> Resource:
    """``inner`` itself when none of its properties is a linked reference."""
    if not properties:
        return inner
    return LinkedChanges(inner, properties) if isinstance(inner, ChangeSource) else LinkedReferences(inner, properties)


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _managed_id(item: Any, collection: str) -> str | None:
    ref = item.get("_ref") if isinstance(item, Mapping) else None
    if isinstance(ref, str) and ref.startswith(collection + "/"):
        return ref[len(collection) + 1:]
    return None
