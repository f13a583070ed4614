"""Ids a client chooses, over the API on every store: an id longer than the store's id
column is refused alike on SQLite, PostgreSQL and MariaDB, with a message naming the
limit and no database's words, and nothing is written; an encoded slash in an id is a
400 saying why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED
from idsync.store.tables import ID_LENGTH

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
