"""The identity store on SQLite, PostgreSQL and MariaDB: managed objects,
revisions, the searchable index, queries, links, run records and locks."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, POSTGRESQL_EN, migrate_to, store_url
from idsync.config.managed import DEFAULT_MANAGED, parse_managed
from idsync.config.project import load_project
from idsync.errors import ConfigError, NotFound, RevisionMismatch, RunLocked
from idsync.query import parse
from idsync.query.ast import And, Compare, Not, Or, Present
from idsync.resource import QuerySpec, WriteOp
from idsync.resources import Resources
from idsync.store.database import Store, as_utc
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from waiting import wait_until_blocked


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s = Store.open(store_url(request.param, tmp_path))
    yield s
    s.close()


@pytest.fixture
def users(store: Store) -> ManagedResource:
    return ManagedResource(store, parse_managed(DEFAULT_MANAGED).get("user"))


def _ids(resource: ManagedResource, node) -> set[str]:
    return {o["userName"] for page in resource.pages(QuerySpec(filter=node)) for o in page}


def test_create_read_update_revision(users: ManagedResource) -> None:
    """A created object gets a UUID _id and a _rev; an update that changes nothing
    keeps the _rev, a real change moves it."""
    created = users.create({"userName": "bjensen", "mail": "bjensen@example.com"})
    assert len(created["_id"]) == 36 and created["_rev"]
    same = users.update(created["_id"], {"mail": "bjensen@example.com"})
    assert same["_rev"] == created["_rev"]
    changed = users.update(created["_id"], {"mail": "babs@example.com", "sn": "Jensen"})
    assert changed["_rev"] != created["_rev"]
    assert users.get(created["_id"])["mail"] == "babs@example.com"


def test_update_with_stale_revision_is_refused(users: ManagedResource) -> None:
    """Optimistic concurrency: an update naming an old revision fails alone."""
    obj = users.create({"userName": "a"})
    users.update(obj["_id"], {"sn": "x"})
    with pytest.raises(RevisionMismatch):
        users.update(obj["_id"], {"sn": "y"}, rev=obj["_rev"])


def test_missing_object_is_not_found(users: ManagedResource) -> None:
    """Updating or deleting an object that does not exist fails that op only."""
    results = users.write_batch([WriteOp("update", id="nope", values={"sn": "x"}),
                                 WriteOp("create", values={"userName": "ok"})])
    assert isinstance(results[0].error, NotFound)
    assert results[1].ok


def test_queries_on_searchable_and_other_properties(users: ManagedResource) -> None:
    """_queryFilter works on indexed properties, JSON properties, with and/or/not and pr."""
    users.write_batch([WriteOp("create", values=v) for v in (
        {"userName": "alice", "sn": "Liddell", "mail": "alice@example.com", "description": "first"},
        {"userName": "bob", "sn": "Builder", "description": "second"},
        {"userName": "carol", "sn": "Danvers", "mail": "carol@example.com"},
    )])
    assert _ids(users, Compare(("userName",), "eq", "bob")) == {"bob"}
    assert _ids(users, Compare(("mail",), "co", "example")) == {"alice", "carol"}
    assert _ids(users, Compare(("sn",), "sw", "D")) == {"carol"}
    assert _ids(users, Present(("mail",))) == {"alice", "carol"}
    assert _ids(users, Not(Present(("mail",)))) == {"bob"}
    assert _ids(users, Compare(("description",), "eq", "second")) == {"bob"}
    assert _ids(users, Or((Compare(("userName",), "eq", "alice"), Compare(("description",), "eq", "second")))) == {
        "alice", "bob"}
    assert _ids(users, And((Compare(("userName",), "gt", "alice"), Compare(("userName",), "lt", "carol")))) == {"bob"}
    assert _ids(users, Compare(("userName",), "eq", "Alice")) == set(), "comparisons are exact on every dialect"


def test_like_wildcards_in_values_are_literal(users: ManagedResource) -> None:
    """A % or _ in a co/sw value matches itself, not anything."""
    users.write_batch([WriteOp("create", values={"userName": "50%_off"}),
                       WriteOp("create", values={"userName": "500"})])
    assert _ids(users, Compare(("userName",), "co", "%_")) == {"50%_off"}


def test_pages_stream_by_keyset(users: ManagedResource) -> None:
    """Pages come in the requested size and together hold every object once."""
    users.write_batch([WriteOp("create", values={"userName": f"u{i:03}"}) for i in range(25)])
    pages = list(users.pages(QuerySpec(page_size=10)))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert len({o["_id"] for p in pages for o in p}) == 25
    ids_only = next(users.pages(QuerySpec(fields=[], page_size=5)))
    assert set(ids_only[0]) == {"_id", "_rev"}


def test_find_matching_batches_correlation(users: ManagedResource) -> None:
    """One batched lookup answers many equality correlations at once."""
    users.write_batch([WriteOp("create", values={"userName": n}) for n in ("a", "b", "c")])
    found = users.find_matching((("userName",),), [("a",), ("c",), ("zz",)])
    assert {k: [o["userName"] for o in v] for k, v in found.items()} == {("a",): ["a"], ("c",): ["c"]}


def test_defaults_and_secrets(users: ManagedResource) -> None:
    """Schema defaults fill a created object; secret properties are never returned."""
    obj = users.create({"userName": "x", "password": "S3cret!"})
    assert obj["accountStatus"] == "active"
    read = users.get(obj["_id"])
    assert read is not None and "password" not in read and read["effectiveRoles"] == []  # computed, never stored


def test_dry_run_resource_never_writes(store: Store) -> None:
    """A resource opened for a dry run answers as if it wrote, and writes nothing."""
    dry = ManagedResource(store, parse_managed(DEFAULT_MANAGED).get("user"), dry_run=True)
    result = dry.create({"userName": "ghost"})
    assert result["_id"]
    assert dry.count() == 0


def test_links_both_directions(store: Store) -> None:
    """A link written by one mapping is read back reversed by the mapping sharing it."""
    forward = LinkSet(store, "ldap_user")
    backward = LinkSet(store, "ldap_user", reversed=True)
    with store.begin() as conn:
        forward.add(conn, [("ldap-1", "user-1"), ("ldap-2", "user-2")])
    assert forward.targets_of(["ldap-1", "ldap-3"]) == {"ldap-1": "user-1"}
    assert backward.targets_of(["user-2"]) == {"user-2": "ldap-2"}
    with store.begin() as conn:
        forward.add(conn, [("ldap-1", "user-9")])  # relinking replaces the old link
        forward.remove_targets(conn, ["user-2"])
    assert forward.targets_of(["ldap-1", "ldap-2"]) == {"ldap-1": "user-9"}


def test_pages_of_ids_take_any_text_once(store: Store) -> None:
    """A page of ids is one statement's parameter (``store/idpages.py``): ids with quotes,
    commas, brackets, non-ASCII or a thousand of them are read and claimed as themselves,
    duplicates once, and an id no row can hold (a NUL, none) matches nothing."""
    odd = ['a"b', "c,d", "[e]", "'f'", "gé\u00fc", "ß\\h"]
    many = [f"user-{i}" for i in range(1200)]
    links = LinkSet(store, "ldap_user")
    with store.begin() as conn:
        links.add(conn, [(s, f"t{i}") for i, s in enumerate(odd + many)])
    asked = [*odd, *odd, "nope", "x\x00y", None, *many]
    found = links.targets_of(asked)  # type: ignore[arg-type]
    assert set(found) == set(odd + many) and found['a"b'] == "t0"
    runs = RunStore(store)
    with store.begin() as conn:
        runs.claim(conn, "run-1", [*odd, *odd, "x\x00y", *many])
        runs.claim(conn, "run-1", odd[:2])  # claimed again: no duplicate row, no error
    assert runs.claimed("run-1", [*odd, "nope", *many]) == set(odd + many)


def test_lock_is_exclusive(store: Store) -> None:
    """A second holder of the same lock is refused until the first releases it."""
    runs = RunStore(store)
    runs.acquire("recon:m", "one")
    with pytest.raises(RunLocked, match="already running"):
        runs.acquire("recon:m", "two")
    runs.release("recon:m", "one")
    runs.acquire("recon:m", "two")


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    """Opening an existing store again upgrades nothing and loses nothing."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first = Store.open(url)
    ManagedResource(first, parse_managed(DEFAULT_MANAGED).get("user")).create({"userName": "kept"})
    first.close()
    again = Store.open(url)
    assert ManagedResource(again, parse_managed(DEFAULT_MANAGED).get("user")).count() == 1


def test_store_of_an_older_release_is_upgraded_in_place(tmp_path: Path) -> None:
    """A store left at the first schema revision is brought to the newest one when
    opened, keeping its objects (the upgrade path of a release)."""
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate_to(conn, "0001")
        conn.exec_driver_sql("INSERT INTO recon_runs (id, mapping, state, stage, started, dry_run, summary) "
                             "VALUES ('r1', 'm', 'SUCCESS', 'COMPLETED_SUCCESS', '2026-01-01 00:00:00', 0, '{}')")
    assert "ix_audit_source" not in {i["name"] for i in inspect(engine).get_indexes("audit")}
    engine.dispose()

    upgraded = Store.open(url)
    try:
        indexes = {i["name"] for i in inspect(upgraded.engine).get_indexes("audit")}
        assert "ix_audit_source" in indexes
        assert RunStore(upgraded).get("r1") is not None
    finally:
        upgraded.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_migrations_build_exactly_the_declared_schema(kind: str, tmp_path: Path) -> None:
    """The Alembic migrations give every dialect the tables, columns, types and
    indexes ``tables.py`` declares: a change to one without the other fails here. (The
    suite's record of what built a test database, ``SCHEMA_RECORD``, is not the store's.)"""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from idsync.store.tables import metadata
    from idsync_dev.stores import SCHEMA_RECORD

    s = Store.open(store_url(kind, tmp_path, empty=True))
    try:
        with s.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": (
                lambda name, kind, _parent: (kind, name) != ("table", SCHEMA_RECORD))})
            assert compare_metadata(context, metadata) == []
            assert context.get_current_revision() is not None
    finally:
        s.close()


def _schema(store: Store) -> dict[str, Any]:
    """What the database itself says of every table: columns (type, nullability,
    default), primary key, indexes (with a partial index's condition), unique and
    foreign keys."""
    from sqlalchemy import inspect

    def index(found: dict[str, Any]) -> tuple[Any, ...]:
        options = {k: str(v) for k, v in (found.get("dialect_options") or {}).items()}
        return found["name"], tuple(found["column_names"]), bool(found["unique"]), sorted(options.items())

    with store.engine.connect() as conn:
        seen = inspect(conn)
        return {table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                        for c in seen.get_columns(table)],
            "primary": seen.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(index(i) for i in seen.get_indexes(table)),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in seen.get_unique_constraints(table)),
            "foreign": sorted((f["referred_table"], tuple(f["constrained_columns"]))
                              for f in seen.get_foreign_keys(table)),
        } for table in sorted(seen.get_table_names())}


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_new_store_gets_the_schema_the_migrations_build(kind: str, tmp_path: Path) -> None:
    """A new, empty database is given the declared schema at once, stamped with the
    newest revision; it must be what every migration in turn builds, to the column
    defaults and a partial index's condition, on every dialect. Opened again, the
    store is current: nothing more is run."""
    built = {}
    for declared in (False, True):
        where = tmp_path / ("declared" if declared else "migrated")
        where.mkdir()
        url = store_url(kind, where, empty=True)
        s = Store.open(url, migrate=False)
        try:
            s.migrate(declared=declared)
            built[declared] = (_schema(s), s._revision())
        finally:
            s.close()
    assert built[True] == built[False]
    schema, revision = built[True]
    assert revision is not None and {"alembic_version", "managed_objects", "links"} <= set(schema)
    again = Store.open(url)  # the declared store, as the next process opens it
    try:
        assert (_schema(again), again._revision()) == built[True]
    finally:
        again.close()


@pytest.mark.mariadb
def test_a_mariadb_store_waits_only_for_its_own_database_migration(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB's named locks are the server's: a new store waits for no migration of another
    database on the same server (which made every other store's first command wait a minute
    and then migrate without the lock), waits for one of its own database for as long as it
    is held, never migrating beside it; and a migration that fails frees the lock."""
    import threading
    import time

    import idsync.store.database as database
    from sqlalchemy import create_engine, make_url, text

    url = store_url("mariadb", tmp_path, empty=True)
    name = make_url(url).database
    monkeypatch.setattr(database, "_MIGRATION_LOCK_WAIT", 1)
    holder = create_engine(url).connect()  # another process's session
    try:
        def hold(of_database: str) -> None:
            held = holder.execute(text("SELECT GET_LOCK(CONCAT('idsync_migrate_', MD5(:d)), 5)"),
                                  {"d": of_database}).scalar()
            holder.execute(text("SELECT GET_LOCK('idsync_migrate', 5)"))  # as stores named it before
            assert held == 1

        hold(f"{name}_elsewhere")
        started = time.monotonic()
        s = Store.open(url)
        s.close()
        assert time.monotonic() - started < 10 and s._revision() is not None
        holder.execute(text("SELECT RELEASE_ALL_LOCKS()"))

        store_url("mariadb", tmp_path, empty=True)
        hold(name)
        opened: list[bool] = []
        opening = threading.Thread(target=lambda: opened.append(Store.open(url).close() is None), daemon=True)
        opening.start()
        opening.join(3)
        assert opening.is_alive() and not opened  # past several of its 1 s waits
        holder.execute(text("SELECT RELEASE_ALL_LOCKS()"))
        opening.join(60)
        assert opened == [True]

        def broken(conn: Any) -> bool:
            raise RuntimeError("a migration that fails")

        store_url("mariadb", tmp_path, empty=True)
        monkeypatch.setattr(database, "_new_database", broken)
        with pytest.raises(RuntimeError):
            Store.open(url)
        assert holder.execute(text("SELECT IS_USED_LOCK(CONCAT('idsync_migrate_', MD5(:d)))"),
                              {"d": name}).scalar() is None
    finally:
        holder.close()


@pytest.mark.parametrize("kind", [*BACKENDS, POSTGRESQL_EN])
def test_ids_and_values_order_by_code_point_on_every_store(kind: str, tmp_path: Path) -> None:
    """Ids and searchable values order by code point ("B" < "a" < "b") on every store,
    PostgreSQL on a database made with English's collation included (where "a" < "B"):
    a query's objects come in ``_id`` order, pages follow it, and ranges (``gt``, ``lt``)
    on ids, searchable and plain values select what they select on SQLite."""
    store = Store.open(store_url(kind, tmp_path))
    try:
        users = _typed_users(store, "string")
        names = ["B", "a", "b", "A-1", "a_2", "a-2", "Ä", "z"]
        for name in names:
            users.create({"_id": name, "userName": name, "code": name, "other": name})
        ordered = sorted(names)
        assert [o["_id"] for page in users.pages(QuerySpec(page_size=3)) for o in page] == ordered
        for field in ("_id", "code", "other"):
            for op, value in (("gt", "B"), ("lt", "a"), ("ge", "a-"), ("le", "A-1"), ("gt", "a_")):
                expected = {n for n in names if {"gt": n > value, "lt": n < value, "ge": n >= value,
                                                 "le": n <= value}[op]}
                assert _ids(users, Compare((field,), op, value)) == expected, (field, op, value)
    finally:
        store.close()


def test_times_keep_their_microseconds_on_every_store(store: Store) -> None:
    """A time written to the store reads back to the microsecond on every store: MariaDB's
    plain DATETIME kept whole seconds (a recon of 0.3 s lasted 0 ms there)."""
    from idsync.store.tables import locks
    from sqlalchemy import insert, select

    when = dt.datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=dt.UTC)
    with store.begin() as conn:
        conn.execute(insert(locks).values(name="l", owner="o", acquired=when, expires=when))
    with store.engine.connect() as conn:
        acquired = conn.execute(select(locks.c.acquired)).scalar_one()
    assert as_utc(acquired) == when


def test_names_differing_by_case_are_two_on_every_store(store: Store) -> None:
    """Managed types, properties and link sets whose names differ only by case are told
    apart on every store, MariaDB included (its default collation took them for one):
    ``mail eq`` does not find the object whose ``Mail`` matches, ``managed/User/a`` exists
    beside ``managed/user/a``, and each link set keeps its own links."""
    managed = parse_managed({"objects": [
        {"name": "user", "schema": {"properties": {"mail": {"type": "string", "searchable": True},
                                                   "Mail": {"type": "string", "searchable": True}}}},
        {"name": "User", "schema": {"properties": {"mail": {"type": "string", "searchable": True}}}}]})
    users, others = ManagedResource(store, managed.get("user")), ManagedResource(store, managed.get("User"))
    users.create({"_id": "a", "Mail": "x@example.com"})
    others.create({"_id": "a", "mail": "y@example.com"})
    assert [o["_id"] for page in users.pages(QuerySpec(filter=parse('mail eq "x@example.com"'))) for o in page] == []
    assert [o["_id"] for page in users.pages(QuerySpec(filter=parse('Mail eq "x@example.com"'))) for o in page] == ["a"]
    assert (users.count(), others.count()) == (1, 1)
    assert [o["_id"] for page in others.pages(QuerySpec(filter=parse('mail eq "x@example.com"'))) for o in page] == []
    with store.begin() as conn:
        LinkSet(store, "m").add(conn, [("s", "t1")])
        LinkSet(store, "M").add(conn, [("s", "t2")])
    assert (LinkSet(store, "m").targets_of(["s"]), LinkSet(store, "M").targets_of(["s"])) == ({"s": "t1"}, {"s": "t2"})


def test_string_filters_match_case_alike_on_every_store(users: ManagedResource) -> None:
    """eq, sw and co compare strings exactly on SQLite as on PostgreSQL and MariaDB,
    indexed or not: one filter selects the same objects whatever the store."""
    users.create({"userName": "bjensen", "description": "Barbara Jensen"})
    for text in ('userName sw "BJ"', 'userName co "JEN"', 'userName eq "BJensen"', 'description co "barbara"'):
        assert _ids(users, parse(text)) == set(), text
    for text in ('userName sw "bj"', 'userName co "jen"', 'description co "Barbara"'):
        assert _ids(users, parse(text)) == {"bjensen"}, text


def test_trailing_spaces_count_on_every_store(store: Store) -> None:
    """``"alice"`` and ``"alice "`` are two values on every store, MariaDB included (its
    PAD SPACE collation took them for one): as ids, as searchable and as plain values,
    compared by ``eq`` and ranges, in a batched correlation (which failed on MariaDB,
    meeting a value it had not asked for) and as a link's source ids."""
    users = _typed_users(store, "string")
    for object_id, name in (("x", "alice"), ("x ", "alice ")):
        users.create({"_id": object_id, "userName": name, "code": name, "other": name})
    assert users.get("x")["userName"] == "alice" and users.get("x ")["userName"] == "alice "
    for field in ("_id", "userName", "code", "other"):
        value = "x" if field == "_id" else "alice"
        assert _ids(users, Compare((field,), "eq", value)) == {"alice"}, field
        assert _ids(users, Compare((field,), "eq", value + " ")) == {"alice "}, field
        assert _ids(users, Compare((field,), "gt", value)) == {"alice "}, field
        assert _ids(users, Compare((field,), "lt", value + " ")) == {"alice"}, field
    found = users.find_matching((("code",),), [("alice",), ("alice ",)])
    assert {k[0]: [o["_id"] for o in v] for k, v in found.items()} == {"alice": ["x"], "alice ": ["x "]}
    links = LinkSet(store, "m")
    with store.begin() as conn:
        links.add(conn, [("s", "x"), ("s ", "x ")])
    assert links.targets_of(["s", "s "]) == {"s": "x", "s ": "x "}


def test_a_prefix_finds_values_with_characters_past_u_ffff_after_it(store: Store) -> None:
    """``sw`` finds a value whose next character after the prefix is past U+FFFF (an emoji,
    U+10FFFF) on every store, as ids, searchable and plain values: MariaDB's index read for
    ``LIKE 'a%'`` ended at "a" and U+FFFF and missed them. What does not start with the
    prefix is still not found."""
    users = _typed_users(store, "string")
    for value in ("a\U0001F600b", "a\U0010FFFF", "a\uFFFF", "ab", "b", "\uD7FFx", "\uE000"):
        users.create({"_id": f"id-{value}", "userName": value, "code": value, "other": value})
    for field in ("_id", "code", "other"):
        prefix = "id-" if field == "_id" else ""
        assert _ids(users, Compare((field,), "sw", prefix + "a")) == {
            "a\U0001F600b", "a\U0010FFFF", "a\uFFFF", "ab"}, field
        assert _ids(users, Compare((field,), "sw", prefix + "a\U0001F600")) == {"a\U0001F600b"}, field
        assert _ids(users, Compare((field,), "sw", prefix + "a\U0010FFFF")) == {"a\U0010FFFF"}, field
        assert _ids(users, Compare((field,), "sw", prefix + "\uD7FF")) == {"\uD7FFx"}, field
        assert _ids(users, Compare((field,), "sw", prefix)) == {
            "a\U0001F600b", "a\U0010FFFF", "a\uFFFF", "ab", "b", "\uD7FFx", "\uE000"}, field


@pytest.mark.parametrize(("url", "problem"), [("notaurl", "not a database URL"),
                                              ("postgresql://u:S3cret@h:notaport/d", "not a database URL"),
                                              ("bogus://x", "unsupported database 'bogus'")])
def test_bad_store_url_is_a_configuration_error(url: str, problem: str) -> None:
    """A store URL idsync cannot use is a ConfigError naming store.url, not a crash, and
    never quoting the URL (the parser's own words may, password and all)."""
    with pytest.raises(ConfigError, match=problem) as raised:
        Store.open(url)
    assert raised.value.key == "store.url" and "S3cret" not in str(raised.value)


@pytest.mark.postgresql
def test_describe_hides_the_password_in_the_url_and_in_its_query(tmp_path: Path) -> None:
    """What the daemon logs and the status file records of the store URL names the
    server and database but no password: neither the one in the URL's user part nor
    the ``?password=`` / ``?sslpassword=`` that libpq also reads from a URL (the
    PostgreSQL here trusts loopback, so the store opens with either)."""
    base = store_url("postgresql", tmp_path).split("?", 1)[0]  # without the tests' no-flush option
    user = base.replace("postgres@", "postgres:S3cret-user@", 1)
    for url in (user, f"{base}?password=S3cret-query&sslmode=prefer", f"{user}?sslpassword=S3cret-key"):
        store = Store.open(url)
        try:
            shown = store.describe()
        finally:
            store.close()
        assert "S3cret" not in shown, shown
        assert shown.startswith("postgresql+psycopg://postgres") and "127.0.0.1:5432" in shown, shown
    assert "sslmode=prefer" in Store.open(f"{base}?sslmode=prefer", migrate=False).describe()


def test_a_quick_statistics_refresh_counts_the_rows_and_changes_no_session(users: ManagedResource) -> None:
    """``Store.analyze(quick=True)``, what a recon asks for while its tables grow: the
    planner learns how many rows there are (PostgreSQL's smaller sample still sees them
    all here), and the smaller sample is of that transaction only, not of the pooled
    connection the next query gets."""
    store = users.store
    users.write_batch([WriteOp("create", None, {"userName": f"u{i}", "givenName": "G", "sn": "S",
                                                 "mail": f"u{i}@example.com"}) for i in range(300)])
    store.analyze(quick=True)
    if store.dialect != "postgresql":
        return  # MariaDB's ANALYZE TABLE samples a few pages whatever is asked; SQLite needs none
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = 'managed_objects'").scalar()
        target = conn.exec_driver_sql("SHOW default_statistics_target").scalar()
    assert rows == 300
    assert target == "100"


def test_a_turn_is_held_until_its_transaction_ends(store: Store) -> None:
    """``Store.turn``: a second transaction asking for a turn another holds waits until
    that one commits (what the first checked stays true until then); on PostgreSQL and
    MariaDB another turn's name does not wait."""
    order: list[str] = []

    def second(name: str) -> None:
        with store.begin() as conn:
            store.turn(conn, name)
            order.append(f"second has {name}")

    with store.begin() as conn:
        store.turn(conn, "unique:user")
        waiting = threading.Thread(target=second, args=("unique:user",))
        waiting.start()
        if store.dialect != "sqlite":  # SQLite's turn is its one write lock
            other = threading.Thread(target=second, args=("unique:role",))
            other.start()
            other.join(10)
            assert order == ["second has unique:role"]
            order.clear()
        wait_until_blocked(waiting, store.engine.url)
        assert waiting.is_alive()
        order.append("first commits")
    waiting.join(10)
    assert order == ["first commits", "second has unique:user"]


def _unique_users(store: Store, root: Path) -> ManagedResource:
    """The managed users of a project whose ``userName`` is unique, on ``store``."""
    conf = root / "conf"
    conf.mkdir(parents=True)
    url = store.engine.url.render_as_string(hide_password=False)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "{url}"\n')
    (conf / "managed.json").write_text(json.dumps({"objects": [{"name": "user", "schema": {"properties": {
        "userName": {"type": "string", "searchable": True, "policies": [{"policyId": "unique"}]},
        "sn": {"type": "string"}}}}]}))
    resource = Resources(load_project(root), store).open("managed/user")
    assert isinstance(resource, ManagedResource)
    return resource


def test_a_unique_value_two_writers_create_at_once_is_created_once(store: Store, tmp_path: Path) -> None:
    """Two transactions create the same unique userName at once, each before the other
    committed (both first checks find it free): the second to write checks again in the
    type's turn, finds the first's, and its create fails the ``unique`` policy, as it
    would have had it come later; nothing of it is left."""
    users = _unique_users(store, tmp_path / "p")
    beside = _unique_users(store, tmp_path / "q")  # another writer: not joined to the first's transaction
    second: list[Any] = []

    def other() -> None:
        second.extend(beside.write_batch([WriteOp("create", values={"userName": "twice", "sn": "B"})]))

    with store.begin() as conn, users.joined(conn):
        (first,) = users.write_batch([WriteOp("create", values={"userName": "twice", "sn": "A"})])
        assert first.ok
        thread = threading.Thread(target=other)
        thread.start()
        wait_until_blocked(thread, store.engine.url)
        assert thread.is_alive()  # its check found the name free; it waits for the turn to check again
    thread.join(10)
    (result,) = second
    assert not result.ok and "must be unique" in str(result.error)
    assert [o["sn"] for page in users.pages(QuerySpec()) for o in page] == ["A"]


def test_a_unique_value_renamed_to_while_another_creates_it_is_held_once(store: Store, tmp_path: Path) -> None:
    """A rename to a unique userName (an update: it takes the type's turn before its
    check) and a create of the same name at once: the create, checked again in the turn
    the rename holds until it commits, fails the ``unique`` policy."""
    users = _unique_users(store, tmp_path / "p")
    beside = _unique_users(store, tmp_path / "q")
    (old,) = users.write_batch([WriteOp("create", values={"userName": "before", "sn": "A"})])
    second: list[Any] = []

    def other() -> None:
        second.extend(beside.write_batch([WriteOp("create", values={"userName": "after", "sn": "B"})]))

    with store.begin() as conn, users.joined(conn):
        (renamed,) = users.write_batch([WriteOp("update", id=old.id, values={"userName": "after"})])
        assert renamed.ok
        thread = threading.Thread(target=other)
        thread.start()
        wait_until_blocked(thread, store.engine.url)
        assert thread.is_alive()
    thread.join(10)
    (result,) = second
    assert not result.ok and "must be unique" in str(result.error)
    assert [(o["userName"], o["sn"]) for page in users.pages(QuerySpec()) for o in page] == [("after", "A")]


def test_long_searchable_values_compare_whole(store: Store, tmp_path: Path) -> None:
    """The index keeps a string's first 255 characters, yet two values that differ only
    after them are two values: both unique userNames are created, and eq, co, sw, ranges
    and a batched correlation each find the one object that holds its value."""
    users = _unique_users(store, tmp_path)
    long1, long2 = "x" * 260 + "A", "x" * 260 + "B"
    results = users.write_batch([WriteOp("create", values={"userName": long1, "sn": "one"})])
    assert results[0].ok, results[0].error
    second = users.write_batch([WriteOp("create", values={"userName": long2, "sn": "two"})])
    assert second[0].ok, second[0].error
    again = users.write_batch([WriteOp("create", values={"userName": long2, "sn": "three"})])
    assert not again[0].ok, "the whole value is held already"

    def sns(text: str) -> set[str]:
        return {o["sn"] for page in users.pages(QuerySpec(filter=parse(text))) for o in page}

    assert sns(f'userName eq "{long1}"') == {"one"}
    assert sns(f'userName eq "{"x" * 255}"') == set(), "a value the length of the cut is no longer one's prefix"
    assert sns('userName co "xA"') == {"one"}
    assert sns(f'userName sw "{"x" * 260}B"') == {"two"}
    assert sns(f'userName sw "{"x" * 100}"') == {"one", "two"}
    assert sns(f'userName gt "{long1}"') == {"two"}
    assert sns(f'userName le "{long1}"') == {"one"}
    assert sns(f'!(userName eq "{long2}")') == {"one"}
    found = users.find_matching((("userName",),), [(long1,), (long2,), ("x" * 261 + "C",)])
    assert {k[0][-1]: [o["sn"] for o in v] for k, v in found.items()} == {"A": ["one"], "B": ["two"]}


def test_not_holds_of_objects_without_the_property(users: ManagedResource) -> None:
    """``!(f eq v)`` holds of an object that has no ``f`` on a property that is not
    searchable too, as on a searchable one: SQL's NULL never leaves it out."""
    users.write_batch([WriteOp("create", values=v) for v in (
        {"userName": "on", "active": True}, {"userName": "off", "active": False}, {"userName": "unset"},
    )])
    assert _ids(users, parse("!(active eq true)")) == {"off", "unset"}
    assert _ids(users, parse('!(description eq "x")')) == {"on", "off", "unset"}
    assert _ids(users, parse('!(userName eq "on")')) == {"off", "unset"}


def test_arrays_match_by_element_and_objects_never_by_text(users: ManagedResource) -> None:
    """A property that is not searchable matches as a searchable one does: an array when
    any element matches, an object never through its JSON text (only its own fields do)."""
    users.write_batch([WriteOp("create", values=v) for v in (
        {"userName": "listed", "tags": ["b", "c", 7], "address": {"city": "Nice"}},
        {"userName": "single", "tags": "b"},
        {"userName": "other", "tags": ["d"]},
    )])
    assert _ids(users, parse('tags eq "b"')) == {"listed", "single"}
    assert _ids(users, parse("tags gt 5")) == {"listed"}
    assert _ids(users, parse('!(tags eq "b")')) == {"other"}
    for text in ('tags co ","', 'tags co "[\\""', 'address co "city"', 'address sw "{"', 'address eq "Nice"'):
        assert _ids(users, parse(text)) == set(), text
    assert _ids(users, parse('address/city eq "Nice"')) == {"listed"}


def test_values_compare_by_json_type_on_every_store(users: ManagedResource) -> None:
    """A string matches strings, a number numbers, a boolean booleans, whatever the store:
    ``active eq "true"`` finds no boolean, ``age eq "30"`` no number."""
    users.write_batch([WriteOp("create", values=v) for v in (
        {"userName": "a", "active": True, "age": 30}, {"userName": "b", "active": "true", "age": "30"},
    )])
    assert _ids(users, parse("active eq true")) == {"a"}
    assert _ids(users, parse('active eq "true"')) == {"b"}
    assert _ids(users, parse("age eq 30")) == {"a"}
    assert _ids(users, parse('age eq "30"')) == {"b"}
    assert _ids(users, parse("age ge 30")) == {"a"}


def test_searchable_values_compare_by_json_type_too(store: Store) -> None:
    """The index holds a number's and a boolean's text too, yet a searchable property
    compares by type as any other: ``count eq "30"`` finds no number 30, ``word eq 30``
    no string "30", ``flag eq "true"`` no boolean, ``word eq true`` no string "true"."""
    users = ManagedResource(store, parse_managed({"objects": [{"name": "user", "schema": {"properties": {
        "userName": {"type": "string", "searchable": True}, "count": {"type": "number", "searchable": True},
        "flag": {"type": "boolean", "searchable": True}, "word": {"type": "string", "searchable": True},
    }}}]}).get("user"))
    results = users.write_batch([WriteOp("create", values=v) for v in (
        {"userName": "number", "count": 30, "flag": True}, {"userName": "text", "word": "30"},
        {"userName": "truth", "word": "true"})])
    assert all(r.ok for r in results), [r.error for r in results]
    assert _ids(users, parse("count eq 30")) == {"number"}
    for text in ('count eq "30"', 'count sw "3"', "word eq 30", "word eq true", 'flag eq "true"', "word gt 2"):
        assert _ids(users, parse(text)) == set(), text
    assert _ids(users, parse("flag eq true")) == {"number"}
    assert _ids(users, parse('word eq "true"')) == {"truth"}
    assert _ids(users, parse('word eq "30"')) == {"text"}
    assert _ids(users, parse('word gt "2"')) == {"text", "truth"}


def _typed_users(store: Store, kind: str) -> ManagedResource:
    """Managed users whose ``code`` (searchable) and ``other`` (not) are of type ``kind``:
    a store holding the objects of several kinds holds what was written before
    managed.json changed a property's type."""
    return ManagedResource(store, parse_managed({"objects": [{"name": "user", "schema": {"properties": {
        "userName": {"type": "string", "searchable": True}, "code": {"type": kind, "searchable": True},
        "other": {"type": kind},
    }}}]}).get("user"))


def test_searchable_numbers_compare_exactly(store: Store) -> None:
    """The index keeps a number as a double on every store (MariaDB's FLOAT kept neither
    0.1 nor 1234567890): ``eq``, ranges and a batched correlation find each its own."""
    users = _typed_users(store, "number")
    numbers = {"tenth": 0.1, "big": 1234567890, "next": 1234567891}
    for name, n in numbers.items():
        users.create({"userName": name, "code": n})
    for name, n in numbers.items():
        assert _ids(users, Compare(("code",), "eq", n)) == {name}, name
    assert _ids(users, Compare(("code",), "gt", 1234567890)) == {"next"}
    found = users.find_matching((("code",),), [(n,) for n in numbers.values()])
    assert {k[0]: [o["userName"] for o in v] for k, v in found.items()} == {n: [name] for name, n in numbers.items()}


def test_a_searchable_number_of_any_size_is_kept_and_found(store: Store) -> None:
    """A searchable number written out in more characters than the index keeps of a value
    (``1e300`` is 301 digits) is written on every store, where PostgreSQL and MariaDB refused
    the whole object with a database error, and is found by ``eq``, ranges and a batched
    correlation of its value."""
    users = _typed_users(store, "number")
    results = users.write_batch([WriteOp("create", values={"userName": name, "code": n})
                                 for name, n in (("huge", 1e300), ("less", 1e299), ("small", 3))])
    assert all(r.ok for r in results), [r.error for r in results]
    assert _ids(users, Compare(("code",), "eq", 1e300)) == {"huge"}
    assert _ids(users, Compare(("code",), "gt", 1e299)) == {"huge"}
    assert _ids(users, Compare(("code",), "lt", 1e300)) == {"less", "small"}
    found = users.find_matching((("code",),), [(1e300,), (1e299,)])
    assert {k[0]: [o["userName"] for o in v] for k, v in found.items()} == {1e300: ["huge"], 1e299: ["less"]}


def test_numbers_compare_as_doubles_searchable_or_not(store: Store) -> None:
    """A number is compared as a double whether its property is searchable or not, on every
    store: an integer with more digits than a double holds (12345678901234567, a double's
    12345678901234568) equals its double and ranges place it there; SQLite compared the
    document's integer exactly, so the plain property found it by none of them."""
    users = _typed_users(store, "number")
    users.create({"userName": "long", "code": 12345678901234567, "other": 12345678901234567})
    users.create({"userName": "short", "code": 5, "other": 5})
    for name in ("code", "other"):
        for number in (12345678901234567, 12345678901234568):
            assert _ids(users, Compare((name,), "eq", number)) == {"long"}, (name, number)
            assert _ids(users, Compare((name,), "ge", number)) == {"long"}, (name, number)
            assert _ids(users, Compare((name,), "lt", number)) == {"short"}, (name, number)


def test_rev_is_a_field_of_filters(users: ManagedResource) -> None:
    """``_rev`` compares with the object's revision, as ``_id`` with its id."""
    first = users.create({"userName": "a"})
    users.create({"userName": "b"})
    assert _ids(users, parse(f'_rev eq "{first["_rev"]}"')) == {"a", "b"}
    moved = users.update(first["_id"], {"sn": "x"})
    assert _ids(users, parse(f'_rev eq "{moved["_rev"]}"')) == {"a"}
    assert _ids(users, parse("_rev pr")) == {"a", "b"}
    assert _ids(users, parse("_rev eq 1")) == set()
