"""A Salesforce User's ``ManagerId`` as the managed user's ``manager`` relationship,
through the users' links (``store/system_refs.py``), against the local stand-in: both
directions, reports met before their managers in the same recon, renames, managers no
mapping reads, and the stand-in's checks of the reference field."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_salesforce import FakeSalesforce
from idsync.config.project import Project, load_project
from idsync.errors import ObjectRejected
from idsync.managed.service import ManagedObjects
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.recon import run_recon
from salesforce_sample import FORWARD, REVERSE, running_org, sample_project, sf_env

_MANAGER = {"type": "relationship", "reverseRelationship": True, "reversePropertyName": "reports",
            "resourceCollection": [{"path": "managed/user"}]}
_REPORTS = {"type": "array", "items": {"type": "relationship", "reverseRelationship": True,
                                       "reversePropertyName": "manager",
                                       "resourceCollection": [{"path": "managed/user"}]}}


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    yield from running_org(tmp_path)


class _Bench:
    """The sample with ``ManagerId`` mapped to and from ``manager``, on a SQLite store."""

    def __init__(self, project: Project, org: FakeSalesforce) -> None:
        self.project, self.org = project, org
        self.store = Store.open(project.settings.store_url())

    def recon(self, mapping: str) -> dict[str, int]:
        result = run_recon(self.project, self.store, mapping)
        assert result.state == "SUCCESS", result.message
        assert result.summary["changes"]["failed"] == 0, result.summary
        return {k: v for k, v in result.summary["changes"].items() if v and k != "unchanged"}

    def users(self) -> dict[str, dict[str, Any]]:
        resource = Resources(self.project, self.store).open("managed/user")
        return {u["userName"].split("@")[0]: u for page in resource.pages(QuerySpec()) for u in page}

    def managers(self) -> dict[str, str | None]:
        """Each managed user's manager, by user name."""
        users = self.users()
        names = {f"managed/user/{u['_id']}": n for n, u in users.items()}
        return {n: names[u["manager"]["_ref"]] if u.get("manager") else None for n, u in users.items()}

    def sf_managers(self) -> dict[str, str | None]:
        """Each Salesforce user's ManagerId, as the user name of the User it names."""
        names = {i: str(u["Username"]).split("@")[0] for i, u in self.org.users.items()}
        return {names[i]: names.get(u.get("ManagerId") or "") for i, u in self.org.users.items()}

    def managed(self) -> ManagedObjects:
        return ManagedObjects(self.project, self.store, Resources(self.project, self.store), "user")


@pytest.fixture
def bench(tmp_path: Path, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Bench]:
    for key, value in sf_env(org).items():
        monkeypatch.setenv(key, value)
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    user = next(o for o in managed["objects"] if o["name"] == "user")
    user["schema"]["properties"].update(manager=_MANAGER, reports=_REPORTS)
    managed_file.write_text(json.dumps(managed))
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    for m in sync["mappings"]:
        forward = m["name"] == FORWARD
        m["defaultSourceFields" if forward else "defaultTargetFields"].append("ManagerId")
        m["properties"].append({"source": "ManagerId", "target": "manager"} if forward
                               else {"source": "manager", "target": "ManagerId"})
    sync_file.write_text(json.dumps(sync))
    bench = _Bench(load_project(project), org)
    yield bench
    bench.store.close()


def _user(name: str, **extra: Any) -> dict[str, Any]:
    return {"Username": f"{name}@example.com", "LastName": name.title(), "Email": f"{name}@example.com",
            "Alias": name[:8], **extra}


def test_managers_arrive_as_references_whatever_the_order(bench: _Bench) -> None:
    """Reports read before their managers (all unlinked in one page, a chain of two
    levels) get their managers by the end of the first recon; a second pass of both
    mappings writes nothing; a manager renamed in Salesforce is still the manager."""
    org = bench.org
    ann = org.add_user(**_user("ann"))  # reports to bob, who reports to cyd: both read after her
    bob = org.add_user(**_user("bob"))
    cyd = org.add_user(**_user("cyd"))
    org.add_user(**_user("dan", ManagerId=cyd))
    org.update_user(ann, ManagerId=bob)
    org.update_user(bob, ManagerId=cyd[:15])  # a 15-character id names the same User
    assert org.users[bob]["ManagerId"] == cyd

    changes = bench.recon(FORWARD)
    assert changes["created"] == 4 and changes["updated"] == 3, changes  # all in one page: none linked yet
    assert bench.managers() == {"ann": "bob", "bob": "cyd", "cyd": None, "dan": "cyd"}
    users = bench.users()
    assert sorted(r["_ref"] for r in users["cyd"]["reports"]) == sorted(
        f"managed/user/{users[n]['_id']}" for n in ("bob", "dan"))
    assert bench.recon(FORWARD) == {}
    assert bench.recon(REVERSE) == {}
    assert bench.sf_managers() == {"ann": "bob", "bob": "cyd", "cyd": None, "dan": "cyd"}

    org.update_user(bob, Username="robert@example.com")
    assert bench.recon(FORWARD) == {"updated": 1}
    assert bench.managers() == {"ann": "robert", "robert": "cyd", "cyd": None, "dan": "cyd"}
    assert bench.recon(REVERSE) == {}


def test_store_managers_become_salesforce_ids(bench: _Bench) -> None:
    """Managed users pushed to Salesforce before their managers exist there get the
    managers' Ids by the end of the recon; a manager changed or removed in the store
    is pushed as the new Id or null."""
    users = bench.managed()
    for name, object_id, manager in (("cyd", "u3", None), ("bob", "u2", "u3"), ("ann", "u1", "u2")):
        values: dict[str, Any] = {"userName": f"{name}@example.com", "sn": name.title(), "mail": f"{name}@example.com"}
        if manager:
            values["manager"] = {"_ref": f"managed/user/{manager}"}
        change = users.create(values, object_id=object_id)
        assert change.synced, [p.error for p in change.pushes]
    # Implicit sync is on: those creates were pushed one by one, in that order.
    assert bench.sf_managers() == {"cyd": None, "bob": "cyd", "ann": "bob"}


def test_store_recon_resolves_managers_created_later_in_the_run(bench: _Bench) -> None:
    """A store-to-Salesforce recon reading reports before their managers (the managed
    ids sort that way, nothing linked yet) creates every user, then sets each
    ManagerId once its manager exists; a second pass of both mappings writes nothing."""
    resource = Resources(bench.project, bench.store).open("managed/user")
    for name, manager in (("cyd", None), ("bob", "u3"), ("ann", "u2")):
        values: dict[str, Any] = {"_id": {"cyd": "u3", "bob": "u2", "ann": "u1"}[name],
                                  "userName": f"{name}@example.com", "sn": name.title(), "mail": f"{name}@example.com",
                                  "displayName": name.title(), "accountStatus": "active"}
        if manager:
            values["manager"] = {"_ref": f"managed/user/{manager}"}
        resource.create(values)
    changes = bench.recon(REVERSE)
    assert changes["created"] == 3 and changes["updated"] == 2, changes
    assert bench.sf_managers() == {"cyd": None, "bob": "cyd", "ann": "bob"}
    assert bench.recon(REVERSE) == {}
    assert bench.recon(FORWARD) == {}

    users = bench.managed()
    ann = bench.users()["ann"]
    change = users.patch(ann["_id"], [{"operation": "replace", "field": "/manager",
                                       "value": {"_ref": "managed/user/u3"}}])
    assert change.synced, [p.error for p in change.pushes]
    assert bench.sf_managers()["ann"] == "cyd"
    change = users.patch(ann["_id"], [{"operation": "remove", "field": "/manager"}])
    assert change.synced, [p.error for p in change.pushes]
    assert bench.sf_managers()["ann"] is None
    assert bench.org.users[next(i for i, u in bench.org.users.items() if u["Alias"] == "ann")]["ManagerId"] is None


def test_a_manager_no_mapping_reads_is_left_alone(bench: _Bench, tmp_path: Path) -> None:
    """A ManagerId naming a User the recon does not read (outside its sourceQuery) leaves
    the managed user without a manager and the run successful; pushing the user back
    keeps that ManagerId in Salesforce."""
    sync_file = tmp_path / "project" / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"][0]["sourceQuery"] = {"_queryFilter": '/Department eq "Sales"'}
    sync_file.write_text(json.dumps(sync))
    bench.project = load_project(tmp_path / "project")
    org = bench.org
    boss = org.add_user(**_user("boss", Department="Board"))
    ann = org.add_user(**_user("ann", Department="Sales", ManagerId=boss))
    assert bench.recon(FORWARD) == {"created": 1, "linked": 1}
    assert bench.managers() == {"ann": None}
    ann_id = bench.users()["ann"]["_id"]
    change = bench.managed().patch(ann_id, [{"operation": "replace", "field": "/description", "value": "Rep"}])
    assert change.synced, [p.error for p in change.pushes]
    assert org.users[ann] == {**org.users[ann], "Title": "Rep", "ManagerId": boss}
    assert bench.recon(REVERSE) == {}


def test_stand_in_checks_manager_ids(bench: _Bench) -> None:
    """The stand-in refuses a ManagerId as Salesforce refuses a bad reference (not an id,
    another sObject's id, no such User, the User itself), naming the field; through the
    connector the refusal fails that record alone, with the API's code."""
    org = bench.org
    ann = org.add_user(**_user("ann"))
    for value, code in (("not-an-id", "MALFORMED_ID"), ("001000000000001AAA", "FIELD_INTEGRITY_EXCEPTION"),
                        ("005000000009999AAA", "INVALID_CROSS_REFERENCE_KEY"), (ann, "FIELD_INTEGRITY_EXCEPTION")):
        result = org._save(ann, {"ManagerId": value})
        assert not result["success"] and result["errors"][0]["statusCode"] == code, result
        assert result["errors"][0]["fields"] == ["ManagerId"]
    system = Resources(bench.project, bench.store).system("salesforce")
    users = system.resource("User")
    with pytest.raises(ObjectRejected, match="FIELD_INTEGRITY_EXCEPTION: Manager ID: id value of incorrect type"):
        users.update(ann, {"ManagerId": "001000000000001AAA"})
    assert "ManagerId" not in org.users[ann]


def test_a_read_of_many_users_keeps_nothing_of_those_without_unlinked_managers(bench: _Bench) -> None:
    """A read of 20,000 Users through their ``ManagerId`` references keeps, for writing them
    back, only the values that named no linked User: none here, so the memory the resource
    holds once they are read does not grow with them (it kept an entry for every User read,
    over 5 MB for 20,000 and a quarter of a gigabyte for a million)."""
    for n in range(20_000):
        bench.org.add_user(**_user(f"u{n}"))
    resource = Resources(bench.project, bench.store).open("system/salesforce/User")
    spec = QuerySpec(fields=["Username", "ManagerId"])
    next(iter(resource.pages(spec)))  # the connection and its caches, made before counting
    tracemalloc.start()
    try:
        assert sum(len(page) for page in resource.pages(spec)) == 20_000
        # What idsync's own code holds (the stand-in keeps its query cursors).
        held = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/idsync/*")])
    finally:
        tracemalloc.stop()
    assert sum(stat.size for stat in held.statistics("filename")) < 1_000_000
