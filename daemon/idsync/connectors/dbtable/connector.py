"""The Database Table connector: the rows of one table of a SQL database (OpenICF's
``DatabaseTableConnector``, ``provisioner.openicf-<name>.json``, see ``config``) as
``system/<name>/account``, in PostgreSQL, MySQL, MariaDB or SQLite.

Each row is an object whose ``_id`` (and ``__NAME__``, ``__UID__``) is its
``keyColumn`` value as text; each property is one column, read as its property's
type (``values.py``). The password column is written, never read back. A row whose
key is NULL is no object; one whose key is empty fails alone.

Reads go in keyset pages ordered by the key (``key > last ... ORDER BY key LIMIT
n``), each its own short query: neither the table nor a transaction is held across a
run. A ``_queryFilter`` becomes the ``WHERE`` clause (``filters.py``) and ``fields``
the columns selected; ``get_many`` asks for up to 500 keys per query. A failure of
the database raises ``PeerError`` (a recon then deletes nothing). A value not of its
property's type fails its row alone: a listing answers the row's id and why
(``resource.UNREADABLE``), a read by key leaves it out. A key column without a unique constraint may
hold a key twice: a listing looks for such keys first, fails each alone, and leaves
its rows out.

A batch of writes is one transaction, each op in a savepoint of its own: an op the
database refuses (a constraint, a value its column does not take) is rolled back and
fails alone, naming the object; the others are committed together when the batch
ends. The batch's creates go first as one multi-row ``INSERT`` in a savepoint (a
first load writes a page a statement); if the database refuses it, each of them is
tried on its own as above, so the one it refuses fails alone. A lost connection, a
deadlock or a failed commit fails the whole batch (``PeerError``) and writes none of
it. A create needs its key (the ``__NAME__`` property) and each ``required``
property; an update changing the key column renames the row (its ``_id`` changes; a
link follows). A property flagged ``NOT_CREATABLE`` is left out of a create and one
flagged ``NOT_UPDATEABLE`` out of an update, as OpenICF does.

liveSync reads the rows whose ``changeLogColumn`` moved past the token (``changes.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from idsync.connectors.base import System, object_type_named, refuse_native, system_test_report
from idsync.connectors.dbtable.changes import DbTableChanges
from idsync.connectors.dbtable.config import DbObjectType, DbProperty, parse_dbtable_config
from idsync.connectors.dbtable.filters import to_condition
from idsync.connectors.dbtable.table import Col, DbTable
from idsync.connectors.dbtable.values import from_column, id_text, iso_text, property_type, to_column
from idsync.errors import ConfigError, IdsyncError, NotFound, ObjectError, ObjectRejected, PeerError
from idsync.query.ast import Path as QueryPath
from idsync.resource import (
    UNREADABLE,
    ChangeFeed,
    ChangeSource,
    Obj,
    QuerySpec,
    Resource,
    WriteOp,
    WriteResult,
    failed,
)

__all__ = ["DbTableResource", "DbTableSystem", "open_dbtable_system"]

log = structlog.get_logger(__name__)

_CHUNK = 500
_MAX_SHARED = 1000
# MySQL and MariaDB refuse some values with errors PyMySQL calls operational: a date or number
# that does not parse, a CHECK constraint.
_MYSQL_VALUE_ERRORS = frozenset({1048, 1264, 1265, 1292, 1366, 1406, 3819, 4025})
_TEMPORAL = ("datetime", "date", "time")


class DbTableResource(Resource, ChangeSource):
    """The rows of the table, as one object type."""

    def __init__(self, system: str, table: DbTable, obj_type: DbObjectType, *, dry_run: bool = False) -> None:
        self.name = f"system/{system}/{obj_type.name}"
        self.dry_run = dry_run
        self.renames_ids = True
        self._table = table
        self._type = obj_type
        password = table.settings.password
        self.write_only = frozenset({p.name for p in obj_type.properties if not p.readable or p.column == password}
                                    if obj_type.properties else ({password} if password else set()))
        self._props: list[tuple[DbProperty, Col]] | None = None
        self._read: list[tuple[DbProperty, Col]] | None = None
        self._forms: dict[str, tuple[DbProperty, Col, bool]] | None = None
        self._changes = DbTableChanges(self.name, table, self._selected, self._object)

    # liveSync ----------------------------------------------------------------

    def latest_token(self) -> str:
        return self._changes.latest_token()

    def read_changes(self, token: str, fields: Sequence[str] | None, page_size: int) -> ChangeFeed:
        return self._changes.read(token, fields, page_size)

    # the columns ---------------------------------------------------------------

    def _properties(self) -> list[tuple[DbProperty, Col]]:
        """Each property and its column; where objectTypes lists none, one per column."""
        if self._props is None:
            shape = self._table.shape()
            if self._type.properties:
                self._props = [(p, shape.named[p.column]) for p in self._type.properties]
            else:
                self._props = [(DbProperty(c.name, c.name, property_type(c.kind), False, frozenset()), c)
                               for c in shape.columns]
        return self._props

    def _readable(self) -> list[tuple[DbProperty, Col]]:
        """The properties a read returns: all but the password and those flagged unreadable."""
        if self._read is None:
            password = self._table.shape().password
            self._read = [(p, c) for p, c in self._properties()
                          if p.readable and (password is None or c.name != password.name)]
        return self._read

    def _stored_as(self) -> dict[str, tuple[DbProperty, Col, bool]]:
        """The readable properties by name, each with its column and whether text stays as
        it is there (a string property of a text column: only an empty text changes)."""
        if self._forms is None:
            self._forms = {p.name: (p, c, p.type == "string" and c.kind in ("text", "other"))
                           for p, c in self._readable()}
        return self._forms

    def _selected(self, wanted: set[str] | None) -> list[ColumnElement[Any]]:
        key = self._table.shape().key
        columns = {key.name: key}
        for prop, col in self._readable():
            if wanted is None or prop.name in wanted:
                columns.setdefault(col.name, col)
        return [c.read(self._table.sqlite) for c in columns.values()]

    def _column_of(self, path: QueryPath) -> Col | None:
        if len(path) != 1:
            return None
        if path[0] == "_id":
            return self._table.shape().key
        return next((c for p, c in self._readable() if p.name == path[0]), None)

    def _key_value(self, object_id: str | None) -> Any:
        """The key column's value of an ``_id``; None when it cannot be one."""
        key = self._table.shape().key
        try:
            return to_column(key.name, key.kind, object_id, aware=key.aware, empty_strings=True)
        except ValueError:
            return None

    # reading -----------------------------------------------------------------

    def _object(self, row: Mapping[Any, Any], wanted: set[str] | None) -> Obj:
        key = self._table.shape().key
        raw = row[key.name]
        if raw is None or raw == "":
            return {"dn": f"{self._table.description}: a row whose {key.name} is empty"}
        obj: Obj = {"_id": id_text(raw)}
        for prop, col in self._readable():
            if (wanted is not None and prop.name not in wanted) or col.name not in row:
                continue
            value = row[col.name]
            if value is None:
                continue
            if self._table.sqlite and col.kind in _TEMPORAL:
                value = iso_text(value, col.kind)
            try:
                obj[prop.name] = from_column(prop.name, prop.type, value)
            except ValueError as exc:
                return {"_id": obj["_id"], UNREADABLE: f"{self._table.description}, {key.name} {obj['_id']!r}: {exc}"}
        return obj

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        refuse_native(spec, self.name, "Database Table")
        return self._pages(spec)

    def _pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        shape = self._table.shape()
        key = shape.key.column
        wanted = None if spec.fields is None else set(spec.fields)
        statement = select(*self._selected(wanted)).where(key.is_not(None))
        if spec.filter is not None:
            statement = statement.where(to_condition(spec.filter, self._column_of))
        elif not shape.key_unique:
            shared = self._shared_keys()
            for start in range(0, len(shared), spec.page_size):
                yield [{"dn": f"{self._table.description}: several rows have {shape.key.name} {k!r}; none of "
                        "them is read (keyColumn needs a unique constraint)"}
                       for k in shared[start:start + spec.page_size]]
            if shared:
                statement = statement.where(key.not_in(shared))
        size = max(spec.page_size, 1)
        last: Any = None
        while True:
            page = statement if last is None else statement.where(key > last)
            rows = self._table.fetch(page.order_by(key).limit(size), "reading rows")
            if rows:
                yield [self._object(row._mapping, wanted) for row in rows]
            if len(rows) < size:
                return
            last = rows[-1]._mapping[shape.key.name]

    def _shared_keys(self) -> list[Any]:
        key = self._table.shape().key.column
        statement = select(key).where(key.is_not(None)).group_by(key).having(func.count() > 1).limit(_MAX_SHARED + 1)
        shared = [row[0] for row in self._table.fetch(statement, "looking for keys several rows share")]
        if len(shared) > _MAX_SHARED:
            raise PeerError(f"{self.name}: more than {_MAX_SHARED} keys of {self._table.description} are shared by "
                            "several rows: keyColumn must name a column whose values are unique")
        return shared

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        wanted = None if fields is None else set(fields)
        if not ids:
            return {}  # asked for nothing: no connection
        keys = [v for v in (self._key_value(i) for i in dict.fromkeys(ids)) if v is not None]
        key = self._table.shape().key.column
        found: dict[str, Obj] = {}
        for start in range(0, len(keys), _CHUNK):
            statement = select(*self._selected(wanted)).where(key.in_(keys[start:start + _CHUNK]))
            for row in self._table.fetch(statement, "reading rows by key"):
                obj = self._object(row._mapping, wanted)
                if "_id" in obj and UNREADABLE not in obj:
                    found.setdefault(obj["_id"], obj)
        return found

    def stored(self, values: Obj) -> Obj:
        """``values`` as a write leaves them in their columns and a read answers them
        (``values.py``): ``"1001"`` for an integer property of an integer column is 1001,
        5 for a string property ``"5"``, an empty text no value."""
        forms = self._stored_as()
        out: Obj | None = None
        for name, value in values.items():
            found = forms.get(name)
            if found is None or value is None or (type(value) is str and value and found[2]):
                continue  # (the common case, decided without a conversion)
            prop, col, _ = found
            try:
                written = to_column(name, col.kind, value, aware=col.aware,
                                    empty_strings=self._table.settings.empty_strings)
                read = None if written is None else from_column(name, prop.type, written)
            except ValueError:
                continue
            if type(read) is not type(value) or read != value:
                out = dict(values) if out is None else out
                out[name] = read
        return values if out is None else out

    def count(self) -> int | None:
        key = self._table.shape().key.column
        rows = self._table.fetch(select(func.count()).select_from(self._table.shape().table).where(key.is_not(None)),
                                 "counting rows")
        return int(rows[0][0])

    # writing -----------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        props = {p.name: (p, c) for p, c in self._properties()}
        results: list[WriteResult | None] = [None] * len(ops)
        with self._table.begin(f"writing {len(ops)} changes") as conn:
            self._insert_together(conn, ops, props, results)
            for i, op in enumerate(ops):
                if results[i] is not None:
                    continue
                label = f"{self.name}/{op.id or self._create_name(op.values, props) or '(no key)'}"
                try:
                    with conn.begin_nested():
                        results[i] = self._apply(conn, op, props)
                except ObjectError as error:
                    results[i] = self._failed(op, label, type(error)(f"{label}: {error}"))
                except DBAPIError as exc:
                    if not _refused_value(exc):
                        raise
                    secrets = [op.values.get(name) for name in self.write_only]
                    reason = self._table.scrub(self._table.reason(exc), *secrets)
                    results[i] = self._failed(op, label, ObjectRejected(f"{label}: the database refused the "
                                                                        f"{op.kind}: {reason}"))
        return [r for r in results if r is not None]

    def _insert_together(self, conn: Connection, ops: Sequence[WriteOp], props: Mapping[str, tuple[DbProperty, Col]],
                         results: list[WriteResult | None]) -> None:
        """The batch's creates as one multi-row ``INSERT`` per set of columns, in a savepoint
        (a first load is all creates: one statement a page, not three round trips a row).
        A create that is not ready (no key, a required value missing) is left to the
        one-by-one path, which says why; so is every create of a set the database refuses,
        and the whole batch when one of its other ops names a key a create writes (their
        order would matter)."""
        creates = [i for i, op in enumerate(ops) if op.kind == "create"]
        if len(creates) < 2:
            return
        shape = self._table.shape()
        key = shape.key.name
        ready: dict[frozenset[str], list[tuple[int, dict[str, Any]]]] = {}
        for i in creates:
            try:
                values = self._create_values(ops[i], props)
            except ObjectError:
                continue
            ready.setdefault(frozenset(values), []).append((i, values))
        keys = {id_text(values[key]) for group in ready.values() for _, values in group}
        others = {str(op.id) for op in ops if op.kind != "create" and op.id is not None}
        others |= {id_text(v) for op in ops if op.kind == "update"
                   for v in self._renamed_to(op, props)}
        if keys & others or len(keys) < sum(len(g) for g in ready.values()):
            return  # keys shared with other ops, or twice among the creates: one by one, in order
        for group in ready.values():
            if len(group) < 2:
                continue
            try:
                with conn.begin_nested():
                    conn.execute(insert(shape.table), [values for _, values in group])
            except DBAPIError as exc:
                if not _refused_value(exc):
                    raise
                continue  # one of them is refused: each on its own says which
            for i, values in group:
                new_id = id_text(values[key])
                results[i] = WriteResult(ops[i], id=new_id, obj=self._written(new_id, values, props))

    def _renamed_to(self, op: WriteOp, props: Mapping[str, tuple[DbProperty, Col]]) -> list[Any]:
        """The key an update writes, if it renames the row."""
        key = self._table.shape().key.name
        return [value for name, value in op.values.items()
                if name in props and props[name][1].name == key and value is not None]

    def _create_values(self, op: WriteOp, props: Mapping[str, tuple[DbProperty, Col]]) -> dict[str, Any]:
        """The columns a create writes; ``ObjectRejected`` when it cannot be written."""
        key = self._table.shape().key
        values = self._columns(op.values, props, "NOT_CREATABLE")
        if values.get(key.name) is None:
            raise ObjectRejected(f"a create needs a value for the key column {key.name} (the __NAME__ property)")
        empty = [p.name for p, c in props.values() if p.required and "NOT_CREATABLE" not in p.flags
                 and c.name != key.name and values.get(c.name) is None]
        if empty:
            raise ObjectRejected(f"a create needs {', '.join(empty)} (required)")
        return values

    def _failed(self, op: WriteOp, label: str, error: ObjectError) -> WriteResult:
        log.warning("dbtable.write_failed", resource=self.name, kind=op.kind, id=label, error=str(error))
        return failed(op, error)

    def _create_name(self, values: Mapping[str, Any], props: Mapping[str, tuple[DbProperty, Col]]) -> str | None:
        key = self._table.shape().key.name
        named = next((values.get(n) for n, (_, c) in props.items() if c.name == key and values.get(n)), None)
        return str(named) if isinstance(named, str | int) else None

    def _apply(self, conn: Connection, op: WriteOp, props: Mapping[str, tuple[DbProperty, Col]]) -> WriteResult:
        shape = self._table.shape()
        key = shape.key
        if op.kind == "create":
            values = self._create_values(op, props)
            conn.execute(insert(shape.table).values(values))
            new_id = id_text(values[key.name])
            return WriteResult(op, id=new_id, obj=self._written(new_id, values, props))
        current = self._key_value(op.id)
        if current is None:
            raise NotFound("no such row")
        where = key.column == current
        if op.kind == "delete":
            if conn.execute(delete(shape.table).where(where)).rowcount == 0:
                raise NotFound("no such row")
            return WriteResult(op, id=op.id)
        values = self._columns(op.values, props, "NOT_UPDATEABLE")
        if key.name in values and values[key.name] is None:
            raise ObjectRejected(f"the key column {key.name} cannot be emptied")
        if values:
            done = conn.execute(update(shape.table).where(where).values(values)).rowcount
        else:
            done = len(conn.execute(select(key.column).where(where).limit(1)).all())
        if done == 0:
            raise NotFound("no such row")
        new_id = id_text(values[key.name]) if key.name in values else str(op.id)
        return WriteResult(op, id=new_id, obj={**(op.before or {}), **self._written(new_id, values, props)})

    def _columns(self, values: Mapping[str, Any], props: Mapping[str, tuple[DbProperty, Col]],
                 unless: str) -> dict[str, Any]:
        """The column values of an op's ``values``; a property flagged ``unless``
        (``NOT_CREATABLE`` on a create, ``NOT_UPDATEABLE`` on an update) is left out."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name == "_id":
                continue  # a row's id is its key column, written through __NAME__
            found = props.get(name)
            if found is None:
                raise ObjectRejected(f"no property {name!r} in objectTypes.{self._type.name}")
            prop, col = found
            if unless in prop.flags:
                continue
            try:
                column_value = to_column(name, col.kind, value, aware=col.aware,
                                         empty_strings=self._table.settings.empty_strings)
            except ValueError as exc:
                secret = name in self.write_only
                raise ObjectRejected(f"{name}: not a value column {col.name} takes" if secret else str(exc)) from None
            if col.name in out and out[col.name] != column_value:
                raise ObjectRejected(f"two properties write column {col.name} with different values")
            out[col.name] = column_value
        return out

    def _written(self, new_id: str, values: Mapping[str, Any], props: Mapping[str, tuple[DbProperty, Col]]) -> Obj:
        """The object as a read would find it after a write of ``values``."""
        obj: Obj = {"_id": new_id}
        readable = {p.name for p, _ in self._readable()}
        for name, (prop, col) in props.items():
            if name in readable and values.get(col.name) is not None:
                try:
                    obj[name] = from_column(name, prop.type, values[col.name])
                except ValueError:
                    continue
        return obj


def _refused_value(exc: DBAPIError) -> bool:
    """Whether the database refused the one statement's values (a constraint, a value
    its column does not take), not the connection or the transaction."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    return code in _MYSQL_VALUE_ERRORS


class DbTableSystem(System):
    """One configured table."""

    def __init__(self, name: str, config: Mapping[str, Any], *, file: str, base: Path) -> None:
        self.name = name
        self._config = config
        self._file = file
        self._settings = parse_dbtable_config(file, config, base)
        self._table = DbTable(name, file, self._settings)

    def resource(self, object_type: str, *, dry_run: bool = False) -> DbTableResource:
        obj_type = object_type_named(self._settings.types, object_type, self._file)
        return DbTableResource(self.name, self._table, obj_type, dry_run=dry_run)

    def warnings(self) -> list[ConfigError]:
        return list(self._settings.warnings)

    def test(self) -> Mapping[str, Any]:
        """Connects, finds the table and every column the configuration names, and runs
        ``validConnectionQuery`` when there is one."""
        report = system_test_report(self.name, self._config, "Database Table Connector", list(self._settings.types))
        try:
            shape = self._table.shape()
            report["dbtable"] = {"database": self._settings.database.describe(), "table": shape.table.name,
                                 "keyColumn": shape.key.name, "keyUnique": shape.key_unique,
                                 "columns": [c.name for c in shape.columns]}
            if self._settings.valid_query:
                with self._table.connect("running validConnectionQuery") as conn:
                    conn.exec_driver_sql(self._settings.valid_query).close()
        except IdsyncError as error:
            report.failed(error)
        return report

    def close(self) -> None:
        self._table.close()


def open_dbtable_system(name: str, config: Mapping[str, Any], *, file: str, base: Path) -> DbTableSystem:
    """The connector registry's entry point for ``org.identityconnectors.databasetable.DatabaseTableConnector``;
    ``base``: what a relative SQLite path is under."""
    return DbTableSystem(name, config, file=file, base=base)
