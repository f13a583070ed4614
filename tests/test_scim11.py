"""The connector with ``SCIMVersion`` 1 against a SCIM 1.1 stand-in: discovery at
ServiceProviderConfigs, 1.0 schema URNs, updates (members too) by PUT, HTTP basic
authentication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from idsync.connectors.scim.connector import ScimSystem, open_scim_system
from idsync.errors import AuthenticationFailed
from idsync.query.parser import parse
from idsync.resource import QuerySpec
from scim11_server import CORE, PASSWORD, USER, Scim11Server, running11

ENTERPRISE_20 = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ENTERPRISE_10 = "urn:scim:schemas:extension:enterprise:1.0"


@pytest.fixture
def server() -> Iterator[Scim11Server]:
    yield from running11()


def _system(server: Scim11Server, **props: Any) -> ScimSystem:
    config = {"configurationProperties": {"SCIMEndpoint": server.url, "SCIMVersion": "1.1",
                                          "authenticationMethod": "BASIC", "user": USER, "password": PASSWORD,
                                          "clientId": None, "clientSecret": None, "tokenEndpoint": None, **props},
              "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
                  "userName": {}, "givenName": {"nativeName": "name.givenName"},
                  "email": {"nativeName": 'emails[type eq "work"].value'},
                  "employeeNumber": {"nativeName": f"{ENTERPRISE_20}:employeeNumber"}}},
                             "group": {"nativeType": "__GROUP__", "properties": {
                                 "displayName": {}, "members": {"type": "array", "memberReference": "userName"}}}}}
    return open_scim_system("scim", config, file="provisioner.openicf-scim.json")


def test_scim11_create_read_update_delete_with_basic_auth(server: Scim11Server) -> None:
    """A 1.1 provider gets 1.0 URNs on create (the enterprise attribute configured with
    the 2.0 URN lands under the 1.0 one), a PUT of the whole user on update (no PATCH
    announced), a DELETE; reads page even when the last page leaves out Resources."""
    system = _system(server)
    assert system.test()["ok"] is True and system.test()["scim"]["version"] == "1.1"
    resource = system.resource("account")
    created = resource.create({"userName": "alice", "givenName": "Alice", "email": "alice@example.com",
                               "employeeNumber": "7"})
    stored = server.users[created["_id"]]
    assert stored["schemas"] == [CORE, ENTERPRISE_10] and stored["name"] == {"givenName": "Alice"}
    assert stored[ENTERPRISE_10] == {"employeeNumber": "7"} and ENTERPRISE_20 not in stored
    assert created["employeeNumber"] == "7"
    resource.update(created["_id"], {"givenName": "Alicia"})
    assert "PUT Users" in server.methods and not any(m.startswith("PATCH") for m in server.methods)
    assert server.users[created["_id"]]["name"] == {"givenName": "Alicia"}
    assert server.users[created["_id"]]["userName"] == "alice"
    (found,) = resource.find(QuerySpec(filter=parse('userName eq "alice"')))
    assert found["email"] == "alice@example.com"
    resource.delete(created["_id"])
    assert server.users == {} and list(resource.pages(QuerySpec())) == []


def test_scim11_refused_basic_credentials(server: Scim11Server) -> None:
    """A wrong basic password is AuthenticationFailed and `test` says so."""
    system = _system(server, password="wrong")
    assert "authentication refused" in system.test()["error"]
    with pytest.raises(AuthenticationFailed):
        system.resource("account").find(QuerySpec())


def test_scim11_group_members_are_put_as_the_whole_list(server: Scim11Server) -> None:
    """A 1.1 group is created with its members named by userName (sent as ids, 1.0 URN);
    a membership change PUTs the group with the new member list, keeping members that
    are not users (a nested group) and the displayName."""
    system = _system(server)
    users = system.resource("account")
    alice, bob = (users.create({"userName": n})["_id"] for n in ("alice", "bob"))
    groups = system.resource("group")
    inner = groups.create({"displayName": "inner"})["_id"]
    created = groups.create({"displayName": "staff", "members": ["alice"]})
    assert created["members"] == ["alice"]
    stored = server.groups[created["_id"]]
    assert stored["schemas"] == [CORE] and stored["members"] == [{"value": alice}]
    server.groups[created["_id"]]["members"].append({"value": inner})
    groups.update(created["_id"], {"members": ["bob"]})
    assert "PUT Groups" in server.methods
    stored = server.groups[created["_id"]]
    assert stored["displayName"] == "staff" and stored["members"] == [{"value": inner}, {"value": bob}]
    (found,) = groups.find(QuerySpec(filter=parse('displayName eq "staff"')))
    assert found["members"] == ["bob"]


def test_scim11_provider_without_service_provider_config(server: Scim11Server) -> None:
    """A provider with no ServiceProviderConfigs (404) passes `test`, announced as
    without PATCH and ETags, and its users are updated by PUT."""
    server.discovery = False
    system = _system(server)
    report = system.test()
    assert report["ok"] is True and report["scim"]["patch"] is False and report["scim"]["etag"] is False
    resource = system.resource("account")
    created = resource.create({"userName": "alice", "givenName": "Alice"})
    resource.update(created["_id"], {"givenName": "Alicia"})
    assert "PUT Users" in server.methods and server.users[created["_id"]]["name"] == {"givenName": "Alicia"}
