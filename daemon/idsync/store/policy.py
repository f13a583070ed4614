"""PingIDM's policy service: the policies of a managed object's properties, evaluated.

``check`` answers the failed requirements of an object about to be stored, by
property, in PingIDM's ``failedPolicyRequirements`` shape: ``required`` and the
property types (``validation.py``), the built-in policies ``managed.json`` and
``policy.json`` name (implemented here, after PingIDM's ``policy.js``), and the
custom ones (``config.objectmodel.CustomPolicies``, run in the script sandbox).

What is checked:

* a create: every property the type declares, absent ones included, as PingIDM's
  ``validateObject`` judges every property of its schema;
* an update: the properties the update changes, and those whose
  ``conditionalPolicies`` depend on one it changes (and the schema's ``required``
  of all): an object stored before a policy was added is not refused for a
  property the change leaves alone, and a recon that changes a telephone number
  does not ask the store whether the unchanged user name is unique;
* a secret already hashed or encrypted is not checked (its clear value is gone);
  a clear one is, before it is hashed.

An absent property is judged by the policies that judge absence: every one
without ``validateOnlyIfPresent`` (``required`` fails it; ``unique``, ``valid-type``
and ``regexpMatches`` pass it; ``mapping-exists`` fails it, as PingIDM's does), a
custom one given ``null``; a policy that follows ``validateOnlyIfPresent`` is skipped.
``unique`` asks the caller (``taken``) whether another object holds the value.

A property's ``conditionalPolicies`` add their policies for an object that has
each of their ``dependencies`` and for which their ``condition`` script (given
``fullObject``) is true; when none applies, its ``fallbackPolicies`` do, as
PingIDM's ``policy.js`` applies them.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from idsync.config.managed import ManagedType
from idsync.config.objectmodel import PolicyUse, PropertyModel, js_regexp
from idsync.crypto import is_encrypted
from idsync.errors import ScriptError
from idsync.store.passwords import is_hashed
from idsync.store.validation import json_type, type_failures

__all__ = ["Taken", "check"]

# (property name, value, object id or None) -> whether another object holds the value.
Taken = Callable[[str, Any, str | None], bool]
Requirement = dict[str, Any]

_EMAIL = re.compile(r".+@.+\..+", re.IGNORECASE)
_PHONE = re.compile(r"\+?[0-9\- ()]*\Z")
# Beyond ASCII letters, the apostrophe-to-U+0105 range and white space, the letters
# PingIDM's valid-name-format allows (Polish ones, Œ, œ, Ÿ).
_NAME_EXTRA = frozenset("\u0106\u0107\u0118\u0119\u0141\u0142\u015a\u015b\u0179\u017a\u017b\u017c"
                        "\u0152\u0153\u0178")
_MISSING = object()


def check(schema: ManagedType, obj: Mapping[str, Any], *, before: Mapping[str, Any] | None = None,
          object_id: str | None = None, taken: Taken | None = None,
          only: Collection[str] | None = None) -> dict[str, list[Requirement]]:
    """The failed requirements of ``obj`` by property (empty: it passes). ``before`` is
    the stored object of an update; ``only`` limits the check to these properties
    (``validateProperty``)."""
    names: Collection[str] | None  # the properties judged; None: every one
    if only is not None:
        names = only
        found = type_failures(schema, obj, [n for n in names if n in obj])
        found = {k: v for k, v in found.items() if k in only}
    elif before is None:
        names = None  # a create
        found = type_failures(schema, obj)
    else:
        names = {k for k in set(obj) | set(before) if obj.get(k) != before.get(k)}
        found = type_failures(schema, obj, [n for n in names if n in obj])
    model = schema.model
    if model is None:
        return found
    if before is not None and only is None and names:
        names = _with_dependents(model.checked, names)
    custom_calls: list[tuple[str, PolicyUse, list[Any]]] = []
    for prop in model.checked:
        name = prop.name
        if names is not None and name not in names:
            continue
        value = obj.get(name, _MISSING)
        if name in schema.secrets and (is_hashed(value) or is_encrypted(value)):
            continue
        failed = found.setdefault(name, [])
        for use in (*prop.policies, *_applied(prop, obj)) if prop.conditional or prop.fallback else prop.policies:
            if use.only_if_present and value is _MISSING:
                continue
            if use.custom is not None:
                custom_calls.append((name, use, [use.custom, dict(obj), None if value is _MISSING else value,
                                                 dict(use.params), name, list(failed)]))
                continue
            # Once each: the schema's not-empty can fail an empty required value a second time.
            failed.extend(r for r in _builtin(use, name, value, obj, before, failed, object_id, taken,
                                              schema.mapping_names) if r not in failed)
    if custom_calls and model.custom is not None:
        answers = model.custom.run([call for _, _, call in custom_calls], _request(schema.name, object_id, only))
        for (name, use, _), answer in zip(custom_calls, answers, strict=True):
            found.setdefault(name, []).extend(_requirements(answer, use))
    return {k: v for k, v in found.items() if v}


def _request(type_name: str, object_id: str | None, only: Collection[str] | None) -> dict[str, Any]:
    """The policy request a custom policy sees, as PingIDM's policy service is asked:
    ``resourcePath`` ends in ``*`` for an object not yet stored under an id."""
    return {"method": "action", "action": "validateObject" if only is None else "validateProperty",
            "resourcePath": f"managed/{type_name}/{object_id or '*'}"}


def _with_dependents(props: Collection[PropertyModel], changed: Collection[str]) -> set[str]:
    """``changed`` and the properties whose ``conditionalPolicies`` depend on one of them:
    a change of their ``dependencies`` may apply other policies to them."""
    return {*changed, *(prop.name for prop in props
                        if any(d in changed for item in prop.conditional for d in item.dependencies))}


def _applied(prop: PropertyModel, obj: Mapping[str, Any]) -> list[PolicyUse]:
    """The policies ``conditionalPolicies`` (or else ``fallbackPolicies``) add for ``obj``."""
    if not prop.conditional and not prop.fallback:
        return []
    uses: list[PolicyUse] = []
    for item in prop.conditional:
        if all(d in obj for d in item.dependencies) and item.condition(fullObject=dict(obj)):
            uses.extend(item.policies)
    return uses or list(prop.fallback)


def _requirements(answer: Any, use: PolicyUse) -> list[Requirement]:
    if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
        raise ScriptError(f"custom policy {use.policy_id}: its function must answer a list of "
                          "{\"policyRequirement\": ...} objects")
    return [dict(r) for r in answer]


def _builtin(use: PolicyUse, name: str, value: Any, obj: Mapping[str, Any], before: Mapping[str, Any] | None,
             failed: list[Requirement], object_id: str | None, taken: Taken | None,
             mappings: Collection[str] | None) -> list[Requirement]:
    p = use.params
    code = use.requirements[0]
    present = value is not _MISSING
    text = value if isinstance(value, str) and value else None
    policy = use.policy_id
    ok: bool
    params: dict[str, Any] | None = None
    if policy == "required":
        ok = present and value is not None
    elif policy == "not-empty":
        ok = not present or not (value is None or (isinstance(value, str | list | dict) and not value))
    elif policy == "not-null":
        ok = not present or value is not None
    elif policy in ("unique", "valid-username"):
        ok = text is None or taken is None or not taken(name, value, object_id)
    elif policy == "valid-type":
        kind = json_type(value)
        ok = not present or kind in p["types"]
        params = {"invalidType": kind, "validTypes": list(p["types"])}
    elif policy == "re-auth-required":
        ok = True
    elif policy == "mapping-exists":  # the project's mappings (unknown outside a project: not checked)
        ok = mappings is None or (isinstance(value, str) and value in mappings)
    elif policy == "cannot-contain-others":
        bad = _contained(value, p["disallowedFields"], obj, before)
        ok, params = not bad, {"disallowedFields": bad}
    elif policy == "cannot-contain-characters":
        chars = [str(c) for c in p["forbiddenChars"]]
        ok = text is None or not any(c in text for c in chars)
        params = None if ok else {"forbiddenChars": ", ".join(chars)}
    elif policy == "cannot-contain-duplicates":
        items = value if isinstance(value, list) else []
        ok = len({_key(i) for i in items}) == len(items)
    else:
        # The string policies: an absent or empty value fails only where ``required`` did,
        # as several of PingIDM's do.
        if text is None:
            ok = not any(r.get("policyRequirement") == "REQUIRED" for r in failed)
        else:
            ok = _string_ok(policy, text, p)
        params = _string_params(policy, p)
    if ok:
        return []
    requirement: Requirement = {"policyRequirement": code}
    if params is not None:
        requirement["params"] = params
    return [requirement]


def _string_ok(policy: str, text: str, p: Mapping[str, Any]) -> bool:
    if policy == "valid-email-address-format":
        return bool(_EMAIL.search(text))
    if policy == "valid-date":
        return _date(text) is not None
    if policy == "valid-datetime":
        return _datetime(text) is not None
    if policy == "minimum-length":
        return len(text) >= int(p["minLength"])
    if policy == "maximum-length":
        return len(text) <= int(p["maxLength"])
    if policy in ("at-least-X-capital-letters", "at-least-X-capitals"):
        return sum(1 for c in text if "A" <= c <= "Z") >= int(p["numCaps"])
    if policy == "at-least-X-numbers":
        return sum(1 for c in text if c.isdigit()) >= int(p["numNums"])
    if policy == "valid-phone-format":
        return _PHONE.match(text) is not None
    if policy == "valid-name-format":
        return all(_name_char(c) for c in text)
    if policy == "regexpMatches":  # a JavaScript expression, as PingIDM's policy.js runs it
        compiled = js_regexp(str(p["regexp"]), str(p.get("flags") or ""))
        return compiled is not None and compiled.search(text) is not None
    return True


_STRING_PARAMS = {"minimum-length": "minLength", "maximum-length": "maxLength", "at-least-X-capital-letters": "numCaps",
                  "at-least-X-capitals": "numCaps", "at-least-X-numbers": "numNums", "regexpMatches": "regexp"}


def _string_params(policy: str, p: Mapping[str, Any]) -> dict[str, Any] | None:
    key = _STRING_PARAMS.get(policy)
    return {key: p[key]} if key is not None else None


def _contained(value: Any, fields: Any, obj: Mapping[str, Any], before: Mapping[str, Any] | None) -> list[str]:
    """The fields whose (non-empty) value ``value`` contains, as PingIDM's policy.js
    tells it (``value.match(fullObject[field])``): case counts, and the other value is
    a JavaScript regular expression (a user name ``j.doe`` is in ``j-doe``); one that is
    no regular expression idsync can run (``a(b``) is looked for as it is written."""
    if not isinstance(value, str) or not value:
        return []
    names = fields.split(",") if isinstance(fields, str) else [str(f) for f in fields or []]
    bad = []
    for field in (n.strip() for n in names):
        other = obj.get(field.strip("/"), (before or {}).get(field.strip("/")))
        if isinstance(other, str) and other and _matches(value, other):
            bad.append(field)
    return bad


def _matches(value: str, other: str) -> bool:
    compiled = js_regexp(other)
    return other in value if compiled is None else compiled.search(value) is not None


def _date(text: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(text[:10]) if len(text) == 10 else _datetime(text)
    except ValueError:
        return None


def _datetime(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def _name_char(c: str) -> bool:
    return c.isspace() or "A" <= c <= "Z" or "'" <= c <= "\u0105" or c in _NAME_EXTRA


def _key(item: Any) -> str:
    return repr(item)
