"""Bad SCIM and Salesforce provisioner files and ``[store]`` settings: ``idsync validate``
names the file, the key and the problem and exits 78 (never an internal error), and a
daemon told to reload a broken provisioner keeps running on the previous one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import store_url
from fake_salesforce import FakeSalesforce
from idsync.connectors.salesforce.connector import SalesforceSystem
from idsync.connectors.scim.connector import open_scim_system
from idsync.errors import ObjectError, ObjectRejected, PeerUnavailable
from idsync.resource import QuerySpec, WriteOp
from salesforce_sample import PROFILE_ID, running_org, sf_env
from salesforce_sample import sample_project as sf_project
from scim_sample import sample_project
from scim_server import STATIC_TOKEN, ScimServer, running

from samples import idsync

PROV = "provisioner.openicf-scim.json"
SF_PROV = "provisioner.openicf-salesforce.json"
_CP = "configurationProperties"


@pytest.fixture
def server() -> Iterator[ScimServer]:
    yield from running()


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    yield from running_org(tmp_path)


def _edit(project: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = project / "conf" / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _props(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["configurationProperties"].update(values)


def _flags(data: dict[str, Any]) -> None:
    data["objectTypes"]["account"]["properties"]["workEmail"]["flags"] = "NOT_UPDATEABLE"


_SCIM_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("connectorRef a string", lambda data: data.update(connectorRef="scim"), "connectorRef: expected an object"),
    ("endpoint port", _props(SCIMEndpoint="http://[::1"), f"{_CP}.SCIMEndpoint: must be an http(s) URL"),
    ("endpoint host", _props(SCIMEndpoint="http://"), f"{_CP}.SCIMEndpoint: must be an http(s) URL"),
    ("token endpoint", _props(tokenEndpoint="login.example.com"),
     "configurationProperties.tokenEndpoint: must be an http(s) URL"),
    ("caFile missing", _props(caFile="/nonexistent/ca.pem"), f"{_CP}.caFile: file /nonexistent/ca.pem"),
    ("NaN timeout", _props(connectTimeout="NaN"), f"{_CP}.connectTimeout: must be a finite number"),
    ("flags a string", _flags, "objectTypes.account.properties.workEmail.flags: must be a list of flags"),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in _SCIM_CASES], ids=[c[0] for c in _SCIM_CASES])
def test_validate_names_the_scim_provisioner_key(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                                                 expected: str) -> None:
    """Each broken SCIM provisioner is reported as ``file: key: problem`` with exit 78."""
    project = sample_project(tmp_path, store_url("sqlite", tmp_path))
    _edit(project, PROV, change)
    env = {"SCIM_ENDPOINT": "http://127.0.0.1:9/scim/v2", "SCIM_CLIENT_ID": "c", "SCIM_CLIENT_SECRET": "s",
           "SCIM_TOKEN_ENDPOINT": "http://127.0.0.1:9/token"}
    result = idsync(project, "validate", env=env)
    assert result.returncode == 78, result.stdout + result.stderr
    assert f"{project / 'conf' / PROV}: {expected}" in result.stdout + result.stderr
    assert "internal error" not in result.stdout + result.stderr


_SF_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("instanceUrl port", {"instanceUrl": "https://[::1"}, "configurationProperties.instanceUrl: must be an https URL"),
    ("loginUrl port", {"loginUrl": "https://[::1"}, "configurationProperties.loginUrl: must be an https URL"),
    ("caFile missing", {"caFile": "/nonexistent/ca.pem"}, "configurationProperties.caFile: must name an existing"),
    ("caFile a number", {"caFile": 5}, "configurationProperties.caFile: must name an existing"),
]


@pytest.mark.parametrize(("values", "expected"), [c[1:] for c in _SF_CASES], ids=[c[0] for c in _SF_CASES])
def test_validate_names_the_salesforce_provisioner_key(tmp_path: Path, org: FakeSalesforce, values: dict[str, Any],
                                                       expected: str) -> None:
    """Each broken Salesforce provisioner is reported as ``file: key: problem`` with exit 78."""
    project = sf_project(tmp_path, org, store_url("sqlite", tmp_path))
    _edit(project, SF_PROV, _props(**values))
    env = {**sf_env(org), "SALESFORCE_LOGIN_URL": values.get("loginUrl", sf_env(org)["SALESFORCE_LOGIN_URL"])}
    result = idsync(project, "validate", env=env)
    assert result.returncode == 78, result.stdout + result.stderr
    assert f"{project / 'conf' / SF_PROV}: {expected}" in result.stdout + result.stderr
    assert "internal error" not in result.stdout + result.stderr


_SCIM_ENV = {"SCIM_ENDPOINT": "http://127.0.0.1:9/scim/v2", "SCIM_CLIENT_ID": "c", "SCIM_CLIENT_SECRET": "s",
             "SCIM_TOKEN_ENDPOINT": "http://127.0.0.1:9/token"}


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        props = data["configurationProperties"]
        props[new] = props.pop(old)
    return change


def test_misspelt_scim_settings_are_errors_naming_the_key_meant(tmp_path: Path) -> None:
    """``pageSise``, ``maximumRetrys`` and ``liveSyncOverlapp`` (which left page size,
    retries and overlap at their defaults while validate exited 0) are each an error
    naming the key meant, and validate exits 78."""
    project = sample_project(tmp_path, store_url("sqlite", tmp_path))
    _edit(project, PROV, _rename("pageSize", "pageSise"))
    _edit(project, PROV, _props(maximumRetrys=2, liveSyncOverlapp=5))
    result = idsync(project, "validate", env=_SCIM_ENV)
    assert result.returncode == 78, result.stdout + result.stderr
    where = f"{project / 'conf' / PROV}: {_CP}"
    for wrong, meant in (("pageSise", "pageSize"), ("maximumRetrys", "maximumRetries"),
                         ("liveSyncOverlapp", "liveSyncOverlap")):
        assert f"{where}.{wrong}: unknown setting, did you mean {meant}?" in result.stdout + result.stderr


def test_unknown_scim_settings_are_warnings(tmp_path: Path) -> None:
    """A key far from any known one, and an OpenICF setting idsync does not act on that
    asks for something (a proxy), are ``validate`` warnings; PingIDM's ``maximumConnections``
    is not; validate exits 0."""
    project = sample_project(tmp_path, store_url("sqlite", tmp_path))
    _edit(project, PROV, _props(vendorExtension=True, httpProxyHost="proxy.example.com", maximumConnections=10))
    result = idsync(project, "validate", env=_SCIM_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    where = f"warning: {project / 'conf' / PROV}: {_CP}"
    assert f"{where}.vendorExtension: unknown setting" in result.stderr
    assert f"{where}.httpProxyHost: not acted on: set HTTPS_PROXY" in result.stderr
    assert f"{where}.maximumConnections" not in result.stderr


_SF_MISSPELT: list[tuple[str, Callable[[dict[str, Any]], None], list[tuple[str, str]]]] = [
    ("versoin, conectTimeout, maxRetires", _props(versoin=44, conectTimeout=5, maxRetires=3),
     [("versoin", "version"), ("conectTimeout", "connectTimeout"), ("maxRetires", "maxRetries")]),
    ("clientSecrt for clientSecret", _rename("clientSecret", "clientSecrt"), [("clientSecrt", "clientSecret")]),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in _SF_MISSPELT], ids=[c[0] for c in _SF_MISSPELT])
def test_misspelt_salesforce_settings_are_errors_naming_the_key_meant(
        tmp_path: Path, org: FakeSalesforce, change: Callable[[dict[str, Any]], None],
        expected: list[tuple[str, str]]) -> None:
    """Misspelt Salesforce settings (which kept their defaults while validate exited 0, or
    for a required one said only ``clientSecret: is required``) are each an error naming
    the misspelt key and the key meant; validate exits 78."""
    project = sf_project(tmp_path, org, store_url("sqlite", tmp_path))
    _edit(project, SF_PROV, change)
    result = idsync(project, "validate", env=sf_env(org))
    assert result.returncode == 78, result.stdout + result.stderr
    for wrong, meant in expected:
        assert (f"{project / 'conf' / SF_PROV}: {_CP}.{wrong}: unknown setting, did you mean {meant}?"
                in result.stdout + result.stderr)


def test_unknown_salesforce_settings_are_warnings(tmp_path: Path, org: FakeSalesforce) -> None:
    """A key far from any known one, and a proxy setting, are ``validate`` warnings; exit 0."""
    project = sf_project(tmp_path, org, store_url("sqlite", tmp_path))
    _edit(project, SF_PROV, _props(vendorExtension=1, proxyHost="proxy.example.com"))
    result = idsync(project, "validate", env=sf_env(org))
    assert result.returncode == 0, result.stdout + result.stderr
    where = f"warning: {project / 'conf' / SF_PROV}: {_CP}"
    assert f"{where}.vendorExtension: unknown setting" in result.stderr
    assert f"{where}.proxyHost: not acted on: set HTTPS_PROXY" in result.stderr


@pytest.mark.parametrize(("store", "expected"), [
    ('url_file = "missing.txt"', "store.url_file: cannot read"),
    ('url_file = "conf"', "store.url_file: cannot read"),
    ('urll = "postgresql://db/idsync"', "store.urll: unknown setting, did you mean url?"),
])
@pytest.mark.parametrize("command", ["validate", "status"])
def test_a_bad_store_section_is_a_configuration_error(tmp_path: Path, store: str, expected: str, command: str) -> None:
    """An unreadable ``url_file`` or a misspelt ``[store]`` key (which would otherwise leave
    the store on the SQLite default) exits 78 naming ``idsync.toml`` and the key."""
    project = sample_project(tmp_path, store_url("sqlite", tmp_path))
    (project / "conf" / "idsync.toml").write_text(f'state_dir = "state"\n[store]\n{store}\n', encoding="utf-8")
    result = idsync(project, command)
    assert result.returncode == 78, result.stdout + result.stderr
    assert f"{project / 'conf' / 'idsync.toml'}: {expected}" in result.stdout + result.stderr


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_scim_answer_that_is_not_json_fails_that_object_only(server: ScimServer, method: str) -> None:
    """A provider answering one object's read (before an update) or create with a body
    that is not JSON fails that object with a message saying so; the next op is written."""

    user = server.add_user("bjensen", displayName="Barbara")
    resource = open_scim_system("scim", {"configurationProperties": {
        "SCIMEndpoint": server.url, "authToken": STATIC_TOKEN, "maximumRetryWait": 1},
        "objectTypes": {"account": {"properties": {"userName": {}, "displayName": {}}}}},
        file="f.json").resource("account")
    resource.get_many([user["id"]])  # discovery done: the garbled answer is the object's own
    server.garbled.append(method)
    first = (WriteOp("update", id=user["id"], values={"displayName": "Babs"}) if method == "GET"
             else WriteOp("create", values={"userName": "odd"}))
    results = resource.write_batch([first, WriteOp("create", values={"userName": "fresh"})])
    assert isinstance(results[0].error, ObjectError) and "not JSON" in str(results[0].error)
    assert results[1].ok and [u["userName"] for u in server.list("Users", 'userName eq "fresh"')] == ["fresh"]


def _salesforce(org: FakeSalesforce) -> SalesforceSystem:
    """A connector signed in to the stand-in ``org``, with short retries."""
    return SalesforceSystem("salesforce", {"configurationProperties": {
        "loginUrl": f"{org.url}/services/oauth2/token", "clientId": org.client_id, "clientSecret": org.client_secret,
        "refreshToken": next(iter(org.refresh_tokens)), "instanceUrl": org.url, "version": 44,
        "caFile": str(org.ca_file), "retryBackoff": 5, "maxRetries": 2}}, file="provisioner.openicf-salesforce.json")


def test_a_salesforce_create_answered_with_no_json_fails_that_record_only(org: FakeSalesforce) -> None:
    """A create answered 201 with a body that is not JSON is that record's ObjectRejected;
    the next create goes through."""

    def new(name: str) -> dict[str, Any]:
        return {"Username": f"{name}@example.com", "LastName": name.title(), "Email": f"{name}@example.com",
                "Alias": name[:8], "TimeZoneSidKey": "Europe/Paris", "LocaleSidKey": "fr_FR",
                "EmailEncodingKey": "UTF-8", "LanguageLocaleKey": "fr", "ProfileId": PROFILE_ID}

    system = _salesforce(org)
    try:
        users = system.resource("User")
        system.test()  # signed in: the garbled answer is the create's own
        org.fail_next = [(201, b"<html>maintenance</html>")]
        first = users.write_batch([WriteOp("create", values=new("odd"))])
        assert isinstance(first[0].error, ObjectRejected) and "not JSON" in str(first[0].error)
        assert users.write_batch([WriteOp("create", values=new("fresh"))])[0].ok
        assert org.by_username("fresh@example.com") is not None
    finally:
        system.close()


def test_a_salesforce_read_answered_with_no_json_is_a_peer_error(org: FakeSalesforce) -> None:
    """Reading one user whose answer is 200 with a body that is not JSON says so as an
    unavailable peer (exit 69 on the command line), not as an internal error."""
    system = _salesforce(org)
    try:
        users = system.resource("User")
        system.test()
        org.fail_next = [(200, b"<html>maintenance</html>")]
        with pytest.raises(PeerUnavailable, match="not JSON"):
            users.get("005000000000001AAA")
    finally:
        system.close()


@pytest.mark.parametrize("answer", [b"<html>maintenance</html>", b'["not", "a", "query result"]'])
def test_a_salesforce_query_answered_with_no_query_result_is_a_peer_error(org: FakeSalesforce, answer: bytes) -> None:
    """A SOQL query (a recon's read, liveSync's read of the changed records) answered 200
    with a body that is not a JSON query result stops the read as an unavailable peer
    (exit 69, nothing deleted), not as an internal error."""
    system = _salesforce(org)
    try:
        users = system.resource("User")
        system.test()
        org.fail_next = [(200, answer)]
        with pytest.raises(PeerUnavailable, match="the answer is not a JSON query result"):
            users.find(QuerySpec())
    finally:
        system.close()
