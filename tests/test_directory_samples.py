"""The shipped examples against Active Directory (Samba AD) and 389 DS through the real
CLI: the two-way samples' walkthrough (samples/sync-with-active-directory,
samples/sync-with-389ds), and the active / inactive user jobs (conf/ and jobs.d/) with
each directory's filters as docs/jobs.md gives them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project, validate_project
from idsync.query.ast import Compare
from idsync.resource import QuerySpec
from idsync.resources import Resources, check_system
from idsync.store.database import Store
from idsync.sync.livesync import LiveSyncOptions, LiveSyncResult, run_livesync
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon
from idsync_dev.dirsrv import DirSrv
from idsync_dev.samba_ad import SambaDC
from test_active_directory import bind_works

from samples import ROOT, idsync

_AD_USERS = "CN=Users,DC=idsync,DC=test"
_DS_PEOPLE, _DS_GROUPS = "ou=People,dc=example,dc=com", "ou=Groups,dc=example,dc=com"
ACTIVE, INACTIVE = "systemLdapActiveAccounts_managedUser", "systemLdapInactiveAccounts_managedUser"
FORWARD, REVERSE = "systemLdapAccounts_managedUser", "managedUser_systemLdapAccounts"
GROUPS, REVERSE_GROUPS = "systemLdapGroups_managedRole", "managedRole_systemLdapGroups"
# The samples' "10%" of three users allows no delete: a count, as for a handful of test users.
_FEW_DELETES = {'"maxDeletes": "10%"': '"maxDeletes": 5'}


def _project(tmp_path: Path, conf: Path, connection: dict[str, Any], moves: dict[str, str]) -> Path:
    """A copy of ``conf`` whose provisioner points at the test server and whose DNs
    (``moves``: old -> new) are this test's own OU; a SQLite store."""
    project = tmp_path / "project"
    shutil.copytree(conf, project / "conf")
    for path in (project / "conf").glob("*.json"):
        text = path.read_text()
        for old, new in moves.items():
            text = text.replace(old, new)
        path.write_text(text)
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(connection)
    prov_file.write_text(json.dumps(prov, indent=2))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n'
        '[log]\nformat = "json"\nlevel = "warning"\n')
    return project


def _ad_connection(samba: SambaDC, ou: str) -> dict[str, Any]:
    return {"host": samba.address, "port": samba.ldaps_port, "caFile": samba.ca_file, "principal": samba.admin_dn,
            "credentials": samba.admin_password, "baseContexts": [ou], "baseContextsToSynchronize": [ou]}


def _ds_connection(server: DirSrv, subtree: str) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "credentials": server.service_password,
            "baseContexts": [subtree], "baseContextsToSynchronize": [subtree]}


def _json(project: Path, *args: str) -> Any:
    done = idsync(project, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _recon(project: Path, mapping: str) -> dict[str, int]:
    """One recon run in this process (the CLI's is the walkthrough's first step): its changes."""
    loaded = load_project(project)
    result = run_recon(loaded, Store.open(loaded.settings.store_url()), mapping, ReconOptions())
    assert result.state == "SUCCESS", result.message
    return dict(result.summary["changes"])


def _livesync(project: Path) -> LiveSyncResult:
    loaded = load_project(project)
    return run_livesync(loaded, Store.open(loaded.settings.store_url()), "system/ldap/account", LiveSyncOptions())


def _managed_users(project: Path) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    users = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in users.pages(QuerySpec()) for u in page}


def _livesync_one_change_one_delete(project: Path, server: SambaDC | DirSrv, changed: str, deleted: str,
                                    method: str) -> None:
    """liveSync after the walkthrough: its first run reconciles in full and keeps a token;
    then bjensen's new mail and scarter's deletion arrive by ``method``, and nothing else
    in the store moves."""
    assert _livesync(project).full_recon is not None
    server.add_ldif(f"dn: {changed}\nchangetype: modify\nreplace: mail\nmail: bj@example.com\n\n"
                    f"dn: {deleted}\nchangetype: delete\n")
    result = _livesync(project)
    assert (result.state, result.method, result.full_recon) == ("SUCCESS", method, None), result.message
    assert {u: v["mail"] for u, v in _managed_users(project).items()} == {
        "bjensen": "bj@example.com", "fdoe": "fdoe@example.com"}


def _walkthrough(project: Path, bjensen_dn: str) -> dict[str, Any]:
    """The seed's steps on a sample: recon the directory into the store (two users),
    create fdoe in the store (pushed to the directory at once), read the account back;
    then each direction again writes nothing. The group becomes a role whose member is
    bjensen, and the groups' mappings both ways then write nothing. Returns fdoe's account."""
    assert _json(project, "recon", FORWARD, "--json")["situationSummary"]["ABSENT"] == 2
    users = _managed_users(project)
    assert users["bjensen"] == {**users["bjensen"], "displayName": "Barbara Jensen", "givenName": "Barbara",
                                "sn": "Jensen", "mail": "bjensen@example.com", "accountStatus": "active"}
    assert len(users["bjensen"]["ldapGroups"]) == 1
    fdoe = {"mail": "fdoe@example.com", "sn": "Doe", "telephoneNumber": "555-1234", "userName": "fdoe",
            "givenName": "Felicitas", "description": "Felicitas Doe", "displayName": "Felicitas Doe"}
    created = idsync(project, "managed", "create", "user", "--data", json.dumps(fdoe))
    assert created.returncode == 0, created.stderr
    loaded = load_project(project)
    resources = Resources(loaded, Store.open(loaded.settings.store_url()))
    (account,) = resources.open("system/ldap/account").find(QuerySpec(filter=Compare(("uid",), "eq", "fdoe")))
    resources.close()
    assert account == {**account, "uid": "fdoe", "cn": "Felicitas Doe", "sn": "Doe", "mail": "fdoe@example.com"}
    for mapping in (FORWARD, REVERSE, FORWARD):
        changes = _recon(project, mapping)
        assert changes["failed"] == 0, changes
    for mapping in (FORWARD, REVERSE):
        changes = _recon(project, mapping)
        assert changes["created"] + changes["updated"] + changes["deleted"] == 0, (mapping, changes)
    assert _recon(project, GROUPS)["created"] == 1
    resources = Resources(loaded, Store.open(loaded.settings.store_url()))
    (role,) = [r for page in resources.open("managed/role").pages(QuerySpec()) for r in page]
    resources.close()
    assert role["name"] == "openidm" and [m.lower() for m in role["members"]] == [bjensen_dn.lower()]
    for mapping in (GROUPS, REVERSE_GROUPS):
        changes = _recon(project, mapping)
        assert changes["created"] + changes["updated"] + changes["deleted"] + changes["failed"] == 0, changes
    return dict(account)


def test_active_directory_sample_walkthrough(tmp_path: Path, samba_ad: SambaDC, ad_ou: str) -> None:
    """samples/sync-with-active-directory: the walkthrough against a domain controller;
    fdoe is created as CN=Felicitas Doe with sAMAccountName fdoe and a userPrincipalName,
    its id an objectGUID; second passes both ways write nothing."""
    sample = ROOT / "samples" / "sync-with-active-directory"
    samba_ad.add_ldif((sample / "data" / "Example.ldif").read_text().replace(_AD_USERS, ad_ou))
    moves = {_AD_USERS: ad_ou, **_FEW_DELETES}
    project = _project(tmp_path, sample / "conf", _ad_connection(samba_ad, ad_ou), moves)
    account = _walkthrough(project, f"CN=Barbara Jensen,{ad_ou}")
    assert account["dn"] == f"CN=Felicitas Doe,{ad_ou}" and account["userPrincipalName"] == "fdoe@idsync.test"
    assert re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", account["_id"])
    _livesync_one_change_one_delete(project, samba_ad, f"CN=Barbara Jensen,{ad_ou}", f"CN=Sam Carter,{ad_ou}",
                                    "uSNChanged")
    _password_reaches_ad(project, samba_ad, account["dn"])


def _password_reaches_ad(project: Path, samba: SambaDC, dn: str) -> None:
    """A password set through idsync reaches AD (implicit sync pushes the clear value the
    change gave; the store keeps a hash), and later recons neither fail the user nor
    write the store's hash as the password: fdoe binds with the password set. (The sample
    maps no ``enabled``: AD disabled fdoe, created without a password; enabled here.)"""
    fdoe = _managed_users(project)["fdoe"]["_id"]
    operations = [{"operation": "replace", "field": "/password", "value": "Idsync-Pass-0031"}]
    patched = idsync(project, "managed", "patch", "user", fdoe, "--operations", json.dumps(operations))
    assert patched.returncode == 0, patched.stderr
    loaded = load_project(project)
    resources = Resources(loaded, Store.open(loaded.settings.store_url()))
    accounts = resources.open("system/ldap/account")
    (account,) = accounts.find(QuerySpec(filter=Compare(("uid",), "eq", "fdoe")))
    accounts.update(account["_id"], {"enabled": True})
    resources.close()
    assert bind_works(samba, dn, "Idsync-Pass-0031")
    for _ in range(2):
        changes = _recon(project, REVERSE)
        assert changes["failed"] + changes["updated"] == 0, changes
    assert bind_works(samba, dn, "Idsync-Pass-0031")


def test_389ds_sample_walkthrough(tmp_path: Path, dirsrv: DirSrv, dirsrv_subtree: str) -> None:
    """samples/sync-with-389ds: the walkthrough against 389 DS, bound as the service
    account; fdoe is created as uid=fdoe, its id an nsUniqueId; memberOf lists
    groupOfUniqueNames groups; second passes both ways write nothing."""
    sample = ROOT / "samples" / "sync-with-389ds"
    dirsrv.add_ldif((sample / "data" / "Example.ldif").read_text()
                    .replace(_DS_PEOPLE, dirsrv_subtree).replace(_DS_GROUPS, dirsrv_subtree))
    moves = {_DS_PEOPLE: dirsrv_subtree, _DS_GROUPS: dirsrv_subtree, **_FEW_DELETES}
    project = _project(tmp_path, sample / "conf", _ds_connection(dirsrv, dirsrv_subtree), moves)
    account = _walkthrough(project, f"uid=bjensen,{dirsrv_subtree}")
    assert account["dn"] == f"uid=fdoe,{dirsrv_subtree}"
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){3}", account["_id"])
    _livesync_one_change_one_delete(project, dirsrv, f"uid=bjensen,{dirsrv_subtree}", f"uid=scarter,{dirsrv_subtree}",
                                    "syncrepl")


def _documented_filters(directory: str) -> tuple[str, str]:
    """(inactive, active) filters of ``directory``'s row in docs/jobs.md."""
    for line in (ROOT / "docs" / "jobs.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith(directory) and cells[1].startswith("`("):
            return cells[1].strip("`"), cells[2].strip("`")
    raise AssertionError(f"no row for {directory} in docs/jobs.md")


def _jobs_project(tmp_path: Path, directory: str, connection: dict[str, Any], extra: dict[str, Any]) -> Path:
    """conf/ (the active and inactive mappings) with ``directory``'s filters from docs/jobs.md."""
    inactive, active = _documented_filters(directory)
    shipped = {json.loads((ROOT / "conf" / f"mapping-{m}.json").read_text())["sourceQuery"]["nativeQuery"]: new
               for m, new in ((ACTIVE, active), (INACTIVE, inactive))}
    project = _project(tmp_path, ROOT / "conf", {**connection, **extra}, shipped)
    return project


def _statuses(project: Path) -> dict[str, str]:
    """The jobs' runs (the active mapping, then the inactive one), then each user's accountStatus."""
    for mapping in (ACTIVE, INACTIVE):
        _recon(project, mapping)
    return {name: user["accountStatus"] for name, user in _managed_users(project).items()}


def test_active_and_inactive_jobs_on_active_directory(tmp_path: Path, samba_ad: SambaDC, ad_ou: str) -> None:
    """The active/inactive user jobs' mappings with docs/jobs.md's Active Directory filters
    (ACCOUNTDISABLE by the bitwise-AND rule): an enabled user is active, a disabled one
    inactive; disabling the first with userAccountControl flips it at the next runs."""
    samba_ad.add_ldif(f"dn: CN=on,{ad_ou}\nobjectClass: user\nsAMAccountName: on\nuid: on\nsn: On\n"
                      "userAccountControl: 66048\n\n"
                      f"dn: CN=off,{ad_ou}\nobjectClass: user\nsAMAccountName: off\nuid: off\nsn: Off\n"
                      "userAccountControl: 66050\n")
    classes = ["top", "person", "organizationalPerson", "user"]
    extra = {"uidAttribute": "objectGUID", "ssl": True, "accountObjectClasses": classes}
    project = _jobs_project(tmp_path, "Active Directory", _ad_connection(samba_ad, ad_ou), extra)
    assert _statuses(project) == {"on": "active", "off": "inactive"}
    samba_ad.add_ldif(f"dn: CN=on,{ad_ou}\nchangetype: modify\nreplace: userAccountControl\n"
                      "userAccountControl: 66050\n")
    assert _statuses(project) == {"on": "inactive", "off": "inactive"}


def test_active_and_inactive_jobs_on_389ds(tmp_path: Path, dirsrv: DirSrv, dirsrv_subtree: str) -> None:
    """The active/inactive user jobs' mappings with docs/jobs.md's 389 DS filters
    (nsAccountLock): an unlocked user is active, a locked one inactive; locking the
    first flips it at the next runs, unlocking flips it back."""
    dirsrv.add_ldif("".join(f"dn: uid={u},{dirsrv_subtree}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\n"
                            f"sn: {u}\n{lock}\n" for u, lock in (("on", ""), ("off", "nsAccountLock: true\n"))))
    extra = {"uidAttribute": "nsUniqueId", "principal": dirsrv.service_dn}
    project = _jobs_project(tmp_path, "389 Directory Server", _ds_connection(dirsrv, dirsrv_subtree), extra)
    assert _statuses(project) == {"on": "active", "off": "inactive"}
    dirsrv.add_ldif(f"dn: uid=on,{dirsrv_subtree}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: true\n")
    assert _statuses(project) == {"on": "inactive", "off": "inactive"}
    dirsrv.add_ldif(f"dn: uid=on,{dirsrv_subtree}\nchangetype: modify\ndelete: nsAccountLock\n")
    assert _statuses(project)["on"] == "active"


@pytest.mark.parametrize("sample", ["sync-with-active-directory", "sync-with-389ds"])
def test_samples_validate_clean(sample: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each sample's configuration validates as shipped (what ``idsync validate`` checks),
    without a problem or a warning."""
    monkeypatch.setenv("IDSYNC_LDAP_PASSWORD", "x")
    assert validate_project(ROOT / "samples" / sample, check_system) == []
