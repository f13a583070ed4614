"""The SCIM sample end to end through the real CLI and engine against a real SCIM 2.0
provider (scim2-server): its four mappings both ways (on each store backend), users
then groups and the sample's job, implicit sync of managed changes, correlation by
SCIM filter, deletes, a duplicate userName, refused credentials, and a provider that
stops mid-run."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from dbs import WITH_POSTGRESQL, store_url
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from scim_sample import GROUPS_IN, GROUPS_OUT, SAMPLE, USERS_IN, USERS_OUT, sample_project, scim_env
from scim_server import CLIENT_SECRET, ENTERPRISE, ScimServer, running

from samples import idsync


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


@pytest.fixture
def project(tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> Path:
    """The sample on a fresh store: SQLite, or the backend a test asks for by parameter."""
    for key, value in scim_env(server).items():
        monkeypatch.setenv(key, value)
    return sample_project(tmp_path, store_url(getattr(request, "param", "sqlite"), tmp_path))


def _cli(project: Path, server: ScimServer, *args: str) -> Any:
    result = idsync(project, *args, env=scim_env(server))
    assert result.returncode == 0, result.stderr
    assert CLIENT_SECRET not in result.stdout + result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else result.stdout


def _managed(project: Path, kind: str, key: str) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open(f"managed/{kind}")
    return {o[key]: o for page in resource.pages(QuerySpec()) for o in page}


def _names(role: dict[str, Any], users: dict[str, dict[str, Any]]) -> list[str]:
    """The userNames of a role's members (references to managed users)."""
    by_ref = {f"managed/user/{u['_id']}": name for name, u in users.items()}
    return sorted(by_ref[m["_ref"]] for m in role.get("members") or [])


def _ref(user: dict[str, Any]) -> dict[str, str]:
    return {"_ref": f"managed/user/{user['_id']}"}


def _recon(project: Path, mapping: str, max_deletes: int | None = None) -> ReconResult:
    loaded = load_project(project)
    return run_recon(loaded, Store.open(loaded.settings.store_url()), mapping, ReconOptions(max_deletes=max_deletes))


def _seed(server: ScimServer) -> dict[str, dict[str, Any]]:
    users = {
        "bjensen": server.add_user("bjensen", name={"givenName": "Barbara", "familyName": "Jensen"},
                                   emails=[{"value": "bjensen@example.com", "type": "work"}],
                                   phoneNumbers=[{"value": "555-0101", "type": "work"}],
                                   **{ENTERPRISE: {"employeeNumber": "701"}}),
        "jdoe": server.add_user("jdoe", name={"givenName": "John", "familyName": "Doe"}, active=False,
                                emails=[{"value": "jdoe@example.com", "primary": True}]),
        "kcarter": server.add_user("kcarter", name={"givenName": "Kim", "familyName": "Carter"}),
    }
    server.add_group("admins", [users["bjensen"]["id"], users["jdoe"]["id"]])
    server.add_group("auditors", [users["kcarter"]["id"]])
    return users


@pytest.mark.parametrize("project", WITH_POSTGRESQL, indirect=True)
def test_users_then_groups_into_the_store_and_changes_back(project: Path, server: ScimServer) -> None:
    """The seed's walk-through: `idsync test` is ok; SCIM users become managed users
    (complex, multi-valued and enterprise attributes), groups become roles whose members
    are those users; a managed user changed with the CLI is PATCHed in the provider;
    a user added to a role becomes a member of the group by a PATCH add, and leaves by
    a PATCH remove; reverse recons then find everything CONFIRMED."""
    users = _seed(server)
    assert "scim: ok" in _cli(project, server, "test")

    assert _cli(project, server, "recon", USERS_IN, "--json")["situationSummary"]["ABSENT"] == 3
    assert _cli(project, server, "recon", GROUPS_IN, "--json")["situationSummary"]["ABSENT"] == 2
    managed = _managed(project, "user", "userName")
    assert managed["bjensen"] == {**managed["bjensen"], "givenName": "Barbara", "sn": "Jensen",
                                  "mail": "bjensen@example.com", "telephoneNumber": "555-0101",
                                  "employeeNumber": "701", "displayName": "Barbara Jensen",
                                  "accountStatus": "active"}
    assert managed["jdoe"]["mail"] == "jdoe@example.com" and managed["jdoe"]["accountStatus"] == "inactive"
    roles = _managed(project, "role", "name")
    assert _names(roles["admins"], managed) == ["bjensen", "jdoe"]
    assert [r["_ref"] for r in managed["kcarter"]["roles"]] == [f"managed/role/{roles['auditors']['_id']}"]

    patch = json.dumps([{"operation": "replace", "field": "/telephoneNumber", "value": "555-0199"}])
    _cli(project, server, "managed", "patch", "user", managed["bjensen"]["_id"], "--operations", patch)
    stored = server.get("Users", users["bjensen"]["id"])
    assert stored is not None and stored["phoneNumbers"] == [{"value": "555-0199", "type": "work"}]
    assert server.bodies[-1][0] == f"PATCH /v2/Users/{users['bjensen']['id']}"

    add = json.dumps([{"operation": "add", "field": "/members/-", "value": _ref(managed["kcarter"])}])
    _cli(project, server, "managed", "patch", "role", roles["admins"]["_id"], "--operations", add)
    group = server.list("Groups", 'displayName eq "admins"')[0]
    assert sorted(m["value"] for m in group["members"]) == sorted(
        users[n]["id"] for n in ("bjensen", "jdoe", "kcarter"))
    group_patches = [body for method, body in server.bodies if method.startswith("PATCH /v2/Groups/")]
    assert group_patches[-1]["Operations"] == [
        {"op": "add", "path": "members", "value": [{"value": users["kcarter"]["id"]}]}]
    remove = json.dumps([{"operation": "remove", "field": "/members", "value": _ref(managed["jdoe"])}])
    _cli(project, server, "managed", "patch", "role", roles["admins"]["_id"], "--operations", remove)
    group = server.list("Groups", 'displayName eq "admins"')[0]
    assert sorted(m["value"] for m in group["members"]) == sorted(users[n]["id"] for n in ("bjensen", "kcarter"))
    assert not any(method.startswith("PUT") for method, _ in server.bodies)

    for mapping in (USERS_OUT, GROUPS_OUT):
        summary = _cli(project, server, "recon", mapping, "--json")
        assert summary["situationSummary"]["CONFIRMED"] == (3 if mapping == USERS_OUT else 2), mapping
        assert summary["changes"]["failed"] == 0


def test_store_side_users_and_roles_are_created_and_deleted_in_the_provider(
        project: Path, server: ScimServer) -> None:
    """A managed user and a role created in the store are POSTed by the reverse mappings
    (the user first, so the group can name it); a user deleted in the provider is
    deleted from the store by the next forward recon."""
    _seed(server)
    _recon(project, USERS_IN)
    _recon(project, GROUPS_IN)
    _cli(project, server, "managed", "create", "user", "--data",
         json.dumps({"userName": "mnew", "givenName": "Mia", "sn": "New", "mail": "mnew@example.com",
                     "employeeNumber": "900"}))
    mnew = _managed(project, "user", "userName")["mnew"]
    _cli(project, server, "managed", "create", "role", "--data", json.dumps({"name": "ops", "members": [_ref(mnew)]}))
    (created,) = server.list("Users", 'userName eq "mnew"')
    assert created["name"] == {"givenName": "Mia", "familyName": "New"}
    assert created["emails"] == [{"type": "work", "value": "mnew@example.com"}]
    assert created[ENTERPRISE] == {"employeeNumber": "900"}
    (ops,) = server.list("Groups", 'displayName eq "ops"')
    assert [m["value"] for m in ops["members"]] == [created["id"]]

    gone = server.list("Users", 'userName eq "kcarter"')[0]
    with server.client() as c:
        assert c.delete(f"Users/{gone['id']}").status_code == 204
    result = _recon(project, USERS_IN, max_deletes=1)  # the sample's 10% of 4 users allows none
    assert result.state == "SUCCESS", result.message
    assert "kcarter" not in _managed(project, "user", "userName")


def _synced_two_a_page(tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch, users: int) -> Path:
    """A sample project reading two users a page, after a first recon of ``users`` users."""
    for key, value in scim_env(server).items():
        monkeypatch.setenv(key, value)
    project = sample_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}", pageSize=2)
    for i in range(users):
        server.add_user(f"user{i}")
    assert _recon(project, USERS_IN).state == "SUCCESS"
    return project


def test_provider_stopping_mid_run_fails_the_run_and_deletes_nothing(tmp_path: Path, server: ScimServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Read two users a page, the provider goes away after the first page: the run is
    FAILED with an unreachable message and no managed user is deleted, although a user
    missing from the provider would otherwise have been."""
    project = _synced_two_a_page(tmp_path, server, monkeypatch, 6)
    victim = server.list("Users", 'userName eq "user5"')[0]
    with server.client() as c:
        c.delete(f"Users/{victim['id']}")
    server.requests.clear()
    server.stop_after = 2  # the token, then the first page
    result = _recon(project, USERS_IN, max_deletes=6)
    assert result.state == "FAILED"
    assert "cannot reach" in (result.message or "")
    assert len(_managed(project, "user", "userName")) == 6


def _three_users_and_a_failing_post(project: Path, server: ScimServer, nth: int) -> None:
    """Users ann, ben and cid made in the store (no sync); the provider answers the ``nth``
    POST of a user with a 500, the others as usual."""
    loaded = load_project(project)
    managed = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    for name in ("ann", "ben", "cid"):
        managed.create({"userName": name, "givenName": name.title(), "sn": "Test"})
    posts: list[str] = []

    def nth_post(method: str, path: str, query: str) -> bool:
        if method == "POST" and path == "/v2/Users":
            posts.append(path)
        return len(posts) == nth

    server.before_matching.append((nth_post, lambda: server.fail_next("POST", 500, None)))


def test_a_provider_failing_in_the_middle_of_a_page_keeps_what_it_wrote(project: Path, server: ScimServer) -> None:
    """Three users made in the store are POSTed in one page and the provider answers the
    third with a 500: the two it created are linked and audited (the third fails with the
    provider's error, for the next run), so the next recon, with no correlation query
    that could find them again, POSTs only the third instead of the first two again."""
    sync = project / "conf" / "sync.json"
    config = json.loads(sync.read_text())
    for mapping in config["mappings"]:
        if mapping["name"] == USERS_OUT:
            del mapping["correlationQuery"]
    sync.write_text(json.dumps(config))
    _three_users_and_a_failing_post(project, server, 3)
    first = _recon(project, USERS_OUT)
    assert first.summary["changes"].get("created") == 2 and first.summary["changes"].get("failed") == 1, first
    assert "HTTP 500" in json.dumps(first.summary)
    # Two of the three, whichever were POSTed first: users made in the same millisecond
    # have ids (and so a place in the page) in no particular order.
    made = sorted(u["userName"] for u in server.list("Users"))
    assert len(made) == 2 and set(made) < {"ann", "ben", "cid"}, made
    second = _recon(project, USERS_OUT)
    assert second.state == "SUCCESS", second.message
    assert second.summary["changes"] == {**second.summary["changes"], "created": 1}
    assert not second.summary["changes"].get("failed")
    assert sorted(u["userName"] for u in server.list("Users")) == ["ann", "ben", "cid"]


def test_a_server_error_on_one_users_write_fails_that_user_alone(project: Path, server: ScimServer) -> None:
    """The provider answers the first of three POSTs with a 500 and the next ones as usual:
    that user fails alone, with the provider's error, and the two after it are created in
    the same run (a provider failing on one object's data must not stall every run at it);
    the next run creates the first."""
    _three_users_and_a_failing_post(project, server, 1)
    first = _recon(project, USERS_OUT)
    assert first.state == "SUCCESS", first.message
    assert first.summary["changes"].get("created") == 2 and first.summary["changes"].get("failed") == 1, first
    assert "HTTP 500" in json.dumps(first.summary) and "the next run tries again" in json.dumps(first.summary)
    assert len(server.list("Users")) == 2
    second = _recon(project, USERS_OUT)
    assert second.state == "SUCCESS" and second.summary["changes"].get("created") == 1, second.summary
    assert sorted(u["userName"] for u in server.list("Users")) == ["ann", "ben", "cid"]


def test_users_answered_without_an_id_fail_the_run_and_delete_nothing(tmp_path: Path, server: ScimServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that answers one user without its id (in the listing and in the
    lookup by id): the run fails before its target phase and no managed user is
    deleted, where the user's managed copy would otherwise look orphaned."""
    project = _synced_two_a_page(tmp_path, server, monkeypatch, 4)

    def without_id(body: dict[str, Any]) -> dict[str, Any]:
        resources = body.get("Resources") or []
        return {**body, "Resources": [{k: v for k, v in r.items() if k != "id" or r.get("userName") != "user1"}
                                      for r in resources]}

    server.list_edits.extend([without_id] * 20)
    result = _recon(project, USERS_IN, max_deletes=4)
    assert result.state == "FAILED"
    assert "had no id" in (result.message or "")
    assert result.summary["changes"]["deleted"] == 0
    assert len(_managed(project, "user", "userName")) == 4


def _without_push(project: Path, *, correlation: bool = True) -> None:
    """Turn off implicit sync of managed users (and their correlation query, when asked),
    so that only a recon writes users to the provider."""
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    for mapping in sync["mappings"]:
        if mapping["name"] == USERS_OUT:
            mapping["enableSync"] = False
            if not correlation:
                del mapping["correlationQuery"]
    sync_file.write_text(json.dumps(sync, indent=2))


def test_a_dry_run_sends_the_provider_no_write(project: Path, server: ScimServer) -> None:
    """A dry-run recon of the store into the provider that would create, update and
    delete users reports those changes, but the provider receives only GET requests
    (and token requests): no POST, PUT, PATCH or DELETE of a resource."""
    _seed(server)
    _recon(project, USERS_IN)
    _without_push(project)
    _cli(project, server, "managed", "create", "user", "--data",
         json.dumps({"userName": "mnew", "givenName": "Mia", "sn": "New", "mail": "mnew@example.com"}))
    managed = _managed(project, "user", "userName")
    patch = json.dumps([{"operation": "replace", "field": "/telephoneNumber", "value": "555-0199"}])
    _cli(project, server, "managed", "patch", "user", managed["bjensen"]["_id"], "--operations", patch)
    _cli(project, server, "managed", "delete", "user", managed["kcarter"]["_id"])
    server.requests.clear()
    summary = _cli(project, server, "recon", USERS_OUT, "--dry-run", "--max-deletes", "1", "--json")
    assert summary["state"] == "SUCCESS" and summary["dryRun"] is True
    changes = summary["changes"]
    assert (changes["created"], changes["deleted"]) == (1, 1) and changes["updated"] >= 1, changes
    writes = [(m, p) for m, p, _ in server.requests if m != "GET" and p != "/oauth/token"]
    assert writes == []
    assert server.list("Users", 'userName eq "mnew"') == []
    assert server.list("Users", 'userName eq "kcarter"') != []


def test_reverse_recon_correlates_existing_accounts_by_scim_filter(project: Path, server: ScimServer) -> None:
    """A managed user whose userName an unlinked SCIM user already has (in another case,
    or with a quote in it) is correlated through an escaped SCIM `userName eq` filter
    and linked, not POSTed again; a managed user with no SCIM account is created; the
    forward recon then finds all of them CONFIRMED through the shared link set, with no
    duplicate managed user."""
    _without_push(project)
    existing = server.add_user("BJensen", name={"givenName": "Barbara"})
    server.add_user('o"neil')
    for name in ("bjensen", 'o"neil', "mnew"):
        _cli(project, server, "managed", "create", "user", "--data", json.dumps({"userName": name, "sn": "X"}))
    assert sorted(u["userName"] for u in server.list("Users")) == ["BJensen", 'o"neil']
    server.requests.clear()
    server.bodies.clear()
    summary = _cli(project, server, "recon", USERS_OUT, "--json")
    assert summary["situationSummary"]["FOUND"] == 2 and summary["situationSummary"]["ABSENT"] == 1
    assert summary["changes"]["created"] == 1 and summary["changes"]["failed"] == 0
    filters = [parse_qs(q).get("filter", [""])[0] for m, p, q in server.requests if m == "GET" and p == "/v2/Users"]
    assert any('userName eq "bjensen"' in f for f in filters), filters
    assert any('userName eq "o\\"neil"' in f for f in filters), filters
    posted = [b.get("userName") for m, b in server.bodies if m == "POST /v2/Users"]
    assert posted == ["mnew"]
    forward = _cli(project, server, "recon", USERS_IN, "--json")
    assert forward["situationSummary"]["CONFIRMED"] == 3 and forward["situationSummary"]["ABSENT"] == 0
    # One managed user per person; the forward mapping takes the provider's spelling.
    assert sorted(_managed(project, "user", "userName")) == ["BJensen", "mnew", 'o"neil']
    assert server.get("Users", existing["id"]) is not None


def test_duplicate_user_name_fails_that_user_and_the_run_goes_on(project: Path, server: ScimServer) -> None:
    """Without a correlation query a managed user whose userName the provider already
    has is POSTed and refused with 409: that user is the run's one failure, recorded
    with the provider's uniqueness message; the other user is created and the run ends
    SUCCESS."""
    _without_push(project, correlation=False)
    server.add_user("alice")
    for name in ("alice", "bob"):
        _cli(project, server, "managed", "create", "user", "--data", json.dumps({"userName": name, "sn": "X"}))
    summary = _cli(project, server, "recon", USERS_OUT, "--json")
    assert summary["state"] == "SUCCESS"
    assert summary["changes"]["created"] == 1 and summary["changes"]["failed"] == 1
    (error,) = summary["errors"]
    assert "409" in error["message"] and "uniqueness" in error["message"]
    assert sorted(u["userName"] for u in server.list("Users")) == ["alice", "bob"]


def test_several_work_emails_fail_that_user_and_are_never_half_written(project: Path, server: ScimServer) -> None:
    """A SCIM user with two work e-mails (mapped to the single-valued mail) fails alone, the
    error saying mail gets 2 values, where the first was taken in silence; the other users
    are created. Back the other way, a change of that user's mail fails naming both e-mails
    and the provider keeps them, where only the first was rewritten."""
    two = server.add_user("two", emails=[{"value": "a@work", "type": "work"}, {"value": "b@work", "type": "work"}])
    server.add_user("one", emails=[{"value": "one@work", "type": "work"}])
    summary = _cli(project, server, "recon", USERS_IN, "--json")
    assert summary["state"] == "SUCCESS" and summary["changes"]["failed"] == 1, summary
    (error,) = summary["errors"]
    assert "mail is single-valued" in error["message"] and "2 values" in error["message"], error
    assert sorted(_managed(project, "user", "userName")) == ["one"]

    _without_push(project)
    mine = _cli(project, server, "managed", "create", "user",
                "--data", json.dumps({"userName": "two", "sn": "Two", "mail": "c@work"}))
    assert mine["userName"] == "two"
    _cli(project, server, "recon", USERS_OUT, "--json")  # links it (FOUND: LINK)
    back = _cli(project, server, "recon", USERS_OUT, "--json")
    failures = [e["message"] for e in back["errors"]]
    assert any('matches 2 items ("a@work", "b@work")' in m for m in failures), json.dumps(back, indent=1)
    assert server.get("Users", two["id"])["emails"] == two["emails"]


def test_deleting_a_managed_user_and_role_deletes_them_in_the_provider(project: Path, server: ScimServer) -> None:
    """Deleting a managed user or role pushes a DELETE of the linked SCIM user or group;
    the other users and groups stay."""
    users = _seed(server)
    _recon(project, USERS_IN)
    _recon(project, GROUPS_IN)
    managed = _managed(project, "user", "userName")
    roles = _managed(project, "role", "name")
    _cli(project, server, "managed", "delete", "role", roles["auditors"]["_id"])
    _cli(project, server, "managed", "delete", "user", managed["kcarter"]["_id"])
    deletes = [p for m, p, _ in server.requests if m == "DELETE"]
    group = server.list("Groups", 'displayName eq "auditors"')
    assert group == [] and [g["displayName"] for g in server.list("Groups")] == ["admins"]
    assert f"/v2/Users/{users['kcarter']['id']}" in deletes and len(deletes) == 2
    assert server.get("Users", users["kcarter"]["id"]) is None
    assert sorted(u["userName"] for u in server.list("Users")) == ["bjensen", "jdoe"]


def test_refused_credentials_fail_the_run_with_an_authentication_message(
        project: Path, server: ScimServer) -> None:
    """A client secret the token endpoint refuses fails the recon (exit EX_NOPERM) with
    a message naming the token endpoint and the OAuth error, never the secret; nothing
    reaches the store."""
    _seed(server)
    result = idsync(project, "recon", USERS_IN, env={**scim_env(server), "SCIM_CLIENT_SECRET": "not-the-secret"})
    assert result.returncode == os.EX_NOPERM, result.stdout + result.stderr
    assert "FAILED" in result.stdout and "refused the client credentials" in result.stdout
    assert "invalid_client" in result.stdout and "not-the-secret" not in result.stdout + result.stderr
    assert _managed(project, "user", "userName") == {}


def test_the_sample_job_runs_users_then_groups(project: Path, server: ScimServer) -> None:
    """The sample's job reconciles users first and groups second, so one run of it
    leaves every role with its members, who are managed users."""
    shutil.copytree(SAMPLE / "jobs.d", project / "jobs.d")
    _seed(server)
    result = idsync(project, "run-job", "sync-scim", "--json", env=scim_env(server))
    assert result.returncode == 0, result.stdout + result.stderr
    ran = [line["mapping"] for line in map(json.loads, result.stderr.splitlines())
           if line.get("event") == "recon.end"]
    assert ran == [USERS_IN, GROUPS_IN]
    users = _managed(project, "user", "userName")
    roles = _managed(project, "role", "name")
    assert _names(roles["admins"], users) == ["bjensen", "jdoe"] and _names(roles["auditors"], users) == ["kcarter"]
