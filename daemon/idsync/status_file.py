"""The status file: an atomic JSON snapshot for monitoring that reads a file rather
than the database.

Written by ``idsync recon`` after its run and by the daemon after every state
change (start, reload, a job starting or ending, stop). It is replaced with
``os.replace`` so a reader never sees half a file. Shape::

    {
      "version": "0.1.0", "updated": "...", "store": "sqlite:///...",
      "daemon": {"pid": 123, "started": "...", "state": "running", "version": "0.1.0",
                 "configErrors": ["file: key: problem"], "configLoaded": "...", "watchConfig": true,
                 "configFiles": {"jobs.d/NAME.toml": "MTIME_NS:SIZE:INODE", ...}},
      "jobs": {
        "NAME": {"description": "...", "schedule": "0 */15 * * * ?",
                 "scheduleDescription": "Every 15 minutes",
                 "timezone": "UTC", "enabled": true, "mappings": ["..."], "nextFire": "...",
                 "running": false, "runningSince": null,
                 "lastRun": {"id": "...", "state": "SUCCESS", "started": "...", "ended": "...",
                             "counts": {"created": 3}, "error": null, "runs": [...]},
                 "recentRuns": [{"id": "...", "mapping": "...", "state": "SUCCESS", ...}]}
      },
      "mappings": {"NAME": {"lastRun": "...", "state": "...", ..., "pendingPushes": 2}},
      "liveSync": {"system/ldap/account": {"method": "syncrepl", "hasToken": true, "lastRun": "...",
                                           "lastState": "SUCCESS", "runs": 1200, "changes": 31, ...}}
    }

``pendingPushes`` (only when there are any) counts the managed objects whose
implicit sync through that mapping failed and waits for ``idsync sync retry``.
Only names, times, states, counts and error messages go in; error messages are
built from names, never from configuration values, so no secret can land here.

The file is a report, not part of a run: ``update_status_file`` is what commands
and the daemon call, and a file that cannot be written (read-only directory, a
directory in its place, the store gone at exit) is a ``status_file.failed``
warning, never a changed exit code. When the full document cannot be built (the
store is unavailable), the daemon's own state is still written over the previous
document, so a stopped daemon is not left described as running.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from idsync import __version__
from idsync.errors import IdsyncError, internal_message
from idsync.store.database import Store, utcnow
from idsync.store.runs import RunStore
from idsync.store.sync_failures import livesync_sources
from idsync.sync.retry import pending_counts

if TYPE_CHECKING:
    from idsync.config.project import Project

__all__ = ["read_status_file", "update_status_file", "write_status_file"]

log = structlog.get_logger("idsync.status_file")


def write_status_file(
    project: Project,
    store: Store,
    extra: dict[str, Any] | None = None,
    *,
    jobs: Mapping[str, dict[str, Any]] | None = None,
    daemon: dict[str, Any] | None = None,
) -> Path:
    """Replace the status file; ``jobs`` and ``daemon`` come from the running daemon, if any."""
    path = project.settings.path(project.settings.status_file)
    doc: dict[str, Any] = {
        "version": __version__,
        "updated": utcnow().isoformat(),
        "store": store.describe(),
        "daemon": daemon,
        "jobs": dict(jobs) if jobs is not None else _previous_jobs(path),
        "mappings": _mappings(project, store),
        "liveSync": {str(s["source"]): s for s in livesync_sources(store)},
        **(extra or {}),
    }
    if daemon is None:
        # A manual ``idsync recon`` must not erase what a running daemon last wrote.
        doc["daemon"] = _previous(path).get("daemon")
    _replace(path, doc)
    return path


def update_status_file(
    project: Project,
    store: Store,
    *,
    jobs: Mapping[str, dict[str, Any]] | None = None,
    daemon: dict[str, Any] | None = None,
) -> Path | None:
    """``write_status_file`` for callers whose own outcome must not depend on it.

    A failure is logged (``status_file.failed``, a warning) and ``None`` returned. With
    ``daemon``, a failure to build the whole document falls back to writing the daemon's
    state over the previous document; if even that fails, the event says which state the
    file could not record.
    """
    path = project.settings.path(project.settings.status_file)
    try:
        return write_status_file(project, store, jobs=jobs, daemon=daemon)
    except Exception as exc:  # noqa: BLE001 - the file is a report: never fail the caller
        first = exc
    if daemon is not None:
        try:
            _replace(path, {**_previous(path), "updated": utcnow().isoformat(), "daemon": daemon})
        except Exception as exc:  # noqa: BLE001 - logged below with the first failure
            _log_failure(path, first, daemon_state=daemon.get("state"), fallback=_reason(exc))
            return None
        _log_failure(path, first, daemon_state=daemon.get("state"), fallback="daemon state written")
        return path
    _log_failure(path, first)
    return None


def _log_failure(path: Path, exc: BaseException, **fields: Any) -> None:
    expected = isinstance(exc, (OSError, IdsyncError))
    # Expected failures are one line; anything else keeps its traceback for a bug report.
    log.warning("status_file.failed", path=str(path), error=_reason(exc), exc_info=not expected, **fields)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) if isinstance(exc, IdsyncError) else internal_message(exc)  # a driver's first line alone


def read_status_file(path: Path) -> dict[str, Any]:
    return _previous(path)


def _mappings(project: Project, store: Store) -> dict[str, Any]:
    runs = RunStore(store)
    out: dict[str, Any] = {}
    for m in project.mappings:
        last = runs.recent(limit=1, mapping=m.name)
        if not last:
            continue
        r = last[0]
        s = r["summary"] or {}
        out[m.name] = {
            "lastRun": r["id"],
            "job": r["job"],
            "state": r["state"],
            "dryRun": r["dry_run"],
            "node": r["node"],
            "started": r["started"].isoformat(),
            "ended": r["ended"].isoformat() if r["ended"] else None,
            "situationSummary": {k: v for k, v in (s.get("situationSummary") or {}).items() if v},
            "changes": {k: v for k, v in (s.get("changes") or {}).items() if v},
            "errorCount": s.get("errorCount", 0),
            "message": r["message"],
        }
    pushed = [m.name for m in project.mappings if m.name in out and m.source.startswith("managed/")]
    for name, count in pending_counts(store, pushed).items():
        out[name]["pendingPushes"] = count  # objects whose implicit sync failed: `idsync sync retry`
    return out


def _previous(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _previous_jobs(path: Path) -> dict[str, Any]:
    jobs = _previous(path).get("jobs")
    return jobs if isinstance(jobs, dict) else {}


def _replace(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; monitoring agents read it under another user.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
