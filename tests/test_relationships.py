"""Relationship properties in the store: one reference seen from both ends, the other
end's cardinality kept (a user has one manager), references to missing objects
refused, deletes taking their references along, PATCH add/remove by reference, and
both ends consistent when many writers change them at once, on every store backend."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, store_url
from idsync.config.managed import parse_managed
from idsync.config.project import load_project
from idsync.config.properties import diff
from idsync.config.relationships import demoted
from idsync.errors import ConfigError, ObjectRejected
from idsync.managed import ManagedObjects, apply_patch
from idsync.resources import Resources
from idsync.store.database import Store

_ROLES = {"type": "array", "items": {"type": "relationship", "reverseRelationship": True, "validate": True,
                                     "reversePropertyName": "members",
                                     "resourceCollection": [{"path": "managed/role"}]}}
_MEMBERS = {"type": "array", "items": {"type": "relationship", "reverseRelationship": True, "validate": True,
                                       "reversePropertyName": "roles",
                                       "resourceCollection": [{"path": "managed/user"}]}}
MANAGED: dict[str, Any] = {"objects": [
    {"name": "user", "schema": {"properties": {
        "userName": {"type": "string", "searchable": True},
        "roles": _ROLES,
        "manager": {"type": "relationship", "reverseRelationship": True, "validate": True,
                    "reversePropertyName": "reports",
                    "resourceCollection": [{"path": "managed/user"}]},
        "reports": {"type": "array", "items": {"type": "relationship", "reverseRelationship": True, "validate": True,
                                               "reversePropertyName": "manager",
                                               "resourceCollection": [{"path": "managed/user"}]}},
        "favourite": {"type": "relationship", "resourceCollection": [{"path": "managed/role"}]},
        # One-way, into no named collection: it may hold a system's objects (historicalaccountlinking).
        "accounts": {"type": "array", "returnByDefault": True, "items": {"type": "relationship"}}}}},
    {"name": "role", "schema": {"properties": {"name": {"type": "string"}, "members": _MEMBERS}}},
]}


class Objects:
    def __init__(self, project_dir: Path) -> None:
        project = load_project(project_dir)
        self.store = Store.open(project.settings.store_url())
        self.resources = Resources(project, self.store)
        self.user = ManagedObjects(project, self.store, self.resources, "user", sync=False)
        self.role = ManagedObjects(project, self.store, self.resources, "role", sync=False)

    def close(self) -> None:
        self.resources.close()
        self.store.close()


def _project(tmp_path: Path, url: str) -> Path:
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps(MANAGED))
    (conf / "idsync.toml").write_text(f'state_dir = "state"\n[store]\nurl = "{url}"\n')
    return tmp_path / "project"


@pytest.fixture(params=BACKENDS)
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Objects]:
    made = Objects(_project(tmp_path, store_url(request.param, tmp_path)))
    yield made
    made.close()


def _ref(kind: str, obj: dict[str, Any] | None) -> dict[str, str]:
    assert obj is not None
    return {"_ref": f"managed/{kind}/{obj['_id']}"}


def _ids(value: Any) -> list[str]:
    return sorted(item["_refResourceId"] for item in value or [])


def test_one_reference_is_seen_from_both_ends(objects: Objects) -> None:
    """A role created with a member lists it, the user lists the role; changing the
    user's roles changes the role's members; each change moves both revisions."""
    ann = objects.user.create({"userName": "ann"}).object
    bob = objects.user.create({"userName": "bob"}).object
    assert ann and bob
    staff = objects.role.create({"name": "staff", "members": [_ref("user", ann)]}).object
    assert staff is not None and _ids(staff["members"]) == [ann["_id"]]
    seen = objects.user.get(ann["_id"])
    assert _ids(seen["roles"]) == [staff["_id"]] and seen["_rev"] > ann["_rev"]
    assert seen["roles"][0]["_refProperties"]["_id"] == staff["members"][0]["_refProperties"]["_id"]

    objects.user.patch(bob["_id"], [{"operation": "add", "field": "/roles/-", "value": _ref("role", staff)}])
    role = objects.role.get(staff["_id"])
    assert _ids(role["members"]) == sorted([ann["_id"], bob["_id"]]) and role["_rev"] > staff["_rev"]
    objects.role.patch(staff["_id"], [{"operation": "remove", "field": "/members", "value": _ref("user", ann)}])
    assert objects.user.get(ann["_id"])["roles"] == []
    assert _ids(objects.role.get(staff["_id"])["members"]) == [bob["_id"]]


def test_a_single_reverse_end_lets_go_of_its_old_reference(objects: Objects) -> None:
    """Adding a user to a second manager's reports moves its manager: the first
    manager's reports lose it (manager holds one reference); one-way references are
    seen from their own end only."""
    boss = objects.user.create({"userName": "boss"}).object
    other = objects.user.create({"userName": "other"}).object
    dev = objects.user.create({"userName": "dev", "manager": _ref("user", boss)}).object
    assert boss and other and dev
    assert _ids(objects.user.get(boss["_id"])["reports"]) == [dev["_id"]]
    objects.user.patch(other["_id"], [{"operation": "add", "field": "/reports/-", "value": _ref("user", dev)}])
    assert objects.user.get(dev["_id"])["manager"]["_refResourceId"] == other["_id"]
    assert objects.user.get(boss["_id"])["reports"] == []
    with pytest.raises(ObjectRejected, match="manager holds one reference, not a list"):
        objects.user.update(dev["_id"], {"userName": "dev", "manager": [_ref("user", boss)]})

    role = objects.role.create({"name": "r"}).object
    objects.user.patch(dev["_id"], [{"operation": "replace", "field": "/favourite", "value": _ref("role", role)}])
    assert objects.user.get(dev["_id"])["favourite"]["_refResourceId"] == role["_id"]  # type: ignore[index]
    assert objects.role.get(role["_id"])["members"] == []  # type: ignore[index]


def test_references_to_missing_or_foreign_objects_are_refused(objects: Objects) -> None:
    """With "validate": true a reference to an object that does not exist fails the
    change, as does one into a collection the property does not name, with the property
    named and nothing written; without it the reference is kept, as PingIDM keeps it."""
    ann = objects.user.create({"userName": "ann"}).object
    assert ann is not None
    with pytest.raises(ObjectRejected, match="managed/role/ghost"):
        objects.user.patch(ann["_id"], [{"operation": "add", "field": "/roles/-",
                                         "value": {"_ref": "managed/role/ghost"}}])
    with pytest.raises(ObjectRejected, match=r"roles\[0\]: expected a reference"):
        objects.user.patch(ann["_id"], [{"operation": "add", "field": "/roles/-", "value": _ref("user", ann)}])
    with pytest.raises(ObjectRejected, match="roles"):
        objects.user.patch(ann["_id"], [{"operation": "add", "field": "/roles/-", "value": "staff"}])
    assert objects.user.get(ann["_id"])["_rev"] == ann["_rev"]
    # Without "validate": true (favourite), PingIDM keeps a reference to an object not there yet.
    objects.user.patch(ann["_id"], [{"operation": "replace", "field": "/favourite",
                                     "value": {"_ref": "managed/role/later"}}])
    assert objects.user.get(ann["_id"])["favourite"]["_refResourceId"] == "later"


def test_a_reference_to_an_id_longer_than_the_store_holds_is_refused(objects: Objects) -> None:
    """A reference whose id is longer than the store's columns hold (64 characters for a
    managed object's, which no object can have; 255 for a system's, in a relationship that
    may point anywhere) fails the change with a message naming the limit, on every store
    (PostgreSQL and MariaDB answered with the driver's words); nothing is written."""
    ann = objects.user.create({"userName": "ann"}).object
    assert ann is not None
    for ref, limit in ((f"managed/role/{'r' * 65}", 64), (f"managed/role/{'r' * 300}", 64),
                       (f"system/ldap/account/{'a' * 256}", 255)):
        field = "/accounts/-" if ref.startswith("system/") else "/favourite"
        with pytest.raises(ObjectRejected, match=f"more than the {limit} a reference to"):
            objects.user.patch(ann["_id"], [{"operation": "add", "field": field, "value": {"_ref": ref}}])
    assert objects.user.get(ann["_id"])["_rev"] == ann["_rev"]
    kept = f"system/ldap/account/{'a' * 255}"
    objects.user.patch(ann["_id"], [{"operation": "add", "field": "/accounts/-", "value": {"_ref": kept}}])
    assert [r["_ref"] for r in objects.user.get(ann["_id"])["accounts"]] == [kept]


def test_deleting_an_object_removes_the_references_to_it(objects: Objects) -> None:
    """Deleting a user takes it out of its roles (whose revision moves) and out of its
    manager's reports; deleting a role takes it out of its members' roles."""
    boss = objects.user.create({"userName": "boss"}).object
    ann = objects.user.create({"userName": "ann", "manager": _ref("user", boss)}).object
    bob = objects.user.create({"userName": "bob"}).object
    assert boss and ann and bob
    staff = objects.role.create({"name": "staff", "members": [_ref("user", ann), _ref("user", bob)]}).object
    assert staff is not None
    objects.user.delete(ann["_id"])
    role = objects.role.get(staff["_id"])
    assert _ids(role["members"]) == [bob["_id"]] and role["_rev"] > staff["_rev"]
    assert objects.user.get(boss["_id"])["reports"] == []
    objects.role.delete(staff["_id"])
    assert objects.user.get(bob["_id"])["roles"] == []


def test_concurrent_changes_keep_both_ends_consistent(objects: Objects) -> None:
    """Eight writers add users to one role at once, half through the role's members and
    half through the users' roles, while another removes some: no addition is lost,
    and the role's members are exactly the users whose roles name it."""
    role = objects.role.create({"name": "crowd"}).object
    assert role is not None
    users = [objects.user.create({"userName": f"u{i}"}).object for i in range(16)]
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            for user in users[i * 2:(i + 1) * 2]:
                assert user is not None
                if i % 2:
                    objects.role.patch(role["_id"], [{"operation": "add", "field": "/members/-",
                                                      "value": _ref("user", user)}])
                else:
                    objects.user.patch(user["_id"], [{"operation": "add", "field": "/roles/-",
                                                      "value": _ref("role", role)}])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    members = _ids(objects.role.get(role["_id"])["members"])
    assert members == sorted(u["_id"] for u in users if u)
    holders = sorted(u["_id"] for u in users if u and _ids(objects.user.get(u["_id"])["roles"]) == [role["_id"]])
    assert holders == members


def test_patch_and_diff_treat_references_by_target() -> None:
    """A patch removes a stored reference named by its _ref alone and adds none twice; a
    projected reference equals the stored one (the store adds its own fields), in any order."""
    stored = [{"_ref": "managed/role/a", "_refResourceId": "a", "_refProperties": {"_id": "1", "_rev": "1"}},
              {"_ref": "managed/role/b", "_refResourceId": "b", "_refProperties": {"_id": "2", "_rev": "1"}}]
    patched = apply_patch({"roles": stored}, [
        {"operation": "remove", "field": "/roles", "value": {"_ref": "managed/role/a"}},
        {"operation": "add", "field": "/roles", "value": [{"_ref": "managed/role/b"}]}])
    assert [r["_ref"] for r in patched["roles"]] == ["managed/role/b"]
    assert diff({"roles": [{"_ref": "managed/role/b"}, {"_ref": "managed/role/a"}]}, {"roles": stored}) == {}
    assert diff({"roles": [{"_ref": "managed/role/b"}]}, {"roles": stored}) != {}


def test_relationship_declarations_are_checked() -> None:
    """A relationship whose collection is not a resource path is a configuration error
    naming the property; one whose reverse end does not point back, or into objects other
    than managed ones (internal/role), is kept as a plain value and named by validate."""
    bad = json.loads(json.dumps(MANAGED))
    bad["objects"][0]["schema"]["properties"]["manager"]["resourceCollection"] = [{"path": "role"}]
    with pytest.raises(ConfigError, match=r"manager\.resourceCollection\[0\]\.path"):
        parse_managed(bad)
    odd = json.loads(json.dumps(MANAGED))
    odd["objects"][1]["schema"]["properties"]["members"]["items"]["reversePropertyName"] = "reports"
    assert "members" not in parse_managed(odd).get("role").relationships  # kept plain, as validate says
    assert demoted(odd) == {("role", "members"), ("user", "roles")}  # and so is the end it left
    outside = json.loads(json.dumps(MANAGED))
    outside["objects"][0]["schema"]["properties"]["authzRoles"] = {
        "type": "array", "items": {"type": "relationship", "resourceCollection": [{"path": "internal/role"}]}}
    assert "authzRoles" not in parse_managed(outside).get("user").relationships
    assert ("user", "authzRoles") in demoted(outside)


def test_a_batch_may_reference_the_objects_it_creates(objects: Objects) -> None:
    """A page of creates (a recon's) whose objects reference one another by the _id they
    are created with is written whole: the references hold, from both ends."""
    from idsync.resource import WriteOp
    from idsync.store.objects import ManagedResource

    users = ManagedResource(objects.store, objects.user.schema)
    dev, boss = users.write_batch([
        WriteOp("create", values={"_id": "dev1", "userName": "dev", "manager": {"_ref": "managed/user/boss1"}}),
        WriteOp("create", values={"_id": "boss1", "userName": "boss"})])
    assert dev.ok and boss.ok, (dev.error, boss.error)
    assert users.get("dev1")["manager"]["_refResourceId"] == "boss1"  # type: ignore[index]
    assert _ids(users.get("boss1")["reports"]) == ["dev1"]  # type: ignore[index]
