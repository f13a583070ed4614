"""liveSync of a managed type (``idsync livesync managed/user``, ``store/changes.py``):
store changes that implicit sync did not push are replayed through the mappings whose
source the type is, on the two-way LDAP sample against the suite's slapd; and the two
directions' liveSyncs, run in turn, never bounce a change between them. A bulk change
beyond what a token keeps, a quiet store's window, and tokens with and without a mark."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from dbs import BACKENDS, WITH_POSTGRESQL, store_url
from idsync.config.pingidm_schedules import load_schedules
from idsync.config.project import load_project
from idsync.resource import WriteOp
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.store.tables import managed_objects
from idsync_dev.slapd import Slapd
from livesync_env import FOREIGN_MARKS, live, live_after_expiry, managed_users, read_changes, set_token, stored_token
from sqlalchemy import select
from sync_tokens import token_state

from samples import FORWARD, REVERSE, idsync, ldap_entry, sample_project

LDAP = "system/ldap/account"
MANAGED = "managed/user"


def _project(tmp_path: Path, slapd: Slapd, subtree: str, url: str | None = None) -> Path:
    """The sample (on the store at ``url``; a new SQLite file by default), its "10%"
    maxDeletes made a count: a handful of test users is not a large directory."""
    project = sample_project(tmp_path, slapd, subtree, url or f"sqlite:///{tmp_path / 's.db'}")
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": 5'))
    return project


def _store_change(project: Path, *args: str) -> dict[str, Any]:
    """``idsync managed ... --no-sync``: a store change implicit sync does not push."""
    done = idsync(project, "managed", *args, "--no-sync")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def _counted(project: Path) -> int:
    """The changes counted over every liveSync run of the source (``idsync status``, the metrics)."""
    state = token_state(project, MANAGED)
    return state.changes if state is not None else 0


def _written(result: Any) -> dict[str, int]:
    """What the run's mapping runs wrote, summed (``unchanged`` left out)."""
    out: dict[str, int] = {}
    for run in result.runs:
        for k, v in run.get("counts", {}).items():
            if k != "unchanged":
                out[k] = out.get(k, 0) + v
    return out


def test_store_changes_replay_to_ldap_and_the_two_directions_converge(tmp_path: Path, slapd: Slapd,
                                                                      ldap_subtree: str) -> None:
    """The first managed liveSync reconciles managed/user in full and stores the store's
    position; an idle run reads nothing. A store update, create and delete made with
    implicit sync off reach LDAP at the next managed run (updated, created, deleted,
    the link of the deleted user gone). The LDAP liveSync then reads idsync's own writes
    back as echoes, and a change made in LDAP goes to the store and, replayed to LDAP,
    writes nothing there: no run of either direction writes twice."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert live(project, LDAP).state == "SUCCESS"
    first = live(project, MANAGED)
    assert first.state == "SUCCESS", first.message
    assert first.full_recon and "no token yet" in first.full_recon
    assert json.loads(stored_token(project, MANAGED) or "{}")["kind"] == "updated"
    idle = live(project, MANAGED)
    assert idle.state == "SUCCESS" and idle.changes == 0 and idle.runs == [] and idle.method == "updated"

    users = managed_users(project)
    _store_change(project, "patch", "user", users["bjensen"]["_id"], "--operations",
                  json.dumps([{"operation": "replace", "field": "/description", "value": "from the store"}]))
    made = _store_change(project, "create", "user", "--data", json.dumps(
        {"userName": "newbie", "givenName": "New", "sn": "Bie", "mail": "newbie@example.com"}))
    _store_change(project, "delete", "user", users["scarter"]["_id"])
    done = live(project, MANAGED)
    assert done.state == "SUCCESS", done.message
    assert done.changes == 3
    (run,) = done.runs
    assert run["mapping"] == REVERSE and run["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    assert (ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}") or {})["description"] == ["from the store"]
    assert ldap_entry(slapd, f"uid=newbie,{ldap_subtree}") is not None
    assert ldap_entry(slapd, f"uid=scarter,{ldap_subtree}") is None
    store = Store.open(load_project(project).settings.store_url())
    assert LinkSet(store, FORWARD).targets_of([users["scarter"]["_id"]], None) == {}
    assert live(project, MANAGED).changes == 0

    # The LDAP side reads those writes back: echoes or unchanged, the store is not written.
    revs = {name: u["_rev"] for name, u in managed_users(project).items()}
    back = live(project, LDAP)
    assert back.state == "SUCCESS", back.message
    assert _written(back) == {}
    assert {name: u["_rev"] for name, u in managed_users(project).items()} == revs
    assert managed_users(project)["newbie"]["_id"] == made["_id"]

    # A change made in LDAP: to the store, then replayed to LDAP with nothing to write.
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b@example.org\n")
    there = live(project, LDAP)
    assert _written(there) == {"updated": 1}
    assert managed_users(project)["bjensen"]["mail"] == "b@example.org"
    replayed = live(project, MANAGED)
    assert replayed.changes == 1 and _written(replayed) == {}
    quiet = live(project, LDAP)
    assert quiet.changes == 0 and live(project, MANAGED).changes == 0


def test_a_replayed_store_change_never_puts_back_what_ldap_changed_since(tmp_path: Path, slapd: Slapd,
                                                                        ldap_subtree: str) -> None:
    """The two liveSyncs side by side, LDAP changing while a store change waits for the
    managed run. A change read from LDAP into the store, and a store change implicit sync
    pushed, are in LDAP already: the managed run skips them (counted as echoes) instead of
    writing the user's whole projection to LDAP again, which would put back the telephone
    number LDAP changed since. The LDAP run then brings that change into the store, and
    both sides end with every change made on either. A store change implicit sync did not
    push is still replayed."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert live(project, LDAP).state == "SUCCESS"
    assert live(project, MANAGED).state == "SUCCESS"
    dn = f"uid=bjensen,{ldap_subtree}"

    def phone(number: str) -> None:
        slapd.add_ldif(f"dn: {dn}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: {number}\n")

    # An LDAP change read into the store, then another one before the managed run.
    phone("1-111")
    assert _written(live(project, LDAP)) == {"updated": 1}
    phone("2-222")
    replay = live(project, MANAGED)
    assert replay.state == "SUCCESS" and replay.changes == 1, replay.message
    (run,) = replay.runs
    assert run["mapping"] == REVERSE and run["counts"] == {} and run["echoes"] == 1
    assert (ldap_entry(slapd, dn) or {})["telephonenumber"] == ["2-222"]
    assert _written(live(project, LDAP)) == {"updated": 1}
    assert managed_users(project)["bjensen"]["telephoneNumber"] == "2-222"

    # A store change pushed at once, then an LDAP change of another attribute.
    user = managed_users(project)["bjensen"]
    patched = idsync(project, "managed", "patch", "user", user["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/description", "value": "from the store"}]))
    assert patched.returncode == 0, patched.stderr
    phone("3-333")
    replay = live(project, MANAGED)
    assert replay.changes == 1 and _written(replay) == {} and replay.runs[0]["echoes"] == 1
    entry = ldap_entry(slapd, dn) or {}
    assert entry["telephonenumber"] == ["3-333"] and entry["description"] == ["from the store"]
    assert _written(live(project, LDAP)) == {"updated": 1}
    assert {k: managed_users(project)["bjensen"][k] for k in ("telephoneNumber", "description")} == {
        "telephoneNumber": "3-333", "description": "from the store"}
    assert live(project, MANAGED).changes == 1 and live(project, LDAP).changes == 0

    # A store change made with implicit sync off is not in LDAP: the managed run carries it.
    _store_change(project, "patch", "user", user["_id"], "--operations",
                  json.dumps([{"operation": "replace", "field": "/mail", "value": "quiet@example.org"}]))
    assert _written(live(project, MANAGED)) == {"updated": 1}
    assert (ldap_entry(slapd, dn) or {})["mail"] == ["quiet@example.org"]


def test_command_line_job_and_expired_token(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``idsync livesync managed/user`` runs as the engine does; a PingIDM schedule with
    ``"source": "managed/user"`` is a liveSync job; a token newer than anything the store
    holds (a store restored from an older backup) is answered by a full recon; a source
    whose every mapping has enableSync false (PingIDM's switch for implicit sync and
    liveSync) is refused before anything runs (exit 78), naming enableSync."""
    project = _project(tmp_path, slapd, ldap_subtree)
    assert live(project, LDAP).state == "SUCCESS"
    first = idsync(project, "livesync", MANAGED, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["fullRecon"].startswith("no token yet")

    (project / "conf" / "schedule-managed-live.json").write_text(json.dumps({
        "enabled": True, "type": "cron", "schedule": "*/5 * * * * ?", "invokeService": "provisioner",
        "invokeContext": {"action": "liveSync", "source": MANAGED}}))
    jobs, errors = load_schedules(project / "conf")
    assert errors == [] and jobs["managed-live"].livesync == (MANAGED,)

    token = json.loads(stored_token(project, MANAGED) or "{}")
    set_token(project, MANAGED, json.dumps({**token, "since": "2099-01-01T00:00:00.000000Z"}))
    again = live(project, MANAGED)
    assert again.state == "SUCCESS" and again.full_recon and "restored from an older backup" in again.full_recon
    assert "2099" not in (stored_token(project, MANAGED) or "")

    sync = project / "conf" / "sync.json"
    conf = json.loads(sync.read_text())
    for m in conf["mappings"]:
        if m["source"] == MANAGED:
            m["enableSync"] = False
    sync.write_text(json.dumps(conf))
    off = idsync(project, "livesync", MANAGED)
    assert off.returncode == 78 and "enableSync false" in off.stderr


@pytest.mark.parametrize("kind", BACKENDS)
def test_store_reader_on_every_store(tmp_path: Path, slapd: Slapd, ldap_subtree: str, kind: str) -> None:
    """The managed change reader itself, on SQLite, PostgreSQL and MariaDB (whose stamps
    are whole seconds): no change read after the position is taken; objects written
    since are read once each, in batches of the page size, the last batch carrying the
    token; a second read of that token reads nothing; the token keeps no secret."""
    project = sample_project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path), load_data=False)
    loaded = load_project(project)
    resources = Resources(loaded, Store.open(loaded.settings.store_url()))
    users = resources.open(MANAGED)
    assert isinstance(users, ManagedResource)
    old = users.create({"userName": "old", "sn": "Old", "password": "Secret-Pass-1"})
    token = users.latest_token()
    feed = users.read_changes(token, None, 2)
    assert [b.changes for b in feed.batches] == [[]]
    made = [users.create({"userName": f"u{i}", "sn": "U"}) for i in range(3)]
    users.update(old["_id"], {"sn": "Changed"})
    feed = users.read_changes(token, ["userName", "sn"], 2)
    batches = list(feed.batches)
    assert [len(b.changes) for b in batches] == [2, 2, 0] and batches[-1].token is not None
    assert [b.token is None for b in batches] == [True, True, False]
    read = {c.id: c.obj for b in batches for c in b.changes}
    assert set(read) == {old["_id"], *(m["_id"] for m in made)}
    assert read[old["_id"]] == {"_id": old["_id"], "_rev": read[old["_id"]]["_rev"], "userName": "old", "sn": "Changed"}
    again = batches[-1].token
    assert [b.changes for b in users.read_changes(again, None, 2).batches] == [[]]
    assert "Secret" not in again
    resources.close()


def _bulk(project: Path, names: list[str], *, one_write: bool = False) -> None:
    """Users created in the store, as an import with implicit sync off makes them: one at a
    time, or (``one_write``) in one batch, as a recon's page into the store is written."""
    loaded = load_project(project)
    resources = Resources(loaded, Store.open(loaded.settings.store_url()))
    users = resources.open(MANAGED)
    made = [{"userName": name, "givenName": name.title(), "sn": "Bulk", "mail": f"{name}@example.com"}
            for name in names]
    if one_write:
        assert all(r.ok for r in users.write_batch([WriteOp("create", values=values) for values in made]))
    for values in [] if one_write else made:
        users.create(values)
    resources.close()


def _newest(project: Path, count: int) -> set[str]:
    """The ids of the ``count`` managed users with the newest stamps."""
    store = Store.open(load_project(project).settings.store_url())
    mo = managed_objects
    try:
        with store.engine.connect() as conn:
            return set(conn.execute(select(mo.c.id).where(mo.c.object_type == "user")
                                    .order_by(mo.c.updated.desc(), mo.c.id.desc()).limit(count)).scalars())
    finally:
        store.close()


def _csns(slapd: Slapd, subtree: str, names: list[str]) -> dict[str, list[str] | None]:
    """The entryCSN of each user's LDAP entry: it moves with every write."""
    return {name: (ldap_entry(slapd, f"uid={name},{subtree}") or {}).get("entrycsn") for name in names}


def _describe(project: Path, user: dict[str, Any], value: str) -> None:
    _store_change(project, "patch", "user", user["_id"], "--operations",
                  json.dumps([{"operation": "replace", "field": "/description", "value": value}]))


def test_a_late_store_change_within_the_overlap_counts_and_an_object_read_again_does_not(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read asks again for the objects stamped within the overlap; those its token does
    not keep (made to keep one here: the newest) are changes only where the target does not
    hold them. A user changed a second time with a stamp within the overlap, before the
    newest one read (a write committed late, another node's clock), is such an object: the
    next run carries its change to LDAP and counts it, and only it; the user read again
    unchanged beside it is no change (not counted in the run nor in the source's
    ``changes``). The run after that, which reads both again, counts nothing and records no
    mapping run."""
    import idsync.store.changes as changes
    import idsync.store.objects as objects

    monkeypatch.setattr(changes, "_SEEN", 1, raising=False)
    project = _project(tmp_path, slapd, ldap_subtree)
    assert live(project, LDAP).state == "SUCCESS"
    assert live(project, MANAGED).state == "SUCCESS"
    users = managed_users(project)
    _describe(project, users["bjensen"], "once")
    _describe(project, users["scarter"], "once")
    _bulk(project, ["newbie"])
    first = live(project, MANAGED)
    assert first.state == "SUCCESS" and first.changes == 3 and _written(first) == {"created": 1, "updated": 2}
    token = json.loads(stored_token(project, MANAGED) or "{}")
    assert set(token["seen"]) == {managed_users(project)["newbie"]["_id"]}

    late = dt.datetime.fromisoformat(token["since"]) - dt.timedelta(milliseconds=1)
    with monkeypatch.context() as clock:
        clock.setattr(objects, "utcnow", lambda: late)  # the store's clock, as the write stamps it
        loaded = load_project(project)
        resources = Resources(loaded, Store.open(loaded.settings.store_url()))
        written = resources.open(MANAGED).write_batch(
            [WriteOp("update", id=users["bjensen"]["_id"], values={"description": "twice"})])
        resources.close()
    assert all(r.ok for r in written)
    second = live(project, MANAGED)
    assert second.state == "SUCCESS" and second.changes == 1 and _written(second) == {"updated": 1}, second.runs
    assert (ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}") or {})["description"] == ["twice"]
    before = _counted(project)
    quiet = live(project, MANAGED)
    assert quiet.state == "SUCCESS" and quiet.changes == 0 and quiet.runs == []
    assert _counted(project) == before


@pytest.mark.parametrize("kind", WITH_POSTGRESQL)
def test_a_bulk_store_change_keeps_the_token_bounded(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                     monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A bulk change in the store (users created with implicit sync off, more of them than a
    token keeps: ``_SEEN``, made 40 here) leaves a token of that many objects, those with
    the newest stamps, not one as large as the change. Nothing is missed or written twice:
    every user is created in LDAP once; the next run reads the ones the token dropped again
    and writes nothing (no LDAP entry modified), counts no change (in the run, nor in the
    source's ``changes``) and records no mapping run; a later change of one of them is
    carried and counted once, and the run after it counts nothing. The run that drops objects
    says so, once (``livesync.updated_seen_bounded``). On SQLite and PostgreSQL."""
    import idsync.store.changes as changes

    monkeypatch.setattr(changes, "_SEEN", 40, raising=False)
    project = _project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    assert live(project, LDAP).state == "SUCCESS"
    assert live(project, MANAGED).state == "SUCCESS"
    names = [f"bulk{i:03}" for i in range(100)]
    _bulk(project, names)

    with structlog.testing.capture_logs() as logs:
        done = live(project, MANAGED, page_size=7)
    (told,) = [e for e in logs if e["event"] == "livesync.updated_seen_bounded"]
    assert told["kept"] == 40 and told["read"] >= 100
    (run,) = done.runs
    assert done.state == "SUCCESS" and run["counts"] == {"created": 100}, done.runs
    runs = RunStore(Store.open(load_project(project).settings.store_url()))
    assert len(runs.audit_entries(run["id"])) == 100
    token = json.loads(stored_token(project, MANAGED) or "{}")
    assert set(token["seen"]) == _newest(project, 40)
    csns = _csns(slapd, ldap_subtree, names)
    assert all(csns.values())
    users = managed_users(project)

    before = _counted(project)
    again = live(project, MANAGED, page_size=7)
    assert again.state == "SUCCESS" and again.changes == 0 and again.runs == [], again.runs
    assert _counted(project) == before
    assert _csns(slapd, ldap_subtree, names) == csns
    assert managed_users(project) == users
    assert json.loads(stored_token(project, MANAGED) or "{}")["seen"] == token["seen"]

    dropped = next(name for name in names if users[name]["_id"] not in token["seen"])
    _describe(project, users[dropped], "later")
    later = live(project, MANAGED, page_size=7)
    assert later.changes == 1 and _written(later) == {"updated": 1}
    assert (ldap_entry(slapd, f"uid={dropped},{ldap_subtree}") or {})["description"] == ["later"]
    quiet = live(project, MANAGED, page_size=7)
    assert quiet.changes == 0 and quiet.runs == []


@pytest.mark.parametrize("kind", WITH_POSTGRESQL)
@pytest.mark.parametrize("one_write", [False, True])
def test_a_quiet_stores_last_changes_stop_being_read_an_overlap_on(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str, monkeypatch: pytest.MonkeyPatch, kind: str,
        one_write: bool) -> None:
    """A read asks again for the objects stamped within the overlap (30 seconds before the
    newest stamp), in case a write stamped there is committed late; once the store is
    quiet that is needed for an overlap only, not at every run until the next change. After
    a bulk change larger than the token keeps (made 40 here), the runs within the overlap
    read the dropped users again, and count no change; the first run that begins an overlap (this host's clock)
    after the read that saw the newest stamp moves the token's start to that stamp, and the
    run after it asks for the objects stamped after it: it reads and applies nothing. So
    too when the bulk change was written at once (as a recon writes a page into the
    store): every object has the newest stamp, more of them than the token keeps. A change
    made after that is still carried. On SQLite and PostgreSQL."""
    import idsync.stamps as stamps
    import idsync.store.changes as changes

    clock = [time.time()]
    monkeypatch.setattr(changes, "_SEEN", 40, raising=False)
    monkeypatch.setattr(stamps, "_now", lambda: clock[0])
    project = _project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    assert live(project, LDAP).state == "SUCCESS"
    assert live(project, MANAGED).state == "SUCCESS"
    _bulk(project, [f"q{i:03}" for i in range(100)], one_write=one_write)
    assert _written(live(project, MANAGED)) == {"created": 100}
    clock[0] += 15
    read = read_changes(project, MANAGED)  # within the overlap: the dropped users are read again
    assert len(read) >= 60 and all(c.reread for c in read)
    within = live(project, MANAGED)  # ... and are no change
    assert within.changes == 0 and within.runs == []
    clock[0] += 16
    again = live(project, MANAGED)  # an overlap after the bulk change's read: once more, then the mark
    assert again.changes == 0 and again.runs == []
    token = json.loads(stored_token(project, MANAGED) or "{}")
    assert token["start"] == token["mark"]["stamp"] == token["since"]
    assert len(token["seen"]) == (40 if one_write else 1)
    quiet = live(project, MANAGED)
    assert quiet.state == "SUCCESS" and quiet.changes == 0 and quiet.runs == []
    _describe(project, managed_users(project)["q005"], "after")
    assert _written(live(project, MANAGED)) == {"updated": 1}
    assert (ldap_entry(slapd, f"uid=q005,{ldap_subtree}") or {})["description"] == ["after"]


@pytest.mark.parametrize("kind", WITH_POSTGRESQL)
def test_a_store_token_without_a_mark_is_still_read(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                    kind: str) -> None:
    """A token written before tokens had a mark (the high-water mark and the objects seen
    only) is read from its high-water mark less the overlap: a store change made since is
    carried without a full recon, and the new token has a mark. On SQLite and PostgreSQL."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    assert live(project, LDAP).state == "SUCCESS"
    assert live(project, MANAGED).state == "SUCCESS"
    token = json.loads(stored_token(project, MANAGED) or "{}")
    set_token(project, MANAGED, json.dumps({k: v for k, v in token.items() if k not in ("mark", "start")}))
    _describe(project, managed_users(project)["bjensen"], "unmarked")
    done = live(project, MANAGED)
    assert done.full_recon is None and _written(done) == {"updated": 1}, done.message
    assert (ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}") or {})["description"] == ["unmarked"]
    assert "mark" in json.loads(stored_token(project, MANAGED) or "{}")


@pytest.mark.parametrize("kind", WITH_POSTGRESQL)
@pytest.mark.parametrize("token", FOREIGN_MARKS)
def test_a_store_token_with_a_mark_not_made_by_the_store_is_answered_by_a_full_recon(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str, kind: str, token: dict[str, Any]) -> None:
    """A token whose mark (the newest stamp and when it was first read) or start is not
    one the store writes (a stamp that is no date or after the token's high-water mark, a
    time that is no number) is expired like any token the store did not make: a full
    recon carries the change made since, and stores a fresh token. On SQLite and
    PostgreSQL."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    assert live(project, LDAP).state == "SUCCESS"
    assert live(project, MANAGED).state == "SUCCESS"
    set_token(project, MANAGED, json.dumps({**json.loads(stored_token(project, MANAGED) or "{}"), **token}))
    _describe(project, managed_users(project)["bjensen"], "expired")
    live_after_expiry(project, MANAGED, "not one the store makes")
    assert (ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}") or {})["description"] == ["expired"]
    assert live(project, MANAGED).full_recon is None
