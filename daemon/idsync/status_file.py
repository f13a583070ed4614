"""The status file: an atomic JSON snapshot for monitoring that reads a file rather
than the database.

Written by ``idsync recon`` after its run and by the daemon after every state
change (start, reload, a job starting or ending, stop). It is replaced with
``os.replace`` so a reader never sees half a file. Shape::

    {
      "version": "0.1.0", "updated": "...", "store": "sqlite:///...",
      "daemon": {"pid": 123, "started": "...", "state": "running", "version": "0.1.0",
                 "configErrors": ["file: key: problem"]},
      "jobs": {
        "NAME": {"description": "...", "schedule": "0 */15 * * * ?",
                 "scheduleDescription": "Every 15 minutes",
                 "timezone": "UTC", "enabled": true, "mappings": ["..."], "nextFire": "...",
                 "running": false, "runningSince": null,
                 "lastRun": {"id": "...", "state": "SUCCESS", "started": "...", "ended": "...",
                             "counts": {"created": 3}, "error": null, "runs": [...]},
                 "recentRuns": [{"id": "...", "mapping": "...", "state": "SUCCESS", ...}]}
      },
      "mappings": {"NAME": {"lastRun": "...", "state": "...", ..., "pendingPushes": 2}}
    }

``pendingPushes`` (only when there are any) counts the managed objects whose
implicit sync through that mapping failed and waits for ``idsync sync retry``.
Only names, times, states, counts and error messages go in; error messages are
built from names, never from configuration values, so no secret can land here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idsync import __version__
from idsync.store.database import Store, utcnow
from idsync.store.runs import RunStore
from idsync.sync.retry import pending_counts

if TYPE_CHECKING:
    from idsync.config.project import Project

__all__ = ["read_status_file", "write_status_file"]


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
        **(extra or {}),
    }
    if daemon is None:
        # A manual ``idsync recon`` must not erase what a running daemon last wrote.
        doc["daemon"] = _previous(path).get("daemon")
    _replace(path, doc)
    return path


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
