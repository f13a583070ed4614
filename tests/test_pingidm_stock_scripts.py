"""PingIDM's default managed.json scripts run on idsync's own versions of the modules
they load: ``require('ui/onCreateUser').setDefaultFields(object)`` and the rest of
the stock ``onCreate``/``onUpdate`` of users and roles, with a project's own lines
beside them, and with PingIDM's variables (``object``, ``newObject``, ``oldObject``).

The projects need no directory: a mapping from one managed type (``managed/staff``)
into ``managed/user`` gives a recon whose target is the store, which runs the same
hooks as the API, the command line and implicit synchronization."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from idsync.config.project import load_project
from idsync.managed import ManagedObjects
from idsync.managed.router import scripting
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store

from samples import idsync

_JS = "text/javascript"
# The stock scripts of the user and role types, as PingIDM's default managed.json has
# them (OpenIDM 4-6 name the modules ui/..., later versions without the prefix).
_STOCK_CREATE = ("require('{ui}onCreateUser').setDefaultFields(object);"
                 "require('{ui}onCreateUser').createIdpRelationships(object);"
                 "require('roles/conditionalRoles').updateConditionalGrantsForUser(object, 'roles');")
_STOCK_UPDATE = ("require('{ui}onUpdateUser').preserveLastSync(object, oldObject, request);"
                 "require('{ui}onUpdateUser').updateIdpRelationships(object);"
                 "require('roles/conditionalRoles').updateConditionalGrantsForUser(object, 'roles');")
_ROLE = {"name": "role",
         "onCreate": {"type": _JS, "source": "require('roles/conditionalRoles').roleCreate(object);"},
         "onUpdate": {"type": _JS, "source": "require('roles/conditionalRoles').roleUpdate(oldObject, object);"},
         "onDelete": {"type": _JS, "file": "roles/onDelete-roles.js"},
         "schema": {"properties": {
             "name": {"type": "string", "searchable": True},
             "members": {"type": "array", "returnByDefault": False, "items": {
                 "type": "relationship", "reverseRelationship": True, "reversePropertyName": "roles",
                 "resourceCollection": [{"path": "managed/user", "label": "User"}]}}}}}
_ROLES = {"type": "array", "returnByDefault": False, "items": {
    "type": "relationship", "reverseRelationship": True, "reversePropertyName": "members",
    "resourceCollection": [{"path": "managed/role", "label": "Role"}]}}
_STAFF = {"name": "staff", "schema": {"properties": {"login": {"type": "string", "searchable": True},
                                                     "status": {"type": "string"}, "title": {"type": "string"}}}}
_EVENT = {"name": "event", "schema": {"properties": {"what": {"type": "string"}, "same": {"type": "boolean"}}}}
_MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
            "properties": [{"source": "login", "target": "userName"}, {"source": "status", "target": "accountStatus"},
                           {"source": "title", "target": "title"}],
            "policies": [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "UPDATE"},
                         {"situation": "CONFIRMED", "action": "UPDATE"}]}


def _user(ui: str) -> dict[str, Any]:
    return {
        "name": "user",
        # The project's own lines after the stock ones, as administrators add them.
        "onCreate": {"type": _JS, "source": _STOCK_CREATE.format(ui=ui) + "\nobject.madeBy = request.method;"},
        "onUpdate": {"type": _JS, "source": _STOCK_UPDATE.format(ui=ui)
                     + "\nobject.changedBy = 'onUpdate'; newObject.sameObject = (newObject === object);"
                       " object.previousTitle = oldObject.title || null;"},
        "postCreate": {"type": _JS, "source": "openidm.create('managed/event', null, "
                                              "{what: 'created ' + object.userName, same: object === newObject "
                                              "&& resourceName === 'managed/user/' + newObject._id});"},
        "schema": {"required": ["userName"], "properties": {
            "userName": {"type": "string", "searchable": True},
            "accountStatus": {"type": "string", "searchable": True},
            "title": {"type": "string"},
            "roles": _ROLES,
            "authzRoles": {"type": "array", "items": {
                "type": "relationship", "reverseRelationship": True, "reversePropertyName": "authzMembers",
                "resourceCollection": [{"path": "repo/internal/role", "label": "Internal Role"}]}},
        }},
    }


def _project(tmp_path: Path, ui: str) -> Path:
    project = tmp_path / "p"
    conf = project / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "managed.json").write_text(json.dumps({"objects": [_user(ui), _ROLE, _STAFF, _EVENT]}))
    (conf / "sync.json").write_text(json.dumps({"mappings": [_MAPPING]}))
    return project


@pytest.mark.parametrize("ui", ["ui/", ""])
def test_the_stock_user_scripts_run_with_the_projects_own_lines(tmp_path: Path, ui: str) -> None:
    """A recon creating users runs the stock onCreate: a user without accountStatus
    gets "active" and PingIDM's openidm-authorized authzRoles, one with a status keeps
    it, and the project's line after the stock ones runs; an update runs the stock
    onUpdate and the project's lines, where newObject is the very object ``object``
    is and oldObject the stored one; postCreate has ``object``; validate warns of none
    of these scripts."""
    project = _project(tmp_path, ui)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    with scripting(loaded, store, resources=resources):
        staff = ManagedObjects(loaded, store, resources, "staff", sync=False)
        staff.create({"login": "ann", "title": "clerk"}, object_id="s1")
        staff.create({"login": "bob", "status": "inactive"}, object_id="s2")
    done = idsync(project, "recon", "staff_user", "--json")
    summary = json.loads(done.stdout)
    assert summary["state"] == "SUCCESS" and summary["changes"]["created"] == 2, done.stdout
    users = ManagedObjects(loaded, store, resources, "user", sync=False)
    found = {u["userName"]: u for u in users._resource.find(QuerySpec())}
    assert found["ann"]["accountStatus"] == "active" and found["bob"]["accountStatus"] == "inactive"
    assert found["ann"]["authzRoles"] == [{"_ref": "repo/internal/role/openidm-authorized"}]
    assert found["ann"]["madeBy"] == "create" and "changedBy" not in found["ann"]
    events = ManagedObjects(loaded, store, resources, "event", sync=False)
    assert sorted((e["what"], e["same"]) for e in events._resource.find(QuerySpec())) == [
        ("created ann", True), ("created bob", True)]

    with scripting(loaded, store, resources=resources):
        staff.patch("s1", [{"operation": "replace", "field": "/title", "value": "manager"}])
    done = idsync(project, "recon", "staff_user", "--json")
    assert json.loads(done.stdout)["changes"]["updated"] == 1, done.stdout
    ann = users.get(found["ann"]["_id"])
    assert ann["title"] == "manager" and ann["changedBy"] == "onUpdate" and ann["sameObject"] is True
    assert ann["previousTitle"] == "clerk"

    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "onCreate" not in checked.stderr and "onUpdate" not in checked.stderr, checked.stderr


def test_the_stock_role_scripts_and_a_managed_create_from_the_command_line(tmp_path: Path) -> None:
    """The stock role scripts (roles/conditionalRoles) change nothing: idsync grants
    conditional roles itself; a user made with ``idsync managed create`` gets the
    stock defaults too."""
    project = _project(tmp_path, "ui/")
    made = idsync(project, "managed", "create", "role", "--data", json.dumps({"name": "staff"}))
    assert made.returncode == 0, made.stdout + made.stderr
    role = json.loads(made.stdout)
    assert {k: v for k, v in role.items() if not k.startswith("_")} == {"name": "staff", "members": []}
    patched = idsync(project, "managed", "patch", "role", role["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/name", "value": "all staff"}]))
    assert patched.returncode == 0 and json.loads(patched.stdout)["name"] == "all staff", patched.stderr
    user = idsync(project, "managed", "create", "user", "--data", json.dumps({"userName": "cy"}))
    assert user.returncode == 0, user.stdout + user.stderr
    assert json.loads(user.stdout)["accountStatus"] == "active"


def _user_scripts(project: Path, scripts: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """managed.json's user given ``scripts`` (hook -> script): the file and what it now holds."""
    managed = project / "conf" / "managed.json"
    raw = json.loads(managed.read_text())
    raw["objects"][0].update(scripts)
    managed.write_text(json.dumps(raw))
    return managed, raw


def test_a_module_idsync_does_not_provide_is_named_by_validate(tmp_path: Path) -> None:
    """A script that requires a module of PingIDM's that idsync does not provide (or
    one named only when it runs) is not run, and validate names the module; one whose
    requires idsync answers is run."""
    project = _project(tmp_path, "ui/")
    managed, raw = _user_scripts(project, {
        "postUpdate": {"type": _JS, "source": "require('ui/notification').send(object, 'password changed');"},
        "postDelete": {"type": _JS, "source": "var name = 'x'; require(name);"},
        "onDelete": {"type": _JS, "file": "ui/onDelete-user-cleanup.js"}})
    user = raw["objects"][0]
    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ("objects[0].postUpdate: not run: the script loads ui/notification (require), a module of PingIDM's "
            "that idsync does not provide") in checked.stderr
    assert "objects[0].postDelete: not run: the script loads a module named when it runs" in checked.stderr
    assert ("objects[0].onDelete: not run: ui/onDelete-user-cleanup.js is a script PingIDM bundles: it deletes "
            "the user's notifications") in checked.stderr
    assert "objects[0].onCreate" not in checked.stderr

    user["onCreate"] = {"type": _JS, "source": "if (object.userName === 'x') { require('nope'); }"}
    managed.write_text(json.dumps(raw))
    assert "loads nope (require)" in idsync(project, "validate").stderr
    user["onCreate"] = {"type": _JS, "source": "if (object.userName === 'x') { require('lib/lodash'); }"
                                               " else { object.n = require('lib/lodash').size([1, 2]); }"}
    managed.write_text(json.dumps(raw))
    made = idsync(project, "managed", "create", "user", "--data", json.dumps({"userName": "dee"}))
    assert made.returncode == 0 and json.loads(made.stdout)["n"] == 2, made.stdout + made.stderr


def test_a_lodash_function_idsync_lacks_is_named_through_the_variable_it_is_required_into(tmp_path: Path) -> None:
    """validate names a function idsync's lodash lacks whether the script calls it on
    ``require(...)`` itself or on the variable the module was required into (``_``, ``lo``),
    in managed.json's scripts (not run) and in a mapping's transforms (which would fail);
    functions idsync's lodash has are named in neither."""
    project = _project(tmp_path, "ui/")
    _user_scripts(project, {
        "onCreate": {"type": _JS, "source": "var _ = require('lib/lodash');\n"
                                            "object.tags = _.map(_.chunk(object.tags, 2), _.first);"},
        "postCreate": {"type": _JS, "source": "var _ = require('lib/lodash'); _.forEach([object], _.identity);"}})
    sync = project / "conf" / "sync.json"
    mappings = json.loads(sync.read_text())
    properties = mappings["mappings"][0]["properties"]
    properties[0]["transform"] = {"type": _JS, "source": "var lo = require('lodash');\nlo.kebabCase(source)"}
    properties[1]["transform"] = {"type": _JS, "source": "require('lib/lodash').snakeCase(source)"}
    properties[2]["transform"] = {"type": _JS, "source": "var lo = require('lodash'); lo.trim(source)"}
    sync.write_text(json.dumps(mappings))
    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ("objects[0].onCreate: not run: the script calls lib/lodash.chunk, which idsync's version of that "
            "module does not have") in checked.stderr
    assert "objects[0].postCreate: not run: the script calls lib/lodash.identity," in checked.stderr
    assert ("properties[0].transform: the script calls lodash.kebabCase, which idsync's version of that module "
            "does not have: it fails there") in checked.stderr
    assert "properties[1].transform: the script calls lib/lodash.snakeCase," in checked.stderr
    assert "properties[2]" not in checked.stderr and "lodash.map" not in checked.stderr


def test_a_granted_role_is_not_deleted(tmp_path: Path) -> None:
    """The role type's stock onDelete names PingIDM's roles/onDelete-roles.js, which the
    project does not have: idsync's own version refuses to delete a role granted to a
    user, over the API with PingIDM's 409, and deletes it once nobody holds it."""
    project = _project(tmp_path, "ui/")
    with serve(project) as api:
        json_headers = {**ADMIN, "Content-Type": "application/json"}
        role = api.post("/openidm/managed/role?_action=create", headers=json_headers, json={"name": "ops"}).json()
        user = api.post("/openidm/managed/user?_action=create", headers=json_headers,
                        json={"userName": "eve", "roles": [{"_ref": f"managed/role/{role['_id']}"}]})
        assert user.status_code == 201, user.text
        refused = api.delete(f"/openidm/managed/role/{role['_id']}", headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.json() == {"code": 409, "reason": "Conflict",
                                  "message": "Cannot delete a role that is currently granted"}
        assert api.get(f"/openidm/managed/role/{role['_id']}", headers=ADMIN).status_code == 200
        taken = api.patch(f"/openidm/managed/user/{user.json()['_id']}", headers=json_headers,
                          json=[{"operation": "replace", "field": "/roles", "value": []}])
        assert taken.status_code == 200, taken.text
        assert api.delete(f"/openidm/managed/role/{role['_id']}", headers=ADMIN).status_code == 200
    checked = idsync(project, "validate")
    assert "objects[1].onDelete" not in checked.stderr, checked.stderr


_EDGES: list[dict[str, Any]] = [
    {}, {"accountStatus": ""}, {"accountStatus": None}, {"accountStatus": 0}, {"accountStatus": "inactive"},
    {"authzRoles": []}, {"authzRoles": None}, {"authzRoles": [{"_ref": "managed/role/x"}]}, {"authzRoles": {}},
    {"accountStatus": False, "authzRoles": ""}, {"lastSync": {"m": 1}}, {"idpData": {}},
]


@pytest.mark.parametrize("ui", ["ui/", ""])
def test_a_stock_only_script_runs_as_python_with_the_same_answers(ui: str) -> None:
    """The stock onCreate and onUpdate, and nothing else, run as Python (``StockScript``)
    and answer what idsync's JavaScript modules answer, for absent, empty, false and
    zero values alike; one line more and the script is JavaScript again."""
    from idsync.scripts import ScriptEngine
    from idsync.scripts.stock import StockScript, stock_script

    engine = ScriptEngine()
    same = [["newObject", "object"]]
    for source, olds in ((_STOCK_CREATE, [None]), (_STOCK_UPDATE, [{}, {"lastSync": {"old": True}}, {"lastSync": ""}])):
        config = {"type": _JS, "source": source.format(ui=ui)}
        native = stock_script(config, "managed.json: onX")
        assert isinstance(native, StockScript)
        compiled = engine.compile(config, file="managed.json", key="onX", base_dir=Path("."))
        for obj in _EDGES:
            for old in olds:
                for method in ("create", "update"):
                    variables = {"object": dict(obj), "oldObject": old, "@same": same,
                                 "request": {"method": method, "resourcePath": "managed/user/1"},
                                 "resourceName": "managed/user/1"}
                    assert native.run_returning(variables, "object") == compiled.run_returning(variables, "object"), (
                        source, obj, old, method)
        assert stock_script({**config, "source": config["source"] + " object.x = 1;"}, "x") is None
        assert stock_script({**config, "globals": {"a": 1}}, "x") is None
    assert stock_script({"type": _JS, "source": "require('ui/onCreateUser').setDefaultFields(newObject);"}, "x") is None
    from idsync.config.objectmodel import load_object_models

    raw = {"objects": [{**_user(ui), "onCreate": {"type": _JS, "source": _STOCK_CREATE.format(ui=ui)}}, _ROLE]}
    models = load_object_models(raw, Path("."), Path("."), engine, file="managed.json")
    assert isinstance(models["user"].scripts["onCreate"], StockScript)
    assert isinstance(models["role"].scripts["onCreate"], StockScript)
    assert not isinstance(models["user"].scripts["onUpdate"], StockScript)  # the project's lines after the stock ones


def test_each_module_exports_what_validate_knows_of_it(tmp_path: Path) -> None:
    """The functions validate knows each module by are the ones its JavaScript exports;
    a stock script calling one idsync's module lacks (a later PingIDM's, say) is not run
    and validate names the function, where at run time it would fail every create."""
    from idsync.scripts import ScriptEngine
    from idsync.scripts.modules import MODULE_FUNCTIONS

    engine = ScriptEngine()
    for module, functions in MODULE_FUNCTIONS.items():
        script = engine.compile({"type": _JS, "source": f"Object.keys(require('{module}')).sort()"},
                                file="t", key=module, base_dir=tmp_path)
        assert script() == sorted(functions), module
    project = _project(tmp_path, "")
    _user_scripts(project, {"onCreate": {"type": _JS, "source": "require('onCreateUser').setDefaultFields(object);"
                                                                "require('onCreateUser').emailUser(object, request);"}})
    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "objects[0].onCreate: not run: the script calls onCreateUser.emailUser" in checked.stderr
