"""The ``idsync`` commands about jobs: ``run`` (the daemon), ``jobs``, ``run-job``.

``register(subparsers)`` adds them to the parser of ``cli/__init__.py``; each handler
takes ``(args, project_dir)`` and returns the exit code, and raises
``IdsyncError`` for ``cli.main`` to turn into one line and its exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from idsync.cli.arguments import whole_number
from idsync.cli.closing import close_at_end
from idsync.errors import ConfigError, ConfigErrors, ConfigWarning

if TYPE_CHECKING:
    from idsync.config.jobs import JobDef

__all__ = ["register"]

EX_CANCELED = 130
_EXIT = {"SUCCESS": 0, "FAILED": 1, "CANCELED": EX_CANCELED}


def register(subparsers: Any) -> None:
    """Add ``run``, ``jobs`` and ``run-job`` to ``idsync``'s subcommands."""
    r = subparsers.add_parser(
        "run",
        help="the daemon: run the jobs of jobs.d/ on their schedules, in the foreground",
        description="Run the jobs of jobs.d/ on their schedules until SIGTERM or Ctrl-C. "
        "SIGHUP re-reads conf/ and jobs.d/. Logs go to stdout (JSON unless on a terminal).",
    )
    r.set_defaults(handler=_cmd_run)

    j = subparsers.add_parser("jobs", help="every job: schedule, next fire times, last run")
    j.add_argument("--json", action="store_true", help="as JSON")
    j.add_argument("--next", type=whole_number(0, 1000), default=3, metavar="N",
                   help="fire times to show per job (default 3)")
    j.set_defaults(handler=_cmd_jobs)

    rj = subparsers.add_parser("run-job", help="run one job now, with the same lock and records as the daemon")
    rj.add_argument("name", help="the job's name: its file in jobs.d/ without .toml (idsync jobs lists them)")
    rj.add_argument(
        "--dry-run",
        action="store_true",
        help="compute every change of every mapping; write nothing",
    )
    rj.add_argument("--json", action="store_true", help="print the job's outcome as JSON")
    rj.set_defaults(handler=_cmd_run_job)


# -- idsync run ---------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.daemon.service import Daemon
    from idsync.log import configure_logging
    from idsync.settings import load_settings

    settings = load_settings(project_dir)
    # systemd gives stdout to journald; every field of a JSON line stays searchable there.
    configure_logging(
        args.log_format or os.environ.get("IDSYNC_LOG__FORMAT") or settings.log.format,  # type: ignore[arg-type]
        args.log_level or settings.log.level,
        stream=sys.stdout,
    )
    return Daemon(project_dir).run()


# -- idsync jobs ---------------------------------------------------------------------


def _cmd_jobs(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.loaded import not_loaded
    from idsync.cli.store import NoStoreYet, open_existing_store
    from idsync.config.pingidm_schedules import load_all_jobs
    from idsync.config.project import load_project, schedulable_jobs
    from idsync.daemon.history import last_run_of_job
    from idsync.daemon.runner import disabled_systems
    from idsync.store.database import Store, utcnow

    project = load_project(project_dir)
    jobs, problems = load_all_jobs(project.settings.jobs_dir, project.settings.conf_dir,
                                   [m.name for m in project.mappings])
    jobs, unfit = schedulable_jobs(project, jobs)  # as the daemon schedules them
    errors = [p for p in problems if not isinstance(p, ConfigWarning)] + unfit
    warnings = [p for p in problems if isinstance(p, ConfigWarning)]
    try:
        store: Store | None = open_existing_store(project.settings)
    except NoStoreYet:
        store = None  # nothing has run yet: the schedules are still worth showing (and creating no store)
    now = utcnow()
    # Shown as the files say: a running daemon may not have loaded them yet.
    pending = not_loaded(project.settings)
    rows: list[dict[str, Any]] = []
    for name, job in jobs.items():
        fires = job.schedule.next_fires(max(args.next, 0), now) if job.enabled and args.next else []
        rows.append(
            {
                "name": name,
                **job.summary(),
                "nextFires": [f.isoformat() for f in fires],
                "lastRun": last_run_of_job(store, name) if store is not None else None,
                "notLoaded": pending is not None and pending.has(project_dir, job.file),
                "heldBy": disabled_systems(project, job),
            }
        )
    if args.json:
        print(json.dumps({"jobs": rows, "errors": [str(e) for e in errors],
                          "warnings": [str(w) for w in warnings],
                          "daemon": pending.to_json() if pending is not None else None}, indent=2))
    else:
        _render_jobs(rows, project.settings.jobs_dir)
        for e in errors:
            print(f"{e}", file=sys.stderr)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if pending is not None:
            print(f"note: {pending.message()}", file=sys.stderr)
    return os.EX_CONFIG if errors else 0


def _render_jobs(rows: list[dict[str, Any]], jobs_dir: Path) -> None:
    """A table, or one block per job when the table would not fit: job and mapping names are never cut."""
    from rich.markup import escape
    from rich.table import Table

    from idsync.cli.render import console as terminal
    from idsync.cli.render import fits

    console = terminal()
    if not rows:
        console.print(f"no jobs in {jobs_dir}")
        return
    names = [n for r in rows for n in (r["name"], *r["mappings"])]
    table = Table(show_lines=True)
    table.add_column("job", min_width=max(len(n) for n in names))
    for column in ("schedule", "time zone", "next fires", "enabled", "last run"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            f"[bold]{escape(r['name'])}[/bold]" + (f"\n{_NOT_LOADED.strip()}" if r["notLoaded"] else "")
            + f"\n{escape(r['description'])}\n" + "\n".join(r["mappings"]),
            f"{r['schedule']}\n{r['scheduleDescription']}",
            r["timezone"],
            "\n".join(_short(f, r["timezone"]) for f in r["nextFires"]) or "-",
            "yes" if r["enabled"] else "no",
            escape(_last_run_text(r)),
        )
    if fits(console, table):
        console.print(table)
        return
    for r in rows:
        console.print(f"[bold]{escape(r['name'])}[/bold]" + ("" if r["enabled"] else " (disabled)")
                      + (_NOT_LOADED if r["notLoaded"] else ""), soft_wrap=True)
        if r["description"]:
            console.print(f"  {escape(r['description'])}")
        for m in r["mappings"]:
            console.print(f"  mapping:    {m}", soft_wrap=True)
        console.print(f"  schedule:   {r['schedule']} ({r['scheduleDescription']}), time zone {r['timezone']}")
        console.print("  next fires: " + (", ".join(_short(f, r["timezone"]) for f in r["nextFires"]) or "-"))
        console.print("  last run:   " + escape(_last_run_text(r)).replace("\n", "\n              "))


_NOT_LOADED = " (changed: the daemon has not loaded the change yet)"


def _last_run_text(r: dict[str, Any]) -> str:
    last = r["lastRun"]
    text = f"{last['state']} {_short(last['started'], r['timezone'])}" if last else "never"
    if last and last.get("error"):
        text += f"\n{last['error']}"
    for part, files in sorted((r.get("heldBy") or {}).items()):
        text += f"\nleft out: {part}, its system disabled in {', '.join(files)}"
    return text


def _short(iso: str | None, timezone: str) -> str:
    if not iso:
        return "-"
    # Wall-clock time in the job's zone, which has its own column.
    value = dt.datetime.fromisoformat(iso)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


# -- idsync run-job -------------------------------------------------------------------


_LONGEST_NAME = 200  # a file name's 255 bytes, less ``schedule-`` and ``.json``


def _cmd_run_job(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.signals import run_in_foreground
    from idsync.config.jobs import job_name_problem, parse_job
    from idsync.config.pingidm_schedules import parse_schedule, schedule_files, schedule_path
    from idsync.config.project import load_project, project_job_problems
    from idsync.daemon.runner import JobOutcome, run_job
    from idsync.managed.workers import local_splitter
    from idsync.store.database import Store

    project = load_project(project_dir)
    conf_dir = project.settings.conf_dir
    path = project.settings.jobs_dir / f"{args.name}.toml"
    known_mappings = [m.name for m in project.mappings]
    # A job's name names a file of jobs.d/ (or conf/schedule-NAME.json), never a path: a name
    # with a slash (``../../x``) would run a file from elsewhere, a huge one fail the file system.
    named = job_name_problem(args.name) is None and len(args.name) <= _LONGEST_NAME
    if named and path.is_file():
        if schedule_path(conf_dir, args.name).is_file():
            raise ConfigError(str(schedule_path(conf_dir, args.name)), "",
                              f"job {args.name!r} is also defined by {path}; rename or remove one of them")
        job = parse_job(path, known_mappings)
    elif named and schedule_path(conf_dir, args.name).is_file():
        job = parse_schedule(schedule_path(conf_dir, args.name), known_mappings)
    else:
        names = [p.stem for p in project.settings.jobs_dir.glob("*.toml")]
        names += [p.stem[len("schedule-"):] for p in schedule_files(conf_dir)]
        known = ", ".join(sorted(names)) or "none"
        where = str(path) if named else str(project.settings.jobs_dir)
        raise ConfigError(where, "", f"no such job (jobs: {known})")
    # What the daemon would not schedule (a liveSync of a source no mapping reads...) is not run by hand either.
    problems = project_job_problems(project, [job])
    if problems:
        raise ConfigErrors(problems) if len(problems) > 1 else problems[0]
    store = close_at_end(Store.open(project.settings.store_url()))
    cancel = threading.Event()
    result: JobOutcome = run_in_foreground(
        lambda: run_job(project, store, job, trigger="manual", dry_run=True if args.dry_run else None, cancel=cancel,
                        splitter=local_splitter(project, store)),
        cancel,
        store,
        f"job-{job.name}",
    )
    _write_status(project, store, job, result.to_json())
    if args.json:
        print(json.dumps({"job": job.name, **result.to_json()}, indent=2, default=str))
    else:
        dry = " (dry run)" if result.dry_run else ""
        print(f"job {job.name}: {result.state}{dry}" + (f": {result.message}" if result.message else ""))
        for m in result.mappings:
            counts = ", ".join(f"{k} {v}" for k, v in m.counts.items()) or "no changes"
            print(
                f"  {m.mapping}: {m.state} ({counts})"
                + (f"  run {m.run_id}" if m.run_id else "")
                + (f"\n    {m.message}" if m.message and m.state != "SUCCESS" else "")
            )
    return _EXIT.get(result.state, 1)


def _write_status(project: Any, store: Any, job: JobDef, last_run: dict[str, Any]) -> None:
    from idsync.status_file import read_status_file, update_status_file

    jobs = read_status_file(project.settings.path(project.settings.status_file)).get("jobs") or {}
    # What a running daemon wrote (next fire, recent runs) stays; the definition and last run are this one's.
    previous = jobs.get(job.name)
    if not isinstance(previous, dict):
        previous = {"running": False}
    jobs[job.name] = {**previous, **job.summary(), "lastRun": last_run}
    update_status_file(project, store, jobs=jobs)
