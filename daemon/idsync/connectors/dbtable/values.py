"""Values between a table's columns and JSON.

A column's SQL type (reflected) makes it one *kind*: integer, decimal, float,
boolean, datetime, date, time, uuid, binary, json or text. Read, a value becomes its
property's type: ``string`` (what OpenICF's Database Table connector returns by
default: numbers as their digits, booleans as ``true``/``false``), ``integer``,
``number`` (decimals as numbers) or ``boolean``; timestamps, dates and times are
ISO 8601 text, binary values base64. Written, a JSON value becomes what the column
takes: ``"1001"`` for an integer column is 1001, ISO 8601 text a timestamp (one
with an offset into a column without a time zone: converted to UTC). A value that
is not one fails with ``ValueError`` naming the property (and the value, which the
caller leaves out for a secret).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import math
import uuid
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.types import TypeEngine

from idsync.connectors.files import typed

__all__ = ["from_column", "id_text", "iso_text", "kind_of", "property_type", "to_column"]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def kind_of(sql_type: TypeEngine[Any]) -> str:
    """What a reflected column type holds."""
    for cls, kind in ((sqltypes.Boolean, "boolean"), (sqltypes.Integer, "integer"), (sqltypes.Float, "float"),
                      (sqltypes.Numeric, "decimal"), (sqltypes.DateTime, "datetime"), (sqltypes.Date, "date"),
                      (sqltypes.Time, "time"), (sqltypes.Uuid, "uuid"), (sqltypes._Binary, "binary"),
                      (sqltypes.JSON, "json"), (sqltypes.String, "text")):
        if isinstance(sql_type, cls):
            return kind
    return "other"


def property_type(kind: str) -> str:
    """The JSON type of a column's property where objectTypes names none."""
    return {"integer": "integer", "decimal": "number", "float": "number", "boolean": "boolean"}.get(kind, "string")


def from_column(name: str, prop_type: str, raw: Any) -> Any:
    """A value read (not None) as a value of ``prop_type``; ValueError naming ``name``."""
    value = _plain(raw)
    if prop_type == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if prop_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | decimal.Decimal) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            return typed(name, "boolean", value)
        raise ValueError(f"{name}: {value!r} is not a boolean")
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, str):
        return typed(name, prop_type, value)
    if isinstance(value, float | decimal.Decimal) and math.isfinite(value):
        if value == int(value):
            return int(value)
        if prop_type == "number":
            return float(value)
    raise ValueError(f"{name}: {value!r} is not {'an integer' if prop_type == 'integer' else 'a number'}")


def _plain(raw: Any) -> Any:
    """A driver's value as text, a number or a boolean."""
    if isinstance(raw, dt.datetime | dt.date | dt.time):
        return raw.isoformat()
    if isinstance(raw, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(raw)).decode("ascii")
    if isinstance(raw, uuid.UUID):
        return str(raw)
    if isinstance(raw, dict | list):
        return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
    return raw


def iso_text(raw: Any, kind: str) -> Any:
    """A timestamp, date or time SQLite holds as text, in the ISO 8601 form other
    databases' are read in; text of another form as it is."""
    if not isinstance(raw, str):
        return raw
    try:
        if kind == "datetime":
            return dt.datetime.fromisoformat(raw).isoformat()
        if kind == "date":
            return dt.date.fromisoformat(raw).isoformat()
        if kind == "time":
            return dt.time.fromisoformat(raw).isoformat()
    except ValueError:
        pass
    return raw


def to_column(name: str, kind: str, value: Any, *, aware: bool = False, empty_strings: bool = False) -> Any:
    """A JSON value as the column of ``kind`` takes it (None: NULL); ValueError naming ``name``.
    ``aware``: a timestamp column with a time zone."""
    if isinstance(value, list):
        if len(value) > 1:
            raise ValueError(f"{name}: a column holds one value, not a list of {len(value)}")
        value = value[0] if value else None
    if value is None or (value == "" and (kind != "text" or not empty_strings)):
        return None
    if isinstance(value, dict) and kind != "json":
        raise ValueError(f"{name}: a column holds one value, not an object")
    if kind == "text" or kind == "other":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if kind == "json":
        return value
    text = value.strip() if isinstance(value, str) else value
    try:
        if kind == "boolean":
            if isinstance(text, bool) or (isinstance(text, int) and text in (0, 1)):
                return bool(text)
            if isinstance(text, str) and text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
        elif kind == "integer":
            if isinstance(text, bool | int):
                return int(text)
            if isinstance(text, float) and text.is_integer():
                return int(text)
            if isinstance(text, str):
                return int(text)
        elif kind == "decimal" and not isinstance(text, bool):
            return decimal.Decimal(str(text))
        elif kind == "float" and not isinstance(text, bool):
            return float(text)
        elif kind == "datetime" and isinstance(text, str):
            return _timestamp(dt.datetime.fromisoformat(text), aware)
        elif kind == "date" and isinstance(text, str):
            return dt.date.fromisoformat(text)
        elif kind == "time" and isinstance(text, str):
            return dt.time.fromisoformat(text)
        elif kind == "uuid" and isinstance(text, str):
            return uuid.UUID(text)
        elif kind == "binary" and isinstance(text, str):
            return base64.b64decode(text, validate=True)
    except (ValueError, decimal.InvalidOperation, binascii.Error):
        pass
    raise ValueError(f"{name}: {value!r} is not {_WHAT.get(kind, 'a value this column takes')}")


_WHAT = {"boolean": "a boolean", "integer": "an integer", "decimal": "a number", "float": "a number",
         "datetime": "an ISO 8601 timestamp", "date": "an ISO 8601 date", "time": "an ISO 8601 time",
         "uuid": "a UUID", "binary": "base64"}


def _timestamp(value: dt.datetime, aware: bool) -> dt.datetime:
    if aware:
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def id_text(raw: Any) -> str:
    """A key column's value as an ``_id``."""
    if isinstance(raw, dt.datetime | dt.date | dt.time):
        return raw.isoformat()
    return raw if isinstance(raw, str) else str(raw)
