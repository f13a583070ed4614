"""``idsync api hash-password``: the argon2 hash for an ``[api.accounts]`` entry; and
what ``idsync validate`` checks of ``[api]`` beyond its syntax."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from idsync.errors import ConfigError, IdsyncError

__all__ = ["api_problems", "register"]


def register(subparsers: Any) -> None:
    """Add ``api`` to ``idsync``'s subcommands."""
    a = subparsers.add_parser("api", help="HTTP API helpers")
    sub = a.add_subparsers(dest="api_command", required=True)
    h = sub.add_parser("hash-password", help="print an argon2 hash for [api.accounts] (password read from stdin "
                       "when not a terminal, else prompted)")
    h.set_defaults(handler=_cmd_hash_password)


def _cmd_hash_password(_args: argparse.Namespace, _project_dir: Path) -> int:
    from idsync.api.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("idsync: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("idsync: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def api_problems(project_dir: Path) -> list[IdsyncError]:
    """What would stop ``idsync run`` from serving the enabled API: unreadable or
    non-argon2 accounts, a sample password on a non-loopback address, a TLS pair
    that does not load."""
    from idsync.settings import load_settings

    settings = load_settings(project_dir)
    if not settings.api.enabled:
        return []
    # The API's code (Starlette, uvicorn) only where it is enabled.
    from idsync.api.app import tls_files
    from idsync.api.auth import load_accounts

    file = str(settings.conf_dir / "idsync.toml")
    try:
        load_accounts(settings.api, settings.project_dir, file)
        tls_files(settings.api, settings.project_dir, file)
    except ConfigError as exc:
        return [exc]
    return []
