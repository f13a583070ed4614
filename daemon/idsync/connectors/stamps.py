"""liveSync tokens made of a modification stamp, for peers that have no change feed
but stamp every object they change (SCIM's ``meta.lastModified``, Salesforce's
``SystemModstamp``).

A read asks for the objects stamped at or after the token's stamp. Stamps have a
finite precision, so objects changed within the same instant share one: the
token also keeps the ids of the objects read at its very stamp, which the next
read leaves out unless their stamp moved. So an object changed later within that
instant is read, and the others are not read twice. The stamp goes into the
peer's query: a token whose stamp is not of the peer's form (``form``) is refused
as one this connector did not make.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from idsync.errors import SyncTokenExpired
from idsync.resource import Change, ChangeBatch

__all__ = ["StampToken", "batches"]

_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True)
class StampToken:
    kind: str  # the stamp's name (``SystemModstamp``): a token of another kind is not read
    since: str
    seen: frozenset[str] = frozenset()

    def dump(self) -> str:
        return json.dumps({"v": _VERSION, "kind": self.kind, "since": self.since, "seen": sorted(self.seen)},
                          separators=(",", ":"))

    @classmethod
    def load(cls, system: str, kind: str, token: str, form: re.Pattern[str]) -> StampToken:
        try:
            state = json.loads(token)
        except ValueError:
            state = None
        if (not isinstance(state, dict) or state.get("v") != _VERSION or state.get("kind") != kind
                or not form.fullmatch(str(state.get("since"))) or not isinstance(state.get("seen"), list)):
            raise SyncTokenExpired(f"{system}: the stored token is not one this connector makes")
        return cls(kind, str(state["since"]), frozenset(str(i) for i in state["seen"]))

    def new(self, objects: Sequence[T], id_of: Callable[[T], str], stamp_of: Callable[[T], str | None],
            form: re.Pattern[str]) -> tuple[list[T], StampToken]:
        """Of the objects a read answered, those not read already, and the token after them."""
        fresh = [o for o in objects if not (id_of(o) in self.seen and stamp_of(o) == self.since)]
        stamps = [s for s in map(stamp_of, fresh) if s is not None and form.fullmatch(s)]
        newest = max(stamps, key=moment, default=self.since)
        at_newest = frozenset(id_of(o) for o in fresh if stamp_of(o) == newest)
        return fresh, StampToken(self.kind, newest, at_newest if newest != self.since else self.seen | at_newest)


def moment(stamp: str) -> dt.datetime:
    """A stamp as a time: ``2026-12-05T10:00:00Z``, ``...00.000+0000``, ``...00+00:00``."""
    text = stamp.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return dt.datetime.fromisoformat(text)


def batches(changes: Sequence[Change], page_size: int, token: str) -> Iterator[ChangeBatch]:
    """``changes`` in batches of ``page_size``; the last one (maybe empty) carries the token."""
    size = max(page_size, 1)
    last = max(len(changes) - 1, 0) // size * size
    for start in range(0, last, size):
        yield ChangeBatch(list(changes[start:start + size]), None)
    yield ChangeBatch(list(changes[last:]), token)
