"""The CSV connector: the rows of one delimited text file (OpenICF's CSV file
connector, ``provisioner.openicf-<name>.json``, see ``config``) as
``system/<name>/account``.

The first row names the columns. Each row is an object whose ``_id`` (and
``__NAME__``) is its ``headerUid`` column; a column holds one value, text read as
the property's type (``boolean``, ``integer``, ``number``; an empty cell is no
value). The password column is written, never read back.

Reads stream the file, a page at a time; a ``_queryFilter`` is evaluated on each
row. The file is only read through to its end: a quoting error, a bad encoding, a
missing column or the file written in place while it is read fails the read (a
recon then deletes nothing); a row whose field
count differs from the header's, or that has no id, fails alone, as an object
without an id (a recon then skips its target phase); one with a value not of its
property's type fails alone by its id (``resource.UNREADABLE``; a read by id leaves
it out).

Writes take an exclusive lock on the file (``flock``), read it through once per
batch, and replace it by a complete new copy (written beside it, flushed to disk,
renamed over it): a reader sees the old file or the new one, never half of each,
and a failed write leaves the old one. Creates go at the end; a row keeps its
place and its columns' order; a value for a column the header lacks fails its
object, as does a create whose id a row already has. Changing the ``headerUid``
column renames the object (its ``_id`` changes; a link follows it).

liveSync compares the file with a copy taken when the token was made (``changes.py``).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from idsync.connectors.base import System, object_type_named, refuse_native, system_test_report
from idsync.connectors.csv.changes import CsvChanges
from idsync.connectors.csv.config import CsvObjectType, CsvProperty, CsvSettings, parse_csv_config
from idsync.connectors.files import (
    ById,
    apply_each,
    checked_text,
    file_version,
    locked,
    once_each,
    paged,
    replace_file,
    typed,
    wanted_fields,
)
from idsync.errors import ConfigError, IdsyncError, NotFound, ObjectRejected, PeerError
from idsync.resource import UNREADABLE, ChangeFeed, ChangeSource, Obj, QuerySpec, Resource, WriteOp, WriteResult

__all__ = ["CsvResource", "CsvSystem", "open_csv_system"]


class CsvFile:
    """The file of one CSV system: reading its rows and replacing it whole."""

    def __init__(self, settings: CsvSettings) -> None:
        self.settings = settings
        self.path = settings.file

    def _open(self, path: Path | None = None) -> TextIO:
        encoding = "utf-8-sig" if self.settings.encoding.lower().replace("_", "-") in ("utf-8", "utf8") \
            else self.settings.encoding
        try:
            return open(path or self.path, encoding=encoding, newline="")
        except FileNotFoundError:
            raise PeerError(f"csv file {self.path} does not exist") from None
        except OSError as exc:
            raise PeerError(f"csv file {self.path} cannot be read: {exc.strerror}") from None

    def _reader(self, handle: TextIO) -> Iterator[list[str]]:
        reader = csv.reader(handle, delimiter=self.settings.delimiter, quotechar=self.settings.quote,
                            skipinitialspace=True, strict=True)
        try:
            yield from reader
        except csv.Error as exc:
            raise PeerError(f"csv file {self.path}, line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise PeerError(f"csv file {self.path}, line {reader.line_num + 1}: not {self.settings.encoding} "
                            f"text ({exc.reason})") from None

    def rows(self, path: Path | None = None) -> Iterator[tuple[list[str], int, list[str]]]:
        """(header, line number, fields) of each non-empty row, read through to the end;
        of the file, or of a copy of it at ``path``."""
        with self._open(path) as handle:
            before = file_version(handle)
            lines = self._reader(handle)
            header = self._header(next(lines, None))
            for number, fields in enumerate(lines, start=2):
                if fields and any(fields):
                    yield header, number, fields
            if file_version(handle) != before:
                # The rows read may be half of one version and half of another, or cut short.
                raise PeerError(f"csv file {self.path} changed while it was read (written in place); "
                                "nothing read is used: read it again once it is complete")

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The header and every row, in one read (a batch of writes rewrites them all)."""
        read: list[tuple[list[str], int, list[str]]] = list(self.rows())
        return (read[0][0] if read else self.header()), [fields for _, _, fields in read]

    def header(self) -> list[str]:
        with self._open() as handle:
            return self._header(next(self._reader(handle), None))

    def _header(self, fields: list[str] | None) -> list[str]:
        if not fields:
            raise PeerError(f"csv file {self.path} has no header row")
        header = [f.strip() for f in fields]
        seen: set[str] = set()
        for name in header:
            if not name or name in seen:
                raise PeerError(f"csv file {self.path}: the header has {'an empty' if not name else 'a repeated'} "
                                f"column name{f' {name!r}' if name else ''}")
            seen.add(name)
        if self.settings.uid not in seen:
            raise PeerError(f"csv file {self.path}: no {self.settings.uid!r} column (headerUid) in the header")
        return header

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path, "csv")

    def replace(self, header: list[str], rows: Iterator[list[str]]) -> None:
        """Write ``header`` and ``rows`` as the file's new content, atomically."""
        def write(out: TextIO) -> None:
            writer = csv.writer(out, delimiter=self.settings.delimiter, quotechar=self.settings.quote,
                                quoting=csv.QUOTE_ALL, lineterminator=self.settings.newline)
            writer.writerow(header)
            writer.writerows(rows)

        replace_file(self.path, "csv", write, encoding=self.settings.encoding, newline="")


class CsvResource(Resource, ChangeSource):
    """The rows of the file, as one object type; its changes are read by ``changes.py``
    (copies of the file kept in ``state``)."""

    def __init__(self, system: str, file: CsvFile, obj_type: CsvObjectType, state: Path, *,
                 dry_run: bool = False) -> None:
        self.name = f"system/{system}/{obj_type.name}"
        self.dry_run = dry_run
        self.renames_ids = True
        self._file = file
        self._type = obj_type
        self._uid = file.settings.uid
        self._password = file.settings.password
        self.write_only = frozenset({p.name for p in obj_type.properties
                                     if not p.readable or p.column == self._password}
                                    if obj_type.properties else {self._password})
        # The type a read makes of each readable property's text (``stored``).
        self._kinds = {p.name: p.type for p in obj_type.properties if p.readable and p.column != self._password}
        self._changes = CsvChanges(file.path, state, file.settings.keep, self._uid, file.rows, self._object)
        self._by_id = ById(file.path, self._rows_by_id)

    # liveSync ----------------------------------------------------------------

    def latest_token(self) -> str:
        return self._changes.latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        return self._changes.read(token, fields, page_size)

    # reading -----------------------------------------------------------------

    def _properties(self, header: list[str]) -> Sequence[CsvProperty]:
        """The object type's properties, or, where it lists none, one per column."""
        if self._type.properties:
            return self._type.properties
        return [CsvProperty(c, c, "string", False, frozenset()) for c in header if c != self._password]

    def _object(self, header: list[str], number: int, fields: list[str], wanted: set[str] | None) -> Obj:
        where = f"{self._file.path.name}, line {number}"
        if len(fields) != len(header):
            return {"dn": f"{where}: {len(fields)} fields, the header has {len(header)}"}
        row = dict(zip(header, fields, strict=True))
        uid = row[self._uid]
        if not uid:
            return {"dn": f"{where}: the {self._uid} column is empty"}
        obj: Obj = {"_id": uid}
        for prop in self._properties(header):
            if prop.column == self._password or not prop.readable or prop.column not in row:
                continue
            if wanted is not None and prop.name not in wanted:
                continue
            text = row[prop.column]
            if text == "":
                continue
            try:
                obj[prop.name] = typed(prop.name, prop.type, text)
            except ValueError as exc:
                return {"_id": uid, UNREADABLE: f"{where}: {exc}"}
        return obj

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        refuse_native(spec, self.name, "CSV")
        wanted = wanted_fields(spec)
        name = self._file.path.name
        return paged(once_each((self._object(header, number, fields, wanted), f"{name}, line {number}")
                               for header, number, fields in self._file.rows()), spec)

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        return self._by_id.objects(ids, fields, lambda row, wanted: self._object(*row, wanted))

    def _rows_by_id(self) -> Iterator[tuple[str, tuple[list[str], int, list[str]]]]:
        for header, number, fields in self._file.rows():
            at = header.index(self._uid)
            if len(fields) == len(header) and fields[at]:
                yield fields[at], (header, number, fields)

    def stored(self, values: Obj) -> Obj:
        """``values`` as a write leaves them in the file and a read answers them: ``"true"``
        for a boolean property is true, ``"5010"`` for an integer one 5010, 5 for a string
        one ``"5"``, an empty text no value."""
        out: Obj | None = None
        for name, value in values.items():
            kind = self._kinds.get(name) if self._type.properties else \
                (None if name in ("_id", self._password) else "string")
            if kind is None or value is None or (type(value) is str and value and kind == "string"):
                continue  # (the common case, decided without a conversion)
            try:
                text = _text(name, value)
                read = typed(name, kind, text) if text else None
            except (ValueError, ObjectRejected):
                continue
            if type(read) is not type(value) or read != value:
                out = dict(values) if out is None else out
                out[name] = read
        return values if out is None else out

    def count(self) -> int | None:
        return sum(1 for _ in self._file.rows())

    # writing -----------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        with self._file.locked():
            header, rows = self._file.table()
            at = header.index(self._uid)
            index: dict[str, int] = {}
            for i, fields in enumerate(rows):
                if len(fields) == len(header) and fields[at]:
                    index.setdefault(fields[at], i)  # the first row of an id, as reads take it
            props = {p.name: p for p in self._properties(header)}
            results = apply_each(ops, lambda op: self._apply(op, header, props, rows, index), self.name,
                                 "csv.write_failed")
            if any(r.ok for r in results):
                self._file.replace(header, (fields for fields in rows if fields is not _DELETED))
        return results

    def _apply(self, op: WriteOp, header: list[str], props: Mapping[str, CsvProperty], rows: list[list[str]],
               index: dict[str, int]) -> WriteResult:
        if op.kind == "create":
            fields = [""] * len(header)
            self._set(fields, header, props, op.values, "NOT_CREATABLE")
            uid = fields[header.index(self._uid)]
            if not uid:
                raise ObjectRejected(f"{self.name}: a create needs a value for the {self._uid} column")
            empty = [p.name for p in props.values() if p.required and p.column in header
                     and p.column != self._uid and not fields[header.index(p.column)]]
            if empty:
                raise ObjectRejected(f"{self.name}: a create needs {', '.join(empty)} (required)")
            if uid in index:
                raise ObjectRejected(f"{self.name}: a row with {self._uid} {uid!r} exists already")
            rows.append(fields)
            index[uid] = len(rows) - 1
            return WriteResult(op, id=uid, obj=self._object(header, 0, fields, None))
        at = index.get(op.id or "")
        if at is None:
            raise NotFound(f"{self.name}/{op.id}: no such row")
        if op.kind == "delete":
            rows[at] = _DELETED
            del index[op.id or ""]
            return WriteResult(op, id=op.id)
        fields = list(rows[at])
        self._set(fields, header, props, op.values, "NOT_UPDATEABLE")
        uid = fields[header.index(self._uid)]
        if not uid:
            raise ObjectRejected(f"{self.name}/{op.id}: the {self._uid} column cannot be emptied")
        if uid != op.id:
            if uid in index:
                raise ObjectRejected(f"{self.name}/{op.id}: a row with {self._uid} {uid!r} exists already")
            del index[op.id or ""]
            index[uid] = at
        rows[at] = fields
        return WriteResult(op, id=uid, obj=self._object(header, 0, fields, None))

    def _set(self, fields: list[str], header: list[str], props: Mapping[str, CsvProperty], values: Obj,
             unless: str) -> None:
        """Write ``values`` into a row; a property flagged ``unless`` (``NOT_CREATABLE`` on a
        create, ``NOT_UPDATEABLE`` on an update) is left as it is, as OpenICF does."""
        for name, value in values.items():
            if name == "_id":
                continue  # a row's id is its uid column, written through __NAME__
            prop = props.get(name)
            if prop is None:
                raise ObjectRejected(f"{self.name}: no property {name!r} in objectTypes.{self._type.name}")
            if unless in prop.flags:
                continue
            if prop.column not in header:
                raise ObjectRejected(f"{self.name}: the file has no {prop.column!r} column for {name!r}")
            fields[header.index(prop.column)] = checked_text(name, prop.type, _text(name, value))


class _Deleted(list[str]):
    """The place of a deleted row until the file is written."""


_DELETED = _Deleted()


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and len(value) <= 1:
        return _text(name, value[0]) if value else ""
    raise ObjectRejected(f"{name}: a CSV column holds one value, not {type(value).__name__}")


class CsvSystem(System):
    """One configured CSV file."""

    def __init__(self, name: str, config: Mapping[str, Any], *, file: str, base: Path, state: Path) -> None:
        self.name = name
        self._state = state
        self._config = config
        self._conf_file = file
        self._settings = parse_csv_config(file, config, base)
        self._file = CsvFile(self._settings)

    def resource(self, object_type: str, *, dry_run: bool = False) -> CsvResource:
        obj_type = object_type_named(self._settings.types, object_type, self._conf_file)
        return CsvResource(self.name, self._file, obj_type, self._state / "csv" / self.name, dry_run=dry_run)

    def warnings(self) -> list[ConfigError]:
        return list(self._settings.warnings)

    def test(self) -> Mapping[str, Any]:
        report = system_test_report(self.name, self._config, "CSV File Connector", list(self._settings.types))
        try:
            header = self._file.header()
            missing = sorted({p.column for t in self._settings.types.values() for p in t.properties
                              if p.column not in header and p.column != self._settings.password})
            report["csv"] = {"file": str(self._settings.file), "columns": header}
            if missing:
                report.failed(PeerError(f"csv file {self._settings.file}: no column {', '.join(missing)} "
                                        "for the properties objectTypes names"))
        except IdsyncError as error:
            report.failed(error)
        return report


def open_csv_system(name: str, config: Mapping[str, Any], *, file: str, base: Path, state: Path) -> CsvSystem:
    """The connector registry's entry point for ``org.forgerock.openicf.csvfile.CSVFileConnector``;
    ``base``: what a relative ``csvFile`` is under; ``state``: where liveSync keeps its copies."""
    return CsvSystem(name, config, file=file, base=base, state=state)

