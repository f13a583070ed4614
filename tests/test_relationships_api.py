"""Relationships over the API in PingIDM's REST forms, on the SCIM sample against a real
SCIM 2.0 provider: the seed's step "add a user to a role" by the role's ``members``
collection and by a PATCH of the user's ``roles``, each reaching the SCIM group at
once; reads with ``_fields=roles/*``; removing a reference; deleting an object;
and memberships that survive renames, because members are links, not names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from scim_sample import GROUPS_IN, GROUPS_OUT, USERS_IN, sample_project, scim_env
from scim_server import ScimServer, running


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


@pytest.fixture
def api(tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    for key, value in scim_env(server).items():
        monkeypatch.setenv(key, value)
    with serve(sample_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}")) as client:
        yield client


def _recon(api: httpx.Client, mapping: str) -> None:
    r = api.post(f"/openidm/recon?_action=recon&mapping={mapping}&waitForCompletion=true", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "SUCCESS", r.text


def _seeded(api: httpx.Client, server: ScimServer) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """SCIM users and groups reconciled into the store: (SCIM ids, managed user ids, role ids) by name."""
    scim = {n: server.add_user(n)["id"] for n in ("bjensen", "jdoe", "kcarter")}
    server.add_group("admins", [scim["bjensen"], scim["jdoe"]])
    server.add_group("auditors", [scim["kcarter"]])
    _recon(api, USERS_IN)
    _recon(api, GROUPS_IN)
    users = {o["userName"]: o["_id"] for o in _query(api, "user")}
    roles = {o["name"]: o["_id"] for o in _query(api, "role")}
    return scim, users, roles


def _query(api: httpx.Client, kind: str) -> list[dict[str, Any]]:
    r = api.get(f"/openidm/managed/{kind}?_queryFilter=true", headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(r.json()["result"])


def _group_members(server: ScimServer, name: str) -> set[str]:
    (group,) = server.list("Groups", f'displayName eq "{name}"')
    return {m["value"] for m in group.get("members") or []}


def test_adding_a_user_to_a_role_in_pingidms_rest_forms_reaches_the_scim_group(
        api: httpx.Client, server: ScimServer) -> None:
    """POST managed/role/ID/members?_action=create answers the new reference (201) and
    the SCIM group gets the member at once; the collection lists the members; a PATCH
    add of /roles/- on a user does the same from the other end, a remove with the
    reference takes it back, DELETE of one member reference removes it; both ends
    always agree, and the reverse recon then finds every group CONFIRMED."""
    scim, users, roles = _seeded(api, server)
    admins = roles["admins"]
    assert _group_members(server, "admins") == {scim["bjensen"], scim["jdoe"]}

    r = api.post(f"/openidm/managed/role/{admins}/members?_action=create", headers=ADMIN,
                 json={"_ref": f"managed/user/{users['kcarter']}"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["_ref"] == f"managed/user/{users['kcarter']}"
    assert created["_refResourceCollection"] == "managed/user" and created["_refResourceId"] == users["kcarter"]
    assert created["_id"] == created["_refProperties"]["_id"]
    assert _group_members(server, "admins") == {scim["bjensen"], scim["jdoe"], scim["kcarter"]}

    r = api.get(f"/openidm/managed/role/{admins}/members?_queryFilter=true", headers=ADMIN)
    assert r.status_code == 200
    assert sorted(m["_refResourceId"] for m in r.json()["result"]) == sorted(
        users[n] for n in ("bjensen", "jdoe", "kcarter"))
    r = api.get(f"/openidm/managed/role/{admins}/members?_queryId=query-all-ids", headers=ADMIN)
    assert r.status_code == 200 and {tuple(sorted(m)) for m in r.json()["result"]} == {("_id", "_ref", "_rev")}
    r = api.get(f"/openidm/managed/user/{users['kcarter']}?_fields=roles/*", headers=ADMIN)
    assert r.status_code == 200
    assert sorted(role["name"] for role in r.json()["roles"]) == ["admins", "auditors"]

    remove = [{"operation": "remove", "field": "/roles", "value": {"_ref": f"managed/role/{admins}"}}]
    r = api.patch(f"/openidm/managed/user/{users['jdoe']}", headers=ADMIN, json=remove)
    assert r.status_code == 200, r.text
    assert "roles" not in r.json()  # PingIDM: a relationship is answered only when _fields names it
    assert api.get(f"/openidm/managed/user/{users['jdoe']}?_fields=roles", headers=ADMIN).json()["roles"] == []
    assert _group_members(server, "admins") == {scim["bjensen"], scim["kcarter"]}
    add = [{"operation": "add", "field": "/roles/-", "value": {"_ref": f"managed/role/{admins}"}}]
    r = api.patch(f"/openidm/managed/user/{users['jdoe']}", headers=ADMIN, json=add)
    assert r.status_code == 200, r.text
    assert _group_members(server, "admins") == {scim["bjensen"], scim["jdoe"], scim["kcarter"]}

    r = api.delete(f"/openidm/managed/role/{admins}/members/{created['_id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["_ref"] == created["_ref"]
    assert _group_members(server, "admins") == {scim["bjensen"], scim["jdoe"]}
    r = api.get(f"/openidm/managed/user/{users['kcarter']}?_fields=roles", headers=ADMIN)
    assert [role["_ref"] for role in r.json()["roles"]] == [f"managed/role/{roles['auditors']}"]

    r = api.get(f"/openidm/recon?mapping={GROUPS_OUT}", headers=ADMIN)
    _recon(api, GROUPS_OUT)
    r = api.get(f"/openidm/recon?mapping={GROUPS_OUT}", headers=ADMIN)
    last = r.json()["reconciliations"][0]
    assert last["situationSummary"]["CONFIRMED"] == 2, last


def test_bad_references_are_refused_and_named(api: httpx.Client, server: ScimServer) -> None:
    """A reference to an object that does not exist, or outside the property's
    collections, is refused with the property named and nothing changed; a relationship
    endpoint of a property that is not one answers 404."""
    _, users, roles = _seeded(api, server)
    r = api.post(f"/openidm/managed/role/{roles['admins']}/members?_action=create", headers=ADMIN,
                 json={"_ref": "managed/user/nobody"})
    assert r.status_code in (400, 403), r.text
    assert "managed/user/nobody" in r.json()["message"]
    r = api.patch(f"/openidm/managed/user/{users['jdoe']}", headers=ADMIN,
                  json=[{"operation": "add", "field": "/roles/-", "value": {"_ref": f"managed/user/{users['jdoe']}"}}])
    assert r.status_code in (400, 403) and "roles" in r.json()["message"], r.text
    r = api.get(f"/openidm/managed/user/{users['jdoe']}/userName?_queryFilter=true", headers=ADMIN)
    assert r.status_code == 404
    r = api.get(f"/openidm/managed/role/{roles['admins']}/members?_queryFilter=true", headers=ADMIN)
    assert len(r.json()["result"]) == 2


def test_deleting_a_user_removes_it_from_its_roles(api: httpx.Client, server: ScimServer) -> None:
    """Deleting a managed user deletes the references to it: its roles no longer list it."""
    _, users, roles = _seeded(api, server)
    r = api.delete(f"/openidm/managed/user/{users['jdoe']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    r = api.get(f"/openidm/managed/role/{roles['admins']}?_fields=members", headers=ADMIN)
    assert [m["_refResourceId"] for m in r.json()["members"]] == [users["bjensen"]]


def test_memberships_survive_renames_on_either_side(api: httpx.Client, server: ScimServer) -> None:
    """A user renamed in the store and pushed before any groups recon keeps its SCIM
    group membership, and a user renamed in the provider keeps its role: members are
    followed through links, not by name."""
    scim, users, roles = _seeded(api, server)
    r = api.patch(f"/openidm/managed/user/{users['jdoe']}", headers=ADMIN,
                  json=[{"operation": "replace", "field": "/userName", "value": "john.doe"}])
    assert r.status_code == 200, r.text
    assert server.get("Users", scim["jdoe"])["userName"] == "john.doe"  # type: ignore[index]
    _recon(api, GROUPS_IN)
    _recon(api, GROUPS_OUT)
    assert _group_members(server, "admins") == {scim["bjensen"], scim["jdoe"]}

    with server.client() as c:
        r = c.patch(f"Users/{scim['bjensen']}", json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "userName", "value": "barbara"}]})
        assert r.status_code in (200, 204), r.text
    _recon(api, GROUPS_IN)  # before the users: the membership does not depend on the name
    _recon(api, USERS_IN)
    r = api.get(f"/openidm/managed/role/{roles['admins']}?_fields=members", headers=ADMIN)
    assert sorted(m["_refResourceId"] for m in r.json()["members"]) == sorted([users["bjensen"], users["jdoe"]])
    r = api.get(f"/openidm/managed/user/{users['bjensen']}?_fields=userName,roles/name", headers=ADMIN)
    body = r.json()
    assert body["userName"] == "barbara" and [role["name"] for role in body["roles"]] == ["admins"]
    assert json.dumps(body).count("_ref") >= 1
