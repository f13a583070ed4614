"""The ``openidm`` object of mapping scripts: managed objects, systems, crypto.

``ScriptRouter`` answers ``openidm.read/query/create/update/patch/delete`` on
``managed/<type>[/<id>]`` and ``system/<name>/<type>[/<id>]``, the references of
a relationship property as a collection (``managed/<type>/<id>/<property>[/<ref id>]``:
``references.py``), the crypto functions (``idsync.crypto.CryptoCalls``), PingIDM's
email service (``action("external/email", "send", message)``,
``read("config/external.email")``: ``email.py``) and its recon service
(``action("recon", "recon" | "reconById", {}, {"mapping": ...})``: ``recons.py``).
A managed change goes through
``ManagedObjects``, so it is validated against ``managed.json`` and pushed by
implicit synchronization exactly as from the command line or the API; a system
change is one write to the connector. Reads of managed objects leave secrets out,
as the API does.

``scripting(project, store)`` binds a router to this thread's scripts for a unit
of work (a recon run, one managed change) and closes its connections afterwards.
In a dry run the router reads but refuses every write, sends no mail and starts no
recon, so a preview changes nothing.

PingIDM's signatures, with what idsync takes from them::

    read(resourceName, params, fields)                      null when not found
    query(resourceName, params, fields)                     {"result": [...], "resultCount": n}
        params: {"_queryFilter": "..."} or {"_queryId": "query-all" | "query-all-ids"}, "_pageSize",
                "executeOnRetrieve": true (a managed type's onRetrieve scripts run on each object);
                of a relationship's references, the API's paging as well ("_sortKeys",
                "_pagedResultsCookie", "_pagedResultsOffset", "_totalPagedResultsPolicy")
    create(resourceName, newResourceId, content, params, fields)
    update(resourceName, rev, value, params, fields)        rev null or "*": any revision
    patch(resourceName, rev, patch, params, fields)
    delete(resourceName, rev, params, fields)               the object as it was
    action(resourceName, actionName, content, params, fields)
        action(resourceName, content, params): the action is params._action
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from idsync.config.project import Project
from idsync.crypto import CryptoCalls
from idsync.errors import NotFound, ObjectRejected, QueryError, ReadDenied
from idsync.managed.email import send_email
from idsync.managed.host import HOST_FUNCTIONS, host_call
from idsync.managed.patch import ScriptTransformer, apply_patch
from idsync.managed.recons import ScriptRecons
from idsync.managed.reference_pages import RefQuery, query_page
from idsync.managed.references import References, expand, expand_all
from idsync.managed.roles import TemporalRoles
from idsync.managed.service import ManagedObjects
from idsync.query import parse
from idsync.query.named import NamedQueries
from idsync.resource import Obj, QuerySpec, Resource
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.hooks import execute_on_retrieve
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.sync.implicit import ImplicitSync, PushResult
from idsync.sync.livesync import LiveSyncOptions, LiveSyncResult, run_livesync
from idsync.sync.manual_links import linked_resources, perform
from idsync.sync.options import ReconOptions
from idsync.sync.partitions import Splitter
from idsync.sync.recon import ReconResult, help_partitions, run_recon

__all__ = ["MAX_QUERY_RESULTS", "ScriptRouter", "push_due_scripted", "run_recon_scripted", "scripting"]

# A query answering more than this fails rather than fill the script's memory or come back cut short.
MAX_QUERY_RESULTS = 10_000
_WRITES = frozenset({"create", "update", "patch", "delete"})


class ScriptRouter:
    """Answers one thread's scripts' ``openidm`` calls; ``close`` when done."""

    def __init__(self, project: Project, store: Store, *, dry_run: bool = False,
                 resources: Resources | None = None, cancel: threading.Event | None = None,
                 splitter: Splitter | None = None) -> None:
        self.project = project
        self.store = store
        self.dry_run = dry_run
        self._own = resources is None
        self.resources = resources or Resources(project, store)
        self._crypto = CryptoCalls(project.keyring) if project.keyring is not None else None
        self._managed: dict[str, ManagedObjects] = {}
        self._recons = ScriptRecons(project, store, self.resources, dry_run=dry_run, cancel=cancel,
                                    splitter=splitter,
                                    detached=lambda mapping, options: run_recon_scripted(project, store, mapping,
                                                                                         options))

    def close(self) -> None:
        if self._own:
            self.resources.close()

    def call(self, function: str, arguments: list[Any]) -> Any:
        if function in HOST_FUNCTIONS:
            return host_call(self.project.settings.project_dir, function, arguments)
        if function in CryptoCalls.FUNCTIONS:
            if self._crypto is None:
                raise ObjectRejected(f"openidm.{function}: the project has no key ([crypto])")
            return self._crypto.call(function, arguments)
        name, *rest = [*arguments, None, None, None, None, None]
        if not isinstance(name, str) or not name:
            raise ObjectRejected(f"openidm.{function}: the first argument must name a resource, such as "
                                 "managed/user/<id> or system/ldap/account")
        if function in _WRITES and self.dry_run:
            raise ObjectRejected(f"openidm.{function} {name}: not carried out in a dry run")
        if function == "action":
            rest = _action_arguments(rest)
        if name.strip("/").startswith(("external/", "config/")):
            return self._service(function, name.strip("/"), rest[0], rest[1])
        if name.strip("/") == "recon" and function == "action":
            return self._recons.action(rest[0], rest[1], rest[2])
        if name.strip("/") == "sync" and function == "action":
            return self._sync(rest[0], rest[2])
        at = _split(name, function)
        if at.property is not None:
            return self._references(function, at, rest)
        kind, collection, object_id = at.kind, at.collection, at.id
        if function == "read":
            return self._read(kind, collection, object_id, _fields(rest[1]))
        if function == "query":
            if object_id is not None:
                raise ObjectRejected(f"openidm.query {name}: query a collection (managed/<type>, "
                                     "system/<name>/<type>, managed/<type>/<id>/<relationship property>), "
                                     "not one object")
            return self._query(collection, rest[0], _fields(rest[1]))
        if function == "action":
            return self._action(kind, collection, object_id, rest[0], rest[1], rest[2])
        if function == "create":
            if object_id is not None:
                raise ObjectRejected(f"openidm.create {name}: create in a collection; give the new _id as "
                                     "the second argument")
            return self._create(kind, collection, rest[0], rest[1])
        if object_id is None:
            raise ObjectRejected(f"openidm.{function} {name}: name one object (<collection>/<id>)")
        rev = rest[0] if isinstance(rest[0], str) and rest[0] != "*" else None
        if function == "update":
            return self._update(kind, collection, object_id, rev, rest[1])
        if function == "patch":
            return self._patch(kind, collection, object_id, rev, rest[1])
        if function == "delete":
            return self._delete(kind, collection, object_id, rev)
        raise ObjectRejected(f"openidm.{function} is not a function of openidm")

    # -- one function each ---------------------------------------------------

    def _service(self, function: str, name: str, action: Any, content: Any) -> Any:
        """PingIDM's email service: ``action("external/email", "send", message)`` sends
        (``email.py``), ``read("config/external.email")`` answers its configuration
        without the password, or null when the project has none."""
        email = self.project.email
        if function == "read" and name == "config/external.email":
            return dict(email.shown) if email is not None else None
        if function == "action" and name == "external/email":
            if self.dry_run:
                raise ObjectRejected(f"openidm.action external/email {action!r}: not carried out in a dry run")
            return send_email(email, action, content)
        raise ObjectRejected(f"openidm.{function} {name}: not available in idsync's scripts (of PingIDM's "
                             "services, they send mail with openidm.action('external/email', 'send', message) and "
                             "read config/external.email)")

    def _action(self, kind: str, collection: str, object_id: str | None, action: Any, content: Any,
                params: Any) -> Obj | None:
        """PingIDM's ``create`` (``managed/TYPE``, ``_id`` in params), ``patch`` and
        ``triggerSyncCheck`` (``managed/TYPE/ID``: the object pushed through its mappings
        now) actions; others throw, naming what idsync answers."""
        name = collection + (f"/{object_id}" if object_id else "")
        new_id = params.get("_id") if isinstance(params, dict) else None
        if action == "create" and object_id is None:
            if self.dry_run:
                raise ObjectRejected(f"openidm.action {name} create: not carried out in a dry run")
            return self._create(kind, collection, new_id, content)
        if action == "patch" and object_id is not None:
            if self.dry_run:
                raise ObjectRejected(f"openidm.action {name} patch: not carried out in a dry run")
            return self._patch(kind, collection, object_id, None, content)
        if action == "triggerSyncCheck" and kind == "managed" and object_id is not None:
            if self.dry_run:
                raise ObjectRejected(f"openidm.action {name} triggerSyncCheck: not carried out in a dry run")
            return self._objects(collection).sync_check(object_id).object
        raise ObjectRejected(f"openidm.action {name} {action!r}: not available in idsync's scripts (actions "
                             "answered: create on a collection, patch and triggerSyncCheck on an object, send on "
                             "external/email, recon and reconById on recon, getLinkedResources and performAction "
                             "on sync)")

    def _sync(self, action: Any, params: Any) -> Any:
        """PingIDM's ``sync`` service: ``getLinkedResources`` (``resourceName``) and
        ``performAction`` (``mapping``, ``action``, ``sourceId``, ``targetId``, ``situation``,
        ``linkQualifier``, ``reconId``; ``target`` for a target's action), as over REST."""
        params = params if isinstance(params, dict) else {}
        where = f"openidm.action sync {action!r}"
        if action == "getLinkedResources":
            resource = params.get("resourceName")
            if not isinstance(resource, str) or not resource:
                raise ObjectRejected(f"{where}: the parameters need resourceName (managed/user/<id>)")
            return [r.answer() for r in linked_resources(self.project, self.store, self.resources, resource)]
        if action != "performAction":
            raise ObjectRejected(f"{where}: not available in idsync's scripts (sync actions answered: "
                                 "getLinkedResources, performAction)")
        if self.dry_run:
            raise ObjectRejected(f"{where}: not carried out in a dry run")
        mapping, what = params.get("mapping"), params.get("action")
        if not isinstance(mapping, str) or not mapping or not isinstance(what, str) or not what:
            raise ObjectRejected(f"{where}: the parameters need the mapping and the action")
        on_target = params.get("target") is not None
        source_id, target_id = params.get("sourceId"), params.get("targetId")
        if not on_target and not source_id:
            raise ObjectRejected(f"{where}: the parameters need sourceId (or target and targetId)")
        perform(self.project, self.store, self.resources, mapping, what,
                source_id=None if on_target else str(source_id), target_id=str(target_id) if target_id else None,
                situation=str(params["situation"]) if params.get("situation") else None,
                qualifier=str(params.get("linkQualifier") or "default"),
                recon_id=str(params["reconId"]) if params.get("reconId") else None)
        return {"status": "OK"}

    def _references(self, function: str, at: _Target, rest: list[Any]) -> Any:
        """``managed/TYPE/ID/PROPERTY[/REF]``: one object's references in a relationship
        property holding many, as a collection (``references.py``). Reading a reference
        that is not there answers null, as reading a missing object does."""
        assert at.id is not None and at.property is not None
        name = f"{at.collection}/{at.id}/{at.property}"
        refs = References(self.project, self.store, self._objects(at.collection), at.property)
        if at.ref is None:
            if function == "query":
                try:
                    page = query_page(refs, at.id, _ref_query(name, rest[0], _fields(rest[1])))
                except QueryError as exc:
                    raise ObjectRejected(f"openidm.query {name}: {exc}") from None
                return _envelope(page.result, page.cookie, page.total if _exact(rest[0]) else None)
            if function == "action" and rest[0] == "create" and self.dry_run:
                raise ObjectRejected(f"openidm.action {name} create: not carried out in a dry run")
            if function == "create" and rest[0] is not None:
                raise ObjectRejected(f"openidm.create {name}: the store gives a reference its _id; pass null as "
                                     "the new _id")
            if function == "create" or (function == "action" and rest[0] == "create"):
                return refs.create(at.id, rest[1])
            raise ObjectRejected(f"openidm.{function} {name}: query these references or create one; read, update "
                                 f"or delete one as {name}/<its _refProperties._id>")
        if function == "read":
            try:
                return refs.read(at.id, at.ref, _fields(rest[1]) or ())
            except NotFound:
                return None
        rev = rest[0] if isinstance(rest[0], str) and rest[0] != "*" else None
        if function == "update":
            return refs.replace(at.id, at.ref, rest[1], rev)
        if function == "delete":
            return refs.delete(at.id, at.ref, rev)
        raise ObjectRejected(f"openidm.{function} {name}/{at.ref}: read, update or delete one reference (update "
                             "replaces its _refProperties)")

    def _read(self, kind: str, collection: str, object_id: str | None, fields: list[str] | None) -> Obj | None:
        if object_id is None:
            raise ObjectRejected(f"openidm.read {collection}: name one object (<collection>/<id>); "
                                 "openidm.query reads a collection")
        if kind == "managed":
            objects = self._objects(collection)
            try:
                found = objects.get(object_id)
            except NotFound:
                return None
            if not fields:
                return found
            # ``roles/*``, ``manager/userName``: the references carry their objects' fields, as
            # over the API; and only the fields named are answered, ``_id`` and ``_rev``
            # always (``*``: those shown by default). A script sees secrets and private
            # properties too.
            expanded = expand(self.project, self.store, objects.schema, found, fields)
            keep = {"_id", "_rev", *(f.strip("/").split("/")[0] for f in fields)}
            return {k: v for k, v in expanded.items()
                    if k in keep or ("*" in keep and k not in objects.schema.hidden)}
        try:
            return self._resource(collection).get(object_id, fields)
        except ReadDenied as exc:
            if not exc.quiet:
                raise
            return None  # the provisioner denies GET, onDeny DO_NOTHING: as PingIDM, nothing read

    def _query(self, collection: str, params: Any, fields: list[str] | None) -> dict[str, Any]:
        # The project's named queries (``repo.*.json``, and the stock ones) are the store's.
        queries = self.project.queries if collection.startswith("managed/") else None
        expanded = [f for f in fields or () if "/" in f.strip("/")] if collection.startswith("managed/") else []
        if expanded:  # ``roles/*``: the relationship read, then its objects' fields (``expand_all``)
            fields = list(dict.fromkeys(f.strip("/").split("/")[0] for f in fields or ()))
        spec, limit = _spec(collection, params, fields, queries)
        resource = self._resource(collection)
        # PingIDM's executeOnRetrieve: onRetrieve runs on each whole object, then the fields are picked.
        retrieving = (isinstance(resource, ManagedResource) and resource.hooks.reads
                      and execute_on_retrieve(params.get("executeOnRetrieve")))
        picked = spec.fields
        if retrieving:
            spec = dataclasses.replace(spec, fields=None)
        try:
            found = resource.find(spec, MAX_QUERY_RESULTS + 1)
        except ReadDenied as exc:
            if not exc.quiet:
                raise
            found = []  # the provisioner denies SEARCH, onDeny DO_NOTHING: nothing read
        if len(found) > MAX_QUERY_RESULTS:
            raise ObjectRejected(f"openidm.query {collection}: more than {MAX_QUERY_RESULTS} results; narrow "
                                 "the _queryFilter")
        found = found[:limit] if limit is not None else found
        if retrieving:
            assert isinstance(resource, ManagedResource)
            found = [resource.hooks.retrieved(obj, "query") for obj in found]
            if picked is not None:
                keep = {"_id", "_rev", *picked}
                found = [{k: v for k, v in obj.items() if k in keep} for obj in found]
        if expanded:
            expand_all(self.project, self.store, self._objects(collection).schema, found, expanded)
        return _envelope(found)

    def _create(self, kind: str, collection: str, new_id: Any, content: Any) -> Obj | None:
        values = _content(content, "create", collection)
        if new_id is not None and not isinstance(new_id, str):
            raise ObjectRejected(f"openidm.create {collection}: the new _id must be a string")
        if kind == "managed":
            return self._objects(collection).create(values, object_id=new_id or None).object
        if new_id:
            values = {**values, "_id": new_id}
        return self._resource(collection).create(values)

    def _update(self, kind: str, collection: str, object_id: str, rev: str | None, content: Any) -> Obj | None:
        values = _content(content, "update", collection)
        if kind == "managed":
            return self._objects(collection).update(object_id, values, rev=rev).object
        resource = self._resource(collection)
        return resource.update(object_id, values, before=resource.get(object_id), rev=rev)

    def _patch(self, kind: str, collection: str, object_id: str, rev: str | None, operations: Any) -> Obj | None:
        if kind == "managed":
            return self._objects(collection).patch(object_id, operations, rev=rev).object
        resource = self._resource(collection)
        current = resource.get(object_id)
        if current is None:
            raise NotFound(f"{collection}/{object_id} not found")
        patched = apply_patch(current, operations,
                              ScriptTransformer(self.project.scripts, self.project.settings.project_dir))
        changes = {k: v for k, v in patched.items() if current.get(k) != v}
        changes.update({k: None for k in current if k not in patched})
        return resource.update(object_id, changes, before=current, rev=rev)

    def _delete(self, kind: str, collection: str, object_id: str, rev: str | None) -> Obj | None:
        if kind == "managed":
            objects = self._objects(collection)
            gone = objects.get(object_id)
            objects.delete(object_id, rev=rev)
            return gone
        resource = self._resource(collection)
        before = resource.get(object_id)
        if before is None:
            raise NotFound(f"{collection}/{object_id} not found")
        resource.delete(object_id, before=before, rev=rev)
        return before

    def managed_objects(self, collection: str) -> ManagedObjects:
        """``managed/TYPE`` as the scripts' calls change it (validated, pushed by implicit sync)."""
        return self._objects(collection)

    def _objects(self, collection: str) -> ManagedObjects:
        if collection not in self._managed:
            self._managed[collection] = ManagedObjects(self.project, self.store, self.resources,
                                                       collection.split("/", 1)[1])
        return self._managed[collection]

    def _resource(self, collection: str) -> Resource:
        return self.resources.open(collection)


@contextlib.contextmanager
def scripting(project: Project, store: Store, *, dry_run: bool = False, resources: Resources | None = None,
              cancel: threading.Event | None = None, splitter: Splitter | None = None) -> Iterator[ScriptRouter]:
    """Bind a ``ScriptRouter`` to this thread's scripts of ``project`` for the block; ``cancel``
    (the unit of work's) also stops a recon they start, which may split as ``splitter`` says."""
    router = ScriptRouter(project, store, dry_run=dry_run, resources=resources, cancel=cancel, splitter=splitter)
    try:
        with project.scripts.routing(router):
            yield router
    finally:
        router.close()


@dataclass(frozen=True)
class _Target:
    """What a resource name names: a collection, one object, or a relationship of one."""

    kind: str  # managed, system
    collection: str  # managed/user, system/ldap/account
    id: str | None = None
    property: str | None = None  # a relationship property of the managed object
    ref: str | None = None  # one of its references (its _refProperties._id)


def _split(name: str, function: str) -> _Target:
    """``managed/user/42`` -> managed/user, 42; ``managed/user/42/roles/7`` -> managed/user,
    42, roles, 7; system ids may hold slashes (DNs)."""
    parts = name.strip("/").split("/")
    if parts[0] == "managed" and len(parts) >= 2 and parts[1]:
        rest = parts[2:]
        if len(rest) > 3 or "" in rest:
            raise ObjectRejected(f"openidm.{function} {name}: expected managed/<type>[/<id>[/<relationship "
                                 "property>[/<reference _id>]]]")
        return _Target("managed", f"managed/{parts[1]}", *rest)
    if parts[0] == "system" and len(parts) >= 3 and parts[1] and parts[2]:
        return _Target("system", f"system/{parts[1]}/{parts[2]}", "/".join(parts[3:]) or None)
    raise ObjectRejected(f"openidm.{function} {name}: idsync's scripts reach managed/<type>[/<id>], "
                         "system/<name>/<type>[/<id>], the email service (external/email), the recon "
                         "service (action on recon) and the sync service (action on sync) only")


def _action_arguments(rest: list[Any]) -> list[Any]:
    """``action``'s arguments after the resource as [action, content, params, fields]:
    PingIDM's ``action(resource, content, params)`` (the action's name an object, or
    null) names the action in ``params._action``."""
    action, content, params, fields = rest[:4]
    if isinstance(action, dict):
        action, content, params, fields = None, action, content, params
    if action is None and isinstance(params, dict):
        action = params.get("_action")
    return [action, content, params, fields]


def _envelope(result: list[Any], cookie: str | None = None, total: int | None = None) -> dict[str, Any]:
    """A query's answer in PingIDM's shape; ``total``: when asked for (``EXACT``)."""
    return {"result": result, "resultCount": len(result), "pagedResultsCookie": cookie,
            "totalPagedResultsPolicy": "NONE" if total is None else "EXACT",
            "totalPagedResults": -1 if total is None else total, "remainingPagedResults": -1}


def _ref_query(name: str, params: Any, fields: list[str] | None) -> RefQuery:
    """A query of references as a script's ``params`` ask it, as the API takes the same
    parameters: ``_queryFilter`` or ``_queryId``, ``_sortKeys`` (``"a,-b"`` or a list),
    ``_pageSize``, ``_pagedResultsCookie`` (the offset the page before answered) or
    ``_pagedResultsOffset``, ``_totalPagedResultsPolicy`` and ``_fields`` (the third argument
    first)."""
    if not isinstance(params, dict):
        raise ObjectRejected(f"openidm.query {name}: params must be an object with _queryFilter")
    text, query_id = params.get("_queryFilter"), params.get("_queryId")
    if text is not None and query_id is not None:
        raise ObjectRejected(f"openidm.query {name}: a query takes _queryFilter or _queryId, not both")
    keys = params.get("_sortKeys") or []
    keys = [k.strip() for k in keys.split(",")] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ObjectRejected(f"openidm.query {name}: _sortKeys must be a list of fields or a comma-separated string")
    cookie = params.get("_pagedResultsCookie")
    offset = _count(name, "_pagedResultsCookie", cookie) if cookie not in (None, "") else \
        _count(name, "_pagedResultsOffset", params.get("_pagedResultsOffset"))
    size = _count(name, "_pageSize", params.get("_pageSize"))
    return RefQuery(text if isinstance(text, str) else None, query_id if isinstance(query_id, str) else None,
                    fields or _fields(params.get("_fields")) or (), [k for k in keys if k], offset or 0,
                    size or None, _exact(params))


def _count(name: str, key: str, value: Any) -> int | None:
    """A paging parameter: a number of at least 0, or its decimal text; None when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isdecimal() and value.isascii():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:  # what OFFSET takes
        raise ObjectRejected(f"openidm.query {name}: {key} {value!r} is not a number of 0 or more")
    return value


def _exact(params: Any) -> bool:
    """Whether a script's query ``params`` ask for the total (``_totalPagedResultsPolicy``)."""
    policy = params.get("_totalPagedResultsPolicy") if isinstance(params, dict) else None
    return isinstance(policy, str) and policy.upper() in ("EXACT", "ESTIMATE")


def _fields(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [f.strip() for f in value.split(",") if f.strip()] or None
    if isinstance(value, list) and all(isinstance(f, str) for f in value):
        return list(value) or None
    raise ObjectRejected("openidm: fields must be a list of names or a comma-separated string")


def _content(value: Any, function: str, collection: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ObjectRejected(f"openidm.{function} {collection}: the content must be an object")
    return value


def _spec(collection: str, params: Any, fields: list[str] | None,
          queries: NamedQueries | None = None) -> tuple[QuerySpec, int | None]:
    if not isinstance(params, dict):
        raise ObjectRejected(f"openidm.query {collection}: params must be an object with _queryFilter")
    limit = params.get("_pageSize")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ObjectRejected(f"openidm.query {collection}: _pageSize must be a positive integer")
    text, query_id = params.get("_queryFilter"), params.get("_queryId")
    if isinstance(text, str):
        try:
            node = None if text.strip() == "true" else parse(text)
        except QueryError as exc:
            raise ObjectRejected(f"openidm.query {collection}: {exc}") from None
        return QuerySpec(filter=node, fields=fields), limit
    if query_id in ("query-all", "query-all-ids"):
        return QuerySpec(fields=[] if query_id == "query-all-ids" else fields), limit
    if query_id is not None and queries is not None:
        try:
            named = queries.get(query_id)
            # The other parameters are the query's: values in the filter, never its text.
            node = named.filter(params)
        except QueryError as exc:
            raise ObjectRejected(f"openidm.query {collection}: {exc}") from None
        return QuerySpec(filter=node, fields=[] if named.ids_only else fields), limit
    if query_id is not None:
        raise ObjectRejected(f"openidm.query {collection}: the named query {query_id!r} does not exist for "
                             "system objects in idsync; use _queryFilter")
    raise ObjectRejected(f"openidm.query {collection}: params need _queryFilter (or _queryId query-all)")



def run_recon_scripted(project: Project, store: Store, mapping: str, options: ReconOptions) -> ReconResult:
    """``run_recon`` with this thread's scripts' ``openidm`` bound: what every command and
    the daemon run, so that a hook or a correlation script reaches the store and systems."""
    with scripting(project, store, dry_run=options.dry_run):
        return run_recon(project, store, mapping, options)


def run_livesync_scripted(project: Project, store: Store, source: str, options: LiveSyncOptions) -> LiveSyncResult:
    """``run_livesync`` with this thread's scripts' ``openidm`` bound, as a recon's: a mapping's
    transform or hook, and a ``syncFailureHandler`` script, reach the store and systems."""
    with scripting(project, store, dry_run=options.dry_run, cancel=options.cancel):
        return run_livesync(project, store, source, options)


def help_partitions_scripted(project: Project, store: Store, run_id: str, node: str, cancel: threading.Event) -> bool:
    """``help_partitions`` with the scripts' ``openidm`` bound as for the run it helps (its dry run)."""
    run = RunStore(store).get(run_id)
    with scripting(project, store, dry_run=bool(run and run["dry_run"])):
        return help_partitions(project, store, run_id, node, cancel)


def push_due_scripted(project: Project, store: Store, since: dt.datetime, until: dt.datetime) -> list[PushResult]:
    """Push the users whose roles' time windows opened or closed after ``since`` and up to
    ``until`` (``managed/roles.py``), with the scripts' ``openidm`` bound."""
    with scripting(project, store) as router:
        return TemporalRoles(project, store, ImplicitSync(project, store, router.resources), since).push_due(until)
