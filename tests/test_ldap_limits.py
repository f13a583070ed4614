"""The LDAP connector where directories differ or misbehave: a server-side size
limit, a server that never answers, another id attribute, attribute names in
another case. Each case would otherwise read a partial source or hang a run."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from idsync.connectors.ldap.connector import LdapSystem
from idsync.connectors.ldap.values import decode_id
from idsync.errors import PeerError, PeerUnavailable
from idsync.resource import QuerySpec
from idsync_dev import Slapd, sample_users_ldif
from test_ldap_connector import FILE, make_config

pytestmark = pytest.mark.slapd

_READER_PASSWORD = "reader-secret"


class _LimitedSlapd(Slapd):
    """A slapd that answers ordinary users at most 5 entries per search, as
    directories with a default size limit do."""

    def _config_ldif(self) -> str:
        return super()._config_ldif().replace("olcLimits: * size=unlimited time=unlimited\n",
                                              "olcLimits: * size.soft=5 size.hard=5\n")


@pytest.fixture(scope="module")
def limited() -> Iterator[Slapd]:
    if not Slapd.available():
        pytest.skip("slapd is not installed")
    with _LimitedSlapd(tls=False) as server:
        server.add_ldif(sample_users_ldif(12, f"ou=People,{server.base_dn}"))
        server.add_ldif(f"dn: cn=reader,{server.base_dn}\nobjectClass: simpleSecurityObject\n"
                        f"objectClass: organizationalRole\ncn: reader\nuserPassword: {_READER_PASSWORD}\n")
        yield server


def test_size_limit_fails_the_read_instead_of_truncating_it(limited: Slapd) -> None:
    """A page larger than the server's size limit gets sizeLimitExceeded: the read
    fails (a recon then deletes nothing) rather than passing 5 of 12 entries on."""
    config = make_config(limited, f"ou=People,{limited.base_dn}", principal=f"cn=reader,{limited.base_dn}",
                         credentials=_READER_PASSWORD)
    system = LdapSystem("ldap", config, file=FILE)
    try:
        accounts = system.resource("account")
        with pytest.raises(PeerError, match="size limit"):
            list(accounts.pages(QuerySpec(fields=["uid"], page_size=100)))
    finally:
        system.close()


def test_silent_server_times_out(slapd: Slapd, ldap_subtree: str) -> None:
    """A peer that accepts the connection and never answers is PeerUnavailable
    after readTimeout, not a hung run."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever reads
        config = make_config(slapd, ldap_subtree, port=silent.getsockname()[1], readTimeout=1)
        system = LdapSystem("ldap", config, file=FILE)
        started = time.monotonic()
        with pytest.raises(PeerUnavailable):
            system.resource("account").get("x")
        # readTimeout (1 s) ended it, not the default's 60 s: a quarter of that leaves a busy
        # machine room.
        assert time.monotonic() - started < 15
        system.close()


def test_other_id_attribute_and_attribute_case(slapd: Slapd, ldap_subtree: str) -> None:
    """uidAttribute may name any stable attribute (here employeeNumber, as
    nsUniqueId is on 389-ds), and attribute names match whatever their case."""
    slapd.add_ldif(f"dn: uid=idattr,{ldap_subtree}\nobjectClass: inetOrgPerson\nuid: idattr\ncn: I\nsn: A\n"
                   "employeeNumber: 7f3e9d1c-1dd211b2-8d5fe1a4-00000001\ngivenName: Ida\n")
    config = make_config(slapd, ldap_subtree, uidAttribute="employeeNumber")
    config["objectTypes"]["account"]["properties"] = {
        "uid": {"type": "string", "nativeName": "UID"}, "first": {"type": "string", "nativeName": "GivenName"}}
    system = LdapSystem("ldap", config, file=FILE)
    try:
        accounts = system.resource("account")
        (page,) = list(accounts.pages(QuerySpec()))
        assert page == [{"_id": "7f3e9d1c-1dd211b2-8d5fe1a4-00000001", "uid": "idattr", "first": "Ida"}]
        assert accounts.get("7f3e9d1c-1dd211b2-8d5fe1a4-00000001", ["uid"]) == {
            "_id": "7f3e9d1c-1dd211b2-8d5fe1a4-00000001", "uid": "idattr"}
    finally:
        system.close()


def test_text_ids_are_kept_as_the_directory_writes_them() -> None:
    """entryUUID and nsUniqueId values are text ids; an objectGUID is 16 bytes."""
    assert decode_id("nsuniqueid", [b"7f3e9d1c-1dd211b2-8d5fe1a4-00000001"]) == "7f3e9d1c-1dd211b2-8d5fe1a4-00000001"
    assert decode_id("entryuuid", [b"01a2305e-affb-10a7-8f5c-2727c2d82eff"]) == "01a2305e-affb-10a7-8f5c-2727c2d82eff"
    assert decode_id("objectguid", [bytes(range(16))]) == "03020100-0504-0706-0809-0a0b0c0d0e0f"
    assert decode_id("entryuuid", []) is None


def test_a_missing_base_context_fails_the_read(slapd: Slapd, ldap_subtree: str) -> None:
    """A baseContexts entry that does not exist (an OU renamed, a typo)
    fails the paged read with PeerError naming it, instead of reading as an empty
    subtree whose entries would all look deleted to a recon; a lookup by id over the
    same bases still finds the entries of the bases that exist."""
    slapd.add_ldif(sample_users_ldif(2, ldap_subtree))
    missing = ldap_subtree.replace("ou=", "ou=gone", 1)  # beside it: one under it would not be searched
    config = make_config(slapd, ldap_subtree, baseContexts=[ldap_subtree, missing])
    system = LdapSystem("ldap", config, file=FILE)
    plain = LdapSystem("ldap", make_config(slapd, ldap_subtree), file=FILE)
    try:
        accounts = system.resource("account")
        with pytest.raises(PeerError, match=f"search under {missing} failed: the base context does not exist"):
            list(accounts.pages(QuerySpec(fields=["uid"])))
        ids = [o["_id"] for page in plain.resource("account").pages(QuerySpec(fields=["uid"])) for o in page]
        assert len(ids) == 2 and len(accounts.get_many(ids)) == 2
    finally:
        system.close()
        plain.close()
