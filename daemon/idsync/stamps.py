"""The window of a liveSync read by stamps (SCIM's ``meta.lastModified``, the store's
``updated``), and its token.

A source whose objects carry the time of their last write (a *stamp*) is read from a
high-water mark (``since``: the newest stamp read) less an *overlap*: a write is stamped
before it is committed, so a change stamped just before the mark may be committed after
the last read. The objects read within the overlap are kept with their stamp and what
tells two writes of one stamp apart (``seen``: id -> stamp#version), and the next read
skips the ones it finds unchanged.

What a read finds is one of three (``Read``): an object the token keeps as it is now
(``KNOWN``: skipped); one the token keeps in another version, or stamped after its
high-water mark (``NEW``: a change); one within the overlap that the token does not keep
(``AGAIN``): either a change committed late or one a read before applied and the token
dropped (below). The two cannot be told apart here: liveSync compares an ``AGAIN``
object with what its target holds, and counts it as a change only when something is
to be written (``Change.reread``).

``seen`` keeps ``keep`` entries at most, the newest stamps: under a bulk change the
others are read again by the next runs and assessed again, which writes nothing where
the target already holds the change, so the token (and the read's memory) stays that
size whatever the change; a read that dropped some says so once
(``StampWindow.dropped``). The overlap is
needed only while a change stamped in it may still be committed: the token also keeps a
*mark*, the newest stamp and when (this host's clock) the read that first saw it ended;
a read that begins a whole overlap after that has every change stamped up to the mark,
and its token makes the next read start at the mark's stamp (``start``), or just after
it where the source can ask for that (``past``). Once a source is quiet, its last
changes stop being read again an overlap after they were first read.

A token without a mark (an older one) is read from ``since`` less the overlap; any other
text, or a mark or start no read writes (not a stamp, after ``since``, a time that is no
number), raises ``SyncTokenExpired``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from idsync.errors import SyncTokenExpired

__all__ = ["Mark", "Read", "StampWindow", "load_stamps", "stamp_text"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Read(Enum):
    """What a read makes of an object it finds (``StampWindow.saw``)."""

    KNOWN = "known"  # the token keeps it as it is: applied already, skipped
    NEW = "new"  # another version than the token keeps, or stamped after its high-water mark
    AGAIN = "again"  # within the overlap, not kept by the token: a late change, or one applied already


@dataclass(frozen=True)
class Mark:
    """The newest stamp seen, and when (this host's clock) the read that first saw it ended."""

    stamp: dt.datetime
    ended: float


class StampWindow(ABC):
    """A read's position: the high-water mark, the objects seen near it, and the mark.

    ``name`` is the source's (for its log), ``kind`` the token's, ``keep`` how many
    objects ``seen`` keeps at most; a source says in ``dropped`` that a read kept fewer
    than it saw within the overlap."""

    def __init__(self, name: str, kind: str, since: dt.datetime, seen: Mapping[str, str], overlap: dt.timedelta,
                 *, keep: int, start: dt.datetime | None = None, mark: Mark | None = None) -> None:
        self.name = name
        self.kind = kind
        self.since = since
        self._known = since  # the token's high-water mark: what a read before may have applied
        self.seen = dict(seen)
        self.overlap = overlap
        self.start = max(since - overlap, start or _EPOCH)
        # A token's start is the stamp of a mark a read passed: every write stamped up to
        # it was read then, and a source may ask for the stamps after it only.
        self.past = start is not None and start >= since - overlap
        self.mark = mark
        self._keep = keep
        self._prior = mark  # the token's: this read may pass it
        self._began = _now()
        self._newest: dt.datetime | None = None
        self._read = 0
        self._pruned = self._bounded = False

    def saw(self, key: str, value: str, stamp: dt.datetime) -> Read:
        """Note the object ``key`` as ``value`` (its stamp's ``stamp_text``, then ``#`` and
        what tells two writes of one stamp apart), stamped ``stamp``: what it is to the window."""
        kept = self.seen.get(key)
        found = Read.KNOWN if kept == value else Read.AGAIN if kept is None and stamp <= self._known else Read.NEW
        self.seen[key] = value
        self.since = max(self.since, stamp)
        self._newest = max(self._newest or stamp, stamp)
        self._read += 1
        if len(self.seen) >= 2 * self._keep:
            self.seen, self._pruned = self._newest_seen(self.seen), True
        return found

    def token(self, *, last: bool = False) -> str:
        """The token of what is read so far; ``last``: of the whole read."""
        floor = max(self.start, self.since - self.overlap)
        if last and self._prior is not None and self._began >= self._prior.ended + self.overlap.total_seconds():
            # Every change stamped up to the mark's stamp was committed before this read
            # began, so this read had it: the next one starts at that stamp.
            floor = max(floor, self._prior.stamp)
        if self._newest is not None and (self.mark is None or self._newest > self.mark.stamp):
            self.mark = Mark(self._newest, _now())
        window = {k: v for k, v in self.seen.items() if _seen_stamp(v) >= floor}
        self._bounded = self._bounded or len(window) > self._keep or (self._pruned and len(window) == self._keep)
        self.seen = self._newest_seen(window)
        if last and self._bounded:
            self.dropped(self._read, self._keep)
        more: dict[str, Any] = {"start": stamp_text(floor)} if floor > self.since - self.overlap else {}
        if self.mark is not None:
            more["mark"] = {"stamp": stamp_text(self.mark.stamp), "ended": self.mark.ended}
        return json.dumps({"v": 1, "kind": self.kind, "since": stamp_text(self.since), "seen": self.seen, **more},
                          sort_keys=True, separators=(",", ":"))

    @abstractmethod
    def dropped(self, read: int, kept: int) -> None:
        """Say (once, at the end of a read) that it saw ``read`` objects and its token keeps
        ``kept`` of those within the overlap: the others are read again by the next runs."""

    def _newest_seen(self, seen: dict[str, str]) -> dict[str, str]:
        """The ``keep`` entries of ``seen`` with the newest stamps."""
        if len(seen) <= self._keep:
            return seen
        return dict(heapq.nlargest(self._keep, seen.items(), key=lambda item: (_seen_stamp(item[1]), item[0])))


def load_stamps(token: str, kind: str,
                refused: str) -> tuple[dt.datetime, dict[str, str], dt.datetime | None, Mark | None]:
    """A ``StampWindow`` token's (since, seen, start, mark); ``SyncTokenExpired(refused)``
    for any other text. An older token has neither start nor mark: its read starts at
    ``since`` less the overlap."""
    try:
        state = json.loads(token)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != 1 or state.get("kind") != kind \
            or not isinstance(state.get("seen"), dict):
        raise SyncTokenExpired(refused)
    since = _stamp(state.get("since"))
    if since is None:
        raise SyncTokenExpired(refused)
    start = _stamp_before(state.get("start"), since)
    mark = _mark(state.get("mark"), since)
    if ("start" in state and start is None) or ("mark" in state and mark is None):
        raise SyncTokenExpired(refused)
    return since, {str(k): str(v) for k, v in state["seen"].items()}, start, mark


def stamp_text(moment: dt.datetime) -> str:
    """A stamp as a token holds it (and a SCIM filter names it), to the microsecond in UTC."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _mark(raw: Any, since: dt.datetime) -> Mark | None:
    """A token's mark, or None when it is not one a read writes."""
    if not isinstance(raw, dict) or set(raw) != {"stamp", "ended"}:
        return None
    stamp, ended = _stamp_before(raw["stamp"], since), raw["ended"]
    if stamp is None or isinstance(ended, bool) or not isinstance(ended, int | float) or not math.isfinite(ended):
        return None
    return Mark(stamp, float(ended))


def _stamp_before(value: Any, since: dt.datetime) -> dt.datetime | None:
    """``value`` as a stamp of a token (at or before its ``since``), or None when it is not one."""
    moment = _stamp(value)
    return moment if moment is not None and moment <= since else None


def _seen_stamp(value: str) -> dt.datetime:
    """The stamp of a ``seen`` value (stamp, then ``#`` and the version)."""
    return _stamp(value.split("#", 1)[0]) or _EPOCH


def _stamp(value: Any) -> dt.datetime | None:
    """An ISO 8601 stamp (``Z`` or an offset; none: UTC) in UTC, or None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _now() -> float:
    """This host's clock, in seconds (the mark's)."""
    return time.time()
