"""Tests of idsync.scripts: PingIDM-style JavaScript mapping scripts in a sandbox."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from idsync.errors import ConfigError, ScriptError, ScriptTimeout
from idsync.scripts import Script, ScriptEngine, compile_script


def _js(source: str, engine: ScriptEngine | None = None, **extra: Any) -> Script:
    config = {"type": "text/javascript", "source": source, **extra}
    return compile_script(config, file="conf/sync.json", key="mappings[0].transform",
                          base_dir=Path("."), engine=engine)


def test_expression_uses_variables() -> None:
    """A one-expression transform sees the per-call variables and returns a string."""
    script = _js("source.givenName + ' ' + source.sn")
    assert script(source={"givenName": "Ada", "sn": "Lovelace"}) == "Ada Lovelace"


def test_this_is_the_global_object_in_an_expression_as_in_a_program() -> None:
    """``this`` at a script's top level is the global object, as in PingIDM's Rhino, whether
    the script is one expression or a program: ``this.source`` is the variable, nothing of
    idsync's own shows through it, and an error it raises names no line outside the script."""
    for source in ("this.source.sn", "var s = this.source; s.sn"):
        assert _js(source)(source={"sn": "Lovelace"}) == "Lovelace"
        assert _js(source).call_many([{"source": {"sn": "Hopper"}}]) == ["Hopper"]
    assert _js("[typeof this.src, typeof this.fn, this === globalThis]")() == ["undefined", "undefined", True]
    with pytest.raises(ScriptError) as failed:
        _js("this.source.name.first")(source={})
    assert "TypeError" in str(failed.value) and "line -" not in str(failed.value)


def test_program_returns_completion_value() -> None:
    """A multi-statement program returns the value of its last statement, as in PingIDM."""
    assert _js("if (source.x) { 'a' } else { 'b' }")(source={"x": False}) == "b"
    correlation = _js("var qry = {'_queryFilter': 'uid eq \"' + source.userName + '\"'}; qry")
    assert correlation(source={"userName": "ada"}) == {"_queryFilter": 'uid eq "ada"'}


def test_results_are_plain_json() -> None:
    """undefined is None, a Date its ISO string, nested values plain dicts and lists."""
    assert _js("undefined")() is None
    assert _js("new Date(0)")() == "1970-01-01T00:00:00.000Z"
    assert _js("({a: [1, 2.5, true, null]})")() == {"a": [1, 2.5, True, None]}


def test_config_extra_keys_and_globals_are_variables() -> None:
    """Extra keys of the script object, and the keys of globals, become script variables."""
    script = _js("prefix + source.uid + suffix", globals={"suffix": "!"}, prefix="u-")
    assert script(source={"uid": "ada"}) == "u-ada!"


def test_file_script_relative_to_base_dir(tmp_path: Path) -> None:
    """A "file" script is read relative to the project directory."""
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "cn.js").write_text("var cn = source.sn;\ncn.toUpperCase()\n")
    script = compile_script({"type": "text/javascript", "file": "script/cn.js"},
                            file="conf/sync.json", key="k", base_dir=tmp_path)
    assert script(source={"sn": "lovelace"}) == "LOVELACE"


@pytest.mark.parametrize(("config", "problem"), [
    ({"type": "text/groovy", "source": "1"},
     "text/groovy scripts are not supported; rewrite it in text/javascript"),
    ({"type": "text/python", "source": "1"}, "script type 'text/python' is not supported"),
    ({"type": "text/javascript"}, "exactly one of source and file"),
    ({"type": "text/javascript", "source": "1", "file": "a.js"}, "exactly one of source and file"),
    ({"type": "text/javascript", "file": "script/missing.js"}, "script/missing.js not found"),
    ("source.x", "must be an object"),
])
def test_bad_configuration_is_config_error(config: object, problem: str) -> None:
    """Each malformed script object is a ConfigError naming the file, the key and the problem."""
    with pytest.raises(ConfigError) as caught:
        compile_script(config, file="conf/sync.json", key="mappings[0].x",
                       base_dir=Path("/nonexistent"))
    assert caught.value.file == "conf/sync.json"
    assert caught.value.key == "mappings[0].x"
    assert problem in caught.value.problem


def test_syntax_error_at_load_time_with_line() -> None:
    """A syntax error is found when the script is compiled, with its line and column."""
    with pytest.raises(ConfigError) as caught:
        _js("var a = 1;\nvar b = ;\n")
    assert "syntax error at line 2, column 9" in caught.value.problem


def test_syntax_check_does_not_run_the_script() -> None:
    """Compiling runs nothing, and text that would escape a function wrapper is refused."""
    with structlog.testing.capture_logs() as logs:
        _js("logger.error('ran'); 1")
        with pytest.raises(ConfigError, match="syntax error"):
            _js("}); logger.error('escaped'); (function(){")
    assert logs == []


def test_thrown_error_is_script_error_with_message_and_line() -> None:
    """A thrown JS error raises ScriptError naming the script, the message and the line."""
    script = _js("var a = 1;\nthrow new Error('no manager for ' + source.uid)")
    with pytest.raises(ScriptError, match=r"conf/sync.json: mappings\[0\].transform: "
                                          r"Error: no manager for ada at line 2"):
        script(source={"uid": "ada"})


def test_infinite_loop_times_out() -> None:
    """A script that never ends raises ScriptTimeout after about the time limit."""
    engine = ScriptEngine(time_limit=0.1)
    assert _js("1 + 1", engine)() == 2  # the engine started: its start is not in what is timed
    script = _js("for (;;) {}", engine)
    started = time.monotonic()
    with pytest.raises(ScriptTimeout):
        script()
    # Ended by the limit, not left to run: thirty times the limit leaves a machine busy with
    # the suite's other workers room to be late.
    assert time.monotonic() - started < 3.0


def test_memory_exhaustion_is_script_error_and_engine_recovers() -> None:
    """Filling memory raises ScriptError; the next call runs in a fresh sandbox."""
    engine = ScriptEngine(memory_limit=8 * 1024 * 1024)
    hog = _js("var a = []; for (;;) a.push('x'.repeat(1000) + a.length); 1", engine)
    with pytest.raises(ScriptError, match="memory"):
        hog()
    assert _js("1 + 1", engine)() == 2


def test_thrown_null_is_named_with_memory_as_a_possible_cause() -> None:
    """A thrown null (what the engine throws when memory runs out before an error fits) says
    so, and the next call runs in a fresh sandbox."""
    engine = ScriptEngine()
    with pytest.raises(ScriptError, match=r"the script threw null \(or ran out of memory\)"):
        _js("throw null", engine)()
    assert _js("1 + 1", engine)() == 2


def test_no_host_access() -> None:
    """The sandbox has no std, os, fetch or timers, and its console only writes the script
    log; its require knows idsync's modules (``test_script_lodash.py``) and reaches no file."""
    names = ["std", "os", "fetch", "setTimeout", "process", "XMLHttpRequest"]
    script = _js("[" + ", ".join(f"typeof {n}" for n in names) + "]")
    assert script() == ["undefined"] * len(names)
    assert _js("Object.keys(console).sort()")() == ["debug", "error", "info", "log", "trace", "warn"]
    with pytest.raises(ScriptError, match="no such module"):
        _js("require('/etc/passwd')")()


def test_openidm_functions_fail_clearly() -> None:
    """Without a router bound, openidm.read throws a clear 'not available' error naming the line."""
    with pytest.raises(ScriptError, match=r"openidm\.read is not available here: .* at line 1"):
        _js("openidm.read('managed/user/' + source.uid)")(source={"uid": "x"})


def test_logger_routes_to_structlog() -> None:
    """logger.info with {} placeholders becomes a script.log event with level and message."""
    script = _js("logger.info('user {} has {}', source.uid, {n: 2}); logger.warn('careful'); 1")
    with structlog.testing.capture_logs() as logs:
        assert script(source={"uid": "ada"}) == 1
    assert [(e["event"], e["log_level"], e["message"]) for e in logs] == [
        ("script.log", "info", 'user ada has {"n":2}'),
        ("script.log", "warning", "careful"),
    ]
    assert logs[0]["script"] == "conf/sync.json: mappings[0].transform"


def test_an_error_logged_is_told_by_its_name_and_message() -> None:
    """A caught error given to the logger (``logger.error('failed: {}', e)``, as PingIDM's scripts
    log their failures through SLF4J) is written as its name and message, not as its JSON
    (``{}``), which told nothing of what failed."""
    script = _js("try { source.missing.uid } catch (e) { logger.error('failed: {}', e); logger.warn('again', e); } 1")
    with structlog.testing.capture_logs() as logs:
        assert script(source={}) == 1
    assert [e["message"] for e in logs] == ["failed: TypeError: cannot read property 'uid' of undefined",
                                            "again TypeError: cannot read property 'uid' of undefined"]


def test_console_log_writes_the_script_log() -> None:
    """PingIDM's console.log (OpenIDM binds it) writes the same log as logger, at info;
    console.warn and console.error at their levels."""
    script = _js("console.log('Email service not configured; report not generated.'); "
                 "console.error('for', source.uid); 1")
    with structlog.testing.capture_logs() as logs:
        assert script(source={"uid": "ada"}) == 1
    assert [(e["event"], e["log_level"], e["message"]) for e in logs] == [
        ("script.log", "info", "Email service not configured; report not generated."),
        ("script.log", "error", "for ada"),
    ]


def test_globals_do_not_leak_between_calls() -> None:
    """Variables and globals a script creates are gone in the next call."""
    script = _js("var seen = typeof target + typeof leaked + typeof declared; "
                 "leaked = 1; var declared = 2; seen")
    assert script(target={}) == "objectundefinedundefined"
    assert script() == "undefinedundefinedundefined"


def test_reserved_variable_name_is_refused() -> None:
    """A variable named like a JavaScript built-in is refused rather than clobbering it."""
    with pytest.raises(ValueError, match="JSON"):
        _js("1")(JSON={})
    with pytest.raises(ConfigError, match="'logger' cannot be a script variable"):
        _js("1", logger="x")


def test_call_many_isolates_a_failing_item() -> None:
    """In a batch, one item that throws fails alone; the others get their results."""
    script = _js("if (source.bad) { throw new Error('bad ' + source.uid) } source.uid")
    results = script.call_many([{"source": {"uid": "a"}}, {"source": {"uid": "b", "bad": True}},
                                {"source": {"uid": "c"}}])
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], ScriptError) and "bad b" in str(results[1])


def test_call_many_isolates_a_timeout() -> None:
    """An item that loops forever times out alone; items before and after it succeed."""
    script = _js("while (source.spin) {} source.uid", ScriptEngine(time_limit=0.1))
    results = script.call_many([{"source": {"uid": "a"}}, {"source": {"uid": "b", "spin": True}},
                                {"source": {"uid": "c"}}])
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], ScriptTimeout)


def test_two_threads_at_once() -> None:
    """One script used from two threads at once gives each thread its own correct results."""
    script = _js("source.n * 2")
    outputs: dict[int, list[Any]] = {}

    def work(offset: int) -> None:
        outputs[offset] = [script(source={"n": offset + i}) for i in range(200)]
        outputs[offset] += script.call_many([{"source": {"n": offset}}] * 50)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for offset, got in outputs.items():
        assert got == [2 * (offset + i) for i in range(200)] + [2 * offset] * 50


@pytest.mark.parametrize(("value", "expected"), [
    ("jdoe", "uid=jdoe,ou=People,dc=example,dc=com"),
    ("evil,ou=Admins", "uid=evil\\,ou\\=Admins,ou=People,dc=example,dc=com"),
    ('a+b=c"<>;\\x', 'uid=a\\+b\\=c\\"\\<\\>\\;\\\\x,ou=People,dc=example,dc=com'),
    ("#lead trail ", "uid=\\#lead trail\\ ,ou=People,dc=example,dc=com"),
    (" lead", "uid=\\ lead,ou=People,dc=example,dc=com"),
])
def test_ldap_dn_helper_escapes_values(value: str, expected: str) -> None:
    """``ldapDn.child`` escapes the value as RFC 4514 says, so a source value holding a comma,
    plus, equals sign, quote or backslash stays one RDN value under the parent given; the DN
    it builds parses back to that value."""
    from ldap3.utils.dn import parse_dn

    built = _js("ldapDn.child('ou=People,dc=example,dc=com', 'uid', v)")(v=value)
    assert built == expected
    assert parse_dn(built, escape=False)[0][:2] == ("uid", expected.split(",ou=People")[0][4:])
    assert _js("ldapDn.rdn('cn', v)")(v="x,y") == "cn=x\\,y"


def test_file_scripts_are_looked_up_in_pingidm_order(tmp_path: Path) -> None:
    """A relative "file" is read from the project directory first, then its script/
    directory, then the engine's default scripts."""
    project, defaults = tmp_path / "project", tmp_path / "defaults"
    for place, answer in ((project, "'project'"), (project / "script", "'script'"), (defaults, "'default'")):
        (place / "lib").mkdir(parents=True)
        (place / "lib" / "who.js").write_text(answer)
    engine = ScriptEngine(defaults=defaults)

    def who() -> Any:
        return engine.compile({"type": "text/javascript", "file": "lib/who.js"}, file="conf/sync.json",
                              key="k", base_dir=project)()

    assert who() == "project"
    (project / "lib" / "who.js").unlink()
    assert who() == "script"
    (project / "script" / "lib" / "who.js").unlink()
    assert who() == "default"


def test_missing_file_script_names_every_place_looked(tmp_path: Path) -> None:
    """A script file found nowhere is a ConfigError listing the three places; a PingIDM
    bundled script says what idsync does instead; '..' may not climb out."""
    engine = ScriptEngine(defaults=tmp_path / "defaults")
    with pytest.raises(ConfigError) as caught:
        engine.compile({"type": "text/javascript", "file": "script/gone.js"}, file="conf/sync.json",
                       key="mappings[0].onCreate", base_dir=tmp_path)
    assert str(caught.value) == (
        f"conf/sync.json: mappings[0].onCreate: script file script/gone.js not found; looked in "
        f"{tmp_path}/script/gone.js, {tmp_path}/script/script/gone.js, {tmp_path}/defaults/script/gone.js")
    with pytest.raises(ConfigError, match="PingIDM bundles: idsync has no workflow engine"):
        engine.compile({"type": "text/javascript", "file": "workflow/triggerWorkflowFromSync.js"},
                       file="conf/sync.json", key="k", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"may not contain '\.\.'"):
        engine.compile({"type": "text/javascript", "file": "../etc/passwd"}, file="conf/sync.json", key="k",
                       base_dir=tmp_path)


class _Directory:
    """An ``OpenidmRouter`` over a dict, counting calls: enough to see the engine's replay."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def call(self, function: str, arguments: list[Any]) -> Any:
        from idsync.errors import NotFound

        self.calls.append((function, arguments))
        if arguments[0] == "managed/user/gone":
            raise NotFound("managed/user/gone not found")
        return {"_id": arguments[0].rsplit("/", 1)[-1], "n": len(self.calls)}


def test_openidm_calls_are_answered_by_replay_once_each() -> None:
    """Each openidm call is asked of the router once; the script runs again with the answers,
    its log lines come once, a router error is thrown in the script (which may catch it), and
    in a batch only the items that call are run again, the others keep their batch result."""
    router = _Directory()
    engine = ScriptEngine(router=router)
    script = _js("logger.info('for {}', source.uid); var a = openidm.read('managed/user/' + source.uid); "
                 "var b; try { openidm.read('managed/user/gone'); } catch (e) { b = e.message; } [a.n, b]", engine)
    with structlog.testing.capture_logs() as logs:
        assert script(source={"uid": "ada"}) == [1, "managed/user/gone not found"]
    assert [e["message"] for e in logs] == ["for ada"]
    assert [c[0] for c in router.calls] == ["read", "read"]

    router.calls.clear()
    batch = _js("source.uid ? openidm.read('managed/user/' + source.uid)._id : 'none'", engine)
    assert batch.call_many([{"source": {"uid": "a"}}, {"source": {}}, {"source": {"uid": "b"}}]) == ["a", "none", "b"]
    assert [c[1][0] for c in router.calls] == ["managed/user/a", "managed/user/b"]


def test_openidm_calls_that_change_between_runs_fail_clearly() -> None:
    """A script whose calls differ from one run to the next (here through state it hides on a
    prototype, as the clock or chance would make them differ) fails with a clear error rather
    than getting another call's answer."""
    engine = ScriptEngine(router=_Directory())
    script = _js("Array.prototype.runs = (Array.prototype.runs || 0) + 1; "
                 "openidm.read(Array.prototype.runs % 2 ? 'managed/user/a' : 'managed/user/b')._id", engine)
    with pytest.raises(ScriptError, match=r"openidm\.read managed/user/b differs from the call the previous run "
                                          r"of this script made here \(openidm\.read managed/user/a\)"):
        script()


def test_openidm_calls_nest_only_so_deep() -> None:
    """A call whose answer runs the script again (a hook whose change runs the same hook) is
    stopped at max_depth with a clear error, instead of recursing until the stack runs out."""
    engine = ScriptEngine(max_depth=3)
    script = _js("openidm.create('managed/user', null, {})", engine)

    class Again:
        def call(self, function: str, arguments: list[Any]) -> Any:
            return script()

    engine.router = Again()
    with pytest.raises(ScriptError, match=r"openidm\.create would nest scripts 4 deep .*the limit is 3"):
        script()


def test_chance_replays_within_a_run_and_differs_between_runs() -> None:
    """What a run draws (Math.random, crypto.generateRandomString) is drawn again the same in
    each replay of that run, so its openidm calls stay the same (the resource read here is
    named by the draw); another run, or another item of a batch, draws other values."""
    router = _Directory()
    script = _js("var s = require('crypto').generateRandomString([], 12), r = Math.random(); "
                 "var a = openidm.read('managed/user/' + s + r); var b = openidm.read('managed/user/x'); "
                 "[a._id, s + r, b.n]", ScriptEngine(router=router))
    first, second = script(), script()
    assert first[0] == first[1] and first[2] == 2 and second[0] == second[1] and first[1] != second[1]
    batch = script.call_many([{}, {}])
    assert all(isinstance(x, list) and x[0] == x[1] for x in batch) and batch[0][1] != batch[1][1]


def test_the_random_stream_is_chacha20() -> None:
    """The generator is RFC 8439's ChaCha20 keystream: the all-zero key and nonce give the
    published first words of blocks 0 and 1 (RFC 7539 appendix A.1, test vectors 1 and 2)."""
    import quickjs
    from idsync.scripts.randomness import RANDOM_SOURCE, run_seed

    ctx = quickjs.Context()
    ctx.eval(f"var r = ({RANDOM_SOURCE})(); r.reset('{'0' * 64}', 0);")
    words = [int(ctx.eval("r.uint32()")) for _ in range(17)]
    assert (words[0], words[16]) == (0xADE0B876, 0xBEE7079F)
    assert len(run_seed()) == 64 and run_seed() != run_seed()


def test_generate_random_string_follows_the_rules() -> None:
    """generateRandomString has the length asked, at least each rule's minimum of its class
    (PingIDM's SPECIAL is :;<=>?@), the rest from all four; impossible rules are refused."""
    make = _js("require('crypto').generateRandomString(rules, length)")
    rules = [{"rule": "UPPERCASE", "minimum": 3}, {"rule": "INTEGERS", "minimum": 2},
             {"rule": "SPECIAL", "minimum": 2}]
    for _ in range(20):
        text = make(rules=rules, length=10)
        assert len(text) == 10 and all(c.isascii() and (c.isalnum() or c in ":;<=>?@") for c in text)
        assert sum(c.isupper() for c in text) >= 3 and sum(c.isdigit() for c in text) >= 2
        assert sum(c in ":;<=>?@" for c in text) >= 2
    for bad, problem in (({"rules": [{"rule": "EMOJI", "minimum": 1}], "length": 8}, r"rules\[0\]\.rule must be"),
                         ({"rules": rules, "length": 5}, "ask for 7 characters, more than the length 5"),
                         ({"rules": [], "length": 0}, "length must be a whole number")):
        with pytest.raises(ScriptError, match=problem):
            make(**bad)


def test_handlebars_fills_its_documented_subset() -> None:
    """lib/handlebars fills {{a.b}} HTML-escaped, {{{a.b}}} and {{&a}} as they are, nothing for
    a missing value or a comment; a partial or another helper is refused, naming it and the
    script's own line, and so is a block closed under another name or never closed."""
    fill = _js("require('lib/handlebars').compile(template)(context)")
    context = {"user": {"name": "<Ann & \"Bo\">", "n": 0}, "raw": "<b>"}
    assert fill(template="{{user.name}}|{{{user.name}}}|{{& raw}}|{{ this.user.n }}|{{nobody.x}}|{{! note }}.",
                context=context) == "&lt;Ann &amp; &quot;Bo&quot;&gt;|<Ann & \"Bo\">|<b>|0||."
    for template, problem in (("{{> partial}}", r"\{\{> partial\}\} is not supported"),
                              ("{{#each a b}}x{{/each}}", r"#each takes one path"),
                              ("{{lookup a b}}", r"\{\{lookup a b\}\} is not supported"),
                              ("{{#if a}}x{{/each}}", r"the open block is \{\{#if\}\}"),
                              ("{{#with a}}x", r"\{\{#with\}\} is never closed")):
        with pytest.raises(ScriptError, match=problem + ".* at line 2"):
            _js(f"var h = require('lib/handlebars');\nh.compile({template!r});")()


def test_handlebars_blocks() -> None:
    """The blocks a recon report's template uses (OpenIDM's sample5): Mustache sections
    into an object, #if on an array's length, #each with this, @index and ../, {{else}},
    #unless, #with, inverted sections; falsy as Handlebars has it."""
    fill = _js("require('lib/handlebars').compile(template)(context)")
    context = {"global": {"mappingName": "m1"}, "source": {"name": "system/ldap/account",
               "ABSENT": {"count": 2, "ids": ["a<1", "b"]}, "FOUND": {"count": 0, "ids": []}},
               "zero": 0, "empty": "", "flag": True, "obj": {"x": 1, "y": 2}}
    template = ("{{#global}}[{{mappingName}}]{{/global}}{{#source}}{{name}}:"
                "{{#if ABSENT.ids.length}}A{{ABSENT.count}}({{#each ABSENT.ids}}{{@index}}={{this}}/{{../name}};"
                "{{/each}}){{/if}}{{#if FOUND.ids.length}}F{{else}}noF{{/if}}{{/source}}")
    assert fill(template=template, context=context) == \
        "[m1]system/ldap/account:A2(0=a&lt;1/system/ldap/account;1=b/system/ldap/account;)noF"
    assert fill(template="{{#unless zero}}u{{/unless}}{{#if empty}}e{{else}}E{{/if}}{{^missing}}m{{/missing}}"
                "{{#flag}}[{{obj.x}}]{{/flag}}{{#with obj}}{{y}}{{/with}}{{#each obj}}{{@key}}{{this}}"
                "{{#if @last}}.{{/if}}{{/each}}{{#each none}}x{{else}}none{{/each}}{{#zero}}z{{else}}Z{{/zero}}",
                context=context) == "uEm[1]2x1y2.noneZ"


_CUT = {"uid": "abcdefg\U0001F600@example.com"}  # substring(0, 8) keeps half of the emoji


def test_half_a_character_in_a_result_fails_that_call_alone() -> None:
    """A result holding an unpaired surrogate (``substring`` cutting an emoji in two), as
    the value or deep inside it, is a ScriptError naming the script and where the half
    is, alone or as one item of a batch whose other items keep their results; a whole
    emoji, and the text ``\\ud83d`` written out, come back as they are."""
    cut = _js("source.uid.split('@')[0].substring(0, 8)")
    with pytest.raises(ScriptError, match=r"^conf/sync\.json: mappings\[0\]\.transform: the result holds half of a "
                                          r"character \(an unpaired surrogate"):
        cut(source=_CUT)
    results = cut.call_many([{"source": {"uid": "bjensen"}}, {"source": _CUT}, {"source": {"uid": "😀😀😀😀😀"}}])
    assert results[0] == "bjensen" and results[2] == "😀😀😀😀"
    assert isinstance(results[1], ScriptError) and "half of a character" in str(results[1])
    nested = _js("({names: ['ok', source.uid.substring(0, 8)]})")
    with pytest.raises(ScriptError, match=r"half of a character at /names/1 "):
        nested(source=_CUT)
    assert _js("source.uid")(source=_CUT) == _CUT["uid"]
    assert _js("'\\\\ud83d'")() == "\\ud83d"


def test_half_a_character_in_a_message_is_spelt_as_an_escape() -> None:
    """A log line, a thrown error's message and a thrown object holding an unpaired
    surrogate have it spelt ``\\ud83d``, so that they can be logged and stored; an
    openidm call whose arguments hold one is refused in the script, which may catch it."""
    script = _js("logger.info('cut {}', source.uid.substring(0, 8)); throw new Error(source.uid.substring(0, 8))")
    with structlog.testing.capture_logs() as logs, pytest.raises(ScriptError) as caught:
        script(source=_CUT)
    assert [e["message"] for e in logs] == ["cut abcdefg\\ud83d"]
    assert str(caught.value).endswith("Error: abcdefg\\ud83d at line 1")
    thrown = _js("throw {code: 400, message: source.uid.substring(0, 8)}")
    with pytest.raises(ScriptError) as caught:
        thrown(source=_CUT)
    assert caught.value.thrown == {"code": 400, "message": "abcdefg\\ud83d"}
    router = _Directory()
    call = _js("try { openidm.create('managed/user', null, {userName: source.uid.substring(0, 8)}); 'sent' } "
               "catch (e) { e.message }", ScriptEngine(router=router))
    assert call(source=_CUT) == ("the arguments of openidm.create hold half of a character (an unpaired "
                                 "surrogate) at /2/userName")
    assert router.calls == []


def test_the_java_openidm_scripts_reach_most_is_answered_and_the_rest_named() -> None:
    """Rhino let PingIDM's scripts reach Java; idsync answers what they reach most:
    ``java.lang.System.out.println`` (and ``err``) logs, ``currentTimeMillis`` is the clock,
    ``java.lang.String`` a string, ``java.util.UUID.randomUUID`` a version 4 UUID drawn from the
    run's stream (its replays draw the same); any other class throws, naming it and the line."""
    with structlog.testing.capture_logs() as logs:
        assert _js("java.lang.System.out.println('at ' + 1); Packages.java.lang.System.err.println('bad'); "
                   "[new java.lang.String('x') + '', typeof java.lang.System.currentTimeMillis()]")() == ["x", "number"]
    assert [(e["log_level"], e["message"]) for e in logs] == [("info", "at 1"), ("error", "bad")]
    uuid = _js("java.util.UUID.randomUUID().toString()")()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid)
    router = _Directory()
    replayed = _js("var id = String(java.util.UUID.randomUUID()); openidm.read('managed/user/' + id); id",
                   ScriptEngine(router=router))
    answered = replayed()
    assert [c[1][0] for c in router.calls] == [f"managed/user/{answered}"]  # the first run drew what the replay did
    with pytest.raises(ScriptError, match=r"java\.util\.HashMap is not available: idsync runs scripts in "
                                          r"JavaScript, without Java's classes at line 2"):
        _js("var a = 1;\nnew java.util.HashMap()")()
