"""OpenIDM's roles samples as idsync runs them (samples/roles-provrole, whose conf
roles-temporalConstraints shares): the READMEs' REST steps against the HTTP API, the LDAP
entries checked in a real slapd after each one. Employee and Contractor assignments set
employeeType and groups through the mapping they name; granting a role pushes them,
changing an assignment pushes its holders, taking the role back unassigns; a role's time
window applies and withdraws the Contractor assignment without a recon. The clock is
moved, not waited for."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from idsync.config import roles as roles_config
from idsync.config.project import load_project
from idsync.managed.router import push_due_scripted
from idsync.store.database import Store
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon
from idsync_dev.slapd import Slapd

from samples import ROOT, ldap_entry

SAMPLE = ROOT / "samples" / "roles-provrole"
FORWARD, REVERSE = "systemLdapAccounts_managedUser", "managedUser_systemLdapAccounts"
_PEOPLE, _GROUPS = "ou=People,dc=example,dc=com", "ou=Groups,dc=example,dc=com"


def _project(tmp_path: Path, slapd: Slapd, subtree: str) -> Path:
    project = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project / "conf")
    for path in (project / "conf").glob("*.json"):
        path.write_text(path.read_text().replace(_PEOPLE, subtree).replace(_GROUPS, subtree))
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"]["baseContexts"] = [subtree]  # this test's own entries, not the others'
    prov_file.write_text(json.dumps(prov, indent=2))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n[log]\nformat = "json"\n'
        'level = "warning"\n')
    slapd.add_ldif((SAMPLE / "data" / "Example.ldif").read_text().replace(_PEOPLE, subtree).replace(_GROUPS, subtree))
    return project


@pytest.fixture
def walk(tmp_path: Path, slapd: Slapd, ldap_subtree: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Walk]:
    monkeypatch.setenv("IDSYNC_LDAP_PORT", str(slapd.port))
    monkeypatch.setenv("IDSYNC_LDAP_PASSWORD", slapd.admin_password)
    project = _project(tmp_path, slapd, ldap_subtree)
    loaded = load_project(project)
    result = run_recon(loaded, Store.open(loaded.settings.store_url()), FORWARD, ReconOptions())
    assert result.state == "SUCCESS", result.message
    with serve(project) as client:
        yield Walk(client, slapd, ldap_subtree, project)


class Walk:
    def __init__(self, api: httpx.Client, slapd: Slapd, subtree: str, project: Path) -> None:
        self.api, self.slapd, self.subtree, self.project = api, slapd, subtree, project

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.api.request(method, f"/openidm/{path}", headers=ADMIN, json=body)
        assert r.status_code == status, r.text
        return r.json()

    def user_id(self, name: str) -> str:
        found = self.call("GET", f'managed/user?_queryFilter=/userName eq "{name}"&_fields=_id')["result"]
        return str(found[0]["_id"])

    def entry(self, uid: str) -> tuple[list[str], list[str]]:
        """(employeeType, group names) of the LDAP entry."""
        found = ldap_entry(self.slapd, f"uid={uid},{self.subtree}") or {}
        groups = sorted(g.split(",")[0].removeprefix("cn=") for g in found.get("memberof", []))
        return found.get("employeetype", []), groups

    def group(self, name: str) -> str:
        return f"cn={name},{self.subtree}"

    def assignment(self, name: str, groups: list[str]) -> dict[str, Any]:
        attributes = [{"name": "employeeType", "value": name, "assignmentOperation": "mergeWithTarget",
                       "unassignmentOperation": "removeFromTarget"}]
        if groups:
            attributes.insert(0, {"name": "ldapGroups", "value": [self.group(g) for g in groups],
                                  "assignmentOperation": "mergeWithTarget",
                                  "unassignmentOperation": "removeFromTarget"})
        return self.call("POST", "managed/assignment?_action=create", {
            "name": name, "description": f"Assignment for {name}s.", "mapping": REVERSE,
            "attributes": attributes}, status=201)

    def role(self, name: str) -> str:
        return str(self.call("POST", "managed/role?_action=create", {"name": name}, status=201)["_id"])

    def grant(self, user: str, role: str) -> dict[str, Any]:
        return self.call("PATCH", f"managed/user/{user}", [
            {"operation": "add", "field": "/roles/-", "value": {"_ref": f"managed/role/{role}"}}])


def test_roles_provrole_walkthrough(walk: Walk) -> None:
    """roles-provrole: the Employee assignment reaches bjensen when granted the role
    (employeeType), its added groups reach her when the assignment changes, jdoe gets
    Contractor's type and group, and taking the role back (DELETE of the grant) removes
    both while his own group stays."""
    employee, contractor = walk.role("Employee"), walk.role("Contractor")
    emp = walk.assignment("Employee", [])
    role = walk.call("PATCH", f"managed/role/{employee}", [
        {"operation": "add", "field": "/assignments/-", "value": {"_ref": f"managed/assignment/{emp['_id']}"}}])
    assert "assignments" not in role and role["name"] == "Employee"

    bjensen = walk.user_id("bjensen")
    granted = walk.grant(bjensen, employee)
    assert granted["effectiveRoles"] == [{"_ref": f"managed/role/{employee}"}]
    assert [a["_id"] for a in granted["effectiveAssignments"]] == [emp["_id"]]
    assert "roles" not in granted
    read = walk.call("GET", 'managed/user?_queryFilter=/userName eq "bjensen"'
                     "&_fields=_id,userName,roles,effectiveRoles,effectiveAssignments")["result"][0]
    assert [r["_ref"] for r in read["roles"]] == [f"managed/role/{employee}"]
    assert read["effectiveAssignments"][0]["attributes"][0]["value"] == "Employee"
    assert walk.entry("bjensen") == (["Employee"], ["openidm2"])

    walk.call("PATCH", f"managed/assignment/{emp['_id']}", [{"operation": "add", "field": "/attributes/-", "value": {
        "name": "ldapGroups", "value": [walk.group("Employees"), walk.group("Chat Users")],
        "assignmentOperation": "mergeWithTarget", "unassignmentOperation": "removeFromTarget"}}])
    assert walk.entry("bjensen") == (["Employee"], ["Chat Users", "Employees", "openidm2"])

    con = walk.assignment("Contractor", ["Contractors"])
    walk.call("PATCH", f"managed/role/{contractor}", [
        {"operation": "add", "field": "/assignments/-", "value": {"_ref": f"managed/assignment/{con['_id']}"}}])
    jdoe = walk.user_id("jdoe")
    walk.grant(jdoe, contractor)
    assert walk.entry("jdoe") == (["Contractor"], ["Contractors", "openidm"])

    grant = walk.call("GET", f"managed/user/{jdoe}?_fields=_id,roles")["roles"][0]
    walk.call("DELETE", f"managed/user/{jdoe}/roles/{grant['_refProperties']['_id']}")
    assert walk.entry("jdoe") == ([], ["openidm"])
    assert walk.entry("bjensen") == (["Employee"], ["Chat Users", "Employees", "openidm2"])

    loaded = load_project(walk.project)
    again = run_recon(loaded, Store.open(loaded.settings.store_url()), REVERSE, ReconOptions())
    assert again.state == "SUCCESS" and again.summary["changes"].get("updated", 0) == 0, again.summary


def test_roles_temporal_constraints_walkthrough(walk: Walk, monkeypatch: pytest.MonkeyPatch) -> None:
    """roles-temporalConstraints: jdoe granted a Contractor role whose window starts in five
    minutes has no effective role yet; when the window opens the daemon's timer pushes him
    into Contractors with his type, when it closes takes both back; the role stays granted."""
    contractor = walk.role("Contractor")
    con = walk.assignment("Contractor", ["Contractors"])
    walk.call("PATCH", f"managed/role/{contractor}", [
        {"operation": "add", "field": "/assignments/-", "value": {"_ref": f"managed/assignment/{con['_id']}"}}])
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=5)
    end = start + dt.timedelta(minutes=5)
    duration = f"{start.isoformat().replace('+00:00', '.000Z')}/{end.isoformat().replace('+00:00', '.000Z')}"
    role = walk.call("PATCH", f"managed/role/{contractor}", [
        {"operation": "add", "field": "/temporalConstraints", "value": [{"duration": duration}]}])
    assert role["temporalConstraints"] == [{"duration": duration}]
    jdoe = walk.user_id("jdoe")
    granted = walk.grant(jdoe, contractor)
    assert granted["effectiveRoles"] == [] and granted["effectiveAssignments"] == []
    assert walk.entry("jdoe") == ([], ["openidm"])

    loaded = load_project(walk.project)
    store = Store.open(loaded.settings.store_url())
    checked = dt.datetime.now(dt.UTC)
    for at, expected in ((start + dt.timedelta(seconds=1), (["Contractor"], ["Contractors", "openidm"])),
                         (end + dt.timedelta(seconds=1), ([], ["openidm"]))):
        monkeypatch.setattr(roles_config, "now", lambda at=at: at)
        pushes = push_due_scripted(loaded, store, checked, at)
        checked = at
        assert [p.source_id for p in pushes] == [jdoe] and all(p.ok for p in pushes), pushes
        assert walk.entry("jdoe") == expected
        read = walk.call("GET", 'managed/user?_queryFilter=/userName sw "jdoe"'
                         "&_fields=roles,effectiveRoles,effectiveAssignments")["result"][0]
        assert len(read["roles"]) == 1 and len(read["effectiveRoles"]) == (1 if expected[0] else 0)


_ENDED = {"temporalConstraints": [{"duration": "2020-01-01T00:00:00.000Z/2020-02-01T00:00:00.000Z"}]}


def test_a_grant_window_changed_reaches_the_directory_at_once(walk: Walk) -> None:
    """A change of a kept grant's ``_refProperties`` alone is a change of the grant for
    both ends: a PUT of the reference from the role's ``members`` or from the user's
    ``roles``, a PATCH replacing the role's members and a PUT of the whole role or user
    each push jdoe at once (no recon), recorded in audit/sync: a window already ended takes
    Contractor's type and group out of his entry and the role out of his effective roles,
    the window removed puts them back. A PUT of the same properties pushes nothing and
    leaves the revisions of the reference and of both ends where they were."""
    contractor = walk.role("Contractor")
    con = walk.assignment("Contractor", ["Contractors"])
    walk.call("PATCH", f"managed/role/{contractor}", [
        {"operation": "add", "field": "/assignments/-", "value": {"_ref": f"managed/assignment/{con['_id']}"}}])
    jdoe = walk.user_id("jdoe")
    walk.grant(jdoe, contractor)
    granted, withdrawn = (["Contractor"], ["Contractors", "openidm"]), ([], ["openidm"])
    assert walk.entry("jdoe") == granted
    role, user = f"managed/role/{contractor}", f"managed/user/{jdoe}"

    def effective() -> list[str]:
        return [r["_ref"] for r in walk.call("GET", f"{user}?_fields=effectiveRoles")["effectiveRoles"]]

    def pushes() -> int:
        return int(walk.call("GET", f'audit/sync?_queryFilter=sourceObjectId eq "{user}"')["resultCount"])

    def member() -> dict[str, Any]:
        (ref,) = walk.call("GET", f"{role}/members?_queryFilter=true")["result"]
        return dict(ref)

    row = member()["_id"]
    for path, props, entry in ((f"{role}/members/{row}", _ENDED, withdrawn), (f"{role}/members/{row}", {}, granted),
                               (f"{user}/roles/{row}", _ENDED, withdrawn), (f"{user}/roles/{row}", {}, granted)):
        before = pushes()
        walk.call("PUT", path, {"_refProperties": props})
        assert walk.entry("jdoe") == entry, path
        assert effective() == ([role] if entry == granted else []), path
        assert pushes() == before + 1, path

    before, kept, revs = pushes(), member(), [walk.call("GET", path)["_rev"] for path in (role, user)]
    for path in (f"{role}/members/{row}", f"{user}/roles/{row}"):
        assert walk.call("PUT", path, {"_refProperties": {}})["_rev"] == kept["_rev"], path
    assert pushes() == before and member() == kept
    assert [walk.call("GET", path)["_rev"] for path in (role, user)] == revs

    walk.call("PATCH", role, [{"operation": "replace", "field": "/members",
                               "value": [{"_ref": user, "_refProperties": _ENDED}]}])
    assert walk.entry("jdoe") == withdrawn and effective() == []
    for path, name, other, props, entry in ((role, "members", user, {}, granted),
                                            (user, "roles", role, _ENDED, withdrawn),
                                            (role, "members", user, {}, granted)):
        body = walk.call("GET", f"{path}?_fields=*,{name}")
        walk.call("PUT", path, {**body, name: [{"_ref": other, "_refProperties": props}]})
        assert walk.entry("jdoe") == entry, path
        assert effective() == ([role] if entry == granted else []), path
