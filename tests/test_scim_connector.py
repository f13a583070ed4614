"""The SCIM connector against a real SCIM 2.0 provider (scim2-server on loopback):
paging, filters, attribute paths, writes by PATCH or PUT, ETags, per-object errors,
throttling, and what ``test`` reports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from idsync.connectors.scim.connector import ScimSystem, open_scim_system
from idsync.connectors.scim.writes import member_changes
from idsync.errors import (
    AuthenticationFailed,
    ConfigError,
    ObjectRejected,
    PeerError,
    PeerUnavailable,
    RevisionMismatch,
)
from idsync.query.parser import parse
from idsync.resource import QuerySpec, WriteOp
from scim_server import CLIENT_ID, CLIENT_SECRET, ENTERPRISE, STATIC_TOKEN, ScimServer, running

_TYPES: dict[str, Any] = {
    "account": {"nativeType": "__ACCOUNT__", "properties": {
        "userName": {}, "givenName": {"nativeName": "name.givenName"},
        "familyName": {"nativeName": "name.familyName"},
        "workEmail": {"nativeName": 'emails[type eq "work"].value'},
        "primaryEmail": {"nativeName": "emails[primary eq true].value"},
        "employeeNumber": {"nativeName": f"{ENTERPRISE}:employeeNumber"},
        "login": {"nativeName": "urn:ietf:params:scim:schemas:core:2.0:User:userName"},
    }},
    "group": {"nativeType": "__GROUP__", "properties": {
        "displayName": {}, "members": {"type": "array", "memberReference": "userName"}}},
}


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


def _system(server: ScimServer, **props: Any) -> ScimSystem:
    config = {"configurationProperties": {"SCIMEndpoint": server.url, "authenticationMethod": "TOKEN",
                                          "authToken": STATIC_TOKEN, "maximumRetryWait": 2, **props},
              "objectTypes": _TYPES}
    return open_scim_system("scim", config, file="provisioner.openicf-scim.json")


def _oauth(server: ScimServer, **props: Any) -> ScimSystem:
    oauth: dict[str, Any] = {"authenticationMethod": "OAUTH", "authToken": None, "clientId": CLIENT_ID,
                             "clientSecret": CLIENT_SECRET, "tokenEndpoint": server.token_url}
    return _system(server, **{**oauth, **props})


def _lists(server: ScimServer) -> list[dict[str, list[str]]]:
    return [parse_qs(q) for m, p, q in server.requests if m == "GET" and p == "/v2/Users"]


def test_pages_follow_total_results_and_ask_only_mapped_attributes(server: ScimServer) -> None:
    """Seven users read three at a time come in three pages through startIndex 1, 4, 7,
    each asking with attributes= for the mapped top-level attributes only."""
    for i in range(7):
        server.add_user(f"user{i}", name={"givenName": f"G{i}"})
    resource = _system(server, pageSize=3).resource("account")
    pages = list(resource.pages(QuerySpec(fields=["userName", "givenName"])))
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(o["userName"] for p in pages for o in p) == [f"user{i}" for i in range(7)]
    queries = _lists(server)
    assert [q["startIndex"] for q in queries] == [["1"], ["4"], ["7"]]
    assert queries[0]["attributes"] == ["id,userName,name"]


def test_a_list_that_shrinks_while_it_is_read_stops_the_read(server: ScimServer) -> None:
    """A user deleted in the provider between two pages shifts the later users back one
    index, so one of them would never be seen (and look deleted to a recon): the read
    stops with PeerUnavailable saying the list shrank, instead of ending as if complete."""
    for i in range(6):
        server.add_user(f"user{i}")
    pages = _system(server, pageSize=2).resource("account").pages(QuerySpec(fields=["userName"]))
    first = next(pages)
    assert len(first) == 2
    with server.client() as c:
        c.delete(f"Users/{first[0]['_id']}").raise_for_status()
    with pytest.raises(PeerUnavailable, match="shrank from 6 to 5"):
        next(pages)


def test_an_empty_page_before_total_results_stops_the_read(server: ScimServer) -> None:
    """A provider that answers an empty page while totalResults says more are left has
    cut the list short: the read stops with PeerUnavailable instead of ending as if
    complete (the users never read would look deleted to a recon)."""
    for i in range(6):
        server.add_user(f"user{i}")
    pages = _system(server, pageSize=2).resource("account").pages(QuerySpec(fields=["userName"]))
    assert len(next(pages)) == 2
    server.list_edits.append(lambda body: {**body, "Resources": []})
    with pytest.raises(PeerUnavailable, match="empty page at startIndex 3 of 6"):
        next(pages)


def test_a_list_response_without_total_results_stops_the_read(server: ScimServer) -> None:
    """totalResults is what tells the last page from one that stops short: a
    ListResponse without it (with resources) fails the read (PeerError), rather than
    being read as a one-page list."""
    for i in range(5):
        server.add_user(f"user{i}")
    server.list_edits.append(lambda body: {k: v for k, v in body.items() if k != "totalResults"})
    pages = _system(server, pageSize=2).resource("account").pages(QuerySpec(fields=["userName"]))
    with pytest.raises(PeerError, match="no totalResults"):
        list(pages)


def test_a_resource_without_an_id_reads_with_no_id(server: ScimServer) -> None:
    """A resource answered without its id reads with ``_id`` None (never the text
    "None"), so a recon counts it as an object it cannot tell apart and skips its
    target phase and deletes."""
    server.add_user("user0")
    server.add_user("user1")
    server.list_edits.append(lambda body: {**body, "Resources": [
        {k: v for k, v in r.items() if k != "id" or r.get("userName") != "user1"} for r in body["Resources"]]})
    (page,) = _system(server).resource("account").pages(QuerySpec(fields=["userName"]))
    by_name = {o["userName"]: o["_id"] for o in page}
    assert by_name["user1"] is None and by_name["user0"]


def test_complex_multi_valued_and_extension_paths_read_and_write(server: ScimServer) -> None:
    """name.givenName, emails[type eq "work"].value, emails[primary eq true].value, the
    enterprise employeeNumber and a core attribute written with its schema URN read into
    properties and write back into the right places."""
    server.add_user("bjensen", name={"givenName": "Barbara"},
                    emails=[{"value": "b@home", "type": "home", "primary": True},
                            {"value": "b@work", "type": "work"}], **{ENTERPRISE: {"employeeNumber": "42"}})
    resource = _system(server).resource("account")
    (obj,) = resource.find(QuerySpec(filter=parse('userName eq "bjensen"')))
    assert obj == {**obj, "givenName": "Barbara", "workEmail": "b@work", "primaryEmail": "b@home",
                   "employeeNumber": "42", "login": "bjensen"}
    resource.update(obj["_id"], {"workEmail": "barbara@work", "employeeNumber": "43"})
    stored = server.get("Users", obj["_id"])
    assert stored is not None
    assert {"value": "barbara@work", "type": "work"} in stored["emails"]
    assert {"value": "b@home", "type": "home", "primary": True} in stored["emails"]
    assert stored[ENTERPRISE]["employeeNumber"] == "43"


def test_a_value_filter_matching_several_items_picks_none_in_silence(server: ScimServer) -> None:
    """A user with two work e-mails: workEmail reads as both values (never the first alone),
    writing a work e-mail fails that object naming both and changes nothing, the next op is
    written; removing the work e-mail drops both."""
    two = server.add_user("two", emails=[{"value": "a@work", "type": "work"}, {"value": "b@work", "type": "work"},
                                         {"value": "t@home", "type": "home"}])
    other = server.add_user("other", emails=[{"value": "o@work", "type": "work"}])
    resource = _system(server).resource("account")
    assert resource.get(two["id"])["workEmail"] == ["a@work", "b@work"]
    results = resource.write_batch([WriteOp("update", id=two["id"], values={"workEmail": "c@work"}),
                                    WriteOp("update", id=other["id"], values={"workEmail": "p@work"})])
    assert isinstance(results[0].error, ObjectRejected)
    assert 'matches 2 items ("a@work", "b@work")' in str(results[0].error)
    assert server.get("Users", two["id"])["emails"] == two["emails"]
    assert results[1].ok and resource.get(other["id"])["workEmail"] == "p@work"
    resource.update(two["id"], {"workEmail": None})
    assert server.get("Users", two["id"])["emails"] == [{"value": "t@home", "type": "home"}]


def test_query_filter_becomes_escaped_scim_filter_and_get_many(server: ScimServer) -> None:
    """A _queryFilter value with a quote is escaped in the SCIM filter; get_many reads
    several ids in one id-eq-or filter and leaves out unknown ids."""
    odd = server.add_user('o"neil')
    plain = server.add_user("plain")
    resource = _system(server).resource("account")
    found = resource.find(QuerySpec(filter=parse('userName eq "o\\"neil"')))
    assert [o["_id"] for o in found] == [odd["id"]]
    assert parse_qs(server.requests[-1][2])["filter"] == ['userName eq "o\\"neil"']
    many = resource.get_many([odd["id"], plain["id"], "nope"], ["userName"])
    assert {k: v["userName"] for k, v in many.items()} == {odd["id"]: 'o"neil', plain["id"]: "plain"}


def test_filter_on_one_item_of_a_multi_valued_attribute_matches_that_item_only(server: ScimServer) -> None:
    """`workEmail eq X` (emails[type eq "work"].value) finds the user whose work e-mail is
    X, not the one whose home e-mail is X, also under `!` and with only other fields
    asked for; the provider is sent the widened `emails.value` filter."""
    work = server.add_user("work", emails=[{"value": "x@example.com", "type": "work"}])
    home = server.add_user("home", emails=[{"value": "x@example.com", "type": "home"},
                                           {"value": "h@example.com", "type": "work"}])
    resource = _system(server).resource("account")
    found = resource.find(QuerySpec(filter=parse('workEmail eq "X@example.com"'), fields=["userName"]))
    assert found == [{"_id": work["id"], "userName": "work"}]
    assert parse_qs(server.requests[-1][2])["filter"] == ['emails.value eq "X@example.com"']
    others = resource.find(QuerySpec(filter=parse('!(workEmail eq "x@example.com") and userName pr')))
    assert [o["_id"] for o in others] == [home["id"]]
    either = resource.find(QuerySpec(filter=parse('workEmail co "@example.com" or userName eq "nobody"')))
    assert sorted(o["userName"] for o in either) == ["home", "work"]


def test_lookups_go_one_term_a_request_when_the_provider_refuses_or(server: ScimServer) -> None:
    """A provider that answers 400 invalidFilter to `or` still serves get_many, batched
    correlation and group member names: after the first refusal ids are read by their
    URL and other values with one `eq` a request, and `or` is not tried again."""
    users = [server.add_user(n) for n in ("alice", "bob", "carol")]
    server.add_group("staff", [u["id"] for u in users])
    server.refuse_or = True
    system = _system(server)
    accounts = system.resource("account")
    server.requests.clear()
    many = accounts.get_many([u["id"] for u in users] + ["gone"], ["userName"])
    assert sorted(many) == sorted(u["id"] for u in users)
    assert [p for m, p, _ in server.requests[1:]] == [f"/v2/Users/{i}" for i in [*(u["id"] for u in users), "gone"]]
    refused = [s for m, _, s in server.answers if s == 400]
    assert len(refused) == 1
    found = accounts.find_matching((("userName",),), [("alice",), ("carol",), ("nobody",)], ["userName"])
    assert {k: [o["userName"] for o in v] for k, v in found.items()} == {("alice",): ["alice"], ("carol",): ["carol"]}
    (group,) = system.resource("group").find(QuerySpec(filter=parse('displayName eq "staff"')))
    assert sorted(group["members"]) == ["alice", "bob", "carol"]
    assert len([s for m, _, s in server.answers if s == 400]) == 1


def test_update_patches_only_changed_attributes_with_if_match(server: ScimServer) -> None:
    """With PATCH and ETags announced, an update sends one PatchOp replacing only the
    changed attribute, under If-Match with the version read; an unchanged value sends nothing."""
    user = server.add_user("alice", name={"givenName": "Alice", "familyName": "A"})
    resource = _system(server).resource("account")
    resource.update(user["id"], {"givenName": "Alicia"})
    method, body = server.bodies[-1]
    assert method == f"PATCH /v2/Users/{user['id']}"
    assert body["Operations"] == [{"op": "replace", "path": "name",
                                   "value": {"givenName": "Alicia", "familyName": "A"}}]
    assert server.if_match == [user["meta"]["version"]]
    writes = len(server.bodies)
    resource.update(user["id"], {"givenName": "Alicia"})
    assert len(server.bodies) == writes


def test_etag_conflict_is_retried_once_after_reading_again(server: ScimServer) -> None:
    """Another writer changes the user between the connector's read and its PATCH: the
    provider answers 412 to the stale If-Match, the connector reads again and PATCHes
    once more under the new version, and both changes survive."""
    user = server.add_user("alice", name={"givenName": "Alice", "familyName": "A"})
    resource = _system(server).resource("account")
    server.before_next("PATCH", lambda: server.change("Users", user["id"], "name.familyName", "B"))
    resource.update(user["id"], {"givenName": "Alicia"})
    stored = server.get("Users", user["id"])
    assert stored is not None and stored["name"] == {"givenName": "Alicia", "familyName": "B"}
    # The other writer's PATCH, the connector's stale one, and its second one.
    patches = [status for m, _, status in server.answers if m == "PATCH"]
    assert len(patches) == 3 and patches[1] == 412 and patches[0] < 300 and patches[2] < 300
    assert len(server.if_match) == 2 and server.if_match[0] == user["meta"]["version"] != server.if_match[1]


def test_a_second_etag_conflict_fails_that_object_only(server: ScimServer) -> None:
    """When the PATCH sent after re-reading is refused with 412 too, that update is the
    object's RevisionMismatch (no third try) and the next op of the batch is written."""
    alice, bob = server.add_user("alice"), server.add_user("bob")
    resource = _system(server).resource("account")
    server.fail_next("PATCH", 412, retry_after=None)
    server.fail_next("PATCH", 412, retry_after=None)
    results = resource.write_batch([WriteOp("update", id=alice["id"], values={"givenName": "Alicia"}),
                                    WriteOp("update", id=bob["id"], values={"givenName": "Robert"})])
    assert isinstance(results[0].error, RevisionMismatch) and "412" in str(results[0].error)
    assert results[1].ok
    assert [m for m, p, _ in server.requests if p.endswith(alice["id"])] == ["GET", "PATCH", "GET", "PATCH"]
    stored = server.get("Users", bob["id"])
    assert stored is not None and stored["name"]["givenName"] == "Robert"


def test_put_when_patch_is_not_announced() -> None:
    """A provider whose ServiceProviderConfig says no PATCH gets the whole resource by PUT."""
    for server in running(patch=False):
        user = server.add_user("alice", name={"givenName": "Alice"})
        _system(server).resource("account").update(user["id"], {"givenName": "Alicia"})
        method, body = server.bodies[-1]
        assert method == f"PUT /v2/Users/{user['id']}"
        assert body["userName"] == "alice" and body["name"] == {"givenName": "Alicia"} and "meta" not in body


def test_duplicate_user_name_fails_that_object_only(server: ScimServer) -> None:
    """A 409 (uniqueness) on one create and a 400 (a value of the wrong type) on another
    are those objects' ObjectRejected, with the provider's reason; the next op in the
    batch is still written."""
    server.add_user("taken")
    resource = open_scim_system("scim", {"configurationProperties": {
        "SCIMEndpoint": server.url, "authToken": STATIC_TOKEN}, "objectTypes": {"account": {"properties": {
            "userName": {}, "active": {"type": "boolean"}}}}}, file="f.json").resource("account")
    results = resource.write_batch([WriteOp("create", values={"userName": "taken"}),
                                    WriteOp("create", values={"userName": "odd", "active": {"not": "boolean"}}),
                                    WriteOp("create", values={"userName": "fresh"})])
    assert isinstance(results[0].error, ObjectRejected) and "409" in str(results[0].error)
    assert "uniqueness" in str(results[0].error)
    assert isinstance(results[1].error, ObjectRejected) and "HTTP 400" in str(results[1].error)
    assert results[2].ok and [u["userName"] for u in server.list("Users", 'userName eq "fresh"')] == ["fresh"]


def test_group_membership_changes_are_patch_add_and_remove(server: ScimServer) -> None:
    """Members are named by userName; a change adds and removes single members, and a
    member that is not a user (another group) is left in place."""
    alice, bob, carol = (server.add_user(n) for n in ("alice", "bob", "carol"))
    inner = server.add_group("inner")
    group = server.add_group("staff", [alice["id"], bob["id"], inner["id"]])
    resource = _system(server).resource("group")
    (obj,) = resource.find(QuerySpec(filter=parse('displayName eq "staff"')))
    assert sorted(obj["members"]) == ["alice", "bob"]
    resource.update(group["id"], {"members": ["alice", "carol"]})
    _, body = server.bodies[-1]
    assert body["Operations"] == [
        {"op": "add", "path": "members", "value": [{"value": carol["id"]}]},
        {"op": "remove", "path": f'members[value eq "{bob["id"]}"]'},
    ]
    stored = server.get("Groups", group["id"])
    assert stored is not None
    assert sorted(m["value"] for m in stored["members"]) == sorted([alice["id"], carol["id"], inner["id"]])


def test_the_members_of_a_large_group_are_compared_in_one_pass() -> None:
    """An update of a group of 20,000 members to another 20,000, half of them new, finds
    the 10,000 to add and the 10,000 to remove in well under a second, in the lists'
    order: a search of each member through the other list took 13 s of CPU."""
    have = [f"2819c223-7f76-453a-919d-{i:012d}" for i in range(20_000)]
    want = [f"2819c223-7f76-453a-919d-{i:012d}" for i in range(10_000, 30_000)]
    began = time.process_time()
    add, remove = member_changes(have, want)
    assert time.process_time() - began < 2
    assert add == want[10_000:] and remove == have[:10_000]


def test_throttling_is_retried_honouring_retry_after(server: ScimServer) -> None:
    """A 429 with Retry-After: 1 waits about a second and retries; a 503 that never ends
    becomes PeerUnavailable after the configured retries."""
    server.add_user("alice")
    resource = _system(server, maximumRetries=2).resource("account")
    server.fail_next("GET", 429, retry_after="1")
    started = time.monotonic()
    assert len(resource.find(QuerySpec())) == 1
    assert 0.9 <= time.monotonic() - started < 5
    for _ in range(3):
        server.fail_next("GET", 503)
    with pytest.raises(PeerUnavailable, match="503"):
        resource.find(QuerySpec())


def test_oauth_token_cached_renewed_and_refetched_after_401(server: ScimServer) -> None:
    """One client-credentials token serves many requests; it is renewed tokenRenewSeconds
    before expiry; a token the provider revoked is replaced and the request resent."""
    server.token_lifetime = 61
    server.add_user("alice")
    resource = _oauth(server, tokenRenewSeconds=60).resource("account")
    resource.find(QuerySpec())
    resource.find(QuerySpec())
    assert server.tokens_issued == 1
    time.sleep(1.1)
    resource.find(QuerySpec())
    assert server.tokens_issued == 2
    server.token_lifetime = 3600
    server.revoke_tokens()
    assert len(resource.find(QuerySpec())) == 1
    assert server.tokens_issued == 3


def test_a_token_shorter_lived_than_the_renewal_margin_serves_half_its_life(server: ScimServer) -> None:
    """A token endpoint issuing tokens that live no longer than tokenRenewSeconds (30 s
    against the default 60) does not make every request fetch a new token: each token
    serves requests for half its life."""
    server.token_lifetime = 30
    server.add_user("alice")
    resource = _oauth(server).resource("account")
    for _ in range(3):
        resource.find(QuerySpec())
    assert server.tokens_issued == 1
    assert [m for m, p, _ in server.requests if p == "/oauth/token"] == ["POST"]


def test_refused_credentials_fail_with_authentication_message(server: ScimServer) -> None:
    """A wrong client secret, a wrong static token or a 403 is AuthenticationFailed; the
    message names the endpoint and the status, never the secret."""
    with pytest.raises(AuthenticationFailed, match="invalid_client") as caught:
        _oauth(server, clientSecret="wrong-secret").resource("account").find(QuerySpec())
    assert "wrong-secret" not in str(caught.value)
    with pytest.raises(AuthenticationFailed, match="HTTP 401"):
        _system(server, authToken="bad-token").resource("account").find(QuerySpec())
    server.fail_next("GET", 403, retry_after=None)
    with pytest.raises(AuthenticationFailed, match=r"authentication refused.*HTTP 403"):
        _system(server).resource("account").find(QuerySpec())


def test_a_token_endpoint_answering_no_token_is_an_unavailable_peer_not_refused_credentials(
        server: ScimServer) -> None:
    """A token endpoint answering 200 with no token (a web page: a wrong tokenEndpoint, a
    proxy's page) is no refusal of the credentials (exit 77) but a peer not answering as one
    (69), saying what it answered."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>Sign in</body></html>")

        def log_message(self, *_: Any) -> None:
            pass

    page = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{page.server_port}/login"
        with pytest.raises(PeerUnavailable, match="answered HTTP 200 without an access_token") as caught:
            _oauth(server, tokenEndpoint=endpoint).resource("account").find(QuerySpec())
        assert caught.value.exit_code == 69 and CLIENT_SECRET not in str(caught.value)
    finally:
        page.shutdown()


def test_test_reports_ok_or_the_precise_reason(server: ScimServer) -> None:
    """`test` is ok with features listed; else it names a 401, an unreachable token
    endpoint, a malformed ServiceProviderConfig, or an unreachable SCIM endpoint."""
    report = _oauth(server).test()
    assert report["ok"] is True and report["scim"] == {"version": "2.0", "patch": True, "etag": True,
                                                       "filter": True}
    no_token = _oauth(server, tokenEndpoint="http://127.0.0.1:1/oauth/token").test()
    assert no_token["ok"] is False
    assert "cannot reach the token endpoint http://127.0.0.1:1/oauth/token" in no_token["error"]
    bad = _system(server, authToken="bad-token").test()
    assert bad["ok"] is False and "authentication refused" in bad["error"] and "401" in bad["error"]
    server.broken_config = True
    broken = _system(server).test()
    assert broken["ok"] is False and "bad schema" in broken["error"]
    server.stop()
    gone = _system(server).test()
    assert gone["ok"] is False and "cannot reach" in gone["error"]


def test_configuration_errors_name_the_key() -> None:
    """A missing endpoint, an unknown version or a missing OAuth secret is a ConfigError
    naming the key; null is accepted for what the chosen method does not use."""
    def config(**props: Any) -> dict[str, Any]:
        return {"configurationProperties": {"SCIMEndpoint": "https://scim.example.com/v2", **props}}

    with pytest.raises(ConfigError, match="SCIMEndpoint"):
        open_scim_system("scim", {"configurationProperties": {"SCIMEndpoint": None}}, file="f.json")
    with pytest.raises(ConfigError, match="SCIMVersion"):
        open_scim_system("scim", config(SCIMVersion=3), file="f.json")
    with pytest.raises(ConfigError, match="clientSecret"):
        open_scim_system("scim", config(authenticationMethod="OAUTH", clientId="x", clientSecret=None,
                                        tokenEndpoint="https://t"), file="f.json")
    system = open_scim_system("scim", config(authenticationMethod="BASIC", user="u", password="p",
                                             clientId=None, tokenEndpoint=None, authToken=None), file="f.json")
    assert system.resource("account").name == "system/scim/account"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ScimServer, str]]:
    from idsync_dev.certs import make_test_certificates

    certs = make_test_certificates(tmp_path / "tls", ("127.0.0.1",))
    for server in running(tls=(str(certs.cert_file), str(certs.key_file))):
        yield server, str(certs.ca_file)


def test_tls_certificates_are_verified_unless_explicitly_accepted(tls_server: tuple[ScimServer, str]) -> None:
    """Against an HTTPS provider whose certificate comes from a private CA, the
    connector (and its OAuth token request) refuses the certificate by default and when
    ``acceptSelfSignedCertificates`` is ``false``, also as the string a ``&{VAR|false}``
    substitution leaves; ``caFile`` naming the CA, or ``acceptSelfSignedCertificates``
    true, connects."""
    server, ca_file = tls_server
    server.add_user("alice")
    for props in ({}, {"acceptSelfSignedCertificates": False}, {"acceptSelfSignedCertificates": "false"},
                  {"acceptSelfSignedCertificates": " False "}):
        for open_system in (_system, _oauth):
            report = open_system(server, **props).test()
            assert report["ok"] is False, props
            assert "TLS verification failed" in report["error"], report
    for props in ({"caFile": ca_file}, {"acceptSelfSignedCertificates": True},
                  {"acceptSelfSignedCertificates": "true"}):
        for open_system in (_system, _oauth):
            report = open_system(server, **props).test()
            assert report["ok"] is True, (props, report)
    with pytest.raises(ConfigError, match="acceptSelfSignedCertificates"):
        _system(server, acceptSelfSignedCertificates="no")
