"""Ids a client chooses, over the API on every store: an id longer than the store's id
column is refused alike on SQLite, PostgreSQL and MariaDB, with a message naming the
limit and no database's words, and nothing is written; an encoded slash in an id is a
400 saying why; a create takes the ``_id`` its body gives (the API, the CLI, scripts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED
from idsync.config.project import load_project
from idsync.managed.router import scripting
from idsync.store.database import Store
from idsync.store.tables import ID_LENGTH

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(DEFAULT_MANAGED))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "{store_url(request.param, tmp_path)}"\n')
    with serve(tmp_path / "p") as client:
        yield client


def test_an_id_longer_than_the_id_column_is_refused_on_every_store(api: httpx.Client) -> None:
    """A create by ``_action=create&_id=`` and by ``PUT`` under a 65-character id is a 400
    saying ids are at most 64 characters (no driver's text), on every store; nothing is
    stored; an id of exactly 64 characters is taken and read back."""
    too_long, longest = "u" * (ID_LENGTH + 1), "u" * ID_LENGTH
    body = json.dumps({"userName": "long"})
    for r in (api.post("/openidm/managed/user", params={"_action": "create", "_id": too_long}, headers=JSON,
                       content=body),
              api.put(f"/openidm/managed/user/{too_long}", headers={**JSON, "If-None-Match": "*"}, content=body),
              api.put(f"/openidm/managed/user/{too_long}", headers=JSON, content=body)):
        assert r.status_code == 400, r.text
        message = r.json()["message"]
        assert message == f"managed/user: an _id is at most {ID_LENGTH} characters; this one has {ID_LENGTH + 1}"
    assert api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"] == []
    assert api.get(f"/openidm/managed/user/{too_long}", headers=ADMIN).status_code == 404
    r = api.put(f"/openidm/managed/user/{longest}", headers={**JSON, "If-None-Match": "*"}, content=body)
    assert r.status_code == 201, r.text
    assert api.get(f"/openidm/managed/user/{longest}", headers=ADMIN).json()["userName"] == "long"


def test_an_encoded_slash_in_a_managed_id_is_a_bad_request(api: httpx.Client) -> None:
    """``PUT``, ``GET``, ``PATCH`` and ``DELETE`` of ``managed/user/a%2Fb`` are a 400 saying an
    id cannot hold a ``/`` (the decoded path named another resource: a 405), and nothing is
    created."""
    body = json.dumps({"userName": "slash"})
    for r in (api.put("/openidm/managed/user/a%2Fb", headers=JSON, content=body),
              api.put("/openidm/managed/user/a%2fb", headers={**JSON, "If-None-Match": "*"}, content=body),
              api.get("/openidm/managed/user/a%2Fb", headers=ADMIN),
              api.patch("/openidm/managed/user/a%2Fb", headers=JSON, content="[]"),
              api.delete("/openidm/managed/user/a%2Fb", headers=ADMIN)):
        assert r.status_code == 400, r.text
        assert "cannot contain '/'" in r.json()["message"]
    assert api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"] == []


def test_percent_encoded_bytes_that_are_not_utf8_are_a_bad_request(api: httpx.Client) -> None:
    """``managed/user/%FF%FE`` (and ``%ED%A0%BD``, half of a character) is a 400 naming the bytes
    for every method, as are such bytes in a query parameter (``_id``, ``_queryFilter``, a
    named query's value) and in any other path: decoded, each was U+FFFD, so ``%FF%FE`` and
    ``%FE%FF`` were one id and ``%EF%BF%BD%EF%BF%BD`` read it. Nothing is created; an id
    in valid UTF-8 (``%C3%A9``) is still taken and read back."""
    body = json.dumps({"userName": "badutf"})
    answers = [
        api.put("/openidm/managed/user/%FF%FE", headers=JSON, content=body),
        api.put("/openidm/managed/user/%FE%FF", headers={**JSON, "If-None-Match": "*"}, content=body),
        api.put("/openidm/managed/user/a%ED%A0%BD", headers=JSON, content=body),
        api.get("/openidm/managed/user/%FF%FE", headers=ADMIN),
        api.patch("/openidm/managed/user/%FF", headers=JSON, content="[]"),
        api.delete("/openidm/managed/user/%FF", headers=ADMIN),
        api.post("/openidm/managed/user?_action=create&_id=%FF%FE", headers=JSON, content=body),
        api.get("/openidm/managed/user?_queryFilter=userName+eq+%22%FF%22", headers=ADMIN),
        api.get("/openidm/managed/user?_queryId=for-userName&uid=%C3", headers=ADMIN),
        api.get("/openidm/managed/role/%FF/members?_queryFilter=true", headers=ADMIN),
        api.get("/openidm/system/ldap/account/%FF", headers=ADMIN),
        api.get("/admin/managed/user/%FF"),
    ]
    for r in answers:
        assert r.status_code == 400, (r.request.url, r.text)
        assert "not UTF-8" in r.json()["message"], r.text
    assert "(%FF)" in answers[0].json()["message"] and "(%ED)" in answers[2].json()["message"]
    assert api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"] == []
    made = api.put("/openidm/managed/user/%C3%A9", headers={**JSON, "If-None-Match": "*"}, content=body)
    assert made.status_code == 201 and made.json()["_id"] == "\u00e9", made.text
    assert api.get("/openidm/managed/user/%C3%A9", headers=ADMIN).json()["userName"] == "badutf"
    assert api.get("/openidm/managed/user/%EF%BF%BD", headers=ADMIN).status_code == 404


def test_a_create_takes_the_id_its_body_gives(api: httpx.Client) -> None:
    """``POST managed/TYPE?_action=create`` with ``"_id"`` in the body (PingIDM's samples create
    ``joesmith`` so) creates the object under that id, for a user and a role alike, and the
    later reads by it find it; with an ``_id`` parameter too, the body's wins, as in PingIDM.
    The body's id is checked as the parameter is: one an object holds is a 412, one holding a
    ``/``, longer than the id column or no string is a 400, and nothing is written."""
    joe = {"userName": "joe.smith", "givenName": "Joe", "sn": "Smith", "mail": "joe@example.com", "_id": "joesmith"}
    made = api.post("/openidm/managed/user", params={"_action": "create"}, headers=JSON, content=json.dumps(joe))
    assert made.status_code == 201 and made.json()["_id"] == "joesmith", made.text
    assert api.get("/openidm/managed/user/joesmith", headers=ADMIN).json()["userName"] == "joe.smith"
    role = api.post("/openidm/managed/role?_action=create&_id=other", headers=JSON,
                    content=json.dumps({"name": "staff", "_id": "staff"}))
    assert role.status_code == 201 and role.json()["_id"] == "staff", role.text
    assert api.get("/openidm/managed/role/other", headers=ADMIN).status_code == 404
    again = api.post("/openidm/managed/user?_action=create", headers=JSON,
                     content=json.dumps({**joe, "userName": "joe.other"}))
    assert again.status_code == 412, again.text
    for bad_id, says in (("a/b", "cannot contain '/'"), ("u" * (ID_LENGTH + 1), f"at most {ID_LENGTH} characters"),
                         (7, "an _id is a string")):
        r = api.post("/openidm/managed/user?_action=create", headers=JSON,
                     content=json.dumps({"userName": "bad", "_id": bad_id}))
        assert r.status_code == 400 and says in r.json()["message"], r.text
    users = api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"]
    assert [(u["_id"], u["userName"]) for u in users] == [("joesmith", "joe.smith")]


def test_a_put_creates_under_the_id_its_path_names(api: httpx.Client) -> None:
    """A ``PUT managed/user/ID`` that creates (``If-None-Match: *``, or no precondition) creates
    ``ID``, whatever ``_id`` its body holds (an object read back and sent under another id)."""
    for headers, new_id in (({**JSON, "If-None-Match": "*"}, "first"), (JSON, "second")):
        body = json.dumps({"userName": new_id, "_id": "original"})
        r = api.put(f"/openidm/managed/user/{new_id}", headers=headers, content=body)
        assert r.status_code == 201 and r.json()["_id"] == new_id, r.text
    assert api.get("/openidm/managed/user/original", headers=ADMIN).status_code == 404


def test_the_cli_and_scripts_create_under_the_id_the_content_gives(tmp_path: Path) -> None:
    """``idsync managed create --data '{"_id": ...}'`` and a script's
    ``openidm.create('managed/user', null, {_id: ...})`` create the object under that id, as
    the API does; the CLI names it in what it prints."""
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(DEFAULT_MANAGED))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    made = idsync(tmp_path / "p", "managed", "create", "user", "--data",
                  json.dumps({"userName": "joe.smith", "_id": "joesmith"}))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["_id"] == "joesmith"
    project = load_project(tmp_path / "p")
    store = Store.open(project.settings.store_url())
    script = project.scripts.compile(
        {"type": "text/javascript", "source": "openidm.create('managed/user', null, {userName: 'ann', _id: 'ann1'})"},
        file="test", key="script", base_dir=tmp_path / "p")
    try:
        with scripting(project, store):
            assert script()["_id"] == "ann1"
    finally:
        store.close()
    with serve(tmp_path / "p") as api:
        for user_id, name in (("joesmith", "joe.smith"), ("ann1", "ann")):
            assert api.get(f"/openidm/managed/user/{user_id}", headers=ADMIN).json()["userName"] == name
