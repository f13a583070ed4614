"""A secret's stored value (its hash) never leaves the store through the API: no PATCH
``copy``, ``move`` or ``transform`` reads it, and no query filters or sorts on it, over
REST, in a script's ``openidm`` and on the command line alike; the same holds over REST
for a ``"scope": "private"`` property, which no answer shows either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from idsync.config.managed import DEFAULT_MANAGED

from samples import idsync

JSON = {**ADMIN, "Content-Type": "application/json"}
PASSWORD = "Secret-Pass1"
# A custom endpoint whose script runs the patch or the query its request names.
SCRIPTED = """var p = request.additionalParameters;
p.patch ? openidm.patch('managed/user/' + p.id, null, JSON.parse(p.patch))
        : openidm.query('managed/user', {_queryFilter: p.filter})"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    (user,) = [o for o in managed["objects"] if o["name"] == "user"]
    user["schema"]["properties"]["lastSync"] = {"type": "object", "scope": "private"}
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(managed))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "endpoint-scripted.json").write_text(json.dumps({"type": "text/javascript", "source": SCRIPTED}))
    return tmp_path / "p"


@pytest.fixture
def api(project: Path) -> Iterator[httpx.Client]:
    with serve(project) as client:
        made = client.put("/openidm/managed/user/sec1", headers=JSON, content=json.dumps(
            {"userName": "sec1", "sn": "One", "password": PASSWORD, "lastSync": {"m": "kept-back"}}))
        assert made.status_code == 201, made.text
        yield client


def _stored(project: Path) -> dict[str, Any]:
    """``sec1`` as the command line shows it (with its private property)."""
    shown = idsync(project, "managed", "get", "user", "sec1")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def _refused(answer: httpx.Response, *words: str) -> None:
    assert answer.status_code == 400, answer.text
    assert all(w in answer.json()["message"] for w in words), answer.text
    assert "{CRYPT}" not in answer.text and "kept-back" not in answer.text, answer.text


def test_no_patch_reads_a_secret_or_a_private_property(api: httpx.Client, project: Path) -> None:
    """``copy`` and ``move`` from ``/password`` and a ``transform`` of it are a 400 naming the
    operation and the secret, over REST and in a script's ``openidm.patch``; so are those of the
    private ``lastSync`` over REST; nothing is written (the revision stays); a copy of a plain
    property still works."""
    before = _stored(project)
    transform = {"operation": "transform", "field": "/password",
                 "value": {"script": {"type": "text/javascript", "source": "throw {code: 400, message: content}"}}}
    for ops, words in (([{"operation": "copy", "from": "/password", "field": "/description"}], ("0", "password")),
                       ([{"operation": "replace", "field": "/sn", "value": "Two"},
                         {"operation": "move", "from": "/password", "field": "/displayName"}], ("1", "password")),
                       ([transform], ("0", "password")),
                       ([{"operation": "copy", "from": "/lastSync/m", "field": "/description"}], ("lastSync",)),
                       ([{"operation": "move", "from": "/lastSync", "field": "/description"}], ("lastSync",))):
        _refused(api.patch("/openidm/managed/user/sec1", headers=JSON, content=json.dumps(ops)), "operation", *words)
        _refused(api.post("/openidm/managed/user/sec1?_action=patch", headers=JSON, content=json.dumps(ops)), *words)
    scripted = api.get("/openidm/endpoint/scripted", headers=ADMIN, params={
        "id": "sec1", "patch": json.dumps([{"operation": "copy", "from": "/password", "field": "/description"}])})
    assert scripted.status_code >= 400 and "{CRYPT}" not in scripted.text, scripted.text
    assert _stored(project) == before and "description" not in before
    ok = api.patch("/openidm/managed/user/sec1", headers=JSON,
                   content=json.dumps([{"operation": "copy", "from": "/sn", "field": "/description"}]))
    assert ok.status_code == 200 and ok.json()["description"] == "One", ok.text


@pytest.mark.parametrize("params", [
    {"_queryFilter": 'password sw "{CRYPT}"'},
    {"_queryFilter": 'userName eq "sec1" and /password gt ""'},
    {"_queryFilter": '!(password co "$")'},
    {"_queryFilter": "password pr"},
    {"_queryId": "get-by-field-value", "field": "password", "value": "x"},
    {"_queryFilter": "true", "_sortKeys": "-password"},
    {"_queryFilter": "true", "_sortKeys": "userName,/password"},
    {"_queryFilter": 'lastSync/m eq "kept-back"'},
    {"_queryFilter": "true", "_sortKeys": "lastSync"},
])
def test_no_query_filters_or_sorts_on_a_secret_or_a_private_property(api: httpx.Client,
                                                                    params: dict[str, str]) -> None:
    """A filter (any operator, ``pr``, a named query's field) or a sort key naming the
    secret ``password`` or the private ``lastSync`` is a 400 naming it, which tells nothing
    of the value: without it, ``sw`` matched the hash's prefix and not another one."""
    named = "lastSync" if "lastSync" in json.dumps(params) else "password"
    _refused(api.get("/openidm/managed/user", params=params, headers=ADMIN), named, "secret" if named ==
             "password" else "private")


def test_scripts_and_the_command_line_cannot_query_a_secret(api: httpx.Client, project: Path) -> None:
    """A script's ``openidm.query`` and ``idsync managed query`` refuse a filter on the secret,
    naming it, as the API does; both still filter on the private property, which they see."""
    scripted = api.get("/openidm/endpoint/scripted", headers=ADMIN, params={"filter": 'password sw "{"'})
    assert scripted.status_code >= 400 and "password" in scripted.text and "{CRYPT}" not in scripted.text, \
        scripted.text
    private = api.get("/openidm/endpoint/scripted", headers=ADMIN, params={"filter": 'lastSync/m eq "kept-back"'})
    assert private.status_code == 200 and [u["_id"] for u in private.json()["result"]] == ["sec1"], private.text
    cli = idsync(project, "managed", "query", "user", "--filter", 'password sw "{"')
    assert cli.returncode != 0 and "password is a secret property" in cli.stderr and "sec1" not in cli.stdout, \
        (cli.stdout, cli.stderr)
    cli = idsync(project, "managed", "query", "user", "--filter", 'lastSync/m eq "kept-back"')
    assert cli.returncode == 0 and '"sec1"' in cli.stdout, cli.stderr
