"""Sandboxed ``text/javascript`` mapping scripts: transforms, conditions, correlation, hooks.

A script object in a PingIDM configuration is ``{"type": "text/javascript", "source": ...}``
or ``{"type": "text/javascript", "file": "script/cn.js"}`` (relative to the project
directory, the parent of ``conf/``). Other keys, and the keys of a ``globals`` object,
become global variables of the script. The script is a program whose result is the
completion value of its last statement, as in PingIDM.

``compile_script`` validates the object and checks the syntax at load time, so a typo
is a ``ConfigError`` naming the file, key, line and column before any run starts. The
returned ``Script`` runs in QuickJS with a time limit (``ScriptTimeout``) and a memory
limit (``ScriptError``); results come back as plain JSON values (``undefined`` is
``None``, a ``Date`` its ISO string). A result holding half of a character (an unpaired
surrogate, as ``substring`` can leave of an emoji) is a ``ScriptError`` naming where it
is, since no store, peer or log can take it (``surrogates``); so are ``openidm`` call
arguments holding one, thrown in the script.

Documented differences from PingIDM:
  * ``text/groovy`` is refused: rewrite the script in JavaScript.
  * ``openidm.*`` calls are answered by an ``OpenidmRouter`` (``scripts.router``) that the
    layer owning managed objects and systems binds (``ScriptEngine.routing``); without
    one only the crypto functions answer, if the project has a keyring. A run that makes
    a call ends there, Python answers, and the script runs again from the start with
    the answers so far (``sandbox``): each call costs one more run of the script, the
    time and memory limits apply to each run, and ``max_calls`` bounds the calls of one
    script run. Scripts that make no call keep the batch fast path of ``call_many``.
    What a run draws at random (``Math.random``, ``generateRandomString``) comes from a
    seed Python picks for the run and gives every replay, so a replay draws it again
    (``randomness``).
  * ``logger`` (``debug``/``info``/``warn``/``error``/``trace``) writes ``script.log``
    events through structlog; ``require`` answers idsync's own modules (a subset of
    lodash, PingIDM's stock ``managed.json`` modules: ``modules.py``); there is no
    other module, ``fetch`` or I/O. Of Java, only what OpenIDM's scripts print and draw
    with (``java.lang.System.out.println``, ``java.util.UUID.randomUUID``...); a script
    naming any other class is recorded in ``ScriptEngine.java`` for ``validate``, and a
    call of a function idsync's module lacks (``_.chunk`` of lodash) in ``ScriptEngine.lacking``.
  * The time limit counts the process's CPU time, so busy sibling threads shorten it.

How a script is run: a program that is a single expression is compiled once per thread
into a function; any other program goes through indirect ``eval`` (a few µs more per
call), which is the only way to get a completion value. Variables are set on the global
object for one call and swept away afterwards (see ``sandbox``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import itertools
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import quickjs
import structlog

from idsync.errors import ConfigError, IdsyncError, ScriptError, ScriptTimeout, http_status, names_unknown
from idsync.scripts.modules import missing_functions
from idsync.scripts.paths import ScriptPaths
from idsync.scripts.randomness import run_seed
from idsync.scripts.router import OpenidmRouter
from idsync.scripts.sandbox import Sandbox, reserved_names
from idsync.scripts.surrogates import lone_at, mended, mended_value, suspect

__all__ = ["Script", "ScriptEngine", "compile_script", "kind_of"]

log = structlog.get_logger("idsync.scripts")

_JS_TYPES = frozenset({"text/javascript", "javascript"})
_SCRIPT_KEYS = frozenset({"type", "source", "file", "globals"})
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
# Statement-level starts where a program and the same text in parentheses differ.
_NOT_EXPRESSION = re.compile(r"(\{|function\b|class\b|async\b|let\b)")
_LEADING_COMMENTS = re.compile(r"(\s+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)
_SENTINEL = "_idsync_parsed_"
# What in a program's text may read a global by a name the text does not spell (``Script.reaches``).
_REACHES_ANY = re.compile(r"this|globalThis|eval|Function|constructor|import|require")
# Java as a Rhino script reaches it (``java.util.HashMap``, ``Packages.org.forgerock...``,
# ``importPackage``), and what of it the sandbox answers (``sandbox``).
_JAVA = re.compile(r"(?<![\w$.])(?:Packages\s*\.\s*)?(?:javax?|org\s*\.\s*forgerock|com\s*\.\s*sun)"
                   r"(?:\s*\.\s*[A-Za-z_$][\w$]*)+|(?<![\w$.])(?:JavaImporter|importPackage|importClass)\b")
_JAVA_ANSWERED = frozenset({"java.lang.System.out.println", "java.lang.System.out.print",
                            "java.lang.System.err.println", "java.lang.System.err.print",
                            "java.lang.System.currentTimeMillis", "java.lang.String", "java.util.UUID.randomUUID"})
_LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning",
               "error": "error"}
_ids = itertools.count(1)
_reserved: frozenset[str] | None = None


class ScriptEngine:
    """Limits shared by the scripts of one configuration, and each thread's sandbox.

    Make one per loaded configuration: dropping it drops the compiled scripts with it.
    """

    def __init__(self, *, time_limit: float = 1.0, memory_limit: int = 64 * 1024 * 1024,
                 max_calls: int = 100, max_depth: int = 8, router: OpenidmRouter | None = None,
                 defaults: Path | None = None) -> None:
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.max_calls = max_calls
        self.max_depth = max_depth
        self.router = router  # every thread's, unless one is bound with ``routing``
        self.defaults = defaults
        # (file, key) -> the Java a compiled script names that the sandbox lacks, for validate.
        self.java: dict[tuple[str, str], str] = {}
        # (file, key) -> the functions of idsync's modules (lodash...) a compiled script calls
        # that they lack (``modules.missing_functions``), for validate.
        self.lacking: dict[tuple[str, str], list[str]] = {}
        self._local = threading.local()

    @contextlib.contextmanager
    def routing(self, router: OpenidmRouter) -> Iterator[None]:
        """Within the block, this thread's scripts' ``openidm`` calls go to ``router``."""
        previous = getattr(self._local, "router", None)
        self._local.router = router
        try:
            yield
        finally:
            self._local.router = previous

    def current_router(self) -> OpenidmRouter | None:
        bound: OpenidmRouter | None = getattr(self._local, "router", None)
        return bound or self.router

    def answer(self, script: str, function: str, arguments: list[Any], made: int) -> Any:
        """The answer to one ``openidm`` call of a script run that made ``made`` before it."""
        if made >= self.max_calls:
            raise ScriptError(f"{script}: stopped at openidm call {made + 1}: a script run may make "
                              f"{self.max_calls} ([scripts] max_calls)")
        router = self.current_router()
        if router is None:
            raise ScriptError(f"{script}: openidm.{function} is not available here")  # see Script._answer
        depth = getattr(self._local, "depth", 0)
        if depth >= self.max_depth:
            raise ScriptError(f"{script}: openidm.{function} would nest scripts {depth + 1} deep (a hook whose "
                              f"change runs the hook again?); the limit is {self.max_depth}")
        self._local.depth = depth + 1
        try:
            return router.call(function, arguments)
        finally:
            self._local.depth = depth

    def compile(self, config: object, *, file: str, key: str, base_dir: Path) -> Script:
        """Validate a script object and check its syntax; see ``compile_script``."""
        if not isinstance(config, dict):
            raise ConfigError(file, key, "a script must be an object with type and source or file")
        kind = config.get("type")
        if kind in ("text/groovy", "groovy"):
            raise ConfigError(
                file, key, "text/groovy scripts are not supported; rewrite it in text/javascript")
        if kind not in _JS_TYPES:
            raise ConfigError(file, key, f"script type {kind!r} is not supported; "
                                         "use text/javascript")
        if ("source" in config) == ("file" in config):
            raise ConfigError(file, key, "a script needs exactly one of source and file")
        origin = config.get("file")
        if origin is None:
            source = config["source"]
            if not isinstance(source, str) or not source.strip():
                raise ConfigError(file, key, "source must be a non-empty string")
        else:
            source = ScriptPaths(base_dir, self.defaults).read(origin, file, key)
        extras = _extras(config, file, key)
        is_expression = _check_syntax(source, origin, file, key)
        name = f"{file}: {key}" + (f" ({origin})" if origin else "")
        where = (file, key + (f" ({origin})" if origin else ""))
        java = _java_reached(source)
        if java is not None:
            self.java[where] = java
        if lacking := missing_functions(source):
            self.lacking[where] = lacking
        return Script(self, name, source, extras, is_expression)

    def sandbox(self) -> Sandbox:
        """This thread's sandbox, made on first use."""
        box: Sandbox | None = getattr(self._local, "sandbox", None)
        if box is None:
            box = Sandbox(time_limit=self.time_limit, memory_limit=self.memory_limit)
            self._local.sandbox = box
        return box

    def discard_sandbox(self) -> None:
        """Forget this thread's sandbox after the engine gave up inside it."""
        self._local.sandbox = None



class Script:
    """A compiled script; call it with the variables it reads."""

    def __init__(self, engine: ScriptEngine, name: str, source: str, extras: Mapping[str, Any],
                 is_expression: bool) -> None:
        self.name = name
        self._engine = engine
        self._id = next(_ids)
        self._source = source
        self._extras_json = json.dumps(extras)
        self._is_expression = is_expression
        self._builds_names = _REACHES_ANY.search(source) is not None

    def __repr__(self) -> str:
        return f"<Script {self.name}>"

    def returning(self, variable: str) -> Script:
        """The same program, answering with ``variable`` after it ran: PingIDM hooks
        such as ``onCreate`` change ``target`` in place rather than return it."""
        if not variable.isidentifier():
            raise ValueError(f"not a variable name: {variable!r}")
        derived = Script(self._engine, self.name, f"{self._source}\n;{variable}", {}, is_expression=False)
        derived._extras_json = self._extras_json
        return derived

    def mentions(self, name: str) -> bool:
        """Whether the program's text names ``name`` (a variable worth binding only then:
        PingIDM's ``mappingConfig`` is the mapping's whole configuration)."""
        return name in self._source

    def reaches(self, name: str) -> bool:
        """Whether a run may read the global variable ``name``: its text names it, or names
        a way to reach a global by a name it builds (``this``, ``globalThis``, ``eval``,
        ``Function``, ``constructor``, ``import``) or a module that may read one
        (``require``). A variable it cannot reach need not cross into JavaScript."""
        return self._builds_names or name in self._source

    def preceded(self, prelude: str, variable: str) -> Script:
        """The same program after ``prelude`` (declarations it may use, one line, put on the
        program's first line so that the lines an error names stay the program's own),
        answering with ``variable`` after it ran."""
        if "\n" in prelude or not variable.isidentifier():
            raise ValueError("a prelude is one line, and the variable a name")
        derived = Script(self._engine, self.name, f"{prelude}{self._source}\n;{variable}", {}, is_expression=False)
        derived._extras_json = self._extras_json
        return derived

    def run_returning(self, variables: Mapping[str, Any], variable: str) -> Any:
        """Run with ``variables`` and answer the final value of ``variable``."""
        cached: Script | None = self.__dict__.get(f"_returning_{variable}")
        if cached is None:
            cached = self.returning(variable)
            self.__dict__[f"_returning_{variable}"] = cached
        return cached(**variables)

    def __call__(self, **variables: Any) -> Any:
        """Run with these variables (again after each ``openidm`` call, with the answers so
        far); return the result as plain JSON values."""
        _check_names(variables)
        return self._replayed(_dumps(variables, self.name), [], run_seed())

    def _replayed(self, payload: str, answers: list[str], seed: str, stream: int = 0) -> Any:
        """Run until the script ends without an unanswered ``openidm`` call; every replay
        draws chance from the same ``seed`` (``randomness``)."""
        while True:
            box = self._prepare()
            try:
                outcome = box.call(self._id, payload, f"[{','.join(answers)}]" if answers else "", seed, stream)
            except quickjs.JSException as exc:
                self._engine.discard_sandbox()
                raise self._engine_failure(exc) from None
            result, logs = self._decoded(outcome)
            self._emit(logs)
            if result[0] == 3:
                answers.append(self._answer(result, len(answers)))
                continue
            if result[0] == 0:
                return result[1]
            raise self._failure(result)

    def _answer(self, request: list[Any], made: int) -> str:
        """One ``openidm`` call's answer as the sandbox replays it: a failure the router
        reports (``IdsyncError``) is thrown in the script, which may catch it and read its
        status as PingIDM's scripts do (``e.javaException.getCode()``)."""
        _, function, resource, arguments = request
        lone = lone_at(arguments)
        if lone is not None:
            return _failed(function, resource, f"the arguments of openidm.{function} hold half of a "
                           f"character (an unpaired surrogate) at {lone}", 400)
        if self._engine.current_router() is None:
            # Thrown in the script, so that the message names the line of the call.
            return _failed(function, resource, f"openidm.{function} is not available here: "
                           "no store or system is bound to this script's engine", 500)
        try:
            value = self._engine.answer(self.name, function, arguments, made)
        except ScriptError:
            raise
        except IdsyncError as exc:
            # A resource the project lacks is told as the API tells it: not where conf/ is.
            told = exc.problem if isinstance(exc, ConfigError) and names_unknown(exc) else str(exc)
            return _failed(function, resource, told, http_status(exc))
        return _dumps([function, resource, 0, value], self.name)

    def _settled(self, outcome: list[Any], variables: Mapping[str, Any], seed: str, stream: int) -> Any | ScriptError:
        """A batch outcome; one that waits for an openidm answer goes on on its own, with
        the seed and stream its first run drew from."""
        if outcome[0] != 3:
            return self._value(outcome)
        try:
            return self._replayed(_dumps(variables, self.name), [self._answer(outcome, 0)], seed, stream)
        except ScriptError as exc:
            return exc

    def call_many(self, variables: Sequence[Mapping[str, Any]]) -> list[Any | ScriptError]:
        """Run once per item in as few calls into JavaScript as possible.

        Each item's result or ``ScriptError`` is at its index. The whole batch has one
        time limit; when it runs out the finished items are kept and the batch restarts
        at the item that was running, which then has a full time limit of its own, so
        only an item that exhausts the limit (or memory) on its own fails.
        """
        for item in variables:
            _check_names(item)
        results: list[Any | ScriptError] = []
        start = 0
        while start < len(variables):
            payload = _dumps(variables[start:] if start else variables, self.name)
            box = self._prepare()
            seed = run_seed()
            try:
                page = box.call_many(self._id, payload, seed)
            except quickjs.JSException as exc:
                done = self._partial(box, variables[start:], seed)
                self._engine.discard_sandbox()
                results.extend(done)
                start += len(done)
                if not done:
                    results.append(self._engine_failure(exc))
                    start += 1
                continue
            outcomes, logs = self._decoded(page)
            self._emit(logs)
            results.extend(self._settled(outcome, variables[start + i], seed, i) for i, outcome in enumerate(outcomes))
            break
        return results

    def _prepare(self) -> Sandbox:
        box = self._engine.sandbox()
        box.ensure(self._id, self._source, self._extras_json, self._is_expression)
        return box

    def _partial(self, box: Sandbox, variables: Sequence[Mapping[str, Any]], seed: str) -> list[Any | ScriptError]:
        try:
            outcomes, logs = self._decoded(box.take_partial())
        except quickjs.JSException:
            return []
        self._emit(logs)
        return [self._settled(outcome, variables[i], seed, i) for i, outcome in enumerate(outcomes)]

    def _decoded(self, text: str) -> Any:
        """``[outcome or outcomes, log lines]`` from the sandbox's JSON. Where that may hold
        half of a character (``surrogates``), a result holding one becomes outcome 4 (a
        failure naming where), and messages have it spelt as an escape."""
        outcomes, logs = json.loads(text)
        if not suspect(text):
            return outcomes, logs
        logs = [[level, mended(message)] for level, message in logs]
        if outcomes and isinstance(outcomes[0], int):
            return _screened(outcomes), logs
        return [_screened(outcome) for outcome in outcomes], logs

    def _emit(self, logs: list[list[str]]) -> None:
        for level, message in logs:
            getattr(log, _LOG_LEVELS[level])("script.log", script=self.name, message=message)

    def _value(self, outcome: list[Any]) -> Any | ScriptError:
        return outcome[1] if outcome[0] == 0 else self._failure(outcome)

    def _failure(self, outcome: list[Any]) -> ScriptError:
        if outcome[0] == 2:
            return ScriptError(f"{self.name}: the result is not JSON: {outcome[1]}")
        if outcome[0] == 4:
            where = "" if outcome[1] == "/" else f" at {outcome[1]}"
            return ScriptError(f"{self.name}: the result holds half of a character{where} (an unpaired surrogate, "
                               "as substring or slice leave of an emoji cut in two), which nothing can store or send")
        _, kind, message, line, _column, *thrown = outcome
        if kind == "InternalError" and message in ("out of memory", ""):
            self._engine.discard_sandbox()
            return ScriptError(f"{self.name}: the script ran out of memory")
        if kind == "Nothing":
            # A script may throw null itself; the engine does when memory ran out.
            self._engine.discard_sandbox()
            return ScriptError(f"{self.name}: the script threw {message} (or ran out of memory)")
        where = f" at line {line}" if line is not None else ""
        error = ScriptError(f"{self.name}: {kind}: {message}{where}")
        error.thrown = thrown[0] if thrown else None
        error.line = line
        return error

    def _engine_failure(self, exc: quickjs.JSException) -> ScriptError:
        text = str(exc)
        if text.startswith("InternalError: interrupted"):
            return ScriptTimeout(f"{self.name}: ran past its time limit of "
                                 f"{self._engine.time_limit:g} s")
        if "out of memory" in text or text.startswith("null"):
            return ScriptError(f"{self.name}: the script ran out of memory")
        return ScriptError(f"{self.name}: {text.splitlines()[0] if text else 'failed'}")


_default_engine = ScriptEngine()


def compile_script(config: object, *, file: str, key: str, base_dir: Path,
                   engine: ScriptEngine | None = None) -> Script:
    """Validate a PingIDM script object and check its syntax; raise ConfigError if wrong.

    ``file`` and ``key`` say where the object is (for messages); ``base_dir`` is the
    project directory that ``"file"`` paths are relative to.
    """
    return (engine or _default_engine).compile(config, file=file, key=key, base_dir=base_dir)


def kind_of(value: object) -> str:
    """What a script answered, in JavaScript's words and without the value (which may be
    anything of an object): for a message saying the answer is not what was asked."""
    if value is None:
        return "null (or undefined)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _extras(config: Mapping[str, Any], file: str, key: str) -> dict[str, Any]:
    extras = {name: value for name, value in config.items() if name not in _SCRIPT_KEYS}
    declared = config.get("globals", {})
    if not isinstance(declared, dict):
        raise ConfigError(file, key, "globals must be an object")
    extras.update(declared)
    for name in extras:
        if not _IDENTIFIER.match(name) or name in _reserved_names():
            raise ConfigError(file, key, f"{name!r} cannot be a script variable")
    return extras


def _check_syntax(source: str, origin: str | None, file: str, key: str) -> bool:
    """Parse without running (a throw comes first); return whether it is one expression."""
    # A throwaway context: hoisted declarations are the only thing the parse creates.
    ctx = quickjs.Context()
    ctx.set_time_limit(1.0)
    ctx.set_memory_limit(64 * 1024 * 1024)
    check = ctx.eval(f"""(function (src) {{
      try {{ (0, eval)("throw {_SENTINEL};\\n" + src); }}
      catch (e) {{
        if (e !== {_SENTINEL}) return JSON.stringify([e.name, e.message, String(e.stack)]);
      }}
      try {{ (0, eval)("throw {_SENTINEL};\\n(" + src + "\\n)"); }}
      catch (e) {{ return e === {_SENTINEL} ? "expression" : "program"; }}
    }})""")
    ctx.eval(f"var {_SENTINEL} = {{}};")
    verdict = str(check(source))
    if verdict in ("expression", "program"):
        head = _LEADING_COMMENTS.match(source)
        rest = source[head.end() if head else 0:]
        return verdict == "expression" and not _NOT_EXPRESSION.match(rest)
    kind, message, stack = json.loads(verdict)
    at = re.search(r"<input>:(\d+):(\d+)", stack)
    where = f" at line {int(at[1]) - 1}, column {at[2]}" if at else ""
    what = "JavaScript syntax error" if kind == "SyntaxError" else f"script cannot load: {kind}"
    raise ConfigError(file, key, f"{what}{where}" + (f" of {origin}" if origin else "")
                      + f": {message}")


def _java_reached(source: str) -> str | None:
    """The first Java class or function the program names that the sandbox does not answer."""
    for found in _JAVA.finditer(source):
        name = re.sub(r"\s+", "", found[0]).removeprefix("Packages.")
        if name not in _JAVA_ANSWERED:
            return name
    return None


def _reserved_names() -> frozenset[str]:
    global _reserved
    if _reserved is None:
        _reserved = reserved_names()
    return _reserved


def _dumps(variables: object, name: str) -> str:
    try:
        return _ENCODER.encode(variables)
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"{name}: a variable cannot be passed to JavaScript: {exc}") from None


def _failed(function: str, resource: str | None, message: str, code: int) -> str:
    """The answer that throws ``message`` in the script, with PingIDM's status ``code``."""
    return json.dumps([function, resource, 1, message, code, HTTPStatus(code).phrase])


def _screened(outcome: list[Any]) -> list[Any]:
    """One outcome that may hold an unpaired surrogate: a result holding one is outcome
    4 with where it is; a failure's message and thrown value have it escaped."""
    if outcome[0] == 0:
        lone = lone_at(outcome[1])
        return outcome if lone is None else [4, lone]
    if outcome[0] in (1, 2):
        return [mended_value(part) for part in outcome]
    return outcome  # 3: ``Script._answer`` refuses arguments holding one


def _check_names(variables: Mapping[str, Any]) -> None:
    # Only a clash matters: a name that is not an identifier is merely unreachable.
    if not _reserved_names().isdisjoint(variables):
        clash = sorted(_reserved_names().intersection(variables))
        raise ValueError(f"{', '.join(clash)} cannot be a script variable (a JavaScript global)")


def _plain(value: object) -> object:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


_ENCODER = json.JSONEncoder(default=_plain, separators=(",", ":"), allow_nan=False)
