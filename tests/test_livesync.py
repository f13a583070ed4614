"""liveSync (``idsync livesync``, ``sync/livesync.py``, ``connectors/ldap/changes.py``)
against a real slapd, with and without a sync provider, on the two-way LDAP sample."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from dbs import BACKENDS, store_url
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.livesync import LiveSyncOptions, LiveSyncResult, run_livesync
from idsync_dev.slapd import Slapd
from livesync_env import live, live_after_expiry, managed_users, read_changes
from projects import make_project, person
from sync_tokens import replace_token, tamper, token_state

from samples import FORWARD, REVERSE, idsync, ldap_entry, recon_summary, sample_project

SOURCE = "system/ldap/account"


@pytest.fixture(scope="module")
def plain_slapd() -> Iterator[Slapd]:
    """A slapd without a sync provider: liveSync polls ``entryCSN`` there."""
    if not Slapd.available():
        pytest.skip("slapd is not installed (Debian packages slapd and ldap-utils)")
    with Slapd(tls=False, syncprov=False) as server:
        yield server


def _project(tmp_path: Path, slapd: Slapd, subtree: str, store_url: str | None = None) -> Path:
    """The sample, its "10%" maxDeletes made a count: a handful of test users is not a large directory."""
    project = sample_project(tmp_path, slapd, subtree, store_url or f"sqlite:///{tmp_path / 's.db'}")
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": 5'))
    return project


def _live(project: Path, **options: Any) -> LiveSyncResult:
    loaded = load_project(project)
    return run_livesync(loaded, Store.open(loaded.settings.store_url()), SOURCE, LiveSyncOptions(**options))


def _users(project: Path) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in resource.pages(QuerySpec()) for u in page}


def _person(uid: str, subtree: str, mail: str | None = None) -> str:
    return (f"dn: uid={uid},{subtree}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
            f"sn: {uid.title()}\ngivenName: {uid}\nmail: {mail or uid + '@example.com'}\n\n")


def _changes(slapd: Slapd, subtree: str) -> None:
    """A modify, an add, a delete and a rename: what every reader must report."""
    slapd.add_ldif(
        f"dn: uid=bjensen,{subtree}\nchangetype: modify\nreplace: mail\nmail: barbara@example.org\n\n"
        + _person("newbie", subtree).replace(f"dn: uid=newbie,{subtree}\n",
                                              f"dn: uid=newbie,{subtree}\nchangetype: add\n")
        + f"dn: uid=scarter,{subtree}\nchangetype: delete\n\n")


def _state(project: Path) -> Any:
    return token_state(project, SOURCE)


@pytest.mark.parametrize("kind", BACKENDS)
def test_first_run_reconciles_in_full_then_applies_only_changes(tmp_path: Path, slapd: Slapd,
                                                                 ldap_subtree: str, kind: str) -> None:
    """Without a token, liveSync reconciles in full and stores the position taken before
    that recon; the next run reads nothing; after a modify, an add and a delete in LDAP,
    the next run applies exactly those through the mapping (update, create, delete).
    On SQLite, PostgreSQL and MariaDB alike."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    first = _live(project)
    assert first.state == "SUCCESS", first.message
    assert first.full_recon and "no token yet" in first.full_recon
    assert set(_users(project)) == {"bjensen", "scarter"}
    assert _state(project).token is not None

    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.full_recon is None and idle.method == "syncrepl"
    assert idle.changes == 0 and idle.runs == []

    _changes(slapd, ldap_subtree)
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.changes == 3
    users = _users(project)
    assert set(users) == {"bjensen", "newbie"}
    assert users["bjensen"]["mail"] == "barbara@example.org"
    (run,) = done.runs
    assert run["mapping"] == FORWARD and run["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    record = RunStore(Store.open(load_project(project).settings.store_url())).get(run["id"])
    assert record is not None and record["job"] == "liveSync" and record["state"] == "SUCCESS"
    assert _live(project).changes == 0


def test_rename_is_an_update_of_the_same_object(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A renamed entry (modrdn uid=bjensen -> uid=barbara) keeps its entryUUID id: liveSync
    updates the linked user's userName and creates no second user."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    before = _users(project)["bjensen"]
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modrdn\nnewrdn: uid=barbara\ndeleteoldrdn: 1\n")
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 1
    users = _users(project)
    assert set(users) == {"barbara", "scarter"}
    assert users["barbara"]["_id"] == before["_id"]


def _scarter_made_again(project: Path, slapd: Slapd, subtree: str) -> None:
    """After a first run, scarter deleted and added again at its DN (a new entryUUID), with
    a new mail: the next run deletes the old user and creates the new one, nothing failed."""
    assert _live(project).state == "SUCCESS"
    slapd.add_ldif(f"dn: uid=scarter,{subtree}\nchangetype: delete\n\n"
                   + _person("scarter", subtree, "sam@example.org").replace(
                       f"dn: uid=scarter,{subtree}\n", f"dn: uid=scarter,{subtree}\nchangetype: add\n"))
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.failed == 0
    (run,) = done.runs
    assert run["counts"] == {"deleted": 1, "created": 1}, run
    assert _users(project)["scarter"]["mail"] == "sam@example.org"


def test_an_entry_deleted_and_added_again_in_one_window_is_created_at_once(tmp_path: Path, slapd: Slapd,
                                                                            ldap_subtree: str) -> None:
    """An entry deleted and another added at its DN between two runs (a new entryUUID):
    the old entry's delete is applied first, so the new entry finds no user still linked
    to the old one and is created and linked in the same run, with nothing failed or kept
    for a retry (applied after, the new entry correlated to the user still linked, failed,
    and the delete then removed that user); a later change of the new entry reaches it."""
    project = _project(tmp_path, slapd, ldap_subtree)
    _scarter_made_again(project, slapd, ldap_subtree)
    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: carter@example.org\n")
    later = _live(project)
    assert later.state == "SUCCESS" and later.runs[0]["counts"] == {"updated": 1}, later.runs
    assert _users(project)["scarter"]["mail"] == "carter@example.org"


def test_restored_server_token_is_answered_by_a_full_recon(tmp_path: Path, slapd: Slapd,
                                                           ldap_subtree: str) -> None:
    """A cookie the server refuses (newer than its own state: a server restored from a
    backup) is not skipped: the run logs livesync.token_expired, reconciles in full,
    applying what changed meanwhile, and stores a fresh token the next run reads from."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    stored = json.loads(_state(project).token)
    stored["cookies"] = dict.fromkeys(stored["cookies"], "rid=000,csn=20991231000000.000000Z#000000#000#000000")
    replace_token(project, SOURCE, json.dumps(stored))
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: restored@example.org\n")
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.full_recon is not None and "can no longer be honoured" in done.full_recon
    assert "consumer state is newer" in done.full_recon
    assert _users(project)["bjensen"]["mail"] == "restored@example.org"
    fresh = _state(project)
    assert fresh.token is not None and "2099" not in fresh.token and fresh.full_recons == 2
    # What ran is recorded: the run's method, and the source's as `idsync status` shows it.
    assert done.method == fresh.method == "full recon"
    status = idsync(project, "status")
    assert f"liveSync {SOURCE}: last run " in status.stdout and " SUCCESS by full recon; " in status.stdout, status
    again = _live(project)
    assert again.full_recon is None and again.state == "SUCCESS"
    assert again.method == _state(project).method == "syncrepl"


def test_a_token_of_another_kind_is_never_sent(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A stored token the connector did not make (a garbled cookie, which slapd would
    take for none and answer with the whole content, its deletes unseen) is expired."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    replace_token(project, SOURCE, json.dumps({"v": 1, "kind": "syncrepl", "cookies": {ldap_subtree: "garbage"}}))
    done = _live(project)
    assert done.state == "SUCCESS" and done.full_recon and "not one this connector makes" in done.full_recon


def test_deletes_apply_when_ids_are_dns(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """With ``"uidAttribute": "dn"`` the session log names deleted entries by entryUUID,
    which no link holds: the run then lists the DNs still present (ids only, logged
    ``livesync.listing_ids``) and deletes the linked users whose entry is not among
    them; the modify and the add of the same refresh apply as usual. A run with no
    delete lists nothing."""
    project = _project(tmp_path, slapd, ldap_subtree)
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"]["uidAttribute"] = "dn"
    prov_file.write_text(json.dumps(prov))
    assert _live(project).state == "SUCCESS"
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: dn@example.org\n")
    with structlog.testing.capture_logs() as logs:
        modified = _live(project)
    assert modified.state == "SUCCESS" and modified.runs[0]["counts"] == {"updated": 1}
    assert not any(e["event"] == "livesync.listing_ids" for e in logs)
    _changes(slapd, ldap_subtree)
    with structlog.testing.capture_logs() as logs:
        done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.note is None
    assert any(e["event"] == "livesync.listing_ids" for e in logs)
    (run,) = done.runs
    assert run["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    users = _users(project)
    assert set(users) == {"bjensen", "newbie"} and users["bjensen"]["mail"] == "barbara@example.org"
    assert _live(project).changes == 0


def test_a_changed_entry_without_the_id_attribute_fails_as_an_entry(tmp_path: Path, slapd: Slapd,
                                                                   ldap_subtree: str) -> None:
    """With ``uidAttribute`` an attribute an added entry lacks (``employeeNumber``), that
    entry's change is no longer dropped: it fails as an entry of the mapping's run, named
    by its DN, logged ``livesync.no_id`` at warning, and the run applies the other change
    and moves on (the next run does not read it again)."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"]["uidAttribute"] = "employeeNumber"
    prov_file.write_text(json.dumps(prov))
    slapd.add_ldif("".join(_person(uid, ldap_subtree).replace("objectClass: inetOrgPerson\n",
                                                            f"objectClass: inetOrgPerson\nemployeeNumber: {n}\n")
                           for n, uid in enumerate(("ann", "bob"))))
    first = _live(project)
    assert first.state == "SUCCESS", first.message
    assert set(_users(project)) == {"ann", "bob"}
    slapd.add_ldif(f"dn: uid=ann,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: ann@example.org\n\n"
                   + _person("ghost", ldap_subtree))
    with structlog.testing.capture_logs() as logs:
        done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.failed == 1
    (run,) = done.runs
    assert run["counts"] == {"updated": 1, "failed": 1}
    record = RunStore(Store.open(load_project(project).settings.store_url())).get(run["id"])
    assert record is not None
    assert [e["message"] for e in record["summary"]["errors"]] == [
        f"a source object has no _id (dn 'uid=ghost,{ldap_subtree}'); the object was skipped"]
    assert [e["about"] for e in logs if e["event"] == "livesync.no_id" and e["log_level"] == "warning"] == [
        f"dn 'uid=ghost,{ldap_subtree}'"]
    assert _users(project)["ann"]["mail"] == "ann@example.org" and "ghost" not in _users(project)
    assert _live(project).changes == 0


def test_a_refresh_asks_only_for_what_the_mappings_read(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh asks the directory for the attributes the mapping reads (its property
    sources and correlation query), as the recon does, not for every attribute; an
    unmapped attribute changed alone still reports the entry, which then writes nothing."""
    from idsync.connectors.ldap.changes import LdapChanges

    asked: list[list[str]] = []
    refresh = LdapChanges._refresh

    def spy(self: LdapChanges, conn: Any, base: str, cookie: str | None, attributes: Any, out: Any) -> Any:
        asked.append(list(attributes))
        return refresh(self, conn, base, cookie, attributes, out)

    monkeypatch.setattr(LdapChanges, "_refresh", spy)
    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: roomNumber\nroomNumber: 42\n")
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 1 and done.runs[0]["counts"] == {}
    (attributes,) = asked
    assert {a.lower() for a in attributes} == {"entryuuid", "uid", "cn", "sn", "givenname", "mail",
                                               "telephonenumber", "description", "memberof", "userpassword"}


def test_an_entry_altered_in_the_spool_fails_the_run_unapplied(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh's changed entries are sealed in the read's spool: one altered there before
    it is applied (here another entry's sealed bytes copied over it, in the spool's own
    database) fails the run, saying the spool was altered; nothing of it is applied and
    the token stays, so the next run applies both changes as read from the directory."""
    from idsync.spool import EntrySpool

    items = EntrySpool.items

    def altered(self: EntrySpool) -> Any:
        self._flush()
        rows = list(self._db.execute("SELECT key, entry FROM entries ORDER BY rowid"))
        if len(rows) == 2:
            self._db.execute("UPDATE entries SET entry = ? WHERE key = ?", (rows[1][1], rows[0][0]))
        return items(self)

    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    token = _state(project).token
    slapd.add_ldif("".join(f"dn: uid={uid},{ldap_subtree}\nchangetype: modify\nreplace: mail\n"
                           f"mail: {uid}@example.org\n\n" for uid in ("bjensen", "scarter")))
    with monkeypatch.context() as patch:
        patch.setattr(EntrySpool, "items", altered)
        failed = _live(project)
    assert failed.state == "FAILED" and failed.changes == 0
    assert "spool" in (failed.message or "") and "was altered" in (failed.message or "")
    assert {u["mail"] for u in _users(project).values()} == {"bjensen@example.com", "scarter@example.com"}
    assert _state(project).token == token
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 2
    assert {u["mail"] for u in _users(project).values()} == {"bjensen@example.org", "scarter@example.org"}


@pytest.fixture(scope="module")
def short_log_slapd() -> Iterator[Slapd]:
    """A sync provider whose session log keeps only two deletes."""
    if not Slapd.available():
        pytest.skip("slapd is not installed (Debian packages slapd and ldap-utils)")
    with Slapd(tls=False, session_log=2) as server:
        yield server


def _subtree(slapd: Slapd, name: str) -> str:
    dn = f"ou={name},ou=People,{slapd.base_dn}"
    slapd.add_ldif(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n")
    return dn


def _one_of_two_applied(project: Path, slapd: Slapd, applied: str, left_out: str) -> dict[str, dict[str, Any]]:
    """New mails for the entries at both DNs (``UID@example.org``); the next liveSync
    applies the first alone, and deletes nothing. The store's users after it."""
    slapd.add_ldif("".join(f"dn: {dn}\nchangetype: modify\nreplace: mail\nmail: {dn[4:dn.index(',')]}@example.org\n\n"
                           for dn in (applied, left_out)))
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert [r["counts"] for r in done.runs] == [{"updated": 1}]
    return _users(project)


def _moved_is_no_delete(project: Path, slapd: Slapd, uid: str, old: str, new: str, user_id: str) -> None:
    """``uid`` moved from ``old`` to ``new`` (a base idsync reads): the next liveSync
    deletes nothing, and the user keeps its id."""
    slapd.add_ldif(f"dn: uid={uid},{old}\nchangetype: modrdn\nnewrdn: uid={uid}\ndeleteoldrdn: 1\n"
                   f"newsuperior: {new}\n")
    moved = _live(project)
    assert moved.state == "SUCCESS", moved.message
    assert all("deleted" not in r["counts"] for r in moved.runs), moved.runs
    assert _users(project)[uid]["_id"] == user_id


def test_several_sync_contexts_delete_only_what_none_holds(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """With two ``baseContextsToSynchronize``, slapd's refresh of one names as gone the
    entries changed under the other (its session log holds them and its search does not
    match them): a modify under the first base, or a move from one base to the other, is
    an update, never a delete of the user; an entry deleted under either is deleted."""
    other = ldap_subtree.replace("ou=", "ou=c", 1)
    slapd.add_ldif(f"dn: {other}\nobjectClass: organizationalUnit\nou: {other.split(',')[0][3:]}\n\n")
    project = _project(tmp_path, slapd, ldap_subtree)
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    settings = json.loads(prov.read_text())
    settings["configurationProperties"]["baseContextsToSynchronize"] = [ldap_subtree, other]
    settings["configurationProperties"]["baseContexts"] = [ldap_subtree, other]
    prov.write_text(json.dumps(settings))
    assert _live(project).state == "SUCCESS"
    first = _users(project)
    assert set(first) == {"bjensen", "scarter"}

    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b@example.org\n")
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert [r["counts"] for r in done.runs] == [{"updated": 1}]
    assert _users(project)["bjensen"]["mail"] == "b@example.org"

    _moved_is_no_delete(project, slapd, "scarter", ldap_subtree, other, first["scarter"]["_id"])

    # A refresh that ran before another base's refresh saw the change: the delete it names
    # is checked against every base before it is believed.
    loaded = load_project(project)
    account = Resources(loaded, Store.open(loaded.settings.store_url())).open(SOURCE)
    changes = account._changes  # type: ignore[attr-defined]
    try:
        (uuid,) = [o["_id"] for page in account.pages(QuerySpec()) for o in page if o.get("uid") == "scarter"]
        gone_id = "00000000-0000-0000-0000-000000000000"
        assert list(changes._still_gone(changes._open(), [uuid.upper(), gone_id], "entryUUID")) == [gone_id]
    finally:
        account.close()

    slapd.add_ldif(f"dn: uid=scarter,{other}\nchangetype: delete\n")
    gone = _live(project)
    assert gone.state == "SUCCESS" and [r["counts"] for r in gone.runs] == [{"deleted": 1}]
    assert set(_users(project)) == {"bjensen"}


def _narrow_sync(project: Path, base: str, sync: str) -> None:
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    settings = json.loads(prov.read_text())
    settings["configurationProperties"].update(baseContexts=[base], baseContextsToSynchronize=[sync])
    prov.write_text(json.dumps(settings))


def test_recons_read_base_contexts_and_livesync_the_sync_contexts(tmp_path: Path, slapd: Slapd,
                                                                   ldap_subtree: str) -> None:
    """``baseContexts`` wider than ``baseContextsToSynchronize``, as PingIDM reads them: the
    full recon that starts liveSync reads every user of baseContexts; liveSync applies the
    changes under the sync context only (a change outside waits for the next full recon, as
    OpenICF's liveSync never reports it); an entry moved out of the sync context into the
    rest of baseContexts is no delete, and keeps its user."""
    staff = f"ou=staff,{ldap_subtree}"
    project = _project(tmp_path, slapd, ldap_subtree)
    _narrow_sync(project, ldap_subtree, staff)
    slapd.add_ldif(f"dn: {staff}\nobjectClass: organizationalUnit\nou: staff\n\n"
                   + _person("sue", staff) + _person("tom", staff))
    first = _live(project)
    assert first.state == "SUCCESS", first.message
    assert set(_users(project)) == {"bjensen", "scarter", "sue", "tom"}

    users = _one_of_two_applied(project, slapd, f"uid=sue,{staff}", f"uid=bjensen,{ldap_subtree}")
    assert users["sue"]["mail"] == "sue@example.org" and users["bjensen"]["mail"] == "bjensen@example.com"

    _moved_is_no_delete(project, slapd, "tom", staff, ldap_subtree, users["tom"]["_id"])

    recon = idsync(project, "recon", FORWARD)
    assert recon.returncode == 0, recon.stderr
    assert _users(project)["bjensen"]["mail"] == "bjensen@example.org"


def test_a_present_phase_keeps_the_users_of_the_rest_of_base_contexts(tmp_path: Path,
                                                                      short_log_slapd: Slapd) -> None:
    """A present phase names the entries of the sync context only: the users of entries
    elsewhere in ``baseContexts``, linked by the full recon, are not deleted with the
    entries the session log no longer names."""
    slapd = short_log_slapd
    subtree = _subtree(slapd, "wide")
    staff = f"ou=staff,{subtree}"
    slapd.add_ldif(f"dn: {staff}\nobjectClass: organizationalUnit\nou: staff\n\n"
                   + "".join(_person(f"s{i}", staff) for i in range(4)))
    project = _project(tmp_path, slapd, subtree)
    _narrow_sync(project, subtree, staff)
    assert _live(project).state == "SUCCESS"
    assert set(_users(project)) == {"bjensen", "scarter", "s0", "s1", "s2", "s3"}
    slapd.add_ldif("".join(f"dn: uid=s{i},{staff}\nchangetype: delete\n\n" for i in range(3)))
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert set(_users(project)) == {"bjensen", "scarter", "s3"}
    assert [r["counts"] for r in done.runs] == [{"deleted": 3}]


def _sync_settings(project: Path, **settings: Any) -> None:
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    config = json.loads(prov.read_text())
    config["configurationProperties"].update(settings)
    prov.write_text(json.dumps(config))


def test_livesync_applies_only_the_changes_the_sync_filters_select(tmp_path: Path, slapd: Slapd,
                                                                    ldap_subtree: str) -> None:
    """OpenICF's ``accountSynchronizationFilter``, ``objectClassesToSynchronize`` and
    ``modifiersNamesToFilterOut`` choose which changes liveSync applies: a change of an
    entry they leave out is not applied (the next full recon applies it), and is no
    delete; the stock ``objectClassesToSynchronize`` (``inetOrgPerson``) leaves out nothing."""
    project = _project(tmp_path, slapd, ldap_subtree)
    _sync_settings(project, accountSynchronizationFilter="(!(uid=scarter))",
                   objectClassesToSynchronize=["inetOrgPerson"])
    assert _live(project).state == "SUCCESS"
    assert set(_users(project)) == {"bjensen", "scarter"}
    users = _one_of_two_applied(project, slapd, f"uid=bjensen,{ldap_subtree}", f"uid=scarter,{ldap_subtree}")
    assert users["bjensen"]["mail"] == "bjensen@example.org" and users["scarter"]["mail"] == "scarter@example.com"

    # Every change here is made by the directory's admin: filtered out, none is applied.
    _sync_settings(project, accountSynchronizationFilter=None, modifiersNamesToFilterOut=[slapd.admin_dn])
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b2@example.org\n")
    skipped = _live(project)
    assert skipped.state == "SUCCESS", skipped.message
    assert all(not r["counts"] for r in skipped.runs), skipped.runs
    assert _users(project)["bjensen"]["mail"] == "bjensen@example.org"

    # The classes an account entry must have one of: none of the sample's has posixAccount.
    _sync_settings(project, modifiersNamesToFilterOut=[], objectClassesToSynchronize=["posixAccount"])
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b3@example.org\n")
    assert _live(project).state == "SUCCESS" and _users(project)["bjensen"]["mail"] == "bjensen@example.org"

    recon = idsync(project, "recon", FORWARD)
    assert recon.returncode == 0, recon.stderr
    users = _users(project)
    assert users["bjensen"]["mail"] == "b3@example.org" and users["scarter"]["mail"] == "scarter@example.org"


def test_trimmed_session_log_deletes_from_the_present_phase(tmp_path: Path, short_log_slapd: Slapd) -> None:
    """More deletes than the session log keeps: the server answers with a present phase
    (every unchanged entry's entryUUID). liveSync warns, and deletes exactly the linked
    users whose entries are not among them; the others stay."""
    slapd = short_log_slapd
    subtree = _subtree(slapd, "trim")
    project = _project(tmp_path, slapd, subtree)
    slapd.add_ldif("".join(_person(f"u{i}", subtree) for i in range(5)))
    assert _live(project).state == "SUCCESS"
    assert len(_users(project)) == 7
    slapd.add_ldif("".join(f"dn: uid=u{i},{subtree}\nchangetype: delete\n\n" for i in range(4)))
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert set(_users(project)) == {"bjensen", "scarter", "u4"}
    (run,) = done.runs
    assert run["counts"]["deleted"] == 4


def test_a_rebuilt_directory_is_answered_by_a_full_recon(tmp_path: Path, short_log_slapd: Slapd) -> None:
    """The sync context deleted and loaded again (new entryUUIDs, as a directory rebuilt
    from an LDIF without them): the server answers a present phase of entries all new,
    whose deletes would be every linked user. The base entry's entryUUID, kept in the
    token, tells: the token is expired (logged at warning, naming it) and the run
    reconciles in full instead of deleting, or failing on maxDeletes at every run."""
    slapd = short_log_slapd
    subtree = _subtree(slapd, "rebuilt")
    project = _project(tmp_path, slapd, subtree)
    assert _live(project).state == "SUCCESS"
    assert subtree in json.loads(_state(project).token)["bases"]
    import ldap

    conn = ldap.initialize(slapd.url)
    conn.simple_bind_s(slapd.admin_dn, slapd.admin_password)
    under = sorted((dn for dn, _ in conn.search_s(subtree, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["1.1"])),
                   key=lambda dn: -dn.count(","))  # the deepest first
    conn.unbind_s()
    slapd.add_ldif("".join(f"dn: {dn}\nchangetype: delete\n\n" for dn in under))
    _subtree(slapd, "rebuilt")
    slapd.add_ldif(_person("bjensen", subtree) + _person("scarter", subtree))
    with structlog.testing.capture_logs() as logs:
        done = _live(project)
    assert done.full_recon is not None and "entryUUID changed" in done.full_recon, done
    assert any(e["event"] == "livesync.token_expired" and "rebuilt or replaced" in e["reason"] for e in logs)
    # The full recon meets users linked to the old entries: the operator's to settle, nothing deleted.
    assert set(_users(project)) == {"bjensen", "scarter"}


def test_server_without_sync_provider_polls_entry_csn(tmp_path: Path, plain_slapd: Slapd) -> None:
    """Without syncprov, liveSync finds changes by entryCSN: the first run after the full
    recon reads again the entries stamped since the position it took (this host's clock
    five minutes back: the server keeps no ``contextCSN``), which the recon applied: no
    change, no mapping run. A modify and an add are applied; a delete is not
    seen, and the run says deletes are left to the next full recon."""
    subtree = _subtree(plain_slapd, "poll")
    project = _project(tmp_path, plain_slapd, subtree)
    assert _live(project).state == "SUCCESS"
    assert json.loads(_state(project).token)["attribute"] == "entryCSN"
    assert [c.reread for c in read_changes(project, SOURCE)] == [True, True]
    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.changes == 0 and idle.runs == [], idle.runs
    _changes(plain_slapd, subtree)
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert done.method == "entryCSN" and "deletes are left to the next full recon" in (done.note or "")
    users = _users(project)
    assert set(users) == {"bjensen", "scarter", "newbie"}
    assert users["bjensen"]["mail"] == "barbara@example.org"
    assert _live(project).changes == 0


def _one_way_paged(project: Path, block_size: int) -> None:
    """The LDAP-to-store mapping alone (the reverse ones push nothing back, whose writes
    would give the entries newer stamps), the directory read ``block_size`` entries a page."""
    sync = project / "conf" / "sync.json"
    config = json.loads(sync.read_text())
    for mapping in config["mappings"]:
        if mapping["source"].startswith("managed/"):
            mapping["enableSync"] = False
    sync.write_text(json.dumps(config))
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    settings = json.loads(prov.read_text())
    settings["configurationProperties"]["blockSize"] = block_size
    prov.write_text(json.dumps(settings))


def _paged_three(tmp_path: Path, slapd: Slapd, name: str) -> tuple[str, Path]:
    """A subtree ``name`` of three users (bjensen, scarter, mike) and a project polling it
    one entry a page (``_one_way_paged``), its first run done."""
    subtree = _subtree(slapd, name)
    project = _project(tmp_path, slapd, subtree)
    _one_way_paged(project, 1)
    slapd.add_ldif(_person("mike", subtree))
    assert _live(project).state == "SUCCESS"
    return subtree, project


def _described(subtree: str, **values: str) -> str:
    return "".join(f"dn: uid={uid},{subtree}\nchangetype: modify\nreplace: description\ndescription: {value}\n\n"
                   for uid, value in values.items())


def _changed_while_paging(slapd: Slapd, subtree: str, project: Path,
                          monkeypatch: pytest.MonkeyPatch) -> LiveSyncResult:
    """bjensen, scarter and mike changed ("early"), then a run that pages through those
    changes, during which bjensen and mike change again ("late") once bjensen's page is
    read: bjensen's second change is stamped before mike's, on a page already read."""
    import idsync.connectors.ldap.changes as changes

    slapd.add_ldif(_described(subtree, bjensen="early", scarter="early", mike="early"))
    read_pages = changes.read_pages

    def paging(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, page in enumerate(read_pages(*args, **kwargs)):
            yield page
            if number == 0 and page and "uid=bjensen," in page[0][0]:
                # The next page is asked for already: the page after it has mike's later change.
                slapd.add_ldif(_described(subtree, bjensen="late", mike="late"))

    with monkeypatch.context() as patched:
        patched.setattr(changes, "read_pages", paging)
        return _live(project)


def test_polling_misses_no_change_made_while_it_reads(tmp_path: Path, plain_slapd: Slapd,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry changed while a polling read pages through the changes, after its page
    was read, while a later page holds an entry changed later still: the next run applies
    it (the read starts before the newest entryCSN it saw, by its own duration and an
    overlap), and applies nothing twice once the changes are in."""
    subtree, project = _paged_three(tmp_path, plain_slapd, "paging")
    first = _changed_while_paging(plain_slapd, subtree, project, monkeypatch)
    assert first.state == "SUCCESS" and first.changes == 3
    users = _users(project)
    assert (users["bjensen"]["description"], users["mike"]["description"]) == ("early", "late")
    second = _live(project)
    assert second.state == "SUCCESS" and second.changes == 1, second.runs
    assert _users(project)["bjensen"]["description"] == "late"
    assert _live(project).changes == 0


def test_a_late_change_within_the_overlap_counts_and_an_entry_read_again_does_not(
        tmp_path: Path, plain_slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    """Polling reads again the entries of its overlap that its token does not keep (made to
    keep one here: the newest): each is a change only where the target does not hold it.
    An entry changed twice within the overlap, the second time while a read pages (after
    its page was read, while a later page holds a later change), is such an entry: the next
    run applies its second change and counts it, and only it; the entry read again
    unchanged beside it is no change (not counted in the run nor in the source's
    ``changes``). The run after that, which reads both again, counts nothing and records no
    mapping run, as a run of a sync provider with nothing to tell."""
    import idsync.connectors.ldap.changes as changes

    monkeypatch.setattr(changes, "_POLL_SEEN", 1, raising=False)
    subtree, project = _paged_three(tmp_path, plain_slapd, "late")
    first = _changed_while_paging(plain_slapd, subtree, project, monkeypatch)
    assert first.state == "SUCCESS" and first.changes == 3
    assert list(json.loads(_state(project).token)["seen"]) == [f"uid=mike,{subtree}".lower()]
    assert _users(project)["bjensen"]["description"] == "early"

    second = _live(project)
    assert second.state == "SUCCESS" and second.changes == 1, second.runs
    assert [r["counts"] for r in second.runs] == [{"updated": 1}]
    assert _users(project)["bjensen"]["description"] == "late"
    counted = _state(project).changes
    quiet = _live(project)
    assert quiet.state == "SUCCESS" and quiet.changes == 0 and quiet.runs == []
    assert _state(project).changes == counted


def test_a_polling_read_hands_on_its_changes_as_its_pages_come(tmp_path: Path, plain_slapd: Slapd,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk change is never held whole: a polling read hands on a batch of changes as
    soon as its pages hold one, before it asks for the rest (here one entry a page, one
    change a batch); only its last batch carries the new token."""
    import idsync.connectors.ldap.changes as changes

    subtree, project = _paged_three(tmp_path, plain_slapd, "streamed")
    plain_slapd.add_ldif(_described(subtree, bjensen="bulk", scarter="bulk", mike="bulk"))
    read_pages, pages = changes.read_pages, []

    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for page in read_pages(*args, **kwargs):
            pages.append(len(page))
            yield page

    monkeypatch.setattr(changes, "read_pages", counted)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    try:
        feed = resources.open(SOURCE).read_changes(_state(project).token, None, 1)
        batches = iter(feed.batches)
        first = next(batches)
        assert len(first.changes) == 1 and first.token is None
        assert len(pages) == 2, pages  # the entry handed on, and the next one, which a batch waits for
        rest = list(batches)
        assert [len(b.changes) for b in rest] == [1, 1] and rest[-1].token is not None and rest[0].token is None
        assert sum(pages) == 3
    finally:
        resources.close()
        store.close()


def test_polling_by_timestamp_reads_two_changes_within_one_second(tmp_path: Path, plain_slapd: Slapd) -> None:
    """With ``modifyTimestamp`` polling (one-second steps), a second change of an entry
    within the second of the first, after the first was read, is applied; an entry read
    once is not applied again by the next runs."""
    subtree = _subtree(plain_slapd, "seconds")
    project = _project(tmp_path, plain_slapd, subtree)
    _one_way_paged(project, 1000)
    assert _live(project).state == "SUCCESS"
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y%m%d%H%M%SZ")
    tamper(project, SOURCE, attribute="modifyTimestamp", since=since)
    assert _live(project).state == "SUCCESS"  # the entries added since then, applied again
    for value in ("one", "two"):
        plain_slapd.add_ldif(_described(subtree, bjensen=value))
        done = _live(project)
        assert done.state == "SUCCESS" and done.method == "modifyTimestamp", done.message
        assert done.changes == 1 and _users(project)["bjensen"]["description"] == value
    assert _live(project).changes == 0


def test_a_bulk_change_keeps_the_polling_token_bounded(tmp_path: Path, plain_slapd: Slapd,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk change of more entries than a polling token keeps (``_POLL_SEEN``, made 40
    here) leaves a token of that many entries, the newest, not one as large as the change.
    Nothing is missed or written twice: every entry is created once; the next run reads the
    entries the token dropped again and finds them unchanged: no write, no change counted
    (in the run, nor in the source's ``changes``) and no mapping run recorded, as a run of a
    sync provider with nothing to tell; a later change of one of them is applied once, and
    the run after it writes nothing. The run that drops entries says so
    (``livesync.poll_seen_bounded``)."""
    import idsync.connectors.ldap.changes as changes

    monkeypatch.setattr(changes, "_POLL_SEEN", 40, raising=False)
    subtree = _subtree(plain_slapd, "bulk")
    project = _project(tmp_path, plain_slapd, subtree)
    _one_way_paged(project, 7)
    assert _live(project).state == "SUCCESS"
    plain_slapd.add_ldif("".join(_person(f"u{i:03}", subtree) for i in range(100)))

    with structlog.testing.capture_logs() as logs:
        done = _live(project)
    assert any(e["event"] == "livesync.poll_seen_bounded" and e["kept"] == 40 for e in logs)
    assert done.state == "SUCCESS" and [r["counts"] for r in done.runs] == [{"created": 100}], done.runs
    token = json.loads(_state(project).token)
    assert len(token["seen"]) == 40
    stamps = sorted(v.rpartition("#")[0] for v in token["seen"].values())
    users = _users(project)
    assert len([u for u in users if u.startswith("u")]) == 100

    counted = _state(project).changes
    again = _live(project)
    assert again.state == "SUCCESS" and again.changes == 0 and again.runs == [], again.runs
    assert _state(project).changes == counted
    assert _users(project) == users
    assert sorted(v.rpartition("#")[0] for v in json.loads(_state(project).token)["seen"].values()) == stamps

    dropped = min(u for u in users if u.startswith("u") and f"uid={u},{subtree}".lower() not in token["seen"])
    plain_slapd.add_ldif(_described(subtree, **{dropped: "later"}))
    later = _live(project)
    assert later.changes == 1 and [r["counts"] for r in later.runs] == [{"updated": 1}]
    assert _users(project)[dropped]["description"] == "later"
    quiet = _live(project)
    assert quiet.changes == 0 and quiet.runs == []


def _polling_clock(monkeypatch: pytest.MonkeyPatch, kept: int) -> list[float]:
    """Polling's token made to keep ``kept`` entries, and this host's clock as it sees it
    (a list of one time, to move on)."""
    import idsync.connectors.ldap.changes as changes

    clock = [time.time()]
    monkeypatch.setattr(changes, "_POLL_SEEN", kept, raising=False)
    monkeypatch.setattr(changes, "_now", lambda: clock[0])
    return clock


def test_a_quiet_directorys_last_changes_stop_being_read_a_minute_on(tmp_path: Path, plain_slapd: Slapd,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Polling reads again the entries changed within its overlap (a minute before the
    newest stamp), in case a change stamped there is committed late; once the directory is
    quiet that is needed for a minute only, not at every run until the next change. After a
    bulk change larger than the token keeps (made 40 here), the runs within the minute read
    the dropped entries again, and find them unchanged: no change counted; the first run
    that begins a minute after the read that saw the newest stamp moves the token's start to
    that stamp, and the run after it reads and applies nothing. A change made after that is
    still applied."""
    clock = _polling_clock(monkeypatch, 40)
    subtree = _subtree(plain_slapd, "quiet")
    project = _project(tmp_path, plain_slapd, subtree)
    assert _live(project).state == "SUCCESS"
    plain_slapd.add_ldif("".join(_person(f"q{i:03}", subtree) for i in range(100)))
    assert [r["counts"] for r in _live(project).runs] == [{"created": 100}]
    clock[0] += 30
    read = read_changes(project, SOURCE)  # within the minute: the dropped entries are read again, and are no change
    assert len(read) >= 60 and all(c.reread for c in read)
    assert _live(project).changes == 0
    clock[0] += 31
    assert len(read_changes(project, SOURCE)) >= 60  # a minute after the bulk change's read: once more, then the mark
    assert _live(project).changes == 0
    token = json.loads(_state(project).token)
    assert token["since"] == token["mark"]["stamp"] and len(token["seen"]) == 1
    quiet = _live(project)
    assert quiet.changes == 0 and [r["counts"] for r in quiet.runs] in ([], [{}])
    plain_slapd.add_ldif(_described(subtree, q005="after"))
    assert [r["counts"] for r in _live(project).runs] == [{"updated": 1}]
    assert _users(project)["q005"]["description"] == "after"


def _newest_second(slapd: Slapd, subtree: str) -> int:
    """How many entries under ``subtree`` have the newest ``modifyTimestamp``."""
    import ldap

    conn = ldap.initialize(slapd.url)
    conn.simple_bind_s(slapd.admin_dn, slapd.admin_password)
    try:
        stamps = [a["modifyTimestamp"][0] for _, a in conn.search_s(subtree, ldap.SCOPE_ONELEVEL, "(uid=*)",
                                                                     ["modifyTimestamp"])]
    finally:
        conn.unbind_s()
    return stamps.count(max(stamps))


def test_a_bulk_change_within_one_second_stops_being_read_a_minute_on(tmp_path: Path, plain_slapd: Slapd,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``modifyTimestamp`` polling (one-second steps), a bulk change stamps many
    entries with the same second, more than the token keeps (made 1 here): once a read
    began a minute after the read that first saw that second, the next reads ask for the
    entries stamped after it, so those entries are not read again at every run; a change
    made after that is applied."""
    clock = _polling_clock(monkeypatch, 1)
    subtree = _subtree(plain_slapd, "second")
    project = _project(tmp_path, plain_slapd, subtree)
    assert _live(project).state == "SUCCESS"
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y%m%d%H%M%SZ")
    tamper(project, SOURCE, attribute="modifyTimestamp", since=since)
    made = 0
    while made == 0 or _newest_second(plain_slapd, subtree) < 2:  # a bulk change's last second holds several
        plain_slapd.add_ldif("".join(_person(f"s{made + i:03}", subtree) for i in range(30)))
        made += 30
    first = _live(project)
    assert first.state == "SUCCESS" and first.method == "modifyTimestamp"
    clock[0] += 61
    assert _live(project).state == "SUCCESS"  # a minute on: read once more, then after the mark
    quiet = _live(project)
    assert quiet.changes == 0 and [r["counts"] for r in quiet.runs] in ([], [{}])
    token = json.loads(_state(project).token)
    assert token.get("after") is True and token["since"] == token["mark"]["stamp"]
    while dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%SZ") <= token["since"]:
        time.sleep(0.05)  # a later change has a later second (the real minute this clock skipped)
    plain_slapd.add_ldif(_described(subtree, s001="after"))
    assert [r["counts"] for r in _live(project).runs] == [{"updated": 1}]
    assert _users(project)["s001"]["description"] == "after"


def test_polling_takes_an_entry_deleted_and_added_again_at_once(tmp_path: Path, plain_slapd: Slapd) -> None:
    """Polling sees no delete: an entry deleted and added again at its DN (a new entryUUID)
    correlates to the user still linked to the old entry. That entry is gone, so its
    deletion event is applied first (the sample's SOURCE_MISSING: DELETE, as the recon's
    target phase would), and the new entry is created and linked in the same run, nothing
    failed or kept for a retry; the recon that follows finds nothing to change."""
    subtree = _subtree(plain_slapd, "again")
    project = _project(tmp_path, plain_slapd, subtree)
    _scarter_made_again(project, plain_slapd, subtree)
    changes = recon_summary(project, FORWARD)["changes"]
    assert {k: v for k, v in changes.items() if v and k != "unchanged"} == {}, changes


def test_a_sync_provider_gone_is_answered_by_a_full_recon(tmp_path: Path, slapd: Slapd, plain_slapd: Slapd) -> None:
    """A syncrepl token sent to a server with no sync provider (the overlay removed, or a
    replica without one took over) is a token that can no longer be honoured: logged at
    warning and answered by a full recon, which stores a polling token; not a run that
    fails as if the server were down, every time, until someone resets the token."""
    subtree = _subtree(slapd, "gone")
    project = _project(tmp_path, slapd, subtree)
    assert _live(project).state == "SUCCESS"
    assert json.loads(_state(project).token)["kind"] == "syncrepl"
    _subtree(plain_slapd, "gone")
    plain_slapd.add_ldif(_person("alice", subtree) + _person("bob", subtree, "bob@example.org"))
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    settings = json.loads(prov.read_text())
    settings["configurationProperties"].update(port=plain_slapd.port, credentials=plain_slapd.admin_password)
    prov.write_text(json.dumps(settings))
    live_after_expiry(project, SOURCE, "no sync provider")
    assert json.loads(_state(project).token)["kind"] == "poll"
    users = _users(project)
    assert set(users) == {"alice", "bob"} and users["bob"]["mail"] == "bob@example.org"


def test_dry_run_writes_nothing_and_keeps_the_token(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A dry run assesses the changes (its run says what it would do) but writes no
    object, no link and no token: the next real run applies the same changes."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    token = _state(project).token
    _changes(slapd, ldap_subtree)
    dry = _live(project, dry_run=True)
    assert dry.state == "SUCCESS" and dry.changes == 3
    assert dry.runs[0]["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    assert set(_users(project)) == {"bjensen", "scarter"}
    assert _state(project).token == token
    audit = RunStore(Store.open(load_project(project).settings.store_url())).audit_entries(dry.runs[0]["id"])
    assert audit and {a["status"] for a in audit} == {"DRY_RUN"}
    real = _live(project)
    assert real.changes == 3 and set(_users(project)) == {"bjensen", "newbie"}


def test_own_writes_read_back_are_not_echoed(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Ping-pong: the LDAP-to-store mapping here marks descriptions (a transform the reverse
    mapping does not undo). A store change pushed to LDAP by implicit sync and read back
    by liveSync is recognized as idsync's own write and skipped, so the store keeps its
    value; a change made in LDAP by someone else is still applied."""
    project = _project(tmp_path, slapd, ldap_subtree)
    sync = project / "conf" / "sync.json"
    conf = json.loads(sync.read_text())
    forward = next(m for m in conf["mappings"] if m["name"] == FORWARD)
    rule = next(p for p in forward["properties"] if p["target"] == "description")
    rule["transform"] = {"type": "text/javascript", "source": "source + ' (from ldap)'"}
    sync.write_text(json.dumps(conf))
    assert _live(project).state == "SUCCESS"
    user = _users(project)["bjensen"]
    patched = idsync(project, "managed", "patch", "user", user["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/description", "value": "set in the store"}]))
    assert patched.returncode == 0, patched.stderr
    dn = f"uid=bjensen,{ldap_subtree}"
    assert (ldap_entry(slapd, dn) or {})["description"] == ["set in the store"]
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 1
    (run,) = done.runs
    assert run["echoes"] == 1 and run["counts"] == {}
    assert _users(project)["bjensen"]["description"] == "set in the store"
    assert _users(project)["bjensen"]["_rev"] == json.loads(patched.stdout)["_rev"]

    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: description\ndescription: set in ldap\n")
    done = _live(project)
    assert done.runs[0]["echoes"] == 0
    assert _users(project)["bjensen"]["description"] == "set in ldap (from ldap)"


def test_a_value_the_reverse_mapping_would_not_write_is_not_an_echo(tmp_path: Path, slapd: Slapd,
                                                                   ldap_subtree: str) -> None:
    """The sample's store-to-LDAP ``description`` is written only when the store has one
    (``"condition": "!!object.description"``). A description removed in LDAP leaves the
    store without one; one added in LDAP afterwards is not what idsync would write (it
    would write none), so it is applied, not skipped as an echo. An attribute written only
    at create (``"!oldTarget"``) and removed in LDAP is removed from the store alike."""
    project = _project(tmp_path, slapd, ldap_subtree)
    sync = project / "conf" / "sync.json"
    conf = json.loads(sync.read_text())
    reverse = next(m for m in conf["mappings"] if m["name"] == REVERSE)
    rule = next(p for p in reverse["properties"] if p["target"] == "telephoneNumber")
    rule["condition"] = {"type": "text/javascript", "source": "!oldTarget"}
    sync.write_text(json.dumps(conf))
    assert _live(project).state == "SUCCESS"
    dn = f"uid=bjensen,{ldap_subtree}"

    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\ndelete: description\n")
    done = _live(project)
    assert done.runs[0]["counts"] == {"updated": 1} and done.runs[0]["echoes"] == 0
    assert _users(project)["bjensen"].get("description") is None

    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nadd: description\ndescription: new description in LDAP\n")
    done = _live(project)
    assert done.runs[0]["counts"] == {"updated": 1} and done.runs[0]["echoes"] == 0
    assert _users(project)["bjensen"]["description"] == "new description in LDAP"

    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\ndelete: telephoneNumber\n")
    done = _live(project)
    assert done.runs[0]["counts"] == {"updated": 1} and done.runs[0]["echoes"] == 0
    assert _users(project)["bjensen"].get("telephoneNumber") is None

    # What the store holds already, read back, is still skipped: another attribute's
    # change pushed from the store, the description and telephone number as they are.
    user = _users(project)["bjensen"]
    patched = idsync(project, "managed", "patch", "user", user["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/mail", "value": "b@example.org"}]))
    assert patched.returncode == 0, patched.stderr
    assert (ldap_entry(slapd, dn) or {})["mail"] == ["b@example.org"]
    done = _live(project)
    assert done.changes == 1 and done.runs[0]["echoes"] == 1 and done.runs[0]["counts"] == {}
    assert _users(project)["bjensen"]["_rev"] == json.loads(patched.stdout)["_rev"]


def test_a_change_only_on_update_reads_runs_it(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """As OpenIDM's historicalaccountlinking records an account's state in its LDAP-to-store
    mapping's ``onUpdate`` (from an attribute no property rule maps), a change of such an
    attribute reaches the hook: liveSync does not take it for idsync's own write read back
    (the rules' attributes are all as the store holds them), and the hook runs although the
    rules project nothing new, as PingIDM runs ``onUpdate`` on every UPDATE; what it sets is
    written. A recon runs it alike."""
    project = _project(tmp_path, slapd, ldap_subtree)
    sync = project / "conf" / "sync.json"
    conf = json.loads(sync.read_text())
    forward = next(m for m in conf["mappings"] if m["name"] == FORWARD)
    forward["onUpdate"] = {"type": "text/javascript", "source":
                           "target.accountStatus = String(source.employeeType) === 'disabled' ? 'inactive' : 'active';"}
    forward["defaultSourceFields"].append("employeeType")
    sync.write_text(json.dumps(conf))
    assert _live(project).state == "SUCCESS"
    dn = f"uid=bjensen,{ldap_subtree}"

    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n")
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 1, done.message
    assert done.runs[0]["echoes"] == 0 and done.runs[0]["counts"] == {"updated": 1}, done.runs
    assert _users(project)["bjensen"]["accountStatus"] == "inactive"

    slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: staff\n")
    summary = recon_summary(project, FORWARD)
    assert summary["changes"]["updated"] == 1, summary
    assert _users(project)["bjensen"]["accountStatus"] == "active"
    assert recon_summary(project, FORWARD)["changes"].get("updated", 0) == 0


def test_a_change_with_nothing_new_is_skipped_without_calling_it_idsyncs(tmp_path: Path, slapd: Slapd,
                                                                          ldap_subtree: str) -> None:
    """A move to another OU (no attribute the mapping reads) and a change a recon applied
    already hold what the linked user holds: skipped, and ``idsync livesync`` says so
    without calling them idsync's own writes."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    before = _users(project)["bjensen"]
    slapd.add_ldif(f"dn: ou=moved,{ldap_subtree}\nchangetype: add\nobjectClass: organizationalUnit\nou: moved\n\n"
                   f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modrdn\nnewrdn: uid=bjensen\ndeleteoldrdn: 1\n"
                   f"newsuperior: ou=moved,{ldap_subtree}\n")
    moved = idsync(project, "livesync", SOURCE)
    assert moved.returncode == 0, moved.stderr
    assert f"{FORWARD}: liveSync run" in moved.stdout
    assert "nothing to write, 1 change(s) skipped: nothing new for the linked object" in moved.stdout
    assert "own write" not in moved.stdout
    assert _users(project)["bjensen"]["_rev"] == before["_rev"]

    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: sam@example.org\n")
    assert recon_summary(project, FORWARD)["changes"]["updated"] == 1
    applied = idsync(project, "livesync", SOURCE)
    assert applied.returncode == 0, applied.stderr
    assert "1 change(s) skipped: nothing new for the linked object" in applied.stdout
    assert _users(project)["scarter"]["mail"] == "sam@example.org"


def test_command_line_status_and_status_file(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``idsync livesync SOURCE`` runs as the engine does (first a full recon, then only the
    changes, --dry-run writing nothing and not counted); ``idsync status`` lists the liveSync runs beside
    the recons and prints the source's counts; the status file carries them too."""
    project = _project(tmp_path, slapd, ldap_subtree)
    first = idsync(project, "livesync", SOURCE, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["fullRecon"].startswith("no token yet")
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: cli@example.org\n")
    dry = idsync(project, "livesync", SOURCE, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 change(s) read by syncrepl" in dry.stdout and "updated 1" in dry.stdout
    assert _users(project)["bjensen"]["mail"] == "bjensen@example.com"
    done = idsync(project, "livesync", SOURCE)
    assert done.returncode == 0 and "updated 1" in done.stdout, done.stdout + done.stderr
    assert _users(project)["bjensen"]["mail"] == "cli@example.org"
    status = idsync(project, "status")
    assert status.returncode == 0, status.stderr
    # The dry run is listed as a run, but not counted: it read nothing for good.
    assert f"liveSync {SOURCE}: last run" in status.stdout and "2 runs, 1 changes, 0 failed, 1 full recons" \
        in status.stdout
    runs = json.loads(idsync(project, "status", "--json").stdout)
    assert [r["job"] for r in runs].count("liveSync") == 2
    doc = json.loads((project / "state" / "status.json").read_text())
    assert doc["liveSync"][SOURCE]["runs"] == 2 and doc["liveSync"][SOURCE]["hasToken"]
    assert "token" not in doc["liveSync"][SOURCE]

    unknown = idsync(project, "livesync", "system/ldap/nothing")
    assert unknown.returncode == os.EX_CONFIG and "no mapping has system/ldap/nothing" in unknown.stderr
    reset = idsync(project, "livesync", SOURCE, "--reset", "--json")
    assert reset.returncode == 0 and json.loads(reset.stdout)["fullRecon"].startswith("no token yet")


def test_api_action_and_metrics(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``POST system/ldap/account?_action=liveSync`` runs liveSync and answers its outcome;
    /metrics counts the source's runs and changes; an unknown action, or a source no
    mapping reads, is a 400."""
    from api_server import ADMIN, running

    project = _project(tmp_path, slapd, ldap_subtree)
    with running(project) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}/openidm", headers=ADMIN) as api:
        first = api.post("/system/ldap/account", params={"_action": "liveSync"})
        assert first.status_code == 200, first.text
        assert first.json()["state"] == "SUCCESS" and first.json()["fullRecon"]
        _changes(slapd, ldap_subtree)
        second = api.post("/system/ldap/account", params={"_action": "liveSync"}).json()
        assert second["changes"] == 3 and second["method"] == "syncrepl"
        assert second["runs"][0]["counts"] == {"created": 1, "updated": 1, "deleted": 1}
        assert api.post("/system/ldap/account", params={"_action": "sync"}).status_code == 400
        assert api.post("/system/ldap/nothing", params={"_action": "liveSync"}).status_code == 400
        # PingIDM's other form: the source as a parameter of system's own action.
        slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b3@example.org\n")
        third = api.post("/system", params={"_action": "liveSync", "source": SOURCE})
        assert third.status_code == 200 and third.json()["changes"] == 1, third.text
        assert api.post("/system", params={"_action": "liveSync"}).status_code == 400
        assert api.post("/system", params={"_action": "liveSync", "source": "system/ldap/nothing"}).status_code == 400
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=ADMIN).text
    assert f'idsync_livesync_runs_total{{source="{SOURCE}"}} 3.0' in metrics
    assert f'idsync_livesync_changes_total{{source="{SOURCE}"}} 4.0' in metrics
    assert f'idsync_livesync_full_recons_total{{source="{SOURCE}"}} 1.0' in metrics


def test_api_livesync_of_a_whole_system(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``POST system/ldap?_action=liveSync`` (PingIDM's ``__ALL__``: no object type) runs
    liveSync of each object type of the system a mapping reads, accounts before groups as
    the provisioner declares them, and answers each outcome and their sum; so do
    ``system?_action=liveSync&source=system/ldap`` and ``system/ldap/__ALL__``. A system no
    mapping reads is a 400, an unknown one a 404."""
    from api_server import ADMIN, running

    project = _project(tmp_path, slapd, ldap_subtree)
    conf = project / "conf"
    spare = json.loads((conf / "provisioner.openicf-ldap.json").read_text())
    (conf / "provisioner.openicf-spare.json").write_text(json.dumps({**spare, "name": "spare"}))
    with running(project) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}/openidm", headers=ADMIN) as api:
        first = api.post("/system/ldap", params={"_action": "liveSync"})
        assert first.status_code == 200, first.text
        answer = first.json()
        assert (answer["source"], answer["state"]) == ("system/ldap/__ALL__", "SUCCESS"), answer
        assert [(o["source"], o["state"], bool(o["fullRecon"])) for o in answer["sources"]] == [
            (SOURCE, "SUCCESS", True), ("system/ldap/group", "SUCCESS", True)]
        slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: all@example.org\n\n"
                       f"dn: cn=openidm,{ldap_subtree}\nchangetype: modify\nreplace: description\n"
                       "description: every type\n")
        second = api.post("/system", params={"_action": "liveSync", "source": "system/ldap"}).json()
        assert [(o["source"], o["method"]) for o in second["sources"]] == [(SOURCE, "syncrepl"),
                                                                           ("system/ldap/group", "syncrepl")]
        assert second["changes"] == sum(o["changes"] for o in second["sources"]) > 0, second
        assert second["state"] == "SUCCESS", second
        third = api.post("/system/ldap/__ALL__", params={"_action": "liveSync"}).json()
        assert third["changes"] == 0 and len(third["sources"]) == 2, third
        role = api.get("/managed/role", params={"_queryFilter": 'name eq "openidm"'}).json()["result"]
        assert [r["description"] for r in role] == ["every type"]
        assert _users(project)["bjensen"]["mail"] == "all@example.org"
        assert api.post("/system/nothing", params={"_action": "liveSync"}).status_code == 404
        unread = api.post("/system/spare", params={"_action": "liveSync"})
        assert unread.status_code == 400 and "system/spare" in unread.json()["message"], unread.text


def test_api_livesync_answers_as_the_description_says(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """openapi.json describes the liveSync actions the API serves: of a system's object
    type (``system/ldap/account``), of a whole system (``system/ldap``, ``system/ldap/__ALL__``,
    ``system?source=system/ldap``), with ``liveSync`` among the ``_action`` values; their
    answers, and a 409's, conform to the description."""
    import schemathesis
    from api_server import ADMIN, running
    from idsync.store.locks import LIVESYNC

    project = _project(tmp_path, slapd, ldap_subtree)
    with running(project) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}/openidm", headers=ADMIN) as api:
        raw = api.get("/openapi.json").json()
        described = schemathesis.openapi.from_dict(raw)
        paths = {"/openidm/system": "", "/openidm/system/{system}": "/ldap",
                 "/openidm/system/{system}/{type}": "/ldap/account"}
        for path in paths:
            action = next(p for p in raw["paths"][path]["post"]["parameters"] if p["name"] == "_action")
            assert "liveSync" in action["schema"]["enum"], path
        answers = [(path, api.post(f"/system{tail}", params={"_action": "liveSync"}
                                   | ({"source": "system/ldap"} if not tail else {})))
                   for path, tail in paths.items()]
        answers.append(("/openidm/system/{system}/{type}", api.post("/system/ldap/__ALL__",
                                                                     params={"_action": "liveSync"})))
        RunStore(Store.open(load_project(project).settings.store_url())).acquire(f"{LIVESYNC}{SOURCE}", "elsewhere:1")
        answers.append(("/openidm/system/{system}", api.post("/system/ldap", params={"_action": "liveSync"})))
    assert [a.status_code for _, a in answers] == [200, 200, 200, 200, 409], [a.text for _, a in answers]
    assert [len(a.json().get("sources", ())) for _, a in answers[:4]] == [2, 2, 0, 2]
    for path, answer in answers:
        described[path]["POST"].validate_response(answer)


def test_api_livesync_of_a_whole_system_tells_what_ran_before_a_409(tmp_path: Path, slapd: Slapd,
                                                                     ldap_subtree: str) -> None:
    """A whole system's liveSync (``system/ldap``) meeting an object type whose liveSync
    already runs (its lock held by another process) answers 409 with the types before it
    run: their outcomes in the error's ``detail`` (``sources``, as the answer holds them,
    and their sum), the types not run in ``detail.notRun``, and both named in the message."""
    from api_server import ADMIN, running
    from idsync.store.locks import LIVESYNC

    project = _project(tmp_path, slapd, ldap_subtree)
    RunStore(Store.open(load_project(project).settings.store_url())).acquire(f"{LIVESYNC}system/ldap/group",
                                                                               "elsewhere:1")
    with running(project) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}/openidm", headers=ADMIN) as api:
        answer = api.post("/system/ldap", params={"_action": "liveSync"})
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert (body["code"], body["reason"]) == (409, "Conflict")
    assert f"ran before it: {SOURCE}" in body["message"] and "not run: system/ldap/group" in body["message"]
    detail = body["detail"]
    assert (detail["source"], detail["state"], detail["notRun"]) == ("system/ldap/__ALL__", "SUCCESS",
                                                                     ["system/ldap/group"])
    (account,) = detail["sources"]
    assert account["source"] == SOURCE and account["state"] == "SUCCESS" and account["fullRecon"], account
    assert detail["changes"] == account["changes"] and detail["duration"] == account["duration"]
    assert set(_users(project)) == {"bjensen", "scarter"}


def test_daemon_runs_a_livesync_job_every_second(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``idsync run`` with a jobs.d job ``livesync = SOURCE`` every second: a change in LDAP
    reaches the store within seconds; idle runs are counted but log nothing at info."""
    import signal
    import subprocess
    import time

    from samples import IDSYNC

    project = _project(tmp_path, slapd, ldap_subtree)
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "live.toml").write_text(f'schedule = "* * * * * ?"\nlivesync = "{SOURCE}"\n'
                                                  'misfire = "skip"\n')
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "IDSYNC_LOG__FORMAT": "json", "IDSYNC_LOG__LEVEL": "info"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (_state(project) and _state(project).token):
            time.sleep(0.2)
        assert _state(project).token, "the first liveSync did not store a token within 30 s"
        slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: daemon@example.org\n")
        changed = time.monotonic()
        while time.monotonic() < changed + 15 and _users(project)["scarter"].get("mail") != "daemon@example.org":
            time.sleep(0.1)
        assert _users(project)["scarter"]["mail"] == "daemon@example.org"
        time.sleep(3)  # some idle runs
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0
    state = _state(project)
    assert state.runs >= 4 and state.changes == 1 and state.failed == 0 and state.full_recons == 1
    events = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines() if line.startswith("{")]
    ends = [e for e in events if e.get("event") == "job.end" and e.get("job") == "live"]
    # The full recon, and the run that applied the change; on a loaded machine the SIGTERM
    # may also cancel a run in progress, which is logged (at warning) too.
    assert len([e for e in ends if e.get("state") != "CANCELED"]) == 2, ends
    assert all(e.get("event") != "job.start" for e in events)


def test_a_fire_finding_its_source_run_by_another_job_skips_it_and_goes_on(tmp_path: Path, slapd: Slapd,
                                                                          ldap_subtree: str) -> None:
    """Two jobs naming one source: a scheduled fire of one while the other's run of that
    source holds it skips that source (no failure, logged ``job.livesync_skipped`` at info,
    nothing lost: that run applies the changes) and runs the job's next source; run by hand
    (``idsync run-job``) it still fails as already running."""
    import uuid

    from idsync.config.jobs import load_jobs
    from idsync.daemon.runner import run_job
    from idsync.store.locks import LIVESYNC
    from idsync.store.runs import owner_id

    project = _project(tmp_path, slapd, ldap_subtree)
    assert _live(project).state == "SUCCESS"
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "both.toml").write_text(
        f'schedule = "*/5 * * * * ?"\nlivesync = ["{SOURCE}", "managed/user"]\n')
    loaded = load_project(project)
    job = load_jobs(project / "jobs.d")[0]["both"]
    store = Store.open(loaded.settings.store_url())
    runs = RunStore(store)
    lock, holder = f"{LIVESYNC}{SOURCE}", f"{owner_id()}:{uuid.uuid4()}"
    runs.acquire(lock, holder)
    try:
        with structlog.testing.capture_logs() as logs:
            fired = run_job(loaded, store, job)
        by_hand = run_job(loaded, store, job, trigger="manual")
    finally:
        runs.release(lock, holder)
    assert fired.state == "SUCCESS", [m.to_json() for m in fired.mappings]
    skipped, managed = fired.mappings
    assert (skipped.mapping, skipped.state) == (SOURCE, "SUCCESS") and "already running" in (skipped.message or "")
    assert (managed.mapping, managed.state) == ("managed/user", "SUCCESS"), managed
    assert any(e["event"] == "job.livesync_skipped" and e["log_level"] == "info" for e in logs)
    assert by_hand.state == "FAILED" and "already running" in (by_hand.message or "")


def test_a_mapping_takes_only_the_changes_its_source_query_takes(tmp_path: Path, slapd: Slapd,
                                                                  ldap_subtree: str) -> None:
    """A mapping with a native sourceQuery applies the changed entries that query matches
    (the directory is asked, narrowed to the changed ids), and, as its recon does, the
    linked ones it leaves out: the recon meets those in its target phase, reads them by
    id and updates their users. An entry outside the query that nothing links is left
    alone, as the recon leaves it; the recon that follows finds nothing to change."""
    project = _project(tmp_path, slapd, ldap_subtree)
    sync = project / "conf" / "sync.json"
    conf = json.loads(sync.read_text())
    next(m for m in conf["mappings"] if m["name"] == FORWARD)["sourceQuery"] = {
        "nativeQuery": "(!(description=outside*))"}
    sync.write_text(json.dumps(conf))
    assert _live(project).state == "SUCCESS"
    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: modify\nreplace: description\n"
                   "description: outside the mapping\n-\nreplace: mail\nmail: moved@example.org\n\n"
                   f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: taken@example.org\n\n"
                   + _person("olga", ldap_subtree).replace("mail: ", "description: outside too\nmail: "))
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 3
    users = _users(project)
    assert users["bjensen"]["mail"] == "taken@example.org"
    assert users["scarter"]["mail"] == "moved@example.org"
    assert "olga" not in users
    changes = recon_summary(project, FORWARD)["changes"]
    assert {k: v for k, v in changes.items() if v and k != "unchanged"} == {}, changes


def test_max_deletes_stops_the_run_before_the_batch_and_keeps_the_token(tmp_path: Path, slapd: Slapd,
                                                                         ldap_subtree: str) -> None:
    """The sample's maxDeletes "10%" of three users allows one delete: a batch deleting two
    fails naming the limit, writes nothing of the batch (the modify in it waits too) and
    keeps the token, so once the limit is raised the next run applies the same changes."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    slapd.add_ldif(_person("third", ldap_subtree))
    assert _live(project).state == "SUCCESS"
    token = _state(project).token
    _changes(slapd, ldap_subtree)
    slapd.add_ldif(f"dn: uid=third,{ldap_subtree}\nchangetype: delete\n\n")
    refused = _live(project)
    # What the share allows is shown: 10% of a target of three users is one delete.
    assert refused.state == "FAILED" and "would delete 2 target objects in one liveSync run, more than maxDeletes " \
        "(10% of the target, which holds 3 objects)" in (refused.message or ""), refused.message
    assert _state(project).token == token
    assert set(_users(project)) == {"bjensen", "scarter", "third"}
    assert _users(project)["bjensen"]["mail"] == "bjensen@example.com"
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": "70%"'))
    done = _live(project)
    assert done.state == "SUCCESS" and set(_users(project)) == {"bjensen", "newbie"}


def test_a_share_of_a_small_target_lets_one_delete_through(tmp_path: Path, slapd: Slapd,
                                                           ldap_subtree: str) -> None:
    """"10%" of two users rounds down to no delete at all, which stopped every liveSync
    run at the directory's first delete for good: a share allows one delete of a target
    that it does not empty, so the delete and the rest of the batch are applied."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    assert _live(project).state == "SUCCESS"
    _changes(slapd, ldap_subtree)
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    assert set(_users(project)) == {"bjensen", "newbie"}
    assert _users(project)["bjensen"]["mail"] == "barbara@example.org"


@pytest.mark.postgresql
def test_a_split_full_recon_stores_the_token_taken_before_its_partitions(tmp_path: Path, slapd: Slapd,
                                                                          ldap_subtree: str) -> None:
    """In cluster mode the full recon of a first liveSync is split like a recon job's (two
    entryUUID ranges, open to another node's helper); the token is the position
    taken before the partitions start, so a change made once they are under way comes with
    the next run, and the token is stored only after every partition ended."""
    from idsync.sync.partitions import Splitter
    from idsync.sync.recon import help_partitions

    project = _project(tmp_path, slapd, ldap_subtree, store_url("postgresql", tmp_path))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    helpers: list[threading.Thread] = []

    def spread(run_id: str, count: int) -> None:
        # The ranges are cut and about to be read: a change now is after the token.
        slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\n"
                       "mail: during@example.org\n\n")
        for _ in range(count):
            helper = threading.Thread(target=help_partitions,
                                      args=(loaded, store, run_id, "n1", threading.Event()))
            helper.start()
            helpers.append(helper)

    splitter = Splitter(partitions=lambda: 2, min_size=1, spread=spread, node="n0")
    first = run_livesync(loaded, store, SOURCE, LiveSyncOptions(splitter=splitter, node="n0"))
    for helper in helpers:
        helper.join(30)
    assert first.state == "SUCCESS", first.message
    (recon,) = first.runs
    parts = RunStore(store).get(recon["id"])["summary"]["partitions"]
    assert len(parts) == 2 and {p["state"] for p in parts} == {"SUCCESS"}
    assert set(_users(project)) == {"bjensen", "scarter"}
    assert _state(project).token is not None
    after = _live(project)
    assert after.state == "SUCCESS" and after.full_recon is None
    assert after.changes >= 1  # the change made during the partitions, read from the token
    assert _users(project)["bjensen"]["mail"] == "during@example.org"


def test_changes_into_the_store_go_on_to_the_types_other_mappings(tmp_path: Path, slapd: Slapd,
                                                                   ldap_subtree: str) -> None:
    """As in OpenIDM's sample6 (Active Directory -> managed user -> OpenDJ by liveSync): a
    change liveSync writes into the store is pushed on at once through the managed type's
    other mappings (here managed/user -> managed/badge), as implicit sync pushes a change
    made through the API; never back to the directory it came from (the sample's reverse
    mapping records no push). A delete goes on too."""
    project = _project(tmp_path, slapd, ldap_subtree)
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    managed["objects"].append({"name": "badge", "schema": {"properties": {
        "holder": {"type": "string", "searchable": True}, "mail": {"type": "string"}}}})
    managed_file.write_text(json.dumps(managed))
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"].append({"name": "managedUser_badge", "source": "managed/user", "target": "managed/badge",
                             "properties": [{"source": "userName", "target": "holder"},
                                            {"source": "mail", "target": "mail"}],
                             "policies": [{"situation": "ABSENT", "action": "CREATE"},
                                          {"situation": "CONFIRMED", "action": "UPDATE"},
                                          {"situation": "SOURCE_MISSING", "action": "DELETE"}]})
    sync_file.write_text(json.dumps(sync))
    first = _live(project)  # the full recon: the store's users, carried on to badges
    assert first.state == "SUCCESS"
    assert [(r["mapping"], r["state"], r["counts"]) for r in first.onward] == [
        ("managedUser_badge", "SUCCESS", {"created": 2})], first.onward
    assert idsync(project, "recon", "managedUser_badge").returncode == 0  # nothing left to do

    def badges() -> dict[str, str]:
        found = json.loads(idsync(project, "managed", "query", "badge").stdout)
        return {b["holder"]: b["mail"] for b in found}

    assert badges() == {"bjensen": "bjensen@example.com", "scarter": "scarter@example.com"}
    _changes(slapd, ldap_subtree)  # bjensen's mail changed, newbie added, scarter deleted
    done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 3, done
    assert badges() == {"bjensen": "barbara@example.org", "newbie": "newbie@example.com"}
    store = Store.open(load_project(project).settings.store_url())
    try:
        pushes = [r for r in RunStore(store).recent(50) if r["job"] == "implicit"]
    finally:
        store.close()
    assert {r["mapping"] for r in pushes} == {"managedUser_badge"}  # none back to LDAP
    # One run of the onward mapping per run carried on: the full recon's, then liveSync's batch.
    assert len(pushes) == 2 and pushes[0]["summary"]["changes"] == {**pushes[0]["summary"]["changes"],
                                                                    "created": 1, "updated": 1, "deleted": 1}
    # The liveSync result names the run that carried its writes on, as the recon's summary does.
    assert [(r["mapping"], r["id"], r["state"]) for r in done.onward] == [("managedUser_badge", pushes[0]["id"],
                                                                          "SUCCESS")]
    assert done.to_json()["onward"][0]["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    (own,) = done.runs  # the liveSync run of the mapping names them too, as a recon's summary does
    shown = idsync(project, "status", own["id"]).stdout
    assert f"carried on: managedUser_badge: run {pushes[0]['id'][:8]} SUCCESS" in shown, shown
    slapd.add_ldif(f"dn: uid=newbie,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: n@example.org\n\n")
    by_hand = idsync(project, "livesync", SOURCE)
    assert by_hand.returncode == 0, by_hand.stderr
    assert "managedUser_badge: carried on, run " in by_hand.stdout and "SUCCESS: updated 1" in by_hand.stdout, \
        by_hand.stdout
    assert badges()["newbie"] == "n@example.org"


def test_a_user_locked_flips_to_inactive_through_the_example_projects_mappings(tmp_path: Path, slapd: Slapd,
                                                                               ldap_subtree: str) -> None:
    """The example's active and inactive users' mappings share one link set and run no
    target phase: a user locked in the directory leaves the active mapping's sourceQuery
    for the inactive one's, and liveSync makes it inactive through the inactive mapping
    alone (the active one, whose recon would not meet it, leaves it), as their recons do;
    unlocked, it is active again."""
    slapd.add_ldif("".join(person(f"lk{i}", ldap_subtree) for i in range(12)))
    project = make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", job_mappings=True)
    assert live(project, SOURCE).state == "SUCCESS"
    assert managed_users(project)["lk4"]["accountStatus"] == "active"
    slapd.add_ldif(f"dn: uid=lk4,{ldap_subtree}\nchangetype: modify\nadd: pwdAccountLockedTime\n"
                   "pwdAccountLockedTime: 000001010000Z\n")
    assert live(project, SOURCE).state == "SUCCESS"
    assert managed_users(project)["lk4"]["accountStatus"] == "inactive"
    slapd.add_ldif(f"dn: uid=lk4,{ldap_subtree}\nchangetype: modify\ndelete: pwdAccountLockedTime\n")
    assert live(project, SOURCE).state == "SUCCESS"
    assert managed_users(project)["lk4"]["accountStatus"] == "active"


def test_the_example_projects_three_mappings_of_one_source_take_a_delete(tmp_path: Path, slapd: Slapd,
                                                                         ldap_subtree: str) -> None:
    """The example holds the seed's two-way mapping and the active and inactive users' mappings,
    all reading ``system/ldap/account``: a user deleted in the directory is deleted by the first
    and leaves the others a link to nothing (``LINK_ONLY``), which they unlink, not fail on."""
    slapd.add_ldif("".join(person(f"ex{i}", ldap_subtree) for i in range(12)))
    project = make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", job_mappings=True)
    assert live(project, SOURCE).state == "SUCCESS"
    slapd.add_ldif(f"dn: uid=ex3,{ldap_subtree}\nchangetype: delete\n\n")
    done = live(project, SOURCE)
    runs = {r["mapping"]: r for r in done.runs}
    assert (done.state, done.failed) == ("SUCCESS", 0), done
    assert runs["systemLdapAccounts_managedUser"]["counts"] == {"deleted": 1}
    assert runs["systemLdapActiveAccounts_managedUser"]["counts"] == {"unlinked": 1}
    assert all(r["state"] == "SUCCESS" for r in done.runs), done.runs
    assert "ex3" not in managed_users(project) and len(managed_users(project)) == 11
    assert live(project, SOURCE).failed == 0
