"""PingIDM's stock ``managed.json`` scripts, run as Python when they are nothing else.

The default user type's ``onCreate`` is three calls of the modules idsync answers
(``modules.py``): ``require('ui/onCreateUser').setDefaultFields(object);`` and two that
change nothing here. Run in QuickJS that costs about 40 µs per created object, the
object and ``request`` crossing to JavaScript and back as JSON: 4 CPU-seconds for a
first load of 100,000 users. A script made only of such calls (any order, the
``ui/`` prefix or not, either quote) is run by ``StockScript`` instead, doing what the
modules do, with JavaScript's idea of an absent value; anything else in the script,
or ``globals``, and it is compiled as any other. ``tests/test_pingidm_stock_scripts.py``
holds the two ways to the same answers.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import structlog

__all__ = ["StockScript", "stock_script"]

log = structlog.get_logger("idsync.scripts")

_AUTHORIZED = [{"_ref": "repo/internal/role/openidm-authorized"}]
_CALL = re.compile(r"""require\(\s*(['"])(?P<module>(?:ui/)?onCreateUser|(?:ui/)?onUpdateUser|"""
                   r"""roles/conditionalRoles)\1\s*\)\s*\.\s*(?P<function>\w+)\s*\((?P<args>[^()]*)\)""")
_NAMES = re.compile(r"^[A-Za-z_$][\w$]*$")
_STRING = re.compile(r"""^(['"])[^'"\\]*\1$""")


def _falsy(value: Any) -> bool:
    """JavaScript's ``!value`` for a JSON value (an empty list or object is true there)."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value == ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0 or (isinstance(value, float) and math.isnan(value))
    return False


def _set_default_fields(v: dict[str, Any]) -> None:
    obj = v["object"]
    if _falsy(obj.get("accountStatus")):
        obj["accountStatus"] = "active"
    if _falsy(obj.get("authzRoles")):
        obj["authzRoles"] = [dict(r) for r in _AUTHORIZED]


def _idp(v: dict[str, Any]) -> None:
    obj = v["object"]
    if not _falsy(obj.get("idpData")):
        log.warning("script.log", script="stock", message=f"idpData of {obj.get('_id') or 'a new object'} is kept as "
                    "it is: idsync has no social identity providers, so no managed object is made for them")


def _preserve_last_sync(v: dict[str, Any]) -> None:
    obj, old, request = v["object"], v.get("oldObject"), v.get("request")
    if (isinstance(request, Mapping) and request.get("method") == "update" and "lastSync" not in obj
            and isinstance(old, Mapping) and not _falsy(old.get("lastSync"))):
        obj["lastSync"] = copy.deepcopy(old["lastSync"])


def _nothing(_v: dict[str, Any]) -> None:
    pass


# (module without ui/, function) -> (its arguments, what it does)
_FUNCTIONS: dict[tuple[str, str], tuple[tuple[str, ...], Callable[[dict[str, Any]], None]]] = {
    ("onCreateUser", "setDefaultFields"): (("object",), _set_default_fields),
    ("onCreateUser", "createIdpRelationships"): (("object",), _idp),
    ("onUpdateUser", "preserveLastSync"): (("object", "oldObject", "request"), _preserve_last_sync),
    ("onUpdateUser", "updateIdpRelationships"): (("object",), _idp),
    ("roles/conditionalRoles", "updateConditionalGrantsForUser"): ((), _nothing),
    ("roles/conditionalRoles", "evaluateConditionalRoles"): ((), _nothing),
    ("roles/conditionalRoles", "roleCreate"): ((), _nothing),
    ("roles/conditionalRoles", "roleUpdate"): ((), _nothing),
}


class StockScript:
    """A stock script run as Python: the same calls as ``Script`` where the hooks use them."""

    def __init__(self, name: str, steps: tuple[Callable[[dict[str, Any]], None], ...]) -> None:
        self.name = name
        self._steps = steps

    def __repr__(self) -> str:
        return f"StockScript({self.name!r})"

    def reaches(self, name: str) -> bool:
        """As ``Script.reaches``: a stock script is given every variable."""
        return True

    def __call__(self, **variables: Any) -> Any:
        self._run(variables)
        return None

    def run_returning(self, variables: Mapping[str, Any], variable: str) -> Any:
        scope = self._run(variables)
        return scope.get(variable)

    def _run(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        scope = {k: v for k, v in variables.items() if k != "@same"}
        for key in ("object", "newObject"):  # the copies a script gets, changed in place
            if isinstance(scope.get(key), dict):
                scope[key] = dict(scope[key])
        for alias, of in variables.get("@same") or ():
            scope[alias] = scope[of]
        for step in self._steps:
            step(scope)
        return scope


def stock_script(config: object, name: str) -> StockScript | None:
    """``config`` as a ``StockScript`` when its source is nothing but calls of the stock
    functions with PingIDM's own variables; ``None`` otherwise."""
    if not isinstance(config, Mapping) or set(config) - {"type", "source"}:
        return None
    if config.get("type", "text/javascript") != "text/javascript" or not isinstance(config.get("source"), str):
        return None
    source = config["source"]
    steps: list[Callable[[dict[str, Any]], None]] = []
    end = 0
    for match in _CALL.finditer(source):
        if not _only_separators(source[end:match.start()]):
            return None
        module = match["module"].removeprefix("ui/")
        found = _FUNCTIONS.get((module, match["function"]))
        if found is None or not _arguments_fit(match["args"], found[0]):
            return None
        steps.append(found[1])
        end = match.end()
    if not steps or not _only_separators(source[end:]):
        return None
    return StockScript(name, tuple(steps))


def _only_separators(text: str) -> bool:
    return not text.replace(";", "").strip()


def _arguments_fit(text: str, expected: tuple[str, ...]) -> bool:
    """Whether the call passes PingIDM's variables as the function reads them (a function
    that reads none may be given anything plain: a property name, say)."""
    args = [a.strip() for a in text.split(",")] if text.strip() else []
    if not expected:
        return all(_NAMES.match(a) or _STRING.match(a) for a in args)
    return tuple(args) == expected
