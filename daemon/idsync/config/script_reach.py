"""The ``openidm`` calls of a project's scripts that name a service idsync's scripts cannot reach.

PingIDM's scripts reach every service of its router: workflows
(``workflow/processinstance``), its repository (``repo/...``), its configuration,
endpoints, the scheduler. idsync's reach managed objects, systems, the email service,
the recon service and the sync service (``managed/router.py``); any other call throws
in the script when it runs. A script that calls one of those is PingIDM-valid and
fails each time it runs here (OpenIDM's usecase2 sunrise task starts a workflow), so
``validate`` reads every script of the files idsync runs scripts from and names each
call whose resource is written as a string and lies outside that reach
(``unreachable_calls``). A resource built at run time (``'managed/' + type``) is
judged by its written start; a call inside a comment or a string is not a call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from idsync.config.objectmodel import not_run
from idsync.scripts.paths import ScriptPaths

__all__ = ["REACHED", "script_objects", "script_text", "unreachable_calls"]

REACHED = ("managed/<type>, system/<name>/<type>, external/email (send), config/external.email (read), "
           "recon and sync (actions)")
_JS_TYPES = ("text/javascript", "javascript")
# Comments and strings are read past whole, so that a call is found only in code.
_TOKENS = re.compile(r"""
      (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<call>\bopenidm\s*\.\s*(?P<function>create|read|update|patch|delete|query|action)\s*\(\s*
        (?P<quote>['"])(?P<name>(?:\\.|(?!(?P=quote))[^\\\n])*)(?P=quote)\s*(?P<after>[^\s]?))
    | (?P<string>'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`)
""", re.VERBOSE | re.DOTALL)
# The services other than objects that idsync's scripts reach, by the function called.
_ANSWERED = {("action", "external/email"), ("read", "config/external.email"), ("action", "recon"),
             ("action", "sync")}
_WHY = {
    "workflow": "idsync has no workflow engine",
    "repo": "PingIDM's repository; idsync's scripts reach the store through managed/<type>",
    "internal": "PingIDM's internal users and roles, which idsync does not have",
    "config": "PingIDM's configuration service (idsync's scripts read config/external.email only)",
    "external": "a PingIDM external service other than email",
    "endpoint": "PingIDM's custom endpoints, which idsync serves over HTTP but not to scripts",
}


def unreachable_calls(source: str) -> list[str]:
    """``openidm.FUNCTION('NAME'): why`` for each call of ``source`` outside idsync's
    reach, in the order written."""
    found = []
    for match in _TOKENS.finditer(source):
        if match.group("call") is None:
            continue
        function, name = match.group("function"), match.group("name").strip("/")
        whole = match.group("after") in (",", ")")  # not 'managed/' + type
        why = _outside(function, name, whole)
        if why is not None:
            found.append(f"openidm.{function}('{match.group('name')}'): {why}")
    return list(dict.fromkeys(found))


def _outside(function: str, name: str, whole: bool) -> str | None:
    head, slash, _ = name.partition("/")
    if not whole and not slash:
        return None  # the first part of the name is still being built
    if head in ("managed", "system"):
        return None
    if whole and (function, name) in _ANSWERED:
        return None
    if not whole and head in ("external", "config"):
        return None  # 'external/' + service: perhaps email
    return _WHY.get(head, "a service of PingIDM's that idsync does not have")


def script_objects(raw: Any, at: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every ``text/javascript`` script object in ``raw``, with its key
    (``mappings[0].properties[3].transform``)."""
    if isinstance(raw, dict):
        if raw.get("type") in _JS_TYPES and ("source" in raw or "file" in raw):
            yield at, raw
            return
        for key, value in raw.items():
            yield from script_objects(value, f"{at}.{key}" if at else str(key))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            yield from script_objects(value, f"{at}[{i}]")


def script_text(config: Mapping[str, Any], paths: ScriptPaths) -> str | None:
    """The program a script object runs, or ``None`` when idsync does not run it (one of
    PingIDM's own: ``not_run``) or it cannot be read (loading reports that)."""
    if not_run(dict(config), paths) is not None:
        return None
    name = config.get("file")
    if not isinstance(name, str):
        source = config.get("source")
        return source if isinstance(source, str) else None
    found: Path | None = paths.find(name)
    if found is None:
        return None
    try:
        return found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
