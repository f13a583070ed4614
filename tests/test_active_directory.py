"""The LDAP connector against a real Active Directory domain controller (Samba AD,
``idsync_dev.samba_ad``): objectGUID ids, users under AD's naming rules, renames and
moves, userAccountControl, unicodePwd, large groups read in ranges, memberOf."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from directory_servers import changes_since
from idsync.connectors.ldap.adnames import check_names
from idsync.connectors.ldap.config import parse_ldap_config
from idsync.connectors.ldap.connection import LdapConnection
from idsync.connectors.ldap.connector import LdapSystem
from idsync.connectors.ldap.values import guid_from_bytes
from idsync.errors import ObjectRejected
from idsync.resource import QuerySpec
from idsync_dev.samba_ad import LARGE_COUNT, LARGE_OU, SambaDC
from idsync_dev.sample_users import iter_sample_ad_users_ldif

FILE = "conf/provisioner.openicf-ad.json"
_DISABLED = 0x2
_NORMAL = 0x200
_DONT_EXPIRE = 0x10000

ACCOUNT: dict[str, Any] = {
    "dn": {"type": "string", "nativeName": "__NAME__"},
    "cn": {"type": "string"},
    "sAMAccountName": {"type": "string"},
    "userPrincipalName": {"type": "string"},
    "givenName": {"type": "string"},
    "sn": {"type": "string"},
    "mail": {"type": "string"},
    "description": {"type": "string"},
    "userAccountControl": {"type": "string", "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]},
    "enabled": {"type": "boolean", "nativeName": "__ENABLE__"},
    "password": {"type": "string", "nativeName": "__PASSWORD__", "flags": ["NOT_READABLE"]},
    "memberOf": {"type": "array", "nativeName": "memberOf", "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]},
}


def ad_config(samba: SambaDC, ou: str, *, ssl: bool = True, **props: Any) -> dict[str, Any]:
    """A provisioner for the domain as docs/active-directory.md describes it, reading ``ou``."""
    return {
        "name": "ad",
        "connectorRef": {"bundleName": "org.forgerock.openicf.connectors.ldap-connector",
                         "connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {
            "host": samba.address, "port": samba.ldaps_port if ssl else samba.port, "ssl": ssl,
            "caFile": samba.ca_file, "principal": samba.admin_dn, "credentials": samba.admin_password,
            "baseContexts": [ou], "baseContextsToSynchronize": [ou],
            "uidAttribute": "objectGUID", "accountUserNameAttributes": ["cn"],
            "accountObjectClasses": ["top", "person", "organizationalPerson", "user"],
            "accountSearchFilter": "(objectCategory=person)",
            "groupObjectClasses": ["top", "group"], "groupMemberAttribute": "member",
            "ldapGroupsAttribute": "memberOf", "connectTimeout": 5, "readTimeout": 30, **props,
        },
        "objectTypes": {
            "account": {"nativeType": "__ACCOUNT__", "properties": ACCOUNT},
            "group": {"nativeType": "__GROUP__", "properties": {
                "dn": {"type": "string", "nativeName": "__NAME__"}, "cn": {"type": "string"},
                "member": {"type": "array"}, "sAMAccountName": {"type": "string"}}},
        },
    }


@pytest.fixture
def ad(samba_ad: SambaDC, ad_ou: str) -> Iterator[LdapSystem]:
    """The AD system over LDAPS, reading this test's own OU."""
    system = LdapSystem("ad", ad_config(samba_ad, ad_ou), file=FILE)
    yield system
    system.close()


def new_user(name: str, **values: Any) -> dict[str, Any]:
    """A user named by cn, with sAMAccountName and userPrincipalName as AD wants them."""
    return {"cn": name, "sAMAccountName": name, "userPrincipalName": f"{name}@idsync.test",
            "sn": name.title(), **values}


def bind_works(samba: SambaDC, dn: str, password: str) -> bool:
    conn = ldap.initialize(samba.ldaps_url)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, samba.ca_file)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    try:
        conn.simple_bind_s(dn, password)
    except ldap.INVALID_CREDENTIALS:
        return False
    finally:
        conn.unbind_ext()
    return True


def raw_attribute(samba: SambaDC, dn: str, attribute: str) -> list[bytes]:
    conn = ldap.initialize(samba.url)
    conn.simple_bind_s(samba.admin_dn, samba.admin_password)
    try:
        found = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", [attribute])
    finally:
        conn.unbind_ext()
    return next(iter(found[0][1].values()), [])


def test_object_guid_is_the_id_in_canonical_form(samba_ad: SambaDC, ad: LdapSystem) -> None:
    """A created user's _id is its objectGUID in AD's string form (first three groups
    little-endian), as ldapsearch shows the 16 bytes; get() finds it by that id."""
    accounts = ad.resource("account")
    created = accounts.create(new_user("gjones", password="Idsync-Pass-0001"))
    raw = raw_attribute(samba_ad, created["dn"], "objectGUID")[0]
    assert created["_id"] == guid_from_bytes(raw)
    done = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", samba_ad.url, "-D", samba_ad.admin_dn,
                           "-w", samba_ad.admin_password, "-b", created["dn"], "-s", "base", "objectGUID"],
                          capture_output=True, text=True, check=True)
    shown = next(line for line in done.stdout.splitlines() if line.startswith("objectGUID::"))
    assert base64.b64decode(shown.split(":: ")[1]) == raw
    assert accounts.get(created["_id"], fields=["sAMAccountName"]) == {
        "_id": created["_id"], "sAMAccountName": "gjones"}


def test_object_guid_id_is_found_in_any_case(ad: LdapSystem) -> None:
    """GUID text is case-insensitive: an objectGUID id given in upper case (as PowerShell's
    Get-ADUser prints it) is found and answered under the id asked for, alongside the same
    id in lower case; an update and a delete by it reach the user."""
    accounts = ad.resource("account")
    created = accounts.create(new_user("upperid", password="Idsync-Pass-0015"))
    upper = created["_id"].upper()
    assert accounts.get(upper, fields=["sAMAccountName"]) == {"_id": created["_id"], "sAMAccountName": "upperid"}
    assert set(accounts.get_many([upper, created["_id"]], fields=["cn"])) == {upper, created["_id"]}
    accounts.update(upper, {"description": "by upper case"})
    assert accounts.get(created["_id"], fields=["description"]) == {"_id": created["_id"],
                                                                     "description": "by upper case"}
    accounts.delete(upper)
    assert accounts.get(created["_id"]) is None


def test_users_created_updated_renamed_moved_deleted(samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """A user is created under the synchronized OU named by cn, with sAMAccountName and
    userPrincipalName; an update changes attributes; a new cn renames it and a new DN moves
    it to another OU, both keeping its objectGUID; a delete removes it."""
    samba_ad.add_ldif(f"dn: OU=moved,{ad_ou}\nobjectClass: organizationalUnit\n")
    accounts = ad.resource("account")
    created = accounts.create(new_user("Ann Lee", sAMAccountName="alee", mail="alee@idsync.test",
                                       password="Idsync-Pass-0002"))
    assert created["dn"] == f"CN=Ann Lee,{ad_ou}"
    assert created["userPrincipalName"] == "Ann Lee@idsync.test"
    updated = accounts.update(created["_id"], {"mail": "ann@idsync.test", "description": "Sales"})
    assert (updated["mail"], updated["description"]) == ("ann@idsync.test", "Sales")
    renamed = accounts.update(created["_id"], {"cn": "Ann Smith"})
    assert renamed["_id"] == created["_id"] and renamed["dn"] == f"CN=Ann Smith,{ad_ou}"
    moved = accounts.update(created["_id"], {"dn": f"CN=Ann Smith,OU=moved,{ad_ou}"})
    assert moved["_id"] == created["_id"] and moved["dn"] == f"CN=Ann Smith,OU=moved,{ad_ou}"
    assert moved["sAMAccountName"] == "alee"
    accounts.delete(created["_id"])
    assert accounts.get(created["_id"]) is None


def test_duplicate_sam_account_name_fails_that_user(ad: LdapSystem) -> None:
    """AD keeps sAMAccountName unique in the domain: a second user with the same one
    fails alone, naming the rule and the entry that holds it (a Windows DC would say
    only ENTRY_EXISTS), and is not created."""
    accounts = ad.resource("account")
    first = accounts.create(new_user("dup1", sAMAccountName="dupname", password="Idsync-Pass-0003"))
    with pytest.raises(ObjectRejected, match=r"sAMAccountName 'dupname' is already in use by CN=dup1,.*"
                                             r"unique in the domain"):
        accounts.create(new_user("dup2", sAMAccountName="dupname", password="Idsync-Pass-0003"))
    assert accounts.find(QuerySpec(native="(cn=dup2)")) == []
    assert accounts.update(first["_id"], {"sAMAccountName": "dupname", "description": "kept"})["description"] == "kept"


def test_sam_account_name_rules_fail_that_object_naming_the_rule(samba_ad: SambaDC, ad: LdapSystem,
                                                                 ad_ou: str) -> None:
    """A user's sAMAccountName of more than 20 characters (Samba takes it, a Windows DC
    refuses it as "problem 22 (Invalid argument)"), one with a character AD forbids, or
    only periods fails that object with the rule named, at create and at update, and
    nothing is written; a group may have up to 256; the next write goes on. A user made
    elsewhere with a longer name is still updated when its name is sent unchanged."""
    accounts, groups = ad.resource("account"), ad.resource("group")
    with pytest.raises(ObjectRejected, match=r"'twentyonecharacters21' has 21 characters; .* at most 20 on a user"):
        accounts.create(new_user("samlong", sAMAccountName="twentyonecharacters21"))
    for bad, shown in (("a/b", "'/'"), ("x[1]", "'\\[' '\\]'"), ("semi;colon", "';'"), ('q"t', "'\"'")):
        with pytest.raises(ObjectRejected, match=f"contains {shown}; Active Directory forbids"):
            accounts.create(new_user("sambad", sAMAccountName=bad))
    with pytest.raises(ObjectRejected, match="only periods and spaces"):
        accounts.create(new_user("samdots", sAMAccountName=". ."))
    assert accounts.find(QuerySpec(native="(|(cn=samlong)(cn=sambad)(cn=samdots))")) == []
    created = accounts.create(new_user("samok", sAMAccountName="twentycharacters--20"))
    with pytest.raises(ObjectRejected, match="at most 20 on a user"):
        accounts.update(created["_id"], {"sAMAccountName": "x" * 21, "description": "not written"})
    assert accounts.get(created["_id"], fields=["sAMAccountName", "description"]) == {
        "_id": created["_id"], "sAMAccountName": "twentycharacters--20"}
    group = groups.create({"cn": "longgroup", "sAMAccountName": "g" * 30})
    assert group["sAMAccountName"] == "g" * 30
    samba_ad.add_ldif(f"dn: CN=legacy,{ad_ou}\nobjectClass: user\nsAMAccountName: legacy-name-of-22-chrs\n")
    (legacy,) = accounts.find(QuerySpec(native="(cn=legacy)", fields=["sAMAccountName"]))
    assert accounts.update(legacy["_id"], {"sAMAccountName": "legacy-name-of-22-chrs", "description": "kept"})[
        "description"] == "kept"


def test_names_not_written_are_not_checked(samba_ad: SambaDC, ad_ou: str) -> None:
    """A sAMAccountName the provisioner marks NOT_UPDATEABLE is not written at an
    update, so a value there that breaks the rules does not fail the update."""
    config = ad_config(samba_ad, ad_ou)
    config["objectTypes"]["account"]["properties"] = {
        **ACCOUNT, "sAMAccountName": {"type": "string", "flags": ["NOT_UPDATEABLE"]}}
    system = LdapSystem("ad", config, file=FILE)
    accounts = system.resource("account")
    created = accounts.create(new_user("fixedsam"))
    updated = accounts.update(created["_id"], {"sAMAccountName": "x" * 30, "description": "written"})
    assert (updated["sAMAccountName"], updated["description"]) == ("fixedsam", "written")
    system.close()


def test_naming_rules_without_a_server() -> None:
    """The rules a Samba DC cannot show: a group's sAMAccountName up to 256 characters
    and not more, control characters refused; only the written names are returned for
    the uniqueness search, an empty one not at all."""
    assert check_names("__GROUP__", {"sAMAccountName": ["g" * 256]}) == {"samaccountname": "g" * 256}
    with pytest.raises(ObjectRejected, match="at most 256 on a group"):
        check_names("__GROUP__", {"sAMAccountName": ["g" * 257]})
    with pytest.raises(ObjectRejected, match=r"contains '\\t'"):
        check_names("__ACCOUNT__", {"sAMAccountName": ["tab\there"]})
    assert check_names("__ACCOUNT__", {"sAMAccountName": [], "mail": ["m@x"],
                                       "userPrincipalName": [b"u@x"]}) == {"userprincipalname": "u@x"}


def test_user_principal_name_form_and_uniqueness(samba_ad: SambaDC, ad_ou: str) -> None:
    """userPrincipalName must be name@suffix (Samba takes any string); one another entry
    under baseContexts holds (the domain here), even outside the synchronized OU, fails
    the object naming that entry, at create and at update; a user keeps its own at an update."""
    elsewhere = f"OU=upnelse,{samba_ad.base_dn}"
    samba_ad.add_ldif(f"dn: {elsewhere}\nobjectClass: organizationalUnit\n\n"
                      f"dn: CN=upnholder,{elsewhere}\nobjectClass: user\nsAMAccountName: upnholder\n"
                      "userPrincipalName: taken@idsync.test\n")
    ad = LdapSystem("ad", ad_config(samba_ad, ad_ou, baseContexts=[samba_ad.base_dn]), file=FILE)
    accounts = ad.resource("account")
    for bad in ("noatsign", "@idsync.test", "name@", "a@b@idsync.test"):
        with pytest.raises(ObjectRejected, match=f"userPrincipalName '{bad}' is not of the form name@suffix"):
            accounts.create(new_user("upnbad", userPrincipalName=bad))
    with pytest.raises(ObjectRejected, match=r"userPrincipalName 'TAKEN@idsync.test' is already in use by "
                                             r"CN=upnholder,OU=upnelse,DC=idsync,DC=test; .* unique in the forest"):
        accounts.create(new_user("upndup", userPrincipalName="TAKEN@idsync.test"))
    assert accounts.find(QuerySpec(native="(|(cn=upnbad)(cn=upndup))")) == []
    created = accounts.create(new_user("upnmine"))
    assert accounts.update(created["_id"], {"userPrincipalName": "upnmine@idsync.test", "description": "same upn"})[
        "description"] == "same upn"
    with pytest.raises(ObjectRejected, match="already in use by CN=upnholder"):
        accounts.update(created["_id"], {"userPrincipalName": "taken@idsync.test"})
    assert accounts.get(created["_id"], fields=["userPrincipalName"])["userPrincipalName"] == "upnmine@idsync.test"
    ad.close()


def test_user_account_control_toggles_only_the_disable_bit(samba_ad: SambaDC, ad: LdapSystem) -> None:
    """__ENABLE__ false sets ACCOUNTDISABLE (2) in userAccountControl and true clears it;
    other bits (DONT_EXPIRE_PASSWORD) stay as they were; reads report the bit."""
    accounts = ad.resource("account")
    created = accounts.create(new_user("toggle", password="Idsync-Pass-0004", enabled=True))
    assert created["enabled"] is True
    flags = int(raw_attribute(samba_ad, created["dn"], "userAccountControl")[0])
    samba_ad.add_ldif(f"dn: {created['dn']}\nchangetype: modify\nreplace: userAccountControl\n"
                      f"userAccountControl: {flags | _DONT_EXPIRE}\n")
    disabled = accounts.update(created["_id"], {"enabled": False})
    assert disabled["enabled"] is False
    assert int(disabled["userAccountControl"]) == flags | _DONT_EXPIRE | _DISABLED
    assert not bind_works(samba_ad, created["dn"], "Idsync-Pass-0004")
    enabled = accounts.update(created["_id"], {"enabled": True})
    assert int(enabled["userAccountControl"]) == (flags | _DONT_EXPIRE) & ~_DISABLED
    assert bind_works(samba_ad, created["dn"], "Idsync-Pass-0004")


def test_unicode_pwd_over_ldaps_sets_the_password(samba_ad: SambaDC, ad: LdapSystem) -> None:
    """__PASSWORD__ writes unicodePwd (quoted UTF-16LE) over LDAPS at create and update:
    the user binds with each password in turn, never with the previous one."""
    accounts = ad.resource("account")
    created = accounts.create(new_user("pwuser", password="Idsync-Pass-0005", enabled=True))
    assert "password" not in created
    assert bind_works(samba_ad, created["dn"], "Idsync-Pass-0005")
    accounts.update(created["_id"], {"password": "Idsync-Pass-0006-ü"})
    assert bind_works(samba_ad, created["dn"], "Idsync-Pass-0006-ü")
    assert not bind_works(samba_ad, created["dn"], "Idsync-Pass-0005")


def test_unicode_pwd_over_start_tls(samba_ad: SambaDC, ad_ou: str) -> None:
    """On the plain port with startTLS, a password is written (the connection is encrypted)
    and the user binds with it."""
    system = LdapSystem("ad", ad_config(samba_ad, ad_ou, ssl=False, startTLS=True), file=FILE)
    created = system.resource("account").create(new_user("starttls", password="Idsync-Pass-0016", enabled=True))
    assert bind_works(samba_ad, created["dn"], "Idsync-Pass-0016")
    system.close()


def test_users_container_is_the_default_home(samba_ad: SambaDC) -> None:
    """Synchronizing CN=Users (AD's default container, not an OU), a user is created there
    and read back among the domain's own users; it is deleted again."""
    users = f"CN=Users,{samba_ad.base_dn}"
    system = LdapSystem("ad", ad_config(samba_ad, users), file=FILE)
    accounts = system.resource("account")
    created = accounts.create(new_user("incontainer", password="Idsync-Pass-0017"))
    assert created["dn"] == f"CN=incontainer,{users}"
    names = {o["sAMAccountName"] for o in accounts.find(QuerySpec(fields=["sAMAccountName"]))}
    assert {"incontainer", "Administrator"} <= names
    accounts.delete(created["_id"])
    system.close()


def test_unicode_pwd_in_clear_is_refused_by_idsync(samba_ad: SambaDC, ad_ou: str) -> None:
    """Over plain LDAP (no ssl, no startTLS) a password is never sent: the object fails
    with a message naming the fix, and the rest of the object is not written either."""
    system = LdapSystem("ad", ad_config(samba_ad, ad_ou, ssl=False), file=FILE)
    accounts = system.resource("account")
    with pytest.raises(ObjectRejected, match="LDAPS or StartTLS"):
        accounts.create(new_user("clear", password="Idsync-Pass-0007"))
    assert accounts.find(QuerySpec(native="(sAMAccountName=clear)")) == []
    system.close()


def test_password_policy_refusal_fails_that_user_with_the_reason(ad: LdapSystem) -> None:
    """A password the domain's policy refuses (too short, not complex) fails the object
    with the server's reason; the connector goes on with the next one."""
    accounts = ad.resource("account")
    created = accounts.create(new_user("weakpw", password="Idsync-Pass-0008"))
    with pytest.raises(ObjectRejected, match=r"constraintViolation: .*password"):
        accounts.update(created["_id"], {"password": "abc"})
    assert accounts.update(created["_id"], {"description": "still writable"})["description"] == "still writable"


def test_group_of_ten_thousand_members_written_and_read_in_ranges(
        samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """A group created with 10,000 members holds all of them and reads whole; an update
    that swaps one member keeps the other 9,999. Read in ranges (member;range=0-1499, as
    AD sends a large attribute), the reader follows the server's ranges to the one marked
    ``*`` and hands on all 10,000 under ``member``."""
    members = [f"CN=c{i:05d},{LARGE_OU}" for i in range(LARGE_COUNT)]
    groups = ad.resource("group")
    created = groups.create({"cn": "large", "sAMAccountName": "large", "member": members})
    assert len(raw_attribute(samba_ad, created["dn"], "member")) == LARGE_COUNT
    (read,) = groups.find(QuerySpec(native="(cn=large)", fields=["member"]))
    assert sorted(read["member"]) == sorted(members)
    user = ad.resource("account").create(new_user("joins-large", password="Idsync-Pass-0015"))
    changed = [*members[1:], user["dn"]]  # one member leaves, one joins: a two-value modify
    assert sorted(groups.update(created["_id"], {"member": changed})["member"]) == sorted(changed)
    connection = LdapConnection("ad", parse_ldap_config(FILE, ad_config(samba_ad, ad_ou))[0])
    ((_, raw),) = connection.search(created["dn"], "(objectClass=*)", ["member;range=0-1499"], scope="base")
    connection.close()
    assert list(raw) == ["member"]
    assert sorted(v.decode() for v in raw["member"]) == sorted(changed)


def test_member_of_lists_the_groups_of_a_user(ad: LdapSystem) -> None:
    """AD keeps memberOf on each member: a user added to two groups reads both."""
    accounts, groups = ad.resource("account"), ad.resource("group")
    user = accounts.create(new_user("joiner", password="Idsync-Pass-0009"))
    dns = [groups.create({"cn": name, "sAMAccountName": name, "member": [user["dn"]]})["dn"]
           for name in ("staff", "sales")]
    assert sorted(accounts.get(user["_id"], fields=["memberOf"])["memberOf"]) == sorted(dns)


def test_paged_reads_return_every_user_once(samba_ad: SambaDC, ad_ou: str) -> None:
    """With a blockSize of 2, five users come in three pages and none twice."""
    system = LdapSystem("ad", ad_config(samba_ad, ad_ou, blockSize=2), file=FILE)
    accounts = system.resource("account")
    samba_ad.add_ldif("\n".join(f"dn: CN=p{i},{ad_ou}\nobjectClass: user\nsAMAccountName: p{i}\n"
                                for i in range(5)))
    pages = list(accounts.pages(QuerySpec(fields=["sAMAccountName"], page_size=2)))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(o["sAMAccountName"] for p in pages for o in p) == [f"p{i}" for i in range(5)]
    system.close()


def test_object_category_filter_leaves_out_computers(samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """Computer accounts are of class user too: (objectCategory=person) keeps them out."""
    samba_ad.add_ldif(f"dn: CN=ws1,{ad_ou}\nobjectClass: computer\nsAMAccountName: ws1$\n\n"
                      f"dn: CN=human,{ad_ou}\nobjectClass: user\nsAMAccountName: human\n")
    names = [o["sAMAccountName"] for o in ad.resource("account").find(QuerySpec(fields=["sAMAccountName"]))]
    assert names == ["human"]


def test_livesync_reads_usn_changes_and_tombstones(samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """liveSync against AD keeps the domain controller's highestCommittedUSN as its token
    and reads the users changed after it (uSNChanged) and the users deleted after it
    (tombstones under CN=Deleted Objects, by objectGUID, only those last under the OU);
    read again from the new token, nothing."""
    accounts = ad.resource("account")
    kept = accounts.create(new_user("kept", password="Idsync-Pass-0010"))
    gone = accounts.create(new_user("gone", password="Idsync-Pass-0011"))
    samba_ad.add_ldif(f"dn: OU=elsewhere,{samba_ad.base_dn}\nobjectClass: organizationalUnit\n\n"
                      f"dn: CN=outside,OU=elsewhere,{samba_ad.base_dn}\nobjectClass: user\nsAMAccountName: outside\n")
    token = accounts.latest_token()
    assert json.loads(token)["kind"] == "usn"
    accounts.update(kept["_id"], {"description": "changed"})
    accounts.delete(gone["_id"])
    new = accounts.create(new_user("newcomer", password="Idsync-Pass-0012"))
    samba_ad.add_ldif(f"dn: CN=outside,OU=elsewhere,{samba_ad.base_dn}\nchangetype: delete\n")
    found, last, method, deletes = changes_since(accounts, token, ["cn", "description"])
    assert (method, deletes) == ("uSNChanged", True)
    assert set(found) == {kept["_id"], gone["_id"], new["_id"]}
    assert found[kept["_id"]] == {"_id": kept["_id"], "cn": "kept", "description": "changed"}
    assert found[gone["_id"]] is None
    assert changes_since(accounts, last, ["cn"])[0] == {}


def test_test_action_recognizes_active_directory(samba_ad: SambaDC, ad_ou: str) -> None:
    """The system test names the server from its root DSE (AD's capability OID, Samba's
    vendorName) and warns when uidAttribute is not AD's objectGUID."""
    config = ad_config(samba_ad, ad_ou)
    report = LdapSystem("ad", config, file=FILE).test()
    assert report["ok"] is True and report["server"].startswith("Active Directory (Samba Team")
    assert "warning" not in report
    config["configurationProperties"]["uidAttribute"] = "entryUUID"
    report = LdapSystem("ad", config, file=FILE).test()
    assert report["warning"] == ("uidAttribute: the server is Active Directory, whose entries' stable id "
                                 "is objectguid, not entryUUID")


def test_global_catalog_reads_and_refuses_writes(samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """Pointed at the global catalog port (3268), the connector reads the users of the
    domain with their objectGUID ids; a write there fails that object with the server's
    reason (the catalog is read-only)."""
    user = ad.resource("account").create(new_user("gcuser", password="Idsync-Pass-0013"))
    catalog = LdapSystem("gc", ad_config(samba_ad, ad_ou, ssl=False, port=samba_ad.global_catalog_port), file=FILE)
    accounts = catalog.resource("account")
    assert accounts.get(user["_id"], fields=["sAMAccountName"]) == {"_id": user["_id"], "sAMAccountName": "gcuser"}
    with pytest.raises(ObjectRejected):
        accounts.update(user["_id"], {"description": "through the catalog"})
    catalog.close()


def test_referrals_are_not_chased(samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """Reading from the domain's root, where the DC answers the Configuration partition with
    a search reference (ldap://idsync.test/..., a name that does not resolve here),
    returns the domain's users and follows no reference."""
    user = ad.resource("account").create(new_user("rootread", password="Idsync-Pass-0014"))
    config = ad_config(samba_ad, ad_ou, baseContexts=[samba_ad.base_dn])
    whole = LdapSystem("ad", config, file=FILE)
    names = {o["sAMAccountName"] for o in whole.resource("account").find(QuerySpec(fields=["sAMAccountName"]))}
    assert "rootread" in names and user["_id"]
    whole.close()


def test_preloaded_domain_is_loaded_offline_and_cached(samba_ad: SambaDC, tmp_path: Path) -> None:
    """SambaDC(preload=LDIF), as the benchmark loads 100,000 users: the LDIF is added
    offline (ldbadd in batch mode) into a copy of the provisioned domain, as real AD
    objects (objectSid, sAMAccountType), and the loaded domain is cached by the LDIF's
    digest: asked again, it is reused as it is, not loaded twice."""
    base = f"OU=Preloaded,{samba_ad.base_dn}"
    ldif = tmp_path / "users.ldif"
    ldif.write_text(f"dn: {base}\nobjectClass: organizationalUnit\n\n"
                    + "".join(iter_sample_ad_users_ldif(3, base, "idsync.test")))
    loader = SambaDC(preload=ldif)
    try:
        domain = loader.loaded_domain(ldif)
        marker = (domain.parent / "complete").stat().st_mtime_ns
        assert loader.loaded_domain(ldif) == domain
        assert (domain.parent / "complete").stat().st_mtime_ns == marker
    finally:
        loader.stop()
    partition = domain / "private" / "sam.ldb.d" / f"{samba_ad.base_dn.upper()}.ldb"
    done = subprocess.run(["ldbsearch", "-H", f"tdb://{partition}", "(sAMAccountName=bjensen)",
                           "sAMAccountType", "userPrincipalName", "objectSid"],
                          capture_output=True, text=True, check=True)
    assert "sAMAccountType: 805306368" in done.stdout
    assert "userPrincipalName: bjensen@idsync.test" in done.stdout
    assert "objectSid:" in done.stdout

