"""What the connectors of files (CSV, XML) share: writers taking turns on a file, a
file replaced whole and atomically, and telling a file written in place while read."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Generic, TextIO, TypeVar

import structlog

from idsync.errors import ObjectError, ObjectRejected, PeerError
from idsync.query.evaluate import matches
from idsync.resource import UNREADABLE, Obj, QuerySpec, WriteOp, WriteResult, failed

__all__ = ["ById", "apply_each", "checked_text", "file_version", "locked", "once_each", "paged", "replace_file",
           "typed", "wanted_fields"]

T = TypeVar("T")
log = structlog.get_logger("idsync.connectors.files")


class ById(Generic[T]):
    """A file's entries by id, read once per version of the file (its inode, size and
    modification time): a recon reads its targets by id a page at a time, and a read of
    the whole file per page would make a run's cost grow with the square of the file.
    It holds the file's entries while the file is unchanged (the files such systems
    exchange are thousands to tens of thousands of entries)."""

    def __init__(self, path: Path, read: Callable[[], Iterable[tuple[str, T]]]) -> None:
        self._path = path
        self._read = read
        self._version: tuple[int, int, int] | None = None
        self._entries: dict[str, T] = {}

    def get(self) -> dict[str, T]:
        version = _stat(self._path)
        if version is None or version != self._version:
            entries: dict[str, T] = {}
            for key, entry in self._read():
                entries.setdefault(key, entry)
            # Kept only when the file did not change while it was read.
            self._version, self._entries = (version if _stat(self._path) == version else None), entries
            return entries
        return self._entries

    def objects(self, ids: Sequence[str], fields: Sequence[str] | None,
                make: Callable[[T, set[str] | None], Obj]) -> dict[str, Obj]:
        """``Resource.get_many`` from the entries: each id's object, ``make`` building it with
        the fields asked for; an entry that fails to be read is left out."""
        wanted = None if fields is None else set(fields)
        entries = self.get() if ids else {}
        found = {i: make(entries[i], wanted) for i in dict.fromkeys(ids) if i in entries}
        return {i: obj for i, obj in found.items() if "_id" in obj and UNREADABLE not in obj}


def apply_each(ops: Sequence[WriteOp], apply: Callable[[WriteOp], WriteResult], resource: str,
               event: str) -> list[WriteResult]:
    """Each op of a batch applied to the file's entries in memory; an ``ObjectError`` fails
    that op alone (logged as ``event``), the others go on."""
    results: list[WriteResult] = []
    for op in ops:
        try:
            results.append(apply(op))
        except ObjectError as error:
            log.warning(event, resource=resource, kind=op.kind, id=op.id, error=str(error))
            results.append(failed(op, error))
    return results


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def checked_text(name: str, kind: str, text: str) -> str:
    """``text`` about to be written for a property of the JSON type ``kind``, once it is
    known to read back as one (a row or object that could not be read again would fail
    every later read of it): ObjectRejected naming the property otherwise."""
    if text:
        try:
            typed(name, kind, text)
        except ValueError as exc:
            raise ObjectRejected(str(exc)) from None
    return text


def typed(name: str, kind: str, text: str) -> Any:
    """A file's text as a value of the JSON type ``kind`` (``boolean``: true/false, 1/0,
    yes/no; ``integer``; ``number``; anything else: the text); ValueError naming the
    property ``name`` when it is not one."""
    if kind == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{name}: {text!r} is not a boolean")
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not an integer") from None
    if kind == "number":
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a number") from None
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return text


def wanted_fields(spec: QuerySpec) -> set[str] | None:
    """The properties to make of each object read for ``spec``: all of them where a
    filter must see them (or none is named)."""
    return None if spec.fields is None or spec.filter is not None else set(spec.fields)


def once_each(objects: Iterable[tuple[Obj, str]]) -> Iterator[Obj]:
    """The objects read from a file, each with where it was read (``hr.csv, line 7``); an
    id read again fails the later entry (named with the first): two entries of one id
    are a mistake in the file, and applying both would make the target follow whichever
    came last. Reads by id take the first too (``ById``)."""
    seen: dict[str, str] = {}
    for obj, where in objects:
        object_id = obj.get("_id")
        if object_id is not None:
            first = seen.setdefault(object_id, where)
            if first != where:
                obj = {"dn": f"{where}: the id {object_id!r} again (first at {first.rpartition(', ')[2]})"}
        yield obj


def paged(objects: Iterable[Obj], spec: QuerySpec) -> Iterator[list[Obj]]:
    """The objects ``spec``'s filter matches (an object without an id, which failed to be
    read, only where there is no filter), with its fields, in pages of its page size."""
    page: list[Obj] = []
    for obj in objects:
        if spec.filter is not None:
            if "_id" not in obj or not matches(spec.filter, obj):
                continue
            if spec.fields is not None:
                obj = {k: v for k, v in obj.items() if k == "_id" or k in spec.fields}
        page.append(obj)
        if len(page) >= spec.page_size:
            yield page
            page = []
    if page:
        yield page


@contextlib.contextmanager
def locked(path: Path, kind: str) -> Iterator[None]:
    """Held while a batch reads ``path`` and replaces it, so writers take turns. The lock
    is the directory's: the file itself is replaced, and a lock on the file replaced
    would let the next writer in while the one after it locks the new file."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise PeerError(f"{kind} file {path}: its directory cannot be opened: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def replace_file(path: Path, kind: str, write: Callable[[TextIO], None], *, encoding: str, newline: str) -> None:
    """``path``'s new content, from ``write``: written beside it, flushed to disk, given
    the old file's permissions and renamed over it, so that a reader sees the old file
    or the new one and a failure leaves the old one."""
    directory = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with open(fd, "w", encoding=encoding, newline=newline) as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise PeerError(f"{kind} file {path} could not be written: {exc.strerror}") from None
    except UnicodeEncodeError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise PeerError(f"{kind} file {path}: a value cannot be written as {encoding} ({exc.reason})") from None


def file_version(handle: IO[str] | IO[bytes]) -> tuple[int, int]:
    """The size and modification time of an open file: read before and after a read, they
    tell a file written in place meanwhile (a writer that replaces the file, as idsync
    does, leaves the file a read opened as it was)."""
    stat = os.fstat(handle.fileno())
    return stat.st_size, stat.st_mtime_ns
