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

A walk is held in this process, for ``IDLE`` seconds after its last page (then a timer
closes it, its connections with it, within half as long again) and at most ``HELD`` at
once (the longest idle is closed for a new one). Its cookie is good for one request:
``TOKEN.N``, N the page it answers. A cookie naming no walk held here (forged,
expired, answered by another process or node, from before a restart), a page already
answered, another query's cookie, or a walk whose system's configuration changed since, is
a 400 saying to start the query again; a page is never answered from another position.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from idsync.api.errors import ApiError
from idsync.resource import Obj

__all__ = ["HELD", "IDLE", "Walk", "Walks"]

IDLE = 300.0  # seconds a walk is held after its last page
HELD = 8  # walks held at once: each holds a connection to its system (an unfiltered LDAP listing, a process too)


@dataclass
class Walk:
    """One paged read of a system: the pages still to come, what was read of them and not
    yet answered, and ``close`` (the connector's connections)."""

    key: Hashable  # the query: system, type, filter, fields; a cookie resumes only its own
    config: Any  # the system's configuration when the walk started
    pages: Iterator[list[Obj]]
    close: Callable[[], None]
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    answered: int = 0  # pages answered
    used: float = field(default_factory=time.monotonic)
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
        return f"{self.token}.{self.answered}"

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
    request takes it out, and puts it back with its next cookie)."""

    def __init__(self, *, idle: float = IDLE, held: int = HELD) -> None:
        self._idle = idle
        self._held = held
        self._walks: dict[str, Walk] = {}
        self._lock = threading.Lock()
        self._sweep: threading.Timer | None = None

    def resume(self, cookie: str, key: Hashable, config: Any) -> Walk:
        """The walk ``cookie`` continues, taken out until ``keep`` or ``close``; 400 for a
        cookie that continues no walk of this query held here."""
        token, _, number = cookie.partition(".")
        with self._lock:
            self._expire()
            walk = self._walks.get(token)
            if walk is not None and number == str(walk.answered) and walk.key == key:
                del self._walks[token]
        if walk is None:
            raise ApiError(400, f"_pagedResultsCookie {cookie!r} continues no paged query held here (unknown, idle "
                                f"more than {self._idle:.0f} s, or answered by another process): {_RESTART}")
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
            self._walks[walk.token] = walk
            while len(self._walks) > self._held:
                oldest = min(self._walks.values(), key=lambda w: w.used)
                del self._walks[oldest.token]
                oldest.close()
            self._schedule()

    def close(self) -> None:
        """Close every walk held (the server stops)."""
        with self._lock:
            walks, self._walks = list(self._walks.values()), {}
            if self._sweep is not None:
                self._sweep.cancel()
                self._sweep = None
        for walk in walks:
            walk.close()

    def __len__(self) -> int:
        return len(self._walks)

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
            self._walks.pop(token).close()
