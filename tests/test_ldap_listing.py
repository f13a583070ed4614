"""A whole listing read and decoded in a second process (``connectors/ldap/listing.py``):
the same objects in the same order as a read in process, the directory's errors
raised as themselves, a child that dies midway a failed read (never a short
listing), and no child where one cannot help (a filtered read)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest
from idsync.connectors.ldap import connector as ldap_connector
from idsync.connectors.ldap import listing
from idsync.connectors.ldap.connector import LdapResource, LdapSystem
from idsync.errors import PeerUnavailable
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync_dev.slapd import Slapd
from test_ldap_connector import FILE

pytestmark = pytest.mark.slapd

ROOT = Path(__file__).resolve().parent.parent

_numbers = itertools.count(1)


def _people(slapd: Slapd, count: int) -> str:
    ou = f"listing{next(_numbers)}"
    base = f"ou={ou},ou=People,{slapd.base_dn}"
    slapd.add_ldif(f"dn: {base}\nobjectClass: organizationalUnit\nou: {ou}\n\n" + "".join(
        f"dn: uid=p{i:04d},{base}\nobjectClass: inetOrgPerson\nuid: p{i:04d}\ncn: Person {i}\nsn: {i}\n"
        f"description: {'x' * 200}\n\n" for i in range(count)))
    return base


def _resource(slapd: Slapd, base: str, **props: Any) -> LdapResource:
    config = {"name": "ldap", "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
              "configurationProperties": {"host": "127.0.0.1", "port": slapd.port, "principal": slapd.admin_dn,
                                          "credentials": slapd.admin_password, "baseContexts": [base],
                                          "baseContextsToSynchronize": [base], "uidAttribute": "entryUUID",
                                          "accountSearchFilter": "(uid=*)", **props},
              "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "objectClasses": ["inetOrgPerson"],
                                          "properties": {p: {"type": "string", "nativeName": p}
                                                         for p in ("uid", "cn", "description")}}}}
    return LdapSystem("ldap", config, file=FILE).resource("account")


def _listing(resource: LdapResource, **spec: Any) -> list[list[dict[str, Any]]]:
    return list(resource.pages(QuerySpec(**spec)))


def test_a_child_reads_what_the_process_would(slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pages read by the child hold the same objects, in the same pages and order,
    as reading in process; the reading happened in another process."""
    base = _people(slapd, 120)
    seen: list[int] = []
    real = ldap_connector._listing

    def listing(*args: Any) -> Any:
        seen.append(os.getpid())
        return real(*args)

    in_child = _listing(_resource(slapd, base), fields=["uid", "cn", "description"], page_size=50)
    monkeypatch.setattr(ldap_connector, "two_cores", lambda: False)
    monkeypatch.setattr(ldap_connector, "_listing", listing)
    in_process = _listing(_resource(slapd, base), fields=["uid", "cn", "description"], page_size=50)
    assert seen == []  # the in-process read does not go through the child's entry point
    assert [len(p) for p in in_child] == [50, 50, 20]
    assert in_child == in_process


def test_a_filtered_read_stays_in_process(slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read narrowed by a filter (a lookup, not a listing) starts no child."""
    base = _people(slapd, 3)
    resource = _resource(slapd, base)
    monkeypatch.setattr(ldap_connector, "read_in_child", lambda *a: pytest.fail("a child was started"))
    found = _listing(resource, filter=parse('uid eq "p0001"'))
    assert [o["uid"] for page in found for o in page] == ["p0001"]


def test_an_error_of_the_child_is_raised_as_itself(slapd: Slapd) -> None:
    """A base context that does not exist fails the listing with the connector's own
    error (its kind and message), as a read in process would."""
    resource = _resource(slapd, f"ou=nowhere,{slapd.base_dn}")
    with pytest.raises(Exception) as raised:
        _listing(resource)
    assert type(raised.value).__module__ == "idsync.errors" and "nowhere" in str(raised.value)


def test_a_child_that_dies_midway_fails_the_read(slapd: Slapd) -> None:
    """Killing the child after the first page makes the listing fail (PeerUnavailable),
    never end short as if the directory held fewer entries."""
    base = _people(slapd, 600)
    pages = _resource(slapd, base).pages(QuerySpec(fields=["uid", "description"], page_size=10))
    assert len(next(pages)) == 10
    (child,) = [c for c in multiprocessing.active_children() if c.name == "idsync-ldap-listing"]
    child.kill()
    with pytest.raises(PeerUnavailable, match="ended before it was complete"):
        for _ in pages:
            pass


def test_a_sandbox_that_hides_the_cores_does_not_stop_a_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the system refuses to say which cores the process may use (a seccomp filter
    answering EPERM), the machine's core count decides, instead of the read failing."""
    def refused(_pid: int) -> set[int]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(listing.os, "sched_getaffinity", refused)
    monkeypatch.setattr(listing.os, "cpu_count", lambda: 2)
    assert listing.two_cores() is True
    monkeypatch.setattr(listing.os, "cpu_count", lambda: 1)
    assert listing.two_cores() is False


def test_signals_to_the_process_group_are_left_to_the_caller(slapd: Slapd) -> None:
    """Ctrl-C, a hang-up or a SIGTERM sent to the whole process group (a terminal) does not
    end the listing process: the caller decides (a cancel at a page boundary), and the
    listing goes on whole until it stops reading."""
    base = _people(slapd, 600)
    pages = _resource(slapd, base).pages(QuerySpec(fields=["uid", "description"], page_size=10))
    first = next(pages)
    (child,) = [c for c in multiprocessing.active_children() if c.name == "idsync-ldap-listing"]
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        os.kill(child.pid or 0, sig)
    assert len(first) + sum(len(page) for page in pages) == 600


def _holders(stream: IO[Any]) -> list[int]:
    """The processes other than this one holding the pipe ``stream`` reads, by ``/proc``."""
    pipe = f"pipe:[{os.fstat(stream.fileno()).st_ino}]"
    found = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == pipe and int(fd.parts[2]) != os.getpid():
                found.add(int(fd.parts[2]))
        except (OSError, ValueError):
            continue  # a process or descriptor gone meanwhile
    return sorted(found)


def test_a_command_ending_before_its_fork_server_is_ready_leaves_its_output_to_no_one(tmp_path: Path) -> None:
    """A recon of a directory that is down fails at once, while the fork server it started
    for its listing is still importing the program: the command's end ends the server too,
    so nothing holds the command's standard output and error once it has exited (a pipe's
    reader, ``idsync recon ... | tee log``, sees their end then, not once the server's
    imports are done)."""
    if not listing.two_cores():
        pytest.skip("one core: the listing is read in process, no fork server is started")
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "IDSYNC_LDAP_PORT": str(port), "IDSYNC_LDAP_PASSWORD": "unused",
           "IDSYNC_LOG__LEVEL": "warning"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "idsync"), "-p", str(tmp_path), "recon",
                             "systemLdapAccounts_managedUser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    try:
        assert proc.wait(timeout=120) != 0
        assert proc.stdout is not None and proc.stderr is not None
        assert (_holders(proc.stdout), _holders(proc.stderr)) == ([], [])
        assert "127.0.0.1" in proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.communicate()
