"""Paged queries of a system walked by cookie (``api/walks.py``), through the API against
a real slapd, the SCIM test provider, the Salesforce stand-in and a CSV file; and how
walks are held between pages."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
import structlog.testing
from api_server import ADMIN, add_users, free_port, serve
from cluster_env import api_node, api_up, fresh_store
from dbs import store_url
from file_projects import file_project
from idsync.api.errors import ApiError
from idsync.api.walks import Walk, Walks
from idsync.connectors.csv.connector import CsvResource
from idsync.connectors.ldap.connector import LdapResource
from idsync_dev.slapd import Slapd
from prometheus_client.parser import text_string_to_metric_families
from salesforce_sample import running_org, sf_env
from salesforce_sample import sample_project as salesforce_project
from scim_sample import sample_project as scim_project
from scim_sample import scim_env
from scim_server import running
from waiting import wait_for

from samples import sample_project

_BULK = 230
_ACCOUNTS = "/openidm/system/ldap/account"


@pytest.fixture
def project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    add_users(slapd, ldap_subtree, _BULK)
    return project


@pytest.fixture
def api(project: Path) -> Iterator[httpx.Client]:
    with serve(project) as client:
        yield client


def _pages(api: httpx.Client, url: str) -> Iterator[dict[str, Any]]:
    """Each page of a paged query, walked by its cookies."""
    cookie = None
    while True:
        answer = api.get(_continued(url, cookie), headers=ADMIN)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        yield page
        cookie = page["pagedResultsCookie"]
        if cookie is None:
            return


def _continued(url: str, cookie: str | None) -> str:
    """``url`` with ``cookie`` as its _pagedResultsCookie (none: as it is)."""
    return url + f"&_pagedResultsCookie={quote(cookie)}" if cookie else url


def _ids(objects: Sequence[dict[str, Any]]) -> list[str]:
    return [o["_id"] for o in objects]


def test_a_walk_by_cookie_answers_every_entry_once_in_the_directorys_order(api: httpx.Client) -> None:
    """Walked by cookie 40 at a time, query-all-ids and a filter answer every entry
    exactly once, in the order the directory answers an unpaged search, in PingIDM's
    envelope: a cookie on every page but the last, remainingPagedResults -1, no total."""
    for query in ("_queryId=query-all-ids", "_queryFilter=uid+sw+'bulk'"):
        whole = _ids(api.get(f"{_ACCOUNTS}?{query}", headers=ADMIN).json()["result"])
        pages = list(_pages(api, f"{_ACCOUNTS}?{query}&_pageSize=40"))
        walked = _ids([o for page in pages for o in page["result"]])
        assert walked == whole and len(set(walked)) == len(walked) >= _BULK, query
        assert [p["resultCount"] for p in pages[:-1]] == [40] * (len(pages) - 1), query
        assert all(p["pagedResultsCookie"] for p in pages[:-1]) and pages[-1]["pagedResultsCookie"] is None
        assert {(p["remainingPagedResults"], p["totalPagedResults"], p["totalPagedResultsPolicy"])
                for p in pages} == {(-1, -1, "NONE")}


def test_a_walks_pages_read_what_they_answer_not_what_came_before(api: httpx.Client,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page of a walk by cookie reads the entries it answers and the next page ahead
    (to know whether one follows), whatever its position: a walk of 230 entries 25 at a
    time reads 230 entries through the connector, not the 1,000 and more that re-reading
    from the start for each page costs."""
    read: list[int] = []  # entries the connector turned into objects, per request
    objects = LdapResource._objects

    def counting(self: LdapResource, entries: Sequence[Any], wanted: Any) -> list[dict[str, Any]]:
        read[-1] += len(entries)
        return objects(self, entries, wanted)

    monkeypatch.setattr(LdapResource, "_objects", counting)
    url = f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'&_fields=uid&_pageSize=25"
    walked: list[str] = []
    cookie = None
    while True:
        read.append(0)
        page = api.get(_continued(url, cookie), headers=ADMIN).json()
        walked += [o["uid"] for o in page["result"]]
        cookie = page["pagedResultsCookie"]
        if cookie is None:
            break
    assert sorted(walked) == sorted(f"bulk{i}" for i in range(_BULK))
    assert sum(read) == _BULK, read
    assert max(read) <= 2 * 25, read


def test_a_walks_connection_closes_with_its_last_page_or_the_server(project: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The LDAP connection a walk holds is closed once its last page is answered; a walk
    left unfinished holds its own until the server stops, which closes it: none is left open."""
    opened: list[LdapResource] = []
    closed: list[LdapResource] = []
    init, close = LdapResource.__init__, LdapResource.close

    def opening(self: LdapResource, *args: Any, **kwargs: Any) -> None:
        opened.append(self)
        init(self, *args, **kwargs)

    def closing(self: LdapResource) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(LdapResource, "__init__", opening)
    monkeypatch.setattr(LdapResource, "close", closing)
    url = f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'&_pageSize=100"
    with serve(project) as api:
        assert len(list(_pages(api, url))) == 3
        assert opened and set(opened) == set(closed)
        assert api.get(url, headers=ADMIN).json()["pagedResultsCookie"]
        assert set(opened) - set(closed)  # the unfinished walk's
    assert set(opened) == set(closed)


def test_an_offset_starts_a_walk_and_its_cookie_goes_on(api: httpx.Client) -> None:
    """_pagedResultsOffset answers the page at that offset, as before, and its cookie
    continues from there; a cookie of digits (the offset an earlier idsync answered) is
    still that offset."""
    url = f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'&_pageSize=30"
    whole = _ids(api.get(f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'", headers=ADMIN).json()["result"])
    at = api.get(url + "&_pagedResultsOffset=100", headers=ADMIN).json()
    assert _ids(at["result"]) == whole[100:130]
    rest = api.get(_continued(url, at["pagedResultsCookie"]), headers=ADMIN).json()
    assert _ids(rest["result"]) == whole[130:160]
    digits = api.get(url + "&_pagedResultsCookie=200", headers=ADMIN).json()
    assert _ids(digits["result"]) == whole[200:] and digits["pagedResultsCookie"] is None
    past = api.get(url + "&_pagedResultsOffset=5000", headers=ADMIN).json()
    assert past["result"] == [] and past["pagedResultsCookie"] is None


def test_a_cookie_that_continues_no_walk_is_a_400(api: httpx.Client, project: Path) -> None:
    """A forged cookie, a cookie used twice, one skipping pages, and one passed with another
    filter or _fields are each a 400 that says to start again, never a page from another
    position; the walk itself goes on with its right cookie."""
    url = f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'&_pageSize=50"
    first = api.get(url, headers=ADMIN).json()
    cookie = first["pagedResultsCookie"]
    second = api.get(_continued(url, cookie), headers=ADMIN)
    assert second.status_code == 200
    token, following = cookie.split(".")[0], second.json()["pagedResultsCookie"]
    refused = {
        "used twice": api.get(_continued(url, cookie), headers=ADMIN),
        "skipping ahead": api.get(_continued(url, f"{token}.5"), headers=ADMIN),
        "another filter": api.get(_continued(f"{_ACCOUNTS}?_queryFilter=uid+sw+'b'&_pageSize=50", following),
                                  headers=ADMIN),
        "other fields": api.get(_continued(url + "&_fields=uid", following), headers=ADMIN),
        "forged": api.get(url + "&_pagedResultsCookie=abc", headers=ADMIN),
        "forged token": api.get(url + "&_pagedResultsCookie=AAAAAAAAAAAAAAAAAAAAAA.1", headers=ADMIN),
    }
    for why, answer in refused.items():
        assert answer.status_code == 400, (why, answer.text)
        assert "start the query again" in answer.json()["message"], (why, answer.text)
    third = api.get(_continued(url, following), headers=ADMIN).json()
    assert _ids(third["result"]) == _ids(api.get(url + "&_pagedResultsOffset=100", headers=ADMIN).json()["result"])


def test_a_csv_file_is_walked_by_cookie_reading_each_row_once(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV system walked by cookie answers every row once, in the file's order, and
    reads each row once over the whole walk: the file's read is held between pages, as
    an LDAP search is."""
    project = file_project(tmp_path, [])
    (project / "data" / "hr.csv").write_text("uid,email\n" + "".join(f"u{i:03},u{i}@example.com\n"
                                                                    for i in range(120)))
    (project / "conf" / "provisioner.openicf-hr.json").write_text(json.dumps({
        "name": "hr", "connectorRef": {"bundleName": "org.openidentityplatform.openicf.connectors.csvfile-connector",
                                       "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "uid": {"type": "string"}, "email": {"type": "string"}}}},
        "configurationProperties": {"csvFile": "&{launcher.project.location}/data/hr.csv", "headerUid": "uid"}}))
    read: list[int] = []
    row = CsvResource._object

    def counting(self: CsvResource, *args: Any) -> dict[str, Any]:
        read.append(1)
        return row(self, *args)

    monkeypatch.setattr(CsvResource, "_object", counting)
    with serve(project) as api:
        pages = list(_pages(api, "/openidm/system/hr/account?_queryFilter=true&_pageSize=25"))
    assert _ids([o for page in pages for o in page["result"]]) == [f"u{i:03}" for i in range(120)]
    assert len(pages) == 5 and len(read) == 120


def test_a_scim_provider_is_walked_by_cookie_asking_each_page_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A SCIM system walked by cookie answers every user once, in the provider's order,
    and asks the provider for each page once, by its startIndex: never from index 1 again."""
    asked: list[int] = []  # the startIndex of each listing of users

    def listing(method: str, path: str, query: str) -> bool:
        if method == "GET" and path.endswith("/Users") and "startIndex=" in query:
            asked.append(int(parse_qs(query)["startIndex"][0]))
        return False

    for server in running():
        server.edit_matching.append((listing, lambda answer: answer))
        server.add_users(f"user{i:02}" for i in range(45))
        for key, value in scim_env(server).items():
            monkeypatch.setenv(key, value)
        project = scim_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
        url = "/openidm/system/scim/account?_queryFilter=true&_fields=userName"
        with serve(project) as api:
            whole = _ids(api.get(url, headers=ADMIN).json()["result"])
            asked.clear()
            pages = list(_pages(api, url + "&_pageSize=10"))
    assert _ids([o for page in pages for o in page["result"]]) == whole and len(whole) == 45
    assert asked == [1, 11, 21, 31, 41], asked


def test_a_salesforce_org_is_walked_by_cookie_following_its_next_records_urls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Salesforce system walked by cookie answers every user once, in the org's order, from
    one SOQL query whose batches it follows by their nextRecordsUrl: the query is not sent
    again for each page."""
    for org in running_org(tmp_path):
        for i in range(450):
            org.add_user(Username=f"user{i:03d}@example.com", LastName=f"Last{i}", Email=f"user{i:03d}@example.com",
                         Alias=f"user{i:03d}")
        for key, value in sf_env(org).items():
            monkeypatch.setenv(key, value)
        project = salesforce_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
        url = "/openidm/system/salesforce/User?_queryId=query-all-ids"
        with serve(project) as api:
            whole = _ids(api.get(url, headers=ADMIN).json()["result"])
            org.requests.clear()
            pages = list(_pages(api, url + "&_pageSize=200"))
        assert _ids([o for page in pages for o in page["result"]]) == whole and len(whole) >= 450
        assert len(pages) == 3 and org.count("GET", "/query") == 3, org.requests
        assert [p for _, p in org.requests if p.endswith("/query")] == [f"/services/data/{org.version}/query"]


def _walk(closed: list[str], name: str) -> Walk:
    return Walk(key="q", config={}, pages=iter([[{"_id": name}], [{"_id": f"{name}2"}]]),
                close=lambda: closed.append(name))


def test_walks_are_closed_when_idle_or_too_many() -> None:
    """The longest idle walk past the number held is closed (its connections with it) and
    its cookie refused; a walk left idle is closed by a timer, with no request to notice
    it; the server's stop closes the rest."""
    closed: list[str] = []
    walks = Walks(idle=3600, held=2)
    held = [_walk(closed, n) for n in ("a", "b", "c")]
    for walk in held:
        walk.take(1)
        walks.keep(walk)
    assert closed == ["a"] and len(walks) == 2
    with pytest.raises(ApiError, match="continues no paged query"):
        walks.resume(held[0].cookie, "q", {})
    assert walks.resume(held[1].cookie, "q", {}) is held[1]
    walks.close()
    assert closed == ["a", "c"]
    idle = Walks(idle=0.2, held=2)
    walk = _walk(closed, "d")
    walk.take(1)
    idle.keep(walk)
    wait_for(lambda: closed[-1] == "d", 60, "the idle walk closed")
    assert len(idle) == 0
    with pytest.raises(ApiError, match="idle more than"):
        idle.resume(walk.cookie, "q", {})


def test_a_walk_of_a_reconfigured_system_is_refused() -> None:
    """A cookie of a walk whose system's provisioner changed since (a reload) is a 400 and
    the walk is closed: its pages were read under the configuration before."""
    closed: list[str] = []
    walks = Walks(idle=3600, held=8)
    walk = _walk(closed, "a")
    walk.take(1)
    walks.keep(walk)
    with pytest.raises(ApiError, match="configuration changed since the query started"):
        walks.resume(walk.cookie, "q", {"displayName": "changed"})
    assert closed == ["a"] and len(walks) == 0


def _metric(api: httpx.Client, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` on the API's /metrics."""
    for family in text_string_to_metric_families(api.get("/metrics", headers=ADMIN).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} on /metrics")


def test_a_walk_past_system_queries_held_evicts_the_longest_idle_saying_so(project: Path) -> None:
    """With [api] system_queries_held = 2, a third walk closes the one idle longest: its
    next page is a 400 saying to start again, /metrics counts it evicted (and the others
    held, then ended with their last page) and a warning names its system, type and idle
    time, never the filter's values."""
    urls = [f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk{n}'&_pageSize=5" for n in (1, 2, 3)]
    with serve(project, system_queries_held=2) as api, structlog.testing.capture_logs() as logs:
        assert _metric(api, "idsync_api_system_queries_held") == 0
        cookies = [api.get(url, headers=ADMIN).json()["pagedResultsCookie"] for url in urls]
        assert all(cookies)
        refused = api.get(_continued(urls[0], cookies[0]), headers=ADMIN)
        assert refused.status_code == 400 and "start the query again" in refused.json()["message"], refused.text
        assert _metric(api, "idsync_api_system_queries_held") == 2
        assert _metric(api, "idsync_api_system_queries_closed_total", reason="evicted") == 1
        evicted = [e for e in logs if e["event"] == "api.system_query_evicted"]
        assert len(evicted) == 1 and evicted[0]["log_level"] == "warning", logs
        assert (evicted[0]["system"], evicted[0]["object_type"], evicted[0]["held"]) == ("ldap", "account", 2)
        assert evicted[0]["idle_seconds"] >= 0 and "bulk" not in repr(evicted[0])
        rest = list(_pages(api, _continued(urls[1], cookies[1])))
        assert rest[-1]["pagedResultsCookie"] is None
        assert _metric(api, "idsync_api_system_queries_held") == 1
        closed = {reason: _metric(api, "idsync_api_system_queries_closed_total", reason=reason)
                  for reason in ("ended", "evicted", "idle", "failed", "config_changed", "shutdown")}
        assert closed == {"ended": 1, "evicted": 1, "idle": 0, "failed": 0, "config_changed": 0, "shutdown": 0}


def test_a_walk_idle_past_system_query_idle_seconds_is_closed_and_counted(project: Path) -> None:
    """With [api] system_query_idle_seconds = 0.5, a walk left alone is closed by the server
    (counted idle on /metrics, logged at info with its system and type), and its cookie
    then gets a 400 that gives the setting's idle time."""
    url = f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'&_pageSize=50"
    with serve(project, system_query_idle_seconds=0.5) as api, structlog.testing.capture_logs() as logs:
        cookie = api.get(url, headers=ADMIN).json()["pagedResultsCookie"]
        wait_for(lambda: _metric(api, "idsync_api_system_queries_closed_total", reason="idle") == 1, 60,
                 "the idle walk closed")
        assert _metric(api, "idsync_api_system_queries_held") == 0
        refused = api.get(_continued(url, cookie), headers=ADMIN)
        assert refused.status_code == 400 and "idle more than 0.5 s" in refused.json()["message"], refused.text
    expired = [e for e in logs if e["event"] == "api.system_query_expired"]
    assert [(e["log_level"], e["system"], e["object_type"]) for e in expired] == [("info", "ldap", "account")]
    assert expired[0]["idle_seconds"] >= 0.5 and "bulk" not in repr(expired[0])


def test_a_cookie_sent_to_another_node_names_the_node_that_holds_it(project: Path) -> None:
    """Two cluster nodes' APIs on one store: a cookie node n1 answered, sent to n2, is a 400
    naming n1 and saying to send the next pages there (sticky sessions) or start again;
    n1 goes on with it. The node part only words that message: a cookie whose node part is
    forged to name n2 still continues n1's walk on n1, and n2 refuses a made-up node part
    with the plain message. Outside cluster mode a cookie names no node."""
    url = f"{_ACCOUNTS}?_queryFilter=uid+sw+'bulk'&_pageSize=50"
    with serve(project, node="n1") as n1, serve(project, node="n2") as n2:
        first = n1.get(url, headers=ADMIN).json()
        cookie = first["pagedResultsCookie"]
        token, number, node = cookie.split(".")
        assert "n1" not in cookie and node
        refused = n2.get(_continued(url, cookie), headers=ADMIN)
        assert refused.status_code == 400, refused.text
        message = refused.json()["message"]
        assert "held by node 'n1'" in message and "not by node 'n2'" in message and "sticky sessions" in message
        forged = f"{token}.{number}.{base64.urlsafe_b64encode(b'n2').decode().rstrip('=')}"
        second = n1.get(_continued(url, forged), headers=ADMIN)
        assert second.status_code == 200, second.text
        assert _ids(second.json()["result"]) == _ids(n1.get(url + "&_pagedResultsOffset=50",
                                                            headers=ADMIN).json()["result"])
        made_up = n2.get(_continued(url, f"{token}.{number}.%%%%"), headers=ADMIN)
        assert made_up.status_code == 400 and "held by node" not in made_up.json()["message"], made_up.text
        assert "continues no paged query held here" in made_up.json()["message"]
    with serve(project) as api:
        assert api.get(url, headers=ADMIN).json()["pagedResultsCookie"].count(".") == 1


@pytest.mark.postgresql
def test_a_cluster_nodes_cookie_sent_to_another_node_names_it(tmp_path: Path, slapd: Slapd,
                                                               ldap_subtree: str) -> None:
    """Two `idsync run` cluster nodes serving the API on one PostgreSQL store, as behind a
    load balancer: a cookie node n0 answered, sent to n1, is a 400 naming n0 and saying to
    send the next pages there; n0 answers the next page with it."""
    project = sample_project(tmp_path, slapd, ldap_subtree, fresh_store(store_url("postgresql", tmp_path)))
    add_users(slapd, ldap_subtree, 60)
    with (project / "conf" / "idsync.toml").open("a", encoding="utf-8") as toml:
        toml.write("[cluster]\nenabled = true\nheartbeat = 1\nstall_timeout = 3\n")
    ports = [free_port(), free_port()]
    nodes = [api_node(project, f"n{i}", port, IDSYNC_LOG__LEVEL="info") for i, port in enumerate(ports)]
    url = "/openidm/system/ldap/account?_queryFilter=uid+sw+'bulk'&_pageSize=20"
    try:
        wait_for(lambda: all(n.events("daemon.start") for n in nodes) and all(api_up(p) for p in ports), 60,
                 "two nodes serving the API")
        n0, n1 = (httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) for port in ports)
        with n0, n1:
            cookie = n0.get(url, headers=ADMIN).json()["pagedResultsCookie"]
            refused = n1.get(_continued(url, cookie), headers=ADMIN)
            following = n0.get(_continued(url, cookie), headers=ADMIN)
        codes = [n.stop() for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert refused.status_code == 400, refused.text
    assert "held by node 'n0', not by node 'n1'" in refused.json()["message"], refused.text
    assert "sticky sessions" in refused.json()["message"]
    assert following.status_code == 200 and len(following.json()["result"]) == 20, following.text
    assert codes == [0, 0]
