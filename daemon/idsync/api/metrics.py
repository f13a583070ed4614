"""``/metrics``: Prometheus metrics, computed from the store at each scrape.

The store is the record of every run (this process's, ``idsync recon``'s and
other daemons' on the same database), so the figures come from it rather than
from in-process counters that a restart would reset:

* ``idsync_recon_runs{mapping,state}``: runs recorded;
* ``idsync_recon_situations_total{mapping,situation}`` and
  ``idsync_recon_actions_total{mapping,action}``: objects over all finished runs;
* ``idsync_recon_duration_seconds{mapping}`` (``_count``, ``_sum``): every
  finished run, and ``idsync_recon_last_duration_seconds{mapping}`` the latest;
* ``idsync_job_last_success_timestamp_seconds{job}``: when each job last ended
  a run in SUCCESS;
* ``idsync_http_requests_total{method,code}``: this process's API requests.

Every implicit sync is a run too, so the store may hold millions of them: the
per-run sums are kept here and each scrape reads only the runs that ended since
the previous one (less a margin, for other processes' clocks and late commits),
never the whole history again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from idsync.store.database import Store
from idsync.store.tables import recon_runs

__all__ = ["Metrics"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MARGIN = dt.timedelta(minutes=10)


class _Finished:
    """Sums over the finished runs, brought up to date from the store incrementally."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latest: dict[str, float] = {}
        self.durations: dict[str, tuple[int, float]] = {}
        self._counted: dict[str, Any] = {}  # run id -> ended, for the runs inside the margin
        self._since: Any = None
        self.lock = threading.Lock()

    def update(self, conn: Connection) -> None:
        query = select(recon_runs.c.id, recon_runs.c.mapping, recon_runs.c.summary, recon_runs.c.started,
                       recon_runs.c.ended).where(recon_runs.c.ended.is_not(None))
        if self._since is not None:
            query = query.where(recon_runs.c.ended >= self._since)
        newest = None
        for run_id, mapping, summary, started, ended in conn.execute(query.order_by(recon_runs.c.ended)):
            newest = ended
            if run_id in self._counted:
                continue
            self._counted[run_id] = ended
            for kind in ("situationSummary", "actionSummary"):
                for name, value in ((summary or {}).get(kind) or {}).items():
                    self.sums[(mapping, kind)][name] += int(value or 0)
            seconds = (ended - started).total_seconds()
            self.latest[mapping] = seconds
            count, total = self.durations.get(mapping, (0, 0.0))
            self.durations[mapping] = (count + 1, total + seconds)
        if newest is not None:
            self._since = newest - _MARGIN
            self._counted = {i: e for i, e in self._counted.items() if e >= self._since}


class _StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.finished = _Finished()

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("idsync_recon_runs", "Recon runs recorded, by mapping and state",
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
            for (mapping, kind), values in sorted(finished.sums.items()):
                family = situations if kind == "situationSummary" else actions
                for name, value in sorted(values.items()):
                    family.add_metric([mapping, name], value)
            for mapping, seconds in sorted(finished.latest.items()):
                durations.add_metric([mapping], seconds)
                count, total = finished.durations[mapping]
                all_durations.add_metric([mapping], count_value=count, sum_value=total)
        yield from (runs, situations, actions, durations, all_durations, success)


def _epoch(value: dt.datetime) -> float:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return aware.timestamp()


class Metrics:
    """The registry of one API instance and its ``/metrics`` endpoint."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(store))
        self.requests = Counter("idsync_http_requests", "API requests answered", ["method", "code"],
                                registry=self.registry)

    async def endpoint(self, _request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=_CONTENT_TYPE)
