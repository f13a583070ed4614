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


def test_the_console_shows_no_private_property(tmp_path: Path) -> None:
    """The admin console, which answers as the API does, lists and shows no private
    property, offers none in its forms, and a form that sends one changes nothing."""
    import asyncio

    import httpx
    from test_console_unit import _app, _logged_in, _login_token

    project = _project(tmp_path)
    made = idsync(project, "managed", "create", "user", "--data",
                  json.dumps({"userName": "ann", "note": "keep it quiet", "lastSync": {"m": {"t": 1}}}))
    assert made.returncode == 0, made.stderr
    user_id = json.loads(made.stdout)["_id"]

    async def visit(app: object) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                     base_url="http://testserver") as client:
            await _logged_in(client)
            listing = await client.get("/admin/managed/user")
            shown = await client.get(f"/admin/managed/user/{user_id}")
            new_form = await client.get("/admin/managed/user/new")
            for answer in (listing, shown, new_form):
                assert answer.status_code == 200, answer.text
                assert "quiet" not in answer.text and 'name="p.note"' not in answer.text, answer.text
                assert "lastSync" not in answer.text
            assert "ann" in listing.text and "ann" in shown.text
            rev = shown.text.split('name="_rev" value="', 1)[1].split('"', 1)[0]
            await client.post(f"/admin/managed/user/{user_id}",
                              data={"csrf": _login_token(shown), "_rev": rev, "p.note": "now loud"})

    with _app(tmp_path, project) as app:
        asyncio.run(visit(app))
    kept = idsync(project, "managed", "get", "user", user_id)
    assert json.loads(kept.stdout)["note"] == "keep it quiet"


def test_a_recorded_change_of_a_private_property_is_not_answered(tmp_path: Path) -> None:
    """A recon writing a private property records the change; audit/recon answers the
    entry's other changes and leaves that one out."""
    from store_projects import CREATE_UPDATE, store_project

    mapping = {"name": "staff_user", "source": "managed/staff", "target": "managed/user", "policies": CREATE_UPDATE,
               "properties": [{"source": "login", "target": "userName"}, {"source": "remark", "target": "note"}]}
    project = store_project(tmp_path, {
        "user": {"userName": {"type": "string", "searchable": True}, "note": {"type": "string", "scope": "private"}},
        "staff": {"login": {"type": "string", "searchable": True}, "remark": {"type": "string"}}}, [mapping])
    made = idsync(project, "managed", "create", "staff", "--no-sync", "--data",
                  json.dumps({"login": "bo", "remark": "keep it quiet"}))
    assert made.returncode == 0, made.stderr
    assert idsync(project, "recon", "staff_user").returncode == 0
    with serve(project) as api:
        (event,) = api.get("/openidm/audit/recon?_queryFilter=entryType eq \"entry\"", headers=ADMIN).json()["result"]
    assert event["action"] == "CREATE" and event["messageDetail"]["userName"] == "bo"
    assert "note" not in event["messageDetail"] and "quiet" not in json.dumps(event)
