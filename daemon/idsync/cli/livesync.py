"""``idsync livesync SOURCE``: one liveSync run of a source, now, in the foreground.

The run reads the changes of ``SOURCE`` (``system/ldap/account``, ``managed/user``) since its stored
token and applies them through every mapping whose source it is; without a
token, or with one the source no longer honours, it reconciles those mappings in
full and stores a fresh token (``sync/livesync.py``). Exit 0 when the run
succeeded, 1 when it failed, 75 when another liveSync of the source runs, 130
when canceled; the error codes of an unreachable or refusing peer as ``recon``.
``--reset`` forgets the stored token first: the run then reconciles in full.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from idsync.cli.arguments import MAX_PAGE_SIZE, whole_number
from idsync.cli.closing import close_at_end

__all__ = ["register", "render_livesync_sources"]


def register(subparsers: Any) -> None:
    """Add ``livesync`` to ``idsync``'s subcommands."""
    ls = subparsers.add_parser(
        "livesync", help="apply a source's changes since its last liveSync now",
        description="Read the changes of SOURCE since its stored token and apply them through every mapping "
        "whose source it is. Without a token (the first run) or with one the source can no longer honour, "
        "reconcile those mappings in full and store a fresh token.")
    ls.add_argument("source", help="the source resource, such as system/ldap/account or managed/user")
    ls.add_argument("--dry-run", action="store_true", help="assess and list the changes; write nothing, "
                                                           "keep the token")
    ls.add_argument("--reset", action="store_true", help="forget the stored token first: reconcile in full")
    ls.add_argument("--page-size", type=whole_number(1, MAX_PAGE_SIZE),
                    help="changes per batch (default [recon] page_size)")
    ls.add_argument("--json", action="store_true", help="print the run's outcome as JSON")
    ls.add_argument("--failures", action="store_true",
                    help="run nothing: list the source's objects whose change failed, waiting for a retry or kept "
                         "as dead letters (syncFailureHandler)")
    ls.add_argument("--forget", metavar="ID", action="append", default=[],
                    help="run nothing: remove this object from the failed changes (once dealt with); repeatable")
    ls.add_argument("--forget-all", action="store_true", help="run nothing: remove every failed change of the source")
    ls.add_argument("--retry", metavar="ID", action="append", default=[],
                    help="run nothing: have the next run try this dead letter again (its cause dealt with); "
                         "repeatable")
    ls.add_argument("--retry-all", action="store_true", help="run nothing: have the next run try every dead letter "
                                                             "of the source again")
    ls.set_defaults(handler=_cmd_livesync)


def _cmd_failures(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.store import open_existing_store
    from idsync.config.project import load_project
    from idsync.store.sync_failures import SyncFailures

    project = load_project(project_dir)
    failures = SyncFailures(open_existing_store(project.settings))
    if args.forget_all or args.forget:
        gone = failures.forget(args.source) if args.forget_all else \
            sum(failures.forget(args.source, object_id) for object_id in args.forget)
        print(f"{args.source}: {gone} failed change(s) forgotten")
        return 0
    if args.retry_all or args.retry:
        revived = failures.revive(args.source) if args.retry_all else \
            sum(failures.revive(args.source, object_id) for object_id in args.retry)
        print(f"{args.source}: {revived} dead letter(s) to be tried again by the next run")
        return 0
    found = failures.entries(args.source)
    if args.json:
        print(json.dumps([f.to_json() for f in found], indent=2))
        return 0
    for f in found:
        kind = "dead letter" if f.state == "DEAD" else "retrying"
        print(f"{f.object_id}  {kind}, {f.attempts} attempt(s), first {f.first_failed:%Y-%m-%d %H:%M:%S}, "
              f"last {f.last_failed:%Y-%m-%d %H:%M:%S}: {f.error}")
    if not found:
        print(f"{args.source}: no failed change")
    return 0


def _cmd_livesync(args: argparse.Namespace, project_dir: Path) -> int:
    if args.failures or args.forget or args.forget_all or args.retry or args.retry_all:
        return _cmd_failures(args, project_dir)
    from idsync.cli.signals import run_in_foreground
    from idsync.config.project import load_project
    from idsync.managed.router import run_livesync_scripted
    from idsync.managed.workers import local_splitter
    from idsync.status_file import update_status_file
    from idsync.store.database import Store
    from idsync.store.runs import RunStore
    from idsync.store.tokens import SyncTokens
    from idsync.sync.livesync import LiveSyncOptions

    project = load_project(project_dir)
    store = close_at_end(Store.open(project.settings.store_url()))
    # A token that can no longer be honoured is answered by a full recon, which may split.
    options = LiveSyncOptions(dry_run=args.dry_run, page_size=args.page_size, splitter=local_splitter(project, store))
    if args.reset and not args.dry_run:
        SyncTokens(store).forget(args.source)
    result = run_in_foreground(lambda: run_livesync_scripted(project, store, args.source, options),
                               options.cancel, store,
                               f"livesync-{args.source}")
    update_status_file(project, store)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
        return result.exit_code
    how = f" by {result.method}" if result.method else ""
    print(f"{result.source}: {result.state}: {result.changes} change(s) read{how} in {result.duration_ms} ms")
    if result.retried or result.failed:
        print(f"  {result.retried} object(s) whose earlier change failed retried; {result.failed} failed now"
              + (f", {result.given_up} past their retries (syncFailureHandler)" if result.given_up else ""))
    if result.full_recon:
        print(f"  full recon: {result.full_recon}")
    if result.note:
        print(f"  note: {result.note}")
    for run in result.runs:
        counts = _counts(run)
        # An echo is told by what it holds, not by who wrote it: idsync's own write read
        # back, a change a recon applied already and a move no mapped attribute shows look alike.
        echoes = f", {run['echoes']} change(s) skipped: nothing new for the linked object" \
            if run.get("echoes") else ""
        kind = "full recon" if run.get("fullRecon") else "liveSync"
        print(f"  {run['mapping']}: {kind} run {run['id'][:8]} {run['state']}: {counts}{echoes}")
    for run in result.onward:
        counts = _counts(run)
        print(f"  {run['mapping']}: carried on, run {run['id'][:8]} {run['state']}: {counts}")
    if args.dry_run:
        from idsync.cli.render import render_audit

        for run in result.runs:
            render_audit(RunStore(store).audit_entries(run["id"], limit=200))
    if result.state != "SUCCESS":
        print(f"idsync: livesync {result.source}: {result.state}: {result.message}", file=sys.stderr)
    return result.exit_code


def _counts(run: dict[str, Any]) -> str:
    """A run's changes; one that wrote none says whether it had nothing to write or failed
    first (the reason is in its record)."""
    counts = ", ".join(f"{k} {v}" for k, v in (run.get("counts") or {}).items())
    if counts:
        return counts
    if run.get("state") in (None, "SUCCESS"):
        return "nothing to write"
    return f"nothing written (idsync status {str(run.get('id') or '')[:8]} says why)"


def render_livesync_sources(sources: list[dict[str, Any]]) -> None:
    """``idsync status``'s liveSync lines: per source, its last run and its counts."""
    for s in sources:
        state = s["lastState"] or "never run"
        state += f" by {s['method']}" if s.get("method") and s["lastState"] else ""
        token = "token stored" if s["hasToken"] else "no token (the next run reconciles in full)"
        held = f"; {s['retrying']} object(s) to retry" if s.get("retrying") else ""
        held += f"; {s['deadLetters']} dead letter(s)" if s.get("deadLetters") else ""
        print(f"liveSync {s['source']}: last run {s['lastRun'] or '-'} {state}; {s['runs']} runs, "
              f"{s['changes']} changes, {s['failed']} failed, {s['fullRecons']} full recons; {token}{held}"
              + (f"; {s['lastMessage']}" if s["lastMessage"] and s["lastState"] != "SUCCESS" else ""))
