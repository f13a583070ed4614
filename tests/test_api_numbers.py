"""Numbers JSON has no form for, over the API on every store: ``NaN``, ``Infinity`` and a
number past a double in a request body are a 400 naming them before anything is written,
and so is an ``increment`` past the largest number; and an object an
earlier release stored with one is still answered (the number as ``null``), rather than
failing every query of its type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED
from idsync.store.database import Store
from idsync.store.tables import managed_objects
from sqlalchemy import text

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.fixture(params=BACKENDS)
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(DEFAULT_MANAGED))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "{store_url(request.param, tmp_path)}"\n')
    return tmp_path / "p"


@pytest.fixture
def api(project: Path) -> Iterator[httpx.Client]:
    with serve(project) as client:
        yield client


def _everyone(api: httpx.Client) -> list[dict[str, Any]]:
    answer = api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return [{k: u.get(k) for k in ("_id", "_rev", "userName", "count")} for u in answer.json()["result"]]


def _bad(answer: httpx.Response, *words: str) -> None:
    assert answer.status_code == 400, answer.text
    assert all(w in answer.json()["message"] for w in words), answer.text


def test_nan_infinity_and_numbers_past_a_double_are_refused(api: httpx.Client, project: Path) -> None:
    """``NaN``, ``Infinity``, ``-Infinity``, ``1e999`` and a 400-digit integer in a create, a
    PUT (either kind), a PATCH, ``_action=patch`` and a policy check are each a 400 naming
    the number; an increment of ``1e308`` by ``1e308`` too, over REST and by the command line,
    and ``NaN`` in ``idsync managed create --data``; nothing is written, and the type still reads."""
    made = api.put("/openidm/managed/user/big", headers=JSON, content='{"userName": "big", "count": 1e308}')
    assert made.status_code == 201, made.text
    before = _everyone(api)
    assert [(u["_id"], u["count"]) for u in before] == [("big", 1e308)]
    for number, words in (("NaN", ("NaN",)), ("Infinity", ("Infinity",)), ("-Infinity", ("-Infinity",)),
                          ("1e999", ("1e999", "out of range")), ("1" * 400, ("out of range",))):
        body = '{"userName": "n", "count": NUMBER}'.replace("NUMBER", number)
        _bad(api.post("/openidm/managed/user?_action=create", headers=JSON, content=body), *words)
        _bad(api.put("/openidm/managed/user/n", headers=JSON, content=body), *words)
        _bad(api.put("/openidm/managed/user/big", headers={**JSON, "If-Match": before[0]["_rev"]}, content=body),
             *words)
        ops = '[{"operation": "replace", "field": "/count", "value": NUMBER}]'.replace("NUMBER", number)
        _bad(api.patch("/openidm/managed/user/big", headers=JSON, content=ops), *words)
        _bad(api.post("/openidm/managed/user/big?_action=patch", headers=JSON, content=ops), *words)
        _bad(api.post("/openidm/policy/managed/user/*?_action=validateObject", headers=JSON, content=body), *words)
    increment = json.dumps([{"operation": "increment", "field": "/count", "value": 1e308}])
    _bad(api.patch("/openidm/managed/user/big", headers=JSON, content=increment), "increment", "out of range")
    _bad(api.post("/openidm/managed/user/big?_action=patch", headers=JSON, content=increment), "out of range")
    cli = idsync(project, "managed", "patch", "user", "big", "--operations", increment)
    assert cli.returncode != 0 and "out of range" in cli.stderr, cli.stderr
    cli = idsync(project, "managed", "create", "user", "--data", '{"userName": "n", "count": NaN}')
    assert cli.returncode != 0 and "NaN is not a JSON number" in cli.stderr, cli.stderr
    assert _everyone(api) == before


@pytest.mark.parametrize("project", ["sqlite"], indirect=True)
def test_a_stored_nan_is_answered_as_null(api: httpx.Client, project: Path) -> None:
    """An object holding NaN and Infinity (as an earlier release stored them in SQLite) is
    read and queried with those numbers as ``null``: valid JSON, not a 500 for the whole type."""
    for name in ("old", "fine"):
        assert api.put(f"/openidm/managed/user/{name}", headers=JSON,
                       json={"userName": name, "count": 1}).status_code == 201
    store = Store.open(f"sqlite:///{project.parent / 'idsync.db'}")
    try:
        with store.begin() as conn:
            conn.execute(text(f"UPDATE {managed_objects.name} SET data = :data WHERE id = 'old'"),
                         {"data": '{"userName": "old", "count": NaN, "more": [Infinity]}'})
    finally:
        store.close()
    read = api.get("/openidm/managed/user/old", headers=ADMIN)
    assert read.status_code == 200 and read.json()["count"] is None and read.json()["more"] == [None], read.text
    assert [(u["_id"], u["count"]) for u in _everyone(api)] == [("fine", 1), ("old", None)]
