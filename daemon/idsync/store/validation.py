"""Checking a managed object against its type in ``managed.json``.

The store checks every object it writes (``ManagedResource``), whoever writes
it: the command line, the HTTP API, a recon; those check first as well, to
answer before anything is written.

Every problem of one object is reported at once (``InvalidObject`` lists them),
named by property, never quoting a value: a secret must not end up in an error.
Properties the schema does not declare are accepted, as PingIDM accepts them;
``_id`` and ``_rev`` are the store's, never the caller's.

A null removes a property, and every type takes it, unless the property says
``"nullable": false``: then a null given to it fails ``VALID_TYPE`` (``null_failures``),
as PingIDM's ``valid-type`` fails it for a type list without ``"null"``. The store
never keeps a null, so this is a check of what a request gives (``managed/service.py``,
``policy?_action=validateObject``): leaving the property out is no null.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from idsync.config.managed import ManagedType, PropertyDef
from idsync.crypto import is_encrypted
from idsync.errors import ObjectRejected

__all__ = ["InvalidObject", "PolicyFailed", "explain", "failures_list", "json_type", "null_failures", "refuse_nulls",
           "type_failures", "valid_types", "validate"]


class InvalidObject(ObjectRejected):
    """The object does not satisfy ``managed.json``: fix the data and send it again."""

    exit_code = os.EX_DATAERR

    def __init__(self, resource: str, problems: list[str]) -> None:
        super().__init__(f"{resource}: " + "; ".join(problems))
        self.resource = resource
        self.problems = problems


class PolicyFailed(InvalidObject):
    """The object breaks a policy (``required`` and the property types included):
    ``failures`` in PingIDM's ``failedPolicyRequirements`` shape, one entry per property."""

    status = 403  # PingIDM's answer, and the code a script that catches it reads

    def __init__(self, resource: str, failures: list[dict[str, Any]]) -> None:
        super().__init__(resource, [explain(f["property"], r) for f in failures for r in f["policyRequirements"]])
        self.failures = failures


_TEXTS = {
    "UNIQUE": "must be unique: another object has this value",
    "VALID_USERNAME": "must be unique: another object has this value",
    "VALID_EMAIL_ADDRESS_FORMAT": "must be an email address",
    "VALID_DATE": "must be a date",
    "VALID_DATETIME": "must be a date and time (ISO 8601)",
    "MIN_LENGTH": "must be at least {minLength} characters long",
    "MAX_LENGTH": "must be at most {maxLength} characters long",
    "AT_LEAST_X_CAPITAL_LETTERS": "must contain at least {numCaps} capital letters",
    "AT_LEAST_X_NUMBERS": "must contain at least {numNums} digits",
    "CANNOT_CONTAIN_OTHERS": "must not contain the value of {disallowedFields}",
    "CANNOT_CONTAIN_CHARACTERS": "must not contain any of {forbiddenChars}",
    "CANNOT_CONTAIN_DUPLICATES": "must not contain the same value twice",
    "MATCH_REGEXP": "must match {regexp}",
}


def explain(name: str, requirement: Mapping[str, Any]) -> str:
    """One failed requirement in words, never quoting the value (it may be a secret)."""
    code = str(requirement.get("policyRequirement"))
    params = requirement.get("params") or {}
    if code == "REQUIRED":
        return f"{name} is required"
    if code == "VALID_TYPE":
        where = f"[{params['index']}]" if "index" in params else ""
        kinds = [k for k in params.get("validTypes", ["?"]) if k != "null"] or ["?"]
        return f"{name}{where} must be of type {' or '.join(kinds)}, not {params.get('invalidType')}"
    text = _TEXTS.get(code)
    if text is None:
        return f"{name} fails the policy requirement {code}"
    shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in params.items()}
    try:
        return f"{name} {text.format(**shown)} ({code})"
    except (KeyError, IndexError):
        return f"{name} {text.split(' {')[0]} ({code})"


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


def valid_types(prop: PropertyDef) -> list[str]:
    """The JSON types a value of ``prop`` may have, ``"null"`` among them when it takes null."""
    return [prop.type, *prop.also, *(["null"] if prop.nullable else [])]


def null_failures(schema: ManagedType, obj: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The ``VALID_TYPE`` failures of the nulls ``obj`` gives to properties that say
    ``"nullable": false``, by property."""
    return {name: [{"policyRequirement": "VALID_TYPE", "params": {
        "invalidType": "null", "validTypes": valid_types(schema.properties[name])}}]
        for name in schema.not_nullable if name in obj and obj[name] is None}


def refuse_nulls(schema: ManagedType, obj: Mapping[str, Any]) -> None:
    """Raise ``PolicyFailed`` when ``obj`` (what a request gives) sets to null a property
    that says ``"nullable": false``."""
    found = null_failures(schema, obj) if schema.not_nullable else {}
    if found:
        raise PolicyFailed(f"managed/{schema.name}", failures_list(found))


def type_failures(schema: ManagedType, obj: Mapping[str, Any],
                  names: Collection[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The ``REQUIRED`` and ``VALID_TYPE`` failures of ``obj``, by property; ``names``
    limits the type checks to those properties (the changed ones)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name in schema.required:
        value = obj.get(name)
        if value is None or value == "":
            found.setdefault(name, []).append({"policyRequirement": "REQUIRED"})
    if schema.not_nullable:
        checked = obj if names is None else {n: obj[n] for n in names if n in obj}
        for name, failures in null_failures(schema, checked).items():
            found.setdefault(name, []).extend(failures)
    strings = schema.strings
    for name, value in obj.items() if names is None else ((n, obj.get(n)) for n in names):
        if value is None or (type(value) is str and name in strings):
            continue  # the last: most values, a string where one is declared, settled at once
        prop = schema.properties.get(name)
        if prop is None or name.startswith("_") or (prop.secret and is_encrypted(value)):
            continue
        if not _type_ok(prop.type, value) and not any(_type_ok(kind, value) for kind in prop.also):
            found.setdefault(name, []).append({"policyRequirement": "VALID_TYPE", "params": {
                "invalidType": json_type(value), "validTypes": valid_types(prop)}})
        elif prop.items is not None and isinstance(value, list):
            wrong = next((i for i, item in enumerate(value) if item is None or not _type_ok(prop.items, item)), None)
            if wrong is not None:
                found.setdefault(name, []).append({"policyRequirement": "VALID_TYPE", "params": {
                    "invalidType": json_type(value[wrong]), "validTypes": [prop.items], "index": wrong}})
    return found


def failures_list(found: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``{property: [requirement, ...]}`` in PingIDM's ``failedPolicyRequirements`` shape."""
    return [{"property": name, "policyRequirements": requirements} for name, requirements in found.items()]


def validate(schema: ManagedType, obj: Mapping[str, Any]) -> None:
    """Raise ``PolicyFailed`` unless ``obj`` has every required property and
    each declared property holds a value of its type (``null`` removes it, unless the
    property says ``"nullable": false``), the items of an array included."""
    found = type_failures(schema, obj)
    if found:
        raise PolicyFailed(f"managed/{schema.name}", failures_list(found))


def json_type(value: Any) -> str:
    """A value's JSON type, as JavaScript's typeof names it (``array`` and ``null`` apart)."""
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
