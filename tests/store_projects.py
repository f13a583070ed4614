"""Projects whose mappings run between two managed types: a recon and implicit
synchronization against the store alone, no directory needed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The policies of a mapping that creates what is missing and updates the rest.
CREATE_UPDATE = [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "UPDATE"},
                 {"situation": "CONFIRMED", "action": "UPDATE"}]


def store_project(tmp_path: Path, types: Mapping[str, Mapping[str, Any]], mappings: Sequence[Mapping[str, Any]],
                  url: str | None = None) -> Path:
    """``tmp_path/p``: managed.json with ``types`` (name -> its schema's properties, or a
    whole object with ``schema``), sync.json with ``mappings``, a SQLite store unless ``url``."""
    project = tmp_path / "p"
    conf = project / "conf"
    conf.mkdir(parents=True)
    url = url or f"sqlite:///{tmp_path / 's.db'}"
    (conf / "idsync.toml").write_text(f'[store]\nurl = "{url}"\n')
    objects = [{"name": name, **(dict(body) if "schema" in body else {"schema": {"properties": dict(body)}})}
               for name, body in types.items()]
    (conf / "managed.json").write_text(json.dumps({"objects": objects}))
    (conf / "sync.json").write_text(json.dumps({"mappings": list(mappings)}))
    return project
