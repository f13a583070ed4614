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

A Salesforce User's ``ManagerId`` names another User: the reference is of the
resource's own type (``ReferenceLinks.own``) and holds one value (``many`` false),
shown as one reference or ``None``. Within one recon the manager may be linked
only after its report was read or written (created later in the same run): the
wrapper remembers such objects, and ``revisit`` names those whose references now
resolve, for the recon to assess them once more at the end of its source phase.
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
    many: bool = True  # a list of references (a group's members), or one (a manager)
    own: bool = False  # the referenced objects are of the resource's own type (a User's ManagerId)


class LinkedReferences(Resource):
    """``inner`` with its reference properties read and written as managed references."""

    def __init__(self, inner: Resource, properties: Mapping[str, ReferenceLinks]) -> None:
        self.inner = inner
        self.name = inner.name
        self.dry_run = inner.dry_run
        self.renames_ids = inner.renames_ids
        self.clear_secrets = inner.clear_secrets
        self.write_only = inner.write_only
        self.denied = inner.denied
        self._properties = properties
        # (object id, property) -> the values last read that named no linked object.
        self._unlinked: dict[tuple[str, str], list[Any]] = {}
        # Own-type references left out for want of a link, until ``revisit``: (object id,
        # property) -> the system ids read, or the managed ids not written.
        self._waiting: dict[tuple[str, str], set[str]] = {}
        self._left_out: dict[tuple[str, str], set[str]] = {}

    @property
    def properties(self) -> Mapping[str, ReferenceLinks]:
        """The reference properties, and how each meets the managed objects."""
        return self._properties

    # -- reading -----------------------------------------------------------

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        for page in self.inner.pages(spec):
            yield self._read(page)

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        found = self.inner.get_many(ids, fields)
        self._read(list(found.values()))
        return found

    def count(self) -> int | None:
        return self.inner.count()

    def close(self) -> None:
        self.inner.close()

    def _read(self, page: list[Obj]) -> list[Obj]:
        for name, ref in self._properties.items():
            # A value already a reference (an object as written, merged with what was read) stays one.
            held = [(obj, [v for v in _values(obj[name]) if not _is_ref(v)]) for obj in page if name in obj]
            values = [v for _, vals in held for v in vals]
            ids = self.inner.referenced_ids(name, values) if values else []
            managed = ref.links.targets_of(list(dict.fromkeys(i for i in ids if i is not None))) if ids else {}
            unlinked = 0
            at = 0
            for obj, vals in held:
                mine = ids[at:at + len(vals)]
                at += len(vals)
                refs = [v for v in _values(obj[name]) if _is_ref(v)]
                refs += [{"_ref": f"{ref.collection}/{t}"}
                         for t in sorted({managed[i] for i in mine if i is not None and i in managed})]
                obj[name] = refs if ref.many else (refs[0] if refs else None)
                kept = [v for v, i in zip(vals, mine, strict=True) if i is None or i not in managed]
                unlinked += len(kept)
                if obj.get("_id") is None:
                    continue
                key = (str(obj["_id"]), name)
                # Only what is to be written back is kept: a run may read a million objects.
                if kept:
                    self._unlinked[key] = kept
                else:
                    self._unlinked.pop(key, None)
                waiting = {i for i in mine if i is not None and i not in managed}
                if ref.own and waiting:
                    self._waiting[key] = waiting
                else:
                    self._waiting.pop(key, None)
            if unlinked:
                log.warning("store.references_unlinked", resource=self.name, property=name, count=unlinked)
        return page

    def revisit(self) -> list[str]:
        """The ids of the objects read or written since the last call whose references
        to objects of their own type were left out for want of a link, and are linked
        now (a report read, or written, before its manager was created in the same run)."""
        found: list[str] = []
        for name, ref in self._properties.items():
            if not ref.own:
                continue
            read = {k[0]: v for k, v in self._waiting.items() if k[1] == name}
            if read:
                linked = ref.links.targets_of(list({i for ids in read.values() for i in ids}))
                found.extend(o for o, ids in read.items() if not ids.isdisjoint(linked))
            written = {k[0]: v for k, v in self._left_out.items() if k[1] == name}
            if written:
                linked = ref.links.sources_of(list({i for ids in written.values() for i in ids}))
                found.extend(o for o, ids in written.items() if not ids.isdisjoint(linked))
        self._waiting.clear()
        self._left_out.clear()
        return list(dict.fromkeys(found))

    # -- writing -----------------------------------------------------------

    def write_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        shown = [self._written(op) for op in ops]
        results = self.inner.write_batch([op for op, _ in shown])
        out: list[WriteResult] = []
        for op, (_, left_out), result in zip(ops, shown, results, strict=True):
            if result.obj is not None:
                self._read([result.obj])
            if result.ok and result.id is not None:
                for name, ids in left_out.items():
                    self._left_out[(result.id, name)] = ids
            out.append(replace(result, op=op))
        return out

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        return self.write_batch(ops)  # never reached: write_batch is the inner resource's

    def _written(self, op: WriteOp) -> tuple[WriteOp, dict[str, set[str]]]:
        """``op`` with the references of its reference properties as the system's values,
        and, per own-type property, the managed ids it had to leave out."""
        values = dict(op.values)
        left_out: dict[str, set[str]] = {}
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
            missing = {w for w in ids if w not in system or system[w] not in native}
            if missing:
                log.warning("store.references_unlinked", resource=self.name, property=name, count=len(missing))
                if ref.own:
                    left_out[name] = missing
            if ref.many:
                if op.kind == "update" and op.id is not None:
                    out.extend(self._unlinked.get((op.id, name), ()))
                values[name] = out
            elif out:
                values[name] = out[0]
            else:
                # One reference naming nothing of the system yet: the system's value is left as it is.
                del values[name]
        return replace(op, values=values), left_out


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


def _is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("_ref"), str)


def _managed_id(item: Any, collection: str) -> str | None:
    ref = item.get("_ref") if isinstance(item, Mapping) else None
    if isinstance(ref, str) and ref.startswith(collection + "/"):
        return ref[len(collection) + 1:]
    return None
