"""Revisions of managed objects under writers at once, on SQLite, PostgreSQL and MariaDB:
a write holds the objects it read until it commits, so another writer's change is never
lost under it nor shares its revision; a write that read an old revision (a recon's)
fails alone; a create of a taken id says so; and ``ManagedObjects`` retries a change
without a revision from what the other writer left."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from dbs import BACKENDS, store_url
from idsync.config.managed import DEFAULT_MANAGED, ManagedType, parse_managed
from idsync.config.project import load_project
from idsync.errors import AlreadyExists, IdsyncError, RevisionMismatch
from idsync.managed import ManagedObjects
from idsync.resource import QuerySpec, WriteOp, WriteResult
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.objects import _CONFLICT_ATTEMPTS, ManagedResource
from projects import store_project
from waiting import wait_until_blocked

_USER = parse_managed(DEFAULT_MANAGED).get("user")
_ROLE = parse_managed(DEFAULT_MANAGED).get("role")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url)
    yield s
    s.close()


def _paused_after_reading(resource: ManagedResource) -> tuple[threading.Event, threading.Event]:
    """Make ``resource``'s next write stop once it has read (and locked) the objects it
    writes: (set when it has read, set to let it go on)."""
    read, go = threading.Event(), threading.Event()
    original = resource._current

    def reading(conn: Any, ids: list[str], *, lock: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
        found = original(conn, ids, lock=lock)
        if lock and not read.is_set():
            read.set()
            assert go.wait(30)
        return found

    resource._current = reading  # type: ignore[method-assign]
    return read, go


def _race(store: Store, first: WriteOp, second: WriteOp, *,
          types: tuple[ManagedType, ManagedType] = (_USER, _USER)) -> tuple[WriteResult, WriteResult]:
    """``first`` written by one writer; ``second`` by another while the first has read its
    object and not yet written it (each an object of its of ``types``)."""
    paused = ManagedResource(store, types[0])
    read, go = _paused_after_reading(paused)
    results: dict[str, WriteResult] = {}

    def write(name: str, resource: ManagedResource, op: WriteOp) -> Callable[[], None]:
        def run() -> None:
            try:
                results[name] = resource.write_batch([op])[0]
            except IdsyncError as exc:  # the whole batch failed (the store's error): its op's result
                results[name] = WriteResult(op, id=op.id, error=exc)
        return run

    one = threading.Thread(target=write("first", paused, first))
    one.start()
    assert read.wait(30)
    two = threading.Thread(target=write("second", ManagedResource(store, types[1]), second))
    two.start()
    wait_until_blocked(two, store.engine.url)  # a store that does not hold the object lets it through
    go.set()
    one.join(30)
    two.join(30)
    return results["first"], results["second"]


def test_a_write_holds_what_it_read_until_it_commits(store: Store) -> None:
    """Two writers changing one object at once, neither naming a revision: the second
    waits for the first and applies its change to what the first wrote; both changes are
    kept, each under a revision of its own."""
    users = ManagedResource(store, _USER)
    users.create({"_id": "u", "userName": "u"})
    first, second = _race(store, WriteOp("update", id="u", values={"sn": "First"}),
                          WriteOp("update", id="u", values={"givenName": "Second"}))
    assert first.ok and second.ok, (first.error, second.error)
    assert first.obj is not None and second.obj is not None
    assert (first.obj["_rev"], second.obj["_rev"]) == ("0000000000000002", "0000000000000003")
    stored = users.get("u")
    assert stored is not None
    assert (stored["_rev"], stored["sn"], stored["givenName"]) == ("0000000000000003", "First", "Second")


def test_a_write_from_an_old_revision_fails_alone(store: Store) -> None:
    """A recon's update carries the revision it compared; when the API wrote the object
    meanwhile, that update fails (``RevisionMismatch``: the object is retried by the next
    run) and the API's change stays, never overwritten unseen."""
    users = ManagedResource(store, _USER)
    rev = users.create({"_id": "u", "userName": "u"})["_rev"]
    first, second = _race(store, WriteOp("update", id="u", values={"sn": "Api"}),
                          WriteOp("update", id="u", values={"sn": "Recon"}, rev=rev))
    assert first.ok
    assert isinstance(second.error, RevisionMismatch)
    stored = users.get("u")
    assert stored is not None and (stored["_rev"], stored["sn"]) == ("0000000000000002", "Api")


def test_a_delete_from_an_old_revision_fails_alone(store: Store) -> None:
    """A delete at the revision it read, racing an update of the object: the delete
    waits, finds the object moved, and deletes nothing."""
    users = ManagedResource(store, _USER)
    rev = users.create({"_id": "u", "userName": "u"})["_rev"]
    first, second = _race(store, WriteOp("update", id="u", values={"sn": "Kept"}),
                          WriteOp("delete", id="u", rev=rev))
    assert first.ok and isinstance(second.error, RevisionMismatch)
    stored = users.get("u")
    assert stored is not None and stored["sn"] == "Kept"


def test_a_reference_dropped_beside_a_write_of_its_other_end_moves_it_once_more(store: Store) -> None:
    """A user dropping a role while that role is being written: the role's revision moves
    for the write, then again for the reference gone, never twice to one revision (which
    would name the role with and without its member)."""
    roles = ManagedResource(store, _ROLE)
    roles.create({"_id": "r", "name": "r"})
    ManagedResource(store, _USER).create({"_id": "u", "userName": "u", "roles": [{"_ref": "managed/role/r"}]})
    first, second = _race(store, WriteOp("update", id="r", values={"description": "written"}),
                          WriteOp("update", id="u", values={"roles": []}), types=(_ROLE, _USER))
    assert first.ok and second.ok, (first.error, second.error)
    assert first.obj is not None and first.obj["_rev"] == "0000000000000003"
    stored = roles.get("r")
    assert stored is not None
    assert (stored["_rev"], stored["description"], stored["members"]) == ("0000000000000004", "written", [])


def _references(store: Store, user: str, role: str) -> tuple[list[Any], list[Any]]:
    """(the user's ``roles``, the role's ``members``), each as its own end reads it."""
    users, roles = ManagedResource(store, _USER), ManagedResource(store, _ROLE)
    u, r = users.get(user, ["roles"]), roles.get(role, ["members"])
    assert u is not None and r is not None
    return u["roles"], r["members"]


def test_a_user_and_a_role_writing_their_reference_at_once_wait_in_turn(store: Store) -> None:
    """A user dropping a role while that role names the user among its members: the two
    writes lock the user and the role in one order (the user's write locks the role it
    lets go of with itself, before writing), so the role's write waits for the user's,
    never the two for each other in a circle (a deadlock, which PostgreSQL and MariaDB
    break by failing one). Both are applied, in turn: the user is a member again, and
    both ends say so."""
    ManagedResource(store, _ROLE).create({"_id": "r", "name": "r"})
    ManagedResource(store, _USER).create({"_id": "u", "userName": "u", "roles": [{"_ref": "managed/role/r"}]})
    with structlog.testing.capture_logs() as logs:
        first, second = _race(store, WriteOp("update", id="u", values={"roles": []}),
                              WriteOp("update", id="r", values={"members": [{"_ref": "managed/user/u"}]}),
                              types=(_USER, _ROLE))
    assert first.ok and second.ok, (first.error, second.error)
    assert [e for e in logs if e["event"] == "store.write_conflict"] == []  # waited in turn, never rolled back
    roles, members = _references(store, "u", "r")
    assert [ref["_ref"] for ref in roles] == ["managed/role/r"]
    assert [ref["_ref"] for ref in members] == ["managed/user/u"]
    assert roles[0]["_refProperties"]["_id"] == members[0]["_refProperties"]["_id"]


def test_writes_that_meet_in_a_deadlock_are_run_again(store: Store) -> None:
    """A user written so that a conditional role now grants it (the grant is found, and
    its role locked, only once the user is written) while that role's write adds the user
    as a member (the role locked first, then the user): on PostgreSQL and MariaDB the two
    wait for each other and the database fails one to break the deadlock. That one wrote
    nothing and is run again: both writes are applied, and the user holds the role once,
    seen alike from both ends."""
    ManagedResource(store, _ROLE).create({"_id": "eng", "name": "eng", "condition": 'sn eq "Eng"'})
    ManagedResource(store, _USER).create({"_id": "u", "userName": "u"})
    with structlog.testing.capture_logs() as logs:
        first, second = _race(store, WriteOp("update", id="u", values={"sn": "Eng"}),
                              WriteOp("update", id="eng", values={"members": [{"_ref": "managed/user/u"}]}),
                              types=(_USER, _ROLE))
    assert first.ok and second.ok, (first.error, second.error)
    # SQLite has one writer at a time: the role's write waited for the whole of the user's.
    # Elsewhere the one run again may meet the other once more (it locks the role again before
    # the other, woken, took it), and is run again once more.
    conflicts = [e for e in logs if e["event"] == "store.write_conflict"]
    assert (not conflicts) if store.dialect == "sqlite" else (1 <= len(conflicts) < _CONFLICT_ATTEMPTS), conflicts
    roles, members = _references(store, "u", "eng")
    assert [ref["_ref"] for ref in roles] == ["managed/role/eng"]
    assert [ref["_ref"] for ref in members] == ["managed/user/u"]
    assert roles[0]["_refProperties"]["_id"] == members[0]["_refProperties"]["_id"]
    stored = ManagedResource(store, _USER).get("u")
    assert stored is not None and stored["sn"] == "Eng"


def test_an_object_read_while_its_references_change_is_read_as_one_revision(store: Store) -> None:
    """A user read while a role drops it between the read of its document and of its
    references: the user is answered as its revision stands (the newer one, without the
    role), never its old revision with its new references, from which a change built
    (a patch of ``roles/0``) would apply to a list that revision never held."""
    ManagedResource(store, _ROLE).create({"_id": "r", "name": "r"})
    users = ManagedResource(store, _USER)
    users.create({"_id": "u", "userName": "u", "roles": [{"_ref": "managed/role/r"}]})
    dropped = _dropping_role_members_once(store, users)  # once the user's document is read
    read = users.get("u", ["roles"])
    assert dropped and dropped[0].ok
    assert read is not None and (read["_rev"], read["roles"]) == ("0000000000000003", [])
    assert read == ManagedResource(store, _USER).get("u", ["roles"])


def test_a_page_read_while_references_change_is_read_as_one_revision(store: Store) -> None:
    """A query's page (``pages``: a managed source's recon, scripts' queries) read while a
    role drops a user between the statement reading the documents and the one reading
    their references: the page is read again, so the user shows the revision without the
    role, never its old revision with the references of the new one."""
    ManagedResource(store, _ROLE).create({"_id": "r", "name": "r"})
    users = ManagedResource(store, _USER)
    for name in ("u", "v"):
        users.create({"_id": name, "userName": name, "roles": [{"_ref": "managed/role/r"}]})
    dropped = _dropping_role_members_once(store, users)
    (page,) = list(users.pages(QuerySpec(fields=["roles"])))
    assert dropped and dropped[0].ok
    assert [(o["_id"], o["_rev"], o["roles"]) for o in page] == [("u", "0000000000000003", []),
                                                                ("v", "0000000000000003", [])]


def _dropping_role_members_once(store: Store, users: ManagedResource) -> list[WriteResult]:
    """Make role ``r`` drop all its members once, as soon as ``users`` has read documents
    and is about to read their references; the write's results."""
    edges = users._edges
    assert edges is not None
    original = edges.attach
    dropped: list[WriteResult] = []

    def attach(objects: Any, fields: Any) -> None:
        if not dropped:
            dropped.extend(ManagedResource(store, _ROLE).write_batch([WriteOp("update", id="r",
                                                                              values={"members": []})]))
        original(objects, fields)

    edges.attach = attach  # type: ignore[method-assign]
    return dropped


def test_a_create_of_a_taken_id_says_it_exists(store: Store) -> None:
    """Creating an id another object holds (another writer's create came first) fails
    with ``AlreadyExists``, named by the object, never the database's text."""
    users = ManagedResource(store, _USER)
    users.create({"_id": "taken", "userName": "one"})
    with pytest.raises(AlreadyExists) as caught:
        users.create({"_id": "taken", "userName": "two"})
    assert str(caught.value) == "managed/user/taken already exists"


def _objects(tmp_path: Path, url: str) -> tuple[Store, Callable[[], ManagedObjects]]:
    project = load_project(store_project(tmp_path / "p", url))
    store = Store.open(project.settings.store_url())
    return store, lambda: ManagedObjects(project, store, Resources(project, store), "user")


def _written_meanwhile(objects: ManagedObjects, other: Callable[[], object]) -> None:
    """Make ``objects``' next read of an object be followed by ``other``, another writer's
    change, before ``objects`` writes."""
    original = objects._current
    done: list[bool] = []

    def reading(object_id: str) -> dict[str, Any]:
        found = original(object_id)
        if not done:
            done.append(True)
            other()
        return found

    objects._current = reading  # type: ignore[method-assign]


def test_a_patch_without_revision_applies_to_what_another_writer_left(tmp_path: Path, url: str) -> None:
    """An increment whose object another writer incremented between its read and its
    write is read and applied again: both count. With ``If-Match`` the same race is a
    ``RevisionMismatch`` and the other writer's change stays."""
    store, objects = _objects(tmp_path, url)
    try:
        objects().create({"userName": "cnt", "n": 0}, object_id="cnt")
        increment = [{"operation": "increment", "field": "/n", "value": 1}]
        mine = objects()
        _written_meanwhile(mine, lambda: objects().patch("cnt", increment))
        change = mine.patch("cnt", increment)
        assert change.object is not None and (change.object["n"], change.object["_rev"]) == (2, "0000000000000003")

        mine = objects()
        _written_meanwhile(mine, lambda: objects().patch("cnt", increment))
        with pytest.raises(RevisionMismatch):
            mine.patch("cnt", increment, rev="0000000000000003")
        assert objects().get("cnt")["n"] == 3
    finally:
        store.close()
