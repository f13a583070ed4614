"""The Salesforce connector against the local stand-in: sessions, reads, writes, limits."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_salesforce import FakeSalesforce
from idsync.connectors.salesforce.config import parse_salesforce_config
from idsync.connectors.salesforce.connector import SalesforceResource, SalesforceSystem
from idsync.errors import AuthenticationFailed, ConfigError, NotFound, ObjectRejected, PeerUnavailable, TLSError
from idsync.query import parse as parse_filter
from idsync.resource import QuerySpec, WriteOp
from salesforce_sample import PROFILE_ID, running_org, sample_project, sf_env

from samples import idsync


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    yield from running_org(tmp_path)

_REQUIRED = {"TimeZoneSidKey": "Europe/Paris", "LocaleSidKey": "fr_FR", "EmailEncodingKey": "UTF-8",
             "LanguageLocaleKey": "fr", "ProfileId": PROFILE_ID}


def _config(org: FakeSalesforce, **props: object) -> dict[str, object]:
    return {"enabled": True, "configurationProperties": {
        "loginUrl": f"{org.url}/services/oauth2/token", "clientId": org.client_id, "clientSecret": org.client_secret,
        "refreshToken": next(iter(org.refresh_tokens)), "instanceUrl": org.url, "version": 44,
        "caFile": str(org.ca_file), "retryBackoff": 5, "maxRetries": 2, **props}}


@pytest.fixture
def system(org: FakeSalesforce) -> Iterator[SalesforceSystem]:
    sf = SalesforceSystem("salesforce", _config(org), file="provisioner.openicf-salesforce.json")
    yield sf
    sf.close()


@pytest.fixture
def users(system: SalesforceSystem) -> SalesforceResource:
    return system.resource("User")


def _new(name: str, **extra: object) -> dict[str, object]:
    return {"Username": f"{name}@example.com", "LastName": name.title(), "Email": f"{name}@example.com",
            "Alias": name[:8], **_REQUIRED, **extra}


def test_refresh_token_grant_and_session_renewal(org: FakeSalesforce, users: SalesforceResource) -> None:
    """The first call gets a token with the refresh-token grant; a 401 INVALID_SESSION_ID
    later gets one new token and the same request succeeds."""
    org.add_user(**_new("ada"))
    assert [o["Username"] for p in users.pages(QuerySpec(fields=["Username"])) for o in p] == ["ada@example.com"]
    assert org.tokens_issued == 1
    org.expire_sessions()
    assert users.get(next(iter(org.users)), ["Username"])["Username"] == "ada@example.com"  # type: ignore[index]
    assert org.tokens_issued == 2


def test_access_token_is_shared_by_clients_of_one_connection(org: FakeSalesforce) -> None:
    """Clients opened one after another for the same connection (the HTTP API opens
    one per managed change) reuse one access token; once it expires, the first to
    notice gets a new one and the other adopts it instead of asking again."""
    org.add_user(**_new("ada"))
    first = SalesforceSystem("salesforce", _config(org), file="p.json")
    second = SalesforceSystem("salesforce", _config(org), file="p.json")
    try:
        for sf in (first, second, first):
            assert len(sf.resource("User").find(QuerySpec(fields=["Username"]))) == 1
        assert org.tokens_issued == 1
        org.expire_sessions()
        for sf in (second, first):
            assert len(sf.resource("User").find(QuerySpec(fields=["Username"]))) == 1
        assert org.tokens_issued == 2
    finally:
        first.close()
        second.close()


def test_refused_refresh_token_is_a_clear_authentication_error(org: FakeSalesforce) -> None:
    """invalid_grant becomes AuthenticationFailed naming the cause, without the token."""
    sf = SalesforceSystem("salesforce", _config(org, refreshToken="5Aep-revoked-secret"), file="p.json")
    with pytest.raises(AuthenticationFailed) as caught:
        list(sf.resource("User").pages(QuerySpec()))
    assert "invalid_grant" in str(caught.value) and "refresh token was refused" in str(caught.value)
    assert "5Aep-revoked-secret" not in str(caught.value)
    report = sf.test()
    assert report["ok"] is False and "invalid_grant" in report["error"]
    assert "5Aep-revoked-secret" not in json.dumps(report)
    sf.close()


def test_recon_with_a_revoked_refresh_token_stops_with_an_authentication_error(
        tmp_path: Path, org: FakeSalesforce) -> None:
    """`idsync recon` with a refresh token Salesforce refuses exits 77 (EX_NOPERM),
    says the refresh token was refused and how to get a new one, and prints no secret."""
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
    env = {**sf_env(org), "SALESFORCE_REFRESH_TOKEN": "5Aep861-revoked-token"}
    recon = idsync(project, "recon", "systemSalesforceUser_managedUser", env=env)
    output = recon.stdout + recon.stderr
    assert recon.returncode == 77, output
    assert "refresh token was refused" in output and "idsync salesforce authorize" in output
    assert "5Aep861-revoked-token" not in output and org.client_secret not in output
    assert org.requests == []


def test_tls_is_verified_by_default(org: FakeSalesforce) -> None:
    """Without the stand-in's CA, the self-signed certificate is refused as a TLS error."""
    config = _config(org)
    del config["configurationProperties"]["caFile"]  # type: ignore[attr-defined]
    sf = SalesforceSystem("salesforce", config, file="p.json")
    with pytest.raises(TLSError):
        list(sf.resource("User").pages(QuerySpec()))
    sf.close()


def test_an_access_token_is_never_sent_to_a_plain_http_instance(org: FakeSalesforce) -> None:
    """Without a configured instanceUrl, the token response names the instance; when
    the (verified, HTTPS) token endpoint names an http:// one, no API call is made
    there with the access token: the read fails naming the reason, not the token."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        org.instance_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        config = _config(org, readTimeout=2000)
        del config["configurationProperties"]["instanceUrl"]  # type: ignore[attr-defined]
        sf = SalesforceSystem("salesforce", config, file="p.json")
        with pytest.raises(AuthenticationFailed, match="not https") as caught:
            list(sf.resource("User").pages(QuerySpec()))
        sf.close()
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody came
    assert org.access_tokens and org.access_tokens[-1] not in str(caught.value)


def test_missing_configuration_names_the_key(org: FakeSalesforce) -> None:
    """A missing clientSecret is a ConfigError naming the key."""
    config = _config(org)
    del config["configurationProperties"]["clientSecret"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"configurationProperties\.clientSecret: is required"):
        SalesforceSystem("salesforce", config, file="p.json")


def test_seed_configuration_properties_are_read() -> None:
    """The seed's configurationProperties: loginUrl as a preset, a My Domain / test
    tenant host or the full token URL; version 44; timeouts in milliseconds; a bad
    interval names its key; the secrets stay out of the settings' repr."""
    props = {"loginUrl": "https://eu26.lightning.force.com", "clientId": "3MVG9id", "clientSecret": "4850s3cret",
             "refreshToken": "5Aep861r3fresh", "instanceUrl": "https://example-com.cs1.my.salesforce.com/",
             "version": 44, "connectTimeout": 120000, "idleCheckInterval": 10000}
    s = parse_salesforce_config("p.json", {"enabled": True, "configurationProperties": props})
    assert s.token_url == "https://eu26.lightning.force.com/services/oauth2/token"
    assert s.instance_url == "https://example-com.cs1.my.salesforce.com" and s.version == "v44.0"
    assert (s.connect_timeout, s.idle_check_interval) == (120.0, 10.0)
    assert "s3cret" not in repr(s) and "r3fresh" not in repr(s)
    for login, url in (("sandbox", "https://test.salesforce.com/services/oauth2/token"),
                       ("https://login.salesforce.com/services/oauth2/token",
                        "https://login.salesforce.com/services/oauth2/token")):
        assert parse_salesforce_config("p.json", {"configurationProperties": {**props, "loginUrl": login}}
                                       ).token_url == url
    with pytest.raises(ConfigError, match=r"configurationProperties\.idleCheckInterval"):
        parse_salesforce_config("p.json", {"configurationProperties": {**props, "idleCheckInterval": "soon"}})
    with pytest.raises(ConfigError, match=r"configurationProperties\.version"):
        parse_salesforce_config("p.json", {"configurationProperties": {**props, "version": "latest"}})


def test_disabled_system_is_refused(tmp_path: Path, org: FakeSalesforce) -> None:
    """With "enabled": false the connector is not used: `idsync test` says it is
    disabled (a configuration error, 78) and a recon stops with one, before any request."""
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
    prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
    prov_file.write_text(json.dumps({**json.loads(prov_file.read_text()), "enabled": False}))
    tested = idsync(project, "test", "--json", env=sf_env(org))
    (report,) = json.loads(tested.stdout)
    assert tested.returncode == 78 and report["ok"] is False and "disabled" in report["error"]
    recon = idsync(project, "recon", "systemSalesforceUser_managedUser", env=sf_env(org))
    assert recon.returncode == 78 and "disabled" in recon.stderr
    assert org.tokens_issued == 0 and org.requests == []


def test_paging_follows_next_records_url(org: FakeSalesforce, users: SalesforceResource) -> None:
    """450 users in batches of 200 come as three pages, read via nextRecordsUrl; only
    the requested fields are selected."""
    for i in range(450):
        org.add_user(**_new(f"u{i:03d}"))
    pages = list(users.pages(QuerySpec(fields=["Username", "Email"], page_size=200)))
    assert [len(p) for p in pages] == [200, 200, 50]
    assert set(pages[0][0]) == {"_id", "Username", "Email"}
    assert org.count("GET", "/query/01g") == 2


def test_a_batch_not_done_without_next_records_url_stops_the_read(
        org: FakeSalesforce, users: SalesforceResource) -> None:
    """A batch that says it is not done but gives no nextRecordsUrl cannot be followed:
    the read stops with PeerUnavailable after the first page instead of ending as if
    complete (the records never read would look deleted to a recon)."""
    for i in range(450):
        org.add_user(**_new(f"u{i:03d}"))
    org.batch_edits = [lambda body: {k: v for k, v in body.items() if k != "nextRecordsUrl"}]
    pages = users.pages(QuerySpec(fields=["Username"], page_size=200))
    assert len(next(pages)) == 200
    with pytest.raises(PeerUnavailable, match="without a nextRecordsUrl"):
        next(pages)


def test_a_query_done_short_of_its_total_size_stops_the_read(
        org: FakeSalesforce, users: SalesforceResource) -> None:
    """A query whose batches end (done) with fewer records than its totalSize is an
    incomplete read: PeerUnavailable names both numbers."""
    for i in range(450):
        org.add_user(**_new(f"u{i:03d}"))
    org.batch_edits = [lambda body: {**{k: v for k, v in body.items() if k != "nextRecordsUrl"}, "done": True}]
    with pytest.raises(PeerUnavailable, match="after 200 of its 450 records"):
        list(users.pages(QuerySpec(fields=["Username"], page_size=200)))


def test_query_filter_becomes_escaped_soql(org: FakeSalesforce, users: SalesforceResource) -> None:
    """_queryFilter comparisons, sw, and a quote in the value select exactly the matching users."""
    org.add_user(**_new("obrien", LastName="O'Brien"))
    org.add_user(**_new("smith"))
    found = users.find(QuerySpec(filter=parse_filter("LastName eq \"O'Brien\""), fields=["LastName"]))
    assert [o["LastName"] for o in found] == ["O'Brien"]
    found = users.find(QuerySpec(filter=parse_filter('Username sw "smi" and IsActive eq true'), fields=["Username"]))
    assert [o["Username"] for o in found] == ["smith@example.com"]
    found = users.find(QuerySpec(filter=parse_filter('LastName eq "x\' OR Id != null OR LastName = \'y"')))
    assert found == []


def test_get_many_and_get_by_id(org: FakeSalesforce, users: SalesforceResource) -> None:
    """Ids are read in one query; unknown or malformed ids are absent; a 15-character id works."""
    a, b = org.add_user(**_new("ada")), org.add_user(**_new("bob"))
    got = users.get_many([a, b, "005000000000999AAA", "bad'id"], ["Username"])
    assert {k: v["Username"] for k, v in got.items()} == {a: "ada@example.com", b: "bob@example.com"}
    assert users.get(a[:15], ["Email"]) == {"_id": a, "Email": "ada@example.com"}
    assert users.get("005000000000999AAA") is None


def test_batched_writes_use_collections(org: FakeSalesforce, users: SalesforceResource) -> None:
    """250 creates cost two composite requests; updates send only the changed fields."""
    results = users.write_batch([WriteOp("create", values=_new(f"n{i:03d}")) for i in range(250)])
    assert all(r.ok for r in results) and len(org.users) == 250
    assert org.count("POST", "/composite/sobjects") == 2
    ids = [r.id for r in results[:3]]
    updates = users.write_batch([WriteOp("update", id=i, values={"Title": "Engineer"}) for i in ids if i])
    assert all(r.ok for r in updates)
    assert org.count("PATCH", "/composite/sobjects") == 1
    assert all(org.users[i]["Title"] == "Engineer" for i in ids if i)


def test_single_writes_use_sobject_endpoints(org: FakeSalesforce, users: SalesforceResource) -> None:
    """One op alone uses POST sobjects/User and PATCH sobjects/User/{id}."""
    created = users.create(_new("solo"))
    users.update(created["_id"], {"Phone": "555-0100"})
    assert org.count("POST", "/sobjects/User") == 1 and org.count("PATCH", "/sobjects/User/") == 1
    assert org.users[created["_id"]]["Phone"] == "555-0100"


def test_api_versions_without_collections_write_record_by_record(org: FakeSalesforce) -> None:
    """Before API 42.0 there are no sObject Collections: a batch is written with one
    single-record request per op, and each still fails alone."""
    org.version = "v41.0"
    sf = SalesforceSystem("salesforce", _config(org, version=41), file="p.json")
    try:
        taken = org.add_user(**_new("taken"))
        ops = [WriteOp("create", values=_new("one")), WriteOp("create", values=_new("taken")),
               WriteOp("update", id=taken, values={"Title": "Boss"}), WriteOp("delete", id=taken)]
        results = sf.resource("User").write_batch(ops)
        assert [r.ok for r in results] == [True, False, True, True]
        assert org.count("POST", "/sobjects/User") == 2 and org.count("PATCH", "/sobjects/User/") == 2
        assert org.count("POST", "/composite") == org.count("PATCH", "/composite") == 0
        assert org.users[taken]["Title"] == "Boss" and org.users[taken]["IsActive"] is False
        assert results[3].message is not None and "deactivated" in results[3].message
    finally:
        sf.close()


def test_field_errors_fail_their_object_only(org: FakeSalesforce, users: SalesforceResource) -> None:
    """In one batch, a missing required field and a duplicate username fail those
    records with Salesforce's code and fields; the others are written."""
    org.add_user(**_new("taken"))
    bad = _new("nolast")
    del bad["LastName"]
    results = users.write_batch([WriteOp("create", values=_new("good")), WriteOp("create", values=bad),
                                 WriteOp("create", values=_new("taken"))])
    assert [r.ok for r in results] == [True, False, False]
    assert isinstance(results[1].error, ObjectRejected)
    assert "REQUIRED_FIELD_MISSING" in str(results[1].error) and "(fields: LastName)" in str(results[1].error)
    assert "DUPLICATE_USERNAME" in str(results[2].error)
    with pytest.raises(ObjectRejected, match="REQUIRED_FIELD_MISSING"):
        users.create(bad)
    with pytest.raises(NotFound):
        users.update("005000000000999AAA", {"Title": "x"})


def test_delete_deactivates(org: FakeSalesforce, users: SalesforceResource) -> None:
    """A delete never deletes a user: it sets IsActive false."""
    uid = org.add_user(**_new("leaver"))
    users.delete(uid)
    assert org.users[uid]["IsActive"] is False
    assert org.count("DELETE", "/sobjects") == 0


def test_request_limit_is_retried_then_fails_cleanly(org: FakeSalesforce, users: SalesforceResource) -> None:
    """REQUEST_LIMIT_EXCEEDED and 503 are retried with backoff; when they persist the
    call fails with PeerUnavailable naming the code."""
    org.add_user(**_new("ada"))
    org.fail_next = [(503, [{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}]),
                     (403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])]
    assert len(users.find(QuerySpec())) == 1
    org.api_allowance = org.api_calls
    with pytest.raises(PeerUnavailable, match="REQUEST_LIMIT_EXCEEDED after 3 attempts"):
        users.find(QuerySpec())


def test_idsync_test_reports_ok_or_the_reason(tmp_path: Path, org: FakeSalesforce) -> None:
    """`idsync test` on the sample says ok with the stand-in, and the reason (no
    secret) when the client secret is wrong."""
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
    ok = idsync(project, "test", "--json", env=sf_env(org))
    assert ok.returncode == 0, ok.stderr
    (report,) = json.loads(ok.stdout)
    assert report["ok"] is True and report["name"] == "salesforce" and "User" in report["objectTypes"]
    bad = idsync(project, "test", "--json", env={**sf_env(org), "SALESFORCE_CLIENT_SECRET": "wrong-s3cret"})
    (report,) = json.loads(bad.stdout)
    assert report["ok"] is False and "invalid_client" in report["error"]
    assert "wrong-s3cret" not in bad.stdout + bad.stderr
    assert next(iter(org.refresh_tokens)) not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_system_query_and_get_through_the_cli(tmp_path: Path, org: FakeSalesforce) -> None:
    """`idsync system query/get salesforce User` read users by _queryFilter and by id."""
    uid = org.add_user(**_new("ada"))
    org.add_user(**_new("bob"))
    project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
    found = idsync(project, "system", "query", "salesforce", "User", "--filter", 'Email eq "ADA@example.com"',
                   env=sf_env(org))
    assert found.returncode == 0, found.stderr
    assert [u["_id"] for u in json.loads(found.stdout)] == [uid]
    got = idsync(project, "system", "get", "salesforce", "User", uid, env=sf_env(org))
    assert json.loads(got.stdout)["Username"] == "ada@example.com"
    missing = idsync(project, "system", "get", "salesforce", "User", "005000000000999AAA", env=sf_env(org))
    assert missing.returncode == 66
