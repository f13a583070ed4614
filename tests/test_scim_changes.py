"""liveSync of SCIM users (``connectors/scim/changes.py``) against the scim2-server
provider: the first run reconciles in full, later runs read only the users whose
``meta.lastModified`` moved, deletes are left to the full recon and said so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.livesync import LiveSyncResult, run_livesync
from scim_sample import sample_project, scim_env
from scim_server import ScimServer, running
from sync_tokens import tamper

SOURCE = "system/scim/account"
FORWARD = "systemScimAccount_managedUser"


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


@pytest.fixture
def project(tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in scim_env(server).items():
        monkeypatch.setenv(key, value)
    return sample_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}")


def _live(project: Path) -> LiveSyncResult:
    loaded = load_project(project)
    return run_livesync(loaded, Store.open(loaded.settings.store_url()), SOURCE)


def _managed(project: Path) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in resource.pages(QuerySpec()) for u in page}


def _user(server: ScimServer, name: str) -> dict[str, Any]:
    return server.add_user(name, name={"givenName": name.title(), "familyName": "Doe"},
                           emails=[{"value": f"{name}@example.com", "primary": True}], active=True)


def test_only_changed_users_are_read_and_applied(project: Path, server: ScimServer) -> None:
    """After the first run (a full recon) and its catch-up, a run reads nothing; a user changed by another
    writer and a new one are applied; a deleted one is not seen, and the run says deletes
    are left to the next full recon."""
    ann = _user(server, "ann")
    gone = _user(server, "bob")
    first = _live(project)
    assert first.state == "SUCCESS" and first.full_recon, first.message
    assert {"ann", "bob"} <= set(_managed(project))
    time.sleep(1.1)  # past the token, which is whole seconds of the provider's clock
    # The first token is a second back: what changed within it is read once more, and is unchanged.
    catch_up = _live(project)
    assert catch_up.state == "SUCCESS" and all(set(r["counts"]) <= {"unchanged"} for r in catch_up.runs)
    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.changes == 0 and idle.method == "meta.lastModified", idle.to_json()

    server.change("Users", ann["id"], "name.familyName", "Changed")
    _user(server, "cyd")
    with server.client() as c:
        c.delete(f"Users/{gone['id']}").raise_for_status()
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.changes == 2 and "left to the next full recon" in (done.note or "")
    assert done.runs[0]["mapping"] == FORWARD and done.runs[0]["counts"] == {"created": 1, "updated": 1}
    users = _managed(project)
    assert users["ann"]["sn"] == "Changed" and "cyd" in users and "bob" in users
    assert _live(project).changes == 0


def test_a_token_the_connector_did_not_make_is_answered_by_a_full_recon(project: Path, server: ScimServer) -> None:
    """A stored token whose stamp is not a dateTime (it would go into the filter) expires."""
    _user(server, "ann")
    assert _live(project).state == "SUCCESS"
    tamper(project, SOURCE, since='2026-01-01T00:00:00Z" or userName pr or "')
    done = _live(project)
    assert done.state == "SUCCESS" and done.full_recon and "not one this connector makes" in done.full_recon
