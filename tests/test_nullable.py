"""``nullable`` in ``managed.json`` (``config/managed.py``, ``store/validation.py``): a
property that says ``"nullable": false`` may not be set to null by a request (the API,
the command line, a script's ``openidm``, ``policy?_action=validateObject``), as
PingIDM's ``valid-type`` refuses a null its type does not take; ``"nullable": true`` is
``"null"`` in the type list (no ``not-empty`` from a list without it); a value that
says both is an error. Against a real store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from idsync.config.objectmodel import schema_policies
from store_projects import CREATE_UPDATE, store_project

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}
USER = {"userName": {"type": "string", "searchable": True},
        "mail": {"type": "string", "nullable": False},  # may be left out, never set to null
        "nickname": {"type": ["string"], "nullable": True},  # PingIDM's admin UI: ["string", "null"]
        "badge": {"type": ["string"]},  # a list without "null": not-empty
        "phone": {"type": "string"}}
STAFF = {"login": {"type": "string", "searchable": True}, "email": {"type": "string"}}
MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user", "enableSync": False,
           "properties": [{"source": "login", "target": "userName"}, {"source": "email", "target": "mail"}],
           "policies": CREATE_UPDATE}
NULL_MAIL = [{"property": "mail", "policyRequirements": [{"policyRequirement": "VALID_TYPE", "params": {
    "invalidType": "null", "validTypes": ["string"]}}]}]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return store_project(tmp_path, {"user": USER, "staff": STAFF}, [MAPPING])


def _failed(answer: Any) -> Any:
    assert answer.status_code == 403, answer.text
    return answer.json()["detail"]["failedPolicyRequirements"]


def test_a_null_given_to_a_property_that_is_not_nullable_is_refused(project: Path) -> None:
    """Over the API a create, a replace and a patch setting ``mail`` to null are refused
    with PingIDM's VALID_TYPE (invalidType null), nothing written; leaving it out of a
    create or a replace, and a patch ``remove``, are no null. A property that says nothing
    takes null as before (it removes the property)."""
    with serve(project) as api:
        assert _failed(api.post("/openidm/managed/user?_action=create", headers=JSON,
                                json={"userName": "ann", "mail": None})) == NULL_MAIL
        assert api.get("/openidm/managed/user?_queryFilter=true", headers=ADMIN).json()["resultCount"] == 0
        made = api.post("/openidm/managed/user?_action=create", headers=JSON,
                        json={"userName": "ann", "mail": "ann@example.com", "phone": "555"})
        assert made.status_code == 201, made.text
        url = f"/openidm/managed/user/{made.json()['_id']}"
        assert _failed(api.put(url, headers=JSON, json={"userName": "ann", "mail": None})) == NULL_MAIL
        assert _failed(api.patch(url, headers=JSON, json=[
            {"operation": "replace", "field": "/mail", "value": None}])) == NULL_MAIL
        assert api.get(url, headers=ADMIN).json()["mail"] == "ann@example.com"
        nulled = api.patch(url, headers=JSON, json=[{"operation": "replace", "field": "/phone", "value": None}])
        assert nulled.status_code == 200 and "phone" not in nulled.json()
        removed = api.patch(url, headers=JSON, json=[{"operation": "remove", "field": "/mail"}])
        assert removed.status_code == 200 and "mail" not in removed.json()
        assert api.put(url, headers=JSON, json={"userName": "ann"}).status_code == 200
        checked = api.post("/openidm/policy/managed/user?_action=validateObject", headers=JSON,
                           json={"userName": "bob", "mail": None}).json()
        assert checked == {"result": False, "failedPolicyRequirements": NULL_MAIL}
        described = {p["name"]: p for p in api.get("/openidm/policy/managed/user", headers=ADMIN).json()["properties"]}
        assert {"policyId": "valid-type", "params": {"types": ["string"]}, "policyRequirements": ["VALID_TYPE"],
                "validateOnlyIfPresent": False} in described["mail"]["policies"]
        assert any(u["params"] == {"types": ["string", "null"]} for u in described["phone"]["policies"]
                   if u["policyId"] == "valid-type")
    refused = idsync(project, "managed", "create", "user", "--data", json.dumps({"userName": "cy", "mail": None}))
    assert refused.returncode == 65 and "mail must be of type string, not null" in refused.stderr, refused.stderr


def test_nullable_true_is_null_in_the_type_list(project: Path) -> None:
    """``"nullable": true`` beside a type list without ``"null"`` is that list with it, as
    PingIDM's admin UI writes it: no ``not-empty`` policy, so an empty string is taken,
    where the same list without ``nullable`` refuses it."""
    assert [u.policy_id for u in schema_policies(USER["nickname"])] == []
    assert [u.policy_id for u in schema_policies(USER["badge"])] == ["not-empty"]
    with serve(project) as api:
        taken = api.post("/openidm/managed/user?_action=create", headers=JSON, json={"userName": "dee", "nickname": ""})
        assert taken.status_code == 201, taken.text
        assert _failed(api.post("/openidm/managed/user?_action=create", headers=JSON,
                                json={"userName": "eve", "badge": ""})) == [
            {"property": "badge", "policyRequirements": [{"policyRequirement": "REQUIRED"}]}]


def test_a_mapping_that_gives_no_value_removes_the_property(project: Path) -> None:
    """A recon into the store never writes null: a source without a value leaves the
    property out of a create and removes it from an update, ``"nullable": false`` or not."""
    staff = {"s1": {"login": "fay", "email": "fay@example.com"}, "s2": {"login": "gus"}}
    for object_id, values in staff.items():
        made = idsync(project, "managed", "create", "staff", "--id", object_id, "--data", json.dumps(values))
        assert made.returncode == 0, made.stderr
    first = json.loads(idsync(project, "recon", "staff_user", "--json").stdout)
    assert first["state"] == "SUCCESS" and first["changes"]["created"] == 2, first
    assert idsync(project, "managed", "patch", "staff", "s1", "--operations",
                  json.dumps([{"operation": "remove", "field": "/email"}])).returncode == 0
    second = json.loads(idsync(project, "recon", "staff_user", "--json").stdout)
    assert second["state"] == "SUCCESS" and second["changes"]["updated"] == 1, second
    users = json.loads(idsync(project, "managed", "query", "user").stdout)
    assert sorted((u["userName"], u.get("mail")) for u in users) == [("fay", None), ("gus", None)]


@pytest.mark.parametrize(("pdef", "expected"), [
    ({"type": "string", "nullable": "no"}, "schema.properties.mail.nullable: expected true or false, not 'no'"),
    ({"type": ["string", "null"], "nullable": False},
     'schema.properties.mail.nullable: false, but its type list takes "null": keep one of the two'),
])
def test_a_nullable_that_cannot_be_read_is_an_error(tmp_path: Path, pdef: dict[str, Any], expected: str) -> None:
    """``nullable`` not a boolean, or false beside a type list holding ``"null"``: validate
    exits 78 naming the file and the key, rather than take one of the two at random."""
    project = store_project(tmp_path, {"user": {"userName": {"type": "string"}, "mail": pdef}}, [])
    done = idsync(project, "validate")
    assert done.returncode == 78 and expected in done.stdout, done.stdout + done.stderr
