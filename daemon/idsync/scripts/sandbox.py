"""One QuickJS context, owned by one thread, that runs compiled mapping scripts.

A QuickJS runtime must only ever be touched by the thread that created it, so the
engine keeps one ``Sandbox`` per thread. Everything the scripts must not reach is
simply absent: a QuickJS context created from Python has no ``require``, ``std``,
``os``, ``fetch`` or timers. The prelude below adds only ``logger`` (and PingIDM's
``console.log`` writing to it, and the little of Java OpenIDM's scripts print and draw
with: ``java.lang.System.out.println``, ``java.util.UUID.randomUUID``), ``ldapDn`` (DN
building with RFC 4514 escaping), ``openidm``, ``identityServer`` and ``readFile``
(answered by Python through replays, see below) and ``require``, which knows idsync's own modules (``lib/lodash``, a
subset of lodash, and PingIDM's stock ``managed.json`` modules: ``modules.py``), all
non-enumerable and read-only. ``Math.random`` draws from a stream seeded once per run
of a script, so that its replays draw the same (``randomness.py``). Log lines are buffered and
handed back with the result, since QuickJS may not call into Python under a time limit.

Variables live on the global object for the duration of one call and are swept away
afterwards, together with whatever the script declared (``var``, function
declarations, implicit globals): anything enumerable that was not there when the
context was made is deleted, so nothing leaks from one object to the next.

Every entry point returns one JSON string, ``[outcome or outcomes, log lines]``, so one
crossing of the Python/JS boundary carries the result or the error; an outcome is:

    [0, value]                              the script's completion value
    [1, name, message, line, column]        the script threw
    [2, message]                            the result is not JSON (BigInt, cycle)
    [3, function, resource, arguments]      an openidm call waits for its answer

Only what JavaScript cannot catch escapes as ``quickjs.JSException``: the time
limit ("interrupted"), and an out-of-memory raised while handling an error. After
that the sandbox is spent and the engine makes a new one.
"""

from __future__ import annotations

import json

import quickjs

from idsync.scripts.lodash import LODASH_SOURCE
from idsync.scripts.modules import MODULES_SOURCE
from idsync.scripts.randomness import RANDOM_SOURCE

__all__ = ["IDENTITY_SERVER", "OPENIDM_CRYPTO", "OPENIDM_FUNCTIONS", "Sandbox", "reserved_names"]

OPENIDM_FUNCTIONS = ("read", "query", "create", "update", "patch", "delete", "action")
# Answered without touching data: PingIDM's crypto functions.
OPENIDM_CRYPTO = ("encrypt", "decrypt", "isEncrypted", "hash", "isHashed", "matches")
# PingIDM's ``identityServer`` functions, called ``identityServer.NAME`` by the router.
IDENTITY_SERVER = ("getProjectLocation", "getInstallLocation", "getWorkingLocation", "getProperty")

_PRELUDE = r"""
(function (openidmNames, lodash, makeModules, makeRandom) {
  "use strict";
  var MAX_LOGS = 1000, MAX_LOG_CHARS = 10000;
  var G = globalThis, stringify = JSON.stringify, parse = JSON.parse;
  var indirectEval = G.eval, Fn = G.Function, freeze = Object.freeze;
  var base = Object.create(null), k;
  for (k in G) base[k] = true;
  var scripts = [], out = null, logs = [], dropped = 0;

  function define(name, value) {
    Object.defineProperty(G, name, {value: value, enumerable: false, writable: false,
                                    configurable: false});
  }
  function text(v) {
    if (typeof v === "string") return v;
    // An error is its name and message, as SLF4J prints an exception (its JSON is "{}").
    if (v instanceof Error) { try { return String(v); } catch (e) { return "Error"; } }
    try { var s = stringify(v); return s === undefined ? String(v) : s; }
    catch (e) { return String(v); }
  }
  // SLF4J style, as PingIDM scripts write it: logger.info("user {} has {}", a, b).
  function format(args) {
    var msg = text(args[0]), i = 1;
    msg = msg.replace(/\{\}/g, function (m) { return i < args.length ? text(args[i++]) : m; });
    for (; i < args.length; i++) msg += " " + text(args[i]);
    return msg;
  }
  // Python cannot be called while a time limit is set, so log lines wait here until
  // the call returns; a bounded number, so a chatty loop cannot fill memory.
  var logger = {};
  ["trace", "debug", "info", "warn", "error"].forEach(function (level) {
    logger[level] = function () {
      if (logs.length < MAX_LOGS) logs.push([level, format(arguments).slice(0, MAX_LOG_CHARS)]);
      else dropped++;
    };
  });
  define("logger", freeze(logger));
  // PingIDM's ``console.log`` (OpenIDM binds it beside ``logger``): the same log, at info.
  var console_ = {};
  [["log", "info"], ["info", "info"], ["debug", "debug"], ["trace", "trace"], ["warn", "warn"],
   ["error", "error"]].forEach(function (pair) { console_[pair[0]] = logger[pair[1]]; });
  define("console", freeze(console_));
  function takeLogs() {
    if (dropped) logs.push(["warn", dropped + " more log lines dropped"]);
    var s = logs.length ? stringify(logs) : "[]";
    logs = []; dropped = 0;
    return s;
  }
  // openidm.*: a call is answered by Python, which QuickJS may not call while a time
  // limit is set. So the first unanswered call suspends the run: it is recorded in
  // `pending`, the run ends with outcome 3, Python answers, and the script runs again
  // from the start with the answers so far, which the same calls then return in order.
  // A script that catches the suspension and carries on is still suspended.
  var answers = null, asked = 0, pending = null;
  // A failed call throws what Rhino throws for a Java exception: an Error whose
  // javaException is PingIDM's ResourceException, read as OpenIDM's own scripts read it
  // (e.javaException.getCode() !== 404), or as bean properties (e.javaException.code).
  function _idsyncFailure(message, code, reason) {
    var e = new Error(message), cause = {code: code, reason: reason, message: message, detail: null, cause: null};
    cause.getCode = function () { return code; };
    cause.getReason = function () { return reason; };
    cause.getMessage = function () { return message; };
    cause.getDetail = function () { return null; };
    cause.getCause = function () { return null; };
    cause.toString = function () { return message; };
    Object.defineProperty(e, "javaException", {value: freeze(cause), enumerable: false});
    return e;
  }
  function _idsyncOpenidm(name, args) {
    if (pending !== null) throw new Error("openidm." + name + " cannot run: an earlier openidm call is unanswered");
    var resource = typeof args[0] === "string" && dataCalls[name] ? args[0] : null;
    if (answers !== null && asked < answers.length) {
      var a = answers[asked++];
      if (a[0] !== name || a[1] !== resource)
        throw new Error(["openidm.", name, " ", resource || "", " differs from the call the previous run of this ",
                         "script made here (openidm.", a[0], " ", a[1] || "", "): a script's openidm calls must ",
                         "not depend on the clock or chance"].join(""));
      if (a[2] === 0) return a[3];
      throw _idsyncFailure(a[3], a[4], a[5]);
    }
    var list = [], i, json;
    for (i = 0; i < args.length; i++) list.push(args[i] === undefined ? null : args[i]);
    try { json = stringify(list); }
    catch (e) { throw new TypeError("the arguments of openidm." + name + " are not JSON"); }
    asked++;
    pending = ["[3,", stringify(name), ",", stringify(resource), ",", json, "]"].join("");
    throw new Error("openidm." + name + " is being answered");
  }
  var dataCalls = {}, openidm = {};
  openidmNames[0].forEach(function (n) { dataCalls[n] = true; });
  openidmNames[0].concat(openidmNames[1]).forEach(function (n) {
    // Named functions, so that the line an error reports is the script's call site.
    openidm[n] = indirectEval("(function _idsync_openidm_" + n + "() { return _idsync_openidm(" +
      stringify(n) + ", Array.prototype.slice.call(arguments)); })");
  });
  define("_idsync_openidm", _idsyncOpenidm);
  define("openidm", freeze(openidm));
  // PingIDM's identityServer (where the project is) and Rhino's readFile (which OpenIDM's
  // scripts call to read a template of their project): answered by Python as openidm's are.
  function hostCall(name) {
    return indirectEval("(function _idsync_host_" + name.replace(".", "_") + "() { return _idsync_openidm(" +
      stringify(name) + ", Array.prototype.slice.call(arguments)); })");
  }
  var server = {};
  openidmNames[2].forEach(function (n) { server[n] = hostCall("identityServer." + n); });
  define("identityServer", freeze(server));
  define("readFile", hostCall("readFile"));

  // Chance that a replay draws again as its first run drew it: the run's seed, set with
  // its variables, keys a ChaCha20 stream (``randomness.py``); Math.random draws from it.
  var chance = makeRandom();
  Object.defineProperty(Math, "random", {value: function random() { return chance.float(); }, writable: false,
                                         enumerable: false, configurable: false});

  // The Java OpenIDM's scripts reach through Rhino most: the server's console (its sample
  // schedule-script.json prints with java.lang.System.out.println), the clock, strings and
  // UUIDs (drawn from the run's stream, so a replay draws the same). Any other class throws,
  // naming it, where Rhino would have found it; ``validate`` warns of such a script.
  function javaPackage(path, members) {
    // Named _idsync*, so that the line an error names is the script's (``where`` below).
    return new Proxy(freeze(members), {get: function _idsyncJava(target, name) {
      if (typeof name !== "string" || name in target) return target[name];
      throw new ReferenceError(path + "." + name + " is not available: idsync runs scripts in JavaScript, " +
                               "without Java's classes");
    }});
  }
  function javaStream(level) {
    function print(value) { logger[level](arguments.length ? text(value) : ""); }
    return javaPackage("java.lang.System." + (level === "info" ? "out" : "err"), {println: print, print: print});
  }
  function randomUUID() {
    var hex = [], i, h;
    for (i = 0; i < 4; i++) hex.push(("0000000" + chance.uint32().toString(16)).slice(-8));
    h = hex.join("");
    // Version 4, variant 10xx, as java.util.UUID.randomUUID makes them.
    return new String([h.substr(0, 8), h.substr(8, 4), "4" + h.substr(13, 3),
                       "89ab".charAt(parseInt(h.charAt(16), 16) & 3) + h.substr(17, 3), h.substr(20, 12)].join("-"));
  }
  var java = javaPackage("java", {
    lang: javaPackage("java.lang", {
      System: javaPackage("java.lang.System", {out: javaStream("info"), err: javaStream("error"),
                                               currentTimeMillis: function () { return Date.now(); }}),
      String: function (value) { return new String(value === undefined ? "" : text(value)); }
    }),
    util: javaPackage("java.util", {UUID: javaPackage("java.util.UUID", {randomUUID: randomUUID})})
  });
  define("java", java);
  define("Packages", javaPackage("Packages", {java: java}));

  // PingIDM's script library has lodash and the modules its default managed.json
  // loads; idsync answers those names with its own (``lodash.py``, ``modules.py``).
  var modules = makeModules(lodash, logger, openidm, chance), moduleNames = Object.keys(modules);
  define("require", function _idsyncRequire(name) {
    if (typeof name === "string" && Object.prototype.hasOwnProperty.call(modules, name)) return modules[name];
    throw new Error("require(" + stringify(String(name)) + "): no such module; idsync provides " +
                    moduleNames.join(", "));
  });

  // DNs built from source values, escaped as RFC 4514 says, so that a value holding a
  // comma, a plus or an equals sign stays one value and cannot move the entry elsewhere:
  // ldapDn.child("ou=People,dc=example,dc=com", "uid", source.userName).
  function escapeDnValue(value) {
    var s = String(value), out = [], i, c;
    for (i = 0; i < s.length; i++) {
      c = s.charAt(i);
      if ("\\,+\"<>;=".indexOf(c) >= 0) out.push("\\" + c);
      else if (c === "\u0000") out.push("\\00");
      else if ((c === "#" && i === 0) || (c === " " && (i === 0 || i === s.length - 1))) out.push("\\" + c);
      else out.push(c);
    }
    return out.join("");
  }
  define("ldapDn", freeze({
    escape: escapeDnValue,
    rdn: function (attribute, value) { return [attribute, "=", escapeDnValue(value)].join(""); },
    child: function (parent, attribute, value) {
      return [attribute, "=", escapeDnValue(value), parent ? "," + parent : ""].join("");
    }
  }));

  // A JSON array of outcome strings, built by join: the binding cannot read the rope
  // strings that "+" makes in QuickJS-ng.
  function flat(outcomes) {
    return ["[", outcomes.join(","), "]"].join("");
  }
  function withLogs(outcomes) {
    return ["[", outcomes, ",", takeLogs(), "]"].join("");
  }
  // "@same": [[alias, name], ...] makes alias the very object name is (PingIDM binds
  // one object as both object and newObject); "@same" is no identifier, so no
  // script variable can take it.
  function bind(extras, vars) {
    var same = vars["@same"], i;
    for (k in extras) G[k] = extras[k];
    for (k in vars) if (k !== "@same") G[k] = vars[k];
    for (i = 0; same && i < same.length; i++) G[same[i][0]] = G[same[i][1]];
  }
  function sweep() {
    for (var name in G) if (!(name in base)) delete G[name];
  }
  // The innermost frame that points into script code gives the line; frames of the
  // prelude are named _idsync* and skipped, and so is what idsync's modules did inside
  // (``modules.py``): the frames up to the last module entry, _idsync_module_call.
  function where(e, offset) {
    var lines = String(e && e.stack || "").split("\n"), i, m, start = 0;
    for (i = 0; i < lines.length; i++) if (lines[i].indexOf("_idsync_module_call") >= 0) start = i + 1;
    for (i = start; i < lines.length; i++) {
      if (lines[i].indexOf("_idsync") >= 0) continue;
      m = /<input>:(\d+):(\d+)/.exec(lines[i]);
      // QuickJS places some errors of an expression script on the wrapping function's own
      // first line (one that starts with ``this``): no line of the script, so none is told.
      if (m) return Number(m[1]) - offset >= 1 ? [Number(m[1]) - offset, Number(m[2])] : [null, null];
    }
    return [null, null];
  }
  function _idsyncOutcome(s, vars, given, seed, stream) {
    var value, mark = logs.length, failed = null;
    answers = given || null; asked = 0; pending = null;
    chance.reset(seed, stream);
    bind(s.extras, vars);
    try {
      // ``this`` is the global object, as at a program's top level (Rhino's too).
      value = s.fn ? s.fn.call(G) : indirectEval(s.src);
    } catch (e) {
      // Told here, before the sweep: out of memory, this throws and the engine starts over.
      var at = where(e, s.offset);
      // Out of memory, the engine may have had no room for an error: null is thrown.
      var name = e instanceof Error ? e.name : e === null || e === undefined ? "Nothing" : "Error";
      var message = e instanceof Error ? e.message : text(e);
      // A thrown plain object (PingIDM's {code: 404, message: ...}) is kept as it is too.
      // A failed openidm call left uncaught (or thrown again) is its ResourceException,
      // which PingIDM answers with its own status: kept as that {code, message}.
      var thrown = null;
      if (!(e instanceof Error) && e !== null && typeof e === "object") {
        try { thrown = parse(stringify(e)); } catch (x) { thrown = null; }
      } else if (e instanceof Error && e.javaException && typeof e.javaException.code === "number") {
        thrown = {code: e.javaException.code, message: e.javaException.message};
      }
      failed = stringify([1, name, message, at[0], at[1], thrown]);
    } finally {
      sweep();
      answers = null;
    }
    if (pending !== null) {
      // The run is replayed once answered: its log lines would come twice.
      var p = pending;
      pending = null; logs.length = mark;
      return p;
    }
    if (failed !== null) return failed;
    try { return stringify([0, value]); }
    catch (e) { return stringify([2, String(e && e.message)]); }
  }
  define("_idsync_install", function _idsyncInstall(id, src, extras, isExpression) {
    scripts[id] = {
      // Lines of the function body start after "(function anonymous(\n) {\nreturn (\n".
      fn: isExpression ? new Fn("return (\n" + src + "\n)") : null,
      src: src, extras: parse(extras), offset: isExpression ? 3 : 0
    };
  });
  define("_idsync_call", function _idsyncCall(id, vars, given, seed, stream) {
    return withLogs(_idsyncOutcome(scripts[id], parse(vars), given ? parse(given) : null, seed, stream));
  });
  // Item i of a batch draws the batch seed's stream i (its replays get the same).
  define("_idsync_many", function _idsyncMany(id, page, seed) {
    var s = scripts[id], items = parse(page), i;
    out = [];
    for (i = 0; i < items.length; i++) out.push(_idsyncOutcome(s, items[i], null, seed, i));
    var result = withLogs(flat(out));
    out = null;
    return result;
  });
  // After an interrupted batch: the outcomes finished so far.
  define("_idsync_take", function _idsyncTake() {
    var done = out || [];
    out = null;
    return withLogs(flat(done));
  });
})
"""

class Sandbox:
    """A QuickJS context with the prelude installed; never share it between threads."""

    def __init__(self, *, time_limit: float, memory_limit: int) -> None:
        self._ctx = quickjs.Context()
        self._memory_limit = memory_limit
        names = json.dumps([OPENIDM_FUNCTIONS, OPENIDM_CRYPTO, IDENTITY_SERVER])
        self._ctx.eval(f"{_PRELUDE}({names}, {LODASH_SOURCE}, {MODULES_SOURCE}, {RANDOM_SOURCE});")
        self._install = self._ctx.get("_idsync_install")
        self._call = self._ctx.get("_idsync_call")
        self._many = self._ctx.get("_idsync_many")
        self._take = self._ctx.get("_idsync_take")
        self._installed: set[int] = set()
        # Limits go on last: the prelude itself must never be what trips them.
        self._ctx.set_memory_limit(memory_limit)
        self._ctx.set_time_limit(time_limit)

    def ensure(self, script_id: int, source: str, extras_json: str, is_expression: bool) -> None:
        """Compile a script into this context once."""
        if script_id not in self._installed:
            self._install(script_id, source, extras_json, is_expression)
            self._installed.add(script_id)

    def call(self, script_id: int, variables_json: str, answers_json: str, seed: str, stream: int = 0) -> str:
        """Run once, the openidm calls answered by ``answers_json`` (a JSON array, see
        ``engine``), chance drawn from ``seed``'s ``stream`` (``randomness``); return
        ``[outcome, logs]`` as JSON. JSException if the engine gave up."""
        return str(self._call(script_id, variables_json, answers_json, seed, stream))

    def call_many(self, script_id: int, page_json: str, seed: str) -> str:
        """Run once per item of a JSON array, item i drawing ``seed``'s stream i; return
        ``[[outcome, ...], logs]`` as JSON."""
        return str(self._many(script_id, page_json, seed))

    def take_partial(self) -> str:
        """What a failed ``call_many`` finished: ``[[outcome, ...], logs]`` as JSON."""
        # Room to serialise what is already done, even when memory is what ran out.
        self._ctx.set_memory_limit(self._memory_limit * 2)
        self._ctx.set_time_limit(-1)
        self._ctx.gc()
        return str(self._take())


def reserved_names() -> frozenset[str]:
    """Global names a variable must not take: built-ins and the sandbox's own."""
    sandbox = Sandbox(time_limit=-1, memory_limit=-1)
    names = sandbox._ctx.eval("Object.getOwnPropertyNames(globalThis).join(',')")
    return frozenset(str(names).split(","))
