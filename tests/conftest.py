"""Shared fixtures. The LDAP ones come first: one throwaway slapd per test session,
and a fresh subtree under ``ou=People`` for each test that wants isolation."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from idsync_dev.slapd import Slapd

_subtree_numbers = itertools.count(1)


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
