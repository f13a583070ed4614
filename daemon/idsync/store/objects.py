"""Managed objects (``managed/user``, ``managed/role``) as a Resource.

Reads page by keyset on ``id`` (stable under concurrent inserts, no OFFSET
scans). A page of writes is one transaction: inserts with executemany, updates
compared against the stored object first so an unchanged object is not written
and its ``_rev`` does not move. Searchable properties are kept in
``managed_properties`` alongside, in the same transaction.

The objects a page updates or deletes are read locked and held until it commits
(``_current``), and each is updated from the revision read: a writer beside it (the
API, implicit sync, a recon on another node) waits, and an op naming a revision the
object left fails alone (``RevisionMismatch``), never overwriting the other's change.
A create of an id another object holds is ``AlreadyExists``.

A value with a NUL character or an unpaired surrogate fails its object alone, on every
store (``unfit_at``): PostgreSQL cannot hold the one, no driver can encode the other, and
one entry must not stop a page.

Every object written is checked against its type in ``managed.json`` first
(``validation.py``): a create or an update that would break it fails alone
(``InvalidObject``), in a dry run as in a real one.

Secret properties (``managed.json``) are protected on the way in: those with
``encryption`` are encrypted with the project's keyring into PingIDM's ``$crypto``
form (reversible, so that a mapping can ``openidm.decrypt`` them towards a
directory), the others hashed (``passwords.py``). They are left out of every
object read, unless the resource was opened ``with_secrets`` (the sync engine,
which pushes the stored form to a target, or decrypts it in a transform); nor can a
query of a resource that leaves them out filter on them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import structlog
from sqlalchemy import Connection, bindparam, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from idsync.config.managed import ManagedType, PropertyDef
from idsync.crypto import is_encrypted
from idsync.errors import (
    AlreadyExists,
    CryptoFailed,
    NotFound,
    ObjectError,
    ObjectRejected,
    RevisionMismatch,
    WriteConflict,
    internal_message,
)
from idsync.query.ast import Compare, Path
from idsync.resource import ChangeFeed, ChangeSource, Obj, QuerySpec, Resource, WriteOp, WriteResult, failed
from idsync.store.changes import ManagedChanges
from idsync.store.database import Store, new_ids, unfit_at, utcnow
from idsync.store.filters import INDEXED_LENGTH, property_value, refuse_hidden, to_sql
from idsync.store.hooks import ObjectHooks, PostScript
from idsync.store.last_sync import forget_objects
from idsync.store.passwords import hash_secret, same_secret
from idsync.store.policy import Taken
from idsync.store.relationships import Edges, write_related
from idsync.store.roles import Grants, check_grants, check_role
from idsync.store.tables import ID_LENGTH, claims
from idsync.store.tables import managed_objects as mo
from idsync.store.tables import managed_properties as mp
from idsync.store.validation import InvalidObject, PolicyFailed, failures_list

__all__ = ["ManagedResource", "next_rev"]

log = structlog.get_logger(__name__)

_CHUNK = 500
# How often a write rolled back to break a deadlock is run again, and the longest pause
# (seconds, times the attempt) before it is: two writers that met once do not meet again at once.
_CONFLICT_ATTEMPTS = 5
_CONFLICT_PAUSE = 0.02
# How often the objects whose references moved while they were read are read again.
_REREADS = 5
# The columns of ``managed_properties`` a row of ``_props`` holds, in order.
_PROPERTY_COLUMNS = ("object_type", "object_id", "name", "value", "value_num")


def next_rev(rev: str | None) -> str:
    """Revisions count real changes: 16 hex digits, opaque to clients."""
    return f"{(int(rev, 16) if rev else 0) + 1:016x}"


_FIRST_REV = next_rev(None)


class ManagedResource(Resource, ChangeSource):
    ranged_ids = True  # UUIDs the store made, never changed

    def __init__(self, store: Store, schema: ManagedType, *, dry_run: bool = False,
                 with_secrets: bool = False, retrieving: bool = False) -> None:
        self.store = store
        self.with_secrets = with_secrets
        self.schema = schema
        self.object_type = schema.name
        self.name = f"managed/{schema.name}"
        self.dry_run = dry_run
        self._searchable = schema.searchable
        self._defaults = [(p.name, p.default) for p in schema.properties.values() if p.default is not None]
        self._joined: Connection | None = None
        self.hooks = ObjectHooks(schema)
        self._posts: list[PostScript] = []
        self._edges = Edges(store, schema) if schema.relationships else None
        # Objects read as a mapping's source pass through the type's onRetrieve scripts.
        self._retrieving = retrieving and self.hooks.reads
        self._grants = Grants(store, schema.roles) if schema.roles is not None else None
        self._virtual = schema.roles.virtual if schema.roles is not None and schema.roles.user == schema.name \
            else frozenset()

    @contextlib.contextmanager
    def joined(self, conn: Connection) -> Iterator[None]:
        """Within the block, writes go into ``conn``'s transaction (the caller
        commits them with its own rows) instead of one of their own."""
        self._joined = conn
        try:
            yield
        finally:
            self._joined = None

    def _transaction(self, conn: Connection | None = None) -> AbstractContextManager[Connection]:
        conn = conn if conn is not None else self._joined
        return contextlib.nullcontext(conn) if conn is not None else self.store.begin()

    def revealing_secrets(self) -> ManagedResource:
        """The same resource, its objects read with their (hashed) secrets: for
        the sync engine pushing them to a target, never for display."""
        return ManagedResource(self.store, self.schema, dry_run=self.dry_run, with_secrets=True)

    def as_sync_source(self) -> ManagedResource:
        """The same resource read as a mapping's source (a recon, a retry): with its
        (hashed) secrets, and each object as the property and object ``onRetrieve``
        scripts show it, as PingIDM's router shows it to a sync. A target's objects
        are compared as stored."""
        return ManagedResource(self.store, self.schema, dry_run=self.dry_run, with_secrets=True, retrieving=True)

    # -- reading ---------------------------------------------------------

    def pages(self, spec: QuerySpec, *, related: Sequence[str] | None = None) -> Iterator[list[Obj]]:
        """``Resource.pages``; a filter on a secret is refused (``QueryError``) unless the
        objects are read with their secrets: it would tell the stored value a reader is not shown.
        ``related``: each object whole but for its relationship and computed properties, of
        which only those named (what a client's query reads: its type's ``onRetrieve`` sees
        the whole object before the fields asked for are picked); ``spec.fields`` is then None."""
        if not self.with_secrets:
            refuse_hidden(spec.filter, dict.fromkeys(self.schema.secrets, "secret"))
        if related is None:
            return super().pages(spec)
        self.check_read("search")
        return self._read_pages(spec, related)

    def _read_pages(self, spec: QuerySpec, related: Sequence[str] | None = None) -> Iterator[list[Obj]]:
        """``spec``'s pages, their relationship and computed properties those ``related``
        names (by default, those of ``spec.fields``)."""
        related = spec.fields if related is None else related
        ids_only = spec.fields is not None and len(spec.fields) == 0
        columns = [mo.c.id, mo.c.rev] if ids_only else [mo.c.id, mo.c.rev, mo.c.data]
        where = [mo.c.object_type == self.object_type]
        if spec.filter is not None:
            where.append(to_sql(spec.filter, self.object_type, self._searchable))
        if spec.unclaimed_by is not None:
            where.append(~exists(select(claims.c.target_id).where(
                claims.c.run_id == spec.unclaimed_by, claims.c.target_id == mo.c.id)))
        if spec.created_before is not None:
            where.append(mo.c.created < spec.created_before)
        last: str | None = None
        while True:
            query = select(*columns).where(*where).order_by(mo.c.id).limit(spec.page_size)
            if last is not None:
                query = query.where(mo.c.id > last)
            for _ in range(_REREADS):
                with self.store.engine.connect() as conn:
                    rows = conn.execute(query).all()
                if ids_only or not rows:
                    break
                page = self._related([self._object(r.id, r.rev, r.data, spec.fields) for r in rows], related)
                if self.settled({r.id: r.rev for r in rows}, related):
                    break
            if not rows:
                return
            yield [{"_id": r.id, "_rev": r.rev} for r in rows] if ids_only else page
            if len(rows) < spec.page_size:
                return
            last = rows[-1].id

    def settled(self, revs: Mapping[str, str], fields: Sequence[str] | None) -> bool:
        """Whether objects read at ``revs`` (id: revision) and then, by another statement,
        their references still stand at those revisions: a write of references committed
        in between moves both ends' revisions, and a page is then read again (as
        ``_read_many`` reads an object again)."""
        if not revs or not self._references(fields):
            return True
        now = self._documents(list(revs), [], columns=(mo.c.id, mo.c.rev))
        return all(now.get(object_id, {}).get("_rev") == rev for object_id, rev in revs.items())

    def get_many(self, ids: Sequence[str], fields: Sequence[str] | None = None, *,
                 related: Sequence[str] | None = None) -> dict[str, Obj]:
        """``Resource.get_many``. ``related``: each object whole but for its relationship and
        computed properties, of which only those named (as ``pages``): what a read answers
        by default holds none of a role's ``members``, which a role of a million users would
        otherwise read whole; ``fields`` is then None."""
        if related is None:
            return super().get_many(ids, fields)
        self.check_read("get")
        return self._read_many(ids, None, related)

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None,
                   related: Sequence[str] | None = None) -> dict[str, Obj]:
        """The objects ``ids`` that exist, each with the references its ``_rev`` names
        (those ``related`` names; by default, those of ``fields``).

        The references are read after the documents, by another statement: a write of
        references committed in between (which moves the revision of both ends) would show
        an object's old revision with its new references, and a change built from that
        (a patch of ``roles/0``) would apply to references that revision never held. So
        the revisions are read again once the references are, and an object whose revision
        moved meanwhile is read again (one gone since is not found)."""
        related = fields if related is None else related
        found = self._documents(list(dict.fromkeys(ids)), fields)
        result = {obj["_id"]: obj for obj in self._related(list(found.values()), related)}
        if not self._references(related):
            return result
        read = {object_id: obj["_rev"] for object_id, obj in found.items()}
        for _ in range(_REREADS):
            now = self._documents(list(read), [], columns=(mo.c.id, mo.c.rev))
            moved = [object_id for object_id, rev in read.items() if now.get(object_id, {}).get("_rev") != rev]
            if not moved:
                break
            found = self._documents(moved, fields)
            for object_id in moved:
                result.pop(object_id, None)
            result.update((obj["_id"], obj) for obj in self._related(list(found.values()), related))
            read = {object_id: obj["_rev"] for object_id, obj in found.items()}
        return result

    def _references(self, fields: Sequence[str] | None) -> bool:
        """Whether a read of ``fields`` (None: all) reads references beside the documents."""
        return self._edges is not None and (fields is None or not self.schema.relationships.keys().isdisjoint(fields))

    def _documents(self, ids: Sequence[str], fields: Sequence[str] | None,
                   columns: tuple[Any, ...] = (mo.c.id, mo.c.rev, mo.c.data)) -> dict[str, Obj]:
        """The stored objects ``ids`` that exist, without their references (``columns``
        without ``data``: their ids and revisions only)."""
        found: dict[str, Obj] = {}
        with self.store.engine.connect() as conn:
            for start in range(0, len(ids), _CHUNK):
                rows = conn.execute(select(*columns).where(
                    mo.c.object_type == self.object_type, self.store.in_(mo.c.id, ids[start : start + _CHUNK])))
                for r in rows:
                    found[r.id] = self._object(r.id, r.rev, getattr(r, "data", None) or {}, fields)
        return found

    def complete(self, objects: list[Obj], fields: Sequence[str] | None) -> list[Obj]:
        """``objects`` read from the documents alone (a query of the API) with the
        relationship and computed properties of ``fields`` (None: all) filled in."""
        return self._related(objects, fields)

    def _related(self, objects: list[Obj], fields: Sequence[str] | None) -> list[Obj]:
        """``objects`` with their relationship properties (``relationships.py``) and, for
        the users of a role model, their effective roles and assignments (``roles.py``)."""
        if self._edges is not None:
            self._edges.attach(objects, fields)
        names = [n for n in self._virtual if fields is None or n in fields]
        if names and objects and self._grants is not None:
            with self.store.engine.connect() as conn:
                self._grants.fill(conn, objects, names)
        if self._retrieving:  # after the computed properties, which the scripts may read
            objects[:] = [self.hooks.retrieved(obj, "query") for obj in objects]
        return objects

    def _find_matching(
        self, paths: tuple[Path, ...], values: Sequence[tuple[Any, ...]], fields: Sequence[str] | None = None
    ) -> dict[tuple[Any, ...], list[Obj]]:
        """Batched correlation: one indexed query for a single searchable path. The index
        holds a string's first ``INDEXED_LENGTH`` characters: the objects found for a value
        that long are checked against their own values (``_whole``)."""
        if len(paths) != 1 or len(paths[0]) != 1 or paths[0][0] not in self._searchable:
            return super()._find_matching(paths, values, fields)
        name = paths[0][0]
        wanted: dict[str, list[tuple[Any, ...]]] = {}
        for v in values:
            text, _ = property_value(v[0])
            if text is not None:
                wanted.setdefault(text, []).append(v)
        ids_by_value: dict[str, list[str]] = {}
        with self.store.engine.connect() as conn:
            keys = list(wanted)
            for start in range(0, len(keys), _CHUNK):
                rows = conn.execute(
                    select(mp.c.value, mp.c.object_id).where(
                        mp.c.object_type == self.object_type,
                        mp.c.name == name,
                        self.store.in_(mp.c.value, keys[start : start + _CHUNK]),
                    )
                )
                for value, object_id in rows:
                    ids_by_value.setdefault(value, []).append(object_id)
        objects = self.get_many([i for ids in ids_by_value.values() for i in ids], fields)
        cut = [i for text, ids in ids_by_value.items() if len(text) >= INDEXED_LENGTH for i in ids]
        whole = self._whole(name, cut) if cut else {}
        result: dict[tuple[Any, ...], list[Obj]] = {}
        for text, ids in ids_by_value.items():
            for v in wanted[text]:
                held = [i for i in dict.fromkeys(ids) if i in objects
                        and (len(text) < INDEXED_LENGTH or v[0] in whole.get(i, ()))]
                if held:
                    result[v] = [objects[i] for i in held]
        return result

    def _whole(self, name: str, ids: Sequence[str]) -> dict[str, list[Any]]:
        """The values of ``name`` the objects ``ids`` hold (a list's elements), read in one
        query per chunk: what the index cut short, to compare with whole."""
        unique = list(dict.fromkeys(ids))
        values: dict[str, list[Any]] = {}
        with self.store.engine.connect() as conn:
            for start in range(0, len(unique), _CHUNK):
                for r in conn.execute(select(mo.c.id, mo.c.data).where(
                        mo.c.object_type == self.object_type, self.store.in_(mo.c.id, unique[start:start + _CHUNK]))):
                    value = r.data.get(name)
                    values[r.id] = value if isinstance(value, list) else [value]
        return values

    def latest_token(self) -> str:
        return ManagedChanges(self.store, self.object_type, self).latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        """The objects written since ``token`` (``store/changes.py``); deletes are not in it."""
        return ManagedChanges(self.store, self.object_type, self).read(token, fields, page_size)

    def is_empty(self) -> bool:
        """Whether the type has no object (one index probe, where ``count`` reads them all)."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(mo.c.id).where(mo.c.object_type == self.object_type).limit(1)).first() is None

    def count(self) -> int | None:
        with self.store.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(mo).where(mo.c.object_type == self.object_type)
            ).scalar_one()

    def _object(self, id: str, rev: str, data: dict[str, Any], fields: Sequence[str] | None) -> Obj:
        if fields is None:
            obj = {"_id": id, "_rev": rev, **data}
        else:
            obj = {"_id": id, "_rev": rev, **{f: data[f] for f in fields if f in data}}
        if not self.with_secrets:
            for secret in self.schema.secrets:
                obj.pop(secret, None)
        return obj

    # -- writing ---------------------------------------------------------

    def after_commit(self) -> None:
        """Run the ``post`` scripts of the writes committed since (``hooks.py``)."""
        posts, self._posts = self._posts, []
        if posts:
            self.hooks.run_posts(posts)

    def write_references(self, op: WriteOp, shown: Collection[str]) -> WriteResult:
        """``op``, an update of relationship properties holding many references by what it adds
        and removes (``RefChanges``), whose object answered carries of its relationship
        properties only those ``shown``: each reference added or removed is found by an index
        (``Edges.change``), and those the property holds besides are never read, which a role
        of a million members holds (``ManagedObjects.patch``)."""
        (result,) = self._write([op], shown)
        return result

    def _write(self, ops: Sequence[WriteOp], shown: Collection[str] | None = None) -> list[WriteResult]:
        """Write ``ops`` in one transaction (the caller's when ``joined``). One the database
        rolled back to break a deadlock (``WriteConflict``: a write of references beside
        another's, which may lock the same objects in another order) wrote nothing, and is
        run again from the start, a few times: each op is checked anew, at its revision,
        under the locks the new transaction takes. A joined one is the caller's to run again."""
        attempt = 1
        while True:
            queued = len(self._posts)
            try:
                results = self._write_all(ops, shown)
                break
            except WriteConflict as exc:
                del self._posts[queued:]  # the post scripts of writes rolled back never run
                if self._joined is not None or attempt == _CONFLICT_ATTEMPTS:
                    raise
                log.info("store.write_conflict", resource=self.name, objects=len(ops), attempt=attempt,
                         message=str(exc))
            time.sleep(random.uniform(0, _CONFLICT_PAUSE * attempt))  # two writers that met do not meet again at once
            attempt += 1
        if self._joined is None:
            self.after_commit()
        return results

    def _write_all(self, ops: Sequence[WriteOp], shown: Collection[str] | None = None) -> list[WriteResult]:
        """``ops`` written; the objects answered carry the relationship properties ``shown`` (None: all)."""
        if self._edges is None:
            return self._write_objects(ops)
        edges = self._edges
        if self._grants is None:
            with self._transaction() as conn:
                self._turn(conn, ops)
                return write_related(edges, conn, ops, lambda plain: self._write_objects(plain, conn), shown)
        return self._write_granting(edges, self._grants, ops, shown)

    def _write_granting(self, edges: Edges, grants: Grants, ops: Sequence[WriteOp],
                        shown: Collection[str] | None = None) -> list[WriteResult]:
        """A write of users or roles of a role model: the virtual properties are never stored,
        a role's condition and constraints, and those of the grants written, are checked, and
        the conditional grants follow the objects written (``roles.py``), in the same transaction."""
        refused: dict[int, WriteResult] = {}
        kept: list[WriteOp] = []
        for i, op in enumerate(ops):
            if not self._virtual.isdisjoint(op.values):
                op = dataclasses.replace(op, values={k: v for k, v in op.values.items() if k not in self._virtual})
            if op.kind != "delete":
                try:
                    if self.object_type == grants.model.user:
                        check_grants(op, self.object_type, grants.model.roles)
                    else:
                        check_role(op, self.object_type)
                        check_grants(op, self.object_type, grants.model.members)
                except ObjectError as exc:
                    refused[i] = failed(op, exc)
                    continue
            kept.append(op)
        with self._transaction() as conn:
            self._turn(conn, kept)
            written = iter(write_related(edges, conn, kept, lambda plain: self._write_objects(plain, conn), shown))
            results = [refused[i] if i in refused else next(written) for i in range(len(ops))]
            done = [r for r in results if r.ok and r.obj is not None and r.op.kind != "delete"]
            if self.object_type == grants.model.user:
                touched = grants.for_users(conn, [r.obj for r in done if r.obj is not None])
            else:
                touched = set()
                for r in done:
                    if r.obj is not None and (r.op.kind == "create" or "condition" in r.op.values):
                        touched |= grants.for_role(conn, r.obj["_id"], r.obj.get("condition"))
            revs = edges.bump(conn, touched) if touched else {}
        for r in done:
            if r.obj is not None:
                r.obj["_rev"] = revs.get((self.name, r.obj["_id"]), r.obj["_rev"])
        return results

    def _write_objects(self, ops: Sequence[WriteOp], conn: Connection | None = None) -> list[WriteResult]:
        now = utcnow()
        results: list[WriteResult] = []
        with self._transaction(conn) as conn:
            # Unique values created only: checked now, and again once written (``_clashes``).
            # Any other write of one takes the type's turn before its check (``Store.turn``).
            recheck = self._turn(conn, ops)
            taken = self._taken(conn, ops)
            current = self._current(conn, [op.id for op in ops if op.kind != "create" and op.id], lock=True)
            new_rows: list[dict[str, Any]] = []
            new_props: list[tuple[Any, ...]] = []
            reindex: list[str] = []
            changed: list[dict[str, Any]] = []
            removed: list[str] = []
            fresh = iter(new_ids(sum(1 for op in ops if op.kind == "create" and not op.values.get("_id"))))
            created_posts: list[tuple[str, dict[str, Any]]] = []  # queued once the creates are sure
            unfits = [self._unfit(op) for op in ops]
            new_ids_ = {i: str(op.values.get("_id") or next(fresh)) for i, op in enumerate(ops)
                        if op.kind == "create" and unfits[i] is None}
            built = self._created_many(ops, new_ids_, taken)
            for i, op in enumerate(ops):
                unfit = unfits[i]
                if unfit is not None:
                    results.append(unfit)
                    continue
                if op.kind == "create":
                    new_id_ = new_ids_[i]
                    try:
                        made = built[i] if i in built else self._created(op, new_id_, taken)
                        if isinstance(made, ObjectError):
                            raise made
                        data = self._at_rest_all(made, {})
                    except ObjectError as exc:
                        results.append(failed(op, exc))
                        continue
                    created_posts.append((new_id_, data))
                    rev = _FIRST_REV
                    new_rows.append({"object_type": self.object_type, "id": new_id_, "rev": rev,
                                     "data": data, "created": now, "updated": now})
                    new_props.extend(self._props(new_id_, data))
                    results.append(WriteResult(op, id=new_id_, obj=self._object(new_id_, rev, data, None)))
                    continue
                row = current.get(op.id or "")
                if row is None:
                    results.append(WriteResult(op, id=op.id, error=NotFound(f"{self.name}/{op.id} not found")))
                    continue
                rev, data = row
                if op.rev is not None and op.rev != rev:
                    results.append(WriteResult(op, id=op.id, error=RevisionMismatch(
                        f"{self.name}/{op.id}: revision {op.rev} expected, {rev} found")))
                    continue
                if op.kind == "delete":
                    try:
                        self.hooks.deleting(data, op.id or "")
                    except ObjectError as exc:
                        results.append(failed(op, exc))
                        continue
                    self._post("postDelete", op.id or "", data, None)
                    removed.append(op.id or "")
                    reindex.append(op.id or "")
                    results.append(WriteResult(op, id=op.id))
                    continue
                try:
                    merged = self._updated(data, op, taken)
                except ObjectError as exc:
                    results.append(failed(op, exc))
                    continue
                if merged == data:
                    results.append(WriteResult(op, id=op.id, obj=self._object(op.id or "", rev, data, None)))
                    continue
                new_rev = next_rev(rev)
                changed.append({"b_id": op.id, "b_old": rev, "b_rev": new_rev, "b_data": merged})
                current[op.id or ""] = (new_rev, merged)
                if any(data.get(k) != merged.get(k) for k in self._searchable):
                    reindex.append(op.id or "")
                    new_props.extend(self._props(op.id or "", merged))
                results.append(WriteResult(op, id=op.id, obj=self._object(op.id or "", new_rev, merged, None)))
                self._post("postUpdate", op.id or "", data, merged)
            if changed:
                # One executemany for the page's updates, not a round trip per object; each
                # from the revision read, which the row lock of ``_current`` keeps (checked).
                written = conn.execute(
                    update(mo).where(mo.c.object_type == self.object_type, mo.c.id == bindparam("b_id"),
                                     mo.c.rev == bindparam("b_old"))
                    .values(rev=bindparam("b_rev"), data=bindparam("b_data", type_=mo.c.data.type), updated=now),
                    changed).rowcount
                if written != len(changed):
                    raise RevisionMismatch(f"{self.name}: {len(changed) - written} of the {len(changed)} objects "
                                           "updated moved while they were locked; nothing of the batch was written")
            for start in range(0, len(removed), _CHUNK):
                conn.execute(delete(mo).where(mo.c.object_type == self.object_type,
                                              mo.c.id.in_(removed[start:start + _CHUNK])))
            if removed:
                forget_objects(conn, self.object_type, removed)
            if reindex:
                for start in range(0, len(reindex), _CHUNK):
                    conn.execute(delete(mp).where(
                        mp.c.object_type == self.object_type, mp.c.object_id.in_(reindex[start:start + _CHUNK])))
            if new_rows:
                try:
                    self.store.insert_many(conn, mo, new_rows)
                except Exception as exc:  # noqa: BLE001 - integrity errors differ per driver
                    raise self._create_failed(exc, new_rows) from None
            if new_props:
                self.store.insert_rows(conn, mp, _PROPERTY_COLUMNS, new_props)
            removed_again = self._clashes(conn, results) if recheck and new_rows else set()
            for object_id, data in created_posts:
                if object_id not in removed_again:
                    self._post("postCreate", object_id, None, data)
        return results

    def _create_failed(self, exc: Exception, rows: list[dict[str, Any]]) -> ObjectError:
        """What a batch whose insert failed raises. The table's one unique key is the id, and
        the ids the store makes never repeat: a clash is an id a create gave, which another
        writer's create (committed first: the database waited for it) holds now."""
        if not isinstance(exc, IntegrityError | self.store.engine.dialect.loaded_dbapi.IntegrityError):
            return ObjectRejected(f"{self.name}: create failed: {internal_message(exc)}")
        if len(rows) == 1:
            return AlreadyExists(f"{self.name}/{rows[0]['id']} already exists")
        return AlreadyExists(f"{self.name}: an id given to one of the {len(rows)} objects created already exists")

    def write_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        if not self.dry_run:
            return self._write(ops)
        # A dry run's answers, refused as the real write would refuse them.
        results: list[WriteResult] = []
        with self._transaction() as conn:
            current = self._current(conn, [op.id for op in ops if op.kind == "update" and op.id])
            taken = self._taken(conn, ops)
            for op in ops:
                unfit = self._unfit(op)
                if unfit is not None:
                    results.append(unfit)
                    continue
                try:
                    if op.kind == "create":
                        self._created(op, op.values.get("_id"), taken)
                    elif op.id in current:
                        self._updated(current[op.id][1], op, taken)
                except ObjectError as exc:
                    results.append(failed(op, exc))
                    continue
                results.append(self._simulate(op))
        return results

    def _unfit(self, op: WriteOp) -> WriteResult | None:
        """The refusal of a write carrying a value the store cannot hold (a NUL character, an
        unpaired surrogate: ``unfit_at``), or creating an object under an id longer than
        the id column (``ID_LENGTH``)."""
        new_id = op.values.get("_id") if op.kind == "create" else None
        if new_id is not None and len(str(new_id)) > ID_LENGTH:
            return WriteResult(op, id=None, error=InvalidObject(
                self.name, [f"an _id is at most {ID_LENGTH} characters; this one has {len(str(new_id))}"]))
        unfit = unfit_at(op.values) if op.kind != "delete" else None
        if unfit is None:
            return None
        where = f"{self.name}/{op.id}" if op.id else self.name
        return WriteResult(op, id=op.id, error=InvalidObject(where, [f"{unfit}, which the store cannot hold"]))

    def _created(self, op: WriteOp, object_id: Any, taken: Taken) -> dict[str, Any]:
        """The properties of the object ``op`` creates, defaults filled, through its
        scripts and policies (``hooks.py``: ``PolicyFailed``, ``ObjectRejected``)."""
        return self.hooks.creating(self._with_defaults(op), str(object_id) if object_id else None, taken)

    def _with_defaults(self, op: WriteOp) -> dict[str, Any]:
        data = {k: v for k, v in op.values.items() if not k.startswith("_") and v is not None}
        for name, default in self._defaults:
            if name not in data:
                data[name] = _fresh(default)
        return data

    def _created_many(self, ops: Sequence[WriteOp], ids: Mapping[int, str],
                      taken: Taken) -> dict[int, dict[str, Any] | ObjectError]:
        """``_created`` of the creates of ``ops`` (index -> its new id), made together
        (``ObjectHooks.creating_many``: one call into JavaScript per virtual property), by
        index. None made together when another write of the batch checks unique values
        (the first to claim one keeps it: the batch's order must hold), nor for one create."""
        if (len(ids) < 2 or not self.hooks.batched_virtual
                or (self.hooks.unique and any(op.kind == "update" for op in ops))):
            return {}
        items = [(self._with_defaults(ops[i]), ids[i]) for i in ids]
        return dict(zip(ids, self.hooks.creating_many(items, taken), strict=True))

    def _updated(self, data: dict[str, Any], op: WriteOp, taken: Taken) -> dict[str, Any]:
        """The stored ``data`` with the changes of ``op``, through the scripts and policies
        (only when something changed: an unchanged object runs nothing), secrets protected."""
        wanted = _changed(data, op)
        rested = self._at_rest_all(wanted, data)
        if rested == data:
            return data  # a secret given again in clear verifies as the stored one: nothing changes
        # Such a secret is not checked (or hashed) again: the scripts and policies see the stored form.
        given = {k: rested[k] if rested[k] == data.get(k) else v for k, v in wanted.items()}
        checked = self.hooks.updating(data, given, op.id, taken)
        return {k: rested[k] if k in rested and k in given and given[k] == v else self._at_rest(k, v, data.get(k))
                for k, v in checked.items()}

    def check_policies(self, values: dict[str, Any], object_id: str | None = None, *,
                       only: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The failed policy requirements of ``values`` as the object ``object_id`` (or a
        new one), in PingIDM's ``failedPolicyRequirements`` shape; nothing is written."""
        with self.store.engine.connect() as conn:
            found = self.hooks.check(values, object_id=object_id, taken=self._taken(conn), only=only)
        return failures_list(found)

    def _post(self, event: str, object_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if self.dry_run or event not in self.hooks.model.scripts:
            return  # most types have no post script: nothing to copy for one
        post = self.hooks.post(event, object_id, self._shown(old), self._shown(new))
        if post is not None:
            self._posts.append(post)

    def _shown(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is None:
            return None
        return {k: v for k, v in data.items() if k not in self.schema.secrets}

    @property
    def _turn_name(self) -> str:
        return f"unique:{self.object_type}"

    def _unique_creates_only(self, ops: Sequence[WriteOp]) -> bool | None:
        """How a batch keeps its unique values unique against writers beside it (a split
        recon's other processes and nodes, the API): None when it writes none; True when
        only its creates do, to searchable properties (checked, then checked again once
        written: ``_clashes``); False otherwise (its transaction takes the type's turn
        before it checks)."""
        unique = self.hooks.unique
        if not unique:
            return None
        writing = [op for op in ops if op.kind != "delete" and any(op.values.get(n) is not None for n in unique)]
        if not writing:
            return None
        return all(op.kind == "create" for op in writing) and unique <= self._searchable

    def _turn(self, conn: Connection, ops: Sequence[WriteOp]) -> bool | None:
        """``_unique_creates_only``, the type's turn taken in ``conn``'s transaction when it
        says False. Taken before any object is locked (a write of references locks them
        first: ``write_related``), as every writer of the type takes it: one that held an
        object while waiting for the turn would wait in a circle with one holding the turn."""
        recheck = self._unique_creates_only(ops)
        if recheck is False:
            self.store.turn(conn, self._turn_name)
        return recheck

    def _clashes(self, conn: Connection, results: list[WriteResult]) -> set[str]:
        """Check again the unique values of the objects this batch created, written now, in
        the type's turn (held until the transaction ends; on SQLite the write lock the
        batch's rows took): a value another writer committed since the first check fails
        the object created here, as the check would have, and the object is removed.
        The ids of the objects removed."""
        if self.store.dialect != "sqlite":
            self.store.turn(conn, self._turn_name)
        created = {r.id: r for r in results if r.ok and r.id and r.op.kind == "create" and r.obj is not None}
        clashing: dict[str, set[str]] = {}  # object id -> its unique properties another object holds
        for name in sorted(self.hooks.unique):
            mine = {v: i for i, r in created.items()
                    if isinstance(v := (r.obj or {}).get(name), str) and len(v) < INDEXED_LENGTH and "\x00" not in v}
            for value, holder in self._holders(conn, name, mine):
                if holder != mine[value]:
                    clashing.setdefault(mine[value], set()).add(name)
        if not clashing:
            return set()
        ids = sorted(clashing)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            conn.execute(delete(mp).where(mp.c.object_type == self.object_type, mp.c.object_id.in_(chunk)))
            conn.execute(delete(mo).where(mo.c.object_type == self.object_type, mo.c.id.in_(chunk)))
        for i, r in enumerate(results):
            if r.id in clashing and r.obj is not None:
                names = clashing[r.id]
                try:
                    found = self.hooks.check(r.obj, object_id=None, taken=_held(names), only=names)
                except ObjectRejected as exc:
                    results[i] = failed(r.op, exc)
                    continue
                results[i] = failed(r.op, PolicyFailed(self.name, failures_list(found)))
        return set(clashing)

    def _holders(self, conn: Connection, name: str, values: Collection[str]) -> list[tuple[str, str]]:
        """(value, object id) of the objects holding one of ``values`` of the searchable ``name``."""
        ordered = list(values)
        found: list[tuple[str, str]] = []
        for start in range(0, len(ordered), _CHUNK):
            found.extend((r[0], r[1]) for r in conn.execute(select(mp.c.value, mp.c.object_id).where(
                mp.c.object_type == self.object_type, mp.c.name == name,
                self.store.in_(mp.c.value, ordered[start:start + _CHUNK]))))
        return found

    def _taken(self, conn: Connection, ops: Sequence[WriteOp] = ()) -> Taken:
        """``unique``'s question, asked in the write's own transaction, and of the
        values the same batch has taken so far. The values ``ops`` write to a
        searchable unique property are looked up in one query for the batch."""
        seen: dict[tuple[str, str], str | None] = {}
        holders: dict[tuple[str, str], set[str]] = {}
        for name in self.hooks.unique & self._searchable:
            # A value the index holds whole; a longer one is asked of the documents (``taken``).
            values = {v for op in ops if isinstance(v := op.values.get(name), str) and len(v) < INDEXED_LENGTH}
            holders.update({(name, v): set() for v in values})
            for value, object_id in self._holders(conn, name, values):
                holders[(name, value)].add(object_id)

        def taken(name: str, value: Any, object_id: str | None) -> bool:
            key = (name, str(value))
            if key in seen and seen[key] != object_id:
                return True
            seen[key] = object_id
            if key in holders:
                return bool(holders[key] - {object_id})
            query = select(mo.c.id).where(mo.c.object_type == self.object_type,
                                          to_sql(Compare((name,), "eq", value), self.object_type, self._searchable))
            if object_id:
                query = query.where(mo.c.id != object_id)
            return conn.execute(query.limit(1)).first() is not None
        return taken

    def _at_rest_all(self, data: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
        if self.schema.secrets.isdisjoint(data):
            return data  # nothing to protect: most objects a recon writes
        return {k: self._at_rest(k, v, stored.get(k)) for k, v in data.items()}

    def _at_rest(self, name: str, value: Any, stored: Any = None) -> Any:
        if name not in self.schema.secrets:
            return value
        prop = self.schema.properties[name]
        if prop.encrypted:
            return self._encrypted(prop, value, stored)
        if is_encrypted(value):
            return value  # PingIDM's own $crypto form (an export): kept, never hashed as text
        return stored if stored is not None and same_secret(value, stored) else hash_secret(value, prop.hash_algorithm)

    def _encrypted(self, prop: PropertyDef, value: Any, stored: Any) -> Any:
        """``value`` encrypted; the stored form kept when it holds the same value (no new IV,
        no new revision), a value already in ``$crypto`` form kept as it is (imports)."""
        if value is None or is_encrypted(value):
            return value
        keyring = self.schema.keyring
        if keyring is None:
            raise CryptoFailed(f"{self.name}: {prop.name} is encrypted (managed.json) but no key is configured")
        if is_encrypted(stored) and same_secret(value, stored, keyring):
            return stored
        return keyring.encrypt(value, prop.cipher, prop.key_alias)

    def _current(self, conn: Connection, ids: list[str], *,
                 lock: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
        """(revision, data) of the objects ``ids`` that exist. ``lock``: as the write in
        ``conn``'s transaction reads them, locked until it ends (``FOR UPDATE``; SQLite's
        write lock), so that no other writer (the API, implicit sync, a recon beside this
        one) changes one between the read and the write: its change would be lost under
        this one, and two contents would share a revision. Locked in id order, as every
        batch locks them, so that two batches never wait for each other in a circle."""
        rows: dict[str, tuple[str, dict[str, Any]]] = {}
        if lock and ids:
            ids = sorted(set(ids))
            self.store.write_lock(conn)
        for start in range(0, len(ids), _CHUNK):
            query = select(mo.c.id, mo.c.rev, mo.c.data).where(
                mo.c.object_type == self.object_type, self.store.in_(mo.c.id, ids[start : start + _CHUNK]))
            for r in conn.execute(query.with_for_update() if lock else query):
                rows[r.id] = (r.rev, r.data)
        return rows

    def _props(self, object_id: str, data: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of ``managed_properties`` (``_PROPERTY_COLUMNS``) of an object's searchable values."""
        rows: list[tuple[Any, ...]] = []
        for name in self._searchable:
            value = data.get(name)
            if type(value) is str:  # nearly every value: one row, no number (``property_value``)
                if "\x00" not in value[:INDEXED_LENGTH]:
                    rows.append((self.object_type, object_id, name, value[:INDEXED_LENGTH], None))
                continue
            for item in value if isinstance(value, list) else [value]:
                text, number = property_value(item)
                if (text is None and number is None) or (text is not None and "\x00" in text):
                    continue  # a NUL: kept by an earlier release, it can match no filter anyway
                rows.append((self.object_type, object_id, name, text, number))
        return rows

    def reindex(self) -> int:
        """Rebuild the searchable index (after managed.json changed what is searchable)."""
        count = 0
        with self.store.begin() as conn:
            conn.execute(delete(mp).where(mp.c.object_type == self.object_type))
        for page in self.pages(QuerySpec()):
            rows = [row for obj in page for row in self._props(obj["_id"], obj)]
            count += len(page)
            if rows:
                with self.store.begin() as conn:
                    self.store.insert_rows(conn, mp, _PROPERTY_COLUMNS, rows)
        return count


def _held(names: set[str]) -> Taken:
    """``unique``'s answer for an object whose values of ``names`` another object holds."""
    return lambda name, _value, _object_id: name in names


def _changed(data: dict[str, Any], op: WriteOp) -> dict[str, Any]:
    """``data`` with the changes of ``op`` (``None`` removes a property)."""
    merged = dict(data)
    for key, value in op.values.items():
        if key.startswith("_"):
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _fresh(value: Any) -> Any:
    """A default value no two objects share (lists and dicts are copied)."""
    if not value and type(value) in (list, dict):
        return type(value)()  # the usual default ([] or {}), without deepcopy's machinery
    if isinstance(value, list | dict):
        return copy.deepcopy(value)
    return value

