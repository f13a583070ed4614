"""What of a PingIDM project idsync does not act on is named by ``idsync validate``
(``config/unused.py``), an unsupported connector is one error, and a project shaped
like OpenIDM's sample 6 (two LDAP systems, ``ad`` and ``ldap``) reconciles both."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dbs import WITH_POSTGRESQL, store_url
from idsync.daemon.reload import load_configuration
from idsync_dev.slapd import Slapd
from structlog.testing import capture_logs

from samples import idsync, ldap_entry

_LDAP_REF = {"bundleName": "org.forgerock.openicf.connectors.ldap-connector",
             "connectorName": "org.identityconnectors.ldap.LdapConnector"}
_JS = "text/javascript"


def _write(path: Path, body: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if isinstance(body, str) else json.dumps(body, indent=2))
    return path


def _ldap_provisioner(name: str, slapd: Slapd, base: str, login: str = "uid", **extra: Any) -> dict[str, Any]:
    """An OpenICF LDAP provisioner for ``base``; ``login`` is the property read from
    ``uid`` (``sAMAccountName`` in OpenIDM's fake-AD provisioner)."""
    props = {p: {"type": "string", "nativeName": p} for p in ("cn", "sn", "givenName", "mail", "description")}
    return {
        "name": name, "connectorRef": _LDAP_REF,
        "configurationProperties": {
            "host": "127.0.0.1", "port": slapd.port, "ssl": False, "principal": slapd.admin_dn,
            "credentials": slapd.admin_password, "baseContexts": [base], "baseContextsToSynchronize": [base],
            "accountObjectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "accountUserNameAttributes": ["uid"], "uidAttribute": "entryUUID",
        },
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "dn": {"type": "string", "nativeName": "__NAME__", "required": True},
            login: {"type": "string", "nativeName": "uid"}, **props}}},
        **extra,
    }


def _project(tmp_path: Path, url: str) -> Path:
    project = tmp_path / "project"
    _write(project / "conf" / "idsync.toml", f'[store]\nurl = "{url}"\n[log]\nformat = "json"\n')
    return project


# -- files and keys idsync does not act on -------------------------------------------------------

_MANAGED = {"_comment": "from PingIDM", "objects": [{
    "name": "user", "iconClass": "fa fa-user", "meta": {"property": "_meta"},
    "onCreate": {"type": _JS, "source": "object.created = true;"},
    "postUpdate": {"type": _JS, "file": "script/onUpdateUser.js"},
    "onSync": {"type": _JS, "source": "1"},
    "actions": {"unlock": {"type": _JS, "source": "1"},
                "resetPassword": {"type": _JS, "source": "require('ui/resetPassword').sendMail(object, subject);",
                                  "globals": {"subject": "Your password has been reset"}},
                "notify": {"type": _JS, "source": "require('ui/notification').send(object);"}},
    "schema": {"required": ["userName"], "properties": {
        "userName": {"type": "string", "searchable": True, "minLength": 2,
                     "policies": [{"policyId": "unique"}]},
        "mail": {"type": "string", "pattern": ".+@.+", "isProtected": True},
        "displayName": {"type": "string", "pattern": "^\\p{L}+$"},  # JavaScript's, with the u flag
        "effectiveRoles": {"type": "array", "isVirtual": True,
                           "onRetrieve": {"type": _JS, "source": "require('roles/effectiveRoles')"
                                                                  ".calculateEffectiveRoles(object, 'roles');"}},
        "manager": {"type": "relationship", "reverseRelationship": True, "reversePropertyName": "reports"},
        "roles": {"type": "array", "items": {"type": "relationship"}},
        "authzRoles": {"type": "array", "items": {"type": "relationship",
                                                  "resourceCollection": [{"path": "internal/role"}]}},
        "password": {"type": "string", "encryption": {"key": "openidm-sym-default"}, "scope": "private"},
        "lastSync": {"type": "object", "scope": "private"},
        "telephoneNumber": {"type": "string", "policies": [{"policyId": "valid-array-items"}]},
    }},
}, {"name": "role", "onSync": {"type": _JS, "source": "require('roles/onSync-roles').syncUsersOfRoles("
                                                      "resourceName, oldObject, newObject, ['members']);"},
    "schema": {"properties": {"name": {"type": "string"}}}},
    {"name": "device", "onSync": {"type": _JS, "file": "compensate.js"},  # OpenIDM's sample5b
     "schema": {"properties": {"name": {"type": "string"}}}}]}

# Files idsync does not read, with how many of them share one line.
_FILES = {
    "authentication.json": "authenticates callers of its REST API",
    "audit.json": "audit event handlers",
    "router.json": "scripts PingIDM runs around requests",
    "endpoint-reconResults.json": "PingIDM's own endpoints",
    "endpoint-linkedView.json": "PingIDM's own endpoints",
    "script.json": "script engine settings",
    "workflow.json": "workflow engine",
    "selfservice-reset.json": "self-service",
    "ui-configuration.json": "the admin and end-user UI's configuration",
    "ui.context-admin.json": "the admin and end-user UI's configuration",
    "info-ping.json": "info endpoints",
    "servletfilter-cors.json": "filters of PingIDM's web server",
    "external.rest.json": "REST, JMS messages",
    "repo.jdbc.json": "PingIDM's repository",
    "provisioner.openicf.connectorinfoprovider.json": "remote connector servers",
    "jetty.xml": "server plumbing",
    "logging.properties": "server plumbing",
    "notes-for-migration.json": "not a file idsync knows",
}


# PingIDM's own endpoints, for its admin UI: their scripts are PingIDM's.
_ENDPOINTS = {
    "endpoint-reconResults.json": {"type": "text/javascript", "context": "endpoint/reconResults",
                                   "file": "ui/reconResults.js"},
    "endpoint-linkedView.json": {"type": "text/javascript", "context": "endpoint/linkedView/*",
                                 "source": "require('linkedView').fetch(request.resourcePath);"},
}


def _unused_project(tmp_path: Path, slapd: Slapd, subtree: str) -> Path:
    project = _project(tmp_path, f"sqlite:///{tmp_path / 'u.db'}")
    conf = project / "conf"
    for name in _FILES:
        _write(conf / name, "<Configure/>" if name.endswith(".xml") else
               "x=1\n" if name.endswith(".properties") else {"filters": []} if name == "router.json" else
               _ENDPOINTS.get(name, {}))
    _write(conf / "boot" / "boot.properties", "openidm.port.http=8080\n")
    _write(conf / "managed.json", _MANAGED)
    _write(conf / "policy.json", {"type": _JS, "file": "policy-custom.js", "comment": "from PingIDM"})
    _write(project / "script" / "onUpdateUser.js", "object.updated = true;\n")
    _write(conf / "provisioner.openicf-ldap.json", _ldap_provisioner(
        "ldap", slapd, subtree, poolConfigOption={"maxObjects": 10}, operationTimeout={"CREATE": -1},
        systemActions=[{"scriptId": "s", "actions": []}],
        operationOptions={"DELETE": {"denied": True, "onDeny": "DO_NOTHING"},
                          "CREATE": {"denied": False, "onDeny": "DO_NOTHING"}, "AUTHENTICATE": {"denied": True},
                          "SEARCH": {"denied": True, "onDeny": "DO_NOTHING"}}))
    mapping = {"name": "systemLdapAccounts_managedUser", "source": "system/ldap/account", "target": "managed/user",
               "properties": [{"source": "uid", "target": "userName"}],
               "taskThreads": 4, "prefetchLinks": True, "defaultMapping": {"type": _JS, "source": "1"},
               "onRecon": {"type": _JS, "source": "1"}, "consentRequired": True,
               "sourceIdsCaseSensitive": False}
    _write(conf / "sync.json", {"mappings": [mapping], "comment": "for the migration"})
    _write(conf / "mapping-managedUser_systemLdapAccounts.json", {
        "source": "managed/user", "target": "system/ldap/account", "links": "systemLdapAccounts_managedUser",
        "properties": [{"source": "userName", "target": "uid"}], "reconSourceQueryPageSize": 500})
    return project


def test_each_pingidm_file_and_key_idsync_does_not_act_on_is_one_warning(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A project carrying every kind of PingIDM file and key idsync reads but does not
    act on validates (exit 0), and each is one warning on stderr naming the file, the
    key and why: files of one kind share one line, a managed type's event scripts are
    one line, a custom action is one line when it loads a module of PingIDM's idsync does
    not provide and none when it is served (PingIDM's ``resetPassword`` too),
    ``operationOptions`` warns only about an operation it denies that idsync does not
    refuse (it refuses a denied CREATE, UPDATE or DELETE)."""
    project = _unused_project(tmp_path, slapd, ldap_subtree)
    conf = project / "conf"
    done = idsync(project, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{project}: configuration ok"
    lines = [line[len("warning: "):] for line in done.stderr.splitlines() if line.startswith("warning: ")]

    def one(prefix: str, *why: str) -> None:
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, (prefix, lines)
        for text in why:
            assert text in found[0], (text, found[0])

    for name, why in _FILES.items():
        same = sorted(n for n, w in _FILES.items() if w == why)
        if len(same) == 1:
            one(f"{conf / name}: ", why)
        else:
            one(f"{conf}: {', '.join(same)}: ", why)
    one(f"{conf / 'boot' / 'boot.properties'}: ", "startup properties", "environment variable")
    managed = conf / "managed.json"
    assert not any("objects[0].onSync" in line for line in lines)  # a project's own onSync runs
    one(f"{managed}: objects[1].onSync: ", "not run", "idsync pushes the users of a changed role or assignment itself")
    assert not any("objects[2].onSync" in line for line in lines)  # compensate.js: done by idsync (test_compensate.py)
    one(f"{managed}: objects[0].actions.notify: ", "not served", "require", "answers 501")
    assert not any(".actions.unlock" in line or ".actions.resetPassword" in line for line in lines)  # served
    one(f"{managed}: _comment: ", "reads only objects")
    one(f"{managed}: objects[0].meta: ", "does not use these keys of managed/user")
    # minLength and a pattern are enforced (tests/test_schema_policies.py); one Python cannot run is named.
    one(f"{managed}: objects[0].schema.properties.displayName.pattern: ",
        "not enforced", "regular expressions cannot run")
    assert not any("userName.minLength" in line or "mail.pattern" in line for line in lines)
    one(f"{managed}: objects[0].schema.properties.telephoneNumber.policies[0]: ",
        "not enforced: policy valid-array-items")
    one(f"{managed}: objects[0].schema.properties.effectiveRoles.onRetrieve: ", "not run",
        "idsync computes effectiveRoles and effectiveAssignments itself")
    policy = conf / "policy.json"
    one(f"{policy}: comment: ", "reads resources and additionalFiles")
    one(f"{policy}: file: ", "built-in policies")
    one(f"{managed}: objects[0].schema.properties.authzRoles: ", "internal/role", "kept as plain values")
    one(f"{managed}: objects[0].schema.properties.mail.isProtected: ", "not enforced", "no end-user self-service")
    sync = conf / "sync.json"
    one(f"{sync}: comment: ", "idsync reads only mappings")
    one(f"{sync}: mappings[0].defaultMapping: ", "not run")
    one(f"{sync}: mappings[0].consentRequired: ", "only the users who consented", "validSource")
    assert not any("onRecon" in line for line in lines)  # run (test_mapping_hooks.py)
    one(f"{sync}: mappings[0].{{taskThreads,prefetchLinks}}: ", "reconciliation tuning", "page_size")
    assert not any("sourceIdsCaseSensitive" in line for line in lines)  # followed (test_ids_case.py)
    one(f"{conf / 'mapping-managedUser_systemLdapAccounts.json'}: reconSourceQueryPageSize: ", "tuning")
    prov = conf / "provisioner.openicf-ldap.json"
    one(f"{prov}: {{poolConfigOption,operationTimeout}}: ", "OpenICF framework settings")
    one(f"{prov}: systemActions: ", "not served")
    one(f"{prov}: operationOptions.AUTHENTICATE.denied: ", "CREATE, UPDATE, DELETE, GET, SEARCH and SYNC only")
    assert not any("operationOptions.DELETE" in line or "operationOptions.SEARCH" in line
                   for line in lines)  # followed
    # Nothing else: the files idsync reads get no line of their own, no key is told twice.
    assert len(lines) == len(set(_FILES.values())) + 1 + 7 + 5 + 1 + 4 + 2, "\n".join(lines)
    # "scope": "private" is followed (the API never answers the property): no line.
    assert not any(".scope" in line or "idsync.toml:" in line for line in lines)

    answer = json.loads(idsync(project, "validate", "--json").stdout)
    assert answer["ok"] and answer["problems"] == []
    assert any(w["file"] == str(prov) and w["key"] == "systemActions" for w in answer["warnings"])
    assert len(answer["warnings"]) == len(lines)


def test_a_project_without_pingidm_extras_gets_no_warning(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """idsync's own files (idsync.toml, managed.json, sync.json, a provisioner) with only
    the keys idsync uses give no warning at all."""
    project = _project(tmp_path, f"sqlite:///{tmp_path / 'q.db'}")
    conf = project / "conf"
    _write(conf / "managed.json", {"objects": [{"name": "user", "schema": {"required": ["userName"], "properties": {
        "userName": {"type": "string", "searchable": True, "title": "User name", "viewable": True}}}}]})
    _write(conf / "provisioner.openicf-ldap.json", _ldap_provisioner("ldap", slapd, ldap_subtree))
    _write(conf / "sync.json", {"mappings": [{"name": "a", "source": "system/ldap/account", "target": "managed/user",
                                              "properties": [{"source": "uid", "target": "userName"}]}]})
    done = idsync(project, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning:" not in done.stderr, done.stderr


# -- connectors idsync does not have --------------------------------------------------------------

def test_an_unsupported_connector_is_one_error_naming_the_mappings_that_need_it(tmp_path: Path) -> None:
    """A ScriptedREST and a ScriptedSQL provisioner give one error line each, naming the connector and
    the mappings that need the system; those mappings' own problems (here a named-query
    correlation) are not listed, and the provisioners' keys get no warnings."""
    project = _project(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    conf = project / "conf"
    xml = _write(conf / "provisioner.openicf-xml.json", {
        "name": "xmlfile", "poolConfigOption": {"maxObjects": 1},
        "connectorRef": {"bundleName": "org.forgerock.openicf.connectors.groovy-connector",
                         "connectorName": "org.forgerock.openicf.connectors.scriptedrest.ScriptedRESTConnector"},
        "configurationProperties": {"serviceAddress": "http://localhost:8080"}})
    sql = _write(conf / "provisioner.openicf-hr.json", {
        "name": "hr", "connectorRef": {
            "connectorName": "org.forgerock.openicf.connectors.scriptedsql.ScriptedSQLConnector"},
        "configurationProperties": {"url": "jdbc:mysql://localhost:3306/hrdb"}})
    _write(conf / "sync.json", {"mappings": [
        {"name": "systemXmlAccounts_managedUser", "source": "system/xmlfile/account", "target": "managed/user",
         "correlationQuery": {"type": _JS, "source": "var q = {'_queryId': 'for-userName'}; q;"},
         "properties": [{"source": "name", "target": "userName"}]},
        {"name": "managedUser_systemXmlAccounts", "source": "managed/user", "target": "system/xmlfile/account",
         "properties": [{"source": "userName", "target": "name"}], "taskThreads": 2}]})
    _write(conf / "mapping-hrToManaged.json", {"source": "system/hr/account", "target": "managed/user",
                                               "properties": [{"source": "uid", "target": "userName"}]})
    done = idsync(project, "validate")
    assert done.returncode == os.EX_CONFIG, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"{sql}: connectorRef.connectorName: unsupported connector "
        "org.forgerock.openicf.connectors.scriptedsql.ScriptedSQLConnector (idsync has LDAP, SCIM, Salesforce, "
        "Database Table, CSV and XML file connectors); the mappings using system 'hr' cannot run and are not "
        "checked further "
        "(found: hrToManaged)",
        f"{xml}: connectorRef.connectorName: unsupported connector "
        "org.forgerock.openicf.connectors.scriptedrest.ScriptedRESTConnector (idsync has LDAP, SCIM, Salesforce, "
        "Database Table, CSV and XML file connectors); the mappings using system 'xmlfile' cannot run and are not "
        "checked further "
        "(found: systemXmlAccounts_managedUser, managedUser_systemXmlAccounts)",
    ]
    assert "poolConfigOption" not in done.stderr and "taskThreads" not in done.stderr


# -- two LDAP systems, as OpenIDM's sample 6 with its fake AD -------------------------------------

def _person(uid: str, base: str, description: str) -> str:
    return (f"dn: uid={uid},{base}\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n"
            f"objectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()} Example\nsn: Example\n"
            f"givenName: {uid.title()}\nmail: {uid}@ad.example.com\ndescription: {description}\n")


def _ou(name: str, parent: str) -> str:
    return f"dn: ou={name},{parent}\nobjectClass: top\nobjectClass: organizationalUnit\nou: {name}\n"


def _two_directories_project(tmp_path: Path, slapd: Slapd, subtree: str, url: str) -> tuple[Path, str]:
    """The "AD" people in ``ou=ad``, the directory's in ``ou=dir``; AD to the store, the
    store to the directory; a liveSync schedule on AD and a reconcile schedule."""
    ad, directory = f"ou=ad,{subtree}", f"ou=dir,{subtree}"
    slapd.add_ldif("\n".join([_ou("ad", subtree), _ou("dir", subtree), _person("amy", ad, "AD user"),
                              _person("bob", ad, "AD user"), _person("old", directory, "already here")]))
    project = _project(tmp_path, url)
    conf = project / "conf"
    _write(conf / "provisioner.openicf-fakead.json", _ldap_provisioner("ad", slapd, ad, login="sAMAccountName"))
    _write(conf / "provisioner.openicf-ldap.json", _ldap_provisioner("ldap", slapd, directory))
    names = ("cn", "description", "givenName", "mail", "sn")
    policies = [{"situation": s, "action": a} for s, a in (
        ("CONFIRMED", "UPDATE"), ("FOUND", "UPDATE"), ("ABSENT", "CREATE"), ("AMBIGUOUS", "IGNORE"),
        ("MISSING", "IGNORE"), ("SOURCE_MISSING", "DELETE"), ("UNQUALIFIED", "DELETE"),
        ("UNASSIGNED", "IGNORE"))]
    _write(conf / "sync.json", {"mappings": [
        {"name": "systemAdAccounts_managedUser", "source": "system/ad/account", "target": "managed/user",
         "properties": [*({"source": n, "target": n} for n in names),
                        {"source": "sAMAccountName", "target": "userName"}],
         "policies": policies},
        {"name": "managedUser_systemLdapAccounts", "source": "managed/user", "target": "system/ldap/account",
         "correlationQuery": {"_queryFilter": 'uid eq "${source.userName}"'},
         "properties": [{"source": "userName", "target": "uid"}, *({"source": n, "target": n} for n in names)],
         "onCreate": {"type": _JS, "source": f"target.dn = 'uid=' + source.userName + ',{directory}';"},
         "policies": policies},
    ]})
    _write(conf / "schedule-reconcile.json", {
        "enabled": False, "type": "cron", "schedule": "0/15 * * * * ?", "invokeService": "sync",
        "invokeContext": {"action": "reconcile", "mapping": "systemAdAccounts_managedUser"}})
    _write(conf / "schedule-activeSynchroniser_systemAdAccount.json", {
        "enabled": False, "type": "cron", "schedule": "0/15 * * * * ?", "invokeService": "provisioner",
        "invokeContext": {"action": "liveSync", "source": "system/ad/account"}})
    return project, directory


def _recon(project: Path, mapping: str) -> dict[str, Any]:
    done = idsync(project, "recon", mapping, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["state"] == "SUCCESS", result
    return result


def _wrote(result: dict[str, Any]) -> int:
    changes = result["changes"]
    return sum(changes[k] for k in ("created", "updated", "deleted", "linked", "unlinked"))


@pytest.mark.parametrize("kind", WITH_POSTGRESQL)
def test_two_ldap_systems_reconcile_and_converge(tmp_path: Path, slapd: Slapd, ldap_subtree: str, kind: str) -> None:
    """Shaped like OpenIDM's sample 6 with its fake-AD provisioner copied in: systems
    ``ad`` and ``ldap`` in one project validate, their liveSync schedule a job;
    AD's people reach the store, then the directory, with AD's values; a second pass
    of both mappings writes nothing."""
    project, directory = _two_directories_project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    done = idsync(project, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "activeSynchroniser_systemAdAccount" not in done.stderr, done.stderr
    jobs = idsync(project, "jobs")
    assert "activeSynchroniser_systemAdAccount" in jobs.stdout, jobs.stdout + jobs.stderr

    first = _recon(project, "systemAdAccounts_managedUser")
    assert first["changes"]["created"] == 2, first
    # The recon into the store carried its creates on to the directory (``OnwardPush``, ``sync/changes.py``).
    pushed = _recon(project, "managedUser_systemLdapAccounts")
    assert _wrote(pushed) == 0, pushed
    entry = ldap_entry(slapd, f"uid=amy,{directory}")
    assert entry is not None and entry["description"] == ["AD user"] and entry["mail"] == ["amy@ad.example.com"]
    assert ldap_entry(slapd, f"uid=old,{directory}") is not None  # UNASSIGNED: IGNORE

    for mapping in ("systemAdAccounts_managedUser", "managedUser_systemLdapAccounts"):
        again = _recon(project, mapping)
        assert _wrote(again) == 0, again


def test_the_daemon_says_once_per_load_that_something_is_not_used(tmp_path: Path) -> None:
    """At start and at a reload, the daemon logs one ``config.not_used`` line with the
    count of ``validate`` warnings; a reload that keeps the previous project (its conf/
    broke) and a project without PingIDM extras log none."""
    root = tmp_path / "project"
    _write(root / "conf" / "sync.json", {"mappings": [{"name": "m", "source": "managed/user",
                                                       "target": "managed/role"}]})
    with capture_logs() as logs:
        plain = load_configuration(root)
    assert not [e for e in logs if e["event"] == "config.not_used"]

    _write(root / "conf" / "ui-configuration.json", {})
    _write(root / "conf" / "jetty.xml", "<Configure/>")
    with capture_logs() as logs:
        first = load_configuration(root, previous=plain)
    assert [(e["log_level"], e["count"]) for e in logs if e["event"] == "config.not_used"] == [("warning", 2)]

    (root / "conf" / "sync.json").write_text("{ not json")
    with capture_logs() as logs:
        kept = load_configuration(root, previous=first)
    assert kept.project is first.project
    assert not [e for e in logs if e["event"] == "config.not_used"]
