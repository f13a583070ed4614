"""Paged queries of a system walked by cookie: the connector's read held between pages.

A query of a system's objects in the system's own order (no ``_sortKeys``, no ``EXACT``
count) is answered from one read of the system that stays open between requests: its
``pagedResultsCookie`` names that read (a ``Walk``), and the next request takes the next
page from where the last one ended. A walk of N objects thus reads each of them once,
where a page counted by offset reads the system from its start again (N²/2 for the walk).

Why the read is held rather than a position handed to the client: an LDAP server's
paged results cookie (RFC 2696) is tied to the connection it was answered on (OpenLDAP
keeps one paged search per connection and refuses the cookie on any other), so a cookie
alone could not be resumed on a new connection; and the directory's order is its own (no
ordering of DNs, entryUUIDs in no order it returns them), so a keyset on the id would need
the server-side sort control (RFC 2891), which not every directory offers and which makes
the directory sort the whole result for every page. Holding the connector's read keeps
the connection and its cookie, and does the same for every connector: SCIM's
``startIndex``, Salesforce's ``nextRecordsUrl``, a file's or a table's read go on where
they stopped, in the order the system answers.

A walk is held in this process, for ``[api] system_query_idle_seconds`` after its last page
(then a timer closes it, its connections with it, within half as long again) and at most
``[api] system_queries_held`` at once (the longest idle is closed for a new one, and its
client's next page is refused: ``api.system_query_evicted`` says so). Its cookie is good for
one request: ``TOKEN.N``, N the page it answers, and in cluster mode ``TOKEN.N.NODE``, NODE
the node's name in base64url: a cookie naming no walk held here (forged, expired, answered
by another process or node, from before a restart), a page already answered, another
query's cookie, or a walk whose system's configuration changed since, is a 400 saying to
start the query again; a page is never answered from another position. The node part only
words that 400 (which node holds the query, for a load balancer without sticky sessions):
a walk is found by its token alone, so a forged node part changes nothing else.

A walk is counted (``counts``) when it is closed after being held between pages, by why:
its last page answered (``ended``), its system failing on a later page (``failed``), left
idle (``idle``), closed to make room (``evicted``), its system reconfigured
(``config_changed``) or the server stopping (``shutdown``). Log events and metrics name
the system and object type, never the filter, whose values may be anyone's.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from idsync.api.errors import ApiError
from idsync.resource import Obj

__all__ = ["REASONS", "Walk", "Walks"]

log = structlog.get_logger("idsync.api")

# Why a walk held between pages was closed, each a label of ``idsync_api_system_queries_closed_total``.
REASONS = ("ended", "failed", "idle", "evicted", "config_changed", "shutdown")
_NODE_CHARS = 344  # the base64 of a node name's 64 characters at 4 bytes each


@dataclass
class Walk:
    """One paged read of a system: the pages still to come, what was read of them and not
    yet answered, and ``close`` (the connector's connections)."""

    key: Hashable  # the query: system, type, filter, fields; a cookie resumes only its own
    config: Any  # the system's configuration when the walk started
    pages: Iterator[list[Obj]]
    close: Callable[[], None]
    system: str = ""  # what the logs name, never the filter
    object_type: str = ""
    holder: str | None = None  # the cluster node answering it (in its cookie), None outside cluster mode
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    answered: int = 0  # pages answered
    used: float = field(default_factory=time.monotonic)
    held: bool = False  # kept between pages at least once (counted when closed)
    _buffer: list[Obj] = field(default_factory=list)
    _ended: bool = False

    def skip(self, count: int) -> None:
        """Leave out the first ``count`` objects (``_pagedResultsOffset``)."""
        while count > 0 and self._fill():
            taken = min(count, len(self._buffer))
            del self._buffer[:taken]
            count -= taken

    def take(self, count: int) -> tuple[list[Obj], bool]:
        """The next ``count`` objects, and whether any follow them (read ahead to know)."""
        page: list[Obj] = []
        while len(page) < count and self._fill():
            taken = self._buffer[:count - len(page)]
            del self._buffer[:len(taken)]
            page += taken
        self.answered += 1
        self.used = time.monotonic()
        return page, self._fill()

    @property
    def cookie(self) -> str:
        """The cookie of the next page."""
        if self.holder is None:
            return f"{self.token}.{self.answered}"
        node = base64.urlsafe_b64encode(self.holder.encode("utf-8")).decode("ascii").rstrip("=")
        return f"{self.token}.{self.answered}.{node}"

    def _fill(self) -> bool:
        """Whether an object is at hand, reading the system's next page when none is."""
        while not self._buffer and not self._ended:
            page = next(self.pages, None)
            if page is None:
                self._ended = True
            else:
                self._buffer = list(page)
        return bool(self._buffer)


_RESTART = "start the query again without it"


class Walks:
    """The walks this process holds, by token; each used by one request at a time (a
    request takes it out, and puts it back with its next cookie). ``node``: this cluster
    node's name, which its walks' cookies carry (None outside cluster mode)."""

    def __init__(self, *, idle: float, held: int, node: str | None = None) -> None:
        self._idle = idle
        self._held = held
        self.node = node
        self._walks: dict[str, Walk] = {}
        self._closed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sweep: threading.Timer | None = None

    def resume(self, cookie: str, key: Hashable, config: Any) -> Walk:
        """The walk ``cookie`` continues, taken out until ``keep`` or ``end``; 400 for a
        cookie that continues no walk of this query held here."""
        token, _, rest = cookie.partition(".")
        number, _, node = rest.partition(".")
        with self._lock:
            self._expire()
            walk = self._walks.get(token)
            if walk is not None and number == str(walk.answered) and walk.key == key:
                del self._walks[token]
                if walk.config != config:
                    self._closed["config_changed"] += 1
        if walk is None:
            raise ApiError(400, self._unknown(cookie, _node_named(node)))
        if walk.key != key:
            raise ApiError(400, f"_pagedResultsCookie {cookie!r} belongs to another query (another system, "
                                f"object type, filter or _fields): {_RESTART}")
        if number != str(walk.answered):
            raise ApiError(400, f"_pagedResultsCookie {cookie!r} asks for a page already answered (a cookie is "
                                f"good for one request): {_RESTART}")
        if walk.config != config:
            walk.close()
            raise ApiError(400, f"_pagedResultsCookie {cookie!r}: the system's configuration changed since the "
                                f"query started: {_RESTART}")
        return walk

    def keep(self, walk: Walk) -> None:
        """Hold ``walk`` for its next page (closing the longest idle one past ``held``)."""
        with self._lock:
            self._expire()
            walk.held = True
            self._walks[walk.token] = walk
            while len(self._walks) > self._held:
                oldest = min(self._walks.values(), key=lambda w: w.used)
                del self._walks[oldest.token]
                self._closed["evicted"] += 1
                # Its client may come back for the next page, which is then a 400: say so where operators look.
                log.warning("api.system_query_evicted", system=oldest.system, object_type=oldest.object_type,
                            idle_seconds=round(time.monotonic() - oldest.used, 1), held=self._held)
                oldest.close()
            self._schedule()

    def end(self, walk: Walk, reason: str = "ended") -> None:
        """Close ``walk``, taken out by its request: its last page answered (``ended``), or its
        system failed on it (``failed``); counted if it was held between pages."""
        if walk.held:
            with self._lock:
                self._closed[reason] += 1
        walk.close()

    def close(self) -> None:
        """Close every walk held (the server stops)."""
        with self._lock:
            walks, self._walks = list(self._walks.values()), {}
            self._closed["shutdown"] += len(walks)
            if self._sweep is not None:
                self._sweep.cancel()
                self._sweep = None
        for walk in walks:
            walk.close()

    def counts(self) -> tuple[int, dict[str, int]]:
        """The walks held now, and those closed since the start by reason (every one of ``REASONS``)."""
        with self._lock:
            return len(self._walks), {reason: self._closed[reason] for reason in REASONS}

    def __len__(self) -> int:
        return len(self._walks)

    def _unknown(self, cookie: str, node: str | None) -> str:
        """Why a cookie whose token names no walk here is refused: held by the node it names, if another."""
        if node is not None and node != self.node:
            here = f"node {self.node!r}" if self.node is not None else "this process"
            return (f"_pagedResultsCookie {cookie!r} continues a paged query held by node {node!r}, not by {here}: "
                    f"send its next pages to that node (sticky sessions), or {_RESTART}")
        return (f"_pagedResultsCookie {cookie!r} continues no paged query held here (unknown, idle more than "
                f"{self._idle:g} s, or answered by another process or before a restart): {_RESTART}")

    def _schedule(self) -> None:
        """Start the timer that closes idle walks, unless one runs or none is held (under the lock)."""
        if self._sweep is None and self._walks:
            self._sweep = threading.Timer(self._idle / 2, self._swept)
            self._sweep.daemon = True
            self._sweep.start()

    def _swept(self) -> None:
        with self._lock:
            self._sweep = None
            self._expire()
            self._schedule()

    def _expire(self) -> None:
        """Close the walks idle past ``idle`` (under the lock)."""
        now = time.monotonic()
        for token in [t for t, w in self._walks.items() if now - w.used > self._idle]:
            walk = self._walks.pop(token)
            self._closed["idle"] += 1
            log.info("api.system_query_expired", system=walk.system, object_type=walk.object_type,
                     idle_seconds=round(now - walk.used, 1))
            walk.close()


def _node_named(part: str) -> str | None:
    """The node a cookie's last part names (base64url of its name), None unless it decodes to
    a name a node could have: it is only ever shown in a message."""
    if not part or len(part) > _NODE_CHARS:
        return None
    try:
        name = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return name if 0 < len(name) <= 64 and name.isprintable() else None
