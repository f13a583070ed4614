"""Values the identity store cannot hold, and what errors from it may say:
a NUL character or an over-long id read from a real slapd, or half of a character (an
unpaired surrogate), fails its own object and nothing else,
on every store; queries and lookups with one answer "nothing" instead of a
database error; no message ever carries SQL text or parameters."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED, parse_managed
from idsync.errors import internal_message
from idsync.query import parse
from idsync.resource import QuerySpec, WriteOp
from idsync.resources import Resources
from idsync.status_file import write_status_file
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.sync.recon import run_recon
from idsync_dev.slapd import Slapd
from projects import MAPPING
from recon_env import Env
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

_SQL_WORDS = ("SELECT ", "INSERT INTO", "managed_objects", "managed_properties", "[SQL", "[parameters", "DataError")


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def _nul(value: str) -> str:
    """An LDIF base64 value with a NUL byte inside: LDAP takes it in a directoryString."""
    return base64.b64encode(f"{value}\x00value".encode()).decode()


def test_nul_in_an_entry_fails_that_entry_alone(env: Env) -> None:
    """Of a page with a user created and a user updated with a NUL in a searchable
    (``sn``) or plain (``description``) attribute, those two fail with a message
    naming where the NUL is; every other user of the same page is created or
    updated, a removed entry is still deprovisioned, the run succeeds, and neither
    its record, its audit nor the status file holds SQL or parameters (the record
    and the status file not the value either)."""
    env.add(*[f"u{i}" for i in range(12)])
    assert env.recon().state == "SUCCESS"
    env.slapd.add_ldif(f"dn: uid=u0,{env.subtree}\nchangetype: modify\nreplace: sn\nsn:: {_nul('bad')}\n\n")
    env.slapd.add_ldif(f"dn: uid=fresh,{env.subtree}\nobjectClass: inetOrgPerson\nuid: fresh\ncn: Fresh\n"
                       f"sn: Fresh\ndescription:: {_nul('bad')}\n\n")
    env.add("new1")
    env.modify("u1", "mail", "changed@example.com")
    env.remove("u2")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    changes = result.summary["changes"]
    assert (changes["created"], changes["updated"], changes["deleted"], changes["failed"]) == (1, 1, 1, 2)
    errors = {e["message"].split(": ", 1)[1] for e in result.summary["errors"]}
    assert errors == {"the value at /sn contains a NUL character, which the store cannot hold",
                      "the value at /description contains a NUL character, which the store cannot hold"}
    users = env.users()
    assert "fresh" not in users and "u2" not in users and users["u0"]["sn"] == "Test"
    assert users["u1"]["mail"] == "changed@example.com" and "new1" in users
    runs = RunStore(env.store)
    told = json.dumps(runs.get(result.id), default=str) + write_status_file(env.project, env.store).read_text()
    audited = json.dumps(runs.audit_entries(result.id), default=str)
    for word in _SQL_WORDS:
        assert word not in told + audited, word
    assert "bad\\u0000" not in told and "bad\x00" not in told
    # The next run fails the same two again, and only them.
    again = env.recon()
    assert again.state == "SUCCESS" and again.summary["changes"]["failed"] == 2


def test_nul_in_an_id_fails_that_object_alone(env: Env) -> None:
    """With ids read from an attribute that holds a NUL in one entry, that entry
    fails alone, named with the NUL spelt ``\\u0000``, in the LDAP-to-store recon
    (source phase) and in the store-to-LDAP recon (target phase); the other
    entries are synced and linked, and both runs succeed."""
    env.change_conf("provisioner.openicf-ldap.json",
                    lambda prov: prov["configurationProperties"].update(uidAttribute="employeeNumber"))
    env.add("ok1", employeeNumber="e1")
    env.add("ok2", employeeNumber="e2")
    env.slapd.add_ldif(f"dn: uid=odd,{env.subtree}\nobjectClass: inetOrgPerson\nuid: odd\ncn: Odd\nsn: Odd\n"
                       f"employeeNumber:: {_nul('e3')}\n\n")
    expected = "id e3\\u0000value contains a NUL character, which the store cannot hold; the object was skipped"
    forward = env.recon()
    assert forward.state == "SUCCESS", forward.message
    assert [e["message"] for e in forward.summary["errors"]] == [f"the source {expected}"]
    assert sorted(env.users()) == ["ok1", "ok2"] and forward.summary["changes"]["linked"] == 2
    reverse = run_recon(env.project, env.store, "managedUser_systemLdapAccounts")
    assert reverse.state == "SUCCESS", reverse.message
    assert [e["message"] for e in reverse.summary["errors"]] == [f"the target {expected}"]
    assert reverse.summary["situationSummary"]["CONFIRMED"] == 2


def test_an_id_longer_than_a_link_holds_fails_that_object_alone(env: Env) -> None:
    """With ids read from an attribute that holds 300 characters in one entry (a link's
    id columns hold 255), that entry fails alone with a message saying so, in the
    LDAP-to-store recon (source phase) and in the store-to-LDAP recon (target phase),
    on every store (PostgreSQL and MariaDB failed the whole run); the others are synced
    and linked, and both runs succeed."""
    env.change_conf("provisioner.openicf-ldap.json",
                    lambda prov: prov["configurationProperties"].update(uidAttribute="employeeNumber"))
    env.add("ok1", employeeNumber="e1")
    env.add("ok2", employeeNumber="e2")
    env.add("odd", employeeNumber="e" * 300)
    expected = f"id {'e' * 40}... has 300 characters, more than the 255 a link holds; the object was skipped"
    forward = env.recon()
    assert forward.state == "SUCCESS", forward.message
    assert [e["message"] for e in forward.summary["errors"]] == [f"the source {expected}"]
    assert sorted(env.users()) == ["ok1", "ok2"] and forward.summary["changes"]["linked"] == 2
    reverse = run_recon(env.project, env.store, "managedUser_systemLdapAccounts")
    assert reverse.state == "SUCCESS", reverse.message
    assert [e["message"] for e in reverse.summary["errors"]] == [f"the target {expected}"]
    assert reverse.summary["situationSummary"]["CONFIRMED"] == 2


def test_lookups_with_a_nul_find_nothing(env: Env) -> None:
    """A filter, an id or a link key with a NUL answers no object (no stored value
    can hold one) rather than a database error, whatever the operator; an ordered
    comparison orders by the part before the NUL."""
    users = Resources(env.project, env.store).open("managed/user")
    made = users.create({"userName": "abc", "sn": "Jensen", "description": "abd"})
    users.create({"userName": "abe", "sn": "Smith"})

    def found(query: str) -> list[str]:
        return sorted(o["userName"] for page in users.pages(QuerySpec(filter=parse(query))) for o in page)

    for query in ('userName eq "ab\\u0000c"', 'userName co "\\u0000"', 'sn sw "Jen\\u0000"',
                  'description eq "abd\\u0000"', '_id eq "x\\u0000"', '/us\u0000er pr'):
        assert found(query) == [], query
    assert found('userName gt "abc\\u0000"') == ["abe"]
    assert found('userName lt "abe\\u0000x"') == ["abc", "abe"]
    assert found('!(userName eq "abc\\u0000")') == ["abc", "abe"]
    assert users.get_many([made["_id"], "x\x00y"]) == {made["_id"]: users.get_many([made["_id"]])[made["_id"]]}
    assert users.find_matching((("userName",),), [("abc\x00",), ("abc",)]) == {("abc",): [users.get(made["_id"])]}
    assert LinkSet(env.store, MAPPING).targets_of(["a\x00b"]) == {}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_database_errors_say_no_sql_nor_parameters(kind: str, tmp_path: Path) -> None:
    """A database error from the store's own engine lists no parameter even in its
    full text, and ``internal_message`` (what a run record, the status file or an
    answer shows of an unexpected error) keeps only the class and the driver's
    first line: no statement, no parameter."""
    store = Store.open(store_url(kind, tmp_path))
    secret = "s3cret-value-of-an-object"
    try:
        with pytest.raises(DBAPIError) as caught, store.engine.connect() as conn:
            conn.execute(text("SELECT nosuchcolumn FROM managed_objects WHERE id = :v"), {"v": secret})
    finally:
        store.close()
    assert secret not in str(caught.value)
    told = internal_message(caught.value)
    assert "SELECT" not in told and "[SQL" not in told and "\n" not in told
    assert told.split(":")[0] in ("OperationalError", "UndefinedColumn")


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize(("odd", "spelt"), [("\x00", "\\u0000"), ("\ud83d", "\\ud83d")],
                         ids=["nul", "half-character"])
def test_a_message_quoting_a_value_no_store_holds_is_recorded(kind: str, odd: str, spelt: str,
                                                              tmp_path: Path) -> None:
    """An error message that quotes a value with a NUL or an unpaired surrogate (half of a
    character; a script's or a peer's) is recorded in the audit and the run record, the
    character spelt ``\\u0000`` or ``\\ud83d`` and whole emoji kept, instead of failing
    the page's audit write or the run's end on any store."""
    store = Store.open(store_url(kind, tmp_path))
    runs = RunStore(store)
    try:
        runs.start("r1", MAPPING, job=None, dry_run=False, summary={})
        with store.begin() as conn:
            runs.audit(conn, [{"run_id": "r1", "mapping": MAPPING, "situation": "ABSENT", "action": "CREATE",
                               "source_id": "s1", "target_id": None, "status": "FAILURE",
                               "message": f"script failed: bad value 'a{odd}b' (😀)", "changes": None}])
        runs.finish("r1", "FAILED", "COMPLETED_FAILED", {}, f"peer said 'a{odd}b'")
        (entry,) = runs.audit_entries("r1")
        record = runs.get("r1")
    finally:
        store.close()
    assert entry["message"] == f"script failed: bad value 'a{spelt}b' (😀)"
    assert record is not None and record["message"] == f"peer said 'a{spelt}b'"


@pytest.mark.parametrize("kind", BACKENDS)
def test_half_a_character_fails_its_object_alone(kind: str, tmp_path: Path) -> None:
    """Of one page of writes, a create and an update carrying an unpaired surrogate (half
    of a character, which no driver can encode), in a searchable (``sn``) or a plain
    property, or in a property's name, fail alone, naming where it is; the others of
    the page are written, the stored objects are as they were, and whole emoji are kept."""
    store = Store.open(store_url(kind, tmp_path))
    users = ManagedResource(store, parse_managed(DEFAULT_MANAGED).get("user"))
    try:
        kept = users.create({"userName": "kept", "sn": "Kept"})
        odd = users.create({"userName": "odd", "sn": "Odd"})
        results = users.write_batch([
            WriteOp("create", values={"userName": "fine", "sn": "Fine 😀"}),
            WriteOp("create", values={"userName": "cut", "description": "abcdefg\ud83d"}),
            WriteOp("create", values={"userName": "named", "x\udc00": "y"}),
            WriteOp("update", id=odd["_id"], values={"sn": "\ud83dOdd"}),
            WriteOp("update", id=kept["_id"], values={"mail": "kept@example.com"}),
        ])
        errors = [str(r.error) if r.error else None for r in results]
        stored = {u["userName"]: u for page in users.pages(QuerySpec()) for u in page}
    finally:
        store.close()
    half = "contains an unpaired surrogate (half of a character), which the store cannot hold"
    assert errors == [None, f"managed/user: the value at /description {half}",
                      f"managed/user: the value at /x\\udc00 {half}",
                      f"managed/user/{odd['_id']}: the value at /sn {half}", None]
    assert sorted(stored) == ["fine", "kept", "odd"]
    assert stored["fine"]["sn"] == "Fine 😀" and stored["odd"]["sn"] == "Odd"
    assert stored["kept"]["mail"] == "kept@example.com"
