"""System ids the store cannot keep (``sync/system_ids.py``), read from real peers on
every store: an id holding half of a character (an unpaired surrogate, which a JSON peer
sends as ``"\\ud83d"``) from the SCIM test provider, and an LDAP DN longer than the 255
characters a link holds from the test slapd. Each fails its own object, with a message
saying why, in a recon, a liveSync run, an implicit push and a link set by hand; the
other objects go through. An API answer holding such a value is escaped as JSON
escapes it, never a 500."""

from __future__ import annotations

import ast
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.config.project import load_project
from idsync.managed import ManagedObjects
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.store.tables import KEY_LENGTH, links
from idsync.sync.livesync import LiveSyncOptions, run_livesync
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon
from idsync_dev.slapd import Slapd
from livesync_env import live, managed_users
from scim_sample import USERS_IN, USERS_OUT, sample_project, scim_env
from scim_server import ScimServer, running
from sqlalchemy import func, select

from samples import FORWARD, REVERSE
from samples import sample_project as ldap_sample

HALF = "\ud83d"  # the first half of 😀, as json.loads makes of "\ud83d"
SCIM = "system/scim/account"
LDAP = "system/ldap/account"


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


def _scim_project(tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch, kind: str) -> Path:
    for key, value in scim_env(server).items():
        monkeypatch.setenv(key, value)
    return sample_project(tmp_path, store_url(kind, tmp_path))


def _odd_ids(server: ScimServer, user_name: str) -> None:
    """From now on the provider lists ``user_name`` with half of a character ending its id."""
    def edit(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "Resources": [{**r, "id": r["id"] + HALF} if r.get("userName") == user_name else r
                                      for r in body.get("Resources") or []]}
    server.edit_matching.append((lambda method, path, _: method == "GET" and path.endswith("/Users"), edit))


def _odd_display_names(server: ScimServer) -> None:
    """From now on the provider answers every user's displayName ending with half of a character."""
    server.edit_matching.append((lambda method, path, query: method == "GET" and "/Users" in path,
                                 lambda body: {**body, "Resources": [{**r, "displayName": "Odd" + HALF}
                                                                     for r in body["Resources"]]}
                                 if "Resources" in body else {**body, "displayName": "Odd" + HALF}))


def _errors(project: Path, run_id: str) -> list[dict[str, Any]]:
    loaded = load_project(project)
    record = RunStore(Store.open(loaded.settings.store_url())).get(run_id)
    assert record is not None
    return list(record["summary"]["errors"])


def _link_count(project: Path) -> int:
    loaded = load_project(project)
    with Store.open(loaded.settings.store_url()).engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(links)).scalar_one())


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_id_with_half_a_character_fails_its_object_alone_in_a_recon_and_in_livesync(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A SCIM user whose id ends with an unpaired surrogate is skipped alone, with a message
    spelling it ``\\ud83d``, by a recon (which failed whole with ``UnicodeEncodeError``)
    and by a liveSync run, whose other change is applied and whose token moves on; the
    object is not kept for a retry, and the next run reads nothing."""
    ids = {name: server.add_user(name, name={"givenName": name.title(), "familyName": "Test"})["id"]
           for name in ("ok1", "odd", "ok2")}
    _odd_ids(server, "odd")
    project = _scim_project(tmp_path, server, monkeypatch, kind)
    loaded = load_project(project)
    recon = run_recon(loaded, Store.open(loaded.settings.store_url()), USERS_IN, ReconOptions())
    assert recon.state == "SUCCESS", recon.message
    (error,) = recon.summary["errors"]
    assert error["message"] == (f"the source id {ids['odd']}\\ud83d contains an unpaired surrogate (half of a "
                                "character), which the store cannot hold; the object was skipped")
    assert sorted(managed_users(project)) == ["ok1", "ok2"]

    assert live(project, SCIM).state == "SUCCESS"  # the first run: a full recon, and a token
    for name in ("ok1", "odd"):
        server.change("Users", ids[name], "name.familyName", "Changed")
    done = live(project, SCIM)
    assert done.state == "SUCCESS", done.message
    assert done.failed == 0  # nothing kept for a retry: the id is what it is
    (run,) = done.runs
    assert run["counts"] == {"updated": 1, "failed": 1} and run["errors"] == 1
    assert [e["message"] for e in _errors(project, run["id"])] == [error["message"]]
    assert managed_users(project)["ok1"]["sn"] == "Changed"
    assert live(project, SCIM).changes == 0


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("answered", ["half", "long"])
def test_a_push_answered_with_an_id_no_link_holds_fails_that_push_alone(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch, kind: str, answered: str) -> None:
    """A provider that answers a create with an id ending with half of a character, or of
    300 characters: the implicit push of that managed user fails with a message saying the
    object was created but not linked (no driver's words), the user stands in the store,
    nothing is linked, and the next user's push goes through."""
    project = _scim_project(tmp_path, server, monkeypatch, kind)
    made: list[str] = []

    def odd_answer(body: dict[str, Any]) -> dict[str, Any]:
        made.append(body["id"])
        return {**body, "id": body["id"] + HALF if answered == "half" else body["id"] * 10}

    server.edit_matching.append((lambda method, path, _: method == "POST" and path.endswith("/Users"), odd_answer))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    users = ManagedObjects(loaded, store, Resources(loaded, store), "user")
    change = users.create({"userName": "odd", "givenName": "Odd", "sn": "Test", "mail": "odd@example.com"})
    assert change.object is not None and not change.synced
    (push,) = change.pushes
    assert push.mapping == USERS_OUT and not push.ok
    shown = f"{made[0]}\\ud83d contains an unpaired surrogate (half of a character), which the store cannot hold" \
        if answered == "half" else f"{(made[0] * 10)[:40]}... has {len(made[0]) * 10} characters, more than the " \
                                   f"{KEY_LENGTH} a link holds"
    assert push.message == f"the target id {shown}; CREATE {SCIM}: created, but not linked to its source"
    assert [e["message"] for e in _errors(project, push.run_id)] == [push.message]
    assert _link_count(project) == 0
    server.edit_matching.clear()
    fine = users.create({"userName": "fine", "givenName": "Fine", "sn": "Test", "mail": "fine@example.com"})
    assert fine.synced and _link_count(project) == 1
    assert sorted(managed_users(project)) == ["fine", "odd"]


def test_api_answers_holding_half_a_character_from_a_peer_escape_it(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query of system objects and a read of one, whose answer holds half of a character
    the provider sent (in an id and in a value), answer 200 with it escaped as JSON
    escapes it (``\\ud83d``), which a JSON client reads back as the provider's very value;
    they were a 500."""
    user = server.add_user("odd", displayName="Odd")

    def edit(body: dict[str, Any], *, ids: bool) -> dict[str, Any]:
        odd = {"displayName": "Odd" + HALF}
        if "Resources" not in body:  # one user, read by id
            return {**body, **odd}
        return {**body, "Resources": [{**r, **odd, **({"id": r["id"] + HALF} if ids else {})}
                                      for r in body["Resources"]]}

    # A listing's ids end with half of a character; a read by id (its filter on the id) answers the value only.
    server.edit_matching.append((lambda method, path, query: method == "GET" and "/Users" in path,
                                 lambda body: edit(body, ids=False)))
    server.edit_matching.insert(0, (lambda method, path, query: method == "GET" and path.endswith("/Users")
                                    and "filter=" not in query, lambda body: edit(body, ids=True)))
    project = _scim_project(tmp_path, server, monkeypatch, "sqlite")
    with serve(project) as api:
        found = api.get(f"/openidm/{SCIM}", params={"_queryFilter": "true"}, headers=ADMIN)
        assert found.status_code == 200, found.text
        assert "\\ud83d" in found.text
        (shown,) = json.loads(found.text)["result"]
        assert shown["_id"] == user["id"] + HALF and shown["displayName"] == "Odd" + HALF
        one = api.get(f"/openidm/{SCIM}/{user['id']}", headers=ADMIN)
        assert one.status_code == 200, one.text
        assert json.loads(one.text)["displayName"] == "Odd" + HALF


def test_a_console_page_holding_half_a_character_from_a_peer_shows_it_escaped(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's pages of a system's objects, listing one whose value holds half of a
    character the provider sent and showing that object, answer 200 with it written as
    ``\\ud83d``; they were a 500."""
    import asyncio

    from test_console_unit import _app, _logged_in

    user = server.add_user("odd", displayName="Odd")
    _odd_display_names(server)
    project = _scim_project(tmp_path, server, monkeypatch, "sqlite")

    async def visit(app: Any) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            await _logged_in(client)
            for path in (f"/admin/{SCIM}", f"/admin/{SCIM}/{user['id']}"):
                page = await client.get(path)
                assert page.status_code == 200 and "Odd\\ud83d" in page.text, (path, page.text[-500:])

    with _app(tmp_path, project) as app:
        asyncio.run(visit(app))


def test_the_command_line_prints_half_a_character_from_a_peer_escaped(
        tmp_path: Path, server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``idsync system query`` and ``get`` of objects holding half of a character the
    provider sent print it as JSON's escape (``\\ud83d``), which reads back as the value;
    they failed with a traceback."""
    from samples import idsync

    user = server.add_user("odd", displayName="Odd")
    _odd_display_names(server)
    project = _scim_project(tmp_path, server, monkeypatch, "sqlite")
    for args in (("query", "scim", "account"), ("get", "scim", "account", user["id"])):
        shown = idsync(project, "system", *args)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert "Odd\\ud83d" in shown.stdout, shown.stdout


def test_no_api_module_answers_with_starlettes_own_json_response() -> None:
    """Every JSON answer of the API goes through ``api/answer.py`` (which escapes half of a
    character): no other module of ``api/`` or ``console/`` imports Starlette's JSONResponse."""
    daemon = Path(__file__).resolve().parent.parent / "daemon" / "idsync"
    found = []
    for module in [*(daemon / "api").glob("*.py"), *(daemon / "console").glob("*.py")]:
        if module.name == "answer.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("starlette") \
                    and any(a.name == "JSONResponse" for a in node.names):
                found.append(module.name)
    assert found == []


# -- LDAP DNs longer than a link holds ----------------------------------------------


def _dn_project(tmp_path: Path, slapd: Slapd, subtree: str, kind: str) -> Path:
    project = ldap_sample(tmp_path, slapd, subtree, store_url(kind, tmp_path))
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"]["uidAttribute"] = "dn"
    prov_file.write_text(json.dumps(prov))
    return project


def _long_entry(slapd: Slapd, subtree: str, uid: str) -> str:
    """An entry whose DN is longer than a link holds; its DN."""
    dn = f"uid={uid},{subtree}"
    assert len(dn) > KEY_LENGTH
    slapd.add_ldif(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Long\nsn: Long\ngivenName: Long\n"
                   f"mail: long@example.com\n\n")
    return dn


def _too_long(dn: str, then: str) -> str:
    return f"id {dn[:40]}... has {len(dn)} characters, more than the {KEY_LENGTH} a link holds; {then}"


def _live_ldap(project: Path) -> Any:
    loaded = load_project(project)
    return run_livesync(loaded, Store.open(loaded.settings.store_url()), LDAP, LiveSyncOptions())


@pytest.fixture(params=BACKENDS)
def dn_project(request: pytest.FixtureRequest, tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    """The LDAP sample with DNs as ids, its first liveSync (a full recon) done."""
    project = _dn_project(tmp_path, slapd, ldap_subtree, request.param)
    assert _live_ldap(project).state == "SUCCESS"
    return project


def _users(project: Path) -> ManagedObjects:
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    return ManagedObjects(loaded, store, Resources(loaded, store), "user")


def test_a_changed_entry_whose_dn_is_longer_than_a_link_holds_fails_alone_in_livesync(
        dn_project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """With DNs as ids, on every store: a new entry whose DN has more characters than a
    link holds fails alone in a liveSync run, with a message giving its length
    (PostgreSQL and MariaDB failed the batch with the driver's words, SQLite linked it),
    beside a change that is applied; it is not kept for a retry."""
    links_before = _link_count(dn_project)
    long_dn = _long_entry(slapd, ldap_subtree, "l" * 230)
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b@example.org\n\n")
    done = _live_ldap(dn_project)
    assert done.state == "SUCCESS", done.message
    (run,) = done.runs
    assert run["counts"] == {"updated": 1, "failed": 1}, run
    assert [e["message"] for e in _errors(dn_project, run["id"])] == [
        f"the source {_too_long(long_dn, 'the object was skipped')}"]
    assert done.failed == 0 and _link_count(dn_project) == links_before


def test_a_push_creating_an_entry_whose_dn_is_longer_than_a_link_holds_fails_alone(
        dn_project: Path, ldap_subtree: str) -> None:
    """A managed user whose implicit push creates an entry with a DN longer than a link
    holds fails that push alone, saying the entry was created but not linked; the user
    stands, and the next user's push is linked."""
    links_before = _link_count(dn_project)
    users = _users(dn_project)
    name = "m" * 230
    change = users.create({"userName": name, "givenName": "M", "sn": "Long", "mail": "m@example.com"})
    assert change.object is not None and not change.synced
    (push,) = [p for p in change.pushes if p.mapping == REVERSE]
    assert push.message == "the target " + _too_long(
        f"uid={name},{ldap_subtree}", f"CREATE {LDAP}: created, but not linked to its source")
    assert _link_count(dn_project) == links_before
    fine = users.create({"userName": "fine", "givenName": "F", "sn": "Fine", "mail": "fine@example.com"})
    assert fine.synced and _link_count(dn_project) == links_before + 1


def test_a_link_by_hand_to_a_dn_longer_than_a_link_holds_is_refused(
        dn_project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """performAction LINK naming an existing entry whose DN is longer than a link holds,
    as the target or as the source, is a 400 saying why, on every store (SQLite linked
    it, PostgreSQL and MariaDB answered 500); nothing is linked."""
    loaded = load_project(dn_project)
    solo = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user").create(
        {"userName": "solo", "givenName": "S", "sn": "Solo"})  # in the store alone: no push, no link
    links_before = _link_count(dn_project)
    target_dn = _long_entry(slapd, ldap_subtree, "l" * 230)
    source_dn = _long_entry(slapd, ldap_subtree, "k" * 230)
    with serve(dn_project) as api:
        def perform(**params: str) -> httpx.Response:
            return api.post(f"/openidm/sync?{urllib.parse.urlencode(params)}", headers=ADMIN)

        refused = perform(_action="performAction", mapping=REVERSE, action="LINK", sourceId=solo["_id"],
                          targetId=target_dn)
        assert refused.status_code == 400, refused.text
        assert refused.json()["message"] == "the target " + _too_long(target_dn, "it cannot be linked")
        refused = perform(_action="performAction", mapping=FORWARD, action="LINK", sourceId=source_dn,
                          targetId=solo["_id"])
        assert refused.status_code == 400, refused.text
        assert refused.json()["message"] == "the source " + _too_long(source_dn, "it cannot be linked")
    assert _link_count(dn_project) == links_before
