"""liveSync of a SCIM source (``connectors/scim/changes.py``) against a real SCIM 2.0
provider (scim2-server), on the SCIM sample: ``meta.lastModified`` windows, sorted and
not, equal stamps at the boundary, a token the connector did not make, a provider
that cannot filter, dry run, a bulk change beyond what a token keeps, and a quiet
provider's window."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import structlog
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.livesync import LiveSyncResult
from livesync_env import FOREIGN_MARKS, live, live_after_expiry, managed_users, read_changes, set_token, stored_token
from scim_sample import USERS_IN, sample_project, scim_env
from scim_server import ScimServer, running
from sync_tokens import token_state

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


def _counted(project: Path) -> int:
    """The changes counted over every liveSync run of the source (``idsync status``, the metrics)."""
    state = token_state(project, SOURCE)
    return state.changes if state is not None else 0


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
def test_a_late_change_within_the_overlap_counts_and_a_resource_read_again_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sort: bool) -> None:
    """A read asks again for the resources stamped within the overlap; those its token does
    not keep (made to keep one here: the newest) are changes only where the target does not
    hold them. A resource changed a second time with a stamp within the overlap, before the
    newest one read (a provider committing a change late), is such a resource: the next run
    applies its change and counts it, and only it; the resource read again unchanged beside
    it is no change (not counted in the run nor in the source's ``changes``). The run after
    that, which reads both again, counts nothing and records no mapping run. Sorted or not."""
    import idsync.connectors.scim.changes as changes

    monkeypatch.setattr(changes, "_SEEN", 1, raising=False)
    base = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = [base]
    for server in running(sort=sort, clock=lambda: clock[0]):
        users = _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project).state == "SUCCESS"
        for second, name in enumerate(("bjensen", "jdoe", "kcarter"), start=1):
            clock[0] = base + dt.timedelta(seconds=second)
            server.change("Users", users[name]["id"], "name.familyName", "Once")
        first = _live(project)
        assert first.state == "SUCCESS" and first.changes == 3, first.runs
        assert set(json.loads(_token(project) or "{}")["seen"]) == {users["kcarter"]["id"]}

        clock[0] = base + dt.timedelta(seconds=1)  # bjensen's first stamp again: committed late
        server.change("Users", users["bjensen"]["id"], "name.familyName", "Twice")
        second = _live(project)
        assert second.state == "SUCCESS" and second.changes == 1, second.runs
        assert [r["counts"] for r in second.runs] == [{"updated": 1}]
        assert _users(project)["bjensen"]["sn"] == "Twice"
        before = _counted(project)
        quiet = _live(project)
        assert quiet.state == "SUCCESS" and quiet.changes == 0 and quiet.runs == []
        assert _counted(project) == before


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


@pytest.mark.parametrize("token", FOREIGN_MARKS)
def test_token_with_a_mark_not_made_by_the_connector_is_answered_by_a_full_recon(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch, token: dict[str, Any]) -> None:
    """A token whose mark (the newest stamp and when it was first read) or start is not
    one this connector writes (a stamp that is no date or after the token's high-water
    mark, a time that is no number) is expired like any token the connector did not make:
    a full recon, and a fresh token."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    assert _live(project).state == "SUCCESS"
    set_token(project, SOURCE, json.dumps({**json.loads(_token(project) or "{}"), **token}))
    server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
    live_after_expiry(project, SOURCE, "not one this connector makes")
    assert _users(project)["jdoe"]["givenName"] == "Johnny"
    assert _live(project).full_recon is None


def test_token_without_a_mark_is_still_read(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token written before tokens had a mark (the high-water mark and the stamps seen
    only) is read from its high-water mark less the overlap: the change made since is
    applied without a full recon, and the new token has a mark."""
    users = _seed(server)
    project = _project(tmp_path, server, monkeypatch)
    assert _live(project).state == "SUCCESS"
    token = json.loads(_token(project) or "{}")
    set_token(project, SOURCE, json.dumps({k: v for k, v in token.items() if k not in ("mark", "start")}))
    server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
    done = _live(project)
    assert done.full_recon is None and [r["counts"] for r in done.runs] == [{"updated": 1}]
    assert _users(project)["jdoe"]["givenName"] == "Johnny"
    assert "mark" in json.loads(_token(project) or "{}")


@pytest.mark.parametrize("sort", [True, False])
def test_a_bulk_change_keeps_the_token_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sort: bool) -> None:
    """A bulk change of more resources than a token keeps (``_SEEN``, made 40 here) leaves
    a token of that many, those with the newest stamps, not one as large as the change,
    sorted or not. Nothing is missed or written twice: every resource is created once; the
    next run reads the ones the token dropped again and finds them unchanged: no write, no
    change counted (in the run, nor in the source's ``changes``), no mapping run recorded;
    a later change of one of them is applied and counted once, and the run after it
    counts nothing. The run that drops resources says so, once
    (``livesync.lastmodified_seen_bounded``)."""
    import idsync.connectors.scim.changes as changes

    monkeypatch.setattr(changes, "_SEEN", 40, raising=False)
    for server in running(sort=sort):
        _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project).state == "SUCCESS"
        bulk = server.add_users(f"bulk{i:03}" for i in range(100))

        with structlog.testing.capture_logs() as logs:
            done = _live(project, page_size=7)
        (told,) = [e for e in logs if e["event"] == "livesync.lastmodified_seen_bounded"]
        assert told["kept"] == 40 and told["read"] >= 100
        (run,) = done.runs
        assert done.state == "SUCCESS" and run["counts"]["created"] == 100, done.runs
        assert set(run["counts"]) <= {"created", "unchanged"}  # unsorted: a resource dropped may come again
        runs = RunStore(Store.open(load_project(project).settings.store_url()))
        assert len(runs.audit_entries(run["id"])) == 100
        token = json.loads(_token(project) or "{}")
        assert set(token["seen"]) == {u["id"] for u in bulk[60:]}
        users = _users(project)
        assert len([u for u in users if u.startswith("bulk")]) == 100

        before = _counted(project)
        again = _live(project, page_size=7)
        assert again.state == "SUCCESS" and again.changes == 0 and again.runs == [], again.runs
        assert _counted(project) == before
        assert _users(project) == users
        assert json.loads(_token(project) or "{}")["seen"] == token["seen"]

        server.change("Users", bulk[0]["id"], "name.familyName", "Later")
        later = _live(project, page_size=7)
        (run,) = later.runs
        assert later.changes == 1 and run["counts"] == {"updated": 1}
        assert len(runs.audit_entries(run["id"])) == 1
        assert _users(project)["bulk000"]["sn"] == "Later"
        quiet = _live(project, page_size=7)
        assert quiet.changes == 0 and quiet.runs == []


@pytest.mark.parametrize("sort", [True, False])
def test_a_quiet_providers_last_changes_stop_being_read_a_minute_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sort: bool) -> None:
    """A read asks again for the resources stamped within the overlap (a minute before
    the newest stamp), in case a change stamped there is committed late; once the provider
    is quiet that is needed for a minute only, not at every run until the next change.
    After a bulk change larger than the token keeps (made 40 here), the runs within the
    minute read the dropped resources again, and count no change; the first run that begins a minute (this
    host's clock) after the read that saw the newest stamp moves the token's start to
    that stamp, and the run after it asks for the stamps after it (``gt``: a provider whose
    clock stamps a bulk change in whole seconds shares one stamp among many) and applies
    nothing. A change made after that is still applied. Sorted or not."""
    import idsync.connectors.scim.changes as changes
    import idsync.stamps as stamps

    clock = [time.time()]
    monkeypatch.setattr(changes, "_SEEN", 40, raising=False)
    monkeypatch.setattr(stamps, "_now", lambda: clock[0])
    for server in running(sort=sort):
        users = _seed(server)
        project = _project(tmp_path, server, monkeypatch)
        assert _live(project).state == "SUCCESS"
        server.add_users(f"q{i:03}" for i in range(100))
        (run,) = _live(project).runs
        assert run["counts"]["created"] == 100 and set(run["counts"]) <= {"created", "unchanged"}
        clock[0] += 30
        read = read_changes(project, SOURCE)  # within the minute: the dropped resources are read again
        assert len(read) >= 60 and all(c.reread for c in read)
        within = _live(project)  # ... and are no change
        assert within.changes == 0 and within.runs == []
        clock[0] += 31
        again = _live(project)  # a minute after the bulk change's read: once more, then the mark
        assert again.changes == 0 and again.runs == []
        token = json.loads(_token(project) or "{}")
        asked = len(server.requests)
        quiet = _live(project)
        assert quiet.changes == 0 and quiet.runs == []
        assert token["start"] == token["mark"]["stamp"] == token["since"] and len(token["seen"]) == 1
        filters = [parse_qs(q).get("filter", [""])[0] for _, _, q in server.requests[asked:]]
        assert f'meta.lastModified gt "{token["since"]}"' in filters, filters  # after the mark, however many share it
        server.change("Users", users["jdoe"]["id"], "name.givenName", "Johnny")
        assert [r["counts"] for r in _live(project).runs] == [{"updated": 1}]
        assert _users(project)["jdoe"]["givenName"] == "Johnny"


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
