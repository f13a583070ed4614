"""Changing managed objects: validation against managed.json, patches,
expected revisions, write-only hashed passwords (no LDAP push here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from idsync.config.project import load_project
from idsync.errors import RevisionMismatch
from idsync.managed import InvalidObject, InvalidPatch, ManagedObjects, apply_patch
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.tables import managed_objects
from idsync_dev.slapd import Slapd
from sqlalchemy import select

from samples import idsync, sample_project


@pytest.fixture
def users(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> ManagedObjects:
    project_dir = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    return ManagedObjects(project, store, Resources(project, store), "user", sync=False)


def _stored(users: ManagedObjects, object_id: str) -> dict[str, object]:
    store = users._resource.store
    with store.engine.connect() as conn:
        return dict(conn.execute(select(managed_objects.c.data).where(managed_objects.c.id == object_id)).scalar_one())


def test_create_validates_types_and_required(users: ManagedObjects) -> None:
    """A create missing a required property and with a wrongly typed one fails with
    both problems named, and stores nothing."""
    with pytest.raises(InvalidObject) as caught:
        users.create({"givenName": 3, "mail": "x@example.com"})
    assert caught.value.problems == ["userName is required", "givenName must be of type string, not number"]
    assert caught.value.exit_code == 65
    assert users._resource.count() == 0
    with pytest.raises(InvalidObject, match=r"ldapGroups\[1\] must be of type string, not number"):
        users.create({"userName": "ann", "ldapGroups": ["cn=a,dc=x", 7]})
    assert users._resource.count() == 0


def test_a_type_list_takes_a_value_of_any_of_its_types(tmp_path: Path) -> None:
    """A property typed ``["string", "number", "null"]`` (JSON schema's list, as PingIDM
    reads it) takes a string, a number and null, and refuses a boolean naming both types;
    an unknown type in the list is an error naming its position."""
    from store_projects import store_project

    project = store_project(tmp_path, {"user": {"badge": {"type": ["string", "number", "null"]}}}, [])
    for value in ("B-7", 7, 7.5, None):
        made = idsync(project, "managed", "create", "user", "--data", json.dumps({"badge": value}))
        assert made.returncode == 0, (value, made.stderr)
    refused = idsync(project, "managed", "create", "user", "--data", json.dumps({"badge": True}))
    assert refused.returncode == 65 and "badge must be of type string or number, not boolean" in refused.stderr
    managed = project / "conf" / "managed.json"
    managed.write_text(managed.read_text().replace('"number"', '"numbre"'))
    bad = idsync(project, "validate")
    assert bad.returncode == 78 and "schema.properties.badge.type[1]: unknown type 'numbre'" in bad.stdout, bad.stdout


def test_update_replaces_and_checks_revision(users: ManagedObjects) -> None:
    """update replaces the object (unrepeated properties go), moves _rev, and a stale
    expected revision is refused without changing anything."""
    created = users.create({"userName": "ada", "mail": "ada@example.com", "sn": "Lovelace"}).object
    assert created is not None
    with pytest.raises(RevisionMismatch):
        users.update(created["_id"], {"userName": "ada", "sn": "L"}, rev="00000000000000ff")
    updated = users.update(created["_id"], {"userName": "ada", "sn": "Byron"}, rev=created["_rev"]).object
    assert updated is not None
    assert updated["_rev"] > created["_rev"] and updated["sn"] == "Byron" and "mail" not in updated
    assert updated["accountStatus"] == "active"  # left out: back to its managed.json default, as at create


def test_patch_operations() -> None:
    """PingIDM's add, remove, replace and increment, on scalars, lists and nested fields."""
    obj = {"mail": "a@example.com", "roles": ["r1"], "count": 1, "address": {"city": "Oslo"}}
    patched = apply_patch(obj, [
        {"operation": "replace", "field": "/mail", "value": "b@example.com"},
        {"operation": "add", "field": "/roles", "value": ["r1", "r2"]},
        {"operation": "add", "field": "/roles/-", "value": "r3"},
        {"operation": "remove", "field": "/roles", "value": "r1"},
        {"operation": "increment", "field": "/count", "value": 2},
        {"operation": "replace", "field": "/address/city", "value": "Bergen"},
        {"operation": "remove", "field": "/nothing/here"},
    ])
    assert patched == {"mail": "b@example.com", "roles": ["r2", "r3"], "count": 3, "address": {"city": "Bergen"}}
    assert obj["roles"] == ["r1"]  # the input is left alone
    with pytest.raises(InvalidPatch):
        apply_patch(obj, [{"operation": "move", "field": "/mail"}])
    with pytest.raises(InvalidPatch):
        apply_patch(obj, [{"operation": "replace", "field": "/_id", "value": "x"}])


def test_patch_copy_move_and_transform(tmp_path: Path) -> None:
    """CREST's copy and move set ``field`` to the value at ``from`` (move removes it there;
    a ``from`` holding nothing changes nothing); transform sets ``field`` to what its
    script makes of the value, bound as ``content`` (PingIDM's) and ``value``. A transform
    without a script, one that does not compile or throws, and a move of ``_id`` are refused."""
    from idsync.managed.patch import ScriptTransformer
    from idsync.scripts import ScriptEngine

    transform = ScriptTransformer(ScriptEngine(), tmp_path)
    obj = {"sn": "Jensen", "mail": "b@example.com", "roles": ["r1", "r2"]}
    patched = apply_patch(obj, [
        {"operation": "copy", "from": "/sn", "field": "/description"},
        {"operation": "move", "from": "/mail", "field": "/contact/mail"},
        {"operation": "copy", "from": "/roles/1", "field": "/first"},
        {"operation": "move", "from": "/missing", "field": "/sn"},
        {"operation": "transform", "field": "/sn",
         "value": {"script": {"type": "text/javascript", "source": "content.toUpperCase()"}}},
        {"operation": "transform", "field": "/description",
         "value": {"script": {"type": "text/javascript", "source": "value + '!'"}}},
    ], transform)
    assert patched == {"sn": "JENSEN", "description": "Jensen!", "contact": {"mail": "b@example.com"},
                       "roles": ["r1", "r2"], "first": "r2"}
    assert obj["mail"] == "b@example.com"  # the input is left alone
    bad = [({"operation": "transform", "field": "/sn", "value": "x"}, "transform needs"),
           ({"operation": "transform", "field": "/sn",
             "value": {"script": {"type": "text/javascript", "source": "content.("}}}, "value.script"),
           ({"operation": "transform", "field": "/sn",
             "value": {"script": {"type": "text/javascript", "source": "throw new Error('no')"}}}, "failed"),
           ({"operation": "move", "from": "/_id", "field": "/sn"}, "_id cannot be patched"),
           ({"operation": "copy", "field": "/sn"}, "from must be a JSON pointer")]
    for op, words in bad:
        with pytest.raises(InvalidPatch, match=words):
            apply_patch({"_id": "x", "sn": "a"}, [op], transform)
    with pytest.raises(InvalidPatch, match="not available"):
        apply_patch(obj, [{"operation": "transform", "field": "/sn", "value": {"script": {"source": "1"}}}])


def test_patch_result_is_validated(users: ManagedObjects) -> None:
    """A patch that removes a required property is refused and changes nothing."""
    created = users.create({"userName": "bob"}).object
    assert created is not None
    with pytest.raises(InvalidObject, match="userName is required"):
        users.patch(created["_id"], [{"operation": "remove", "field": "/userName"}])
    assert users.get(created["_id"])["_rev"] == created["_rev"]


def test_password_is_hashed_and_write_only(users: ManagedObjects) -> None:
    """A password is stored as a {CRYPT} SHA-512 hash, never returned, and kept by an
    update that does not repeat it."""
    created = users.create({"userName": "carol", "password": "Tr0ub4dor&3"}).object
    assert created is not None and "password" not in created
    stored = _stored(users, created["_id"])
    assert str(stored["password"]).startswith("{CRYPT}$6$") and "Tr0ub4dor" not in str(stored)
    users.update(created["_id"], {"userName": "carol", "sn": "C"})
    assert _stored(users, created["_id"])["password"] == stored["password"]
    assert "password" not in users.get(created["_id"])
    # The same password again is the same secret: the hash, its salt and _rev stay.
    rev = users.get(created["_id"])["_rev"]
    users.patch(created["_id"], [{"operation": "replace", "field": "/password", "value": "Tr0ub4dor&3"}])
    assert _stored(users, created["_id"])["password"] == stored["password"]
    assert users.get(created["_id"])["_rev"] == rev


def test_merge_lists_policy() -> None:
    """"multiValued": "merge" keeps values idsync did not put there: a recon only adds;
    an implicit sync applies just the change (adds what it brought, removes what it
    took away, leaves the rest as the target has it); DN spellings are one value."""
    from idsync.config.properties import PropertyMap, PropertyRule

    rules = PropertyMap((PropertyRule(("g",), ("g",), merge=True), PropertyRule(("r",), ("r",))))
    current = {"g": ["cn=a,dc=x", "cn=other,dc=x"], "r": ["1", "2"]}
    assert rules.merge_lists({"g": ["CN=A, DC=X", "cn=b,dc=x"], "r": ["1"]}, current) == \
        {"g": ["cn=a,dc=x", "cn=other,dc=x", "cn=b,dc=x"], "r": ["1"]}
    assert rules.merge_lists({"g": []}, current, previous={"g": ["cn=a,dc=x"]}) == {"g": ["cn=other,dc=x"]}
    # Only the change is applied: a value the change did not touch stays as the target has it.
    assert rules.merge_lists({"g": ["cn=a,dc=x", "cn=gone,dc=x", "cn=new,dc=x"]}, current,
                             previous={"g": ["cn=a,dc=x", "cn=gone,dc=x"]}) == \
        {"g": ["cn=a,dc=x", "cn=other,dc=x", "cn=new,dc=x"]}


def test_dn_values_compare_as_dns() -> None:
    """Member values differing only in case or spacing are the same member: no LDAP
    operation for them, one add or delete for each real change."""
    from idsync.connectors.ldap.members import group_changes, norm_dn, value_changes

    assert norm_dn("UID=Ann , OU=People,DC=Example, DC=com") == "uid=ann,ou=people,dc=example,dc=com"
    current = [b"uid=ann,ou=People,dc=example,dc=com", b"uid=bob,ou=People,dc=example,dc=com"]
    assert value_changes("uniqueMember", current, ["UID=ANN, OU=People,dc=example,dc=com"]) == \
        [("MODIFY_DELETE", [b"uid=bob,ou=People,dc=example,dc=com"])]
    assert value_changes("uniqueMember", current, [c.decode().upper() for c in current]) == []
    assert value_changes("mail", [b"a@x"], ["A@x"]) == [("MODIFY_DELETE", [b"a@x"]), ("MODIFY_ADD", ["A@x"])]
    assert group_changes([b"cn=g1,dc=x"], ["CN=G1 ,DC=X", "cn=g2,dc=x"]) == (["cn=g2,dc=x"], [])


def test_cli_change_errors(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """`idsync managed` says what is wrong and exits by kind: bad data or JSON 65
    (nothing stored), unknown id 66, a stale --rev 75 (the object is left as it was)."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    bad = idsync(project, "managed", "create", "user", "--data", '{"givenName": 3}', "--no-sync")
    assert bad.returncode == 65 and "  userName is required\n  givenName must be of type string" in bad.stderr
    assert idsync(project, "managed", "create", "user", "--data", "{nope", "--no-sync").returncode == 65
    assert json.loads(idsync(project, "managed", "query", "user").stdout) == []
    created = json.loads(idsync(project, "managed", "create", "user", "--no-sync", "--data",
                                '{"userName": "ann", "sn": "A"}').stdout)
    missing = idsync(project, "managed", "delete", "user", "no-such-id", "--no-sync")
    assert missing.returncode == 66 and "not found" in missing.stderr
    ops = json.dumps([{"operation": "replace", "field": "/sn", "value": "B"}])
    assert idsync(project, "managed", "patch", "user", created["_id"], "--operations", ops, "--no-sync").returncode == 0
    for args in (("patch", "user", created["_id"], "--operations", ops), ("delete", "user", created["_id"])):
        stale = idsync(project, "managed", *args, "--rev", created["_rev"], "--no-sync")
        assert stale.returncode == 75 and "read the object again" in stale.stderr
    assert json.loads(idsync(project, "managed", "get", "user", created["_id"]).stdout)["sn"] == "B"
