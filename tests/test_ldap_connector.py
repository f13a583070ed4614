"""The LDAP connector against a real slapd: reading in pages, ids, value types,
writes, errors and TLS, as a recon would see them."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap.dn
import pytest
import structlog
from idsync.connectors.ldap.connector import LdapResource, LdapSystem, open_ldap_system
from idsync.connectors.ldap.values import guid_from_bytes, guid_to_bytes, id_filter
from idsync.errors import (
    AuthenticationFailed,
    ConfigError,
    NotFound,
    ObjectRejected,
    PeerUnavailable,
    TLSError,
)
from idsync.query.ast import And, Compare
from idsync.resource import QuerySpec, WriteOp
from idsync_dev import Slapd, sample_users_ldif
from idsync_dev.certs import make_test_certificates

from samples import can_bind

pytestmark = pytest.mark.slapd

FILE = "conf/provisioner.openicf-ldap.json"
ACCOUNT_PROPERTIES: dict[str, Any] = {
    "dn": {"type": "string", "nativeName": "__NAME__"},
    "uid": {"type": "string", "nativeName": "uid"},
    "cn": {"type": "string"},
    "sn": {"type": "string"},
    "givenName": {"type": "string"},
    "mail": {"type": "string"},
    "telephoneNumber": {"type": "string"},
    "description": {"type": "string"},
    "employeeType": {"type": "array", "items": {"type": "string"}},
    "objectClass": {"type": "array", "items": {"type": "string"}},
    "jpegPhoto": {"type": "string", "nativeType": "JAVA_TYPE_BYTE_ARRAY",
                  "flags": ["NOT_RETURNED_BY_DEFAULT"]},
    "ldapGroups": {"type": "array", "nativeName": "memberOf",
                   "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]},
}


def make_config(slapd: Slapd, subtree: str, **props: Any) -> dict[str, Any]:
    """A PingIDM-shaped provisioner for the test server, reading only ``subtree``."""
    return {
        "name": "ldap", "enabled": True,
        "connectorRef": {"bundleName": "org.forgerock.openicf.connectors.ldap-connector",
                         "connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {
            "host": "127.0.0.1", "port": slapd.port, "ssl": False, "startTLS": False,
            "principal": slapd.admin_dn, "credentials": slapd.admin_password,
            "baseContexts": [subtree], "baseContextsToSynchronize": [subtree],
            "accountUserNameAttributes": ["uid"], "uidAttribute": "entryUUID",
            "connectTimeout": 3, "readTimeout": 10, **props,
        },
        "objectTypes": {
            "account": {"nativeType": "__ACCOUNT__", "properties": ACCOUNT_PROPERTIES},
            "group": {"nativeType": "__GROUP__", "properties": {
                "dn": {"type": "string", "nativeName": "__NAME__"}, "cn": {"type": "string"},
                "uniqueMember": {"type": "array"}}},
        },
    }


@pytest.fixture
def accounts(slapd: Slapd, ldap_subtree: str) -> Iterator[LdapResource]:
    """The account resource over this test's own subtree, holding the two sample users."""
    slapd.add_ldif(sample_users_ldif(2, ldap_subtree))
    system = LdapSystem("ldap", make_config(slapd, ldap_subtree), file=FILE)
    yield system.resource("account")
    system.close()


def ldapsearch(slapd: Slapd, base: str, *attrs: str) -> str:
    done = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", slapd.url, "-D", slapd.admin_dn,
                           "-w", slapd.admin_password, "-b", base, "-s", "base", *attrs],
                          capture_output=True, text=True, check=False)
    return done.stdout


def test_pages_stream_in_page_size_chunks(slapd: Slapd, ldap_subtree: str) -> None:
    """2500 entries read with a page size of 1000 come as three pages, none repeated."""
    slapd.add_ldif(sample_users_ldif(2500, ldap_subtree))
    resource = LdapSystem("ldap", make_config(slapd, ldap_subtree), file=FILE).resource("account")
    sizes, ids = [], set()
    for page in resource.pages(QuerySpec(fields=["uid"], page_size=1000)):
        sizes.append(len(page))
        ids.update(obj["_id"] for obj in page)
    assert sizes == [1000, 1000, 500]
    assert len(ids) == 2500


def _people(base: str, *uids: str) -> str:
    return "".join(f"dn: uid={u},{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\n\n" for u in uids)


def test_reads_search_base_contexts_not_only_the_sync_contexts(slapd: Slapd, ldap_subtree: str) -> None:
    """As OpenICF's: a listing, a query and a read by id search ``baseContexts``;
    ``baseContextsToSynchronize`` (narrower here) is liveSync's alone. An entry outside
    both is read by none; a sync context outside every base context is a ``validate``
    warning naming it (liveSync would apply changes that no recon finds again), and so is
    a base context under another, whose entries are read once."""
    staff, outside = f"ou=staff,{ldap_subtree}", f"ou=outside,{ldap_subtree}"
    top = f"ou=top,{ldap_subtree}"
    slapd.add_ldif("".join(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn[3:dn.index(',')]}\n\n"
                           for dn in (top, staff.replace(ldap_subtree, top), outside)))
    staff = staff.replace(ldap_subtree, top)
    slapd.add_ldif(_people(top, "ann", "bob") + _people(staff, "sue") + _people(outside, "olga"))
    system = LdapSystem("ldap", make_config(slapd, staff, baseContexts=[top]), file=FILE)
    accounts = system.resource("account")
    assert {o["uid"] for page in accounts.pages(QuerySpec(fields=["uid"])) for o in page} == {"ann", "bob", "sue"}
    (ann,) = accounts.find(QuerySpec(native="(uid=ann)", fields=["uid"]))
    assert set(accounts.get_many([ann["_id"]])) == {ann["_id"]}
    assert system.warnings() == []
    system.close()

    narrow = LdapSystem("ldap", make_config(slapd, top, baseContexts=[staff]), file=FILE)
    assert [(w.key, "not under any of baseContexts" in w.problem) for w in narrow.warnings()] == [
        ("configurationProperties.baseContextsToSynchronize[0]", True)]
    assert {o["uid"] for o in narrow.resource("account").find(QuerySpec(fields=["uid"]))} == {"sue"}
    narrow.close()

    # A base context under another (or listed twice) is read once, with a warning naming it.
    nested = LdapSystem("ldap", make_config(slapd, staff, baseContexts=[staff, top, top.upper()]), file=FILE)
    assert [(w.key, "read once" in w.problem) for w in nested.warnings()] == [
        ("configurationProperties.baseContexts[0]", True), ("configurationProperties.baseContexts[2]", True)]
    assert sorted(o["uid"] for page in nested.resource("account").pages(QuerySpec(fields=["uid"])) for o in page) \
        == ["ann", "bob", "sue"]
    nested.close()


def test_object_shape_id_dn_arrays_and_singles(slapd: Slapd, accounts: LdapResource) -> None:
    """_id is the entry's entryUUID, dn is the DN, arrays are lists (empty when absent)
    and single values are plain strings; hidden properties are not read by default."""
    (bjensen,) = accounts.find(QuerySpec(native="(uid=bjensen)"))
    uuid_line = next(line for line in ldapsearch(slapd, bjensen["dn"], "entryUUID").splitlines()
                     if line.startswith("entryUUID:"))
    assert bjensen["_id"] == uuid_line.split(": ")[1]
    assert bjensen["dn"].lower().startswith("uid=bjensen,ou=t")
    assert bjensen["cn"] == "Barbara Jensen"
    assert bjensen["mail"] == "bjensen@example.com"
    assert bjensen["telephoneNumber"] == "1-360-229-7105"
    assert bjensen["description"] == "Created for OpenIDM"
    assert bjensen["employeeType"] == ["employee"]
    assert set(bjensen["objectClass"]) >= {"inetOrgPerson", "person"}
    assert bjensen["ldapGroups"] == []
    assert "jpegPhoto" not in bjensen


def test_field_selection_reads_only_those_fields(accounts: LdapResource) -> None:
    """Asking for fields returns exactly those plus _id; [] returns ids only."""
    (page,) = list(accounts.pages(QuerySpec(fields=["mail", "ldapGroups"])))
    assert {frozenset(obj) for obj in page} == {frozenset({"_id", "mail", "ldapGroups"})}
    (ids_only,) = list(accounts.pages(QuerySpec(fields=[])))
    assert all(set(obj) == {"_id"} for obj in ids_only)


def test_get_many_returns_known_ids_and_skips_missing(accounts: LdapResource) -> None:
    """get_many answers the ids that exist in one call; unknown ids are simply absent."""
    ids = [obj["_id"] for obj in accounts.find(QuerySpec(fields=[]))]
    missing = str(uuid.uuid4())
    found = accounts.get_many([*ids, missing, "not-a-uuid*)(uid=*"], fields=["uid"])
    assert set(found) == set(ids)
    assert {obj["uid"] for obj in found.values()} == {"bjensen", "scarter"}
    assert accounts.get(missing) is None


def test_entry_uuid_id_is_found_in_any_case(accounts: LdapResource) -> None:
    """entryUUID is compared as a UUID (UUIDMatch): the id in upper case finds the entry,
    answered under the id asked for, and an update by it reaches the entry."""
    created = accounts.create({"uid": "uuidcase", "cn": "Uuid Case", "sn": "Case"})
    upper = created["_id"].upper()
    assert accounts.get(upper, fields=["uid"]) == {"_id": created["_id"], "uid": "uuidcase"}
    accounts.update(upper, {"sn": "Upper"})
    assert accounts.get(created["_id"], fields=["sn"]) == {"_id": created["_id"], "sn": "Upper"}


def test_native_and_query_filters(accounts: LdapResource) -> None:
    """A native LDAP filter and a _queryFilter tree (mapped to native names) both select."""
    assert [o["uid"] for o in accounts.find(QuerySpec(native="(sn=Carter)"))] == ["scarter"]
    node = And((Compare(("givenName",), "eq", "Barbara"), Compare(("mail",), "sw", "bjen")))
    assert [o["uid"] for o in accounts.find(QuerySpec(filter=node))] == ["bjensen"]


def test_create_update_rename_delete(accounts: LdapResource, ldap_subtree: str) -> None:
    """A created entry is read back with its _id; an update writes only the given
    attributes and removes those set to None; a new uid renames; delete removes it."""
    created = accounts.create({"uid": "jdoe", "cn": "John Doe", "sn": "Doe",
                               "mail": "jdoe@example.com", "description": "temp",
                               "ldapGroups": ["cn=x"], "_id": "ignored"})
    assert created["dn"].lower() == f"uid=jdoe,{ldap_subtree}".lower()
    assert uuid.UUID(created["_id"])
    updated = accounts.update(created["_id"], {"mail": "john@example.com", "description": None,
                                               "telephoneNumber": None})
    assert updated["mail"] == "john@example.com" and "description" not in updated
    assert updated["cn"] == "John Doe"
    renamed = accounts.update(created["_id"], {"uid": "john"})
    assert renamed["dn"].lower() == f"uid=john,{ldap_subtree}".lower()
    assert renamed["_id"] == created["_id"] and renamed["uid"] == "john"
    accounts.delete(created["_id"])
    assert accounts.get(created["_id"]) is None
    with pytest.raises(NotFound):
        accounts.delete(created["_id"])


def _entry(slapd: Slapd, dn: str) -> str:
    """The entry as ``ldapsearch`` prints it (LDIF), or "" when it is not there."""
    found = subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", slapd.url, "-D", slapd.admin_dn,
                            "-w", slapd.admin_password, "-s", "base", "-b", dn, "*"],
                           capture_output=True, text=True, check=False)
    return found.stdout


def _same_dn(one: str, other: str) -> bool:
    return ldap.dn.str2dn(one.lower()) == ldap.dn.str2dn(other.lower())


def test_a_new_case_of_the_naming_value_renames_the_entry(accounts: LdapResource, slapd: Slapd,
                                                          ldap_subtree: str) -> None:
    """A value differing from the RDN's in case only is a rename: LDAP's matching rules
    take it for the same value, so neither a modify nor a comparison as DNs writes it."""
    created = accounts.create({"uid": "jdoe", "cn": "John Doe", "sn": "Doe"})
    renamed = accounts.update(created["_id"], {"uid": "JDoe"})
    assert renamed["dn"] == f"uid=JDoe,{ldap_subtree}" and renamed["uid"] == "JDoe"
    assert "uid: JDoe\n" in _entry(slapd, f"uid=JDoe,{ldap_subtree}")
    # Nothing left to do: the entry holds the value, and a write of it again changes nothing.
    assert accounts.update(created["_id"], {"uid": "JDoe"})["dn"] == f"uid=JDoe,{ldap_subtree}"


def test_an_entry_named_by_another_attribute_is_renamed_by_that_one(accounts: LdapResource, slapd: Slapd,
                                                                    ldap_subtree: str) -> None:
    """An entry whose RDN is ``cn=`` (the type names its accounts by ``uid``): a new
    ``uid`` is a plain modify, the DN and its ``cn`` kept; a new ``cn`` renames it."""
    slapd.add_ldif(f"dn: cn=Carol Smith,{ldap_subtree}\nobjectClass: inetOrgPerson\ncn: Carol Smith\n"
                   "sn: Smith\nuid: carol\n")
    (carol,) = [o for o in accounts.find(QuerySpec()) if o.get("uid") == "carol"]
    updated = accounts.update(carol["_id"], {"uid": "carol2"})
    assert updated["dn"] == f"cn=Carol Smith,{ldap_subtree}"
    assert updated["uid"] == "carol2" and updated["cn"] == "Carol Smith"
    renamed = accounts.update(carol["_id"], {"cn": "Carol Jones", "sn": "Jones"})
    assert renamed["dn"] == f"cn=Carol Jones,{ldap_subtree}"
    assert renamed["cn"] == "Carol Jones" and renamed["sn"] == "Jones" and renamed["uid"] == "carol2"


def test_renames_to_values_that_need_escaping(accounts: LdapResource, slapd: Slapd, ldap_subtree: str) -> None:
    """A new RDN value holding a comma, a plus sign or an equals sign (escaped in the DN),
    by a new naming value or a new ``dn``; and a rename of an entry whose DN has one."""
    created = accounts.create({"uid": "newguy", "cn": "New Guy", "sn": "Guy"})
    renamed = accounts.update(created["_id"], {"uid": "guy, new+x=y"})
    assert renamed["uid"] == "guy, new+x=y"
    assert _same_dn(renamed["dn"], f"uid=guy\\, new\\+x\\=y,{ldap_subtree}")
    again = accounts.update(created["_id"], {"uid": "guy, newer"})
    assert again["uid"] == "guy, newer" and _same_dn(again["dn"], f"uid=guy\\, newer,{ldap_subtree}")
    by_dn = accounts.update(created["_id"], {"dn": f"uid=Smith\\2C John,{ldap_subtree}"})
    assert by_dn["uid"] == "Smith, John" and _entry(slapd, f"uid=Smith\\, John,{ldap_subtree}")


def test_extra_values_of_the_naming_attribute_are_not_written_over_silently(
        accounts: LdapResource, slapd: Slapd, ldap_subtree: str) -> None:
    """An entry whose RDN attribute holds a second value the single-valued property was
    never shown apart: writing the RDN's value fails the object, as for any attribute,
    rather than being taken for done with nothing written."""
    slapd.add_ldif(f"dn: uid=emp778,{ldap_subtree}\nobjectClass: inetOrgPerson\ncn: Emp\nsn: Emp\n"
                   "uid: emp778\nuid: emp777\n")
    (emp,) = [o for o in accounts.find(QuerySpec()) if o["dn"].startswith("uid=emp778")]
    with pytest.raises(ObjectRejected, match="holds 2 values"):
        accounts.update(emp["_id"], {"uid": "emp778"})
    assert "uid: emp777" in _entry(slapd, f"uid=emp778,{ldap_subtree}")


def test_attributes_of_binary_syntax_are_binary_unless_declared_otherwise(slapd: Slapd, ldap_subtree: str,
                                                                          tmp_path: Path) -> None:
    """``jpegPhoto`` and ``userCertificate;binary`` declared with no ``nativeType`` are
    read as base64 and written from it, bytes for bytes, as OpenICF takes them from the
    server's schema (a value read as base64 was written back as its text); a declared
    ``nativeType`` still decides."""
    config = make_config(slapd, ldap_subtree)
    config["objectTypes"]["account"]["properties"] = {
        **ACCOUNT_PROPERTIES, "photo": {"type": "string", "nativeName": "jpegPhoto"},
        "cert": {"type": "string", "nativeName": "userCertificate;binary"},
        "plain": {"type": "string", "nativeName": "audio", "nativeType": "string"}}
    del config["objectTypes"]["account"]["properties"]["jpegPhoto"]
    system = LdapSystem("ldap", config, file=FILE)
    try:
        account = system.resource("account")
        assert account._type.properties["photo"].binary and account._type.properties["cert"].binary
        assert not account._type.properties["plain"].binary
        pem = make_test_certificates(tmp_path / "certs", ("localhost",)).cert_file.read_text()
        photo, cert = b"\xff\xd8\xff\xe0 not text \x00\x80", ssl.PEM_cert_to_DER_cert(pem)
        created = account.create({"uid": "pic", "cn": "Pic", "sn": "Pic",
                                  "photo": base64.b64encode(photo).decode(), "cert": base64.b64encode(cert).decode()})
        assert base64.b64decode(created["photo"]) == photo and base64.b64decode(created["cert"]) == cert
        shown = _entry(slapd, f"uid=pic,{ldap_subtree}")
        assert f"jpegPhoto:: {base64.b64encode(photo).decode()}" in shown
        assert f"userCertificate;binary:: {base64.b64encode(cert).decode()}" in shown
        again = account.update(created["_id"], {"photo": base64.b64encode(b"\x01\x02").decode()})
        assert base64.b64decode(again["photo"]) == b"\x01\x02"
    finally:
        system.close()


def test_base_contexts_may_have_spaces_after_their_commas(slapd: Slapd, ldap_subtree: str) -> None:
    """``ou=People, dc=example, dc=com``, as directories and OpenICF take it."""
    slapd.add_ldif(sample_users_ldif(2, ldap_subtree))
    spaced = ldap_subtree.replace(",", ", ")
    system = LdapSystem("ldap", make_config(slapd, ldap_subtree, baseContexts=[spaced],
                                            baseContextsToSynchronize=[spaced]), file=FILE)
    try:
        assert sorted(o["uid"] for o in system.resource("account").find(QuerySpec())) == ["bjensen", "scarter"]
    finally:
        system.close()
    with pytest.raises(ConfigError, match=r"baseContexts\[0\].*not in DN syntax"):
        LdapSystem("ldap", make_config(slapd, ldap_subtree, baseContexts=["ou=People,,dc=x"]), file=FILE)


def test_batch_failures_fail_alone(accounts: LdapResource) -> None:
    """In one batch a duplicate create and a schema violation fail with the LDAP
    reason while the good op succeeds."""
    results = accounts.write_batch([
        WriteOp("create", values={"uid": "bjensen", "cn": "Dup", "sn": "Dup"}),
        WriteOp("create", values={"uid": "nosn", "cn": "No Surname"}),
        WriteOp("create", values={"uid": "ok1", "cn": "Ok", "sn": "Ok"}),
    ])
    assert isinstance(results[0].error, ObjectRejected)
    assert "entryAlreadyExists" in str(results[0].error)
    assert isinstance(results[1].error, ObjectRejected)
    assert "objectClassViolation" in str(results[1].error)
    assert results[2].ok and results[2].obj and results[2].obj["uid"] == "ok1"


def test_dry_run_never_writes(slapd: Slapd, ldap_subtree: str, accounts: LdapResource) -> None:
    """A dry-run resource answers as if it wrote, and the directory is unchanged."""
    system = LdapSystem("ldap", make_config(slapd, ldap_subtree), file=FILE)
    dry = system.resource("account", dry_run=True)
    (bjensen,) = dry.find(QuerySpec(native="(uid=bjensen)"))
    dry.create({"uid": "ghost", "cn": "Ghost", "sn": "Ghost"})
    dry.update(bjensen["_id"], {"mail": "changed@example.com"}, before=bjensen)
    dry.delete(bjensen["_id"])
    assert [o["mail"] for o in accounts.find(QuerySpec(native="(|(uid=ghost)(uid=bjensen))"))] == [
        "bjensen@example.com"]


def test_binary_and_large_values(slapd: Slapd, accounts: LdapResource, ldap_subtree: str) -> None:
    """Non-UTF-8 bytes (jpegPhoto) come back as base64 and a 1 MB value reads fine."""
    photo = bytes(range(256)) * 4
    big = "x" * 1_000_000
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\n"
                   f"replace: jpegPhoto\njpegPhoto:: {base64.b64encode(photo).decode()}\n-\n"
                   f"replace: description\ndescription: {big}\n")
    (obj,) = accounts.find(QuerySpec(native="(uid=bjensen)", fields=["jpegPhoto", "description"]))
    assert base64.b64decode(obj["jpegPhoto"]) == photo
    assert obj["description"] == big


def test_memberof_reads_as_ldap_groups(
    slapd: Slapd, accounts: LdapResource, ldap_subtree: str
) -> None:
    """A group membership shows in the array property mapped to memberOf."""
    (bjensen,) = accounts.find(QuerySpec(native="(uid=bjensen)"))
    group = f"cn=admins,{ldap_subtree}"
    slapd.add_ldif(f"dn: {group}\nobjectClass: groupOfUniqueNames\ncn: admins\n"
                   f"uniqueMember: {bjensen['dn']}\n")
    assert [g.lower() for g in accounts.get(bjensen["_id"])["ldapGroups"]] == [group.lower()]


def test_wrong_password_is_authentication_failed(slapd: Slapd, ldap_subtree: str) -> None:
    """A refused bind raises AuthenticationFailed naming the DN, never the password."""
    config = make_config(slapd, ldap_subtree, credentials="wrong-secret-value")
    with pytest.raises(AuthenticationFailed) as caught:
        list(LdapSystem("ldap", config, file=FILE).resource("account").pages(QuerySpec()))
    assert "invalidCredentials" in str(caught.value) and slapd.admin_dn in str(caught.value)
    assert "wrong-secret-value" not in str(caught.value)


def test_unreachable_port_is_peer_unavailable(slapd: Slapd, ldap_subtree: str) -> None:
    """Nothing listening raises PeerUnavailable naming host and port; test() says ok False."""
    config = make_config(slapd, ldap_subtree, port=1)
    system = LdapSystem("ldap", config, file=FILE)
    with pytest.raises(PeerUnavailable, match=r"cannot connect to 127\.0\.0\.1:1"):
        system.resource("account").get("x")
    report = system.test()
    assert report["ok"] is False and "127.0.0.1:1" in report["error"]


@pytest.mark.parametrize("scheme", ["SSHA", "SHA", "SMD5", "MD5"])
def test_password_hash_algorithm_hashes_a_clear_password_before_writing_it(
        slapd: Slapd, ldap_subtree: str, scheme: str) -> None:
    """OpenICF's passwordHashAlgorithm: a clear password is written as the RFC 2307 hash
    the directory verifies at bind, never in clear; a value already hashed (the store's
    own {CRYPT}) is written as it is; the key's case does not matter."""
    config = make_config(slapd, ldap_subtree, passwordHashAlgorithm=scheme.lower())
    config["objectTypes"]["account"]["properties"]["password"] = {
        "type": "string", "nativeName": "__PASSWORD__", "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]}
    system = LdapSystem("ldap", config, file=FILE)
    accounts = system.resource("account")
    try:
        created = accounts.create({"uid": "hashed", "cn": "Hashed", "sn": "Hashed", "password": "Clear-text 42"})
        value = _user_password(slapd, created["dn"])
        assert value.startswith(f"{{{scheme}}}") and "Clear-text 42" not in value
        assert can_bind(slapd, created["dn"], "Clear-text 42") and not can_bind(slapd, created["dn"], "other")
        crypt = "{CRYPT}$6$abcdefgh$" + "x" * 86  # the store's own hash: written as it is
        accounts.update(created["_id"], {"password": crypt})
        assert _user_password(slapd, created["dn"]) == crypt
    finally:
        system.close()


def _user_password(slapd: Slapd, dn: str) -> str:
    """The entry's userPassword as the directory holds it (read as its administrator)."""
    import ldap

    conn = ldap.initialize(slapd.url)
    try:
        conn.simple_bind_s(slapd.admin_dn, slapd.admin_password)
        ((_, attributes),) = conn.search_s(dn, ldap.SCOPE_BASE, attrlist=["userPassword"])
        (value,) = attributes["userPassword"]
        return str(value.decode())
    finally:
        conn.unbind_s()


def _closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_failover_server_is_used_when_the_first_cannot_be_reached(slapd: Slapd, ldap_subtree: str) -> None:
    """OpenICF's failover: with nothing listening at host and port, the next server of
    the list that answers is used, for reads in process and for a listing read in its
    own process, and a warning names both; the first is tried again at the next
    connection. ldaps is TLS from the start, verified."""
    slapd.add_ldif(sample_users_ldif(2, ldap_subtree))
    down, also_down = _closed_port(), _closed_port()
    config = make_config(slapd, ldap_subtree, port=down, failover=[f"ldap://127.0.0.1:{also_down}/", f"{slapd.url}/"])
    system = LdapSystem("ldap", config, file=FILE)
    with structlog.testing.capture_logs() as logs:
        (found,) = system.resource("account").find(QuerySpec(native="(uid=bjensen)"))
    assert found["uid"] == "bjensen"
    (warning,) = [e for e in logs if e["event"] == "ldap.failover"]
    assert warning["log_level"] == "warning" and warning["url"] == slapd.url
    assert warning["unreachable"] == [f"127.0.0.1:{down}", f"127.0.0.1:{also_down}"]
    assert sorted(o["uid"] for page in system.resource("account").pages(QuerySpec()) for o in page) == [
        "bjensen", "scarter"]
    assert system.test()["ok"] is True
    system.close()
    assert slapd.ca_file is not None
    tls = make_config(slapd, ldap_subtree, port=down, caFile=slapd.ca_file, failover=[f"{slapd.ldaps_url}/"])
    system = LdapSystem("ldap", tls, file=FILE)
    assert [o["uid"] for o in system.resource("account").find(QuerySpec(native="(uid=bjensen)"))] == ["bjensen"]
    system.close()


def test_failover_passes_over_unreachable_servers_only(slapd: Slapd, ldap_subtree: str) -> None:
    """Every server unreachable: one error naming each. A bind refused, or a certificate
    that does not verify, is not passed over: another server would be asked the same."""
    first, second = _closed_port(), _closed_port()
    config = make_config(slapd, ldap_subtree, port=first, failover=[f"ldap://127.0.0.1:{second}"])
    with pytest.raises(PeerUnavailable) as caught:
        LdapSystem("ldap", config, file=FILE).resource("account").get("x")
    assert f"cannot connect to 127.0.0.1:{first} nor to a failover server: 127.0.0.1:{first}: " in str(caught.value)
    assert f"; 127.0.0.1:{second}: " in str(caught.value)
    refused = make_config(slapd, ldap_subtree, credentials="wrong-secret-value", failover=[f"ldap://127.0.0.1:{second}"])
    with pytest.raises(AuthenticationFailed):
        LdapSystem("ldap", refused, file=FILE).resource("account").get("x")
    unverified = make_config(slapd, ldap_subtree, ssl=True, port=slapd.ldaps_port,  # no caFile: not trusted
                             failover=[f"ldaps://127.0.0.1:{second}"])
    with pytest.raises(TLSError):
        LdapSystem("ldap", unverified, file=FILE).resource("account").get("x")


@pytest.mark.parametrize(("failover", "ssl", "problem"), [
    (["http://ldap2.example.com/"], False, "is not an LDAP server's URL"),
    (["ldap://ldap2.example.com:99999/"], False, "is not an LDAP server's URL"),
    (["ldap://ldap2.example.com/ou=People,dc=example,dc=com"], False, "nothing after the host and port"),
    (["ldap://ldap2.example.com:389/"], True, "sending the password in clear"),
    ([""], False, "must be a list of non-empty strings"),
])
def test_a_bad_failover_entry_is_an_error_naming_it(slapd: Slapd, ldap_subtree: str, failover: list[str], ssl: bool,
                                                     problem: str) -> None:
    config = make_config(slapd, ldap_subtree, failover=failover, ssl=ssl)
    with pytest.raises(ConfigError) as caught:
        LdapSystem("ldap", config, file=FILE)
    assert problem in str(caught.value) and "configurationProperties.failover" in str(caught.value)


def test_test_action_reports_ok(slapd: Slapd, ldap_subtree: str) -> None:
    """test() answers PingIDM's shape with ok True against a live server, and names it."""
    report = open_ldap_system("ldap", make_config(slapd, ldap_subtree), file=FILE).test()
    assert report == {
        "name": "ldap", "enabled": True, "config": "config/provisioner.openicf/ldap",
        "objectTypes": ["__ALL__", "account", "group"], "connectorRef": make_config(
            slapd, ldap_subtree)["connectorRef"], "displayName": "LDAP Connector", "ok": True,
        "server": "OpenLDAP"}


def test_ldaps_and_starttls_with_test_ca(
    slapd: Slapd, accounts: LdapResource, ldap_subtree: str
) -> None:
    """ldaps:// and StartTLS both verify the server against caFile and read."""
    ldaps = make_config(slapd, ldap_subtree, ssl=True, port=slapd.ldaps_port, caFile=slapd.ca_file)
    start_tls = make_config(slapd, ldap_subtree, startTLS=True, caFile=slapd.ca_file)
    for config in (ldaps, start_tls):
        resource = LdapSystem("ldap", config, file=FILE).resource("account")
        assert len(resource.find(QuerySpec(fields=["uid"]))) == 2


def test_tls_without_trusted_ca_fails(slapd: Slapd, ldap_subtree: str) -> None:
    """With verification on and no CA file the test CA is unknown: TLSError, for
    ldaps and StartTLS; with verifyCertificate false the same server is read."""
    for props in ({"ssl": True, "port": slapd.ldaps_port}, {"startTLS": True}):
        system = LdapSystem("ldap", make_config(slapd, ldap_subtree, **props), file=FILE)
        with pytest.raises(TLSError, match=r"127\.0\.0\.1.*certificate verify failed"):
            system.resource("account").get("x")
    lax = make_config(slapd, ldap_subtree, ssl=True, port=slapd.ldaps_port, verifyCertificate=False)
    assert LdapSystem("ldap", lax, file=FILE).resource("account").get("x") is None


def test_certificate_for_another_name_fails(ldap_subtree: str) -> None:
    """A certificate issued for localhost only is refused when connecting to 127.0.0.1."""
    with Slapd(tls=True, tls_names=("localhost",)) as other:
        config = make_config(other, "dc=example,dc=com", ssl=True, port=other.ldaps_port,
                             caFile=other.ca_file)
        with pytest.raises(TLSError, match=r"certificate is not valid for 127\.0\.0\.1"):
            LdapSystem("ldap", config, file=FILE).resource("account").get("x")


def test_configuration_errors_name_the_key(slapd: Slapd, ldap_subtree: str) -> None:
    """Bad settings raise ConfigError naming the file and key; unknown types too."""
    config = make_config(slapd, ldap_subtree)
    del config["configurationProperties"]["host"]
    with pytest.raises(ConfigError, match=r"configurationProperties\.host"):
        LdapSystem("ldap", config, file=FILE)
    both = make_config(slapd, ldap_subtree, ssl=True, startTLS=True)
    with pytest.raises(ConfigError, match="startTLS"):
        LdapSystem("ldap", both, file=FILE)
    with pytest.raises(ConfigError, match="no object type 'printer'"):
        LdapSystem("ldap", make_config(slapd, ldap_subtree), file=FILE).resource("printer")


def test_object_guid_round_trip() -> None:
    """objectGUID bytes read in AD's mixed-endian form, and filters use the same bytes."""
    raw = bytes.fromhex("0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    assert guid_from_bytes(raw) == "3d2c1b0a-5f4e-7160-8293-a4b5c6d7e8f9"
    assert guid_to_bytes("3d2c1b0a-5f4e-7160-8293-a4b5c6d7e8f9") == raw
    assert id_filter("objectGUID", ["3d2c1b0a-5f4e-7160-8293-a4b5c6d7e8f9", "bad"]) == (
        "(objectGUID=\\0a\\1b\\2c\\3d\\4e\\5f\\60\\71\\82\\93\\a4\\b5\\c6\\d7\\e8\\f9)")
