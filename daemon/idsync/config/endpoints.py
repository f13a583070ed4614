"""PingIDM's custom endpoints: ``conf/endpoint-NAME.json``, a script served at
``openidm/endpoint/NAME``.

The file is a script object (``type``, ``source`` or ``file``, ``globals``) and an
optional ``context``: ``endpoint/NAME`` (the default) serves that path only,
``endpoint/NAME/*`` its sub-paths too (the rest is the request's ``resourcePath``).
A JavaScript endpoint is compiled when the project loads (a syntax error or a
missing file is a ``file: key: problem`` error, as for a mapping's script) and
served by the API (``api/endpoints.py``).

PingIDM's own endpoints, for its admin UI (``ui/*.js``, scripts that ``require``
its modules), and Groovy ones are not served: ``validate`` names them in a warning
(``config/unused.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.config.files import load_json
from idsync.config.objectmodel import not_run
from idsync.errors import ConfigError
from idsync.scripts import Script, ScriptEngine
from idsync.scripts.paths import ScriptPaths

__all__ = ["Endpoint", "load_endpoints", "not_served"]

_PREFIX, _SUFFIX = "endpoint-", ".json"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_NOT_SCRIPT = {"context"}
# Where PingIDM keeps the scripts of its own endpoints (its admin UI, workflows).
_BUNDLED = ("ui/", "workflow/", "roles/", "lib/")


@dataclass(frozen=True)
class Endpoint:
    """One custom endpoint: ``openidm/endpoint/NAME`` (and below it when ``subpaths``)."""

    name: str
    file: str
    subpaths: bool
    script: Script


def endpoint_files(conf_dir: Path) -> list[Path]:
    return sorted(p for p in conf_dir.glob(f"{_PREFIX}*{_SUFFIX}") if p.is_file()) if conf_dir.is_dir() else []


def not_served(path: Path, project_dir: Path) -> str | None:
    """Why the endpoint of ``path`` is not served (PingIDM's own, Groovy), or ``None``;
    a file that does not parse is served, so that loading it says what is wrong."""
    try:
        raw = load_json(path, project_dir=project_dir, secrets=False)
    except ConfigError:
        return None
    if not isinstance(raw, dict):
        return None
    if raw.get("type") in ("groovy", "text/groovy"):
        return "a Groovy script (idsync runs text/javascript)"
    paths = ScriptPaths(project_dir)
    name = raw.get("file")
    if isinstance(name, str) and name.startswith(_BUNDLED) and paths.find(name) is None:
        return f"{name} is a script PingIDM bundles (its admin UI's and workflows')"
    return not_run({k: v for k, v in raw.items() if k not in _NOT_SCRIPT}, paths)


def load_endpoints(conf_dir: Path, project_dir: Path, engine: ScriptEngine) -> dict[str, Endpoint]:
    """The served endpoints by name; ``ConfigError`` naming the file and key of a bad one."""
    endpoints: dict[str, Endpoint] = {}
    for path in endpoint_files(conf_dir):
        if not_served(path, project_dir) is not None:
            continue
        file = str(path)
        name = path.name[len(_PREFIX): -len(_SUFFIX)]
        if not _NAME.match(name):
            raise ConfigError(file, "", "the name after 'endpoint-' may only use letters, digits, '.', '_' and '-'")
        raw: Any = load_json(path, project_dir=project_dir, secrets=False)
        if not isinstance(raw, dict):
            raise ConfigError(file, "", "expected a JSON object: a script (type, source or file) and a context")
        context = raw.get("context", f"endpoint/{name}")
        if context not in (f"endpoint/{name}", f"endpoint/{name}/*"):
            raise ConfigError(file, "context", f'expected "endpoint/{name}" or "endpoint/{name}/*" (the file '
                                               f"name gives the endpoint's name), not {context!r}")
        script = engine.compile({k: v for k, v in raw.items() if k not in _NOT_SCRIPT}, file=file, key="",
                                base_dir=project_dir)
        endpoints[name] = Endpoint(name, file, context.endswith("/*"), script)
    return endpoints
