"""Correlation and queries by ``_queryId`` (PingIDM's named queries), end to end
against the suite's slapd and real stores: stock and project-defined queries
find the target of a source in the store and in LDAP, a parameter holding query
syntax is compared as a value, and an unknown id is named by ``idsync validate``
and by the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, serve
from idsync.config.project import load_project, validate_project
from idsync.errors import ConfigError
from idsync.resources import check_system
from idsync.store.links import LinkSet
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync_dev.slapd import Slapd
from recon_env import STORES, Env, env_on

from samples import sample_project

_JS = "text/javascript"
MAPPING = "systemLdapAccounts_managedUser"
REVERSE = "managedUser_systemLdapAccounts"
_SQL_HOSTILE = "' OR 1=1 --"
_LDAP_HOSTILE = "*)(uid=*"


@pytest.fixture(params=STORES)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    with env_on(request.param, slapd, ldap_subtree, tmp_path) as e:
        yield e


def _situations(result: ReconResult) -> dict[str, int]:
    return {k: v for k, v in result.summary["situationSummary"].items() if v}


def _add_hostile(env: Env, uid: str) -> None:
    env.slapd.add_ldif(f"dn: cn=hostile,{env.subtree}\nobjectClass: inetOrgPerson\ncn: hostile\nsn: H\n"
                       f"uid: {uid}\nmail: hostile@example.com\n\n")


def _problems(env: Env) -> list[str]:
    return [str(p) for p in validate_project(env.project.settings.conf_dir.parent, check_system)]


@pytest.mark.parametrize("correlation", [
    pytest.param({"_queryId": "for-userName", "uid": "${source.uid}"}, id="declarative"),
    pytest.param({"type": _JS, "source": "var q = {'_queryId': 'for-userName', 'uid': source.uid}; q"}, id="script"),
])
def test_for_username_finds_the_managed_user(env: Env, correlation: dict[str, Any]) -> None:
    """An LDAP entry finds the existing managed user of its uid through the stock
    for-userName query (declared, or returned by a script as PingIDM's samples do):
    FOUND, updated, same _id. An entry whose uid is SQL (' OR 1=1 --) matches no one
    (ABSENT, a user of that very name is created) instead of every user."""
    env.reconfigure(correlationQuery=correlation)
    assert _problems(env) == []
    kept = env.create_user(userName="nq1", sn="Before")
    bystander = env.create_user(userName="bystander", sn="Alone")
    env.add("nq1")
    _add_hostile(env, _SQL_HOSTILE)
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"FOUND": 1, "ABSENT": 1, "UNASSIGNED": 1}
    assert "linkQualifierSummary" not in result.summary  # a mapping without qualifiers
    users = env.users()
    assert users["nq1"]["_id"] == kept["_id"] and users["nq1"]["sn"] == "Test"
    assert users[_SQL_HOSTILE]["_id"] not in (kept["_id"], bystander["_id"])
    assert users["bystander"]["sn"] == "Alone"
    again = env.recon()
    assert _situations(again) == {"CONFIRMED": 2, "UNASSIGNED": 1} and again.summary["changes"]["updated"] == 0


def test_get_by_field_value_finds_the_ldap_entry(env: Env) -> None:
    """Managed users find their LDAP entry through get-by-field-value (field uid),
    translated to an LDAP filter with the value escaped: FOUND and linked; a user
    named *)(uid=* matches no entry (ABSENT) rather than every entry (AMBIGUOUS)."""
    def reverse(sync: dict[str, Any]) -> None:
        m = sync["mappings"][1]
        m["correlationQuery"] = {"_queryId": "get-by-field-value", "field": "uid", "value": "${source.userName}"}
        m["policies"] = [{"situation": s, "action": a} for s, a in (
            ("ABSENT", "IGNORE"), ("FOUND", "LINK"), ("CONFIRMED", "IGNORE"), ("UNASSIGNED", "IGNORE"))]
    env.change_conf("sync.json", reverse)
    env.add("ld1", "ld2")
    mine = env.create_user(userName="ld1", sn="Test")
    env.create_user(userName=_LDAP_HOSTILE, sn="H")
    result = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"FOUND": 1, "ABSENT": 1, "UNASSIGNED": 1}
    linked = LinkSet(env.store, MAPPING, reversed=True).targets_of([mine["_id"]])
    assert list(linked) == [mine["_id"]]


def test_a_project_query_correlates_and_bad_ones_are_reported(env: Env) -> None:
    """A query of the project's repo.jdbc.json (PostgreSQL's JSON shape, with the
    collection condition) correlates by mail; a query idsync cannot translate is
    reported by validate with file, key and why, and naming it in a mapping fails
    validation with that reason."""
    conf = env.project.settings.conf_dir
    (conf / "repo.jdbc.json").write_text(json.dumps({"queries": {"genericTables": {
        "by-mail": "SELECT fullobject::text FROM ${_dbSchema}.${_mainTable} obj INNER JOIN "
                   "${_dbSchema}.objecttypes objtype ON objtype.id = obj.objecttypes_id "
                   "WHERE json_extract_path_text(fullobject, 'mail') = ${mail} AND objtype.objecttype = ${_resource}",
        "in-list": "SELECT * FROM managedobjects WHERE userName IN (${a}, ${b})",
    }}}))
    env.change_conf("sync.json", lambda s: s["mappings"][0].update(
        correlationQuery={"_queryId": "by-mail", "mail": "${source.mail}"}))
    assert _problems(env) == [f"{conf / 'repo.jdbc.json'}: queries.genericTables.in-list: cannot be translated to "
                              "a _queryFilter: IN cannot be translated (only = <> < <= > >= LIKE, IS NULL, AND, OR, "
                              "NOT) at position 44"]
    renamed = env.create_user(userName="old-name", mail="nq2@example.com")
    env.add("nq2")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"FOUND": 1}
    assert env.users()["nq2"]["_id"] == renamed["_id"]

    path = conf / "sync.json"
    sync = json.loads(path.read_text())
    sync["mappings"][0]["correlationQuery"] = {"_queryId": "in-list", "a": "${source.uid}", "b": "x"}
    path.write_text(json.dumps(sync))
    with pytest.raises(ConfigError, match=r"mappings\[0\].correlationQuery._queryId: _queryId in-list cannot be "
                                          r"used: repo.jdbc.json: queries.genericTables.in-list: .* IN cannot"):
        load_project(conf.parent)


def test_a_source_query_by_query_id(env: Env) -> None:
    """sourceQuery {"_queryId": "get-by-field-value", ...} selects the LDAP entries the
    query names (an LDAP filter with the value escaped); an unknown id in it is a
    validate error naming the key."""
    env.reconfigure(sourceQuery={"_queryId": "get-by-field-value", "field": "sn", "value": "Pick(me)*"},
                    allowEmptySourceSet=True)
    env.add("sq1", sn="Pick(me)*")
    env.add("sq2", sn="Pick(me)and more")
    env.add("sq3", sn="Other")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert set(env.users()) == {"sq1"}
    path = env.project.settings.conf_dir / "sync.json"
    sync = json.loads(path.read_text())
    sync["mappings"][0]["sourceQuery"] = {"_queryId": "by-sn", "sn": "x"}
    path.write_text(json.dumps(sync))
    assert _problems(env) == [f"{env.project.settings.conf_dir / 'sync.json'}: mappings[{MAPPING}].sourceQuery."
                              "_queryId: unknown _queryId by-sn (known: credential-query, for-userName, "
                              "get-by-field-value, query-all, query-all-ids, scan-tasks; a project defines more in "
                              "conf/repo.*.json \"queries\")"]


@pytest.mark.parametrize(("query", "problem"), [
    ({"_queryId": "for-username", "uid": "${source.uid}"}, "unknown _queryId for-username (known: credential-query"),
    ({"_queryId": "for-userName"}, "_queryId for-userName needs the parameter uid"),
    ({"_queryId": "query-all"}, "query-all matches every object"),
    ({"_queryId": "links-for-linkType", "linkType": "x"}, "queries OpenIDM's internal tables"),
])
def test_validate_names_a_query_id_that_cannot_correlate(env: Env, query: dict[str, Any], problem: str) -> None:
    """A correlation naming an unknown query, or one without its parameters, or one
    matching everything, fails validation naming the file and key."""
    env.reconfigure()
    path = env.project.settings.conf_dir / "sync.json"
    sync = json.loads(path.read_text())
    sync["mappings"][0]["correlationQuery"] = query
    path.write_text(json.dumps(sync))
    problems = _problems(env)
    assert len(problems) == 1 and "sync.json: mappings[0].correlationQuery._queryId: " in problems[0], problems
    assert problem in problems[0], problems


def test_a_script_naming_an_unknown_query_fails_that_source(env: Env) -> None:
    """A correlation script returning an unknown _queryId fails its source, naming
    the id; nothing is created for it (the other objects go on)."""
    env.reconfigure(correlationQuery={"type": _JS, "source": "({'_queryId': 'by-nothing', 'uid': source.uid})"})
    env.create_user(userName="someone")
    env.add("nq3")
    result = env.recon()
    assert result.summary["statusSummary"]["FAILURE"] == 1
    assert "unknown _queryId by-nothing" in result.summary["errors"][0]["message"]
    assert set(env.users()) == {"someone"}


@pytest.fixture
def api(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Iterator[httpx.Client]:
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    (project / "conf" / "repo.orientdb.json").write_text(json.dumps({"queries": {
        "by-surname": "SELECT * FROM ${unquoted:_resource} WHERE sn LIKE ${prefix} AND accountStatus <> 'inactive'"}}))
    with serve(project) as client:
        yield client


def test_api_queries_by_query_id(api: httpx.Client) -> None:
    """GET managed/user?_queryId=for-userName&uid=X answers that user; a uid holding
    SQL answers nothing; a project query binds its LIKE pattern; system objects
    answer get-by-field-value with the value escaped (* is no wildcard); an unknown
    id or a missing parameter is a 400 naming it."""
    for name, sn in (("qa1", "Queried"), ("qa2", "Quiet"), ("qa3", "Other")):
        r = api.post("/openidm/managed/user?_action=create", headers={**ADMIN, "Content-Type": "application/json"},
                     json={"userName": name, "sn": sn, "givenName": "Q", "mail": f"{name}@example.com"})
        assert r.status_code == 201, r.text

    def query(path: str) -> list[dict[str, Any]]:
        r = api.get(path, headers=ADMIN)
        assert r.status_code == 200, r.text
        return list(r.json()["result"])

    assert [u["userName"] for u in query("/openidm/managed/user?_queryId=for-userName&uid=qa1")] == ["qa1"]
    assert query(f"/openidm/managed/user?_queryId=for-userName&uid={_SQL_HOSTILE}") == []
    assert sorted(u["userName"] for u in query("/openidm/managed/user?_queryId=by-surname&prefix=Qu%25")) == [
        "qa1", "qa2"]
    assert [u["userName"] for u in query("/openidm/managed/user?_queryId=get-by-field-value&field=sn&value=Other")
            ] == ["qa3"]
    ids = query("/openidm/managed/user?_queryId=query-all-ids")
    assert len(ids) == 3 and all(set(o) <= {"_id", "_rev"} for o in ids)
    assert [o["uid"] for o in query("/openidm/system/ldap/account?_queryId=get-by-field-value&field=uid"
                                    "&value=bjensen")] == ["bjensen"]
    assert query("/openidm/system/ldap/account?_queryId=get-by-field-value&field=uid&value=*") == []
    assert query(f"/openidm/system/ldap/account?_queryId=get-by-field-value&field=uid&value={_LDAP_HOSTILE}") == []
    for bad, says in (("_queryId=for-user", "unknown _queryId for-user"),
                      ("_queryId=for-userName", "needs the parameter uid"),
                      ("_queryId=get-by-field-value&field=a)(b&value=1", "must name a field"),
                      ("_queryId=for-userName&uid=x&_queryFilter=true", "not both")):
        r = api.get(f"/openidm/managed/user?{bad}", headers=ADMIN)
        assert r.status_code == 400 and says in r.json()["message"], (bad, r.text)
