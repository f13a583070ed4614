"""A collection's query parameters over the API (``api/query.py``), against a real store:
``_sortKeys`` and paging honoured by every collection that can be sorted (the mappings,
one object's references, the recon association summaries, the cluster's nodes), and
refused with a 400 naming them by a read that answers a list but is no query (``recon``,
``taskscanner``, ``system``): never given another answer than the one asked for without
a word."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from api_server import ADMIN, ADMIN_HASH
from file_projects import file_project
from idsync.api import Accounts, ApiContext, create_app
from idsync.config.project import load_project
from idsync.managed.router import scripting
from idsync.settings import ApiSettings
from idsync.store.database import Store
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon

# Three mappings over the store alone, written out of name order.
MAPPINGS = [{"name": name, "source": "managed/role", "target": "managed/user", "enableSync": False,
             "allowEmptySourceSet": True} for name in ("roles_b", "roles_a", "roles_c")]


def _serve(project_dir: Path, visit: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    app = create_app(ApiContext(project=lambda: project, store=store, settings=ApiSettings()),
                     Accounts({"openidm-admin": ADMIN_HASH}))

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                     headers=ADMIN) as api:
            await visit(api)

    try:
        asyncio.run(run())
    finally:
        store.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return file_project(tmp_path, MAPPINGS)


def _ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [entry["_id"] for entry in answer.json()["result"]]


def test_the_mappings_are_sorted_as_sort_keys_ask_and_paged_in_that_order(project: Path) -> None:
    """``sync/mappings`` answers in processing order without ``_sortKeys``, and in the order
    they ask with them (``-`` descends), paged by cookie and by offset in that order."""
    async def visit(api: httpx.AsyncClient) -> None:
        assert _ids(await api.get("/openidm/sync/mappings?_queryFilter=true")) == ["roles_b", "roles_a", "roles_c"]
        assert _ids(await api.get("/openidm/sync/mappings?_queryFilter=true&_sortKeys=_id")) == [
            "roles_a", "roles_b", "roles_c"]
        first = await api.get("/openidm/sync/mappings?_queryFilter=true&_sortKeys=-_id&_pageSize=2")
        assert _ids(first) == ["roles_c", "roles_b"] and first.json()["pagedResultsCookie"] == "roles_a"
        assert _ids(await api.get("/openidm/sync/mappings?_queryFilter=true&_sortKeys=-_id&_pageSize=2"
                                  "&_pagedResultsCookie=roles_a")) == ["roles_a"]
        assert _ids(await api.get("/openidm/sync/mappings?_queryFilter=true&_sortKeys=-_id&_pageSize=2"
                                  "&_pagedResultsOffset=1")) == ["roles_b", "roles_a"]
        bad = await api.get("/openidm/sync/mappings?_queryFilter=true&_sortKeys=/")
        assert bad.status_code == 400 and "_sortKeys" in bad.json()["message"]

    _serve(project, visit)


def test_one_objects_references_are_sorted_and_paged(project: Path) -> None:
    """``managed/role/ID/members`` sorts its references as ``_sortKeys`` asks and pages them
    (``_pageSize``, the cookie, ``_pagedResultsOffset``), counting them all under
    ``_totalPagedResultsPolicy=EXACT``."""
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    with scripting(loaded, store) as router:
        for name in ("u1", "u2", "u3"):
            router.managed_objects("managed/user").create({"userName": name}, object_id=name)
        router.managed_objects("managed/role").create(
            {"name": "staff", "members": [{"_ref": f"managed/user/{n}"} for n in ("u2", "u3", "u1")]},
            object_id="staff")
    store.close()
    base = "/openidm/managed/role/staff/members?_queryFilter=true&_sortKeys=-_refResourceId"

    async def visit(api: httpx.AsyncClient) -> None:
        def refs(answer: httpx.Response) -> list[str]:
            assert answer.status_code == 200, answer.text
            return [r["_refResourceId"] for r in answer.json()["result"]]

        assert refs(await api.get(base)) == ["u3", "u2", "u1"]
        first = await api.get(base + "&_pageSize=2&_totalPagedResultsPolicy=EXACT")
        assert refs(first) == ["u3", "u2"] and first.json()["totalPagedResults"] == 3
        cookie = first.json()["pagedResultsCookie"]
        assert cookie is not None and first.json()["remainingPagedResults"] == -1  # PingIDM's, always
        last = await api.get(base + f"&_pageSize=2&_pagedResultsCookie={cookie}")
        assert refs(last) == ["u1"] and last.json()["pagedResultsCookie"] is None
        assert refs(await api.get(base + "&_pageSize=1&_pagedResultsOffset=1")) == ["u2"]
        assert refs(await api.get("/openidm/managed/role/staff/members?_queryFilter=true&_sortKeys=_refResourceId"
                                  "&_fields=userName")) == ["u1", "u2", "u3"]

    _serve(project, visit)


def test_recon_association_summaries_page_on_by_their_cookie(project: Path) -> None:
    """The cookie of a page of ``recon/assoc`` starts the next page (it used to be taken for
    no cookie: the first page again, for ever, to a client paging on)."""
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    runs = [run_recon(loaded, store, m["name"], ReconOptions()).id for m in MAPPINGS]
    store.close()

    async def visit(api: httpx.AsyncClient) -> None:
        first = await api.get("/openidm/recon/assoc?_queryFilter=true&_pageSize=2&_sortKeys=mapping")
        cookie = first.json()["pagedResultsCookie"]
        assert [s["mapping"] for s in first.json()["result"]] == ["roles_a", "roles_b"] and cookie is not None
        rest = await api.get(f"/openidm/recon/assoc?_queryFilter=true&_pageSize=2&_sortKeys=mapping"
                             f"&_pagedResultsCookie={cookie}")
        assert [s["mapping"] for s in rest.json()["result"]] == ["roles_c"]
        assert rest.json()["pagedResultsCookie"] is None
        assert set(_ids(await api.get("/openidm/recon/assoc?_queryFilter=true"))) == set(runs)

    _serve(project, visit)


@pytest.mark.parametrize(("path", "parameter"), [
    ("/openidm/recon?_sortKeys=-started", "_sortKeys"),
    ("/openidm/recon?mapping=roles_a&_pageSize=2", "_pageSize"),
    ("/openidm/taskscanner?_pagedResultsOffset=1", "_pagedResultsOffset"),
    ("/openidm/system?_queryFilter=true", "_queryFilter"),
])
def test_a_read_answering_a_list_refuses_a_querys_parameters(project: Path, path: str, parameter: str) -> None:
    """``recon``, ``taskscanner`` and ``system`` answer their lists whole, as PingIDM reads
    them: a query's parameter sent to them is a 400 naming it, not an unsorted, unpaged
    answer taken for the one asked for; without one they answer as before."""
    async def visit(api: httpx.AsyncClient) -> None:
        refused = await api.get(path)
        assert refused.status_code == 400, refused.text
        assert parameter in refused.json()["message"]
        assert (await api.get(path.split("?", 1)[0])).status_code == 200

    _serve(project, visit)


def test_the_cluster_takes_a_querys_parameters(project: Path) -> None:
    """``cluster`` (no node outside cluster mode) answers a query's envelope and checks its
    parameters, as ``scheduler/job`` does (``test_pingidm_schedules``)."""
    async def visit(api: httpx.AsyncClient) -> None:
        answer = await api.get("/openidm/cluster?_queryFilter=true&_sortKeys=-instanceId&_pageSize=5")
        assert answer.status_code == 200 and answer.json()["result"] == []
        assert (await api.get("/openidm/cluster?_pageSize=many")).status_code == 400
        assert (await api.get("/openidm/cluster?_sortKeys=/")).status_code == 400

    _serve(project, visit)


def test_query_parameters_of_the_openapi_description(project: Path) -> None:
    """The description lists a query's parameters for each collection that takes them."""
    async def visit(api: httpx.AsyncClient) -> None:
        paths = (await api.get("/openidm/openapi.json")).json()["paths"]
        for path in ("/openidm/sync/mappings", "/openidm/scheduler/job", "/openidm/cluster",
                     "/openidm/managed/role/{id}/{property}"):
            names = {p["name"] for p in paths[path]["get"]["parameters"]}
            assert {"_sortKeys", "_pageSize", "_pagedResultsOffset", "_pagedResultsCookie"} <= names, path
        assert not {p["name"] for p in paths["/openidm/recon"]["get"]["parameters"]} & {"_sortKeys", "_pageSize"}

    _serve(project, visit)
    assert json.loads((project / "conf" / "sync.json").read_text())["mappings"] == MAPPINGS
