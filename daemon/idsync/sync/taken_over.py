"""The summary of a split run that ended elsewhere: failed by the takeover of its node.

A split recon's counts live in its partitions' rows (each page commits its partition's
tally) until the node running the job adds them into the run at the end. A run whose
node was taken for dead (``Nodes.take_over``) never gets there: its record keeps the
summary its node last wrote, zeros when the node was reading a partition of its own. So
the node that took it over rebuilds it from what the partitions committed, and lists
them, as the run's own end would have.
"""

from __future__ import annotations

from idsync.store.database import Store
from idsync.store.partitions import Partitions
from idsync.store.runs import RunStore
from idsync.sync.summary import Counters

__all__ = ["summarize_taken_over"]


def summarize_taken_over(store: Store, run_id: str) -> bool:
    """Count the committed partitions of ended run ``run_id`` into its summary; whether it
    was split (a run not split keeps its summary)."""
    states = Partitions(store).all(run_id)
    run = RunStore(store).get(run_id)
    if not states or run is None or run["state"] == "ACTIVE":
        return False
    before = dict(run["summary"] or {})
    counters = Counters(run["mapping"], before.get("sourceObject", ""), before.get("targetObject", ""),
                        dry_run=bool(run["dry_run"]), stage=run["stage"])
    total = ((before.get("progress") or {}).get("source") or {}).get("existing", {}).get("total")
    counters.source_total = int(total) if isinstance(total, str) and total.isdigit() else None
    for p in states:
        counters.absorb((p.summary or {}).get("tally") or {})
    summary = before | counters.to_summary() | {"partitions": [p.to_json() for p in states]}
    if run["ended"] is not None:
        summary["duration"] = round((run["ended"] - run["started"]).total_seconds() * 1000)
    return RunStore(store).resummarize(run_id, run["state"], summary)
