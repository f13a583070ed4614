"""The LDAP connector against a real 389 Directory Server (``idsync_dev.dirsrv``):
nsUniqueId ids, writes, renames and moves, nsAccountLock, userPassword under the
server's storage scheme and password policy, memberOf, large groups, paged reads."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import ldap
import pytest
from directory_servers import changes_since
from idsync.connectors.ldap.changes import LdapChanges
from idsync.connectors.ldap.connector import LdapSystem
from idsync.errors import ObjectRejected, PeerError, SyncTokenExpired
from idsync.resource import QuerySpec, WriteOp
from idsync_dev.dirsrv import DirSrv

FILE = "conf/provisioner.openicf-389ds.json"

ACCOUNT: dict[str, Any] = {
    "dn": {"type": "string", "nativeName": "__NAME__"},
    "uid": {"type": "string"},
    "cn": {"type": "string"},
    "sn": {"type": "string"},
    "mail": {"type": "string"},
    "description": {"type": "string"},
    "enabled": {"type": "boolean", "nativeName": "__ENABLE__"},
    "password": {"type": "string", "nativeName": "__PASSWORD__", "flags": ["NOT_READABLE"]},
    "memberOf": {"type": "array", "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]},
}


def ds_config(server: DirSrv, subtree: str, **props: Any) -> dict[str, Any]:
    """A provisioner for the instance as docs/389ds.md describes it, reading ``subtree``
    as the service account (the Directory Manager would bypass password policy)."""
    return {
        "name": "ds",
        "connectorRef": {"bundleName": "org.forgerock.openicf.connectors.ldap-connector",
                         "connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {
            "host": "127.0.0.1", "port": server.port, "principal": server.service_dn,
            "credentials": server.service_password, "baseContexts": [subtree],
            "baseContextsToSynchronize": [subtree], "uidAttribute": "nsUniqueId",
            "groupObjectClasses": ["top", "groupOfNames"], "groupMemberAttribute": "member",
            "ldapGroupsAttribute": "memberOf", "connectTimeout": 5, "readTimeout": 30, **props,
        },
        "objectTypes": {
            "account": {"nativeType": "__ACCOUNT__", "properties": ACCOUNT},
            "group": {"nativeType": "__GROUP__", "properties": {
                "dn": {"type": "string", "nativeName": "__NAME__"}, "cn": {"type": "string"},
                "member": {"type": "array"}}},
        },
    }


@pytest.fixture
def ds(dirsrv: DirSrv, dirsrv_subtree: str) -> Iterator[LdapSystem]:
    """The 389 DS system over this test's own subtree, bound as the service account."""
    system = LdapSystem("ds", ds_config(dirsrv, dirsrv_subtree), file=FILE)
    yield system
    system.close()


def person(uid: str, **values: Any) -> dict[str, Any]:
    """An inetOrgPerson named by ``uid`` (the default naming attribute)."""
    return {"uid": uid, "cn": uid.title(), "sn": uid.title(), **values}


def bind_works(server: DirSrv, dn: str, password: str) -> bool:
    conn = ldap.initialize(server.url)
    try:
        conn.simple_bind_s(dn, password)
    except (ldap.INVALID_CREDENTIALS, ldap.UNWILLING_TO_PERFORM, ldap.CONSTRAINT_VIOLATION):
        return False
    finally:
        conn.unbind_ext()
    return True


def attribute(server: DirSrv, dn: str, name: str) -> list[str]:
    done = subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", server.url, "-D",
                           server.admin_dn, "-w", server.admin_password, "-b", dn, "-s", "base", name],
                          capture_output=True, text=True, check=True)
    return [line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.lower().startswith(name.lower() + ":")]


def test_ns_unique_id_is_the_id(dirsrv: DirSrv, ds: LdapSystem) -> None:
    """A created entry's _id is its nsUniqueId as the server shows it; get() finds it."""
    accounts = ds.resource("account")
    created = accounts.create(person("ids1"))
    assert created["_id"] == attribute(dirsrv, created["dn"], "nsUniqueId")[0]
    assert accounts.get(created["_id"], fields=["uid"]) == {"_id": created["_id"], "uid": "ids1"}


def test_create_update_rename_move_delete_keep_identity(dirsrv: DirSrv, ds: LdapSystem, dirsrv_subtree: str) -> None:
    """Updates write the given attributes; a new uid renames and a new DN moves the
    entry to another OU, both keeping nsUniqueId; a delete removes it."""
    dirsrv.add_ldif(f"dn: ou=moved,{dirsrv_subtree}\nobjectClass: organizationalUnit\nou: moved\n")
    accounts = ds.resource("account")
    created = accounts.create(person("mover", mail="mover@example.com"))
    assert created["dn"] == f"uid=mover,{dirsrv_subtree}"
    assert accounts.update(created["_id"], {"description": "x", "mail": None})["description"] == "x"
    renamed = accounts.update(created["_id"], {"uid": "moved1"})
    assert (renamed["_id"], renamed["dn"]) == (created["_id"], f"uid=moved1,{dirsrv_subtree}")
    moved = accounts.update(created["_id"], {"dn": f"uid=moved1,ou=moved,{dirsrv_subtree}"})
    assert (moved["_id"], moved["dn"]) == (created["_id"], f"uid=moved1,ou=moved,{dirsrv_subtree}")
    accounts.delete(created["_id"])
    assert accounts.get(created["_id"]) is None


def test_ns_account_lock_is_enable(dirsrv: DirSrv, ds: LdapSystem) -> None:
    """With nsUniqueId ids, __ENABLE__ is nsAccountLock without further settings: false
    sets it TRUE and the server refuses the account's binds; true removes it."""
    accounts = ds.resource("account")
    created = accounts.create(person("locked", password="Zebra-Quartz-71", enabled=True))
    assert created["enabled"] is True and bind_works(dirsrv, created["dn"], "Zebra-Quartz-71")
    disabled = accounts.update(created["_id"], {"enabled": False})
    assert disabled["enabled"] is False
    assert [v.lower() for v in attribute(dirsrv, created["dn"], "nsAccountLock")] == ["true"]
    assert not bind_works(dirsrv, created["dn"], "Zebra-Quartz-71")
    assert accounts.update(created["_id"], {"enabled": True})["enabled"] is True
    assert attribute(dirsrv, created["dn"], "nsAccountLock") == []
    assert bind_works(dirsrv, created["dn"], "Zebra-Quartz-71")


def test_clear_password_is_hashed_by_the_server(dirsrv: DirSrv, ds: LdapSystem) -> None:
    """A clear userPassword is stored under the server's storage scheme (a {SCHEME}
    hash, never the clear text) and the user binds with it."""
    accounts = ds.resource("account")
    created = accounts.create(person("hashed", password="Zebra-Quartz-73"))
    (stored,) = attribute(dirsrv, created["dn"], "userPassword")
    assert stored.startswith("e1") or stored.startswith("{")  # base64 of "{..." or the scheme itself
    assert "Zebra-Quartz-73" not in stored
    assert bind_works(dirsrv, created["dn"], "Zebra-Quartz-73")


def test_password_policy_refusal_fails_only_that_entry(dirsrv: DirSrv, ds: LdapSystem) -> None:
    """A password shorter than the policy's minimum fails its entry with the server's
    reason; the other writes of the batch succeed. A pre-hashed password from an account
    that is not a password administrator is refused with the server's reason."""
    accounts = ds.resource("account")
    results = accounts.write_batch([WriteOp("create", values=person("weak", password="short")),
                                    WriteOp("create", values=person("strong", password="Zebra-Quartz-72"))])
    assert isinstance(results[0].error, ObjectRejected)
    assert "constraintViolation" in str(results[0].error) and "8" in str(results[0].error)
    assert results[1].ok
    hashed = accounts.update(results[1].id or "", {"description": "kept"})
    with pytest.raises(ObjectRejected, match="passwords with storage scheme are not allowed"):
        accounts.update(hashed["_id"], {"password": "{SSHA}abcdefghijklmnopqrstuvwxyz012345"})


def test_member_of_and_a_group_of_ten_thousand(dirsrv: DirSrv, ds: LdapSystem, dirsrv_subtree: str) -> None:
    """The MemberOf plugin lists a user's groups on the user; a groupOfNames created with
    10,000 members holds and reads back all of them."""
    accounts, groups = ds.resource("account"), ds.resource("group")
    user = accounts.create(person("member1"))
    small = groups.create({"cn": "small", "member": [user["dn"]]})
    assert accounts.get(user["_id"], fields=["memberOf"])["memberOf"] == [small["dn"]]
    members = [f"uid=m{i:05d},{dirsrv_subtree}" for i in range(10_000)]
    large = groups.create({"cn": "large", "member": members})
    (read,) = groups.find(QuerySpec(native="(cn=large)", fields=["member"]))
    assert read["_id"] == large["_id"] and sorted(read["member"]) == sorted(members)


def test_paged_reads_return_every_entry_once(dirsrv: DirSrv, dirsrv_subtree: str) -> None:
    """With a blockSize of 2, five entries come in three pages, none twice."""
    dirsrv.add_ldif("\n".join(f"dn: uid=p{i},{dirsrv_subtree}\nobjectClass: inetOrgPerson\nuid: p{i}\n"
                              f"cn: p{i}\nsn: p{i}\n" for i in range(5)))
    system = LdapSystem("ds", ds_config(dirsrv, dirsrv_subtree, blockSize=2), file=FILE)
    pages = list(system.resource("account").pages(QuerySpec(fields=["uid"], page_size=2)))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(o["uid"] for p in pages for o in p) == [f"p{i}" for i in range(5)]
    system.close()


def test_livesync_uses_content_synchronization(dirsrv: DirSrv, ds: LdapSystem, dirsrv_subtree: str) -> None:
    """liveSync against 389 DS reads through its content synchronization plugin (RFC 4533,
    the retro changelog behind it): the token is 389's own cookie; a refresh from it
    answers the changed and created entries with their nsUniqueId ids and the deleted
    ones by nsUniqueId; from the new token, nothing."""
    accounts = ds.resource("account")
    kept = accounts.create(person("kept"))
    gone = accounts.create(person("gone"))
    token = accounts.latest_token()
    assert json.loads(token)["kind"] == "syncrepl"
    accounts.update(kept["_id"], {"description": "changed"})
    accounts.delete(gone["_id"])
    new = accounts.create(person("newcomer"))
    dirsrv.add_ldif(f"dn: uid=elsewhere,ou=People,{dirsrv.base_dn}\nobjectClass: inetOrgPerson\n"
                    "uid: elsewhere\ncn: e\nsn: e\n")
    found, last, method, deletes = changes_since(accounts, token, ["uid", "description"])
    assert (method, deletes) == ("syncrepl", True)
    assert set(found) == {kept["_id"], gone["_id"], new["_id"]}
    assert found[kept["_id"]] == {"_id": kept["_id"], "uid": "kept", "description": "changed"}
    assert found[gone["_id"]] is None and found[new["_id"]]["uid"] == "newcomer"
    assert changes_since(accounts, last, ["uid"])[0] == {}


def test_livesync_reads_operational_attributes_and_keeps_only_what_it_asked(
        dirsrv: DirSrv, dirsrv_subtree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """389 DS answers a refresh with every user attribute of the changed entries and none of
    their operational ones, whatever is asked: liveSync reads those again, so an account
    locked since the token is read locked (nsAccountLock: TRUE), and modifyTimestamp is
    the one ldapsearch shows. What the refresh sent unasked (userPassword's hash) is not kept."""
    kept: list[dict[str, Any]] = []
    refresh = LdapChanges._refresh

    def spy(self: LdapChanges, conn: Any, base: str, cookie: str | None, attributes: Any, out: Any) -> None:
        refresh(self, conn, base, cookie, attributes, out)
        kept.extend(raw for _, (_, raw) in out.changed.items())

    monkeypatch.setattr(LdapChanges, "_refresh", spy)
    config = ds_config(dirsrv, dirsrv_subtree)
    config["objectTypes"]["account"]["properties"] = {
        **ACCOUNT, "modified": {"type": "string", "nativeName": "modifyTimestamp",
                                "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]}}
    system = LdapSystem("ds", config, file=FILE)
    accounts = system.resource("account")
    created = accounts.create(person("locky", password="Zebra-Quartz-71", enabled=False))
    token = accounts.latest_token()
    accounts.update(created["_id"], {"enabled": True})
    found, token, _, _ = changes_since(accounts, token, ["enabled", "uid"])
    assert found == {created["_id"]: {"_id": created["_id"], "uid": "locky", "enabled": True}}
    accounts.update(created["_id"], {"enabled": False})
    found = changes_since(accounts, token, ["enabled", "uid", "modified"])[0]
    assert attribute(dirsrv, created["dn"], "nsAccountLock") == ["TRUE"]
    assert found == {created["_id"]: {"_id": created["_id"], "uid": "locky", "enabled": False,
                                      "modified": attribute(dirsrv, created["dn"], "modifyTimestamp")[0]}}
    assert kept and not any("userpassword" in raw or "objectclass" in raw for raw in kept)
    system.close()


def test_a_trimmed_retro_changelog_expires_the_token(dirsrv: DirSrv, dirsrv_subtree: str) -> None:
    """A cookie whose next changes were trimmed from the retro changelog cannot be honoured:
    389 DS would answer the later changes alone, as if nothing else happened. Its root DSE's
    firstchangenumber says so (here the entries are removed by the Directory Manager and the
    server restarted, which reads its changelog again): SyncTokenExpired, which liveSync
    answers with a full recon and a fresh token."""
    system = LdapSystem("ds", ds_config(dirsrv, dirsrv_subtree), file=FILE)
    accounts = system.resource("account")
    early = accounts.create(person("early"))
    token = accounts.latest_token()
    accounts.update(early["_id"], {"description": "trimmed away"})
    accounts.create(person("later"))
    since = int(json.loads(token)["cookies"][dirsrv_subtree].rsplit("#", 1)[1])
    admin = ldap.initialize(dirsrv.url)
    admin.simple_bind_s(dirsrv.admin_dn, dirsrv.admin_password)
    for dn, _ in admin.search_s("cn=changelog", ldap.SCOPE_ONELEVEL, f"(changeNumber<={since + 1})", ["1.1"]):
        admin.delete_s(dn)
    admin.unbind_ext()
    system.close()
    dirsrv.restart()
    system = LdapSystem("ds", ds_config(dirsrv, dirsrv_subtree), file=FILE)
    trimmed = rf"starts at change {since + 2}.*from {since + 1} on: they were trimmed"
    with pytest.raises(SyncTokenExpired, match=trimmed):
        changes_since(system.resource("account"), token, ["uid", "description"])
    system.close()


def test_test_action_recognizes_389_ds(dirsrv: DirSrv, dirsrv_subtree: str) -> None:
    """The system test names 389 DS from its root DSE's vendorName and vendorVersion."""
    report = LdapSystem("ds", ds_config(dirsrv, dirsrv_subtree), file=FILE).test()
    assert report["ok"] is True and report["server"].startswith("389 Directory Server (389 Project 389-Directory/")
    assert "warning" not in report


def test_administrative_limit_fails_the_read_with_the_fix(dirsrv: DirSrv, dirsrv_subtree: str) -> None:
    """A bind DN whose look-through limit is below the entries to read gets
    adminLimitExceeded: the read fails (nothing is taken for the whole directory) and
    the message names the limits to raise on 389 DS."""
    dirsrv.add_ldif("".join(f"dn: uid=l{i},{dirsrv_subtree}\nobjectClass: inetOrgPerson\nuid: l{i}\ncn: l\nsn: l\n\n"
                            for i in range(4)) +
                    f"dn: uid=limited,ou=Services,{dirsrv.base_dn}\nobjectClass: account\n"
                    f"objectClass: simpleSecurityObject\nuid: limited\nuserPassword: Zebra-Quartz-74\n"
                    "nsLookThroughLimit: 2\nnsPagedLookThroughLimit: 2\n")
    config = ds_config(dirsrv, dirsrv_subtree, principal=f"uid=limited,ou=Services,{dirsrv.base_dn}",
                       credentials="Zebra-Quartz-74")
    system = LdapSystem("ds", config, file=FILE)
    with pytest.raises(PeerError, match=r"adminLimitExceeded.*nsLookThroughLimit"):
        list(system.resource("account").pages(QuerySpec(fields=["uid"])))
    system.close()
