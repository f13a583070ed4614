"""The one small protocol every resource speaks: the store's managed objects and
each external system's object types alike.

A recon reads a resource in pages (``pages``), looks up known ids in one call per
page (``get_many``), correlates with ``find`` and writes a page's changes with one
``write_batch`` call. Dry run is enforced here, at the lowest write layer: a
resource opened with ``dry_run=True`` never reaches ``_write``; it answers with
the results the write would have had, so nothing upstream needs an ``if dry_run``.

A resource that can tell what changed since a point in time also speaks
``ChangeSource`` (liveSync; the protocol is in its docstring).
"""

from __future__ import annotations

import datetime as dt
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from idsync.errors import IdsyncError, ObjectError, OperationDenied, PeerError, ReadDenied
from idsync.query.ast import And, Compare, Node, Or, Path
from idsync.spool import IdSpool

__all__ = [
    "UNREADABLE",
    "Change",
    "ChangeBatch",
    "ChangeFeed",
    "ChangeSource",
    "Obj",
    "QuerySpec",
    "Resource",
    "WriteOp",
    "WriteResult",
    "failed",
    "interrupted",
    "renamed",
    "value_at",
]

Obj = dict[str, Any]

# In an object a listing answers: why the object, whose id was read, could not be read
# in full (a value not of its property's type); the object then holds nothing else. A
# recon fails that object alone, by its id; a read by id leaves it out.
UNREADABLE = "_unreadable"


@dataclass(frozen=True)
class QuerySpec:
    """What to read: a ``_queryFilter`` AST or a native query, and which fields.

    ``fields=None`` means the resource's default set; ``[]`` means ids only.
    """

    filter: Node | None = None
    native: str | None = None
    fields: Sequence[str] | None = None
    page_size: int = 1000
    # Store resources only: leave out the ids a recon run has claimed (its target
    # phase then reads only what is left, in one anti-join per page).
    unclaimed_by: str | None = None
    # Store resources only: leave out the objects created at or after this time (a recon's
    # target phase visits the targets there when the run started, as PingIDM's).
    created_before: dt.datetime | None = None


@dataclass
class WriteOp:
    """One change to one object. ``values`` holds the full projected object for a
    create, and only the changed properties for an update (``None`` removes one)."""

    kind: Literal["create", "update", "delete"]
    id: str | None = None
    values: Obj = field(default_factory=dict)
    before: Obj | None = None
    rev: str | None = None  # expected revision, when the resource has revisions


@dataclass
class WriteResult:
    op: WriteOp
    id: str | None = None
    obj: Obj | None = None
    error: IdsyncError | None = None
    message: str | None = None  # what the peer did instead of the op, for the audit (a deactivation)

    @property
    def ok(self) -> bool:
        return self.error is None


def renamed(op_id: str | None, result_id: str | None) -> bool:
    """Whether a write gave its object a new id (a DN id whose entry was renamed):
    the link to it must then follow, under the new id."""
    return bool(op_id and result_id and op_id != result_id)


# ``config.operation_options.DO_NOTHING``, the ``onDeny`` of a refusal that answers nothing
# (this layer sits below the configuration's).
_DO_NOTHING = "DO_NOTHING"

class Resource(ABC):
    """One collection of objects: ``managed/user``, ``system/ldap/account``..."""

    name: str
    dry_run: bool = False
    # Ids that change when the object is renamed (LDAP DNs): a link to an id that no
    # longer exists may belong to an object now under another id.
    renames_ids: bool = False
    # Ids that never change and that a query can range over (``_id ge A and _id lt B``) in
    # the order the source itself compares them: a recon may be split into id ranges.
    ranged_ids: bool = False
    # Properties whose values are ids of another object type of the same system (a
    # SCIM group's ``members``: ``{"members": "account"}``): the store shows them as
    # references to the managed objects linked to those (``store/system_refs.py``).
    references: Mapping[str, str] = MappingProxyType({})
    # Properties that take a secret in clear only (Active Directory's ``unicodePwd``, which
    # the directory hashes itself): a hash of one is never written to them.
    clear_secrets: frozenset[str] = frozenset()
    # Properties the object takes but a read does not return (a password, OpenICF's
    # NOT_READABLE and NOT_RETURNED_BY_DEFAULT): written again only when they change
    # (``sync/written.py``).
    write_only: frozenset[str] = frozenset()
    # What the system's provisioner denies (PingIDM's ``operationOptions``): the writes
    # "create", "update" and "delete", liveSync ("sync"), and the reads "get" (by id) and
    # "search" (queries, listings) -> its ``onDeny`` (``DO_NOTHING``, ``THROW_EXCEPTION``).
    # A denied write fails (``OperationDenied``); the sync engine does not even plan one
    # whose ``onDeny`` is ``DO_NOTHING`` (``sync/assess.py``). A denied read raises
    # ``ReadDenied`` before anything is asked of the system, whatever its ``onDeny``: what
    # the caller makes of that is its own (a recon checks before it reads anything).
    denied: Mapping[str, str] = MappingProxyType({})

    def pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        """Yield the matching objects, one page (a list) at a time."""
        self.check_read("search")
        return self._read_pages(spec)

    def get_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        """Read the objects with these ids; ids that do not exist are absent."""
        self.check_read("get")
        return self._read_many(ids, fields)

    def get(self, id: str, fields: Sequence[str] | None = None) -> Obj | None:
        return self.get_many([id], fields).get(id)

    def denial(self, kind: str) -> str | None:
        """Why the provisioner refuses ``kind`` (a write's, "sync", "get", "search"), naming
        the setting, or None when it allows it."""
        on_deny = self.denied.get(kind)
        if on_deny is None:
            return None
        return (f"{self.name}: {kind.upper()} is denied on this system (operationOptions.{kind.upper()}.denied "
                f"in its provisioner, onDeny {on_deny})")

    def check_read(self, kind: str) -> None:
        """Raise ``ReadDenied`` when the provisioner denies reads of ``kind`` ("get", "search")."""
        why = self.denial(kind)
        if why is not None:
            raise ReadDenied(why, quiet=self.denied[kind] == _DO_NOTHING)

    @abstractmethod
    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        """``pages``, the reads allowed."""

    @abstractmethod
    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None) -> dict[str, Obj]:
        """``get_many``, the reads allowed."""

    def find(self, spec: QuerySpec, limit: int | None = None) -> list[Obj]:
        """All objects matching ``spec`` (used for correlation: expect few)."""
        found: list[Obj] = []
        for page in self.pages(spec):
            found.extend(page)
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    def find_matching(
        self, paths: tuple[Path, ...], values: Sequence[tuple[Any, ...]], fields: Sequence[str] | None = None
    ) -> dict[tuple[Any, ...], list[Obj]]:
        """Batched correlation: for each tuple of values (one per path), the objects
        whose properties at ``paths`` equal them."""
        self.check_read("search")
        return self._find_matching(paths, values, fields)

    def _find_matching(
        self, paths: tuple[Path, ...], values: Sequence[tuple[Any, ...]], fields: Sequence[str] | None
    ) -> dict[tuple[Any, ...], list[Obj]]:
        """``find_matching``: asks ``find`` with an OR of the tuples, 50 at a time, and
        matches the answers back here; resources with an index override it."""
        result: dict[tuple[Any, ...], list[Obj]] = {}
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), 50):
            chunk = unique[start : start + 50]
            terms = [
                And(tuple(Compare(p, "eq", v) for p, v in zip(paths, vals, strict=True)))
                if len(paths) > 1 else Compare(paths[0], "eq", vals[0])
                for vals in chunk
            ]
            node: Node = Or(tuple(terms)) if len(terms) > 1 else terms[0]
            for obj in self.find(QuerySpec(filter=node, fields=fields)):
                for vals in chunk:
                    if all(_equal(value_at(obj, p), v) for p, v in zip(paths, vals, strict=True)):
                        result.setdefault(vals, []).append(obj)
        return result

    def count(self) -> int | None:
        """How many objects there are, when cheap to know (for progress)."""
        return None

    def referenced_ids(self, name: str, values: Sequence[Any]) -> list[str | None]:
        """The ids of the objects the values of reference property ``name`` name (one
        per value, ``None`` for a value naming none): the values themselves, unless
        the system names them otherwise (an LDAP group's member DNs)."""
        return [None if v is None else str(v) for v in values]

    def reference_values(self, name: str, ids: Sequence[str]) -> dict[str, Any]:
        """id -> the value reference property ``name`` holds for it; the inverse of
        ``referenced_ids`` (an id naming no object is absent)."""
        return {i: i for i in ids}

    def stored(self, values: Obj) -> Obj:
        """``values`` (a projected object) as this resource would store them and a read
        would answer them: a system that keeps a property as a type of its own (``"5010"``
        in an integer column reads back 5010) says so here, so that comparing a projection
        with the object read finds no change where a write would change nothing. A value
        the system would not take is left as it is (its write says why). The default: as
        they are."""
        return values

    def expect_listing(self) -> None:  # noqa: B027 - optional hook
        """A whole listing (``pages`` without a filter: a recon's source phase) follows
        soon: start what it needs that takes long to start, while the caller prepares."""

    def write_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Apply ``ops``; a failed op fails alone (its result carries the error)."""
        allowed = [op for op in ops if op.kind not in self.denied] if self.denied else ops
        if not allowed:
            done: list[WriteResult] = []
        elif self.dry_run:
            done = [self._simulate(op) for op in allowed]
        else:
            done = self._write(allowed)
        if len(allowed) == len(ops):
            return done
        written = iter(done)
        return [next(written) if op.kind not in self.denied else WriteResult(op, error=OperationDenied(
            str(self.denial(op.kind)))) for op in ops]

    def create(self, values: Obj) -> Obj:
        return self._one(WriteOp("create", values=values))

    def update(self, id: str, values: Obj, before: Obj | None = None, rev: str | None = None) -> Obj:
        return self._one(WriteOp("update", id=id, values=values, before=before, rev=rev))

    def delete(self, id: str, before: Obj | None = None, rev: str | None = None) -> None:
        self._one(WriteOp("delete", id=id, before=before, rev=rev))

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def _one(self, op: WriteOp) -> Obj:
        (result,) = self.write_batch([op])
        if result.error is not None:
            raise result.error
        return result.obj or {}

    @abstractmethod
    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Really write. Per-object failures go in the result as ``ObjectError``;
        a failure of the whole peer raises ``PeerError``."""

    def _simulate(self, op: WriteOp) -> WriteResult:
        if op.kind == "create":
            new_id = op.values.get("_id") or f"dry-run-{uuid.uuid4()}"
            return WriteResult(op, id=new_id, obj={**op.values, "_id": new_id})
        if op.kind == "update":
            return WriteResult(op, id=op.id, obj={**(op.before or {}), **op.values, "_id": op.id})
        return WriteResult(op, id=op.id)


@dataclass(frozen=True)
class Change:
    """One object that changed since a token: ``obj`` is the object as it is now (created,
    modified or renamed; the fields asked for, ``_id`` included), ``None`` when it was
    deleted, and ``id`` is its id (for a delete, the id it had). An object the source
    answered without an id has ``id`` ``""`` and ``about`` what the source tells of it
    (its DN, its user name; never a secret): it fails as an entry of the run, never
    dropped in silence.

    ``reread``: a source read by stamps found the object within its overlap without its
    token keeping it (``stamps.Read.AGAIN``): a change committed late, or one a read
    before applied. It is a change only where the target does not hold it already
    (``ChangeApplier.apply``)."""

    id: str
    obj: Obj | None
    about: str = ""
    reread: bool = False

    @property
    def deleted(self) -> bool:
        return self.obj is None

    @property
    def unidentified(self) -> bool:
        """Answered without an id: what becomes of it cannot be linked nor retried."""
        return self.obj is not None and not self.id


@dataclass(frozen=True)
class ChangeBatch:
    """Some changes, and the token that covers them: once every change of the batch is
    applied, ``token`` is stored in the same transaction as the last of them. ``None``:
    the source gives no position inside the read (an LDAP refresh tells its cookie only
    at its end); the stored token then stays as it was until a later batch of the read."""

    changes: list[Change]
    token: str | None
    retry: bool = False  # objects whose earlier change failed, read again (``livesync.py``)


@dataclass
class ChangeFeed:
    """The answer of ``ChangeSource.read_changes``: the batches, read lazily, and what the
    read can see. ``method`` names how the changes are read (``syncrepl``,
    ``modifyTimestamp``...) for the run's summary and the logs. ``reports_deletes``
    false: deletes are not seen this way and are left to the next full recon, which
    the run's summary says."""

    batches: Iterable[ChangeBatch]
    method: str
    reports_deletes: bool = True
    note: str | None = None  # said once in the run's summary (why deletes are not seen, say)
    # When the read also told every object that exists (an LDAP present phase), all their
    # ids (spooled: as many as the directory has), read before the batches: an object
    # idsync links that is not among them was deleted. ``None``: the read told deletes
    # itself, or cannot.
    complete_ids: IdSpool | None = None


class ChangeSource(ABC):
    """A resource that can tell what changed since a point in time (liveSync).

    The point is a *token*: an opaque text the source makes and reads back (an LDAP
    sync cookie, a CSN, a timestamp), stored by idsync per source. It must hold no
    secret. The protocol, which every implementation (LDAP's syncrepl and polling
    readers, SCIM's ``meta.lastModified`` filter, Salesforce's Get Updated and Get
    Deleted resources) keeps:

    * ``latest_token()`` answers the position of the source *now* without reading any
      object (one cheap round trip: OpenLDAP's ``contextCSN``, the server's clock).
      It is taken before a full reconciliation and stored once that recon ended, so
      nothing changed during the recon is missed; a change the recon saw already is
      seen again, which is harmless (applying a change is idempotent: the assessment
      compares states).
    * ``read_changes(token, fields, page_size)`` yields the objects created, modified,
      renamed or deleted since ``token``, as ``ChangeBatch``es of at most ``page_size``
      changes, each object once per read, in its state at read time. A read with no
      change costs one round trip and yields at most one empty batch (which may carry
      a new token). Deletes carry the id only. A source that cannot tell whether an
      object it reads again was applied already (read by a stamp, within an overlap)
      marks it ``Change.reread``: it is a change only where the target does not hold it.
    * A token the source can no longer honour (change log trimmed, server restored
      from a backup, the token unknown or from another kind of read, a retention window
      passed) raises ``SyncTokenExpired`` before the first batch: never a silent
      skip, never a partial answer taken for complete. The caller then reconciles in
      full and stores a fresh token from ``latest_token()``.
    * A failure mid-read raises ``PeerError``; batches already applied stay applied
      and the token stored with the last of them stays valid.
    * Dry run needs nothing here: reading never writes.
    """

    @abstractmethod
    def latest_token(self) -> str:
        """The source's position now, without reading objects."""

    @abstractmethod
    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        """The changes since ``token``; ``fields`` as in ``QuerySpec`` (None: the default set)."""


def failed(op: WriteOp, error: ObjectError) -> WriteResult:
    """The result of an op that failed on its own."""
    return WriteResult(op, id=op.id, error=error)


def interrupted(ops: Sequence[WriteOp], done: Sequence[WriteResult | None], error: PeerError) -> list[WriteResult]:
    """The results of a batch whose peer failed (``error``) after some of its ops were
    written: ``done`` holds the results so far (in the order of ``ops``, None or missing
    for an op not sent), and each op not written fails with the peer's error, for the next
    run. The page is then recorded (the links of the objects created, the audit) and the
    run goes on, until its next request to that peer stops it: raised instead, the error
    would have rolled the page back, and objects the peer holds would have been left
    unlinked, to be created again. When nothing was written the error is raised again:
    the run stops with nothing of the batch to keep."""
    results = [*done, *([None] * (len(ops) - len(done)))]
    if not any(r is not None and r.ok for r in results):
        raise error
    return [r if r is not None else failed(op, ObjectError(f"{error}; not written, the next run tries again"))
            for op, r in zip(ops, results, strict=True)]


def value_at(obj: Obj, path: Path) -> Any:
    """The value at ``path`` (property names, one per level) in ``obj``; None where there is none."""
    value: Any = obj
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _equal(found: Any, wanted: Any) -> bool:
    """Equality as directories see it: any value of a multi-valued attribute,
    strings without regard to case."""
    if isinstance(found, list):
        return any(_equal(item, wanted) for item in found)
    if isinstance(found, str) and isinstance(wanted, str):
        return found.casefold() == wanted.casefold()
    return bool(found == wanted)
