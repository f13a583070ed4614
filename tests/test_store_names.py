"""The names the store keeps beside ids and keys (mappings, jobs, liveSync sources, link
qualifiers, lock names, the store's own keys) compared exactly on every store: two
mappings, jobs or sources whose names differ only by case, or by trailing spaces, are
two in PingIDM, so their locks, runs, tokens, retries and totals are never shared.
MariaDB's default collation took each pair for one (migration 0022)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dbs import BACKENDS, old_store, store_url
from idsync.store.database import Store, utcnow
from idsync.store.links import LinkSet
from idsync.store.locks import Locks, process_owner
from idsync.store.runs import RunStore
from idsync.store.sync_failures import SyncFailures
from idsync.store.tokens import SyncTokens
from idsync.store.totals import fold, read_totals

# Pairs that are one name to MariaDB's default collation (case) or to a PAD SPACE one.
_PAIRS = [("m", "M"), ("m", "m ")]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s = Store.open(store_url(request.param, tmp_path))
    yield s
    s.close()


@pytest.mark.parametrize(("one", "other"), _PAIRS)
def test_locks_of_names_differing_by_case_are_two(store: Store, one: str, other: str) -> None:
    """The recon locks of two mappings, and the locks of two jobs, whose names differ only
    by case or a trailing space are taken at once, by two live holders, and each is released
    alone: on MariaDB the second was refused as ``already running``."""
    locks = Locks(store)
    for kind in ("recon:", "job:"):
        first, second = f"{process_owner()}:{kind}1", f"{process_owner()}:{kind}2"
        locks.acquire(kind + one, first)
        locks.acquire(kind + other, second)
        holders = locks.holders()
        assert (holders[kind + one].owner, holders[kind + other].owner) == (first, second)
        locks.release(kind + other, second)
        assert set(locks.holders()) == {kind + one}
        locks.release(kind + one, first)
    assert locks.holders() == {}


@pytest.mark.parametrize(("one", "other"), _PAIRS)
def test_runs_of_mappings_and_jobs_differing_by_case_are_apart(store: Store, one: str, other: str) -> None:
    """The runs of a mapping (or a job) are not listed as another's whose name differs only
    by case or a trailing space."""
    runs = RunStore(store)
    runs.start("r1", one, job=one, dry_run=False, summary={})
    runs.start("r2", other, job=other, dry_run=False, summary={})
    assert [r["id"] for r in runs.search(mapping=one)] == ["r1"]
    assert [r["id"] for r in runs.search(job=other)] == ["r2"]
    assert [r["id"] for r in runs.recent(mapping=other)] == ["r2"]


@pytest.mark.parametrize(("one", "other"), _PAIRS)
def test_livesync_sources_differing_by_case_keep_their_own_state(store: Store, one: str, other: str) -> None:
    """Two liveSync sources whose names differ only by case or a trailing space keep a token,
    run counts and retries of their own: on MariaDB the second's token overwrote the
    first's, and its failures were retried as the first's."""
    tokens, failures = SyncTokens(store), SyncFailures(store)
    with store.begin() as conn:
        tokens.save(conn, one, "t1", "m1")
        tokens.save(conn, other, "t2", "m2")
        failures.record(conn, one, {"x": "failed once"}, "t1")
        failures.record(conn, other, {"x": "failed too"}, "t2", deletes={"x"})
    tokens.record_run(other, "SUCCESS", None, changes=3, full_recon=False)
    assert sorted((s.source, s.token, s.runs, s.changes) for s in tokens.all()) == sorted(
        [(one, "t1", 0, 0), (other, "t2", 1, 3)])
    assert (failures.retrying(one), failures.retrying(other)) == ({"x": False}, {"x": True})
    assert failures.forget(other) == 1
    assert [f.source for f in failures.entries()] == [one]


@pytest.mark.parametrize(("one", "other"), _PAIRS)
def test_totals_of_mappings_differing_by_case_are_kept_apart(store: Store, one: str, other: str) -> None:
    """The pruned runs of two mappings whose names differ only by case or a trailing space
    are counted each under its own mapping: on MariaDB folding them failed on a duplicate
    key."""
    end = utcnow()
    with store.begin() as conn:
        fold(conn, [(one, "SUCCESS", {}, end - dt.timedelta(seconds=2), end),
                    (other, "FAILED", {}, end - dt.timedelta(seconds=1), end)])
    with store.connect() as conn:
        totals = read_totals(conn)
    assert (totals[(one, "runs", "SUCCESS")], totals[(other, "runs", "FAILED")]) == (1.0, 1.0)
    assert (one, "runs", "FAILED") not in totals and (other, "runs", "SUCCESS") not in totals


@pytest.mark.parametrize(("one", "other"), [("q", "Q"), ("q", "q ")])
def test_link_qualifiers_differing_by_case_are_two(store: Store, one: str, other: str) -> None:
    """A source linked under two link qualifiers whose names differ only by case or a trailing
    space has a link under each: on MariaDB the second was refused as a duplicate."""
    first, second = LinkSet(store, "m", qualifier=one), LinkSet(store, "m", qualifier=other)
    with store.begin() as conn:
        first.add(conn, [("s", "t1")])
        second.add(conn, [("s", "t2")])
    assert (first.targets_of(["s"]), second.targets_of(["s"])) == ({"s": "t1"}, {"s": "t2"})


@pytest.mark.parametrize("kind", BACKENDS)
def test_names_stay_apart_once_an_older_store_is_opened(kind: str, tmp_path: Path) -> None:
    """A store at schema 0021 holding a mapping's run, lock and totals and a source's token,
    opened (migration 0022): each is kept as it was, and the same kinds of rows of names that
    differ only by case or a trailing space are added beside them."""
    url = store_url(kind, tmp_path, empty=True)
    store = old_store(url, "0021")
    owner = f"{process_owner()}:1"
    end = utcnow()
    try:
        RunStore(store).start("r1", "m", job="j", dry_run=False, summary={})
        Locks(store).acquire("recon:m", owner)
        with store.begin() as conn:
            SyncTokens(store).save(conn, "s", "t1", None)
            fold(conn, [("m", "SUCCESS", {}, end, end)])
    finally:
        store.close()
    store = Store.open(url)
    try:
        runs, locks, tokens = RunStore(store), Locks(store), SyncTokens(store)
        runs.start("r2", "M", job="j ", dry_run=False, summary={})
        locks.acquire("recon:M", f"{process_owner()}:2")
        with store.begin() as conn:
            tokens.save(conn, "S", "t2", None)
            fold(conn, [("M", "SUCCESS", {}, end, end), ("m", "SUCCESS", {}, end, end)])
        assert [r["id"] for r in runs.search(mapping="m")] == ["r1"]
        assert [r["id"] for r in runs.search(job="j")] == ["r1"]
        assert locks.holders()["recon:m"].owner == owner
        assert (tokens.get("s").token, tokens.get("S").token) == ("t1", "t2")  # type: ignore[union-attr]
        with store.connect() as conn:
            totals = read_totals(conn)
        assert (totals[("m", "runs", "SUCCESS")], totals[("M", "runs", "SUCCESS")]) == (2.0, 1.0)
        locks.release("recon:m", owner)
        locks.release("recon:M", f"{process_owner()}:2")
    finally:
        store.close()
