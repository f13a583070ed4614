"""PingIDM's own actions on a managed object, ``POST managed/TYPE/ID?_action=patch`` and
``?_action=triggerSyncCheck``, over HTTP against a real store, with a mapping from
``managed/user`` to ``managed/staff`` to push through."""

from __future__ import annotations

import json
from pathlib import Path

from api_server import ADMIN, serve
from store_projects import CREATE_UPDATE, store_project

from samples import idsync

_JSON = {**ADMIN, "Content-Type": "application/json"}
_MAPPING = {"name": "user_staff", "source": "managed/user", "target": "managed/staff", "policies": CREATE_UPDATE,
            "properties": [{"source": "userName", "target": "login"}, {"source": "title", "target": "title"}]}


def _project(tmp_path: Path) -> Path:
    return store_project(tmp_path, {
        "user": {"schema": {"required": ["userName"], "properties": {
            "userName": {"type": "string", "searchable": True}, "title": {"type": "string"}}}},
        "staff": {"login": {"type": "string", "searchable": True}, "title": {"type": "string"}}}, [_MAPPING])


def test_trigger_sync_check_and_patch_actions(tmp_path: Path) -> None:
    """triggerSyncCheck pushes a user that was never pushed (its staff object is made),
    answers the user, and writes nothing when the target is in step; the patch action
    changes the user as PATCH does (its push updates the staff object), honours
    If-Match, and a bad body is 400."""
    project = _project(tmp_path)
    made = idsync(project, "managed", "create", "user", "--no-sync", "--data",
                  json.dumps({"userName": "ann", "title": "clerk"}))
    assert made.returncode == 0, made.stderr
    user = json.loads(made.stdout)
    with serve(project) as api:
        def staff() -> list[dict[str, object]]:
            return list(api.get("/openidm/managed/staff?_queryFilter=true", headers=ADMIN).json()["result"])

        assert staff() == []
        checked = api.post(f"/openidm/managed/user/{user['_id']}?_action=triggerSyncCheck", headers=_JSON, json={})
        assert checked.status_code == 200, checked.text
        assert checked.json()["userName"] == "ann" and checked.json()["_rev"] == user["_rev"]
        (pushed,) = staff()
        assert pushed["login"] == "ann" and pushed["title"] == "clerk"
        again = api.post(f"/openidm/managed/user/{user['_id']}?_action=triggerSyncCheck", headers=_JSON, json={})
        assert again.status_code == 200 and staff() == [pushed]  # in step: not written again
        assert api.post("/openidm/managed/user/nobody?_action=triggerSyncCheck", headers=_JSON,
                        json={}).status_code == 404

        ops = [{"operation": "replace", "field": "/title", "value": "manager"}]
        stale = api.post(f"/openidm/managed/user/{user['_id']}?_action=patch", json=ops,
                         headers={**_JSON, "If-Match": '"0000000000000099"'})
        assert stale.status_code == 412, stale.text
        patched = api.post(f"/openidm/managed/user/{user['_id']}?_action=patch", json=ops,
                           headers={**_JSON, "If-Match": f'"{user["_rev"]}"'})
        assert patched.status_code == 200 and patched.json()["title"] == "manager", patched.text
        assert staff()[0]["title"] == "manager"
        bad = api.post(f"/openidm/managed/user/{user['_id']}?_action=patch", json={"title": "x"}, headers=_JSON)
        assert bad.status_code == 400, bad.text


def test_a_script_triggers_a_sync_check(tmp_path: Path) -> None:
    """openidm.action('managed/user/ID', 'triggerSyncCheck') in a script (a custom endpoint
    here) pushes the object as the REST action does and answers it."""
    project = _project(tmp_path)
    (project / "conf" / "endpoint-resync.json").write_text(json.dumps({
        "type": "text/javascript",
        "source": "openidm.action('managed/user/' + request.additionalParameters.id, 'triggerSyncCheck')"}))
    made = idsync(project, "managed", "create", "user", "--no-sync", "--data",
                  json.dumps({"userName": "bo", "title": "clerk"}))
    assert made.returncode == 0, made.stderr
    with serve(project) as api:
        answer = api.get(f"/openidm/endpoint/resync?id={json.loads(made.stdout)['_id']}", headers=ADMIN)
        assert answer.status_code == 200 and answer.json()["userName"] == "bo", answer.text
        (staff,) = api.get("/openidm/managed/staff?_queryFilter=true", headers=ADMIN).json()["result"]
        assert staff["login"] == "bo" and staff["title"] == "clerk"


def test_an_assignment_names_a_mapping_of_the_project(tmp_path: Path) -> None:
    """PingIDM's mapping-exists policy (on the default assignment's ``mapping``) refuses a
    name no mapping of the project has, as PingIDM does (403, MAPPING_EXISTS), and takes
    one it has; validate no longer calls it unenforced."""
    project = store_project(tmp_path, {
        "user": {"userName": {"type": "string", "searchable": True}, "title": {"type": "string"}},
        "staff": {"login": {"type": "string", "searchable": True}, "title": {"type": "string"}},
        "assignment": {"schema": {"required": ["name", "mapping"], "properties": {
            "name": {"type": "string"},
            "mapping": {"type": "string", "policies": [{"policyId": "mapping-exists"}]}}}}}, [_MAPPING])
    with serve(project) as api:
        wrong = api.post("/openidm/managed/assignment?_action=create", headers=_JSON,
                         json={"name": "a", "mapping": "no_such_mapping"})
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["detail"]["failedPolicyRequirements"] == [
            {"property": "mapping", "policyRequirements": [{"policyRequirement": "MAPPING_EXISTS"}]}]
        right = api.post("/openidm/managed/assignment?_action=create", headers=_JSON,
                         json={"name": "a", "mapping": "user_staff"})
        assert right.status_code == 201, right.text
    checked = idsync(project, "validate")
    assert checked.returncode == 0 and "mapping-exists" not in checked.stderr, checked.stderr
