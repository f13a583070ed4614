"""Assignments applied and unassigned as PingIDM's ``lastSync`` says: through a mapping
from users to a store type (no peer to start), a value the target got elsewhere is never
removed by an assignment that was never applied; taking a role away, or deleting its
assignment, unassigns exactly what was applied, by implicit sync and at the next recon;
operations and ``onAssignment``/``onUnassignment`` given as JavaScript run with PingIDM's
variables; a role written by a recon into the store pushes the members it gained or lost."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED
from idsync.config.project import Project, load_project
from idsync.managed import ManagedObjects
from idsync.resource import Obj, QuerySpec, WriteOp
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.last_sync import LastSync, forget_objects
from idsync.store.objects import ManagedResource
from idsync.sync import role_fanout
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon

_MAPPING = "managedUser_managedAccount"
_JS = "text/javascript"
_ACCOUNT = {"name": "account", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True}, "groups": {"type": "array", "items": {"type": "string"}},
    "title": {"type": "string"}, "note": {"type": "string"}}}}
_FEED = {"name": "feed", "schema": {"properties": {
    "name": {"type": "string", "searchable": True}, "people": {"type": "array", "items": {"type": "object"}}}}}
_POLICIES = [{"situation": s, "action": a} for s, a in (
    ("ABSENT", "CREATE"), ("FOUND", "UPDATE"), ("CONFIRMED", "UPDATE"), ("MISSING", "CREATE"),
    ("SOURCE_MISSING", "DELETE"))]
_MAPPINGS = [
    {"name": _MAPPING, "source": "managed/user", "target": "managed/account",
     "correlationQuery": {"type": _JS, "source": "({_queryFilter: 'userName eq \"' + source.userName + '\"'})"},
     "properties": [{"source": "userName", "target": "userName"}], "policies": _POLICIES},
    {"name": "managedFeed_managedRole", "source": "managed/feed", "target": "managed/role", "enableSync": False,
     "allowEmptySourceSet": True,
     "correlationQuery": {"type": _JS, "source": "({_queryFilter: 'name eq \"' + source.name + '\"'})"},
     "properties": [{"source": "name", "target": "name"}, {"source": "people", "target": "members"}],
     "policies": _POLICIES},
]


class World:
    def __init__(self, project: Project, store: Store, resources: Resources) -> None:
        self.project, self.store = project, store
        self.objects = {t: ManagedObjects(project, store, resources, t)
                        for t in ("user", "role", "assignment", "account", "feed")}
        self.quiet = {t: ManagedObjects(project, store, resources, t, sync=False) for t in ("assignment", "account")}

    def account(self, user_name: str) -> dict[str, Any]:
        accounts = ManagedResource(self.store, self.project.managed.types["account"])
        found = [a for page in accounts.pages(QuerySpec()) for a in page if a.get("userName") == user_name]
        assert len(found) == 1, found
        return found[0]

    def recon(self, mapping: str = _MAPPING) -> dict[str, Any]:
        result = run_recon(self.project, self.store, mapping, ReconOptions())
        assert result.state == "SUCCESS", result.message
        return result.summary

    def role_with(self, name: str, *attributes: dict[str, Any], **assignment: Any) -> tuple[str, str]:
        made = self.objects["assignment"].create({"name": name, "mapping": _MAPPING, "attributes": list(attributes),
                                                  **assignment}).object
        assert made is not None
        role = self.objects["role"].create({"name": name, "assignments": [
            {"_ref": f"managed/assignment/{made['_id']}"}]}).object
        assert role is not None
        return role["_id"], made["_id"]

    def grant(self, user: str, role: str) -> None:
        self.objects["user"].patch(user, [{"operation": "add", "field": "/roles/-",
                                           "value": {"_ref": f"managed/role/{role}"}}])

    def revoke(self, user: str) -> None:
        self.objects["user"].patch(user, [{"operation": "replace", "field": "/roles", "value": []}])

    def recorded(self, user: str) -> list[str]:
        return [a["_id"] for a in LastSync(self.store, "user", _MAPPING).read([user]).get(user, [])]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    managed = copy.deepcopy(DEFAULT_MANAGED)
    managed["objects"] += [_ACCOUNT, _FEED]
    (conf / "managed.json").write_text(json.dumps(managed))
    (conf / "sync.json").write_text(json.dumps({"mappings": _MAPPINGS}))
    (conf / "idsync.toml").write_text(f'state_dir = "state"\n[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n'
                                      '[log]\nlevel = "warning"\n')
    project = load_project(tmp_path / "project")
    store = Store.open(project.settings.store_url())
    resources = Resources(project, store)
    yield World(project, store, resources)
    resources.close()
    store.close()


def _user(world: World, name: str) -> str:
    made = world.objects["user"].create({"userName": name, "givenName": name, "sn": name,
                                         "mail": f"{name}@example.com"}).object
    assert made is not None
    return str(made["_id"])


_STAFF = {"name": "groups", "value": ["staff"], "assignmentOperation": "mergeWithTarget",
          "unassignmentOperation": "removeFromTarget"}


def test_value_got_elsewhere_is_not_removed_by_an_assignment_never_applied(world: World) -> None:
    """An account given "staff" by hand keeps it through pushes and recons although an
    assignment of the mapping sets "staff" and its user never held it: PingIDM unassigns
    only what its ``lastSync`` recorded."""
    world.role_with("Staff", _STAFF)
    bob = _user(world, "bob")
    account = world.account("bob")
    world.quiet["account"].patch(account["_id"], [{"operation": "replace", "field": "/groups",
                                                   "value": ["staff", "own"]}])
    world.objects["user"].patch(bob, [{"operation": "replace", "field": "/givenName", "value": "Robert"}])
    world.recon()
    assert world.account("bob")["groups"] == ["staff", "own"]
    assert world.recorded(bob) == []


def test_removing_a_role_unassigns_exactly_what_was_applied(world: World) -> None:
    """Granting the role applies its assignment and records it; changing the assignment
    unassigns the old value and applies the new; revoking unassigns what was applied and
    no more (a value of the account's own stays), and the record empties."""
    role, assignment = world.role_with("Staff", _STAFF, {"name": "title", "value": "Staff member"})
    alice = _user(world, "alice")
    account = world.account("alice")
    world.quiet["account"].patch(account["_id"], [{"operation": "replace", "field": "/groups", "value": ["own"]}])
    world.grant(alice, role)
    assert world.account("alice")["groups"] == ["own", "staff"]
    assert world.account("alice")["title"] == "Staff member"
    assert world.recorded(alice) == [assignment]

    world.objects["assignment"].patch(assignment, [{"operation": "replace", "field": "/attributes/0/value",
                                                    "value": ["crew"]}])
    assert world.account("alice")["groups"] == ["own", "crew"]

    world.revoke(alice)
    final = world.account("alice")
    assert final["groups"] == ["own"] and final.get("title") is None
    assert world.recorded(alice) == []
    assert world.recon()["changes"].get("updated", 0) == 0


def test_deleted_assignment_leaves_the_targets_at_the_next_recon(world: World) -> None:
    """An assignment deleted with no push (``sync=False``) leaves the account at the next
    recon, which reads what was applied from the record."""
    role, assignment = world.role_with("Staff", _STAFF)
    carol = _user(world, "carol")
    world.grant(carol, role)
    assert world.account("carol")["groups"] == ["staff"]
    world.quiet["assignment"].delete(assignment)
    assert world.recon()["changes"].get("updated") == 1
    assert world.account("carol")["groups"] == []
    assert world.recorded(carol) == []


def test_operations_and_assignment_scripts_run_in_javascript(world: World) -> None:
    """An ``assignmentOperation`` given as a script answers the value with PingIDM's
    variables; ``onAssignment`` and ``onUnassignment`` change the target they are given;
    PingIDM's own ``roles/mergeWithTarget.js`` named as a file is that operation."""
    upper = {"type": _JS, "source": "var result = {value: attributeValue.toUpperCase() + '/' + linkQualifier"
                                    " + '/' + sourceObject.userName}; result;"}
    role, _ = world.role_with(
        "Scripted", {"name": "title", "value": "lead", "assignmentOperation": upper,
                     "unassignmentOperation": {"type": _JS, "source": "({value: 'was ' + attributeValue})"}},
        {"name": "groups", "value": ["ops"],
         "assignmentOperation": {"type": _JS, "file": "roles/mergeWithTarget.js"}},
        onAssignment={"type": _JS, "source": "targetObject.note = 'assigned ' + attributes.length; targetObject;"},
        onUnassignment={"type": _JS, "source": "targetObject.note = 'unassigned'; targetObject;"})
    dave = _user(world, "dave")
    world.grant(dave, role)
    account = world.account("dave")
    assert (account["title"], account["groups"], account["note"]) == ("LEAD/default/dave", ["ops"], "assigned 2")
    world.revoke(dave)
    account = world.account("dave")
    assert (account["title"], account["note"]) == ("was lead", "unassigned")


def test_role_written_by_a_recon_pushes_its_members(world: World) -> None:
    """A recon into the store that adds a member to a role pushes that user at once (the
    assignment reaches the account), and one that takes the member away, or deletes the
    role, unassigns it."""
    _, _ = world.role_with("Staff", _STAFF)
    erin = _user(world, "erin")
    feed = world.objects["feed"].create({"name": "Staff", "people": [{"_ref": f"managed/user/{erin}"}]}).object
    assert feed is not None
    world.recon("managedFeed_managedRole")
    assert world.account("erin")["groups"] == ["staff"]
    world.objects["feed"].patch(feed["_id"], [{"operation": "replace", "field": "/people", "value": []}])
    world.recon("managedFeed_managedRole")
    assert world.account("erin")["groups"] == []
    world.objects["feed"].patch(feed["_id"], [{"operation": "replace", "field": "/people",
                                                "value": [{"_ref": f"managed/user/{erin}"}]}])
    world.recon("managedFeed_managedRole")
    assert world.account("erin")["groups"] == ["staff"]
    world.objects["feed"].delete(feed["_id"])
    world.recon("managedFeed_managedRole")  # SOURCE_MISSING: the role is deleted
    assert world.account("erin")["groups"] == []


def test_a_changed_assignment_reads_its_role_members_a_page_at_a_time(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change of an assignment whose role has more members than a page pushes each of
    them, reading them a page at a time (500 users; 25 here, for 60 members, three pages):
    a role of a million members is never held in memory whole."""
    monkeypatch.setattr(role_fanout, "_PAGE", 25)
    users = ManagedResource(world.store, world.project.managed.types["user"])
    users.write_batch([WriteOp("create", values={"_id": f"u{i:04d}", "userName": f"user{i}", "givenName": "G",
                                                 "sn": "S", "mail": f"u{i}@example.com"}) for i in range(60)])
    role, assignment = world.role_with("Staff", _STAFF)
    ManagedResource(world.store, world.project.managed.types["role"]).write_batch([WriteOp(
        "update", id=role, values={"members": [{"_ref": f"managed/user/u{i:04d}"} for i in range(60)]})])
    read: list[int] = []
    real = ManagedResource.get_many

    def counted(self: ManagedResource, ids: Sequence[str], fields: Sequence[str] | None = None,
                **kwargs: Any) -> dict[str, Obj]:
        if self.schema.name == "user":
            read.append(len(ids))
        return real(self, ids, fields, **kwargs)

    monkeypatch.setattr(ManagedResource, "get_many", counted)
    change = world.objects["assignment"].patch(assignment, [{"operation": "replace", "field": "/description",
                                                             "value": "all staff"}])
    assert sorted(p.source_id for p in change.pushes) == [f"u{i:04d}" for i in range(60)]
    assert all(p.ok for p in change.pushes) and max(read) <= 25, read
    assert world.account("user59")["groups"] == ["staff"]


@pytest.mark.parametrize("kind", BACKENDS)
def test_last_sync_records_on_each_store(kind: str, tmp_path: Path) -> None:
    """The record of a page is written in one go, replaced when it changes, read per
    mapping and dropped with its object, on every backend."""
    store = Store.open(store_url(kind, tmp_path))
    try:
        records, other = LastSync(store, "user", _MAPPING), LastSync(store, "user", "other")
        assert not records.any()
        with store.begin() as conn:
            records.record(conn, {"u1": [{"_id": "a1", "attributes": [{"name": "x", "value": ["é"]}]}], "u2": []})
            other.record(conn, {"u1": [{"_id": "a9"}]})
        with store.begin() as conn:
            records.record(conn, {"u1": [{"_id": "a2"}]})
        assert records.any() and records.read(["u1", "u2", "u3"]) == {"u1": [{"_id": "a2"}], "u2": []}
        with store.begin() as conn:
            forget_objects(conn, "user", ["u1"])
        assert records.read(["u1"]) == {} and other.read(["u1"]) == {}
    finally:
        store.close()
