"""The managed object model of managed.json on every path that writes the store:
policies (built-in and custom), object and property scripts, and secrets at rest.

The projects here need no directory: a mapping from one managed type
(``managed/staff``) to another (``managed/user``) gives a recon and implicit
synchronization whose target is the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from api_server import ADMIN, serve
from idsync.config.managed import DEFAULT_MANAGED, parse_managed
from idsync.config.objectmodel import load_object_models
from idsync.config.project import load_project
from idsync.crypto import is_hashed, matches
from idsync.errors import ConfigError, ObjectRejected
from idsync.managed import ManagedObjects
from idsync.managed.router import scripting
from idsync.resource import QuerySpec, WriteOp
from idsync.resources import Resources
from idsync.scripts import ScriptEngine
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.passwords import hash_secret, same_secret
from idsync.store.validation import PolicyFailed
from idsync.sync.recon import run_recon
from store_projects import managed_objects

from samples import idsync

ROOT = Path(__file__).resolve().parent.parent
JSON = {**ADMIN, "Content-Type": "application/json"}
_JS = "text/javascript"

USER: dict[str, Any] = {
    "name": "user",
    "onCreate": {"type": _JS, "source": "object.createdBy = 'onCreate'; object.mail = object.mail || "
                                        "(object.userName + '@example.com');"},
    "onUpdate": {"type": _JS, "source": "newObject.previousSn = oldObject.sn || null;"},
    "onDelete": {"type": _JS, "source": "if (object.locked) { throw new Error('locked users stay'); }"},
    "onRead": {"type": _JS, "source": "object.readBy = request.method;"},
    "onRetrieve": {"type": _JS, "source": "object.fullName = (object.givenName || '') + ' ' + (object.sn || '');"},
    "onValidate": {"type": _JS, "source": "if (object.sn === 'Forbidden') { throw new Error('no such sn'); }"},
    "onStore": {"type": _JS, "source": "object.stored = true;"},
    "postCreate": {"type": _JS, "source": "openidm.create('managed/event', null, "
                                          "{what: 'created', who: newObject.userName});"},
    "postUpdate": {"type": _JS, "source": "openidm.create('managed/event', null, "
                                          "{what: 'updated', who: newObject.userName, was: oldObject.sn || ''});"},
    "postDelete": {"type": _JS, "source": "openidm.create('managed/event', null, "
                                          "{what: 'deleted', who: oldObject.userName});"},
    "schema": {
        "required": ["userName"],
        "properties": {
            "userName": {"type": "string", "searchable": True, "policies": [
                {"policyId": "unique"}, {"policyId": "cannot-contain-characters", "params": {"forbiddenChars": ["/"]}},
                {"policyId": "no-colour"}],
                "onStore": {"type": _JS, "source": "property.toLowerCase()"}},
            "givenName": {"type": "string"},
            "sn": {"type": "string", "onValidate": {"type": _JS, "source": "if (property === 'Bad') "
                                                                          "{ throw new Error('bad sn'); }"}},
            "mail": {"type": "string", "policies": [{"policyId": "valid-email-address-format"}]},
            "password": {"type": "string", "secret": True, "policies": [
                {"policyId": "minimum-length", "params": {"minLength": 8}},
                {"policyId": "at-least-X-capitals", "params": {"numCaps": 1}},
                {"policyId": "at-least-X-numbers", "params": {"numNums": 1}},
                {"policyId": "cannot-contain-others", "params": {"disallowedFields": ["userName"]}}]},
            "answer": {"type": "string", "secureHash": {"algorithm": "SHA-256"}},
            "birthDate": {"type": "string", "policies": [{"policyId": "valid-date"}]},
            "employeeNumber": {"type": "number"},
            "initials": {"type": "string", "onRetrieve": {"type": _JS, "source": "(object.givenName || '?')[0]"}},
            "locked": {"type": "boolean"},
            "lastSync": {"type": "object", "policies": [{"policyId": "re-auth-required"}]},
        },
    },
}
STAFF = {"name": "staff", "schema": {"properties": {"login": {"type": "string", "searchable": True},
                                                    "email": {"type": "string"}, "number": {"type": "string"}}}}
EVENT = {"name": "event", "schema": {"properties": {"what": {"type": "string"}, "who": {"type": "string"}}}}
CUSTOM_POLICY = """
addPolicy({policyId: "no-colour", policyExec: "noColour", policyRequirements: ["NO_COLOUR"],
           validateOnlyIfPresent: true});
function noColour(fullObject, value, params, property) {
  return /red|green/.test(value) ? [{policyRequirement: "NO_COLOUR", params: {property: property}}] : [];
}
"""
MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
           "properties": [{"source": "login", "target": "userName"}, {"source": "email", "target": "mail"},
                          {"source": "number", "target": "employeeNumber",
                           "transform": {"type": _JS, "source": "source === 'NaN' ? 'not a number' : Number(source)"}}],
           "policies": [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "UPDATE"},
                        {"situation": "CONFIRMED", "action": "UPDATE"}]}


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    conf = project / "conf"
    (project / "script").mkdir(parents=True)
    conf.mkdir()
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "managed.json").write_text(json.dumps({"objects": [USER, STAFF, EVENT]}))
    (conf / "sync.json").write_text(json.dumps({"mappings": [MAPPING]}))
    (conf / "policy.json").write_text(json.dumps({
        "type": _JS, "file": "policy.js", "additionalFiles": ["script/colour.js"],
        "resources": [{"resource": "managed/user/*", "properties": [
            {"name": "givenName", "policies": [{"policyId": "maximum-length", "params": {"maxLength": 8}}]}]}]}))
    (project / "script" / "colour.js").write_text(CUSTOM_POLICY)
    return project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _project(tmp_path)


@pytest.fixture
def service(project: Path) -> Iterator[tuple[ManagedObjects, ManagedObjects]]:
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    with scripting(loaded, store, resources=resources):
        yield (ManagedObjects(loaded, store, resources, "user"), ManagedObjects(loaded, store, resources, "event"))


def _requirements(exc: PolicyFailed) -> dict[str, list[str]]:
    return {f["property"]: [r["policyRequirement"] for r in f["policyRequirements"]] for f in exc.failures}


def test_default_policies_refuse_bad_values_naming_each_property(
        service: tuple[ManagedObjects, ManagedObjects]) -> None:
    """A weak password and a malformed mail and date are refused together, one
    requirement each, without the values; a good object passes, and the same user
    name twice is refused (unique); a custom policy and a resource's policies from
    policy.json apply."""
    users, _ = service
    with pytest.raises(PolicyFailed) as caught:
        users.create({"userName": "ann", "password": "x", "mail": "not-an-email", "birthDate": "yesterday"})
    assert _requirements(caught.value) == {
        "password": ["MIN_LENGTH", "AT_LEAST_X_CAPITAL_LETTERS", "AT_LEAST_X_NUMBERS"],
        "mail": ["VALID_EMAIL_ADDRESS_FORMAT"], "birthDate": ["VALID_DATE"]}
    assert "password must be at least 8 characters long (MIN_LENGTH)" in str(caught.value)
    assert "not-an-email" not in str(caught.value) and caught.value.exit_code == 65
    with pytest.raises(PolicyFailed) as caught:
        users.create({"userName": "ann", "password": "Annie2024ann"})
    assert caught.value.failures == [{"property": "password", "policyRequirements": [
        {"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["userName"]}}]}]
    made = users.create({"userName": "ann", "password": "Secret123", "birthDate": "1990-02-03",
                         "lastSync": {}}).object
    assert made is not None
    with pytest.raises(PolicyFailed) as caught:
        users.create({"userName": "ann"})
    assert _requirements(caught.value) == {"userName": ["UNIQUE"]}
    with pytest.raises(PolicyFailed) as caught:
        users.create({"userName": "red/one"})
    assert _requirements(caught.value) == {"userName": ["CANNOT_CONTAIN_CHARACTERS", "NO_COLOUR"]}
    with pytest.raises(PolicyFailed) as caught:  # policy.json's resources
        users.create({"userName": "bart", "givenName": "Bartholomew"})
    assert caught.value.failures == [{"property": "givenName", "policyRequirements": [
        {"policyRequirement": "MAX_LENGTH", "params": {"maxLength": 8}}]}]
    # An update checks what it changes: the stored (hashed) password is not checked again.
    changed = users.patch(made["_id"], [{"operation": "replace", "field": "/sn", "value": "Smith"}]).object
    assert changed is not None and changed["sn"] == "Smith"


def test_conditional_and_fallback_policies_and_format_policies(tmp_path: Path) -> None:
    """A property's conditionalPolicies apply where their dependencies are present and
    their condition holds on fullObject; when none applies, its fallbackPolicies do;
    valid-phone-format and valid-name-format refuse what PingIDM's refuse."""
    project = _project(tmp_path)
    code = {"type": "string", "conditionalPolicies": [
        {"condition": {"type": _JS, "source": "fullObject.org === 'admins'"}, "dependencies": ["org"],
         "policies": [{"policyId": "minimum-length", "params": {"minLength": 12}}]},
        {"condition": {"type": _JS, "source": "fullObject.org === 'staff'"}, "dependencies": ["org"],
         "policies": [{"policyId": "minimum-length", "params": {"minLength": 6}}]}],
        "fallbackPolicies": [{"policyId": "maximum-length", "params": {"maxLength": 3}}]}
    props = {"userName": {"type": "string"}, "org": {"type": "string"}, "code": code,
             "phone": {"type": "string", "policies": [{"policyId": "valid-phone-format"}]},
             "givenName": {"type": "string", "policies": [{"policyId": "valid-name-format"}]}}
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [
        {"name": "user", "schema": {"properties": props}}, STAFF]}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    users = ManagedObjects(loaded, store, Resources(loaded, store), "user", sync=False)

    def refused(values: dict[str, Any]) -> dict[str, list[str]]:
        try:
            users.create(values)
        except PolicyFailed as exc:
            return _requirements(exc)
        return {}

    assert refused({"userName": "a", "org": "admins", "code": "short-code"}) == {"code": ["MIN_LENGTH"]}
    assert refused({"userName": "b", "org": "staff", "code": "short-code"}) == {}
    assert refused({"userName": "c", "org": "others", "code": "abcd"}) == {"code": ["MAX_LENGTH"]}
    assert refused({"userName": "d", "code": "abcd"}) == {"code": ["MAX_LENGTH"]}  # no org: no dependency
    assert refused({"userName": "e", "code": "abc", "phone": "+1 (555) 010-99",
                    "givenName": "Zoë Łuk"}) == {}
    assert refused({"userName": "f", "phone": "call me", "givenName": "Ann€"}) == {
        "phone": ["VALID_PHONE_FORMAT"], "givenName": ["VALID_NAME_FORMAT"]}
    store.close()


def test_object_scripts_run_around_each_change(service: tuple[ManagedObjects, ManagedObjects]) -> None:
    """onCreate fills a property, property onStore lowercases, onStore marks, onUpdate
    sees oldObject and newObject, onValidate (object and property) refuses, onDelete
    refuses, the post scripts write through openidm after the commit, and reads run
    property onRetrieve, onRetrieve and onRead."""
    users, events = service
    made = users.create({"userName": "Bob", "sn": "Jones", "givenName": "Robert"}).object
    assert made is not None
    assert made["userName"] == "bob" and made["createdBy"] == "onCreate" and made["stored"] is True
    assert made["mail"] == "Bob@example.com"
    assert made["fullName"] == "Robert Jones" and made["initials"] == "R" and made["readBy"] == "read"
    updated = users.patch(made["_id"], [{"operation": "replace", "field": "/sn", "value": "Smith"}]).object
    assert updated is not None and updated["previousSn"] == "Jones"
    with pytest.raises(ObjectRejected, match=r"onValidate script: .*no such sn"):
        users.patch(made["_id"], [{"operation": "replace", "field": "/sn", "value": "Forbidden"}])
    with pytest.raises(ObjectRejected, match=r"sn\.onValidate script: .*bad sn"):
        users.patch(made["_id"], [{"operation": "replace", "field": "/sn", "value": "Bad"}])
    locked = users.create({"userName": "carl", "locked": True}).object
    assert locked is not None
    with pytest.raises(ObjectRejected, match="locked users stay"):
        users.delete(locked["_id"])
    users.delete(made["_id"])
    logged = sorted((e["what"], e["who"]) for e in events._resource.find(QuerySpec()))
    assert logged == [("created", "bob"), ("created", "carl"), ("deleted", "bob"), ("updated", "bob")]


def test_api_answers_policy_failures_as_pingidm(project: Path) -> None:
    """Over the API a change that breaks a policy is 403 with failedPolicyRequirements;
    validateObject and validateProperty answer result and failures without writing;
    GET policy/managed/user lists each property's policies; a query runs onRetrieve only
    with executeOnRetrieve=true, and never onRead."""
    with serve(project) as api:
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "dee", "password": "x", "mail": "not-an-email"})
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["code"] == 403 and body["reason"] == "Forbidden" and body["message"] == "Policy validation failed"
        assert {f["property"] for f in body["detail"]["failedPolicyRequirements"]} == {"password", "mail"}
        assert {"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}} in next(
            f for f in body["detail"]["failedPolicyRequirements"] if f["property"] == "password")["policyRequirements"]
        made = api.post("/openidm/managed/user?_action=create", headers=JSON,
                        json={"userName": "dee", "password": "Secret123"})
        assert made.status_code == 201, made.text
        dee = made.json()["_id"]
        check = api.post(f"/openidm/policy/managed/user/{dee}?_action=validateObject", headers=JSON,
                         json={"userName": "dee", "mail": "dee@example"})
        assert check.status_code == 200
        assert check.json() == {"result": False, "failedPolicyRequirements": [
            {"property": "mail", "policyRequirements": [{"policyRequirement": "VALID_EMAIL_ADDRESS_FORMAT"}]}]}
        taken = api.post("/openidm/policy/managed/user/*?_action=validateObject", headers=JSON,
                         json={"userName": "dee"}).json()
        assert taken["failedPolicyRequirements"][0]["policyRequirements"] == [{"policyRequirement": "UNIQUE"}]
        prop = api.post("/openidm/policy/managed/user?_action=validateProperty", headers=JSON,
                        json={"password": "Secret123"}).json()
        assert prop == {"result": True, "failedPolicyRequirements": []}
        described = api.get("/openidm/policy/managed/user", headers=ADMIN).json()
        password = next(p for p in described["properties"] if p["name"] == "password")
        assert "MIN_LENGTH" in password["policyRequirements"]
        assert api.get(f"/openidm/managed/user/{dee}", headers=ADMIN).json()["readBy"] == "read"
        listed = api.get("/openidm/managed/user?_queryFilter=true", headers=ADMIN).json()["result"]
        assert "fullName" not in listed[0]  # as PingIDM's, a query runs onRetrieve only when asked to
        listed = api.get("/openidm/managed/user?_queryFilter=true&executeOnRetrieve=true",
                         headers=ADMIN).json()["result"]
        assert listed[0]["fullName"] == " " and "readBy" not in listed[0]  # onRetrieve, never onRead, on queries


def test_cli_names_each_broken_policy(project: Path) -> None:
    """The command line refuses a change that breaks policies with exit code 65 and
    one line per property and requirement."""
    done = idsync(project, "managed", "create", "user", "--data",
                  json.dumps({"userName": "eve", "password": "short", "mail": "nope"}))
    assert done.returncode == 65, done.stderr
    assert "managed/user: the object breaks its policies:" in done.stderr
    assert "  password must be at least 8 characters long (MIN_LENGTH)" in done.stderr
    assert "  mail must be an email address (VALID_EMAIL_ADDRESS_FORMAT)" in done.stderr
    assert "nope" not in done.stderr and "short" not in done.stderr


def test_recon_and_implicit_sync_writes_obey_the_model(project: Path) -> None:
    """A recon into the store runs the object scripts and the policies: a source object
    whose mail breaks a policy, and one whose number lands in a number property as text,
    fail alone, as does a second source taking a user name the same page created; the
    others are created and the run goes on; implicit synchronization of
    a change that breaks a policy fails its push, not the change."""
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    with scripting(loaded, store, resources=resources):
        staff = ManagedObjects(loaded, store, resources, "staff", sync=False)
        staff.create({"login": "fay", "email": "fay@example.com", "number": "7"}, object_id="s1")
        staff.create({"login": "gus", "email": "not-an-email"}, object_id="s2")
        staff.create({"login": "hal", "number": "NaN"}, object_id="s3")
        staff.create({"login": "fay", "email": "fay2@example.com"}, object_id="s4")  # the same page
    done = idsync(project, "recon", "staff_user", "--json")
    summary = json.loads(done.stdout)
    assert summary["state"] == "SUCCESS" and summary["changes"]["failed"] == 3, done.stdout
    user_objects = ManagedObjects(loaded, store, resources, "user", sync=False)
    users = {u["userName"]: u for u in user_objects._resource.find(QuerySpec())}
    assert set(users) == {"fay"} and users["fay"]["createdBy"] == "onCreate" and users["fay"]["employeeNumber"] == 7
    errors = json.dumps(summary)
    assert "mail must be an email address (VALID_EMAIL_ADDRESS_FORMAT)" in errors
    assert "employeeNumber must be of type number, not string" in errors
    assert "userName must be unique: another object has this value (UNIQUE)" in errors
    pushed = idsync(project, "managed", "patch", "staff", "s1", "--operations",
                    json.dumps([{"operation": "replace", "field": "/email", "value": "broken"}]))
    assert pushed.returncode == 75 and json.loads(pushed.stdout)["email"] == "broken"
    assert "implicit sync through staff_user failed: managed/user: mail must be an email address" in pushed.stderr
    assert staff.get("s1")["email"] == "broken"  # the change stands; its push failed
    assert user_objects.get(users["fay"]["_id"])["mail"] == "fay@example.com"


def test_a_failing_post_script_is_logged_and_the_change_stands(tmp_path: Path) -> None:
    """A ``postCreate`` script that throws, on a user a recon creates, is logged
    (``managed.post_script_failed`` naming the script) and the user stays created; the
    recon goes on and succeeds."""
    project = _project(tmp_path)
    user = {**USER, "postCreate": {"type": _JS, "source": "if (newObject.userName === 'oops') "
                                                          "{ throw new Error('event log full'); }"}}
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [user, STAFF, EVENT]}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    staff = ManagedObjects(loaded, store, Resources(loaded, store), "staff", sync=False)
    for login in ("oops", "fine"):
        staff.create({"login": login})
    done = idsync(project, "recon", "staff_user", "--json")
    assert json.loads(done.stdout)["changes"]["created"] == 2, done.stdout + done.stderr
    (failed,) = [json.loads(line) for line in done.stderr.splitlines() if "managed.post_script_failed" in line]
    assert failed["script"] == "postCreate" and "event log full" in failed["error"]
    with scripting(loaded, store) as router:
        found = router.call("query", ["managed/user", {"_queryFilter": "true"}])
    assert sorted(u["userName"] for u in found["result"]) == ["fine", "oops"]


GUARD = {"name": "guard", "schema": {"properties": {"name": {"type": "string"}, "level": {"type": "number"}}},
         "onCreate": {"type": _JS, "file": "script/guard-create.js"},
         "onUpdate": {"type": _JS, "source": "if (object.level > 9) { throw {code: 409, message: 'too high'}; }"},
         "onValidate": {"type": _JS, "source": "if (object.name === 'x') { throw {code: 400, message: 'no x', "
                                               "detail: {allowed: ['y', 'z']}}; }"},
         "onDelete": {"type": _JS, "source": "if (object.level) { throw new Error('level ' + object.level + "
                                             "' stays'); }"}}


def test_a_script_refusal_is_answered_with_its_own_message(tmp_path: Path) -> None:
    """An object script that throws ``{code, message}`` (``{code, message, detail}``) is
    answered over the API with that code and exactly that message (and detail), as
    PingIDM answers it, from onCreate, onUpdate, onValidate alike; the command line says
    the message after the type and the script; the log keeps where the script lives. An
    ``openidm`` call the script lets fail is answered with its own status (404 for an
    object that is not there), as PingIDM passes it on. Any other failure of a script is
    answered without the server's file paths."""
    project = _project(tmp_path)
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [USER, STAFF, EVENT, GUARD]}))
    (project / "script" / "guard-create.js").write_text(
        "if (object.name === 'root') { throw {code: 403, message: 'root is reserved'}; }\n"
        "if (object.name === 'ghost') { openidm.update('managed/guard/nobody', null, {name: 'x'}); }\n")
    with serve(project) as api:
        created = api.post("/openidm/managed/guard?_action=create", headers=JSON, json={"name": "root"})
        assert created.status_code == 403 and created.json() == {
            "code": 403, "reason": "Forbidden", "message": "root is reserved"}
        ghost = api.post("/openidm/managed/guard?_action=create", headers=JSON, json={"name": "ghost"})
        assert ghost.status_code == 404 and "nobody" in ghost.json()["message"], ghost.text  # the call's own
        assert str(tmp_path) not in ghost.text
        validated = api.post("/openidm/managed/guard?_action=create", headers=JSON, json={"name": "x"})
        assert validated.status_code == 400 and validated.json() == {
            "code": 400, "reason": "Bad Request", "message": "no x", "detail": {"allowed": ["y", "z"]}}
        made = api.post("/openidm/managed/guard?_action=create", headers=JSON, json={"name": "g", "level": 1})
        assert made.status_code == 201, made.text
        guard = made.json()["_id"]
        updated = api.patch(f"/openidm/managed/guard/{guard}", headers=JSON,
                            json=[{"operation": "replace", "field": "/level", "value": 10}])
        assert updated.status_code == 409 and updated.json()["message"] == "too high"
        deleted = api.delete(f"/openidm/managed/guard/{guard}", headers=ADMIN)
        assert deleted.status_code == 400 and "level 1 stays" in deleted.json()["message"]
        assert str(tmp_path) not in deleted.text and "managed.json" not in deleted.text
    done = idsync(project, "--log-level", "info", "--log-format", "json", "managed", "create", "guard",
                  "--data", json.dumps({"name": "root"}))
    assert done.returncode != 0
    assert "idsync: managed/guard: onCreate script: root is reserved\n" in done.stderr, done.stderr
    (logged,) = [json.loads(line) for line in done.stderr.splitlines() if "managed.script_refused" in line]
    assert logged["script"] == "onCreate" and logged["status"] == 403
    assert "objects[3].onCreate" in logged["error"] and "guard-create.js" in logged["error"]


ON_SYNC = """
if (newObject && newObject.login === 'loud') { throw new Error('sync report lost'); }
openidm.create('managed/report', null, {
    what: syncResults.action, who: (newObject || oldObject).login, ok: syncResults.success,
    was: oldObject ? (oldObject.email || '') : null,
    pushes: syncResults.syncDetails.map(function (d) {
        return [d.mapping, d.targetObjectSet, d.situation, d.action, d.result].join(' '); })});
"""


def test_on_sync_runs_once_each_change_is_pushed(tmp_path: Path) -> None:
    """A type's onSync runs after implicit synchronization of each change made through
    the managed service, as PingIDM's does: syncResults says the action (notifyCreate,
    notifyUpdate, notifyDelete), whether every push went through and what each mapping
    did; oldObject and newObject are the object before and after. A push that fails
    is reported to it; an onSync that throws is logged and the change stands. Without
    implicit synchronization (a recon's writes) it does not run."""
    project = _project(tmp_path)
    staff_type = {**STAFF, "onSync": {"type": _JS, "source": ON_SYNC}}
    report = {"name": "report", "schema": {"properties": {
        "what": {"type": "string"}, "who": {"type": "string"}, "ok": {"type": "boolean"},
        "was": {"type": ["string", "null"]}, "pushes": {"type": "array"}}}}
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [USER, staff_type, EVENT, report]}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    with scripting(loaded, store, resources=resources), structlog.testing.capture_logs() as logs:
        staff = ManagedObjects(loaded, store, resources, "staff")
        reports = ManagedObjects(loaded, store, resources, "report", sync=False)
        staff.create({"login": "ivy", "email": "ivy@example.com"}, object_id="s1")
        staff.patch("s1", [{"operation": "replace", "field": "/email", "value": "not-an-email"}])  # refused by user
        staff.delete("s1")
        staff.create({"login": "loud"}, object_id="s2")
        ManagedObjects(loaded, store, resources, "staff", sync=False).create({"login": "quiet"}, object_id="s3")
        seen = sorted(reports._resource.find(QuerySpec()), key=lambda e: e["_id"])
    assert [(e["what"], e["who"], e["ok"], e.get("was"), e["pushes"]) for e in seen] == [
        ("notifyCreate", "ivy", True, None, ["staff_user managed/user ABSENT CREATE SUCCESSFUL"]),
        ("notifyUpdate", "ivy", False, "ivy@example.com", ["staff_user managed/user CONFIRMED UPDATE FAILED"]),
        # The mapping has no policy for SOURCE_MISSING: PingIDM's default, EXCEPTION, fails the push.
        ("notifyDelete", "ivy", False, "not-an-email", ["staff_user managed/user SOURCE_MISSING EXCEPTION FAILED"]),
    ]
    (failed,) = [e for e in logs if e["event"] == "managed.post_script_failed"]
    assert failed["script"] == "onSync" and "sync report lost" in failed["error"]
    assert staff.get("s2")["login"] == "loud"  # the change stands
    store.close()


def test_sync_reads_a_managed_source_as_on_retrieve_shows_it(tmp_path: Path) -> None:
    """A mapping reads its managed source through the property and object onRetrieve
    scripts, in a recon and in implicit synchronization alike: the values they make
    reach the target, and the source keeps its stored values."""
    project = _project(tmp_path)
    email = {"type": "string", "onRetrieve": {"type": _JS, "source": "property ? property.toLowerCase() : property"}}
    staff = {**STAFF, "onRetrieve": {"type": _JS, "source": "object.number = object.number || '42';"},
             "schema": {"properties": {**STAFF["schema"]["properties"], "email": email}}}
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [USER, staff, EVENT]}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    with scripting(loaded, store, resources=resources):
        ManagedObjects(loaded, store, resources, "staff", sync=False).create(
            {"login": "ivy", "email": "IVY@Example.com"}, object_id="s1")
        assert run_recon(loaded, store, "staff_user").summary["changes"]["created"] == 1
        ManagedObjects(loaded, store, resources, "staff").create({"login": "jo", "email": "JO@EXAMPLE.COM"})
    users = {u["userName"]: u for u in ManagedResource(store, loaded.managed.get("user")).find(QuerySpec())}
    assert {n: (u["mail"], u["employeeNumber"]) for n, u in users.items()} == {
        "ivy": ("ivy@example.com", 42), "jo": ("jo@example.com", 42)}
    stored = ManagedResource(store, loaded.managed.get("staff")).get("s1") or {}
    assert stored["email"] == "IVY@Example.com" and "number" not in stored
    store.close()


def test_secrets_hash_long_values_and_secure_hash(service: tuple[ManagedObjects, ManagedObjects]) -> None:
    """A secret of 600 bytes is hashed as SHA-512 crypt and verified (libxcrypt answered
    *0 for it), one beyond 1024 bytes is refused, and secureHash keeps PingIDM's salted
    hash, verified again on the next write instead of rehashed."""
    long = "Aa1" + "x" * 600
    hashed = hash_secret(long)
    assert hashed.startswith("{CRYPT}$6$rounds=") and same_secret(long, hashed) and not same_secret(long[:-1], hashed)
    with pytest.raises(ObjectRejected, match="at most 1024 bytes"):
        hash_secret("y" * 1100)
    users, _ = service
    made = users.create({"userName": "ivy", "password": long, "answer": "blue"}).object
    assert made is not None and "password" not in made and "answer" not in made
    stored = users._internal.get(made["_id"]) or {}
    assert stored["password"].startswith("{CRYPT}$6$") and same_secret(long, stored["password"])
    assert is_hashed(stored["answer"]) and matches("blue", stored["answer"])
    again = users.patch(made["_id"], [{"operation": "replace", "field": "/answer", "value": "blue"}]).object
    assert again is not None and again["_rev"] == made["_rev"]
    # A hash imported as it is skips the policies; the same password sent again in clear
    # changes nothing and is not refused, though it breaks them.
    weak = users.create({"userName": "jo", "password": hash_secret("weak")}).object
    assert weak is not None
    same = users.patch(weak["_id"], [{"operation": "replace", "field": "/password", "value": "weak"}]).object
    assert same is not None and same["_rev"] == weak["_rev"]
    with pytest.raises(PolicyFailed, match="MIN_LENGTH"):
        users.patch(weak["_id"], [{"operation": "replace", "field": "/password", "value": "weaker"}])


def test_bad_policy_configuration_is_an_error(tmp_path: Path) -> None:
    """An unknown policy id, a policy missing its params and a Groovy object script are
    errors naming file and key; PingIDM policies idsync does not enforce, and the scripts
    PingIDM bundles that its managed.json names, are warnings of idsync validate."""
    project = _project(tmp_path)
    managed = project / "conf" / "managed.json"
    raw = json.loads(managed.read_text())
    raw["objects"][0]["schema"]["properties"]["sn"]["policies"] = [{"policyId": "no-such-policy"}]
    managed.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"objects\[0\].schema.properties.sn.policies\[0\].policyId: unknown policy"):
        load_project(project)
    raw["objects"][0]["schema"]["properties"]["sn"]["policies"] = [{"policyId": "minimum-length"}]
    managed.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"policies\[0\].params: policy minimum-length needs params.minLength"):
        load_project(project)
    raw["objects"][0]["schema"]["properties"]["sn"]["policies"] = [{"policyId": "valid-array-items"}]
    raw["objects"][0]["onSync"] = {"type": _JS, "source": "1"}
    raw["objects"][0]["onDelete"] = {"type": _JS, "file": "ui/onDelete-user-cleanup.js"}
    managed.write_text(json.dumps(raw))
    done = idsync(project, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "objects[0].schema.properties.sn.policies[0]: not enforced: policy valid-array-items" in done.stderr
    assert "onSync" not in done.stderr  # run (test_on_sync_runs_once_each_change_is_pushed)
    assert "objects[0].onDelete: not run: ui/onDelete-user-cleanup.js is a script PingIDM bundles" in done.stderr
    raw["objects"][0]["onCreate"] = {"type": "groovy", "source": "object.x = 1"}
    managed.write_text(json.dumps(raw))
    done = idsync(project, "validate")
    assert done.returncode == 78 and "objects[0].onCreate: text/groovy scripts are not supported" in done.stdout


@pytest.mark.parametrize("which", ["built-in", "example"])
def test_pingidm_default_policies_apply_out_of_the_box(tmp_path: Path, which: str) -> None:
    """The built-in types of a project without managed.json and the example
    conf/managed.json refuse a password "x" and a mail "not-an-email", as PingIDM's
    default policies do, and accept a user that keeps them."""
    raw = DEFAULT_MANAGED if which == "built-in" else json.loads((ROOT / "conf" / "managed.json").read_text())
    schema = parse_managed(raw).types["user"]
    model = load_object_models(raw, tmp_path, tmp_path, ScriptEngine(), file="managed.json")["user"]
    users = ManagedResource(Store.open(f"sqlite:///{tmp_path / 's.db'}"), replace(schema, model=model))
    with pytest.raises(PolicyFailed) as caught:
        users.create({"userName": "ann", "password": "x", "mail": "not-an-email"})
    assert {f["property"] for f in caught.value.failures} == {"password", "mail"}
    assert users.create({"userName": "ann", "password": "Secret123", "mail": "ann@example.com"})["_id"]


# A custom policy written as PingIDM's samples write them: lodash's ``_`` and ``request``
# come from the policy service (policy.js), not from the file.
UTC_DATE_POLICY = """var policy = {
    "policyId" : "valid-utcdate",
    "policyExec" : "validUTCDate",
    "policyRequirements" : ["VALID_DATE"]
};

addPolicy(policy);

function validUTCDate(fullObject, value, params, property) {
    var isRequired = _.find(this.failedPolicyRequirements, function (fpr) {
            return fpr.policyRequirement === "REQUIRED";
        }),
        isNonEmptyString = (typeof(value) === "string" && value.length),
        datePattern = new RegExp("[0-9]{4}-[0-9]{2}-[0-9]{2}");

    if ((isRequired || isNonEmptyString) && !datePattern.test(value)) {
        return [{"policyRequirement": "VALID_DATE", "params": {"asked": request.resourcePath.split("/")[1]}}];
    }
    return [];
}
"""


def _dated_project(tmp_path: Path, policy_source: str) -> Path:
    """The project with a second additionalFiles script (``policy_source``) whose
    ``valid-utcdate`` judges the user's ``hireDate``, filled by the recon from staff's ``number``."""
    project = _project(tmp_path)
    conf = project / "conf"
    (project / "script" / "utcdate.js").write_text(policy_source)
    policy = json.loads((conf / "policy.json").read_text())
    policy["additionalFiles"] = ["script/colour.js", "script/utcdate.js"]
    (conf / "policy.json").write_text(json.dumps(policy))
    user = json.loads(json.dumps(USER))
    user["schema"]["properties"]["hireDate"] = {"type": "string", "policies": [{"policyId": "valid-utcdate"}]}
    (conf / "managed.json").write_text(json.dumps({"objects": [user, STAFF, EVENT]}))
    mapping = {**MAPPING, "properties": [{"source": "login", "target": "userName"},
                                         {"source": "number", "target": "hireDate"}]}
    (conf / "sync.json").write_text(json.dumps({"mappings": [mapping]}))
    return project


def _two_staff(project: Path, second: dict[str, Any]) -> None:
    """Staff ``s1`` (a good date) and ``s2`` (``second``), written as the API writes them."""
    with managed_objects(project) as managed:
        managed("staff").create({"login": "ida", "number": "2020-01-02"}, object_id="s1")
        managed("staff").create(second, object_id="s2")


def test_custom_policies_have_lodash_and_the_policy_request(tmp_path: Path) -> None:
    """A custom policy of additionalFiles uses ``_`` (lodash) and ``request`` without
    defining them, as the scope of PingIDM's policy.js gives them: a recon into the
    store and a create over the API are judged by it (a good date passes, a bad one is
    refused with its requirement), rather than every write failing."""
    project = _dated_project(tmp_path, UTC_DATE_POLICY)
    _two_staff(project, {"login": "jon", "number": "soon"})
    done = idsync(project, "recon", "staff_user", "--json")
    summary = json.loads(done.stdout)
    assert summary["state"] == "SUCCESS" and summary["changes"]["failed"] == 1, done.stdout + done.stderr
    assert "(VALID_DATE)" in json.dumps(summary)
    with managed_objects(project) as managed:
        assert [u["userName"] for u in managed("user")._resource.find(QuerySpec())] == ["ida"]
    with serve(project) as api:
        made = api.post("/openidm/managed/user?_action=create", headers=JSON,
                        json={"userName": "kim", "hireDate": "2021-03-04"})
        assert made.status_code == 201, made.text
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "lou", "hireDate": "tomorrow"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"]["failedPolicyRequirements"] == [
            {"property": "hireDate", "policyRequirements": [{"policyRequirement": "VALID_DATE",
                                                             "params": {"asked": "user"}}]}]


def test_a_failing_custom_policy_refuses_the_object_naming_its_file_and_line(tmp_path: Path) -> None:
    """A custom policy that fails (a name nothing defines) refuses the object as an
    object script that throws does: 400 over the API without the server's paths; the
    command line and the log name the file of additionalFiles and its own line; a recon
    records each object's failure (here every one's: the run failed, saying why). One
    that fails as the files load, or does not parse, is an error of idsync validate
    naming the file and its line."""
    broken = UTC_DATE_POLICY.replace("_.find(", "lodash.find(")
    project = _dated_project(tmp_path, broken)
    with serve(project) as api:
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "kim", "hireDate": "2021-03-04"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["message"] == ("managed/user: policy script: ReferenceError: lodash is not defined "
                                             "at line 10"), refused.text
        assert str(tmp_path) not in refused.text
    done = idsync(project, "managed", "create", "user", "--data", json.dumps({"userName": "mo", "hireDate": "x"}))
    assert done.returncode == 1
    assert "managed/user: policy script: " in done.stderr and "policy.json: additionalFiles (script/utcdate.js): " \
        "ReferenceError: lodash is not defined at line 10\n" in done.stderr, done.stderr
    _two_staff(project, {"login": "jon"})
    summary = json.loads(idsync(project, "recon", "staff_user", "--json").stdout)
    assert summary["state"] == "FAILED" and summary["changes"]["failed"] == 2, summary
    assert "(script/utcdate.js): ReferenceError: lodash is not defined at line 10" in summary["message"]
    (project / "script" / "utcdate.js").write_text(UTC_DATE_POLICY + "var since = startOfTime;\n")
    done = idsync(project, "validate")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "policy.json: additionalFiles (script/utcdate.js): the custom policies cannot load: " \
        "ReferenceError: startOfTime is not defined at line 21" in done.stdout, done.stdout
    (project / "script" / "utcdate.js").write_text(UTC_DATE_POLICY + "function (\n")
    done = idsync(project, "validate")
    assert done.returncode == 78 and "additionalFiles[1] (script/utcdate.js): JavaScript syntax error at line 21" \
        in done.stdout, done.stdout


def test_a_custom_policy_answering_no_list_refuses_the_object(tmp_path: Path) -> None:
    """A custom policy function that answers nothing (no ``return []`` for a good value) is
    an error of the request, as in PingIDM (whose policy.js reads the answer's length),
    not a pass: the object is refused naming the function, nothing is written."""
    silent = UTC_DATE_POLICY.replace("    return [];\n}", "}")
    assert silent != UTC_DATE_POLICY
    project = _dated_project(tmp_path, silent)
    with serve(project) as api:
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "kim", "hireDate": "2021-03-04"})
        assert refused.status_code == 400, refused.text
        assert "the custom policy function validUTCDate answered undefined, not a list of requirements" \
            in refused.json()["message"], refused.text
        assert api.get("/openidm/managed/user?_queryFilter=true", headers=JSON).json()["resultCount"] == 0


def test_cannot_contain_others_counts_case_and_reads_a_regular_expression(tmp_path: Path) -> None:
    """PingIDM's default password policy (none of userName, givenName, sn) refuses a
    password holding one of them as its policy.js does (``value.match(other)``): with
    case (a givenName "Q" is not in "Passw0rdq1"), the other value read as a JavaScript
    regular expression ("a.b" is in "Xa-b12345"), and as written where it is none ("a(b")."""
    schema = parse_managed(DEFAULT_MANAGED).types["user"]
    model = load_object_models(DEFAULT_MANAGED, tmp_path, tmp_path, ScriptEngine(), file="managed.json")["user"]
    users = ManagedResource(Store.open(f"sqlite:///{tmp_path / 's.db'}"), replace(schema, model=model))

    def refused(user: dict[str, Any]) -> list[Any]:
        try:
            users.create(user)
        except PolicyFailed as exc:
            return exc.failures
        return []

    assert refused({"userName": "x1", "givenName": "Q", "sn": "Unny", "mail": "s@example.com",
                    "password": "Passw0rdq1"}) == []
    assert refused({"userName": "x2", "givenName": "Q", "sn": "Unny", "mail": "s@example.com",
                    "password": "PassW0rdQ1"}) == [{"property": "password", "policyRequirements": [
                        {"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["givenName"]}}]}]
    user_name = [{"property": "password", "policyRequirements": [
        {"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["userName"]}}]}]
    assert refused({"userName": "a.b", "givenName": "G", "sn": "S", "mail": "a@example.com",
                    "password": "Xa-b12345"}) == user_name
    assert refused({"userName": "c(d", "givenName": "G", "sn": "S", "mail": "c@example.com",
                    "password": "Xc(d12345"}) == user_name


def test_a_page_of_creates_computes_its_virtual_properties_as_one_create_at_a_time(tmp_path: Path) -> None:
    """The virtual properties of a batch of created objects are computed together (one
    call into JavaScript per property) with the values and refusals each create alone
    gets: a later virtual property sees an earlier one's value, ``null`` leaves the
    property out, a script that throws refuses its object alone, and an object failing
    its policies (a user name the same batch took) is refused before its scripts run. A
    script that reads a variable by a name it builds still gets it."""
    person = {"name": "person", "schema": {"required": ["userName"], "properties": {
        "userName": {"type": "string", "searchable": True, "policies": [{"policyId": "unique"}]},
        "givenName": {"type": "string"}, "sn": {"type": "string"},
        "fullName": {"type": "string", "isVirtual": True, "returnByDefault": True, "onRetrieve": {
            "type": _JS, "source": "if (object.sn === 'Boom') { throw new Error('no boom'); }\n"
                                   "object.sn === 'None' ? null : object.givenName + ' ' + object.sn"}},
        "label": {"type": "string", "isVirtual": True, "returnByDefault": True, "onRetrieve": {
            "type": _JS, "source": "(object.fullName || '-') + ' <' + propertyName + '>'"}},
        "how": {"type": "string", "isVirtual": True, "returnByDefault": True, "onRetrieve": {
            "type": _JS, "source": "globalThis['req' + 'uest'].method + ' ' + globalThis['resource' + 'Name']"}}}}}
    project = tmp_path / "p"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (project / "conf" / "managed.json").write_text(json.dumps({"objects": [person]}))
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": []}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    given = [{"userName": "ann", "givenName": "Ann", "sn": "Lee"},
             {"userName": "bob", "givenName": "Bob", "sn": "Boom"},
             {"userName": "cy", "givenName": "Cy", "sn": "None"},
             {"userName": "ann", "givenName": "An", "sn": "Other"},
             {"userName": "dee", "givenName": "Dee", "sn": "Ray", "fullName": "given, not kept"}]
    with scripting(loaded, store, resources=resources):
        people = ManagedObjects(loaded, store, resources, "person", sync=False)
        assert people._resource.hooks.batched_virtual
        results = people._resource.write_batch([WriteOp("create", values=v) for v in given])
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert "fullName.onRetrieve script" in str(results[1].error) and "no boom" in str(results[1].error)
    assert "userName must be unique" in str(results[3].error)
    kept = {r.obj["userName"]: {k: v for k, v in r.obj.items() if not k.startswith("_") and k != "how"}
            for r in results if r.obj is not None}
    assert {r.obj["how"] for r in results if r.obj is not None} == {
        f"create managed/person/{r.id}" for r in results if r.ok}
    assert kept == {"ann": {"userName": "ann", "givenName": "Ann", "sn": "Lee", "fullName": "Ann Lee",
                            "label": "Ann Lee <label>"},
                    "cy": {"userName": "cy", "givenName": "Cy", "sn": "None", "label": "- <label>"},
                    "dee": {"userName": "dee", "givenName": "Dee", "sn": "Ray", "fullName": "Dee Ray",
                            "label": "Dee Ray <label>"}}
    stored = {u["userName"]: u for u in people._resource.find(QuerySpec())}
    assert {name: (u.get("fullName"), u.get("label")) for name, u in stored.items()} == {
        "ann": ("Ann Lee", "Ann Lee <label>"), "cy": (None, "- <label>"), "dee": ("Dee Ray", "Dee Ray <label>")}
