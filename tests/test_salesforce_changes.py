"""liveSync of Salesforce users (``connectors/salesforce/changes.py``) against the local
stand-in: the first run reconciles in full, later runs read only the users whose
``SystemModstamp`` moved, and a token the connector did not make is expired."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_salesforce import FakeSalesforce
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.livesync import LiveSyncResult, run_livesync
from salesforce_sample import FORWARD, running_org, sample_project, sf_env
from sync_tokens import tamper

SOURCE = "system/salesforce/User"


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    yield from running_org(tmp_path)


@pytest.fixture
def project(tmp_path: Path, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in sf_env(org).items():
        monkeypatch.setenv(key, value)
    return sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")


def _live(project: Path) -> LiveSyncResult:
    loaded = load_project(project)
    return run_livesync(loaded, Store.open(loaded.settings.store_url()), SOURCE)


def _managed(project: Path) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in resource.pages(QuerySpec()) for u in page}


def _user(org: FakeSalesforce, name: str) -> str:
    return org.add_user(Username=f"{name}@example.com", FirstName=name.title(), LastName="Doe",
                        Email=f"{name}@example.com", Alias=name[:8])


def test_only_changed_users_are_read_and_applied(project: Path, org: FakeSalesforce) -> None:
    """After the first run (a full recon), a run reads nothing; a user changed in Salesforce
    and a new one are applied; the next run reads neither again, though the stand-in's
    stamps are equal to the millisecond for users changed together."""
    first_id = _user(org, "ann")
    _user(org, "bob")
    first = _live(project)
    assert first.state == "SUCCESS" and first.full_recon, first.message
    assert {"ann@example.com", "bob@example.com"} <= set(_managed(project))
    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.changes == 0 and idle.method == "SystemModstamp"

    org.change_user(first_id, Phone="555-0100")
    _user(org, "cyd")
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.changes == 2
    assert done.runs[0]["mapping"] == FORWARD and done.runs[0]["counts"] == {"created": 1, "updated": 1}
    assert _live(project).changes == 0


def test_a_token_the_connector_did_not_make_is_answered_by_a_full_recon(project: Path, org: FakeSalesforce) -> None:
    """A stored token that is not a SystemModstamp token (or holds something that is not
    one of Salesforce's stamps, which would go into the query) expires: full recon."""
    _user(org, "ann")
    assert _live(project).state == "SUCCESS"
    tamper(project, SOURCE, since="2026-01-01T00:00:00Z OR Id != null")
    done = _live(project)
    assert done.state == "SUCCESS" and done.full_recon and "not one this connector makes" in done.full_recon
