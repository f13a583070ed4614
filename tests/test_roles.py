"""Roles in the store on every backend: effective roles and assignments computed on
read, a conditional role granted and taken back as users and the role change, grant
and role windows (``temporalConstraints``) read against a moved clock, a grant's
window changed pushing both ends, unreadable conditions and windows refused."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbs import BACKENDS, store_url
from idsync.config import roles as roles_config
from idsync.config.managed import DEFAULT_MANAGED
from idsync.config.project import Project, load_project
from idsync.errors import ObjectRejected
from idsync.managed import ManagedObjects
from idsync.managed.references import References
from idsync.resource import QuerySpec, WriteOp
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.sync.implicit import IMPLICIT_JOB, ImplicitSync
from idsync.sync.role_fanout import RoleFanout, WrittenRoles

_NOW = dt.datetime(2026, 5, 5, 15, 30, tzinfo=dt.UTC)
_WINDOW = [{"duration": "2026-05-05T15:35:00.000Z/2026-05-05T15:40:00.000Z"}]
_ENDED = {"temporalConstraints": [{"duration": "2020-01-01T00:00:00.000Z/2020-02-01T00:00:00.000Z"}]}


@pytest.fixture(params=BACKENDS)
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Project, Store, Resources]]:
    with _opened(tmp_path, request.param) as opened:
        yield opened


# Accounts in the store that show their user's effective roles, kept by implicit sync.
_ACCOUNT = {"name": "account", "schema": {"properties": {"login": {"type": "string"}, "roleIds": {"type": "array"}}}}
_USER_ACCOUNT = {"name": "user_account", "source": "managed/user", "target": "managed/account",
                 "properties": [{"source": "userName", "target": "login"},
                                {"source": "effectiveRoles", "target": "roleIds"}],
                 "policies": [{"situation": "ABSENT", "action": "CREATE"},
                              {"situation": "CONFIRMED", "action": "UPDATE"}]}


@pytest.fixture(params=BACKENDS)
def synced(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Project, Store, Resources]]:
    with _opened(tmp_path, request.param, [_ACCOUNT], [_USER_ACCOUNT]) as opened:
        yield opened


@contextlib.contextmanager
def _opened(tmp_path: Path, backend: str, types: list[dict[str, object]] | None = None,
            mappings: list[dict[str, object]] | None = None) -> Iterator[tuple[Project, Store, Resources]]:
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    (conf / "managed.json").write_text(json.dumps({**DEFAULT_MANAGED,
                                                   "objects": [*DEFAULT_MANAGED["objects"], *(types or [])]}))
    (conf / "sync.json").write_text(json.dumps({"mappings": mappings or []}))
    (conf / "idsync.toml").write_text(f'state_dir = "state"\n[store]\nurl = "{store_url(backend, tmp_path)}"\n')
    project = load_project(tmp_path / "project")
    store = Store.open(project.settings.store_url())
    resources = Resources(project, store)
    try:
        yield project, store, resources
    finally:
        resources.close()
        store.close()


@pytest.fixture
def model(opened: tuple[Project, Store, Resources]) -> dict[str, ManagedObjects]:
    return {t: ManagedObjects(*opened, t, sync=False) for t in ("user", "role", "assignment")}


def _grant(role: str, **props: object) -> dict[str, object]:
    return {"_ref": f"managed/role/{role}", **({"_refProperties": props} if props else {})}


def test_effective_roles_follow_grants_conditions_and_windows(model: dict[str, ManagedObjects],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A granted role and its assignment are effective; a conditional role is granted to
    the users its condition matches and taken back when the user stops matching; a
    role's window and a grant's window decide when either is effective."""
    monkeypatch.setattr(roles_config, "now", lambda: _NOW)
    users, roles, assignments = model["user"], model["role"], model["assignment"]
    emp = assignments.create({"name": "Employee", "mapping": "m", "attributes": [
        {"name": "employeeType", "value": "Employee"}]}).object
    assert emp is not None
    employee = roles.create({"name": "Employee", "assignments": [{"_ref": f"managed/assignment/{emp['_id']}"}]})
    assert employee.object is not None
    eid = employee.object["_id"]
    cond = roles.create({"name": "Portland", "condition": '/description eq "Portland"'}).object
    assert cond is not None
    ann = users.create({"userName": "ann", "description": "Portland", "roles": [_grant(eid)]}).object
    assert ann is not None
    assert ann["effectiveRoles"] == [{"_ref": f"managed/role/{eid}"}, {"_ref": f"managed/role/{cond['_id']}"}]
    assert [a["_id"] for a in ann["effectiveAssignments"]] == [emp["_id"]]
    grants = {r["_refResourceId"]: r["_refProperties"].get("_grantType") for r in ann["roles"]}
    assert grants == {eid: None, cond["_id"]: "conditional"}

    moved = users.patch(ann["_id"], [{"operation": "replace", "field": "/description", "value": "Oslo"}]).object
    assert moved is not None and moved["effectiveRoles"] == [{"_ref": f"managed/role/{eid}"}]
    roles.patch(cond["_id"], [{"operation": "replace", "field": "/condition", "value": '/userName eq "ann"'}])
    assert len(users.get(ann["_id"])["effectiveRoles"]) == 2
    roles.patch(cond["_id"], [{"operation": "remove", "field": "/condition"}])
    assert users.get(ann["_id"])["effectiveRoles"] == [{"_ref": f"managed/role/{eid}"}]

    roles.patch(eid, [{"operation": "add", "field": "/temporalConstraints", "value": _WINDOW}])
    assert users.get(ann["_id"])["effectiveAssignments"] == []
    monkeypatch.setattr(roles_config, "now", lambda: _NOW + dt.timedelta(minutes=6))
    assert [a["name"] for a in users.get(ann["_id"])["effectiveAssignments"]] == ["Employee"]
    bob = users.create({"userName": "bob", "roles": [_grant(eid, temporalConstraints=[
        {"duration": "2026-05-05T15:00:00Z/PT10M"}])]}).object
    assert bob is not None and bob["effectiveRoles"] == []


def test_a_grant_window_changed_pushes_its_user(synced: tuple[Project, Store, Resources]) -> None:
    """A PUT of one grant's ``_refProperties`` from the role's ``members`` giving it a
    window already ended moves both ends' revisions, takes the role out of the user's
    effective roles and pushes the user at once: the account mapped from them loses it;
    the window taken away puts it back. A PUT of the same properties moves neither
    object's revision and pushes nothing.
    A recon writing the role's members with the grant's window changed pushes the user
    the same way (``WrittenRoles``)."""
    project, store, resources = synced
    users, roles = (ManagedObjects(project, store, resources, t) for t in ("user", "role"))
    role = roles.create({"name": "R"}).object
    assert role is not None
    rid, ref = role["_id"], f"managed/role/{role['_id']}"
    ann = users.create({"userName": "ann", "roles": [_grant(rid)]}).object
    assert ann is not None
    uid, row = ann["_id"], ann["roles"][0]["_refProperties"]["_id"]
    accounts = ManagedResource(store, project.managed.types["account"])

    def shown() -> list[object]:
        (account,) = accounts.find(QuerySpec())
        return list(account["roleIds"])

    def pushes() -> int:
        return len(RunStore(store).search(job=IMPLICIT_JOB, limit=1000))

    assert shown() == [{"_ref": ref}]
    members = References(project, store, roles, "members")
    def revs() -> tuple[str, str]:
        return users.get(uid)["_rev"], roles.get(rid)["_rev"]

    for props, effective in ((_ENDED, []), ({}, [{"_ref": ref}])):
        before, was = pushes(), revs()
        members.replace(rid, row, {"_refProperties": props})
        assert users.get(uid)["effectiveRoles"] == effective and shown() == effective
        assert pushes() == before + 1
        assert all(now != then for now, then in zip(revs(), was, strict=True))  # both ends changed

    before, was = pushes(), revs()
    members.replace(rid, row, {"_refProperties": {}})
    assert pushes() == before and revs() == was

    stored = ManagedResource(store, roles.schema, with_secrets=True)
    written = WrittenRoles(RoleFanout(project, store, roles.schema, ImplicitSync(project, store, resources)), stored)
    op = WriteOp("update", id=rid, values={"name": "R", "members": [
        {"_ref": f"managed/user/{uid}", "_refProperties": _ENDED}]})
    written.before([op])
    assert [p.source_id for p in written.after(stored.write_batch([op]))] == [uid]
    assert shown() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grant_window_changed_from_the_user_pushes_the_role(tmp_path: Path, backend: str) -> None:
    """A role read by a mapping (to groups holding its members' grants) is pushed when a
    PUT of the user's grant changes only its ``_refProperties``, as when the grant is
    added or removed: the group shows the new window at once; the same PUT again pushes
    nothing."""
    group = {"name": "group", "schema": {"properties": {"label": {"type": "string"},
                                                          "grants": {"type": "array"}}}}
    role_group = {"name": "role_group", "source": "managed/role", "target": "managed/group",
                  "properties": [{"source": "name", "target": "label"}, {"source": "members", "target": "grants"}],
                  "policies": [{"situation": "ABSENT", "action": "CREATE"},
                               {"situation": "CONFIRMED", "action": "UPDATE"}]}
    with _opened(tmp_path, backend, [group], [role_group]) as (project, store, resources):
        users, roles = (ManagedObjects(project, store, resources, t) for t in ("user", "role"))
        role = roles.create({"name": "R"}).object
        ann = users.create({"userName": "ann"}).object
        assert role is not None and ann is not None
        rid, uid = role["_id"], ann["_id"]
        grants = References(project, store, users, "roles")
        row = grants.create(uid, {"_ref": f"managed/role/{rid}"})["_id"]
        groups = ManagedResource(store, project.managed.types["group"])

        def windows() -> list[object]:
            (found,) = groups.find(QuerySpec())
            return [g["_refProperties"].get("temporalConstraints") for g in found["grants"]]

        assert windows() == [None]
        grants.replace(uid, row, {"_refProperties": _ENDED})
        assert windows() == [_ENDED["temporalConstraints"]]
        before = len(RunStore(store).search(job=IMPLICIT_JOB, limit=1000))
        grants.replace(uid, row, {"_refProperties": _ENDED})
        assert len(RunStore(store).search(job=IMPLICIT_JOB, limit=1000)) == before


def test_unreadable_conditions_and_windows_are_refused(model: dict[str, ManagedObjects]) -> None:
    """A role whose condition is not a _queryFilter, or whose window is not an ISO 8601
    interval, is refused with the property named."""
    with pytest.raises(ObjectRejected, match="condition"):
        model["role"].create({"name": "x", "condition": "/description eq"})
    with pytest.raises(ObjectRejected, match="temporalConstraints"):
        model["role"].create({"name": "y", "temporalConstraints": [{"duration": "tomorrow"}]})


def test_a_batch_fails_only_the_users_naming_a_role_twice(model: dict[str, ManagedObjects],
                                                          opened: tuple[Project, Store, Resources]) -> None:
    """A batch of writes, as a recon into the store makes them, fails the user naming one
    role twice with different ``_refProperties``, naming both places; the user naming it
    twice alike gets one grant, and the others of the batch are written."""
    rid, ref = _role(model)
    window = [{"duration": "2026-01-01T00:00:00Z/PT1H"}]
    users = ManagedResource(opened[1], model["user"].schema)
    twice, alike, plain = users.write_batch([
        WriteOp("create", values={"userName": "twice",
                                  "roles": [_grant(rid), _grant(rid, temporalConstraints=window)]}),
        WriteOp("create", values={"userName": "alike", "roles": [_grant(rid), {"_ref": ref, "_refProperties": {}}]}),
        WriteOp("create", values={"userName": "plain"})])
    assert isinstance(twice.error, ObjectRejected), twice
    assert f"{ref} is named twice (roles[0] and roles[1])" in str(twice.error)
    assert alike.ok and plain.ok and alike.obj is not None
    assert [r["_ref"] for r in alike.obj["roles"]] == [ref]
    assert sorted(u["userName"] for u in users.find(QuerySpec())) == ["alike", "plain"]


def test_a_batch_fails_only_the_users_whose_grant_windows_cannot_be_read(
        model: dict[str, ManagedObjects], opened: tuple[Project, Store, Resources]) -> None:
    """A batch of writes, as a recon into the store makes them, fails the users whose
    grant's window cannot be read or ends before it starts, naming the grant; the others
    of the batch are written."""
    rid, ref = _role(model)
    reversed_window = [{"duration": "2026-01-02T00:00:00Z/2026-01-01T00:00:00Z"}]
    users = ManagedResource(opened[1], model["user"].schema)
    bad, back, plain = users.write_batch([
        WriteOp("create", values={"userName": "bad", "roles": [_grant(rid, temporalConstraints=[{"duration": "x"}])]}),
        WriteOp("create", values={"userName": "back", "roles": [_grant(rid, temporalConstraints=reversed_window)]}),
        WriteOp("create", values={"userName": "plain"})])
    assert isinstance(bad.error, ObjectRejected) and f"roles: the grant of {ref}" in str(bad.error)
    assert isinstance(back.error, ObjectRejected) and "before it starts" in str(back.error)
    assert plain.ok
    assert [u["userName"] for u in users.find(QuerySpec())] == ["plain"]


def _role(model: dict[str, ManagedObjects]) -> tuple[str, str]:
    role = model["role"].create({"name": "R"}).object
    assert role is not None
    return role["_id"], f"managed/role/{role['_id']}"


def test_windows_that_end_before_they_start_are_refused() -> None:
    """A window ending before (or when) it starts is refused, saying so, in every form."""
    for text in ("2026-01-02T00:00:00Z/2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z/P0D"):
        with pytest.raises(ValueError, match=r"temporalConstraints\[0\]\.duration: .*(before|when) it starts"):
            roles_config.windows([{"duration": text}])
    assert roles_config.windows([{"duration": "P1D/2026-01-02T00:00:00Z"}])[0].start == dt.datetime(
        2026, 1, 1, tzinfo=dt.UTC)
