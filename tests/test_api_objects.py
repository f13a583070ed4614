"""Recon runs and managed objects over the API against a real slapd and SQLite
store: async start, summaries, 409 while locked, cancel; create/replace/patch/
delete with revisions, query paging and errors in PingIDM's shape; /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_server import ADMIN, serve
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.testing.slapd import Slapd

from samples import FORWARD, ldap_entry, sample_project

JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.fixture
def project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    return sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")


@pytest.fixture
def api(project: Path) -> Iterator[httpx.Client]:
    with serve(project) as client:
        yield client


def test_recon_async_summary_and_conflict(api: httpx.Client, project: Path) -> None:
    """Without waitForCompletion the answer comes at once with the run id; recon/ID
    then shows PingIDM's summary; a mapping whose lock is held answers 409."""
    r = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}", headers=ADMIN)
    assert r.status_code == 200, r.text
    run_id = r.json()["_id"]
    for _ in range(200):
        summary = api.get(f"/openidm/recon/{run_id}", headers=ADMIN).json()
        if summary["state"] != "ACTIVE":
            break
        time.sleep(0.05)
    assert summary["state"] == "SUCCESS" and summary["mapping"] == FORWARD
    assert summary["situationSummary"]["ABSENT"] == 2 and summary["statusSummary"]["SUCCESS"] >= 2
    assert {"stage", "progress", "durationSummary", "started", "ended", "duration"} <= set(summary)
    listed = api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"]
    assert [r["_id"] for r in listed] == [run_id]

    loaded = load_project(project)
    RunStore(Store.open(loaded.settings.store_url())).acquire(f"recon:{FORWARD}", "elsewhere:1")
    busy = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}", headers=ADMIN)
    assert busy.status_code == 409 and busy.json()["code"] == 409 and "already running" in busy.json()["message"]
    assert api.post("/openidm/recon?_action=recon&mapping=nope", headers=ADMIN).status_code == 404
    assert api.get("/openidm/recon/unknown", headers=ADMIN).json()["reason"] == "Not Found"
    done = api.post(f"/openidm/recon/{run_id}?_action=cancel", headers=ADMIN)
    assert done.status_code == 409


def test_recon_by_id(api: httpx.Client, slapd: Slapd, ldap_subtree: str) -> None:
    """reconById brings one changed LDAP entry into the store at once, recorded as a run."""
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: barbara@example.com\n")
    (account,) = api.get("/openidm/system/ldap/account?_queryFilter=uid+eq+'bjensen'&_fields=_id",
                         headers=ADMIN).json()["result"]
    r = api.post(f"/openidm/recon?_action=reconById&mapping={FORWARD}&id={account['_id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "SUCCESS", r.text
    (user,) = api.get('/openidm/managed/user?_queryFilter=userName eq "bjensen"', headers=ADMIN).json()["result"]
    assert user["mail"] == "barbara@example.com"
    assert api.get(f"/openidm/recon/{r.json()['_id']}", headers=ADMIN).json()["mapping"] == FORWARD
    missing = api.post(f"/openidm/recon?_action=reconById&mapping={FORWARD}&id=nope", headers=ADMIN)
    assert missing.status_code == 404


def test_managed_changes_with_revisions(api: httpx.Client, slapd: Slapd, ldap_subtree: str) -> None:
    """PUT with If-None-Match creates (412 the second time), If-Match with a stale
    revision is 412, PATCH and DELETE work, and each change reaches LDAP."""
    user = {"userName": "jdoe", "sn": "Doe", "givenName": "John", "mail": "jdoe@example.com"}
    created = api.put("/openidm/managed/user/jdoe-1", headers={**JSON, "If-None-Match": "*"}, json=user)
    assert created.status_code == 201, created.text
    assert created.json()["_id"] == "jdoe-1" and created.headers["ETag"] == f'"{created.json()["_rev"]}"'
    again = api.put("/openidm/managed/user/jdoe-1", headers={**JSON, "If-None-Match": "*"}, json=user)
    assert again.status_code == 412 and again.json()["reason"] == "Precondition Failed"
    assert ldap_entry(slapd, f"uid=jdoe,{ldap_subtree}") is not None

    rev = created.json()["_rev"]
    replaced = api.put("/openidm/managed/user/jdoe-1", headers={**JSON, "If-Match": rev},
                       json={**user, "mail": "john@example.com"})
    assert replaced.status_code == 200 and replaced.json()["_rev"] != rev
    stale = api.put("/openidm/managed/user/jdoe-1", headers={**JSON, "If-Match": rev}, json=user)
    assert stale.status_code == 412
    patched = api.patch("/openidm/managed/user/jdoe-1", headers=JSON,
                        json=[{"operation": "replace", "field": "/telephoneNumber", "value": "555-0000"}])
    assert patched.status_code == 200, patched.text
    assert ldap_entry(slapd, f"uid=jdoe,{ldap_subtree}")["telephonenumber"] == ["555-0000"]  # type: ignore[index]
    deleted = api.delete("/openidm/managed/user/jdoe-1", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["userName"] == "jdoe"
    assert api.get("/openidm/managed/user/jdoe-1", headers=ADMIN).status_code == 404
    assert api.get("/openidm/managed/nothing/x", headers=ADMIN).status_code == 404


def test_managed_queries_paging_and_errors(api: httpx.Client) -> None:
    """Cookie and offset paging, EXACT totals, _fields, _sortKeys, and 400s with the
    position for a bad filter and bad JSON."""
    for i in range(5):
        r = api.post("/openidm/managed/role?_action=create", headers=JSON, json={"name": f"role{i}"})
        assert r.status_code == 201, r.text
    base = "/openidm/managed/role?_queryFilter=true&_pageSize=2&_totalPagedResultsPolicy=EXACT"
    seen: list[str] = []
    cookie = ""
    for _ in range(3):
        page = api.get(base + (f"&_pagedResultsCookie={cookie}" if cookie else ""), headers=ADMIN).json()
        assert page["totalPagedResults"] == 5 and page["totalPagedResultsPolicy"] == "EXACT"
        seen += [o["_id"] for o in page["result"]]
        cookie = page["pagedResultsCookie"]
        if cookie is None:
            break
    assert len(seen) == len(set(seen)) == 5 and cookie is None
    by_offset = api.get(base + "&_pagedResultsOffset=4", headers=ADMIN).json()
    assert [o["_id"] for o in by_offset["result"]] == seen[4:] and by_offset["pagedResultsCookie"] is None
    names = api.get("/openidm/managed/role?_queryFilter=true&_sortKeys=-name&_fields=name", headers=ADMIN).json()
    assert [o["name"] for o in names["result"]] == [f"role{i}" for i in range(4, -1, -1)]
    assert set(names["result"][0]) == {"_id", "_rev", "name"} and names["totalPagedResults"] == -1
    one = api.get('/openidm/managed/role?_queryFilter=name eq "role3"', headers=ADMIN).json()
    assert [o["name"] for o in one["result"]] == ["role3"]

    bad = api.get("/openidm/managed/role?_queryFilter=name eq", headers=ADMIN)
    assert bad.status_code == 400 and "position" in bad.json()["message"]
    broken = api.post("/openidm/managed/role?_action=create", headers=JSON, content=b'{"name": ')
    assert broken.status_code == 400 and "position" in broken.json()["message"]
    huge = api.post("/openidm/managed/role?_action=create", headers=JSON,
                    content=json.dumps({"name": "x" * 2_000_000}))
    assert huge.status_code == 413


def test_system_test_and_metrics(api: httpx.Client) -> None:
    """system?_action=test reports each system; /metrics needs credentials and counts
    runs by state and objects by situation."""
    systems = api.post("/openidm/system?_action=test", headers=ADMIN).json()
    assert [(s["name"], s["ok"]) for s in systems] == [("ldap", True)]
    assert {"name", "enabled", "config", "objectTypes", "ok"} <= set(systems[0])
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    assert api.get("/metrics").status_code == 401
    text = api.get("/metrics", headers=ADMIN).text
    assert f'idsync_recon_runs{{mapping="{FORWARD}",state="SUCCESS"}} 1.0' in text
    assert f'idsync_recon_situations_total{{mapping="{FORWARD}",situation="ABSENT"}} 2.0' in text
    assert "idsync_recon_last_duration_seconds" in text and "idsync_http_requests_total" in text
