"""A project in the shape of OpenIDM's LDAP group samples (DN ids, the virtual
``ldapGroups`` mapped both ways, stock OpenICF keys), driven through the real
``idsync`` command against a directory without memberOf and a real store
(SQLite, PostgreSQL): groups arrive in the managed users, a change of a user's
``ldapGroups`` changes the groups, a rename keeps them, ``__ENABLE__`` locks, and
a second pass writes nothing."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from dbs import WITH_MARIADB, store_url
from idsync.connectors.ldap.members import norm_dn
from idsync_dev import Slapd

from samples import can_bind, idsync, ldap_entry

pytestmark = pytest.mark.slapd

FORWARD, REVERSE = "ldapAccounts_managedUser", "managedUser_ldapAccounts"
_numbers = itertools.count(1)


def _provisioner(slapd: Slapd, base: str) -> dict[str, Any]:
    string = {"type": "string", "nativeType": "string"}
    return {
        "name": "ldap",
        "connectorRef": {"bundleName": "org.openidentityplatform.openicf.connectors.ldap-connector",
                         "connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {
            "host": "127.0.0.1", "port": slapd.port, "ssl": False, "principal": slapd.admin_dn,
            "credentials": slapd.admin_password, "baseContexts": [base], "baseContextsToSynchronize": [base],
            "accountSearchFilter": None, "accountSynchronizationFilter": None, "groupSearchFilter": None,
            "synchronizePasswords": False, "changeLogBlockSize": 100, "objectClassesToSynchronize": ["inetOrgPerson"],
            "vlvSortAttribute": "uid", "passwordAttribute": "userPassword", "useBlocks": False,
            "maintainPosixGroupMembership": False, "failover": [], "readSchema": False,
            "accountObjectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "accountUserNameAttributes": ["uid"], "groupMemberAttribute": "uniqueMember",
            "usePagedResultControl": True, "blockSize": 100, "uidAttribute": "dn",
            "maintainLdapGroupMembership": True,
        },
        "poolConfigOption": {"maxObjects": 10, "minIdle": 1},
        "operationTimeout": {"CREATE": -1, "SEARCH": -1},
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "dn": {**string, "nativeName": "__NAME__", "required": True},
            "uid": string, "cn": string, "sn": string, "givenName": string,
            "enabled": {"type": "boolean", "nativeName": "__ENABLE__", "nativeType": "boolean"},
            "ldapGroups": {"type": "array", "items": string, "nativeName": "ldapGroups", "nativeType": "string"},
        }}},
    }


def _mappings(base: str) -> dict[str, Any]:
    def js(text: str) -> dict[str, str]:
        return {"type": "text/javascript", "source": text}

    policies = [{"situation": s, "action": a} for s, a in (
        ("CONFIRMED", "UPDATE"), ("FOUND", "UPDATE"), ("ABSENT", "CREATE"), ("MISSING", "IGNORE"),
        ("SOURCE_MISSING", "DELETE"), ("UNQUALIFIED", "IGNORE"), ("UNASSIGNED", "IGNORE"))]
    return {"mappings": [
        # DN ids: LDAP compares them ignoring case, and so do the links (``validate`` asks for it).
        {"name": FORWARD, "source": "system/ldap/account", "target": "managed/user", "policies": policies,
         "sourceIdsCaseSensitive": False,
         "properties": [{"source": "uid", "target": "userName"}, {"source": "sn", "target": "sn"},
                        {"source": "givenName", "target": "givenName"}, {"source": "cn", "target": "displayName"},
                        {"source": "ldapGroups", "target": "ldapGroups"},
                        {"source": "enabled", "target": "accountStatus",
                         "transform": js("source === false ? 'inactive' : 'active'")}]},
        {"name": REVERSE, "source": "managed/user", "target": "system/ldap/account",
         "links": FORWARD, "policies": policies,
         "correlationQuery": {"_queryFilter": 'uid eq "${source.userName}"'},
         "onCreate": js(f"target.dn = 'uid=' + source.userName + ',{base}';"),
         "properties": [{"source": "userName", "target": "uid"}, {"source": "sn", "target": "sn"},
                        {"source": "givenName", "target": "givenName"}, {"source": "displayName", "target": "cn"},
                        {"source": "ldapGroups", "target": "ldapGroups"},
                        {"source": "accountStatus", "target": "enabled", "transform": js("source !== 'inactive'")}]},
    ]}


_MANAGED = {"objects": [{"name": "user", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True}, "sn": {"type": "string"},
    "givenName": {"type": "string"}, "displayName": {"type": "string"},
    "accountStatus": {"type": "string", "default": "active"}, "ldapGroups": {"type": "array"}},
    "required": ["userName"]}}]}


@pytest.fixture(params=WITH_MARIADB)
def project(request: pytest.FixtureRequest, tmp_path: Path, plain_slapd: Slapd) -> tuple[Path, str]:
    """The project and its directory subtree: jdoe in group openidm, bjensen in
    openidm2, nobody in Employees."""
    ou = f"gp{next(_numbers)}"
    base = f"ou={ou},ou=People,{plain_slapd.base_dn}"
    people = [f"dn: uid={u},{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {cn}\nsn: {cn.split()[1]}\n"
              f"givenName: {cn.split()[0]}\nuserPassword: pw-{u}\n"
              for u, cn in (("jdoe", "John Doe"), ("bjensen", "Barbara Jensen"))]
    # OpenLDAP's groupOfUniqueNames must keep one member: each group has a placeholder.
    groups = [f"dn: cn={g},{base}\nobjectClass: groupOfUniqueNames\ncn: {g}\nuniqueMember: cn=nobody,{base}\n"
              + "".join(f"uniqueMember: uid={m},{base}\n" for m in ms)
              for g, ms in (("openidm", ["jdoe"]), ("openidm2", ["bjensen"]), ("Employees", []))]
    plain_slapd.add_ldif("\n".join([f"dn: {base}\nobjectClass: organizationalUnit\nou: {ou}\n", *people, *groups]))
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    (conf / "provisioner.openicf-ldap.json").write_text(json.dumps(_provisioner(plain_slapd, base)))
    (conf / "sync.json").write_text(json.dumps(_mappings(base)))
    (conf / "managed.json").write_text(json.dumps(_MANAGED))
    (conf / "idsync.toml").write_text(f'state_dir = "state"\n[store]\nurl = "{store_url(request.param, tmp_path)}"\n'
                                      '[log]\nformat = "json"\nlevel = "warning"\n')
    return tmp_path / "project", base


def _run(project: Path, *args: str) -> Any:
    done = idsync(project, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in args or args[0] == "managed" else done.stdout


def _users(project: Path) -> dict[str, dict[str, Any]]:
    return {u["userName"]: u for u in _run(project, "managed", "query", "user")}


def _writes(summary: dict[str, Any]) -> int:
    return sum(summary["changes"][k] for k in ("created", "updated", "deleted", "linked", "unlinked", "failed"))


def _members(slapd: Slapd, group: str) -> list[str]:
    return sorted(norm_dn(m) for m in (ldap_entry(slapd, group) or {}).get("uniquemember", []))


def test_ldap_groups_both_ways(project: tuple[Path, str], plain_slapd: Slapd) -> None:
    """validate passes, warning only that OpenICF's pool settings are not used (the
    stock LDAP keys ask for nothing idsync lacks);
    the recon brings each user's groups into the store; a patch of bjensen's
    ldapGroups moves her from openidm2 to Employees in the directory; a new userName
    renames jdoe's entry and his group follows; accountStatus inactive locks
    bjensen out; then a second pass of both mappings writes nothing."""
    path, base = project
    validated = _run(path, "validate", "--json")
    assert validated["ok"], validated
    assert [w["problem"].split(":")[0] for w in validated["warnings"]] == ["not used"], validated
    assert "OpenICF framework settings" in validated["warnings"][0]["problem"]
    assert _run(path, "recon", FORWARD, "--json")["situationSummary"]["ABSENT"] == 2
    users = _users(path)
    assert [norm_dn(g) for g in users["jdoe"]["ldapGroups"]] == [norm_dn(f"cn=openidm,{base}")]
    assert [norm_dn(g) for g in users["bjensen"]["ldapGroups"]] == [norm_dn(f"cn=openidm2,{base}")]
    assert _writes(_run(path, "recon", REVERSE, "--json")) == 0

    employees = f"cn=Employees,{base}"
    move = [{"operation": "replace", "field": "/ldapGroups", "value": [employees]},
            {"operation": "replace", "field": "/accountStatus", "value": "inactive"}]
    _run(path, "managed", "patch", "user", users["bjensen"]["_id"], "--operations", json.dumps(move))
    bjensen = norm_dn(f"uid=bjensen,{base}")
    assert bjensen in _members(plain_slapd, employees)
    assert bjensen not in _members(plain_slapd, f"cn=openidm2,{base}")
    assert not can_bind(plain_slapd, f"uid=bjensen,{base}", "pw-bjensen")

    rename = [{"operation": "replace", "field": "/userName", "value": "johnd"}]
    _run(path, "managed", "patch", "user", users["jdoe"]["_id"], "--operations", json.dumps(rename))
    assert norm_dn(f"uid=johnd,{base}") in _members(plain_slapd, f"cn=openidm,{base}")
    assert norm_dn(f"uid=jdoe,{base}") not in _members(plain_slapd, f"cn=openidm,{base}")
    assert can_bind(plain_slapd, f"uid=johnd,{base}", "pw-jdoe")

    for mapping in (FORWARD, REVERSE):
        _run(path, "recon", mapping, "--json")
    for mapping in (FORWARD, REVERSE):
        assert _writes(_run(path, "recon", mapping, "--json")) == 0, mapping
    final = _users(path)
    assert [norm_dn(g) for g in final["bjensen"]["ldapGroups"]] == [norm_dn(employees)]
    assert final["bjensen"]["accountStatus"] == "inactive"
    assert [norm_dn(g) for g in final["johnd"]["ldapGroups"]] == [norm_dn(f"cn=openidm,{base}")]


def test_validate_warns_about_what_is_not_acted_on(project: tuple[Path, str]) -> None:
    """Stock keys asking for what idsync does not do are warnings naming the file and
    the key, and so is a property under a special name idsync does not implement;
    validate still succeeds."""
    path, _ = project
    prov_file = path / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(readSchema=True, synchronizePasswords=True, failover=["ldap://b/"],
                                           usePagedResultsControl=True, attributesToSynchronize=["uid"])
    prov["operationOptions"] = {"DELETE": {"denied": True, "onDeny": "DO_NOTHING"}}
    prov["objectTypes"]["account"]["properties"]["smartcard"] = {"type": "boolean",
                                                                 "nativeName": "__SMARTCARD_REQUIRED__"}
    prov["objectTypes"]["account"]["properties"]["posix"] = {"type": "array", "nativeName": "posixGroups"}
    prov_file.write_text(json.dumps(prov))
    validated = _run(path, "validate", "--json")
    assert validated["ok"], validated
    warnings = {w["key"]: w["problem"] for w in validated["warnings"]}
    assert all(w["file"] == str(prov_file) for w in validated["warnings"])
    # readSchema and the stock keys of OpenICF's changelog reading ask for nothing idsync would
    # do otherwise; a denied DELETE and the failover servers are followed. attributesToSynchronize
    # chooses which changes liveSync applies: idsync's applies them all.
    assert set(warnings) == {
        "configurationProperties.synchronizePasswords", "configurationProperties.usePagedResultsControl",
        "configurationProperties.attributesToSynchronize",
        "objectTypes.account.properties.smartcard.nativeName",
        "objectTypes.account.properties.posix.nativeName",
        # OpenICF's pool and timeout settings, for every connector (config/unused.py)
        "{poolConfigOption,operationTimeout}"}
    assert "liveSync" in warnings["configurationProperties.synchronizePasswords"]
    assert "did you mean usePagedResultControl?" in warnings["configurationProperties.usePagedResultsControl"]
    assert "never read or written" in warnings["objectTypes.account.properties.smartcard.nativeName"]
    assert _run(path, "validate").endswith("configuration ok\n")  # warnings go to stderr


def test_validate_names_the_livesync_filters_it_does_not_apply(project: tuple[Path, str]) -> None:
    """Of OpenICF's keys choosing which directory changes liveSync applies, idsync follows
    the filters per object type, the skipped modifiers and the account object classes
    (``tests/test_livesync.py``), and not the attributes that must have changed: that one
    set is a warning naming the file and the key, and so are object classes the account
    entries lack (then no change of theirs is applied). At their stock values (null, empty,
    ``inetOrgPerson``, the keys of changelog reading) nothing is said; a bad filter is an
    error naming its key."""
    path, _ = project
    prov_file = path / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(attributesToSynchronize=[], modifiersNamesToFilterOut=[],
                                           groupSynchronizationFilter=None, changeNumberAttribute="changeNumber",
                                           removeLogEntryObjectClassFromFilter=True)
    prov_file.write_text(json.dumps(prov))
    stock = _run(path, "validate", "--json")
    assert not [w for w in stock["warnings"] if w["key"].startswith("configurationProperties.")], stock

    prov["configurationProperties"].update(
        accountSynchronizationFilter="(!(employeeType=contractor))", groupSynchronizationFilter="(cn=a*)",
        modifiersNamesToFilterOut=["cn=idm,ou=services,dc=example,dc=com"], attributesToSynchronize=["mail"],
        objectClassesToSynchronize=["posixAccount"])
    prov_file.write_text(json.dumps(prov))
    validated = _run(path, "validate", "--json")
    assert validated["ok"], validated
    warnings = {w["key"]: w["problem"] for w in validated["warnings"]
                if w["file"] == str(prov_file) and w["key"].startswith("configurationProperties.")}
    assert set(warnings) == {"configurationProperties.attributesToSynchronize",
                             "configurationProperties.objectClassesToSynchronize"}, warnings
    assert "liveSync applies every change" in warnings["configurationProperties.attributesToSynchronize"]
    assert "posixaccount" in warnings["configurationProperties.objectClassesToSynchronize"]
    assert "no others" in warnings["configurationProperties.objectClassesToSynchronize"]

    prov["configurationProperties"].update(accountSynchronizationFilter="(employeeType=contractor")
    prov_file.write_text(json.dumps(prov))
    refused = idsync(path, "validate", "--json")
    assert refused.returncode == 78, refused.stderr
    assert [p["key"] for p in json.loads(refused.stdout)["problems"]] == [
        "configurationProperties.accountSynchronizationFilter"], refused.stdout
