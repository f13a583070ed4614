"""The LDAP read path against a real slapd: pages asked for ahead keep every entry
in the directory's order, a read cut short (a dropped connection, a size limit)
fails the recon before anything is deleted, and a recon asks the directory only
for the attributes its mapping uses."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.config.mappings import parse_mapping
from idsync.config.source_fields import source_fields
from idsync.connectors.ldap import connection as ldap_connection
from idsync.connectors.ldap import connector as ldap_connector
from idsync.connectors.ldap.connector import LdapSystem
from idsync.connectors.ldap.values import merge_ranges
from idsync.errors import PeerError, PeerUnavailable
from idsync.resource import QuerySpec
from idsync_dev import Slapd, sample_users_ldif
from projects import person
from recon_env import Env
from test_ldap_connector import FILE, make_config
from test_ldap_limits import _READER_PASSWORD, _LimitedSlapd

from samples import idsync, sample_project

pytestmark = pytest.mark.slapd

_JS = "text/javascript"


def _dns_in_directory_order(slapd: Slapd, base: str) -> list[str]:
    """The DNs as ``ldapsearch`` lists them, paging by 100 (slapd's order for a
    paged search, which an unpaged one need not share)."""
    done = subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", slapd.url, "-D", slapd.admin_dn,
                           "-w", slapd.admin_password, "-b", base, "-E", "pr=100/noprompt",
                           "(objectClass=inetOrgPerson)", "1.1"],
                          capture_output=True, text=True, check=True)
    return [line[4:] for line in done.stdout.splitlines() if line.startswith("dn: ")]


def _people(count: int, subtree: str) -> str:
    return "".join(person(f"u{i:05d}", subtree) for i in range(count))


class _CuttingProxy:
    """A TCP relay to slapd that closes both sides once ``limit`` bytes of the
    server's answers have passed: a connection lost in the middle of a search."""

    def __init__(self, port: int, limit: int) -> None:
        self._upstream, self._limit = port, limit
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self._limit), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while data := source.recv(65536):
                if limit is not None and passed + len(data) > limit:
                    sink.sendall(data[:limit - passed])
                    break
                sink.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            # shutdown, not only close: the other relay thread, blocked in recv, keeps
            # the socket open, and the client would wait for its read timeout.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()


def test_prefetched_pages_keep_every_entry_in_directory_order(slapd: Slapd, ldap_subtree: str) -> None:
    """2,500 entries paged by the directory in 100s and cut by the caller into 300s
    come back exactly in the order of one unpaged search: none lost, none twice."""
    slapd.add_ldif(sample_users_ldif(2500, ldap_subtree))
    system = LdapSystem("ldap", make_config(slapd, ldap_subtree, blockSize=100), file=FILE)
    try:
        pages = list(system.resource("account").pages(QuerySpec(fields=["dn", "uid"], page_size=300)))
    finally:
        system.close()
    assert [len(p) for p in pages] == [300] * 8 + [100]
    assert [o["dn"] for p in pages for o in p] == _dns_in_directory_order(slapd, ldap_subtree)


def test_a_reader_that_stops_early_leaves_the_connection_usable(slapd: Slapd, ldap_subtree: str) -> None:
    """A caller that takes 5 entries and stops (its next page already asked for) is
    followed on the same connection by a full read that gets all 700, in order."""
    slapd.add_ldif(sample_users_ldif(700, ldap_subtree))
    system = LdapSystem("ldap", make_config(slapd, ldap_subtree, blockSize=100), file=FILE)
    try:
        accounts = system.resource("account")
        assert len(accounts.find(QuerySpec(fields=["uid"], page_size=5), limit=5)) == 5
        dns = [o["dn"] for page in accounts.pages(QuerySpec(fields=["dn"], page_size=100)) for o in page]
    finally:
        system.close()
    assert dns == _dns_in_directory_order(slapd, ldap_subtree)


def test_the_next_page_is_asked_for_before_the_current_one_is_processed(ldap_subtree: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the caller holds page 1, page 2 is already requested and answered: it
    is still delivered after the server stops. Page 3, which nobody could ask for
    in time, fails the read with PeerUnavailable instead of ending it quietly.
    (The reader in process: a listing process reads further ahead, as far as its pipe holds.)"""
    monkeypatch.setattr(ldap_connector, "two_cores", lambda: False)
    with Slapd(tls=False) as server:
        subtree = f"ou=People,{server.base_dn}"
        server.add_ldif(sample_users_ldif(300, subtree))
        system = LdapSystem("ldap", make_config(server, subtree, blockSize=100), file=FILE)
        pages = system.resource("account").pages(QuerySpec(fields=["uid"], page_size=100))
        assert len(next(pages)) == 100
        threading.Event().wait(0.5)  # the server answers the request already sent
        server.stop()
        assert len(next(pages)) == 100
        with pytest.raises(PeerUnavailable):
            next(pages)
        system.close()


@pytest.fixture
def env(slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    """The repository's project over this test's subtree, SQLite store, no delete cap."""
    bench = Env(slapd, ldap_subtree, tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    bench.reconfigure(maxDeletes=None)
    yield bench
    bench.store.close()


def test_a_connection_cut_mid_read_fails_the_recon_and_deletes_nothing(env: Env, slapd: Slapd) -> None:
    """The connection to the directory drops in the middle of a search's answer:
    the recon fails naming the peer and deletes none of the 10 users whose
    entries are gone; read whole again, the same recon deletes them."""
    env.slapd.add_ldif(_people(1200, env.subtree))
    assert env.recon().summary["changes"]["created"] == 1200
    env.remove(*[f"u{i:05d}" for i in range(10)])
    proxy = _CuttingProxy(slapd.port, limit=60_000)
    env.change_conf("provisioner.openicf-ldap.json",
                    lambda conf: conf["configurationProperties"].update(port=proxy.port, blockSize=200))
    try:
        cut = env.recon()
    finally:
        proxy.close()
    assert cut.state == "FAILED" and "ldap" in (cut.message or "")
    assert len(env.users()) == 1200 and cut.summary["changes"].get("deleted", 0) == 0
    env.change_conf("provisioner.openicf-ldap.json",
                    lambda conf: conf["configurationProperties"].update(port=slapd.port))
    whole = env.recon()
    assert whole.state == "SUCCESS" and whole.summary["changes"]["deleted"] == 10


def test_a_size_limit_fails_the_recon_and_deletes_nothing(tmp_path: Path) -> None:
    """A bind DN the directory answers at most 5 entries makes the recon fail on
    sizeLimitExceeded; the 12 users read before (by an unlimited DN) all stay,
    though 7 would be gone had the 5 entries been taken for the whole source."""
    with _LimitedSlapd(tls=False) as limited:
        subtree = f"ou=People,{limited.base_dn}"
        limited.add_ldif(sample_users_ldif(12, subtree))
        limited.add_ldif(f"dn: cn=reader,{limited.base_dn}\nobjectClass: simpleSecurityObject\n"
                         f"objectClass: organizationalRole\ncn: reader\nuserPassword: {_READER_PASSWORD}\n")
        env = Env(limited, subtree, tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
        env.reconfigure(maxDeletes=None)
        assert env.recon().summary["changes"]["created"] == 12
        env.change_conf("provisioner.openicf-ldap.json", lambda conf: conf["configurationProperties"].update(
            principal=f"cn=reader,{limited.base_dn}", credentials=_READER_PASSWORD, blockSize=100))
        limited_run = env.recon()
        env.store.close()
        assert limited_run.state == "FAILED" and "size limit" in (limited_run.message or "")
        assert len(env.users()) == 12


def _observe_attributes(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The attributes each paged search of the directory asked for (listings read in
    this process, not in a child of ``listing.py``, so that the searches are seen here)."""
    monkeypatch.setattr(ldap_connector, "two_cores", lambda: False)
    asked: list[set[str]] = []
    real = ldap_connection.LdapConnection.search_pages

    def observed(self: ldap_connection.LdapConnection, base: str, search_filter: str, attributes: Any,
                 page_size: int, **kw: Any) -> Iterator[list[ldap_connection.SearchEntry]]:
        if page_size:
            asked.append({a.lower() for a in attributes})
        return real(self, base, search_filter, attributes, page_size, **kw)

    monkeypatch.setattr(ldap_connection.LdapConnection, "search_pages", observed)
    return asked


def test_a_recon_reads_only_the_attributes_its_mapping_uses(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without defaultSourceFields, the directory is asked for the attributes of the
    property rules, a rule condition, the correlation query and the sourceCondition,
    and for no other (not givenName, memberOf, objectClass...); the users are
    created and correlated from them all."""
    env.reconfigure(maxDeletes=None, defaultSourceFields=None,
                    sourceCondition="/object/telephoneNumber pr or /object/uid pr",
                    correlationQuery={"_queryFilter": '/mail eq "${source.description}"'},
                    properties=[{"source": "uid", "target": "userName"}, {"source": "sn", "target": "sn"},
                                {"source": "cn", "target": "displayName", "condition": "/object/employeeType pr"},
                                {"source": "mail", "target": "mail"}])
    asked = _observe_attributes(monkeypatch)
    env.create_user(userName="other", sn="Other", mail="desk-7@example.com")
    env.add("fa1", employeeType="contractor")
    env.add("fa2", description="desk-7@example.com")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"] == {**result.summary["changes"], "created": 1, "updated": 1}
    users = env.users()
    assert users["fa1"]["displayName"] == "Fa1 Test" and users["fa2"]["sn"] == "Test"
    assert asked[0] == {"entryuuid", "uid", "sn", "cn", "employeetype", "mail", "description", "telephonenumber"}


def test_a_source_query_naming_only_ids_reads_what_the_mapping_uses(env: Env,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A sourceQuery whose ``_fields`` is PingIDM's comma-separated string is read as
    its list of attributes; one naming only ``_id`` (a query of ids, which PingIDM
    follows with a read of each whole object) reads what the mapping uses: a recon
    creates whole users and the next one leaves them as they are, never projecting
    every mapped property empty over them."""
    env.reconfigure(maxDeletes=None, defaultSourceFields=None, sourceQuery={"_queryFilter": "true", "_fields": ["_id"]})
    asked = _observe_attributes(monkeypatch)
    env.add("ids1", "ids2")
    for _ in range(2):
        result = env.recon()
        assert result.state == "SUCCESS", result.message
    assert result.summary["changes"] == {**result.summary["changes"], "updated": 0, "unchanged": 2}
    users = env.users()
    assert users["ids1"]["sn"] == "Test" and users["ids2"]["mail"] == "ids2@example.com"
    assert {"uid", "sn", "mail", "givenname"} <= asked[0]
    env.reconfigure(maxDeletes=None, defaultSourceFields=None,
                    sourceQuery={"_queryFilter": "true", "_fields": "uid, sn,mail"})
    asked.clear()
    assert env.recon().state == "SUCCESS"
    assert asked[0] == {"entryuuid", "uid", "sn", "mail"}


def _mapping(**raw: Any) -> Any:
    base = {"name": "m", "source": "system/ldap/account", "target": "managed/user",
            "properties": [{"source": "uid", "target": "userName"}]}
    return parse_mapping({**base, **raw}, file="conf/sync.json", key="mappings[0]", base_dir=Path("."))


def test_source_fields_fall_back_to_everything_when_a_script_sees_the_source() -> None:
    """_fields and defaultSourceFields are taken as written; a validSource, a
    script condition, a correlation script, a policy script or an object hook may
    read any attribute, so the source's default set is read."""
    assert source_fields(_mapping()) == ("uid",)
    assert source_fields(_mapping(defaultSourceFields=["cn"])) == ("cn",)
    assert source_fields(_mapping(sourceQuery={"_queryFilter": "true", "_fields": ["sn", "uid"]})) == ("sn", "uid")
    assert source_fields(_mapping(sourceQuery={"_queryFilter": "true", "_fields": "sn, uid"})) == ("sn", "uid")
    for ids in ("_id", ["_id", "_rev"], "*", "uid,*"):
        assert source_fields(_mapping(sourceQuery={"_queryFilter": "true", "_fields": ids})) == ("uid",), ids
    script = {"type": _JS, "source": "true"}
    for whole in ({"validSource": script}, {"sourceCondition": script}, {"onUpdate": script},
                  {"correlationQuery": {"type": _JS, "source": "({_queryFilter: 'true'})"}},
                  {"properties": [{"source": "", "target": "userName", "transform": {"type": _JS,
                                                                                    "source": "source.uid"}}]},
                  {"policies": [{"situation": "ABSENT", "action": {"type": _JS, "source": "'CREATE'"}}]},
                  {"linkQualifiers": {"type": _JS, "source": "['default']"}},
                  {"linkQualifiers": ["a", "b"], "correlationQuery": [
                      {"linkQualifier": "a", "_queryFilter": '/userName eq "${source.cn}"'},
                      {"linkQualifier": "b", "type": _JS, "source": "({_queryFilter: 'true'})"}]}):
        assert source_fields(_mapping(**whole)) is None, whole


def test_a_field_list_leaving_out_a_mapped_attribute_is_named(tmp_path: Path, slapd: Slapd,
                                                               ldap_subtree: str) -> None:
    """defaultSourceFields (or a sourceQuery's _fields, which wins over it) without an
    attribute a property maps would have a recon project it empty over the target's
    value: validate names the list's key and the attributes, as a warning (the project
    still loads, as in PingIDM); a list holding every mapped attribute is not named."""
    warned = _mapping(defaultSourceFields=["cn"], properties=[
        {"source": "uid", "target": "userName"}, {"source": "mail/0", "target": "mail"},
        {"source": "cn", "target": "displayName"}, {"target": "accountStatus", "default": "active"}]).warnings
    assert [(w.key, w.event) for w in warned] == [
        ("mappings[0].defaultSourceFields", "config.source_fields_incomplete")]
    assert "leaves out mail, uid, which the properties map" in str(warned[0])
    assert not _mapping(defaultSourceFields=["uid", "sn"]).warnings
    query = {"_queryFilter": "true", "_fields": "sn"}
    assert [w.key for w in _mapping(defaultSourceFields=["uid"], sourceQuery=query).warnings] == [
        "mappings[0].sourceQuery._fields"]
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"][0]["defaultSourceFields"].remove("mail")
    sync_file.write_text(json.dumps(sync, indent=2))
    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"warning: {sync_file}: mappings[0].defaultSourceFields: leaves out mail, which the properties map" \
        in checked.stderr, checked.stderr


def test_source_fields_of_every_link_qualifier_and_named_query() -> None:
    """Each link qualifier's correlation query and a named query's ``${source.NAME}``
    parameters add what they bind; special names (ldapGroups) are fields like any other."""
    mapping = _mapping(
        linkQualifiers=["a", "b", "c"],
        properties=[{"source": "uid", "target": "userName"}, {"source": "ldapGroups", "target": "groups"}],
        correlationQuery=[{"linkQualifier": "a", "_queryFilter": '/userName eq "${source.cn}"'},
                          {"linkQualifier": "b", "_queryId": "for-userName", "uid": "${source.mail}"},
                          {"linkQualifier": "c", "expressionTree": {"all": ["userName"]}}],
        sourceCondition='/linkQualifier eq "a" or /object/sn pr')
    assert source_fields(mapping) == ("cn", "ldapGroups", "mail", "sn", "uid")


def test_ranged_attributes_are_read_whole() -> None:
    """An attribute sent in ranges (AD's ``member;range=0-1``) is completed range by
    range under its plain name; a range that does not come back fails the read."""
    ranges = {"member;range=2-*": {"member;range=2-3": [b"c", b"d"]},
              "member;range=4-*": {"member;range=4-*": [b"e"]}}

    def fetch(dn: str, attribute: str) -> dict[str, list[bytes]]:
        return ranges.get(attribute, {})

    raw = {"cn": [b"g"], "member;range=0-1": [b"a", b"b"]}
    assert merge_ranges("cn=g", raw, fetch) == {"cn": [b"g"], "member": [b"a", b"b", b"c", b"d", b"e"]}
    del ranges["member;range=4-*"]
    with pytest.raises(PeerError, match="values of member from 4 on could not be read"):
        merge_ranges("cn=g", raw, fetch)
