"""PingIDM's audit topics over HTTP: ``audit/recon`` and ``audit/sync`` answer what each
run did to each object, queried by PingIDM's field names, against a real store.

A mapping from ``managed/staff`` into ``managed/user`` gives a recon (one staff member
breaks a policy) and implicit synchronization without a directory."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, POSTGRESQL_EN, WITH_MARIADB, store_url
from store_projects import CREATE_UPDATE, store_project

from samples import idsync

_MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user", "policies": CREATE_UPDATE,
            "properties": [{"source": "login", "target": "userName"}, {"source": "email", "target": "mail"}]}


def _project(tmp_path: Path, url: str) -> Path:
    return store_project(tmp_path, {
        "user": {"schema": {"required": ["userName"], "properties": {
            "userName": {"type": "string", "searchable": True},
            "mail": {"type": "string", "policies": [{"policyId": "valid-email-address-format"}]}}}},
        "staff": {"login": {"type": "string", "searchable": True}, "email": {"type": "string"}}}, [_MAPPING], url)


def _query(api: httpx.Client, topic: str, **params: str) -> dict[str, Any]:
    answer = api.get(f"/openidm/audit/{topic}?{urllib.parse.urlencode(params)}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.parametrize("backend", WITH_MARIADB)
def test_recon_and_sync_events_queried_as_pingidm_names_them(tmp_path: Path, backend: str) -> None:
    """A recon's events are in audit/recon (reconId, situation, action, status, resource
    paths as ids, the failure's exception), found by reconId, status, a path or a bare id,
    a timestamp, paged by cookie in time order or newest first; an implicit push is in
    audit/sync and not audit/recon; one event reads by its _id; a field events lack is a
    400, a topic idsync keeps no audit of a 404 saying so."""
    project = _project(tmp_path, store_url(backend, tmp_path))
    for login, email in (("ann", "ann@example.com"), ("bob", "not-an-email"), ("cy", "cy@example.com")):
        made = idsync(project, "managed", "create", "staff", "--no-sync", "--id", f"s-{login}", "--data",
                      json.dumps({"login": login, "email": email}))
        assert made.returncode == 0, made.stderr
    ran = idsync(project, "recon", "staff_user", "--json")
    run_id = json.loads(ran.stdout)["_id"]
    with serve(project) as api:
        everything = _query(api, "recon", _queryFilter=f'/reconId eq "{run_id}"')
        # PingIDM's start event, the three entries, its summary event, in that order.
        assert [e["entryType"] for e in everything["result"]] == ["start", "entry", "entry", "entry", "summary"]
        start, summary = everything["result"][0], everything["result"][-1]
        assert start["message"] == "Reconciliation initiated" and start["sourceObjectId"] is None
        assert (summary["status"], summary["reconAction"], summary["reconciling"]) == ("SUCCESS", "recon", None)
        assert summary["message"] == "ABSENT: 3" and summary["messageDetail"]["_id"] == run_id
        assert summary["messageDetail"]["situationSummary"]["ABSENT"] == 3
        assert summary["messageDetail"]["state"] == "SUCCESS"
        entries = _query(api, "recon", _queryFilter=f'reconId eq "{run_id}" and entryType eq "entry"')
        assert entries["resultCount"] == 3
        assert [e["_id"] for e in _query(api, "recon", _queryFilter='entryType eq "summary"')["result"]] == \
            [summary["_id"]]
        assert _query(api, "recon", _queryFilter='reconAction eq "reconById"')["resultCount"] == 0
        assert _query(api, "recon", _queryFilter='reconciling eq "source"')["resultCount"] == 3
        assert api.get(f"/openidm/audit/recon/{summary['_id']}", headers=ADMIN).json() == summary
        by_source = {e["sourceObjectId"]: e for e in entries["result"]}
        ann = by_source["managed/staff/s-ann"]
        assert ann["eventName"] == "recon" and ann["entryType"] == "entry" and ann["reconId"] == run_id
        assert ann["transactionId"] == run_id and ann["mapping"] == "staff_user"
        assert (ann["situation"], ann["action"], ann["status"]) == ("ABSENT", "CREATE", "SUCCESS")
        assert ann["targetObjectId"].startswith("managed/user/") and ann["timestamp"].endswith("Z")
        bob = by_source["managed/staff/s-bob"]
        assert bob["status"] == "FAILURE" and "mail" in bob["exception"] and bob["message"] == bob["exception"]

        failed = _query(api, "recon", _queryFilter=f'reconId eq "{run_id}" and status eq "FAILURE"')
        assert [e["sourceObjectId"] for e in failed["result"]] == ["managed/staff/s-bob"]
        for wanted in ("managed/staff/s-cy", "s-cy"):
            found = _query(api, "recon", _queryFilter=f'sourceObjectId eq "{wanted}"')["result"]
            assert [e["_id"] for e in found] == [by_source["managed/staff/s-cy"]["_id"]], wanted
        assert _query(api, "recon", _queryFilter='sourceObjectId sw "managed/staff/s-a"')["resultCount"] == 1
        assert _query(api, "recon", _queryFilter=f'timestamp ge "{start["timestamp"]}"')["resultCount"] == 5
        assert _query(api, "recon", _queryFilter='timestamp gt "2999-01-01T00:00:00Z"')["resultCount"] == 0
        # PingIDM's times, to the millisecond; an event is at the time it shows, not after it.
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ann["timestamp"]), ann["timestamp"]
        at = {e["_id"] for e in _query(api, "recon", _queryFilter=f'timestamp eq "{ann["timestamp"]}"')["result"]}
        assert ann["_id"] in at
        assert ann["_id"] in {e["_id"] for e in _query(
            api, "recon", _queryFilter=f'timestamp le "{ann["timestamp"]}"')["result"]}
        assert ann["_id"] not in {e["_id"] for e in _query(
            api, "recon", _queryFilter=f'timestamp gt "{ann["timestamp"]}"')["result"]}

        ids, cookie = [], None
        while True:
            page = _query(api, "recon", _queryId="query-all", _pageSize="2",
                          **({"_pagedResultsCookie": cookie} if cookie else {}))
            ids += [e["_id"] for e in page["result"]]
            cookie = page["pagedResultsCookie"]
            if cookie is None:
                break
        assert ids == sorted(ids, key=int) and len(ids) == 5
        newest = _query(api, "recon", _queryFilter="true", _sortKeys="-timestamp", _pageSize="2",
                        _totalPagedResultsPolicy="EXACT")
        assert [e["_id"] for e in newest["result"]] == ids[::-1][:2] and newest["totalPagedResults"] == 5
        one = api.get(f"/openidm/audit/recon/{ann['_id']}", headers=ADMIN).json()
        assert one == ann

        assert _query(api, "sync", _queryFilter="true")["resultCount"] == 0
        pushed = api.patch("/openidm/managed/staff/s-ann", headers={**ADMIN, "Content-Type": "application/json"},
                           json=[{"operation": "replace", "field": "/email", "value": "ann@example.org"}])
        assert pushed.status_code == 200, pushed.text
        (synced,) = _query(api, "sync", _queryFilter='sourceObjectId eq "managed/staff/s-ann"')["result"]
        assert synced["eventName"] == "sync" and synced["action"] == "UPDATE" and "reconId" not in synced
        assert _query(api, "recon", _queryFilter="true")["resultCount"] == 5
        assert api.get(f"/openidm/audit/recon/{synced['_id']}", headers=ADMIN).status_code == 404

        # reconById is a recon of one object: its events say so (reconAction), start and summary too.
        by_id = api.post("/openidm/recon?_action=reconById&mapping=staff_user&id=s-cy", headers=ADMIN)
        assert by_id.status_code == 200, by_id.text
        one_run = _query(api, "recon", _queryFilter='reconAction eq "reconById"')["result"]
        assert [(e["entryType"], e["sourceObjectId"]) for e in one_run] == [
            ("start", None), ("entry", "managed/staff/s-cy"), ("summary", None)]
        assert one_run[-1]["message"] == "CONFIRMED: 1" and one_run[-1]["messageDetail"]["job"] == "reconById"
        assert {e["reconAction"] for e in one_run} == {"reconById"}
        # GET recon lists reconciliations (reconById's too), not implicit sync's one-object runs.
        listed = api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"]
        # (Either order: MariaDB keeps a run's start to the second.)
        assert sorted(r.get("job") or "" for r in listed) == ["", "reconById"], listed

        bad = api.get("/openidm/audit/recon?_queryFilter=" + urllib.parse.quote('/userName eq "x"'), headers=ADMIN)
        assert bad.status_code == 400 and "no field /userName" in bad.json()["message"]
        unsorted = api.get("/openidm/audit/recon?_queryFilter=true&_sortKeys=mapping", headers=ADMIN)
        assert unsorted.status_code == 400
        activity = api.get("/openidm/audit/activity?_queryFilter=true", headers=ADMIN)
        assert activity.status_code == 404 and "keeps no activity audit" in activity.json()["message"]


@pytest.mark.parametrize("backend", [*BACKENDS, POSTGRESQL_EN])
def test_event_fields_compare_exactly_on_every_store(tmp_path: Path, backend: str) -> None:
    """A filter on an event's text fields (``situation``, ``status``, ``mapping``,
    ``message``) compares them exactly and in code point order on every store: MariaDB
    took ``"absent"`` for ``ABSENT`` and ``"success"`` for ``SUCCESS``, and a PostgreSQL
    database in English's order put lower case before upper case in a range."""
    project = _project(tmp_path, store_url(backend, tmp_path))
    made = idsync(project, "managed", "create", "staff", "--no-sync", "--id", "s-ann", "--data",
                  json.dumps({"login": "ann", "email": "ann@example.com"}))
    assert made.returncode == 0, made.stderr
    assert idsync(project, "recon", "staff_user").returncode == 0
    with serve(project) as api:
        def count(query: str) -> int:
            return len(_query(api, "recon", _queryFilter=query)["result"])

        assert count('situation eq "ABSENT"') == 1
        for query in ('situation eq "absent"', 'status eq "success"', 'mapping eq "STAFF_USER"',
                      'mapping sw "Staff"', 'action eq "create"', 'situation gt "a"'):
            assert count(query) == 0, query
        assert count('mapping eq "staff_user" and situation lt "a"') == 1
