"""Policies that judge an absent property (``store/policy.py``): a create judges every
property the type declares, as PingIDM's ``validateObject`` does, so ``required``
(a property's own, or one ``conditionalPolicies`` apply) refuses an object that
leaves the property out, on every path that writes the store: the command line, the
API, a recon. An update judges what it changes, and the properties whose
``conditionalPolicies`` depend on what it changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from idsync.resource import QuerySpec
from idsync.store.validation import PolicyFailed
from store_projects import failed_policies, managed_objects

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}
_JS = "text/javascript"
STAFF_ONLY = {"condition": {"type": _JS, "source": "fullObject.kind === 'staff'"}, "dependencies": ["kind"],
              "policies": [{"policyId": "required"}]}
USER: dict[str, Any] = {"name": "user", "schema": {"required": ["userName"], "properties": {
    "userName": {"type": "string", "searchable": True, "policies": [{"policyId": "unique"}]},
    "dept": {"type": "string", "policies": [{"policyId": "required"}]},
    "kind": {"type": "string"},
    "badge": {"type": "string", "conditionalPolicies": [STAFF_ONLY]},
    # Absent: passed by the policies that judge only a value, run by a custom one without
    # validateOnlyIfPresent, skipped by one with it.
    "code": {"type": "string", "policies": [{"policyId": "regexpMatches", "params": {"regexp": "^[A-Z]+$"}},
                                            {"policyId": "unique"}, {"policyId": "if-present"}]},
    "site": {"type": "string", "policies": [{"policyId": "always"}]},
}}}
CUSTOM = """
addPolicy({policyId: "always", policyExec: "always", policyRequirements: ["SITE"]});
addPolicy({policyId: "if-present", policyExec: "ifPresent", policyRequirements: ["NEVER"],
           validateOnlyIfPresent: true});
function always(fullObject, value, params, property) {
  return value === null || value === undefined ? [{policyRequirement: "SITE"}] : [];
}
function ifPresent(fullObject, value, params, property) { return [{policyRequirement: "NEVER"}]; }
"""
STAFF = {"name": "staff", "schema": {"properties": {"login": {"type": "string", "searchable": True},
                                                    "dept": {"type": "string"}}}}
MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
           "properties": [{"source": "login", "target": "userName"}, {"source": "dept", "target": "dept"},
                          {"source": "login", "target": "site"}],
           "policies": [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "UPDATE"},
                        {"situation": "CONFIRMED", "action": "UPDATE"}]}


def _write(project: Path, user: dict[str, Any]) -> None:
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [user, STAFF]}))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    conf = project / "conf"
    (project / "script").mkdir(parents=True)
    conf.mkdir()
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "sync.json").write_text(json.dumps({"mappings": [MAPPING]}))
    (conf / "policy.json").write_text(json.dumps({"type": _JS, "file": "policy.js",
                                                  "additionalFiles": ["script/custom.js"], "resources": []}))
    (project / "script" / "custom.js").write_text(CUSTOM)
    _write(project, USER)
    return project


def test_a_create_judges_the_properties_it_leaves_out(project: Path) -> None:
    """``required`` refuses a create without the property, and a ``required`` that
    ``conditionalPolicies`` apply refuses one whose condition holds; a custom policy
    without validateOnlyIfPresent is asked about an absent property; regexpMatches,
    unique and a policy with validateOnlyIfPresent pass it."""
    with managed_objects(project) as managed:
        users = managed("user")
        with pytest.raises(PolicyFailed) as caught:
            users.create({"userName": "u7"})
        assert failed_policies(caught.value) == {"dept": ["REQUIRED"], "site": ["SITE"]}
        assert "dept is required" in str(caught.value)
        with pytest.raises(PolicyFailed) as caught:
            users.create({"userName": "u5", "kind": "staff", "dept": "ops", "site": "x"})
        assert failed_policies(caught.value) == {"badge": ["REQUIRED"]}
        made = users.create({"userName": "u6", "kind": "contractor", "dept": "ops", "site": "x"}).object
        assert made is not None and "badge" not in made and "code" not in made


def test_an_update_judges_what_it_changes_and_what_depends_on_it(project: Path) -> None:
    """An update that leaves an absent property alone is not refused for it (the object
    was stored before the policy was added); one that removes it is; one that changes
    a conditional policy's dependency judges the dependent property again."""
    _write(project, {"name": "user", "schema": {"properties": {
        k: {"type": v["type"]} for k, v in USER["schema"]["properties"].items()}}})
    with managed_objects(project) as managed:
        old = managed("user").create({"userName": "old"}).object
        assert old is not None
    _write(project, USER)
    with managed_objects(project) as managed:
        users = managed("user")
        users.patch(old["_id"], [{"operation": "replace", "field": "/kind", "value": "contractor"}])
        with pytest.raises(PolicyFailed) as caught:
            users.patch(old["_id"], [{"operation": "replace", "field": "/kind", "value": "staff"}])
        assert failed_policies(caught.value) == {"badge": ["REQUIRED"]}
        made = users.create({"userName": "new", "dept": "ops", "site": "x"}).object
        assert made is not None
        with pytest.raises(PolicyFailed) as caught:
            users.patch(made["_id"], [{"operation": "remove", "field": "/dept"}])
        assert failed_policies(caught.value) == {"dept": ["REQUIRED"]}


def test_the_cli_and_the_api_refuse_a_missing_required_property(project: Path) -> None:
    """The command line exits 65 naming the property; the API answers 403 with
    ``REQUIRED`` in PingIDM's failedPolicyRequirements; validateObject says the same."""
    done = idsync(project, "managed", "create", "user", "--data", json.dumps({"userName": "u7", "site": "x"}))
    assert done.returncode == 65, done.stderr
    assert "  dept is required" in done.stderr
    with serve(project) as api:
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "u5", "kind": "staff", "dept": "ops", "site": "x"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"]["failedPolicyRequirements"] == [
            {"property": "badge", "policyRequirements": [{"policyRequirement": "REQUIRED"}]}]
        checked = api.post("/openidm/policy/managed/user/*?_action=validateObject", headers=JSON,
                           json={"userName": "u8", "site": "x"}).json()
        assert checked == {"result": False, "failedPolicyRequirements": [
            {"property": "dept", "policyRequirements": [{"policyRequirement": "REQUIRED"}]}]}


def test_a_recon_fails_the_source_lacking_a_required_property_alone(project: Path) -> None:
    """A source object without the required property fails alone, with the policy's
    message; the others are created and the run succeeds."""
    with managed_objects(project) as managed:
        staff = managed("staff")
        staff.create({"login": "fay", "dept": "ops"}, object_id="s1")
        staff.create({"login": "gus"}, object_id="s2")
    done = idsync(project, "recon", "staff_user", "--json")
    summary = json.loads(done.stdout)
    assert summary["state"] == "SUCCESS" and summary["changes"]["failed"] == 1, done.stdout
    assert [e["source_id"] for e in summary["errors"]] == ["s2"]
    assert "dept is required" in summary["errors"][0]["message"]
    with managed_objects(project) as managed:
        assert [u["userName"] for u in managed("user")._resource.find(QuerySpec())] == ["fay"]
