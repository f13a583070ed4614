"""A mapping's onLink, onUnlink and onDelete hooks in every kind of run, with PingIDM's
variables, against a real store: OpenIDM's historicalaccountlinking sample keeps each
user's accounts with an onLink that writes through ``openidm``, whichever run links.

``staff_user`` (managed/staff -> managed/user) notes every hook call in managed/note:
which hook, the target's userName and the ``mappingConfig.target``, ``sourceId`` and
``targetId`` it was given."""

from __future__ import annotations

import json
from pathlib import Path

from api_server import ADMIN, serve
from store_projects import store_project

from samples import idsync

_NOTE = ("openidm.create('managed/note', null, {what: '%s', state: (target && target.userName) || '', "
         "message: mappingConfig.target + '|' + sourceId + '|' + targetId + '|' + situation});")
_JS = "text/javascript"
_POST = ("openidm.create('managed/note', null, {what: 'postAction', state: action, "
         "message: (reconId ? 'recon' : 'no recon') + '|' + situation + '|' + (target && target._id)});")


def _project(tmp_path: Path, gone: str) -> Path:
    mapping = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
               "properties": [{"source": "login", "target": "userName"}],
               "policies": [{"situation": "ABSENT", "action": "CREATE", "postAction": {"type": _JS, "source": _POST}},
                            {"situation": "CONFIRMED", "action": "UPDATE"},
                            {"situation": "SOURCE_MISSING", "action": gone}],
               **{hook: {"type": _JS, "source": _NOTE % hook} for hook in ("onLink", "onUnlink", "onDelete")}}
    return store_project(tmp_path, {
        "staff": {"login": {"type": "string", "searchable": True}},
        "user": {"userName": {"type": "string", "searchable": True}},
        "note": {k: {"type": "string"} for k in ("what", "state", "message")}}, [mapping])


def _notes(project: Path, what: str = "on") -> list[tuple[str, str, str]]:
    """The notes of the hooks whose name begins with ``what``."""
    found = json.loads(idsync(project, "managed", "query", "note").stdout)
    return sorted((n["what"], n["state"], n["message"]) for n in found if n["what"].startswith(what))


def _ids(project: Path, kind: str) -> dict[str, str]:
    key = "login" if kind == "staff" else "userName"
    return {o[key]: o["_id"] for o in json.loads(idsync(project, "managed", "query", kind).stdout)}


def _make(project: Path, login: str, *flags: str) -> None:
    made = idsync(project, "managed", "create", "staff", *flags, "--data", json.dumps({"login": login}))
    assert made.returncode == 0, made.stdout + made.stderr


def test_hooks_run_in_implicit_sync_a_recon_and_livesync(tmp_path: Path) -> None:
    """onLink runs once the link is made, given the target written (its userName) and
    PingIDM's mappingConfig, sourceId and targetId, and may write to the store: after an
    implicit sync's create, a recon's (its page committed first) and a liveSync's; so does
    the policy's postAction (reconId set in a recon only). onDelete runs before an
    implicit sync deletes the target of a deleted source, given the target, and onUnlink
    once it is deleted."""
    project = _project(tmp_path, "DELETE")
    _make(project, "ann")  # implicit sync
    staff, users = _ids(project, "staff"), _ids(project, "user")
    assert _notes(project) == [("onLink", "ann", f"managed/user|{staff['ann']}|{users['ann']}|ABSENT")]
    _make(project, "bob", "--no-sync")
    ran = idsync(project, "recon", "staff_user", "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout)["errorCount"] == 0, ran.stdout + ran.stderr
    assert [n[:2] for n in _notes(project)] == [("onLink", "ann"), ("onLink", "bob")]
    first = idsync(project, "livesync", "managed/staff")  # the first run reconciles; then the token
    assert first.returncode == 0, first.stdout + first.stderr
    _make(project, "cy", "--no-sync")
    live = idsync(project, "livesync", "managed/staff", "--json")
    assert live.returncode == 0 and json.loads(live.stdout)["runs"][0]["errors"] == 0, live.stdout
    assert [n[:2] for n in _notes(project)] == [("onLink", "ann"), ("onLink", "bob"), ("onLink", "cy")]
    users = _ids(project, "user")
    # The policy's postAction after each CREATE: an implicit sync's, a recon's, a liveSync's.
    assert _notes(project, "postAction") == sorted(
        ("postAction", "CREATE", f"{run}|ABSENT|{users[name]}")
        for name, run in (("ann", "no recon"), ("bob", "recon"), ("cy", "no recon")))

    users = _ids(project, "user")
    gone = idsync(project, "managed", "delete", "staff", _ids(project, "staff")["ann"])
    assert gone.returncode == 0, gone.stdout + gone.stderr
    deleted = [n for n in _notes(project) if n[0] == "onDelete"]
    assert deleted == [("onDelete", "ann", f"managed/user|{staff['ann']}|{users['ann']}|SOURCE_MISSING")]
    # PingIDM's DELETE falls through to its UNLINK: onUnlink too, once the target is deleted.
    unlinked = [n for n in _notes(project) if n[0] == "onUnlink"]
    assert unlinked == [("onUnlink", "ann", f"managed/user|{staff['ann']}|{users['ann']}|SOURCE_MISSING")]
    assert "ann" not in _ids(project, "user")


def test_on_unlink_runs_before_an_unlink(tmp_path: Path) -> None:
    """A deleted source whose policy unlinks: onUnlink runs, given the target, which stays."""
    project = _project(tmp_path, "UNLINK")
    _make(project, "ann")
    gone = idsync(project, "managed", "delete", "staff", _ids(project, "staff")["ann"])
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert [n[:2] for n in _notes(project)] == [("onLink", "ann"), ("onUnlink", "ann")]
    assert "ann" in _ids(project, "user")




def test_on_recon_runs_once_before_a_recon_reads_and_its_failure_fails_it(tmp_path: Path) -> None:
    """onRecon runs once when a recon starts, given context.recon (the run's id, the mapping)
    and mappingConfig, and may write through openidm; so it does for reconById, a recon of
    one object, as in PingIDM. One that throws fails the run before anything is read or
    changed: no user is made."""
    on_recon = ("openidm.create('managed/note', null, {what: 'onRecon', state: context.recon.mapping, "
                "message: context.recon.reconId + '|' + mappingConfig.source});")
    project = _project(tmp_path, "DELETE")
    sync = project / "conf" / "sync.json"
    config = json.loads(sync.read_text())
    config["mappings"][0]["onRecon"] = {"type": _JS, "source": on_recon}
    sync.write_text(json.dumps(config))
    _make(project, "alice", "--no-sync")
    _make(project, "bob", "--no-sync")
    assert idsync(project, "recon", "staff_user").returncode == 0
    (run,) = json.loads(idsync(project, "status", "--json", "--mapping", "staff_user").stdout)
    assert _notes(project, "onRecon") == [("onRecon", "staff_user", f"{run['_id']}|managed/staff")]
    assert set(_ids(project, "user")) == {"alice", "bob"}
    _make(project, "dave", "--no-sync")
    with serve(project) as api:
        by_id = api.post(f"/openidm/recon?_action=reconById&mapping=staff_user&id={_ids(project, 'staff')['dave']}",
                         headers=ADMIN)
    assert by_id.status_code == 200 and by_id.json()["state"] == "SUCCESS", by_id.text
    assert _notes(project, "onRecon") == sorted(("onRecon", "staff_user", f"{ran}|managed/staff")
                                                for ran in (run["_id"], by_id.json()["_id"]))
    assert set(_ids(project, "user")) == {"alice", "bob", "dave"}

    config["mappings"][0]["onRecon"] = {"type": _JS, "source": "throw {code: 409, message: 'not today'};"}
    sync.write_text(json.dumps(config))
    _make(project, "carol", "--no-sync")
    failed = idsync(project, "recon", "staff_user")
    assert failed.returncode != 0
    assert "onRecon script failed" in failed.stdout + failed.stderr and "not today" in failed.stdout + failed.stderr
    with serve(project) as api:
        by_id = api.post(f"/openidm/recon?_action=reconById&mapping=staff_user&id={_ids(project, 'staff')['carol']}",
                         headers=ADMIN)
        assert by_id.status_code == 200 and by_id.json()["state"] == "FAILED", by_id.text
        (run,) = [r for r in api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"]
                  if r["_id"] == by_id.json()["_id"]]
    assert "onRecon script failed" in json.dumps(run) and "not today" in json.dumps(run), run
    assert set(_ids(project, "user")) == {"alice", "bob", "dave"}


def test_old_source_is_null_in_a_hook_but_where_implicit_sync_has_it(tmp_path: Path) -> None:
    """PingIDM binds ``oldSource`` to every hook, null but in implicit sync's update: an
    ``onCreate`` testing ``oldSource === null`` and an ``onUpdate`` reading it run in a recon
    as in implicit sync, rather than fail every object with "oldSource is not defined"."""
    hooks = {"onCreate": "target.displayName = oldSource === null ? 'new' : 'odd';",
             "onUpdate": "target.displayName = oldSource === null ? 'recon' : 'was ' + oldSource.login;"}
    mapping = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
               "properties": [{"source": "login", "target": "userName"}],
               "policies": [{"situation": "ABSENT", "action": "CREATE"},
                            {"situation": "CONFIRMED", "action": "UPDATE"}],
               **{hook: {"type": _JS, "source": source} for hook, source in hooks.items()}}
    project = store_project(tmp_path, {
        "staff": {"login": {"type": "string", "searchable": True}},
        "user": {"userName": {"type": "string", "searchable": True}, "displayName": {"type": "string"}}}, [mapping])

    def shown() -> list[str]:
        return [u["displayName"] for u in json.loads(idsync(project, "managed", "query", "user").stdout)]

    _make(project, "ann")
    assert shown() == ["new"]
    staff = _ids(project, "staff")["ann"]
    renamed = idsync(project, "managed", "patch", "staff", staff, "--operations",
                     json.dumps([{"operation": "replace", "field": "/login", "value": "anne"}]))
    assert renamed.returncode == 0, renamed.stdout + renamed.stderr
    assert shown() == ["was ann"]
    user = _ids(project, "user")["anne"]
    idsync(project, "managed", "patch", "user", user, "--no-sync", "--operations",
           json.dumps([{"operation": "replace", "field": "/userName", "value": "other"}]))
    recon = idsync(project, "recon", "staff_user")
    assert recon.returncode == 0, recon.stdout + recon.stderr
    assert shown() == ["recon"]
