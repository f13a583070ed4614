"""The two-way LDAP sample end to end through the real CLI: the seed walkthrough,
the store-to-LDAP recon on its own, and convergence (second passes write nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project
from idsync.connectors.ldap.members import norm_dn as norm
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon
from idsync_dev.slapd import Slapd
from ldap3.utils.dn import parse_dn

from samples import FORWARD, REVERSE, can_bind, idsync, ldap_entry, sample_project


@pytest.fixture
def project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    return sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")


def _recon(project: Path, mapping: str, max_deletes: int | None = None) -> dict[str, Any]:
    """One recon run in this process (the CLI's own recon is covered by the walkthrough)."""
    loaded = load_project(project)
    result = run_recon(loaded, Store.open(loaded.settings.store_url()), mapping, ReconOptions(max_deletes=max_deletes))
    assert result.state == "SUCCESS", result.message
    return result.summary


def _query(project: Path, object_type: str) -> list[dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open(f"managed/{object_type}")
    return [obj for page in resource.pages(QuerySpec()) for obj in page]


def _users(project: Path) -> dict[str, dict[str, Any]]:
    return {u["userName"]: u for u in _query(project, "user")}


def _writes(summary: dict[str, Any]) -> int:
    c = summary["changes"]
    return int(c["created"] + c["updated"] + c["deleted"] + c["linked"] + c["unlinked"] + c["failed"])


def test_seed_walkthrough(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The seed's steps: recon LDAP to the store, list and read users, create fdoe
    in the store, find the new entry in LDAP with the seed's attributes."""
    recon = idsync(project, "recon", FORWARD, "--json")
    assert recon.returncode == 0, recon.stderr
    assert json.loads(recon.stdout)["situationSummary"]["ABSENT"] == 2
    ids = json.loads(idsync(project, "managed", "query", "user", "--fields", "_id").stdout)
    assert len(ids) == 2 and all(set(o) == {"_id", "_rev"} for o in ids)
    users = [json.loads(idsync(project, "managed", "get", "user", o["_id"]).stdout) for o in ids]
    bjensen = next(u for u in users if u["userName"] == "bjensen")
    assert bjensen == {**bjensen, "displayName": "Barbara Jensen", "description": "Created for OpenIDM",
                       "givenName": "Barbara", "mail": "bjensen@example.com", "telephoneNumber": "1-360-229-7105",
                       "sn": "Jensen", "accountStatus": "active", "effectiveRoles": [], "effectiveAssignments": []}

    fdoe = {"mail": "fdoe@example.com", "sn": "Doe", "telephoneNumber": "555-1234", "userName": "fdoe",
            "givenName": "Felicitas", "description": "Felicitas Doe", "displayName": "fdoe"}
    created = idsync(project, "managed", "create", "user", "--data", json.dumps(fdoe))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {**json.loads(created.stdout), **fdoe, "accountStatus": "active"}

    accounts = json.loads(idsync(project, "system", "query", "ldap", "account", "--fields", "_id").stdout)
    assert len(accounts) == 3
    found = json.loads(idsync(project, "system", "query", "ldap", "account", "--filter", 'uid eq "fdoe"').stdout)
    assert len(found) == 1
    account = json.loads(idsync(project, "system", "get", "ldap", "account", found[0]["_id"]).stdout)
    assert account == {**account, "dn": f"uid=fdoe,{ldap_subtree}", "givenName": "Felicitas", "uid": "fdoe",
                       "mail": "fdoe@example.com", "telephoneNumber": "555-1234", "cn": "fdoe", "sn": "Doe",
                       "description": "Felicitas Doe", "ldapGroups": []}
    assert {"person", "organizationalPerson", "inetOrgPerson", "top"} <= set(account["objectClass"])
    missing = idsync(project, "system", "get", "ldap", "account", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 66


def test_store_to_ldap_recon(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The reverse recon alone creates a missing entry, repairs a drifted attribute,
    and deletes the entry of a user deleted without sync (SOURCE_MISSING: DELETE),
    but only within maxDeletes."""
    _recon(project, FORWARD)
    users = _users(project)
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: drift@example.com\n")
    new = idsync(project, "managed", "create", "user", "--no-sync", "--data", '{"userName": "nsync", "sn": "N"}')
    assert new.returncode == 0 and ldap_entry(slapd, f"uid=nsync,{ldap_subtree}") is None
    deleted = idsync(project, "managed", "delete", "user", users["scarter"]["_id"], "--no-sync")
    assert deleted.returncode == 0, deleted.stderr
    capped = idsync(project, "recon", REVERSE, "--json", "--max-deletes", "0")
    assert capped.returncode == 1 and "more than maxDeletes allows" in capped.stdout
    # Creates and updates are written page by page; only the deletes wait for the cap.
    assert json.loads(capped.stdout)["changes"] == {**json.loads(capped.stdout)["changes"], "created": 1,
                                                     "updated": 1, "deleted": 0}
    assert ldap_entry(slapd, f"uid=scarter,{ldap_subtree}") is not None
    summary = _recon(project, REVERSE, max_deletes=1)
    assert summary["changes"] == {**summary["changes"], "created": 0, "updated": 0, "deleted": 1}
    assert ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")["mail"] == ["bjensen@example.com"]  # type: ignore[index]
    nsync = ldap_entry(slapd, f"uid=nsync,{ldap_subtree}")
    assert nsync is not None and nsync["cn"] == ["N"]  # no displayName: givenName and sn, joined
    assert ldap_entry(slapd, f"uid=scarter,{ldap_subtree}") is None
    assert _writes(_recon(project, REVERSE)) == 0


def test_delete_refused_by_ldap_fails_that_object_only(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """LDAP refuses to delete an entry that has children: that object fails (audited,
    counted), the run goes on and succeeds, the link stays, and the next recon
    deletes the entry once the child is gone."""
    _recon(project, FORWARD)
    users = _users(project)
    child = f"cn=laptop,uid=scarter,{ldap_subtree}"
    slapd.add_ldif(f"dn: {child}\nobjectClass: device\ncn: laptop\n")
    assert idsync(project, "managed", "delete", "user", users["scarter"]["_id"], "--no-sync").returncode == 0
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    result = run_recon(loaded, store, REVERSE, ReconOptions(max_deletes=1))
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["deleted"] == 0 and result.summary["changes"]["failed"] == 1
    assert ldap_entry(slapd, f"uid=scarter,{ldap_subtree}") is not None
    audit = RunStore(store).audit_entries(result.id, limit=50)
    (failure,) = [a for a in audit if a["status"] == "FAILURE"]
    assert failure["action"] == "DELETE" and failure["situation"] == "SOURCE_MISSING"
    slapd.add_ldif(f"dn: {child}\nchangetype: delete\n")
    again = _recon(project, REVERSE, max_deletes=1)
    assert again["changes"]["deleted"] == 1 and ldap_entry(slapd, f"uid=scarter,{ldap_subtree}") is None


def test_convergence(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """After changes on both sides, one pass of each mapping in sync.json order
    converges: the second pass of each writes nothing. A value changed on both
    sides between two runs ends as the first mapping (LDAP to store) says."""
    _recon(project, FORWARD)
    _recon(project, REVERSE)
    users = _users(project)
    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: modify\nreplace: telephoneNumber\n"
                   "telephoneNumber: 555-0001\n")
    patch = [{"operation": "replace", "field": "/telephoneNumber", "value": "555-0002"},
             {"operation": "replace", "field": "/mail", "value": "barbara@example.com"}]
    for name in ("scarter", "bjensen"):
        proc = idsync(project, "managed", "patch", "user", users[name]["_id"], "--no-sync",
                      "--operations", json.dumps(patch if name == "bjensen" else patch[:1]))
        assert proc.returncode == 0, proc.stderr
    _recon(project, FORWARD)
    _recon(project, REVERSE)
    assert _writes(_recon(project, FORWARD)) == 0
    assert _writes(_recon(project, REVERSE)) == 0
    final = _users(project)
    assert final["scarter"]["telephoneNumber"] == "555-0001"  # changed on both sides: LDAP's run came first
    assert final["bjensen"]["mail"] == "bjensen@example.com"  # the store-only change was overwritten too
    assert ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")["mail"] == ["bjensen@example.com"]  # type: ignore[index]


def _odd(dn: str) -> str:
    """The same DN as another tool might write it: upper case, spaces after commas."""
    return dn.upper().replace(",", ", ")


def test_groups_and_memberships(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Groups become roles and back; a user's ldapGroups is written as member adds and
    removes on the groups; DNs differing only in case or spacing are the same member;
    after a full cycle the second pass of every mapping writes nothing."""
    group_dn = f"cn=openidm,{ldap_subtree}"
    mappings = [m["name"] for m in json.loads(idsync(project, "mappings", "--json").stdout)]
    assert mappings == [FORWARD, "systemLdapGroups_managedRole", REVERSE, "managedRole_systemLdapGroups"]
    for mapping in mappings[:2]:
        _recon(project, mapping)
    users = _users(project)
    assert [g.lower() for g in users["bjensen"]["ldapGroups"]] == [group_dn.lower()]
    roles = _query(project, "role")
    assert [(r["name"], [m.lower() for m in r["members"]]) for r in roles] == \
        [("openidm", [f"uid=bjensen,{ldap_subtree}".lower()])]

    def patch(user: str, *ops: dict[str, Any]) -> None:
        proc = idsync(project, "managed", "patch", "user", users[user]["_id"], "--operations", json.dumps(ops))
        assert proc.returncode == 0, proc.stderr

    # Joining through an odd spelling of the group's DN; restating a membership in another spelling.
    patch("scarter", {"operation": "add", "field": "/ldapGroups", "value": _odd(group_dn)})
    patch("bjensen", {"operation": "replace", "field": "/ldapGroups", "value": [_odd(group_dn)]})
    members = ldap_entry(slapd, group_dn)["uniquemember"]  # type: ignore[index]
    assert sorted(m.lower() for m in members) == sorted(f"uid={u},{ldap_subtree}".lower()
                                                        for u in ("bjensen", "scarter"))
    # A new role makes a new group, its first member given in an odd spelling.
    role = {"name": "staff", "description": "Staff", "members": [_odd(f"uid=scarter,{ldap_subtree}")]}
    created = idsync(project, "managed", "create", "role", "--data", json.dumps(role))
    assert created.returncode == 0, created.stderr
    staff = ldap_entry(slapd, f"cn=staff,{ldap_subtree}")
    assert staff is not None and staff["description"] == ["Staff"]
    # Leaving a group removes one member value; the group and its other member stay.
    patch("scarter", {"operation": "remove", "field": "/ldapGroups", "value": _odd(group_dn)})
    assert [m.lower() for m in ldap_entry(slapd, group_dn)["uniquemember"]] == \
        [f"uid=bjensen,{ldap_subtree}".lower()]  # type: ignore[index]

    for mapping in mappings:
        _recon(project, mapping)
    assert [_writes(_recon(project, mapping)) for mapping in mappings] == [0, 0, 0, 0]
    final = _users(project)
    assert [g.lower() for g in final["scarter"]["ldapGroups"]] == [f"cn=staff,{ldap_subtree}".lower()]
    assert [g.lower() for g in final["bjensen"]["ldapGroups"]] == [group_dn.lower()]


def test_password_changed_in_ldap_is_kept(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A password set in the store reaches LDAP; one changed later in LDAP (in clear,
    as a self-service tool might write it) is read back into the store as a hash and
    is not reverted by the store-to-LDAP recon; then both directions write nothing."""
    _recon(project, FORWARD)
    dn = f"uid=bjensen,{ldap_subtree}"
    patch = [{"operation": "replace", "field": "/password", "value": "Set-in-Store-1"}]
    proc = idsync(project, "managed", "patch", "user", _users(project)["bjensen"]["_id"], "--operations",
                  json.dumps(patch))
    assert proc.returncode == 0 and can_bind(slapd, dn, "Set-in-Store-1")
    assert [_writes(_recon(project, m)) for m in (FORWARD, REVERSE)] == [0, 0]
    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: Set-in-Ldap-2\n")
    _recon(project, FORWARD)
    _recon(project, REVERSE)
    assert can_bind(slapd, dn, "Set-in-Ldap-2") and not can_bind(slapd, dn, "Set-in-Store-1")
    assert ldap_entry(slapd, dn)["userpassword"][0].startswith("{CRYPT}")  # type: ignore[index]
    assert [_writes(_recon(project, m)) for m in (FORWARD, REVERSE)] == [0, 0]
    assert "Set-in-Ldap-2" not in json.dumps(_query(project, "user"))


def _group_of_names_project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    """The sample without its data, its groups groupOfNames (member instead of uniqueMember)."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(groupObjectClasses=["top", "groupOfNames"], groupMemberAttribute="member")
    prov["objectTypes"]["group"]["properties"]["uniqueMember"]["nativeName"] = "member"
    prov_file.write_text(json.dumps(prov))
    return project


def _people(slapd: Slapd, ldap_subtree: str, *uids: str) -> list[str]:
    """Add one inetOrgPerson per uid; their DNs."""
    slapd.add_ldif("\n".join(f"dn: uid={u},{ldap_subtree}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: G\n"
                             for u in uids))
    return [f"uid={u},{ldap_subtree}" for u in uids]


def test_group_of_names(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The same sample with groupOfNames groups (member instead of uniqueMember):
    a group becomes a role with its members, a role becomes a group, and a user
    joining through ldapGroups adds one `member` value."""
    project = _group_of_names_project(tmp_path, slapd, ldap_subtree)
    people = _people(slapd, ldap_subtree, "gon1", "gon2")
    group_dn = f"cn=gon,{ldap_subtree}"
    slapd.add_ldif(f"dn: {group_dn}\nobjectClass: groupOfNames\ncn: gon\nmember: {_odd(people[0])}\n")
    for mapping in (FORWARD, "systemLdapGroups_managedRole"):
        _recon(project, mapping)
    roles = _query(project, "role")
    assert [(r["name"], [norm(m) for m in r["members"]]) for r in roles] == [("gon", [norm(people[0])])]

    users = _users(project)
    joined = [{"operation": "add", "field": "/ldapGroups", "value": _odd(group_dn)}]
    proc = idsync(project, "managed", "patch", "user", users["gon2"]["_id"], "--operations", json.dumps(joined))
    assert proc.returncode == 0, proc.stderr
    assert sorted(norm(m) for m in ldap_entry(slapd, group_dn)["member"]) == sorted(map(norm, people))  # type: ignore[index]

    role = {"name": "gon-new", "members": [people[1]]}
    created = idsync(project, "managed", "create", "role", "--data", json.dumps(role))
    assert created.returncode == 0, created.stderr
    group = ldap_entry(slapd, f"cn=gon-new,{ldap_subtree}")
    assert group is not None and "groupOfNames" in group["objectclass"] and group["member"] == [people[1]]


def test_leaving_group_of_names(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Leaving a groupOfNames group both ways, its DNs in odd spellings. Store to LDAP:
    a group taken out of a user's ldapGroups deletes that one `member` value (the
    other members keep their values as written) and the user's memberOf loses it.
    LDAP to store: a member value deleted by another tool leaves the user's
    ldapGroups and the role's members at the next recon. Then every mapping's
    second pass writes nothing and nobody is put back."""
    project = _group_of_names_project(tmp_path, slapd, ldap_subtree)
    people = _people(slapd, ldap_subtree, "gol1", "gol2", "gol3")
    group_dn = f"cn=Gol Team,{ldap_subtree}"
    other_dn = f"cn=gol-other,{ldap_subtree}"
    slapd.add_ldif(f"dn: {group_dn}\nobjectClass: groupOfNames\ncn: Gol Team\n"
                   + "".join(f"member: {_odd(dn)}\n" for dn in people) + "\n"
                   f"dn: {other_dn}\nobjectClass: groupOfNames\ncn: gol-other\nmember: {people[0]}\n")
    mappings = [FORWARD, "systemLdapGroups_managedRole", REVERSE, "managedRole_systemLdapGroups"]
    for mapping in mappings[:2]:
        _recon(project, mapping)
    users = _users(project)
    assert sorted(map(norm, users["gol1"]["ldapGroups"])) == sorted(map(norm, [group_dn, other_dn]))
    assert [norm(g) for g in users["gol2"]["ldapGroups"]] == [norm(group_dn)]
    before = ldap_entry(slapd, group_dn)["member"]  # type: ignore[index]

    # Store to LDAP: gol1's groups become just the other one, named in another spelling.
    leave = [{"operation": "replace", "field": "/ldapGroups", "value": [other_dn.upper().replace(",", " , ")]}]
    proc = idsync(project, "managed", "patch", "user", users["gol1"]["_id"], "--operations", json.dumps(leave))
    assert proc.returncode == 0, proc.stderr
    members = ldap_entry(slapd, group_dn)["member"]  # type: ignore[index]
    assert members == [m for m in before if norm(m) != norm(people[0])] and len(members) == 2
    assert ldap_entry(slapd, other_dn)["member"] == [people[0]]  # type: ignore[index]  # not left and rejoined
    gol1 = ldap_entry(slapd, people[0])
    assert [norm(g) for g in gol1["memberof"]] == [norm(other_dn)]  # type: ignore[index]
    assert [norm(g) for g in _users(project)["gol1"]["ldapGroups"]] == [norm(other_dn)]

    # LDAP to store: another tool removes gol3, naming it in an odd spelling.
    slapd.add_ldif(f"dn: {group_dn}\nchangetype: modify\ndelete: member\nmember: {_odd(people[2])}\n")
    assert "memberof" not in ldap_entry(slapd, people[2])  # type: ignore[operator]
    _recon(project, FORWARD)
    users = _users(project)
    assert users["gol3"]["ldapGroups"] == []
    assert [norm(g) for g in users["gol2"]["ldapGroups"]] == [norm(group_dn)]
    _recon(project, "systemLdapGroups_managedRole")
    roles = {r["name"]: [norm(m) for m in r["members"]] for r in _query(project, "role")}
    assert roles == {"Gol Team": [norm(people[1])], "gol-other": [norm(people[0])]}

    for mapping in mappings:
        _recon(project, mapping)
    assert [_writes(_recon(project, mapping)) for mapping in mappings] == [0, 0, 0, 0]
    assert [norm(m) for m in ldap_entry(slapd, group_dn)["member"]] == [norm(people[1])]  # type: ignore[index]


def test_a_user_name_with_dn_syntax_stays_one_rdn(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The shipped onCreate names the new entry with ``ldapDn.child``: a userName holding a
    comma and an equals sign (``evil,ou=Admins``) becomes one escaped RDN value under the
    people container, never an entry in another container."""
    created = idsync(project, "managed", "create", "user", "--data", json.dumps(
        {"userName": "evil,ou=Admins", "sn": "Evil", "givenName": "E", "mail": "evil@example.com"}))
    assert created.returncode == 0, created.stderr
    found = json.loads(idsync(project, "system", "query", "ldap", "account", "--filter", 'sn eq "Evil"').stdout)
    assert len(found) == 1
    account = json.loads(idsync(project, "system", "get", "ldap", "account", found[0]["_id"]).stdout)
    rdns = parse_dn(account["dn"], escape=False)
    assert len(rdns) == len(parse_dn(ldap_subtree)) + 1 and rdns[0][0] == "uid"  # one RDN under the container
    assert norm(account["dn"]).endswith("," + norm(ldap_subtree))
    assert account["uid"] == "evil,ou=Admins"


def test_a_push_writes_its_change_not_a_directory_change_still_to_come_back(project: Path, slapd: Slapd,
                                                                            ldap_subtree: str) -> None:
    """With both directions mapped, a change made in the store is pushed as the change
    it is: a telephone number changed in LDAP that no run has read yet is not set back
    to the store's older value by a push of the user's mail, and the next LDAP-to-store
    run brings it in. A push that failed is repaired with its own change by the next
    one, whose change is written beside it."""
    _recon(project, FORWARD)
    bjensen = _users(project)["bjensen"]["_id"]
    dn = f"uid=bjensen,{ldap_subtree}"
    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: 555-0100\n")

    def patch(field: str, value: str, code: int = 0) -> None:
        ops = [{"operation": "replace", "field": f"/{field}", "value": value}]
        proc = idsync(project, "managed", "patch", "user", bjensen, "--operations", json.dumps(ops))
        assert proc.returncode == code, proc.stderr

    patch("mail", "barbara@example.org")
    entry = ldap_entry(slapd, dn)
    assert entry is not None and entry["mail"] == ["barbara@example.org"]
    assert entry["telephonenumber"] == ["555-0100"]  # not the store's number, which the push left alone
    _recon(project, FORWARD)
    assert _users(project)["bjensen"]["telephoneNumber"] == "555-0100"
    assert [_writes(_recon(project, m)) for m in (FORWARD, REVERSE)] == [0, 0]

    # A push that fails (LDAP is down) is repaired by the next push of the user: both
    # changes are written, and LDAP's own change meanwhile still stands.
    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: 555-0200\n")
    slapd.stop(keep_data=True)
    try:
        patch("description", "first change", 75)
    finally:
        slapd.start()
    patch("mail", "babs@example.org")
    entry = ldap_entry(slapd, dn)
    assert entry is not None and (entry["description"], entry["mail"]) == (["first change"], ["babs@example.org"])
    assert entry["telephonenumber"] == ["555-0200"]


def test_a_push_to_an_entry_only_linked_writes_all_of_it(project: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A store user never pushed, whose change finds an LDAP entry by correlation: the
    sample's policy only links it (FOUND: LINK), so nothing made the two agree, and the
    next push writes every mapped attribute that differs, not only what it moved."""
    new = idsync(project, "managed", "create", "user", "--no-sync", "--data",
                 json.dumps({"userName": "found", "sn": "Store", "givenName": "Fay", "mail": "fay@example.org"}))
    assert new.returncode == 0, new.stderr
    user = json.loads(new.stdout)["_id"]
    dn = f"uid=found,{ldap_subtree}"
    slapd.add_ldif(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: found\ncn: Fay Ldap\nsn: Ldap\n"
                   "mail: old@example.org\n")
    for value in ("Faye", "Fae"):
        ops = [{"operation": "replace", "field": "/givenName", "value": value}]
        proc = idsync(project, "managed", "patch", "user", user, "--operations", json.dumps(ops))
        assert proc.returncode == 0, proc.stderr
    entry = ldap_entry(slapd, dn)
    assert entry is not None
    assert (entry["sn"], entry["mail"], entry["givenname"]) == (["Store"], ["fay@example.org"], ["Fae"])
