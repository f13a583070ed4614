"""The ``idsync`` command.

Exit codes follow sysexits (the README has the table): 0 ok, 1 a run FAILED, 2 bad usage
(argparse), 64 unusable command line (EX_USAGE), 65 bad query (EX_DATAERR), 66 no such
object (EX_NOINPUT),
69 peer unreachable (EX_UNAVAILABLE), 75 already running (EX_TEMPFAIL),
77 credentials refused (EX_NOPERM), 78 bad configuration (EX_CONFIG),
130 canceled. User errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from idsync import __version__
from idsync.cli.api import register as register_api_commands
from idsync.cli.arguments import MAX_PAGE_SIZE, max_deletes, whole_number
from idsync.cli.closing import close_at_end, command_scope
from idsync.cli.config import register as register_config_commands
from idsync.cli.docs import EPILOG
from idsync.cli.docs import register as register_doc_commands
from idsync.cli.install import register as register_install_command
from idsync.cli.jobs import register as register_job_commands
from idsync.cli.livesync import register as register_livesync_command
from idsync.cli.managed import register as register_managed_commands
from idsync.cli.salesforce import register as register_salesforce_commands
from idsync.cli.unlock import register as register_unlock_command
from idsync.errors import ConfigError, IdsyncError, UsageError
from idsync.runtime import leave_to_exit, tune_collector

if TYPE_CHECKING:  # the commands import what they need: `idsync --help` loads no database code
    from idsync.config.project import Project
    from idsync.settings import Settings
    from idsync.store.database import Store

__all__ = ["main"]

# A stdlib logger, which ``configure_logging`` routes through structlog as every other:
# structlog itself (and the rich it imports) is loaded with the logging, past ``--help``.
log = logging.getLogger("idsync.cli")

EX_CANCELED = 130
# Commands that run recons in the foreground: a signal cancels them (``signals.py``).
_FOREGROUND_RUNS = ("recon", "run-job", "livesync")
# Commands that answer a question: their output is the answer, not log lines.
_QUIET_COMMANDS = ("status", "prune", "managed", "mappings", "validate", "system", "sync", "jobs", "api", "salesforce",
                   "man", "completion", "config", "install-files")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv``; without ``argv``, the process's own command line (the
    ``idsync`` script, ``python -m idsync``): then the process ends after it, and its
    exit is left nothing to collect (``runtime.leave_to_exit``). Either way, what the
    command opened is closed before it returns (``closing.py``)."""
    code = _command(argv)
    if argv is None:
        leave_to_exit()
    return code


def _command(argv: Sequence[str] | None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # Half of a character a system sent (an unpaired surrogate, JSON's "\ud83d") has no
        # UTF-8 form: written as that escape, which in printed JSON reads back as the value.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return os.EX_USAGE
    project_dir = Path(args.project or os.environ.get("IDSYNC_PROJECT") or ".").resolve()
    tune_collector()
    if args.command in _FOREGROUND_RUNS and threading.current_thread() is threading.main_thread():
        # Until the run starts (``signals.run_in_foreground``), SIGTERM and SIGHUP cancel as
        # Ctrl-C does: exit 130 whatever the signal, not the shell's 143 or 129.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.default_int_handler)
    try:
        from idsync.log import configure_logging

        configure_logging(*_logging(args, project_dir))
        with command_scope():
            result: int = args.handler(args, project_dir)
        return result
    except IdsyncError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("idsync: interrupted", file=sys.stderr)
        return EX_CANCELED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line for the user, the traceback in the debug log
        log.debug("cli.crash", exc_info=True)
        print(f"idsync: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(run with --log-level debug for details)", file=sys.stderr)
        return os.EX_SOFTWARE


def _logging(args: argparse.Namespace, project_dir: Path) -> tuple[Literal["auto", "console", "json"], str]:
    """The log format and level: the option, else its ``IDSYNC_LOG__*`` variable, else
    ``[log]`` of ``conf/idsync.toml``, else auto and info. A command that answers a
    question logs at warning unless the option or the variable says otherwise: its output
    is the answer, not log lines, and the file's level is the daemon's and the runs'. A
    settings file that cannot be read is the command's to report, once it reads it."""
    from idsync.settings import LogSettings, load_settings

    try:
        configured = load_settings(project_dir).log
    except (ConfigError, ValueError):  # ValueError: a variable pydantic-settings cannot decode
        configured = LogSettings()
    answers = args.command in _QUIET_COMMANDS
    fmt = args.log_format or os.environ.get("IDSYNC_LOG__FORMAT") or configured.format
    level = args.log_level or os.environ.get("IDSYNC_LOG__LEVEL") or ("warning" if answers else configured.level)
    return fmt, level  # type: ignore[return-value]


def _print_error(exc: IdsyncError) -> None:
    # Imported here: the module (the object model's) is loaded when one was raised, and
    # the command's start (and the listing's fork server, which imports this program) skips it.
    from idsync.store.validation import PolicyFailed

    if isinstance(exc, PolicyFailed):
        # One line per broken requirement: the operator fixes them one property at a time.
        print(f"idsync: {exc.resource}: the object breaks its policies:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
    else:
        print(f"idsync: {exc}", file=sys.stderr)


_MAX_LIMIT = 100_000  # beyond, a listing is a query of its own (and a database's integers overflow)
_run_count = whole_number(1, _MAX_LIMIT)  # ``--limit``


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="idsync", description="Identity synchronization daemon and tools.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"idsync {__version__}")
    p.add_argument("-p", "--project",
                   help="project directory holding conf/ and jobs.d/ (default: $IDSYNC_PROJECT or .)")
    p.add_argument("--log-format", choices=["auto", "console", "json"], default=None,
                   help="log lines as console text or JSON (default $IDSYNC_LOG__FORMAT, else [log] format: auto, "
                        "console on a terminal)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                   help="the lowest level logged (default $IDSYNC_LOG__LEVEL, else [log] level; warning for commands "
                        "that answer a question)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("recon", help="reconcile one mapping now")
    r.add_argument("mapping", help="the mapping's name (idsync mappings lists them)")
    r.add_argument("--dry-run", "--analyze", action="store_true", help="compute and list every change; write nothing")
    r.add_argument("--no-create", action="store_true", help="kill switch: create nothing")
    r.add_argument("--no-update", action="store_true", help="kill switch: update nothing")
    r.add_argument("--no-delete", action="store_true", help="kill switch: delete or unlink nothing")
    r.add_argument("--max-deletes", type=max_deletes,
                   help="fail the run if it would delete more (a number or a percentage)")
    r.add_argument("--page-size", type=whole_number(1, MAX_PAGE_SIZE),
                   help="objects per batch for this run (default [recon] page_size)")
    r.add_argument("--rewrite-write-only", action="store_true",
                   help="write again the values the target never returns (passwords, NOT_READABLE), even those "
                        "last written unchanged")
    r.add_argument("--json", action="store_true", help="print the run summary as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress display")
    r.set_defaults(handler=_cmd_recon)

    s = sub.add_parser("status", help="the last runs, or one run in full")
    s.add_argument("run_id", nargs="?", help="one run in full: its id or any unique prefix (as listed)")
    s.add_argument("--json", action="store_true", help="as JSON")
    s.add_argument("--limit", type=_run_count, default=20,
                   help=f"how many runs to list, 1 to {_MAX_LIMIT} (default 20)")
    s.add_argument("--mapping", help="only the runs of this mapping")
    s.add_argument("--audit", type=whole_number(0, _MAX_LIMIT), default=50, metavar="N",
                   help="audit entries to show for one run")
    s.add_argument("--nodes", action="store_true", help="the cluster's nodes instead: alive or not, what each runs")
    s.set_defaults(handler=_cmd_status)

    v = sub.add_parser("validate", help="check every configuration file")
    v.add_argument("--json", action="store_true", help="the problems as JSON: file, key, problem")
    v.set_defaults(handler=_cmd_validate)

    t = sub.add_parser("test", help="connect to every configured system")
    t.add_argument("--json", action="store_true", help="one report per system, as JSON")
    t.set_defaults(handler=_cmd_test)

    mp = sub.add_parser("mappings", help="the mappings in processing order")
    mp.add_argument("--json", action="store_true", help="as JSON")
    mp.set_defaults(handler=_cmd_mappings)

    pr = sub.add_parser("prune", help="delete old run records and their audit entries")
    pr.add_argument("--days", type=whole_number(1, 36_500), default=None,
                    help="keep runs that ended within this many days (default: [store] keep_runs_days)")
    pr.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    pr.set_defaults(handler=_cmd_prune)

    register_livesync_command(sub)
    register_job_commands(sub)
    register_managed_commands(sub)
    register_salesforce_commands(sub)
    register_api_commands(sub)
    register_config_commands(sub)
    register_doc_commands(sub, p)
    register_install_command(sub, p)
    register_unlock_command(sub)
    return p


# -- commands ---------------------------------------------------------------


def _open(project_dir: Path) -> tuple[Project, Store]:
    from idsync.config.project import load_project
    from idsync.store.database import Store
    project = load_project(project_dir)
    return project, close_at_end(Store.open(project.settings.store_url()))


def _cmd_recon(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.progress import Progress
    from idsync.cli.signals import run_in_foreground
    from idsync.managed.router import run_recon_scripted
    from idsync.managed.workers import local_splitter
    from idsync.sync.options import ReconOptions
    from idsync.sync.progress import expected_counts

    project, store = _open(project_dir)
    project.mapping(args.mapping)  # unknown mapping: EX_CONFIG before anything starts
    options = ReconOptions(
        dry_run=args.dry_run,
        allow_create=False if args.no_create else None,
        allow_update=False if args.no_update else None,
        allow_delete=False if args.no_delete else None,
        max_deletes=args.max_deletes,
        page_size=args.page_size,
        splitter=local_splitter(project, store),
        rewrite_write_only=args.rewrite_write_only,
    )
    progress = Progress(display=not args.quiet and not args.json,
                        interval=project.settings.recon.progress_interval,
                        expected=expected_counts(store, args.mapping))
    options.on_progress = progress.update
    try:
        result = run_in_foreground(lambda: run_recon_scripted(project, store, args.mapping, options),
                                   options.cancel, store, f"recon-{args.mapping}")
    finally:
        progress.close()
    _write_status_file(project, store)
    if args.json:
        print(json.dumps({"_id": result.id, "state": result.state, "message": result.message, **result.summary},
                         indent=2, default=str))
    else:
        from idsync.cli.render import render_run

        render_run(result.id, result.state, result.message, result.summary, dry_run=args.dry_run)
        if args.dry_run:
            from idsync.cli.render import render_audit
            from idsync.store.runs import RunStore

            render_audit(RunStore(store).audit_entries(result.id, limit=200))
    if result.state != "SUCCESS" and not args.json:
        print(f"idsync: {result.mapping}: {result.state}: {result.message}", file=sys.stderr)
    return int(result.exit_code)


def _cmd_prune(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.store import open_existing_store
    from idsync.settings import load_settings
    from idsync.store.database import utcnow
    from idsync.store.retention import prune

    settings = load_settings(project_dir)
    days = settings.store.keep_runs_days if args.days is None else args.days
    if days <= 0:
        print("idsync: nothing to prune: runs are kept forever (keep_runs_days = 0)")
        return 0
    store = open_existing_store(settings)
    pruned = prune(store, utcnow() - dt.timedelta(days=days), dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {pruned.runs} runs and {pruned.audit} audit entries that ended more than {days} days ago")
    return 0


def _cmd_status(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.render import render_audit, render_run, render_runs
    from idsync.cli.store import open_existing_store
    from idsync.settings import load_settings
    from idsync.store.runs import RunStore

    # The runs are in the store: a broken mapping file must not hide them.
    settings = load_settings(project_dir)
    store = open_existing_store(settings)
    if args.nodes:
        return _print_nodes(store, settings.cluster.stall_timeout, as_json=args.json)
    runs = RunStore(store)
    if args.run_id:
        run_id = _resolve_run_id(store, args.run_id)
        if run_id is None:
            print(f"idsync: no run with id {args.run_id} in {store.describe()}", file=sys.stderr)
            return os.EX_NOINPUT
        run = runs.get(run_id)
        assert run is not None
        audit = runs.audit_entries(run_id, limit=args.audit)
        why = runs.gone([run]).get(run["id"])
        if args.json:
            print(json.dumps({**_run_json(run), **({"processGone": why} if why else {}), "audit": audit},
                             indent=2, default=str))
        else:
            render_run(run["id"], run["state"], run["message"], run["summary"], dry_run=run["dry_run"],
                       started=run["started"], ended=run["ended"], gone=why)
            render_audit(audit)
        return 0
    recent = runs.recent(limit=args.limit, mapping=args.mapping)
    gone = runs.gone(recent)
    if args.json:
        print(json.dumps([{**_run_json(r), **({"processGone": gone[r["id"]]} if r["id"] in gone else {})}
                          for r in recent], indent=2, default=str))
    else:
        render_runs(recent, gone, nodes=settings.cluster.enabled)
        _print_pending(store)
        _print_livesync(store)
        if settings.cluster.enabled:
            _print_nodes(store, settings.cluster.stall_timeout, as_json=False)
        _print_not_loaded(settings)
    return 0


def _print_not_loaded(settings: Settings) -> None:
    from idsync.cli.loaded import not_loaded

    pending = not_loaded(settings)
    if pending is not None:
        print(f"note: {pending.message()}")


def _print_nodes(store: Store, stall: float, *, as_json: bool) -> int:
    import datetime as dt

    from idsync.store.nodes import Nodes

    nodes = Nodes(store, dt.timedelta(seconds=stall)).all()
    if as_json:
        print(json.dumps([n.to_json() for n in nodes], indent=2))
        return 0
    alive = [n for n in nodes if n.alive]
    print(f"cluster: {len(alive)} node(s) alive")
    for n in nodes:
        doing = ", ".join(n.running) or "idle"
        state = "alive" if n.alive else "gone"
        config = f", config {n.config_digest}" if n.config else ""
        print(f"  {n.name}  {state}  {doing}  (process {n.owner}, version {n.version}{config}, "
              f"seen {n.seen:%Y-%m-%d %H:%M:%S} UTC)")
    deployed = [n for n in alive if n.config]
    if len({n.config_digest for n in deployed}) > 1:
        first = deployed[0]
        for n in deployed[1:]:
            if n.differs(first):
                print(f"  configuration differs: {n.name} and {first.name} in {', '.join(n.differs(first))}")
    return 0


def _resolve_run_id(store: Store, text: str) -> str | None:
    """The run whose id is ``text`` or starts with it (the table shows 8 characters);
    a prefix several runs share is a usage error listing them."""
    from sqlalchemy import select

    from idsync.store.tables import recon_runs

    text = text.strip()
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = (select(recon_runs.c.id, recon_runs.c.mapping, recon_runs.c.state, recon_runs.c.started)
             .where(recon_runs.c.id.like(f"{escaped}%", escape="\\"))
             .order_by(recon_runs.c.started.desc()).limit(11))
    with store.begin() as conn:
        rows = conn.execute(query).all()
    exact = [r.id for r in rows if r.id == text]
    if exact or len(rows) <= 1:
        return exact[0] if exact else (rows[0].id if rows else None)
    shown = "; ".join(f"{r.id} ({r.mapping}, {r.state}, {r.started:%Y-%m-%d %H:%M:%S})" for r in rows[:10])
    more = " and more" if len(rows) > 10 else ""
    raise UsageError(f"run id {text!r} is ambiguous, it matches {shown}{more}: give more characters")


def _print_pending(store: Store) -> None:
    from idsync.sync.retry import pending_counts

    for mapping, count in pending_counts(store).items():
        print(f"{mapping}: {count} object(s) changed in the store did not reach the target: run `idsync sync retry`")


def _print_livesync(store: Store) -> None:
    from idsync.cli.livesync import render_livesync_sources
    from idsync.store.sync_failures import livesync_sources

    render_livesync_sources(livesync_sources(store))


def _run_json(run: dict[str, Any]) -> dict[str, Any]:
    summary = dict(run["summary"] or {})
    started, ended = run["started"], run["ended"]
    return {
        "_id": run["id"], "mapping": run["mapping"], "job": run["job"], "state": run["state"],
        "stage": run["stage"], "dryRun": run["dry_run"], "message": run["message"], "node": run["node"],
        "fire": run["fire"].isoformat() if run["fire"] else None,
        "started": started.isoformat() if started else None, "ended": ended.isoformat() if ended else None,
        "duration": int((ended - started).total_seconds() * 1000) if started and ended else None,
        **{k: v for k, v in summary.items() if k not in ("mapping", "stage")},
    }


def _write_status_file(project: Project, store: Store) -> None:
    from idsync.status_file import update_status_file

    update_status_file(project, store)


def _cmd_validate(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.api import api_problems
    from idsync.config.project import validate_project
    from idsync.errors import ConfigNote, ConfigWarning
    from idsync.resources import check_system

    found = validate_project(project_dir, check_system)
    notes = [p for p in found if isinstance(p, ConfigNote)]
    warnings = [p for p in found if isinstance(p, ConfigWarning) and not isinstance(p, ConfigNote)]
    problems = [p for p in found if not isinstance(p, ConfigWarning)]
    if not problems:
        problems = api_problems(project_dir)
    if args.json:
        print(json.dumps({"project": str(project_dir), "ok": not problems, "problems": [
            {"file": getattr(p, "file", None), "key": getattr(p, "key", None) or None,
             "problem": getattr(p, "problem", str(p))} for p in _each(problems)],
            "warnings": [{"file": w.file, "key": w.key or None, "problem": w.problem} for w in warnings],
            "notes": [{"file": n.file, "key": n.key or None, "note": n.problem} for n in notes]},
            indent=2))
        return os.EX_CONFIG if problems else 0
    # Warnings on stderr: stdout is the verdict (the problems, or "configuration ok").
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in problems:
        print(problem)
    if problems:
        return os.EX_CONFIG
    print(f"{project_dir}: configuration ok")
    return 0


def _each(problems: Sequence[Exception]) -> list[Exception]:
    """Problems one by one: a file's ``ConfigErrors`` holds several."""
    from idsync.errors import ConfigErrors

    out: list[Exception] = []
    for p in problems:
        out.extend(p.errors if isinstance(p, ConfigErrors) else [p])
    return out


def _cmd_test(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.config.project import load_project
    from idsync.connectors.base import SystemTestReport
    from idsync.resources import Resources

    project = load_project(project_dir)
    resources = Resources(project, store=None)  # type: ignore[arg-type]
    try:
        results = resources.test_all()
    finally:
        resources.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            server = f" ({r['server']})" if r.get("server") else ""
            print(f"{r['name']}: {'ok' if r.get('ok') else 'FAILED: ' + str(r.get('error'))}{server}")
            if r.get("warning"):
                print(f"{r['name']}: warning: {r['warning']}")
        if not results:
            print("no systems configured")
    # The first failure decides, with the codes of a run: 77 refused credentials, 78 configuration, 69 unreachable.
    failures = [r for r in results if not r.get("ok")]
    if not failures:
        return 0
    first = failures[0]
    return (first.exit_code if isinstance(first, SystemTestReport) else 0) or os.EX_UNAVAILABLE


def _cmd_mappings(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.config.project import load_project

    project = load_project(project_dir)
    rows = [{"name": m.name, "source": m.source, "target": m.target, "links": m.links, "file": m.file}
            for m in project.mappings]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']}: {r['source']} -> {r['target']}" + (f" (links of {r['links']})" if r["links"] else ""))
    return 0
