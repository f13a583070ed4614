"""The policies PingIDM's policy service derives from a managed property's JSON schema:
``minLength`` and ``pattern`` of a string, ``not-empty`` for a ``minLength`` above 0.
PingIDM's default managed.json relies on them (a password of at least 8 characters, a
telephone number of digits and separators, a user name that is not empty), on every
path that writes the store: the API, a recon, and ``GET policy`` describes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from idsync.config.objectmodel import js_regexp, schema_policies
from idsync.resource import QuerySpec
from idsync.store.validation import PolicyFailed
from store_projects import failed_policies, managed_objects

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}
PHONE = "^\\+?([0-9\\- \\(\\)])*$"  # PingIDM's default managed.json, telephoneNumber
# The schema keywords as PingIDM's default managed.json writes them for a user, and a
# property typed by a list without "null".
USER: dict[str, Any] = {"name": "user", "schema": {"required": ["userName"], "properties": {
    "userName": {"type": "string", "searchable": True, "minLength": 1, "policies": [{"policyId": "unique"}]},
    "password": {"type": "string", "minLength": 8, "scope": "private",
                 "policies": [{"policyId": "at-least-X-numbers", "params": {"numNums": 1}}]},
    "telephoneNumber": {"type": "string", "pattern": PHONE},
    "employeeId": {"type": ["string"], "minLength": "3"},  # parseInt("3")
    "nickname": {"type": "string", "pattern": "^(?<first>\\w)\\k<first>"},  # JavaScript's named groups
    "displayName": {"type": "string", "pattern": "^\\p{L}+$"},  # JavaScript's \p{L}: Python's re has none
}}}
STAFF = {"name": "staff", "schema": {"properties": {"login": {"type": "string", "searchable": True},
                                                    "phone": {"type": "string"}}}}
MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
           "properties": [{"source": "login", "target": "userName"}, {"source": "phone", "target": "telephoneNumber"}],
           "policies": [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "UPDATE"},
                        {"situation": "CONFIRMED", "action": "UPDATE"}]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "managed.json").write_text(json.dumps({"objects": [USER, STAFF]}))
    (conf / "sync.json").write_text(json.dumps({"mappings": [MAPPING]}))
    return tmp_path / "p"


def _matches(pattern: str, text: str, flags: str = "") -> bool:
    compiled = js_regexp(pattern, flags)
    assert compiled is not None, pattern
    return compiled.search(text) is not None


def test_javascript_patterns_read_as_javascript_reads_them() -> None:
    assert _matches(PHONE, "+1 (408) 555-1212") and not _matches(PHONE, "call me")
    # $ ends the value: Python's own would also match before a final line break.
    assert not _matches("^[0-9]*$", "555\n") and _matches("^[0-9]*$", "555\nabc", "m")
    assert _matches("[$]", "$") and _matches("\\$", "$")
    assert _matches("^(?<a>x)\\k<a>$", "xx") and not _matches("^(?<a>x)\\k<a>$", "xy")
    assert _matches("(?<=a)b", "ab")  # a look-behind stays one
    assert _matches("^abc$", "ABC", "i")
    assert js_regexp("^\\p{L}+$", "u") is None and js_regexp("(") is None
    # \d, \w and \b are ASCII's in JavaScript: fullwidth digits are not digits there.
    assert _matches("^\\d{3}$", "123") and not _matches("^\\d{3}$", "\uff11\uff12\uff13")
    assert _matches("^[\\d-]+$", "12-3") and not _matches("^[\\d-]+$", "\u0661\u0662")
    assert _matches("^\\w+$", "jdoe_1") and not _matches("^\\w+$", "j\u00f6rg")
    assert _matches("^\\D+$", "\u0661") and _matches("^\\W$", "\u00e9")
    assert _matches("\\bdoe\\b", "j doe") and _matches("\\bdoe", "\u00e9doe")  # \u00e9: no word character
    assert _matches("x\\By", "xy") and not _matches("\\Bdoe", "j doe")
    assert _matches("^[\\b]$", "\b")  # in a class, a backspace, as in both
    # [] matches nothing, [^] any character (a line break too).
    assert not _matches("a[]", "a") and not _matches("a[]", "a]") and _matches("^a[^]b$", "a\nb")


def test_schema_keywords_become_policies_ahead_of_the_propertys_own() -> None:
    described = {name: [(u.policy_id, dict(u.params)) for u in schema_policies(pdef)]
                 for name, pdef in USER["schema"]["properties"].items()}
    assert described == {
        "userName": [("not-empty", {}), ("minimum-length", {"minLength": 1})],
        "password": [("not-empty", {}), ("minimum-length", {"minLength": 8})],
        "telephoneNumber": [("regexpMatches", {"regexp": PHONE})],
        "employeeId": [("not-empty", {}), ("minimum-length", {"minLength": 3})],
        "nickname": [("regexpMatches", {"regexp": "^(?<first>\\w)\\k<first>"})],
        "displayName": [],  # idsync validate names it
    }
    # minLength of a type other than string: not-empty only, as PingIDM's policy.js.
    assert [u.policy_id for u in schema_policies({"type": "object", "minLength": 8})] == ["not-empty"]
    assert schema_policies({"type": ["string", "null"], "minLength": 0}) != []  # minimum-length 0
    assert schema_policies({"type": "string", "minLength": "many"}) == []  # parseInt: NaN


def test_a_store_write_breaking_them_is_refused(project: Path) -> None:
    with managed_objects(project) as managed:
        users = managed("user")
        with pytest.raises(PolicyFailed) as caught:
            users.create({"userName": "", "password": "Ab1", "telephoneNumber": "call me", "employeeId": "12",
                          "nickname": "ab"})
        assert failed_policies(caught.value) == {"userName": ["REQUIRED", "MIN_LENGTH"], "password": ["MIN_LENGTH"],
                                         "telephoneNumber": ["MATCH_REGEXP"], "employeeId": ["MIN_LENGTH"],
                                         "nickname": ["MATCH_REGEXP"]}
        assert f"telephoneNumber must match {PHONE} (MATCH_REGEXP)" in str(caught.value)
        assert "call me" not in str(caught.value) and "Ab1" not in str(caught.value)
        with pytest.raises(PolicyFailed) as caught:
            users.create({"userName": "ann", "telephoneNumber": "555-1212\n"})  # JavaScript's $
        assert failed_policies(caught.value) == {"telephoneNumber": ["MATCH_REGEXP"]}
        made = users.create({"userName": "ann", "password": "Secret123", "telephoneNumber": "+1 (408) 555-1212",
                             "employeeId": "123", "nickname": "aab", "displayName": "Ann 2"}).object
        assert made is not None and made["telephoneNumber"] == "+1 (408) 555-1212"
        with pytest.raises(PolicyFailed) as caught:
            users.patch(made["_id"], [{"operation": "replace", "field": "/telephoneNumber", "value": "ext. 12"}])
        assert failed_policies(caught.value) == {"telephoneNumber": ["MATCH_REGEXP"]}
        users.patch(made["_id"], [{"operation": "remove", "field": "/telephoneNumber"}])  # absent is fine
        assert "telephoneNumber" not in users.get(made["_id"])


def test_the_api_refuses_and_describes_them(project: Path) -> None:
    with serve(project) as api:
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "dee", "password": "Short1", "telephoneNumber": "none"})
        assert refused.status_code == 403, refused.text
        failed = {f["property"]: f["policyRequirements"] for f in refused.json()["detail"]["failedPolicyRequirements"]}
        assert failed == {"password": [{"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}}],
                          "telephoneNumber": [{"policyRequirement": "MATCH_REGEXP", "params": {"regexp": PHONE}}]}
        assert api.post("/openidm/managed/user?_action=create", headers=JSON,
                        json={"userName": "dee", "password": "Longer123", "telephoneNumber": "555 1212"}
                        ).status_code == 201
        prop = api.post("/openidm/policy/managed/user?_action=validateProperty", headers=JSON,
                        json={"password": "Abc1"}).json()
        assert prop["result"] is False
        described = {p["name"]: p for p in api.get("/openidm/policy/managed/user", headers=ADMIN).json()["properties"]}
        assert [u["policyId"] for u in described["password"]["policies"]] == [
            "not-empty", "minimum-length", "at-least-X-numbers", "valid-type"]
        assert {"policyId": "regexpMatches", "params": {"regexp": PHONE}, "policyRequirements": ["MATCH_REGEXP"],
                "validateOnlyIfPresent": False} in described["telephoneNumber"]["policies"]


def test_a_recon_fails_the_entry_that_breaks_them_not_the_run(project: Path) -> None:
    with managed_objects(project) as managed:
        staff = managed("staff")
        staff.create({"login": "fay", "phone": "+44 20 7946 0000"}, object_id="s1")
        staff.create({"login": "gus", "phone": "ask reception"}, object_id="s2")
        staff.create({"login": "hal"}, object_id="s3")
    done = idsync(project, "recon", "staff_user", "--json")
    summary = json.loads(done.stdout)
    assert summary["state"] == "SUCCESS" and summary["changes"]["failed"] == 1, done.stdout
    assert [e["source_id"] for e in summary["errors"]] == ["s2"]
    assert f"telephoneNumber must match {PHONE} (MATCH_REGEXP)" in summary["errors"][0]["message"]
    with managed_objects(project) as managed:
        users = managed("user")._resource.find(QuerySpec())
    assert sorted(u["userName"] for u in users) == ["fay", "hal"]
    warned = idsync(project, "validate")
    assert "objects[0].schema.properties.displayName.pattern: not enforced: a pattern of managed/user that " \
        "Python's regular expressions cannot run" in warned.stderr, warned.stderr
    assert "telephoneNumber" not in warned.stderr and ".minLength" not in warned.stderr
