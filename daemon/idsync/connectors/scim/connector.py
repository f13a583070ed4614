"""The SCIM connector: ``system/<name>/account`` (Users, with the enterprise
extension) and ``system/<name>/group`` (Groups) of a SCIM 2.0 or 1.1 provider,
configured by ``provisioner.openicf-<name>.json`` (see ``config``).

Reads page through ``startIndex``/``count`` asking with ``attributes=`` only for
the mapped attributes; ``_queryFilter`` becomes a SCIM filter (widened on properties
that pick one item of a multi-valued attribute, the answers then narrowed). Ids are the
provider's ``id``. A group's ``members`` property names its members by a User
attribute (``memberReference``, ``userName`` by default in the sample) so that a
managed role's members are the same people as the managed users linked to them;
ids are looked up in batched ``id eq``/``userName eq`` filters and cached for the
life of the resource.

Writes: POST; PATCH when the ``ServiceProviderConfig`` announces it (SCIM 2.0),
else PUT; ``If-Match`` when ETags are announced, and a 412 re-reads and tries once
more; DELETE. A refused object fails alone; a refused credential or a dead peer
raises ``PeerError`` and stops the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog

from idsync.connectors.base import System, system_test_report
from idsync.connectors.scim.changes import ScimChanges
from idsync.connectors.scim.config import ScimObjectType, ScimProperty, parse_scim_config
from idsync.connectors.scim.http import ScimClient
from idsync.connectors.scim.paths import AmbiguousPath, read_path
from idsync.connectors.scim.writes import (
    apply_changes,
    member_changes,
    member_ids,
    new_resource,
    patch_operations,
    put_body,
    with_members,
)
from idsync.errors import (
    AuthenticationFailed,
    ConfigError,
    IdsyncError,
    NotFound,
    ObjectError,
    ObjectRejected,
    PeerError,
    QueryError,
    RevisionMismatch,
)
from idsync.query.ast import And, Compare, Literal_, Node, Not, Or, Path, Present, paths
from idsync.query.evaluate import matches
from idsync.query.scim import to_scim
from idsync.resource import ChangeFeed, ChangeSource, Obj, QuerySpec, Resource, WriteOp, WriteResult, failed
from idsync.resource import interrupted as write_interrupted

__all__ = ["ScimResource", "ScimSystem", "open_scim_system"]

log = structlog.get_logger("idsync.connectors.scim")

_CHUNK = 50


def _or_eq(attribute: str, values: Sequence[str]) -> str:
    terms: list[Node] = [Compare((attribute,), "eq", v) for v in values]
    return to_scim(Or(tuple(terms)) if len(terms) > 1 else terms[0], lambda p: p[0])


def _refused_filter(error: ObjectRejected) -> bool:
    """Whether a 400 says the filter was too much for the provider (an ``or`` it does not take)."""
    return "HTTP 400" in str(error)


def _names_in(node: Node) -> list[str]:
    """The first segment of every path the filter names."""
    return [path[0] for path in paths(node) if path]


def _widened(node: Node, picked: set[str], *, negated: bool) -> Node:
    """``node`` with each term on a ``picked`` property kept as is where it is asserted
    (sent wider) and made ``false`` where it is denied, so the result matches a superset."""
    match node:
        case Compare(path=path) | Present(path=path) if path and path[0] in picked:
            return Literal_(False) if negated else node
        case Not(item=item):
            return Not(_widened(item, picked, negated=not negated))
        case And(items=items):
            return And(tuple(_widened(i, picked, negated=negated) for i in items))
        case Or(items=items):
            return Or(tuple(_widened(i, picked, negated=negated) for i in items))
    return node


class ScimResource(Resource, ChangeSource):
    """One object type of one SCIM provider; its changes are read by ``changes.py``."""

    def __init__(self, system: str, client: ScimClient, obj_type: ScimObjectType, *, dry_run: bool = False) -> None:
        self.name = f"system/{system}/{obj_type.name}"
        self.dry_run = dry_run
        self._client = client
        self._type = obj_type
        self._version = client.settings.version
        self._members = obj_type.members()
        # A SCIM password is "returned": "never" (RFC 7643 4.1.1).
        readable = {p.name for p in obj_type.readable()}
        self.write_only = frozenset(n for n, p in obj_type.properties.items()
                                    if n not in readable or (p.path.attribute == "password" and p.path.urn is None))
        self._names: dict[str, str] = {}  # member SCIM id -> reference value
        self._ids_by_name: dict[str, str] = {}  # the reverse, by the value in lower case
        self._changes = ScimChanges(self.name, client, obj_type.endpoint, client.settings.live_sync_overlap)

    # liveSync ----------------------------------------------------------------

    def latest_token(self) -> str:
        return self._changes.latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        wanted = self._wanted(fields)
        return self._changes.read(token, self._attributes(wanted), lambda page: self._objects(page, wanted),
                                  page_size)

    # Reads ------------------------------------------------------------------

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        wanted = self._wanted(spec.fields)
        search, check = self._search(spec)
        fetched = wanted
        if check is not None:
            fetched = [*wanted, *(self._type.properties[n] for n in _names_in(check) if n in self._type.properties
                                  and self._type.properties[n] not in wanted)]
        size = min(spec.page_size or self._client.settings.page_size, self._client.settings.page_size)
        for page in self._client.list_pages(self._type.endpoint, filter=search,
                                            attributes=self._attributes(fetched), count=size):
            objects = self._objects(page, fetched)
            if check is not None:
                keep = {"_id", *(p.name for p in wanted)}
                objects = [{k: v for k, v in o.items() if k in keep} for o in objects
                           if matches(check, o, ignore_case=True)]
            if objects:
                yield objects

    def _search(self, spec: QuerySpec) -> tuple[str | None, Node | None]:
        """The SCIM filter to send, and the ``_queryFilter`` to check the answers against.

        A SCIM filter cannot name one item of a multi-valued attribute and a sub-attribute
        of it at once (``emails[type eq "work"].value eq X`` is not in RFC 7644's grammar),
        so a term on such a property is sent widened to ``emails.value eq X`` (dropped to
        ``false`` under a ``not``, so the answer stays a superset), and the answers are
        narrowed here with the filter as written."""
        if spec.native is not None:
            return spec.native.strip(), None
        if spec.filter is None:
            return None, None
        names = _names_in(spec.filter)
        picked = {n for n in names if n in self._type.properties
                  and self._type.properties[n].path.filter_sub is not None}
        if not picked:
            return to_scim(spec.filter, self._filter_name), None
        widened = to_scim(_widened(spec.filter, picked, negated=False), self._filter_name)
        # Narrowing needs every property the filter names; a raw SCIM attribute is not read back.
        local = all(n == "_id" or n in self._type.properties for n in names)
        return widened, spec.filter if local else None

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        wanted = self._wanted(fields)
        resources = list(self._lookup(self._type.endpoint, "id", ids, self._attributes(wanted)))
        return {obj["_id"]: obj for obj in self._objects(resources, wanted)}

    def _find_matching(self, paths: tuple[Path, ...], values: Sequence[tuple[Any, ...]],
                       fields: Sequence[str] | None = None) -> dict[tuple[Any, ...], list[Obj]]:
        if not self._client.single_terms:
            try:
                return super()._find_matching(paths, values, fields)
            except ObjectRejected as error:
                if len(set(values)) < 2 or not _refused_filter(error):
                    raise
                self._single_terms(error)
        found: dict[tuple[Any, ...], list[Obj]] = {}
        for vals in dict.fromkeys(values):
            found.update(super()._find_matching(paths, [vals], fields))
        return found

    def _lookup(self, endpoint: str, attribute: str, values: Sequence[str],
                attributes: list[str]) -> Iterator[dict[str, Any]]:
        """The resources whose ``attribute`` equals one of ``values``: ``or`` filters of
        50 terms, or one term a request once the provider has refused an ``or`` (RFC 7644
        lets a provider support filters only in part); ids are then read by their URL,
        which needs no filter support at all."""
        unique = [v for v in dict.fromkeys(values) if v]
        start = 0
        while start < len(unique):
            if self._client.single_terms and attribute == "id":
                yield from self._by_url(endpoint, unique[start:], attributes)
                return
            chunk = unique[start:start + (1 if self._client.single_terms else _CHUNK)]
            try:
                pages = list(self._client.list_pages(endpoint, filter=_or_eq(attribute, chunk),
                                                     attributes=attributes, count=len(chunk)))
            except ObjectRejected as error:
                if len(chunk) == 1 or not _refused_filter(error):
                    raise
                self._single_terms(error)
                continue
            for page in pages:
                yield from page
            start += len(chunk)

    def _by_url(self, endpoint: str, ids: Sequence[str], attributes: list[str]) -> Iterator[dict[str, Any]]:
        for object_id in ids:
            try:
                found = self._client.json("GET", f"{endpoint}/{object_id}", params={"attributes": ",".join(attributes)})
            except NotFound:
                continue
            if isinstance(found, dict):
                yield found

    def _single_terms(self, error: ObjectRejected) -> None:
        log.warning("scim.or_filter_refused", resource=self.name, error=str(error),
                    hint="looking objects up one filter term a request from now on")
        self._client.single_terms = True

    def _wanted(self, fields: Sequence[str] | None) -> list[ScimProperty]:
        if fields is None:
            return self._type.readable()
        return [self._type.properties[f] for f in fields if f in self._type.properties]

    def _attributes(self, wanted: Sequence[ScimProperty]) -> list[str]:
        return list(dict.fromkeys(["id", *(p.path.top for p in wanted)]))

    def _filter_name(self, path: Path) -> str:
        if len(path) != 1:
            raise QueryError(f"{self.name}: no SCIM attribute for /{'/'.join(path)}")
        if path[0] == "_id":
            return "id"
        prop = self._type.properties.get(path[0])
        if prop is None:
            return path[0]  # not declared: taken as a SCIM attribute path
        if prop.is_members and prop.member_reference:
            raise QueryError(f"{self.name}: {path[0]} cannot be filtered on")
        return prop.path.filter_name

    def _objects(self, resources: Sequence[Mapping[str, Any]], wanted: Sequence[ScimProperty]) -> list[Obj]:
        members = self._members if self._members in wanted else None
        if members is not None and members.member_reference:
            self._resolve_names([m for r in resources for m in member_ids(r)])
        objects: list[Obj] = []
        for resource in resources:
            # No id (never str(None)): the recon must see the object as one it cannot tell apart.
            obj: Obj = {"_id": str(resource["id"]) if resource.get("id") not in (None, "") else None}
            for prop in wanted:
                if prop is members:
                    ids = member_ids(resource)
                    obj[prop.name] = [self._names[i] for i in ids if i in self._names] \
                        if prop.member_reference else ids
                else:
                    obj[prop.name] = read_path(dict(resource), prop.path)
            objects.append(obj)
        return objects

    def _resolve_names(self, ids: Sequence[str]) -> None:
        """Learn the reference value of each member id (members that are not users stay unknown)."""
        reference = (self._members.member_reference if self._members else None) or "id"
        todo = [i for i in dict.fromkeys(ids) if i not in self._names]
        for user in self._lookup("Users", "id", todo, ["id", reference]):
            value = user.get(reference)
            if value is not None:
                self._learn(str(user["id"]), str(value))

    def _learn(self, member_id: str, name: str) -> None:
        """Cache ``member_id``'s reference value, both ways."""
        old = self._names.get(member_id)
        if old is not None and self._ids_by_name.get(old.lower()) == member_id:
            del self._ids_by_name[old.lower()]
        self._names[member_id] = name
        self._ids_by_name[name.lower()] = member_id

    def _member_ids(self, references: Sequence[Any]) -> list[str]:
        """The SCIM ids of the users named by ``references``; unknown ones are left out."""
        prop = self._members
        wanted = [str(r) for r in references if r is not None]
        if prop is None or not prop.member_reference:
            return wanted
        by_name = self._ids_by_name
        todo = [r for r in dict.fromkeys(wanted) if r.lower() not in by_name]
        for user in self._lookup("Users", prop.member_reference, todo, ["id", prop.member_reference]):
            self._learn(str(user["id"]), str(user.get(prop.member_reference)))
        missing = [r for r in wanted if r.lower() not in by_name]
        if missing:
            log.warning("scim.members_unknown", resource=self.name, count=len(missing), members=missing[:10])
        return [by_name[r.lower()] for r in wanted if r.lower() in by_name]

    # Writes -----------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Each op in turn; one the provider refuses fails alone. One it answers with a
        server error (after the client's retries) fails alone too when the provider answers
        the next op: a provider that fails on one object's data must not stall every run
        at it. Two in a row, or refused credentials, stop the batch: what was written is
        kept (``resource.interrupted``), the rest fails for the next run."""
        results: list[WriteResult] = []
        failing = False  # the last op ended in a server error
        for op in ops:
            try:
                if op.kind == "create":
                    results.append(self._create(op))
                elif op.kind == "update":
                    try:
                        results.append(self._update(op))
                    except RevisionMismatch:
                        log.info("scim.etag_conflict", resource=self.name, id=op.id)
                        results.append(self._update(op))
                else:
                    self._client.request("DELETE", f"{self._type.endpoint}/{op.id}")
                    results.append(WriteResult(op, id=op.id))
            except ObjectError as error:
                log.warning("scim.write_failed", resource=self.name, kind=op.kind, id=op.id, error=str(error))
                results.append(failed(op, error))
            except PeerError as error:
                log.warning("scim.write_failed", resource=self.name, kind=op.kind, id=op.id, error=str(error))
                if failing or isinstance(error, AuthenticationFailed):
                    return write_interrupted(ops, results, error)
                failing = True
                results.append(failed(op, ObjectError(f"{error}; the next run tries again")))
                continue
            failing = False
        return results

    def _create(self, op: WriteOp) -> WriteResult:
        members = None
        if self._members is not None and op.values.get(self._members.name):
            members = self._member_ids(op.values[self._members.name])
        body = new_resource(self._type, self._version, op.values, members)
        created = self._client.json("POST", self._type.endpoint, body=body, one_object=True)
        if not isinstance(created, dict):
            raise ObjectRejected(f"scim {self.name}: POST {self._type.endpoint}: the answer is not a resource")
        obj = self._objects([created], self._type.readable())[0]
        return WriteResult(op, id=obj["_id"], obj=obj)

    def _update(self, op: WriteOp) -> WriteResult:
        path = f"{self._type.endpoint}/{op.id}"
        response = self._client.request("GET", path)
        current = self._client.body("GET", path, response, one_object=True)
        if not isinstance(current, dict):
            raise ObjectRejected(f"scim {self.name}: GET {path}: the answer is not a resource")
        features = self._client.features()
        etag = response.headers.get("ETag") or (current.get("meta") or {}).get("version")
        headers = {"If-Match": etag} if features.etag and etag else {}
        try:
            new, changed = apply_changes(self._type, current, op.values)
        except AmbiguousPath as error:
            raise ObjectRejected(f"scim {self.name}: {op.id}: {error}; nothing was written") from None
        add: list[str] = []
        remove: list[str] = []
        if self._members is not None and self._members.name in op.values:
            have = member_ids(current)
            if self._members.member_reference:
                self._resolve_names(have)
                have = [i for i in have if i in self._names]  # only users are managed here
            want = self._member_ids(op.values[self._members.name] or [])
            add, remove = member_changes(have, want)
        if self._version == 2 and features.patch:
            body = patch_operations(current, new, changed, add, remove)
            if body is None:
                return WriteResult(op, id=op.id, obj=self._objects([current], self._type.readable())[0])
            updated = self._client.json("PATCH", path, body=body, headers=headers, one_object=True)
        else:
            if not changed and not add and not remove:
                return WriteResult(op, id=op.id, obj=self._objects([current], self._type.readable())[0])
            updated = self._client.json("PUT", path, body=put_body(self._type, self._version, new, add, remove),
                                        headers=headers, one_object=True)
        if not isinstance(updated, dict):
            # 204 No Content: the provider holds what was sent, so no read is spent on it.
            updated = with_members(new, add, remove)
        return WriteResult(op, id=op.id, obj=self._objects([updated], self._type.readable())[0])


class ScimSystem(System):
    """One configured SCIM provider and its object types."""

    def __init__(self, name: str, config: Mapping[str, Any], *, file: str) -> None:
        self.name = name
        self._file = file
        self._config = config
        self._settings, self._types = parse_scim_config(file, config)
        self._client: ScimClient | None = None

    @property
    def client(self) -> ScimClient:
        if self._client is None:
            self._client = ScimClient(self.name, self._settings)
        return self._client

    def resource(self, object_type: str, *, dry_run: bool = False) -> ScimResource:
        obj_type = self._types.get(object_type)
        if obj_type is None:
            raise ConfigError(self._file, "objectTypes",
                              f"no object type {object_type!r} (known: {', '.join(self._types)})")
        resource = ScimResource(self.name, self.client, obj_type, dry_run=dry_run)
        users = next((t.name for t in self._types.values() if t.endpoint == "Users"), None)
        members = obj_type.members()
        if users is not None and members is not None and not members.member_reference:
            # Members by SCIM id: the store shows them as the managed users linked to those ids.
            resource.references = {members.name: users}
        return resource

    def test(self) -> Mapping[str, Any]:
        report = system_test_report(self.name, self._config, "Scim Connector", ["__ALL__", *self._types])
        try:
            features = self.client.features()
            # The discovery endpoints may be anonymous: list one resource to prove the credentials.
            for obj_type in self._types.values():
                next(self.client.list_pages(obj_type.endpoint, filter=None, attributes=["id"], count=1), None)
            report["scim"] = {"version": "2.0" if self._settings.version == 2 else "1.1", "patch": features.patch,
                              "etag": features.etag, "filter": features.filter}
        except IdsyncError as error:
            report.failed(error)
        return report

    def warnings(self) -> list[ConfigError]:
        return list(self._settings.warnings)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_scim_system(name: str, config: Mapping[str, Any], *, file: str) -> ScimSystem:
    """The connector registry's entry point for ``org.forgerock.openicf.connectors.scim.ScimConnector``."""
    return ScimSystem(name, config, file=file)
