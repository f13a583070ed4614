"""Object scripts and policies of the managed types, compiled from ``conf/``.

``managed.json`` names, per type, the scripts PingIDM runs around a change
(``onCreate``, ``onUpdate``, ``onDelete``, ``onRead``, ``onValidate``,
``onRetrieve``, ``onStore``, ``postCreate``, ``postUpdate``, ``postDelete``) and,
per property, ``onValidate``/``onRetrieve``/``onStore`` and ``policies``
(``[{"policyId": "minimum-length", "params": {"minLength": 8}}]``).
``conf/policy.json`` adds policies per resource (``resources``) and custom policies
written in JavaScript (``additionalFiles``: scripts that call
``addPolicy({policyId, policyExec, policyRequirements, validateOnlyIfPresent})`` and
define the function ``policyExec(fullObject, value, params, propertyName)``, which
answers a list of failed requirements).

PingIDM's policy service also derives policies from each property's JSON schema
(``policy.js``, ``getAdditionalPolicies``), and so does idsync (``schema_policies``):
``not-empty`` for a ``minLength`` above 0 or a list of types without ``"null"``, and
for a string ``minimum-length`` from ``minLength`` and ``regexpMatches`` from
``pattern``, ahead of the property's own ``policies``. PingIDM's default managed.json
relies on them: a password of at least 8 characters, a telephone number of digits,
spaces, dashes and parentheses, a user name that is not empty.

Everything is checked here, when the project loads: a script is compiled (Groovy
and a missing file are errors, as in mappings), a policy id must be one of
PingIDM's built-in policies or a custom one. ``store/policy.py`` evaluates the
policies and ``store/hooks.py`` runs the scripts, on every write of a managed object.

The stock ``onCreate``/``onUpdate`` of PingIDM's default ``managed.json``
(``require('ui/onCreateUser').setDefaultFields(object)`` ...) run on idsync's own
versions of those modules (``scripts/modules.py``). PingIDM's own script files
(``ui/``, ``roles/`` files it bundles) and programs that ``require`` another of its
modules are not compiled nor run (``not_run``): ``idsync validate`` names each.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from idsync.config.files import load_json
from idsync.errors import ConfigError, ScriptError
from idsync.scripts import Script, ScriptEngine
from idsync.scripts.modules import MODULE_NAMES, missing_functions, required_modules
from idsync.scripts.paths import ScriptPaths
from idsync.scripts.stock import StockScript, stock_script

__all__ = [
    "BUILTIN_POLICIES",
    "NOT_ENFORCED_POLICIES",
    "OBJECT_EVENTS",
    "PROPERTY_EVENTS",
    "ConditionalPolicies",
    "CustomPolicies",
    "ObjectScript",
    "PolicyUse",
    "PropertyModel",
    "TypeModel",
    "in_javascript",
    "is_compensate",
    "js_regexp",
    "load_object_models",
    "not_run",
    "schema_policies",
    "secure_hash",
]

OBJECT_EVENTS = ("onCreate", "onRead", "onUpdate", "onDelete", "onValidate", "onRetrieve", "onStore",
                 "postCreate", "postUpdate", "postDelete", "onSync")
PROPERTY_EVENTS = ("onValidate", "onRetrieve", "onStore")
ObjectScript = Script | StockScript  # what a managed.json script compiles to


def in_javascript(script: ObjectScript) -> TypeGuard[Script]:
    """Whether ``script`` runs in the JavaScript sandbox (a stock one runs as Python):
    one that can run for many objects in one call (``Script.call_many``)."""
    return isinstance(script, Script)


_HASH_ALGORITHMS = ("SHA-256", "SHA-384", "SHA-512", "SHA-1", "MD5")


@dataclass(frozen=True)
class _Builtin:
    requirements: tuple[str, ...]
    only_if_present: bool = False


# PingIDM's built-in policies that idsync enforces (``store/policy.py`` implements each).
BUILTIN_POLICIES: Mapping[str, _Builtin] = {
    "required": _Builtin(("REQUIRED",)),
    "not-empty": _Builtin(("REQUIRED",), True),
    "not-null": _Builtin(("REQUIRED",), True),
    "unique": _Builtin(("UNIQUE",)),
    "valid-username": _Builtin(("VALID_USERNAME",)),
    "valid-type": _Builtin(("VALID_TYPE",)),
    "valid-email-address-format": _Builtin(("VALID_EMAIL_ADDRESS_FORMAT",), True),
    "valid-date": _Builtin(("VALID_DATE",), True),
    "valid-datetime": _Builtin(("VALID_DATETIME",), True),
    "minimum-length": _Builtin(("MIN_LENGTH",), True),
    "maximum-length": _Builtin(("MAX_LENGTH",), True),
    "at-least-X-capital-letters": _Builtin(("AT_LEAST_X_CAPITAL_LETTERS",), True),
    "at-least-X-capitals": _Builtin(("AT_LEAST_X_CAPITAL_LETTERS",), True),
    "at-least-X-numbers": _Builtin(("AT_LEAST_X_NUMBERS",), True),
    "cannot-contain-others": _Builtin(("CANNOT_CONTAIN_OTHERS",), True),
    "cannot-contain-characters": _Builtin(("CANNOT_CONTAIN_CHARACTERS",), True),
    "cannot-contain-duplicates": _Builtin(("CANNOT_CONTAIN_DUPLICATES",), True),
    "valid-name-format": _Builtin(("VALID_NAME_FORMAT",), True),
    "valid-phone-format": _Builtin(("VALID_PHONE_FORMAT",), True),
    "regexpMatches": _Builtin(("MATCH_REGEXP",)),
    "re-auth-required": _Builtin(("REAUTH_REQUIRED",)),
    "mapping-exists": _Builtin(("MAPPING_EXISTS",)),
}

# PingIDM's other built-in policies: accepted, not enforced (``idsync validate`` says why).
NOT_ENFORCED_POLICIES: Mapping[str, str] = {
    "re-auth-required": "it asks an end user of PingIDM's UI to authenticate again; idsync has no end-user sessions",
    "no-internal-user-conflict": "idsync has no internal users",
    "max-attempts-triggers-lock-cooldown": "idsync keeps no failed-login counters",
    "valid-array-items": "array items are checked for their type only",
    "valid-permissions": "it checks PingIDM's internal privileges",
    "valid-accessFlags-object": "it checks PingIDM's internal privileges",
    "valid-privilege-path": "it checks PingIDM's internal privileges",
    "valid-temporal-constraints": "checked with the roles' temporal constraints, not as a policy",
    "valid-query-filter": "checked with the roles' conditions, not as a policy",
    "valid-event-scripts": "it checks PingIDM's own configuration objects",
}


@dataclass(frozen=True)
class PolicyUse:
    """One policy applied to one property."""

    policy_id: str
    params: Mapping[str, Any]
    requirements: tuple[str, ...]
    only_if_present: bool
    custom: str | None = None  # the ``policyExec`` function of a custom policy

    def describe(self) -> dict[str, Any]:
        """The policy as ``GET policy/...`` answers it."""
        return {"policyId": self.policy_id, "params": dict(self.params),
                "policyRequirements": list(self.requirements), "validateOnlyIfPresent": self.only_if_present}


@dataclass(frozen=True)
class ConditionalPolicies:
    """One item of a property's ``conditionalPolicies``: its ``policies`` apply to an
    object that has every property of ``dependencies`` and for which ``condition``
    (a script given ``fullObject``) is true."""

    condition: Script
    dependencies: tuple[str, ...]
    policies: tuple[PolicyUse, ...]


@dataclass(frozen=True)
class PropertyModel:
    name: str
    policies: tuple[PolicyUse, ...] = ()
    scripts: Mapping[str, Script] = field(default_factory=dict)  # onValidate, onRetrieve, onStore
    conditional: tuple[ConditionalPolicies, ...] = ()
    fallback: tuple[PolicyUse, ...] = ()  # ``fallbackPolicies``: when no conditional item applies

    @property
    def checked(self) -> bool:
        return bool(self.policies or self.conditional or self.fallback)


@dataclass(frozen=True)
class CustomPolicies:
    """The compiled ``additionalFiles`` of ``policy.json``: one program that runs the
    ``policyExec`` functions a list of calls names and answers their failures.

    The files run in the scope PingIDM's ``policy.js`` gives them: ``_`` (its
    ``require('lib/lodash')``, idsync's lodash), ``addPolicy``, and, as for every
    script, ``openidm``; a run also has the policy request (``request``, with
    ``method``, ``action`` and ``resourcePath``, and ``resourceName``). A failure names
    the file and its line, not the line of the program idsync makes of the files."""

    script: Script
    defined: Mapping[str, Mapping[str, Any]]  # policyId -> the object given to addPolicy
    files: tuple[tuple[str, int], ...] = ()  # each file of additionalFiles and its first line in the program

    def run(self, calls: list[list[Any]], request: Mapping[str, Any] | None = None) -> list[Any]:
        """``[[policyExec, fullObject, value, params, property, failedSoFar], ...]`` ->
        each call's list of failed requirements; ``request``: the policy request
        (``resourcePath``: ``managed/TYPE/ID``, or ``managed/TYPE/*`` for a new object)."""
        path = (request or {}).get("resourcePath")
        try:
            answer = self.script(calls=calls, request=dict(request or {}), resourceName=path)
        except ScriptError as exc:
            raise self._located_error(exc) from None
        if not isinstance(answer, list) or len(answer) != len(calls):
            raise ScriptError(f"{self.script.name}: the custom policies answered no list of results")
        return answer

    def located(self, exc: ScriptError) -> tuple[str | None, str]:
        """The file of ``additionalFiles`` where the program failed (None where the
        error names no line of a file) and the error without the script's name, at the
        file's own line."""
        text, line, prefix = str(exc), exc.line, f"{self.script.name}: "
        reason = text.removeprefix(prefix)
        suffix = f" at line {line}"
        starts = [(name, first) for name, first in self.files if line is not None and first <= line]
        if line is None or not starts or not reason.endswith(suffix):
            return None, reason
        name, first = starts[-1]
        return name, f"{reason[:-len(suffix)]} at line {line - first + 1}"

    def _located_error(self, exc: ScriptError) -> ScriptError:
        name, reason = self.located(exc)
        if name is None:
            return exc
        where = f"{self.script.name} ({name})"
        located = ScriptError(f"{where}: {reason}")
        located.thrown, located.where = exc.thrown, where
        return located


@dataclass(frozen=True)
class TypeModel:
    """What runs around a write of one managed type."""

    scripts: Mapping[str, ObjectScript] = field(default_factory=dict)
    properties: Mapping[str, PropertyModel] = field(default_factory=dict)
    custom: CustomPolicies | None = None
    # ``onSync`` is OpenIDM's bundled compensate.js (all-or-nothing synchronization): a
    # change one of whose pushes fails is reverted, and so are the pushes made of it
    # (``managed/service.py``).
    compensate: bool = False

    def __bool__(self) -> bool:
        return bool(self.scripts or self.properties or self.compensate)

    @functools.cached_property
    def checked(self) -> tuple[PropertyModel, ...]:
        """The properties with policies: what a write checks beyond the types, worked out once."""
        return tuple(prop for prop in self.properties.values() if prop.checked)


def secure_hash(pdef: Mapping[str, Any], file: str, key: str) -> str | None:
    """The algorithm of a property's ``secureHash`` (PingIDM's default SHA-256), or ``None``."""
    setting = pdef.get("secureHash")
    if setting in (None, False):
        return None
    if setting is True:
        return "SHA-256"
    if not isinstance(setting, dict):
        raise ConfigError(file, f"{key}.secureHash", "expected an object, such as {\"algorithm\": \"SHA-256\"}")
    algorithm = setting.get("algorithm", "SHA-256")
    if algorithm not in _HASH_ALGORITHMS:
        raise ConfigError(file, f"{key}.secureHash.algorithm", f"algorithm {algorithm!r} is not supported "
                          f"(idsync hashes with {', '.join(_HASH_ALGORITHMS)})")
    return str(algorithm)


# The program around the custom policy files. The head gives them what PingIDM's policy.js
# defines before it evaluates them (``_``, ``addPolicy``: collects), the tail runs the calls.
_CUSTOM_HEAD = """var _ = require("lib/lodash");
var _idsyncPolicies = {};
function addPolicy(p) { _idsyncPolicies[p.policyId] = p; }
"""
_CUSTOM_TAIL = """
;(function () {
  if (calls === null) return _idsyncPolicies;
  var out = [], i, c, fn;
  for (i = 0; i < calls.length; i++) {
    c = calls[i];
    fn = globalThis[c[0]];
    if (typeof fn !== "function") throw new Error("the custom policy function " + c[0] + " is not defined");
    var r = fn.call({failedPolicyRequirements: c[5]}, c[1], c[2] === null ? undefined : c[2], c[3], c[4]);
    // PingIDM's policy.js reads the answer's length: no list is the function's error.
    if (!Array.isArray(r)) throw new TypeError("the custom policy function " + c[0] + " answered " +
                                               (r === null ? "null" : typeof r) + ", not a list of requirements");
    out.push(r);
  }
  return out;
})()
"""


def _custom_policies(conf: Path, project_dir: Path, engine: ScriptEngine) -> tuple[CustomPolicies | None, Any]:
    path = conf / "policy.json"
    if not path.is_file():
        return None, None
    raw = load_json(path, project_dir=project_dir)
    file = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "expected a JSON object")
    extra = raw.get("additionalFiles") or []
    if not isinstance(extra, list) or not all(isinstance(f, str) for f in extra):
        raise ConfigError(file, "additionalFiles", "expected a list of script file names")
    if not extra:
        return None, raw
    paths = ScriptPaths(project_dir, engine.defaults)
    sources = [paths.read(name, file, f"additionalFiles[{i}]") for i, name in enumerate(extra)]
    files: list[tuple[str, int]] = []
    line = _CUSTOM_HEAD.count("\n") + 1
    for i, (name, source) in enumerate(zip(extra, sources, strict=True)):
        # Each file alone first, so that a syntax error names its file and its own line.
        engine.compile({"type": "text/javascript", "source": source}, file=file, key=f"additionalFiles[{i}] ({name})",
                       base_dir=project_dir)
        files.append((name, line))
        line += source.count("\n") + 2  # the "\n;\n" that joins the next one
    program = _CUSTOM_HEAD + "\n;\n".join(sources) + _CUSTOM_TAIL
    script = engine.compile({"type": "text/javascript", "source": program}, file=file, key="additionalFiles",
                            base_dir=project_dir)
    custom = CustomPolicies(script, {}, tuple(files))
    try:
        defined = script(calls=None, request={}, resourceName=None)
    except ScriptError as exc:
        name, reason = custom.located(exc)
        raise ConfigError(file, "additionalFiles" + (f" ({name})" if name else ""),
                          f"the custom policies cannot load: {reason}") from None
    if not isinstance(defined, dict):
        raise ConfigError(file, "additionalFiles", "the custom policies defined nothing (addPolicy)")
    for policy_id, policy in defined.items():
        if not isinstance(policy, dict) or not isinstance(policy.get("policyExec"), str):
            raise ConfigError(file, "additionalFiles", f"policy {policy_id!r} needs a policyExec function name")
    return CustomPolicies(script, defined, tuple(files)), raw


def schema_policies(pdef: Mapping[str, Any]) -> list[PolicyUse]:
    """The policies PingIDM's policy service derives from a property's JSON schema
    (``policy.js``): ``not-empty`` where ``minLength`` is above 0 or ``type`` is a list
    without ``"null"`` (and ``"nullable": true`` does not add it, as PingIDM's admin UI
    writes it into the list); for a string, ``minimum-length`` from ``minLength`` (read as
    JavaScript's ``parseInt`` reads it) and ``regexpMatches`` from ``pattern`` (one
    that idsync cannot run is left out, and ``idsync validate`` says so)."""
    kind = pdef.get("type")
    types = kind if isinstance(kind, list) else [kind]
    length = pdef.get("minLength")
    uses: list[PolicyUse] = []
    if (isinstance(kind, list) and "null" not in kind and pdef.get("nullable") is not True) or \
            (isinstance(length, int | float) and not isinstance(length, bool) and length > 0):
        uses.append(PolicyUse("not-empty", {}, BUILTIN_POLICIES["not-empty"].requirements, True))
    if "string" in types:
        minimum = _parse_int(length)
        if minimum is not None:
            uses.append(PolicyUse("minimum-length", {"minLength": minimum},
                                  BUILTIN_POLICIES["minimum-length"].requirements, True))
        pattern = pdef.get("pattern")
        if isinstance(pattern, str) and js_regexp(pattern) is not None:
            uses.append(PolicyUse("regexpMatches", {"regexp": pattern}, BUILTIN_POLICIES["regexpMatches"].requirements,
                                  False))
    return uses


def _parse_int(value: Any) -> int | None:
    """``value`` as JavaScript's ``parseInt`` reads it (``8``, ``8.5``, ``"8"``, ``" 8px"``),
    or None where it answers NaN."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        found = re.match(r"\s*([+-]?\d+)", value)
        return int(found.group(1)) if found else None
    return None


@functools.lru_cache(maxsize=256)
def js_regexp(pattern: str, flags: str = "") -> re.Pattern[str] | None:
    """A JavaScript regular expression (``new RegExp(pattern, flags)``) as Python's, or
    None where Python cannot run it. Named groups and their back references are
    written the JavaScript way (``(?<name>...)``, ``\\k<name>``), and ``$`` ends the
    value (Python's ``$`` would also match before a final line break) unless the flags
    hold ``m``; ``\\d``, ``\\w`` and ``\\b`` are ASCII's digits, word characters and
    boundaries, as in JavaScript (Python's take every script's: fullwidth digits would be digits),
    ``[]`` matches nothing and ``[^]`` anything; flags ``i``, ``m`` and ``s`` are followed
    (``g``, ``u``, ``y`` change nothing to whether a value matches)."""
    options = (re.IGNORECASE if "i" in flags else 0) | (re.MULTILINE if "m" in flags else 0) | \
        (re.DOTALL if "s" in flags else 0)
    try:
        return re.compile(_from_js(pattern, multiline="m" in flags), options)
    except re.error:
        return None


_WORD = "A-Za-z0-9_"
# JavaScript's classes, which are ASCII's: outside a bracket class, and inside one.
_ASCII_CLASSES = {
    "d": ("[0-9]", "0-9"), "D": ("[^0-9]", None), "w": (f"[{_WORD}]", _WORD), "W": (f"[^{_WORD}]", None),
    "b": (f"(?:(?<![{_WORD}])(?=[{_WORD}])|(?<=[{_WORD}])(?![{_WORD}]))", None),
    "B": (f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))", None),
}


def _from_js(pattern: str, *, multiline: bool) -> str:
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            named = re.match(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>", pattern[i:])
            if named and not in_class:
                out.append(f"(?P={named.group(1)})")
                i += named.end()
                continue
            outside, inside = _ASCII_CLASSES.get(pattern[i + 1:i + 2], (None, None))
            ascii_ = inside if in_class else outside
            out.append(ascii_ if ascii_ is not None else pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif pattern.startswith("[]", i):
            out.append("(?!)")  # JavaScript's empty class: matches nothing
            i += 2
            continue
        elif pattern.startswith("[^]", i):
            out.append(r"[\s\S]")  # and its negation: any character
            i += 3
            continue
        elif c == "[":
            in_class = True
        elif c == "(" and pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        elif c == "$" and not multiline:
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _policy_use(entry: Any, custom: CustomPolicies | None, file: str, key: str) -> PolicyUse | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("policyId"), str):
        raise ConfigError(file, key, "expected an object with a policyId")
    policy_id = entry["policyId"]
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(file, f"{key}.params", "expected an object")
    if custom is not None and policy_id in custom.defined:
        defined = custom.defined[policy_id]
        requirements = tuple(str(r) for r in defined.get("policyRequirements") or [])
        only = str(defined.get("validateOnlyIfPresent", "false")).lower() == "true"
        return PolicyUse(policy_id, params, requirements, only, custom=str(defined["policyExec"]))
    builtin = BUILTIN_POLICIES.get(policy_id)
    if builtin is not None and policy_id not in NOT_ENFORCED_POLICIES:
        _check_params(policy_id, params, file, key)
        return PolicyUse(policy_id, params, builtin.requirements, builtin.only_if_present)
    if policy_id in NOT_ENFORCED_POLICIES or builtin is not None:
        return None  # ``idsync validate`` names it
    known = sorted(set(BUILTIN_POLICIES) | set(custom.defined if custom else {}))
    raise ConfigError(file, f"{key}.policyId", f"unknown policy {policy_id!r}: neither a built-in policy "
                      f"({', '.join(known)}) nor one that policy.json's additionalFiles add")


def _uses(entries: Any, custom: CustomPolicies | None, file: str, key: str) -> tuple[PolicyUse, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(file, key, "expected a list of {\"policyId\": ...} objects")
    uses = (_policy_use(e, custom, file, f"{key}[{j}]") for j, e in enumerate(entries))
    return tuple(u for u in uses if u is not None)


def _conditional(entries: Any, custom: CustomPolicies | None, engine: ScriptEngine, project_dir: Path,
                 file: str, key: str) -> tuple[ConditionalPolicies, ...]:
    """A property's ``conditionalPolicies``, each condition compiled."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(file, key, "expected a list of {\"condition\": ..., \"policies\": [...]} objects")
    found = []
    for j, entry in enumerate(entries):
        at = f"{key}[{j}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("condition"), dict):
            raise ConfigError(file, at, "expected an object with a condition script and policies")
        deps = entry.get("dependencies") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise ConfigError(file, f"{at}.dependencies", "expected a list of property names")
        condition = engine.compile(entry["condition"], file=file, key=f"{at}.condition", base_dir=project_dir)
        found.append(ConditionalPolicies(condition, tuple(deps),
                                         _uses(entry.get("policies") or [], custom, file, f"{at}.policies")))
    return tuple(found)


_NEEDED_PARAMS = {"minimum-length": "minLength", "maximum-length": "maxLength",
                  "at-least-X-capital-letters": "numCaps", "at-least-X-capitals": "numCaps",
                  "at-least-X-numbers": "numNums", "cannot-contain-others": "disallowedFields",
                  "cannot-contain-characters": "forbiddenChars", "regexpMatches": "regexp",
                  "valid-type": "types"}


def _check_params(policy_id: str, params: Mapping[str, Any], file: str, key: str) -> None:
    needed = _NEEDED_PARAMS.get(policy_id)
    if needed is not None and needed not in params:
        raise ConfigError(file, f"{key}.params", f"policy {policy_id} needs params.{needed}")


# PingIDM's own scripts that its default managed.json names (user clean-up, role grants,
# effective roles): idsync does not ship them, and does what they do itself or has
# nothing for them to do.
_PINGIDM_SCRIPTS = ("ui/", "roles/", "postDelete-idp-cleanup.js", "onCreateUser", "onUpdateUser")
_BUNDLED_WHY = {
    "ui/onDelete-user-cleanup.js": "deletes the user's notifications of PingIDM's admin UI and its social identity "
                                   "provider data, neither of which idsync keeps",
    "roles/postOperation-roles.js": "schedules the jobs that apply roles' and grants' temporal constraints; idsync "
                                    "applies them itself (docs/pingidm.md#roles)",
    "postDelete-idp-cleanup.js": "deletes a social identity provider's data, which idsync does not keep",
}


def is_compensate(config: Any, paths: ScriptPaths) -> bool:
    """Whether ``config`` names OpenIDM's bundled ``compensate.js`` (sample5b's ``onSync``),
    which idsync does itself, and the project has no file of that name of its own."""
    return isinstance(config, dict) and config.get("type") in ("text/javascript", None) \
        and config.get("file") == "compensate.js" and paths.find("compensate.js") is None


def not_run(config: Any, paths: ScriptPaths) -> str | None:
    """Why a managed.json script is not run, if it is PingIDM's own: a bundled file the
    project does not have, or a program that loads a module of PingIDM's (``require``)
    that idsync does not provide (``scripts/modules.py``). ``None``: it is compiled and run."""
    if not isinstance(config, dict) or config.get("type") not in ("text/javascript", None):
        return None
    name = config.get("file")
    if isinstance(name, str):
        found = paths.find(name)
        if found is None:
            if is_compensate(config, paths):
                return None  # done by idsync itself
            if not name.startswith(_PINGIDM_SCRIPTS):
                return None
            return f"{name} is a script PingIDM bundles" + (f": it {_BUNDLED_WHY[name]}" if name in _BUNDLED_WHY
                                                             else "")
        try:
            source = found.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None  # compiling reports it
    else:
        source = str(config.get("source", ""))
    names, dynamic = required_modules(source)
    missing = list(dict.fromkeys(n for n in names if n not in MODULE_NAMES))
    if missing or dynamic:
        what = ", ".join(missing) if missing else "a module named when it runs"
        return (f"{name or 'the script'} loads {what} (require), a module of PingIDM's that idsync does not "
                f"provide (it provides {', '.join(MODULE_NAMES)})")
    if absent := missing_functions(source):
        return (f"{name or 'the script'} calls {', '.join(absent)}, which idsync's version of that module does "
                "not have (docs/pingidm.md#pingidms-stock-scripts)")
    return None


def _resource_policies(raw: Any, type_name: str, file: str) -> dict[str, list[tuple[Any, str]]]:
    """policy.json's ``resources`` entries for ``managed/TYPE/*``: property -> policy entries."""
    found: dict[str, list[tuple[Any, str]]] = {}
    resources = raw.get("resources") if isinstance(raw, dict) else None
    for i, resource in enumerate(resources if isinstance(resources, list) else []):
        if not isinstance(resource, dict) or resource.get("resource") != f"managed/{type_name}/*":
            continue
        for j, prop in enumerate(resource.get("properties") or []):
            if isinstance(prop, dict) and isinstance(prop.get("name"), str):
                for k, entry in enumerate(prop.get("policies") or []):
                    found.setdefault(prop["name"], []).append(
                        (entry, f"resources[{i}].properties[{j}].policies[{k}]"))
    return found


def load_object_models(managed_raw: Any, conf: Path, project_dir: Path, engine: ScriptEngine,
                       *, file: str) -> dict[str, TypeModel]:
    """Each managed type's compiled scripts and policies (types with none are left out)."""
    custom, policy_raw = _custom_policies(conf, project_dir, engine)
    paths = ScriptPaths(project_dir, engine.defaults)
    policy_file = str(conf / "policy.json")
    models: dict[str, TypeModel] = {}
    objects = managed_raw.get("objects") if isinstance(managed_raw, dict) else None
    for i, obj in enumerate(objects if isinstance(objects, list) else []):
        if not isinstance(obj, dict):
            continue
        at = f"objects[{i}]"
        compensate = is_compensate(obj.get("onSync"), paths)
        scripts: dict[str, ObjectScript] = {
            event: stock_script(obj[event], f"{file}: {at}.{event}")
            or engine.compile(obj[event], file=file, key=f"{at}.{event}", base_dir=project_dir)
            for event in OBJECT_EVENTS if obj.get(event) is not None and not_run(obj[event], paths) is None
            and not (event == "onSync" and compensate)}
        schema: dict[str, Any] = obj["schema"] if isinstance(obj.get("schema"), dict) else {}
        props_raw: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        from_policy_json = _resource_policies(policy_raw, str(obj.get("name")), policy_file)
        properties: dict[str, PropertyModel] = {}
        for name, pdef in props_raw.items():
            if not isinstance(pdef, dict):
                continue
            pkey = f"{at}.schema.properties.{name}"
            entries = pdef.get("policies") or []
            if not isinstance(entries, list):
                raise ConfigError(file, f"{pkey}.policies", "expected a list of {\"policyId\": ...} objects")
            uses: list[PolicyUse | None] = list(schema_policies(pdef))
            uses += [_policy_use(e, custom, file, f"{pkey}.policies[{j}]") for j, e in enumerate(entries)]
            uses += [_policy_use(e, custom, policy_file, k) for e, k in from_policy_json.get(name, [])]
            prop_scripts = {event: engine.compile(pdef[event], file=file, key=f"{pkey}.{event}",
                                                  base_dir=project_dir)
                            for event in PROPERTY_EVENTS
                            if pdef.get(event) is not None and not_run(pdef[event], paths) is None}
            policies = tuple(u for u in uses if u is not None)
            conditional = _conditional(pdef.get("conditionalPolicies"), custom, engine, project_dir, file,
                                       f"{pkey}.conditionalPolicies")
            fallback = _uses(pdef.get("fallbackPolicies"), custom, file, f"{pkey}.fallbackPolicies")
            if policies or prop_scripts or conditional or fallback:
                properties[name] = PropertyModel(name, policies, prop_scripts, conditional, fallback)
        model = TypeModel(scripts, properties, custom, compensate)
        if model:
            models[str(obj.get("name"))] = model
    return models


def describe(model: TypeModel | None, type_name: str, required: tuple[str, ...],
             types: Mapping[str, list[str]]) -> dict[str, Any]:
    """The policies of a type as PingIDM's ``GET policy/managed/TYPE`` answers them;
    ``types``: each property's valid types (``"null"`` among them when it takes null)."""
    properties = []
    for name in sorted(set(types) | set(model.properties if model else {})):
        uses = [u.describe() for u in (model.properties[name].policies if model and name in model.properties
                                        else ())]
        if name in required:
            uses.insert(0, PolicyUse("required", {}, ("REQUIRED",), False).describe())
        if name in types:
            uses.append(PolicyUse("valid-type", {"types": list(types[name])}, ("VALID_TYPE",),
                                  False).describe())
        if uses:
            requirements = sorted({r for u in uses for r in u["policyRequirements"]})
            properties.append({"name": name, "policies": uses, "policyRequirements": requirements})
    return {"_id": f"managed/{type_name}", "resource": f"managed/{type_name}/*", "properties": properties}


