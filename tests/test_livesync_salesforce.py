"""liveSync of a Salesforce source (``connectors/salesforce/changes.py``) against the
local stand-in, on the Salesforce sample: sObject Get Updated and Get Deleted windows,
the org's minute, a token past what the org keeps, dry run.

The stand-in's clock runs an hour behind this host's and tests move it (``advance``),
as the replication resources only tell changes once the org's minute has passed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_salesforce import FakeSalesforce, sf_datetime
from idsync.config.project import load_project
from idsync.resource import ChangeSource
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.livesync import LiveSyncResult
from livesync_env import live, live_after_expiry, managed_users, stored_token
from salesforce_sample import FORWARD, sample_project, sf_env

from samples import idsync

SOURCE = "system/salesforce/User"
LAG = -3600.0


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    fake = FakeSalesforce(clock_offset=LAG).start(tmp_path)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def project(tmp_path: Path, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample, its "10%" maxDeletes made a count: a handful of test users is not a large org."""
    for key, value in sf_env(org).items():
        monkeypatch.setenv(key, value)
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": 5'))
    return project


def _seed(org: FakeSalesforce) -> dict[str, str]:
    """Three users, made a few minutes before the first liveSync (else its first read
    tells them again: changes of the token's own minute are read again, harmlessly)."""
    ids = {name: org.add_user(Username=f"{name}@example.com", FirstName=name.title(), LastName="Test",
                              Email=f"{name}@example.com", Alias=name[:8])
           for name in ("alice", "bob", "carol")}
    org.advance(120)
    return ids


def _live(project: Path, **options: Any) -> LiveSyncResult:
    return live(project, SOURCE, **options)


def _changes(org: FakeSalesforce, ids: dict[str, str]) -> None:
    """A modify, an add and a delete, then the org's clock past the minute they were made in."""
    org.update_user(ids["alice"], Phone="555-0100")
    org.add_user(Username="newbie@example.com", LastName="Bie", Email="newbie@example.com", Alias="newbie")
    org.delete_user(ids["carol"])
    org.advance(120)


def test_first_token_then_modify_add_and_delete(project: Path, org: FakeSalesforce) -> None:
    """Without a token liveSync reconciles in full and stores the org's latestDateCovered;
    a run without changes applies nothing; a modify, an add and a delete are applied as an
    update, a create and a delete, the changed records read by Id with the mapping's fields."""
    ids = _seed(org)
    first = _live(project)
    assert first.state == "SUCCESS", first.message
    assert first.full_recon and "no token yet" in first.full_recon
    assert set(managed_users(project)) == {"alice@example.com", "bob@example.com", "carol@example.com"}
    assert json.loads(stored_token(project, SOURCE) or "{}")["kind"] == "replication"

    org.advance(120)
    idle = _live(project)
    assert idle.state == "SUCCESS" and idle.full_recon is None and idle.method == "updated/deleted"
    assert idle.runs == [] and idle.changes == 0

    _changes(org, ids)
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    (run,) = done.runs
    assert run["mapping"] == FORWARD and run["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    users = managed_users(project)
    assert set(users) == {"alice@example.com", "bob@example.com", "newbie@example.com"}
    assert users["alice@example.com"]["telephoneNumber"] == "555-0100"
    assert any("WHERE Id IN" in q and "Phone" in q for q in org.queries)
    org.advance(120)
    assert _live(project).changes == 0


def test_a_change_is_told_once_the_orgs_minute_has_passed(project: Path, org: FakeSalesforce) -> None:
    """The resources take their dates to the minute: a change made in the org's current
    minute is not yet covered, and the token does not pass it; once the minute is over the
    next run applies it. A read less than a minute after the token asks nothing."""
    ids = _seed(org)
    org.freeze()
    assert _live(project).state == "SUCCESS"
    org.update_user(ids["bob"], Title="Engineer")
    early = _live(project)
    assert early.state == "SUCCESS" and early.changes == 0
    org.advance(120)
    done = _live(project)
    assert done.runs and done.runs[0]["counts"] == {"updated": 1}

    asked = org.count("GET", "/updated")
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open(SOURCE)
    assert isinstance(resource, ChangeSource)
    recent = json.dumps({"v": 1, "kind": "replication", "latestDateCovered": sf_datetime(time.time() - 30)})
    batches = list(resource.read_changes(recent, None, 100).batches)
    assert [(b.changes, b.token) for b in batches] == [([], None)]
    assert org.count("GET", "/updated") == asked


@pytest.mark.parametrize(("why", "answer"), [("16 days later", "INVALID_REPLICATION_DATE"),
                                             ("recycle bin purged", "INVALID_REPLICATION_DATE"),
                                             ("too many changes", "EXCEEDED_ID_LIMIT")])
def test_token_past_what_the_org_keeps_is_answered_by_a_full_recon(project: Path, org: FakeSalesforce,
                                                                   why: str, answer: str) -> None:
    """A token older than the delete log (15 days, or an administrator's purge of the
    recycle bin) gets INVALID_REPLICATION_DATE, and more changed ids than the resources
    list EXCEEDED_ID_LIMIT: the run logs livesync.token_expired at warning, reconciles in
    full (applying what changed meanwhile) and stores a fresh token the next run reads from."""
    ids = _seed(org)
    assert _live(project).state == "SUCCESS"
    token = stored_token(project, SOURCE)
    org.update_user(ids["alice"], Phone="555-0199")
    if why == "16 days later":
        org.advance(16 * 86400)
    elif why == "recycle bin purged":
        org.advance(120)
        org.purge_delete_log()
    else:
        org.advance(120)
        org.id_limit = 0
    live_after_expiry(project, SOURCE, answer)
    assert managed_users(project)["alice@example.com"]["telephoneNumber"] == "555-0199"
    assert stored_token(project, SOURCE) not in (None, token)
    org.id_limit = 600_000
    org.advance(120)
    again = _live(project)
    assert again.state == "SUCCESS" and again.full_recon is None


def test_dry_run_writes_nothing_and_keeps_the_token(project: Path, org: FakeSalesforce) -> None:
    """A dry run assesses the changes (its run says what it would do) but writes no object
    and no token: the next real run applies the same changes."""
    ids = _seed(org)
    assert _live(project).state == "SUCCESS"
    token = stored_token(project, SOURCE)
    _changes(org, ids)
    dry = _live(project, dry_run=True)
    assert dry.state == "SUCCESS" and dry.runs[0]["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    assert set(managed_users(project)) == {"alice@example.com", "bob@example.com", "carol@example.com"}
    assert stored_token(project, SOURCE) == token
    real = _live(project)
    assert real.runs[0]["counts"] == {"created": 1, "updated": 1, "deleted": 1}


def test_stand_in_answers_as_the_documentation_says(org: FakeSalesforce) -> None:
    """The stand-in's replication resources, as the REST API documents them: ids and
    latestDateCovered to the minute; INVALID_REPLICATION_DATE for a start not before end or
    past what the org keeps; EXCEEDED_ID_LIMIT past the id limit."""
    import ssl

    import httpx

    org.add_user(Username="x@example.com", LastName="X", Email="x@example.com", Alias="x")
    org.advance(120)
    status, token = org.token({"grant_type": "refresh_token", "client_id": org.client_id,
                               "client_secret": org.client_secret, "refresh_token": next(iter(org.refresh_tokens))})
    assert status == 200
    base = f"{org.url}/services/data/{org.version}/sobjects/User"
    auth = {"Authorization": f"Bearer {token['access_token']}"}

    now = org.now()
    window = {"start": sf_datetime(now - 3600).replace("+0000", "+00:00"),
              "end": sf_datetime(now).replace("+0000", "+00:00")}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(org.ca_file)), headers=auth) as c:
        updated = c.get(f"{base}/updated/", params=window).json()
        assert len(updated["ids"]) == 1 and updated["latestDateCovered"].endswith(":00.000+0000")
        deleted = c.get(f"{base}/deleted/", params=window).json()
        assert deleted["deletedRecords"] == [] and "earliestDateAvailable" in deleted
        backwards = c.get(f"{base}/updated/", params={"start": window["end"], "end": window["start"]})
        assert backwards.status_code == 400 and backwards.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"
        old = {"start": sf_datetime(now - 31 * 86400).replace("+0000", "+00:00"), "end": window["end"]}
        assert c.get(f"{base}/updated/", params=old).json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"
        org.id_limit = 0
        assert c.get(f"{base}/updated/", params=window).json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_command_line_applies_a_delete(project: Path, org: FakeSalesforce) -> None:
    """``idsync livesync system/salesforce/User`` prints the changes read by updated/deleted
    and applies a record deleted in the org as the deletion of its managed user."""
    ids = _seed(org)
    assert idsync(project, "livesync", SOURCE, env=sf_env(org)).returncode == 0
    org.delete_user(ids["bob"])
    org.advance(120)
    done = idsync(project, "livesync", SOURCE, env=sf_env(org))
    assert done.returncode == 0, done.stderr
    assert "1 change(s) read by updated/deleted" in done.stdout and "deleted 1" in done.stdout
    assert "bob@example.com" not in managed_users(project)


def test_command_line_says_a_failed_run_wrote_nothing_and_where_to_read_why(project: Path,
                                                                           org: FakeSalesforce) -> None:
    """A liveSync run that fails before writing (its deletes past maxDeletes) is not
    printed as having "nothing to write": its line says it wrote nothing and names the
    run to read the reason from, and stderr gives that reason."""
    ids = _seed(org)
    assert idsync(project, "livesync", SOURCE, env=sf_env(org)).returncode == 0
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"maxDeletes": 5', '"maxDeletes": 0'))
    org.delete_user(ids["bob"])
    org.advance(120)
    done = idsync(project, "livesync", SOURCE, env=sf_env(org))
    assert done.returncode != 0
    line = next(ln for ln in done.stdout.splitlines() if "liveSync run" in ln)
    assert "FAILED" in line and "nothing to write" not in line
    run_id = line.split("liveSync run ")[1].split()[0]
    assert f"nothing written (idsync status {run_id} says why)" in line
    assert "more than maxDeletes" in done.stderr
    assert "bob@example.com" in managed_users(project)


def test_a_user_deleted_and_made_again_in_one_window_is_linked_to_the_new_record(project: Path,
                                                                                  org: FakeSalesforce) -> None:
    """A user deleted and another made with the same Username in one window: the delete is
    applied first, so the new record finds no managed user still linked to the old Id and
    is created and linked (it correlated to the old link and failed, and the old Id's delete
    then removed the managed user); a later change of the new record reaches that user."""
    ids = _seed(org)
    assert _live(project).state == "SUCCESS"
    org.delete_user(ids["alice"])
    again = org.add_user(Username="alice@example.com", FirstName="Alice", LastName="Again",
                         Email="alice@example.com", Alias="alice")
    org.advance(120)
    done = _live(project)
    assert done.state == "SUCCESS", done.message
    (run,) = done.runs
    assert run["counts"] == {"deleted": 1, "created": 1}, run
    assert set(managed_users(project)) == {"alice@example.com", "bob@example.com", "carol@example.com"}
    org.update_user(again, Phone="555-0142")
    org.advance(120)
    later = _live(project)
    assert later.state == "SUCCESS" and later.runs[0]["counts"] == {"updated": 1}, later.runs
    assert managed_users(project)["alice@example.com"]["telephoneNumber"] == "555-0142"


def test_a_window_of_many_deletes_and_updates_is_read_at_once(project: Path, org: FakeSalesforce) -> None:
    """A window telling 20,000 updated and 20,000 deleted records is sorted into deletes
    and changes in one pass: the first batch (deletes) comes in well under a second, where
    a check of each updated id against the deletes, made anew for each, took half a minute."""
    start = org.now()
    made = [org.add_user(Username=f"u{n}@example.com", LastName="Bulk", Email=f"u{n}@example.com", Alias="bulk")
            for n in range(40_000)]
    for record_id in made[:20_000]:
        org.delete_user(record_id)
    org.advance(180)
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open(SOURCE)
    assert isinstance(resource, ChangeSource)
    token = json.dumps({"v": 1, "kind": "replication", "latestDateCovered": sf_datetime(start - 60)})
    began = time.process_time()
    first = next(iter(resource.read_changes(token, None, 1000).batches))
    assert time.process_time() - began < 8
    assert len(first.changes) == 1000 and all(c.obj is None for c in first.changes)
