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
from idsync.testing.slapd import Slapd

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
                       "mail": "bjensen@example.com", "accountStatus": "active", "effectiveRoles": []}

    fdoe = {"mail": "fdoe@example.com", "sn": "Doe", "telephoneNumber": "555-1234", "userName": "fdoe",
            "givenName": "Felicitas", "description": "Felicitas Doe", "displayName": "fdoe"}
    r = api.post("/openidm/managed/user?_action=create", headers={**ADMIN, "Content-Type": "application/json"},
                 content=json.dumps(fdoe))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created == {**created, **fdoe, "accountStatus": "active"} and created["_id"] and created["_rev"]

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


_SEED_003 = [("mapping0", "source0", "target0"), ("mapping1", "source1", "target1"),
             ("mapping2", "source2", "target2"), ("mapping4", "source1", "target0"),
             ("mapping5", "source0", "target2"), ("mapping7", "source1", "target3")]


def _mapping_project(tmp_path: Path) -> Path:
    """Mappings shaped as the seed's (source1 chosen by a filter), over managed types."""
    project = tmp_path / "mappings"
    (project / "conf").mkdir(parents=True)
    types = sorted({t for _, s, t in _SEED_003} | {s for _, s, _t in _SEED_003})
    managed = {"objects": [{"name": t, "schema": {"properties": {"name": {"type": "string"}}}} for t in types]}
    (project / "conf" / "managed.json").write_text(json.dumps(managed))
    sync = {"mappings": [{"name": n, "source": f"managed/{s}", "target": f"managed/{t}"} for n, s, t in _SEED_003]}
    (project / "conf" / "sync.json").write_text(json.dumps(sync))
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    return project


def test_seed_003_mapping_paging(tmp_path: Path) -> None:
    """sync/mappings pages by cookie and by offset exactly as seed 003 shows: the
    cookie names the next page's first mapping, totalPagedResults is the page's size."""
    with serve(_mapping_project(tmp_path)) as api:
        base = "/openidm/sync/mappings?_queryFilter=/source+eq+'managed/source1'&_pageSize=2"
        first = api.get(base, headers=ADMIN).json()
        assert [m["_id"] for m in first["result"]] == ["mapping1", "mapping4"]
        assert first["result"][0] == {"_id": "mapping1", "source": "managed/source1", "target": "managed/target1",
                                      "name": "mapping1", "sourceRouteReady": True, "targetRouteReady": True}
        assert {k: v for k, v in first.items() if k != "result"} == {
            "resultCount": 2, "pagedResultsCookie": "mapping7", "totalPagedResultsPolicy": "EXACT",
            "totalPagedResults": 2, "remainingPagedResults": -1}
        second = api.get(base + "&_pagedResultsCookie=mapping7", headers=ADMIN).json()
        assert [m["_id"] for m in second["result"]] == ["mapping7"]
        assert {k: v for k, v in second.items() if k != "result"} == {
            "resultCount": 1, "pagedResultsCookie": None, "totalPagedResultsPolicy": "EXACT",
            "totalPagedResults": 1, "remainingPagedResults": -1}
        assert api.get(base + "&_pagedResultsOffset=0", headers=ADMIN).json() == first
        assert api.get(base + "&_pagedResultsOffset=2", headers=ADMIN).json() == second
        everything = api.get("/openidm/sync/mappings?_queryFilter=true", headers=ADMIN).json()
        assert [m["_id"] for m in everything["result"]] == [n for n, _, _ in _SEED_003]
        config = api.get("/openidm/config/sync", headers=ADMIN).json()
        assert config["_id"] == "sync" and len(config["mappings"]) == len(_SEED_003)
