"""What finished runs counted, per mapping: the figures behind the metrics' counters.

A run contributes ``runs``/STATE 1, ``situationSummary``/SITUATION and
``actionSummary``/ACTION its object counts, and ``duration``/``count`` 1 and
``duration``/``sum`` its seconds. ``prune`` folds the runs it deletes into the
``run_totals`` table in the same transaction, so the figures of the runs still
held plus the table never go down, across prunes and restarts alike.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, insert, select, update

from idsync.store.tables import run_totals

__all__ = ["Key", "contributions", "fold", "read_totals"]

Key = tuple[str, str, str]  # mapping, metric, name


def contributions(mapping: str, state: str, summary: dict[str, Any] | None, started: dt.datetime,
                  ended: dt.datetime) -> Iterator[tuple[Key, float]]:
    """What one finished run adds to the totals."""
    yield (mapping, "runs", state), 1.0
    for kind in ("situationSummary", "actionSummary"):
        for name, value in ((summary or {}).get(kind) or {}).items():
            if value:
                yield (mapping, kind, str(name)), float(value)
    yield (mapping, "duration", "count"), 1.0
    yield (mapping, "duration", "sum"), max((ended - started).total_seconds(), 0.0)


def fold(conn: Connection, runs: Iterable[Any]) -> None:
    """Add the contributions of ``runs`` (rows of mapping, state, summary, started, ended) to the table."""
    added: dict[Key, float] = defaultdict(float)
    for mapping, state, summary, started, ended in runs:
        for key, value in contributions(mapping, state, summary, started, ended):
            added[key] += value
    if not added:
        return
    mappings = sorted({mapping for mapping, _, _ in added})
    existing = {(m, k, n): v for m, k, n, v in conn.execute(
        select(run_totals.c.mapping, run_totals.c.metric, run_totals.c.name, run_totals.c.value)
        .where(run_totals.c.mapping.in_(mappings)).with_for_update())}
    new = [{"mapping": m, "metric": k, "name": n, "value": v} for (m, k, n), v in added.items()
           if (m, k, n) not in existing]
    if new:
        conn.execute(insert(run_totals), new)
    for (m, k, n), v in added.items():
        if (m, k, n) in existing:
            conn.execute(update(run_totals).where(run_totals.c.mapping == m, run_totals.c.metric == k,
                                                  run_totals.c.name == n).values(value=existing[(m, k, n)] + v))


def read_totals(conn: Connection) -> dict[Key, float]:
    return {(m, k, n): v for m, k, n, v in conn.execute(
        select(run_totals.c.mapping, run_totals.c.metric, run_totals.c.name, run_totals.c.value))}
