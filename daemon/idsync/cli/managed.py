"""``idsync managed``, ``idsync system`` and ``idsync sync``: objects by hand.

    idsync managed query TYPE [--filter F] [--fields a,b] [--limit N] [--execute-on-retrieve]
    idsync managed get TYPE ID
    idsync managed create TYPE --data JSON|@FILE|- [--id ID] [--no-sync]
    idsync managed update TYPE ID --data JSON|@FILE|- [--rev REV] [--no-sync]
    idsync managed patch TYPE ID --operations JSON|@FILE|- [--rev REV] [--no-sync]
    idsync managed delete TYPE ID [--rev REV] [--no-sync]
    idsync system query SYSTEM TYPE [--filter F] [--fields a,b] [--limit N]
    idsync system get SYSTEM TYPE ID
    idsync sync retry [--mapping NAME]

A change prints the object as stored (never a secret) and then pushes it
through every mapping whose source it is (implicit synchronization). A push
that fails leaves the store change in place, says so on stderr and exits 75
(EX_TEMPFAIL): ``idsync sync retry`` or the next recon repairs the target.
Bad data exits 65 (EX_DATAERR), an unknown id 66 (EX_NOINPUT), a stale
``--rev`` 75 (re-read the object and try again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idsync.cli.arguments import whole_number
from idsync.cli.closing import close_at_end
from idsync.errors import NotFound, ObjectRejected, QueryError, RevisionMismatch, UsageError

if TYPE_CHECKING:  # the commands import the store and the engine when they run, not at `idsync --help`
    from idsync.config.managed import ManagedType
    from idsync.config.project import Project
    from idsync.query.ast import Node
    from idsync.resource import Obj, Resource
    from idsync.store.database import Store
    from idsync.store.objects import ManagedResource
    from idsync.sync.implicit import PushResult

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``managed``, ``system`` and ``sync`` to the ``idsync`` subcommands."""
    m = sub.add_parser("managed", help="query and change managed objects in the store")
    msub = m.add_subparsers(dest="managed_command", metavar="ACTION", required=True)
    q = msub.add_parser("query", help="objects matching a _queryFilter")
    q.add_argument("type", help="the type: user, role, or another of managed.json")
    _query_args(q)
    q.add_argument("--execute-on-retrieve", action="store_true",
                   help="run the type's onRetrieve scripts on each object (PingIDM's executeOnRetrieve=true)")
    q.set_defaults(handler=_cmd_managed_query)
    g = msub.add_parser("get", help="one object")
    g.add_argument("type", help="the type: user, role, or another of managed.json")
    g.add_argument("id", help="the object's _id")
    g.set_defaults(handler=_cmd_managed_get)
    c = msub.add_parser("create", help="create an object, then sync it")
    c.add_argument("type", help="the type: user, role, or another of managed.json")
    c.add_argument("--data", required=True, help="the object: JSON, @file or - for stdin")
    c.add_argument("--id", help="the new object's _id (default: the _id of --data, else a new UUID)")
    c.set_defaults(handler=_cmd_managed_change, action="create")
    u = msub.add_parser("update", help="replace an object's properties, then sync it")
    u.add_argument("type", help="the type: user, role, or another of managed.json")
    u.add_argument("id", help="the object's _id")
    u.add_argument("--data", required=True, help="the whole object: JSON, @file or - for stdin")
    u.set_defaults(handler=_cmd_managed_change, action="update")
    pt = msub.add_parser("patch", help="apply patch operations, then sync the object")
    pt.add_argument("type", help="the type: user, role, or another of managed.json")
    pt.add_argument("id", help="the object's _id")
    pt.add_argument("--operations", required=True,
                    help='[{"operation": "replace", "field": "/mail", "value": "..."}]: JSON, @file or -')
    pt.set_defaults(handler=_cmd_managed_change, action="patch")
    d = msub.add_parser("delete", help="delete an object, then sync the deletion")
    d.add_argument("type", help="the type: user, role, or another of managed.json")
    d.add_argument("id", help="the object's _id")
    d.set_defaults(handler=_cmd_managed_change, action="delete")
    for parser in (c, u, pt, d):
        if parser is not c:
            parser.add_argument("--rev", help="fail unless the object is still at this revision")
        parser.add_argument("--no-sync", action="store_true", help="change the store only (no implicit sync)")

    s = sub.add_parser("system", help="read objects of an external system")
    ssub = s.add_subparsers(dest="system_command", metavar="ACTION", required=True)
    sq = ssub.add_parser("query", help="objects matching a _queryFilter")
    sq.add_argument("system", help="the system's name: NAME of conf/provisioner.openicf-NAME.json")
    sq.add_argument("type", help="the system's object type: account, group ... (its provisioner's objectTypes)")
    _query_args(sq)
    sq.set_defaults(handler=_cmd_system_query)
    sg = ssub.add_parser("get", help="one object by _id")
    sg.add_argument("system", help="the system's name: NAME of conf/provisioner.openicf-NAME.json")
    sg.add_argument("type", help="the system's object type: account, group ... (its provisioner's objectTypes)")
    sg.add_argument("id", help="the object's _id in that system (an entryUUID, a SCIM id ...)")
    sg.set_defaults(handler=_cmd_system_get)

    y = sub.add_parser("sync", help="implicit synchronization")
    ysub = y.add_subparsers(dest="sync_command", metavar="ACTION", required=True)
    r = ysub.add_parser("retry", help="push again the managed objects whose last push failed")
    r.add_argument("--mapping", help="only this mapping")
    r.add_argument("--json", action="store_true", help="the outcome per object, as JSON")
    r.set_defaults(handler=_cmd_sync_retry)
    lk = ysub.add_parser("link", help="link a source object to a target object by hand (an AMBIGUOUS correlation "
                                      "settled); the next recon of the pair finds it CONFIRMED")
    lk.add_argument("mapping", help="the mapping whose link it is")
    lk.add_argument("source_id", help="the source object's _id")
    lk.add_argument("target_id", help="the target object's _id")
    lk.add_argument("--qualifier", default="default", help="the link qualifier (default: default)")
    lk.set_defaults(handler=_sync_answer(_cmd_sync_link))
    ul = ysub.add_parser("unlink", help="remove a source object's link")
    ul.add_argument("mapping", help="the mapping whose link it is")
    ul.add_argument("source_id", help="the source object's _id")
    ul.add_argument("--qualifier", default="default", help="the link qualifier (default: default)")
    ul.set_defaults(handler=_sync_answer(_cmd_sync_unlink))
    pa = ysub.add_parser("perform", help="take a policy's action for one object by hand, whatever the mapping's "
                                         "policies say (PingIDM's performAction): a create a recon only reported")
    pa.add_argument("mapping", help="the mapping to act through")
    pa.add_argument("action", type=str.upper, metavar="ACTION",
                    help="CREATE, UPDATE, DELETE, LINK, UNLINK, EXCEPTION, IGNORE, REPORT, NOREPORT or ASYNC")
    pa.add_argument("--source", dest="source_id", help="the source object's _id")
    pa.add_argument("--target", dest="target_id",
                    help="the target object's _id: with --source, the target chosen for it (in place of its "
                         "correlation); alone, a target acted on as a recon's target phase sees it")
    pa.add_argument("--situation", type=str.upper,
                    help="the situation expected: refused if the object is no longer in it")
    pa.add_argument("--qualifier", default="default", help="the link qualifier (default: default)")
    pa.add_argument("--recon", dest="recon_id", metavar="RUN",
                    help="the recon run whose report this settles: its audit shows the action too (PingIDM's reconId)")
    pa.set_defaults(handler=_sync_answer(_cmd_sync_perform))
    ld = ysub.add_parser("linked", help="the objects linked to one object, through every mapping")
    ld.add_argument("resource", help="the object: managed/user/<id>, system/ldap/account/<id>")
    ld.add_argument("--json", action="store_true", help="as JSON (PingIDM's getLinkedResources)")
    ld.set_defaults(handler=_sync_answer(_cmd_sync_linked))


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", default="true", help="a _queryFilter (default: true)")
    p.add_argument("--fields", help="comma-separated fields to show")
    p.add_argument("--limit", type=whole_number(0, 1_000_000_000), default=0, help="stop after N objects (0: all)")


# -- reading ------------------------------------------------------------------


def _open(project_dir: Path) -> tuple[Project, Store]:
    from idsync.config.project import load_project
    from idsync.store.database import Store

    project = load_project(project_dir)
    return project, close_at_end(Store.open(project.settings.store_url()))


def _open_reading(project_dir: Path, args: argparse.Namespace) -> tuple[Project, Store]:
    """For a command that only reads: a missing store is an error, never created. The
    type and filter are checked first, so a typo is reported as such even before any run."""
    from idsync.cli.store import open_existing_store
    from idsync.config.project import load_project
    from idsync.query import parse

    project = load_project(project_dir)
    project.managed.get(args.type, file="command line", key="TYPE")
    if getattr(args, "filter", None) is not None:
        try:
            parse(args.filter)
        except QueryError as exc:
            raise QueryError(f"--filter: {exc}") from None
    return project, open_existing_store(project.settings)


def _print_query(resource: Resource, args: argparse.Namespace) -> None:
    from idsync.resource import QuerySpec

    pages = resource.pages(QuerySpec(filter=_filter(args), fields=_fields(args)))  # a refused filter prints nothing
    _print_objects(_limited(pages, args.limit))


def _filter(args: argparse.Namespace) -> Node:
    from idsync.query import parse

    try:
        return parse(args.filter)
    except QueryError as exc:
        raise QueryError(f"--filter: {exc}") from None


def _fields(args: argparse.Namespace) -> list[str] | None:
    """``--fields``, or None when it names none."""
    return [f.strip() for f in (args.fields or "").split(",") if f.strip()] or None


def _print_objects(objects: Iterator[Obj]) -> None:
    # The first object is read before anything is printed: a source that cannot be read
    # (a directory down) leaves stdout empty, not a JSON fragment.
    first = next(objects, None)
    print("[")
    if first is not None:
        print("  " + json.dumps(_shown(first), ensure_ascii=False))
        for obj in objects:
            print(", " + json.dumps(_shown(obj), ensure_ascii=False))
    print("]")


def _limited(pages: Iterator[list[Obj]], limit: int) -> Iterator[Obj]:
    count = 0
    for page in pages:
        for obj in page:
            yield obj
            count += 1
            if limit and count >= limit:
                return


def _read_pages(project: Project, store: Store, resource: ManagedResource, args: argparse.Namespace,
                ) -> Iterator[list[Obj]]:
    """The objects ``args`` asks for, a page at a time, as the API's query answers them:
    with ``--execute-on-retrieve``, each whole through its type's ``onRetrieve`` scripts
    (as PingIDM's ``executeOnRetrieve=true``; without it, a virtual property is the value
    its last write kept), then ``--fields`` expanded and picked."""
    from idsync.managed.references import expand_all
    from idsync.resource import QuerySpec

    schema = resource.schema
    fields = _fields(args)
    retrieving = args.execute_on_retrieve and resource.hooks.reads
    spec = QuerySpec(filter=_filter(args), page_size=min(args.limit, 1000) if args.limit > 0 else 1000)
    related = _related(schema, ["*", *(fields or ())] if retrieving else fields)
    pages = resource.pages(spec, related=related)  # a refused filter prints nothing

    def shown(page: list[Obj]) -> list[Obj]:
        if retrieving:
            page = [resource.hooks.retrieved(obj, "query") for obj in page]
        if fields:
            expand_all(project, store, schema, page, fields)
        return [_picked(schema, obj, fields) for obj in page]
    return map(shown, pages)


def _related(schema: ManagedType, fields: list[str] | None) -> list[str]:
    """The relationship and computed properties a read of ``fields`` shows."""
    named = [f.strip("/").split("/")[0] for f in fields or ["*"]]
    shown = [name for name in schema.properties if name not in schema.hidden] if "*" in named else []
    return list(dict.fromkeys([*shown, *named]))


def _picked(schema: ManagedType, obj: Obj, fields: list[str] | None) -> Obj:
    """``obj`` as a read shows it: the properties ``fields`` names (``*``: those shown by
    default, ``roles/name``: ``roles``), ``_id`` and ``_rev`` always; without fields, those
    shown by default (not those ``managed.json`` gives ``"returnByDefault": false``, as the
    relationships are unless it says otherwise)."""
    keep = set(_related(schema, fields)) | {"_id", "_rev"}
    return {k: v for k, v in obj.items() if k in keep or ("*" in keep and k not in schema.hidden)}


def _read(resource: ManagedResource, obj: Obj) -> Obj:
    """One managed object as a client reads it: after its type's onRetrieve (and onRead)
    scripts, without the properties it shows only when asked for (``returnByDefault``)."""
    if resource.hooks.reads:
        obj = resource.hooks.retrieved(obj, "read")
    return _picked(resource.schema, obj, None)


def _shown(obj: Obj) -> Obj:
    """What a user may see: never a password, even a hashed one."""
    from idsync.sync.assess import SECRET_NAMES

    return {k: v for k, v in obj.items() if k.lower() not in SECRET_NAMES}


def _managed(project: Project, store: Store, object_type: str) -> ManagedResource:
    from idsync.store.objects import ManagedResource

    schema = project.managed.get(object_type, file="command line", key="TYPE")  # an unknown type names the argument
    return ManagedResource(store, schema)


def _cmd_managed_query(args: argparse.Namespace, project_dir: Path) -> int:
    project, store = _open_reading(project_dir, args)
    _print_objects(_limited(_read_pages(project, store, _managed(project, store, args.type), args), args.limit))
    return 0


def _cmd_managed_get(args: argparse.Namespace, project_dir: Path) -> int:
    project, store = _open_reading(project_dir, args)
    resource = _managed(project, store, args.type)
    obj = resource.get(args.id)
    if obj is None:
        print(f"idsync: managed/{args.type}/{args.id} not found", file=sys.stderr)
        return os.EX_NOINPUT
    print(json.dumps(_shown(_read(resource, obj)), indent=2, ensure_ascii=False))
    return 0


def _cmd_system_query(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.config.project import load_project
    from idsync.resources import Resources

    project = load_project(project_dir)
    resources = Resources(project, store=None)  # type: ignore[arg-type]
    try:
        _print_query(resources.open(f"system/{args.system}/{args.type}"), args)
    finally:
        resources.close()
    return 0


def _cmd_system_get(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.config.project import load_project
    from idsync.resources import Resources

    project = load_project(project_dir)
    resources = Resources(project, store=None)  # type: ignore[arg-type]
    try:
        obj = resources.open(f"system/{args.system}/{args.type}").get(args.id)
    finally:
        resources.close()
    if obj is None:
        print(f"idsync: system/{args.system}/{args.type}/{args.id} not found", file=sys.stderr)
        return os.EX_NOINPUT
    print(json.dumps(_shown(obj), indent=2, ensure_ascii=False))
    return 0


# -- changing -----------------------------------------------------------------


def _cmd_managed_change(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.managed.router import scripting
    from idsync.managed.service import ManagedObjects
    from idsync.resources import Resources

    project, store = _open(project_dir)
    resources = Resources(project, store)
    objects = ManagedObjects(project, store, resources, args.type, sync=not args.no_sync)
    try:
        with scripting(project, store, resources=resources):
            if args.action == "create":
                change = objects.create(_json_arg(args.data, "--data"), object_id=args.id)
            elif args.action == "update":
                change = objects.update(args.id, _json_arg(args.data, "--data"), rev=args.rev)
            elif args.action == "patch":
                change = objects.patch(args.id, _json_arg(args.operations, "--operations"), rev=args.rev)
            else:
                change = objects.delete(args.id, rev=args.rev)
    except NotFound as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return os.EX_NOINPUT
    except RevisionMismatch as exc:
        print(f"idsync: {exc}; read the object again and retry", file=sys.stderr)
        return os.EX_TEMPFAIL
    finally:
        resources.close()
    if change.object is not None:
        print(json.dumps(_shown(change.object), indent=2, ensure_ascii=False))
    changed = (change.object or {}).get("_id") or args.id or ""  # a create's: the id its --data gave
    _report_pushes(project, change.pushes, f"managed/{args.type}/{changed}", deleted=args.action == "delete")
    if change.pushes:
        _write_status_file(project, store)
    return 0 if change.synced else os.EX_TEMPFAIL


def _report_pushes(project: Project, pushes: list[PushResult], changed: str, *, deleted: bool = False) -> None:
    """A line on stderr per push that failed: of the object ``changed``, or of another whose
    mappings it changes (a role's members, an assignment's holders)."""
    done = "is deleted" if deleted else "is saved"
    for push in pushes:
        if push.ok:
            continue
        source = next((m.source for m in project.mappings if m.name == push.mapping), changed.rsplit("/", 1)[0])
        pushed = f"{source}/{push.source_id}"
        what = f"implicit sync through {push.mapping}" if pushed == changed else \
            f"implicit sync of {pushed}, which it changes, through {push.mapping}"
        print(f"idsync: {changed} {done}, but {what} failed: {push.message} (run {push.run_id}; `idsync sync retry` "
              "pushes it again)", file=sys.stderr)


def _json_arg(text: str, option: str) -> Any:
    from idsync.store import strict_json
    from idsync.store.validation import InvalidObject

    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        name = text[1:]
        try:
            text = Path(name).read_text(encoding="utf-8") if name else ""
        except UnicodeDecodeError as exc:
            raise InvalidObject(option, [f"{name}: not UTF-8 text (byte {exc.start})"]) from None
        except OSError as exc:
            raise InvalidObject(option, [f"{name}: cannot read it: {exc.strerror or exc}"]) from None
        if not name:
            raise InvalidObject(option, ["@ names no file (@FILE reads the JSON from FILE)"])
    try:
        return strict_json.loads(text)
    except strict_json.UnfitNumber as exc:
        raise InvalidObject(option, [f"not valid JSON: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise InvalidObject(option, [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None


def _cmd_sync_retry(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.managed.router import scripting
    from idsync.resources import Resources
    from idsync.store.objects import ManagedResource
    from idsync.sync.implicit import RETRY_JOB, ImplicitSync
    from idsync.sync.retry import failed_pushes

    project, store = _open(project_dir)
    mappings = [project.mapping(args.mapping)] if args.mapping else \
        [m for m in project.mappings if m.enable_sync and m.source.startswith("managed/")]
    resources = Resources(project, store)
    results: list[PushResult] = []
    try:
        pusher = ImplicitSync(project, store, resources)
        for mapping in mappings:
            ids = failed_pushes(store, mapping.name)
            if not ids:
                continue
            source = resources.open(mapping.source)
            if isinstance(source, ManagedResource):
                source = source.as_sync_source()
            current = source.get_many(ids)
            with scripting(project, store, resources=resources):
                for sid in ids:
                    results.append(pusher.push_one(mapping, sid, current.get(sid), job=RETRY_JOB))
    finally:
        resources.close()
    if results:
        _write_status_file(project, store)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            outcome = "ok" if r.ok else f"FAILED: {r.message}"
            print(f"{r.mapping}: {r.source_id}: {f'{r.situation} {r.action}'.strip() or 'not assessed'}: {outcome}")
        if not results:
            print("nothing to retry")
    return 0 if all(r.ok for r in results) else os.EX_TEMPFAIL


def _sync_answer(command: Callable[[argparse.Namespace, Path], int]) -> Callable[[argparse.Namespace, Path], int]:
    """``command`` (a link, unlink, action or linked query) with its refusals as exit codes:
    an unknown object or link 66, a request that cannot be done (a link another holds, an
    unknown link qualifier or action, a resource that names no object) 64; an action taken
    that failed stays 1, as a failed run."""

    def answer(args: argparse.Namespace, project_dir: Path) -> int:
        from idsync.sync.manual_links import ActionFailed

        try:
            return command(args, project_dir)
        except NotFound as exc:
            print(f"idsync: {exc}", file=sys.stderr)
            return os.EX_NOINPUT
        except ActionFailed:
            raise
        except ObjectRejected as exc:
            print(f"idsync: {exc}", file=sys.stderr)
            return os.EX_USAGE

    return answer


def _cmd_sync_link(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.resources import Resources
    from idsync.sync.manual_links import link

    project, store = _open(project_dir)
    resources = Resources(project, store)
    try:
        link(project, store, resources, args.mapping, args.source_id, args.target_id, args.qualifier)
    finally:
        resources.close()
    mapping = project.mapping(args.mapping)
    print(f"{mapping.source}/{args.source_id} linked to {mapping.target}/{args.target_id} ({args.qualifier})")
    return 0


def _cmd_sync_unlink(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.sync.manual_links import unlink

    project, store = _open(project_dir)
    target_id = unlink(project, store, args.mapping, args.source_id, args.qualifier)
    mapping = project.mapping(args.mapping)
    print(f"{mapping.source}/{args.source_id} no longer linked to {mapping.target}/{target_id} ({args.qualifier})")
    return 0


def _cmd_sync_perform(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.managed.router import scripting
    from idsync.resources import Resources
    from idsync.sync.manual_links import perform

    if not args.source_id and not args.target_id:
        raise UsageError("name the object: --source ID, or --target ID for a target")
    project, store = _open(project_dir)
    resources = Resources(project, store)
    try:
        with scripting(project, store, resources=resources):
            done = perform(project, store, resources, args.mapping, args.action, source_id=args.source_id,
                           target_id=args.target_id, situation=args.situation, qualifier=args.qualifier,
                           recon_id=args.recon_id)
    finally:
        resources.close()
    _write_status_file(project, store)
    outcome = "done" if done.ok else f"recorded as failed: {done.message}"
    print(f"{done.mapping}: {done.situation or 'not assessed'} {done.action}: {outcome} (run {done.run_id})")
    return 0


def _cmd_sync_linked(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.store import open_existing_store
    from idsync.config.project import load_project
    from idsync.resources import Resources
    from idsync.sync.manual_links import linked_resources

    project = load_project(project_dir)
    store = open_existing_store(project.settings)
    resources = Resources(project, store)
    try:
        found = linked_resources(project, store, resources, args.resource)
    finally:
        resources.close()
    if args.json:
        print(json.dumps([r.answer() for r in found], indent=2, default=str))
    else:
        for r in found:
            print(f"{r.resource_name}  ({r.link_type}, {r.link_qualifier}){'  gone' if r.content is None else ''}")
        if not found:
            print(f"nothing is linked to {args.resource}")
    return 0


def _write_status_file(project: Project, store: Store) -> None:
    from idsync.status_file import update_status_file

    update_status_file(project, store)
