"""Identities: managed users and roles, browsed, searched, viewed with their linked
objects in each system and their audit history, and edited.

The search box looks for the start of a searchable property's value
(case-sensitive), each property by a range on the store's property index, so
it answers at once in 100,000 users; the text is a bound value, never query
syntax. The ``_queryFilter`` field takes PingIDM's language as the API does.
Lists page by keyset on ``_id``; an object's relationship properties that hold many
references (a role's ``members``) are not in its form but listed beneath it, a page at a
time by keyset on the object each names (``store/held_refs.py``: a role of 20,000 members
is never read whole), each with Remove, and Add takes one more ``_ref``: the API's
``managed/TYPE/ID/PROPERTY`` create and delete, through the same code.

An edit is a PATCH of the API, made by the API's own code
(``api.managed.change_managed``): the same validation against ``managed.json``,
the revision the form was read at (a change made meanwhile is refused, not
overwritten), the ``openidm`` router bound for the scripts it runs, and implicit
synchronization to every target before the answer, whose outcome the page shows.
A new object is the API's create the same way.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idsync.api.audit import private_by_mapping
from idsync.api.context import ApiContext
from idsync.api.managed import change_managed
from idsync.config.managed import ManagedType
from idsync.console.record import record
from idsync.console.web import Form, page, redirect, user_of
from idsync.errors import IdsyncError, ObjectRejected
from idsync.managed.references import References
from idsync.managed.router import scripting
from idsync.managed.service import Change, ManagedObjects
from idsync.query import parse
from idsync.resources import Resources
from idsync.store import strict_json
from idsync.store.audit_events import without_hidden
from idsync.store.filters import refuse_hidden, to_sql
from idsync.store.held_refs import HeldRefs
from idsync.store.links import LinkSet
from idsync.store.relationships import Edges
from idsync.store.tables import audit, managed_objects, managed_properties

__all__ = ["identity_routes"]

_PAGE = 50
_HISTORY = 50
# The search box looks at this many matches per property at most (then asks for more letters).
_CANDIDATES = 1000
_LAST_CHAR = "\U0010ffff"
_COLUMNS = ("userName", "name", "givenName", "sn", "mail", "accountStatus", "description")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.console.ctx
    return ctx


def _schema(ctx: ApiContext, object_type: str) -> ManagedType:
    types = ctx.project().managed.types
    if object_type not in types:
        raise HTTPException(404, f"no managed object type {object_type!r}")
    return types[object_type]


def _candidates(conn: Connection, object_type: str, schema: ManagedType, text: str) -> tuple[set[str], bool]:
    """Ids of objects with a searchable property starting with ``text`` (case-sensitive), up to
    ``_CANDIDATES`` per property, each found by a range on the property index; and whether
    a property had more."""
    mp = managed_properties
    ids: set[str] = set()
    capped = False
    for name in sorted(schema.searchable - schema.secrets - schema.private):  # a hash's prefix tells it
        query = (select(mp.c.object_id).where(mp.c.object_type == object_type, mp.c.name == name,
                                              mp.c.value >= text, mp.c.value < text + _LAST_CHAR)
                 .order_by(mp.c.value).limit(_CANDIDATES + 1))
        found = [r[0] for r in conn.execute(query)]
        capped = capped or len(found) > _CANDIDATES
        ids.update(found[:_CANDIDATES])
    return ids, capped


def _search(ctx: ApiContext, object_type: str, text: str, query_filter: str,
            after: str) -> tuple[list[dict[str, Any]], bool]:
    """A page of objects (by ``_id``) matching the search box or the ``_queryFilter``, and
    whether the search box matched more than it could look at."""
    schema = _schema(ctx, object_type)
    mo = managed_objects
    query = select(mo.c.id, mo.c.data).where(mo.c.object_type == object_type)
    capped = False
    with ctx.store.engine.connect() as conn:
        if query_filter:
            try:
                node = parse(query_filter)
                query = query.where(to_sql(node, object_type, schema.searchable))
            except IdsyncError as exc:
                raise HTTPException(400, f"_queryFilter: {exc}") from None
            try:
                refuse_hidden(node, {**dict.fromkeys(schema.private, "private"),
                                     **dict.fromkeys(schema.secrets, "secret")})
            except IdsyncError as exc:  # says "_queryFilter: " itself
                raise HTTPException(400, str(exc)) from None
        elif text:
            ids, capped = _candidates(conn, object_type, schema, text)
            query = query.where(mo.c.id.in_(sorted(i for i in ids if i > after)[: _PAGE + 1]))
        if after:
            query = query.where(mo.c.id > after)
        query = query.order_by(mo.c.id).limit(_PAGE + 1)
        left_out = schema.secrets | schema.private
        rows = [{"_id": r.id, **{k: v for k, v in (r.data or {}).items() if k not in left_out}}
                for r in conn.execute(query)]
    return rows, capped


async def _list(request: Request) -> Response:
    ctx = _ctx(request)
    object_type = request.path_params["type"]
    q = request.query_params
    text, query_filter, after = q.get("q", "").strip(), q.get("_queryFilter", "").strip(), q.get("after", "")
    rows, capped = await run_in_threadpool(_search, ctx, object_type, text, query_filter, after)
    more = len(rows) > _PAGE
    rows = rows[:_PAGE]
    schema = _schema(ctx, object_type)
    columns = [c for c in _COLUMNS if c in schema.properties][:5]
    return page(request, "identities.html", object_type=object_type, rows=rows, columns=columns, text=text,
                query_filter=query_filter, next_after=rows[-1]["_id"] if more else None, capped=capped,
                types=sorted(ctx.project().managed.types))


def _linked(ctx: ApiContext, resource: str, object_id: str) -> list[dict[str, str]]:
    """The objects linked to this one, through every mapping that has it as source or target."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    project = ctx.project()
    for mapping in project.mappings:
        if mapping.source == resource:
            found = LinkSet.of(ctx.store, project, mapping).targets_of([object_id])
            other = mapping.target
        elif mapping.target == resource:
            found = LinkSet.of(ctx.store, project, mapping).sources_of([object_id])
            other = mapping.source
        else:
            continue
        for linked in found.values():
            out.setdefault((other, linked), {"resource": other, "id": linked, "mapping": mapping.name})
    return list(out.values())


def _history(ctx: ApiContext, ids: list[str]) -> list[dict[str, Any]]:
    """Audit entries naming the object or an object linked to it as their source (indexed),
    newest first; a recorded change of a private property left out, as the API leaves it."""
    query = (select(audit).where(audit.c.source_id.in_(ids)).order_by(audit.c.seq.desc()).limit(_HISTORY))
    hidden = private_by_mapping(ctx.project())
    with ctx.store.engine.connect() as conn:
        return [without_hidden(dict(r), hidden.get(r["mapping"], ())) for r in conn.execute(query).mappings()]


def _listed(schema: ManagedType) -> list[str]:
    """The relationship properties holding many references: listed a page at a time, not in the form."""
    return [name for name, relation in schema.relationships.items() if relation.many]


def _read(ctx: ApiContext, object_type: str, object_id: str) -> dict[str, Any]:
    """The object as the store holds it, secrets left out, without the relationship
    properties holding many references (``_listed``), unless its read scripts need them."""
    project = ctx.project()
    schema = _schema(ctx, object_type)
    resources = Resources(project, ctx.store)
    try:
        objects = ManagedObjects(project, ctx.store, resources, object_type, sync=False)
        obj = objects.get(object_id, shown=[n for n in schema.properties if n not in _listed(schema)])
        return {k: v for k, v in obj.items() if k not in _listed(schema)}
    finally:
        resources.close()


def _references(ctx: ApiContext, object_type: str, object_id: str, name: str, after: str) -> dict[str, Any]:
    """A page of the references ``name`` holds, from the one after the object ``after`` names."""
    schema = _schema(ctx, object_type)
    collection, _, last = after.rpartition("/")
    held = HeldRefs(Edges(ctx.store, schema), object_id, name)
    with ctx.store.engine.connect() as conn:
        refs = held.after(conn, (collection, last) if after else None, _PAGE + 1)
    shown = [{"ref": f"{r.collection}/{r.id}", "row": r.row, "properties": json.dumps(dict(r.properties))
              if r.properties else ""} for r in refs[:_PAGE]]
    return {"name": name, "refs": shown, "after": after,
            "next_after": shown[-1]["ref"] if len(refs) > _PAGE else None}


def _view(ctx: ApiContext, object_type: str, object_id: str, after: dict[str, str]) -> dict[str, Any]:
    schema = _schema(ctx, object_type)
    # What the API answers: no secret, no "scope": "private" property.
    obj = {k: v for k, v in _read(ctx, object_type, object_id).items() if k not in schema.private}
    resource = f"managed/{object_type}"
    linked = _linked(ctx, resource, object_id)
    listed = _listed(schema)
    fields = [{"name": p.name, "type": p.type, "value": _shown(obj.get(p.name), p.type)}
              for p in schema.properties.values() if not p.secret and not p.private and p.name not in listed]
    return {"object": obj, "fields": fields, "linked": linked,
            "references": [_references(ctx, object_type, object_id, name, after.get(name, ""))
                           for name in listed if name not in schema.private],
            "history": _history(ctx, [object_id, *(link["id"] for link in linked)]),
            "required": schema.required}


def _shown(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind in ("string",) and isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _parsed(text: str, kind: str, name: str) -> Any:
    """A form field's value, typed as ``managed.json`` says; a value that is not JSON is
    refused naming its property, as the form shows it again."""
    if kind == "string":
        return text
    if text.strip() == "":
        return None
    try:
        return strict_json.loads(text)
    except ValueError:  # malformed, or a number JSON has no form for (NaN, 1e999)
        raise ObjectRejected(f"{name}: expected JSON for a property of type {kind} "
                             f"(such as {_EXAMPLES.get(kind, 'null')}), not {text[:80]!r}") from None


_EXAMPLES = {"array": '["a", "b"]', "object": '{"key": "value"}', "boolean": "true", "number": "1", "integer": "1"}


def _fields_of(schema: ManagedType, form: Form) -> dict[str, Any]:
    """The form's non-empty property values, typed as ``managed.json`` says."""
    values: dict[str, Any] = {}
    for prop in schema.properties.values():
        if form.has(f"p.{prop.name}") and form.get(f"p.{prop.name}") != "":
            values[prop.name] = _parsed(form.get(f"p.{prop.name}"), prop.type, prop.name)
    return values


async def _new_form(request: Request, form: Form | None = None, problem: str | None = None) -> Response:
    """The New form; refused (``problem``), again with what was typed in it (``form``),
    but the secrets, which are never sent back."""
    ctx = _ctx(request)
    object_type = request.path_params["type"]
    schema = _schema(ctx, object_type)
    fields = [{"name": p.name, "type": p.type, "secret": p.secret,
               "value": form.get(f"p.{p.name}") if form is not None and not p.secret else ""}
              for p in schema.properties.values() if not p.private]
    return page(request, "identity_new.html", status=400 if problem else 200, object_type=object_type,
                fields=fields, required=schema.required, problem=problem)


def _create(ctx: ApiContext, object_type: str, form: Form) -> tuple[str, list[str]]:
    schema = _schema(ctx, object_type)
    values = _fields_of(schema, form)
    for prop in schema.properties.values():  # a secret (a password) is typed, never shown
        if prop.secret and form.get(f"s.{prop.name}"):
            values[prop.name] = form.get(f"s.{prop.name}")
    change = change_managed(ctx, object_type, "create", None, values, None)
    assert change.object is not None
    return str(change.object["_id"]), _outcome(change)


def _outcome(change: Change) -> list[str]:
    """What implicit synchronization did, per mapping."""
    return [f"{p.mapping}: {'pushed' if p.ok else 'push failed: ' + (p.message or '')}" for p in change.pushes]


async def _new(request: Request) -> Response:
    ctx = _ctx(request)
    object_type = request.path_params["type"]
    form = await Form.read(request)
    try:
        new_id, outcome = await run_in_threadpool(_create, ctx, object_type, form)
    except IdsyncError as exc:
        return await _new_form(request, form, str(exc))
    await run_in_threadpool(lambda: record(
        ctx, "console.object_created", user=user_of(request), action="CREATE", subject=new_id,
        message=f"created managed/{object_type}/{new_id}", resource=f"managed/{object_type}", id=new_id,
        outcome=outcome))
    return redirect(request, f"/managed/{object_type}/{new_id}", done="; ".join(["Created", *outcome]))


async def _one(request: Request, form: Form | None = None, problem: str | None = None) -> Response:
    """An object's page; refused (``problem``), with what was typed in its form (``form``)
    and the revision it was typed against, so that saving again still checks it."""
    ctx = _ctx(request)
    object_type, object_id = request.path_params["type"], request.path_params["id"]
    after = {k.removeprefix("after."): v for k, v in request.query_params.items() if k.startswith("after.")}
    try:
        values = await run_in_threadpool(_view, ctx, object_type, object_id, after)
    except IdsyncError as exc:
        raise HTTPException(404, str(exc)) from None
    if form is not None:
        values["fields"] = [{**f, "value": form.get(f"p.{f['name']}")} if form.has(f"p.{f['name']}") else f
                            for f in values["fields"]]
        values["object"] = {**values["object"], "_rev": form.get("_rev") or values["object"].get("_rev")}
    return page(request, "identity.html", status=400 if problem else 200, object_type=object_type,
                problem=problem, **values)


def _edit(ctx: ApiContext, object_type: str, object_id: str, form: Form) -> list[str] | None:
    """Apply the form's changed fields as one PATCH, exactly as the API's; what implicit sync
    did, per mapping (None when the object did not change: no field changed, or only one
    the store computes, such as a user's effectiveRoles from its roles)."""
    schema = _schema(ctx, object_type)
    current = _read(ctx, object_type, object_id)
    ops: list[dict[str, Any]] = []
    for prop in schema.properties.values():
        if prop.secret or prop.private or not form.has(f"p.{prop.name}"):
            continue
        new = _parsed(form.get(f"p.{prop.name}"), prop.type, prop.name)
        if new == current.get(prop.name) or (new in ("", None) and prop.name not in current):
            continue
        if new in ("", None):
            ops.append({"operation": "remove", "field": f"/{prop.name}"})
        else:
            ops.append({"operation": "replace", "field": f"/{prop.name}", "value": new})
    if not ops:
        return None
    change = change_managed(ctx, object_type, "patch", object_id, ops, form.get("_rev") or None)
    if change.object is not None and change.object.get("_rev") == current.get("_rev"):
        return None  # what was typed is not what the store keeps: nothing was written
    return _outcome(change)


async def _post(request: Request) -> Response:
    ctx = _ctx(request)
    object_type, object_id = request.path_params["type"], request.path_params["id"]
    form = await Form.read(request)
    try:
        outcome = await run_in_threadpool(_edit, ctx, object_type, object_id, form)
    except IdsyncError as exc:
        return await _one(request, form, str(exc))
    if outcome is None:
        return redirect(request, f"/managed/{object_type}/{object_id}", done="Nothing changed")
    await run_in_threadpool(lambda: record(
        ctx, "console.object_changed", user=user_of(request), action="UPDATE", subject=object_id,
        message=f"edited managed/{object_type}/{object_id}", resource=f"managed/{object_type}", id=object_id,
        outcome=outcome))
    return redirect(request, f"/managed/{object_type}/{object_id}", done="; ".join(["Saved", *outcome]))


def _reference(ctx: ApiContext, object_type: str, object_id: str, name: str, form: Form) -> str:
    """Add the reference the form names (``_ref``) or remove the one it names (``row``), as
    the API's ``managed/TYPE/ID/NAME`` does; what was done, for the page."""
    project = ctx.project()
    resources = Resources(project, ctx.store)
    try:
        objects = ManagedObjects(project, ctx.store, resources, object_type)
        with scripting(project, ctx.store, resources=resources):
            refs = References(project, ctx.store, objects, name, answer=True)
            if form.get("row"):
                gone = refs.delete(object_id, form.get("row"))
                return f"Removed {gone['_ref']} from {name}"
            added = refs.create(object_id, {"_ref": form.get("_ref").strip()})
            return f"Added {added['_ref']} to {name}"
    finally:
        resources.close()


async def _post_reference(request: Request) -> Response:
    ctx = _ctx(request)
    object_type, object_id, name = (request.path_params[k] for k in ("type", "id", "property"))
    form = await Form.read(request)
    try:
        done = await run_in_threadpool(_reference, ctx, object_type, object_id, name, form)
    except IdsyncError as exc:
        return await _one(request, None, str(exc))
    await run_in_threadpool(lambda: record(
        ctx, "console.object_changed", user=user_of(request), action="UPDATE", subject=object_id,
        message=f"{done} of managed/{object_type}/{object_id}", resource=f"managed/{object_type}", id=object_id,
        outcome=[]))
    return redirect(request, f"/managed/{object_type}/{object_id}", done=done)


identity_routes = [
    Route("/managed/{type}", _list, methods=["GET"]),
    Route("/managed/{type}/new", _new_form, methods=["GET"]),
    Route("/managed/{type}/new", _new, methods=["POST"]),
    Route("/managed/{type}/{id}", _one, methods=["GET"]),
    Route("/managed/{type}/{id}", _post, methods=["POST"]),
    Route("/managed/{type}/{id}/{property}", _post_reference, methods=["POST"]),
]
