"""The seeds' curl sequences replayed against the API (only host and port changed),
with their response shapes asserted: seed 000 (two-way LDAP sample) and seed 003
(sync/mappings paging by cookie and by offset)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_server import ADMIN, serve
from idsync_dev.slapd import Slapd

from samples import FORWARD, sample_project


@pytest.fixture
def api(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Iterator[httpx.Client]:
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    with serve(project) as client:
        yield client


def test_seed_000_walkthrough(api: httpx.Client, ldap_subtree: str) -> None:
    """Recon with waitForCompletion, list user ids, read one user, create fdoe with
    _action=create, and find the entry implicit sync wrote in system/ldap/account."""
    r = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    assert r.status_code == 200, r.text
    run = r.json()
    assert set(run) == {"_id", "state"} and run["state"] == "SUCCESS"

    r = api.get("/openidm/managed/user?_queryFilter=true&_fields=_id", headers=ADMIN)
    assert r.status_code == 200
    body = r.json()
    assert body["resultCount"] == 2 and all(set(o) == {"_id", "_rev"} for o in body["result"])
    assert {"pagedResultsCookie", "totalPagedResultsPolicy", "totalPagedResults", "remainingPagedResults"} <= set(body)

    users = [api.get(f"/openidm/managed/user/{o['_id']}", headers=ADMIN).json() for o in body["result"]]
    bjensen = next(u for u in users if u["userName"] == "bjensen")
    assert bjensen == {**bjensen, "displayName": "Barbara Jensen", "givenName": "Barbara", "sn": "Jensen",
                       "description": "Created for OpenIDM", "telephoneNumber": "1-360-229-7105",
                       "userName": "bjensen", "mail": "bjensen@example.com", "accountStatus": "active",
                       "effectiveRoles": [], "effectiveAssignments": []}
    assert bjensen["_rev"] == next(o["_rev"] for o in body["result"] if o["_id"] == bjensen["_id"])

    fdoe = {"mail": "fdoe@example.com", "sn": "Doe", "telephoneNumber": "555-1234", "userName": "fdoe",
            "givenName": "Felicitas", "description": "Felicitas Doe", "displayName": "fdoe"}
    r = api.post("/openidm/managed/user?_action=create", headers={**ADMIN, "Content-Type": "application/json"},
                 content=json.dumps(fdoe))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created == {**created, **fdoe, "accountStatus": "active", "effectiveRoles": [],
                       "effectiveAssignments": []} and created["_id"] and created["_rev"]

    r = api.get("/openidm/system/ldap/account?_queryId=query-all-ids", headers=ADMIN)
    assert r.status_code == 200, r.text
    ids = r.json()["result"]
    assert len(ids) == 3 and all(set(o) == {"_id"} for o in ids)
    accounts = [api.get(f"/openidm/system/ldap/account/{o['_id']}", headers=ADMIN).json() for o in ids]
    account = next(a for a in accounts if a.get("uid") == "fdoe")
    assert account == {**account, "dn": f"uid=fdoe,{ldap_subtree}", "givenName": "Felicitas", "cn": "fdoe",
                       "mail": "fdoe@example.com", "sn": "Doe", "description": "Felicitas Doe"}

    r = api.get("/openidm/system/ldap/account?_queryFilter=uid+eq+'fdoe'", headers=ADMIN)
    assert [a["uid"] for a in r.json()["result"]] == ["fdoe"]
    assert api.get("/openidm/system/ldap/account/no-such-id", headers=ADMIN).status_code == 404
    assert api.get("/openidm/system/ldap/nothing?_queryId=query-all-ids", headers=ADMIN).status_code == 404
    mappings = api.get("/openidm/sync/mappings?_queryFilter=true", headers=ADMIN).json()["result"]
    assert all(m["sourceRouteReady"] and m["targetRouteReady"] for m in mappings) and len(mappings) == 4


def test_seed_000_system_test(api: httpx.Client) -> None:
    """system?_action=test answers each system in the seeds' shape: PingIDM's object
    type names (``__ALL__`` first), the connector reference, ok; and what the server is."""
    (ldap,) = api.post("/openidm/system?_action=test", headers=ADMIN).json()
    assert ldap == {"name": "ldap", "enabled": True, "config": "config/provisioner.openicf/ldap",
                    "connectorRef": ldap["connectorRef"], "displayName": "LDAP Connector",
                    "objectTypes": ["__ALL__", "account", "group"], "ok": True, "server": "OpenLDAP"}
    assert ldap["connectorRef"]["connectorName"] == "org.identityconnectors.ldap.LdapConnector"


def test_one_system_test(api: httpx.Client) -> None:
    """system/NAME?_action=test tests that system alone and answers its entry of
    system?_action=test, an object, as PingIDM's provisioner answers; an unknown system
    is a 404, another action on a system a 400, and a read of the system itself a 404
    saying where its objects are."""
    (listed,) = api.post("/openidm/system?_action=test", headers=ADMIN).json()
    one = api.post("/openidm/system/ldap?_action=test", headers=ADMIN)
    assert one.status_code == 200, one.text
    assert one.json() == listed
    assert api.post("/openidm/system/nothing?_action=test", headers=ADMIN).status_code == 404
    other = api.post("/openidm/system/ldap?_action=schema", headers=ADMIN)
    assert other.status_code == 400 and "test" in other.json()["message"]
    read = api.get("/openidm/system/ldap", headers=ADMIN)
    assert read.status_code == 404 and "system/ldap/TYPE" in read.json()["message"]


_SEED_003 = [("mapping0", "source0", "target0"), ("mapping1", "source1", "target1"),
             ("mapping2", "source2", "target2"), ("mapping4", "source1", "target0"),
             ("mapping5", "source0", "target2"), ("mapping7", "source1", "target3")]


def _resource(name: str) -> str:
    return f"system/{name}/account"


def _mapping_project(tmp_path: Path) -> Path:
    """The seed's six mappings; its bare names become systems whose provisioners are
    disabled, so no route is ready, as in the seed's answers."""
    project = tmp_path / "mappings"
    (project / "conf").mkdir(parents=True)
    for name in sorted({t for _, s, t in _SEED_003} | {s for _, s, _t in _SEED_003}):
        (project / "conf" / f"provisioner.openicf-{name}.json").write_text(json.dumps({
            "name": name, "enabled": False, "configurationProperties": {},
            "connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
            "objectTypes": {"account": {"properties": {}}}}))
    sync = {"mappings": [{"name": n, "source": _resource(s), "target": _resource(t)} for n, s, t in _SEED_003]}
    (project / "conf" / "sync.json").write_text(json.dumps(sync))
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    return project


def _seed_entry(name: str, source: str, target: str) -> dict[str, object]:
    return {"_id": name, "source": _resource(source), "target": _resource(target), "name": name,
            "sourceRouteReady": False, "targetRouteReady": False}


# The seed's two answers, field by field; only the resource names are full paths here.
_FIRST_PAGE = {
    "result": [_seed_entry("mapping1", "source1", "target1"), _seed_entry("mapping4", "source1", "target0")],
    "resultCount": 2, "pagedResultsCookie": "mapping7", "totalPagedResultsPolicy": "EXACT",
    "totalPagedResults": 2, "remainingPagedResults": -1,
}
_SECOND_PAGE = {
    "result": [_seed_entry("mapping7", "source1", "target3")],
    "resultCount": 1, "pagedResultsCookie": None, "totalPagedResultsPolicy": "EXACT",
    "totalPagedResults": 1, "remainingPagedResults": -1,
}


def test_a_disabled_system_tests_as_pingidm_answers_it(tmp_path: Path) -> None:
    """A disabled system is in system?_action=test, not ok, with what its provisioner says
    (connector, object types with ``__ALL__``) and an error saying it is disabled, as
    PingIDM lists a disabled connector; system/NAME?_action=test answers the same, and
    neither tells where the project's files are."""
    with serve(_mapping_project(tmp_path)) as api:
        listed = api.post("/openidm/system?_action=test", headers=ADMIN).json()
        one = api.post("/openidm/system/source0?_action=test", headers=ADMIN)
    assert one.status_code == 200 and one.json() in listed
    assert one.json() == {"name": "source0", "enabled": False, "config": "config/provisioner.openicf/source0",
                          "connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
                          "objectTypes": ["__ALL__", "account"], "ok": False, "error": one.json()["error"]}
    assert "disabled" in one.json()["error"] and str(tmp_path) not in json.dumps(listed)


def test_seed_003_mapping_paging(tmp_path: Path) -> None:
    """sync/mappings pages by cookie and by offset exactly as seed 003 shows: the same
    four answers, key for key and in the same order, for the cookie and the offset
    sequences; the cookie names the next page's first mapping."""
    with serve(_mapping_project(tmp_path)) as api:
        base = "/openidm/sync/mappings?_queryFilter=/source+eq+'system/source1/account'&_pageSize=2"
        first = api.get(base, headers=ADMIN)
        assert first.status_code == 200 and first.json() == _FIRST_PAGE
        assert list(first.json()) == list(_FIRST_PAGE) and list(first.json()["result"][0]) == list(
            _FIRST_PAGE["result"][0])  # type: ignore[index]
        assert api.get(base + "&_pagedResultsCookie=mapping7", headers=ADMIN).json() == _SECOND_PAGE
        assert api.get(base + "&_pagedResultsOffset=0", headers=ADMIN).json() == _FIRST_PAGE
        assert api.get(base + "&_pagedResultsOffset=2", headers=ADMIN).json() == _SECOND_PAGE
        everything = api.get("/openidm/sync/mappings?_queryFilter=true", headers=ADMIN).json()
        assert [m["_id"] for m in everything["result"]] == [n for n, _, _ in _SEED_003]
        assert everything["pagedResultsCookie"] is None and everything["resultCount"] == len(_SEED_003)
        past = api.get(base + "&_pagedResultsOffset=3", headers=ADMIN).json()
        assert past["result"] == [] and past["pagedResultsCookie"] is None
        unknown = api.get(base + "&_pagedResultsCookie=nope", headers=ADMIN)
        assert unknown.status_code == 400 and unknown.json()["code"] == 400
        config = api.get("/openidm/config/sync", headers=ADMIN).json()
        assert config["_id"] == "sync" and [m["name"] for m in config["mappings"]] == [n for n, _, _ in _SEED_003]
        # Only a mapping of its own file (conf/mapping-NAME.json) is config/mapping/NAME, as in PingIDM.
        missing = api.get("/openidm/config/mapping/mapping7", headers=ADMIN)
        assert missing.status_code == 404 and "config/sync" in missing.json()["message"], missing.text
