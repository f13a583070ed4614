"""Managed objects as a client reads them, over the API, in scripts and on the command
line alike: a virtual property (``isVirtual``, computed by ``onRetrieve``) from the
whole object, also on an object a reference expands (``_fields=manager/*``), and the
relationships ``returnByDefault`` leaves out shown only when named.

The project is PingIDM's default managed.json (users, roles, assignments) plus a
user's ``fullName`` (virtual: ``givenName`` and ``sn``) and its ``manager`` and
``reports``: user ``bob`` reports to ``alice``, both members of role ``staff``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from idsync.config.managed import DEFAULT_MANAGED

from samples import idsync

FULL_NAME = {"type": "string", "isVirtual": True, "returnByDefault": True,
             "onRetrieve": {"type": "text/javascript", "source": "object.givenName + ' ' + object.sn"}}
# A custom endpoint answering what a script's openidm.read and openidm.query expand.
BOSS = """({read: openidm.read('managed/user/bob', null, ['manager/*']),
          named: openidm.read('managed/user/bob', null, ['manager/fullName']),
          query: openidm.query('managed/user', {_queryFilter: 'userName eq "bob"'}, ['manager/fullName']).result,
          members: openidm.query('managed/role/staff/members', {_queryFilter: 'true'}, ['*']).result})"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    (user,) = [o for o in managed["objects"] if o["name"] == "user"]
    user["schema"]["properties"].update({
        "fullName": FULL_NAME,
        "manager": {"type": "relationship", "returnByDefault": False, "reverseRelationship": True,
                    "reversePropertyName": "reports", "resourceCollection": [{"path": "managed/user"}]},
        "reports": {"type": "array", "returnByDefault": False, "items": {
            "type": "relationship", "reverseRelationship": True, "reversePropertyName": "manager",
            "resourceCollection": [{"path": "managed/user"}]}}})
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(managed))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "endpoint-boss.json").write_text(json.dumps({"type": "text/javascript", "source": BOSS}))
    for kind, object_id, data in (
            ("user", "alice", {"userName": "alice", "givenName": "Alice", "sn": "Archer", "password": "Secret-Pwd19"}),
            ("user", "bob", {"userName": "bob", "givenName": "Bob", "sn": "Baker",
                             "manager": {"_ref": "managed/user/alice"}}),
            ("role", "staff", {"name": "staff", "members": [{"_ref": "managed/user/alice"},
                                                            {"_ref": "managed/user/bob"}]})):
        made = idsync(tmp_path / "p", "managed", "create", kind, "--no-sync", "--id", object_id, "--data",
                      json.dumps(data))
        assert made.returncode == 0, made.stderr
    return tmp_path / "p"


@pytest.fixture
def api(project: Path) -> Iterator[httpx.Client]:
    with serve(project) as client:
        yield client


def _get(api: httpx.Client, path: str, **params: str) -> Any:
    r = api.get(f"/openidm/{path}", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


def _cli(project: Path, *args: str) -> Any:
    done = idsync(project, "managed", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_expanded_reference_runs_the_referenced_types_on_retrieve_over_the_api(api: httpx.Client) -> None:
    """A user's ``fullName`` is what its ``onRetrieve`` computes whether the user is read
    or reached through a reference: ``manager/*`` (a read, a query), ``manager/fullName``,
    a role's ``members/*`` and its ``members`` collection with ``_fields=*``; never its
    password."""
    assert _get(api, "managed/user/alice", _fields="userName,fullName")["fullName"] == "Alice Archer"
    manager = _get(api, "managed/user/bob", _fields="manager/*")["manager"]
    assert (manager["userName"], manager["fullName"]) == ("alice", "Alice Archer") and "password" not in manager
    manager = _get(api, "managed/user/bob", _fields="manager/fullName")["manager"]
    assert manager["fullName"] == "Alice Archer" and "userName" not in manager
    (found,) = _get(api, "managed/user", _queryFilter='userName eq "bob"', _fields="manager/*")["result"]
    assert found["manager"]["fullName"] == "Alice Archer"
    members = _get(api, "managed/role/staff/members", _queryFilter="true", _fields="*")["result"]
    assert sorted(m["fullName"] for m in members) == ["Alice Archer", "Bob Baker"]
    role = _get(api, "managed/role/staff", _fields="members/*")
    assert sorted(m["fullName"] for m in role["members"]) == ["Alice Archer", "Bob Baker"]
    assert "Secret" not in json.dumps(members) + json.dumps(role)


def test_an_expanded_reference_runs_the_referenced_types_on_retrieve_in_scripts(api: httpx.Client) -> None:
    """A script's ``openidm.read`` and ``openidm.query`` expand a reference with the
    referenced user as a read of it answers: its ``fullName`` computed."""
    found = _get(api, "endpoint/boss")
    assert found["read"]["manager"]["fullName"] == "Alice Archer"
    assert found["named"]["manager"]["fullName"] == "Alice Archer"
    assert [u["manager"]["fullName"] for u in found["query"]] == ["Alice Archer"]
    assert sorted(m["fullName"] for m in found["members"]) == ["Alice Archer", "Bob Baker"]


def test_the_command_line_computes_a_virtual_property_from_the_whole_object(project: Path) -> None:
    """``idsync managed query --fields userName,fullName`` answers the ``fullName`` the
    API does, computed from the object before the fields are picked; ``--fields
    manager/*`` expands the manager as the API does, its ``fullName`` computed too."""
    by_name = {u["userName"]: u for u in _cli(project, "query", "user", "--fields", "userName,fullName")}
    assert by_name["alice"] == {"_id": "alice", "_rev": by_name["alice"]["_rev"], "userName": "alice",
                                "fullName": "Alice Archer"}
    assert by_name["bob"]["fullName"] == "Bob Baker"
    (bob,) = _cli(project, "query", "user", "--filter", 'userName eq "bob"', "--fields", "userName,manager/*")
    assert (bob["manager"]["_refResourceId"], bob["manager"]["fullName"]) == ("alice", "Alice Archer")
    assert "password" not in bob["manager"] and set(bob) == {"_id", "_rev", "userName", "manager"}
    assert _cli(project, "get", "user", "alice")["fullName"] == "Alice Archer"
    assert {u["fullName"] for u in _cli(project, "query", "user")} == {"Alice Archer", "Bob Baker"}


def test_the_command_line_leaves_out_relationships_not_returned_by_default(project: Path) -> None:
    """``idsync managed get`` and ``managed query`` show what a read over the API shows: a
    user's ``roles``, ``manager`` and ``reports``, a role's ``members`` and
    ``assignments`` (``returnByDefault`` false) only when ``--fields`` names them."""
    alice = _cli(project, "get", "user", "alice")
    assert alice["userName"] == "alice" and not {"roles", "manager", "reports"} & set(alice), alice
    role = _cli(project, "get", "role", "staff")
    assert role["name"] == "staff" and not {"members", "assignments"} & set(role), role
    for user in _cli(project, "query", "user"):
        assert not {"roles", "manager", "reports"} & set(user), user
    (listed,) = _cli(project, "query", "role")
    assert not {"members", "assignments"} & set(listed), listed
    (listed,) = _cli(project, "query", "role", "--fields", "name,members")
    assert sorted(m["_refResourceId"] for m in listed["members"]) == ["alice", "bob"]
    (alice,) = _cli(project, "query", "user", "--filter", 'userName eq "alice"', "--fields", "*,reports")
    assert [r["_refResourceId"] for r in alice["reports"]] == ["bob"] and alice["fullName"] == "Alice Archer"
    assert "roles" not in alice
