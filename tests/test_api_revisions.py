"""Revisions under concurrent requests, over the API on every store: a revision names one
content, one writer per revision wins (the others with ``If-Match`` answer 412), a PATCH
without ``If-Match`` applies to the object as it is (no increment lost), two creates of
one id never surface a database error, and references honour ``If-Match`` too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED, parse_managed
from idsync.resource import WriteOp, WriteResult
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.relationships import Edges
from projects import store_project

JSON = {**ADMIN, "Content-Type": "application/json"}
_WRITERS = 8


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    project = store_project(tmp_path / "p", store_url(request.param, tmp_path))
    with serve(project) as client:
        yield client


def _at_once(count: int, request: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """``request(i)`` for i in 0..count-1, all sent together."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(request, range(count)))


def _codes(answers: list[httpx.Response]) -> list[int]:
    return sorted(a.status_code for a in answers)


def test_concurrent_patches_without_if_match_lose_no_increment(api: httpx.Client) -> None:
    """Eight PATCHes incrementing one counter at once all answer 200 and all count: a
    PATCH that lost the race to another is applied again to what that one left."""
    r = api.put("/openidm/managed/user/cnt", headers=JSON, json={"userName": "cnt", "n": 0})
    assert r.status_code == 201, r.text
    answers = _at_once(_WRITERS, lambda _: api.patch(
        "/openidm/managed/user/cnt", headers=JSON, json=[{"operation": "increment", "field": "/n", "value": 1}]))
    assert _codes(answers) == [200] * _WRITERS, [a.text for a in answers]
    final = api.get("/openidm/managed/user/cnt", headers=ADMIN).json()
    assert final["n"] == _WRITERS
    assert final["_rev"] == f"{_WRITERS + 1:016x}"
    # Each answer is one revision of the counter: eight writes, eight revisions, eight counts.
    assert sorted(a.json()["n"] for a in answers) == list(range(1, _WRITERS + 1))
    assert len({a.json()["_rev"] for a in answers}) == _WRITERS


def test_one_patch_per_revision_wins(api: httpx.Client) -> None:
    """PATCHes sent at once with the same ``If-Match``: exactly one answers 200, the
    others 412, and the revision it answers holds its content alone."""
    r = api.put("/openidm/managed/user/race", headers={**JSON, "If-None-Match": "*"},
                json={"userName": "race", "sn": "start"})
    assert r.status_code == 201, r.text
    rev = r.json()["_rev"]
    answers = _at_once(_WRITERS, lambda i: api.patch(
        "/openidm/managed/user/race", headers={**JSON, "If-Match": f'"{rev}"'},
        json=[{"operation": "replace", "field": "/sn", "value": f"writer-{i}"}]))
    assert _codes(answers) == [200] + [412] * (_WRITERS - 1), [a.text for a in answers]
    (won,) = [a.json() for a in answers if a.status_code == 200]
    assert api.get("/openidm/managed/user/race", headers=ADMIN).json() == won
    assert won["_rev"] == "0000000000000002"


def test_one_put_per_revision_wins(api: httpx.Client) -> None:
    """PUTs of a role sent at once with the same ``If-Match``: one 200, the others 412."""
    r = api.put("/openidm/managed/role/ops", headers=JSON, json={"name": "ops"})
    rev = r.json()["_rev"]
    answers = _at_once(_WRITERS, lambda i: api.put(
        "/openidm/managed/role/ops", headers={**JSON, "If-Match": f'"{rev}"'},
        json={"name": "ops", "description": f"writer-{i}"}))
    assert _codes(answers) == [200] + [412] * (_WRITERS - 1), [a.text for a in answers]
    (won,) = [a.json() for a in answers if a.status_code == 200]
    stored = api.get("/openidm/managed/role/ops", headers=ADMIN).json()
    assert (stored["_rev"], stored["description"]) == (won["_rev"], won["description"])


def test_one_delete_per_revision_wins(api: httpx.Client) -> None:
    """A DELETE with ``If-Match`` racing PATCHes of the same revision: exactly one of them
    wins; a PATCH that lost answers 412 (or 404 when the DELETE won: there is nothing to
    patch any more), and the DELETE that lost answers 412 and deletes nothing."""
    r = api.put("/openidm/managed/role/gone", headers=JSON, json={"name": "gone"})
    rev = r.json()["_rev"]

    def send(i: int) -> httpx.Response:
        headers = {**JSON, "If-Match": f'"{rev}"'}
        if i == 0:
            return api.delete("/openidm/managed/role/gone", headers=headers)
        return api.patch("/openidm/managed/role/gone", headers=headers,
                         json=[{"operation": "replace", "field": "/description", "value": f"writer-{i}"}])

    answers = _at_once(_WRITERS, send)
    assert [a.status_code for a in answers].count(200) == 1, [a.text for a in answers]
    after = api.get("/openidm/managed/role/gone", headers=ADMIN)
    if answers[0].status_code == 200:
        assert after.status_code == 404
        assert {a.status_code for a in answers[1:]} <= {404, 412}
    else:
        assert answers[0].status_code == 412
        (won,) = [a.json() for a in answers if a.status_code == 200]
        assert after.json() == won
        assert {a.status_code for a in answers[1:] if a.json() != won} == {412}


def test_concurrent_creates_of_one_id(api: httpx.Client) -> None:
    """PUTs with ``If-None-Match: *`` of one id at once: one 201, the others 412, never a
    database's text. Plain PUTs (create or replace) at once: one creates (201), the others
    replace it (200), each answering its own write."""
    answers = _at_once(_WRITERS, lambda i: api.put(
        "/openidm/managed/role/inm", headers={**JSON, "If-None-Match": "*"}, json={"name": f"inm-{i}"}))
    assert _codes(answers) == [201] + [412] * (_WRITERS - 1), [a.text for a in answers]
    assert all("already exists" in a.json()["message"] for a in answers if a.status_code == 412)

    answers = _at_once(_WRITERS, lambda i: api.put(
        "/openidm/managed/role/ups", headers=JSON, json={"name": f"ups-{i}"}))
    assert _codes(answers) == [200] * (_WRITERS - 1) + [201], [a.text for a in answers]
    revs = {a.json()["_rev"]: a.json()["name"] for a in answers}
    assert len(revs) == _WRITERS  # one revision per write, each with its own content
    stored = api.get("/openidm/managed/role/ups", headers=ADMIN).json()
    assert revs[stored["_rev"]] == stored["name"]


def test_put_that_creates_answers_201(api: httpx.Client) -> None:
    """A PUT without a precondition answers 201 when it creates the object, 200 when it
    replaces it, as CREST does; a POST of an id that exists answers 412."""
    assert api.put("/openidm/managed/role/new", headers=JSON, json={"name": "new"}).status_code == 201
    assert api.put("/openidm/managed/role/new", headers=JSON, json={"name": "newer"}).status_code == 200
    again = api.post("/openidm/managed/role?_action=create&_id=new", headers=JSON, json={"name": "x"})
    assert again.status_code == 412 and again.json()["message"] == "managed/role/new already exists"


def test_reference_changes_honour_if_match(api: httpx.Client) -> None:
    """PUT and DELETE of one reference (``managed/role/ID/members/REF``) check its own
    revision: another one answers 412 and changes nothing; the right one is applied."""
    api.put("/openidm/managed/user/u1", headers=JSON, json={"userName": "u1"})
    api.put("/openidm/managed/role/r1", headers=JSON, json={"name": "r1"})
    ref = api.post("/openidm/managed/role/r1/members?_action=create", headers=JSON,
                   json={"_ref": "managed/user/u1", "_refProperties": {"since": "2020"}}).json()
    path = f"/openidm/managed/role/r1/members/{ref['_id']}"
    wrong = {**JSON, "If-Match": '"00000000000000ff"'}

    stale = api.put(path, headers=wrong, json={"_ref": "managed/user/u1", "_refProperties": {"since": "2021"}})
    assert stale.status_code == 412, stale.text
    assert api.get(path, headers=ADMIN).json() == ref
    put = api.put(path, headers={**JSON, "If-Match": f'"{ref["_rev"]}"'},
                  json={"_ref": "managed/user/u1", "_refProperties": {"since": "2021"}})
    assert put.status_code == 200, put.text
    moved = put.json()
    assert moved["_refProperties"]["since"] == "2021" and moved["_rev"] != ref["_rev"]

    stale = api.delete(path, headers={**JSON, "If-Match": f'"{ref["_rev"]}"'})
    assert stale.status_code == 412, stale.text
    assert api.get(path, headers=ADMIN).json() == moved
    gone = api.delete(path, headers={**JSON, "If-Match": f'"{moved["_rev"]}"'})
    assert gone.status_code == 200, gone.text
    assert api.get(path, headers=ADMIN).status_code == 404


def test_one_reference_change_per_revision_wins_while_members_come(api: httpx.Client) -> None:
    """PUTs and a DELETE of one reference sent at once with its revision in ``If-Match``,
    while other users are added to the role (each moving the role's revision): exactly one
    of them wins, the others answer 412 (or 404 once the DELETE won), none answers 412 for a
    member added beside it, and every member added is kept."""
    for u in ("held", *(f"n{i}" for i in range(_WRITERS))):
        assert api.put(f"/openidm/managed/user/{u}", headers=JSON, json={"userName": u}).status_code == 201
    api.put("/openidm/managed/role/busy", headers=JSON, json={"name": "busy"})
    members = "/openidm/managed/role/busy/members"
    ref = api.post(f"{members}?_action=create", headers=JSON, json={"_ref": "managed/user/held"}).json()
    at, match = f"{members}/{ref['_id']}", {**JSON, "If-Match": f'"{ref["_rev"]}"'}

    def send(i: int) -> httpx.Response:
        if i % 2:
            return api.post(f"{members}?_action=create", headers=JSON, json={"_ref": f"managed/user/n{i // 2}"})
        if i == 0:
            return api.delete(at, headers=match)
        return api.put(at, headers=match, json={"_refProperties": {"writer": i}})

    answers = _at_once(2 * _WRITERS, send)
    changes = [a for i, a in enumerate(answers) if i % 2 == 0]
    assert sorted(a.status_code for i, a in enumerate(answers) if i % 2) == [201] * _WRITERS
    assert [a.status_code for a in changes].count(200) == 1, [a.text for a in changes]
    assert set(_codes(changes)) <= {200, 404, 412}, [a.text for a in changes]
    (won,) = [a.json() for a in changes if a.status_code == 200]
    now = api.get(at, headers=ADMIN)
    assert (now.json() == won) if now.status_code == 200 else (won == ref and now.status_code == 404)
    listed = api.get(f"{members}?_queryFilter=true", headers=ADMIN).json()["result"]
    assert {m["_refResourceId"] for m in listed} >= {f"n{i}" for i in range(_WRITERS)}


def _pairs(api: httpx.Client, collection: str, ids: list[str], name: str) -> set[tuple[str, str]]:
    """(user path, role path, reference id) of every reference the objects ``ids`` hold in ``name``."""
    pairs = set()
    for object_id in ids:
        r = api.get(f"/openidm/{collection}/{object_id}?_fields={name}", headers=ADMIN)
        assert r.status_code == 200, r.text
        for ref in r.json()[name]:
            ends = (f"{collection}/{object_id}", ref["_ref"])
            pairs.add((*sorted(ends, reverse=True), ref["_refProperties"]["_id"]))
    return pairs


def test_concurrent_writes_of_both_ends_answer_and_agree(api: httpx.Client) -> None:
    """Users' ``roles`` and roles' ``members`` replaced at once, roles given to users while
    those roles are deleted: every request answers as it would alone (never a database's
    deadlock: the writes lock what they change in one order, and the rare one the database
    rolls back is run again), and both ends of every reference agree."""
    users, roles, doomed = [f"u{i}" for i in range(4)], [f"r{i}" for i in range(4)], ["d0", "d1"]
    for rnd in range(3):
        for u in users:
            assert api.put(f"/openidm/managed/user/{u}", headers=JSON, json={"userName": u}).status_code in (200, 201)
        for r in roles + doomed:
            assert api.put(f"/openidm/managed/role/{r}", headers=JSON, json={"name": r}).status_code in (200, 201)

        def send(i: int, rnd: int = rnd) -> httpx.Response:
            if i < 4:  # a user's roles, whole
                return api.put(f"/openidm/managed/user/u{i}", headers=JSON, json={
                    "userName": f"u{i}", "roles": [{"_ref": f"managed/role/{r}"} for j, r in enumerate(roles)
                                                   if (i + j + rnd) % 2]})
            if i < 8:  # a role's members, whole
                return api.put(f"/openidm/managed/role/r{i - 4}", headers=JSON, json={
                    "name": f"r{i - 4}", "members": [{"_ref": f"managed/user/{u}"} for j, u in enumerate(users)
                                                     if (i + j + rnd) % 3]})
            if i < 12:  # a role added to a user, that role deleted beside it
                return api.patch(f"/openidm/managed/user/u{i - 8}", headers=JSON, json=[
                    {"operation": "add", "field": "/roles/-", "value": {"_ref": f"managed/role/d{i % 2}"}}])
            return api.delete(f"/openidm/managed/role/d{i % 2}", headers=ADMIN)

        answers = _at_once(14, send)
        assert [a.status_code for a in answers[:8]] == [200] * 8, [a.text for a in answers[:8]]
        for a in answers[8:12]:  # the role deleted first: a reference to it is refused, as it would be after
            assert a.status_code == 200 or (a.status_code == 400 and "do not exist" in a.json()["message"]), a.text
        assert [a.status_code for a in answers[12:]] == [200, 200], [a.text for a in answers[12:]]
        from_users = _pairs(api, "managed/user", users, "roles")
        assert from_users == _pairs(api, "managed/role", roles, "members")
        assert not [p for p in from_users if p[1].startswith("managed/role/d")]


def test_one_reference_change_per_revision_wins(api: httpx.Client) -> None:
    """A DELETE of one reference with ``If-Match`` racing PUTs of it with the same
    ``If-Match``: exactly one wins. When the DELETE did, the reference is gone from both
    ends and the PUTs answer 412 or 404; otherwise the DELETE answers 412 and the
    reference is the winning PUT's, seen alike from both ends."""
    api.put("/openidm/managed/user/u1", headers=JSON, json={"userName": "u1"})
    api.put("/openidm/managed/role/r1", headers=JSON, json={"name": "r1"})
    ref = api.post("/openidm/managed/role/r1/members?_action=create", headers=JSON,
                   json={"_ref": "managed/user/u1", "_refProperties": {"since": "2020"}}).json()
    path = f"/openidm/managed/role/r1/members/{ref['_id']}"

    def send(i: int) -> httpx.Response:
        headers = {**JSON, "If-Match": f'"{ref["_rev"]}"'}
        if i == 0:
            return api.delete(path, headers=headers)
        return api.put(path, headers=headers, json={"_ref": "managed/user/u1", "_refProperties": {"since": str(i)}})

    answers = _at_once(_WRITERS, send)
    assert [a.status_code for a in answers].count(200) == 1, [a.text for a in answers]
    after = api.get(path, headers=ADMIN)
    user = api.get("/openidm/managed/user/u1?_fields=roles", headers=ADMIN).json()
    if answers[0].status_code == 200:
        assert after.status_code == 404 and user["roles"] == []
        assert {a.status_code for a in answers[1:]} <= {404, 412}, [a.text for a in answers]
    else:
        assert answers[0].status_code == 412
        (won,) = [a.json() for a in answers if a.status_code == 200]
        assert after.json() == won
        assert [r["_refProperties"] for r in user["roles"]] == [won["_refProperties"]]


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_query_page_read_while_references_change_is_one_revision(tmp_path: Path, kind: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET managed/user?_queryFilter=true&_fields=_rev,roles`` while a role drops its
    members between the statement reading the users and the one reading their references:
    the page is read again, and each user is answered as one revision stands, never its
    old revision with the new revision's references (a PATCH with that ``If-Match`` of
    ``roles/0`` would apply to a list that revision never held)."""
    url = store_url(kind, tmp_path)
    project = store_project(tmp_path / "p", url)
    store = Store.open(url)
    dropped: list[WriteResult] = []
    original = Edges.attach

    def attach(self: Edges, objects: Any, fields: Any) -> None:
        if objects and not dropped:  # the role lets go of its members once their documents are read
            role = parse_managed(DEFAULT_MANAGED).get("role")
            dropped.extend(ManagedResource(store, role).write_batch([WriteOp("update", id="r",
                                                                             values={"members": []})]))
        original(self, objects, fields)

    try:
        with serve(project) as api:
            api.put("/openidm/managed/role/r", headers=JSON, json={"name": "r"})
            for name in ("u", "v"):
                r = api.put(f"/openidm/managed/user/{name}", headers=JSON,
                            json={"userName": name, "roles": [{"_ref": "managed/role/r"}]})
                assert r.status_code == 201, r.text
            monkeypatch.setattr(Edges, "attach", attach)
            page = api.get("/openidm/managed/user?_queryFilter=true&_fields=_rev,roles", headers=ADMIN)
            monkeypatch.undo()
            assert page.status_code == 200, page.text
            assert dropped and dropped[0].ok
            now = {o["_id"]: api.get(f"/openidm/managed/user/{o['_id']}?_fields=_rev,roles", headers=ADMIN).json()
                   for o in page.json()["result"]}
            assert {o["_id"]: (o["_rev"], o["roles"]) for o in page.json()["result"]} == \
                {i: (o["_rev"], o["roles"]) for i, o in now.items()}
            assert all(o["roles"] == [] for o in now.values())
    finally:
        store.close()
