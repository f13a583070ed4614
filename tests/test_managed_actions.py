"""PingIDM's custom actions of managed objects (``managed.json``'s ``actions``), served at
``POST /openidm/managed/TYPE/ID?_action=NAME`` against a real store: the script runs on
the object as read with PingIDM's variables, only what it does through ``openidm`` is
stored, the answer is the object read again, errors answer as PingIDM answers them, a
broken action stops the project loading, and ``validate`` names only the actions that
are not served (a script loading a module of PingIDM's that idsync does not provide)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from file_projects import file_project
from idsync.config.project import load_project, validate_project
from idsync.errors import ConfigError, ConfigWarning
from idsync.resources import check_system
from test_custom_endpoints import _serve

_JS = "text/javascript"
# Patches the object with what the script was given; changes object itself, answers a value.
DESCRIBE = """openidm.patch(resourcePath, null, [{operation: 'replace', field: '/description',
  value: JSON.stringify({method: request.method, action: request.action, path: request.resourcePath,
                         content: request.content, params: request.additionalParameters, fields: request.fields,
                         resourcePath: resourcePath, userName: object.userName, keys: Object.keys(object).sort(),
                         user: context.security.authenticationId})}]);
object.givenName = 'not stored';
({ignored: true});"""
GUARD = """if (request.content && request.content.boom) { throw new Error('disk full'); }
throw {code: 403, message: object.userName + ' may not be unlocked'};"""
# PingIDM's default managed.json's action: it loads its UI's module, which idsync provides.
RESET = {"type": _JS, "source": "require('ui/resetPassword').sendMail(object, subject, message, passwordRules, "
                                "passwordLength);",
         "globals": {"subject": "Your password has been reset by an administrator", "passwordLength": 20}}
# An action loading a module of PingIDM's that idsync does not provide.
NOTIFY = {"type": _JS, "source": "require('ui/notification').send(object);"}


def _project(tmp_path: Path, **actions: Any) -> Path:
    project = file_project(tmp_path, [])
    (project / "script").mkdir()
    (project / "script" / "describe.js").write_text(DESCRIBE)
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    user = next(o for o in managed["objects"] if o["name"] == "user")
    user["actions"] = actions or {"describe": {"type": _JS, "file": "script/describe.js"},
                                  "guard": {"type": _JS, "source": GUARD}}
    managed_file.write_text(json.dumps(managed))
    return project


async def _id(api: httpx.AsyncClient, user_name: str) -> str:
    found = (await api.get("/openidm/managed/user", params={"_queryFilter": f'userName eq "{user_name}"'})).json()
    return str(found["result"][0]["_id"])


def test_an_action_changes_the_object_through_openidm_and_answers_it_read_again(tmp_path: Path) -> None:
    """What the script does through openidm.patch is stored and is in the answer (200), the
    object read again after the script; what it sets on ``object`` is not stored, and its
    own value is not the answer."""
    async def visit(api: httpx.AsyncClient) -> None:
        ann = await _id(api, "ann")
        done = await api.post(f"/openidm/managed/user/{ann}?_action=describe", json={})
        assert done.status_code == 200, done.text
        answer = done.json()
        assert answer["_id"] == ann and answer["userName"] == "ann"
        assert json.loads(answer["description"])["userName"] == "ann"
        assert answer["givenName"] == "ann" and "ignored" not in answer
        stored = (await api.get(f"/openidm/managed/user/{ann}")).json()
        assert stored["description"] == answer["description"] and stored["_rev"] == answer["_rev"]
        assert stored["givenName"] == "ann"

    _serve(_project(tmp_path), visit)


def test_the_script_gets_pingidms_request_object_and_context(tmp_path: Path) -> None:
    """``request`` holds method ``action``, the action's name, ``resourcePath``
    managed/user/ID, the body as ``content`` and the other query parameters as
    ``additionalParameters``; ``resourcePath`` and ``context`` are there too, and
    ``object`` is the object as read with ``_fields``, as the answer is."""
    async def visit(api: httpx.AsyncClient) -> None:
        bob = await _id(api, "bob")
        done = await api.post(f"/openidm/managed/user/{bob}",
                              params={"_action": "describe", "reason": "audit", "_fields": "userName,description"},
                              json={"text": "hello", "n": [1, 2]})
        assert done.status_code == 200, done.text
        answer = done.json()
        assert set(answer) == {"_id", "_rev", "userName", "description"}
        seen = json.loads(answer["description"])
        assert seen["method"] == "action" and seen["action"] == "describe"
        assert seen["path"] == seen["resourcePath"] == f"managed/user/{bob}"
        assert seen["content"] == {"text": "hello", "n": [1, 2]}
        assert seen["params"] == {"reason": "audit"} and seen["fields"] == ["userName", "description"]
        assert seen["keys"] == ["_id", "_rev", "userName"] and seen["userName"] == "bob"  # no description yet
        assert seen["user"] == "openidm-admin"

    _serve(_project(tmp_path), visit)


def test_errors_answer_as_pingidm_answers_them(tmp_path: Path) -> None:
    """An action the type does not have is 400 "Action NAME is not supported.", a POST
    without _action 400, a missing object
    404, an unknown type 404; a thrown {code: 403, message} is 403 with that message, any
    other failure 500 naming the action and the error, not the server's files."""
    async def visit(api: httpx.AsyncClient) -> None:
        cy = await _id(api, "cy")
        for name in ("nothing", "resync"):
            unknown = await api.post(f"/openidm/managed/user/{cy}?_action={name}", json={})
            assert unknown.status_code == 400 and unknown.json()["message"] == f"Action {name} is not supported."
        bare = await api.post(f"/openidm/managed/user/{cy}", json={})
        assert bare.status_code == 400 and "describe, guard" in bare.json()["message"]
        assert (await api.post("/openidm/managed/user/nobody?_action=describe", json={})).status_code == 404
        assert (await api.post(f"/openidm/managed/thing/{cy}?_action=describe", json={})).status_code == 404
        refused = await api.post(f"/openidm/managed/user/{cy}?_action=guard", json={})
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == "cy may not be unlocked"
        broken = await api.post(f"/openidm/managed/user/{cy}?_action=guard", json={"boom": True})
        assert broken.status_code == 500 and "action guard: the script failed: " in broken.json()["message"]
        assert "disk full" in broken.json()["message"] and "managed.json" not in broken.json()["message"]

    _serve(_project(tmp_path), visit)


@pytest.mark.parametrize(("action", "problem"), [
    ({"type": _JS, "source": "openidm.patch(resourcePath, null, [{operation: 'replace',"}, "syntax error"),
    ({"type": _JS, "file": "script/broken.js"}, "script/broken.js"),
    ({"type": _JS, "file": "script/missing.js"}, "script/missing.js"),
    ({"type": "groovy", "source": "1"}, "text/javascript"),
])
def test_an_action_that_does_not_compile_stops_the_project_loading(
        tmp_path: Path, action: dict[str, Any], problem: str) -> None:
    """A syntax error (in the source or in the file it names), a missing file or a Groovy
    script in an action is a ConfigError naming managed.json and the action's key (and
    the script's file), from loading as from validate."""
    project = _project(tmp_path, broken=action)
    (project / "script" / "broken.js").write_text("var x = ;\n")
    with pytest.raises(ConfigError) as raised:
        load_project(project)
    assert Path(raised.value.file).name == "managed.json"
    assert raised.value.key == "objects[0].actions.broken" and problem in str(raised.value)
    errors = [p for p in validate_project(project, check_system) if not isinstance(p, ConfigWarning)]
    assert [(Path(e.file).name, e.key) for e in errors if isinstance(e, ConfigError)] == [
        ("managed.json", "objects[0].actions.broken")]


def test_validate_names_only_the_actions_it_does_not_serve(tmp_path: Path) -> None:
    """An action loading a module of PingIDM's that idsync does not provide does not stop
    the project loading: validate names it, and why, in a warning of its own, and calling
    it answers 501 with why; the project's own action and PingIDM's resetPassword (on
    idsync's own ui/resetPassword) get no warning and are served, and openapi.json lists
    them as the type's _action."""
    project = _project(tmp_path, describe={"type": _JS, "file": "script/describe.js"}, resetPassword=RESET,
                       notify=NOTIFY)
    problems = validate_project(project, check_system)
    assert [p for p in problems if not isinstance(p, ConfigWarning)] == []
    actions = [p for p in problems if ".actions" in str(p)]
    assert [p.key for p in actions if isinstance(p, ConfigError)] == ["objects[0].actions.notify"]
    assert "ui/notification" in str(actions[0]) and "501" in str(actions[0])

    async def visit(api: httpx.AsyncClient) -> None:
        ann = await _id(api, "ann")
        notify = await api.post(f"/openidm/managed/user/{ann}?_action=notify", json={})
        assert notify.status_code == 501 and "require" in notify.json()["message"]
        assert (await api.post(f"/openidm/managed/user/{ann}?_action=describe", json={})).status_code == 200
        spec = (await api.get("/openidm/openapi.json")).json()
        (action,) = [p for p in spec["paths"]["/openidm/managed/user/{id}"]["post"]["parameters"]
                     if p["name"] == "_action"]
        assert action["required"] and action["schema"] == {"enum": ["describe", "patch", "resetPassword",
                                                                    "triggerSyncCheck"]}
        (role_action,) = [p for p in spec["paths"]["/openidm/managed/role/{id}"]["post"]["parameters"]
                          if p["name"] == "_action"]
        assert role_action["schema"] == {"enum": ["patch", "triggerSyncCheck"]}  # PingIDM's own only

    _serve(project, visit)
