"""``/metrics``: Prometheus metrics, computed from the store at each scrape.

The store is the record of every run (this process's, ``idsync recon``'s and
other daemons' on the same database), so the figures come from it rather than
from in-process counters that a restart would reset:

* ``idsync_recon_runs{mapping,state}``: runs recorded;
* ``idsync_recon_situations_total{mapping,situation}`` and
  ``idsync_recon_actions_total{mapping,action}``: objects over all runs;
* ``idsync_recon_last_duration_seconds{mapping}``: the latest finished run;
* ``idsync_job_last_success_timestamp_seconds{job}``: when each job last ended
  a run in SUCCESS;
* ``idsync_http_requests_total{method,code}``: this process's API requests.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from idsync.store.database import Store
from idsync.store.tables import recon_runs

__all__ = ["Metrics"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("idsync_recon_runs", "Recon runs recorded, by mapping and state",
                                 labels=["mapping", "state"])
        situations = CounterMetricFamily("idsync_recon_situations", "Objects by situation over all runs",
                                         labels=["mapping", "situation"])
        actions = CounterMetricFamily("idsync_recon_actions", "Objects by action over all runs",
                                      labels=["mapping", "action"])
        durations = GaugeMetricFamily("idsync_recon_last_duration_seconds", "Duration of the latest finished run",
                                      labels=["mapping"])
        success = GaugeMetricFamily("idsync_job_last_success_timestamp_seconds",
                                    "When each job last ended a run in SUCCESS", labels=["job"])
        sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        latest: dict[str, float] = {}
        with self.store.engine.connect() as conn:
            for mapping, state, count in conn.execute(
                    select(recon_runs.c.mapping, recon_runs.c.state, func.count()).group_by(
                        recon_runs.c.mapping, recon_runs.c.state)):
                runs.add_metric([mapping, state], count)
            for job, ended in conn.execute(
                    select(recon_runs.c.job, func.max(recon_runs.c.ended)).where(
                        recon_runs.c.state == "SUCCESS", recon_runs.c.job.is_not(None)).group_by(recon_runs.c.job)):
                if ended is not None:
                    success.add_metric([job], _epoch(ended))
            rows = conn.execute(select(recon_runs.c.mapping, recon_runs.c.summary, recon_runs.c.started,
                                       recon_runs.c.ended).where(recon_runs.c.ended.is_not(None))
                                .order_by(recon_runs.c.started))
            for mapping, summary, started, ended in rows:
                for kind in ("situationSummary", "actionSummary"):
                    for name, value in ((summary or {}).get(kind) or {}).items():
                        sums[(mapping, kind)][name] += int(value or 0)
                latest[mapping] = (ended - started).total_seconds()
        for (mapping, kind), values in sorted(sums.items()):
            family = situations if kind == "situationSummary" else actions
            for name, value in sorted(values.items()):
                family.add_metric([mapping, name], value)
        for mapping, seconds in sorted(latest.items()):
            durations.add_metric([mapping], seconds)
        yield from (runs, situations, actions, durations, success)


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
