"""``_fields`` on one managed object and on queries over the API, against a real store with
PingIDM's default managed.json (users, roles, assignments): ``*`` is the object's default
fields, ``NAME/*`` expands a relationship with the referenced object's default fields (a
query's page read at once), and the answers of create, update, patch and the ``patch``
action are shaped as a read is.
PATCH's copy, move and transform operations, over REST and in a script's ``openidm.patch``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from idsync.config.managed import DEFAULT_MANAGED
from sqlalchemy import Engine, event

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}
# A custom endpoint whose script patches the user ``?id=`` names with a move and a transform.
LOWER = """openidm.patch('managed/user/' + request.additionalParameters.id, null, [
  {operation: 'move', from: '/displayName', field: '/mail'},
  {operation: 'transform', field: '/sn',
   value: {script: {type: 'text/javascript', source: 'content.toLowerCase()'}}}]);
({done: true})"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[httpx.Client]:
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(DEFAULT_MANAGED))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "endpoint-lower.json").write_text(json.dumps({"type": "text/javascript", "source": LOWER}))
    with serve(tmp_path / "p") as client:
        yield client


def _created(api: httpx.Client, kind: str, body: dict[str, Any], query: str = "") -> dict[str, Any]:
    r = api.post(f"/openidm/managed/{kind}?_action=create{query}", headers=JSON, content=json.dumps(body))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _staff(api: httpx.Client) -> tuple[str, str]:
    """A role ``staff`` with one assignment, and user ``q1`` granted it: (user id, role id)."""
    assignment = _created(api, "assignment", {"name": "staff-ldap", "mapping": "m"})
    role = _created(api, "role", {"name": "staff", "description": "Staff",
                                  "assignments": [{"_ref": f"managed/assignment/{assignment['_id']}"}]})
    user = _created(api, "user", {"userName": "q1", "sn": "One", "mail": "q1@example.com",
                                  "roles": [{"_ref": f"managed/role/{role['_id']}"}]})
    return user["_id"], role["_id"]


def _get(api: httpx.Client, path: str, fields: str) -> dict[str, Any]:
    r = api.get(f"/openidm/managed/{path}", params={"_fields": fields}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_star_in_fields_is_the_default_fields_of_a_read(api: httpx.Client) -> None:
    """``_fields=*`` reads what no ``_fields`` reads; ``*,roles`` adds the roles (not shown
    by default) to the whole object; ``*,members/*`` on a role adds its members, each
    expanded; named fields alone are still only those."""
    user_id, role_id = _staff(api)
    default = _get(api, f"user/{user_id}", "")
    assert default["userName"] == "q1" and "roles" not in default
    assert _get(api, f"user/{user_id}", "*") == default
    with_roles = _get(api, f"user/{user_id}", "*,roles")
    assert {k: v for k, v in with_roles.items() if k != "roles"} == default
    assert [r["_refResourceId"] for r in with_roles["roles"]] == [role_id]
    role = _get(api, f"role/{role_id}", "*,members/*")
    assert role["name"] == "staff" and role["description"] == "Staff" and "assignments" not in role
    assert [(m["_refResourceId"], m["userName"]) for m in role["members"]] == [(user_id, "q1")]
    assert set(_get(api, f"user/{user_id}", "userName")) == {"_id", "_rev", "userName"}


def test_an_expanded_reference_carries_the_default_fields_of_its_object(api: httpx.Client) -> None:
    """``roles/*`` expands each role with its default fields: its ``members`` and
    ``assignments`` (returnByDefault false) stay out unless named (``roles/assignments``)."""
    user_id, role_id = _staff(api)
    (role,) = _get(api, f"user/{user_id}", "roles/*")["roles"]
    assert role["_refResourceId"] == role_id and role["name"] == "staff"
    assert "members" not in role and "assignments" not in role
    (role,) = _get(api, f"user/{user_id}", "roles/*,roles/assignments")["roles"]
    assert role["name"] == "staff" and len(role["assignments"]) == 1 and "members" not in role


def _with_private_member(tmp_path: Path) -> Path:
    """A project whose users have a private ``lastSync``, and user ``q9`` with a password
    (``Secret-Pass1``) and a ``lastSync`` holding ``kept-back``."""
    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    (user_type,) = [o for o in managed["objects"] if o["name"] == "user"]
    user_type["schema"]["properties"]["lastSync"] = {"type": "object", "scope": "private"}
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(managed))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    made = idsync(tmp_path / "p", "managed", "create", "user", "--no-sync", "--id", "q9", "--data", json.dumps(
        {"userName": "q9", "sn": "Nine", "mail": "q9@example.com", "password": "Secret-Pass1",
         "lastSync": {"effectiveAssignments": ["kept-back"]}}))
    assert made.returncode == 0, made.stderr
    return tmp_path / "p"


def test_an_expanded_reference_never_shows_a_secret_nor_a_private_property(tmp_path: Path) -> None:
    """A role's members expanded, however the fields are asked (``members/*``, the property
    named, the relationship's own collection), never carry a member's password, even
    hashed, nor a property ``managed.json`` marks ``"scope": "private"``."""
    with serve(_with_private_member(tmp_path)) as api:
        role = _created(api, "role", {"name": "staff", "members": [{"_ref": "managed/user/q9"}]})
        for fields in ("members/*", "members/*,members/password,members/lastSync", "members/lastSync"):
            (member,) = _get(api, f"role/{role['_id']}", fields)["members"]
            assert member["_refResourceId"] == "q9", (fields, member)
            assert "password" not in member and "lastSync" not in member, (fields, member)
        listed = api.get(f"/openidm/managed/role/{role['_id']}/members",
                         params={"_queryFilter": "true", "_fields": "*,lastSync,password"}, headers=ADMIN)
        assert listed.status_code == 200 and "kept-back" not in listed.text and "Secret" not in listed.text, \
            listed.text


def _query(api: httpx.Client, kind: str, fields: str, **params: str) -> list[dict[str, Any]]:
    r = api.get(f"/openidm/managed/{kind}", params={"_queryFilter": "true", **params, "_fields": fields},
                headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(r.json()["result"])


def test_fields_on_a_relationship_collection_keep_each_references_own_id(api: httpx.Client) -> None:
    """``managed/role/ID/members`` with ``_fields`` (``_ref``, ``_refProperties``,
    ``_refResourceId``, ``*``, a member's ``userName``) answers each reference with its own
    ``_id`` and ``_rev``, as ``query-all-ids`` does, never the member's: a filter on that
    ``_id`` finds it, and a read and a ``DELETE`` with ``If-Match`` take them."""
    user_id, role_id = _staff(api)
    members = f"/openidm/managed/role/{role_id}/members"
    (ids,) = api.get(members, params={"_queryId": "query-all-ids"}, headers=ADMIN).json()["result"]
    assert ids["_id"] != user_id
    for fields in ("_ref", "_refProperties", "_refResourceId", "*", "userName", "_ref,userName"):
        r = api.get(members, params={"_queryFilter": "true", "_fields": fields}, headers=ADMIN)
        assert r.status_code == 200, r.text
        (ref,) = r.json()["result"]
        assert (ref["_id"], ref["_rev"], ref["_refResourceId"]) == (ids["_id"], ids["_rev"], user_id), (fields, ref)
        assert fields not in ("*", "userName") or ref["userName"] == "q1", (fields, ref)
    r = api.get(members, params={"_queryFilter": f'_id eq "{ids["_id"]}"', "_fields": "userName"}, headers=ADMIN)
    assert [m["_id"] for m in r.json()["result"]] == [ids["_id"]], r.text
    read = api.get(f"{members}/{ids['_id']}", params={"_fields": "userName"}, headers=ADMIN)
    assert read.status_code == 200 and read.json()["_id"] == ids["_id"], read.text
    gone = api.delete(f"{members}/{ids['_id']}", headers={**ADMIN, "If-Match": ids["_rev"]})
    assert gone.status_code == 200 and gone.json()["_id"] == ids["_id"], gone.text
    assert api.get(members, params={"_queryFilter": "true"}, headers=ADMIN).json()["result"] == []


def test_a_query_expands_references_as_a_read_does(api: httpx.Client) -> None:
    """``_fields=userName,roles/*`` on a query (by filter or ``_queryId``, sorted or paged)
    expands each result's roles as a read of that user does: the role's default fields,
    ``roles/name`` its name alone; the fields not named stay out."""
    user_id, role_id = _staff(api)
    other = _created(api, "role", {"name": "other", "description": "Other"})
    two = _created(api, "user", {"userName": "q2", "sn": "Two", "roles": [
        {"_ref": f"managed/role/{role_id}"}, {"_ref": f"managed/role/{other['_id']}"}]})
    _created(api, "user", {"userName": "q3", "sn": "Three"})
    for params in ({}, {"_queryFilter": 'userName sw "q"'}, {"_sortKeys": "-userName"}, {"_pageSize": "2"}):
        for fields in ("userName,roles/*", "userName,roles/name", "roles/*,roles/assignments"):
            found = _query(api, "user", fields, **params)
            assert found, (params, fields)
            for user in found:
                read = _get(api, f"user/{user['_id']}", fields)
                assert user == read, (params, fields, user, read)
    by_name = {u["userName"]: u for u in _query(api, "user", "userName,roles/*")}
    assert [(r["_refResourceId"], r["name"], r["description"]) for r in by_name["q1"]["roles"]] == \
        [(role_id, "staff", "Staff")]
    assert sorted(r["name"] for r in by_name["q2"]["roles"]) == ["other", "staff"]
    assert by_name["q3"]["roles"] == [] and set(by_name["q3"]) == {"_id", "_rev", "userName", "roles"}
    assert "members" not in by_name["q1"]["roles"][0] and "sn" not in by_name["q1"]
    (named,) = _query(api, "user", "userName,roles/name", _queryFilter=f'_id eq "{two["_id"]}"')
    assert sorted(set(r) - {"_ref", "_refResourceCollection", "_refResourceId", "_refProperties"}
                  for r in named["roles"]) == [{"_id", "_rev", "name"}] * 2
    listed = api.get("/openidm/managed/user", params={"_queryId": "query-all", "_fields": "userName,roles/*"},
                     headers=ADMIN)
    assert listed.status_code == 200, listed.text
    assert {u["userName"]: sorted(r["name"] for r in u["roles"]) for u in listed.json()["result"]} == \
        {"q1": ["staff"], "q2": ["other", "staff"], "q3": []}
    assert user_id in {u["_id"] for u in listed.json()["result"]}


def test_a_query_reads_the_references_of_its_page_at_once(api: httpx.Client) -> None:
    """A query's expanded references are read together for the page: the statements it
    sends to the store are as many for 12 users with roles as for 2."""
    role = _created(api, "role", {"name": "staff", "description": "Staff"})

    def statements(count: int) -> int:
        for i in range(count):
            _created(api, "user", {"userName": f"u{count}-{i}", "sn": "S",
                                   "roles": [{"_ref": f"managed/role/{role['_id']}"}]})
        seen: list[str] = []

        def listen(*args: Any) -> None:
            seen.append(args[2])

        event.listen(Engine, "before_cursor_execute", listen)
        try:
            found = _query(api, "user", "userName,roles/*", _queryFilter=f'userName sw "u{count}-"')
        finally:
            event.remove(Engine, "before_cursor_execute", listen)
        assert len(found) == count and all(u["roles"][0]["name"] == "staff" for u in found), found
        return len(seen)

    assert statements(12) == statements(2)


def test_an_expanded_reference_in_a_query_never_shows_a_secret_nor_a_private_property(tmp_path: Path) -> None:
    """A query of roles with their members expanded (``members/*``, the properties named)
    carries no member's password, even hashed, nor a ``"scope": "private"`` property."""
    with serve(_with_private_member(tmp_path)) as api:
        _created(api, "role", {"name": "staff", "members": [{"_ref": "managed/user/q9"}]})
        for fields in ("members/*", "name,members/*,members/password,members/lastSync", "members/lastSync"):
            r = api.get("/openidm/managed/role", params={"_queryFilter": "true", "_fields": fields}, headers=ADMIN)
            assert r.status_code == 200, r.text
            (role,) = r.json()["result"]
            (member,) = role["members"]
            assert member["_refResourceId"] == "q9", (fields, member)
            assert "password" not in member and "lastSync" not in member, (fields, member)
            assert "kept-back" not in r.text and "Secret" not in r.text and "$" not in r.text, r.text
        (role,) = _query(api, "role", "members/*")
        assert role["members"][0]["userName"] == "q9"


def test_the_answer_of_a_change_is_shaped_by_fields(api: httpx.Client) -> None:
    """A create, a PUT, a PATCH and ``_action=patch`` answer only the ``_fields`` asked
    for (relationships expanded, ``*`` the default fields), as a read would."""
    user_id, role_id = _staff(api)
    created = _created(api, "user", {"userName": "q2", "sn": "Two"}, "&_fields=_id")
    assert set(created) == {"_id", "_rev"}
    patch = [{"operation": "replace", "field": "/sn", "value": "Uno"}]
    r = api.patch(f"/openidm/managed/user/{user_id}", params={"_fields": "userName,roles"}, headers=JSON,
                  content=json.dumps(patch))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"_id", "_rev", "userName", "roles"}
    assert [x["_refResourceId"] for x in r.json()["roles"]] == [role_id]
    r = api.post(f"/openidm/managed/user/{user_id}", params={"_action": "patch", "_fields": "sn"}, headers=JSON,
                 content=json.dumps([{"operation": "replace", "field": "/sn", "value": "Eins"}]))
    assert r.status_code == 200 and r.json() == {"_id": user_id, "_rev": r.json()["_rev"], "sn": "Eins"}, r.text
    r = api.put(f"/openidm/managed/user/{created['_id']}", params={"_fields": "*,roles/*"}, headers=JSON,
                content=json.dumps({"userName": "q2", "sn": "Deux", "roles": [{"_ref": f"managed/role/{role_id}"}]}))
    assert r.status_code == 200, r.text
    assert r.json()["sn"] == "Deux" and [x["name"] for x in r.json()["roles"]] == ["staff"]


def test_patch_copies_moves_and_transforms_over_rest_and_in_scripts(api: httpx.Client) -> None:
    """PATCH takes CREST's copy, move and transform: the object is stored with the values
    copied, moved and made by the script (which runs in the sandbox); a script's
    ``openidm.patch`` takes them too; a transform whose script throws is a 400 naming the
    operation, and changes nothing."""
    created = _created(api, "user", {"userName": "q3", "sn": "Three", "mail": "q3@example.com"})
    ops = [{"operation": "copy", "from": "/sn", "field": "/description"},
           {"operation": "move", "from": "/mail", "field": "/displayName"},
           {"operation": "transform", "field": "/sn",
            "value": {"script": {"type": "text/javascript", "source": "content.toUpperCase()"}}}]
    r = api.patch(f"/openidm/managed/user/{created['_id']}", headers=JSON, content=json.dumps(ops))
    assert r.status_code == 200, r.text
    stored = _get(api, f"user/{created['_id']}", "*")
    assert (stored["sn"], stored["description"], stored["displayName"]) == ("THREE", "Three", "q3@example.com")
    assert "mail" not in stored
    bad = [{"operation": "transform", "field": "/sn",
            "value": {"script": {"type": "text/javascript", "source": "throw new Error('no')"}}}]
    r = api.patch(f"/openidm/managed/user/{created['_id']}", headers=JSON, content=json.dumps(bad))
    assert r.status_code == 400 and "operation 0" in r.json()["message"], r.text
    assert _get(api, f"user/{created['_id']}", "*")["_rev"] == stored["_rev"]

    r = api.get("/openidm/endpoint/lower", params={"id": created["_id"]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    stored = _get(api, f"user/{created['_id']}", "*")
    assert (stored["sn"], stored["mail"]) == ("three", "q3@example.com") and "displayName" not in stored


def test_a_property_not_returned_by_default_is_left_out_of_queries_too(tmp_path: Path) -> None:
    """A plain property whose ``returnByDefault`` is false is in a query's results, as in a
    read's answer, only when ``_fields`` names it: not without ``_fields``, nor with ``*``."""
    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    user = next(o for o in managed["objects"] if o["name"] == "user")
    user["schema"]["properties"]["notes"] = {"type": "string", "returnByDefault": False}
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(managed))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    with serve(tmp_path / "p") as api:
        made = _created(api, "user", {"userName": "q1", "sn": "One", "mail": "q1@example.com", "notes": "hush"})
        for fields in ("", "*", "userName"):
            assert "notes" not in _get(api, f"user/{made['_id']}", fields), fields
            (found,) = api.get("/openidm/managed/user", params={"_queryFilter": "true", **(
                {"_fields": fields} if fields else {})}, headers=ADMIN).json()["result"]
            assert "notes" not in found and found["userName"] == "q1", (fields, found)
        for fields in ("notes", "*,notes"):
            assert _get(api, f"user/{made['_id']}", fields)["notes"] == "hush"
            (found,) = api.get("/openidm/managed/user", params={"_queryFilter": "true", "_fields": fields},
                               headers=ADMIN).json()["result"]
            assert found["notes"] == "hush" and ("sn" in found) == (fields == "*,notes"), (fields, found)
