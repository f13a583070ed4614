"""Implicit synchronization: a managed user's create, update, rename and delete
reach LDAP at once through managedUser_systemLdapAccounts; a failed push keeps
the store change, is audited, and is repaired by `idsync sync retry`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from idsync.config.project import Project, load_project
from idsync.managed import ManagedObjects
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.testing.slapd import Slapd

from samples import FORWARD, REVERSE, can_bind, idsync, ldap_entry, sample_project

FDOE = {"mail": "fdoe@example.com", "sn": "Doe", "telephoneNumber": "555-1234", "userName": "fdoe",
        "givenName": "Felicitas", "description": "Felicitas Doe", "displayName": "fdoe"}


@pytest.fixture
def project_dir(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    return sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)


@pytest.fixture
def env(project_dir: Path) -> Iterator[tuple[Project, Store, ManagedObjects]]:
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    resources = Resources(project, store)
    yield project, store, ManagedObjects(project, store, resources, "user")
    resources.close()


def test_create_update_rename_delete(env: tuple[Project, Store, ManagedObjects], slapd: Slapd,
                                     ldap_subtree: str) -> None:
    """Each change of a managed user is pushed: create makes the entry named by
    onCreate, update changes attributes, a new userName renames the entry (same
    entryUUID, same link), delete removes it and its link."""
    _, store, users = env
    change = users.create(FDOE)
    assert change.synced and change.pushes[0].action == "CREATE"
    uid = change.object["_id"] if change.object else ""
    dn = f"uid=fdoe,{ldap_subtree}"
    entry = ldap_entry(slapd, dn)
    assert entry is not None and entry["cn"] == ["fdoe"] and entry["description"] == ["Felicitas Doe"]
    assert {"inetOrgPerson", "person", "organizationalPerson"} <= set(entry["objectclass"])
    links = LinkSet(store, FORWARD)
    ldap_id = links.sources_of([uid])[uid]
    assert ldap_id == entry["entryuuid"][0]

    assert users.patch(uid, [{"operation": "replace", "field": "/telephoneNumber", "value": "555-9999"},
                             {"operation": "remove", "field": "/description"}]).synced
    entry = ldap_entry(slapd, dn)
    assert entry is not None and entry["telephonenumber"] == ["555-9999"]
    # description is mapped only when present: removing it in the store leaves LDAP's value alone.
    assert entry["description"] == ["Felicitas Doe"]

    assert users.patch(uid, [{"operation": "replace", "field": "/userName", "value": "fdoe2"}]).synced
    assert ldap_entry(slapd, dn) is None
    renamed = ldap_entry(slapd, f"uid=fdoe2,{ldap_subtree}")
    assert renamed is not None and renamed["entryuuid"] == [ldap_id] and renamed["uid"] == ["fdoe2"]

    deleted = users.delete(uid)
    assert deleted.synced and deleted.pushes[0].situation == "SOURCE_MISSING"
    assert deleted.pushes[0].action == "DELETE"
    assert ldap_entry(slapd, f"uid=fdoe2,{ldap_subtree}") is None
    assert links.sources_of([uid]) == {}


def test_enable_sync_false_pushes_nothing(project_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A mapping with enableSync false is not used for implicit sync."""
    sync_file = project_dir / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    next(m for m in sync["mappings"] if m["name"] == REVERSE)["enableSync"] = False
    sync_file.write_text(json.dumps(sync))
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    change = ManagedObjects(project, store, Resources(project, store), "user").create(FDOE)
    assert change.pushes == [] and ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is None


def test_failed_push_keeps_change_and_retry_repairs(project_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """With slapd stopped, `managed create` keeps the user, exits 75 with one clear
    line, audits the failure and `idsync status` shows it; once slapd is back,
    `idsync sync retry` creates the entry, and a second retry has nothing to do."""
    slapd.stop(keep_data=True)
    try:
        proc = idsync(project_dir, "managed", "create", "user", "--data", json.dumps(FDOE))
    finally:
        slapd.start()
    assert proc.returncode == 75, proc.stderr
    assert "is saved, but implicit sync through managedUser_systemLdapAccounts failed" in proc.stderr
    created = json.loads(proc.stdout)
    got = json.loads(idsync(project_dir, "managed", "get", "user", created["_id"]).stdout)
    assert got["userName"] == "fdoe"
    runs = json.loads(idsync(project_dir, "status", "--json").stdout)
    assert runs[0]["state"] == "FAILED" and runs[0]["job"] == "implicit"
    detail = json.loads(idsync(project_dir, "status", runs[0]["_id"], "--json").stdout)
    assert [a["status"] for a in detail["audit"]] == ["FAILURE"]
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is None

    retry = idsync(project_dir, "sync", "retry")
    assert retry.returncode == 0, retry.stderr
    assert "managedUser_systemLdapAccounts" in retry.stdout and "ABSENT CREATE: ok" in retry.stdout
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is not None
    assert idsync(project_dir, "sync", "retry").stdout.strip() == "nothing to retry"


def test_failed_push_repaired_by_recon(project_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A push that failed is repaired by the next store-to-LDAP recon, after which
    there is nothing left to retry."""
    slapd.stop(keep_data=True)
    try:
        assert idsync(project_dir, "managed", "create", "user", "--data", json.dumps(FDOE)).returncode == 75
    finally:
        slapd.start()
    recon = idsync(project_dir, "recon", "managedUser_systemLdapAccounts", "--json")
    assert recon.returncode == 0, recon.stderr
    assert json.loads(recon.stdout)["changes"]["created"] == 1
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is not None
    assert idsync(project_dir, "sync", "retry").stdout.strip() == "nothing to retry"


def test_password_reaches_ldap_and_never_shows(project_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The password is pushed as a {CRYPT} hash LDAP binds with, and the clear value
    appears in no output, log line, audit entry, status file or store row."""
    secret = "Corr3ct-Horse-Battery"
    proc = idsync(project_dir, "managed", "create", "user", "--data", json.dumps({**FDOE, "password": secret}))
    assert proc.returncode == 0, proc.stderr
    user_id = json.loads(proc.stdout)["_id"]
    dn = f"uid=fdoe,{ldap_subtree}"
    assert can_bind(slapd, dn, secret) and not can_bind(slapd, dn, "wrong")
    entry = ldap_entry(slapd, dn)
    assert entry is not None and entry["userpassword"][0].startswith("{CRYPT}$6$")
    new_secret = "An0ther-Secret-Value"
    patch = [{"operation": "replace", "field": "/password", "value": new_secret}]
    patched = idsync(project_dir, "managed", "patch", "user", user_id, "--operations", json.dumps(patch))
    assert patched.returncode == 0 and can_bind(slapd, dn, new_secret)
    outputs = [proc, patched,
               idsync(project_dir, "managed", "get", "user", user_id),
               idsync(project_dir, "managed", "query", "user"),
               idsync(project_dir, "system", "query", "ldap", "account"),
               idsync(project_dir, "recon", "managedUser_systemLdapAccounts", "--json"),
               idsync(project_dir, "status", "--json")]
    runs = json.loads(outputs[-1].stdout)
    outputs.append(idsync(project_dir, "status", runs[-1]["_id"], "--json"))
    project = load_project(project_dir)
    audits = [a for r in runs for a in RunStore(Store.open(project.settings.store_url())).audit_entries(r["_id"])]
    text = "".join(p.stdout + p.stderr for p in outputs) + json.dumps(audits, default=str)
    text += "".join(f.read_text(errors="replace") for f in (project_dir / "state").rglob("*") if f.is_file())
    assert "password" not in json.loads(outputs[2].stdout)
    for value in (secret, new_secret):
        assert value not in text
    assert "$6$" not in text  # not even the hash is shown
    assert any(a["changes"] and a["changes"].get("userPassword") == "********" for a in audits)
    # Second recon pass: the hash read back from LDAP equals the stored one, nothing to write.
    assert json.loads(outputs[5].stdout)["changes"]["updated"] == 0
