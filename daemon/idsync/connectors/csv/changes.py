"""liveSync for a CSV file: what changed since a token, found by comparing the file
with a copy of it taken when the token was made (OpenICF's CSV connector keeps such
copies too: ``syncFileRetentionCount``).

A token is ``csv:1:`` and the SHA-256 of the file's bytes; the copy is
``<state>/csv/<system>/<sha256>.csv``, written whole before its name appears (a
temporary name, flushed, renamed). ``latest_token`` copies the file and answers its
token, without reading any row. ``read_changes`` copies the file as it is now
(one open: a writer replaces the file by renaming, so the copy is one version of
it), and when its digest equals the token's answers one empty batch; otherwise it
compares the two copies by row: a row whose id is new, or whose columns differ, is a
change (the object as it is now); an id the old copy has and the new one does not is
a delete; a row renamed (a new ``headerUid`` value) is both. Only each old row's id
and digest are held in memory, the new copy is streamed. The changes come in batches
of ``page_size``; only the last carries the new token, so a run that stops early
keeps the old one (and applies its changes again: harmless).

A token whose copy is gone (more tokens made since than ``syncFileRetentionCount``
keeps, the state directory emptied) or that this connector did not make raises
``SyncTokenExpired``: a full recon follows. A new copy with a row that has no id, the
wrong number of fields, or the id of an earlier row stops the read (``PeerError``
naming the line): its row could be any of the old ones, so no delete can be told
apart from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from idsync.errors import PeerError, SyncTokenExpired
from idsync.resource import UNREADABLE, Change, ChangeBatch, ChangeFeed, Obj

__all__ = ["CsvChanges"]

_PREFIX = "csv:1:"

# (header, line number, fields) of each row of a file; an object of a row with the fields asked for.
Rows = Callable[[Path], Iterator[tuple[list[str], int, list[str]]]]
ToObject = Callable[[list[str], int, list[str], set[str] | None], Obj]


class CsvChanges:
    def __init__(self, source: Path, state: Path, keep: int, uid: str, rows: Rows, to_object: ToObject) -> None:
        self.source = source
        self.state = state
        self.keep = max(keep, 1)
        self.uid = uid
        self._rows = rows
        self._object = to_object

    def latest_token(self) -> str:
        return _PREFIX + self._copy().stem

    def read(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        digest = token.removeprefix(_PREFIX)
        old = self.state / f"{digest}.csv"
        if not token.startswith(_PREFIX) or len(digest) != 64 or not old.is_file():
            raise SyncTokenExpired(f"liveSync of {self.source.name}: the copy of the file this token names is gone "
                                   "(or the token is not a CSV one)")
        new = self._copy(keeping=old)
        if new == old:
            return ChangeFeed([ChangeBatch([], token)], method="file comparison")
        wanted = None if fields is None else {*fields, "_id"}
        return ChangeFeed(self._batches(old, new, wanted, page_size, _PREFIX + new.stem), method="file comparison")

    def _batches(self, old: Path, new: Path, wanted: set[str] | None, page_size: int,
                 token: str) -> Iterator[ChangeBatch]:
        before: dict[str, bytes] = {}
        for row_id, row_digest, _, _ in self._digests(old):
            before.setdefault(row_id, row_digest)
        changes: list[Change] = []
        for row_id, row_digest, header, (number, fields) in self._digests(new):
            if before.pop(row_id, None) == row_digest:
                continue
            obj = self._object(header, number, fields, wanted)
            if UNREADABLE in obj:
                raise PeerError(f"liveSync of {self.source.name}: {obj[UNREADABLE]}; fix it, or reconcile (that "
                                "fails the row alone)")
            changes.append(Change(row_id, obj))
            if len(changes) >= page_size:
                yield ChangeBatch(changes, None)
                changes = []
        for row_id in before:
            changes.append(Change(row_id, None))
            if len(changes) >= page_size:
                yield ChangeBatch(changes, None)
                changes = []
        yield ChangeBatch(changes, token)

    def _digests(self, path: Path) -> Iterator[tuple[str, bytes, list[str], tuple[int, list[str]]]]:
        """(id, digest of the row's columns, header, (line, fields)) of each row of a copy."""
        at: int | None = None
        seen: dict[str, int] = {}
        for header, number, fields in self._rows(path):
            if at is None:
                at = header.index(self.uid)
            if len(fields) != len(header) or not fields[at]:
                raise PeerError(f"liveSync of {self.source.name}: line {number} has no {self.uid} or not "
                                f"{len(header)} fields; fix it, or reconcile (that fails the row alone)")
            first = seen.setdefault(fields[at], number)
            if first != number:
                # Which of the two is the object? A recon takes the first; a change cannot tell.
                raise PeerError(f"liveSync of {self.source.name}: line {number} repeats the {self.uid} of line "
                                f"{first}; fix it, or reconcile (that fails the later row alone)")
            text = "\x1f".join(f"{h}\x1e{v}" for h, v in sorted(zip(header, fields, strict=True)))
            yield fields[at], hashlib.blake2b(text.encode(), digest_size=16).digest(), header, (number, fields)

    def _copy(self, keeping: Path | None = None) -> Path:
        """A copy of the file as it is now, named by its SHA-256; the oldest copies beyond
        ``keep`` removed (never ``keeping`` nor the new one)."""
        self.state.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        try:
            source = open(self.source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise PeerError(f"csv file {self.source} cannot be read: {exc.strerror}") from None
        fd, temp = tempfile.mkstemp(prefix=".copy.", dir=self.state)
        try:
            with source, open(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            path = self.state / f"{sha.hexdigest()}.csv"
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise PeerError(f"liveSync of {self.source.name}: no copy could be kept in {self.state}: "
                            f"{exc.strerror}") from None
        os.utime(path)  # the newest, for the count of copies kept
        copies = sorted(self.state.glob("*.csv"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in copies[self.keep:]:
            if stale not in (path, keeping):
                with contextlib.suppress(OSError):
                    stale.unlink()
        return path
