"""LDAP group members as references to managed users, through links (``store/system_refs.py``,
``connectors/ldap/member_refs.py``), against a real slapd without memberOf or
referential integrity (groups follow renames through ``maintainLdapGroupMembership``)
and a real store: a group's ``uniqueMember`` DNs become a role's ``members``
references, a role's references become the DNs of the linked entries, a user
renamed in the store keeps every membership whichever mapping runs first, and a
member no mapping manages is never taken out of the group. Both id kinds: DNs
(``"uidAttribute": "dn"``) and ``entryUUID``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import Project, load_project
from idsync.connectors.ldap.members import norm_dn
from idsync.managed.service import ManagedObjects
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.recon import run_recon
from idsync_dev import Slapd

from samples import ldap_entry

pytestmark = pytest.mark.slapd

USERS_IN, USERS_OUT = "ldapAccounts_managedUser", "managedUser_ldapAccounts"
GROUPS_IN, GROUPS_OUT = "ldapGroups_managedRole", "managedRole_ldapGroups"
_numbers = itertools.count(1)
_STRING = {"type": "string", "nativeType": "string"}
_POLICIES = [{"situation": s, "action": a} for s, a in (
    ("CONFIRMED", "UPDATE"), ("FOUND", "UPDATE"), ("ABSENT", "CREATE"), ("MISSING", "IGNORE"),
    ("SOURCE_MISSING", "IGNORE"), ("UNQUALIFIED", "IGNORE"), ("UNASSIGNED", "IGNORE"))]


def _provisioner(slapd: Slapd, base: str, uid: str) -> dict[str, Any]:
    members = {"type": "array", "items": _STRING, "nativeName": "uniqueMember", "nativeType": "string"}
    return {"name": "ldap", "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
            "configurationProperties": {
                "host": "127.0.0.1", "port": slapd.port, "principal": slapd.admin_dn,
                "credentials": slapd.admin_password, "baseContexts": [base], "baseContextsToSynchronize": [base],
                "accountObjectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                "groupObjectClasses": ["top", "groupOfUniqueNames"], "groupMemberAttribute": "uniqueMember",
                "uidAttribute": uid, "maintainLdapGroupMembership": True},
            "objectTypes": {
                "account": {"nativeType": "__ACCOUNT__", "properties": {
                    "dn": {**_STRING, "nativeName": "__NAME__"}, "uid": _STRING, "cn": _STRING, "sn": _STRING}},
                "group": {"nativeType": "__GROUP__", "properties": {
                    "dn": {**_STRING, "nativeName": "__NAME__"}, "cn": _STRING, "uniqueMember": members}}}}


def _relation(reverse: str, collection: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "relationship", "reverseRelationship": True,
                                       "reversePropertyName": reverse,
                                       "resourceCollection": [{"path": collection}]}}


_MANAGED = {"objects": [
    {"name": "user", "schema": {"properties": {
        "userName": {"type": "string", "searchable": True}, "sn": {"type": "string"},
        "displayName": {"type": "string"}, "roles": _relation("members", "managed/role")},
        "required": ["userName"]}},
    {"name": "role", "schema": {"properties": {
        "name": {"type": "string", "searchable": True}, "members": _relation("roles", "managed/user")},
        "required": ["name"]}}]}


def _mappings(base: str) -> dict[str, Any]:
    def on_create(rdn: str, name: str) -> dict[str, Any]:
        return {"type": "text/javascript", "source": f"target.dn = '{rdn}=' + source.{name} + ',{base}';"}

    return {"mappings": [
        {"name": USERS_IN, "source": "system/ldap/account", "target": "managed/user", "policies": _POLICIES,
         "correlationQuery": {"_queryFilter": 'userName eq "${source.uid}"'},
         "properties": [{"source": "uid", "target": "userName"}, {"source": "sn", "target": "sn"},
                        {"source": "cn", "target": "displayName"}]},
        {"name": USERS_OUT, "source": "managed/user", "target": "system/ldap/account", "links": USERS_IN,
         "policies": _POLICIES, "onCreate": on_create("uid", "userName"),
         "properties": [{"source": "userName", "target": "uid"}, {"source": "sn", "target": "sn"},
                        {"source": "displayName", "target": "cn"}]},
        {"name": GROUPS_IN, "source": "system/ldap/group", "target": "managed/role", "policies": _POLICIES,
         "correlationQuery": {"_queryFilter": 'name eq "${source.cn}"'},
         "properties": [{"source": "cn", "target": "name"}, {"source": "uniqueMember", "target": "members"}]},
        {"name": GROUPS_OUT, "source": "managed/role", "target": "system/ldap/group", "links": GROUPS_IN,
         "policies": _POLICIES, "onCreate": on_create("cn", "name"),
         "properties": [{"source": "name", "target": "cn"}, {"source": "members", "target": "uniqueMember"}]},
    ]}


class _Bench:
    def __init__(self, slapd: Slapd, base: str, project: Project) -> None:
        self.slapd, self.base, self.project = slapd, base, project
        self.store = Store.open(project.settings.store_url())

    def recon(self, mapping: str) -> int:
        """Run ``mapping``; how many objects it wrote."""
        result = run_recon(self.project, self.store, mapping)
        assert result.state == "SUCCESS", result.message
        changes = result.summary["changes"]
        assert changes["failed"] == 0, result.summary
        return sum(changes[k] for k in ("created", "updated", "deleted", "linked", "unlinked"))

    def managed(self, kind: str) -> ManagedObjects:
        return ManagedObjects(self.project, self.store, Resources(self.project, self.store), kind)

    def objects(self, kind: str, key: str) -> dict[str, dict[str, Any]]:
        res = Resources(self.project, self.store).open(f"managed/{kind}")
        return {o[key]: o for page in res.pages(QuerySpec()) for o in page}

    def members(self, role: str) -> list[str]:
        """The userNames of a role's members."""
        names = {f"managed/user/{u['_id']}": n for n, u in self.objects("user", "userName").items()}
        return sorted(names[m["_ref"]] for m in self.objects("role", "name")[role].get("members") or [])

    def group(self, cn: str) -> list[str]:
        """The uid (or cn) of each member DN of a group, as the directory holds them."""
        entry = ldap_entry(self.slapd, f"cn={cn},{self.base}") or {}
        return sorted(norm_dn(m).split(",")[0].split("=")[1] for m in entry.get("uniquemember", []))


@pytest.fixture(params=["dn", "entryUUID"])
def bench(request: pytest.FixtureRequest, tmp_path: Path, plain_slapd: Slapd) -> Iterator[_Bench]:
    """jdoe and bjensen; group ops holds jdoe and cn=keeper, an entry no mapping reads."""
    ou = f"gr{next(_numbers)}"
    base = f"ou={ou},ou=People,{plain_slapd.base_dn}"
    people = [f"dn: uid={u},{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\n"
              for u in ("jdoe", "bjensen")]
    group = (f"dn: cn=ops,{base}\nobjectClass: groupOfUniqueNames\ncn: ops\n"
             f"uniqueMember: cn=keeper,{base}\nuniqueMember: uid=jdoe,{base}\n")
    plain_slapd.add_ldif("\n".join([f"dn: {base}\nobjectClass: organizationalUnit\nou: {ou}\n", *people, group]))
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    (conf / "provisioner.openicf-ldap.json").write_text(json.dumps(_provisioner(plain_slapd, base, request.param)))
    (conf / "sync.json").write_text(json.dumps(_mappings(base)))
    (conf / "managed.json").write_text(json.dumps(_MANAGED))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    bench = _Bench(plain_slapd, base, load_project(tmp_path / "project"))
    yield bench
    bench.store.close()


def _ref(obj: dict[str, Any]) -> dict[str, str]:
    return {"_ref": f"managed/user/{obj['_id']}"}


def test_members_follow_links_both_ways_and_through_renames(bench: _Bench) -> None:
    """A group's member DNs arrive as references to the linked users (keeper, linked to
    nobody, is left out of the role and left in the group); a member added to the role
    is written as the entry's DN; a user renamed in the store keeps the role and the
    group whichever groups mapping runs first, and a second pass writes nothing; a
    member removed from the role leaves the group, keeper stays."""
    bench.recon(USERS_IN)
    bench.recon(GROUPS_IN)
    assert bench.members("ops") == ["jdoe"]

    users = bench.objects("user", "userName")
    ops = bench.objects("role", "name")["ops"]
    add = [{"operation": "add", "field": "/members/-", "value": _ref(users["bjensen"])}]
    change = bench.managed("role").patch(ops["_id"], add)
    assert change.synced, [p.error for p in change.pushes]
    assert bench.group("ops") == ["bjensen", "jdoe", "keeper"]

    rename = [{"operation": "replace", "field": "/userName", "value": "johnd"}]
    change = bench.managed("user").patch(users["jdoe"]["_id"], rename)
    assert change.synced, [p.error for p in change.pushes]
    assert bench.group("ops") == ["bjensen", "johnd", "keeper"]
    for mapping in (GROUPS_OUT, GROUPS_IN, USERS_IN, USERS_OUT, GROUPS_IN, GROUPS_OUT):
        assert bench.recon(mapping) == 0, mapping
        assert bench.members("ops") == ["bjensen", "johnd"], mapping
        assert bench.group("ops") == ["bjensen", "johnd", "keeper"], mapping

    remove = [{"operation": "remove", "field": "/members", "value": _ref(users["bjensen"])}]
    change = bench.managed("role").patch(ops["_id"], remove)
    assert change.synced, [p.error for p in change.pushes]
    assert bench.group("ops") == ["johnd", "keeper"]


def test_renamed_then_groups_read_first(bench: _Bench) -> None:
    """A rename pushed from the store, then the groups-to-roles recon before any users
    recon: the member is still the same managed user."""
    bench.recon(USERS_IN)
    bench.recon(GROUPS_IN)
    jdoe = bench.objects("user", "userName")["jdoe"]
    change = bench.managed("user").patch(jdoe["_id"], [{"operation": "replace", "field": "/userName",
                                                        "value": "jd2"}])
    assert change.synced, [p.error for p in change.pushes]
    bench.recon(GROUPS_IN)
    assert bench.members("ops") == ["jd2"]
