"""Splitting a recon's source phase into id ranges that the nodes of a cluster read at once.

Only a source whose ids never change and can be ranged over (``Resource.ranged_ids``:
the store's own ids, LDAP's entryUUID) is split; never on a mutable attribute, so an
object renamed during the run stays in its range. SCIM and Salesforce sources are read
by one reader (their paging is not stable across readers).

Bounds are cut at quantiles of the ids themselves, read once without attributes (of a
uniform sample of 10,000 of them: ``IdSample``): ids made by a bulk load cluster in a
narrow range, so cutting the id space evenly would not balance the partitions. Each
partition reads ``_id ge LOW and _id lt HIGH`` (the mapping's ``sourceQuery`` too);
their union is the whole source, which the run checks (the objects the partitions read
add up to the id-only read) before the target phase and any delete.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from idsync.query.ast import And, Compare, Node

__all__ = ["SEQ_SPAN", "IdSample", "Splitter", "cut", "range_filter"]

# Deferred deletes of partition N are numbered from N * SEQ_SPAN (one sequence per run).
SEQ_SPAN = 10_000_000


@dataclass(frozen=True)
class Splitter:
    """How a run may split (given by a cluster node, or by the worker processes of this
    machine): at most ``partitions()`` ranges of at least ``min_size`` objects;
    ``spread(run_id, n)`` asks ``n`` other workers to help. ``heavy_only``: split only a
    run with much to do (its mapping links fewer than half its source's objects);
    ``prepare(run_id)``, once the source is known to be large enough (before or during
    the id-only read), starts helpers that wait for the partitions (``spread`` then asks
    no more of them); ``reclaim(run_id)``, called while the run waits, hands back
    the partitions of workers known dead; ``done(run_id)`` once the run's partitions are
    over, whatever their end, or when the run does not split after ``prepare``."""

    partitions: Callable[[], int]
    min_size: int
    spread: Callable[[str, int], None]
    node: str
    heavy_only: bool = False
    prepare: Callable[[str], None] | None = None
    reclaim: Callable[[str], None] | None = None
    done: Callable[[str], None] | None = None


class IdSample:
    """The ids of a source, counted, and a uniform sample of at most ``size`` of them
    (reservoir sampling): cuts at the sample's quantiles balance the ranges within about
    1% of the source, without holding every id of a large source (a million ids as
    strings are about 90 MB). A source of at most ``size`` objects is kept whole."""

    def __init__(self, size: int = 10_000, seed: str = "") -> None:
        self.size = size
        self.count = 0
        self.ids: list[str] = []
        self._random = random.Random(seed)

    def add(self, ids: Iterable[str]) -> None:
        for one in ids:
            self.count += 1
            if len(self.ids) < self.size:
                self.ids.append(one)
            else:
                slot = self._random.randrange(self.count)
                if slot < self.size:
                    self.ids[slot] = one


def cut(ids: Sequence[str], count: int) -> list[tuple[str | None, str | None]]:
    """``count`` ranges holding equal shares of the sorted ``ids`` (fewer where ids repeat)."""
    ordered = sorted(ids)
    edges = sorted({ordered[len(ordered) * k // count] for k in range(1, count)})
    lows: list[str | None] = [None, *edges]
    highs: list[str | None] = [*edges, None]
    return list(zip(lows, highs, strict=True))


def range_filter(base: Node | None, low: str | None, high: str | None) -> Node | None:
    """``base`` narrowed to ids in ``[low, high)``."""
    items: list[Node] = [] if base is None else [base]
    if low is not None:
        items.append(Compare(("_id",), "ge", low))
    if high is not None:
        items.append(Compare(("_id",), "lt", high))
    if not items:
        return None
    return items[0] if len(items) == 1 else And(tuple(items))
