"""The property mapping: from a source object to the projected target, and the
difference between that projection and the target as it is.

Each item of a mapping's ``"properties"`` list is applied as PingIDM does:

1. ``condition`` (a script, or a ``_queryFilter`` over ``object``,
   ``linkQualifier``, ``target`` (the target being made: the existing one, or ``{}``
   in a create, with the rules before this one applied), ``oldTarget`` (the target
   as it is, null in a create) and, when implicit sync updates a target after a
   change of its source, ``oldSource``, the source before the change): when false,
   the property is skipped entirely, as if it were not mapped for this object;
2. the value is the source value at ``source`` (a JSON pointer, ``"/name/givenName"``
   or ``"name/givenName"``), the whole source object when ``source`` is ``""``,
   and no value (``None``) when the property has no ``source`` key, so that
   ``{"target": "accountStatus", "default": "active"}`` stores ``"active"``;
3. ``transform`` runs with ``source`` set to that value (and ``linkQualifier``);
   its result becomes the value;
4. a ``None`` value takes ``default`` when one is given;
5. the value is put at ``target``; intermediate objects are created.

Transforms see only their value, as in PingIDM: that is what lets
``source_fields`` tell the connector which attributes to read.

Several values given to a single-valued target property (``several_values``)
fail the object: no value is picked for it.

A list-valued target property has a policy (idsync's ``"multiValued"`` key):
``"replace"`` (the default) makes the target's list equal the projected one;
``"merge"`` keeps the values idsync did not put there (``merge_lists``): a
recon only adds the projected values missing from the target, and an implicit
sync, which knows the source's value before the change, applies just that
change: it adds the values the change brought and removes those it took away.
Values are compared ignoring case and the spaces around ``,``, ``=`` and
``+``, so one DN written two ways is one value.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from idsync.errors import ConfigError, ScriptError
from idsync.keys import suggest
from idsync.query.ast import And, Compare, Literal_, Not, Or, Present

__all__ = ["PropertyMap", "PropertyRule", "compile_properties", "diff"]

_RULE_KEYS = frozenset({"source", "target", "transform", "condition", "default", "multiValued"})
_MULTI_VALUED = ("replace", "merge")
_SEPARATOR_SPACES = re.compile(r"\s*([,=+])\s*")


@dataclass(frozen=True)
class PropertyRule:
    """One compiled item of ``properties``. ``source=()`` means the whole source object,
    ``source=None`` no source value (the item has no ``source`` key)."""

    source: tuple[str, ...] | None
    target: tuple[str, ...]
    transform: object | None = None
    condition: object | None = None
    has_default: bool = False
    default: Any = None
    merge: bool = False  # "multiValued": "merge"

    @property
    def target_name(self) -> str:
        return "/".join(self.target)

    @property
    def source_name(self) -> str:
        return "/".join(self.source or ())


@dataclass(frozen=True)
class PropertyMap:
    """A mapping's property rules, in order: a later rule for the same target wins."""

    rules: tuple[PropertyRule, ...] = ()

    def __post_init__(self) -> None:
        # project() runs once per object and rule: when every rule copies one top-level
        # source attribute to one top-level target property (no script, no condition),
        # it is a loop over (source, target, default) worked out here once.
        plain = all(r.transform is None and r.condition is None and r.source is not None and len(r.source) == 1
                    and len(r.target) == 1 for r in self.rules)
        object.__setattr__(self, "_plain", tuple((r.source[0], r.target[0], r.has_default, r.default)
                                                 for r in self.rules if r.source) if plain else None)

    def project(
        self,
        source_obj: Mapping[str, Any],
        existing_target: Mapping[str, Any] | None,
        *,
        run_transform: Callable[[object, dict[str, Any]], Any],
        eval_condition: Callable[[object, dict[str, Any]], bool],
        link_qualifier: str = "default",
        old_source: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The projected target: only the mapped properties, never the existing
        target's other properties. Script failures name the target property.
        ``old_source``: PingIDM's ``oldSource`` for the conditions (left undefined
        when ``None``, as PingIDM leaves it in recons and liveSync)."""
        projected: dict[str, Any] = {}
        plain: tuple[tuple[str, str, bool, Any], ...] | None = self._plain  # type: ignore[attr-defined]
        if plain is not None:
            get = source_obj.get
            for source, target, has_default, default in plain:
                value = get(source)
                if value is None and has_default:
                    value = default
                projected[target] = value if value is None or type(value) is str else _copy(value)
            return projected
        for rule in self.rules:
            if rule.condition is not None:
                scope = {"object": source_obj, "linkQualifier": link_qualifier,
                         "target": {**(existing_target or {}), **projected}, "oldTarget": existing_target}
                if old_source is not None:
                    scope["oldSource"] = old_source
                try:
                    holds = eval_condition(rule.condition, scope)
                except ScriptError as exc:
                    raise _named(exc, "condition", rule) from exc
                if not holds:
                    continue
            value = _at(source_obj, rule.source) if rule.source is not None else None
            if rule.transform is not None:
                try:
                    value = run_transform(rule.transform, {"source": value,
                                                           "linkQualifier": link_qualifier})
                except ScriptError as exc:
                    raise _named(exc, "transform", rule) from exc
            if value is None and rule.has_default:
                value = rule.default
            _put(projected, rule.target, _copy(value))
        return projected

    def merge_lists(self, projected: Mapping[str, Any], current: Mapping[str, Any] | None,
                    previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``projected`` with each ``merge`` property combined with the target's
        ``current`` list: values of ``current`` stay and projected ones are added.
        With ``previous`` (the projection before an implicit sync's change) only
        the change is applied: the values it took away are removed, the values it
        brought are added, and a value it did not touch is left as the target has
        it (a group the user left in LDAP, or that was deleted, is not re-added)."""
        merged = dict(projected)
        for rule in self.rules:
            name = rule.target[0]
            if not rule.merge or len(rule.target) != 1 or name not in merged:
                continue
            have = _as_list((current or {}).get(name))
            want = _as_list(merged[name])
            before = {_value_key(v) for v in _as_list(previous.get(name))} if previous is not None else set()
            gone = before - {_value_key(v) for v in want}
            kept = [v for v in have if _value_key(v) not in gone]
            known = {_value_key(v) for v in kept} | before
            merged[name] = kept + [v for v in want if _value_key(v) not in known]
        return merged

    def several_values(self, projected: Mapping[str, Any], single: Mapping[str, str]) -> list[str]:
        """A problem for each property of ``single`` (name -> its type) to which
        ``projected`` gives several values: one value is never picked silently."""
        problems: list[str] = []
        for rule in self._last_rules:
            name = rule.target[0]
            value = projected.get(name)
            if type(value) is not list or len(value) < 2 or len(rule.target) != 1 or name not in single:
                continue
            origin = "its transform" if rule.transform is not None else \
                f"source {rule.source_name!r}" if rule.source else \
                "the source object" if rule.source is not None else "its default"
            problems.append(f"{name} is single-valued (type {single[name]}) but {origin} gives "
                            f"{len(value)} values")
        return problems

    @functools.cached_property
    def _last_rules(self) -> tuple[PropertyRule, ...]:
        """One rule per target: a later rule for the same target wins."""
        return tuple({rule.target: rule for rule in self.rules}.values())

    def has_merge(self) -> bool:
        """Whether any list property is ``"multiValued": "merge"``."""
        return any(rule.merge for rule in self.rules)

    def source_fields(self) -> set[str] | None:
        """The top-level source attributes the rules read; ``None`` when a rule
        needs the whole object (``"source": ""``, or a condition script)."""
        fields: set[str] = set()
        for rule in self.rules:
            if rule.source == ():
                return None
            if rule.source is not None:
                fields.add(rule.source[0])
            if rule.condition is not None:
                referenced = _object_fields(rule.condition)
                if referenced is None:
                    return None
                fields |= referenced
        return fields

    def target_fields(self) -> set[str]:
        """The top-level target attributes the rules write."""
        return {rule.target[0] for rule in self.rules}

    def targets_reading(self, fields: set[str]) -> set[str]:
        """The top-level target attributes whose rules read any of the source's ``fields``,
        as their source or in their condition (a rule that may read anything, too)."""
        found: set[str] = set()
        for rule in self.rules:
            referenced = _object_fields(rule.condition) if rule.condition is not None else set()
            if rule.source == () or referenced is None or not fields.isdisjoint(referenced) \
                    or (rule.source is not None and rule.source[0] in fields):
                found.add(rule.target[0])
        return found


def compile_properties(
    raw: object,
    *,
    file: str,
    key: str,
    compile_script: Callable[[object, str], Any],
    compile_filter: Callable[[str, str], Any],
) -> PropertyMap:
    """Validate a mapping's ``"properties"`` list; errors name ``file`` and ``key[i].field``."""
    if raw is None:
        return PropertyMap()
    if not isinstance(raw, list):
        raise ConfigError(file, key, 'expected a list of {"source": ..., "target": ...} objects')
    rules: list[PropertyRule] = []
    for i, item in enumerate(raw):
        at = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(file, at, "expected an object with at least \"target\"")
        unknown = sorted(set(item) - _RULE_KEYS)
        if unknown:
            raise ConfigError(file, f"{at}.{unknown[0]}", suggest(unknown[0], _RULE_KEYS))
        target = _pointer(item.get("target"), file, f"{at}.target", required=True)
        source = (_pointer(item["source"], file, f"{at}.source", required=False)
                  if item.get("source") is not None else None)
        transform = item.get("transform")
        if transform is not None and not isinstance(transform, dict):
            raise ConfigError(file, f"{at}.transform", "expected a script object")
        condition = item.get("condition")
        if condition is not None and not isinstance(condition, str | dict):
            raise ConfigError(file, f"{at}.condition",
                              "expected a _queryFilter string or a script object")
        rules.append(PropertyRule(
            source=source,
            target=target,
            transform=(compile_script(transform, f"{at}.transform")
                       if transform is not None else None),
            condition=(compile_filter(condition, f"{at}.condition") if isinstance(condition, str)
                       else compile_script(condition, f"{at}.condition") if condition is not None
                       else None),
            has_default="default" in item and item["default"] is not None,
            default=item.get("default"),
            merge=_multi_valued(item.get("multiValued", "replace"), file, f"{at}.multiValued") == "merge",
        ))
    _check_targets(rules, file, key)
    return PropertyMap(tuple(rules))


def diff(
    projected: Mapping[str, Any],
    existing: Mapping[str, Any] | None,
    *,
    ignore_case_keys: bool = False,
    unordered: bool = False,
) -> dict[str, Any]:
    """The properties of ``projected`` whose value differs from ``existing``'s: the update set.

    ``None``, a missing property and ``[]`` are all "no value" and equal to each
    other. Types matter: ``1`` differs from ``"1"`` and ``True`` from ``1``.
    With ``unordered`` (an external system's attributes), lists compare as multisets,
    and a list of one value equals that value. ``_id`` and ``_rev`` are never part of
    an update. An empty result means nothing to write, so the target's revision does
    not move.
    """
    current = existing or {}
    if ignore_case_keys:
        folded = {k.casefold(): v for k, v in current.items()}
    changes: dict[str, Any] = {}
    for name, value in projected.items():
        if name in ("_id", "_rev"):
            continue
        old = folded.get(name.casefold()) if ignore_case_keys else current.get(name)
        if type(value) is str and type(old) is str:  # the common case, decided without _canon
            if value != old:
                changes[name] = value
        elif _canon(value, unordered) != _canon(old, unordered):
            changes[name] = value
    return changes


_EMPTY = ("empty",)


def _canon(value: Any, unordered: bool) -> object:
    """A hashable form of a JSON value in which equal values are equal and
    differently typed ones are not."""
    if type(value) is str:
        return ("str", value)
    if value is None or (isinstance(value, list) and not value):
        return _EMPTY
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, Mapping):
        if isinstance(value.get("_ref"), str):
            # A reference is its target and its own properties, not how it was read
            # (the store adds _refResourceId, the row's _id and _rev).
            props = value.get("_refProperties")
            own = {k: v for k, v in props.items() if not k.startswith("_")} if isinstance(props, Mapping) else {}
            return ("ref", value["_ref"], _canon(own, unordered))
        return ("object", frozenset((k, c) for k, v in value.items()
                                    if (c := _canon(v, unordered)) != _EMPTY))
    if isinstance(value, list | tuple):
        if unordered and len(value) == 1:
            # An attribute of an external system holding one value holds that value, whether
            # the system shows it as a list (a multi-valued attribute) or the mapping gives a
            # string: no update for the difference.
            return _canon(value[0], unordered)
        items = [_canon(v, unordered) for v in value]
        if unordered or all(type(i) is tuple and i[0] == "ref" for i in items):  # references have no order
            return ("set", frozenset(Counter(items).items()))
        return ("list", tuple(items))
    return ("other", repr(value))


def _multi_valued(value: object, file: str, key: str) -> str:
    if value not in _MULTI_VALUED:
        raise ConfigError(file, key, f"expected one of {', '.join(_MULTI_VALUED)}")
    return str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _value_key(value: Any) -> object:
    if isinstance(value, str):
        return _SEPARATOR_SPACES.sub(r"\1", value.strip()).casefold()
    return _canon(value, unordered=True)


def _pointer(value: object, file: str, key: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, str):
        raise ConfigError(file, key, 'expected a property path such as "mail" or "/name/givenName"')
    text = value[1:] if value.startswith("/") else value
    if not text:
        if required:
            raise ConfigError(file, key, "a property needs a target path")
        return ()
    parts = tuple(p.replace("~1", "/").replace("~0", "~") for p in text.split("/"))
    if any(not p for p in parts):
        raise ConfigError(file, key, f"empty segment in path {value!r}")
    return parts


def _check_targets(rules: list[PropertyRule], file: str, key: str) -> None:
    # "name" and "name/givenName" would each overwrite the other depending on order.
    targets = {rule.target: i for i, rule in enumerate(rules)}
    for i, rule in enumerate(rules):
        for n in range(1, len(rule.target)):
            if rule.target[:n] in targets:
                other = targets[rule.target[:n]]
                raise ConfigError(file, f"{key}[{i}].target",
                                  f"{rule.target_name!r} is inside {rules[other].target_name!r}, "
                                  f"mapped by {key}[{other}]; map one or the other")


def _at(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for part in path:
        if type(value) is dict or isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdecimal() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _put(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        child = obj.get(part)
        if not isinstance(child, dict):
            child = obj[part] = {}
        obj = child
    obj[path[-1]] = value


def _copy(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _named(exc: ScriptError, what: str, rule: PropertyRule) -> ScriptError:
    """The same kind of error (a timeout stays a timeout), naming the property."""
    return type(exc)(f"{what} of property {rule.target_name!r}: {exc}")


def _object_fields(condition: object) -> set[str] | None:
    """Source attributes a filter condition reads through ``/object/...``;
    ``None`` when it is a script (it may read anything)."""
    if isinstance(condition, Compare | Present):
        path = condition.path
        return {path[1]} if len(path) > 1 and path[0] == "object" else set()
    if isinstance(condition, And | Or):
        fields: set[str] = set()
        for item in condition.items:
            found = _object_fields(item)
            if found is None:
                return None
            fields |= found
        return fields
    if isinstance(condition, Not):
        return _object_fields(condition.item)
    if isinstance(condition, Literal_):
        return set()
    return None
