"""PingIDM's own sample projects run unchanged: a mapping property without
``source`` has no source value, PingIDM's built-in ``&{launcher.*}`` /
``&{idm.*}`` tokens resolve to the project's directories, and the connector is
the one ``connectorRef`` names, never guessed from the system's name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, store_url
from idsync.config.project import load_project, validate_project
from idsync.errors import ConfigError, ConfigWarning
from idsync.resources import check_system
from idsync_dev.slapd import Slapd
from recon_env import Env

_STORES = BACKENDS[:2]  # SQLite and PostgreSQL
_JS = "text/javascript"


@pytest.fixture(params=_STORES)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def _with_properties(env: Env, *extra: dict[str, Any]) -> None:
    def change(sync: dict[str, Any]) -> None:
        sync["mappings"][0]["properties"] = [p for p in sync["mappings"][0]["properties"]
                                             if p["target"] not in {q["target"] for q in extra}] + list(extra)
    env.change_conf("sync.json", change)


def test_property_without_source_takes_its_default_and_transforms_see_null(env: Env) -> None:
    """OpenIDM's sample2 maps ``{"target": "accountStatus", "default": "active"}``: the
    property has no source value, so the default is stored (not the whole LDAP entry);
    a transform without ``source`` key sees ``source`` = null, and ``"source": ""``
    still hands the transform the whole source object."""
    _with_properties(
        env,
        {"target": "accountStatus", "default": "active"},
        {"target": "description", "transform": {"type": _JS, "source": "source === null ? 'null' : typeof source"}},
        {"target": "displayName", "source": "", "transform": {"type": _JS, "source": "'whole ' + source.uid"}},
    )
    env.add("bjensen", description="Created for OpenIDM")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    user = env.users()["bjensen"]
    assert user["accountStatus"] == "active"
    assert user["description"] == "null"
    assert user["displayName"] == "whole bjensen"


def test_property_without_source_needs_no_whole_entry(env: Env) -> None:
    """A default-only property does not make the mapping read every attribute: the
    source fields stay the mapped ones (``"source": ""`` still needs the whole entry)."""
    _with_properties(env, {"target": "accountStatus", "default": "active"})
    mapping = env.project.mapping("systemLdapAccounts_managedUser")
    fields = mapping.properties.source_fields()
    assert fields is not None and "uid" in fields
    _with_properties(env, {"target": "accountStatus", "source": ""})
    assert env.project.mapping("systemLdapAccounts_managedUser").properties.source_fields() is None


def _provisioner_file(project: Path, name: str = "ldap") -> Path:
    return project / "conf" / f"provisioner.openicf-{name}.json"


def _edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def test_builtin_launcher_tokens_resolve_to_the_project(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """``&{launcher.project.location}`` (and ``idm.instance.dir``,
    ``launcher.working.location``) is the project directory and
    ``&{launcher.install.location}`` (``idm.install.dir``) its parent, with no
    environment variable: a script file named through the token is read and the
    recon runs. A variable of the same name still wins."""
    for name in ("LAUNCHER_PROJECT_LOCATION", "LAUNCHER_INSTALL_LOCATION", "LAUNCHER_WORKING_LOCATION",
                 "IDM_INSTANCE_DIR", "IDM_INSTALL_DIR"):
        monkeypatch.delenv(name, raising=False)
    project = env.project.settings.conf_dir.parent
    (project / "script").mkdir()
    (project / "script" / "status.js").write_text("'from script'")
    _with_properties(env, {"target": "accountStatus",
                           "transform": {"type": _JS, "file": "&{launcher.project.location}/script/status.js"}})
    env.add("bjensen")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert env.users()["bjensen"]["accountStatus"] == "from script"

    tokens = {"project": "&{launcher.project.location}", "instance": "&{idm.instance.dir}",
              "working": "&{launcher.working.location}", "install": "&{launcher.install.location}",
              "installDir": "&{idm.install.dir}"}
    _edit(_provisioner_file(project), lambda p: p["configurationProperties"].update(tokens))
    config = load_project(project).provisioners["ldap"].config["configurationProperties"]
    here = str(project.absolute())
    assert {k: config[k] for k in tokens} == {"project": here, "instance": here, "working": here,
                                              "install": str(project.absolute().parent),
                                              "installDir": str(project.absolute().parent)}
    monkeypatch.setenv("LAUNCHER_INSTALL_LOCATION", "/opt/elsewhere")
    monkeypatch.setenv("idm.instance.dir", "/srv/idm")
    config = load_project(project).provisioners["ldap"].config["configurationProperties"]
    assert config["install"] == "/opt/elsewhere"
    assert config["instance"] == "/srv/idm"
    assert config["project"] == here


def test_unknown_token_without_variable_is_still_an_error(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only PingIDM's built-in names resolve on their own: another missing variable
    is an error naming the file and key."""
    monkeypatch.delenv("LAUNCHER_OTHER_LOCATION", raising=False)
    project = env.project.settings.conf_dir.parent
    _edit(_provisioner_file(project), lambda p: p["configurationProperties"].update(x="&{launcher.other.location}"))
    with pytest.raises(ConfigError, match=re.escape("configurationProperties.x: environment variable launcher.other")):
        _ = load_project(project).provisioners["ldap"].config


_XML_REF = {"bundleName": "org.forgerock.openicf.connectors.xml-connector", "bundleVersion": "1.1.0.3",
            "connectorName": "org.forgerock.openicf.connectors.xml.XMLConnector"}


def test_connector_ref_decides_not_the_system_name(env: Env) -> None:
    """An XML connector in ``provisioner.openicf-ldap.json`` (system ``ldap``) is not
    read as LDAP: the XML connector reads it, and ``validate`` names the file and the
    key it wants (the LDAP settings give it no ``xmlFilePath``)."""
    project = env.project.settings.conf_dir.parent
    prov = _provisioner_file(project)
    _edit(prov, lambda p: p.update(connectorRef=_XML_REF))
    assert load_project(project).provisioners["ldap"].kind == "xml"
    problems = [p for p in validate_project(project, check_system) if not isinstance(p, ConfigWarning)]
    assert len(problems) == 1, problems
    assert problems[0].file == str(prov) and problems[0].key == "configurationProperties.xmlFilePath"


def test_ldap_connector_ref_under_any_system_name(env: Env) -> None:
    """OpenIDM's ``org.identityconnectors.ldap.LdapConnector`` makes a system named
    ``hr`` an LDAP system: it validates and reconciles from the real slapd."""
    project = env.project.settings.conf_dir.parent
    old = _provisioner_file(project)
    data = json.loads(old.read_text())
    old.unlink()
    data["name"] = "hr"
    data["connectorRef"] = {"bundleName": "org.forgerock.openicf.connectors.ldap-connector",
                            "connectorName": "org.identityconnectors.ldap.LdapConnector"}
    _provisioner_file(project, "hr").write_text(json.dumps(data))
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace('"system/ldap/', '"system/hr/'))
    env.change_conf("sync.json", lambda s: None)
    assert env.project.provisioners["hr"].kind == "ldap"
    assert validate_project(project, check_system) == []
    env.add("bjensen")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert "bjensen" in env.users()


@pytest.mark.parametrize(("ref", "kind"), [
    ({"connectorName": "org.forgerock.openicf.connectors.scim.ScimConnector"}, "scim"),
    ({"bundleName": "org.forgerock.openicf.connectors.salesforce-connector"}, "salesforce"),
    ({"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"}, "csv"),
    ({"bundleName": "org.forgerock.openicf.connectors.xml-connector"}, "xml"),
])
def test_connector_ref_names_scim_and_salesforce(env: Env, ref: dict[str, str], kind: str) -> None:
    """``connectorName`` or ``bundleName`` alone decides the kind, whatever the file is called."""
    project = env.project.settings.conf_dir.parent
    _edit(_provisioner_file(project), lambda p: p.update(connectorRef=ref))
    env.project = load_project(project)
    assert env.project.provisioners["ldap"].kind == kind
