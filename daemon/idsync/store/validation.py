"""Checking a managed object against its type in ``managed.json``.

The store checks every object it writes (``ManagedResource``), whoever writes
it: the command line, the HTTP API, a recon; those check first as well, to
answer before anything is written.

Every problem of one object is reported at once (``InvalidObject`` lists them),
named by property, never quoting a value: a secret must not end up in an error.
Properties the schema does not declare are accepted, as PingIDM accepts them;
``_id`` and ``_rev`` are the store's, never the caller's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from idsync.config.managed import ManagedType
from idsync.crypto import is_encrypted
from idsync.errors import ObjectRejected

__all__ = ["InvalidObject", "validate"]


class InvalidObject(ObjectRejected):
    """The object does not satisfy ``managed.json``: fix the data and send it again."""

    exit_code = os.EX_DATAERR

    def __init__(self, resource: str, problems: list[str]) -> None:
        super().__init__(f"{resource}: " + "; ".join(problems))
        self.problems = problems


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind in ("object", "relationship"):
        return isinstance(value, dict)
    return True


def validate(schema: ManagedType, obj: Mapping[str, Any]) -> None:
    """Raise ``InvalidObject`` unless ``obj`` has every required property and
    each declared property holds a value of its type (``null`` removes it), the
    items of an array included."""
    problems: list[str] = []
    for name in schema.required:
        value = obj.get(name)
        if value is None or value == "":
            problems.append(f"{name} is required")
    for name, value in obj.items():
        prop = schema.properties.get(name)
        if prop is None or value is None or (type(value) is str and prop.type == "string"):
            continue  # the last: most values, a string where one is declared, settled without a call
        if name.startswith("_") or (prop.secret and is_encrypted(value)):
            continue
        if not _type_ok(prop.type, value):
            problems.append(f"{name} must be of type {prop.type}, not {_json_type(value)}")
        elif prop.items is not None and isinstance(value, list):
            wrong = next((i for i, item in enumerate(value) if item is None or not _type_ok(prop.items, item)), None)
            if wrong is not None:
                problems.append(f"{name}[{wrong}] must be of type {prop.items}, not {_json_type(value[wrong])}")
    if problems:
        raise InvalidObject(f"managed/{schema.name}", problems)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
