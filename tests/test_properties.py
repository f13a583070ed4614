"""The property mapping: compiling "properties", projecting a source object, diffing targets."""

from __future__ import annotations

from typing import Any

import pytest
from idsync.config.properties import PropertyMap, compile_properties, diff
from idsync.errors import ConfigError, ScriptError, ScriptTimeout
from idsync.query.ast import And, Compare, Present


def _script(config: object, key: str) -> object:
    return config


def _filter(text: str, key: str) -> object:
    # "name op value" over /object/...: enough for these tests.
    path, _, value = text.partition(" eq ")
    return Compare(tuple(path.strip("/").split("/")), "eq", value.strip("'"))


def _compile(raw: object) -> PropertyMap:
    return compile_properties(raw, file="sync.json", key="m.properties",
                              compile_script=_script, compile_filter=_filter)


def _run_transform(script: object, scope: dict[str, Any]) -> Any:
    return script["fn"](scope)  # type: ignore[index]


def _eval(cond: object, scope: dict[str, Any]) -> bool:
    if isinstance(cond, Compare):
        value: Any = scope
        for part in cond.path:
            value = value.get(part) if isinstance(value, dict) else None
        return bool(value == cond.value)
    return bool(cond["fn"](scope))  # type: ignore[index]


def _project(pm: PropertyMap, src: dict[str, Any], existing: dict[str, Any] | None = None,
             qualifier: str = "default") -> dict[str, Any]:
    return pm.project(src, existing, run_transform=_run_transform, eval_condition=_eval,
                      link_qualifier=qualifier)


SRC = {"_id": "1", "uid": "jdoe", "mail": "J@X.ORG", "name": {"givenName": "Jane"}, "tags": ["a"]}


def test_plain_nested_and_slashed_sources() -> None:
    """Source paths with and without a leading slash address nested values; targets nest too."""
    pm = _compile([{"source": "uid", "target": "userName"},
                   {"source": "/name/givenName", "target": "name/first"},
                   {"source": "name/givenName", "target": "/given"},
                   {"source": "missing/deep", "target": "gone"}])
    assert _project(pm, SRC) == {"userName": "jdoe", "name": {"first": "Jane"}, "given": "Jane",
                                 "gone": None}


def test_whole_object_source_and_transform() -> None:
    """With ``"source": ""`` the transform sees the whole object as 'source', without a
    source key it sees None (as in PingIDM); its result is the value."""
    pm = _compile([{"source": "", "target": "cn", "transform": {"fn": lambda s: s["source"]["uid"].upper()}},
                   {"target": "none", "transform": {"fn": lambda s: repr(s["source"])}},
                   {"source": "", "target": "keys",
                    "transform": {"fn": lambda s: sorted(s["source"])}},
                   {"source": "mail", "target": "mail",
                    "transform": {"fn": lambda s: s["source"].lower() + "/" + s["linkQualifier"]}}])
    out = _project(pm, SRC, qualifier="q1")
    assert out["cn"] == "JDOE" and out["mail"] == "j@x.org/q1" and "uid" in out["keys"]
    assert out["none"] == "None"


def test_condition_skips_the_property_entirely() -> None:
    """A false condition leaves the property out of the projection (not even None)."""
    pm = _compile([{"source": "uid", "target": "a", "condition": "/object/uid eq 'jdoe'"},
                   {"source": "uid", "target": "b", "condition": "/object/uid eq 'other'"},
                   {"source": "uid", "target": "c",
                    "condition": {"fn": lambda s: s["oldTarget"] is not None and s["linkQualifier"]}},
                   # ``target`` is the target being made (PingIDM's): {} and the rules before, in a create too.
                   {"source": "uid", "target": "d", "condition": {"fn": lambda s: s["target"].get("a") == "jdoe"}}])
    assert _project(pm, SRC) == {"a": "jdoe", "d": "jdoe"}
    assert _project(pm, SRC, existing={"x": 1}) == {"a": "jdoe", "c": "jdoe", "d": "jdoe"}


def test_default_applies_only_to_a_missing_value() -> None:
    """'default' replaces None (after the transform), never a present value."""
    pm = _compile([{"source": "nope", "target": "a", "default": "dflt"},
                   {"source": "uid", "target": "b", "default": "dflt"},
                   {"source": "uid", "target": "c", "default": "d",
                    "transform": {"fn": lambda s: None}},
                   {"source": "tags", "target": "d", "default": ["z"]}])
    assert _project(pm, SRC) == {"a": "dflt", "b": "jdoe", "c": "d", "d": ["a"]}


def test_projection_copies_values() -> None:
    """Changing the projection never changes the source object."""
    pm = _compile([{"source": "tags", "target": "tags"}])
    _project(pm, SRC)["tags"].append("b")
    assert SRC["tags"] == ["a"]


def test_script_errors_name_the_property_and_keep_their_kind() -> None:
    """A failing transform reports which target property it was for; a timeout stays a timeout."""
    def boom(_: object) -> None:
        raise ScriptTimeout("too slow")

    pm = _compile([{"source": "uid", "target": "name/x", "transform": {"fn": boom}}])
    with pytest.raises(ScriptTimeout, match="transform of property 'name/x'"):
        _project(pm, SRC)

    def bad(_: object) -> bool:
        raise ScriptError("oops")

    pm = _compile([{"source": "uid", "target": "y", "condition": {"fn": bad}}])
    with pytest.raises(ScriptError, match="condition of property 'y'"):
        _project(pm, SRC)


def test_source_and_target_fields() -> None:
    """Fields to read are the top-level sources (and /object paths of filter conditions);
    a whole-object source or a condition script means all of them."""
    pm = _compile([{"source": "name/givenName", "target": "a/b"}, {"source": "uid", "target": "c"}])
    assert pm.source_fields() == {"name", "uid"} and pm.target_fields() == {"a", "c"}
    cond = And((Compare(("object", "dept"), "eq", "x"), Present(("object", "mail"))))
    with_filter = compile_properties([{"source": "uid", "target": "c", "condition": "f"}], file="f",
                                     key="k", compile_script=_script,
                                     compile_filter=lambda t, k: cond)
    assert with_filter.source_fields() == {"uid", "dept", "mail"}
    assert _compile([{"source": "", "target": "c"}]).source_fields() is None
    assert _compile([{"source": "uid", "target": "u"}, {"target": "c", "default": 1}]).source_fields() == {"uid"}
    assert _compile([{"source": "uid", "target": "c", "condition": {}}]).source_fields() is None


def test_targets_reading() -> None:
    """The targets whose rules read given source fields: as their source, in a filter
    condition, or possibly (the whole object, a condition script)."""
    cond = Present(("object", "dept"))
    pm = compile_properties([{"source": "name/givenName", "target": "a/b"}, {"source": "uid", "target": "c"},
                             {"source": "mail", "target": "m", "condition": "f"}, {"target": "d", "default": 1}],
                            file="f", key="k", compile_script=_script, compile_filter=lambda t, k: cond)
    assert pm.targets_reading({"name"}) == {"a"} and pm.targets_reading({"dept"}) == {"m"}
    assert pm.targets_reading({"uid", "mail"}) == {"c", "m"} and pm.targets_reading({"sn"}) == set()
    anything = _compile([{"source": "", "target": "w"}, {"source": "uid", "target": "s", "condition": {}},
                         {"source": "uid", "target": "c"}])
    assert anything.targets_reading({"sn"}) == {"w", "s"}


@pytest.mark.parametrize(("raw", "key", "message"), [
    ({"source": "a"}, "m.properties", "expected a list"),
    ([1], "m.properties[0]", "expected an object"),
    ([{"source": "a"}], "m.properties[0].target", "expected a property path"),
    ([{"source": "a", "target": "/"}], "m.properties[0].target", "needs a target"),
    ([{"source": "a//b", "target": "x"}], "m.properties[0].source", "empty segment"),
    ([{"source": "a", "target": "x", "transfrom": {}}], "m.properties[0].transfrom",
     "unknown setting, did you mean transform?"),
    ([{"source": "a", "target": "x", "transform": "x"}], "m.properties[0].transform", "script"),
    ([{"source": "a", "target": "x", "condition": 3}], "m.properties[0].condition", "_queryFilter"),
    ([{"source": "a", "target": "name"}, {"source": "b", "target": "name/given"}],
     "m.properties[1].target", "inside 'name'"),
])
def test_bad_properties_name_file_and_key(raw: object, key: str, message: str) -> None:
    """Every mistake in "properties" is a ConfigError naming the file and exact key."""
    with pytest.raises(ConfigError) as err:
        _compile(raw)
    assert err.value.file == "sync.json" and err.value.key == key and message in err.value.problem


def test_same_target_twice_is_allowed_last_wins() -> None:
    """Two rules for one target (usually with exclusive conditions) are allowed; the later wins."""
    pm = _compile([{"source": "uid", "target": "x"}, {"source": "mail", "target": "x"}])
    assert _project(pm, SRC) == {"x": "J@X.ORG"}


def test_diff_empty_values_are_equal() -> None:
    """None, a missing property and [] are all 'no value': no change between them."""
    assert diff({"a": None, "b": [], "c": None}, {"b": None, "c": []}) == {}
    assert diff({"a": None}, None) == {}
    assert diff({"a": None}, {"a": "x"}) == {"a": None}
    assert diff({"a": []}, {"a": ["x"]}) == {"a": []}


def test_diff_types_matter() -> None:
    """A number is not its string, and a boolean is not 1."""
    assert diff({"a": 1, "b": True, "c": "1"}, {"a": "1", "b": 1, "c": 1}) == {"a": 1, "b": True,
                                                                              "c": "1"}
    assert diff({"a": 1, "b": 2.5}, {"a": 1.0, "b": 2.5}) == {}


def test_diff_lists_ordered_or_unordered() -> None:
    """Lists compare in order by default, as multisets when unordered (LDAP, SCIM)."""
    assert diff({"m": ["a", "b"]}, {"m": ["b", "a"]}) == {"m": ["a", "b"]}
    assert diff({"m": ["a", "b"]}, {"m": ["b", "a"]}, unordered=True) == {}
    assert diff({"m": ["a", "a"]}, {"m": ["a"]}, unordered=True) == {"m": ["a", "a"]}
    emails = [{"value": "x", "primary": True}, {"value": "y"}]
    assert diff({"e": emails}, {"e": emails[::-1]}, unordered=True) == {}


def test_diff_one_value_or_a_list_of_it_in_an_external_system() -> None:
    """An external system's attribute holding one value holds it whether it is read as a
    list (multi-valued) or projected as a string: no update between them; in the store
    (ordered comparison) the types still differ."""
    assert diff({"mail": "a@example.com"}, {"mail": ["a@example.com"]}, unordered=True) == {}
    assert diff({"mail": ["a@example.com"]}, {"mail": "a@example.com"}, unordered=True) == {}
    assert diff({"mail": "b@example.com"}, {"mail": ["a@example.com"]}, unordered=True) == {"mail": "b@example.com"}
    assert diff({"mail": "a@example.com"}, {"mail": ["a@example.com", "b@example.com"]}, unordered=True) == {
        "mail": "a@example.com"}
    assert diff({"mail": "a@example.com"}, {"mail": ["a@example.com"]}) == {"mail": "a@example.com"}


def test_diff_nested_objects_and_keys() -> None:
    """Nested objects compare deeply; _id/_rev are never updates; key case can be ignored."""
    assert diff({"n": {"g": "J", "x": None}}, {"n": {"g": "J"}}) == {}
    assert diff({"n": {"g": "J"}}, {"n": {"g": "K"}}) == {"n": {"g": "J"}}
    assert diff({"_id": "2", "_rev": "9", "a": 1}, {"_id": "1", "a": 1}) == {}
    assert diff({"mail": "m"}, {"Mail": "m"}) == {"mail": "m"}
    assert diff({"mail": "m"}, {"Mail": "m"}, ignore_case_keys=True) == {}


def test_projection_equal_to_target_is_no_write() -> None:
    """Projecting an unchanged source onto its own target gives an empty update set."""
    pm = _compile([{"source": "uid", "target": "userName"}, {"source": "tags", "target": "tags"}])
    existing = {"_id": "t", "_rev": "3", "userName": "jdoe", "tags": ["a"], "other": 1}
    assert diff(_project(pm, SRC, existing), existing) == {}
