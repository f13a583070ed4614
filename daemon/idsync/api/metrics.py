"""``/metrics``: Prometheus metrics, computed from the store at each scrape.

The store is the record of every run (this process's, ``idsync recon``'s and
other daemons' on the same database), so the figures come from it rather than
from in-process counters that a restart would reset:

* ``idsync_recon_runs{mapping,state}``: runs recorded (a gauge: pruning lowers it);
* ``idsync_recon_runs_finished_total{mapping,state}``, ``idsync_recon_situations_total{mapping,situation}``
  and ``idsync_recon_actions_total{mapping,action}``: runs and objects over all finished runs,
  pruned ones included (``store/totals.py``), so these counters never go down;
* ``idsync_recon_duration_seconds{mapping}`` (``_count``, ``_sum``): every
  finished run, and ``idsync_recon_last_duration_seconds{mapping}`` the latest;
* ``idsync_job_last_success_timestamp_seconds{job}``: when each job last ended
  a run in SUCCESS;
* ``idsync_http_requests_total{method,code}`` and ``idsync_http_request_duration_seconds{method}``:
  this process's API requests;
* ``idsync_api_system_queries_held`` and ``idsync_api_system_queries_closed_total{reason}``: the
  paged queries of systems this process holds between pages (``walks.py``), and those closed;
* ``idsync_job_last_failure_timestamp_seconds{job}``, ``idsync_sync_pending_pushes{mapping}``;
  inside ``idsync run`` also ``idsync_job_running{job}``, ``idsync_job_enabled{job}``,
  ``idsync_job_next_fire_timestamp_seconds{job}``, ``idsync_config_errors`` and, once reloaded,
  ``idsync_config_last_reload_successful`` and ``idsync_config_last_reload_timestamp_seconds``;
* ``idsync_build_info{version,python}``, ``process_*`` and ``python_*``: this process.

Every implicit sync is a run too, so the store may hold millions of them: the
per-run sums are kept here and each scrape reads only the runs that ended since
the previous one (less a margin, for other processes' clocks and late commits),
never the whole history again.
"""

from __future__ import annotations

import datetime as dt
import platform
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from idsync import __version__
from idsync.api.context import JobControl
from idsync.api.walks import Walks
from idsync.store.database import Store
from idsync.store.sync_failures import SyncFailures
from idsync.store.tables import cluster_nodes, recon_runs
from idsync.store.tokens import SyncTokens
from idsync.store.totals import Key, contributions, read_totals
from idsync.sync.retry import pending_counts

__all__ = ["Metrics"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MARGIN = dt.timedelta(minutes=10)


class _Finished:
    """Sums over the finished runs (``store/totals.py``): the totals pruned runs left behind,
    plus the runs still held, brought up to date from the store incrementally."""

    def __init__(self) -> None:
        self.sums: dict[Key, float] = defaultdict(float)
        self.latest: dict[str, float] = {}
        self._totals: dict[Key, float] | None = None
        self._counted: dict[str, Any] = {}  # run id -> ended, for the runs inside the margin
        self._since: Any = None
        self.lock = threading.Lock()

    def update(self, conn: Connection) -> None:
        totals = read_totals(conn)
        if totals != self._totals:
            # A prune moved runs from the table into the totals (one transaction): count again
            # from the new totals and the runs that are left, so nothing is counted twice.
            self.sums = defaultdict(float, totals)
            self._totals = totals
            self._counted, self._since = {}, None
        query = select(recon_runs.c.id, recon_runs.c.mapping, recon_runs.c.state, recon_runs.c.summary,
                       recon_runs.c.started, recon_runs.c.ended).where(recon_runs.c.ended.is_not(None))
        if self._since is not None:
            query = query.where(recon_runs.c.ended >= self._since)
        newest = None
        for run_id, mapping, state, summary, started, ended in conn.execute(query.order_by(recon_runs.c.ended)):
            newest = ended
            if run_id in self._counted:
                continue
            self._counted[run_id] = ended
            for key, value in contributions(mapping, state, summary, started, ended):
                self.sums[key] += value
            self.latest[mapping] = (ended - started).total_seconds()
        if newest is not None:
            self._since = newest - _MARGIN
            self._counted = {i: e for i, e in self._counted.items() if e >= self._since}


class _StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.finished = _Finished()

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("idsync_recon_runs", "Recon runs held (not pruned), by mapping and state",
                                 labels=["mapping", "state"])
        finished_runs = CounterMetricFamily("idsync_recon_runs_finished", "Recon runs finished, by mapping and state",
                                            labels=["mapping", "state"])
        situations = CounterMetricFamily("idsync_recon_situations", "Objects by situation over all runs",
                                         labels=["mapping", "situation"])
        actions = CounterMetricFamily("idsync_recon_actions", "Objects by action over all runs",
                                      labels=["mapping", "action"])
        durations = GaugeMetricFamily("idsync_recon_last_duration_seconds", "Duration of the latest finished run",
                                      labels=["mapping"])
        all_durations = SummaryMetricFamily("idsync_recon_duration_seconds", "Durations of the finished runs",
                                            labels=["mapping"])
        success = GaugeMetricFamily("idsync_job_last_success_timestamp_seconds",
                                    "When each job last ended a run in SUCCESS", labels=["job"])
        finished = self.finished
        with self.store.engine.connect() as conn, finished.lock:
            for mapping, state, count in conn.execute(
                    select(recon_runs.c.mapping, recon_runs.c.state, func.count()).group_by(
                        recon_runs.c.mapping, recon_runs.c.state)):
                runs.add_metric([mapping, state], count)
            for job, ended in conn.execute(
                    select(recon_runs.c.job, func.max(recon_runs.c.ended)).where(
                        recon_runs.c.state == "SUCCESS", recon_runs.c.job.is_not(None)).group_by(recon_runs.c.job)):
                if ended is not None:
                    success.add_metric([job], _epoch(ended))
            finished.update(conn)
            families = {"runs": finished_runs, "situationSummary": situations, "actionSummary": actions}
            timings: dict[str, dict[str, float]] = defaultdict(dict)
            for (mapping, metric, name), value in sorted(finished.sums.items()):
                if metric == "duration":
                    timings[mapping][name] = value
                elif metric in families:
                    families[metric].add_metric([mapping, name], value)
            for mapping, seconds in sorted(finished.latest.items()):
                durations.add_metric([mapping], seconds)
            for mapping, timing in sorted(timings.items()):
                all_durations.add_metric([mapping], count_value=int(timing.get("count", 0.0)),
                                         sum_value=timing.get("sum", 0.0))
        yield from (runs, finished_runs, situations, actions, durations, all_durations, success)


class _DaemonCollector(Collector):
    """The scheduler's state (inside ``idsync run``), the jobs' failures and the pushes
    waiting for ``idsync sync retry``."""

    def __init__(self, store: Store, jobs: JobControl | None) -> None:
        self.store = store
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        failure = GaugeMetricFamily("idsync_job_last_failure_timestamp_seconds",
                                    "When each job last ended a run in FAILED", labels=["job"])
        pending = GaugeMetricFamily("idsync_sync_pending_pushes", "Objects waiting for idsync sync retry",
                                    labels=["mapping"])
        with self.store.engine.connect() as conn:
            for job, ended in conn.execute(
                    select(recon_runs.c.job, func.max(recon_runs.c.ended)).where(
                        recon_runs.c.state == "FAILED", recon_runs.c.job.is_not(None)).group_by(recon_runs.c.job)):
                if ended is not None:
                    failure.add_metric([job], _epoch(ended))
        for mapping, count in sorted(pending_counts(self.store).items()):
            pending.add_metric([mapping], count)
        yield from (failure, pending)
        yield from _livesync_metrics(self.store)
        yield from _cluster_metrics(self.store)
        if self.jobs is None:
            return
        running = GaugeMetricFamily("idsync_job_running", "1 while the job runs", labels=["job"])
        next_fire = GaugeMetricFamily("idsync_job_next_fire_timestamp_seconds", "The job's next scheduled fire",
                                      labels=["job"])
        enabled = GaugeMetricFamily("idsync_job_enabled", "1 when the job is scheduled", labels=["job"])
        for job in self.jobs.job_list():
            running.add_metric([job["_id"]], 1 if job["running"] else 0)
            enabled.add_metric([job["_id"]], 1 if job["enabled"] else 0)
            if job.get("nextRunDate"):
                next_fire.add_metric([job["_id"]], _epoch(dt.datetime.fromisoformat(job["nextRunDate"])))
        state = self.jobs.config_state()
        errors = GaugeMetricFamily("idsync_config_errors",
                                   "Configuration problems since the last (re)load; their files' previous version "
                                   "is in force")
        errors.add_metric([], state["errors"])
        yield from (running, next_fire, enabled, errors)
        if state["lastReload"] is not None:
            ok = GaugeMetricFamily("idsync_config_last_reload_successful", "1 when the last reload had no error")
            ok.add_metric([], 1 if state["lastReloadOk"] else 0)
            at = GaugeMetricFamily("idsync_config_last_reload_timestamp_seconds", "When the last reload happened")
            at.add_metric([], _epoch(state["lastReload"]))
            yield from (ok, at)


def _livesync_metrics(store: Store) -> Iterator[Metric]:
    """Per liveSync source: its runs, failures, changes and full recons (counts kept in
    ``sync_tokens``, never pruned), and when it last ran."""
    families = {
        "runs": CounterMetricFamily("idsync_livesync_runs", "liveSync runs, by source", labels=["source"]),
        "failed": CounterMetricFamily("idsync_livesync_failed_runs", "liveSync runs that ended FAILED, by source",
                                      labels=["source"]),
        "changes": CounterMetricFamily("idsync_livesync_changes", "Changes liveSync read, by source",
                                       labels=["source"]),
        "full_recons": CounterMetricFamily("idsync_livesync_full_recons",
                                           "liveSync runs that reconciled in full (no token, or one the source "
                                           "no longer honoured), by source", labels=["source"]),
    }
    last = GaugeMetricFamily("idsync_livesync_last_run_timestamp_seconds", "When the source's last liveSync ended",
                             labels=["source"])
    for state in SyncTokens(store).all():
        for key, family in families.items():
            family.add_metric([state.source], getattr(state, key))
        if state.last_run is not None:
            last.add_metric([state.source], _epoch(state.last_run))
    held = GaugeMetricFamily("idsync_livesync_failed_objects", "Objects whose change liveSync could not apply: "
                             "RETRYING (read again by the next runs) or DEAD (dead letters), by source",
                             labels=["source", "state"])
    for source, states in SyncFailures(store).counts().items():
        for state_name, count in states.items():
            held.add_metric([source, state_name], count)
    yield from (*families.values(), last, held)


def _cluster_metrics(store: Store) -> Iterator[Metric]:
    """Each cluster node's last heartbeat (none outside cluster mode): a node is dead once
    ``time() - this`` passes ``[cluster] stall_timeout``."""
    seen = GaugeMetricFamily("idsync_cluster_node_last_seen_timestamp_seconds",
                             "When each cluster node last wrote its heartbeat", labels=["node"])
    with store.engine.connect() as conn:
        for name, at in conn.execute(select(cluster_nodes.c.name, cluster_nodes.c.seen)):
            seen.add_metric([name], _epoch(at))
    yield seen


class _WalksCollector(Collector):
    """The paged queries of systems held between pages by this process, and those closed by why."""

    def __init__(self, walks: Walks) -> None:
        self.walks = walks

    def collect(self) -> Iterator[Metric]:
        count, closed = self.walks.counts()
        held = GaugeMetricFamily("idsync_api_system_queries_held", "Paged queries of systems held between pages, "
                                 "each with a connection to its system")
        held.add_metric([], count)
        ended = CounterMetricFamily("idsync_api_system_queries_closed", "Paged queries of systems held between "
                                    "pages and closed since the start, by reason", labels=["reason"])
        for reason, number in closed.items():
            ended.add_metric([reason], number)
        yield from (held, ended)


def _epoch(value: dt.datetime) -> float:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return aware.timestamp()


class Metrics:
    """The registry of one API instance and its ``/metrics`` endpoint: the store's figures,
    this process's (``process_*``, ``python_*``), the build, the API's own requests and its
    paged queries of systems (``walks``)."""

    def __init__(self, store: Store, jobs: JobControl | None = None, walks: Walks | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(store))
        self.registry.register(_DaemonCollector(store, jobs))
        if walks is not None:
            self.registry.register(_WalksCollector(walks))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("idsync_build", "The running idsync", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()})
        self.requests = Counter("idsync_http_requests", "API requests answered", ["method", "code"],
                                registry=self.registry)
        self.latency = Histogram("idsync_http_request_duration_seconds", "Time to answer an API request",
                                 ["method"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    async def endpoint(self, _request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=_CONTENT_TYPE)
