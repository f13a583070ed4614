"""liveSync of a SCIM source (``connectors/scim/changes.py``) against a real SCIM 2.0
provider (scim2-server), on the SCIM sample: ``meta.lastModified`` windows, sorted and
not, equal stamps at the boundary, a token the connector did not make, a provider
that cannot filter, dry run."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.livesync import LiveSyncResult
from livesync_env import live, live_after_expiry, managed_users, set_token, stored_token
from scim_sample import USERS_IN, sample_project, scim_env
from scim_server import ScimServer, running

from samples import idsync

SOURCE = "system/scim/account"


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


def _project(tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch, **properties: Any) -> Path:
    for key, value in scim_env(server).items():
        monkeypatch.setenv(key, value)
    return sample_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}", **properties)


def _live(project: Path, **options: Any) -> LiveSyncResult:
    return live(project, SOURCE, **options)


def _users(project: Path) -> dict[str, dict[str, Any]]:
    return managed_users(project)


def _token(project: Path) -> str | None:
    return stored_token(project, SOURCE)


def _seed(server: ScimServer) -> dict[str, dict[str, Any]]:
    return {name: server.add_user(name, name={"givenName": name.title(), "familyName": "Test"},
                                  emails=[{"value": f"{name}@example.com", "type": "work"}])
            for name in ("bjensen", "jdoe", "kcarter")}


def test_first_token_then_modify_and_add_and_deletes_left_to_a_recon(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a token liveSync reconciles in full and stores the provider's newest
    meta.lastModified; a run without changes applies nothing (and re-reads only the
    overlap); a modify and an add at the provider are applied as an update and a create;
    a delete is not seen (the run's note says deletes are left to the next full recon)."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    first = _live(project)
    assert first.state == "SUCCESS", first.message
    assert first.full_recon and "no token yet" in first.full_recon
    assert set(_users(project)) == {"bjensen", "jdoe", "kcarter"}
    token = json.loads(_token(project) or "{}")
    assert token["kind"] == "lastModified"

    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.full_recon is None and idle.method == "lastModified"
    assert idle.runs == [] and idle.changes == 0

    server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
    server.add_user("newbie", name={"givenName": "New", "familyName": "Bie"})
    with server.client() as c:
        c.delete(f"Users/{users['kcarter']['id']}").raise_for_status()
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert "deletes are left to the next full recon" in (done.note or "")
    (run,) = done.runs
    assert run["mapping"] == USERS_IN and run["counts"] == {"created": 1, "updated": 1}
    found = _users(project)
    assert set(found) == {"bjensen", "jdoe", "kcarter", "newbie"}
    assert found["jdoe"]["givenName"] == "Johnny"
    record = RunStore(Store.open(load_project(project).settings.store_url())).get(run["id"])
    assert record is not None and record["job"] == "liveSync"
    assert "deletes are left to the next full recon" in (record.get("message") or "")
    again = _live(project)
    assert again.state == "SUCCESS" and again.runs == [] and again.changes == 0


def test_equal_stamps_across_pages_and_at_the_boundary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider whose clock stands still (every write stamped alike): a run of equal
    stamps longer than a page is read whole, changes made after the last read with the
    very same stamp are still applied (told apart by meta.version), and a run without
    changes applies nothing."""
    instant = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for server in running(clock=lambda: instant):
        users = _seed(server)
        for i in range(5):
            server.add_user(f"user{i}")
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project, page_size=2).state == "SUCCESS"
        assert len(_users(project)) == 8
        assert _live(project, page_size=2).changes == 0
        server.change("Users", users["bjensen"]["id"], "name.givenName", "Babs")
        server.add_user("late", name={"givenName": "Late", "familyName": "Comer"})
        done = _live(project, page_size=2)
        assert done.state == "SUCCESS", done.message
        assert done.runs[0]["counts"] == {"created": 1, "updated": 1}
        assert _users(project)["bjensen"]["givenName"] == "Babs"
        assert _live(project, page_size=2).changes == 0
        filters = [q for _, _, q in server.requests if "meta.lastModified+eq" in q]
        assert filters, "the run of equal stamps was read by index"


def test_stamps_finer_than_a_filter_can_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider whose stamps are finer than a microsecond answers ``eq`` with nothing for
    a run of equal-looking stamps longer than a page: the rest of the window is read by
    index, and every change of the run is applied."""
    instant = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for server in running(clock=lambda: instant):
        users = _seed(server)
        extra = [server.add_user(f"user{i}") for i in range(3)]
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project).state == "SUCCESS"
        for user in [users["jdoe"], users["kcarter"], *extra]:
            server.change("Users", user["id"], "name.familyName", "Changed")
        server.edit_matching.append((lambda m, p, q: "meta.lastModified+eq" in q,
                                     lambda body: {**body, "totalResults": 0, "Resources": []}))
        done = _live(project, page_size=2)
        assert done.state == "SUCCESS", done.message
        assert done.runs[0]["counts"] == {"updated": 5}
        assert any("meta.lastModified+eq" in q for _, _, q in server.requests)


def test_change_made_while_the_read_runs_is_not_missed(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects already read modified before the next page is asked for move to the end of
    the sorted list; no unread object is skipped by that, and the modified ones are applied."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    assert _live(project).state == "SUCCESS"
    for name in ("bjensen", "jdoe", "kcarter"):
        server.change("Users", users[name]["id"], "name.familyName", "Changed")
    pages: list[str] = []

    def second_page(method: str, path: str, query: str) -> bool:
        if method == "GET" and "sortOrder=ascending" in query:
            pages.append(query)
        return len(pages) == 2

    server.before_matching.append(
        (second_page, lambda: server.change("Users", users["bjensen"]["id"], "name.familyName", "Twice")))
    done = _live(project, page_size=1)
    assert done.state == "SUCCESS", done.message
    found = _users(project)
    assert [found[n]["sn"] for n in ("bjensen", "jdoe", "kcarter")] == ["Twice", "Changed", "Changed"]
    assert len(pages) >= 2 and not server.before_matching


@pytest.mark.parametrize("sort", [True, False])
def test_a_resource_answered_without_an_id_fails_as_an_entry_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sort: bool) -> None:
    """A changed resource the provider answers without an ``id`` is no longer dropped: it
    fails as an entry of the mapping's run (counted failed, its error naming what the
    provider told of it), is logged ``livesync.no_id`` at warning, and the run applies the
    other changes and moves its token on; the next run, within the overlap, does not fail
    it again. As in a full recon, which fails such a resource too."""
    for server in running(sort=sort):
        _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project).state == "SUCCESS"
        before = _token(project)
        server.add_user("ghost", name={"givenName": "Gh", "familyName": "Ost"}, externalId="ext-ghost")
        server.add_user("newbie", name={"givenName": "New", "familyName": "Bie"})

        def anonymous(body: dict[str, Any]) -> dict[str, Any]:
            for resource in body.get("Resources") or []:
                if resource.get("userName") == "ghost":
                    del resource["id"]
            return body

        server.edit_matching.append((lambda m, p, q: m == "GET" and p.endswith("/Users") and "meta.lastModified" in q,
                                     anonymous))
        with structlog.testing.capture_logs() as logs:
            done = _live(project)
        assert done.state == "SUCCESS", done.message
        assert done.failed == 1 and done.changes == 2
        (run,) = done.runs
        assert run["counts"] == {"created": 1, "failed": 1} and run["errors"] == 1
        record = RunStore(Store.open(load_project(project).settings.store_url())).get(run["id"])
        assert record is not None
        (error,) = record["summary"]["errors"]
        assert error["message"].startswith("a source object has no _id (userName 'ghost'"), error
        assert "ghost" not in _users(project) and "newbie" in _users(project)
        (told,) = [e for e in logs if e["event"] == "livesync.no_id"]
        assert told["log_level"] == "warning" and "userName 'ghost'" in told["about"]
        assert _token(project) != before
        again = _live(project)
        assert again.state == "SUCCESS" and again.failed == 0 and again.runs == []


def test_provider_without_sorting_is_read_by_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that does not announce sorting: the window is read by index, the first
    token is the provider's clock (its Date header), and changes are applied."""
    for server in running(sort=False):
        users = _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project).state == "SUCCESS"
        server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
        done = _live(project, page_size=2)
        assert done.state == "SUCCESS", done.message
        assert _users(project)["jdoe"]["givenName"] == "Johnny"
        assert not any("sortBy" in q for _, _, q in server.requests)
        assert _live(project).runs == []


def test_token_not_made_by_the_connector_is_answered_by_a_full_recon(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored token this connector does not read (another kind, a garbled one) is never
    taken for a position: the run logs livesync.token_expired at warning, reconciles in
    full (applying what changed meanwhile) and stores a fresh token."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    assert _live(project).state == "SUCCESS"
    set_token(project, SOURCE, json.dumps({"v": 1, "kind": "syncrepl", "cookies": {}}))
    server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
    live_after_expiry(project, SOURCE, "not one this connector makes")
    assert _users(project)["jdoe"]["givenName"] == "Johnny"
    assert json.loads(_token(project) or "{}")["kind"] == "lastModified"
    assert _live(project).full_recon is None


def test_token_ahead_of_the_providers_clock_is_answered_by_a_full_recon(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token stamped after the provider's own clock (a provider restored from a backup:
    its changes since are stamped before the token, and a filter from the token would
    never show them) is expired: a full recon applies what changed, and a fresh token
    the next run reads from is stored."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    assert _live(project).state == "SUCCESS"
    token = json.loads(_token(project) or "{}")
    set_token(project, SOURCE, json.dumps({**token, "since": "2099-01-01T00:00:00.000000Z"}))
    server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
    live_after_expiry(project, SOURCE, "ahead of the provider's clock")
    assert _users(project)["jdoe"]["givenName"] == "Johnny"
    assert "2099" not in (_token(project) or "")
    assert _live(project).full_recon is None


def test_provider_that_cannot_filter_fails_clearly_before_any_recon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider whose ServiceProviderConfig does not announce filtering cannot say what
    changed: the first liveSync fails naming that limitation, with no recon run and no token."""
    for server in running(filter=False):
        _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        done = _live(project)
        assert done.state == "FAILED"
        assert "filters on meta.lastModified" in (done.message or "")
        assert "does not announce filtering" in (done.message or "")
        assert done.runs == [] and _token(project) is None


def test_dry_run_writes_nothing_and_keeps_the_token(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run assesses the changes (its run says what it would do) but writes no
    object and no token: the next real run applies the same changes."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    assert _live(project).state == "SUCCESS"
    token = _token(project)
    server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
    server.add_user("newbie")
    dry = _live(project, dry_run=True)
    assert dry.state == "SUCCESS" and dry.runs[0]["counts"] == {"created": 1, "updated": 1}
    assert set(_users(project)) == {"bjensen", "jdoe", "kcarter"}
    assert _users(project)["jdoe"]["givenName"] == "Jdoe"
    assert _token(project) == token
    real = _live(project)
    assert real.runs[0]["counts"] == {"created": 1, "updated": 1}
    assert "newbie" in _users(project)


def test_command_line_says_deletes_are_left_to_the_recon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``idsync livesync system/scim/account`` prints the changes read by lastModified and the
    note on deletes; against a provider that cannot filter it exits 78 (a configuration
    to change) with the provider's limitation on stderr."""
    for server in running():
        users = _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        assert idsync(project, "livesync", SOURCE, env=scim_env(server)).returncode == 0
        server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
        done = idsync(project, "livesync", SOURCE, env=scim_env(server))
        assert done.returncode == 0, done.stderr
        assert "1 change(s) read by lastModified" in done.stdout and "updated 1" in done.stdout
        assert "note: SCIM filters on meta.lastModified do not show deleted resources" in done.stdout
    for server in running(filter=False):
        project = _project(tmp_path / "unfiltered", server, monkeypatch)
        refused = idsync(project, "livesync", SOURCE, env=scim_env(server))
        assert refused.returncode == os.EX_CONFIG
        assert "does not announce filtering" in refused.stderr and "scheduled recon" in refused.stderr
