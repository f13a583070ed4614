"""A recon test bench: the repository's ``conf/`` pointed at the test slapd (a
subtree of its own) and a fresh store, with helpers to change the directory
and to run the mapping."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dbs import store_url
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync_dev.slapd import Slapd
from projects import MAPPING, make_project, person

_projects = itertools.count(1)

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


class Env:
    def __init__(self, slapd: Slapd, subtree: str, tmp_path: Path, url: str) -> None:
        self.slapd, self.subtree, self.tmp_path, self.url = slapd, subtree, tmp_path, url
        self.reconfigure()

    def reconfigure(self, page_size: int = 1000, **mapping: Any) -> None:
        """A new project whose first mapping has the keys of ``mapping`` changed (``None`` removes one)."""
        if hasattr(self, "store"):
            self.store.close()
        path = self.tmp_path / f"p{next(_projects)}"
        self.project = load_project(make_project(path, self.slapd, self.subtree, self.url, mapping, page_size))
        self.store = Store.open(self.url)

    def change_conf(self, file: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit a JSON file of the project's ``conf/`` in place and load the project again."""
        path = self.project.settings.conf_dir / file
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))
        self.project = load_project(self.project.settings.conf_dir.parent)

    def add(self, *uids: str, **attrs: str) -> None:
        self.slapd.add_ldif("".join(person(u, self.subtree, **attrs) for u in uids))

    def modify(self, uid: str, attr: str, value: str) -> None:
        self.slapd.add_ldif(f"dn: uid={uid},{self.subtree}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n")

    def remove(self, *uids: str) -> None:
        self.slapd.add_ldif("".join(f"dn: uid={u},{self.subtree}\nchangetype: delete\n\n" for u in uids))

    def recon(self, **options: Any) -> ReconResult:
        return run_recon(self.project, self.store, MAPPING, ReconOptions(**options))

    def users(self) -> dict[str, dict[str, Any]]:
        res = Resources(self.project, self.store).open("managed/user")
        return {o["userName"]: o for page in res.pages(QuerySpec()) for o in page}

    def create_user(self, **values: Any) -> dict[str, Any]:
        """A managed user made directly in the store (no link), as data stored before
        managed.json's scripts and policies were: they do not run."""
        schema = replace(self.project.managed.get("user"), model=None)
        return ManagedResource(self.store, schema).create(values)


@contextmanager
def env_on(store: str, slapd: Slapd, subtree: str, tmp_path: Path) -> Iterator[Env]:
    """An ``Env`` on a fresh store of kind ``store`` (one of ``STORES``), closed afterwards."""
    env = Env(slapd, subtree, tmp_path, store_url(store, tmp_path))
    try:
        yield env
    finally:
        env.store.close()
