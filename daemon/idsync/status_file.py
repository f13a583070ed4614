"""The status file: an atomic JSON snapshot of the last run of every mapping,
for monitoring that reads a file rather than the database."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from idsync.config.project import Project
from idsync.store.database import Store, utcnow
from idsync.store.runs import RunStore

__all__ = ["write_status_file"]


def write_status_file(project: Project, store: Store, extra: dict[str, Any] | None = None) -> None:
    path = project.settings.path(project.settings.status_file)
    runs = RunStore(store)
    mappings: dict[str, Any] = {}
    for m in project.mappings:
        last = runs.recent(limit=1, mapping=m.name)
        if last:
            r = last[0]
            s = r["summary"] or {}
            mappings[m.name] = {
                "lastRun": r["id"], "state": r["state"], "dryRun": r["dry_run"],
                "started": r["started"].isoformat(), "ended": r["ended"].isoformat() if r["ended"] else None,
                "situationSummary": {k: v for k, v in (s.get("situationSummary") or {}).items() if v},
                "changes": {k: v for k, v in (s.get("changes") or {}).items() if v},
                "errorCount": s.get("errorCount", 0), "message": r["message"],
            }
    doc = {"updated": utcnow().isoformat(), "store": store.describe(), "mappings": mappings, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, default=str)
    os.replace(tmp, path)
