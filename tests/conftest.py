"""Shared fixtures. The LDAP ones come first: one throwaway slapd per test session,
and a fresh subtree under ``ou=People`` for each test that wants isolation."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from directory_servers import dirsrv_server, samba_server
from idsync_dev.debian_root import start_background
from idsync_dev.dirsrv import DirSrv
from idsync_dev.samba_ad import SambaDC
from idsync_dev.slapd import Slapd

# The suite starts idsync hundreds of times, and every xdist worker rewrites the test
# modules' asserts: with PYTHONDONTWRITEBYTECODE set, each would compile all of it again.
# Bytecode is kept under the venv (not in the source tree), for this process and its children.
_PYCACHE = str(Path(sys.prefix) / ".pycache")
sys.dont_write_bytecode = False
sys.pycache_prefix = _PYCACHE
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ["PYTHONPYCACHEPREFIX"] = _PYCACHE

_subtree_numbers = itertools.count(1)
_BACKGROUND_BUILD = pytest.StashKey[subprocess.Popen[bytes]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """When tests/test_install.py is selected and its Debian 12 root is not cached yet,
    begin building it now (two or three minutes, mostly the mirror and dpkg) so the build
    overlaps the rest of the suite; the test waits for it (a lock) when its turn comes."""
    if session.config.option.collectonly:
        return  # nothing runs: start nothing
    if any(item.path.name == "test_install.py" for item in session.items):
        started = start_background(Path(__file__).resolve().parent.parent)
        if started is not None:
            session.config.stash[_BACKGROUND_BUILD] = started
    # The Samba AD DC and the 389 DS instance take seconds to make: start them now, on
    # threads, when a selected test wants one; the fixtures wait for them. Under xdist
    # only the first worker does: worksteal hands it the first share of the tests in file
    # order, where test_389ds.py and test_active_directory.py are; a worker that steals
    # such a test starts its own server when the test asks for it.
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "samba_ad" in wanted:
        samba_server.begin()
    if "dirsrv" in wanted:
        dirsrv_server.begin()


def pytest_sessionfinish(session: pytest.Session) -> None:
    samba_server.stop()
    dirsrv_server.stop()


@pytest.fixture(scope="session")
def slapd() -> Iterator[Slapd]:
    """A running slapd with TLS (ldap:// and ldaps://, test CA in ``slapd.ca_file``)."""
    if not Slapd.available():
        pytest.skip("slapd is not installed (Debian packages slapd and ldap-utils)")
    with Slapd(tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def plain_slapd() -> Iterator[Slapd]:
    """A slapd without the memberof overlay (no memberOf, no referential integrity):
    only a search of the groups tells an entry's groups."""
    if not Slapd.available():
        pytest.skip("slapd is not installed (Debian packages slapd and ldap-utils)")
    with Slapd(tls=False, member_of=False) as server:
        yield server


def _people_subtree(server: Slapd | DirSrv) -> str:
    ou = f"t{next(_subtree_numbers)}"
    dn = f"ou={ou},ou=People,{server.base_dn}"
    server.add_ldif(f"dn: {dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: {ou}\n")
    return dn


@pytest.fixture
def ldap_subtree(slapd: Slapd) -> str:
    """The DN of a new, empty ``ou`` under ``ou=People``, unique to this test:
    faster than wiping the directory, and tests never see each other's entries."""
    return _people_subtree(slapd)


@pytest.fixture(scope="session")
def samba_ad() -> SambaDC:
    """A running Samba AD domain controller (``directory_servers``), shared by the session."""
    return samba_server.get()


@pytest.fixture
def ad_ou(samba_ad: SambaDC) -> Iterator[str]:
    """The DN of a new, empty organizational unit in the AD domain, unique to this test,
    deleted with what it holds once the test ends: a ``sAMAccountName`` is the domain's,
    not the OU's, so two tests of one session that add the same user (the samples' bjensen)
    must not meet."""
    dn = f"OU=t{next(_subtree_numbers)},{samba_ad.base_dn}"
    samba_ad.add_ldif(f"dn: {dn}\nobjectClass: organizationalUnit\n")
    yield dn
    subprocess.run(["ldapdelete", "-x", "-r", "-H", samba_ad.url, "-D", samba_ad.admin_dn, "-w",
                    samba_ad.admin_password, dn], capture_output=True, check=False, timeout=120)


@pytest.fixture(scope="session")
def dirsrv() -> DirSrv:
    """A running 389 Directory Server instance (``directory_servers``), shared by the session."""
    return dirsrv_server.get()


@pytest.fixture
def dirsrv_subtree(dirsrv: DirSrv) -> str:
    """The DN of a new, empty ``ou`` under ``ou=People`` of the 389 DS instance, unique to this test."""
    return _people_subtree(dirsrv)
