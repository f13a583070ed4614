"""Managed objects as a client reads them, over the API, in scripts and on the command
line alike: a virtual property (``isVirtual``, computed by ``onRetrieve``) from the
whole object, also on an object a reference expands (``_fields=manager/*``), and the
relationships ``returnByDefault`` leaves out shown only when named.

A query runs the type's ``onRetrieve`` only when it says ``executeOnRetrieve=true``, as
PingIDM's does, and then on the whole object before the fields are picked; without it, a
virtual property is the value the object's last write computed and kept.

The project is PingIDM's default managed.json (users, roles, assignments) plus a
user's ``fullName`` (virtual: ``givenName`` and ``sn``), OpenIDM usecase1's user
``onRetrieve`` (``active`` from ``accountStatus``) and the user's ``manager`` and
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
# OpenIDM usecase1's script/onRetrieveManagedUser.js: it needs the whole object.
ON_RETRIEVE = {"type": "text/javascript",
               "source": "object.active = (object.accountStatus.toLowerCase() === 'active');"}
# A custom endpoint answering what a script's openidm.read and openidm.query expand.
BOSS = """({read: openidm.read('managed/user/bob', null, ['manager/*']),
          named: openidm.read('managed/user/bob', null, ['manager/fullName']),
          picked: openidm.read('managed/user/bob', null, ['userName']),
          all: openidm.read('managed/user/bob', null, ['*']),
          query: openidm.query('managed/user', {_queryFilter: 'userName eq "bob"'}, ['manager/fullName']).result,
          members: openidm.query('managed/role/staff/members', {_queryFilter: 'true'}, ['*']).result})"""
# What a script's openidm.query answers with and without PingIDM's executeOnRetrieve.
QUERIES = """({plain: openidm.query('managed/user', {_queryFilter: 'true'}, ['_id', 'active']).result,
             ids: openidm.query('managed/user', {_queryId: 'query-all-ids', executeOnRetrieve: true}).result,
             run: openidm.query('managed/user', {_queryFilter: 'true', executeOnRetrieve: 'true'},
                                ['active']).result})"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    (user,) = [o for o in managed["objects"] if o["name"] == "user"]
    user["onRetrieve"] = ON_RETRIEVE
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
    (conf / "endpoint-queries.json").write_text(json.dumps({"type": "text/javascript", "source": QUERIES}))
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
    # Only the fields named, as PingIDM's read answers a script; ``*``: those shown by default.
    assert set(found["named"]) == {"_id", "_rev", "manager"}
    assert set(found["picked"]) == {"_id", "_rev", "userName"}
    assert "userName" in found["all"] and "manager" not in found["all"] and "reports" not in found["all"]
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


def test_a_query_runs_on_retrieve_only_when_asked_and_on_the_whole_object(api: httpx.Client) -> None:
    """As PingIDM's: a query runs usecase1's ``onRetrieve`` (which reads
    ``object.accountStatus``) only with ``executeOnRetrieve=true``, and then on the whole
    object, whichever fields it answers (``query-all-ids``, ``_fields=_id``); a read by id
    always runs it."""
    for params in ({"_queryId": "query-all-ids"}, {"_queryFilter": "true", "_fields": "_id"},
                   {"_queryId": "query-all-ids", "executeOnRetrieve": "true"},
                   {"_queryFilter": "true", "_fields": "_id", "executeOnRetrieve": "true"}):
        found = _get(api, "managed/user", **params)["result"]
        assert sorted(u["_id"] for u in found) == ["alice", "bob"] and all(set(u) == {"_id", "_rev"} for u in found)
    plain = _get(api, "managed/user", _queryFilter="true")["result"]
    assert plain and all("active" not in u and u["accountStatus"] == "active" for u in plain), plain
    run = _get(api, "managed/user", _queryFilter="true", _fields="active", executeOnRetrieve="TRUE")["result"]
    assert [set(u) for u in run] == [{"_id", "_rev", "active"}] * 2 and all(u["active"] is True for u in run)
    (bob,) = _get(api, "managed/user", _queryId="for-userName", uid="bob", executeOnRetrieve="true")["result"]
    assert bob["active"] is True
    assert _get(api, "managed/user/alice")["active"] is True


def test_scripts_and_the_command_line_query_with_on_retrieve_only_when_asked(project: Path) -> None:
    """A script's ``openidm.query`` runs ``onRetrieve`` with ``executeOnRetrieve`` (true or
    ``'true'``), on the whole object before its fields are picked, and not without it;
    ``idsync managed query`` runs it with ``--execute-on-retrieve``."""
    with serve(project) as api:
        found = _get(api, "endpoint/queries")
    assert [set(u) for u in found["plain"]] == [{"_id", "_rev"}] * 2
    assert [set(u) for u in found["ids"]] == [{"_id", "_rev"}] * 2
    assert [u["active"] for u in found["run"]] == [True, True] and [set(u) for u in found["run"]] == [
        {"_id", "_rev", "active"}] * 2
    assert all("active" not in u for u in _cli(project, "query", "user"))
    ran = _cli(project, "query", "user", "--fields", "_id,active", "--execute-on-retrieve")
    assert [set(u) for u in ran] == [{"_id", "_rev", "active"}] * 2 and all(u["active"] is True for u in ran)


def test_a_query_answers_the_virtual_value_the_last_write_kept(api: httpx.Client, project: Path) -> None:
    """A virtual property shown by default (``fullName``) is computed by each write and
    stored, as PingIDM does: a query answers the stored value without running its script
    per user (a value changed behind the write's back stays as stored), a read by id and a
    query with ``executeOnRetrieve=true`` compute it anew, and the next write stores it again."""
    from idsync.config.project import load_project
    from idsync.store.database import Store
    from idsync.store.tables import managed_objects as mo
    from sqlalchemy import select, update

    store = Store.open(load_project(project).settings.store_url())
    try:
        with store.begin() as conn:
            data = conn.execute(select(mo.c.data).where(mo.c.object_type == "user", mo.c.id == "alice")).scalar_one()
            assert data["fullName"] == "Alice Archer"
            conn.execute(update(mo).where(mo.c.object_type == "user", mo.c.id == "alice").values(
                data={**data, "fullName": "Stale Name"}))
    finally:
        store.close()
    by_id = {u["_id"]: u for u in _get(api, "managed/user", _queryFilter="true")["result"]}
    assert (by_id["alice"]["fullName"], by_id["bob"]["fullName"]) == ("Stale Name", "Bob Baker")
    assert _get(api, "managed/user/alice")["fullName"] == "Alice Archer"
    (alice,) = _get(api, "managed/user", _queryFilter='userName eq "alice"', executeOnRetrieve="true")["result"]
    assert alice["fullName"] == "Alice Archer"
    changed = api.patch("/openidm/managed/user/alice", headers=ADMIN,
                        json=[{"operation": "replace", "field": "/sn", "value": "Abbott"}])
    assert changed.status_code == 200, changed.text
    (alice,) = _get(api, "managed/user", _queryFilter='userName eq "alice"')["result"]
    assert alice["fullName"] == "Alice Abbott"


def test_a_virtual_property_is_not_returned_by_default_unless_it_says_so() -> None:
    """PingIDM's default for ``isVirtual`` properties: ``returnByDefault`` false, so a read
    shows one only when named; ``"returnByDefault": true`` shows it."""
    from idsync.config.managed import parse_managed

    virtual = {"type": "string", "isVirtual": True, "onRetrieve": FULL_NAME["onRetrieve"]}
    schema = parse_managed({"objects": [{"name": "user", "schema": {"properties": {
        "userName": {"type": "string"}, "hidden": virtual, "shown": {**virtual, "returnByDefault": True}}}}]})
    user = schema.get("user")
    assert "hidden" in user.hidden and "shown" not in user.hidden and user.properties["shown"].virtual
