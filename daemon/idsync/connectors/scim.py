"""The SCIM connector: ``system/<name>/account`` (Users, with the enterprise
extension) and ``system/<name>/group`` (Groups) of a SCIM 2.0 or 1.1 provider,
configured by ``provisioner.openicf-<name>.json`` (see ``scim_config``).

Reads page through ``startIndex``/``count`` asking with ``attributes=`` only for
the mapped attributes; ``_queryFilter`` becomes a SCIM filter. Ids are the
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

from idsync.connectors.base import Obj, QuerySpec, Resource, System, WriteOp, WriteResult, failed, system_test_report
from idsync.connectors.scim_config import ScimObjectType, ScimProperty, parse_scim_config
from idsync.connectors.scim_http import ScimClient
from idsync.connectors.scim_paths import read_path
from idsync.connectors.scim_writes import apply_changes, member_ids, new_resource, patch_operations, put_body
from idsync.errors import ConfigError, IdsyncError, ObjectError, QueryError, RevisionMismatch
from idsync.query.ast import Compare, Node, Or, Path
from idsync.query.scim import to_scim

__all__ = ["ScimResource", "ScimSystem", "open_scim_system"]

log = structlog.get_logger(__name__)

_CHUNK = 50


def _or_eq(attribute: str, values: Sequence[str]) -> str:
    terms: list[Node] = [Compare((attribute,), "eq", v) for v in values]
    return to_scim(Or(tuple(terms)) if len(terms) > 1 else terms[0], lambda p: p[0])


class ScimResource(Resource):
    """One object type of one SCIM provider."""

    def __init__(self, system: str, client: ScimClient, obj_type: ScimObjectType, *, dry_run: bool = False) -> None:
        self.name = f"system/{system}/{obj_type.name}"
        self.dry_run = dry_run
        self._client = client
        self._type = obj_type
        self._version = client.settings.version
        self._members = obj_type.members()
        self._names: dict[str, str] = {}  # member SCIM id -> reference value

    # Reads ------------------------------------------------------------------

    def pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        wanted = self._wanted(spec.fields)
        search = spec.native.strip() if spec.native is not None else (
            to_scim(spec.filter, self._filter_name) if spec.filter is not None else None)
        size = min(spec.page_size or self._client.settings.page_size, self._client.settings.page_size)
        for page in self._client.list_pages(self._type.endpoint, filter=search,
                                            attributes=self._attributes(wanted), count=size):
            yield self._objects(page, wanted)

    def get_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        wanted = self._wanted(fields)
        found: dict[str, Obj] = {}
        unique = [i for i in dict.fromkeys(ids) if i]
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            for page in self._client.list_pages(self._type.endpoint, filter=_or_eq("id", chunk),
                                                attributes=self._attributes(wanted), count=len(chunk)):
                for obj in self._objects(page, wanted):
                    found[obj["_id"]] = obj
        return found

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
            obj: Obj = {"_id": str(resource.get("id"))}
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
        reference = self._members.member_reference if self._members else None
        todo = [i for i in dict.fromkeys(ids) if i not in self._names]
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start:start + _CHUNK]
            for page in self._client.list_pages("Users", filter=_or_eq("id", chunk),
                                                attributes=["id", reference or "id"], count=len(chunk)):
                for user in page:
                    value = user.get(reference or "id")
                    if value is not None:
                        self._names[str(user["id"])] = str(value)

    def _member_ids(self, references: Sequence[Any]) -> list[str]:
        """The SCIM ids of the users named by ``references``; unknown ones are left out."""
        prop = self._members
        wanted = [str(r) for r in references if r is not None]
        if prop is None or not prop.member_reference:
            return wanted
        by_name = {v.lower(): k for k, v in self._names.items()}
        todo = [r for r in dict.fromkeys(wanted) if r.lower() not in by_name]
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start:start + _CHUNK]
            for page in self._client.list_pages("Users", filter=_or_eq(prop.member_reference, chunk),
                                                attributes=["id", prop.member_reference], count=len(chunk)):
                for user in page:
                    name = str(user.get(prop.member_reference))
                    self._names[str(user["id"])] = name
                    by_name[name.lower()] = str(user["id"])
        missing = [r for r in wanted if r.lower() not in by_name]
        if missing:
            log.warning("scim.members_unknown", resource=self.name, count=len(missing), members=missing[:10])
        return [by_name[r.lower()] for r in wanted if r.lower() in by_name]

    # Writes -----------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        results: list[WriteResult] = []
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
                log.info("scim.write_failed", resource=self.name, kind=op.kind, id=op.id, error=str(error))
                results.append(failed(op, error))
        return results

    def _create(self, op: WriteOp) -> WriteResult:
        members = None
        if self._members is not None and op.values.get(self._members.name):
            members = self._member_ids(op.values[self._members.name])
        body = new_resource(self._type, self._version, op.values, members)
        created = self._client.json("POST", self._type.endpoint, body=body)
        obj = self._objects([created], self._type.readable())[0]
        return WriteResult(op, id=obj["_id"], obj=obj)

    def _update(self, op: WriteOp) -> WriteResult:
        path = f"{self._type.endpoint}/{op.id}"
        response = self._client.request("GET", path)
        current = response.json()
        features = self._client.features()
        etag = response.headers.get("ETag") or (current.get("meta") or {}).get("version")
        headers = {"If-Match": etag} if features.etag and etag else {}
        new, changed = apply_changes(self._type, current, op.values)
        add: list[str] = []
        remove: list[str] = []
        if self._members is not None and self._members.name in op.values:
            have = member_ids(current)
            if self._members.member_reference:
                self._resolve_names(have)
                have = [i for i in have if i in self._names]  # only users are managed here
            want = self._member_ids(op.values[self._members.name] or [])
            add = [m for m in want if m not in have]
            remove = [m for m in have if m not in want]
        if self._version == 2 and features.patch:
            body = patch_operations(current, new, changed, add, remove)
            if body is None:
                return WriteResult(op, id=op.id, obj=self._objects([current], self._type.readable())[0])
            updated = self._client.json("PATCH", path, body=body, headers=headers)
        else:
            if not changed and not add and not remove:
                return WriteResult(op, id=op.id, obj=self._objects([current], self._type.readable())[0])
            updated = self._client.json("PUT", path, body=put_body(self._type, self._version, new, add, remove),
                                        headers=headers)
        if not isinstance(updated, dict):  # 204 No Content
            updated = self._client.json("GET", path)
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
        return ScimResource(self.name, self.client, obj_type, dry_run=dry_run)

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
            report.update(ok=False, error=str(error))
        return report

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_scim_system(name: str, config: Mapping[str, Any], *, file: str) -> ScimSystem:
    """The connector registry's entry point for ``org.forgerock.openicf.connectors.scim.ScimConnector``."""
    return ScimSystem(name, config, file=file)
