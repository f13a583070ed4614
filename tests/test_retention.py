"""Pruning old run records: what goes, and what stays because idsync still reads it
(the anchor recon of each mapping, the pushes since it, running runs)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbs import BACKENDS, store_url
from idsync.errors import NotFound
from idsync.store.database import Store
from idsync.store.retention import RunKept, delete_run, prune
from idsync.store.tables import audit, claims, deferred, recon_partitions, recon_runs
from idsync.sync.retry import failed_pushes
from sqlalchemy import func, insert, select

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
CUTOFF = NOW - dt.timedelta(days=90)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(store_url(request.param, tmp_path))
    yield s
    s.close()


def _run(store: Store, run_id: str, mapping: str, days_ago: int, *, job: str | None = None,
         state: str = "SUCCESS", entries: tuple[tuple[str, str], ...] = ()) -> None:
    """A finished run ``days_ago`` with audit entries (source id, status)."""
    started = NOW - dt.timedelta(days=days_ago)
    with store.begin() as conn:
        conn.execute(insert(recon_runs).values(
            id=run_id, mapping=mapping, job=job, state=state, stage=f"COMPLETED_{state}", dry_run=False,
            started=started, ended=None if state == "ACTIVE" else started + dt.timedelta(minutes=1), summary={}))
        for source_id, status in entries:
            conn.execute(insert(audit).values(run_id=run_id, ts=started, mapping=mapping, source_id=source_id,
                                              status=status, action="UPDATE"))


def _ids(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(recon_runs.c.id)).scalars())


def _audit_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit)).scalar_one())


def test_old_runs_go_with_their_audit_and_each_mappings_anchor_stays(store: Store) -> None:
    """Runs ended before the cutoff are deleted with their audit entries (and their claims,
    deferred deletes and partitions), except the newest complete recon of each mapping;
    recent and ACTIVE runs are untouched."""
    _run(store, "a-old", "a", 200, entries=(("u1", "SUCCESS"),))
    _run(store, "a-anchor", "a", 150, entries=(("u1", "SUCCESS"),))
    _run(store, "a-failed", "a", 120, state="FAILED")
    _run(store, "b-anchor", "b", 300)
    _run(store, "b-recent", "b", 10, state="FAILED", entries=(("u2", "FAILURE"),))
    _run(store, "c-active", "c", 400, state="ACTIVE")

    with store.begin() as conn:  # what a split run leaves besides its record and audit
        for run_id in ("a-old", "a-anchor"):
            conn.execute(insert(claims).values(run_id=run_id, target_id="t1"))
            conn.execute(insert(deferred).values(run_id=run_id, seq=1, op={}))
            conn.execute(insert(recon_partitions).values(run_id=run_id, part=0, state="SUCCESS"))

    pruned = prune(store, CUTOFF)

    assert (pruned.runs, pruned.audit) == (2, 1)
    assert _ids(store) == {"a-anchor", "b-anchor", "b-recent", "c-active"}
    assert _audit_count(store) == 2
    with store.engine.connect() as conn:
        for table in (claims, deferred, recon_partitions):
            assert set(conn.execute(select(table.c.run_id)).scalars()) == {"a-anchor"}, table.name


def test_pushes_since_the_last_recon_are_kept_however_old(store: Store) -> None:
    """An object whose push failed long ago and was never repaired is still pending
    after pruning, and one repaired by a later push is still repaired; pushes
    older than the mapping's last complete recon go."""
    _run(store, "push-before", "m", 300, job="implicit", state="FAILED", entries=(("gone", "FAILURE"),))
    _run(store, "recon", "m", 250)
    _run(store, "push-fail", "m", 200, job="implicit", state="FAILED", entries=(("u1", "FAILURE"),))
    _run(store, "push-fail-2", "m", 190, job="implicit", state="FAILED", entries=(("u2", "FAILURE"),))
    _run(store, "push-fixed", "m", 180, job="retry", entries=(("u2", "SUCCESS"),))
    _run(store, "only-pushes", "n", 365, job="implicit", state="FAILED", entries=(("u3", "FAILURE"),))
    before = {m: failed_pushes(store, m) for m in ("m", "n")}

    prune(store, CUTOFF)

    assert _ids(store) == {"recon", "push-fail", "push-fail-2", "push-fixed", "only-pushes"}
    assert {m: failed_pushes(store, m) for m in ("m", "n")} == before == {"m": ["u1"], "n": ["u3"]}


def test_delete_run_takes_one_run_now_under_prunes_rule(store: Store) -> None:
    """``delete_run`` deletes one finished run with its audit whatever its age, and answers
    its record; it refuses (``RunKept``) what prune keeps: a running run, the mapping's
    newest complete recon and the pushes since it, so no failed push is forgotten or
    brought back; an unknown id is ``NotFound``."""
    _run(store, "old", "m", 300, entries=(("u0", "SUCCESS"),))
    _run(store, "push-before", "m", 260, job="implicit", state="FAILED", entries=(("u9", "FAILURE"),))
    _run(store, "recon", "m", 250)
    _run(store, "push-fail", "m", 5, job="implicit", state="FAILED", entries=(("u1", "FAILURE"),))
    _run(store, "failed-recon", "m", 4, state="FAILED", entries=(("u2", "FAILURE"),))
    _run(store, "running", "m", 1, state="ACTIVE")
    before = failed_pushes(store, "m")

    assert delete_run(store, "old")["id"] == "old"
    assert delete_run(store, "failed-recon")["state"] == "FAILED"
    assert delete_run(store, "push-before")["job"] == "implicit"
    for kept, why in (("recon", "last complete reconciliation"), ("push-fail", "retry"), ("running", "cancel it")):
        with pytest.raises(RunKept, match=why):
            delete_run(store, kept)
    with pytest.raises(NotFound):
        delete_run(store, "old")

    assert _ids(store) == {"recon", "push-fail", "running"}
    assert _audit_count(store) == 1
    assert failed_pushes(store, "m") == before == ["u1"]


def test_dry_run_counts_and_deletes_nothing(store: Store) -> None:
    """``dry_run`` answers the same counts as a real prune and leaves every row."""
    _run(store, "x1", "x", 200, entries=(("u1", "SUCCESS"), ("u2", "SUCCESS")))
    _run(store, "x2", "x", 100)

    counted = prune(store, CUTOFF, dry_run=True)

    assert (counted.runs, counted.audit) == (1, 2)
    assert _ids(store) == {"x1", "x2"} and _audit_count(store) == 2
    assert prune(store, CUTOFF) == counted


def test_push_jobs_are_the_single_object_runs() -> None:
    """What retention keeps as pushes is exactly what implicit sync, retry and the
    API's reconById record."""
    from idsync.config.jobs import PUSH_JOBS
    from idsync.sync.implicit import IMPLICIT_JOB, RECON_BY_ID_JOB, RETRY_JOB

    assert set(PUSH_JOBS) == {IMPLICIT_JOB, RETRY_JOB, RECON_BY_ID_JOB}


def test_prune_command(tmp_path: Path) -> None:
    """``idsync prune`` uses ``keep_runs_days`` unless ``--days`` says otherwise,
    and says what it deleted (or would)."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "idsync.toml").write_text("[store]\nkeep_runs_days = 30\n")
    store = Store.open(f"sqlite:///{tmp_path / 'state' / 'idsync.db'}")
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    with store.begin() as conn:
        for run_id in ("r1", "r2"):  # r2 is the anchor of its mapping and stays
            conn.execute(insert(recon_runs).values(id=run_id, mapping="m", job=None, state="SUCCESS",
                                                   stage="COMPLETED_SUCCESS", dry_run=False, summary={},
                                                   started=ended if run_id == "r1" else ended
                                                   + dt.timedelta(hours=1), ended=ended + dt.timedelta(hours=1)))
    store.close()
    idsync = [str(Path(sys.executable).parent / "idsync"), "-p", str(tmp_path), "prune"]

    dry = subprocess.run([*idsync, "--dry-run"], capture_output=True, text=True, check=True)
    assert dry.stdout.strip() == "would delete 1 runs and 0 audit entries that ended more than 30 days ago"
    kept = subprocess.run([*idsync, "--days", "90"], capture_output=True, text=True, check=True)
    assert kept.stdout.startswith("deleted 0 runs")
    done = subprocess.run(idsync, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("deleted 1 runs")
