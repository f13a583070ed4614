"""Reading configuration for the daemon, at start and at every SIGHUP.

The rule is "a broken file never takes down what works": a ``conf/`` that does
not load keeps the previous project as a whole (mappings depend on each other);
a broken job file keeps the previous version of that one job, if there was one,
while every other job file is applied. A job file that is gone is unscheduled.
Every problem is logged as ``config.invalid`` with its ``file: key: problem``; a
mapping's warning (``MappingWarning``) under its own event, once per project loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from idsync.config.jobs import JobDef, ScheduleEnded
from idsync.config.pingidm_schedules import load_all_jobs
from idsync.config.project import Project, load_project, schedulable_jobs
from idsync.config.unused import unused_configuration
from idsync.errors import ConfigError, ConfigErrors, ConfigWarning, IdsyncError
from idsync.resources import check_connectors

__all__ = ["Configuration", "load_configuration"]

log = structlog.get_logger("idsync.config")


@dataclass
class Configuration:
    """What the daemon runs on: the project and its jobs, plus what was wrong when read."""

    project: Project
    jobs: dict[str, JobDef]
    errors: list[str] = field(default_factory=list)


def load_configuration(project_dir: Path, previous: Configuration | None = None) -> Configuration:
    """Read ``conf/`` and ``jobs.d/``; with ``previous``, fall back to it file by file.

    Without ``previous`` (daemon start) a broken ``conf/`` raises ``ConfigError``:
    there is nothing to fall back to.
    """
    errors: list[str] = []
    try:
        project = load_project(project_dir)
        check_connectors(project)  # a provisioner that does not parse must not replace one that does
    except IdsyncError as exc:
        if previous is None:
            raise
        # One event (and one count in the status file and the metrics) per problem.
        for one in exc.errors if isinstance(exc, ConfigErrors) else [exc]:
            _report(one, "kept the previous configuration")
            errors.append(str(one))
        project = previous.project
    jobs, problems = _jobs(project, previous)
    if previous is not None and project is not previous.project:
        orphaned = _orphaned(project, jobs, problems, previous)
        if orphaned is not None:
            # A kept job would fail at every fire: the new conf/ is refused as a whole instead.
            _report(orphaned, "kept the previous configuration")
            errors.append(str(orphaned))
            project = previous.project
            jobs, problems = _jobs(project, previous)
    if previous is None or project is not previous.project:  # not again for a kept project
        _report_warnings(project)
        _report_unused(project)
    for problem in problems:
        if isinstance(problem, ConfigWarning):
            event = "job.schedule_ended" if isinstance(problem, ScheduleEnded) else "job.unsupported"
            log.warning(event, file=problem.file, key=problem.key, problem=problem.problem)
            continue
        kept = _kept(problem, jobs, previous)
        _report(problem, "kept the previous version of this job" if kept else "job not scheduled")
        errors.append(str(problem))
    return Configuration(project, dict(sorted(jobs.items())), errors)


def _jobs(project: Project, previous: Configuration | None) -> tuple[dict[str, JobDef], list[ConfigError]]:
    """The jobs of ``jobs.d`` (and PingIDM's schedules) for ``project``: a broken file's
    job the previous version of it, if there was one; and the problems."""
    known = [m.name for m in project.mappings]
    jobs, problems = load_all_jobs(project.settings.jobs_dir, project.settings.conf_dir, known)
    # A job naming what the project lacks (a liveSync source no mapping reads) would fail at
    # every fire: it is not scheduled, like a file that does not parse.
    jobs, unfit = schedulable_jobs(project, jobs)
    problems += unfit
    for problem in problems:
        if isinstance(problem, ConfigWarning):
            continue
        name = _job_name(problem)
        if previous is not None and name in previous.jobs and name not in jobs:
            jobs[name] = previous.jobs[name]
    return jobs, problems


def _kept(problem: ConfigError, jobs: dict[str, JobDef], previous: Configuration | None) -> bool:
    name = _job_name(problem)
    return previous is not None and name in previous.jobs and jobs.get(name) is previous.jobs[name]


def _orphaned(project: Project, jobs: dict[str, JobDef], problems: list[ConfigError],
              previous: Configuration) -> ConfigError | None:
    """Why the new ``project`` cannot replace the previous one: a job kept from before (its
    file is broken now) that runs a mapping, or liveSyncs a source, the project no longer has."""
    names = {m.name for m in project.mappings}
    sources = {m.source for m in project.mappings}
    for problem in problems:
        if isinstance(problem, ConfigWarning) or not _kept(problem, jobs, previous):
            continue
        job = jobs[_job_name(problem)]
        gone = [m for m in job.mappings if m not in names] + [s for s in job.livesync if s not in sources]
        if gone:
            what = "mapping" if gone[0] in job.mappings else "liveSync source"
            return ConfigError(str(project.settings.conf_dir), "mappings",
                               f"the {what} {gone[0]!r} is gone, and job {job.name!r} (kept as it was, as "
                               f"{problem.file} does not load) still runs it; change the job, then reload")
    return None


def _report_warnings(project: Project) -> None:
    """Each mapping's warning (``idsync validate`` prints the same), under its own event."""
    for mapping in project.mappings:
        for warning in mapping.warnings:
            log.warning(warning.event, file=warning.file, key=warning.key, problem=warning.problem)


def _report_unused(project: Project) -> None:
    """One line for what the project holds and idsync does not act on: ``idsync validate``
    says it key by key, the daemon's log only that it is there."""
    unused = unused_configuration(project.settings.conf_dir)
    if unused:
        log.warning("config.not_used", count=len(unused),
                    problem="PingIDM files or keys idsync does not act on; `idsync validate` names each and why")


def _job_name(problem: ConfigError) -> str:
    name = Path(problem.file).name
    if name.startswith("schedule-") and name.endswith(".json"):
        return name[len("schedule-"): -len(".json")]
    return name[: -len(".toml")] if name.endswith(".toml") else name


def _report(exc: IdsyncError, consequence: str) -> None:
    if isinstance(exc, ConfigError):
        log.error(
            "config.invalid",
            error=str(exc),
            file=exc.file,
            key=exc.key,
            problem=exc.problem,
            consequence=consequence,
        )
    else:
        log.error("config.invalid", error=str(exc), consequence=consequence)
