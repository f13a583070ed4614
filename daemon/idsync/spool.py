"""Ids and entries of one read, however many: the tables of a temporary SQLite database.

A liveSync read can be as large as the directory it reads: a bulk change (every user
modified at once), a present phase naming every entry, a mass delete. What such a
read collects before it can hand anything on (the changed entries of several bases,
the ids a present phase names, the ids of every entry) is kept here instead of in
Python's dicts and sets, so the process's memory stays what a page of changes needs
(SQLite's page cache, ``_CACHE_KIB``) whatever the directory's size.

Each spool is a private temporary database of its own (SQLite's ``""`` file: held
in memory while small, then in a file SQLite deletes as it opens it, under
``SQLITE_TMPDIR``, ``TMPDIR`` or ``/var/tmp``), gone when the spool is closed or
collected. Writes are buffered and go in by ``executemany``; membership is asked a
chunk at a time (``absent``), one query per ``_CHUNK`` ids. A spool that cannot write
(the temporary directory full) stops the run that reads: ``RunAborted``, saying where.

An entry spool's entries are sealed before they reach the database: the attributes a
mapping reads may be a password hash or other secrets, and the temporary file is on
disk, readable by whoever can read the process's files or the disk. Each spool draws
a random AES-256 key of its own, held by this process only and never written anywhere,
and each entry is encrypted with AES-GCM under a nonce of its own (the spool's count of
puts: never repeated under one key), its key (the entry's sync UUID) bound as associated
data, so that an entry moved to another key's row fails its check as an altered one
does. An entry that fails it is never handed on: the read stops, ``RunAborted``. What
stays in clear is what the database must index and order: the entry spool's keys and
the id spools' ids (entryUUIDs, nsUniqueIds, objectGUIDs, the ids of a resource's
entries, a DN where that is the id): names of entries, as the store's links and the
logs hold them, not their contents. The file is the process's own (mode 0600): sealing
keeps the contents from whoever reads the disk, a backup of it or a copy of the file;
an entry left out, or an id added to an id spool, is not told from the read's own.
"""

from __future__ import annotations

import functools
import marshal
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idsync.errors import RunAborted

__all__ = ["EntrySpool", "IdSpool", "chunks"]

_CACHE_KIB = 4096  # SQLite's page cache per spool
_BUFFER = 5000  # writes held before they go in
_CHUNK = 500  # ids per membership query
_FETCH = 2000  # rows per fetch when a spool is read back
_NONCE = 12  # bytes of an AES-GCM nonce, before each sealed entry


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter), read lazily."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _failing(what: Callable[_P, _R]) -> Callable[_P, _R]:
    """``what``, its SQLite errors told as the run's end (their text names no value)."""
    @functools.wraps(what)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return what(*args, **kwargs)
        except sqlite3.Error as exc:
            raise RunAborted(f"the read's spool (a temporary SQLite database under SQLITE_TMPDIR, TMPDIR or "
                             f"/var/tmp) failed: {exc}") from None
    return call


@_failing
def _database(schema: str) -> sqlite3.Connection:
    """A private temporary database, in one transaction that is never committed: nothing
    of it needs to last, and a commit per write would write the pages out each time."""
    db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("BEGIN")
    db.execute(schema)
    return db


def _rows(db: sqlite3.Connection, query: str) -> Iterator[Any]:
    cursor = _failing(db.execute)(query)
    while rows := _failing(cursor.fetchmany)(_FETCH):
        yield from rows


class IdSpool:
    """A set of ids (text). Iterated in code point order.

    The ids go in as they come, unindexed (appended: 1,000,000 in about a second, where
    inserting each into a B-tree of its own takes five); the index is built once, at the
    first question asked, and kept from then on."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._db = _database("CREATE TABLE ids (id TEXT NOT NULL)")
        self._pending: list[tuple[str]] = []
        self._indexed = False
        self.update(ids)

    def add(self, id: str) -> None:
        self._pending.append((id,))
        if len(self._pending) >= _BUFFER:
            self._flush()

    def update(self, ids: Iterable[str]) -> None:
        for id in ids:
            self.add(id)

    @_failing
    def _flush(self) -> None:
        if self._pending:
            if self._indexed and len(self._pending) >= _BUFFER:
                # Many more after a question: built again at the next one, sooner than kept up.
                self._db.execute("DROP INDEX ids_id")
                self._indexed = False
            self._db.executemany("INSERT INTO ids VALUES (?)", self._pending)
            self._pending = []

    @_failing
    def _ready(self) -> sqlite3.Connection:
        self._flush()
        if not self._indexed:
            self._db.execute("CREATE INDEX ids_id ON ids (id)")
            self._indexed = True
        return self._db

    @_failing
    def absent(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` not in the spool, in their order."""
        db = self._ready()
        there: set[str] = set()
        for chunk in chunks(ids, _CHUNK):
            marks = ",".join("?" * len(chunk))
            there.update(r[0] for r in db.execute(f"SELECT id FROM ids WHERE id IN ({marks})", chunk))
        return [i for i in ids if i not in there]

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and not self.absent([id])

    @_failing
    def __len__(self) -> int:
        # Counted over the index's groups: count(DISTINCT) builds a B-tree of its own.
        return int(self._ready().execute("SELECT count(*) FROM (SELECT 1 FROM ids GROUP BY id)").fetchone()[0])

    @_failing
    def __bool__(self) -> bool:
        self._flush()
        return self._db.execute("SELECT 1 FROM ids LIMIT 1").fetchone() is not None

    def __iter__(self) -> Iterator[str]:
        return (r[0] for r in _rows(self._ready(), "SELECT DISTINCT id FROM ids ORDER BY id"))

    def close(self) -> None:
        self._pending = []
        self._db.close()


class EntrySpool:
    """Entries by key (an entry's sync UUID): a later ``put`` of a key replaces the entry
    and keeps its place. Iterated in the order the keys were first put. An entry is any
    value ``marshal`` writes (an LDAP entry: its DN and attributes of byte strings),
    sealed in the database (the module's docstring)."""

    def __init__(self) -> None:
        self._db = _database("CREATE TABLE entries (key TEXT NOT NULL UNIQUE, entry BLOB NOT NULL)")
        self._pending: list[tuple[str, bytes]] = []
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._puts = 0

    def put(self, key: str, entry: Any) -> None:
        self._puts += 1
        nonce = self._puts.to_bytes(_NONCE, "big")
        self._pending.append((key, nonce + self._aead.encrypt(nonce, marshal.dumps(entry), key.encode())))
        if len(self._pending) >= _BUFFER:
            self._flush()

    @_failing
    def _flush(self) -> None:
        if self._pending:
            self._db.executemany("INSERT INTO entries (key, entry) VALUES (?, ?) "
                                 "ON CONFLICT (key) DO UPDATE SET entry = excluded.entry", self._pending)
            self._pending = []

    @_failing
    def __len__(self) -> int:
        self._flush()
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def keys(self) -> Iterator[str]:
        self._flush()
        return (r[0] for r in _rows(self._db, "SELECT key FROM entries ORDER BY rowid"))

    def items(self) -> Iterator[tuple[str, Any]]:
        self._flush()
        rows = _rows(self._db, "SELECT key, entry FROM entries ORDER BY rowid")
        return ((key, self._open(key, sealed)) for key, sealed in rows)

    def _open(self, key: str, sealed: bytes) -> Any:
        try:
            plain = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], key.encode())
        except (InvalidTag, TypeError, ValueError):  # altered, cut short, or no longer a byte string
            raise RunAborted("the read's spool (a temporary SQLite database under SQLITE_TMPDIR, TMPDIR or "
                             "/var/tmp) was altered: an entry read back from it is not the one put there, "
                             "and nothing more of it is applied") from None
        return marshal.loads(plain)

    def close(self) -> None:
        self._pending = []
        self._db.close()
