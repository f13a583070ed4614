"""liveSync (``idsync livesync``, ``sync/livesync.py``, ``connectors/ldap/changes.py``)
against a real slapd, with and without a sync provider, on the two-way LDAP sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.store.tokens import SyncTokens
from idsync.sync.livesync import LiveSyncOptions, LiveSyncResult, run_livesync
from idsync_dev.slapd import Slapd

from samples import FORWARD, sample_project

SOURCE = "system/ldap/account"


@pytest.fixture(scope="module")
def plain_slapd() -> Iterator[Slapd]:
    """A slapd without a sync provider: liveSync polls ``entryCSN`` there."""
    if not Slapd.available():
        pytest.skip("slapd is not installed (Debian packages slapd and ldap-utils)")
    with Slapd(tls=False, syncprov=False) as server:
        yield server


def _project(tmp_path: Path, slapd: Slapd, subtree: str, store_url: str | None = None) -> Path:
    """The sample, its "10%" maxDeletes made a count: a handful of test users is not a large directory."""
    project = sample_project(tmp_path, slapd, subtree, store_url or f"sqlite:///{tmp_path / 's.db'}")
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": 5'))
    return project


def _live(project: Path, **options: Any) -> LiveSyncResult:
    loaded = load_project(project)
    return run_livesync(loaded, Store.open(loaded.settings.store_url()), SOURCE, LiveSyncOptions(**options))


def _users(project: Path) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in resource.pages(QuerySpec()) for u in page}


def _person(uid: str, subtree: str, mail: str | None = None) -> str:
    return (f"dn: uid={uid},{subtree}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
            f"sn: {uid.title()}\ngivenName: {uid}\nmail: {mail or uid + '@example.com'}\n\n")


def _changes(slapd: Slapd, subtree: str) -> None:
    """A modify, an add, a delete and a rename: what every reader must report."""
    slapd.add_ldif(
        f"dn: uid=bjensen,{subtree}\nchangetype: modify\nreplace: mail\nmail: barbara@example.org\n\n"
        + _person("newbie", subtree).replace(f"dn: uid=newbie,{subtree}\n",
                                              f"dn: uid=newbie,{subtree}\nchangetype: add\n")
        + f"dn: uid=scarter,{subtree}\nchangetype: delete\n\n")


def _state(project: Path) -> Any:
    loaded = load_project(project)
    return SyncTokens(Store.open(loaded.settings.store_url())).get(SOURCE)


def test_first_run_reconciles_in_full_then_applies_only_changes(tmp_path: Path, slapd: Slapd,
                                                                 ldap_subtree: str) -> None:
    """Without a token, liveSync reconciles in full and stores the position taken before
    that recon; the next run reads nothing; after a modify, an add and a delete in LDAP,
    the next run applies exactly those through the mapping (update, create, delete)."""
    project = _project(tmp_path, slapd, ldap_subtree)
    first = _live(project)
    assert first.state == "SUCCESS", first.message
    assert first.full_recon and "no token yet" in first.full_recon
    assert set(_users(project)) == {"bjensen", "scarter"}
    assert _state(project).token is not None

    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.full_recon is None and idle.method == "syncrepl"
    assert idle.changes == 0 and idle.runs == []

    _changes(slapd, ldap_subtree)
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.changes == 3
    users = _users(project)
    assert set(users) == {"bjensen", "newbie"}
    assert users["bjensen"]["mail"] == "barbara@example.org"
    (run,) = done.runs
    assert run["mapping"] == FORWARD and run["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    record = RunStore(Store.open(load_project(project).settings.store_url())).get(run["id"])
    assert record is not None and record["job"] == "liveSync" and record["state"] == "SUCCESS"
    assert _live(project).changes == 0
