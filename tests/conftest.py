"""Shared fixtures. The LDAP ones come first: one throwaway slapd per test session,
and a fresh subtree under ``ou=People`` for each test that wants isolation."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from idsync_dev.debian_root import start_background
from idsync_dev.slapd import Slapd

_subtree_numbers = itertools.count(1)
_BACKGROUND_BUILD = pytest.StashKey[subprocess.Popen[bytes]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """When tests/test_install.py is selected and its Debian 12 root is not cached yet,
    begin building it now (two or three minutes, mostly the mirror and dpkg) so the build
    overlaps the rest of the suite; the test waits for it (a lock) when its turn comes."""
    if any(item.path.name == "test_install.py" for item in session.items):
        started = start_background(Path(__file__).resolve().parent.parent)
        if started is not None:
            session.config.stash[_BACKGROUND_BUILD] = started


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


@pytest.fixture
def ldap_subtree(slapd: Slapd) -> str:
    """The DN of a new, empty ``ou`` under ``ou=People``, unique to this test:
    faster than wiping the directory, and tests never see each other's entries."""
    ou = f"t{next(_subtree_numbers)}"
    dn = f"ou={ou},ou=People,{slapd.base_dn}"
    slapd.add_ldif(f"dn: {dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: {ou}\n")
    return dn
