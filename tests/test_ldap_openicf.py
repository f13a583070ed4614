"""OpenICF's special attribute names on the LDAP connector, against real slapds: one
that keeps ``memberOf`` (memberof overlay with referential integrity) and one whose
groups alone know their members, both with a password policy that honours
``pwdAccountLockedTime``. ``__NAME__``, ``__UID__``, ``__ENABLE__``, ``__PASSWORD__``
and the virtual ``ldapGroups``, read and written, and the group upkeep of
``maintainLdapGroupMembership`` and ``maintainPosixGroupMembership``."""

from __future__ import annotations

import itertools
import time
from typing import Any

import ldap3
import pytest
from idsync.connectors.ldap.config import parse_ldap_config
from idsync.connectors.ldap.connection import LdapConnection
from idsync.connectors.ldap.connector import LdapResource, LdapSystem
from idsync.connectors.ldap.members import norm_dn
from idsync.connectors.ldap.special import encode_special
from idsync.errors import ObjectRejected
from idsync.resource import QuerySpec, WriteOp
from idsync_dev import Slapd

from samples import can_bind, ldap_entry

pytestmark = pytest.mark.slapd

FILE = "conf/provisioner.openicf-ldap.json"
_numbers = itertools.count(1)
PROPERTIES: dict[str, Any] = {
    "dn": {"type": "string", "nativeName": "__NAME__"},
    "id": {"type": "string", "nativeName": "__UID__"},
    "uid": {"type": "string"},
    "cn": {"type": "string"},
    "sn": {"type": "string"},
    "enabled": {"type": "boolean", "nativeName": "__ENABLE__"},
    "password": {"type": "string", "nativeName": "__PASSWORD__", "nativeType": "JAVA_TYPE_GUARDEDSTRING"},
    "ldapGroups": {"type": "array", "items": {"type": "string"}, "nativeName": "ldapGroups"},
}


@pytest.fixture(params=["memberOf", "plain"])
def server(request: pytest.FixtureRequest, slapd: Slapd) -> Slapd:
    """Each test runs against a directory with memberOf and one without."""
    return slapd if request.param == "memberOf" else request.getfixturevalue("plain_slapd")


def subtree(server: Slapd, users: int = 2) -> str:
    """A fresh ``ou`` holding ``u1``..``uN`` (password ``pw-uN``) and ``ou=groups`` with
    ``g1`` (members u1, u2), ``g2`` (u2) and ``g3`` (u2), all groupOfUniqueNames."""
    ou = f"s{next(_numbers)}"
    base = f"ou={ou},ou=People,{server.base_dn}"
    ldif = [f"dn: {base}\nobjectClass: organizationalUnit\nou: {ou}\n",
            f"dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n"]
    ldif += [f"dn: uid=u{i},{base}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: User {i}\nsn: {i}\n"
             f"userPassword: pw-u{i}\n" for i in range(1, users + 1)]
    for name, members in (("g1", ("u1", "u2")), ("g2", ("u2",)), ("g3", ("u2",))):
        ldif.append(f"dn: cn={name},ou=groups,{base}\nobjectClass: groupOfUniqueNames\ncn: {name}\n"
                    + "".join(f"uniqueMember: uid={m},{base}\n" for m in members))
    server.add_ldif("\n".join(ldif))
    return base


def system(server: Slapd, base: str, **props: Any) -> LdapSystem:
    return LdapSystem("ldap", config_of(server, base, **props), file=FILE)


def config_of(server: Slapd, base: str, **props: Any) -> dict[str, Any]:
    return {
        "name": "ldap",
        "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {
            "host": "127.0.0.1", "port": server.port, "principal": server.admin_dn,
            "credentials": server.admin_password, "baseContexts": [base],
            "baseContextsToSynchronize": [base], "uidAttribute": "entryUUID",
            "accountSearchFilter": "(uid=*)", "groupMemberAttribute": "uniqueMember", **props,
        },
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": PROPERTIES}},
    }


def members(server: Slapd, group: str, attribute: str = "uniquemember") -> list[str]:
    entry = ldap_entry(server, group) or {}
    return sorted(norm_dn(v) if "=" in v else v for v in entry.get(attribute, []))


def by_uid(resource: LdapResource, **spec: Any) -> dict[str, dict[str, Any]]:
    return {o["uid"]: o for page in resource.pages(QuerySpec(**spec)) for o in page}


def update(resource: LdapResource, obj_id: str, **values: Any) -> None:
    (result,) = resource.write_batch([WriteOp("update", id=obj_id, values=values)])
    assert result.error is None, result.error


def test_special_names_are_read(server: Slapd) -> None:
    """__NAME__ reads the DN, __UID__ the entryUUID (the _id), __ENABLE__ true for an
    unlocked entry, ldapGroups the groups holding the DN (found by searching them, on
    a directory with or without memberOf); __PASSWORD__ is never read, even when asked."""
    base = subtree(server)
    users = by_uid(system(server, base).resource("account"))
    u2 = users["u2"]
    assert u2["dn"].lower() == f"uid=u2,{base}".lower()
    assert u2["id"] == u2["_id"] and len(u2["_id"]) == 36
    assert u2["enabled"] is True
    assert sorted(map(norm_dn, u2["ldapGroups"])) == sorted(norm_dn(f"cn={g},ou=groups,{base}") for g in
                                                            ("g1", "g2", "g3"))
    assert [norm_dn(g) for g in users["u1"]["ldapGroups"]] == [norm_dn(f"cn=g1,ou=groups,{base}")]
    assert "password" not in u2
    asked = by_uid(system(server, base).resource("account"), fields=["uid", "password", "ldapGroups"])
    assert "password" not in asked["u1"] and asked["u1"]["ldapGroups"]
    one = system(server, base).resource("account").get_many([u2["_id"]])[u2["_id"]]
    assert sorted(one["ldapGroups"]) == sorted(u2["ldapGroups"])


def test_ldap_groups_from_member_of(slapd: Slapd) -> None:
    """With ``ldapGroupsAttribute: memberOf`` the directory's own list is read and
    nothing is searched: the same groups as the search finds."""
    base = subtree(slapd)
    searched = by_uid(system(slapd, base).resource("account"))
    listed = by_uid(system(slapd, base, ldapGroupsAttribute="memberOf").resource("account"))
    for uid in ("u1", "u2"):
        assert sorted(map(norm_dn, listed[uid]["ldapGroups"])) == sorted(map(norm_dn, searched[uid]["ldapGroups"]))


def test_groups_under_openicf_predefined_name(server: Slapd) -> None:
    """``__GROUPS__`` (OpenICF's predefined name) is the same as ``ldapGroups``."""
    base = subtree(server)
    PROPERTIES["groups"] = {"type": "array", "nativeName": "__GROUPS__"}
    try:
        u2 = by_uid(system(server, base).resource("account"))["u2"]
    finally:
        del PROPERTIES["groups"]
    assert sorted(u2["groups"]) == sorted(u2["ldapGroups"]) and len(u2["groups"]) == 3


def test_a_listing_searches_the_groups_once(server: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading 60 users with their ldapGroups costs one search of the groups for the
    whole run, not one per user or per page, and every user still gets its own groups."""
    base = subtree(server, users=60)
    searches: list[str] = []
    real = LdapConnection.search_pages

    def counted(self: LdapConnection, base_dn: str, search_filter: str, *args: Any, **kwargs: Any) -> Any:
        searches.append(search_filter)
        return real(self, base_dn, search_filter, *args, **kwargs)

    monkeypatch.setattr(LdapConnection, "search_pages", counted)
    resource = system(server, base).resource("account")
    users = by_uid(resource, page_size=7)
    assert len(users) == 60
    assert len(searches) == 2, searches  # the users, then every group once
    assert users["u1"]["ldapGroups"] and users["u2"]["ldapGroups"] and users["u60"]["ldapGroups"] == []
    # Later queries of the same run (correlation) and reads by id use what was listed.
    assert by_uid(resource, native="(uid=u2)")["u2"]["ldapGroups"] == users["u2"]["ldapGroups"]
    assert len(resource.get_many([users[f"u{i}"]["_id"] for i in range(1, 21)])) == 20
    assert len(searches) == 4, searches
    # A query of one user (an implicit sync) searches that user's groups, not every group.
    alone = system(server, base).resource("account")
    assert by_uid(alone, native="(uid=u2)")["u2"]["ldapGroups"] == users["u2"]["ldapGroups"]
    assert len(searches) == 6 and searches[5] == f"(uniqueMember=uid=u2,{base})", searches[4:]
    # Many small reads switch to the listing: at most 64 users' groups are searched one by one.
    del searches[:]
    for i in [*range(1, 61), *range(1, 61)]:
        assert alone.get_many([users[f"u{i}"]["_id"]])[users[f"u{i}"]["_id"]]["ldapGroups"] == \
            users[f"u{i}"]["ldapGroups"]
    assert len([f for f in searches if f.startswith("(uniqueMember=")]) <= 64


def test_a_listing_of_users_of_many_groups_indexes_them_at_once(plain_slapd: Slapd) -> None:
    """1,000 users each in 100 groups (100,000 memberships) are read with their ldapGroups
    in a few seconds of CPU: each membership is indexed in constant time, where checking
    it against the user's groups indexed before took 40 s."""
    base = subtree(plain_slapd, users=1000)
    everyone = "".join(f"uniqueMember: uid=u{i},{base}\n" for i in range(1, 1001))
    plain_slapd.add_ldif("\n".join(f"dn: cn=all{n},ou=groups,{base}\nobjectClass: groupOfUniqueNames\n"
                                   f"cn: all{n}\n{everyone}" for n in range(100)))
    resource = system(plain_slapd, base).resource("account")
    began = time.process_time()
    users = by_uid(resource, fields=["uid", "ldapGroups"])
    assert time.process_time() - began < 10
    assert len(users) == 1000 and len(users["u1000"]["ldapGroups"]) == 100 and len(users["u1"]["ldapGroups"]) == 101


def test_ldap_groups_written_on_the_groups(server: Slapd) -> None:
    """Writing ldapGroups adds the entry's DN to the groups it joins and removes it from
    those it leaves (one value each: the other members stay), whatever the spelling
    of the group DNs; reading it back gives the new groups."""
    base = subtree(server)
    resource = system(server, base).resource("account")
    u1 = by_uid(resource)["u1"]
    g1, g2, g3 = (f"cn={g},ou=groups,{base}" for g in ("g1", "g2", "g3"))
    update(resource, u1["_id"], ldapGroups=[g2.upper().replace(",", " , "), g3])
    assert members(server, g1) == [norm_dn(f"uid=u2,{base}")]
    assert members(server, g2) == sorted(norm_dn(f"uid={u},{base}") for u in ("u1", "u2"))
    assert sorted(map(norm_dn, by_uid(resource)["u1"]["ldapGroups"])) == sorted(map(norm_dn, [g2, g3]))
    update(resource, u1["_id"], ldapGroups=[g3])
    assert members(server, g2) == [norm_dn(f"uid=u2,{base}")]
    assert [norm_dn(g) for g in by_uid(resource)["u1"]["ldapGroups"]] == [norm_dn(g3)]


def test_a_new_entry_joins_its_groups(server: Slapd) -> None:
    """A create with ldapGroups and a password: the entry is made, its DN added to the
    groups, and the password works for a bind (and is not read back)."""
    base = subtree(server)
    resource = system(server, base).resource("account")
    g2 = f"cn=g2,ou=groups,{base}"
    (result,) = resource.write_batch([WriteOp("create", values={
        "dn": f"uid=new,{base}", "uid": "new", "cn": "New", "sn": "N", "password": "s3cret-pw",
        "ldapGroups": [g2]})])
    assert result.error is None, result.error
    assert norm_dn(f"uid=new,{base}") in members(server, g2)
    assert [norm_dn(g) for g in result.obj["ldapGroups"]] == [norm_dn(g2)]
    assert "password" not in result.obj
    assert can_bind(server, f"uid=new,{base}", "s3cret-pw")


def test_password_update_is_write_only(server: Slapd) -> None:
    """__PASSWORD__ writes userPassword: the new password binds, the old one no longer."""
    base = subtree(server)
    resource = system(server, base).resource("account")
    update(resource, by_uid(resource)["u1"]["_id"], password="n3w-password")
    assert can_bind(server, f"uid=u1,{base}", "n3w-password")
    assert not can_bind(server, f"uid=u1,{base}", "pw-u1")


def test_enable_false_locks_and_true_unlocks(server: Slapd) -> None:
    """__ENABLE__ false sets ppolicy's permanent lock: the user's bind is refused and the
    account reads as disabled; true removes the lock and the same password binds again."""
    base = subtree(server)
    resource = system(server, base).resource("account")
    dn, uid = f"uid=u1,{base}", by_uid(resource)["u1"]["_id"]
    assert can_bind(server, dn, "pw-u1")
    update(resource, uid, enabled=False)
    assert (ldap_entry(server, dn) or {})["pwdaccountlockedtime"] == ["000001010000Z"]
    assert not can_bind(server, dn, "pw-u1")
    assert by_uid(resource)["u1"]["enabled"] is False
    update(resource, uid, enabled=False)  # already locked: nothing to change
    update(resource, uid, enabled="true")
    assert "pwdaccountlockedtime" not in (ldap_entry(server, dn) or {})
    assert can_bind(server, dn, "pw-u1")
    assert by_uid(resource)["u1"]["enabled"] is True
    (bad,) = resource.write_batch([WriteOp("update", id=uid, values={"enabled": "maybe"})])
    assert isinstance(bad.error, ObjectRejected)


def test_enable_through_a_configured_lock_attribute(slapd: Slapd) -> None:
    """``accountLockAttribute``/``accountLockValue`` choose where __ENABLE__ lives (as
    nsAccountLock or ds-pwp-account-disabled would on 389 DS or PingDS): false writes
    the value, true removes the attribute, and only that value reads as disabled."""
    base = subtree(slapd)
    resource = system(slapd, base, accountLockAttribute="employeeType", accountLockValue="LOCKED").resource("account")
    dn, uid = f"uid=u1,{base}", by_uid(resource)["u1"]["_id"]
    update(resource, uid, enabled=False)
    assert (ldap_entry(slapd, dn) or {})["employeetype"] == ["LOCKED"]
    assert by_uid(resource)["u1"]["enabled"] is False
    slapd.add_ldif(f"dn: uid=u2,{base}\nchangetype: modify\nadd: employeeType\nemployeeType: contractor\n")
    assert by_uid(resource)["u2"]["enabled"] is True
    update(resource, uid, enabled=True)
    assert "employeetype" not in (ldap_entry(slapd, dn) or {})


def test_rename_and_delete_keep_groups_right(plain_slapd: Slapd) -> None:
    """On a directory without referential integrity, maintainLdapGroupMembership moves a
    renamed entry's DN in its groups and takes a deleted entry out of them; without
    it the groups keep naming a DN that no longer exists."""
    base = subtree(plain_slapd)
    g1, g2 = (f"cn={g},ou=groups,{base}" for g in ("g1", "g2"))
    kept = system(plain_slapd, base, maintainLdapGroupMembership=True).resource("account")
    users = by_uid(kept)
    update(kept, users["u2"]["_id"], uid="u2b")
    assert norm_dn(f"uid=u2b,{base}") in members(plain_slapd, g1)
    assert members(plain_slapd, g2) == [norm_dn(f"uid=u2b,{base}")]
    assert len(by_uid(kept)["u2b"]["ldapGroups"]) == 3
    (deleted,) = kept.write_batch([WriteOp("delete", id=users["u1"]["_id"])])
    assert deleted.error is None, deleted.error
    assert members(plain_slapd, g1) == [norm_dn(f"uid=u2b,{base}")]

    other = subtree(plain_slapd)
    left_alone = system(plain_slapd, other).resource("account")
    update(left_alone, by_uid(left_alone)["u2"]["_id"], uid="u2c")
    assert norm_dn(f"uid=u2,{other}") in members(plain_slapd, f"cn=g2,ou=groups,{other}")


def test_posix_groups_follow_uid_changes_and_deletes(plain_slapd: Slapd) -> None:
    """maintainPosixGroupMembership: a posixGroup's memberUid follows a user's new uid,
    and loses a deleted user's uid."""
    base = subtree(plain_slapd)
    group = f"cn=devs,ou=groups,{base}"
    plain_slapd.add_ldif(f"dn: {group}\nobjectClass: posixGroup\ncn: devs\ngidNumber: 5000\n"
                         "memberUid: u1\nmemberUid: u2\n")
    resource = system(plain_slapd, base, maintainPosixGroupMembership=True).resource("account")
    users = by_uid(resource)
    update(resource, users["u1"]["_id"], uid="u1b")
    assert members(plain_slapd, group, "memberuid") == ["u1b", "u2"]
    (deleted,) = resource.write_batch([WriteOp("delete", id=users["u2"]["_id"])])
    assert deleted.error is None, deleted.error
    assert members(plain_slapd, group, "memberuid") == ["u1b"]


def test_joining_a_missing_group_fails_that_object(server: Slapd) -> None:
    """A group that does not exist fails the write of that object (not read as the
    object being gone), and the other groups of the change are still applied."""
    base = subtree(server)
    resource = system(server, base).resource("account")
    (result,) = resource.write_batch([WriteOp("update", id=by_uid(resource)["u1"]["_id"], values={
        "ldapGroups": [f"cn=g1,ou=groups,{base}", f"cn=nope,ou=groups,{base}"]})])
    assert isinstance(result.error, ObjectRejected) and "cn=nope" in str(result.error)


def test_queries_on_special_names(server: Slapd) -> None:
    """A filter on __UID__ is a filter on the uid attribute; one on ldapGroups without
    ldapGroupsAttribute, or on __ENABLE__, is refused with the property's name."""
    from idsync.errors import QueryError
    from idsync.query.parser import parse as parse_filter

    base = subtree(server)
    resource = system(server, base).resource("account")
    u1 = by_uid(resource)["u1"]
    found = [o for page in resource.pages(QuerySpec(filter=parse_filter(f'id eq "{u1["_id"]}"'))) for o in page]
    assert [o["uid"] for o in found] == ["u1"]
    for text in ('enabled eq true', 'ldapGroups eq "x"'):
        with pytest.raises(QueryError, match="cannot be used in a query filter"):
            list(resource.pages(QuerySpec(filter=parse_filter(text))))


def test_active_directory_enable_and_password_encoding() -> None:
    """With objectGUID ids (Active Directory) __ENABLE__ is userAccountControl's bit 2,
    the other bits kept, and __PASSWORD__ is unicodePwd, the quoted password in
    UTF-16LE (over LDAPS); a hash is refused, since AD would take it for the password."""
    config = {"configurationProperties": {"host": "ad", "baseContexts": ["dc=ad"], "uidAttribute": "objectGUID",
                                          "ssl": True},
              "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": PROPERTIES}}}
    settings, types = parse_ldap_config(FILE, config)
    enabled, password = types["account"].properties["enabled"], types["account"].properties["password"]
    raw = {"useraccountcontrol": [b"66048"]}  # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
    assert encode_special(enabled, False, raw, settings) == {
        "userAccountControl": [(ldap3.MODIFY_REPLACE, ["66050"])]}
    assert encode_special(enabled, True, raw, settings) == {}
    assert encode_special(enabled, True, {"useraccountcontrol": [b"514"]}, settings) == {
        "userAccountControl": [(ldap3.MODIFY_REPLACE, ["512"])]}
    assert encode_special(password, "Pa55", None, settings) == {
        "unicodePwd": [(ldap3.MODIFY_REPLACE, ['"Pa55"'.encode("utf-16-le")])]}
    with pytest.raises(ObjectRejected, match="clear password"):
        encode_special(password, "{CRYPT}$6$x", None, settings)


def test_member_ids_of_a_group_are_its_members_ids(server: Slapd) -> None:
    """``_memberId`` on a group (``getGroupMemberId``) reads the ``uidAttribute`` value of
    each entry its ``groupMemberAttribute`` names: the members' entryUUIDs, or their DNs
    with DN ids; a member DN naming no entry is left out; it is never written."""
    base = subtree(server)
    server.add_ldif(f"dn: cn=g1,ou=groups,{base}\nchangetype: modify\nadd: uniqueMember\n"
                    f"uniqueMember: uid=gone,{base}\n")
    group_properties = {"cn": {"type": "string"},
                        "members": {"type": "array", "items": {"type": "string"}, "nativeName": "_memberId",
                                    "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]}}

    def groups(uid_attribute: str) -> dict[str, dict[str, Any]]:
        config = {**config_of(server, base, uidAttribute=uid_attribute, getGroupMemberId=True,
                              accountSearchFilter=None), "objectTypes": {"group": {
            "nativeType": "__GROUP__", "objectClass": ["groupOfUniqueNames"], "properties": group_properties}}}
        resource = LdapSystem("ldap", config, file=FILE).resource("group")
        try:
            return {o["cn"]: o for page in resource.pages(QuerySpec()) for o in page}
        finally:
            resource.close()

    accounts = by_uid(system(server, base).resource("account"))
    by_uuid = groups("entryUUID")
    assert sorted(by_uuid["g1"]["members"]) == sorted(accounts[u]["_id"] for u in ("u1", "u2"))
    assert by_uuid["g2"]["members"] == [accounts["u2"]["_id"]]
    by_dn = groups("dn")
    assert sorted(map(norm_dn, by_dn["g1"]["members"])) == sorted(
        norm_dn(f"uid={u},{base}") for u in ("u1", "u2", "gone"))
