"""``idsync config show`` (the settings in force, from ``conf/idsync.toml`` and the
environment, secrets masked) and ``idsync config reference`` (every setting, as
docs/configuration.md lists it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idsync.errors import IdsyncError

if TYPE_CHECKING:
    from idsync.settings import Settings

__all__ = ["register"]

_MASK = "***"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("config", help="the settings in force, or the reference of every setting")
    commands = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = commands.add_parser("show", help="the effective settings (file, then environment), secrets masked")
    show.add_argument("--json", action="store_true", help="as JSON rather than TOML-like lines")
    show.set_defaults(handler=_cmd_show)
    ref = commands.add_parser("reference", help="every setting with its default, variable and meaning (Markdown)")
    ref.set_defaults(handler=_cmd_reference)


def _cmd_reference(_args: argparse.Namespace, _project_dir: Path) -> int:
    from idsync.settings import settings_reference

    print(settings_reference())
    return 0


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as a plain dict, with what could be a secret masked: the store URL's password
    (and password-like query parameters), the crypto key, the API's password hashes."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    data = settings.model_dump(mode="json")
    data.pop("project_dir", None)
    try:
        url = make_url(settings.store_url())
        hidden = {k: _MASK for k in url.query if "pass" in k.lower()}
        data["store"]["url"] = url.update_query_dict(hidden).render_as_string(hide_password=True)
    except (ArgumentError, IdsyncError, ValueError):
        data["store"]["url"] = _MASK if settings.store.url else ""
    if data["crypto"]["key"]:
        data["crypto"]["key"] = _MASK
    for table in ("accounts", "metrics_accounts"):
        data["api"][table] = {user: _MASK for user in data["api"][table]}
    return data


def _cmd_show(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.settings import load_settings

    data = effective(load_settings(project_dir))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for section, values in data.items():
        if not isinstance(values, dict):
            print(f"{section} = {json.dumps(values)}")
    for section, values in data.items():
        if isinstance(values, dict):
            print(f"\n[{section}]")
            for key, value in values.items():
                print(f"{key} = {json.dumps(value)}")
    return 0
