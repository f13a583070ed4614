"""liveSync against Active Directory (``connectors/ldap/usn.py``) on a real Samba AD
domain controller: the token is the USN read before the searches, a token the DC can
no longer honour is answered by a full recon, and users deleted with their OU are
deletes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from directory_servers import changes_since
from idsync.connectors.ldap import usn
from idsync.connectors.ldap.connector import LdapSystem
from idsync_dev.samba_ad import SambaDC
from ldap.controls import LDAPControl
from livesync_env import live, live_after_expiry, managed_users
from sync_tokens import tamper, token_state
from test_active_directory import FILE, ad_config, new_user

from samples import ROOT

SOURCE = "system/ldap/account"
_TREE_DELETE = "1.2.840.113556.1.4.805"
_SAMPLE_USERS = "CN=Users,DC=idsync,DC=test"


def _highest(samba: SambaDC) -> int:
    conn = ldap.initialize(samba.url)
    conn.simple_bind_s(samba.admin_dn, samba.admin_password)
    try:
        return int(conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["highestCommittedUSN"])[0][1][
            "highestCommittedUSN"][0])
    finally:
        conn.unbind_ext()


def _tree_delete(samba: SambaDC, dn: str) -> None:
    """Delete ``dn`` with everything under it in one operation (AD's tree delete control),
    as ADUC and ``Remove-ADOrganizationalUnit -Recursive`` do."""
    conn = ldap.initialize(samba.url)
    conn.simple_bind_s(samba.admin_dn, samba.admin_password)
    try:
        conn.delete_ext_s(dn, serverctrls=[LDAPControl(_TREE_DELETE, True, None)])
    finally:
        conn.unbind_ext()


@pytest.fixture
def ad(samba_ad: SambaDC, ad_ou: str) -> Iterator[LdapSystem]:
    """The AD system over LDAPS, reading this test's own OU."""
    system = LdapSystem("ad", ad_config(samba_ad, ad_ou), file=FILE)
    yield system
    system.close()


@pytest.fixture
def sample(tmp_path: Path, samba_ad: SambaDC, ad_ou: str) -> Iterator[Path]:
    """samples/sync-with-active-directory with its users (bjensen, scarter) in this test's
    OU, a SQLite store, and liveSync's first run (a full recon) done."""
    source = ROOT / "samples" / "sync-with-active-directory"
    samba_ad.add_ldif((source / "data" / "Example.ldif").read_text().replace(_SAMPLE_USERS, ad_ou))
    project = tmp_path / "project"
    shutil.copytree(source / "conf", project / "conf")
    for path in (project / "conf").glob("*.json"):
        path.write_text(path.read_text().replace(_SAMPLE_USERS, ad_ou).replace('"maxDeletes": "10%"',
                                                                                 '"maxDeletes": 5'))
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update({
        "host": samba_ad.address, "port": samba_ad.ldaps_port, "caFile": samba_ad.ca_file,
        "principal": samba_ad.admin_dn, "credentials": samba_ad.admin_password,
        "baseContexts": [ad_ou], "baseContextsToSynchronize": [ad_ou]})
    prov_file.write_text(json.dumps(prov, indent=2))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n[log]\nformat = "json"\n')
    first = live(project, SOURCE)
    assert first.state == "SUCCESS" and first.full_recon is not None, first.message
    yield project


def test_change_made_during_the_read_is_read_next_time(samba_ad: SambaDC, ad: LdapSystem,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another client modifies a user (USN N) and deletes another (N+1) after liveSync's
    search of tombstones has passed, before its search of changed entries: the modify is
    read, the delete is not, and the new token is the highestCommittedUSN read before the
    searches, not the modify's USN, so the next read has the delete (and the modify
    again, harmlessly)."""
    accounts = ad.resource("account")
    kept = accounts.create(new_user("racekept", password="Idsync-Pass-0020"))
    gone = accounts.create(new_user("racegone", password="Idsync-Pass-0021"))
    token = accounts.latest_token()
    before = _highest(samba_ad)
    pages = usn.read_pages

    def racing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        samba_ad.add_ldif(f"dn: {kept['dn']}\nchangetype: modify\nreplace: description\ndescription: during\n\n"
                          f"dn: {gone['dn']}\nchangetype: delete\n")
        monkeypatch.setattr(usn, "read_pages", pages)
        return pages(*args, **kwargs)

    monkeypatch.setattr(usn, "read_pages", racing)
    found, last, _, _ = changes_since(accounts, token, ["cn", "description"])
    assert found == {kept["_id"]: {"_id": kept["_id"], "cn": "racekept", "description": "during"}}
    assert json.loads(last)["since"] == before
    again, _, _, _ = changes_since(accounts, last, ["cn", "description"])
    assert again[kept["_id"]] == {"_id": kept["_id"], "cn": "racekept", "description": "during"}
    assert again[gone["_id"]] is None


def test_token_of_a_restored_domain_controller_is_answered_by_a_full_recon(samba_ad: SambaDC,
                                                                           sample: Path) -> None:
    """A stored USN above the DC's highestCommittedUSN (a DC restored from an older backup,
    same dsServiceName) is not read from: the run logs livesync.token_expired at warning,
    reconciles in full (bjensen's new mail arrives) and stores a fresh token, from which
    the next run reads changes again. A token of another invocation of the DC's database
    (invocationId, which a restore changes) is answered the same way."""
    stored = json.loads(token_state(sample, SOURCE).token)  # type: ignore[union-attr]
    assert stored["invocation"] and stored["since"] <= _highest(samba_ad)
    tamper(sample, SOURCE, since=_highest(samba_ad) + 1000)
    samba_ad.add_ldif(f"dn: CN=Barbara Jensen,{_synchronized_ou(sample)}\nchangetype: modify\n"
                      "replace: mail\nmail: restored@example.com\n")
    live_after_expiry(sample, SOURCE, "above the domain controller's highestCommittedUSN")
    assert managed_users(sample)["bjensen"]["mail"] == "restored@example.com"
    fresh = json.loads(token_state(sample, SOURCE).token)  # type: ignore[union-attr]
    assert fresh["since"] <= _highest(samba_ad)
    samba_ad.add_ldif(f"dn: CN=Barbara Jensen,{_synchronized_ou(sample)}\nchangetype: modify\n"
                      "replace: mail\nmail: after@example.com\n")
    after = live(sample, SOURCE)
    assert (after.state, after.method, after.full_recon) == ("SUCCESS", "uSNChanged", None), after.message
    assert managed_users(sample)["bjensen"]["mail"] == "after@example.com"

    tamper(sample, SOURCE, invocation="00000000-0000-0000-0000-000000000001")
    live_after_expiry(sample, SOURCE, "another invocation")
    assert json.loads(token_state(sample, SOURCE).token)["invocation"] == stored["invocation"]  # type: ignore[union-attr]


def _synchronized_ou(project: Path) -> str:
    """The OU the sample's provisioner synchronizes."""
    prov = json.loads((project / "conf" / "provisioner.openicf-ldap.json").read_text())
    return str(prov["configurationProperties"]["baseContextsToSynchronize"][0])


def test_users_deleted_with_their_ou_are_deletes(samba_ad: SambaDC, ad: LdapSystem, ad_ou: str) -> None:
    """A tree delete of an OU two levels deep leaves its user's tombstone with a deleted
    lastKnownParent (OU=team\\0ADEL:...,CN=Deleted Objects): liveSync follows the deleted
    parents to the live OU they were under and reports the user deleted. A user deleted
    with an OU outside the sync contexts is not reported."""
    accounts = ad.resource("account")
    samba_ad.add_ldif(f"dn: OU=dept,{ad_ou}\nobjectClass: organizationalUnit\n\n"
                      f"dn: OU=team,OU=dept,{ad_ou}\nobjectClass: organizationalUnit\n")
    name = ad_ou.split(",")[0].removeprefix("OU=")  # unique to this test
    outside = f"OU=away-{name},{samba_ad.base_dn}"
    samba_ad.add_ldif(f"dn: {outside}\nobjectClass: organizationalUnit\n\n"
                      f"dn: CN=faraway,{outside}\nobjectClass: user\nsAMAccountName: far-{name}\n")
    member = accounts.create({**new_user("teamuser", password="Idsync-Pass-0022"),
                              "dn": f"CN=teamuser,OU=team,OU=dept,{ad_ou}"})
    token = accounts.latest_token()
    _tree_delete(samba_ad, f"OU=dept,{ad_ou}")
    _tree_delete(samba_ad, outside)
    found, _, _, _ = changes_since(accounts, token, ["cn"])
    assert found == {member["_id"]: None}


class _PurgedParents:
    """A connection whose every tombstone but the first is already purged."""

    def search_ext(self, *args: Any, **kwargs: Any) -> int:
        return 1

    def result3(self, *args: Any, **kwargs: Any) -> Any:
        raise ldap.NO_SUCH_OBJECT({"desc": "No such object"})


def test_deleted_entry_whose_place_cannot_be_told_is_a_delete() -> None:
    """When a deleted parent's tombstone is gone too (purged), where the entry was cannot
    be told: it is reported deleted (its object is gone for good, and a delete of an id
    nothing links changes nothing), every time alike."""
    def failed(error: ldap.LDAPError) -> Any:
        raise AssertionError(error)

    places = usn._Places(_PurgedParents(), 5.0, failed)
    deleted = "OU=team\\0ADEL:4c5f3912-52e4-41bf-a6bd-6a2aa8b1e316,CN=Deleted Objects,DC=idsync,DC=test"
    assert places.live(deleted) is None
    assert places.live("") is None
    assert places.live("OU=t1,DC=idsync,DC=test") == "OU=t1,DC=idsync,DC=test"
