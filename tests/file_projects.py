"""What the tests of the file connectors (CSV, XML) share: a throwaway project on a
fresh store with the repository's managed types, a recon run in process, and what a
run changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dbs import store_url
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon

ROOT = Path(__file__).resolve().parent.parent

# Every situation with the action a two-way file mapping wants.
POLICIES = [{"situation": s, "action": a} for s, a in (
    ("CONFIRMED", "UPDATE"), ("FOUND", "UPDATE"), ("ABSENT", "CREATE"), ("AMBIGUOUS", "EXCEPTION"),
    ("MISSING", "CREATE"), ("SOURCE_MISSING", "DELETE"), ("UNQUALIFIED", "DELETE"), ("UNASSIGNED", "DELETE"),
    ("LINK_ONLY", "EXCEPTION"), ("SOURCE_IGNORED", "IGNORE"), ("TARGET_IGNORED", "IGNORE"), ("ALL_GONE", "IGNORE"))]


def file_project(tmp_path: Path, mappings: list[dict[str, Any]], store: str = "sqlite") -> Path:
    """``tmp_path/project`` with ``conf/`` (these mappings, the repository's managed.json)
    and an empty ``data/`` for the files."""
    project = tmp_path / "project"
    (project / "conf").mkdir(parents=True)
    (project / "data").mkdir()
    shutil.copy(ROOT / "conf" / "managed.json", project / "conf" / "managed.json")
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": mappings}))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{store_url(store, tmp_path)}"\n[log]\nformat = "json"\n'
        'level = "warning"\n')
    return project


def recon(project: Path, mapping: str, options: ReconOptions | None = None) -> ReconResult:
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        return run_recon(loaded, store, mapping, options or ReconOptions())
    finally:
        store.close()


def changed(result: ReconResult) -> dict[str, int]:
    """What a successful run changed: its ``changes`` without the zeros and the unchanged."""
    assert result.state == "SUCCESS", result.message
    return {k: v for k, v in result.summary["changes"].items() if v and k != "unchanged"}
