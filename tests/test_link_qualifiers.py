"""Link qualifiers (PingIDM's ``linkQualifiers``): one managed user linked to two
LDAP entries of one mapping, each qualifier with its own correlation, link,
situation, policies and target, by recon and by implicit sync, against the
suite's slapd and real stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.api.recon import run_summary
from idsync.config.project import load_project, validate_project
from idsync.errors import ConfigError
from idsync.managed import ManagedObjects
from idsync.resources import Resources, check_system
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.sync.livesync import run_livesync
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync.sync.retry import failed_pushes
from idsync_dev.slapd import Slapd
from recon_env import STORES, Env, env_on

from samples import idsync, ldap_entry

_JS = "text/javascript"
LINKS = "systemLdapAccounts_managedUser"
REVERSE = "managedUser_systemLdapAccounts"
_OUS = {"staff": "ou=staff", "customer": "ou=customers"}


@pytest.fixture(params=STORES)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    with env_on(request.param, slapd, ldap_subtree, tmp_path) as e:
        slapd.add_ldif("".join(f"dn: {ou},{ldap_subtree}\nobjectClass: organizationalUnit\n"
                               f"{ou.replace('=', ': ')}\n\n" for ou in _OUS.values()))
        _qualified(e)
        yield e


def _qualified(env: Env, qualifiers: Any = None) -> None:
    """managed/user -> LDAP with the qualifiers staff and customer: a staff entry under
    ou=staff (with a description) and a customer entry under ou=customers, each found
    by its own correlation on dn; no customer entry for a user whose sn is Internal."""
    parent = f"linkQualifier === 'staff' ? 'ou=staff,{env.subtree}' : 'ou=customers,{env.subtree}'"
    dn = f"ldapDn.child({parent}, 'uid', source.userName)"

    def change(sync: dict[str, Any]) -> None:
        m = sync["mappings"][1]
        for key in ("links", "onCreate", "defaultTargetFields"):
            m.pop(key, None)
        m["linkQualifiers"] = qualifiers or ["staff", "customer"]
        m["correlationQuery"] = [{"linkQualifier": q, "expressionTree": {"all": ["dn"]}} for q in _OUS]
        m["properties"] = [
            {"source": "userName", "target": "uid"}, {"source": "sn", "target": "sn"},
            {"source": "", "target": "cn",
             "transform": {"type": _JS, "source": "source.userName + ' ' + linkQualifier"}},
            {"source": "description", "target": "description", "condition": '/linkQualifier eq "staff"'},
            {"source": "", "target": "dn", "transform": {"type": _JS, "source": dn}},
        ]
        m["policies"] = [
            {"situation": "ABSENT", "action": "IGNORE",
             "condition": '/linkQualifier eq "customer" and /source/sn eq "Internal"'},
            {"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "LINK"},
            {"situation": "CONFIRMED", "action": "UPDATE"}, {"situation": "UNASSIGNED", "action": "IGNORE"},
            {"situation": "SOURCE_MISSING", "action": "DELETE"}, {"situation": "MISSING", "action": "IGNORE"},
        ]
    env.change_conf("sync.json", change)


def _recon(env: Env, **options: Any) -> ReconResult:
    result = run_recon(env.project, env.store, REVERSE, ReconOptions(**options))
    assert result.state == "SUCCESS", result.message
    return result


def _situations(result: ReconResult) -> dict[str, int]:
    return {k: v for k, v in result.summary["situationSummary"].items() if v}


def _changes(result: ReconResult) -> dict[str, int]:
    """What the run wrote (``unchanged`` left out)."""
    return {k: v for k, v in result.summary["changes"].items() if v and k != "unchanged"}


def _entry(env: Env, uid: str, qualifier: str) -> dict[str, list[str]] | None:
    return ldap_entry(env.slapd, f"uid={uid},{_OUS[qualifier]},{env.subtree}")


def _linked(env: Env, qualifier: str, *ids: str) -> dict[str, str]:
    return LinkSet(env.store, REVERSE, qualifier=qualifier).targets_of(list(ids))


def test_two_qualifiers_make_two_entries_and_converge(env: Env) -> None:
    """Each managed user gets a staff and a customer entry (two assessments, two
    links, the qualifier in each audit entry); a policy whose condition names the
    qualifier keeps the customer entry of an Internal user from being made; a
    property condition and a transform see the qualifier; the second run writes
    nothing; a change updates both entries; a dry run writes nothing."""
    a1 = env.create_user(userName="mq1", sn="Outside", description="d1")
    a2 = env.create_user(userName="mq2", sn="Internal", description="d2")
    first = _recon(env)
    assert _situations(first) == {"ABSENT": 4}
    assert _changes(first) == {"created": 3, "linked": 3}
    assert first.summary["linkQualifierSummary"] == {"customer": {"ABSENT": 2}, "staff": {"ABSENT": 2}}
    shown = run_summary(RunStore(env.store).get(first.id))  # type: ignore[arg-type]
    assert shown["linkQualifierSummary"] == first.summary["linkQualifierSummary"]  # GET recon/ID
    staff, customer = _entry(env, "mq1", "staff"), _entry(env, "mq1", "customer")
    assert staff is not None and staff["cn"] == ["mq1 staff"] and staff["description"] == ["d1"]
    assert customer is not None and customer["cn"] == ["mq1 customer"] and "description" not in customer
    assert _entry(env, "mq2", "staff") is not None and _entry(env, "mq2", "customer") is None
    staff_links, customer_links = _linked(env, "staff", a1["_id"], a2["_id"]), _linked(env, "customer", a1["_id"])
    assert set(staff_links) == {a1["_id"], a2["_id"]} and set(customer_links) == {a1["_id"]}
    assert staff_links[a1["_id"]] == staff["entryuuid"][0] and customer_links[a1["_id"]] == customer["entryuuid"][0]
    rows = RunStore(env.store).audit_entries(first.id)
    assert sorted((r["source_id"] == a1["_id"], r["link_qualifier"], r["action"]) for r in rows) == [
        (False, "staff", "CREATE"), (True, "customer", "CREATE"), (True, "staff", "CREATE")]

    second = _recon(env)
    assert _situations(second) == {"CONFIRMED": 3, "ABSENT": 1}
    assert _changes(second) == {}

    users = Resources(env.project, env.store).open("managed/user")
    users.update(a1["_id"], {"sn": "Moved"})
    third = _recon(env)
    assert _changes(third) == {"updated": 2}
    assert _entry(env, "mq1", "staff")["sn"] == ["Moved"]  # type: ignore[index]
    assert _entry(env, "mq1", "customer")["sn"] == ["Moved"]  # type: ignore[index]

    env.create_user(userName="mq3", sn="Later")
    dry = _recon(env, dry_run=True)
    assert _situations(dry)["ABSENT"] == 3 and _changes(dry)["created"] == 2
    assert _entry(env, "mq3", "staff") is None and _entry(env, "mq3", "customer") is None
    preview = idsync(env.project.settings.conf_dir.parent, "recon", REVERSE, "--dry-run", env={"COLUMNS": "400"})
    assert preview.returncode == 0, preview.stderr
    planned = [line.split() for line in preview.stdout.splitlines() if line.strip().startswith("DRY_RUN")]
    assert sorted((words[1], words[2], *(w for w in words if w.startswith("linkQualifier="))) for words in planned) == [
        ("ABSENT", "CREATE", "linkQualifier=customer"), ("ABSENT", "CREATE", "linkQualifier=staff")]
    assert _entry(env, "mq3", "staff") is None


def test_livesync_of_the_managed_source_applies_each_qualifier(env: Env) -> None:
    """liveSync of managed/user through the qualified mapping: users made and changed in
    the store (no implicit sync) get their staff and customer entries (none for the
    customer of an Internal user), a change updates both, a deleted user's two entries
    and links go, each assessment counted under its qualifier."""
    env.change_conf("sync.json", lambda sync: sync["mappings"][1].update(maxDeletes=5))
    kept = env.create_user(userName="lq1", sn="Outside", description="d1")
    first = run_livesync(env.project, env.store, "managed/user")
    assert first.state == "SUCCESS" and first.full_recon, first.message
    assert _entry(env, "lq1", "staff") is not None and _entry(env, "lq1", "customer") is not None
    internal = env.create_user(userName="lq2", sn="Internal", description="d2")
    Resources(env.project, env.store).open("managed/user").update(kept["_id"], {"sn": "Moved"})
    done = run_livesync(env.project, env.store, "managed/user")
    assert done.state == "SUCCESS" and done.changes == 2, done.message
    (run,) = done.runs
    assert run["counts"] == {"created": 1, "updated": 2}
    summary = RunStore(env.store).get(run["id"])["summary"]  # type: ignore[index]
    assert summary["linkQualifierSummary"] == {"customer": {"ABSENT": 1, "CONFIRMED": 1},
                                               "staff": {"ABSENT": 1, "CONFIRMED": 1}}
    assert _entry(env, "lq1", "customer")["sn"] == ["Moved"]  # type: ignore[index]
    assert _entry(env, "lq2", "staff") is not None and _entry(env, "lq2", "customer") is None
    assert set(_linked(env, "staff", internal["_id"])) == {internal["_id"]}

    Resources(env.project, env.store).open("managed/user").delete(kept["_id"])
    gone = run_livesync(env.project, env.store, "managed/user")
    assert gone.state == "SUCCESS" and gone.runs[0]["counts"] == {"deleted": 2}, gone.message
    assert _entry(env, "lq1", "staff") is None and _entry(env, "lq1", "customer") is None
    assert _linked(env, "staff", kept["_id"]) == {} and _linked(env, "customer", kept["_id"]) == {}
    assert run_livesync(env.project, env.store, "managed/user").changes == 0


def test_found_entries_are_linked_per_qualifier(env: Env) -> None:
    """Entries already in the directory are found by each qualifier's own correlation
    and linked with that qualifier: FOUND twice, nothing created."""
    env.slapd.add_ldif("".join(
        f"dn: uid=mq4,{ou},{env.subtree}\nobjectClass: inetOrgPerson\nuid: mq4\ncn: x\nsn: Found\n\n"
        for ou in _OUS.values()))
    user = env.create_user(userName="mq4", sn="Found")
    first = _recon(env)
    assert _situations(first) == {"FOUND": 2} and _changes(first) == {"linked": 2}
    staff, customer = _linked(env, "staff", user["_id"]), _linked(env, "customer", user["_id"])
    assert staff[user["_id"]] == _entry(env, "mq4", "staff")["entryuuid"][0]  # type: ignore[index]
    assert customer[user["_id"]] == _entry(env, "mq4", "customer")["entryuuid"][0]  # type: ignore[index]
    assert _situations(_recon(env)) == {"CONFIRMED": 2}


def test_a_qualifier_script_chooses_per_user(env: Env) -> None:
    """A linkQualifiers script answers the qualifiers of each user (object), and all
    of them for returnAll: an Internal user is assessed for staff only."""
    _qualified(env, {"type": _JS, "source": "returnAll || object.sn !== 'Internal' ? ['staff', 'customer'] "
                                            ": ['staff']"})
    env.create_user(userName="mq5", sn="Outside")
    env.create_user(userName="mq6", sn="Internal")
    first = _recon(env)
    assert _situations(first) == {"ABSENT": 3} and _changes(first) == {"created": 3, "linked": 3}
    assert _entry(env, "mq6", "customer") is None and _entry(env, "mq6", "staff") is not None
    assert _changes(_recon(env)) == {}


def test_implicit_sync_pushes_each_qualifier(env: Env) -> None:
    """A managed user's create, update and delete are pushed once per qualifier:
    two entries made, both updated, both deleted with their links."""
    resources = Resources(env.project, env.store)
    users = ManagedObjects(env.project, env.store, resources, "user")
    try:
        made = users.create({"userName": "mq7", "sn": "Pushed", "description": "d"})
        assert made.object is not None
        assert sorted((p.qualifier, p.situation, p.action, p.ok) for p in made.pushes) == [
            ("customer", "ABSENT", "CREATE", True), ("staff", "ABSENT", "CREATE", True)]
        uid = made.object["_id"]
        assert _entry(env, "mq7", "staff") is not None and _entry(env, "mq7", "customer") is not None
        changed = users.patch(uid, [{"operation": "replace", "field": "/sn", "value": "Again"}])
        assert sorted((p.qualifier, p.action) for p in changed.pushes) == [("customer", "UPDATE"),
                                                                             ("staff", "UPDATE")]
        assert _entry(env, "mq7", "customer")["sn"] == ["Again"]  # type: ignore[index]
        gone = users.delete(uid)
        assert sorted((p.qualifier, p.situation, p.action) for p in gone.pushes) == [
            ("customer", "SOURCE_MISSING", "DELETE"), ("staff", "SOURCE_MISSING", "DELETE")]
        assert _entry(env, "mq7", "staff") is None and _entry(env, "mq7", "customer") is None
        assert _linked(env, "staff", uid) == {} and _linked(env, "customer", uid) == {}
    finally:
        resources.close()


def test_a_failed_push_of_one_qualifier_waits_for_retry(env: Env) -> None:
    """When the staff entry cannot be made (its container is missing) but the customer
    entry is, the user waits for `sync retry` although its last push succeeded; the
    retry makes the staff entry and clears it."""
    env.slapd.add_ldif(f"dn: {_OUS['staff']},{env.subtree}\nchangetype: delete\n\n")
    resources = Resources(env.project, env.store)
    users = ManagedObjects(env.project, env.store, resources, "user")
    try:
        made = users.create({"userName": "mq8", "sn": "Half"})
        assert made.object is not None
        uid = made.object["_id"]
        assert sorted((p.qualifier, p.ok) for p in made.pushes) == [("customer", True), ("staff", False)]
        assert failed_pushes(env.store, REVERSE) == [uid]
        env.slapd.add_ldif(f"dn: {_OUS['staff']},{env.subtree}\nobjectClass: organizationalUnit\nou: staff\n\n")
        retried = idsync(env.project.settings.conf_dir.parent, "sync", "retry", "--mapping", REVERSE)
        assert retried.returncode == 0, retried.stderr
        assert failed_pushes(env.store, REVERSE) == []
        assert _entry(env, "mq8", "staff") is not None and set(_linked(env, "staff", uid)) == {uid}
    finally:
        resources.close()


@pytest.mark.parametrize(("change", "problem"), [
    (lambda m: m.update(linkQualifiers=["staff"]),
     "correlationQuery[1].linkQualifier: link qualifier 'customer' is not one of the mapping's linkQualifiers"),
    (lambda m: m.pop("linkQualifiers"), "several correlation queries need the mapping's linkQualifiers"),
    (lambda m: m.update(linkQualifiers=["staff", "staff"]), "a link qualifier is listed twice"),
    (lambda m: m.update(linkQualifiers="staff"), "expected a list of link qualifiers, or a script"),
])
def test_validate_names_a_bad_qualifier_setup(env: Env, change: Any, problem: str) -> None:
    """Qualifiers that do not fit the correlation queries are named by validate, file and key."""
    assert validate_project(env.project.settings.conf_dir.parent, check_system) == []
    path = env.project.settings.conf_dir / "sync.json"
    sync = json.loads(path.read_text())
    change(sync["mappings"][1])
    path.write_text(json.dumps(sync))
    problems = [str(p) for p in validate_project(env.project.settings.conf_dir.parent, check_system)]
    assert len(problems) == 1 and "sync.json: mappings[1]." in problems[0] and problem in problems[0], problems
    with pytest.raises(ConfigError, match=r"linkQualifier|correlation"):
        load_project(env.project.settings.conf_dir.parent)
