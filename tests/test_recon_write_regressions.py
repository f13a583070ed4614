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
from idsync.connectors.base import WriteOp
from idsync.resources import Resources
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.sync.recon import ReconOptions, ReconResult, run_recon
from idsync.testing.slapd import Slapd
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
    the update is refused for that object, the user keeps its values and ``_rev``,
    and another user's update in the same page is written."""
    _add_cn_entry(env, "Gone Uid", uid="goneuid", mail="a@example.com")
    _add_cn_entry(env, "Kept Uid", uid="keptuid", mail="b@example.com")
    assert env.recon().summary["changes"]["created"] == 2
    before = env.users()
    env.slapd.add_ldif(f"dn: cn=Gone Uid,{env.subtree}\nchangetype: modify\ndelete: uid\n-\n"
                       "replace: mail\nmail: new@example.com\n\n")
    env.slapd.add_ldif(f"dn: cn=Kept Uid,{env.subtree}\nchangetype: modify\nreplace: mail\nmail: c@example.com\n\n")
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
    assert users.get(good.id or "") == {**(good.obj or {})}


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
    linked, and the next run fails it again instead of counting it done."""
    _ids_unreadable(env)
    user = env.create_user(userName="noid1", sn="Noid", givenName="No")
    result = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert result.state == "SUCCESS", result.message
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


def test_implicit_push_that_creates_a_target_without_a_readable_id_fails(env: Env) -> None:
    """The same rule for implicit sync: a managed create pushed to LDAP whose new
    entry's id cannot be read back is a failed push, not a pushed one."""
    from idsync.managed import ManagedObjects

    _ids_unreadable(env)
    change = ManagedObjects(env.project, env.store, Resources(env.project, env.store), "user").create(
        {"userName": "noid2", "sn": "Noid", "givenName": "No"})
    (push,) = change.pushes
    assert not push.ok and push.message and "id could not be read back" in push.message
