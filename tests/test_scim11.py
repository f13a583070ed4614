"""The connector with ``SCIMVersion`` 1 against a SCIM 1.1 stand-in: discovery at
ServiceProviderConfigs, 1.0 schema URNs, updates by PUT, HTTP basic authentication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from idsync.connectors.base import QuerySpec
from idsync.connectors.scim import ScimSystem, open_scim_system
from idsync.errors import AuthenticationFailed
from idsync.query.parser import parse
from scim11_server import CORE, PASSWORD, USER, Scim11Server, running11


@pytest.fixture
def server() -> Iterator[Scim11Server]:
    yield from running11()


def _system(server: Scim11Server, **props: Any) -> ScimSystem:
    config = {"configurationProperties": {"SCIMEndpoint": server.url, "SCIMVersion": "1.1",
                                          "authenticationMethod": "BASIC", "user": USER, "password": PASSWORD,
                                          "clientId": None, "clientSecret": None, "tokenEndpoint": None, **props},
              "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
                  "userName": {}, "givenName": {"nativeName": "name.givenName"},
                  "email": {"nativeName": 'emails[type eq "work"].value'}}}}}
    return open_scim_system("scim", config, file="provisioner.openicf-scim.json")


def test_scim11_create_read_update_delete_with_basic_auth(server: Scim11Server) -> None:
    """A 1.1 provider gets 1.0 URNs on create, a PUT of the whole user on update (no
    PATCH announced), a DELETE; reads page even when the last page leaves out Resources."""
    system = _system(server)
    assert system.test()["ok"] is True and system.test()["scim"]["version"] == "1.1"
    resource = system.resource("account")
    created = resource.create({"userName": "alice", "givenName": "Alice", "email": "alice@example.com"})
    stored = server.users[created["_id"]]
    assert stored["schemas"] == [CORE] and stored["name"] == {"givenName": "Alice"}
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
