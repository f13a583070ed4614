"""Configuration that would pass ``validate`` and then hurt at run time: correlation
filters built by pasting source values, misspelt safety keys, values the run could
not use, and the LDAP ``blockSize`` that the connector must honour."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, store_url
from idsync.config.mappings import concatenates_values
from idsync.config.project import load_project
from idsync.connectors.ldap import connection as ldap_connection
from idsync.connectors.ldap import connector as ldap_connector
from idsync.connectors.ldap.connector import LdapSystem
from idsync.connectors.salesforce.config import parse_salesforce_config
from idsync.connectors.scim.config import parse_scim_config
from idsync.daemon.reload import load_configuration
from idsync.errors import ConfigError
from idsync.keys import misspelling_of
from idsync.resource import QuerySpec
from idsync.resources import check_connectors
from idsync.settings import load_settings
from idsync_dev.slapd import Slapd
from projects import ROOT
from recon_env import Env
from structlog.testing import capture_logs

from samples import idsync

_PROVISIONER = "provisioner.openicf-ldap.json"


def _project(tmp_path: Path) -> Path:
    """The repository's ``conf/`` as a project on a SQLite store (nothing is connected to)."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "sqlite:///{project}/idsync.db"\n[log]\nformat = "json"\n')
    return project


def _edit(project: Path, file: str, change: Callable[[Any], None]) -> None:
    path = project / "conf" / file
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _validate(project: Path) -> tuple[int, str, str]:
    result = idsync(project, "validate", env={"IDSYNC_LDAP_PASSWORD": "unused"})
    return result.returncode, result.stdout, result.stderr


# -- correlation: declarative everywhere, a warning for concatenation ------------------------


def _shipped_json() -> list[Path]:
    return sorted([*(ROOT / "conf").glob("*.json"), *(ROOT / "samples").rglob("*.json")])


def _correlations(data: Any) -> Iterator[Any]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("correlationQuery", "correlationScript"):
                yield value
            else:
                yield from _correlations(value)
    elif isinstance(data, list):
        for item in data:
            yield from _correlations(item)


def _fenced_blocks(text: str) -> list[str]:
    return re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)


def test_no_shipped_correlation_builds_its_filter_by_concatenation() -> None:
    """Every correlation shipped in conf/, samples/ and the examples of README.md and
    docs/ is declarative (or a script that pastes no value into filter text): an operator
    who copies one gets a correlation a hostile source value cannot rewrite."""
    offenders: list[str] = []
    found = 0
    for path in _shipped_json():
        for correlation in _correlations(json.loads(path.read_text())):
            found += 1
            for item in correlation if isinstance(correlation, list) else [correlation]:
                source = item.get("source") if isinstance(item, dict) else None
                if isinstance(source, str) and concatenates_values(source):
                    offenders.append(f"{path.relative_to(ROOT)}: {source}")
                if isinstance(item, dict) and "_queryFilter" not in item and "expressionTree" not in item:
                    offenders.append(f"{path.relative_to(ROOT)}: not declarative: {item}")
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in _fenced_blocks(doc.read_text()):
            # A declarative placeholder (a JSON string holding \"${source.x}\") is not a script.
            block = re.sub(r'\\"\$\{[^}]*\}\\"', "", block)
            if ("_queryFilter" in block or "correlation" in block) and concatenates_values(block):
                offenders.append(f"{doc.relative_to(ROOT)}: {block.strip()[:200]}")
    assert found >= 10  # the scan saw the shipped mappings
    assert offenders == []


def _script_sources(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        if isinstance(data.get("source"), str) and data.get("type") == "text/javascript":
            yield data["source"]
        for value in data.values():
            yield from _script_sources(value)
    elif isinstance(data, list):
        for item in data:
            yield from _script_sources(item)


def test_no_shipped_script_builds_a_dn_by_concatenation() -> None:
    """A shipped hook that names a new LDAP entry builds its DN with ``ldapDn`` (values
    escaped), never by pasting a source value between 'uid=' and ',ou=...': a userName
    holding a comma would otherwise place the entry in another container."""
    offenders, found = [], 0
    for path in _shipped_json():
        for source in _script_sources(json.loads(path.read_text())):
            # The statements that set a DN: a hook may build other values (a UPN) as it likes.
            for statement in (s for s in source.split(";") if ".dn =" in s or "dn =" in s):
                found += 1
                if concatenates_values(statement) or "ldapDn." not in statement:
                    offenders.append(f"{path.relative_to(ROOT)}: {statement}")
    assert found >= 3
    assert offenders == []


@pytest.mark.parametrize("script", [
    "var qry = {'_queryFilter': 'userName eq \"' + source.uid + '\"'}; qry",
    "({'_queryFilter': 'userName eq ' + JSON.stringify(source.userName)})",
    "({_queryFilter: `mail eq \"${source.mail}\"`})",
])
def test_validate_warns_on_a_concatenating_correlation_script(tmp_path: Path, script: str) -> None:
    """A correlation script that pastes a source value into its filter is a warning,
    not a failure: validate still says ok, and the warning, a ``warning: FILE: KEY: why``
    line like the others (and one of ``--json``'s warnings), names the declarative form.
    It used to be a log event on stderr, missing from ``--json``."""
    project = _project(tmp_path)
    _edit(project, "sync.json", lambda d: d["mappings"][0].update(
        correlationQuery={"type": "text/javascript", "source": script}))
    code, out, err = _validate(project)
    assert code == 0, out + err
    assert "configuration ok" in out
    where = f"{project / 'conf' / 'sync.json'}: mappings[0].correlationQuery"
    lines = [line for line in err.splitlines() if "correlation script" in line]
    assert lines == [f"warning: {where}: the correlation script pastes a value into the filter text: a value "
                     "holding a quote or a backslash changes the filter or breaks it; use the declarative form, "
                     'whose placeholders are bound as values: "correlationQuery": '
                     '{"_queryFilter": "/userName eq \\"${source.uid}\\""}'], err
    answer = json.loads(idsync(project, "validate", "--json", env={"IDSYNC_LDAP_PASSWORD": "unused"}).stdout)
    assert [w["key"] for w in answer["warnings"] if "correlation script" in w["problem"]] == [
        "mappings[0].correlationQuery"]


def test_the_daemon_logs_a_concatenating_correlation_script_once_per_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon logs ``config.correlation_concatenates`` with the file and the key when
    it loads the project, and again only for a project it loads anew (a reload that keeps
    the previous project, its conf/ broken, says nothing)."""
    monkeypatch.setenv("IDSYNC_LDAP_PASSWORD", "unused")
    project = _project(tmp_path)
    _edit(project, "sync.json", lambda d: d["mappings"][0].update(correlationScript={
        "type": "text/javascript", "source": "({'_queryFilter': 'uid eq \"' + source.userName + '\"'})"}))
    _edit(project, "sync.json", lambda d: d["mappings"][0].pop("correlationQuery", None))
    with capture_logs() as logs:
        first = load_configuration(project)
    said = [(e["log_level"], e["file"], e["key"]) for e in logs if e["event"] == "config.correlation_concatenates"]
    assert said == [("warning", str(project / "conf" / "sync.json"), "mappings[0].correlationScript")]
    (project / "conf" / "sync.json").write_text("{ not json")
    with capture_logs() as logs:
        kept = load_configuration(project, previous=first)
    assert kept.project is first.project
    assert not [e for e in logs if e["event"] == "config.correlation_concatenates"]


def test_validate_is_quiet_about_the_declarative_form(tmp_path: Path) -> None:
    """The shipped configuration validates without the concatenation warning."""
    code, out, err = _validate(_project(tmp_path))
    assert code == 0, out + err
    assert "correlation_concatenates" not in err


_HOSTILE_QUOTE = 'evil" or userName eq "victim'
_HOSTILE_BACKSLASH = "back\\slash"


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def test_hostile_source_uid_is_a_plain_value_with_the_shipped_mapping(env: Env) -> None:
    """With the shipped conf/sync.json, an LDAP entry whose uid is
    ``evil" or userName eq "victim`` does not correlate with the unlinked managed user
    ``victim`` (left untouched, same _rev), and neither it nor a uid with a backslash
    fails: both are ABSENT and created with their literal userName, and the next run
    confirms them."""
    victim = env.create_user(userName="victim", sn="Original", givenName="Vic")
    env.slapd.add_ldif(
        f"dn: cn=hostile-quote,{env.subtree}\nobjectClass: inetOrgPerson\ncn: hostile-quote\nsn: Hostile\n"
        f"uid: {_HOSTILE_QUOTE}\n\n"
        f"dn: cn=hostile-backslash,{env.subtree}\nobjectClass: inetOrgPerson\ncn: hostile-backslash\nsn: Hostile\n"
        f"uid: {_HOSTILE_BACKSLASH}\n\n")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["errorCount"] == 0, result.summary["errors"]
    assert result.summary["situationSummary"]["ABSENT"] == 2
    assert result.summary["situationSummary"]["FOUND"] == 0
    users = env.users()
    assert users["victim"]["sn"] == "Original" and users["victim"]["_rev"] == victim["_rev"]
    assert users[_HOSTILE_QUOTE]["sn"] == "Hostile" and users[_HOSTILE_BACKSLASH]["sn"] == "Hostile"
    assert users[_HOSTILE_QUOTE]["_id"] != victim["_id"]
    again = env.recon()
    assert again.summary["errorCount"] == 0, again.summary["errors"]
    assert again.summary["situationSummary"]["CONFIRMED"] == 2
    assert env.users()["victim"]["_rev"] == victim["_rev"]


# -- unknown keys ------------------------------------------------------------------------------


def test_a_misspelt_mapping_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    """``"maxDelete": "5%"`` no longer passes validate (it left the mapping without a
    delete cap): validate exits 78 with a suggestion, and loading for a run refuses it."""
    project = _project(tmp_path)
    _edit(project, "sync.json", lambda d: d["mappings"][0].update(maxDelete="5%"))
    code, out, _ = _validate(project)
    assert code == 78
    assert f"{project / 'conf' / 'sync.json'}: mappings[0].maxDelete: unknown setting, did you mean maxDeletes?" \
        in out
    with pytest.raises(ConfigError, match=r"maxDelete: unknown setting, did you mean maxDeletes\?"):
        load_project(project)


def test_pingidm_mapping_keys_are_accepted(tmp_path: Path) -> None:
    """Keys PingIDM documents for a mapping, even those idsync does not act on, validate."""
    project = _project(tmp_path)
    _edit(project, "sync.json", lambda d: d["mappings"][0].update(
        taskThreads=10, prefetchLinks=True, enableLinking=True, linkQualifiers=["default"], icon="",
        consentRequired=False, reconSourceQueryPaging=True, reconSourceQueryPageSize=500))
    code, out, err = _validate(project)
    assert code == 0, out + err


def test_provisioner_top_level_keys(tmp_path: Path) -> None:
    """PingIDM's provisioner keys and unknown OpenICF configurationProperties are accepted;
    a misspelt top-level key is an error with a suggestion."""
    project = _project(tmp_path)

    def pingidm_keys(d: dict[str, Any]) -> None:
        d.update(poolConfigOption={"maxObjects": 10}, operationTimeout={"CREATE": -1},
                 resultsHandlerConfig={"enableNormalizingResultsHandler": True},
                 syncFailureHandler={"maxRetries": 5}, operationOptions={}, connectorPoolingSupported=True,
                 excludeUnmodified=False, producerBufferSize=100)
        d["configurationProperties"]["passwordHashAlgorithm"] = "SSHA"

    _edit(project, _PROVISIONER, pingidm_keys)
    code, out, err = _validate(project)
    assert code == 0, out + err
    _edit(project, _PROVISIONER, lambda d: d.update(objectType=d["objectTypes"]))
    code, out, err = _validate(project)
    assert code == 78
    assert f"{project / 'conf' / _PROVISIONER}: objectType: unknown setting, did you mean objectTypes?" in out


def _managed(change: Callable[[Any], None]) -> Callable[[Path], None]:
    return lambda p: _edit(p, "managed.json", change)


def _user(**keys: Any) -> Callable[[Path], None]:
    return _managed(lambda d: d["objects"][0]["schema"]["properties"]["userName"].update(keys))


def _object_type(change: Callable[[Any], None]) -> Callable[[Path], None]:
    return lambda p: _edit(p, _PROVISIONER, lambda d: change(d["objectTypes"]["account"]))


def _rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(("change", "file", "key", "meant"), [
    # PingIDM reads none of these, so each setting silently kept its default: a property out
    # of the index, a relationship with no reverse end, an attribute read under another name.
    (_user(serchable=True), "managed.json", "objects[0].schema.properties.userName.serchable", "searchable"),
    (_user(Searchable=True), "managed.json", "objects[0].schema.properties.userName.Searchable", "searchable"),
    (_managed(lambda d: _rename(d["objects"][0]["schema"], "required", "requird")), "managed.json",
     "objects[0].schema.requird", "required"),
    (_managed(lambda d: _rename(d["objects"][0]["schema"]["properties"]["roles"]["items"], "reversePropertyName",
                                "reversePropertyNme")), "managed.json",
     "objects[0].schema.properties.roles.items.reversePropertyNme", "reversePropertyName"),
    (_managed(lambda d: d["objects"][0]["schema"]["properties"]["roles"]["items"]["resourceCollection"][0].update(
        pth="managed/role")), "managed.json", "objects[0].schema.properties.roles.items.resourceCollection[0].pth",
     "path"),
    (_managed(lambda d: d["objects"][0].update(onCreat={"type": "text/javascript", "source": "1"})),
     "managed.json", "objects[0].onCreat", "onCreate"),
    (_object_type(lambda t: _rename(t, "nativeType", "nativeTyp")), _PROVISIONER, "objectTypes.account.nativeTyp",
     "nativeType"),
    (_object_type(lambda t: _rename(t["properties"]["mail"], "nativeName", "nativeNme")), _PROVISIONER,
     "objectTypes.account.properties.mail.nativeNme", "nativeName"),
    (_object_type(lambda t: t["properties"]["mail"].update(flag=["NOT_UPDATEABLE"])), _PROVISIONER,
     "objectTypes.account.properties.mail.flag", "flags"),
    (lambda p: _edit(p, _PROVISIONER, lambda d: _rename(d["configurationProperties"], "baseContexts",
                                                        "baseContext")), _PROVISIONER,
     "configurationProperties.baseContext", "baseContexts"),
], ids=["property", "property-case", "schema", "items", "resource-collection", "type", "object-type",
        "object-type-property", "object-type-flags", "ldap-base-contexts"])
def test_a_misspelt_schema_key_is_an_error_naming_the_key_meant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None], file: str, key: str,
        meant: str) -> None:
    """A key of managed.json's types and properties, of a provisioner's objectTypes, or a
    required LDAP setting, one or two letters off a known one, used to pass validate: now
    validate exits 78 naming the file, the key and the key meant, and loading the project
    for a run refuses it the same way."""
    monkeypatch.setenv("IDSYNC_LDAP_PASSWORD", "unused")
    project = _project(tmp_path)
    change(project)
    code, out, err = _validate(project)
    expected = f"{project / 'conf' / file}: {key}: unknown setting, did you mean {meant}?"
    assert code == 78, out + err
    assert expected in out, out
    with pytest.raises(ConfigError) as raised:
        check_connectors(load_project(project))
    assert str(raised.value).startswith(expected)


_PINGIDM_GROUPS = {  # a relationship property as PingIDM 7 writes it (its sample's managed/user groups)
    "title": "Group", "description": "Groups", "id": "urn:jsonschema:org:forgerock:openidm:managed:api:User:groups",
    "viewable": True, "userEditable": False, "returnByDefault": False, "usageDescription": "", "isPersonal": False,
    "type": "array", "relationshipGrantTemporalConstraintsEnforced": False, "notifyRelationships": ["roles"],
    "items": {
        "type": "relationship", "title": "Groups Items", "reverseRelationship": True, "reversePropertyName": "members",
        "notifySelf": True, "validate": True,
        "properties": {"_ref": {"description": "References a relationship", "type": "string"},
                       "_refProperties": {"type": "object", "title": "Groups Items _refProperties", "properties": {
                           "_id": {"type": "string"}, "_grantType": {"type": "string", "label": "Grant Type"}}}},
        "resourceCollection": [{"path": "managed/group", "label": "Group", "conditionalAssociationField": "condition",
                                "query": {"queryFilter": "true", "fields": ["name"], "sortKeys": ["name"]}}]},
}


def test_keys_of_a_schema_idsync_does_not_know_are_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PingIDM's keys of a managed property and of an OpenICF object type validate without a
    word; a key idsync does not know and that is no misspelling of one it knows (another
    tool's, a later PingIDM's) is a warning naming it, in both outputs, and validate says ok."""
    monkeypatch.setenv("IDSYNC_LDAP_PASSWORD", "unused")
    project = _project(tmp_path)

    def groups(d: dict[str, Any]) -> None:
        d["objects"][0]["schema"].update({"$schema": "http://json-schema.org/draft-03/schema", "mat-icon": "people"})
        d["objects"][0]["schema"]["properties"]["groups"] = _PINGIDM_GROUPS
        d["objects"].append({"name": "group", "schema": {"id": "urn:jsonschema:org:forgerock:openidm:managed:api:Group",
                                                       "icon": "fa-group", "order": ["name", "members"], "properties": {
            "name": {"type": "string", "searchable": True, "isPersonal": False},
            "condition": {"type": "string", "isConditional": True, "viewable": False},
            "members": {"type": "array", "returnByDefault": False, "items": {
                "type": "relationship", "reverseRelationship": True, "reversePropertyName": "groups", "validate": True,
                "resourceCollection": [{"path": "managed/user", "label": "User", "notify": True,
                                        "conditionalAssociation": True}]}}}}})

    _managed(groups)(project)
    code, out, err = _validate(project)
    assert code == 0, out + err
    assert "warning:" not in err, err
    _user(uiHints={"widget": "text"}, xAudited=True)(project)
    _object_type(lambda t: t["properties"]["mail"].update(runAsUser=False, emailFormat="rfc822"))(project)
    code, out, err = _validate(project)
    assert code == 0 and "configuration ok" in out, out + err
    managed, provisioner = project / "conf" / "managed.json", project / "conf" / _PROVISIONER
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert lines == [
        f"warning: {managed}: objects[0].schema.properties.userName.{{uiHints,xAudited}}: not read: not a key "
        "idsync knows of a property of managed/user (PingIDM's UI, a later PingIDM or another tool may read it); "
        "if it is misspelt, correct it",
        f"warning: {provisioner}: objectTypes.account.properties.mail.emailFormat: not read: not a key idsync "
        "knows of a property of object type account (PingIDM's UI, a later PingIDM or another tool may read it); "
        "if it is misspelt, correct it",
    ], err
    answer = json.loads(idsync(project, "validate", "--json", env={"IDSYNC_LDAP_PASSWORD": "unused"}).stdout)
    assert answer["ok"]
    assert {(w["file"], w["key"]) for w in answer["warnings"]} == {
        (str(managed), "objects[0].schema.properties.userName.{uiHints,xAudited}"),
        (str(provisioner), "objectTypes.account.properties.mail.emailFormat")}


@pytest.mark.parametrize(("key", "known", "meant"), [
    ("serchable", ("searchable", "viewable"), "searchable"),
    ("nativeTyp", ("nativeType", "nativeName"), "nativeType"),
    ("tpye", ("type", "title"), "type"),
    ("misfir", ("misfire", "misfire_grace"), "misfire"),
    ("maxLength", ("minLength",), "minLength"),
    ("maxLength", ("minLength", "maxLength"), None),
    ("title", ("type",), None),
    ("meta", ("name",), None),
    ("isPersonal", ("isProtected", "isVirtual"), None),
])
def test_a_key_is_taken_for_a_misspelling_only_when_one_or_two_letters_off(
        key: str, known: tuple[str, ...], meant: str | None) -> None:
    """One edit (a letter left out, added, changed or two swapped) makes a misspelling of a
    short key, two of a longer one; a known key never is one, and a key further off is not."""
    assert misspelling_of(key, known) == meant


@pytest.mark.parametrize(("toml", "expected"), [
    ("[recon]\npage_sise = 10\n", "recon.page_sise: unknown setting, did you mean page_size?"),
    ("[scripts]\ntime_limt = 2\n", "scripts.time_limt: unknown setting, did you mean time_limit?"),
    ("[log]\nlevle = \"debug\"\n", "log.levle: unknown setting, did you mean level?"),
    ("stat_dir = \"x\"\n", "stat_dir: unknown setting, did you mean state_dir?"),
])
def test_unknown_idsync_toml_keys_name_the_nearest_setting(tmp_path: Path, toml: str, expected: str) -> None:
    """A misspelt setting in any section of idsync.toml is an error (it used to be ignored)."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "idsync.toml").write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert str(err.value) == f"{tmp_path / 'conf' / 'idsync.toml'}: {expected}"


def test_unknown_environment_names_do_not_break_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An IDSYNC_* variable that names no setting (another tool's, a test's) is ignored."""
    monkeypatch.setenv("IDSYNC_SOMETHING_ELSE", "1")
    monkeypatch.setenv("IDSYNC_LDAP_HOST", "ldap.example.com")
    assert load_settings(tmp_path).recon.page_size == 1000


def test_a_misspelt_section_variable_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IDSYNC_RECON__PAGE_SISE is reported as the variable it is, not as a key of a file
    that does not hold it."""
    monkeypatch.setenv("IDSYNC_RECON__PAGE_SISE", "10")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert str(err.value) == "environment: IDSYNC_RECON__PAGE_SISE: unknown setting, did you mean page_size?"


# -- values validate let through and the run could not use --------------------------------------


def _prov(**props: Any) -> Callable[[Path], None]:
    return lambda p: _edit(p, _PROVISIONER, lambda d: d["configurationProperties"].update(props))


def _mapping(**keys: Any) -> Callable[[Path], None]:
    return lambda p: _edit(p, "sync.json", lambda d: d["mappings"][0].update(keys))


def _required_unknown(project: Path) -> None:
    _edit(project, "managed.json", lambda d: d["objects"][0]["schema"]["required"].append("nosuch"))


def _toml(text: str) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        path = project / "conf" / "idsync.toml"
        path.write_text(path.read_text() + text)
    return change


@pytest.mark.parametrize(("change", "file", "key"), [
    (_mapping(sourceQuery="(&(uid=a*)"), "sync.json", "mappings[systemLdapAccounts_managedUser].sourceQuery"),
    (_mapping(sourceQuery={"nativeQuery": "(uid=a*))"}), "sync.json",
     "mappings[systemLdapAccounts_managedUser].sourceQuery.nativeQuery"),
    (lambda p: _edit(p, "sync.json", lambda d: d["mappings"][1].update(targetQuery="(|(uid=a)")), "sync.json",
     "mappings[managedUser_systemLdapAccounts].targetQuery"),
    # A misspelt query used to be no query: the run read every object (and the target phase
    # of a misspelt targetQuery could delete what it was meant to leave alone).
    (_mapping(sourceQuery={"nativeQuerry": "(uid=a*)"}), "sync.json",
     "mappings[0].sourceQuery.nativeQuerry"),
    (_mapping(sourceQuery={"_queryFilter": "true", "extra": 1}), "sync.json",
     "mappings[0].sourceQuery.extra"),
    (lambda p: _edit(p, "sync.json", lambda d: d["mappings"][1].update(targetQuery={"_queryFiltr": "true"})),
     "sync.json", "mappings[1].targetQuery._queryFiltr"),
    (_mapping(correlationQuery={"_queryFiltr": 'userName eq "x"'}), "sync.json",
     "mappings[0].correlationQuery._queryFiltr"),
    (_prov(accountSearchFilter="(uid=a"), _PROVISIONER, "configurationProperties.accountSearchFilter"),
    (_prov(port=99999), _PROVISIONER, "configurationProperties.port"),
    (_prov(port="&{LDAP_PORT|99999}"), _PROVISIONER, "configurationProperties.port"),
    (_prov(readTimeout=1e15), _PROVISIONER, "configurationProperties.readTimeout"),
    (_prov(connectTimeout=1e15), _PROVISIONER, "configurationProperties.connectTimeout"),
    (_prov(baseContexts=["dc=example,,dc=com"]), _PROVISIONER, "configurationProperties.baseContexts[0]"),
    (_prov(baseContextsToSynchronize=["not a dn"]), _PROVISIONER,
     "configurationProperties.baseContextsToSynchronize[0]"),
    (_toml("[scripts]\ntime_limit = 1e308\n"), "idsync.toml", "scripts.time_limit"),
    (_required_unknown, "managed.json", "objects[0].schema.required[1]"),
], ids=["unbalanced-source", "unbalanced-native", "unbalanced-target", "misspelt-source-query",
        "source-query-extra-key", "misspelt-target-query", "misspelt-correlation", "account-filter", "port",
        "port-token", "read-timeout", "connect-timeout", "base-dn", "sync-dn", "script-time-limit", "required-unknown"])
def test_validate_catches_what_the_run_would_fail_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     change: Callable[[Path], None], file: str, key: str) -> None:
    """Each of these used to pass validate and fail the run (an "internal error", or every
    object failing): now validate exits 78 with ``file: key: problem``, and loading the
    project for a run raises the same ConfigError."""
    monkeypatch.setenv("IDSYNC_LDAP_PASSWORD", "unused")
    project = _project(tmp_path)
    change(project)
    code, out, err = _validate(project)
    where = f"{project / 'conf' / file}: {key}: "
    assert code == 78, out + err
    assert where in out, out
    with pytest.raises(ConfigError) as raised:
        check_connectors(load_project(project))  # what a run does before it reads anything
    assert str(raised.value).startswith(where)


@pytest.mark.parametrize(("sample", "parse"), [
    ("sync-with-scim/conf/provisioner.openicf-scim.json", parse_scim_config),
    ("sync-with-salesforce/conf/provisioner.openicf-salesforce.json", parse_salesforce_config),
])
def test_scim_and_salesforce_timeouts_are_bounded(sample: str, parse: Callable[[str, Any], Any]) -> None:
    """A readTimeout of 1e15 (which overflowed the HTTP client's clock at the first request)
    is a ``file: key: problem`` error when the provisioner is read."""
    config = json.loads((ROOT / "samples" / sample).read_text())
    props = config["configurationProperties"]
    for key, value in props.items():  # the sample's environment tokens, given plausible values
        if isinstance(value, str) and "&{" in value:
            props[key] = "https://peer.example.com/x" if re.search("url|endpoint", key, re.I) else "x"
    props["readTimeout"] = 10**15
    with pytest.raises(ConfigError, match=r"^f: configurationProperties\.readTimeout: must be .*a day"):
        parse("f", config)


def test_a_missing_managed_json_is_a_warning_and_the_built_in_types(tmp_path: Path) -> None:
    """Without conf/managed.json the built-in user and role types are used (the run works
    on them); validate says so, so a file left out of a deployment is noticed."""
    project = _project(tmp_path)
    (project / "conf" / "managed.json").unlink()
    code, out, err = _validate(project)
    assert code == 0, out + err
    assert f"warning: {project / 'conf' / 'managed.json'}: file not found: the built-in managed/user, managed/role " \
        "and managed/assignment types are used" in err.splitlines()
    assert sorted(load_project(project).managed.types) == ["assignment", "role", "user"]


# -- blockSize is the LDAP page size ----------------------------------------------------------


def _observe_pages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(page size asked, entries slapd answered) for each page of each paged search
    (listings read in this process, not in a listing process, so the searches are seen here)."""
    monkeypatch.setattr(ldap_connector, "two_cores", lambda: False)
    seen: list[tuple[int, int]] = []
    real = ldap_connection.LdapConnection.search_pages

    def observed(self: ldap_connection.LdapConnection, base: str, search_filter: str, attributes: Any,
                 page_size: int, **kw: Any) -> Iterator[list[ldap_connection.SearchEntry]]:
        for page in real(self, base, search_filter, attributes, page_size, **kw):
            seen.append((page_size, len(page)))
            yield page

    monkeypatch.setattr(ldap_connection.LdapConnection, "search_pages", observed)
    return seen


def _ldap_config(slapd: Slapd, subtree: str, block_size: int) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((ROOT / "conf" / _PROVISIONER).read_text())
    config["configurationProperties"].update(
        host="127.0.0.1", port=slapd.port, credentials=slapd.admin_password, baseContexts=[subtree],
        baseContextsToSynchronize=[subtree], blockSize=block_size)
    return config


def test_block_size_is_the_page_size_asked_of_the_directory(
        slapd: Slapd, ldap_subtree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With blockSize 3, slapd answers 7 entries in pages of 3, 3 and 1 (RFC 2696 paging
    as the server did it), while the caller still gets batches of its own page size."""
    slapd.add_ldif("".join(f"dn: uid=b{i},{ldap_subtree}\nobjectClass: inetOrgPerson\nuid: b{i}\ncn: b{i}\nsn: B\n\n"
                           for i in range(7)))
    seen = _observe_pages(monkeypatch)
    system = LdapSystem("ldap", _ldap_config(slapd, ldap_subtree, 3), file=_PROVISIONER)
    try:
        batches = [len(page) for page in system.resource("account").pages(QuerySpec(fields=["uid"], page_size=5))]
    finally:
        system.close()
    assert seen == [(3, 3), (3, 3), (3, 1)]
    assert batches == [5, 2]


def test_a_recon_pages_the_directory_by_block_size(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recon with ``[recon] page_size`` 1000 and the provisioner's blockSize 2 reads the
    directory two entries per page and still creates every user."""
    env.change_conf(_PROVISIONER, lambda d: d["configurationProperties"].update(blockSize=2))
    env.add("c1", "c2", "c3", "c4", "c5")
    seen = _observe_pages(monkeypatch)
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["created"] == 5
    source_pages = [answered for asked, answered in seen if asked == 2]
    assert source_pages[:3] == [2, 2, 1]
    assert all(asked == 2 for asked, _ in seen if asked)


def test_a_property_its_side_does_not_declare_is_a_warning(tmp_path: Path) -> None:
    """A mapping naming an LDAP attribute its objectTypes do not declare (the connector
    neither reads nor writes it), or a managed property one letter off a declared one, in a
    property rule or a correlation filter, is a validate warning naming the key and the
    property meant; a managed property that is merely undeclared (managed objects may hold
    any) or a numbered sibling of a declared one is not."""
    project = _project(tmp_path)

    def change(d: dict[str, Any]) -> None:
        forward, reverse = d["mappings"][0], d["mappings"][1]
        forward["properties"][0]["source"] = "descriptoin"  # LDAP side: not declared
        forward["properties"].append({"source": "mail", "target": "nickname"})  # undeclared, no near name
        forward["properties"].append({"source": "mail", "target": "mail2"})  # numbered sibling? none declared
        forward["correlationQuery"] = {"_queryFilter": '/userNme eq "${source.uid}"'}
        reverse["properties"].append({"source": "sn", "target": "snn"})  # LDAP side written

    _edit(project, "sync.json", change)
    code, out, err = _validate(project)
    assert code == 0 and "configuration ok" in out, out + err
    sync = project / "conf" / "sync.json"
    lines = [line for line in err.splitlines() if "is not a property of" in line]
    assert len(lines) == 3, lines
    (written,) = [line for line in lines if "'snn'" in line]
    assert written.startswith(f"warning: {sync}: mappings[managedUser_systemLdapAccounts].properties[")
    assert "is not a property of system/ldap/account" in written and "did you mean sn?" in written
    assert (f"warning: {sync}: mappings[0].correlationQuery: 'userNme' is not a property of managed/user; "
            "did you mean userName?") in lines
    (read,) = [line for line in lines if "'descriptoin'" in line]
    assert "properties[0].source: 'descriptoin' is not a property of system/ldap/account" in read
    assert "neither reads nor writes it; did you mean description?" in read
