"""Implicit synchronization: a managed user's create, update, rename and delete
reach LDAP at once through managedUser_systemLdapAccounts; a failed push keeps
the store change, is audited, and is repaired by `idsync sync retry`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from dbs import WITH_MARIADB, WITH_POSTGRESQL, store_url
from idsync.config.project import Project, load_project
from idsync.daemon.notify import Notifier
from idsync.daemon.reload import load_configuration
from idsync.daemon.scheduler import JobTable
from idsync.daemon.service import Daemon
from idsync.managed import ManagedObjects
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.store.tables import audit
from idsync.sync.implicit import ImplicitSync
from idsync.sync.retry import unrepaired_befores
from idsync_dev.slapd import Slapd
from sqlalchemy import select
from structlog.testing import capture_logs

from samples import FORWARD, REVERSE, can_bind, idsync, ldap_entry, recon_summary, sample_project, set_provisioner_key

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


def test_a_disabled_system_is_left_out_of_pushes_said_once(project_dir: Path, slapd: Slapd,
                                                            ldap_subtree: str) -> None:
    """With the LDAP provisioner disabled (``"enabled": false``), a user's create, update
    and delete are not pushed and record no run (they recorded a FAILED run each): the
    first says so at warning naming the provisioner file, the others at debug. Once the
    system is enabled again, a recon of the mapping brings LDAP up to date."""
    prov_file = set_provisioner_key(project_dir, "enabled", False)
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    users = ManagedObjects(project, store, Resources(project, store), "user")
    with capture_logs() as logs:
        created = users.create(FDOE)
        uid = created.object["_id"] if created.object else ""
        patched = users.patch(uid, [{"operation": "replace", "field": "/sn", "value": "Doe-Smith"}])
        kept = users.create({**FDOE, "userName": "kdoe", "mail": "kdoe@example.com"})
        deleted = users.delete(kept.object["_id"] if kept.object else "")
    assert [c.pushes for c in (created, patched, kept, deleted)] == [[], [], [], []]
    assert all(c.synced for c in (created, patched, kept, deleted))
    assert RunStore(store).recent() == []
    skipped = [e for e in logs if e["event"] == "implicit_sync.skipped"]
    assert [e["log_level"] for e in skipped] == ["warning", "debug", "debug", "debug"]
    assert skipped[0]["mapping"] == REVERSE and skipped[0]["files"] == [str(prov_file)]
    assert "a recon of managedUser_systemLdapAccounts brings it up to date" in skipped[0]["message"]
    assert not [e for e in logs if e["event"] == "implicit_sync.failed"]
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is None

    set_provisioner_key(project_dir, "enabled", None)
    recon = idsync(project_dir, "recon", REVERSE, "--json")
    assert recon.returncode == 0, recon.stderr
    entry = ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}")
    assert entry is not None and entry["sn"] == ["Doe-Smith"]


def test_a_reload_says_again_what_a_disabled_system_leaves_out(project_dir: Path) -> None:
    """What a disabled system leaves out of implicit sync is said at warning once per
    configuration, not once per process: after the daemon reloads its configuration
    (SIGHUP, the config watch) with the system enabled, then again with it disabled, the
    next change left out says so at warning again, and the one after it at debug."""
    set_provisioner_key(project_dir, "enabled", False)
    daemon = Daemon(project_dir, Notifier(None, None))
    daemon.config = load_configuration(project_dir)
    daemon.store = Store.open(daemon.config.project.settings.store_url())
    daemon.table = JobTable(BackgroundScheduler(timezone="UTC"), daemon.fire)  # not started: no fire

    def create(name: str) -> None:
        project = load_project(project_dir)
        store = Store.open(project.settings.store_url())
        resources = Resources(project, store)
        try:
            made = ManagedObjects(project, store, resources, "user").create(
                {**FDOE, "userName": name, "mail": f"{name}@example.com"})
            assert made.synced and made.pushes == []
        finally:
            resources.close()
            store.close()

    def reload() -> None:
        daemon._loop = asyncio.new_event_loop()  # where the status is told to be written (not run here)
        try:
            daemon._on_reload()
        finally:
            daemon._loop.close()

    try:
        with capture_logs() as logs:
            create("adoe")
            create("bdoe")
            set_provisioner_key(project_dir, "enabled", None)
            reload()
            set_provisioner_key(project_dir, "enabled", False)
            reload()
            create("cdoe")
            create("ddoe")
    finally:
        daemon.store.close()
    assert [e["event"] for e in logs if e["event"] == "daemon.reloaded"] == ["daemon.reloaded"] * 2
    skipped = [e for e in logs if e["event"] == "implicit_sync.skipped"]
    assert [e["log_level"] for e in skipped] == ["warning", "debug", "warning", "debug"]


def test_conditions_and_on_update_see_the_source_before_the_change(project_dir: Path, slapd: Slapd,
                                                                      ldap_subtree: str) -> None:
    """A property condition and onUpdate are given PingIDM's ``oldSource``, the managed
    object before the change, when implicit sync updates a target: a description mapped
    only when it changed reaches LDAP when it changes. Where PingIDM leaves oldSource
    undefined to a condition (a create, a recon) so does idsync, and the condition reads
    false; a hook is given null there, as PingIDM binds it."""
    sync_file = project_dir / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    reverse = next(m for m in sync["mappings"] if m["name"] == REVERSE)
    rule = next(r for r in reverse["properties"] if r["target"] == "description")
    rule["condition"] = {"type": "text/javascript",
                         "source": "typeof oldSource !== 'undefined' && oldSource.description !== object.description"}
    # A hook is given oldSource null where there is none (a recon, which runs onUpdate on every UPDATE).
    reverse["onUpdate"] = {"type": "text/javascript", "source": "if (oldSource !== null) "
                                                                "{ target.displayName = 'was ' + oldSource.sn; }"}
    sync_file.write_text(json.dumps(sync))
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    users = ManagedObjects(project, store, Resources(project, store), "user")
    dn = f"uid=fdoe,{ldap_subtree}"
    created = users.create(FDOE)
    assert created.synced and "description" not in (ldap_entry(slapd, dn) or {"description": None})
    uid = created.object["_id"] if created.object else ""
    changed = users.patch(uid, [{"operation": "replace", "field": "/description", "value": "Team lead"},
                                {"operation": "replace", "field": "/sn", "value": "Doe-Smith"}])
    assert changed.synced, changed.pushes
    entry = ldap_entry(slapd, dn)
    assert entry is not None and entry["description"] == ["Team lead"] and entry["displayname"] == ["was Doe"]
    assert entry["sn"] == ["Doe-Smith"]
    recon = recon_summary(project_dir, REVERSE)
    assert recon["statusSummary"].get("FAILURE", 0) == 0 and recon["changes"]["updated"] == 0, recon
    store.close()


@pytest.mark.parametrize("backend", WITH_POSTGRESQL)
def test_failed_push_keeps_change_and_retry_repairs(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                    backend: str) -> None:
    """With slapd stopped, `managed create` keeps the user, exits 75 with one clear
    line, audits the failure, and `idsync status` and the status file show it (the
    run, and the object waiting for a retry); once slapd is back, `idsync sync
    retry` creates the entry, and a second retry has nothing to do. On every store backend."""
    project_dir = sample_project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path), load_data=False)
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
    assert [(a["status"], a["situation"], a["action"]) for a in detail["audit"]] == [("FAILURE", None, None)]
    assert not any(detail["situationSummary"].values())  # LDAP was down: nothing was assessed
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is None
    pending = f"{REVERSE}: 1 object(s) changed in the store did not reach the target: run `idsync sync retry`"
    assert pending in idsync(project_dir, "status").stdout
    status_file = project_dir / "state" / "status.json"
    assert json.loads(status_file.read_text())["mappings"][REVERSE]["pendingPushes"] == 1

    retry = idsync(project_dir, "sync", "retry")
    assert retry.returncode == 0, retry.stderr
    assert "managedUser_systemLdapAccounts" in retry.stdout and "ABSENT CREATE: ok" in retry.stdout
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is not None
    assert idsync(project_dir, "sync", "retry").stdout.strip() == "nothing to retry"
    assert "did not reach" not in idsync(project_dir, "status").stdout
    assert "pendingPushes" not in json.loads(status_file.read_text())["mappings"][REVERSE]


def test_a_push_that_crashes_is_recorded_failed_and_retried(env: tuple[Project, Store, ManagedObjects],
                                                             project_dir: Path, slapd: Slapd, ldap_subtree: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A push whose code raises what is no IdsyncError (a bug) keeps the change, fails
    that push alone, and its run is recorded FAILED at once (``internal error: ...``),
    never left ACTIVE; the object waits for a retry, which then creates the entry."""
    _, store, users = env

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the push")

    monkeypatch.setattr(ImplicitSync, "_apply", crash)
    change = users.create(FDOE)
    assert change.object is not None and not change.synced
    (push,) = change.pushes
    assert push.message == "internal error: RuntimeError: a bug in the push"
    runs = RunStore(store)
    run = runs.get(push.run_id)
    assert run is not None and (run["state"], run["stage"]) == ("FAILED", "COMPLETED_FAILED")
    assert run["message"] == "internal error: RuntimeError: a bug in the push"
    assert [r["_id"] for r in runs.search(state="ACTIVE")] == []
    monkeypatch.undo()
    retried = idsync(project_dir, "sync", "retry")
    assert retried.returncode == 0 and "ABSENT CREATE: ok" in retried.stdout, retried.stdout + retried.stderr
    assert ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}") is not None


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
    appears in no output, log line (debug included), audit entry, status file or
    store row, in either direction of the sync."""
    secret = "Corr3ct-Horse-Battery"
    debug = {"IDSYNC_LOG__LEVEL": "debug"}
    proc = idsync(project_dir, "managed", "create", "user", "--data", json.dumps({**FDOE, "password": secret}),
                  env=debug)
    assert proc.returncode == 0, proc.stderr
    user_id = json.loads(proc.stdout)["_id"]
    dn = f"uid=fdoe,{ldap_subtree}"
    assert can_bind(slapd, dn, secret) and not can_bind(slapd, dn, "wrong")
    entry = ldap_entry(slapd, dn)
    assert entry is not None and entry["userpassword"][0].startswith("{CRYPT}$6$")
    new_secret = "An0ther-Secret-Value"
    patch = [{"operation": "replace", "field": "/password", "value": new_secret}]
    patched = idsync(project_dir, "managed", "patch", "user", user_id, "--operations", json.dumps(patch), env=debug)
    assert patched.returncode == 0 and can_bind(slapd, dn, new_secret)
    outputs = [proc, patched,
               idsync(project_dir, "managed", "get", "user", user_id),
               idsync(project_dir, "managed", "query", "user"),
               idsync(project_dir, "system", "query", "ldap", "account"),
               idsync(project_dir, "recon", "managedUser_systemLdapAccounts", "--json", env=debug),
               idsync(project_dir, "recon", FORWARD, "--json", env=debug),
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
    assert json.loads(outputs[6].stdout)["changes"]["updated"] == 0  # and back: LDAP's hash is the store's


@pytest.fixture
def seeded_dir(tmp_path: Path, slapd: Slapd, ldap_subtree: str, request: pytest.FixtureRequest) -> Path:
    """The sample with the seed's LDAP data (bjensen, scarter, cn=openidm), on the
    store backend a test's ``backend`` parameter names (SQLite by default)."""
    backend = getattr(request, "param", "sqlite")
    return sample_project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path))


def _changes(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout)["changes"])


@pytest.mark.parametrize("seeded_dir", WITH_MARIADB, indirect=True)
def test_pending_push_is_not_overwritten_by_ldap_recon(seeded_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """While a store change has not reached LDAP (the push failed), the LDAP-to-store
    recon holds that object instead of taking LDAP's older values: a changed mail is
    not reverted, a deleted user is not unlinked (and so not brought back later).
    `idsync sync retry` then pushes both, and every mapping's next pass writes nothing."""
    assert idsync(seeded_dir, "recon", FORWARD).returncode == 0
    users = {u["userName"]: u for u in json.loads(idsync(seeded_dir, "managed", "query", "user").stdout)}
    patch = [{"operation": "replace", "field": "/mail", "value": "barbara@example.com"}]
    slapd.stop(keep_data=True)
    try:
        patched = idsync(seeded_dir, "managed", "patch", "user", users["bjensen"]["_id"],
                         "--operations", json.dumps(patch))
        deleted = idsync(seeded_dir, "managed", "delete", "user", users["scarter"]["_id"])
    finally:
        slapd.start()
    assert patched.returncode == 75 and deleted.returncode == 75
    assert f"managed/user/{users['scarter']['_id']} is deleted, but implicit sync" in deleted.stderr

    recon = idsync(seeded_dir, "recon", FORWARD, "--json")
    assert _changes(recon) == {**_changes(recon), "updated": 0, "unlinked": 0, "deleted": 0, "skipped": 2}
    bjensen = json.loads(idsync(seeded_dir, "managed", "get", "user", users["bjensen"]["_id"]).stdout)
    assert bjensen["mail"] == "barbara@example.com"
    detail = json.loads(idsync(seeded_dir, "status", json.loads(recon.stdout)["_id"], "--json").stdout)
    assert sorted(a["message"].split(":")[0] for a in detail["audit"]) == ["unlink held", "update held"]

    retry = idsync(seeded_dir, "sync", "retry")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "CONFIRMED UPDATE: ok" in retry.stdout and "SOURCE_MISSING DELETE: ok" in retry.stdout
    assert ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")["mail"] == ["barbara@example.com"]  # type: ignore[index]
    assert ldap_entry(slapd, f"uid=scarter,{ldap_subtree}") is None
    for mapping in (FORWARD, REVERSE):
        changes = _changes(idsync(seeded_dir, "recon", mapping, "--json"))
        assert changes == {**changes, "created": 0, "updated": 0, "deleted": 0, "unlinked": 0, "skipped": 0}


def test_unchanged_object_is_not_pushed(project_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A patch or update that changes nothing keeps _rev and records no push."""
    created = json.loads(idsync(project_dir, "managed", "create", "user", "--data", json.dumps(FDOE)).stdout)
    runs = len(json.loads(idsync(project_dir, "status", "--json").stdout))
    same = [{"operation": "replace", "field": "/mail", "value": FDOE["mail"]}]
    patched = idsync(project_dir, "managed", "patch", "user", created["_id"], "--operations", json.dumps(same))
    updated = idsync(project_dir, "managed", "update", "user", created["_id"], "--data", json.dumps(FDOE))
    for proc in (patched, updated):
        assert proc.returncode == 0 and json.loads(proc.stdout)["_rev"] == created["_rev"]
    assert len(json.loads(idsync(project_dir, "status", "--json").stdout)) == runs


def test_roles_pushed_to_groups(seeded_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A role's change reaches its LDAP group at once: a new description, a new
    name (the group is renamed, its entryUUID and members kept, and the members'
    ldapGroups follow at the next LDAP-to-store recon), and a delete, after which a
    member's unrelated change still goes through."""
    for mapping in (FORWARD, "systemLdapGroups_managedRole"):
        assert idsync(seeded_dir, "recon", mapping).returncode == 0
    (role,) = json.loads(idsync(seeded_dir, "managed", "query", "role").stdout)
    before = ldap_entry(slapd, f"cn=openidm,{ldap_subtree}")
    assert before is not None
    ops = [{"operation": "replace", "field": "/description", "value": "Staff"},
           {"operation": "replace", "field": "/name", "value": "staff"}]
    patched = idsync(seeded_dir, "managed", "patch", "role", role["_id"], "--operations", json.dumps(ops))
    assert patched.returncode == 0, patched.stderr
    assert ldap_entry(slapd, f"cn=openidm,{ldap_subtree}") is None
    group = ldap_entry(slapd, f"cn=staff,{ldap_subtree}")
    assert group is not None and group["description"] == ["Staff"] and group["entryuuid"] == before["entryuuid"]
    assert group["uniquemember"] == [f"uid=bjensen,{ldap_subtree}"]
    assert idsync(seeded_dir, "recon", FORWARD).returncode == 0
    users = {u["userName"]: u for u in json.loads(idsync(seeded_dir, "managed", "query", "user").stdout)}
    assert [g.lower() for g in users["bjensen"]["ldapGroups"]] == [f"cn=staff,{ldap_subtree}".lower()]
    deleted = idsync(seeded_dir, "managed", "delete", "role", role["_id"])
    assert deleted.returncode == 0, deleted.stderr
    assert ldap_entry(slapd, f"cn=staff,{ldap_subtree}") is None
    # bjensen's ldapGroups still names the deleted group until the next LDAP-to-store
    # recon; an unrelated change of hers is pushed without trying to rejoin it.
    phone = [{"operation": "replace", "field": "/telephoneNumber", "value": "555-0100"}]
    proc = idsync(seeded_dir, "managed", "patch", "user", users["bjensen"]["_id"], "--operations", json.dumps(phone))
    assert proc.returncode == 0, proc.stderr
    assert ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")["telephonenumber"] == ["555-0100"]  # type: ignore[index]


def test_memberships_written_as_value_adds_and_removes(seeded_dir: Path, slapd: Slapd, ldap_subtree: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every modify idsync sends to join or leave a group adds or deletes the one
    member DN (never a replace of the member list), for a new user created with
    ldapGroups, a user joining with an odd spelling of the group DN, and leaving."""
    import ldap.ldapobject

    for mapping in (FORWARD, "systemLdapGroups_managedRole"):
        assert idsync(seeded_dir, "recon", mapping).returncode == 0
    sent: list[tuple[str, list[tuple[int, str, list[bytes] | None]]]] = []
    modify = ldap.ldapobject.SimpleLDAPObject.modify_ext_s

    def recording(self: ldap.ldapobject.SimpleLDAPObject, dn: str, modlist: list[tuple[int, str, list[bytes] | None]],
                  *args: object, **kwargs: object) -> object:
        sent.append((dn, modlist))
        return modify(self, dn, modlist, *args, **kwargs)

    monkeypatch.setattr(ldap.ldapobject.SimpleLDAPObject, "modify_ext_s", recording)
    project = load_project(seeded_dir)
    store = Store.open(project.settings.store_url())
    resources = Resources(project, store)
    users = ManagedObjects(project, store, resources, "user")
    group_dn = f"cn=openidm,{ldap_subtree}"
    try:
        created = users.create({**FDOE, "ldapGroups": [group_dn]})
        assert created.synced and created.object is not None
        scarter = next(u for page in users._resource.pages(QuerySpec()) for u in page if u["userName"] == "scarter")
        odd = group_dn.upper().replace(",", ", ")
        assert users.patch(scarter["_id"], [{"operation": "add", "field": "/ldapGroups", "value": odd}]).synced
        assert users.patch(created.object["_id"], [{"operation": "remove", "field": "/ldapGroups"}]).synced
    finally:
        resources.close()
    members = [(dn.lower(), kind, [v.decode().lower() for v in values or ()])
               for dn, modlist in sent for kind, attribute, values in modlist if attribute == "uniqueMember"]
    assert members == [
        (group_dn.lower(), ldap.MOD_ADD, [f"uid=fdoe,{ldap_subtree}".lower()]),
        (odd.lower(), ldap.MOD_ADD, [f"uid=scarter,{ldap_subtree}".lower()]),
        (group_dn.lower(), ldap.MOD_DELETE, [f"uid=fdoe,{ldap_subtree}".lower()]),
    ]
    group = ldap_entry(slapd, group_dn)
    assert group is not None and sorted(m.lower() for m in group["uniquemember"]) == \
        sorted(f"uid={u},{ldap_subtree}".lower() for u in ("bjensen", "scarter"))


def test_membership_of_failed_push_arrives_with_next_change(seeded_dir: Path, slapd: Slapd,
                                                             ldap_subtree: str) -> None:
    """A group joined by a change whose push failed is joined by the next push of
    that user, even though that next change is about something else."""
    for mapping in (FORWARD, "systemLdapGroups_managedRole"):
        assert idsync(seeded_dir, "recon", mapping).returncode == 0
    users = {u["userName"]: u for u in json.loads(idsync(seeded_dir, "managed", "query", "user").stdout)}
    group_dn = f"cn=openidm,{ldap_subtree}"
    join = [{"operation": "add", "field": "/ldapGroups", "value": group_dn}]
    slapd.stop(keep_data=True)
    try:
        failed = idsync(seeded_dir, "managed", "patch", "user", users["scarter"]["_id"], "--operations",
                        json.dumps(join))
    finally:
        slapd.start()
    assert failed.returncode == 75
    phone = [{"operation": "replace", "field": "/telephoneNumber", "value": "555-0101"}]
    proc = idsync(seeded_dir, "managed", "patch", "user", users["scarter"]["_id"], "--operations", json.dumps(phone))
    assert proc.returncode == 0, proc.stderr
    members = ldap_entry(slapd, group_dn)["uniquemember"]  # type: ignore[index]
    assert f"uid=scarter,{ldap_subtree}".lower() in [m.lower() for m in members]
    assert idsync(seeded_dir, "sync", "retry").stdout.strip() == "nothing to retry"


def _membership_fixture(seeded_dir: Path, slapd: Slapd, subtree: str) -> tuple[str, dict[str, str]]:
    """bjensen in groups staff and openidm, scarter in staff and ops (groups need a
    member), after the LDAP-to-store recon: bjensen's id and the group DNs by cn."""
    groups = {cn: f"cn={cn},{subtree}" for cn in ("openidm", "staff", "ops")}
    members = {"staff": ("bjensen", "scarter"), "ops": ("scarter",)}
    slapd.add_ldif("".join(
        f"dn: {groups[cn]}\nobjectClass: top\nobjectClass: groupOfUniqueNames\ncn: {cn}\n"
        + "".join(f"uniqueMember: uid={u},{subtree}\n" for u in uids) + "\n" for cn, uids in members.items()))
    assert idsync(seeded_dir, "recon", FORWARD).returncode == 0
    users = {u["userName"]: u for u in json.loads(idsync(seeded_dir, "managed", "query", "user").stdout)}
    assert sorted(g.lower() for g in users["bjensen"]["ldapGroups"]) == sorted(
        groups[cn].lower() for cn in ("openidm", "staff"))
    return users["bjensen"]["_id"], groups


def _members(slapd: Slapd, dn: str) -> list[str]:
    entry = ldap_entry(slapd, dn)
    assert entry is not None
    return sorted(m.lower().split(",")[0] for m in entry["uniquemember"])


def _ldap_groups(project_dir: Path, user_id: str) -> list[str]:
    user = json.loads(idsync(project_dir, "managed", "get", "user", user_id).stdout)
    return sorted(g.lower().split(",")[0] for g in user.get("ldapGroups") or [])


def _patch_while_down(project_dir: Path, slapd: Slapd, user_id: str, *patches: list[dict[str, str]]) -> None:
    """Apply each patch to the user with slapd stopped: each is saved, its push fails."""
    slapd.stop(keep_data=True)
    try:
        for ops in patches:
            proc = idsync(project_dir, "managed", "patch", "user", user_id, "--operations", json.dumps(ops))
            assert proc.returncode == 75, proc.stderr
    finally:
        slapd.start()


@pytest.mark.parametrize("repair", ["retry", "next change"])
def test_group_left_during_failed_push_is_left(seeded_dir: Path, slapd: Slapd, ldap_subtree: str,
                                               repair: str) -> None:
    """A user who leaves a group while LDAP is down leaves it once the push is
    repaired, by `idsync sync retry` or by the user's next (unrelated) change: only
    that member value goes (the group keeps its other member, the user keeps her
    other group), and the LDAP-to-store recon does not bring the group back."""
    user_id, groups = _membership_fixture(seeded_dir, slapd, ldap_subtree)
    leave = [{"operation": "remove", "field": "/ldapGroups", "value": groups["staff"]}]
    _patch_while_down(seeded_dir, slapd, user_id, leave)
    project = load_project(seeded_dir)
    kept = unrepaired_befores(Store.open(project.settings.store_url()), REVERSE)
    assert list(kept) == [user_id] and groups["staff"] in kept[user_id]["ldapGroups"]
    if repair == "retry":
        proc = idsync(seeded_dir, "sync", "retry")
        assert "CONFIRMED UPDATE: ok" in proc.stdout
    else:
        phone = [{"operation": "replace", "field": "/telephoneNumber", "value": "555-0102"}]
        proc = idsync(seeded_dir, "managed", "patch", "user", user_id, "--operations", json.dumps(phone))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _members(slapd, groups["staff"]) == ["uid=scarter"]
    assert _members(slapd, groups["openidm"]) == ["uid=bjensen"]
    assert idsync(seeded_dir, "sync", "retry").stdout.strip() == "nothing to retry"
    assert idsync(seeded_dir, "recon", FORWARD).returncode == 0
    assert _ldap_groups(seeded_dir, user_id) == ["cn=openidm"]


def test_group_left_during_failed_push_is_left_by_recon(seeded_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A group left while LDAP was down is left by the next store-to-LDAP recon
    too (a "merge" list otherwise only gains values in a recon), and the
    LDAP-to-store recon after it does not bring the group back."""
    user_id, groups = _membership_fixture(seeded_dir, slapd, ldap_subtree)
    leave = [{"operation": "remove", "field": "/ldapGroups", "value": groups["staff"]}]
    _patch_while_down(seeded_dir, slapd, user_id, leave)
    assert idsync(seeded_dir, "recon", REVERSE).returncode == 0
    assert idsync(seeded_dir, "recon", FORWARD).returncode == 0
    assert _ldap_groups(seeded_dir, user_id) == ["cn=openidm"]
    assert _members(slapd, groups["staff"]) == ["uid=scarter"]


@pytest.mark.parametrize("seeded_dir", WITH_POSTGRESQL, indirect=True)
def test_changes_made_while_ldap_down_all_arrive(seeded_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Two changes whose pushes both failed (leave staff, then join ops) arrive
    together with the retry: staff loses the user, ops gains her, openidm keeps her;
    and both recons then write nothing. On every store backend."""
    user_id, groups = _membership_fixture(seeded_dir, slapd, ldap_subtree)
    leave = [{"operation": "remove", "field": "/ldapGroups", "value": groups["staff"]}]
    join = [{"operation": "add", "field": "/ldapGroups", "value": groups["ops"]}]
    _patch_while_down(seeded_dir, slapd, user_id, leave, join)
    retry = idsync(seeded_dir, "sync", "retry")
    assert retry.returncode == 0 and "CONFIRMED UPDATE: ok" in retry.stdout, retry.stdout + retry.stderr
    assert _members(slapd, groups["staff"]) == ["uid=scarter"]
    assert _members(slapd, groups["ops"]) == ["uid=bjensen", "uid=scarter"]
    assert _members(slapd, groups["openidm"]) == ["uid=bjensen"]
    for mapping in (FORWARD, REVERSE):
        changes = _changes(idsync(seeded_dir, "recon", mapping, "--json"))
        assert changes == {**changes, "created": 0, "updated": 0, "deleted": 0, "unlinked": 0}
    assert _ldap_groups(seeded_dir, user_id) == ["cn=openidm", "cn=ops"]


def test_failed_push_records_no_secret(seeded_dir: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The object a failed push keeps for its repair holds no secret, neither clear
    nor hashed, in any audit row as stored; `idsync status` shows no trace of it;
    and the retry delivers both the group left and the password set while LDAP was down."""
    user_id, groups = _membership_fixture(seeded_dir, slapd, ldap_subtree)
    first, second = "Fir5t-Secret-Value", "Sec0nd-Secret-Value"
    set_password = [{"operation": "replace", "field": "/password", "value": first}]
    assert idsync(seeded_dir, "managed", "patch", "user", user_id, "--operations",
                  json.dumps(set_password)).returncode == 0
    leave = [{"operation": "remove", "field": "/ldapGroups", "value": groups["staff"]}]
    change_password = [{"operation": "replace", "field": "/password", "value": second}]
    _patch_while_down(seeded_dir, slapd, user_id, leave, change_password)
    runs = json.loads(idsync(seeded_dir, "status", "--json").stdout)
    shown = "".join(idsync(seeded_dir, "status", r["_id"], "--json").stdout for r in runs[:3])
    shown += idsync(seeded_dir, "status").stdout + "".join(idsync(seeded_dir, "status", r["_id"]).stdout
                                                           for r in runs[:3])
    assert "_sourceBefore" not in shown and "ldapGroups" not in shown
    retry = idsync(seeded_dir, "sync", "retry")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    dn = f"uid=bjensen,{ldap_subtree}"
    assert can_bind(slapd, dn, second) and _members(slapd, groups["staff"]) == ["uid=scarter"]
    project = load_project(seeded_dir)
    with Store.open(project.settings.store_url()).engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(audit)).mappings()]
    kept = [r["changes"]["_sourceBefore"] for r in rows if r["changes"] and "_sourceBefore" in r["changes"]]
    assert len(kept) == 1 and groups["staff"] in kept[0]["ldapGroups"] and "password" not in kept[0]
    text = json.dumps(rows, default=str)
    for value in (first, second, "$6$", "{CRYPT}", "{SSHA}"):
        assert value not in text
