"""``require('lib/lodash')`` in scripts: idsync's own subset of lodash, as PingIDM
projects' mapping scripts use it (OpenIDM's samples turn a comma-separated list into
role references with ``_.map``), and a clear error for any other module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from idsync.errors import ScriptError
from idsync.scripts import compile_script
from idsync.scripts.lodash import LODASH_FUNCTIONS


def _run(code: str, **variables: Any) -> Any:
    script = compile_script({"type": "text/javascript", "source": code}, file="conf/sync.json",
                            key="mappings[0].properties[0].transform", base_dir=Path("."))
    return script(**variables)


def test_the_samples_transform() -> None:
    source = ("var _ = require('lib/lodash'); _.map(source.split(','), function(role) "
              "{ return {'_ref': 'repo/internal/role/' + role} });")
    assert _run(source, source="openidm-admin,openidm-authorized") == [
        {"_ref": "repo/internal/role/openidm-admin"}, {"_ref": "repo/internal/role/openidm-authorized"}]


@pytest.mark.parametrize(("expression", "expected"), [
    ("_.map({a: 1, b: 2}, function (v, k) { return k + v; })", ["a1", "b2"]),
    ("_.map([{n: 'x'}, {n: 'y'}], 'n')", ["x", "y"]),
    ("_.filter([1, 2, 3, 4], function (v) { return v % 2; })", [1, 3]),
    ("_.reject([{a: true}, {a: false}], 'a')", [{"a": False}]),
    ("_.find([{id: 1}, {id: 2}], {id: 2})", {"id": 2}),
    ("_.reduce([1, 2, 3], function (s, v) { return s + v; }, 10)", 16),
    ("[_.some([0, 1], function (v) { return v > 0; }), _.every([1, 2], function (v) { return v > 1; })]",
     [True, False]),
    ("[_.includes(['a'], 'a'), _.contains('abc', 'd'), _.has({a: {b: 1}}, 'a.b'), _.isEmpty({})]",
     [True, False, True, True]),
    ("_.get({a: [{b: 'c'}]}, 'a[0].b')", "c"),
    ("_.get({}, 'a.b', 'none')", "none"),
    ("_.uniq(_.union([1, 2], [2, 3]))", [1, 2, 3]),
    ("[_.without([1, 2, 3], 2), _.difference([1, 2, 3], [1]), _.intersection([1, 2], [2, 3])]",
     [[1, 3], [2, 3], [2]]),
    ("_.flatten([[1], 2, [3, [4]]])", [1, 2, 3, [4]]),
    ("_.compact([0, 'a', '', null, 'b'])", ["a", "b"]),
    ("[_.pick({a: 1, b: 2}, 'a'), _.omit({a: 1, b: 2}, ['a']), _.assign({a: 1}, {b: 2}, null)]",
     [{"a": 1}, {"b": 2}, {"a": 1, "b": 2}]),
    ("[_.first([1, 2]), _.last([1, 2]), _.size({a: 1}), _.range(3), _.join(['a', 'b'], '-'), _.trim('  x ')]",
     [1, 2, 1, [0, 1, 2], "a-b", "x"]),
    ("_.sortBy([{n: 'b'}, {n: 'a'}], 'n')", [{"n": "a"}, {"n": "b"}]),
    ("_.groupBy(['one', 'two', 'three'], 'length')", {"3": ["one", "two"], "5": ["three"]}),
    ("_.keyBy([{id: 'a'}], 'id')", {"a": {"id": "a"}}),
    ("var seen = []; _.each([1, 2, 3], function (v) { seen.push(v); return v < 2; }); seen", [1, 2]),
    # What PingIDM's own scripts call besides (isEqual six times, findWhere and any once).
    ("[_.isEqual({a: [1, {b: 2}]}, {a: [1, {b: 2}]}), _.isEqual({a: 1}, {a: 1, b: null}), _.isEqual([1, 2], [2, 1]),"
     " _.isEqual(null, undefined), _.isEqual(NaN, NaN), _.isEqual({}, [])]", [True, False, False, False, True, False]),
    ("[_.findWhere([{a: 1, b: 2}, {a: 2}], {a: 2}), _.any([1, 2], function (v) { return v > 1; }),"
     " _.all([1, 2], function (v) { return v > 1; })]", [{"a": 2}, True, False]),
])
def test_the_subset_behaves_as_lodash(expression: str, expected: Any) -> None:
    assert _run(f"var _ = require('lib/lodash'); {expression}") == expected


def test_every_listed_function_exists_and_the_module_is_frozen() -> None:
    names = _run("var _ = require('lodash'); Object.keys(_).sort()")
    assert names == sorted(LODASH_FUNCTIONS)
    assert _run("var _ = require('lib/lodash'); _.map = null; typeof _.map") == "function"


def test_another_module_is_a_clear_error() -> None:
    with pytest.raises(ScriptError, match=r"require\(\"lib/moment\"\): no such module; idsync provides lib/lodash"):
        _run("require('lib/moment')")
