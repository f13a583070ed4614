"""Changing a job file from the console: a few keys rewritten in place, checked, then
swapped in atomically.

``jobs.d/NAME.toml`` is edited by hand and carries comments, so it is never
re-serialised: each changed key's value is replaced on its own line, keeping
what precedes it and the comment after it; a key the file lacks is appended.
The new text is parsed as the daemon would parse it (``parse_job``), and the
whole job set (``jobs.d/`` and PingIDM's ``conf/schedule-*.json``) checked with
it, before anything is written: a broken expression, or a name another job
source defines, never reaches the file. Then it is written to a hidden temporary
file in the same directory (not ``*.toml``, so no reload can read it
half-written), flushed, and renamed over the job file.

Remove renames the file aside, to ``NAME.toml.removed``, or ``NAME.toml.removed.1``
(``.2`` ...) when an earlier removal's copy holds that name: no copy is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from idsync.config.jobs import JobDef, job_name_problem, load_jobs, parse_job
from idsync.config.pingidm_schedules import load_schedules, merge_jobs, parse_schedule, schedule_path
from idsync.errors import ConfigError, ConfigErrors

__all__ = ["JobEdit", "create_job", "job_file", "remove_job", "save_job"]

# Values the console sets: a basic string, a boolean, or an integer.
JobEdit = Mapping[str, str | bool | int]

_VALUE = r'("(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|[^\s#]+)'


def job_file(jobs_dir: Path, conf_dir: Path, name: str) -> Path:
    """The file that defines job ``name``: ``jobs.d/NAME.toml`` or PingIDM's ``conf/schedule-NAME.json``."""
    toml = jobs_dir / f"{name}.toml"
    if toml.is_file():
        return toml
    json_file = schedule_path(conf_dir, name)
    if json_file.is_file():
        return json_file
    raise ConfigError(str(toml), "", f"no job named {name!r}")


def _toml_value(value: str | bool | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def edit_toml(text: str, edits: JobEdit) -> str:
    """``text`` with each key of ``edits`` set, comments and the rest of the file kept."""
    lines = text.splitlines(keepends=True)
    for key, value in edits.items():
        pattern = re.compile(rf"^(\s*{re.escape(key)}\s*=\s*){_VALUE}(.*)$", re.DOTALL)
        for i, line in enumerate(lines):
            if line.lstrip().startswith("["):
                break  # keys of a job live at the top, before any table
            match = pattern.match(line)
            if match is not None:
                if match.group(2).startswith(('"""', "'''")):
                    raise ConfigError("", key, "a multi-line value cannot be edited here; edit the file")
                lines[i] = f"{match.group(1)}{_toml_value(value)}{match.group(3)}"
                break
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.insert(_top_end(lines), f"{key} = {_toml_value(value)}\n")
    return "".join(lines)


def _top_end(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if line.lstrip().startswith("["):
            return i
    return len(lines)


_JSON_KEYS = {"timezone": "timeZone", "misfire": "misfirePolicy"}
_JSON_MISFIRE = {"run_once": "fireAndProceed", "skip": "doNothing"}


def edit_json(text: str, edits: JobEdit) -> str:
    """A PingIDM schedule with ``edits`` (the job file's key names) applied; other keys kept.
    A ``simple`` schedule (``repeatInterval``) shows as ``every N s``: given back as it was
    shown, it stays as it is; a cron expression in its place makes it a cron schedule."""
    data = json.loads(text)
    if data.get("type") == "simple" and "schedule" in edits:
        edits = dict(edits)
        expression = str(edits.pop("schedule")).strip()
        if not expression.startswith("every "):
            for key in ("repeatInterval", "repeatCount"):
                data.pop(key, None)
            data["type"], data["schedule"] = "cron", expression
    for key, value in edits.items():
        if key == "misfire":
            value = _JSON_MISFIRE.get(str(value), str(value))
        data[_JSON_KEYS.get(key, key)] = value
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def save_job(path: Path, edits: JobEdit, known_mappings: Collection[str], *, jobs_dir: Path,
             conf_dir: Path) -> JobDef:
    """Apply ``edits`` to the job file at ``path`` if the result is a valid job, and the job
    set of ``jobs_dir`` and ``conf_dir`` with it still loads as it did; the new job."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        new = edit_json(text, edits)
        job = _check(path, new, lambda probe: parse_schedule(probe, known_mappings))
    else:
        new = edit_toml(text, edits)
        job = parse_job(path, known_mappings, text=new)
    _check_job_set(job, jobs_dir, conf_dir, known_mappings)
    _write_atomically(path, new)
    return job


def create_job(jobs_dir: Path, conf_dir: Path, name: str, edits: JobEdit, known_mappings: Collection[str],
               mappings: list[str]) -> JobDef:
    """A new ``jobs.d/NAME.toml``; refused if a job source (``jobs.d/NAME.toml``, PingIDM's
    ``conf/schedule-NAME.json``) has the name already, or the job or the job set with it would
    not load."""
    if problem := job_name_problem(name):
        raise ConfigError(f"{jobs_dir}/{name}.toml", "", problem)
    path = jobs_dir / f"{name}.toml"
    for taken in (path, schedule_path(conf_dir, name)):
        if taken.exists():  # even a file that does not load now: fixed, it would clash
            raise ConfigError(str(path), "", f"a job with this name exists already ({taken}): choose another name")
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in edits.items())
    text += f"mappings = [{', '.join(_toml_value(m) for m in mappings)}]\n"
    job = parse_job(path, known_mappings, text=text)
    _check_job_set(job, jobs_dir, conf_dir, known_mappings)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, text, exclusive=True)
    return job


def _check_job_set(job: JobDef, jobs_dir: Path, conf_dir: Path, known_mappings: Collection[str]) -> None:
    """Refuse ``job`` (its file new or rewritten) if the job set with it has an error it has
    not now: a configuration that validated must still validate once the file is written,
    and a problem another file has already is not this change's to fix."""
    files, _ = load_jobs(jobs_dir, known_mappings)
    schedules, _ = load_schedules(conf_dir, known_mappings)
    before = {str(error) for error in merge_jobs(files, schedules)[1]}
    (schedules if job.file.endswith(".json") else files)[job.name] = job
    added = [error for error in merge_jobs(files, schedules)[1] if str(error) not in before]
    if len(added) == 1:
        raise added[0]
    if added:
        raise ConfigErrors(added)


def _removed_path(path: Path) -> Path:
    """Where Remove keeps ``path``: ``NAME.removed``, or the first free ``NAME.removed.N``."""
    target = path.with_name(path.name + ".removed")
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = path.with_name(f"{path.name}.removed.{n}")
    return target


def remove_job(path: Path) -> Path:
    """Take a job out by renaming its file to ``*.removed`` (kept for an undo by hand); a copy
    an earlier removal kept is never replaced."""
    while True:
        target = _removed_path(path)
        try:
            # A hard link fails if the name was taken meanwhile (a removal at the same time).
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _unwritable(path, exc) from None
        break
    try:
        os.unlink(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise _unwritable(path, exc) from None
    return target


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    """The error of a job file the daemon may not write: the reason, and what allows it."""
    return ConfigError(str(path), "", f"cannot be written by the daemon ({exc.strerror or exc}): it needs write "
                                      f"access to {path.parent} (the systemd unit's ReadWritePaths= and group write "
                                      "on jobs.d/, as docs/install.md sets up)")


def _check(path: Path, text: str, parse: Callable[[Path], JobDef]) -> JobDef:
    """Parse ``text`` as the file at ``path`` would be, through a temporary copy."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / path.name
        probe.write_text(text, encoding="utf-8")
        try:
            job = parse(probe)
        except ConfigError as exc:
            raise ConfigError(str(path), exc.key, exc.problem) from None
    return dataclasses.replace(job, file=str(path))


def _write_atomically(path: Path, text: str, *, exclusive: bool = False) -> None:
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a read-only or foreign directory: nothing was written
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, path.stat().st_mode & 0o7777)
        if exclusive:
            os.link(temp, path)  # fails if the name was taken meanwhile
            os.unlink(temp)
        else:
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
