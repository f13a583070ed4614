"""Policies: parsing a mapping's "policies" list, and choosing an action per situation."""

from __future__ import annotations

from typing import Any

import pytest
from idsync.config.policies import (
    ALLOWED_ACTIONS,
    DEFAULT_ACTIONS,
    PINGIDM_DEFAULT_ACTIONS,
    Action,
    Decision,
    PolicySet,
    Situation,
    parse_policies,
)
from idsync.errors import ConfigError, ScriptError


def _script(config: object, key: str) -> tuple[str, Any]:
    return ("script", config)


def _filter(text: str, key: str) -> tuple[str, str]:
    return ("filter", text)


def _parse(raw: object) -> PolicySet:
    return parse_policies(raw, file="sync.json", key="mappings[0].policies",
                          compile_script=_script, compile_filter=_filter)


def _never(_: object) -> str:
    raise AssertionError("no action script expected")


def test_pingidm_defaults_match_its_table() -> None:
    """PingIDM's default action for every situation, as its documentation lists them."""
    assert dict(PINGIDM_DEFAULT_ACTIONS) == {
        Situation.CONFIRMED: Action.UPDATE, Situation.FOUND: Action.UPDATE,
        Situation.FOUND_ALREADY_LINKED: Action.EXCEPTION, Situation.ABSENT: Action.CREATE,
        Situation.AMBIGUOUS: Action.EXCEPTION, Situation.MISSING: Action.EXCEPTION,
        Situation.UNQUALIFIED: Action.DELETE, Situation.SOURCE_IGNORED: Action.REPORT,
        Situation.TARGET_IGNORED: Action.REPORT, Situation.UNASSIGNED: Action.EXCEPTION,
        Situation.SOURCE_MISSING: Action.EXCEPTION, Situation.LINK_ONLY: Action.EXCEPTION,
        Situation.ALL_GONE: Action.NOREPORT,
    }


def test_idsync_defaults_never_delete() -> None:
    """Without a DELETE policy nothing is deleted: UNQUALIFIED becomes EXCEPTION;
    every other default is PingIDM's."""
    assert Action.DELETE not in DEFAULT_ACTIONS.values()
    assert DEFAULT_ACTIONS[Situation.UNQUALIFIED] is Action.EXCEPTION
    differing = {s for s in Situation if DEFAULT_ACTIONS[s] != PINGIDM_DEFAULT_ACTIONS[s]}
    assert differing == {Situation.UNQUALIFIED}


def test_every_default_is_allowed() -> None:
    """Both default tables only use actions possible for their situation."""
    for s in Situation:
        assert PINGIDM_DEFAULT_ACTIONS[s] in ALLOWED_ACTIONS[s]
        assert DEFAULT_ACTIONS[s] in ALLOWED_ACTIONS[s]


def test_no_policy_gives_the_default() -> None:
    """A situation no policy names takes idsync's default, with no policy index."""
    decision = _parse([]).decide(Situation.UNQUALIFIED, evaluate_condition=bool,
                                 evaluate_action_script=_never)
    assert decision == Decision(Situation.UNQUALIFIED, Action.EXCEPTION, None)


def test_first_policy_whose_condition_holds_wins() -> None:
    """Conditions are tried in order; the first true one decides; later ones are not evaluated."""
    policies = _parse([
        {"situation": "CONFIRMED", "action": "IGNORE", "condition": "/object/a eq 1"},
        {"situation": "ABSENT", "action": "CREATE"},
        {"situation": "CONFIRMED", "action": "UNLINK", "condition": {"type": "text/javascript",
                                                                     "source": "true"}},
        {"situation": "CONFIRMED", "action": "DELETE", "condition": "/object/c eq 1"},
    ])
    seen: list[object] = []

    def evaluate(cond: object) -> bool:
        seen.append(cond)
        return isinstance(cond, tuple) and cond[0] == "script"

    decision = policies.decide(Situation.CONFIRMED, evaluate_condition=evaluate,
                               evaluate_action_script=_never)
    assert (decision.action, decision.policy_index) == (Action.UNLINK, 2)
    assert len(seen) == 2


def test_no_condition_holding_falls_back_to_default() -> None:
    """When every policy of the situation has a false condition, the default applies."""
    policies = _parse([{"situation": "ABSENT", "action": "IGNORE", "condition": "/object/x pr"}])
    decision = policies.decide(Situation.ABSENT, evaluate_condition=lambda _: False,
                               evaluate_action_script=_never)
    assert (decision.action, decision.policy_index) == (Action.CREATE, None)


def test_action_script_answer_is_used_and_checked() -> None:
    """A script action's answer becomes the action; an unknown or impossible one
    fails the object."""
    policies = _parse([{"situation": "FOUND", "action": {"type": "text/javascript", "source": "x"},
                        "postAction": {"type": "text/javascript", "source": "y"}}])
    decision = policies.decide(Situation.FOUND, evaluate_condition=bool,
                               evaluate_action_script=lambda _: "LINK")
    assert decision.action is Action.LINK and decision.post_action is not None
    with pytest.raises(ScriptError, match="not one of"):
        policies.decide(Situation.FOUND, evaluate_condition=bool,
                        evaluate_action_script=lambda _: "link")
    with pytest.raises(ScriptError, match="not possible for FOUND"):
        policies.decide(Situation.FOUND, evaluate_condition=bool,
                        evaluate_action_script=lambda _: "CREATE")


@pytest.mark.parametrize(("raw", "key", "message"), [
    ("UPDATE", "mappings[0].policies", "expected a list"),
    (["x"], "mappings[0].policies[0]", "expected an object"),
    ([{"situation": "FOUNDD", "action": "LINK"}], "mappings[0].policies[0].situation",
     "unknown situation 'FOUNDD'; did you mean FOUND?; expected one of CONFIRMED"),
    ([{"situation": "found", "action": "LINK"}], "mappings[0].policies[0].situation",
     "names are uppercase: FOUND"),
    ([{"action": "LINK"}], "mappings[0].policies[0].situation", "needs a situation"),
    ([{"situation": "FOUND", "action": "LNK"}], "mappings[0].policies[0].action",
     "unknown action 'LNK'"),
    ([{"situation": "FOUND", "action": 3}], "mappings[0].policies[0].action", "or a script object"),
    ([{"situation": "CONFIRMED", "action": "CREATE"}], "mappings[0].policies[0].action",
     "CREATE is not possible for CONFIRMED"),
    ([{"situation": "FOUND", "action": "LINK", "conditon": "x"}],
     "mappings[0].policies[0].conditon", "unknown setting, did you mean condition?"),
    ([{"situation": "FOUND", "action": "LINK", "condition": 1}],
     "mappings[0].policies[0].condition", "_queryFilter string or a script"),
    ([{"situation": "FOUND", "action": "LINK", "postAction": "x"}],
     "mappings[0].policies[0].postAction", "script object"),
])
def test_bad_policies_name_file_and_key(raw: object, key: str, message: str) -> None:
    """Every mistake is a ConfigError naming the file, the exact key and what is expected."""
    with pytest.raises(ConfigError) as err:
        _parse(raw)
    assert err.value.file == "sync.json" and err.value.key == key
    assert message in err.value.problem


def test_compiled_conditions_and_scripts_are_kept() -> None:
    """Filters go to compile_filter, script objects to compile_script, with their keys."""
    keys: list[str] = []

    def script(config: object, key: str) -> str:
        keys.append(key)
        return "compiled"

    policies = parse_policies(
        [{"situation": "SOURCE_MISSING", "action": "DELETE", "condition": "/object/x pr",
          "postAction": {"type": "text/javascript", "source": "1"}}],
        file="f", key="p", compile_script=script, compile_filter=lambda t, k: ("F", t, k))
    (policy,) = policies.policies
    assert policy.condition == ("F", "/object/x pr", "p[0].condition")
    assert policy.post_action == "compiled" and keys == ["p[0].postAction"]
    assert _parse(None).policies == ()
