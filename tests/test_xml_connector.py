"""The XML file connector (OpenICF's ``XMLConnector`` provisioners) against real files:
namespaces, repeated and typed elements, object classes side by side, the password
never read back, DOCTYPEs and entities refused, writes that replace the file whole in
the schema's order, generated ``__UID__``s, a file made when it is missing, and
recons both ways: an XML file into the store (OpenIDM sample1's shape, with its
``require('lib/lodash')`` transform) and the store out to a new file. A bad file fails
the read and deletes nothing; a bad object fails alone."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from file_projects import POLICIES, changed, file_project, recon
from idsync.config.project import validate_project
from idsync.connectors.xml.connector import XmlSystem, open_xml_system
from idsync.errors import ConfigError, ConfigWarning, PeerError
from idsync.query.parser import parse
from idsync.resource import UNREADABLE, QuerySpec, WriteOp
from idsync.resources import check_system
from livesync_env import managed_users

ICF = "http://openidm.forgerock.com/xml/ns/public/resource/openicf/resource-schema-1.xsd"
RI = "http://example.com/xml/ns/people"
XML_REF = {"bundleName": "org.forgerock.openicf.connectors.xml-connector",
           "connectorName": "org.forgerock.openicf.connectors.xml.XMLConnector"}
SCHEMA = f"""<?xml version="1.0" encoding="UTF-8"?>
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="{RI}" xmlns:icf="{ICF}">
  <xsd:element name="__ACCOUNT__">
    <xsd:complexType><xsd:sequence>
      <xsd:element ref="icf:__UID__" minOccurs="0"/>
      <xsd:element ref="icf:__NAME__"/>
      <xsd:element ref="icf:__PASSWORD__" minOccurs="0"/>
      <xsd:element name="firstname" type="xsd:string" minOccurs="0"/>
      <xsd:element name="lastname" type="xsd:string"/>
      <xsd:element name="email" type="xsd:string" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="age" type="xsd:int" minOccurs="0"/>
      <xsd:element name="active" type="xsd:boolean" minOccurs="0"/>
      <xsd:element name="roles" type="xsd:string" minOccurs="0"/>
      <xsd:element ref="icf:__DESCRIPTION__" minOccurs="0"/>
    </xsd:sequence></xsd:complexType>
  </xsd:element>
  <xsd:element name="__GROUP__">
    <xsd:complexType><xsd:sequence>
      <xsd:element ref="icf:__NAME__"/>
    </xsd:sequence></xsd:complexType>
  </xsd:element>
</xsd:schema>
"""
TYPES: dict[str, Any] = {
    "account": {"id": "__ACCOUNT__", "nativeType": "__ACCOUNT__", "properties": {
        "_id": {"type": "string", "nativeName": "__UID__"},
        "name": {"type": "string", "nativeName": "__NAME__", "required": True},
        "password": {"type": "string", "nativeName": "__PASSWORD__", "flags": ["NOT_READABLE"]},
        "firstname": {"type": "string"}, "lastname": {"type": "string", "required": True},
        "email": {"type": "array", "items": {"type": "string"}},
        "age": {"nativeName": "age"}, "active": {"nativeName": "active"},
        "roles": {"type": "string"}, "description": {"type": "string", "nativeName": "__DESCRIPTION__"}}},
    "group": {"nativeType": "__GROUP__", "properties": {"name": {"type": "string", "nativeName": "__NAME__"}}},
}
DATA = f"""<?xml version="1.0" encoding="UTF-8"?>
<icf:OpenICFContainer xmlns:icf="{ICF}" xmlns:ri="{RI}">
   <!-- exported nightly -->
   <ri:__ACCOUNT__>
      <icf:__UID__>ajones</icf:__UID__>
      <icf:__NAME__>ajones@example.com</icf:__NAME__>
      <icf:__PASSWORD__>Secret1!</icf:__PASSWORD__>
      <ri:firstname>Alice</ri:firstname>
      <ri:lastname>Jones &amp; Sons</ri:lastname>
      <ri:email>ajones@example.com</ri:email>
      <ri:email>alice@example.org</ri:email>
      <ri:age>41</ri:age>
      <ri:active>true</ri:active>
      <ri:roles>staff,admin</ri:roles>
      <icf:__DESCRIPTION__>From the XML file</icf:__DESCRIPTION__>
   </ri:__ACCOUNT__>
   <ri:__GROUP__>
      <icf:__NAME__>staff</icf:__NAME__>
   </ri:__GROUP__>
   <ri:__ACCOUNT__>
      <icf:__UID__>bsmith</icf:__UID__>
      <icf:__NAME__>bsmith@example.com</icf:__NAME__>
      <ri:lastname>Smith</ri:lastname>
      <ri:active>false</ri:active>
      <ri:roles>staff</ri:roles>
   </ri:__ACCOUNT__>
</icf:OpenICFContainer>
"""


def _files(folder: Path, data: str = DATA) -> Path:
    (folder / "schema.xsd").write_text(SCHEMA)
    path = folder / "people.xml"
    path.write_text(data)
    return path


def _system(path: Path, **props: Any) -> XmlSystem:
    config = {"connectorRef": XML_REF, "objectTypes": TYPES, "configurationProperties": {
        "xmlFilePath": path.name, "xsdFilePath": "schema.xsd", **props}}
    return open_xml_system("people", config, file="provisioner.openicf-people.json", base=path.parent)


def _all(system: XmlSystem, kind: str = "account", spec: QuerySpec | None = None) -> list[dict[str, Any]]:
    return [o for page in system.resource(kind).pages(spec or QuerySpec()) for o in page]


def test_objects_are_read_with_their_types_and_classes(tmp_path: Path) -> None:
    """Repeated elements are an array, ``xsd:int`` and ``xsd:boolean`` columns typed by
    the schema, entities decoded; the groups of the same file are another object type;
    the password is never read back."""
    system = _system(_files(tmp_path))
    accounts = {o["_id"]: o for o in _all(system)}
    assert accounts["ajones"] == {
        "_id": "ajones", "name": "ajones@example.com", "firstname": "Alice", "lastname": "Jones & Sons",
        "email": ["ajones@example.com", "alice@example.org"], "age": 41, "active": True, "roles": "staff,admin",
        "description": "From the XML file"}
    assert accounts["bsmith"]["active"] is False
    assert _all(system, "group") == [{"_id": "staff", "name": "staff"}]
    found = _all(system, spec=QuerySpec(filter=parse('roles co "admin" or age lt 30'), fields=["name"]))
    assert found == [{"_id": "ajones", "name": "ajones@example.com"}]
    assert system.resource("account").get_many(["bsmith", "nobody"], ["lastname"]) == {
        "bsmith": {"_id": "bsmith", "lastname": "Smith"}}
    assert system.resource("account").count() == 2
    assert system.test()["xml"]["objects"] == {"__ACCOUNT__": 2, "__GROUP__": 1}


@pytest.mark.parametrize("data", [
    '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>\n<r/>',
    '<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "file:///etc/passwd">\n<r/>',
    '<?xml version="1.0"?>\n<r>\n  <ri:__ACCOUNT__><icf:__NAME__>x</icf:__NAME__></r>',
])
def test_a_doctype_an_entity_or_broken_xml_fails_the_read(tmp_path: Path, data: str) -> None:
    with pytest.raises(PeerError, match=r"people\.xml, line \d+"):
        _all(_system(_files(tmp_path, data)))


def test_a_bad_object_fails_alone(tmp_path: Path) -> None:
    """A value not of its property's type, or several for a single-valued one, fails the
    object by its id (a read by id leaves it out); an object without an id fails alone."""
    data = DATA.replace("<ri:age>41</ri:age>", "<ri:age>forty</ri:age>").replace(
        "<ri:lastname>Smith</ri:lastname>", "<ri:lastname>Smith</ri:lastname><ri:roles>x</ri:roles>")
    data = data.replace("</icf:OpenICFContainer>", "   <ri:__ACCOUNT__><ri:lastname>Nobody</ri:lastname>"
                        "</ri:__ACCOUNT__>\n</icf:OpenICFContainer>")
    path = _files(tmp_path, data)
    rows = _all(_system(path))
    assert [o.get("_id") for o in rows] == ["ajones", "bsmith", None]
    assert set(rows[0]) == {"_id", UNREADABLE} and "age: 'forty' is not an integer" in rows[0][UNREADABLE]
    assert "2 <roles> elements for the single-valued roles" in rows[1][UNREADABLE]
    assert "no __UID__ or __NAME__" in rows[2]["dn"]
    assert _system(path).resource("account").get_many(["ajones", "bsmith"]) == {}


def test_writes_keep_objects_in_place_and_elements_in_schema_order(tmp_path: Path) -> None:
    """An update replaces the elements it names, in the schema's order, and keeps the
    rest (the password, the group between the accounts, the comment goes); a create
    without ``__UID__`` gets a random one; a duplicate ``__NAME__`` fails alone; text
    that looks like markup stays text."""
    path = _files(tmp_path)
    resource = _system(path).resource("account")
    results = resource.write_batch([
        WriteOp("update", id="bsmith", values={"firstname": "Bob", "email": ["b@example.com", "bob@example.org"],
                                               "active": True}),
        WriteOp("create", values={"name": "cwu@example.com", "lastname": "<Wu> & \"Co\"", "password": "pw"}),
        WriteOp("create", values={"name": "ajones@example.com", "lastname": "Again"}),
        WriteOp("create", values={"name": "dlee@example.com"}),
        WriteOp("delete", id="ajones"),
    ])
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert "exists already" in str(results[2].error) and "lastname (required)" in str(results[3].error)
    new_id = results[1].id
    assert new_id and len(new_id) == 36
    system = _system(path)
    accounts = {o["_id"]: o for o in _all(system)}
    assert accounts["bsmith"] == {"_id": "bsmith", "name": "bsmith@example.com", "firstname": "Bob",
                                  "lastname": "Smith", "email": ["b@example.com", "bob@example.org"],
                                  "active": True, "roles": "staff"}
    assert accounts[new_id]["lastname"] == '<Wu> & "Co"'
    assert set(accounts) == {"bsmith", new_id} and _all(system, "group") == [{"_id": "staff", "name": "staff"}]
    lines = [line.strip() for line in path.read_text().splitlines()]
    bob = lines[lines.index("<icf:__UID__>bsmith</icf:__UID__>") - 1:]
    assert bob[:8] == ["<ri:__ACCOUNT__>", "<icf:__UID__>bsmith</icf:__UID__>",
                       "<icf:__NAME__>bsmith@example.com</icf:__NAME__>", "<ri:firstname>Bob</ri:firstname>",
                       "<ri:lastname>Smith</ri:lastname>", "<ri:email>b@example.com</ri:email>",
                       "<ri:email>bob@example.org</ri:email>", "<ri:active>true</ri:active>"]
    assert "<icf:__PASSWORD__>pw</icf:__PASSWORD__>" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.xml", "schema.xsd"]  # nothing left behind


def test_a_property_of_many_values_is_written_in_one_pass(tmp_path: Path) -> None:
    """An update of a property holding 20,000 values to another 20,000, half of them new,
    keeps the elements whose text stays and writes the new texts into the others, in well
    under a second of CPU: a search of each text through the elements took 23 s."""
    path = _files(tmp_path)
    resource = _system(path).resource("account")
    old = [f"m{i}@example.com" for i in range(20_000)]
    assert resource.write_batch([WriteOp("update", id="bsmith", values={"email": old})])[0].ok
    new = old[10_000:] + [f"n{i}@example.com" for i in range(10_000)]
    began = time.process_time()
    assert resource.write_batch([WriteOp("update", id="bsmith", values={"email": new})])[0].ok
    assert time.process_time() - began < 4
    assert {o["_id"]: o for o in _all(_system(path))}["bsmith"]["email"] == new


def test_a_new_uid_renames_and_a_missing_file_is_made_when_asked(tmp_path: Path) -> None:
    path = _files(tmp_path)
    resource = _system(path).resource("account")
    (renamed,) = resource.write_batch([WriteOp("update", id="bsmith", values={"_id": "bob"})])
    assert renamed.ok and renamed.id == "bob"  # objectTypes maps _id to __UID__
    assert resource.get("bsmith") is None and resource.get("bob")["lastname"] == "Smith"
    with pytest.raises(PeerError, match="does not exist"):
        _all(_system(tmp_path / "none.xml"))
    created = tmp_path / "new.xml"
    system = _system(created, createFileIfNotExists=True)
    assert _all(system) == []
    (done,) = system.resource("account").write_batch([WriteOp("create", values={
        "name": "x@example.com", "lastname": "X"})])
    assert done.ok and _all(_system(created))[0]["name"] == "x@example.com"
    assert f'xmlns:ri="{RI}"' in created.read_text()


@pytest.mark.parametrize(("props", "key"), [
    ({"xmlFilePath": None}, "configurationProperties.xmlFilePath"),
    ({"xsdIcfFilePath": "missing.xsd"}, "configurationProperties.xsdIcfFilePath"),
    ({"xsdFilePath": "missing.xsd"}, "configurationProperties.xsdFilePath"),
    ({"createFileIfNotExists": "yes"}, "configurationProperties.createFileIfNotExists"),
    # A misspelt key is told as such, not the setting it left unset or at its default.
    ({"xmlFilePath": None, "xmlFilPath": "people.xml"}, "configurationProperties.xmlFilPath"),
    ({"createFileIfNotExist": True}, "configurationProperties.createFileIfNotExist"),
])
def test_a_bad_setting_names_the_file_and_the_key(tmp_path: Path, props: dict[str, Any], key: str) -> None:
    path = _files(tmp_path)
    with pytest.raises(ConfigError) as caught:
        _system(path, **props)
    assert caught.value.file == "provisioner.openicf-people.json" and caught.value.key == key


def test_an_object_class_the_schema_lacks_is_refused(tmp_path: Path) -> None:
    path = _files(tmp_path)
    config = {"connectorRef": XML_REF, "configurationProperties": {"xmlFilePath": "people.xml",
                                                                    "xsdFilePath": "schema.xsd"},
              "objectTypes": {"org": {"nativeType": "OrganizationUnit", "properties": {}}}}
    with pytest.raises(ConfigError, match="no element 'OrganizationUnit'"):
        open_xml_system("people", config, file="p.json", base=path.parent)


# -- recons ------------------------------------------------------------------------

XML_IN = {"name": "systemPeopleAccounts_managedUser", "source": "system/people/account", "target": "managed/user",
          "correlationQuery": {"type": "text/javascript",
                               "source": "var query = {'_queryId' : 'for-userName', 'uid' : source.name};query;"},
          "properties": [
              {"source": "name", "target": "userName"}, {"source": "firstname", "target": "givenName"},
              {"source": "lastname", "target": "sn"}, {"source": "description", "target": "description"},
              {"source": "email", "target": "mail", "transform": {"type": "text/javascript",
                                                                 "source": "source ? source[0] : null"}},
              {"source": "roles", "target": "authzRoles", "transform": {
                  "type": "text/javascript",
                  "source": "var _ = require('lib/lodash'); _.map(source.split(','), function(role) "
                            "{ return {'_ref': 'repo/internal/role/' + role} });"}}],
          "policies": POLICIES}
XML_OUT = {"name": "managedUser_systemBadgesAccounts", "source": "managed/user", "target": "system/badges/account",
           "properties": [{"source": "userName", "target": "name"}, {"source": "sn", "target": "lastname"},
                          {"source": "mail", "target": "email", "transform": {
                              "type": "text/javascript", "source": "source ? [source] : []"}},
                          # sample5's AD password: NOT_READABLE, so written again only when it changes.
                          {"target": "password", "default": "Initial-Passw0rd"}],
           "policies": POLICIES}


def _project(tmp_path: Path, store: str) -> Path:
    project = file_project(tmp_path, [XML_IN, XML_OUT], store)
    _files(project / "data")
    for name, data in (("people", "people.xml"), ("badges", "badges.xml")):
        (project / "conf" / f"provisioner.openicf-{name}.json").write_text(json.dumps({
            "name": name, "connectorRef": XML_REF, "objectTypes": TYPES, "configurationProperties": {
                "xmlFilePath": f"&{{launcher.project.location}}/data/{data}",
                "xsdFilePath": "&{launcher.project.location}/data/schema.xsd",
                "createFileIfNotExists": name == "badges"}}))
    return project


def test_typed_elements_written_from_text_are_not_written_again(tmp_path: Path) -> None:
    """An integer and a boolean element written from text (``"41"``, ``"true"``) read back
    as 41 and true: the next recon compares them as the file keeps them and writes nothing."""
    project = _project(tmp_path, "sqlite")
    sync = json.loads((project / "conf" / "sync.json").read_text())
    sync["mappings"][1]["properties"] += [{"target": "age", "default": "41"}, {"target": "active", "default": "true"},
                                          {"target": "roles", "default": 5}]
    (project / "conf" / "sync.json").write_text(json.dumps(sync))
    assert changed(recon(project, XML_IN["name"])) == {"created": 2, "linked": 2}
    badges = project / "data" / "badges.xml"
    assert badges.read_text().count("<ri:age>41</ri:age>") == 2 and "<ri:roles>5</ri:roles>" in badges.read_text()
    stamp = badges.stat().st_mtime_ns
    assert changed(recon(project, XML_OUT["name"])) == {}
    assert badges.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_xml_file_into_the_store_and_out_to_a_new_file(tmp_path: Path, store: str) -> None:
    """sample1's shape: accounts become managed users, the lodash transform makes the
    internal role references; the users go out to a file that does not exist yet
    (``createFileIfNotExists``), each with a generated ``__UID__`` and a password that is
    never read back; an edited and a removed account follow through both; second runs
    write nothing and leave the file."""
    project = _project(tmp_path, store)
    assert changed(recon(project, XML_IN["name"])) == {"created": 2, "linked": 2}
    users = managed_users(project)
    assert users["ajones@example.com"]["authzRoles"] == [{"_ref": "repo/internal/role/staff"},
                                                         {"_ref": "repo/internal/role/admin"}]
    assert users["ajones@example.com"]["mail"] == "ajones@example.com"
    # The recon into the store carried its creates on to the file (``OnwardPush``, ``sync/changes.py``).
    assert changed(recon(project, XML_OUT["name"])) == {}
    badges = project / "data" / "badges.xml"
    assert badges.read_text().count("<icf:__UID__>") == 2
    assert badges.read_text().count("<icf:__PASSWORD__>Initial-Passw0rd</icf:__PASSWORD__>") == 2

    people = project / "data" / "people.xml"
    text = people.read_text().replace("Jones &amp; Sons", "Jones")
    start = text.index("<ri:__ACCOUNT__>\n      <icf:__UID__>bsmith")
    people.write_text(text[:start] + text[text.index("</ri:__ACCOUNT__>", start) + len("</ri:__ACCOUNT__>"):])
    assert changed(recon(project, XML_IN["name"])) == {"updated": 1, "deleted": 1}
    assert changed(recon(project, XML_OUT["name"])) == {}  # carried on by the recon into the store
    assert "<ri:lastname>Jones</ri:lastname>" in badges.read_text() and "bsmith" not in badges.read_text()

    stamp = badges.stat().st_mtime_ns, badges.stat().st_ino
    assert changed(recon(project, XML_IN["name"])) == {}
    assert changed(recon(project, XML_OUT["name"])) == {}
    assert (badges.stat().st_mtime_ns, badges.stat().st_ino) == stamp


def test_a_broken_file_deletes_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path, "sqlite")
    assert recon(project, XML_IN["name"]).state == "SUCCESS"
    people = project / "data" / "people.xml"
    people.write_text(people.read_text()[:400])  # an export cut short
    broken = recon(project, XML_IN["name"])
    assert broken.state == "FAILED" and "people.xml, line" in (broken.message or "")
    assert sorted(managed_users(project)) == ["ajones@example.com", "bsmith@example.com"]


def test_validate_names_a_livesync_job_whose_sources_cannot_tell_changes(tmp_path: Path) -> None:
    """The XML connector tells no changes: a liveSync job of an XML source is a
    ``validate`` error, as are sources naming no system or managed type; a CSV source
    and a managed type are fine."""
    project = _project(tmp_path, "sqlite")
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "live.toml").write_text(
        'schedule = "*/5 * * * *"\n'
        'livesync = ["system/people/account", "system/nope/account", "managed/nope", "managed/user"]\n')
    problems = [(p.key, str(p)) for p in validate_project(project, check_system)
                if not isinstance(p, ConfigWarning)]
    assert [key for key, _ in problems] == ["livesync"] * 3
    assert "system/people/account is an XML file, whose connector tells no changes" in problems[0][1]
    assert "no provisioner for system 'nope'" in problems[1][1]
    assert "no managed type 'nope'" in problems[2][1]


def test_a_new_file_without_a_schema_gets_a_namespace_for_its_objects(tmp_path: Path) -> None:
    """No ``xsdFilePath``: a file made for a create declares OpenICF's extension
    namespace for its objects (a prefix may not be bound to nothing), and reads back."""
    config = {"connectorRef": XML_REF, "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
        "name": {"nativeName": "__NAME__"}, "sn": {}}}},
              "configurationProperties": {"xmlFilePath": "new.xml", "createFileIfNotExists": True}}
    system = open_xml_system("people", config, file="p.json", base=tmp_path)
    (done,) = system.resource("account").write_batch([WriteOp("create", values={"name": "x", "sn": "X"})])
    assert done.ok
    text = (tmp_path / "new.xml").read_text()
    assert 'xmlns:ri="http://openidm.forgerock.com/xml/ns/public/resource/instances/resource-schema-extension"' in text
    assert _all(open_xml_system("people", config, file="p.json", base=tmp_path)) == [
        {"_id": "x", "name": "x", "sn": "X"}]


def test_flags_keep_a_property_from_a_create_or_an_update(tmp_path: Path) -> None:
    """As OpenICF does: a ``NOT_CREATABLE`` property is not written by a create, a
    ``NOT_UPDATEABLE`` one not by an update; the rest of the write is."""
    path = _files(tmp_path)
    types = json.loads(json.dumps(TYPES))
    types["account"]["properties"]["roles"]["flags"] = ["NOT_CREATABLE"]
    types["account"]["properties"]["firstname"]["flags"] = ["NOT_UPDATEABLE"]
    config = {"connectorRef": XML_REF, "objectTypes": types, "configurationProperties": {
        "xmlFilePath": path.name, "xsdFilePath": "schema.xsd"}}
    resource = open_xml_system("people", config, file="p.json", base=tmp_path).resource("account")
    done = resource.write_batch([
        WriteOp("create", values={"name": "n@example.com", "lastname": "N", "roles": "admin", "firstname": "Nia"}),
        WriteOp("update", id="bsmith", values={"firstname": "Bob", "roles": "admin"})])
    assert [r.ok for r in done] == [True, True]
    assert done[0].obj is not None and "roles" not in done[0].obj and done[0].obj["firstname"] == "Nia"
    assert resource.get("bsmith") == {**resource.get("bsmith"), "roles": "admin"}
    assert "firstname" not in resource.get("bsmith")


def test_an_id_read_again_fails_the_later_object(tmp_path: Path) -> None:
    data = DATA.replace("</icf:OpenICFContainer>", "   <ri:__ACCOUNT__>\n      <icf:__UID__>bsmith</icf:__UID__>\n"
                        "      <icf:__NAME__>other@example.com</icf:__NAME__>\n      <ri:lastname>Other</ri:lastname>\n"
                        "   </ri:__ACCOUNT__>\n</icf:OpenICFContainer>")
    rows = _all(_system(_files(tmp_path, data)))
    assert [o.get("_id") for o in rows] == ["ajones", "bsmith", None]
    assert rows[2] == {"dn": "people.xml, line 27: the id 'bsmith' again (first at line 20)"}


def test_a_value_xml_cannot_hold_fails_that_object_and_the_file_stays_readable(tmp_path: Path) -> None:
    """A control character (but tab, line feed, carriage return), U+FFFE or half a
    character cannot be in an XML file, not even as a reference: a file holding one
    would fail every later read. Such a value fails its object alone, naming the
    property and the character; the rest of the batch is written and the file reads."""
    path = _files(tmp_path)
    resource = _system(path).resource("account")
    results = resource.write_batch([
        WriteOp("create", values={"name": "ctrl@example.com", "lastname": "bad\x01name\x1b"}),
        WriteOp("update", id="bsmith", values={"firstname": "Bob\ufffe"}),
        WriteOp("update", id="ajones", values={"email": ["ok@example.com", "half\ud800@example.com"]}),
        WriteOp("create", values={"name": "tab@example.com", "lastname": "Tab\tand\nline"}),
    ])
    assert [r.ok for r in results] == [False, False, False, True]
    assert "lastname: U+0001 (a control character, at position 3) cannot be written" in str(results[0].error)
    assert "firstname: U+FFFE (a noncharacter" in str(results[1].error)
    assert "email: U+D800 (half of a character" in str(results[2].error)
    accounts = {o["name"]: o for o in _all(_system(path))}
    assert sorted(accounts) == ["ajones@example.com", "bsmith@example.com", "tab@example.com"]
    assert accounts["tab@example.com"]["lastname"] == "Tab\tand\nline"
    assert "firstname" not in accounts["bsmith@example.com"] and accounts["ajones@example.com"]["email"] == [
        "ajones@example.com", "alice@example.org"]


EXT = "http://openidm.forgerock.com/xml/ns/public/resource/instances/resource-schema-extension"
OWN_DECLARATIONS = (
    f'<icf:OpenICFContainer xmlns:icf="{ICF}"><ri:__ACCOUNT__ xmlns:ri="{EXT}" id="a&#9;b&#10;c&#13;">'
    '<icf:__UID__>u1</icf:__UID__><icf:__NAME__>bjensen</icf:__NAME__><ri:lastname xml:lang="en">Old</ri:lastname>'
    '<ri:email>b@example.com</ri:email></ri:__ACCOUNT__></icf:OpenICFContainer>')


def test_a_write_keeps_the_attributes_and_namespaces_of_elements_as_written(tmp_path: Path) -> None:
    """Objects declaring their own namespace and elements with XML attributes
    (``xml:lang``, an attribute holding a tab and line breaks): a write keeps them as
    written, an element taking a new text keeps its attributes, and what idsync writes
    uses prefixes bound where they are written (declared on the container for a new
    object), so that a namespace-aware reader reads the file as before."""
    import xml.etree.ElementTree as ET  # namespace-aware: expat with a namespace separator

    path = tmp_path / "accounts.xml"
    path.write_text(OWN_DECLARATIONS)
    config = {"connectorRef": XML_REF, "configurationProperties": {"xmlFilePath": path.name},
              "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
                  "_id": {"nativeName": "__UID__"}, "name": {"nativeName": "__NAME__"},
                  "firstname": {}, "lastname": {}, "email": {"type": "array", "items": {"type": "string"}}}}}}
    resource = open_xml_system("accounts", config, file="p.json", base=tmp_path).resource("account")
    results = resource.write_batch([
        WriteOp("update", id="u1", values={"lastname": "New", "firstname": "Barbara"}),
        WriteOp("create", values={"_id": "u2", "name": "sc", "lastname": "Carter", "email": ["s@example.com"]})])
    assert [r.ok for r in results] == [True, True]

    root = ET.parse(path).getroot()
    assert root.tag == f"{{{ICF}}}OpenICFContainer" and [a.tag for a in root] == [f"{{{EXT}}}__ACCOUNT__"] * 2
    first, second = root
    assert first.get("id") == "a\tb\nc\r"
    assert [(c.tag, c.text, c.attrib) for c in first] == [
        (f"{{{ICF}}}__UID__", "u1", {}), (f"{{{ICF}}}__NAME__", "bjensen", {}),
        (f"{{{EXT}}}firstname", "Barbara", {}),
        (f"{{{EXT}}}lastname", "New", {"{http://www.w3.org/XML/1998/namespace}lang": "en"}),
        (f"{{{EXT}}}email", "b@example.com", {})]
    assert [(c.tag, c.text) for c in second] == [
        (f"{{{ICF}}}__UID__", "u2"), (f"{{{ICF}}}__NAME__", "sc"), (f"{{{EXT}}}lastname", "Carter"),
        (f"{{{EXT}}}email", "s@example.com")]
    assert f'<ri:__ACCOUNT__ xmlns:ri="{EXT}" id="a&#9;b&#10;c&#13;">' in path.read_text()
    assert {o["_id"]: o.get("lastname") for o in _all(open_xml_system(
        "accounts", config, file="p.json", base=tmp_path))} == {"u1": "New", "u2": "Carter"}


def test_a_prefix_an_object_binds_elsewhere_is_not_used_in_it(tmp_path: Path) -> None:
    """An object binding the container's prefix to another namespace: an element written
    in it gets a prefix bound to the right namespace there, not the container's."""
    import xml.etree.ElementTree as ET

    data = DATA.replace("<ri:__ACCOUNT__>\n      <icf:__UID__>bsmith",
                        '<ri:__ACCOUNT__ xmlns:ri="urn:other" xmlns:p="' + RI + '">\n      <icf:__UID__>bsmith')
    data = data.replace("<ri:lastname>Smith</ri:lastname>", "<p:lastname>Smith</p:lastname>")
    path = _files(tmp_path, data)
    (done,) = _system(path).resource("account").write_batch([WriteOp("update", id="bsmith",
                                                                     values={"firstname": "Bob"})])
    assert done.ok
    bob = ET.parse(path).getroot()[2]
    assert [c.tag for c in bob][:4] == [f"{{{ICF}}}__UID__", f"{{{ICF}}}__NAME__", f"{{{RI}}}firstname",
                                        f"{{{RI}}}lastname"]
    assert "<p:firstname>Bob</p:firstname>" in path.read_text()


def test_a_carriage_return_reads_back_as_written_and_a_second_recon_writes_nothing(tmp_path: Path) -> None:
    """A carriage return in a value is written as ``&#13;``: a raw one would read back as
    a line feed (XML's end-of-line handling), so that every recon would find the object
    changed and rewrite the file."""
    project = _project(tmp_path, "sqlite")
    people = project / "data" / "people.xml"
    people.write_text(people.read_text().replace("Jones &amp; Sons", "Jones&#13;\nSons&#13;"))
    assert changed(recon(project, XML_IN["name"])) == {"created": 2, "linked": 2}
    assert managed_users(project)["ajones@example.com"]["sn"] == "Jones\r\nSons\r"
    badges = project / "data" / "badges.xml"
    assert "<ri:lastname>Jones&#13;\nSons&#13;</ri:lastname>" in badges.read_text()
    stamp = badges.stat().st_mtime_ns, badges.stat().st_ino
    assert changed(recon(project, XML_OUT["name"])) == {}
    assert (badges.stat().st_mtime_ns, badges.stat().st_ino) == stamp
    resource = _system(badges).resource("account")
    (done,) = resource.write_batch([WriteOp("create", values={"name": "cr", "lastname": "a\rb\r\nc"})])
    assert done.ok and resource.get(done.id or "")["lastname"] == "a\rb\r\nc"
