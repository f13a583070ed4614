"""What a recon writes is checked, counted and linked as it really happened: writes
into the store obey ``managed.json``, a target created without a readable id is a
failure, targets linked to sources outside ``sourceQuery`` are compared with what
they hold, and several source values never silently become one. Real slapd, real
stores (SQLite, PostgreSQL, MariaDB when running)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, store_url
from idsync.config.properties import compile_properties
from idsync.managed import ManagedObjects
from idsync.resource import QuerySpec, WriteOp
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync_dev.slapd import Slapd
from recon_env import Env

REVERSE = "managedUser_systemLdapAccounts"


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def _add_cn_entry(env: Env, cn: str, **attrs: str) -> None:
    """An inetOrgPerson named by ``cn``, so that ``uid`` is optional and can be removed."""
    lines = [f"dn: cn={cn},{env.subtree}", "objectClass: inetOrgPerson", f"cn: {cn}", "sn: Test"]
    lines += [f"{k}: {v}" for k, v in attrs.items()]
    env.slapd.add_ldif("\n".join(lines) + "\n\n")


def _failures(result: ReconResult) -> list[dict[str, Any]]:
    return list(result.summary["errors"])


def _audit_failures(env: Env, result: ReconResult) -> list[dict[str, Any]]:
    return RunStore(env.store).audit_entries(result.id, status="FAILURE")


# -- managed.json holds for recon writes ----------------------------------------


def test_recon_create_without_a_required_property_fails_that_object_only(env: Env) -> None:
    """An LDAP entry without ``uid`` would create a user without ``userName`` (required
    in managed.json): that object fails with the reason, in the run's errors and its
    audit, nothing is created for it, and the run and the other entries go on."""
    env.add("ok1")
    _add_cn_entry(env, "Nouid Test")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert set(env.users()) == {"ok1"}
    assert result.summary["changes"]["created"] == 1 and result.summary["changes"]["failed"] == 1
    assert result.summary["statusSummary"]["FAILURE"] == 1
    (error,) = _failures(result)
    assert "userName is required" in error["message"] and error["source_id"]
    (row,) = _audit_failures(env, result)
    assert row["action"] == "CREATE" and "userName is required" in row["message"]
    assert row["source_id"] == error["source_id"] and row["target_id"] is None
    assert LinkSet(env.store, env.project.mapping("systemLdapAccounts_managedUser").linkset) \
        .targets_of([error["source_id"]]) == {}


def test_recon_create_without_a_required_property_fails_in_a_dry_run_too(env: Env) -> None:
    """A dry run reports the same failure the real run would have (the store's
    dry-run answer checks managed.json as its real write does)."""
    _add_cn_entry(env, "Nouid Test")
    env.add("ok1")
    result = env.recon(dry_run=True)
    assert result.summary["changes"]["failed"] == 1 and result.summary["changes"]["created"] == 1
    assert "userName is required" in _failures(result)[0]["message"]
    assert env.users() == {}


def test_recon_update_that_removes_a_required_property_fails_that_object(env: Env) -> None:
    """A linked entry that loses its ``uid`` would update its user to no ``userName``:
    the update is refused for that object (a dry run says so too), the user keeps
    its values and ``_rev``, and another user's update in the same page is written."""
    _add_cn_entry(env, "Gone Uid", uid="goneuid", mail="a@example.com")
    _add_cn_entry(env, "Kept Uid", uid="keptuid", mail="b@example.com")
    assert env.recon().summary["changes"]["created"] == 2
    before = env.users()
    env.slapd.add_ldif(f"dn: cn=Gone Uid,{env.subtree}\nchangetype: modify\ndelete: uid\n-\n"
                       "replace: mail\nmail: new@example.com\n\n")
    env.slapd.add_ldif(f"dn: cn=Kept Uid,{env.subtree}\nchangetype: modify\nreplace: mail\nmail: c@example.com\n\n")
    dry = env.recon(dry_run=True)
    assert dry.summary["changes"]["updated"] == 1 and dry.summary["changes"]["failed"] == 1
    assert "userName is required" in _failures(dry)[0]["message"] and env.users() == before
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["updated"] == 1 and result.summary["changes"]["failed"] == 1
    after = env.users()
    assert after["goneuid"] == before["goneuid"]
    assert after["keptuid"]["mail"] == "c@example.com"
    (row,) = _audit_failures(env, result)
    assert row["action"] == "UPDATE" and "userName is required" in row["message"]
    assert row["target_id"] == before["goneuid"]["_id"]


def test_store_refuses_a_direct_write_that_breaks_managed_json(env: Env) -> None:
    """The store itself refuses, per object, a create or update that breaks managed.json:
    a bad object in a batch fails alone and the good one is written."""
    users = Resources(env.project, env.store).open("managed/user")
    good, bad = users.write_batch([WriteOp("create", values={"userName": "fine"}),
                                   WriteOp("create", values={"mail": "x@example.com"})])
    assert good.ok and not bad.ok and "userName is required" in str(bad.error)
    (result,) = users.write_batch([WriteOp("update", id=good.id, values={"givenName": 3})])
    assert "givenName must be of type string, not number" in str(result.error)
    stored = users.get(good.id or "") or {}
    computed = ("effectiveRoles", "effectiveAssignments")  # filled in on read, not written
    assert {k: v for k, v in stored.items() if k not in computed} == {**(good.obj or {})}


# -- a target created without an id is not done ---------------------------------


def _ids_unreadable(env: Env) -> None:
    """Store-to-LDAP into the test subtree, with an id attribute new entries do not have."""
    def reverse(sync: dict[str, Any]) -> None:
        mapping = next(m for m in sync["mappings"] if m["name"] == REVERSE)
        mapping["onCreate"] = {"type": "text/javascript",
                               "source": f"target.dn = 'uid=' + source.userName + ',{env.subtree}';"}
    env.change_conf("sync.json", reverse)
    env.change_conf("provisioner.openicf-ldap.json",
                    lambda p: p["configurationProperties"].update(uidAttribute="employeeNumber"))


def test_created_target_whose_id_cannot_be_read_back_is_a_failure_not_a_create(env: Env) -> None:
    """An LDAP entry created for a user but whose id cannot be read back cannot be
    linked: the object fails with that reason (not SUCCESS/created), nothing is
    linked, and the next runs fail it again (the entry, found by correlation, has no
    id to link or update) instead of counting it done."""
    _ids_unreadable(env)
    user = env.create_user(userName="noid1", sn="Noid", givenName="No")
    result = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert result.state == "FAILED"  # its only object failed
    changes = result.summary["changes"]
    assert changes["created"] == 0 and changes["linked"] == 0 and changes["failed"] == 1
    assert result.summary["statusSummary"] == {**result.summary["statusSummary"], "SUCCESS": 0, "FAILURE": 1}
    (error,) = _failures(result)
    assert "id could not be read back" in error["message"] and f"uid=noid1,{env.subtree}" in error["message"]
    assert error["source_id"] == user["_id"]
    (row,) = _audit_failures(env, result)
    assert row["action"] == "CREATE" and "not linked" in row["message"]
    links = LinkSet(env.store, env.project.mapping(REVERSE).linkset, reversed=True)
    assert links.targets_of([user["_id"]]) == {}
    again = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert again.summary["changes"]["failed"] == 1 and again.summary["statusSummary"]["SUCCESS"] == 0
    assert again.summary["changes"]["created"] == again.summary["changes"]["linked"] == 0
    assert "has no id" in _failures(again)[0]["message"]
    env.change_conf("sync.json", lambda sync: next(m for m in sync["mappings"] if m["name"] == REVERSE).update(
        policies=[{"situation": "FOUND", "action": "UPDATE"}, {"situation": "ABSENT", "action": "CREATE"}]))
    updating = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert updating.summary["changes"]["failed"] == 1 and updating.summary["statusSummary"]["SUCCESS"] == 0
    assert updating.summary["changes"]["updated"] == updating.summary["changes"]["linked"] == 0
    assert "neither updated nor linked" in _failures(updating)[0]["message"]


def test_implicit_push_that_creates_a_target_without_a_readable_id_fails(env: Env) -> None:
    """The same rule for implicit sync: a managed create pushed to LDAP whose new
    entry's id cannot be read back is a failed push, not a pushed one."""
    _ids_unreadable(env)
    change = ManagedObjects(env.project, env.store, Resources(env.project, env.store), "user").create(
        {"userName": "noid2", "sn": "Noid", "givenName": "No"})
    (push,) = change.pushes
    assert not push.ok and push.message and "id could not be read back" in push.message


# -- targets linked to sources outside sourceQuery --------------------------------


def test_linked_targets_outside_source_query_get_their_real_situation_and_writes(env: Env) -> None:
    """With a sourceQuery narrower than the linked set, the target phase reads each
    linked source by id, as PingIDM does: a source that still qualifies is CONFIRMED
    and its target really updated (removals included), one that no longer qualifies
    is UNQUALIFIED, one that is gone SOURCE_MISSING; ``updated`` counts real writes
    only, so a second run updates nothing and moves no ``_rev``."""
    env.add("staff1", employeeType="staff")
    env.add("guest1", employeeType="guest", description="Old description")
    env.add("guest2", employeeType="guest")
    env.add("guest3", employeeType="guest")
    assert env.recon().summary["changes"]["created"] == 4
    env.reconfigure(sourceQuery="(employeeType=staff)", sourceCondition='/object/sn eq "Test"',
                    policies=[{"situation": "CONFIRMED", "action": "UPDATE"}])
    env.slapd.add_ldif(f"dn: uid=guest1,{env.subtree}\nchangetype: modify\nreplace: mail\nmail: new@example.com\n"
                       "-\ndelete: description\n\n")
    env.modify("guest2", "sn", "Other")
    env.remove("guest3")
    before = env.users()
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    situations = {k: v for k, v in result.summary["situationSummary"].items() if v}
    assert situations == {"CONFIRMED": 2, "UNQUALIFIED": 1, "SOURCE_MISSING": 1}
    changes = result.summary["changes"]
    assert changes["updated"] == 1 and changes["unchanged"] == 1
    after = env.users()
    assert after["guest1"]["mail"] == "new@example.com" and "description" not in after["guest1"]
    assert after["guest1"]["_rev"] != before["guest1"]["_rev"]
    assert {u: after[u]["_rev"] for u in ("staff1", "guest2", "guest3")} == \
        {u: before[u]["_rev"] for u in ("staff1", "guest2", "guest3")}
    (update,) = [r for r in RunStore(env.store).audit_entries(result.id) if r["action"] == "UPDATE"]
    assert update["target_id"] == before["guest1"]["_id"]
    assert update["changes"] == {"mail": "new@example.com", "description": None}
    again = env.recon()
    assert again.summary["changes"]["updated"] == 0 and again.summary["changes"]["unchanged"] == 2
    assert {u: o["_rev"] for u, o in env.users().items()} == {u: o["_rev"] for u, o in after.items()}


def test_ldap_targets_linked_outside_source_query_are_compared_with_their_entries(env: Env) -> None:
    """The same from the store to LDAP: an entry whose user is outside sourceQuery is
    compared with what the entry holds, so a change is written (a removed value
    deleted from the entry) and counted once; the next run counts it unchanged."""
    env.add("a1", "b1")
    env.recon()
    env.change_conf("sync.json", lambda sync: next(m for m in sync["mappings"] if m["name"] == REVERSE).update(
        sourceQuery={"_queryFilter": 'userName sw "a"'}))
    users = Resources(env.project, env.store).open("managed/user")
    users.update(env.users()["b1"]["_id"], {"mail": "b1new@example.com", "telephoneNumber": None})
    result = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert result.state == "SUCCESS", result.message
    assert {k: v for k, v in result.summary["situationSummary"].items() if v} == {"CONFIRMED": 2}
    assert result.summary["changes"]["updated"] == 1 and result.summary["changes"]["unchanged"] == 1
    accounts = Resources(env.project, env.store).open("system/ldap/account")
    entries = {o["uid"]: o for page in accounts.pages(QuerySpec()) for o in page}
    assert entries["b1"]["mail"] == "b1new@example.com" and "telephoneNumber" not in entries["b1"]
    assert entries["a1"]["telephoneNumber"] == "555-0100"
    again = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert again.summary["changes"]["updated"] == 0 and again.summary["changes"]["unchanged"] == 2


# -- several values never silently become one ---------------------------------


def _add_value(env: Env, uid: str, attr: str, value: str) -> None:
    env.slapd.add_ldif(f"dn: uid={uid},{env.subtree}\nchangetype: modify\nadd: {attr}\n{attr}: {value}\n\n")


def test_entry_with_two_uids_fails_instead_of_creating_a_user_from_the_first(env: Env) -> None:
    """An LDAP entry with two ``uid`` values mapped to ``userName`` (type string in
    managed.json) is not cut to its first value: that object fails with an error
    naming the property and the source attribute, and nothing is created for it."""
    env.add("two1", "one1")
    _add_value(env, "two1", "uid", "two1alt")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert set(env.users()) == {"one1"}
    assert result.summary["changes"]["created"] == 1 and result.summary["changes"]["failed"] == 1
    (error,) = _failures(result)
    assert "userName is single-valued (type string) but source 'uid' gives 2 values" in error["message"]
    (row,) = _audit_failures(env, result)
    assert row["action"] == "CREATE" and "userName is single-valued" in row["message"]


def test_linked_entry_that_gains_a_second_uid_fails_and_keeps_its_user(env: Env) -> None:
    """A linked entry that gains a second ``uid`` fails its update (the user keeps its
    values and ``_rev``), and the store-to-LDAP direction does not replace the two
    values with one either: it fails that object as for any single-valued property whose
    attribute holds several values (``uid`` names the entry: its RDN holds the value the
    store sends, which was once taken for an update done with nothing written), and the
    entry keeps both."""
    env.add("two2")
    env.recon()
    before = env.users()
    _add_value(env, "two2", "uid", "two2alt")
    env.modify("two2", "mail", "changed@example.com")
    result = env.recon()
    assert result.summary["changes"]["failed"] == 1 and result.summary["changes"]["updated"] == 0
    assert "userName is single-valued" in _failures(result)[0]["message"]
    assert env.users() == before
    reverse = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert reverse.summary["changes"].get("failed", 0) == 1 and not reverse.summary["changes"].get("updated")
    assert "uid of uid=two2," in _failures(reverse)[0]["message"]
    assert "holds 2 values but is declared single-valued" in _failures(reverse)[0]["message"]
    accounts = Resources(env.project, env.store).open("system/ldap/account")
    (entry,) = [o for page in accounts.pages(QuerySpec()) for o in page]
    assert sorted(entry["uid"]) == ["two2", "two2alt"]


def test_several_values_names_each_single_valued_property_once() -> None:
    """The check behind the failures above: one problem per single-valued target given
    two or more values, naming where they came from (the source attribute or a
    transform); a later rule for the same target is the one that counts; one value,
    or a list-typed target, is no problem."""
    rules = compile_properties(
        [{"source": "uid", "target": "userName"}, {"source": "cn", "target": "userName"},
         {"source": "x", "target": "mail", "transform": {"type": "text/javascript", "source": "source"}},
         {"source": "sn", "target": "sn"}, {"source": "groups", "target": "roles"}],
        file="sync.json", key="properties", compile_script=lambda raw, key: object(),
        compile_filter=lambda text, key: None)
    projected = {"userName": ["a", "b"], "mail": ["m1", "m2", "m3"], "sn": ["one"], "roles": ["r1", "r2"]}
    single = {"userName": "string", "mail": "string", "sn": "string"}
    assert rules.several_values(projected, single) == [
        "userName is single-valued (type string) but source 'cn' gives 2 values",
        "mail is single-valued (type string) but its transform gives 3 values"]


def test_a_boolean_and_a_number_correlated_in_one_page_find_each_its_own(tmp_path: Path) -> None:
    """Two sources of one page correlating by ``code``, one ``true`` and one ``1``, link each
    to the target holding its own value: the page's lookups are answered by value, where
    Python has ``True == 1``."""
    import json

    from idsync.config.project import load_project
    from store_projects import store_project

    from samples import idsync

    mapping = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
               "properties": [{"source": "login", "target": "userName"}],
               "correlationQuery": {"_queryFilter": 'code eq "${source.code}"'},
               "policies": [{"situation": "FOUND", "action": "LINK"}, {"situation": "ABSENT", "action": "IGNORE"}]}
    project = store_project(tmp_path, {
        "staff": {"login": {"type": "string"}, "code": {"type": ["boolean", "number"]}},
        "user": {"userName": {"type": "string"}, "code": {"type": ["boolean", "number"], "searchable": True}}},
        [mapping])
    for kind, rows in (("user", (("u-true", True), ("u-one", 1))), ("staff", (("s-true", True), ("s-one", 1)))):
        for object_id, code in rows:
            made = idsync(project, "managed", "create", kind, "--no-sync", "--id", object_id, "--data",
                          json.dumps({("userName" if kind == "user" else "login"): object_id, "code": code}))
            assert made.returncode == 0, made.stderr
    ran = idsync(project, "recon", "staff_user", "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    loaded = load_project(project)
    links = LinkSet.of(Store.open(loaded.settings.store_url()), loaded, loaded.mapping("staff_user"))
    assert links.targets_of(["s-true", "s-one"]) == {"s-true": "u-true", "s-one": "u-one"}


def test_two_sources_of_one_page_correlating_to_one_target_do_not_fail_the_run(tmp_path: Path) -> None:
    """Two unlinked sources of one page that both correlate to the one target: the first
    links, the second finds it linked (``FOUND_ALREADY_LINKED``), which fails that source
    alone, never the run with the links' unique key."""
    import json

    from store_projects import store_project

    from samples import idsync

    for action in ("LINK", "UPDATE"):
        mapping = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
                   "properties": [{"source": "code", "target": "code"}],
                   "correlationQuery": {"_queryFilter": 'code eq "${source.code}"'},
                   "policies": [{"situation": "FOUND", "action": action},
                                {"situation": "ABSENT", "action": "IGNORE"}]}
        project = store_project(tmp_path / action, {"staff": {"code": {"type": "string"}},
                                                     "user": {"code": {"type": "string", "searchable": True}}},
                                [mapping])
        for kind, object_id in (("user", "u1"), ("staff", "s1"), ("staff", "s2")):
            made = idsync(project, "managed", "create", kind, "--no-sync", "--id", object_id, "--data",
                          json.dumps({"code": "same"}))
            assert made.returncode == 0, made.stderr
        ran = idsync(project, "recon", "staff_user", "--json")
        summary = json.loads(ran.stdout)
        assert summary["state"] == "SUCCESS", ran.stdout
        assert summary["situationSummary"]["FOUND"] == 1, summary
        assert summary["situationSummary"]["FOUND_ALREADY_LINKED"] == 1, summary
