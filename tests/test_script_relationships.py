"""Relationship paths in scripts (``managed/TYPE/ID/PROPERTY[/REF]``), answered by
``openidm`` as PingIDM answers them, against a real store: roles granted, listed and
removed by a custom endpoint and by a ``postCreate`` script, the references' shape and
the referenced objects' fields, a missing reference null, both ends pushed by implicit
sync, a role's ``onDelete`` querying its members, a dry run refused, and a bad
reference or path an error naming it.

The project is the repository's ``managed.json`` (users, roles, assignments), plus an
``account`` type that a mapping of users fills with each user's role ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, WITH_POSTGRESQL
from file_projects import file_project
from idsync.config.project import Project, load_project
from idsync.errors import ObjectRejected, ScriptError
from idsync.managed.router import scripting
from idsync.store.database import Store

_JS = "text/javascript"
ROLE_IDS = ("source ? source.map(function (r) { return r._refResourceId; }).sort() : []")
ACCOUNTS = {"name": "user_account", "source": "managed/user", "target": "managed/account",
            "properties": [{"source": "userName", "target": "login"},
                           {"source": "roles", "target": "roleIds", "transform": {"type": _JS, "source": ROLE_IDS}}],
            "policies": [{"situation": s, "action": a} for s, a in (
                ("ABSENT", "CREATE"), ("FOUND", "UPDATE"), ("CONFIRMED", "UPDATE"), ("MISSING", "CREATE"))]}
# A custom endpoint over one user's roles: GET lists them (with each role's name), POST
# grants the role named in the body, DELETE USER/REF removes one reference.
GRANTS = """(function () {
  var parts = request.resourcePath.split('/'), roles = 'managed/user/' + parts[0] + '/roles';
  if (request.method === 'read') {
    return openidm.query(roles, {_queryFilter: 'true'}, ['_ref', 'name']);
  }
  if (request.method === 'create') {
    return openidm.create(roles, null, {_ref: 'managed/role/' + request.content.role,
                                        _refProperties: {grantedBy: context.security.authenticationId}});
  }
  if (request.method === 'delete') {
    return openidm.delete(roles + '/' + parts[1], null);
  }
  throw {code: 400, message: 'read, create or delete'};
}());"""
# PingIDM's own roles/onDelete-roles.js, save that resourceName needs no encoding here.
ON_DELETE_ROLE = """var users = openidm.query(resourceName + '/members', {_queryFilter: 'true'}, ['*']).result;
if (users.length > 0) { throw {code: 409, message: 'Cannot delete a role that is currently granted'}; }"""


class Env:
    """A project on a fresh store, its types changed by ``change`` before it loads."""

    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.dir = file_project(tmp_path, [ACCOUNTS], backend)
        conf = self.dir / "conf"
        managed = json.loads((conf / "managed.json").read_text())
        managed["objects"].append({"name": "account", "schema": {"properties": {
            "login": {"type": "string", "searchable": True}, "roleIds": {"type": "array"}}}})
        # OpenIDM 4's one-way relationship with no resourceCollection (historicalaccountlinking's).
        users = next(o for o in managed["objects"] if o["name"] == "user")
        users["schema"]["properties"]["historicalAccounts"] = {"type": "array", "items": {
            "type": "relationship", "properties": {"_ref": {"type": "string"}}}}
        self.types = {o["name"]: o for o in managed["objects"]}
        self.types["role"]["onDelete"] = {"type": _JS, "source": ON_DELETE_ROLE}
        self._managed = managed
        (conf / "endpoint-grants.json").write_text(json.dumps({"type": _JS, "source": GRANTS,
                                                               "context": "endpoint/grants/*"}))
        self._project: Project | None = None
        self._store: Store | None = None

    def open(self) -> tuple[Project, Store]:
        if self._project is None:
            (self.dir / "conf" / "managed.json").write_text(json.dumps(self._managed))
            self._project = load_project(self.dir)
            self._store = Store.open(self._project.settings.store_url())
        assert self._store is not None
        return self._project, self._store

    def run(self, source: str, *, dry_run: bool = False, **variables: Any) -> Any:
        """``source`` run as a script of the project, its ``openidm`` bound to the store."""
        project, store = self.open()
        script = project.scripts.compile({"type": _JS, "source": source}, file="test", key="script",
                                         base_dir=project.settings.project_dir)
        with scripting(project, store, dry_run=dry_run):
            return script(**variables)

    def create(self, kind: str, data: dict[str, Any], object_id: str | None = None) -> str:
        project, store = self.open()
        with scripting(project, store) as router:
            return str(router.managed_objects(f"managed/{kind}").create(data, object_id=object_id).object["_id"])

    def get(self, kind: str, object_id: str) -> dict[str, Any]:
        project, store = self.open()
        with scripting(project, store) as router:
            return router.managed_objects(f"managed/{kind}").get(object_id)

    def account(self, login: str) -> dict[str, Any]:
        found = self.run(f"openidm.query('managed/account', {{_queryFilter: 'login eq \"{login}\"'}}).result")
        assert len(found) == 1, found
        return dict(found[0])

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@pytest.fixture(params=WITH_POSTGRESQL)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, request.param)
    yield e
    e.close()


def _user(env: Env, name: str) -> str:
    return env.create("user", {"userName": name, "givenName": name.title(), "sn": "Tester",
                               "mail": f"{name}@example.com"})


def test_an_endpoint_grants_lists_and_removes_a_users_roles(env: Env) -> None:
    """Over the API, a custom endpoint's ``openidm.create`` on ``managed/user/ID/roles``
    grants a role and answers the reference in PingIDM's shape (its own ``_id`` and
    ``_rev``, ``_ref``, ``_refResourceCollection``, ``_refResourceId``,
    ``_refProperties``); its query lists the user's roles with each role's name; the
    role's ``members`` list the user (one row, two ends); the user's account gets the
    role at once (implicit sync); ``openidm.delete`` of ``.../roles/REF`` removes it."""
    ann = _user(env, "ann")
    admins = env.create("role", {"name": "admins", "description": "all powers"}, "admins")
    with serve(env.dir) as api:
        r = api.post(f"/openidm/endpoint/grants/{ann}?_action=create", headers=ADMIN, json={"role": admins})
        assert r.status_code == 200, r.text
        granted = r.json()
        assert granted["_ref"] == "managed/role/admins"
        assert granted["_refResourceCollection"] == "managed/role" and granted["_refResourceId"] == "admins"
        assert granted["_refProperties"]["grantedBy"] == "openidm-admin"
        props = granted["_refProperties"]
        assert granted["_id"] == props["_id"] and granted["_rev"] == props["_rev"]
        listed = api.get(f"/openidm/endpoint/grants/{ann}", headers=ADMIN).json()
        assert listed["resultCount"] == 1
        (role,) = listed["result"]
        assert role["name"] == "admins" and role["_ref"] == "managed/role/admins" and "description" not in role
        assert env.account("ann")["roleIds"] == ["admins"]

        members = env.run("openidm.query('managed/role/admins/members', {_queryFilter: 'true'})")
        assert [m["_refResourceId"] for m in members["result"]] == [ann]
        assert members["result"][0]["_id"] == granted["_id"]

        r = api.delete(f"/openidm/endpoint/grants/{ann}/{granted['_id']}", headers=ADMIN)
        assert r.status_code == 200 and r.json()["_ref"] == "managed/role/admins", r.text
        assert api.get(f"/openidm/endpoint/grants/{ann}", headers=ADMIN).json()["resultCount"] == 0
    assert env.get("user", ann).get("roles") == []
    assert env.account("ann")["roleIds"] == []


def test_a_post_create_script_grants_a_new_user_a_role(env: Env) -> None:
    """A user's ``postCreate`` grants every new user the ``staff`` role through
    ``managed/user/ID/roles``: the user holds it, the role lists the user, the
    account the mapping makes carries it."""
    env.types["user"]["postCreate"] = {"type": _JS, "source": (
        "openidm.create(resourceName + '/roles', null, {_ref: 'managed/role/staff'});")}
    env.create("role", {"name": "staff"}, "staff")
    bob = _user(env, "bob")
    assert [r["_ref"] for r in env.get("user", bob)["roles"]] == ["managed/role/staff"]
    assert [m["_refResourceId"] for m in env.get("role", "staff")["members"]] == [bob]
    assert env.account("bob")["roleIds"] == ["staff"]


def test_references_are_read_filtered_expanded_and_replaced(env: Env) -> None:
    """``read`` of ``.../roles/REF`` answers the reference (with the role's fields when
    asked, ``["*"]``), null when no such reference or user; a ``_queryFilter`` selects on the
    ``_refProperties``; ``update`` replaces them, with the reference's revision checked;
    its ``_ref`` cannot change."""
    cy = _user(env, "cy")
    for name in ("ops", "dev"):
        env.create("role", {"name": name, "description": f"the {name} team"}, name)
    roles = f"managed/user/{cy}/roles"
    ops = env.run(f"openidm.create('{roles}', null, {{_ref: 'managed/role/ops', _refProperties: {{since: 2020}}}})")
    env.run(f"openidm.create('{roles}', null, {{_ref: 'managed/role/dev', _refProperties: {{since: 2024}}}})")

    one = env.run(f"openidm.read('{roles}/{ops['_id']}')")
    assert one == ops
    full = env.run(f"openidm.read('{roles}/{ops['_id']}', null, ['*'])")
    assert full["name"] == "ops" and full["description"] == "the ops team" and full["_ref"] == "managed/role/ops"
    assert env.run(f"openidm.read('{roles}/no-such-reference')") is None
    assert env.run("openidm.read('managed/user/nobody/roles/no-such-reference')") is None
    recent = env.run(f"openidm.query('{roles}', {{_queryFilter: '/_refProperties/since gt 2021'}}, ['*'])")
    assert [(r["_refResourceId"], r["description"]) for r in recent["result"]] == [("dev", "the dev team")]
    every = env.run(f"openidm.query('{roles}', {{_queryId: 'query-all'}}).result")  # OpenIDM's samples ask so
    assert sorted(r["_ref"] for r in every) == ["managed/role/dev", "managed/role/ops"]
    ids = env.run(f"openidm.query('{roles}', {{_queryId: 'query-all-ids'}}).result")
    assert sorted(ids, key=lambda r: r["_ref"]) == sorted(
        ({"_id": r["_id"], "_rev": r["_rev"], "_ref": r["_ref"]} for r in every), key=lambda r: r["_ref"])

    updated = env.run(f"openidm.update('{roles}/{ops['_id']}', '{ops['_rev']}', "
                      "{_ref: 'managed/role/ops', _refProperties: {since: 2019}})")
    assert updated["_id"] == ops["_id"] and updated["_refProperties"]["since"] == 2019
    assert updated["_rev"] != ops["_rev"]
    with pytest.raises(ScriptError, match=f"revision {ops['_rev']} expected"):
        env.run(f"openidm.update('{roles}/{ops['_id']}', '{ops['_rev']}', {{_refProperties: {{since: 1}}}})")
    with pytest.raises(ScriptError, match="_ref cannot change"):
        env.run(f"openidm.update('{roles}/{ops['_id']}', null, {{_ref: 'managed/role/dev'}})")
    with pytest.raises(ScriptError, match="revision"):
        env.run(f"openidm.delete('{roles}/{ops['_id']}', '{ops['_rev']}')")
    gone = env.run(f"openidm.delete('{roles}/{ops['_id']}', '{updated['_rev']}')")
    assert gone["_ref"] == "managed/role/ops"
    assert [r["_ref"] for r in env.get("user", cy)["roles"]] == ["managed/role/dev"]


def test_a_read_and_a_query_expand_references_named_in_fields(env: Env) -> None:
    """``openidm.read`` and ``openidm.query`` of users with ``roles/*`` or ``roles/name`` in
    their fields answer each role reference with the role's fields, as the API does; a
    query keeps its other fields."""
    cy = _user(env, "cy")
    env.create("role", {"name": "ops", "description": "the ops team"}, "ops")
    env.run(f"openidm.create('managed/user/{cy}/roles', null, {{_ref: 'managed/role/ops'}})")
    (role,) = env.run(f"openidm.read('managed/user/{cy}', null, ['roles/*'])")["roles"]
    assert (role["_ref"], role["name"], role["description"]) == ("managed/role/ops", "ops", "the ops team")
    (user,) = env.run("openidm.query('managed/user', {_queryFilter: 'userName eq \"cy\"'}, "
                      "['userName', 'roles/name']).result")
    assert user["userName"] == "cy" and [(r["_ref"], r["name"]) for r in user["roles"]] == [("managed/role/ops", "ops")]
    assert "description" not in user["roles"][0]


def test_a_roles_on_delete_script_queries_its_members(env: Env) -> None:
    """PingIDM's ``onDelete-roles.js`` as it is written (a query of
    ``managed/role/ID/members``) refuses to delete a granted role with its 409, and the
    delete goes through once the role has no member."""
    dee = _user(env, "dee")
    env.create("role", {"name": "auditors"}, "auditors")
    grant = env.run(f"openidm.create('managed/role/auditors/members', null, {{_ref: 'managed/user/{dee}'}})")
    with pytest.raises(ObjectRejected, match="Cannot delete a role that is currently granted") as refused:
        project, store = env.open()
        with scripting(project, store) as router:
            router.managed_objects("managed/role").delete("auditors")
    assert refused.value.status == 409
    env.run(f"openidm.delete('managed/role/auditors/members/{grant['_id']}')")
    assert env.run("openidm.delete('managed/role/auditors')")["name"] == "auditors"
    assert env.run("openidm.read('managed/role/auditors')") is None


def test_a_dry_run_reads_references_and_changes_none(env: Env) -> None:
    """In a dry run a script lists references, and every change of them (create,
    ``action`` create, update, delete) is refused: nothing changes."""
    eve = _user(env, "eve")
    env.create("role", {"name": "ops"}, "ops")
    roles = f"managed/user/{eve}/roles"
    held = env.run(f"openidm.create('{roles}', null, {{_ref: 'managed/role/ops'}})")
    assert env.run(f"openidm.query('{roles}', {{_queryFilter: 'true'}}).resultCount", dry_run=True) == 1
    for call in (f"openidm.create('{roles}', null, {{_ref: 'managed/role/ops'}})",
                 f"openidm.action('{roles}', 'create', {{_ref: 'managed/role/ops'}})",
                 f"openidm.update('{roles}/{held['_id']}', null, {{_refProperties: {{a: 1}}}})",
                 f"openidm.delete('{roles}/{held['_id']}')"):
        with pytest.raises(ScriptError, match="not carried out in a dry run"):
            env.run(call, dry_run=True)
    assert env.run(f"openidm.read('{roles}/{held['_id']}')") == held


@pytest.mark.parametrize(("call", "named"), [
    ("openidm.create(ROLES, null, {_ref: 'managed/role/nobody'})", "managed/role/nobody"),
    ("openidm.create(ROLES, null, {_ref: 'managed/user/' + USER})", "managed/user/"),
    ("openidm.create(ROLES, null, {_refProperties: {a: 1}})", '{"_ref": "managed/TYPE/ID"'),
    ("openidm.create(ROLES, 'mine', {_ref: 'managed/role/ops'})", "the store gives a reference its _id"),
    ("openidm.create(ROLES, null, {_ref: 'managed/role/ops'})", "already holds managed/role/ops"),
    ("openidm.query('managed/user/' + USER + '/userName', {_queryFilter: 'true'})",
     "userName is not a relationship property of managed/user"),
    ("openidm.query(ROLES, {_queryFilter: 'name eq'})", "/roles:"),
    ("openidm.query(ROLES, {_queryId: 'for-userName'})", "a relationship answers query-all and query-all-ids"),
    ("openidm.read(ROLES)", "read, update or delete one as"),
    ("openidm.patch(ROLES + '/x', null, [])", "update replaces its _refProperties"),
    ("openidm.read(ROLES + '/a/b')", "expected managed/<type>[/<id>[/<relationship property>"),
])
def test_a_bad_reference_or_path_is_an_error_naming_it(tmp_path: Path, call: str, named: str) -> None:
    """A reference to a missing role or into the wrong collection, one without ``_ref``,
    one given its own id, one the user holds already, a property that is no relationship,
    a bad filter, a named query other than query-all(-ids), a read of the whole collection, a patch of a reference,
    and a path too deep each throw an error the script may catch, naming what is wrong."""
    env = Env(tmp_path, "sqlite")
    try:
        fay = _user(env, "fay")
        env.create("role", {"name": "ops"}, "ops")
        env.run(f"openidm.create('managed/user/{fay}/roles', null, {{_ref: 'managed/role/ops'}})")
        caught = env.run(f"var USER = '{fay}', ROLES = 'managed/user/' + USER + '/roles';\n"
                         f"try {{ {call}; 'no error'; }} catch (e) {{ e.message; }}")
        assert named in caught
        assert [r["_ref"] for r in env.get("user", fay)["roles"]] == ["managed/role/ops"]
    finally:
        env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_one_way_relationship_points_at_a_systems_accounts(tmp_path: Path, backend: str) -> None:
    """A one-way relationship that names no collection (OpenIDM 4's) holds references to a
    system's objects too, as OpenIDM's historicalaccountlinking sample keeps each user's
    LDAP accounts: by their DN, however long, with _refProperties; queried, read and
    updated as any reference; a reference into something else is refused, naming it."""
    env = Env(tmp_path, backend)
    try:
        dan = _user(env, "dan")
        accounts = f"managed/user/{dan}/historicalAccounts"
        dn = "uid=dan0,ou=People,ou=Engineering,ou=Very Long Organizational Unit Name,dc=example,dc=com"
        made = env.run(f"openidm.create('{accounts}', null, {{_ref: 'system/ldap/account/{dn}', "
                       "_refProperties: {active: true, state: 'enabled'}})")
        assert made["_refResourceCollection"] == "system/ldap/account" and made["_refResourceId"] == dn
        every = env.run(f"openidm.query('{accounts}', {{_queryId: 'query-all'}}).result")
        assert [(a["_ref"], a["_refProperties"]["state"]) for a in every] == [(f"system/ldap/account/{dn}",
                                                                                 "enabled")]
        off = env.run(f"var a = openidm.read('{accounts}/{made['_id']}'); a._refProperties.active = false; "
                      f"openidm.update('{accounts}/{made['_id']}', a._refProperties._rev, a)")
        assert off["_refProperties"]["active"] is False
        assert [a["_ref"] for a in env.get("user", dan)["historicalAccounts"]] == [f"system/ldap/account/{dn}"]
        caught = env.run(f"try {{ openidm.create('{accounts}', null, {{_ref: 'repo/internal/role/x'}}); 'no error'; "
                         "} catch (e) { e.message; }")
        assert "does not name an object of a managed type or a system" in caught
    finally:
        env.close()


@pytest.mark.slapd
def test_references_to_a_systems_accounts_expand_to_the_accounts_as_read(tmp_path: Path, slapd: Any,
                                                                          ldap_subtree: str) -> None:
    """``_fields=historicalAccounts/*`` (and ``/FIELD``) shows each referenced LDAP account as
    the connector reads it now, on the user and on the relationship's own collection; a
    reference to an account that is gone shows no fields, and one into a system the project
    does not have is left as it is."""
    from samples import FORWARD, sample_project

    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    users = next(o for o in managed["objects"] if o["name"] == "user")
    users["schema"]["properties"]["historicalAccounts"] = {"type": "array", "items": {
        "type": "relationship", "properties": {"_ref": {"type": "string"}}}}
    managed_file.write_text(json.dumps(managed))
    with serve(project) as api:
        assert api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true",
                        headers=ADMIN).status_code == 200
        query = "/openidm/system/ldap/account?_queryFilter=" + "uid%20eq%20%22bjensen%22"
        (account,) = api.get(query, headers=ADMIN).json()["result"]
        user = api.get("/openidm/managed/user?_queryFilter=userName%20eq%20%22bjensen%22",
                       headers=ADMIN).json()["result"][0]
        accounts = f"/openidm/managed/user/{user['_id']}/historicalAccounts"
        for ref in (f"system/ldap/account/{account['_id']}", "system/ldap/account/no-such-account",
                    "system/hr/account/x1"):
            made = api.post(f"{accounts}?_action=create", headers=ADMIN, json={"_ref": ref})
            assert made.status_code in (200, 201), made.text
        shown = api.get(f"/openidm/managed/user/{user['_id']}?_fields=historicalAccounts/*", headers=ADMIN)
        assert shown.status_code == 200, shown.text
        by_ref = {r["_ref"]: r for r in shown.json()["historicalAccounts"]}
        found = by_ref[f"system/ldap/account/{account['_id']}"]
        gone, elsewhere = by_ref["system/ldap/account/no-such-account"], by_ref["system/hr/account/x1"]
        assert found["uid"] == "bjensen" and found["mail"] == account["mail"] and found["_id"] == account["_id"]
        assert "uid" not in gone and set(elsewhere) == {"_ref", "_refResourceCollection", "_refResourceId",
                                                          "_refProperties"}
        picked = api.get(f"{accounts}?_queryFilter=true&_fields=uid", headers=ADMIN).json()["result"]
        assert {r["_ref"]: r.get("uid") for r in picked} == {f"system/ldap/account/{account['_id']}": "bjensen",
                                                             "system/ldap/account/no-such-account": None,
                                                             "system/hr/account/x1": None}
        assert all("mail" not in r for r in picked)
