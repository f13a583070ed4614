"""PingIDM's custom endpoints (``conf/endpoint-NAME.json``) served at
``/openidm/endpoint/NAME`` against a real store: every kind of request reaches the
script as PingIDM's ``request`` (method, path below the endpoint, body, parameters,
revision, patch, query), the script's value is the answer, a thrown ``{code,
message}`` is that status, ``openidm`` reaches the store, no credential reaches the
script, and ``validate`` tells served, not served and broken endpoints apart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from api_server import ADMIN, ADMIN_HASH
from file_projects import file_project
from idsync.api import Accounts, ApiContext, create_app
from idsync.config.project import load_project, validate_project
from idsync.errors import ConfigWarning
from idsync.managed.router import scripting
from idsync.resources import check_system
from idsync.settings import ApiSettings
from idsync.store.database import Store

# Answers with what it was asked (a query: one result holding it).
ECHO = """(function () {
  var seen = {method: request.method, path: request.resourcePath, params: request.additionalParameters,
              content: request.content, revision: request.revision, action: request.action || null,
              patch: request.patchOperations || null, newId: request.newResourceId,
              filter: request.queryFilter || null, pageSize: request.pageSize || 0,
              sortKeys: request.sortKeys || null, totalPolicy: request.totalPagedResultsPolicy || null,
              user: context.security.authenticationId, headers: context.http.headers};
  return request.method === 'query' ? [seen] : seen;
}());"""
USERS = """var found = openidm.query('managed/user', {_queryFilter: 'sn eq "' + request.additionalParameters.sn + '"'});
({count: found.resultCount, names: found.result.map(function (u) { return u.userName; })});"""
# A query that pages itself: its cookie and count are the answer's.
PAGED = """({result: [{_id: 'a'}], pagedResultsCookie: 'next-a', totalPagedResultsPolicy: 'EXACT',
  totalPagedResults: 7, remainingPagedResults: 6});"""
GUARDED = """if (!request.content || !request.content.name) { throw {code: 400, message: 'name is required'}; }
if (request.content.name === 'taken') { throw {code: 409, message: 'name taken: ' + request.content.name}; }
if (request.content.name === 'oops') { throw new Error('disk full'); }
if (request.content.name === 'bulk') { throw {code: 400, message: 'bad names', detail: {names: ['a', 'b']}}; }
({created: request.content.name});"""
# openidm calls that fail, left uncaught or caught and thrown again.
CALLS = """var op = request.additionalParameters.op;
if (op === 'update') { openidm.update('managed/user/missing', null, {userName: 'x'}); }
if (op === 'create') { openidm.create('managed/user', null, {userName: 'dee', sn: 'D', givenName: 'D', mail: 'no'}); }
if (op === 'again') { try { openidm.delete('managed/user/missing', null); } catch (e) { throw e; } }
if (op === 'system') { openidm.read('system/nothing/account/x'); }
op === 'nothing' ? null : ({done: op});"""


def _project(tmp_path: Path) -> Path:
    project = file_project(tmp_path, [])
    conf = project / "conf"
    (project / "script").mkdir()
    (project / "script" / "echo.js").write_text(ECHO)
    (conf / "endpoint-echo.json").write_text(json.dumps({"type": "text/javascript", "file": "script/echo.js",
                                                         "context": "endpoint/echo/*"}))
    (conf / "endpoint-users.json").write_text(json.dumps({"type": "text/javascript", "source": USERS}))
    (conf / "endpoint-guarded.json").write_text(json.dumps({"type": "text/javascript", "source": GUARDED}))
    (conf / "endpoint-paged.json").write_text(json.dumps({"type": "text/javascript", "source": PAGED}))
    (conf / "endpoint-calls.json").write_text(json.dumps({"type": "text/javascript", "source": CALLS}))
    return project


def _serve(project_dir: Path, visit: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    ctx = ApiContext(project=lambda: project, store=store, settings=ApiSettings())
    app = create_app(ctx, Accounts({"openidm-admin": ADMIN_HASH}))

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                     headers=ADMIN) as api:
            await visit(api)

    try:
        with scripting(project, store) as router:
            users = router.managed_objects("managed/user")
            for name, sn in (("ann", "Lee"), ("bob", "Lee"), ("cy", "Moe")):
                users.create({"userName": name, "givenName": name, "sn": sn, "mail": f"{name}@example.com"})
        asyncio.run(run())
    finally:
        store.close()


def test_every_kind_of_request_reaches_the_script_as_pingidm_shapes_it(tmp_path: Path) -> None:
    async def visit(api: httpx.AsyncClient) -> None:
        read = (await api.get("/openidm/endpoint/echo?x=1&_fields=a")).json()
        assert read["method"] == "read" and read["path"] == "" and read["params"] == {"x": "1"}
        assert read["user"] == "openidm-admin"
        assert not {"x-openidm-password", "x-openidm-username", "authorization"} & set(read["headers"])
        sub = (await api.get("/openidm/endpoint/echo/a/b")).json()
        assert sub["path"] == "a/b"
        query = (await api.get("/openidm/endpoint/echo", params={"_queryFilter": "true", "_pageSize": "5"})).json()
        assert query["resultCount"] == 1 and query["result"][0]["method"] == "query"
        assert query["result"][0]["filter"] == "true" and query["result"][0]["pageSize"] == 5
        created = (await api.post("/openidm/endpoint/echo?_action=create", json={"a": 1})).json()
        assert created["method"] == "create" and created["content"] == {"a": 1}
        action = (await api.post("/openidm/endpoint/echo?_action=reset&who=me", json={"b": 2})).json()
        assert action["method"] == "action" and action["action"] == "reset" and action["params"] == {"who": "me"}
        updated = (await api.put("/openidm/endpoint/echo/x1", json={"c": 3}, headers={"If-Match": '"7"'})).json()
        assert updated["method"] == "update" and updated["revision"] == "7" and updated["path"] == "x1"
        put_new = (await api.put("/openidm/endpoint/echo/x2", json={}, headers={"If-None-Match": "*"})).json()
        assert put_new["method"] == "create" and put_new["newId"] == "x2"
        ops = [{"operation": "replace", "field": "/c", "value": 4}]
        patched = (await api.patch("/openidm/endpoint/echo/x1", json=ops)).json()
        assert patched["method"] == "patch" and patched["patch"] == ops and patched["content"] is None
        deleted = (await api.delete("/openidm/endpoint/echo/x1")).json()
        assert deleted["method"] == "delete"
        bad = await api.post("/openidm/endpoint/echo?_action=create", content=b"{not json")
        assert bad.status_code == 400

    _serve(_project(tmp_path), visit)


def test_a_query_gets_its_sort_keys_and_answers_its_own_paging(tmp_path: Path) -> None:
    """A query's ``_sortKeys`` and ``_totalPagedResultsPolicy`` reach the script (``request.sortKeys``,
    ``request.totalPagedResultsPolicy``), and the paging a script answers with its results
    (its cookie, its counts) is the envelope's, not replaced by none."""
    async def visit(api: httpx.AsyncClient) -> None:
        (seen,) = (await api.get("/openidm/endpoint/echo?_queryFilter=true&_sortKeys=-sn,userName"
                                 "&_totalPagedResultsPolicy=EXACT")).json()["result"]
        assert seen["sortKeys"] == ["-sn", "userName"] and seen["totalPolicy"] == "EXACT"
        paged = (await api.get("/openidm/endpoint/paged?_queryFilter=true&_pageSize=1")).json()
        assert paged == {"result": [{"_id": "a"}], "resultCount": 1, "pagedResultsCookie": "next-a",
                         "totalPagedResultsPolicy": "EXACT", "totalPagedResults": 7, "remainingPagedResults": 6}

    _serve(_project(tmp_path), visit)


def test_the_script_reaches_the_store_and_answers_errors_by_their_code(tmp_path: Path) -> None:
    async def visit(api: httpx.AsyncClient) -> None:
        found = (await api.get("/openidm/endpoint/users?sn=Lee")).json()
        assert found["count"] == 2 and sorted(found["names"]) == ["ann", "bob"]
        assert (await api.post("/openidm/endpoint/guarded", json={"name": "new"})).json() == {"created": "new"}
        missing = await api.post("/openidm/endpoint/guarded", json={})
        assert missing.status_code == 400 and missing.json()["message"] == "name is required"
        taken = await api.post("/openidm/endpoint/guarded", json={"name": "taken"})
        assert taken.status_code == 409 and taken.json()["message"] == "name taken: taken"
        assert "detail" not in taken.json()
        detailed = await api.post("/openidm/endpoint/guarded", json={"name": "bulk"})  # PingIDM's detail too
        assert detailed.status_code == 400 and detailed.json() == {
            "code": 400, "reason": "Bad Request", "message": "bad names", "detail": {"names": ["a", "b"]}}
        broken = await api.post("/openidm/endpoint/guarded", json={"name": "oops"})
        assert broken.status_code == 500  # the error, not where the server keeps the script
        assert broken.json()["message"] == "endpoint/guarded: the script failed: Error: disk full at line 3"
        for path in ("/openidm/endpoint/nothing", "/openidm/endpoint/users/sub"):
            assert (await api.get(path)).status_code == 404  # users serves no sub-paths
        unauthenticated = await api.get("/openidm/endpoint/users?sn=Lee", headers={"X-OpenIDM-Password": "no"})
        assert unauthenticated.status_code == 401

    _serve(_project(tmp_path), visit)


def test_a_failed_openidm_call_the_script_does_not_catch_answers_its_status(tmp_path: Path) -> None:
    """An ``openidm`` call that fails inside the script, left uncaught (or caught and
    thrown again), answers the status of its failure, as PingIDM passes a script's
    ResourceException on: 404 for an object (or a system) that is not there, 403 for a
    create that breaks a policy; its message is the failure's, naming no file of the
    server."""
    async def visit(api: httpx.AsyncClient) -> None:
        for op, code in (("update", 404), ("again", 404), ("create", 403), ("system", 404)):
            answer = await api.post(f"/openidm/endpoint/calls?_action=run&op={op}")
            assert answer.status_code == code, (op, answer.text)
            body = answer.json()
            assert body["code"] == code and body["message"] and str(tmp_path) not in answer.text, body
        assert "missing" in (await api.post("/openidm/endpoint/calls?_action=run&op=update")).json()["message"]
        assert (await api.post("/openidm/endpoint/calls?_action=run&op=none")).json() == {"done": "none"}

    _serve(_project(tmp_path), visit)


def test_a_script_that_gives_no_resource_answers_not_found(tmp_path: Path) -> None:
    """A create, read, update, patch or delete whose script answers null (or nothing) is a
    404, as PingIDM answers it ("script returned null"); an action's null answer is a 200
    with the body null, as PingIDM's."""
    async def visit(api: httpx.AsyncClient) -> None:
        for answer in (await api.get("/openidm/endpoint/calls?op=nothing"),
                       await api.post("/openidm/endpoint/calls?op=nothing", json={}),
                       await api.put("/openidm/endpoint/calls?op=nothing", json={}),
                       await api.delete("/openidm/endpoint/calls?op=nothing")):
            assert answer.status_code == 404 and "script returned null" in answer.json()["message"], answer.text
        action = await api.post("/openidm/endpoint/calls?_action=run&op=nothing")
        assert action.status_code == 200 and action.content == b"null", action.content
        assert (await api.get("/openidm/endpoint/calls?op=read")).json() == {"done": "read"}

    _serve(_project(tmp_path), visit)


def test_openapi_lists_each_endpoint(tmp_path: Path) -> None:
    """openapi.json describes each served endpoint's methods, and the sub-paths of one
    whose context serves them; an endpoint's answer is whatever its script gives."""
    async def visit(api: httpx.AsyncClient) -> None:
        paths = (await api.get("/openidm/openapi.json")).json()["paths"]
        for name in ("echo", "users", "guarded"):
            assert set(paths[f"/openidm/endpoint/{name}"]) == {"get", "post", "put", "patch", "delete"}
        assert "/openidm/endpoint/echo/{path}" in paths and "/openidm/endpoint/users/{path}" not in paths
        assert "endpoint-users.json" in paths["/openidm/endpoint/users"]["get"]["summary"]

    _serve(_project(tmp_path), visit)


def test_validate_serves_a_projects_endpoints_and_names_the_others(tmp_path: Path) -> None:
    """A PingIDM UI endpoint (its script PingIDM's own) and a Groovy one are not served and
    named in a warning, and the project still loads; a JavaScript endpoint with a syntax
    error, or a context that is not its own, is an error naming the file."""
    project = _project(tmp_path)
    conf = project / "conf"
    (conf / "endpoint-reconResults.json").write_text(json.dumps(
        {"type": "text/javascript", "context": "endpoint/reconResults", "file": "ui/reconResults.js"}))
    (conf / "endpoint-linkedView.json").write_text(json.dumps(
        {"type": "text/javascript", "context": "endpoint/linkedView/*",
         "source": "require('linkedView').fetch(request.resourcePath);"}))
    (conf / "endpoint-groovy.json").write_text(json.dumps({"type": "groovy", "file": "echo.groovy"}))
    (conf / "endpoint-gettasksview.json").write_text(json.dumps(
        {"type": "text/javascript", "context": "endpoint/gettasksview", "file": "workflow/gettasksview.js"}))
    problems = validate_project(project, check_system)
    assert [p for p in problems if not isinstance(p, ConfigWarning)] == []
    (warning,) = [p for p in problems if "endpoint-" in str(p)]
    for name in ("endpoint-reconResults.json", "endpoint-linkedView.json", "endpoint-groovy.json",
                 "endpoint-gettasksview.json"):
        assert name in str(warning)
    assert "endpoint-echo.json" not in str(warning)
    assert sorted(load_project(project).endpoints) == ["calls", "echo", "guarded", "paged", "users"]

    (conf / "endpoint-broken.json").write_text(json.dumps({"type": "text/javascript", "source": "({a: }"}))
    (conf / "endpoint-elsewhere.json").write_text(json.dumps({"type": "text/javascript", "source": "1",
                                                              "context": "endpoint/other"}))
    broken: dict[str, Any] = {}
    for name in ("endpoint-broken.json", "endpoint-elsewhere.json"):
        (conf / name).rename(tmp_path / name)
    for name in ("endpoint-broken.json", "endpoint-elsewhere.json"):  # one at a time: the load stops at the first
        (tmp_path / name).rename(conf / name)
        broken[name] = {Path(p.file).name: str(p) for p in validate_project(project, check_system)
                        if not isinstance(p, ConfigWarning)}
        (conf / name).rename(tmp_path / name)
    assert "endpoint-broken.json" in broken["endpoint-broken.json"]
    assert "context" in broken["endpoint-elsewhere.json"]["endpoint-elsewhere.json"]
