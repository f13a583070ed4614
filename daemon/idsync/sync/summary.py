"""A run's counters, and the PingIDM-shaped summary built from them.

``to_summary`` gives what ``GET recon/ID`` answers in PingIDM (``progress``,
``situationSummary``, ``statusSummary``, ``durationSummary``) plus idsync's own
``actionSummary``, ``changes`` and ``errors`` (first 50, never secret values); a
mapping with link qualifiers also gets ``linkQualifierSummary``, the situations of
each qualifier.

``statistics`` gives what PingIDM hands a mapping's ``result`` script: ``global``
(``reconId``, ``mappingName``, ``startTime``, ``endTime``, ``duration``) and, for
``source`` and ``target``, each phase's ``name``, times, ``duration`` and
``entryListDuration`` (the time spent waiting for its listing) in milliseconds,
``processed``, ``entries`` and per situation its ``count`` and ``ids``; ``NOTVALID`` holds
the objects ``validSource`` or ``validTarget`` turned away. PingIDM keeps every id; idsync
keeps the first 1,000 of each situation and phase, and only for a mapping with a
``result`` script, so a run's memory stays flat.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from idsync.scripts.surrogates import mended

__all__ = ["ACTIONS", "SITUATIONS", "Counters"]

SITUATIONS = (
    "SOURCE_IGNORED", "FOUND_ALREADY_LINKED", "UNQUALIFIED", "ABSENT", "TARGET_IGNORED", "MISSING",
    "ALL_GONE", "UNASSIGNED", "AMBIGUOUS", "CONFIRMED", "LINK_ONLY", "SOURCE_MISSING", "FOUND",
)
ACTIONS = ("CREATE", "UPDATE", "DELETE", "LINK", "UNLINK", "EXCEPTION", "IGNORE", "REPORT", "NOREPORT", "ASYNC")
CHANGES = ("created", "updated", "unchanged", "deleted", "linked", "unlinked", "skipped", "failed")
_MAX_ERRORS = 50
REPORT_IDS = 1000  # the ids a ``result`` script gets per situation and phase: the first this many
_NOT_VALID = {"source": "SOURCE_IGNORED", "target": "TARGET_IGNORED"}


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
    target_total: int | None = None  # after the target phase: this run's creates included (``maxDeletes``)
    links_created: int = 0
    links_processed: int = 0  # existing links the run looked at, in either phase
    # The mapping's links when the run began (every link qualifier), as PingIDM counts the
    # links it fetches up front; None while not counted, or none were there ("?").
    links_total: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    timings: dict[str, _Timing] = field(default_factory=dict)
    stage: str = "ACTIVE_INITIALIZED"
    # What a mapping's ``result`` script is told (``statistics``): per phase ("source",
    # "target"), its situations, their first ids (kept only when ``report``), when it
    # started and ended (epoch seconds) and how long it waited for its listing.
    report: bool = False
    wall_started: float = field(default_factory=time.time)
    phase_situations: dict[str, Counter[str]] = field(default_factory=dict)
    phase_ids: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    phase_clock: dict[str, list[float]] = field(default_factory=dict)
    listing: dict[str, float] = field(default_factory=dict)

    def assessed(self, situation: str, action: str, qualifier: str = "default", count: int = 1, *,
                 phase: str | None = None, ids: Iterable[str | None] = ()) -> None:
        """Count ``count`` assessments: their situation and action, per link qualifier too,
        and per ``phase`` of a recon, with the objects' ``ids``."""
        self.situations[situation] += count
        self.actions[action] += count
        self.qualified[(qualifier, situation)] += count
        if phase is not None and self.report:  # only a ``result`` script reads them
            self.phase_situations.setdefault(phase, Counter())[situation] += count
            self._keep_ids(phase, situation, ids)

    def _keep_ids(self, phase: str, situation: str, ids: Iterable[str | None]) -> None:
        kept = self.phase_ids.setdefault(phase, {}).setdefault(situation, [])
        if len(kept) < REPORT_IDS:
            kept.extend(itertools.islice((i for i in ids if i), REPORT_IDS - len(kept)))

    def waited(self, phase: str, seconds: float) -> None:
        """Count ``seconds`` spent waiting for the ``phase``'s listing."""
        self.listing[phase] = self.listing.get(phase, 0.0) + seconds

    def phase_started(self, phase: str) -> None:
        self.phase_clock[phase] = [time.time(), time.time()]

    def phase_ended(self, phase: str) -> None:
        self.phase_clock.setdefault(phase, [time.time(), 0.0])[1] = time.time()

    def statistics(self, run_id: str) -> dict[str, dict[str, Any]]:
        """PingIDM's reconciliation statistics, as a mapping's ``result`` script gets them:
        ``{"global": ..., "source": ..., "target": ...}`` (the module's docstring)."""
        now = time.time()
        stats: dict[str, dict[str, Any]] = {"global": {
            "reconId": run_id, "mappingName": self.mapping, "startTime": _stamp(self.wall_started),
            "endTime": _stamp(now), "duration": round((now - self.wall_started) * 1000)}}
        for phase, name, processed in (("source", self.source, self.source_processed),
                                       ("target", self.target, self.target_processed)):
            started, ended = self.phase_clock.get(phase, [now, now])
            counts = self.phase_situations.get(phase, Counter())
            ids = self.phase_ids.get(phase, {})
            shown: dict[str, Any] = {
                "name": name, "startTime": _stamp(started), "endTime": _stamp(ended),
                "duration": round((ended - started) * 1000),
                "entryListDuration": round(self.listing.get(phase, 0.0) * 1000),
                "processed": processed, "entries": sum(counts.values())}
            for situation in SITUATIONS:
                shown[situation] = {"count": counts[situation], "ids": list(ids.get(situation, []))}
            shown["NOTVALID"] = dict(shown[_NOT_VALID[phase]])
            stats[phase] = shown
        return stats

    def time(self, name: str, ms: float) -> None:
        self.timings.setdefault(name, _Timing()).add(ms)

    def error(self, message: str, **ids: Any) -> None:
        """Count a failed object; keep the first errors with the ids given, half of a character
        in any of them spelt as its escape (``mended``), as the run's summary is stored."""
        self.error_count += 1
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append({"message": mended(message),
                                **{k: mended(v) if isinstance(v, str) else v for k, v in ids.items() if v is not None}})

    def tally(self) -> dict[str, Any]:
        """What was counted, as JSON: a partition's share of a split run (``absorb``)."""
        return {"situations": dict(self.situations), "actions": dict(self.actions), "status": dict(self.status),
                "changes": dict(self.changes), "qualified": [[q, s, n] for (q, s), n in self.qualified.items()],
                "source_processed": self.source_processed, "links_created": self.links_created,
                "links_processed": self.links_processed, "errors": list(self.errors),
                "error_count": self.error_count,
                "phases": {p: dict(c) for p, c in self.phase_situations.items()}, "phase_ids": self.phase_ids,
                "listing": dict(self.listing)}

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
        for phase, counts in (tally.get("phases") or {}).items():
            self.phase_situations.setdefault(phase, Counter()).update(counts)
        for phase, by_situation in (tally.get("phase_ids") or {}).items():
            for situation, ids in by_situation.items():
                self._keep_ids(phase, situation, ids)
        for phase, seconds in (tally.get("listing") or {}).items():
            self.waited(phase, float(seconds))

    def mark(self) -> dict[str, Any]:
        """What was counted so far: what ``rewind`` goes back to when the page counted next
        is rolled back."""
        mark = self.tally()
        mark["phase_ids"] = {p: {s: list(ids) for s, ids in by.items()} for p, by in self.phase_ids.items()}
        return mark

    def rewind(self, mark: dict[str, Any]) -> None:
        """Count again only what ``mark`` holds."""
        for counter in (self.situations, self.actions, self.status, self.changes, self.qualified):
            counter.clear()
        self.source_processed = self.links_created = self.links_processed = self.error_count = 0
        self.errors, self.phase_situations, self.phase_ids, self.listing = [], {}, {}, {}
        self.absorb(mark)

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
                                        "total": "?" if self.target_total is None else str(self._before_run())},
                           "created": self.changes["created"], "unchanged": self.changes["unchanged"],
                           "updated": self.changes["updated"], "deleted": self.changes["deleted"]},
                "links": {"created": self.links_created, "existing": {
                    "processed": self.links_processed,
                    "total": "?" if self.links_total is None else str(self.links_total)}},
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

    def _before_run(self) -> int:
        """The target's objects before this run, as PingIDM counts its target's ids up front:
        ``target_total`` without the run's creates (a dry run's were never made)."""
        return max((self.target_total or 0) - (0 if self.dry_run else self.changes["created"]), 0)

    def _qualifier_summary(self) -> dict[str, Any]:
        if all(q == "default" for q, _ in self.qualified):
            return {}
        out: dict[str, dict[str, int]] = {}
        for (qualifier, situation), n in sorted(self.qualified.items()):
            out.setdefault(qualifier, {})[situation] = n
        return {"linkQualifierSummary": out}


def _stamp(epoch: float) -> str:
    """A time as PingIDM's statistics show it: ISO 8601 in UTC, to the millisecond."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
