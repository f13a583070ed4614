"""A run's counters, and the PingIDM-shaped summary built from them.

``to_summary`` gives what ``GET recon/ID`` answers in PingIDM (``progress``,
``situationSummary``, ``statusSummary``, ``durationSummary``) plus idsync's own
``actionSummary``, ``changes`` and ``errors`` (first 50, never secret values); a
mapping with link qualifiers also gets ``linkQualifierSummary``, the situations of
each qualifier.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACTIONS", "SITUATIONS", "Counters"]

SITUATIONS = (
    "SOURCE_IGNORED", "FOUND_ALREADY_LINKED", "UNQUALIFIED", "ABSENT", "TARGET_IGNORED", "MISSING",
    "ALL_GONE", "UNASSIGNED", "AMBIGUOUS", "CONFIRMED", "LINK_ONLY", "SOURCE_MISSING", "FOUND",
)
ACTIONS = ("CREATE", "UPDATE", "DELETE", "LINK", "UNLINK", "EXCEPTION", "IGNORE", "REPORT", "NOREPORT", "ASYNC")
CHANGES = ("created", "updated", "unchanged", "deleted", "linked", "unlinked", "skipped", "failed")
_MAX_ERRORS = 50


@dataclass
class _Timing:
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = 0.0

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.squares += ms * ms
        self.low = min(self.low, ms)
        self.high = max(self.high, ms)

    def shape(self) -> dict[str, Any]:
        mean = self.total / self.count if self.count else 0.0
        var = max(self.squares / self.count - mean * mean, 0.0) if self.count else 0.0
        return {"count": self.count, "sum": round(self.total), "min": round(self.low if self.count else 0),
                "max": round(self.high), "mean": round(mean), "stdDev": round(math.sqrt(var))}


@dataclass
class Counters:
    mapping: str
    source: str
    target: str
    dry_run: bool = False
    started: float = field(default_factory=time.monotonic)
    situations: Counter[str] = field(default_factory=Counter)
    qualified: Counter[tuple[str, str]] = field(default_factory=Counter)  # (link qualifier, situation)
    actions: Counter[str] = field(default_factory=Counter)
    status: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    source_processed: int = 0
    source_total: int | None = None
    target_processed: int = 0
    target_total: int | None = None
    links_created: int = 0
    links_processed: int = 0  # existing links the run looked at, in either phase
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    timings: dict[str, _Timing] = field(default_factory=dict)
    stage: str = "ACTIVE_INITIALIZED"

    def assessed(self, situation: str, action: str, qualifier: str = "default", count: int = 1) -> None:
        """Count ``count`` assessments: their situation and action, per link qualifier too."""
        self.situations[situation] += count
        self.actions[action] += count
        self.qualified[(qualifier, situation)] += count

    def time(self, name: str, ms: float) -> None:
        self.timings.setdefault(name, _Timing()).add(ms)

    def error(self, message: str, **ids: Any) -> None:
        self.error_count += 1
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append({"message": message, **{k: v for k, v in ids.items() if v is not None}})

    def tally(self) -> dict[str, Any]:
        """What was counted, as JSON: a partition's share of a split run (``absorb``)."""
        return {"situations": dict(self.situations), "actions": dict(self.actions), "status": dict(self.status),
                "changes": dict(self.changes), "qualified": [[q, s, n] for (q, s), n in self.qualified.items()],
                "source_processed": self.source_processed, "links_created": self.links_created,
                "links_processed": self.links_processed, "errors": list(self.errors),
                "error_count": self.error_count}

    def absorb(self, tally: dict[str, Any]) -> None:
        """Add a partition's ``tally`` to these counters."""
        self.situations.update(tally.get("situations") or {})
        self.actions.update(tally.get("actions") or {})
        self.status.update(tally.get("status") or {})
        self.changes.update(tally.get("changes") or {})
        for qualifier, situation, n in tally.get("qualified") or []:
            self.qualified[(qualifier, situation)] += n
        self.source_processed += int(tally.get("source_processed", 0))
        self.links_created += int(tally.get("links_created", 0))
        self.links_processed += int(tally.get("links_processed", 0))
        self.error_count += int(tally.get("error_count", 0))
        self.errors.extend((tally.get("errors") or [])[:max(_MAX_ERRORS - len(self.errors), 0)])

    def all_failed(self) -> bool:
        """Objects failed and not one went through: such a run did nothing it was meant to,
        and is FAILED, not a SUCCESS with errors."""
        return self.error_count > 0 and self.status["SUCCESS"] == 0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.source_processed + self.target_processed) / elapsed if elapsed > 0 else 0.0

    def to_summary(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "sourceObject": self.source,
            "targetObject": self.target,
            "dryRun": self.dry_run,
            "stage": self.stage,
            "progress": {
                "source": {"existing": {"processed": self.source_processed,
                                        "total": "?" if self.source_total is None else str(self.source_total)}},
                "target": {"existing": {"processed": self.target_processed,
                                        "total": "?" if self.target_total is None else str(self.target_total)},
                           "created": self.changes["created"], "unchanged": self.changes["unchanged"],
                           "updated": self.changes["updated"], "deleted": self.changes["deleted"]},
                "links": {"created": self.links_created, "existing": {"processed": self.links_processed,
                                                                    "total": "?"}},
            },
            "situationSummary": {s: self.situations[s] for s in SITUATIONS},
            "actionSummary": {a: self.actions[a] for a in ACTIONS},
            "statusSummary": {"SUCCESS": self.status["SUCCESS"], "FAILURE": self.status["FAILURE"]},
            "changes": {c: self.changes[c] for c in CHANGES},
            "durationSummary": {name: t.shape() for name, t in sorted(self.timings.items())},
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "errorCount": self.error_count,
            "errors": list(self.errors),
        } | self._qualifier_summary()

    def _qualifier_summary(self) -> dict[str, Any]:
        if all(q == "default" for q, _ in self.qualified):
            return {}
        out: dict[str, dict[str, int]] = {}
        for (qualifier, situation), n in sorted(self.qualified.items()):
            out.setdefault(qualifier, {})[situation] = n
        return {"linkQualifierSummary": out}
