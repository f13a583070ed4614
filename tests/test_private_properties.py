"""PingIDM's ``"scope": "private"``: a property the HTTP API never answers, whatever
the request names, while it is stored and scripts and the command line see it."""

from __future__ import annotations

import json
from pathlib import Path

from api_server import ADMIN, serve

from samples import idsync

_JS = "text/javascript"
_JSON = {**ADMIN, "Content-Type": "application/json"}


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    conf = project / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    user = {"name": "user",
            # A script sees the private property: it copies it where the API shows it.
            "onStore": {"type": _JS, "source": "object.noted = object.note ? 'yes' : 'no';"},
            "schema": {"required": ["userName"], "properties": {
                "userName": {"type": "string", "searchable": True},
                "note": {"type": "string", "scope": "private"},
                "lastSync": {"type": "object", "scope": "private"},
                "noted": {"type": "string"}}}}
    (conf / "managed.json").write_text(json.dumps({"objects": [user]}))
    return project


def test_a_private_property_is_never_answered_over_http(tmp_path: Path) -> None:
    """Create, read (with and without _fields naming it), query, patch and delete never
    answer ``note`` or ``lastSync``; the store keeps them (``idsync managed get`` shows
    them, a script reads them); validate no longer warns of ``scope``; a scope other
    than public or private is an error naming file and key."""
    project = _project(tmp_path)
    with serve(project) as api:
        made = api.post("/openidm/managed/user?_action=create", headers=_JSON,
                        json={"userName": "ann", "note": "keep it quiet", "lastSync": {"m": {"t": 1}}})
        assert made.status_code == 201, made.text
        answered = [made.json()]
        user_id = made.json()["_id"]
        answered.append(api.get(f"/openidm/managed/user/{user_id}", headers=ADMIN).json())
        answered.append(api.get(f"/openidm/managed/user/{user_id}?_fields=userName,note,lastSync",
                                headers=ADMIN).json())
        answered += api.get("/openidm/managed/user?_queryFilter=true", headers=ADMIN).json()["result"]
        answered += api.get("/openidm/managed/user?_queryFilter=true&_fields=note", headers=ADMIN).json()["result"]
        patched = api.patch(f"/openidm/managed/user/{user_id}", headers=_JSON,
                            json=[{"operation": "replace", "field": "/note", "value": "still quiet"}])
        assert patched.status_code == 200, patched.text
        answered.append(patched.json())
        assert answered[0]["noted"] == "yes" and answered[1]["userName"] == "ann"
        for body in answered:
            assert "note" not in body and "lastSync" not in body, body
            assert "quiet" not in json.dumps(body)
        shown = idsync(project, "managed", "get", "user", user_id)
        assert shown.returncode == 0 and json.loads(shown.stdout)["note"] == "still quiet", shown.stderr
        deleted = api.delete(f"/openidm/managed/user/{user_id}", headers=ADMIN)
        assert deleted.status_code == 200 and "note" not in deleted.json(), deleted.text

    checked = idsync(project, "validate")
    assert checked.returncode == 0 and "scope" not in checked.stderr, checked.stdout + checked.stderr
    managed = project / "conf" / "managed.json"
    raw = json.loads(managed.read_text())
    raw["objects"][0]["schema"]["properties"]["note"]["scope"] = "secret"
    managed.write_text(json.dumps(raw))
    checked = idsync(project, "validate")
    assert checked.returncode == 78, checked.stdout
    assert "objects[0].schema.properties.note.scope: expected \"public\" or \"private\"" in checked.stdout
