"""The Salesforce sample end to end through the real engine and CLI against the
local stand-in: both mappings, implicit sync, deactivation, refresh mid-run, limits."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from fake_salesforce import FakeSalesforce
from idsync.config.project import load_project
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from salesforce_sample import FORWARD, PROFILE_ID, REVERSE, SAMPLE, running_org, sample_project, sf_env

from samples import idsync


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    yield from running_org(tmp_path)


@pytest.fixture
def project(tmp_path: Path, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in sf_env(org).items():
        monkeypatch.setenv(key, value)
    return sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")


def _seed(org: FakeSalesforce, count: int) -> None:
    for i in range(count):
        org.add_user(Username=f"user{i:03d}@example.com", FirstName=f"First{i}", LastName=f"Last{i}",
                     Email=f"user{i:03d}@example.com", Alias=f"user{i:03d}", Phone=f"555-{i:04d}")


def _recon(project: Path, mapping: str, max_deletes: int | None = None) -> ReconResult:
    loaded = load_project(project)
    return run_recon(loaded, Store.open(loaded.settings.store_url()), mapping, ReconOptions(max_deletes=max_deletes))


def _managed(project: Path) -> dict[str, dict[str, Any]]:
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in resource.pages(QuerySpec()) for u in page}


def test_sample_as_shipped_starts_without_its_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample as shipped, none of its SALESFORCE_* variables set, validates: its system is
    disabled, as PingIDM's, until the administrator enables it (in the provisioner, or in the
    console's Settings with the Consumer Key and Secret, as PingIDM's admin UI walkthrough does),
    so the daemon starts and serves the console where that is done."""
    for key in ("SALESFORCE_LOGIN_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET",
                "SALESFORCE_REFRESH_TOKEN", "SALESFORCE_INSTANCE_URL"):
        monkeypatch.delenv(key, raising=False)
    project = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project / "conf")
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not load_project(project).provisioners["salesforce"].enabled


def test_forward_recon_then_implicit_sync_back(project: Path, org: FakeSalesforce) -> None:
    """Salesforce users become managed users; then a managed user created, changed and
    deleted with the CLI is created, patched (changed fields only) and deactivated in Salesforce."""
    _seed(org, 3)
    org.add_user(Username="gone@example.com", LastName="Gone", Email="gone@example.com", Alias="gone",
                 IsActive=False)
    recon = idsync(project, "recon", FORWARD, "--json", env={**sf_env(org), "IDSYNC_LOG__LEVEL": "debug"})
    assert recon.returncode == 0, recon.stderr
    output = recon.stdout + recon.stderr
    assert "salesforce.token_issued" in output and "salesforce.query" in output
    assert not any(secret in output for secret in (org.client_secret, *org.refresh_tokens, *org.access_tokens))
    assert json.loads(recon.stdout)["situationSummary"]["ABSENT"] == 4
    users = _managed(project)
    assert users["user001@example.com"] == {**users["user001@example.com"], "givenName": "First1", "sn": "Last1",
                                            "mail": "user001@example.com", "telephoneNumber": "555-0001",
                                            "displayName": "First1 Last1", "accountStatus": "active"}
    assert users["gone@example.com"]["accountStatus"] == "inactive"

    fdoe = {"userName": "fdoe@example.com", "givenName": "Felicitas", "sn": "Doe", "mail": "fdoe@example.com"}
    created = idsync(project, "managed", "create", "user", "--data", json.dumps(fdoe), env=sf_env(org))
    assert created.returncode == 0, created.stderr
    record = org.by_username("fdoe@example.com")
    assert record is not None and record == {**record, "FirstName": "Felicitas", "LastName": "Doe", "Alias": "fdoe",
                                             "ProfileId": PROFILE_ID, "TimeZoneSidKey": "America/Los_Angeles",
                                             "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
                                             "LanguageLocaleKey": "en_US", "IsActive": True}
    managed_id = json.loads(created.stdout)["_id"]
    patches_before = org.count("PATCH", "/sobjects/User/")
    patched = idsync(project, "managed", "patch", "user", managed_id, "--operations",
                     json.dumps([{"operation": "replace", "field": "/telephoneNumber", "value": "555-9999"}]),
                     env=sf_env(org))
    assert patched.returncode == 0, patched.stderr
    assert org.by_username("fdoe@example.com")["Phone"] == "555-9999"  # type: ignore[index]
    assert org.count("PATCH", "/sobjects/User/") == patches_before + 1
    assert org.bodies[-1] == {"Phone": "555-9999"}

    deleted = idsync(project, "managed", "delete", "user", managed_id, env=sf_env(org))
    assert deleted.returncode == 0, deleted.stderr
    assert org.by_username("fdoe@example.com")["IsActive"] is False  # type: ignore[index]
    assert org.count("DELETE", "/sobjects") == 0
    last = json.loads(idsync(project, "status", "--json", "--limit", "1").stdout)[0]
    audit = json.loads(idsync(project, "status", last["_id"], "--json").stdout)["audit"]
    assert audit[-1]["action"] == "DELETE" and "deactivated (IsActive = false)" in audit[-1]["message"]


def test_reverse_recon_deactivates_users_whose_source_is_gone(project: Path, org: FakeSalesforce) -> None:
    """A Salesforce user linked to a deleted managed user is deactivated by the
    store-to-Salesforce recon, never deleted, and the audit says so."""
    _seed(org, 3)
    assert _recon(project, FORWARD).state == "SUCCESS"
    users = _managed(project)
    gone = idsync(project, "managed", "delete", "user", users["user001@example.com"]["_id"], "--no-sync")
    assert gone.returncode == 0, gone.stderr
    result = _recon(project, REVERSE, max_deletes=1)  # the sample's 10% of 3 users allows none
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["deleted"] == 1
    assert org.by_username("user001@example.com")["IsActive"] is False  # type: ignore[index]
    assert org.by_username("user000@example.com")["IsActive"] is True  # type: ignore[index]
    assert len(org.users) == 3 and org.count("DELETE", "/sobjects") == 0
    audit = json.loads(idsync(project, "status", result.id, "--json").stdout)["audit"]
    assert any("deactivated (IsActive = false)" in (a["message"] or "") for a in audit)


def test_a_dry_run_sends_the_org_no_write(project: Path, org: FakeSalesforce) -> None:
    """A dry-run store-to-Salesforce recon that would create, update and deactivate
    users reports those changes, but the org receives only GET requests: no POST,
    PATCH or DELETE, and no record changes."""
    _seed(org, 3)
    assert _recon(project, FORWARD).state == "SUCCESS"
    users = _managed(project)
    gone = idsync(project, "managed", "delete", "user", users["user001@example.com"]["_id"], "--no-sync")
    assert gone.returncode == 0, gone.stderr
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    managed = Resources(loaded, store).open("managed/user")
    managed.create({"userName": "new0@example.com", "sn": "New0", "mail": "new0@example.com",
                    "accountStatus": "active"})
    managed.update(users["user002@example.com"]["_id"], {"telephoneNumber": "555-9999"})
    before = {i: dict(u) for i, u in org.users.items()}
    org.requests.clear()
    result = run_recon(loaded, store, REVERSE, ReconOptions(dry_run=True, max_deletes=1))
    assert result.state == "SUCCESS", result.message
    changes = result.summary["changes"]
    assert (changes["created"], changes["updated"], changes["deleted"]) == (1, 1, 1), changes
    assert [r for r in org.requests if r[0] != "GET"] == []
    assert org.users == before


def test_reverse_recon_creates_and_converges(project: Path, org: FakeSalesforce) -> None:
    """The store-to-Salesforce recon creates new users in one collection request, and
    second passes of both mappings write nothing."""
    _seed(org, 2)
    assert _recon(project, FORWARD).state == "SUCCESS"
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    managed = Resources(loaded, store).open("managed/user")
    for i in range(5):
        managed.create({"userName": f"new{i}@example.com", "sn": f"New{i}", "mail": f"new{i}@example.com",
                        "accountStatus": "active"})
    result = _recon(project, REVERSE)
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["created"] == 5
    assert org.count("POST", "/composite/sobjects") == 1
    assert org.by_username("new3@example.com")["Alias"] == "new3"  # type: ignore[index]
    again = _recon(project, REVERSE)
    changes = again.summary["changes"]
    assert again.state == "SUCCESS" and changes["created"] == changes["updated"] == changes["failed"] == 0
    assert _recon(project, FORWARD).state == "SUCCESS"  # fills displayName and the like in the store
    forward = _recon(project, FORWARD)
    assert forward.summary["changes"]["created"] == 0 and forward.summary["changes"]["updated"] == 0


def test_forward_recon_pages_with_a_token_refresh_mid_run(tmp_path: Path, org: FakeSalesforce,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """1,100 users over several query batches with sessions expiring every few calls:
    the run renews its token and reconciles everyone."""
    for key, value in sf_env(org).items():
        monkeypatch.setenv(key, value)
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}", queryBatchSize=200)
    _seed(org, 1100)
    org.session_calls = 3
    result = _recon(project, FORWARD)
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["created"] == 1100
    assert org.tokens_issued >= 2
    assert org.count("GET", "/query/01g") >= 5


def _reverse_of_three(project: Path, org: FakeSalesforce, third: dict[str, Any]) -> ReconResult:
    """Three users reconciled into the store; the first two given a description there, the
    third ``third``; then the reverse recon."""
    _seed(org, 3)
    assert _recon(project, FORWARD).state == "SUCCESS"
    loaded = load_project(project)
    managed = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    users = _managed(project)
    for name in ("user000@example.com", "user001@example.com"):
        managed.update(users[name]["_id"], {"description": "Engineer"})
    managed.update(users["user002@example.com"]["_id"], third)
    return _recon(project, REVERSE)


def test_reverse_updates_and_field_errors(project: Path, org: FakeSalesforce) -> None:
    """Store changes reach Salesforce in one collection PATCH; a user Salesforce refuses
    fails alone with its error code in the run's errors."""
    result = _reverse_of_three(project, org, {"userName": "not-an-email"})
    assert result.summary["changes"]["updated"] == 2 and result.summary["changes"]["failed"] == 1
    assert org.count("PATCH", "/composite/sobjects") == 1
    assert org.by_username("user000@example.com")["Title"] == "Engineer"  # type: ignore[index]
    assert "INVALID_NEW_VALUE" in json.dumps(result.summary)


def test_a_record_salesforce_cannot_parse_fails_alone_not_its_whole_collection(
        project: Path, org: FakeSalesforce) -> None:
    """A value of the wrong JSON type (a status the reverse mapping passes through as a
    string where IsActive is a boolean) makes Salesforce refuse the whole sObject
    Collections request that holds it (JSON_PARSER_ERROR): its records are then written
    one by one, so the others are updated and that user fails alone with Salesforce's
    error; the run is not stopped by one user."""
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace(
        "source !== 'inactive'", "source === 'inactive' ? false : source === 'active' ? true : source"))
    result = _reverse_of_three(project, org, {"description": "Engineer", "accountStatus": "suspended"})
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["updated"] == 2 and result.summary["changes"]["failed"] == 1
    assert [org.by_username(f"user00{i}@example.com").get("Title") for i in range(3)] == [  # type: ignore[union-attr]
        "Engineer", "Engineer", None]
    entries = RunStore(Store.open(load_project(project).settings.store_url())).audit_entries(result.id, limit=10)
    failed = [e for e in entries if e.get("status") == "FAILURE"]
    assert len(failed) == 1 and "JSON_PARSER_ERROR" in json.dumps(failed[0], default=str)


def test_exhausted_api_limit_fails_the_run_cleanly(project: Path, org: FakeSalesforce) -> None:
    """When REQUEST_LIMIT_EXCEEDED persists past the retries, the recon is FAILED with
    the reason and nothing is deleted from the store."""
    _seed(org, 3)
    assert _recon(project, FORWARD).state == "SUCCESS"
    org.api_allowance = org.api_calls
    result = _recon(project, FORWARD)
    assert result.state == "FAILED" and "REQUEST_LIMIT_EXCEEDED" in (result.message or "")
    assert len(_managed(project)) == 3


def test_two_thousand_updates_cost_ten_collection_requests(project: Path, org: FakeSalesforce) -> None:
    """A recon that changes 2,000 Salesforce users sends them in 10 sObject Collections
    PATCHes of 200 records holding only the changed field, renews its session when it
    expires mid-run, and reads with SOQL selecting only the mapped fields."""
    _seed(org, 2_000)
    assert _recon(project, FORWARD).state == "SUCCESS"
    assert org.queries[0] == ("SELECT Id, Username, FirstName, LastName, Email, Phone, Title, IsActive "
                              "FROM User")
    for record in org.users.values():
        record["Title"] = "Changed in Salesforce"
    requests_before, tokens_before = len(org.requests), org.tokens_issued
    org.session_calls = 10
    result = _recon(project, REVERSE)
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["updated"] == 2_000 and result.summary["changes"]["failed"] == 0
    calls = org.requests[requests_before:]
    patches = [i for i, (method, path) in enumerate(calls) if method == "PATCH"]
    assert len(patches) == 10 and all(path.endswith("/composite/sobjects") for _, path in
                                      (calls[i] for i in patches))
    bodies = [org.bodies[requests_before + i] for i in patches]
    assert all(len(b["records"]) == 200 for b in bodies)
    assert all(set(r) == {"attributes", "id", "Title"} and r["Title"] is None for b in bodies for r in b["records"])
    assert len(calls) < 30  # the patches, 200-id reads of the linked users, the target phase's pages
    assert org.tokens_issued > tokens_before
    assert all(u["Title"] is None for u in org.users.values())


def test_reverse_correlation_finds_existing_users_by_escaped_soql(project: Path, org: FakeSalesforce) -> None:
    """Managed users that already exist in Salesforce under the same Username (any
    case, quotes included) are linked by a SOQL correlation query, not created again."""
    org.add_user(Username="o'brien@example.com", LastName="O'Brien", Email="o'brien@example.com", Alias="obrien")
    org.add_user(Username="ada@example.com", LastName="Lovelace", Email="ada@example.com", Alias="ada")
    loaded = load_project(project)
    managed = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    managed.create({"userName": "o'brien@example.com", "sn": "O'Brien", "mail": "o'brien@example.com"})
    managed.create({"userName": "ADA@example.com", "sn": "Lovelace", "mail": "ada@example.com"})
    result = _recon(project, REVERSE)
    assert result.state == "SUCCESS", result.message
    assert result.summary["situationSummary"]["FOUND"] == 2 and result.summary["changes"]["created"] == 0
    assert result.summary["changes"]["linked"] == 2 and len(org.users) == 2
    correlation = [q for q in org.queries if "WHERE" in q]
    assert any("Username = 'o\\'brien@example.com'" in q for q in correlation), correlation
    again = _recon(project, REVERSE)
    assert again.summary["situationSummary"]["CONFIRMED"] == 2 and again.summary["changes"]["created"] == 0


def test_sample_jobs_schedule_both_mappings(project: Path, org: FakeSalesforce) -> None:
    """The sample's job files are valid: Salesforce into the store every 15 minutes,
    the nightly push back to Salesforce, both naming mappings of the sample."""
    shutil.copytree(SAMPLE / "jobs.d", project / "jobs.d")
    listed = idsync(project, "jobs", "--json", env=sf_env(org))
    assert listed.returncode == 0, listed.stderr
    jobs = {j["name"]: j for j in json.loads(listed.stdout)["jobs"]}
    assert jobs["sync-salesforce-users"]["mappings"] == [FORWARD]
    assert jobs["sync-salesforce-users"]["scheduleDescription"] == "Every 15 minutes"
    assert jobs["push-users-to-salesforce"]["mappings"] == [REVERSE]
    assert all(j["enabled"] for j in jobs.values())


def test_limit_exceeded_while_writing_fails_the_run_before_any_deactivation(project: Path,
                                                                            org: FakeSalesforce) -> None:
    """When the API allowance runs out between the read of a page and its writes, the
    store-to-Salesforce recon retries, then stops FAILED naming the limit; the user
    whose managed user is gone is not deactivated by the failed run."""
    _seed(org, 3)
    assert _recon(project, FORWARD).state == "SUCCESS"
    loaded = load_project(project)
    managed = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    users = _managed(project)
    managed.delete(users["user001@example.com"]["_id"])
    for name in ("user000@example.com", "user002@example.com"):
        managed.update(users[name]["_id"], {"description": "Engineer"})
    org.api_allowance = org.api_calls + 1  # the page's read, then no more
    result = _recon(project, REVERSE, max_deletes=1)
    assert result.state == "FAILED" and "REQUEST_LIMIT_EXCEEDED" in (result.message or ""), result.message
    assert "PATCH /services/data/v44.0/composite/sobjects" in (result.message or "")
    assert org.count("PATCH", "/composite/sobjects") == 0
    assert all(u["IsActive"] is True and not u.get("Title") for u in org.users.values())


def test_a_limit_reached_between_two_collections_keeps_the_users_the_first_created(
        project: Path, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 users made in the store go to Salesforce in two Collections POSTs; the API
    allowance runs out after the first: its 200 users are linked and audited, the other
    100 fail with the limit, and the run stops FAILED when it next asks the org. The next
    recon, with no correlation query that could find the 200 again, creates only the 100
    (creating the 200 again would fail each on DUPLICATE_USERNAME)."""
    sync = project / "conf" / "sync.json"
    config = json.loads(sync.read_text())
    for mapping in config["mappings"]:
        if mapping["name"] == REVERSE:
            mapping.pop("correlationQuery", None)
    sync.write_text(json.dumps(config))
    loaded = load_project(project)
    managed = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    for i in range(300):
        managed.create({"userName": f"new{i:03d}@example.com", "sn": f"New{i}", "mail": f"new{i:03d}@example.com"})
    collection = org._collection

    def spending_the_allowance(method: str, body: Any) -> tuple[int, Any]:
        answer = collection(method, body)
        org.api_allowance = org.api_calls
        return answer

    monkeypatch.setattr(org, "_collection", spending_the_allowance)
    first = _recon(project, REVERSE)
    assert first.state == "FAILED" and "REQUEST_LIMIT_EXCEEDED" in (first.message or ""), first.message
    assert first.summary["changes"].get("created") == 200 and first.summary["changes"].get("failed") == 100
    assert len(org.users) == 200
    monkeypatch.setattr(org, "_collection", collection)
    org.api_allowance = None
    second = _recon(project, REVERSE)
    assert second.state == "SUCCESS", second.message
    assert second.summary["changes"].get("created") == 100 and not second.summary["changes"].get("failed")
    assert len(org.users) == 300


def test_an_alias_cut_in_half_over_the_api_fails_that_user_alone(project: Path, org: FakeSalesforce) -> None:
    """A user created over the API whose userName's Alias (the sample's
    ``substring(0, 8)``) cuts an emoji in two is created (201, never a 500); its
    implicit push fails alone, recorded FAILED naming the Alias transform, and waits for a
    retry; the next store-to-Salesforce recon succeeds, that user its one failure."""
    with serve(project) as client:
        fine = client.post("/openidm/managed/user", params={"_action": "create"}, headers=ADMIN,
                           json={"userName": "fine@example.com", "sn": "Fine", "mail": "fine@example.com"})
        cut = client.post("/openidm/managed/user", params={"_action": "create"}, headers=ADMIN,
                          json={"userName": "abcdefg\U0001F600@example.com", "sn": "Cut", "mail": "cut@example.com"})
        assert (fine.status_code, cut.status_code) == (201, 201), cut.text
        # The pushes are implicit sync's runs: their audit is audit/sync (GET recon lists recons).
        pushes = client.get("/openidm/audit/sync", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"]
    assert org.by_username("fine@example.com") is not None and org.by_username(cut.json()["userName"]) is None
    (failed,) = [e for e in pushes if e["status"] != "SUCCESS"]
    assert failed["status"] == "FAILURE" and "transform of property 'Alias'" in failed["message"]
    assert "half of a character" in failed["message"]
    (run,) = [r for r in RunStore(Store.open(load_project(project).settings.store_url())).recent(10)
              if r["state"] != "SUCCESS"]
    assert run["state"] == "FAILED" and run["job"] == "implicit"
    status = idsync(project, "status", env=sf_env(org))
    assert f"{REVERSE}: 1 object(s) changed in the store did not reach the target" in status.stdout
    result = _recon(project, REVERSE)
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["failed"] == 1 and "half of a character" in result.summary["errors"][0]["message"]
