"""Recon runs and managed objects over the API against a real slapd and SQLite
store: async start, summaries, 409 while locked, cancel; create/replace/patch/
delete with revisions, query paging and errors in PingIDM's shape; /metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, add_users, serve
from dbs import BACKENDS, store_url
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.retry import failed_pushes
from idsync_dev.slapd import Slapd

from samples import FORWARD, REVERSE, idsync, ldap_entry, sample_project

JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.fixture
def project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    return sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")


@pytest.fixture
def api(project: Path) -> Iterator[httpx.Client]:
    with serve(project) as client:
        yield client


def test_a_recon_duration_is_its_ended_less_its_started() -> None:
    """recon/ID's duration is the milliseconds between its started and ended as it writes
    them, as PingIDM's: from the microseconds, a run from 19:48:50.009900 to 19:48:50.020100
    reads started .009, ended .020 and a duration of 11 (it was 10, from the microseconds)."""
    import datetime as dt

    from idsync.api.recon import run_summary

    at = dt.datetime(2026, 12, 7, 19, 48, 50, 9900, tzinfo=dt.UTC)
    row = {"id": "r", "mapping": FORWARD, "state": "SUCCESS", "stage": "COMPLETED", "summary": {},
           "started": at, "ended": at + dt.timedelta(microseconds=10200)}
    summary = run_summary(row)
    assert (summary["started"], summary["ended"]) == ("2026-12-07T19:48:50.009Z", "2026-12-07T19:48:50.020Z")
    assert summary["duration"] == 11


def test_recon_async_summary_and_conflict(api: httpx.Client, project: Path) -> None:
    """Without waitForCompletion the answer comes at once with the run id; recon/ID
    then shows PingIDM's summary (its times as PingIDM writes them); a mapping whose lock
    is held answers 409."""
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
    assert summary["stage"] == "COMPLETED_SUCCESS" and summary["stageDescription"] == "reconciliation completed."
    assert summary["progress"]["source"]["existing"]["processed"] == 2 and summary["duration"] >= 0
    for key in ("started", "ended"):  # PingIDM's: UTC to the millisecond
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", summary[key]), summary[key]
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


def test_recon_by_id_repairs_a_failed_push(api: httpx.Client, project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A push LDAP refused (a user without ``sn``) waits for a retry; once the data is
    fixed, a reconById through the store-to-LDAP mapping delivers it and counts as
    the repair of that object only, like ``idsync sync retry`` (not as a whole recon:
    the other user's failed push still waits)."""
    ids = []
    for name in ("nosn", "other"):
        created = api.post("/openidm/managed/user?_action=create", headers=JSON, json={"userName": name})
        assert created.status_code == 201, created.text
        ids.append(created.json()["_id"])
    store = Store.open(load_project(project).settings.store_url())
    assert failed_pushes(store, REVERSE) == ids
    fixed = idsync(project, "managed", "patch", "user", ids[0], "--no-sync",
                   "--operations", '[{"operation": "add", "field": "/sn", "value": "Nosn"}]')
    assert fixed.returncode == 0, fixed.stderr
    r = api.post(f"/openidm/recon?_action=reconById&mapping={REVERSE}&id={ids[0]}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "SUCCESS", r.text
    assert ldap_entry(slapd, f"uid=nosn,{ldap_subtree}") is not None
    assert failed_pushes(store, REVERSE) == [ids[1]]


def test_a_policy_failure_answers_its_requirements_on_every_write(api: httpx.Client) -> None:
    """A managed-object write that breaks a policy is PingIDM's 403 with the failed
    requirements in detail, whichever way it came: a create (POST, _action=create, PUT
    with or without If-None-Match) or a replace is "Policy validation failed", as PingIDM's
    policy filter answers them; a patch (PATCH, _action=patch) "Failed policy validation",
    as its managed service does. Nothing is written."""
    required = {"result": False, "failedPolicyRequirements": [
        {"policyRequirements": [{"policyRequirement": "REQUIRED"}], "property": "userName"}]}
    nameless = {"sn": "Doe", "givenName": "John", "mail": "jdoe@example.com"}
    user = {"userName": "jdoe", **nameless}
    existing = api.post("/openidm/managed/user?_action=create", headers=JSON, json=user).json()
    writes = {
        "create": api.post("/openidm/managed/user?_action=create", headers=JSON, json=nameless),
        "POST": api.post("/openidm/managed/user", headers=JSON, json=nameless),
        "PUT new": api.put("/openidm/managed/user/jdoe-new", headers={**JSON, "If-None-Match": "*"}, json=nameless),
        "PUT": api.put("/openidm/managed/user/jdoe-other", headers=JSON, json=nameless),
        "replace": api.put(f"/openidm/managed/user/{existing['_id']}", headers=JSON, json=nameless),
        "PATCH": api.patch(f"/openidm/managed/user/{existing['_id']}", headers=JSON,
                           json=[{"operation": "remove", "field": "/userName"}]),
        "patch": api.post(f"/openidm/managed/user/{existing['_id']}?_action=patch", headers=JSON,
                          json=[{"operation": "remove", "field": "/userName"}]),
    }
    for how, answer in writes.items():
        message = "Failed policy validation" if how.lower() == "patch" else "Policy validation failed"
        assert (answer.status_code, answer.json()) == (403, {
            "code": 403, "reason": "Forbidden", "message": message, "detail": required}), (how, answer.text)
    assert api.get(f"/openidm/managed/user/{existing['_id']}", headers=ADMIN).json()["userName"] == "jdoe"
    everyone = api.get("/openidm/managed/user?_queryFilter=sn+eq+'Doe'", headers=ADMIN).json()["result"]
    assert [u["_id"] for u in everyone] == [existing["_id"]]


def test_every_query_answers_remaining_paged_results_as_pingidm(api: httpx.Client) -> None:
    """remainingPagedResults is -1 in every query's answer, paged or not, counted with
    EXACT or not, as PingIDM answers it (its resources keep no count of what remains):
    managed objects, a system's, the links, dead letters; what is counted is in
    totalPagedResults, with EXACT only."""
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    for collection in ("managed/user", "system/ldap/account", "repo/link", "repo/synchronisation/deadLetterQueue/ldap"):
        for extra in ("", "&_pageSize=1", "&_pageSize=1&_totalPagedResultsPolicy=EXACT",
                      "&_totalPagedResultsPolicy=EXACT"):
            answer = api.get(f"/openidm/{collection}?_queryFilter=true{extra}", headers=ADMIN)
            assert answer.status_code == 200, (collection, extra, answer.text)
            body = answer.json()
            assert body["remainingPagedResults"] == -1, (collection, extra, body)
            counted = "EXACT" in extra
            assert body["totalPagedResultsPolicy"] == ("EXACT" if counted else "NONE"), (collection, extra, body)
            assert (body["totalPagedResults"] >= body["resultCount"]) if counted else \
                body["totalPagedResults"] == -1, (collection, extra, body)


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
    assert ldap_entry(slapd, f"uid=jdoe,{ldap_subtree}") is None
    assert api.get("/openidm/managed/nothing/x", headers=ADMIN).status_code == 404
    moved = api.patch("/openidm/managed/user/jdoe-1", headers=JSON, json=[{"operation": "move", "field": "/mail"}])
    assert moved.status_code == 404  # deleted above; an unknown operation on a live object is a 400:
    api.put("/openidm/managed/user/jdoe-2", headers=JSON, json=user)
    for body in ([{"operation": "move", "field": "/mail"}], {"operation": "add"}):
        bad = api.patch("/openidm/managed/user/jdoe-2", headers=JSON, json=body)
        assert bad.status_code == 400 and bad.json()["reason"] == "Bad Request", body
    # A value of the wrong type breaks the valid-type policy: PingIDM's 403.
    typed = api.patch("/openidm/managed/user/jdoe-2", headers=JSON,
                      json=[{"operation": "replace", "field": "/userName", "value": 5}])
    assert typed.status_code == 403 and typed.json()["detail"]["failedPolicyRequirements"] == [
        {"property": "userName", "policyRequirements": [{"policyRequirement": "VALID_TYPE", "params": {
            "invalidType": "number", "validTypes": ["string", "null"]}}]}]
    slash = api.post("/openidm/managed/user?_action=create&_id=a/b", headers=JSON, json={**user, "userName": "ab"})
    assert slash.status_code == 400


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
    chunked = api.post("/openidm/managed/role?_action=create", headers=JSON,
                       content=iter([b'{"name": "', b"x" * 2_000_000, b'"}']))  # no Content-Length
    assert chunked.status_code == 413 and chunked.json()["code"] == 413


def test_system_test_and_metrics(api: httpx.Client) -> None:
    """system?_action=test reports each system; /metrics needs credentials and counts
    runs by state, objects by situation and action, and durations, each run once
    however many scrapes see it."""
    systems = api.post("/openidm/system?_action=test", headers=ADMIN).json()
    assert [(s["name"], s["ok"]) for s in systems] == [("ldap", True)]
    assert {"name", "enabled", "config", "objectTypes", "ok"} <= set(systems[0])
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    assert api.get("/metrics").status_code == 401
    text = api.get("/metrics", headers=ADMIN).text
    assert f'idsync_recon_runs{{mapping="{FORWARD}",state="SUCCESS"}} 1.0' in text
    assert f'idsync_recon_situations_total{{mapping="{FORWARD}",situation="ABSENT"}} 2.0' in text
    assert "idsync_recon_last_duration_seconds" in text and "idsync_http_requests_total" in text
    assert f'idsync_recon_actions_total{{action="CREATE",mapping="{FORWARD}"}} 2.0' in text
    assert f'idsync_recon_duration_seconds_count{{mapping="{FORWARD}"}} 1.0' in text
    # A later scrape adds the runs since, and only those.
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    again = api.get("/metrics", headers=ADMIN).text
    assert f'idsync_recon_runs{{mapping="{FORWARD}",state="SUCCESS"}} 2.0' in again
    assert f'idsync_recon_situations_total{{mapping="{FORWARD}",situation="ABSENT"}} 2.0' in again
    assert f'idsync_recon_situations_total{{mapping="{FORWARD}",situation="CONFIRMED"}} 2.0' in again
    assert f'idsync_recon_duration_seconds_count{{mapping="{FORWARD}"}} 2.0' in again


def test_recon_summary_counts_links_as_pingidm(api: httpx.Client) -> None:
    """recon/ID's progress.links.existing.total is PingIDM's: the links there when the run
    began, from its start on; a run that began with none says "?" while it runs and, once
    it succeeded, the links it processed ("0" for a first load)."""
    start = f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true"
    first, second = (api.post(start, headers=ADMIN).json()["_id"] for _ in range(2))
    links = [api.get(f"/openidm/recon/{run}", headers=ADMIN).json()["progress"]["links"] for run in (first, second)]
    assert links == [{"created": 2, "existing": {"processed": 0, "total": "0"}},
                     {"created": 0, "existing": {"processed": 2, "total": "2"}}]


def test_repo_link_answers_the_links_as_pingidm_keeps_them(api: httpx.Client) -> None:
    """repo/link answers each link as PingIDM's repository does (linkType the owning
    mapping, firstId its source object, secondId its target), queried by those fields,
    paged by its last _id, counted with EXACT; repo/link/ID reads one. A field links do not
    have, another sort or an unknown id are refused, and nothing is written through it."""
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    every = api.get("/openidm/repo/link?_queryFilter=true&_totalPagedResultsPolicy=EXACT", headers=ADMIN).json()
    assert every["resultCount"] == every["totalPagedResults"] == 2, every
    assert all(set(link) == {"_id", "_rev", "linkType", "linkQualifier", "firstId", "secondId"} and
               link["linkType"] == FORWARD and link["linkQualifier"] == "default" for link in every["result"])
    (user,) = api.get("/openidm/managed/user?_queryFilter=userName+eq+'bjensen'", headers=ADMIN).json()["result"]
    (account,) = api.get("/openidm/system/ldap/account?_queryFilter=uid+eq+'bjensen'", headers=ADMIN).json()["result"]
    found = api.get(f'/openidm/repo/link?_queryFilter=linkType+eq+"{FORWARD}"+and+secondId+eq+"{user["_id"]}"',
                    headers=ADMIN).json()["result"]
    assert [(link["firstId"], link["secondId"]) for link in found] == [(account["_id"], user["_id"])]
    assert api.get(f'/openidm/repo/link?_queryFilter=linkType+eq+"{REVERSE}"', headers=ADMIN).json()["result"] == []
    first = api.get("/openidm/repo/link?_queryId=query-all-ids&_pageSize=1", headers=ADMIN).json()
    rest = api.get(f"/openidm/repo/link?_queryId=query-all-ids&_pageSize=1&_pagedResultsCookie="
                   f"{first['pagedResultsCookie']}", headers=ADMIN).json()
    assert [link["_id"] for link in first["result"] + rest["result"]] == sorted(x["_id"] for x in every["result"])
    assert rest["pagedResultsCookie"] is None and set(first["result"][0]) == {"_id", "_rev"}
    one = api.get(f"/openidm/repo/link/{found[0]['_id']}", headers=ADMIN)
    assert one.status_code == 200 and one.json() == found[0]
    assert api.get("/openidm/repo/link/nope", headers=ADMIN).status_code == 404
    bad = api.get("/openidm/repo/link?_queryFilter=sourceId+eq+'x'", headers=ADMIN)
    assert bad.status_code == 400 and "firstId" in bad.json()["message"]
    assert api.get("/openidm/repo/link?_queryFilter=true&_sortKeys=firstId", headers=ADMIN).status_code == 400
    assert api.delete(f"/openidm/repo/link/{found[0]['_id']}", headers=ADMIN).status_code == 405


def test_repo_link_answers_pingidm_link_query_ids(api: httpx.Client) -> None:
    """repo/link answers PingIDM's query ids of its links, as its admin UI sends them
    (links-for-firstId, links-for-secondId with linkType and the id, links-for-linkType),
    paged as a filter is; a parameter is compared as a value, never read as query syntax,
    and a missing one is a 400 naming it."""
    api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    every = api.get("/openidm/repo/link?_queryFilter=true", headers=ADMIN).json()["result"]
    link = every[0]

    def links(query_id: str, **params: str) -> httpx.Response:
        return api.get("/openidm/repo/link", params={"_queryId": f"links-for-{query_id}", **params}, headers=ADMIN)

    by_first = links("firstId", linkType=FORWARD, firstId=link["firstId"])
    assert by_first.status_code == 200 and by_first.json()["result"] == [link], by_first.text
    by_second = links("secondId", linkType=FORWARD, secondId=link["secondId"]).json()
    assert by_second["result"] == [link] and by_second["resultCount"] == 1
    by_type = links("linkType", linkType=FORWARD, _pageSize="1", _totalPagedResultsPolicy="EXACT").json()
    assert by_type["totalPagedResults"] == 2 and by_type["result"] == [link], by_type
    assert links("linkType", linkType=REVERSE).json()["result"] == []
    for hostile in (f'{link["firstId"]}" or true or firstId eq "', "*", f"{link['firstId']}' or '1'='1"):
        answer = links("firstId", linkType=FORWARD, firstId=hostile)
        assert answer.status_code == 200 and answer.json()["result"] == [], hostile
    missing = links("secondId", linkType=FORWARD)
    assert missing.status_code == 400 and "secondId" in missing.json()["message"], missing.text


def test_delete_purges_a_finished_recon(api: httpx.Client) -> None:
    """DELETE recon/ID purges a finished reconciliation's statistics, as PingIDM's: it
    answers the run's summary, which recon/ID, the list and audit/recon no longer hold;
    the metrics' counters keep what it counted. The mapping's last complete recon (which
    the retries of failed pushes read) is a 409 saying so; an unknown id a 404."""
    start = f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true"
    first, last = (api.post(start, headers=ADMIN).json()["_id"] for _ in range(2))
    summary = api.get(f"/openidm/recon/{first}", headers=ADMIN).json()
    deleted = api.delete(f"/openidm/recon/{first}", headers=ADMIN)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == summary
    assert api.get(f"/openidm/recon/{first}", headers=ADMIN).status_code == 404
    assert [r["_id"] for r in api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"]] == [last]
    entries = api.get(f'/openidm/audit/recon?_queryFilter=reconId+eq+"{first}"', headers=ADMIN).json()
    assert entries["resultCount"] == 0
    assert api.delete(f"/openidm/recon/{first}", headers=ADMIN).status_code == 404
    kept = api.delete(f"/openidm/recon/{last}", headers=ADMIN)
    assert kept.status_code == 409 and "last complete reconciliation" in kept.json()["message"], kept.text
    assert api.get(f"/openidm/recon/{last}", headers=ADMIN).status_code == 200
    assert f'idsync_recon_runs_finished_total{{mapping="{FORWARD}",state="SUCCESS"}} 2.0' in \
        api.get("/metrics", headers=ADMIN).text


def test_cancel_running_recon(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """recon/ID?_action=cancel stops a running recon at its next page boundary: it is
    recorded CANCELED with what it did so far, its lock is released, and the next
    start runs to SUCCESS; meanwhile a second start of the mapping is a 409 and so is a
    DELETE of the running run. A running recon's summary tells, as PingIDM's, the links
    there when it began and its duration so far."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    with (project / "conf" / "idsync.toml").open("a") as f:
        f.write("[recon]\npage_size = 2\n")
    add_users(slapd, ldap_subtree, 800)
    with serve(project) as api:
        started = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}", headers=ADMIN).json()
        assert started["state"] == "ACTIVE", started
        busy = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}", headers=ADMIN)
        assert busy.status_code == 409 and busy.json()["reason"] == "Conflict"
        running = api.delete(f"/openidm/recon/{started['_id']}", headers=ADMIN)  # its statistics are not purged
        assert running.status_code == 409 and "cancel it first" in running.json()["message"], running.text
        cancel = api.post(f"/openidm/recon/{started['_id']}?_action=cancel", headers=ADMIN)
        assert cancel.json() == {"_id": started["_id"], "action": "cancel", "status": "INITIATED"}
        for _ in range(400):
            summary = api.get(f"/openidm/recon/{started['_id']}", headers=ADMIN).json()
            if summary["state"] != "ACTIVE":
                break
            time.sleep(0.05)
        assert summary["state"] == "CANCELED" and summary["stage"] == "COMPLETED_CANCELED", summary
        assert summary["progress"]["source"]["existing"]["processed"] < 802 and summary["ended"]
        again = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
        assert again.json()["state"] == "SUCCESS", again.text
        # A run that began with links says how many once it reads, as PingIDM does.
        linked = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}", headers=ADMIN).json()
        for _ in range(400):
            read = api.get(f"/openidm/recon/{linked['_id']}", headers=ADMIN).json()
            if read["stage"] != "ACTIVE_INITIALIZED":
                break
            time.sleep(0.01)
        assert read["progress"]["links"]["existing"]["total"] == "802", read
        assert read["ended"] == "" or read["state"] != "ACTIVE", read
        assert isinstance(read["duration"], int) and read["duration"] >= 0, read  # so far, as PingIDM's
        api.post(f"/openidm/recon/{linked['_id']}?_action=cancel", headers=ADMIN)
        for _ in range(400):
            if api.get(f"/openidm/recon/{linked['_id']}", headers=ADMIN).json()["state"] != "ACTIVE":
                break
            time.sleep(0.05)
        assert api.post(f"/openidm/recon/{started['_id']}?_action=cancel", headers=ADMIN).status_code == 409
        assert api.delete(f"/openidm/recon/{started['_id']}", headers=ADMIN).status_code == 200  # once ended


def test_secrets_never_answered(api: httpx.Client) -> None:
    """A password given to create, replace or patch is stored (hashed) but never part
    of an answer: not in the created object, a read, a query, a patch or a delete; one
    with a NUL character is refused with a 400."""
    secret = "Sup3r-secret-passw0rd"
    user = {"userName": "sdoe", "sn": "Doe", "givenName": "S", "mail": "sdoe@example.com", "password": secret}
    answers = [api.post("/openidm/managed/user?_action=create", headers=JSON, json=user)]
    user_id = answers[0].json()["_id"]
    answers.append(api.get(f"/openidm/managed/user/{user_id}", headers=ADMIN))
    answers.append(api.get(f"/openidm/managed/user/{user_id}?_fields=password,userName", headers=ADMIN))
    answers.append(api.get("/openidm/managed/user?_queryFilter=true&_fields=*", headers=ADMIN))
    answers.append(api.patch(f"/openidm/managed/user/{user_id}", headers=JSON,
                             json=[{"operation": "replace", "field": "/password", "value": secret + "2"}]))
    answers.append(api.put(f"/openidm/managed/user/{user_id}", headers=JSON, json=user))
    answers.append(api.delete(f"/openidm/managed/user/{user_id}", headers=ADMIN))
    for answer in answers:
        assert answer.status_code in (200, 201), answer.text
        assert secret not in answer.text and '"password"' not in answer.text, answer.text
    nul = api.post("/openidm/managed/user?_action=create", headers=JSON, json={**user, "password": "a\x00b"})
    assert nul.status_code == 400 and "NUL" in nul.json()["message"]  # crypt(3) would cut it short


def test_unreachable_system(project: Path, slapd: Slapd) -> None:
    """A system that cannot be reached tests ok false with the error, and a query of it
    is a 503 in PingIDM's shape; neither answer carries its credentials."""
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"]["port"] = 1
    prov_file.write_text(json.dumps(prov))
    with serve(project) as api:
        (report,) = api.post("/openidm/system?_action=test", headers=ADMIN).json()
        assert report["ok"] is False and report["name"] == "ldap" and "127.0.0.1:1" in report["error"]
        one = api.post("/openidm/system/ldap?_action=test", headers=ADMIN).json()
        assert one == {**report, "error": one["error"]} and "127.0.0.1:1" in one["error"]
        assert {"connectorRef", "displayName", "objectTypes"} <= set(one)
        query = api.get("/openidm/system/ldap/account?_queryId=query-all-ids", headers=ADMIN)
        assert query.status_code == 503 and query.json()["reason"] == "Service Unavailable"
        for answer in (json.dumps(report), json.dumps(one), query.text):
            assert slapd.admin_password not in answer


def _walked(api: httpx.Client, url: str) -> list[dict[str, Any]]:
    """Every object of a paged query, its pages walked by their cookies."""
    found: list[dict[str, Any]] = []
    cookie = None
    while True:
        page = api.get(url + (f"&_pagedResultsCookie={cookie}" if cookie else ""), headers=ADMIN).json()
        found += page["result"]
        cookie = page["pagedResultsCookie"]
        if cookie is None:
            return found


def test_managed_paging_edges(api: httpx.Client) -> None:
    """Paging at the edges: a page size equal to the count ends with no cookie, an
    offset past the end is an empty page, query-all-ids pages like a filter, a sorted
    query pages by its numeric cookie, and bad paging values (an offset past what a
    database's OFFSET takes among them) are 400s."""
    for i in range(4):
        api.post("/openidm/managed/role?_action=create", headers=JSON, json={"name": f"r{i}"})
    base = "/openidm/managed/role?_queryFilter=true"
    exact = api.get(base + "&_pageSize=4&_totalPagedResultsPolicy=EXACT", headers=ADMIN).json()
    assert exact["resultCount"] == 4 and exact["pagedResultsCookie"] is None and exact["totalPagedResults"] == 4
    assert api.get(base + "&_pageSize=0", headers=ADMIN).json()["resultCount"] == 4
    past = api.get(base + "&_pageSize=2&_pagedResultsOffset=10", headers=ADMIN).json()
    assert past["result"] == [] and past["pagedResultsCookie"] is None
    ids = api.get("/openidm/managed/role?_queryId=query-all-ids&_pageSize=3", headers=ADMIN).json()
    assert ids["resultCount"] == 3 and all(set(o) == {"_id", "_rev"} for o in ids["result"])
    rest = api.get(f"/openidm/managed/role?_queryId=query-all-ids&_pageSize=3&_pagedResultsCookie="
                   f"{ids['pagedResultsCookie']}", headers=ADMIN).json()
    assert rest["resultCount"] == 1 and rest["pagedResultsCookie"] is None
    assert {o["_id"] for o in ids["result"] + rest["result"]} == {o["_id"] for o in exact["result"]}
    assert [o["name"] for o in _walked(api, base + "&_sortKeys=-name&_pageSize=3")] == ["r3", "r2", "r1", "r0"]
    for bad in ("_pageSize=-1", "_pageSize=x", "_pagedResultsOffset=-2", "_totalPagedResultsPolicy=SOME",
                "_queryId=nothing", "_pagedResultsOffset=9223372036854775808"):
        answer = api.get(f"/openidm/managed/role?_queryFilter=true&{bad}", headers=ADMIN)
        assert answer.status_code == 400 and answer.json()["code"] == 400, bad
    assert api.get("/openidm/managed/role", headers=ADMIN).status_code == 400


@pytest.mark.parametrize("backend", BACKENDS)
def test_managed_api_on_each_store(tmp_path: Path, backend: str) -> None:
    """The managed endpoints answer alike on SQLite, PostgreSQL and MariaDB: filters,
    keyset paging with EXACT totals (mixed-case ids included), sorting, revisions."""
    project = tmp_path / "p"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "{store_url(backend, tmp_path)}"\n')
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": []}))
    with serve(project) as api:
        for i, name in enumerate(["alice", "Bob", "carol", "dave", "Eve", "frank", "grace"]):
            r = api.put(f"/openidm/managed/user/{name}-{i}", headers={**JSON, "If-None-Match": "*"},
                        json={"userName": name, "sn": name.title(), "givenName": "G", "mail": f"{name}@example.com",
                              "description": "odd" if i % 2 else "even"})
            assert r.status_code == 201, r.text
        seen: list[str] = []
        cookie = ""
        while True:
            page = api.get("/openidm/managed/user?_queryFilter=true&_pageSize=3&_totalPagedResultsPolicy=EXACT"
                           + (f"&_pagedResultsCookie={cookie}" if cookie else ""), headers=ADMIN).json()
            assert page["totalPagedResults"] == 7
            seen += [o["_id"] for o in page["result"]]
            cookie = page["pagedResultsCookie"]
            if cookie is None:
                break
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 7

        def names(query: str) -> list[str]:
            answer = api.get(f"/openidm/managed/user?_queryFilter={query}&_sortKeys=userName", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            return [o["userName"] for o in answer.json()["result"]]

        assert names('description eq "odd"') == ["Bob", "dave", "frank"]
        assert names('userName sw "c" or (description eq "odd" and mail co "ank")') == ["carol", "frank"]
        assert names('!(description eq "even")') == ["Bob", "dave", "frank"]
        assert names("userName pr") == ["Bob", "Eve", "alice", "carol", "dave", "frank", "grace"]
        stale = api.get("/openidm/managed/user/alice-0", headers=ADMIN).json()["_rev"]
        api.patch("/openidm/managed/user/alice-0", headers=JSON,
                  json=[{"operation": "replace", "field": "/description", "value": "odd"}])
        assert api.delete("/openidm/managed/user/alice-0", headers={**ADMIN, "If-Match": stale}).status_code == 412
        assert names('description eq "odd"') == ["Bob", "alice", "dave", "frank"]


def test_recon_settings_for_one_run(api: httpx.Client, project: Path) -> None:
    """PingIDM's body of ``recon?_action=recon`` sets ``sourceQuery``, ``targetQuery``,
    ``runTargetPhase`` or ``allowEmptySourceSet`` for that run alone: a recon of bjensen
    alone, its target phase off, creates her only and deletes nothing. A setting idsync
    does not take, a value of the wrong type or a bad filter is refused with 400, naming
    it, before anything runs (never ignored: a narrower targetQuery ignored would widen
    what the run may delete)."""
    alone = {"sourceQuery": {"_queryFilter": 'uid eq "bjensen"'}, "runTargetPhase": False}
    r = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=JSON,
                 content=json.dumps(alone))
    assert r.status_code == 200 and r.json()["state"] == "SUCCESS", r.text
    summary = api.get(f"/openidm/recon/{r.json()['_id']}", headers=ADMIN).json()
    assert summary["situationSummary"]["ABSENT"] == 1 and summary["progress"]["target"]["existing"]["processed"] == 0
    users = api.get("/openidm/managed/user?_queryFilter=true&_fields=userName", headers=ADMIN).json()["result"]
    assert [u["userName"] for u in users] == ["bjensen"]
    for body, problem in (({**alone, "mappingName": "x"}, "mappingName cannot be set for one run"),
                          ({"runTargetPhase": "no"}, "runTargetPhase must be true or false"),
                          ({"targetQuery": {"_queryFilter": "uid eq"}}, "targetQuery._queryFilter: bad _queryFilter"),
                          ({"sourceQuery": {"_queryId": "no-such-query"}}, "no-such-query"),
                          # A misspelt query would read every object: refused, naming it.
                          ({"sourceQuery": {"nativeQuerry": "(uid=bjensen)"}},
                           "sourceQuery.nativeQuerry: unknown setting, did you mean nativeQuery?"),
                          ({"targetQuery": {"_queryFiltr": "true"}}, "targetQuery._queryFiltr"),
                          ({"sourceQuery": {"_queryFilter": "true", "bogus": 1}}, "sourceQuery.bogus"),
                          ({"sourceQuery": {"_queryFilter": "true", "_queryId": "query-all"}},
                           "gives _queryFilter and _queryId"),
                          ([1], "must be a JSON object")):
        refused = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}", headers=JSON, content=json.dumps(body))
        assert refused.status_code == 400 and problem in refused.json()["message"], (body, refused.text)
    r = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true", headers=ADMIN)
    assert r.json()["state"] == "SUCCESS"  # without a body: the mapping as configured, both users
    users = api.get("/openidm/managed/user?_queryFilter=true&_fields=userName", headers=ADMIN).json()["result"]
    assert sorted(u["userName"] for u in users) == ["bjensen", "scarter"]


def test_recon_analysis_and_unknown_parameters(api: httpx.Client) -> None:
    """``analyze=true`` (PingIDM's analysis run, with ``persistAssociations=true`` as PingIDM
    asks) decides every action and carries none out: idsync's dry run. A parameter idsync
    does not take is a 400 naming it, never a full run that ignored it."""
    r = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&analyze=true&persistAssociations=true"
                 "&waitForCompletion=true", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "SUCCESS", r.text
    summary = api.get(f"/openidm/recon/{r.json()['_id']}", headers=ADMIN).json()
    assert summary["dryRun"] is True and summary["situationSummary"]["ABSENT"] == 2
    assert api.get("/openidm/managed/user?_queryFilter=true", headers=ADMIN).json()["result"] == []
    for query, problem in (("&analyse=true", "unknown parameter analyse"), ("&analyze=yes", "analyze must be true")):
        refused = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}{query}", headers=ADMIN)
        assert refused.status_code == 400 and problem in refused.json()["message"], refused.text
    assert api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"][0]["_id"] == r.json()["_id"]


def test_managed_sort_keys_order_json_values(tmp_path: Path) -> None:
    """``_sortKeys`` orders numbers by value (5, 9, 100, not as text), takes a JSON pointer
    to a nested field (``address/city``, ``/address/city``), puts missing values first
    (last when descending), and answers 400 for a key that names no field and for a
    cookie a sorted query never gave."""
    project = tmp_path / "p"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "{store_url("sqlite", tmp_path)}"\n')
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": []}))
    with serve(project) as api:
        for name, age, city in [("a", 100, "Nice"), ("b", 5, "Lyon"), ("c", 9, None), ("d", None, "Arles")]:
            body: dict[str, object] = {"userName": name, "sn": name, "givenName": "G", "mail": f"{name}@example.com"}
            if age is not None:
                body["age"] = age
            if city is not None:
                body["address"] = {"city": city}
            assert api.post("/openidm/managed/user?_action=create", headers=JSON, json=body).status_code == 201

        def names(sort: str, extra: str = "") -> list[str]:
            answer = api.get(f"/openidm/managed/user?_queryFilter=true&_sortKeys={sort}{extra}", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            return [o["userName"] for o in answer.json()["result"]]

        assert names("age") == ["d", "b", "c", "a"]
        assert names("-age") == ["a", "c", "b", "d"]
        assert names("-age", "&_pageSize=1") == ["a"]
        assert names("address/city") == ["c", "d", "b", "a"]
        assert names("-/address/city") == ["a", "b", "d", "c"]
        for bad in ("_sortKeys=-", "_sortKeys=address//city", "_sortKeys=age&_pageSize=1&_pagedResultsCookie=abc"):
            answer = api.get(f"/openidm/managed/user?_queryFilter=true&{bad}", headers=ADMIN)
            assert answer.status_code == 400 and answer.json()["code"] == 400, bad


def _pretty(value: object) -> str:
    """``value`` laid out as PingIDM's pretty printer does: two spaces a level, ``"name" : value``."""
    return json.dumps(value, indent=2, separators=(",", " : "), ensure_ascii=False)


def test_pretty_print_indents_every_json_answer(api: httpx.Client) -> None:
    """``_prettyPrint=true`` (the samples' curl commands send it) answers indented JSON: a
    create, a read, a query by filter and by named query, a system's query, a recon, an error
    and a refused login; ``_prettyPrint=false`` and no parameter answer compact JSON."""
    made = api.post("/openidm/managed/user?_action=create&_prettyPrint=true", headers=JSON,
                    json={"userName": "pp", "givenName": "P", "sn": "P", "mail": "pp@example.com"})
    assert made.status_code == 201 and made.text == _pretty(made.json()), made.text
    assert '\n  "userName" : "pp"' in made.text
    user_id = made.json()["_id"]
    answers = [
        api.get(f"/openidm/managed/user/{user_id}?_prettyPrint=TRUE", headers=ADMIN),
        api.get("/openidm/managed/user?_queryFilter=true&_prettyPrint=true", headers=ADMIN),
        api.get("/openidm/managed/user?_queryId=query-all-ids&_prettyPrint=true", headers=ADMIN),
        api.get("/openidm/system/ldap/account?_queryId=query-all-ids&_prettyPrint=true", headers=ADMIN),
        api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true&_prettyPrint=true",
                 headers=ADMIN),
        api.get("/openidm/managed/user/nobody?_prettyPrint=true", headers=ADMIN),
        api.get("/openidm/managed/user/nobody?_prettyPrint=true"),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 404, 401], [r.text for r in answers]
    for r in answers:
        assert r.text == _pretty(r.json()) and "\n" in r.text, r.text
    for query in ("?_prettyPrint=false", ""):
        r = api.get(f"/openidm/managed/user/{user_id}{query}", headers=ADMIN)
        assert r.status_code == 200 and "\n" not in r.text and r.text == json.dumps(r.json(), separators=(",", ":"))


def test_system_answers_hold_the_fields_asked_for_as_openidm_does(api: httpx.Client, ldap_subtree: str) -> None:
    """As OpenIDM's provisioner answers a system's objects: a property ``_fields`` names
    that the object type declares is ``null`` on an entry without it, in a query and a read
    (one it does not declare is left out); a read answers only the fields named.
    A managed object without a property ``_fields`` names leaves it out, as PingIDM does."""
    asked = "dn,uid,displayName,nosuch"
    found = api.get("/openidm/system/ldap/account", headers=ADMIN,
                    params={"_queryFilter": 'uid eq "bjensen"', "_fields": asked}).json()["result"]
    dn = f"uid=bjensen,{ldap_subtree}"
    assert [{k: v for k, v in o.items() if k != "_id"} for o in found] == \
        [{"dn": dn, "uid": "bjensen", "displayName": None}]
    read = api.get(f"/openidm/system/ldap/account/{found[0]['_id']}", headers=ADMIN, params={"_fields": asked})
    assert read.status_code == 200 and read.json() == found[0], read.text
    ids = api.get(f"/openidm/system/ldap/account/{found[0]['_id']}?_fields=_id", headers=ADMIN).json()
    assert ids == {"_id": found[0]["_id"]}
    only = api.get("/openidm/system/ldap/account?_queryFilter=true&_fields=_id", headers=ADMIN).json()["result"]
    assert only and all(set(o) == {"_id"} for o in only), only
    made = api.post("/openidm/managed/user?_action=create", headers=JSON,
                    json={"userName": "nodesc", "givenName": "N", "sn": "D", "mail": "nodesc@example.com"}).json()
    user = api.get(f"/openidm/managed/user/{made['_id']}?_fields=userName,description", headers=ADMIN).json()
    assert set(user) == {"_id", "_rev", "userName"}, user


def test_a_sorted_page_reads_only_its_own_objects_whole(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sorted query page (``_sortKeys``, as PingIDM's admin UI lists objects) streams the
    matches through the sort keys and keeps only those up to the page's end: the page's roles
    are read whole (their references too), not every role; its pages, walked by cookie,
    are the whole sort (mixed directions, ties in id order), as one unpaged query sorts."""
    from idsync.store.objects import ManagedResource

    for n in (7, 3, 11, 0, 9, 4, 12, 1, 8, 5, 10, 2, 6, 13):
        made = api.post("/openidm/managed/role?_action=create", headers=JSON,
                        json={"name": f"s{n:02}", "description": "odd" if n % 2 else "even"})
        assert made.status_code == 201, made.text
    completed: list[int] = []  # how many objects each read of a page reads whole
    settled = ManagedResource.settled

    def counting(self: ManagedResource, revs: dict[str, str], *args: object) -> bool:
        completed.append(len(revs))
        return settled(self, revs, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ManagedResource, "settled", counting)
    base = "/openidm/managed/role?_queryFilter=name sw \"s\"&_sortKeys=description,-name"
    whole = [o["name"] for o in api.get(base, headers=ADMIN).json()["result"]]
    assert whole == [f"s{n:02}" for n in (12, 10, 8, 6, 4, 2, 0, 13, 11, 9, 7, 5, 3, 1)]
    completed.clear()
    assert [o["name"] for o in _walked(api, base + "&_pageSize=4")] == whole
    assert completed and max(completed) <= 4, completed
