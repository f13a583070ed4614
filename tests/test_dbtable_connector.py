"""The Database Table connector (OpenICF's ``DatabaseTableConnector`` provisioners)
against real databases: SQLite always, PostgreSQL and MariaDB when they answer
(``dbs.py``). Each test makes its own table, named for the test and the xdist worker,
and drops it after. Proved here: a PingIDM-shaped provisioner is detected and loads;
rows read typed, filtered in SQL (a quote or a LIKE wildcard in a value stays a value),
paged by key; writes that fail alone while the rest of the batch is committed; recons
from a table into the store and from the store out to a table (renames, deletes, a
password written once), second runs that write nothing; liveSync by
``changeLogColumn``; configuration errors naming the file and the key; and no password
in any error, report or log."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from dbs import MARIADB, POSTGRESQL, store_url
from file_projects import POLICIES, changed, file_project, recon
from idsync.config.project import _connector_kind, load_project, validate_project
from idsync.connectors.dbtable.connector import DbTableSystem, open_dbtable_system
from idsync.connectors.dbtable.jdbc import parse_database
from idsync.errors import (
    AuthenticationFailed,
    ConfigError,
    ConfigWarning,
    NotFound,
    ObjectRejected,
    PeerError,
    PeerMisconfigured,
    PeerUnavailable,
)
from idsync.query.parser import parse
from idsync.resource import UNREADABLE, QuerySpec, WriteOp
from idsync.resources import Resources, check_system
from idsync.store.database import Store
from livesync_env import live, live_after_expiry, managed_users, set_token, stored_token
from sqlalchemy import Engine, create_engine, make_url, text

DB_REF = {"connectorHostRef": "#LOCAL", "bundleName": "org.forgerock.openicf.connectors.databasetable-connector",
          "bundleVersion": "[1.5.0.0,1.6.0.0)",
          "connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"}
FILE = "provisioner.openicf-hr.json"
SECRET = "Sup3r-S3cret-Pw!"
HR_TYPES: dict[str, Any] = {"account": {"id": "__ACCOUNT__", "nativeType": "__ACCOUNT__", "properties": {
    "uid": {"type": "string", "nativeName": "__NAME__", "required": True},
    "firstName": {"type": "string", "nativeName": "firstname"},
    "lastName": {"type": "string", "nativeName": "LASTNAME", "required": True},  # found whatever its case
    "email": {"type": "string", "nativeName": "email"},
    "employeeNumber": {"type": "integer", "nativeName": "employee_no"},
    "active": {"type": "boolean", "nativeName": "active"},
    "salary": {"type": "number", "nativeName": "salary"},
    "hired": {"type": "string", "nativeName": "hired"},
    "badge": {"type": "integer", "nativeName": "badge"},
    "password": {"type": "string", "nativeName": "__PASSWORD__"},
}}}
ROWS = [
    {"uid": "ajones", "firstname": "Alice", "lastname": "Jones", "email": "ajones@example.com", "employee_no": 1001,
     "active": True, "salary": "1234.50", "hired": "2024-01-02 03:04:05", "badge": "17"},
    {"uid": "bsmith", "firstname": "Bob", "lastname": "Smith, Jr.", "email": None, "employee_no": 1002,
     "active": False, "salary": None, "hired": None, "badge": None},
    {"uid": "cwu", "firstname": "Chen", "lastname": "O'Brien_%", "email": "cwu@example.com", "employee_no": 1003,
     "active": True, "salary": "99.00", "hired": None, "badge": "18"},
]
STAMP = "2024-05-01 10:00:00"


@dataclass
class Peer:
    """One database and a table of this test's own in it."""

    kind: str
    engine: Engine
    table: str
    props: dict[str, Any]  # configurationProperties that reach it, password in clear
    base: Path  # what a relative SQLite path is under: the project directory
    opened: list[DbTableSystem] = field(default_factory=list)  # closed at the end of the test

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(statement.replace("{t}", self.table)), params)
            return list(result.all()) if result.returns_rows else []

    def create(self, rows: list[dict[str, Any]], table: str | None = None) -> None:
        stamp = "DATETIME" if self.kind == "mariadb" else "TIMESTAMP"
        self.sql(f"CREATE TABLE {table or '{t}'} (uid VARCHAR(64) NOT NULL PRIMARY KEY, firstname VARCHAR(100), "
                 "lastname VARCHAR(100) NOT NULL, email VARCHAR(200), employee_no INTEGER, active BOOLEAN, "
                 f"salary NUMERIC(10,2), hired {stamp} NULL, badge VARCHAR(20), pwd VARCHAR(200), "
                 f"changed {stamp} NULL)")
        for row in rows:
            self.insert(row)

    def insert(self, row: dict[str, Any]) -> None:
        row = {"changed": STAMP, **row}
        self.sql(f"INSERT INTO {{t}} ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", **row)

    def config(self, types: dict[str, Any] | None = None, **props: Any) -> dict[str, Any]:
        return {"connectorRef": DB_REF, "configurationProperties": {
            **self.props, "table": self.table, "keyColumn": "uid", "passwordColumn": "pwd", **props},
            "objectTypes": types or HR_TYPES}

    def system(self, types: dict[str, Any] | None = None, **props: Any) -> DbTableSystem:
        self.opened.append(open_dbtable_system("hr", self.config(types, **props), file=FILE, base=self.base))
        return self.opened[-1]

    def close(self) -> None:
        for system in self.opened:
            system.close()
        self.engine.dispose()


@pytest.fixture(autouse=True)
def _password_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable the projects take the password from (``_hr_project``), gone after each test."""
    monkeypatch.setenv("IDSYNC_TEST_DBTABLE_PASSWORD", "")


@pytest.fixture(params=["sqlite", POSTGRESQL, MARIADB])
def peer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peer]:
    yield from _peer(request.param, tmp_path)


@pytest.fixture(params=["sqlite", POSTGRESQL])
def peer_sp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peer]:
    """SQLite and PostgreSQL: the recons and liveSync run on these, MariaDB's reads,
    writes and timestamps are proved by the tests on all three."""
    yield from _peer(request.param, tmp_path)


@pytest.fixture
def sqlite_peer(tmp_path: Path) -> Iterator[Peer]:
    yield from _peer("sqlite", tmp_path)


def _peer(kind: str, tmp_path: Path) -> Iterator[Peer]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    table = f"idsync_hr_{worker}_{uuid.uuid4().hex[:8]}"
    base = tmp_path / "project"
    if kind == "sqlite":
        (tmp_path / "db").mkdir()
        engine = create_engine(f"sqlite:///{tmp_path / 'db' / 'hr.db'}")
        props: dict[str, Any] = {"jdbcDriver": "org.sqlite.JDBC", "jdbcUrlTemplate": "jdbc:sqlite:%d",
                                 "database": "../db/hr.db"}
    else:
        url = make_url(store_url(kind, tmp_path))
        engine = create_engine(url)
        props = {"host": url.host, "port": str(url.port or (5432 if kind == "postgresql" else 3306)),
                 "database": url.database, "user": url.username}
        if kind == "postgresql":
            # A password this server (trust) does not ask for still goes to it: it must show nowhere.
            props |= {"jdbcDriver": "org.postgresql.Driver", "jdbcUrlTemplate": "jdbc:postgresql://%h:%p/%d",
                      "password": url.password or SECRET}
        else:
            props |= {"jdbcDriver": "com.mysql.cj.jdbc.Driver", "password": url.password or "",
                      "jdbcUrlTemplate": "jdbc:mysql://%h:%p/%d?useSSL=false&characterEncoding=utf8"}
    peer = Peer(kind, engine, table, props, base)
    try:
        yield peer
    finally:
        with engine.begin() as conn:
            for name in (table, f"{table}_out"):
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        peer.close()


def _all(system: DbTableSystem, spec: QuerySpec | None = None) -> list[dict[str, Any]]:
    return [o for page in system.resource("account").pages(spec or QuerySpec()) for o in page]


# -- detection and configuration ----------------------------------------------------


def test_a_pingidm_provisioner_is_detected_and_loads(sqlite_peer: Peer, tmp_path: Path) -> None:
    """The provisioner PingIDM's admin UI writes for a Database Table connector (its
    connectorRef, pool options, every configuration property) loads as a dbtable system;
    of its properties only those asking for what idsync does not do are warnings."""
    assert _connector_kind({"connectorName": DB_REF["connectorName"]}, "x", file=FILE, system="hr") == "dbtable"
    assert _connector_kind({"bundleName": DB_REF["bundleName"]}, "x", file=FILE, system="hr") == "dbtable"
    assert _connector_kind({}, "dbtable", file=FILE, system="hr") == "dbtable"
    project = file_project(tmp_path, [])
    sqlite_peer.create(ROWS)
    props = {**sqlite_peer.props, "quoting": "", "table": sqlite_peer.table, "keyColumn": "uid",
             "passwordColumn": "pwd", "enableEmptyString": False, "rethrowAllSQLExceptions": True,
             "nativeTimestamps": True, "allNative": False, "validConnectionQuery": "SELECT 1",
             "changeLogColumn": "changed", "datasource": "", "jndiProperties": None}
    (project / "conf" / FILE).write_text(json.dumps({
        "connectorRef": DB_REF, "poolConfigOption": {"maxObjects": 10, "maxIdle": 10, "maxWait": 150000},
        "operationTimeout": {"CREATE": -1}, "resultsHandlerConfig": {"enableNormalizingResultsHandler": True},
        "configurationProperties": props, "objectTypes": HR_TYPES}))
    loaded = load_project(project)
    assert loaded.provisioners["hr"].kind == "dbtable"
    warnings = check_system(loaded.provisioners["hr"])
    assert [(w.key, type(w)) for w in warnings] == [("configurationProperties.nativeTimestamps", ConfigWarning)]
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    try:
        report = resources.system("hr").test()
    finally:
        resources.close()
        store.close()
    assert report["ok"] is True, report
    assert report["dbtable"]["keyColumn"] == "uid" and report["dbtable"]["keyUnique"] is True
    assert "pwd" in report["dbtable"]["columns"]


@pytest.mark.parametrize(("props", "key", "says"), [
    ({"jdbcDriver": "oracle.jdbc.OracleDriver", "jdbcUrlTemplate": "jdbc:oracle:thin:@%h:%p:%d", "host": "h",
      "port": "1521", "database": "X"}, "configurationProperties.jdbcDriver", "Oracle's driver"),
    ({"jdbcDriver": None, "jdbcUrlTemplate": None}, "configurationProperties.jdbcDriver", "OpenICF's default"),
    ({"jdbcDriver": "com.microsoft.sqlserver.jdbc.SQLServerDriver", "host": "h", "port": "1433", "database": "d",
      "jdbcUrlTemplate": "jdbc:sqlserver://%h:%p;databaseName=%d"}, "configurationProperties.jdbcDriver",
     "SQL Server"),
    ({"jdbcDriver": None, "jdbcUrlTemplate": None, "url": "jdbc:h2:mem:hr"}, "configurationProperties.url", "H2"),
    ({"jdbcDriver": "org.postgresql.Driver", "jdbcUrlTemplate": "jdbc:mysql://%h/%d", "host": "h",
      "database": "d"}, "configurationProperties.jdbcDriver", "names a MySQL/MariaDB database"),
    ({"jdbcDriver": "org.postgresql.Driver", "jdbcUrlTemplate": "jdbc:postgresql://%h/%d", "database": "d"},
     "configurationProperties.host", "names %h"),
    ({"keyColumn": None}, "configurationProperties.keyColumn", "required"),
    ({"table": ""}, "configurationProperties.table", "required"),
    ({"passwordColumn": "UID"}, "configurationProperties.passwordColumn", "differ"),
    ({"quoting": "weird"}, "configurationProperties.quoting", "expected"),
    ({"jdbcDriver": None, "jdbcUrlTemplate": None, "datasource": "jdbc/hr"}, "configurationProperties.datasource",
     "JNDI"),
    ({"jdbcDriver": "org.postgresql.Driver", "jdbcUrlTemplate": "jdbc:postgresql://h/d", "password": {"x": SECRET}},
     "configurationProperties.password", "expected a string"),
    ({"jdbcUrlTemplate": "jdbc:sqlite::memory:"}, "configurationProperties.jdbcUrlTemplate", "in-memory"),
    ({"keyColumn": None, "keyColum": "uid"}, "configurationProperties.keyColum", "did you mean keyColumn?"),
    ({"tabel": "people"}, "configurationProperties.tabel", "did you mean table?"),
])
def test_a_bad_setting_names_the_file_and_the_key(tmp_path: Path, props: dict[str, Any], key: str,
                                                  says: str) -> None:
    """An unreachable database (Oracle, SQL Server, H2, OpenICF's Oracle default), a
    driver that is not the URL's, a missing keyColumn or table, a misspelt key (which
    was a warning, the setting it meant left unset or at its default): a ConfigError
    naming the file and the key, saying which databases idsync reaches where that is
    the problem, or the key meant."""
    base = {"jdbcDriver": "org.sqlite.JDBC", "jdbcUrlTemplate": "jdbc:sqlite:hr.db", "table": "hr",
            "keyColumn": "uid"}
    config = {"connectorRef": DB_REF, "configurationProperties": {k: v for k, v in {**base, **props}.items()
                                                                  if v is not None}}
    with pytest.raises(ConfigError) as caught:
        open_dbtable_system("hr", config, file=FILE, base=tmp_path)
    assert (caught.value.file, caught.value.key) == (FILE, key)
    assert says in caught.value.problem and SECRET not in str(caught.value)
    if says in ("Oracle's driver", "SQL Server", "H2"):
        assert "reaches PostgreSQL, MySQL, MariaDB and SQLite" in caught.value.problem


def test_an_unknown_setting_is_a_warning_with_the_nearest_key(tmp_path: Path) -> None:
    """A key of configurationProperties neither known nor a misspelling of a known one is
    a warning naming the nearest known key; the system still loads."""
    config = {"connectorRef": DB_REF, "configurationProperties": {
        "jdbcDriver": "org.sqlite.JDBC", "jdbcUrlTemplate": "jdbc:sqlite:hr.db", "table": "hr", "keyColumn": "uid",
        "keyColumnName": "uid"}}
    system = open_dbtable_system("hr", config, file=FILE, base=tmp_path)
    try:
        assert [(w.key, w.problem, type(w)) for w in system.warnings()] == [
            ("configurationProperties.keyColumnName", "unknown setting, did you mean keyColumn?; it is ignored",
             ConfigWarning)]
    finally:
        system.close()


def test_jdbc_urls_keep_where_and_how_safely_to_connect(tmp_path: Path) -> None:
    """Host, port, database, a user and password in the URL, TLS parameters (never
    weakened) and PostgreSQL's schema are carried over; other parameters are warnings;
    a URL naming several hosts is refused; the password shows in no repr."""
    mysql, warned = parse_database(FILE, {"jdbcDriver": "com.mysql.jdbc.Driver", "url": (
        "jdbc:mysql://hr:Url-Secret-9@db.example.com:3307/hrdb?useSSL=true&verifyServerCertificate=false"
        "&serverTimezone=UTC&characterEncoding=utf8")}, tmp_path)
    assert (mysql.kind, mysql.host, mysql.port, mysql.name, mysql.user) == ("mysql", "db.example.com", 3307, "hrdb",
                                                                             "hr")
    assert mysql.password == "Url-Secret-9" and "Url-Secret-9" not in repr(mysql) + mysql.describe()
    assert mysql.tls == "required" and [w.problem.split(" is ")[0] for w in warned] == [
        "the JDBC parameter serverTimezone"]
    maria, _ = parse_database(FILE, {"url": "jdbc:mariadb://m/db?sslMode=verify-full"}, tmp_path)
    assert maria.tls == "verify-identity" and maria.port == 3306
    pg, warned = parse_database(FILE, {"jdbcDriver": "org.postgresql.Driver", "user": "idm", "url": (
        "jdbc:postgresql://pg.example.com/hr?sslmode=verify-ca&currentSchema=people&ApplicationName=idsync")},
        tmp_path)
    assert (pg.host, pg.port, pg.name, pg.schema, pg.user, warned) == ("pg.example.com", 5432, "hr", "people",
                                                                       "idm", [])
    assert pg.options["sslmode"] == "verify-ca" and pg.options["application_name"] == "idsync"
    local, _ = parse_database(FILE, {"url": "jdbc:postgresql:hr?ssl=true"}, tmp_path)
    assert (local.host, local.name, local.options["sslmode"]) == ("localhost", "hr", "verify-full")
    lite, _ = parse_database(FILE, {"url": "jdbc:sqlite:data/hr.db"}, tmp_path)
    assert lite.path == tmp_path / "data" / "hr.db"
    for url, says in (("jdbc:mysql://h1,h2/db", "several hosts"), ("jdbc:postgresql://h/db?sslmode=bogus", "sslmode"),
                      ("jdbc:mysql:replication://h/db", "not supported")):
        with pytest.raises(ConfigError, match=says):
            parse_database(FILE, {"url": url}, tmp_path)


# -- reading --------------------------------------------------------------------------


def test_rows_read_typed_filtered_paged_and_by_key(peer: Peer) -> None:
    """Columns read as their property's type (a decimal as a number, a timestamp as ISO
    8601 text, a boolean column of MariaDB's TINYINT as a boolean), a column found
    whatever the case of its nativeName, the password never read; filters run in SQL,
    where a quote and LIKE's wildcards in a value stay that value; fields narrow what is
    read; pages follow the key; reads by key and a count."""
    peer.create(ROWS)
    system = peer.system()
    rows = {o["_id"]: o for o in _all(system)}
    assert rows["ajones"] == {"_id": "ajones", "uid": "ajones", "firstName": "Alice", "lastName": "Jones",
                              "email": "ajones@example.com", "employeeNumber": 1001, "active": True,
                              "salary": 1234.5, "hired": "2024-01-02T03:04:05", "badge": 17}
    assert rows["bsmith"] == {"_id": "bsmith", "uid": "bsmith", "firstName": "Bob", "lastName": "Smith, Jr.",
                              "employeeNumber": 1002, "active": False}
    assert rows["cwu"]["salary"] == 99 and rows["cwu"]["lastName"] == "O'Brien_%"

    def ids(query: str, fields: list[str] | None = None) -> list[Any]:
        return [o if fields is not None else o["_id"]
                for o in _all(system, QuerySpec(filter=parse(query), fields=fields))]

    assert ids("lastName eq \"O'Brien_%\"") == ["cwu"]
    assert ids('lastName co "_%"') == ["cwu"] and ids("lastName sw \"O'B\"") == ["cwu"]
    assert ids('email pr and active eq true') == ["ajones", "cwu"]
    assert ids('!(email eq "ajones@example.com")') == ["bsmith", "cwu"]
    assert ids('employeeNumber gt 1001 and salary lt 100') == ["cwu"]
    assert ids('employeeNumber eq "abc"') == [] and ids('nosuch eq null') == ["ajones", "bsmith", "cwu"]
    assert ids('password eq "x"') == [] and ids('_id eq "bsmith"') == ["bsmith"]
    assert ids('employeeNumber ge 1002', ["email"]) == [{"_id": "bsmith"}, {"_id": "cwu", "email": "cwu@example.com"}]
    resource = system.resource("account")
    assert [len(p) for p in resource.pages(QuerySpec(page_size=2))] == [2, 1]
    assert resource.get_many(["cwu", "nobody", "ajones"], ["lastName"]) == {
        "cwu": {"_id": "cwu", "lastName": "O'Brien_%"}, "ajones": {"_id": "ajones", "lastName": "Jones"}}
    assert resource.count() == 3 and resource.write_only == {"password"}


def test_a_row_with_a_value_not_of_its_type_fails_alone(sqlite_peer: Peer) -> None:
    """A listing answers the row by its id and says which value could not be read; a
    read by key leaves it out."""
    sqlite_peer.create([*ROWS[:2], {**ROWS[2], "badge": "abc"}])
    system = sqlite_peer.system()
    rows = _all(system)
    assert [o.get("_id") for o in rows] == ["ajones", "bsmith", "cwu"]
    assert rows[2] == {"_id": "cwu", UNREADABLE: f"table {sqlite_peer.table} of SQLite file "
                                                 f"{sqlite_peer.base / '../db/hr.db'}, uid 'cwu': badge: 'abc' is "
                                                 "not an integer"}
    assert list(system.resource("account").get_many(["cwu", "bsmith"])) == ["bsmith"]


def test_a_key_several_rows_share_fails_alone(sqlite_peer: Peer) -> None:
    """Without a unique constraint on keyColumn, a key two rows have fails alone (its rows
    left out), so a recon skips its target phase; the other rows are read."""
    sqlite_peer.sql("CREATE TABLE {t} (uid VARCHAR(64), lastname VARCHAR(100), pwd VARCHAR(10))")
    for uid in ("ajones", "bsmith", "bsmith", "cwu"):
        sqlite_peer.sql("INSERT INTO {t} (uid, lastname) VALUES (:uid, 'x')", uid=uid)
    rows = _all(sqlite_peer.system({"account": {"properties": {}}}))
    assert [o.get("_id") for o in rows] == [None, "ajones", "cwu"]
    assert "several rows have uid 'bsmith'" in rows[0]["dn"]
    assert rows[1] == {"_id": "ajones", "uid": "ajones", "lastname": "x"}  # every column but the password


# -- writing --------------------------------------------------------------------------


def test_writes_fail_alone_and_the_rest_is_committed(peer: Peer) -> None:
    """In one batch: an update, a delete, a create with a password; a create whose key a
    row has, one with a property objectTypes lacks, one without a required property, an
    update of a row that is not there, a value its column does not take, a NOT NULL
    column emptied: each of these fails alone, naming the object, and the others are
    written. A new key renames the row; the password is written and never read back."""
    peer.create(ROWS)
    resource = peer.system().resource("account")
    results = resource.write_batch([
        WriteOp("update", id="bsmith", values={"lastName": "Smith", "active": True, "employeeNumber": "2002"}),
        WriteOp("delete", id="ajones"),
        WriteOp("create", values={"uid": "dlee", "lastName": "Lee", "employeeNumber": 1004, "password": "Pw-dlee-1",
                                  "hired": "2024-02-03T04:05:06Z"}),
        WriteOp("create", values={"uid": "cwu", "lastName": "Wu"}),
        WriteOp("create", values={"uid": "eve", "lastName": "E", "title": "x"}),
        WriteOp("create", values={"uid": "fay"}),
        WriteOp("update", id="nobody", values={"lastName": "X"}),
        WriteOp("update", id="cwu", values={"employeeNumber": "N/A"}),
        WriteOp("update", id="cwu", values={"lastName": None}),
        WriteOp("update", id="cwu", values={"firstName": "Chen"}),  # nothing changes: MySQL counts 0 rows changed
    ])
    assert [r.ok for r in results] == [True, True, True, False, False, False, False, False, False, True]
    errors = [str(r.error) for r in results[3:9]]
    assert errors[0].startswith("system/hr/account/cwu: the database refused the create")
    assert "no property 'title'" in errors[1] and "system/hr/account/fay: a create needs lastName" in errors[2]
    assert isinstance(results[6].error, NotFound) and errors[3] == "system/hr/account/nobody: no such row"
    assert errors[4] == "system/hr/account/cwu: employeeNumber: 'N/A' is not an integer"
    assert isinstance(results[8].error, ObjectRejected) and "refused the update" in errors[5]
    assert results[2].id == "dlee" and "password" not in (results[2].obj or {})
    assert peer.sql("SELECT uid, lastname, employee_no, pwd FROM {t} ORDER BY uid") == [
        ("bsmith", "Smith", 2002, None), ("cwu", "O'Brien_%", 1003, None), ("dlee", "Lee", 1004, "Pw-dlee-1")]
    assert resource.get("dlee") == {"_id": "dlee", "uid": "dlee", "lastName": "Lee", "employeeNumber": 1004,
                                    "hired": "2024-02-03T04:05:06"}  # UTC into a column without a zone
    (renamed,) = resource.write_batch([WriteOp("update", id="cwu", values={"uid": "cwu2", "email": ""})])
    assert renamed.ok and renamed.id == "cwu2" and resource.get("cwu") is None
    assert peer.sql("SELECT email FROM {t} WHERE uid = 'cwu2'") == [(None,)]  # enableEmptyString false: NULL


def test_creates_go_in_one_insert_and_a_refused_one_still_fails_alone(peer: Peer) -> None:
    """A batch's creates are one multi-row INSERT; when the database refuses it (here a key a
    row already has), each create is tried on its own: only that one fails."""
    peer.create(ROWS)
    resource = peer.system().resource("account")
    statements: list[str] = []
    from sqlalchemy import event

    engine = resource._table.engine()  # the connector's own engine, to count its INSERTs

    def listen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        fresh = resource.write_batch([WriteOp("create", values={"uid": f"new{i}", "lastName": f"N{i}"})
                                      for i in range(5)])
        assert [r.ok for r in fresh] == [True] * 5 and [r.id for r in fresh] == [f"new{i}" for i in range(5)]
        assert len([s for s in statements if s.lstrip().upper().startswith("INSERT")]) == 1
        mixed = resource.write_batch([WriteOp("create", values={"uid": "x1", "lastName": "X"}),
                                      WriteOp("create", values={"uid": "cwu", "lastName": "Dup"}),
                                      WriteOp("create", values={"uid": "x2", "lastName": "Y"})])
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert [r.ok for r in mixed] == [True, False, True]
    assert str(mixed[1].error).startswith("system/hr/account/cwu: the database refused the create")
    assert peer.sql("SELECT uid FROM {t} WHERE uid IN ('x1', 'x2', 'cwu') ORDER BY uid") == [
        ("cwu",), ("x1",), ("x2",)]
    assert peer.sql("SELECT lastname FROM {t} WHERE uid = 'cwu'") == [("O'Brien_%",)]


def test_flags_keep_a_column_from_a_create_or_an_update(sqlite_peer: Peer) -> None:
    """As OpenICF does: a NOT_CREATABLE property is not written by a create, a
    NOT_UPDATEABLE one not by an update; the rest of the write is."""
    sqlite_peer.create(ROWS)
    types = json.loads(json.dumps(HR_TYPES))
    types["account"]["properties"]["email"]["flags"] = ["NOT_CREATABLE"]
    types["account"]["properties"]["firstName"]["flags"] = ["NOT_UPDATEABLE"]
    resource = sqlite_peer.system(types).resource("account")
    done = resource.write_batch([
        WriteOp("create", values={"uid": "dlee", "lastName": "Lee", "email": "d@example.com", "firstName": "Dana"}),
        WriteOp("update", id="cwu", values={"firstName": "Chan", "email": "c@example.org"})])
    assert [r.ok for r in done] == [True, True]
    assert sqlite_peer.sql("SELECT uid, firstname, email FROM {t} WHERE uid IN ('dlee', 'cwu') ORDER BY uid") == [
        ("cwu", "Chen", "c@example.org"), ("dlee", "Dana", None)]


# -- recons ---------------------------------------------------------------------------

HR_IN = {"name": "systemHrAccounts_managedUser", "source": "system/hr/account", "target": "managed/user",
         "properties": [{"source": "uid", "target": "userName"}, {"source": "firstName", "target": "givenName"},
                        {"source": "lastName", "target": "sn"}, {"source": "email", "target": "mail"},
                        {"target": "accountStatus", "default": "active"}],
         "policies": POLICIES}
OUT = {"name": "managedUser_systemAppAccounts", "source": "managed/user", "target": "system/app/account",
       "properties": [{"source": "userName", "target": "login"}, {"source": "sn", "target": "surname"},
                      {"source": "mail", "target": "mail"},
                      {"source": "userName", "target": "password",
                       "transform": {"type": "text/javascript", "source": "'Pw-' + source + '-1'"}}],
       "policies": POLICIES}
OUT_TYPES: dict[str, Any] = {"account": {"nativeType": "__ACCOUNT__", "properties": {
    "login": {"type": "string", "nativeName": "__NAME__", "required": True},
    "surname": {"type": "string", "nativeName": "surname"}, "mail": {"type": "string", "nativeName": "mail"},
    "password": {"type": "string", "nativeName": "__PASSWORD__"}}}}


def _provisioner(project: Path, name: str, config: dict[str, Any]) -> None:
    (project / "conf" / f"provisioner.openicf-{name}.json").write_text(json.dumps({"name": name, **config}))


def _hr_project(tmp_path: Path, peer: Peer, mappings: list[dict[str, Any]], **props: Any) -> Path:
    project = file_project(tmp_path, mappings)
    config = peer.config(changeLogColumn="changed", **props)
    if "password" in peer.props:
        # The password from the environment, as a deployment gives it (``&{ENV}``).
        os.environ["IDSYNC_TEST_DBTABLE_PASSWORD"] = str(peer.props["password"])
        config["configurationProperties"]["password"] = "&{IDSYNC_TEST_DBTABLE_PASSWORD}"
    _provisioner(project, "hr", config)
    return project


def test_a_table_into_the_store_and_the_store_out_to_a_table(tmp_path: Path, peer_sp: Peer) -> None:
    """HR rows become managed users, a second recon writes nothing, an edited and a
    deleted row follow. The users go out to an application's table: created with a
    password, a renamed user renames its row, a deleted one deletes it; every second run
    writes nothing, and the password, never read back, is written again only when it
    changes."""
    peer = peer_sp
    peer.create(ROWS)
    out = f"{peer.table}_out"
    peer.sql(f"CREATE TABLE {out} (login VARCHAR(64) NOT NULL PRIMARY KEY, surname VARCHAR(100), "
             "mail VARCHAR(200), pwd VARCHAR(200))")
    project = _hr_project(tmp_path, peer, [HR_IN, OUT])
    app = peer.config(OUT_TYPES, table=out, keyColumn="login")
    app["configurationProperties"]["password"] = peer.props.get("password")
    _provisioner(project, "app", app)

    first = recon(project, HR_IN["name"])
    assert first.state == "SUCCESS" and first.summary["situationSummary"]["ABSENT"] == 3
    assert managed_users(project)["cwu"]["sn"] == "O'Brien_%"
    assert changed(recon(project, HR_IN["name"])) == {}
    peer.sql("UPDATE {t} SET lastname = 'Smith' WHERE uid = 'bsmith'")
    peer.sql("DELETE FROM {t} WHERE uid = 'ajones'")
    assert changed(recon(project, HR_IN["name"])) == {"updated": 1, "deleted": 1}
    assert sorted(managed_users(project)) == ["bsmith", "cwu"] and managed_users(project)["bsmith"]["sn"] == "Smith"

    # The recons into the store carried their writes on to the table (``OnwardPush``, ``sync/changes.py``).
    assert changed(recon(project, OUT["name"])) == {}
    rows = f"SELECT login, surname, mail, pwd FROM {out} ORDER BY login"
    assert peer.sql(rows) == [("bsmith", "Smith", None, "Pw-bsmith-1"),
                              ("cwu", "O'Brien_%", "cwu@example.com", "Pw-cwu-1")]
    peer.sql(f"UPDATE {out} SET pwd = 'changed-by-hand'")  # never read back: a rewrite would show here
    assert changed(recon(project, OUT["name"])) == {}
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        Resources(loaded, store).open("managed/user").update(managed_users(project)["cwu"]["_id"],
                                                             {"userName": "cwu2"})
    finally:
        store.close()
    assert changed(recon(project, OUT["name"])) == {"updated": 1}
    assert [r[0] for r in peer.sql(rows)] == ["bsmith", "cwu2"]
    assert peer.sql(f"SELECT pwd FROM {out} WHERE login = 'cwu2'") == [("Pw-cwu2-1",)]  # a new value: written
    # The HR table still says cwu: the next runs put the name back, the row with it.
    peer.sql("DELETE FROM {t} WHERE uid = 'bsmith'")
    assert changed(recon(project, HR_IN["name"])) == {"updated": 1, "deleted": 1}
    assert changed(recon(project, OUT["name"])) == {}  # carried on by the recon into the store
    assert peer.sql(rows) == [("cwu", "O'Brien_%", "cwu@example.com", "Pw-cwu-1")]
    assert changed(recon(project, HR_IN["name"])) == {}
    assert changed(recon(project, OUT["name"])) == {}


def test_text_into_a_typed_column_is_no_change_once_written(tmp_path: Path, peer: Peer) -> None:
    """A managed user's text going to an integer and a decimal column is written as the
    number it spells (``"1001"``: 1001), and compared as the table reads it back: the
    second run finds every row unchanged and writes nothing, on every database."""
    peer.create(ROWS)
    out = f"{peer.table}_out"
    peer.sql(f"CREATE TABLE {out} (login VARCHAR(64) NOT NULL PRIMARY KEY, emp INTEGER, score NUMERIC(10,2), "
             "pwd VARCHAR(200))")
    hr_in = {**HR_IN, "properties": [*HR_IN["properties"], {  # type: ignore[list-item]
        "source": "employeeNumber", "target": "description",
        "transform": {"type": "text/javascript", "source": "'' + source"}}]}
    typed_out = {"name": "managedUser_systemAppAccounts", "source": "managed/user", "target": "system/app/account",
                 "properties": [{"source": "userName", "target": "login"}, {"source": "description", "target": "emp"},
                                {"source": "description", "target": "score"}],
                 "policies": POLICIES}
    project = _hr_project(tmp_path, peer, [hr_in, typed_out])
    app = peer.config({"account": {"nativeType": "__ACCOUNT__", "properties": {
        "login": {"type": "string", "nativeName": "__NAME__", "required": True},
        "emp": {"type": "integer"}, "score": {"type": "number"}}}}, table=out, keyColumn="login")
    app["configurationProperties"]["password"] = peer.props.get("password")
    _provisioner(project, "app", app)
    assert recon(project, hr_in["name"]).state == "SUCCESS"
    assert managed_users(project)["ajones"]["description"] == "1001"
    assert changed(recon(project, typed_out["name"])) == {}  # carried on by the recon into the store
    assert [(r[0], r[1], float(r[2])) for r in peer.sql(f"SELECT login, emp, score FROM {out} ORDER BY login")] == [
        ("ajones", 1001, 1001.0), ("bsmith", 1002, 1002.0), ("cwu", 1003, 1003.0)]
    again = recon(project, typed_out["name"])
    assert changed(again) == {} and again.summary["changes"]["unchanged"] == 3


def test_a_bad_row_fails_alone_and_a_missing_table_deletes_nothing(tmp_path: Path, peer_sp: Peer) -> None:
    """After a first load, a row whose value is not its property's type fails that object,
    by its id and naming the value, and its user stays as it was; the run goes on (the
    user of a row gone meanwhile is deleted). A new row that cannot be read is created
    by no run, and holds the target phase's deletes (it may own any user no link ties to
    it). A table dropped fails the run, naming the file and the key, before any delete."""
    peer = peer_sp
    peer.create(ROWS)
    mapping = {**HR_IN, "properties": [*HR_IN["properties"], {  # type: ignore[list-item]
        "source": "badge", "target": "description", "transform": {"type": "text/javascript", "source": "'' + source"}}]}
    project = _hr_project(tmp_path, peer, [mapping])
    assert recon(project, HR_IN["name"]).state == "SUCCESS"
    peer.sql("UPDATE {t} SET badge = 'abc', lastname = 'Woo' WHERE uid = 'cwu'")
    peer.sql("DELETE FROM {t} WHERE uid = 'ajones'")
    bad = recon(project, HR_IN["name"])
    assert bad.state == "SUCCESS" and bad.summary["changes"]["deleted"] == 1, bad.message
    assert bad.summary["statusSummary"]["FAILURE"] == 1
    (error,) = bad.summary["errors"]
    assert error["source_id"] == "cwu" and error["message"].startswith("the source object could not be read: table ")
    assert error["message"].endswith("uid 'cwu': badge: 'abc' is not an integer")
    users = managed_users(project)
    assert sorted(users) == ["bsmith", "cwu"]
    assert users["cwu"]["sn"] == "O'Brien_%" and users["cwu"]["description"] == "18"

    peer.insert({**ROWS[0], "uid": "dlee", "badge": "x"})
    peer.sql("DELETE FROM {t} WHERE uid = 'bsmith'")
    held = recon(project, HR_IN["name"])
    assert held.state == "FAILED" and "the target phase's 1 deletes and unlinks were held" in (held.message or "")
    assert sorted(managed_users(project)) == ["bsmith", "cwu"]

    peer.sql("DROP TABLE {t}")
    gone = recon(project, HR_IN["name"])
    assert gone.state == "FAILED" and f"{FILE}: configurationProperties.table: no table" in (gone.message or "")
    assert sorted(managed_users(project)) == ["bsmith", "cwu"]


# -- liveSync ---------------------------------------------------------------------------


def test_livesync_follows_the_change_log_column(tmp_path: Path, peer: Peer) -> None:
    """The first liveSync reconciles in full and keeps the highest changeLogColumn value;
    a run without changes applies nothing; a row changed later and a row added with the
    very value of the token (a coarse clock's same tick) are both applied; a deleted row
    is not seen (the run says deletes wait for a full recon); a foreign token is
    answered by a full recon."""
    peer.create(ROWS)
    project = _hr_project(tmp_path, peer, [HR_IN])
    source = "system/hr/account"
    first = live(project, source)
    assert first.state == "SUCCESS" and first.full_recon and sorted(managed_users(project)) == ["ajones", "bsmith",
                                                                                               "cwu"]
    token = json.loads(stored_token(project, source) or "{}")
    assert token["column"] == "changed" and token["since"].startswith("2024-05-01") and len(token["seen"]) == 3
    idle = live(project, source)
    assert idle.state == "SUCCESS" and idle.changes == 0 and idle.runs == []
    peer.sql("UPDATE {t} SET lastname = 'Woo', changed = :at WHERE uid = 'cwu'", at="2024-05-01 10:00:01")
    peer.insert({"uid": "dlee", "firstname": "Dana", "lastname": "Lee", "changed": STAMP})
    peer.sql("DELETE FROM {t} WHERE uid = 'bsmith'")
    done = live(project, source)
    assert done.state == "SUCCESS", done.message
    assert done.method == "changeLogColumn" and done.changes == 2
    assert "deletes are left to the next full recon" in (done.note or "")
    (run,) = done.runs
    assert run["counts"] == {"created": 1, "updated": 1}
    users = managed_users(project)
    assert sorted(users) == ["ajones", "bsmith", "cwu", "dlee"] and users["cwu"]["sn"] == "Woo"
    assert live(project, source).changes == 0
    set_token(project, source, "20261206000000Z")
    live_after_expiry(project, source, "not one this connector made for changeLogColumn changed")


def test_livesync_without_a_change_log_column_is_refused(tmp_path: Path, sqlite_peer: Peer) -> None:
    """validate names the job and says why; a liveSync run anyway fails naming the key."""
    sqlite_peer.create(ROWS)
    project = _hr_project(tmp_path, sqlite_peer, [HR_IN])
    config = json.loads((project / "conf" / FILE).read_text())
    del config["configurationProperties"]["changeLogColumn"]
    _provisioner(project, "hr", config)
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "hr-live.toml").write_text('schedule = "@hourly"\nlivesync = "system/hr/account"\n')
    problems = [p for p in validate_project(project, check_system) if not isinstance(p, ConfigWarning)]
    assert [p.key for p in problems] == ["livesync"] and "without a changeLogColumn" in str(problems[0])
    done = live(project, "system/hr/account")
    assert done.state == "FAILED" and "configurationProperties.changeLogColumn" in (done.message or "")


# -- the database's answers and secrets ------------------------------------------------


def test_a_missing_table_or_column_names_the_file_and_the_key(sqlite_peer: Peer) -> None:
    sqlite_peer.create(ROWS)
    types = json.loads(json.dumps(HR_TYPES))
    types["account"]["properties"]["title"] = {"type": "string", "nativeName": "title"}
    with pytest.raises(PeerMisconfigured) as caught:
        _all(sqlite_peer.system(types))
    assert f"{FILE}: table {sqlite_peer.table}" in str(caught.value)
    assert "objectTypes.account.properties.title.nativeName: 'title'" in str(caught.value)
    exact = sqlite_peer.system(quoting="double").test()  # quoting: names as written, so LASTNAME is not lastname
    assert exact["ok"] is False and "'LASTNAME'" in exact["error"]
    missing = sqlite_peer.system(table="nosuch").test()
    assert missing["ok"] is False and f"{FILE}: configurationProperties.table: no table 'nosuch'" in missing["error"]
    assert missing.exit_code == os.EX_CONFIG  # type: ignore[attr-defined]


@pytest.mark.mariadb
def test_refused_credentials_and_a_refused_tls_downgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password is AuthenticationFailed (exit 77) whose message, the test report
    and the logs never hold it; a URL that requires TLS to a server that offers none
    fails (exit 69) rather than go on in clear."""
    made = _peer("mariadb", tmp_path)
    peer = next(made)
    try:
        with structlog.testing.capture_logs() as logs:
            report = peer.system(password=SECRET).test()
            with pytest.raises(AuthenticationFailed) as caught:
                _all(peer.system(password=SECRET))
        assert report["ok"] is False and report.exit_code == os.EX_NOPERM  # type: ignore[attr-defined]
        assert "credentials refused" in str(caught.value)
        shown = json.dumps(report) + str(caught.value) + json.dumps(logs, default=str) + caplog.text
        shown += "".join(capsys.readouterr())
        assert SECRET not in shown
        plain = peer.system(jdbcUrlTemplate="jdbc:mysql://%h:%p/%d?sslMode=REQUIRED").test()
        # PyMySQL refuses itself when it can; idsync checks each connection where it does not.
        assert plain["ok"] is False and ("offers no TLS" in plain["error"] or "SSL is required" in plain["error"])
        assert plain.exit_code == os.EX_UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        made.close()  # drops the table, closes what the test opened


@pytest.mark.postgresql
def test_no_password_in_errors_reports_or_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The password (from &{ENV}) of a PostgreSQL system shows in no error of a failed
    recon, no test report, no log line and no output; sslmode=require to a server
    without TLS is refused, not downgraded."""
    made = _peer("postgresql", tmp_path)
    peer = next(made)
    try:
        peer.create(ROWS)
        secret = str(peer.props["password"])
        project = _hr_project(tmp_path, peer, [HR_IN])
        with structlog.testing.capture_logs() as logs:
            assert recon(project, HR_IN["name"]).state == "SUCCESS"
            peer.sql("DROP TABLE {t}")
            failed_run = recon(project, HR_IN["name"])
            report = peer.system().test()
            tls = peer.system(jdbcUrlTemplate="jdbc:postgresql://%h:%p/%d?sslmode=require").test()
        assert failed_run.state == "FAILED" and report["ok"] is False
        assert tls["ok"] is False and tls.exit_code == os.EX_UNAVAILABLE  # type: ignore[attr-defined]
        shown = (failed_run.message or "") + json.dumps([report, tls]) + json.dumps(logs, default=str) + caplog.text
        shown += "".join(capsys.readouterr()) + repr(peer.system()._settings)
        assert secret not in shown
    finally:
        made.close()  # drops the table, closes what the test opened


def test_an_encrypted_password_is_decrypted_with_idsyncs_key(tmp_path: Path, sqlite_peer: Peer) -> None:
    """A ``$crypto`` password (as PingIDM leaves it in a provisioner) is decrypted with
    idsync's key when the system opens; one that key cannot decrypt names the key."""
    sqlite_peer.create(ROWS)
    project = _hr_project(tmp_path, sqlite_peer, [HR_IN])
    loaded = load_project(project)
    assert loaded.keyring is not None
    config = json.loads((project / "conf" / FILE).read_text())
    config["configurationProperties"]["password"] = loaded.keyring.encrypt(SECRET)
    _provisioner(project, "hr", config)
    provisioner = load_project(project).provisioners["hr"]
    assert provisioner.config["configurationProperties"]["password"] == SECRET
    config["configurationProperties"]["password"]["$crypto"]["value"]["data"] = "AAAAAAAAAAAAAAAAAAAAAA=="
    _provisioner(project, "hr", config)
    with pytest.raises(ConfigError) as caught:
        load_project(project).provisioners["hr"].config  # noqa: B018 - the property decrypts
    assert caught.value.key == "configurationProperties.password" and SECRET not in str(caught.value)


def test_a_lost_database_is_unavailable(tmp_path: Path) -> None:
    """A server that does not answer is PeerUnavailable, naming the system and the database."""
    system = open_dbtable_system("hr", {"configurationProperties": {
        "jdbcDriver": "org.postgresql.Driver", "jdbcUrlTemplate": "jdbc:postgresql://%h:%p/%d?connectTimeout=2",
        "host": "127.0.0.1", "port": "9", "database": "hr", "table": "people", "keyColumn": "uid",
        "password": SECRET}}, file=FILE, base=tmp_path)
    with pytest.raises(PeerUnavailable) as caught:
        _all(system)
    system.close()
    assert "system hr" in str(caught.value) and "127.0.0.1:9" in str(caught.value) and SECRET not in str(caught.value)


@pytest.mark.parametrize("kind", [POSTGRESQL, MARIADB])
def test_a_locked_table_fails_the_read_after_the_socket_timeout(tmp_path: Path, kind: str) -> None:
    """Another writer holds the table locked: the read waits ``socketTimeout`` (here 1 s,
    300 s by default), then fails the run (PeerError: a recon deletes nothing) instead of
    holding its job forever."""
    import time

    for peer in _peer(kind, tmp_path):
        peer.create(ROWS)
        template = peer.props["jdbcUrlTemplate"]
        joiner = "&" if "?" in template else "?"
        millis = peer.engine.dialect.name == "mysql"
        system = peer.system(jdbcUrlTemplate=f"{template}{joiner}socketTimeout={1000 if millis else 1}")
        with peer.engine.connect() as holder:
            if peer.engine.dialect.name == "postgresql":
                holder.execute(text(f"LOCK TABLE {peer.table} IN ACCESS EXCLUSIVE MODE"))
            else:
                holder.execute(text(f"LOCK TABLES {peer.table} WRITE"))
            started = time.monotonic()
            with pytest.raises(PeerError):
                _all(system)
            assert time.monotonic() - started < 15
            holder.rollback()
            if peer.engine.dialect.name != "postgresql":
                holder.execute(text("UNLOCK TABLES"))
        system.close()
