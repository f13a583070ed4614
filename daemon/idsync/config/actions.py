"""PingIDM's custom actions of managed objects: a type's ``actions`` in ``managed.json``.

``{"name": "user", "actions": {"NAME": {"type": "text/javascript", "source": "..."}}}``
(or ``"file"``, and ``globals``) is served at ``POST openidm/managed/user/ID?_action=NAME``
(``api/actions.py``): the script runs on the object as read, and what it changes
through ``openidm`` is what changes. Each script is compiled when the project loads,
as the type's object scripts are (``objectmodel.py``): a syntax error or a missing
file is a ``file: key: problem`` error naming ``objects[N].actions.NAME``.

An action whose script loads a module of PingIDM's that idsync does not provide is
kept, not compiled, with the reason ``objectmodel.not_run`` gives: ``validate`` names
it in a warning (``unused.py``) and calling it answers 501 with the reason. The
default ``managed.json``'s ``resetPassword`` is compiled and served: idsync provides
the modules it loads (``scripts/modules.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.config.objectmodel import not_run
from idsync.errors import ConfigError
from idsync.scripts import Script, ScriptEngine
from idsync.scripts.paths import ScriptPaths

__all__ = ["ManagedAction", "load_actions", "unserved"]


@dataclass(frozen=True)
class ManagedAction:
    """One custom action of a managed type; ``script`` is ``None`` when it is not
    served, and ``why`` says why."""

    name: str
    key: str  # where managed.json defines it: objects[N].actions.NAME
    script: Script | None
    why: str | None = None


def unserved(actions: Any, paths: ScriptPaths) -> dict[str, str]:
    """The actions of one type's ``actions`` that are not served, each with why."""
    if not isinstance(actions, dict):
        return {}
    return {name: why for name, config in actions.items() if (why := not_run(config, paths)) is not None}


def load_actions(managed_raw: Any, project_dir: Path, engine: ScriptEngine,
                 *, file: str) -> dict[str, Mapping[str, ManagedAction]]:
    """Each managed type's actions by name (types without any are left out); a
    ``ConfigError`` naming the file and key of one that does not compile."""
    paths = ScriptPaths(project_dir, engine.defaults)
    found: dict[str, Mapping[str, ManagedAction]] = {}
    objects = managed_raw.get("objects") if isinstance(managed_raw, dict) else None
    for i, obj in enumerate(objects if isinstance(objects, list) else []):
        if not isinstance(obj, dict) or obj.get("actions") is None:
            continue
        at = f"objects[{i}].actions"
        raw = obj["actions"]
        if not isinstance(raw, dict):
            raise ConfigError(file, at, 'expected an object of actions by name, such as {"NAME": {"type": '
                                        '"text/javascript", "source": "..."}}')
        skipped = unserved(raw, paths)
        actions: dict[str, ManagedAction] = {}
        for name, config in raw.items():
            key = f"{at}.{name}"
            actions[name] = (ManagedAction(name, key, None, skipped[name]) if name in skipped else
                             ManagedAction(name, key, engine.compile(config, file=file, key=key,
                                                                     base_dir=project_dir)))
        found[str(obj.get("name"))] = actions
    return found
