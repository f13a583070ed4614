"""The CSV file connector (OpenICF's ``CSVFileConnector`` provisioners) against real
files: what a file may look like (a byte-order mark, spaces after the delimiter,
quoted delimiters and line breaks, CRLF), typed columns, filters, writes that
replace the file whole and keep rows and columns in place, writers taking turns,
and recons both ways: an HR file into the store and back out, and a file to a file
correlated by an ``expressionTree`` (the shape of OpenIDM's getting-started
project). A bad file fails the read and deletes nothing; a bad row fails alone."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from file_projects import POLICIES, changed, file_project, recon
from idsync.config.project import load_project
from idsync.connectors.csv.connector import CsvSystem, open_csv_system
from idsync.connectors.files import ById
from idsync.errors import ConfigError, ObjectRejected, PeerError
from idsync.query.parser import parse
from idsync.resource import UNREADABLE, QuerySpec, WriteOp
from idsync.resources import Resources, check_system
from idsync.store.database import Store
from livesync_env import live, live_after_expiry, managed_users, set_token, stored_token

CSV_REF = {"bundleName": "org.openidentityplatform.openicf.connectors.csvfile-connector",
           "bundleVersion": "[2.0.0.0,3)", "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"}
HR_TYPES: dict[str, Any] = {"account": {"id": "__ACCOUNT__", "nativeType": "__ACCOUNT__", "properties": {
    "uid": {"type": "string", "required": True, "nativeName": "__NAME__"},
    "firstName": {"type": "string"}, "lastName": {"type": "string", "required": True},
    "email": {"type": "string"}, "employeeNumber": {"type": "integer"}, "active": {"type": "boolean"},
    "password": {"type": "string", "nativeName": "__PASSWORD__"},
}}}
HR = ('"uid", "firstName", "lastName", "email", "employeeNumber", "active", "password"\n'
      '"ajones", "Alice", "Jones", "ajones@example.com", "1001", "true", "Secret1!"\n'
      '"bsmith", "Bob", "Smith, Jr.", "bsmith@example.com", "1002", "false", ""\n'
      '"cwu", "Chen", "Wu", "cwu@example.com", "1003", "true", ""\n')


def _system(path: Path, types: dict[str, Any] | None = None, **props: Any) -> CsvSystem:
    config = {"connectorRef": CSV_REF, "configurationProperties": {"csvFile": str(path), **props},
              "objectTypes": types or HR_TYPES}
    return open_csv_system("hr", config, file="provisioner.openicf-hr.json", base=path.parent,
                           state=path.parent / "state")


def _all(system: CsvSystem, spec: QuerySpec | None = None) -> list[dict[str, Any]]:
    return [o for page in system.resource("account").pages(spec or QuerySpec()) for o in page]


def test_rows_are_read_with_their_quirks_and_types(tmp_path: Path) -> None:
    """A byte-order mark, CRLF, spaces after each delimiter, a quoted delimiter and a
    quoted line break are read as the text they hold; typed columns become integers and
    booleans, an empty cell no value; the password column is never read back."""
    path = tmp_path / "hr.csv"
    text = HR.replace('"cwu", "Chen"', '"cwu", "Chen\nLi"').replace("\n", "\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    rows = {o["_id"]: o for o in _all(_system(path))}
    assert rows["ajones"] == {"_id": "ajones", "uid": "ajones", "firstName": "Alice", "lastName": "Jones",
                              "email": "ajones@example.com", "employeeNumber": 1001, "active": True}
    assert rows["bsmith"]["lastName"] == "Smith, Jr." and rows["bsmith"]["active"] is False
    assert rows["cwu"]["firstName"] == "Chen\r\nLi"


def test_filters_fields_pages_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    system = _system(path)
    found = _all(system, QuerySpec(filter=parse('employeeNumber gt 1001 and active eq true'), fields=["email"]))
    assert found == [{"_id": "cwu", "email": "cwu@example.com"}]
    pages = list(system.resource("account").pages(QuerySpec(page_size=2)))
    assert [len(p) for p in pages] == [2, 1]
    got = system.resource("account").get_many(["cwu", "nobody", "ajones"], ["lastName"])
    assert got == {"cwu": {"_id": "cwu", "lastName": "Wu"}, "ajones": {"_id": "ajones", "lastName": "Jones"}}
    assert system.resource("account").count() == 3


def test_writes_replace_the_file_and_keep_rows_and_columns_in_place(tmp_path: Path) -> None:
    """An update changes its row where it is, a delete removes it, a create goes at the
    end; the columns keep their order, every field quoted. A create whose id a row has,
    or with a value for a column the header lacks, fails alone; the others are written."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    path.chmod(0o640)
    resource = _system(path).resource("account")
    results = resource.write_batch([
        WriteOp("update", id="bsmith", values={"lastName": "Smith", "active": True}),
        WriteOp("delete", id="ajones"),
        WriteOp("create", values={"uid": "dlee", "lastName": "Lee", "employeeNumber": 1004, "password": "pw"}),
        WriteOp("create", values={"uid": "cwu", "lastName": "Wu"}),
        WriteOp("create", values={"uid": "eve", "lastName": "E", "title": "x"}),
        WriteOp("create", values={"uid": "fay"}),
        WriteOp("update", id="nobody", values={"lastName": "X"}),
    ])
    assert [r.ok for r in results] == [True, True, True, False, False, False, False]
    assert "exists already" in str(results[3].error)
    assert "title" in str(results[4].error)
    assert "lastName (required)" in str(results[5].error)
    assert results[2].obj == {"_id": "dlee", "uid": "dlee", "lastName": "Lee", "employeeNumber": 1004}
    assert path.read_text().splitlines() == [
        '"uid","firstName","lastName","email","employeeNumber","active","password"',
        '"bsmith","Bob","Smith","bsmith@example.com","1002","true",""',
        '"cwu","Chen","Wu","cwu@example.com","1003","true",""',
        '"dlee","","Lee","","1004","","pw"',
    ]
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["hr.csv"]  # no copy or temporary file left


def test_a_new_uid_renames_the_row(tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    resource = _system(path).resource("account")
    (result,) = resource.write_batch([WriteOp("update", id="cwu", values={"uid": "cwu2"})])
    assert result.id == "cwu2" and resource.get("cwu") is None and resource.get("cwu2")["lastName"] == "Wu"
    (clash,) = resource.write_batch([WriteOp("update", id="cwu2", values={"uid": "ajones"})])
    assert isinstance(clash.error, ObjectRejected)


def _create_rows(path: str, prefix: str) -> None:
    resource = _system(Path(path)).resource("account")
    for batch in range(10):
        ops = [WriteOp("create", values={"uid": f"{prefix}{batch}-{i}", "lastName": "L"}) for i in range(5)]
        assert all(r.ok for r in resource.write_batch(ops))


def test_writers_take_turns(tmp_path: Path) -> None:
    """Three processes each writing ten batches into one file lose none of the others' rows."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_create_rows, args=(str(path), p)) for p in "xyz"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(_all(_system(path))) == 3 + 150


def test_a_bad_file_fails_the_read_and_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(HR.replace('"cwu", "Chen"', '"cwu", "Chen'))
    with pytest.raises(PeerError, match=r"hr\.csv, line \d+"):
        _all(_system(path))
    path.write_text(HR.replace('"uid",', '"login",'))
    with pytest.raises(PeerError, match="no 'uid' column \\(headerUid\\)"):
        _all(_system(path))
    path.write_bytes(HR.encode().replace(b"Chen", b"Ch\xe9n"))
    with pytest.raises(PeerError, match="not utf-8 text"):
        _all(_system(path))
    assert [o["firstName"] for o in _all(_system(path, encoding="latin-1")) if o["_id"] == "cwu"] == ["Ch\xe9n"]
    with pytest.raises(PeerError, match="does not exist"):
        _all(_system(tmp_path / "missing.csv"))


def test_a_file_written_in_place_while_it_is_read_fails_the_read(tmp_path: Path) -> None:
    """An export that rewrites the file in place while a recon reads it could hand over
    half a file: the read fails rather than end as if complete. A writer that replaces
    the file (as idsync does) leaves the read's file alone, and the read completes."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    pages = _system(path).resource("account").pages(QuerySpec(page_size=1))
    next(pages)
    with path.open("a") as out:
        out.write('"dlee", "Dana", "Lee", "", "", "", ""\n')
    with pytest.raises(PeerError, match="changed while it was read"):
        list(pages)
    pages = _system(path).resource("account").pages(QuerySpec(page_size=1))
    next(pages)
    replaced = tmp_path / "new.csv"
    replaced.write_text(HR)
    replaced.replace(path)
    assert len(list(pages)) == 3


def test_values_that_look_like_syntax_stay_values(tmp_path: Path) -> None:
    """Delimiters, quotes, line breaks and a leading = written and read back are the
    same text: a value never becomes a column, a row or a quote."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    resource = _system(path).resource("account")
    odd = 'a "quoted", value\n"next", "row"'
    (result,) = resource.write_batch([WriteOp("update", id="cwu", values={"firstName": odd, "email": "=1+1"})])
    assert result.ok
    assert resource.get("cwu") == {**resource.get("cwu"), "firstName": odd, "email": "=1+1"}
    assert len(_all(_system(path))) == 3


def test_a_bad_row_fails_alone(tmp_path: Path) -> None:
    """A row of the wrong width is an object without an id; one with a value not of its
    property's type is answered by its id, saying which value, and a read by id leaves
    it out."""
    path = tmp_path / "hr.csv"
    path.write_text(HR + '"dlee", "D"\n"", "No", "Id"\n"eve", "Eve", "E", "", "abc", "", ""\n')
    rows = _all(_system(path))
    assert [o.get("_id") for o in rows] == ["ajones", "bsmith", "cwu", None, None, "eve"]
    assert rows[3] == {"dn": "hr.csv, line 5: 2 fields, the header has 7"}
    assert rows[4] == {"dn": "hr.csv, line 6: 3 fields, the header has 7"}
    assert rows[5] == {"_id": "eve", UNREADABLE: "hr.csv, line 7: employeeNumber: 'abc' is not an integer"}
    assert list(_system(path).resource("account").get_many(["eve", "cwu"])) == ["cwu"]


@pytest.mark.parametrize(("props", "key"), [
    ({"csvFile": None}, "configurationProperties.csvFile"),
    ({"fieldDelimiter": ";;"}, "configurationProperties.fieldDelimiter"),
    ({"quoteCharacter": ","}, "configurationProperties.fieldDelimiter"),
    ({"encoding": "klingon"}, "configurationProperties.encoding"),
    ({"newlineString": "|"}, "configurationProperties.newlineString"),
    # A misspelt key is told as such, not the setting it left unset or at its default.
    ({"csvFile": None, "csvFil": "hr.csv"}, "configurationProperties.csvFil"),
    ({"syncFileRetentionCont": 10}, "configurationProperties.syncFileRetentionCont"),
])
def test_a_bad_setting_names_the_file_and_the_key(tmp_path: Path, props: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _system(tmp_path / "hr.csv", **props)
    assert caught.value.file == "provisioner.openicf-hr.json" and caught.value.key == key


def test_an_object_type_other_than_accounts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="__ACCOUNT__ rows only"):
        _system(tmp_path / "hr.csv", types={"group": {"nativeType": "__GROUP__", "properties": {}}})
    with pytest.raises(ConfigError, match="holds one value"):
        _system(tmp_path / "hr.csv", types={"account": {"properties": {"roles": {"type": "array"}}}})


# -- recons -----------------------------------------------------------------------


def _provisioner(project: Path, name: str, csv_file: str, types: dict[str, Any], **props: Any) -> None:
    (project / "conf" / f"provisioner.openicf-{name}.json").write_text(json.dumps({
        "name": name, "connectorRef": CSV_REF, "poolConfigOption": {"maxObjects": 10},
        "configurationProperties": {"csvFile": csv_file, **props}, "objectTypes": types}))


HR_IN = {"name": "systemHrAccounts_managedUser", "source": "system/hr/account", "target": "managed/user",
         "properties": [{"source": "uid", "target": "userName"}, {"source": "firstName", "target": "givenName"},
                        {"source": "lastName", "target": "sn"}, {"source": "email", "target": "mail"},
                        {"target": "accountStatus", "default": "active"}],
         "policies": POLICIES}
BADGES_OUT = {"name": "managedUser_systemBadgesAccounts", "source": "managed/user", "target": "system/badges/account",
              "properties": [{"source": "userName", "target": "login"}, {"source": "sn", "target": "surname"},
                             {"source": "mail", "target": "email"}],
              "policies": POLICIES}
BADGE_TYPES: dict[str, Any] = {"account": {"nativeType": "__ACCOUNT__", "properties": {
    "login": {"type": "string", "nativeName": "__NAME__", "required": True},
    "surname": {"type": "string"}, "email": {"type": "string"}}}}


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_hr_file_into_the_store_and_out_to_another_file(tmp_path: Path, store: str) -> None:
    """HR rows become managed users (a relative ``csvFile`` under the project, the
    project token too); the users go out to a badge file that starts with its header
    only; an edited and a removed HR row follow through both mappings, a renamed user renames its badge row; every
    second run writes nothing and leaves the badge file untouched."""
    project = file_project(tmp_path, [HR_IN, BADGES_OUT], store)
    (project / "data" / "hr.csv").write_text(HR)
    (project / "data" / "badges.csv").write_text("badge;login;surname;email\n")
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES)
    _provisioner(project, "badges", "&{launcher.project.location}/data/badges.csv", BADGE_TYPES,
                 headerUid="login", fieldDelimiter=";")
    first = recon(project, HR_IN["name"])
    assert first.state == "SUCCESS" and first.summary["situationSummary"]["ABSENT"] == 3
    assert managed_users(project)["bsmith"]["sn"] == "Smith, Jr."
    assert recon(project, BADGES_OUT["name"]).state == "SUCCESS"
    badges = project / "data" / "badges.csv"
    assert sorted(badges.read_text().splitlines()[1:]) == [
        '"";"ajones";"Jones";"ajones@example.com"', '"";"bsmith";"Smith, Jr.";"bsmith@example.com"',
        '"";"cwu";"Wu";"cwu@example.com"']

    hr = project / "data" / "hr.csv"
    hr.write_text(HR.replace("Smith, Jr.", "Smith").replace('"ajones", "Alice", "Jones", "ajones@example.com", '
                                                            '"1001", "true", "Secret1!"\n', ""))
    assert changed(recon(project, HR_IN["name"])) == {"updated": 1, "deleted": 1}
    assert changed(recon(project, BADGES_OUT["name"])) == {}  # carried on by the recon into the store
    assert sorted(line.split(";")[1] for line in badges.read_text().splitlines()[1:]) == ['"bsmith"', '"cwu"']
    assert '"Smith"' in badges.read_text()

    loaded = load_project(project)
    store_ = Store.open(loaded.settings.store_url())
    try:
        users = Resources(loaded, store_).open("managed/user")
        users.update(managed_users(project)["cwu"]["_id"], {"userName": "cwu2"})
    finally:
        store_.close()
    assert changed(recon(project, BADGES_OUT["name"])) == {"updated": 1}  # the row renamed, its link following
    assert sorted(line.split(";")[1] for line in badges.read_text().splitlines()[1:]) == ['"bsmith"', '"cwu2"']

    # The HR file still says cwu: the next runs put the name back, the badge row with it.
    assert changed(recon(project, HR_IN["name"])) == {"updated": 1}
    assert changed(recon(project, BADGES_OUT["name"])) == {}  # carried on by the recon into the store
    assert sorted(line.split(";")[1] for line in badges.read_text().splitlines()[1:]) == ['"bsmith"', '"cwu"']

    stamp = badges.stat().st_mtime_ns, badges.stat().st_ino
    assert changed(recon(project, HR_IN["name"])) == {}
    assert changed(recon(project, BADGES_OUT["name"])) == {}
    assert (badges.stat().st_mtime_ns, badges.stat().st_ino) == stamp


def test_text_into_a_typed_column_is_no_change_once_written(tmp_path: Path) -> None:
    """Text going to a boolean and an integer column (``"true"``, ``"1001"``) is written as
    it is and read back as a boolean and a number: the second run compares it so, finds
    every row unchanged and leaves the file untouched."""
    hr_in = {**HR_IN, "properties": [*HR_IN["properties"], {  # type: ignore[list-item]
        "source": "employeeNumber", "target": "description",
        "transform": {"type": "text/javascript", "source": "'' + source"}}]}
    typed_out = {**BADGES_OUT, "properties": [{"source": "userName", "target": "login"},
                                              {"source": "description", "target": "badge"},
                                              {"target": "active", "default": "true"}]}
    project = file_project(tmp_path, [hr_in, typed_out])
    (project / "data" / "hr.csv").write_text(HR)
    badges = project / "data" / "badges.csv"
    badges.write_text("login,badge,active\n")
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES)
    _provisioner(project, "badges", "data/badges.csv", {"account": {"nativeType": "__ACCOUNT__", "properties": {
        "login": {"type": "string", "nativeName": "__NAME__", "required": True},
        "badge": {"type": "integer"}, "active": {"type": "boolean"}}}}, headerUid="login")
    assert recon(project, hr_in["name"]).state == "SUCCESS"
    assert changed(recon(project, typed_out["name"])) == {}  # carried on by the recon into the store
    assert badges.read_text().splitlines()[1] == '"ajones","1001","true"'
    stamp = badges.stat().st_mtime_ns, badges.stat().st_ino
    again = recon(project, typed_out["name"])
    assert changed(again) == {} and again.summary["changes"]["unchanged"] == 3
    assert (badges.stat().st_mtime_ns, badges.stat().st_ino) == stamp


def test_a_file_to_a_file_correlated_by_an_expression_tree(tmp_path: Path) -> None:
    """The getting-started shape: rows of an HR file correlated to rows of an
    engineering file by an ``expressionTree`` on ``name`` (the email), a transform
    and a default; found rows are updated in place, the missing one is created,
    and the second run finds everything CONFIRMED."""
    mapping = {
        "name": "hr_engineering", "source": "system/hr/account", "target": "system/engineering/account",
        "correlationQuery": {"expressionTree": {"all": ["name"]}, "mapping": "hr_engineering",
                             "type": "text/javascript", "file": "ui/correlateTreeToQueryFilter.js"},
        "properties": [{"source": "email", "target": "name"}, {"source": "lastName", "target": "lastname"},
                       {"source": "email", "target": "email"},
                       {"source": "employeeNumber", "target": "roles", "transform": {
                           "type": "text/javascript",
                           "source": "(String(source).substring(0,1) === '1') ? 'staff,admin' : 'staff';"}},
                       {"target": "telephoneNumber", "default": "N/A"}],
        "policies": POLICIES[:6]}
    project = file_project(tmp_path, [mapping])
    (project / "data" / "hr.csv").write_text(HR)
    (project / "data" / "engineering.csv").write_text(
        '"description", "email", "name", "lastname", "telephoneNumber", "roles"\n'
        '"From engineering", "ajones@example.com", "ajones@example.com", "Jonse", "555", "staff"\n'
        '"From engineering", "cwu@example.com", "cwu@example.com", "Wu", "556", "staff"\n')
    _provisioner(project, "hr", "&{launcher.project.location}/data/hr.csv", HR_TYPES)
    _provisioner(project, "engineering", "&{launcher.project.location}/data/engineering.csv",
                 {"account": {"id": "__ACCOUNT__", "nativeType": "__ACCOUNT__", "properties": {
                     "description": {"type": "string", "nativeName": "__DESCRIPTION__"},
                     "email": {"type": "string"}, "name": {"type": "string", "nativeName": "__NAME__"},
                     "lastname": {"type": "string", "required": True}, "telephoneNumber": {"type": "string"},
                     "roles": {"type": "string"}}}}, headerUid="name")
    first = recon(project, "hr_engineering")
    assert first.state == "SUCCESS"
    assert first.summary["situationSummary"]["FOUND"] == 2 and first.summary["situationSummary"]["ABSENT"] == 1
    lines = (project / "data" / "engineering.csv").read_text().splitlines()
    assert lines[1:] == [
        '"From engineering","ajones@example.com","ajones@example.com","Jones","N/A","staff,admin"',
        '"From engineering","cwu@example.com","cwu@example.com","Wu","N/A","staff,admin"',
        '"","bsmith@example.com","bsmith@example.com","Smith, Jr.","N/A","staff,admin"',
    ]
    again = recon(project, "hr_engineering")
    assert again.summary["situationSummary"] == {**again.summary["situationSummary"], "CONFIRMED": 3}
    assert changed(again) == {}


def test_a_bad_file_or_row_deletes_nothing(tmp_path: Path) -> None:
    """After a first load, an HR file with a broken quote fails the run before anything
    changes; one with a row of the wrong width fails that row and skips the target phase,
    so the users whose rows are gone from it are not deleted."""
    project = file_project(tmp_path, [HR_IN])
    hr = project / "data" / "hr.csv"
    hr.write_text(HR)
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES)
    assert recon(project, HR_IN["name"]).state == "SUCCESS"
    hr.write_text(HR.split("\n")[0] + '\n"ajones", "Alice, "Jones"\n')
    broken = recon(project, HR_IN["name"])
    assert broken.state == "FAILED" and "hr.csv, line" in (broken.message or "")
    hr.write_text(HR.split("\n")[0] + '\n"ajones", "Alice"\n')
    short = recon(project, HR_IN["name"])
    assert short.state == "FAILED" and "nothing was deleted" in (short.message or "")
    assert sorted(managed_users(project)) == ["ajones", "bsmith", "cwu"]


def test_a_row_with_a_value_not_of_its_type_fails_that_object(tmp_path: Path) -> None:
    """``maybe`` in a boolean column fails that row's object, by its id and naming the
    property, as a failed object: its user stays as it was, and the run goes on to its
    target phase (the user of a row gone meanwhile is deleted)."""
    mapping = {**HR_IN, "properties": [*HR_IN["properties"], {  # type: ignore[list-item]
        "source": "active", "target": "description",
        "transform": {"type": "text/javascript", "source": "'' + source"}}]}
    project = file_project(tmp_path, [mapping])
    hr = project / "data" / "hr.csv"
    hr.write_text(HR)
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES)
    assert recon(project, HR_IN["name"]).state == "SUCCESS"
    users_before = managed_users(project)
    hr.write_text(HR.replace('"1003", "true"', '"1003", "maybe"').replace('"Wu"', '"Woo"').replace(
        '"ajones", "Alice", "Jones", "ajones@example.com", "1001", "true", "Secret1!"\n', ""))
    run = recon(project, HR_IN["name"])
    assert run.state == "SUCCESS" and run.summary["changes"]["deleted"] == 1, run.message
    assert run.summary["statusSummary"]["FAILURE"] == 1
    (error,) = run.summary["errors"]
    assert error == {"message": "the source object could not be read: hr.csv, line 3: active: 'maybe' is not a "
                                "boolean", "source_id": "cwu", "target_id": users_before["cwu"]["_id"]}
    users = managed_users(project)
    assert sorted(users) == ["bsmith", "cwu"] and users["cwu"]["sn"] == "Wu"


def test_validate_and_test_know_the_csv_connector(tmp_path: Path) -> None:
    """A CSV provisioner validates clean (an unknown property is a warning) and its
    test reads the header and names a column objectTypes wants and the file lacks; its
    object types are listed after PingIDM's ``__ALL__``, as every connector's."""
    project = file_project(tmp_path, [HR_IN])
    (project / "data" / "hr.csv").write_text(HR.replace('"active", ', '"enabled", '))
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES, syncFileRetentionCount=3, fancy=True)
    loaded = load_project(project)
    warnings = check_system(loaded.provisioners["hr"])
    assert [(w.key, "ignored" in str(w)) for w in warnings] == [("configurationProperties.fancy", True)]
    store = Store.open(loaded.settings.store_url())
    try:
        report = Resources(loaded, store).system("hr").test()
    finally:
        store.close()
    assert report["ok"] is False and "no column active" in report["error"]
    assert report["csv"]["columns"][:2] == ["uid", "firstName"]
    assert report["objectTypes"] == ["__ALL__", "account"]  # PingIDM adds __ALL__ to every connector's
    assert os.path.exists(project / "data" / "hr.csv")


# -- liveSync ----------------------------------------------------------------------


def _hr_project(tmp_path: Path, **props: Any) -> Path:
    project = file_project(tmp_path, [HR_IN])
    (project / "data" / "hr.csv").write_text(HR)
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES, **props)
    return project


def _copies(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "state" / "csv" / "hr").iterdir())


def test_livesync_applies_what_changed_in_the_file(tmp_path: Path) -> None:
    """The first liveSync reconciles in full and keeps a copy of the file; one without a
    change applies nothing; an edited row, a new one, a removed one and a renamed one
    (a delete and a create: the id is the row's uid) are applied, deletes included;
    the copies kept are at most ``syncFileRetentionCount``."""
    project = _hr_project(tmp_path, syncFileRetentionCount=2)
    first = live(project, "system/hr/account")
    assert first.state == "SUCCESS" and first.full_recon and "no token yet" in first.full_recon
    assert sorted(managed_users(project)) == ["ajones", "bsmith", "cwu"]
    token = stored_token(project, "system/hr/account") or ""
    assert token.startswith("csv:1:") and _copies(project) == [f"{token[6:]}.csv"]

    idle = live(project, "system/hr/account")
    assert idle.state == "SUCCESS" and idle.full_recon is None and idle.runs == [] and idle.changes == 0

    hr = project / "data" / "hr.csv"
    hr.write_text(HR.replace('"Jones"', '"Jones-Smith"').replace('"cwu", "Chen"', '"cwu2", "Chen"')
                  .replace('"bsmith", "Bob", "Smith, Jr.", "bsmith@example.com", "1002", "false", ""\n', "")
                  + '"dlee", "Dana", "Lee", "dlee@example.com", "1004", "true", ""\n')
    done = live(project, "system/hr/account")
    assert done.state == "SUCCESS", done.message
    assert done.method == "file comparison" and done.changes == 5
    (run,) = done.runs
    assert run["counts"] == {"created": 2, "updated": 1, "deleted": 2}
    users = managed_users(project)
    assert sorted(users) == ["ajones", "cwu2", "dlee"] and users["ajones"]["sn"] == "Jones-Smith"
    assert len(_copies(project)) == 2
    assert live(project, "system/hr/account").changes == 0


def test_livesync_token_without_its_copy_is_answered_by_a_full_recon(tmp_path: Path) -> None:
    project = _hr_project(tmp_path)
    assert live(project, "system/hr/account").state == "SUCCESS"
    for copy in (project / "state" / "csv" / "hr").iterdir():
        copy.unlink()
    live_after_expiry(project, "system/hr/account", "the copy of the file this token names is gone")
    set_token(project, "system/hr/account", "20261206000000Z")
    live_after_expiry(project, "system/hr/account", "not a CSV one")


def test_livesync_with_a_bad_row_changes_nothing(tmp_path: Path) -> None:
    """A row without its uid in the new file could be any old row: the run fails naming
    its line, nothing is applied, the token stays; fixed, the next run applies it all."""
    project = _hr_project(tmp_path)
    assert live(project, "system/hr/account").state == "SUCCESS"
    token = stored_token(project, "system/hr/account")
    hr = project / "data" / "hr.csv"
    hr.write_text(HR.replace('"ajones"', '""').replace('"Wu"', '"Woo"'))
    bad = live(project, "system/hr/account")
    assert bad.state == "FAILED" and "line 2" in (bad.message or "")
    assert stored_token(project, "system/hr/account") == token and managed_users(project)["cwu"]["sn"] == "Wu"
    hr.write_text(HR.replace('"Wu"', '"Woo"') + '"cwu", "Chen", "Wu", "", "", "", ""\n')
    repeated = live(project, "system/hr/account")
    assert repeated.state == "FAILED" and "line 5 repeats the uid of line 4" in (repeated.message or "")
    hr.write_text(HR.replace('"Wu"', '"Woo"'))
    assert live(project, "system/hr/account").changes == 1
    assert managed_users(project)["cwu"]["sn"] == "Woo"


def test_rows_by_id_are_read_once_per_version_of_the_file(tmp_path: Path) -> None:
    """A recon reads its targets by id a page at a time: the file is read once while it is
    unchanged (not once per page), and again once it is replaced or written in place."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    reads: list[int] = []

    def read() -> Iterator[tuple[str, int]]:
        reads.append(1)
        yield from (("ajones", 1), ("bsmith", 2))

    by_id = ById(path, read)
    assert by_id.get() == {"ajones": 1, "bsmith": 2} and by_id.get() and len(reads) == 1
    resource = _system(path).resource("account")
    for page in (["ajones"], ["bsmith"], ["cwu", "nobody"]):
        assert set(resource.get_many(page)) == set(page) - {"nobody"}
    resource.write_batch([WriteOp("update", id="cwu", values={"lastName": "Woo"})])
    assert resource.get_many(["cwu"])["cwu"]["lastName"] == "Woo"
    with path.open("a") as out:
        out.write('"dlee", "Dana", "Lee", "", "", "", ""\n')
    assert resource.get("dlee") is not None
    by_id.get()
    assert len(reads) == 2


def test_flags_keep_a_column_from_a_create_or_an_update(tmp_path: Path) -> None:
    """As OpenICF does: a ``NOT_CREATABLE`` property is not written by a create, a
    ``NOT_UPDATEABLE`` one not by an update; the rest of the write is."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    types = json.loads(json.dumps(HR_TYPES))
    types["account"]["properties"]["email"]["flags"] = ["NOT_CREATABLE"]
    types["account"]["properties"]["firstName"]["flags"] = ["NOT_UPDATEABLE"]
    resource = _system(path, types).resource("account")
    done = resource.write_batch([
        WriteOp("create", values={"uid": "dlee", "lastName": "Lee", "email": "d@example.com", "firstName": "Dana"}),
        WriteOp("update", id="cwu", values={"firstName": "Chan", "email": "c@example.org"})])
    assert [r.ok for r in done] == [True, True]
    assert resource.get("dlee") == {"_id": "dlee", "uid": "dlee", "lastName": "Lee", "firstName": "Dana"}
    assert resource.get("cwu") == {**resource.get("cwu"), "firstName": "Chen", "email": "c@example.org"}


def test_a_value_that_would_not_read_back_fails_its_object(tmp_path: Path) -> None:
    """'N/A' for an integer column, or 'maybe' for a boolean, would make the row unreadable
    by every later read: the write fails that object, naming the property, and the
    file keeps the row as it was."""
    path = tmp_path / "hr.csv"
    path.write_text(HR)
    resource = _system(path).resource("account")
    done = resource.write_batch([WriteOp("update", id="cwu", values={"employeeNumber": "N/A"}),
                                 WriteOp("update", id="bsmith", values={"active": "maybe", "lastName": "S"}),
                                 WriteOp("update", id="ajones", values={"employeeNumber": "1009"})])
    assert [r.ok for r in done] == [False, False, True]
    assert "employeeNumber: 'N/A' is not an integer" in str(done[0].error)
    assert "active: 'maybe' is not a boolean" in str(done[1].error)
    rows = {o["_id"]: o for o in _all(_system(path))}
    assert rows["cwu"]["employeeNumber"] == 1003 and rows["bsmith"]["lastName"] == "Smith, Jr."
    assert rows["ajones"]["employeeNumber"] == 1009


def test_an_id_read_again_fails_the_later_row(tmp_path: Path) -> None:
    """Two rows with one uid are a mistake in the file: the first is read (by a listing
    and by id), the later one fails naming both lines, and a write changes the first."""
    path = tmp_path / "hr.csv"
    path.write_text(HR + '"ajones", "Again", "Jones", "", "", "", ""\n')
    rows = _all(_system(path))
    assert [o.get("_id") for o in rows] == ["ajones", "bsmith", "cwu", None]
    assert rows[3] == {"dn": "hr.csv, line 5: the id 'ajones' again (first at line 2)"}
    resource = _system(path).resource("account")
    assert resource.get("ajones")["firstName"] == "Alice"
    resource.write_batch([WriteOp("update", id="ajones", values={"firstName": "Alicia"})])
    assert [line.split(",")[1] for line in path.read_text().splitlines()[1:] if line.startswith('"ajones"')] == [
        '"Alicia"', '"Again"']
