"""The metrics' counters come from the store and never go down: pruning moves what the
deleted runs counted into ``run_totals`` in the same transaction, and a restarted process
(a new collector) reads the same figures."""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_server import ADMIN, ADMIN_HASH, account_hash, serve
from dbs import BACKENDS, store_url
from idsync import __version__
from idsync.api import load_accounts
from idsync.api.metrics import Metrics
from idsync.errors import ConfigError
from idsync.settings import ApiSettings
from idsync.store.database import Store
from idsync.store.retention import prune
from idsync.store.tables import recon_runs
from prometheus_client import generate_latest
from sqlalchemy import insert

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(store_url(request.param, tmp_path))
    yield s
    s.close()


def _run(store: Store, run_id: str, days_ago: int, state: str, created: int, seconds: int) -> None:
    started = NOW - dt.timedelta(days=days_ago)
    summary = {"situationSummary": {"ABSENT": created, "CONFIRMED": 10},
               "actionSummary": {"CREATE": created, "UPDATE": 10}}
    with store.begin() as conn:
        conn.execute(insert(recon_runs).values(
            id=run_id, mapping="m", job="j", state=state, stage=f"COMPLETED_{state}", dry_run=False,
            started=started, ended=started + dt.timedelta(seconds=seconds), summary=summary))


def _counters(metrics: Metrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {name: float(value) for name, value in re.findall(r"^(idsync_recon_\S+_(?:total|count|sum)\S*) (\S+)$",
                                                             text, re.MULTILINE)}


def test_counters_do_not_decrease_across_prune_and_restart(store: Store) -> None:
    """Five runs are counted; after a prune that deletes three of them the counters are
    unchanged, a new collector (a restart) reads the same, and a later run adds to them."""
    for i, days in enumerate((300, 250, 200, 5, 1)):
        _run(store, f"r{i}", days, "FAILED" if i == 1 else "SUCCESS", created=i + 1, seconds=10 * (i + 1))
    metrics = Metrics(store)
    before = _counters(metrics)
    assert before['idsync_recon_actions_total{action="CREATE",mapping="m"}'] == 1 + 2 + 3 + 4 + 5
    assert before['idsync_recon_runs_finished_total{mapping="m",state="SUCCESS"}'] == 4
    assert before['idsync_recon_duration_seconds_count{mapping="m"}'] == 5
    assert before['idsync_recon_duration_seconds_sum{mapping="m"}'] == 150

    assert prune(store, NOW - dt.timedelta(days=90)).runs == 3  # the three older than 90 days
    assert _counters(metrics) == before
    assert _counters(Metrics(store)) == before

    _run(store, "r5", 0, "SUCCESS", created=7, seconds=5)
    after = _counters(metrics)
    assert after['idsync_recon_actions_total{action="CREATE",mapping="m"}'] == 15 + 7
    assert after['idsync_recon_situations_total{mapping="m",situation="CONFIRMED"}'] == 60
    assert all(after[key] >= value for key, value in before.items())
    assert _counters(Metrics(store)) == after


def test_scrape_account_build_process_and_latency_metrics(tmp_path: Path) -> None:
    """A 401 carries a Basic challenge; an account of ``[api.metrics_accounts]`` scrapes
    ``/metrics`` (build info, process and Python figures, request latency) and gets 403
    everywhere else; a name in both account tables is a configuration error."""
    project = tmp_path / "p"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "a.db"}"\n')
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": []}))
    scraper = ("prometheus", "scrape-secret")
    with serve(project, metrics_accounts={"prometheus": account_hash("scrape-secret")}) as api:
        refused = api.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
        assert api.get("/openidm/info/version", headers=ADMIN).status_code == 200
        assert api.get("/openidm/managed/user?_queryId=query-all-ids", auth=scraper).status_code == 403
        text = api.get("/metrics", auth=scraper).text
    assert f'idsync_build_info{{python="{platform.python_version()}",version="{__version__}"}} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert "python_gc_objects_collected_total" in text
    assert 'idsync_http_request_duration_seconds_count{method="GET"}' in text
    with pytest.raises(ConfigError, match=r"api\.metrics_accounts\.openidm-admin: already an account"):
        both = {"openidm-admin": ADMIN_HASH}
        load_accounts(ApiSettings(accounts=both, metrics_accounts=both), project, "idsync.toml")
