"""liveSync against Active Directory (``connectors/ldap/usn.py``) on a real Samba AD
domain controller: the token is the USN read before the searches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ldap
import pytest
from directory_servers import changes_since
from idsync.connectors.ldap import usn
from idsync.connectors.ldap.connector import LdapSystem
from idsync_dev.samba_ad import SambaDC
from test_active_directory import FILE, ad_config, new_user


def _highest(samba: SambaDC) -> int:
    conn = ldap.initialize(samba.url)
    conn.simple_bind_s(samba.admin_dn, samba.admin_password)
    try:
        return int(conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["highestCommittedUSN"])[0][1][
            "highestCommittedUSN"][0])
    finally:
        conn.unbind_ext()


@pytest.fixture
def ad(samba_ad: SambaDC, ad_ou: str) -> Iterator[LdapSystem]:
    """The AD system over LDAPS, reading this test's own OU."""
    system = LdapSystem("ad", ad_config(samba_ad, ad_ou), file=FILE)
    yield system
    system.close()


def test_change_made_during_the_read_is_read_next_time(samba_ad: SambaDC, ad: LdapSystem,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another client modifies a user (USN N) and deletes another (N+1) after liveSync's
    search of changed entries has passed them, before its search of tombstones sees the
    delete: the new token is the highestCommittedUSN read before the searches, not the
    delete's USN, so the next read has the modify (and the delete again, harmlessly)."""
    accounts = ad.resource("account")
    kept = accounts.create(new_user("racekept", password="Idsync-Pass-0020"))
    gone = accounts.create(new_user("racegone", password="Idsync-Pass-0021"))
    token = accounts.latest_token()
    before = _highest(samba_ad)
    tombstones = usn._tombstones

    def racing(*args: Any, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        samba_ad.add_ldif(f"dn: {kept['dn']}\nchangetype: modify\nreplace: description\ndescription: during\n\n"
                          f"dn: {gone['dn']}\nchangetype: delete\n")
        monkeypatch.setattr(usn, "_tombstones", tombstones)
        return tombstones(*args, **kwargs)

    monkeypatch.setattr(usn, "_tombstones", racing)
    found, last, _, _ = changes_since(accounts, token, ["cn", "description"])
    assert found == {gone["_id"]: None}
    assert json.loads(last)["since"] == before
    again, _, _, _ = changes_since(accounts, last, ["cn", "description"])
    assert again[kept["_id"]] == {"_id": kept["_id"], "cn": "racekept", "description": "during"}
    assert again[gone["_id"]] is None
