"""Projects whose mappings run between two managed types: a recon and implicit
synchronization against the store alone, no directory needed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from idsync.config.project import load_project
from idsync.managed import ManagedObjects
from idsync.managed.router import scripting
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.validation import PolicyFailed

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


@contextlib.contextmanager
def managed_objects(project: Path) -> Iterator[Callable[[str], ManagedObjects]]:
    """The project's managed types, scripts bound, as the API writes them (no implicit sync)."""
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    try:
        with scripting(loaded, store, resources=resources):
            yield lambda name: ManagedObjects(loaded, store, resources, name, sync=False)
    finally:
        store.close()


def failed_policies(exc: PolicyFailed) -> dict[str, list[str]]:
    """Property -> the requirements ``exc`` says it failed."""
    return {f["property"]: [r["policyRequirement"] for r in f["policyRequirements"]] for f in exc.failures}
