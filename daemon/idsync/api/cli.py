"""``idsync api hash-password``: the argon2 hash for an ``[api.accounts]`` entry."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


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
