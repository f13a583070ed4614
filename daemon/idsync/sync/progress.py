"""How far a recon is: its counts against the expected totals (what the source says, or
else the mapping's last complete recon), rate, elapsed time and ETA, and the periodic
``recon.progress`` log event that the daemon, ``run-job`` and a recon off a terminal emit.

The event carries the run's ``run_id``, ``mapping`` and (under a job) ``job`` from the
log context the run binds."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from idsync.config.jobs import NOT_RECON_JOBS
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync.sync.summary import Counters

__all__ = ["ProgressLog", "Snapshot", "expected_counts", "snapshot"]

log = structlog.get_logger("idsync.progress")


def expected_counts(store: Store, mapping: str) -> dict[str, int]:
    """Objects per phase (``source``, ``target``) of the mapping's last complete recon: the
    best estimate of this run's totals when the source does not say."""
    for run in RunStore(store).recent(limit=20, mapping=mapping):
        summary = run.get("summary") or {}
        if run.get("state") != "SUCCESS" or run.get("dry_run") or run.get("job") in NOT_RECON_JOBS:
            continue
        progress = summary.get("progress") or {}
        return {phase: int(((progress.get(phase) or {}).get("existing") or {}).get("processed") or 0)
                for phase in ("source", "target")}
    return {}


@dataclass(frozen=True)
class Snapshot:
    phase: str
    done: int
    total: int | None
    estimated: bool  # ``total`` is the last run's count, not the source's
    rate: float
    elapsed: float
    eta: float | None


def snapshot(c: Counters, expected: dict[str, int], started: float) -> Snapshot:
    phase = {"ACTIVE_RECONCILING_TARGET": "target", "ACTIVE_DELETING": "deleting"}.get(c.stage, "source")
    done = c.source_processed if phase == "source" else c.target_processed
    total = c.source_total if phase == "source" else c.target_total
    estimated = total is None and expected.get(phase, 0) > 0
    if estimated:
        total = expected[phase]
    rate = c.rate
    eta = (total - done) / rate if total and rate > 0 and done < total else None
    return Snapshot(phase, done, total, estimated, rate, time.monotonic() - started, eta)


class ProgressLog:
    """``update`` for ``ReconOptions.on_progress``: a ``recon.progress`` event at most every
    ``interval`` seconds."""

    def __init__(self, interval: float, expected: dict[str, int] | None = None) -> None:
        self.interval = interval
        self.expected = expected or {}
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, c: Counters) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        s = snapshot(c, self.expected, self.started)
        log.info("recon.progress", mapping=c.mapping, phase=s.phase, processed=s.done, total=s.total,
                 total_estimated=s.estimated, rate=round(s.rate), elapsed_s=round(s.elapsed, 1),
                 eta_s=None if s.eta is None else round(s.eta, 1), changes=dict(c.changes), errors=c.error_count)
