"""liveSync's failed changes against a real slapd: the provisioner's ``syncFailureHandler``
(``maxRetries``, ``postRetryAction``), as PingIDM's samples all set it.

The mapping's ``mail`` transform asks the store whether "the gate is open" (a managed
role named ``gate-open``) for a mail at ``gated.example``, and throws while it is not:
a target that refuses a change for a while, which ``openidm`` in a liveSync run's
scripts (bound as in a recon) lets a test open and close."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.sync.livesync import LiveSyncResult
from idsync_dev.slapd import Slapd
from livesync_env import live, managed_users, stored_token

from samples import FORWARD, bad_provisioner_key, idsync, sample_project, set_provisioner_key

SOURCE = "system/ldap/account"
_GATE = """if (String(source).indexOf('@gated.') > 0
    && openidm.query('managed/role', {_queryFilter: 'name eq "gate-open"'}).result.length === 0) {
  throw 'the gate is closed for ' + source;
}
source;"""


def _project(tmp_path: Path, slapd: Slapd, subtree: str, handler: dict[str, Any] | None, *,
             load_data: bool = True, store: str = "sqlite") -> Path:
    tmp_path.mkdir(exist_ok=True)
    project = sample_project(tmp_path, slapd, subtree, store_url(store, tmp_path), load_data=load_data)
    set_provisioner_key(project, "syncFailureHandler", handler)
    sync_file = project / "conf" / "sync.json"
    # The sample's maxDeletes "10%" made a count: a handful of test users is not a large directory.
    sync = json.loads(sync_file.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": 5'))
    (forward,) = [m for m in sync["mappings"] if m["name"] == FORWARD]
    (mail,) = [p for p in forward["properties"] if p.get("target") == "mail"]
    mail["transform"] = {"type": "text/javascript", "source": _GATE}
    sync_file.write_text(json.dumps(sync))
    return project


def _live(project: Path) -> LiveSyncResult:
    return live(project, SOURCE)


def _mail(slapd: Slapd, subtree: str, uid: str, mail: str) -> None:
    slapd.add_ldif(f"dn: uid={uid},{subtree}\nchangetype: modify\nreplace: mail\nmail: {mail}\n")


def _gate(project: Path, open_it: bool) -> None:
    if open_it:
        made = idsync(project, "managed", "create", "role", "--no-sync", "--id", "gate",
                      "--data", json.dumps({"name": "gate-open"}))
    else:
        made = idsync(project, "managed", "delete", "role", "gate", "--no-sync")
    assert made.returncode == 0, made.stderr


def _failures(project: Path) -> list[dict[str, Any]]:
    shown = idsync(project, "livesync", SOURCE, "--failures", "--json")
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout))


@pytest.mark.parametrize("store", BACKENDS)
def test_a_failed_change_is_retried_until_it_goes_through_then_kept_as_a_dead_letter(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str, store: str) -> None:
    """maxRetries 2, dead-letter-queue: a change the mapping refuses fails its object (and
    the run, its only change) and the token moves on; the next runs read the object again
    (as it is then) and retry it, a retry failing again failing that mapping's run, not
    liveSync's; once the gate opens it goes through, the user gets the mail, and nothing
    waits any more. Another object that fails three times (the first try and two retries)
    becomes a dead letter: no later run retries it; ``idsync status``, the status file, the
    metrics and the API's deadLetterQueue show it, and deleting it there forgets it. The
    API's pooledSyncStage shows the source's token and forgets it, as PingIDM's
    administrators reset liveSync. On SQLite, PostgreSQL and MariaDB."""
    project = _project(tmp_path, slapd, ldap_subtree, {"maxRetries": 2, "postRetryAction": "dead-letter-queue"},
                       store=store)
    assert _live(project).state == "SUCCESS"  # the first run: a full recon, then the token
    bjensen = managed_users(project)["bjensen"]

    _mail(slapd, ldap_subtree, "bjensen", "bjensen@gated.example")
    first = _live(project)
    assert first.changes == 1 and first.failed == 1 and first.retried == 0 and first.state == "FAILED", first
    (held,) = _failures(project)
    assert held["state"] == "RETRYING" and held["attempts"] == 1 and "the gate is closed" in held["error"]
    with structlog.testing.capture_logs() as logs:
        again = _live(project)  # no new change: the object is read again and still refused
    assert (again.changes, again.retried, again.failed) == (0, 1, 1), again
    # An object still failing is the operator's to see in `journalctl -p warning`.
    (end,) = [e for e in logs if e["event"] == "livesync.end"]
    assert end["log_level"] == "warning" and (end["failed"], end["retried"]) == (1, 1)
    assert again.state == "SUCCESS" and again.runs[0]["state"] == "FAILED"  # liveSync works; the object waits
    assert _failures(project)[0]["attempts"] == 2
    _gate(project, open_it=True)
    through = _live(project)
    assert (through.retried, through.failed) == (1, 0) and through.state == "SUCCESS", through
    assert managed_users(project)["bjensen"]["mail"] == "bjensen@gated.example"
    assert managed_users(project)["bjensen"]["_id"] == bjensen["_id"]
    assert _failures(project) == []
    assert _live(project).retried == 0

    _gate(project, open_it=False)
    _mail(slapd, ldap_subtree, "scarter", "scarter@gated.example")
    with structlog.testing.capture_logs() as logs:
        outcomes = [_live(project) for _ in range(3)]
    assert [(o.retried, o.failed, o.given_up) for o in outcomes] == [(0, 1, 0), (1, 1, 0), (1, 1, 1)]
    (buried,) = [e for e in logs if e["event"] == "livesync.dead_letter"]
    assert buried["log_level"] == "warning"
    (dead,) = _failures(project)
    assert dead["state"] == "DEAD" and dead["attempts"] == 3 and dead["uid"] == dead["_id"]
    # Given up on a retry, it is logged with the token its change was first read at, as kept.
    assert dead["token"] is not None and buried["token"] == dead["token"]
    idle = idsync(project, "livesync", SOURCE, "--json")  # writes the status file too
    assert idle.returncode == 0 and json.loads(idle.stdout)["retried"] == 0  # a dead letter is not retried
    assert managed_users(project)["scarter"]["mail"] != "scarter@gated.example"

    status = idsync(project, "status")
    assert "1 dead letter(s)" in status.stdout, status.stdout
    state = json.loads((project / "state" / "status.json").read_text())
    assert state["liveSync"][SOURCE]["deadLetters"] == 1 and state["liveSync"][SOURCE]["retrying"] == 0
    with serve(project) as api:
        metrics = api.get("/metrics", headers=ADMIN).text
        assert f'idsync_livesync_failed_objects{{source="{SOURCE}",state="DEAD"}} 1.0' in metrics
        listed = api.get("/openidm/repo/synchronisation/deadLetterQueue/ldap?_queryFilter=true",
                         headers=ADMIN).json()
        (letter,) = listed["result"]
        assert letter["systemIdentifier"] == "ldap" and letter["objectType"] == "account"
        assert "the gate is closed" in letter["failureCause"] and letter["_id"] == dead["_id"]
        one = f"/openidm/repo/synchronisation/deadLetterQueue/ldap/{dead['_id']}"
        assert api.get(one, headers=ADMIN).json()["attempts"] == 3
        assert api.delete(one, headers=ADMIN).status_code == 200
        assert api.get(one, headers=ADMIN).status_code == 404
        assert api.get("/openidm/repo/synchronisation/deadLetterQueue/nowhere?_queryFilter=true",
                       headers=ADMIN).status_code == 404
        stage = "/openidm/repo/synchronisation/pooledSyncStage/SYSTEMLDAPACCOUNT"
        assert api.get(stage, headers=ADMIN).json()["hasToken"] is True
        assert api.delete(stage, headers=ADMIN).json()["_id"] == "SYSTEMLDAPACCOUNT"
        assert api.get(stage, headers=ADMIN).json()["hasToken"] is False
        assert api.delete(stage, headers=ADMIN).status_code == 404  # no token left to forget
    assert _failures(project) == []
    assert _live(project).full_recon is not None  # a forgotten token: the next run reconciles in full


def test_logged_ignore_gives_up_at_once_and_no_handler_retries_until_it_goes_through(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """maxRetries 0 with logged-ignore: a warning names the object and the error, and no
    run retries it. Without a syncFailureHandler (PingIDM's default) the object is
    retried by every run until it goes through; ``--forget`` gives it up by hand."""
    project = _project(tmp_path, slapd, ldap_subtree, {"maxRetries": 0, "postRetryAction": "logged-ignore"})
    assert _live(project).state == "SUCCESS"
    _mail(slapd, ldap_subtree, "bjensen", "b@gated.example")
    with structlog.testing.capture_logs() as logs:
        done = _live(project)
    assert (done.failed, done.given_up) == (1, 1)
    (ignored,) = [e for e in logs if e["event"] == "livesync.failure_ignored"]
    assert ignored["log_level"] == "warning" and "the gate is closed" in ignored["error"]
    assert _failures(project) == [] and _live(project).retried == 0

    forever = _project(tmp_path / "forever", slapd, ldap_subtree, None, load_data=False)
    assert _live(forever).state == "SUCCESS"
    _mail(slapd, ldap_subtree, "scarter", "s@gated.example")
    assert _live(forever).failed == 1
    for attempts in (2, 3, 4):
        assert _live(forever).retried == 1
        assert _failures(forever)[0]["attempts"] == attempts
    forgot = idsync(forever, "livesync", SOURCE, "--forget", _failures(forever)[0]["_id"])
    assert forgot.returncode == 0 and "1 failed change(s) forgotten" in forgot.stdout
    assert _live(forever).retried == 0


def test_a_script_handles_what_is_past_its_retries(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """postRetryAction {"script": ...}: the script gets PingIDM's syncFailure (token,
    systemIdentifier, objectType, uid, failedRecord) and failureCause, and may write
    through openidm; once it ends well the object is given up, or handed to the built-in
    handler it invoked (failureHandlers.deadLetterQueue: a dead letter), which
    ``idsync livesync SOURCE --retry ID`` has the next run try again."""
    note = ("if (syncFailure.failedRecord.mail.indexOf('dead') === 0) {"
            "  failureHandlers.deadLetterQueue.invoke(context, syncFailure, failureCause);"
            "} else {"
            "  openidm.create('managed/role', null, {name: 'failed ' + syncFailure.systemIdentifier + '/' + "
            "    syncFailure.objectType, description: syncFailure.failedRecord.mail + ': ' + failureCause"
            "    + (syncFailure.token ? '' : ' (no token)')});"
            "}")
    project = _project(tmp_path, slapd, ldap_subtree,
                       {"maxRetries": 1, "postRetryAction": {"script": {"type": "text/javascript", "source": note}}})
    assert _live(project).state == "SUCCESS"
    _mail(slapd, ldap_subtree, "bjensen", "j@gated.example")
    assert [_live(project).given_up for _ in range(2)] == [0, 1]
    roles = json.loads(idsync(project, "managed", "query", "role", "--filter", 'name eq "failed ldap/account"').stdout)
    (role,) = roles
    assert role["description"].startswith("j@gated.example: ") and "the gate is closed" in role["description"]
    assert not role["description"].endswith("(no token)")  # given up on its retry: the token it was read at
    assert _failures(project) == [] and _live(project).retried == 0
    _mail(slapd, ldap_subtree, "scarter", "dead@gated.example")
    assert [_live(project).given_up for _ in range(2)] == [0, 1]
    (dead,) = _failures(project)
    assert dead["state"] == "DEAD" and "the gate is closed" in dead["error"]
    _gate(project, open_it=True)  # the cause dealt with, the administrator has it tried again
    revived = idsync(project, "livesync", SOURCE, "--retry", dead["_id"])
    assert revived.returncode == 0 and "1 dead letter(s) to be tried again" in revived.stdout, revived.stderr
    assert (lambda run: (run.retried, run.failed))(_live(project)) == (1, 0)
    assert _failures(project) == [] and managed_users(project)["scarter"]["mail"] == "dead@gated.example"


def test_a_dead_letter_keeps_the_token_its_change_was_read_at(tmp_path: Path, slapd: Slapd,
                                                              ldap_subtree: str) -> None:
    """A syncrepl refresh read in batches (one change each) carries its new cookie on its
    last batch only: every change that fails and becomes a dead letter at once (maxRetries
    0) keeps the token the run read it at, the one stored before it, whichever batch it
    came in: given to the directory again, it reads the change again."""
    project = _project(tmp_path, slapd, ldap_subtree, {"maxRetries": 0, "postRetryAction": "dead-letter-queue"})
    assert _live(project).state == "SUCCESS"
    read_at = stored_token(project, SOURCE)
    assert read_at is not None
    _mail(slapd, ldap_subtree, "bjensen", "bjensen@gated.example")
    _mail(slapd, ldap_subtree, "scarter", "scarter@gated.example")
    with structlog.testing.capture_logs() as logs:
        done = live(project, SOURCE, page_size=1)
    assert (done.changes, done.failed, done.given_up) == (2, 2, 2), done
    letters = _failures(project)
    assert [(d["state"], d["token"]) for d in letters] == [("DEAD", read_at)] * 2
    assert sorted(e["token"] for e in logs if e["event"] == "livesync.dead_letter") == [read_at] * 2
    assert stored_token(project, SOURCE) not in (None, read_at)  # the run moved the source's token past them


@pytest.mark.parametrize(("handler", "key"), [
    ("retry", "syncFailureHandler"),
    ({"maxRetries": "5"}, "syncFailureHandler.maxRetries"),
    ({"maxRetries": 5, "postRetryAction": "dead-letter"}, "syncFailureHandler.postRetryAction"),
    ({"maxRetries": 5, "postRetryActions": "logged-ignore"}, "syncFailureHandler.postRetryActions"),
])
def test_a_bad_handler_is_an_error_naming_the_file_and_key(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                           handler: Any, key: str) -> None:
    project = _project(tmp_path, slapd, ldap_subtree, {"maxRetries": 5})
    bad_provisioner_key(project, "syncFailureHandler", handler, key)


def test_a_failed_delete_is_deleted_again_and_a_vanished_object_is_no_delete(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A delete the store refuses (the user type's onDelete throws while the gate is
    closed) is kept with its kind: the retries delete again, and once the gate opens the
    user is gone. An object whose failed change was a modify and that is gone when it is
    retried is not deleted by the retry (its delete is a change the source tells on its
    own): the retry is over, and the source's delete then deletes the user."""
    project = _project(tmp_path, slapd, ldap_subtree, {"maxRetries": 5, "postRetryAction": "logged-ignore"})
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    (user,) = [o for o in managed["objects"] if o["name"] == "user"]
    user["onDelete"] = {"type": "text/javascript", "source": (
        "if (openidm.query('managed/role', {_queryFilter: 'name eq \"gate-open\"'}).result.length === 0) "
        "{ throw 'deletes are closed'; }")}
    managed_file.write_text(json.dumps(managed))
    assert _live(project).state == "SUCCESS"
    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: delete\n")
    assert _live(project).failed == 1
    (held,) = _failures(project)
    assert held["delete"] is True and "deletes are closed" in held["error"]
    assert _live(project).retried == 1 and "scarter" in managed_users(project)
    _gate(project, open_it=True)
    assert (_live(project).retried, _failures(project)) == (1, [])
    assert "scarter" not in managed_users(project)

    _gate(project, open_it=False)
    _mail(slapd, ldap_subtree, "bjensen", "bj@gated.example")
    assert _live(project).failed == 1
    held_id = _failures(project)[0]["_id"]
    _gate(project, open_it=True)  # the delete below goes through
    with structlog.testing.capture_logs() as logs:
        slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: delete\n")
        done = _live(project)
    assert done.state == "SUCCESS" and done.changes == 1 and done.retried == 1, done
    assert any(e["event"] == "livesync.retry_not_found" for e in logs)
    assert _failures(project) == [] and managed_users(project) == {}
    assert held_id


def test_a_valid_target_script_failing_on_a_delete_fails_that_object_only(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """validTarget throwing for one target while liveSync plans the deletes of a batch
    (here while the gate is closed) fails that object's delete, kept for a retry with the
    script's error, not the run: the other delete of the batch goes through, and once the
    script answers again the retry deletes the user."""
    project = _project(tmp_path, slapd, ldap_subtree, {"maxRetries": 5, "postRetryAction": "logged-ignore"})
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    (forward,) = [m for m in sync["mappings"] if m["name"] == FORWARD]
    forward["validTarget"] = {"type": "text/javascript", "source": (
        "if (object.userName == 'scarter' && openidm.query('managed/role', "
        "{_queryFilter: 'name eq \"gate-open\"'}).result.length === 0) { throw 'no verdict on scarter'; } true;")}
    sync_file.write_text(json.dumps(sync))
    _gate(project, open_it=True)
    assert _live(project).state == "SUCCESS"
    _gate(project, open_it=False)
    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: delete\n\n"
                   f"dn: uid=bjensen,{ldap_subtree}\nchangetype: delete\n")
    done = _live(project)
    assert (done.state, done.changes, done.failed) == ("SUCCESS", 2, 1), done
    assert set(managed_users(project)) == {"scarter"}
    (held,) = _failures(project)
    assert held["delete"] is True and "no verdict on scarter" in held["error"]
    _gate(project, open_it=True)
    assert (_live(project).retried, _failures(project)) == (1, [])
    assert managed_users(project) == {}
