"""Policies: from a situation to an action, and the change that action makes.

A mapping's ``"policies"`` list names, per situation, an action (or a script
returning one), an optional ``condition`` and an optional ``postAction``.
``parse_policies`` validates it once, at load time; ``PolicySet.decide`` then
picks the action for one object: the first policy of that situation whose
condition holds wins, and when none does, the default applies.

The names a policy uses, ``Situation`` and ``Action``, are defined here, as
mapping files spell them; ``idsync.sync.situations`` tells which situation an
object is in.

Defaults differ from PingIDM's in one place on purpose. PingIDM deletes the
target of a source that stops qualifying (UNQUALIFIED -> DELETE); idsync never
deletes unless a mapping's policies say DELETE, so its default for UNQUALIFIED
is EXCEPTION: the object is kept and shows up in the run's errors, which is
where an administrator looks, rather than in a REPORT nobody reads.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from idsync.errors import ConfigError, ScriptError
from idsync.keys import suggest

__all__ = [
    "ALLOWED_ACTIONS",
    "DEFAULT_ACTIONS",
    "PINGIDM_DEFAULT_ACTIONS",
    "Action",
    "Decision",
    "Policy",
    "PolicySet",
    "Situation",
    "parse_policies",
]


class Situation(StrEnum):
    """The synchronization situations, spelled as in PingIDM's ``policies``."""

    CONFIRMED = "CONFIRMED"
    FOUND = "FOUND"
    FOUND_ALREADY_LINKED = "FOUND_ALREADY_LINKED"
    ABSENT = "ABSENT"
    AMBIGUOUS = "AMBIGUOUS"
    MISSING = "MISSING"
    UNQUALIFIED = "UNQUALIFIED"
    SOURCE_IGNORED = "SOURCE_IGNORED"
    TARGET_IGNORED = "TARGET_IGNORED"
    UNASSIGNED = "UNASSIGNED"
    SOURCE_MISSING = "SOURCE_MISSING"
    LINK_ONLY = "LINK_ONLY"
    ALL_GONE = "ALL_GONE"


class Action(StrEnum):
    """What a policy does about a situation, spelled as in PingIDM's ``policies``."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    LINK = "LINK"
    UNLINK = "UNLINK"
    EXCEPTION = "EXCEPTION"
    IGNORE = "IGNORE"
    REPORT = "REPORT"
    NOREPORT = "NOREPORT"
    ASYNC = "ASYNC"

_S, _A = Situation, Action

PINGIDM_DEFAULT_ACTIONS: Mapping[Situation, Action] = MappingProxyType({
    _S.CONFIRMED: _A.UPDATE,
    _S.FOUND: _A.UPDATE,
    _S.FOUND_ALREADY_LINKED: _A.EXCEPTION,
    _S.ABSENT: _A.CREATE,
    _S.AMBIGUOUS: _A.EXCEPTION,
    _S.MISSING: _A.EXCEPTION,
    _S.UNQUALIFIED: _A.DELETE,
    _S.SOURCE_IGNORED: _A.REPORT,
    _S.TARGET_IGNORED: _A.REPORT,
    _S.UNASSIGNED: _A.EXCEPTION,
    _S.SOURCE_MISSING: _A.EXCEPTION,
    _S.LINK_ONLY: _A.EXCEPTION,
    _S.ALL_GONE: _A.NOREPORT,
})

DEFAULT_ACTIONS: Mapping[Situation, Action] = MappingProxyType({
    **PINGIDM_DEFAULT_ACTIONS,
    _S.UNQUALIFIED: _A.EXCEPTION,
    _S.SOURCE_MISSING: _A.EXCEPTION,
})

# Actions that touch neither object make sense everywhere. The others need what
# they act on: CREATE a source and no target, UPDATE/LINK a source and one
# target, DELETE a target, UNLINK a link. A policy asking for more than the
# situation has is refused at load time instead of failing every object.
_ANYWHERE = frozenset({_A.EXCEPTION, _A.IGNORE, _A.REPORT, _A.NOREPORT, _A.ASYNC})
ALLOWED_ACTIONS: Mapping[Situation, frozenset[Action]] = MappingProxyType({
    situation: _ANYWHERE | extra
    for situation, extra in {
        _S.CONFIRMED: {_A.UPDATE, _A.DELETE, _A.UNLINK},
        _S.FOUND: {_A.UPDATE, _A.LINK, _A.DELETE},
        _S.FOUND_ALREADY_LINKED: set(),
        _S.ABSENT: {_A.CREATE},
        _S.AMBIGUOUS: set(),
        _S.MISSING: {_A.CREATE, _A.UNLINK, _A.DELETE},
        _S.UNQUALIFIED: {_A.DELETE, _A.UNLINK},
        _S.SOURCE_IGNORED: set(),
        _S.TARGET_IGNORED: {_A.DELETE, _A.UNLINK},
        _S.UNASSIGNED: {_A.DELETE},
        _S.SOURCE_MISSING: {_A.DELETE, _A.UNLINK},
        _S.LINK_ONLY: {_A.UNLINK, _A.DELETE},
        _S.ALL_GONE: set(),
    }.items()
})

_POLICY_KEYS = frozenset({"situation", "action", "condition", "postAction"})


@dataclass(frozen=True)
class Policy:
    """One item of a mapping's ``policies``: compiled scripts and filters, as the
    injected compilers returned them. ``action`` is an ``Action`` or a script."""

    situation: Situation
    action: object
    condition: object | None = None
    post_action: object | None = None


@dataclass(frozen=True)
class Decision:
    """The action chosen for one object, and which policy chose it (``None``: the default)."""

    situation: Situation
    action: Action
    policy_index: int | None = None
    post_action: object | None = None


@dataclass(frozen=True)
class PolicySet:
    """A mapping's validated policies, with the defaults used when none applies."""

    policies: tuple[Policy, ...] = ()
    defaults: Mapping[Situation, Action] = field(default_factory=lambda: DEFAULT_ACTIONS)

    def __post_init__(self) -> None:
        # decide() runs once per object: index the policies by situation once.
        index: dict[Situation, list[tuple[int, Policy]]] = {}
        for i, p in enumerate(self.policies):
            index.setdefault(p.situation, []).append((i, p))
        object.__setattr__(self, "_index", index)
        # A situation whose first policy has neither a condition nor an action script
        # decides the same for every object: decided here once.
        object.__setattr__(self, "_fixed", {
            situation: Decision(situation, first.action, i, first.post_action)
            for situation, ((i, first), *_) in index.items()
            if first.condition is None and isinstance(first.action, Action)})

    @property
    def reads_objects(self) -> bool:
        """Whether deciding looks at the objects themselves (a condition or an action script)."""
        return any(p.condition is not None or not isinstance(p.action, Action) for p in self.policies)

    def for_situation(self, situation: Situation) -> list[tuple[int, Policy]]:
        """The policies naming ``situation``, with their index in the list, in order."""
        index: dict[Situation, list[tuple[int, Policy]]] = self._index  # type: ignore[attr-defined]
        found = index.get(situation)  # a situation and its name are the same key (StrEnum)
        return found if found is not None else index.get(Situation(situation), [])

    def decide(
        self,
        situation: Situation,
        *,
        evaluate_condition: Callable[[object], bool],
        evaluate_action_script: Callable[[object], str],
    ) -> Decision:
        """The first policy of ``situation`` whose condition holds, else the default.

        Conditions are evaluated lazily, in order, and only for this situation's
        policies. An action script's answer must be an action possible here;
        anything else fails this object with ``ScriptError``.
        """
        fixed: Decision | None = self._fixed.get(situation)  # type: ignore[attr-defined]
        if fixed is not None:
            return fixed
        for index, policy in self.for_situation(situation):
            if policy.condition is not None and not evaluate_condition(policy.condition):
                continue
            if isinstance(policy.action, Action):
                action = policy.action
            else:
                action = _scripted_action(situation, evaluate_action_script(policy.action), index)
            return Decision(situation, action, index, policy.post_action)
        return Decision(situation, self.defaults[situation])


def parse_policies(
    raw: object,
    *,
    file: str,
    key: str,
    compile_script: Callable[[object, str], Any],
    compile_filter: Callable[[str, str], Any],
) -> PolicySet:
    """Validate a mapping's ``"policies"`` list; errors name ``file`` and ``key[i].field``."""
    if raw is None:
        return PolicySet()
    if not isinstance(raw, list):
        raise ConfigError(file, key,
                          'expected a list of {"situation": ..., "action": ...} objects')
    policies: list[Policy] = []
    for i, item in enumerate(raw):
        at = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(file, at, "expected an object with \"situation\" and \"action\"")
        unknown = sorted(set(item) - _POLICY_KEYS)
        if unknown:
            # A misspelt "condition" would make the policy unconditional: refuse it.
            raise ConfigError(file, f"{at}.{unknown[0]}", suggest(unknown[0], _POLICY_KEYS))
        situation = _situation(item.get("situation"), file, f"{at}.situation")
        action = _action(item.get("action"), situation, file, f"{at}.action", compile_script)
        condition = _condition(item.get("condition"), file, f"{at}.condition", compile_script,
                               compile_filter)
        post = item.get("postAction")
        if post is not None and not isinstance(post, dict):
            raise ConfigError(file, f"{at}.postAction", "expected a script object")
        post_action = compile_script(post, f"{at}.postAction") if post is not None else None
        policies.append(Policy(situation, action, condition, post_action))
    return PolicySet(tuple(policies))


def _situation(value: object, file: str, key: str) -> Situation:
    if not isinstance(value, str) or not value:
        raise ConfigError(file, key,
                          f"a policy needs a situation; expected one of {_names(Situation)}")
    if value in Situation.__members__:
        return Situation[value]
    raise ConfigError(file, key, _unknown("situation", value, list(Situation.__members__)))


def _action(
    value: object, situation: Situation, file: str, key: str,
    compile_script: Callable[[object, str], Any],
) -> object:
    if isinstance(value, dict):
        return compile_script(value, key)
    if not isinstance(value, str) or not value:
        raise ConfigError(file, key,
                          f"expected an action name ({_names(Action)}) or a script object")
    if value not in Action.__members__:
        raise ConfigError(file, key, _unknown("action", value, list(Action.__members__)))
    action = Action[value]
    allowed = ALLOWED_ACTIONS[situation]
    if action not in allowed:
        raise ConfigError(file, key, f"{action} is not possible for {situation}; possible: "
                                     f"{_names(a for a in Action if a in allowed)}")
    return action


def _condition(
    value: object, file: str, key: str,
    compile_script: Callable[[object, str], Any],
    compile_filter: Callable[[str, str], Any],
) -> object | None:
    if value is None:
        return None
    compiled: object
    if isinstance(value, str):
        compiled = compile_filter(value, key)
    elif isinstance(value, dict):
        compiled = compile_script(value, key)
    else:
        raise ConfigError(file, key, "expected a _queryFilter string or a script object")
    return compiled


def _scripted_action(situation: Situation, answer: object, index: int) -> Action:
    name = answer if isinstance(answer, str) else repr(answer)
    if name not in Action.__members__:
        raise ScriptError(f"the action script of policy {index} returned {name!r}, "
                          f"not one of {_names(Action)}")
    action = Action[name]
    if action not in ALLOWED_ACTIONS[situation]:
        raise ScriptError(f"the action script of policy {index} returned {action}, "
                          f"which is not possible for {situation}")
    return action


def _unknown(what: str, value: str, valid: Sequence[str]) -> str:
    if value.upper() in valid:
        hint = f"; names are uppercase: {value.upper()}"
    else:
        close = difflib.get_close_matches(value.upper(), valid, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown {what} {value!r}{hint}; expected one of {', '.join(valid)}"


def _names(values: Any) -> str:
    return ", ".join(str(v) for v in values)
