"""``idsync unlock MAPPING|JOB``: remove the lock of a holder on a host that is gone.

A lock held by a dead process of this host needs no command: the next one that
wants it breaks it at once (``store/locks.py``). A lock of another host is only
broken once it expires, ten minutes after its holder last refreshed it, because
from here a live host and a dead one look the same. When the operator knows
that host is gone, this command removes the lock now, after asking (``y/N`` on a
terminal, ``--yes`` otherwise; without either it refuses), and records the run
that lock guarded FAILED. A lock of a live process of this host is never removed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idsync.errors import RunLocked

if TYPE_CHECKING:
    from idsync.store.locks import Holder

__all__ = ["register"]

_PREFIXES = ("recon:", "job:")


def register(subparsers: Any) -> None:
    """Add ``unlock`` to ``idsync``'s subcommands."""
    u = subparsers.add_parser(
        "unlock",
        help="remove the lock of a mapping or job held by a host that is gone",
        description="Remove the lock recon:NAME and/or job:NAME when its holder's host is gone for good. "
        "Asks for confirmation; refuses a lock held by a live process of this host.",
    )
    u.add_argument("name", help="a mapping or job name, or a lock name (recon:MAPPING, job:JOB)")
    u.add_argument("--yes", "-y", action="store_true", help="do not ask (needed when not on a terminal)")
    u.set_defaults(handler=_cmd_unlock)


def _cmd_unlock(args: argparse.Namespace, project_dir: Path) -> int:
    from idsync.cli.store import NoStoreYet, open_existing_store
    from idsync.settings import load_settings
    from idsync.store.database import utcnow
    from idsync.store.locks import Locks
    from idsync.sync.taken_over import summarize_taken_over

    names = [args.name] if args.name.startswith(_PREFIXES) else [p + args.name for p in _PREFIXES]
    try:  # no project is an error; a project with no store yet holds no lock (none is made)
        store = open_existing_store(load_settings(project_dir))
    except NoStoreYet:
        print(f"{args.name}: not locked ({', '.join(names)}; nothing has run here yet)")
        return 0
    locks = Locks(store)
    held = {name: holder for name in names if (holder := locks.holder(name)) is not None}
    if not held:
        print(f"{args.name}: not locked ({', '.join(names)})")
        return 0
    for name, holder in held.items():
        reason = holder.gone(utcnow())
        if reason is None and holder.host == socket.gethostname():
            raise RunLocked(f"{name} is held by {holder.describe()}, which is running: "
                            f"stop it (kill {holder.pid}) rather than remove its lock")
        print(_describe(name, holder, reason))
        if reason is None:
            if not args.yes and not sys.stdin.isatty():
                print(f"idsync: not on a terminal: run `idsync unlock {name} --yes` to remove the lock of "
                      f"{holder.describe()}", file=sys.stderr)
                return os.EX_USAGE
            if not args.yes and not _confirmed(name, holder):
                return 1
            reason = f"interrupted: owner {holder.describe()} is gone (lock removed by idsync unlock)"
        failed = locks.break_(name, holder, reason)
        for run_id in failed:
            summarize_taken_over(store, run_id)  # a split run: its counts are in its partitions
        print(f"{name}: lock removed" + (f"; run {failed[0]} recorded FAILED" if failed else ""))
    return 0


def _describe(name: str, holder: Holder, reason: str | None) -> str:
    since = f" since {holder.acquired:%Y-%m-%d %H:%M:%S} UTC" if holder.acquired else ""
    run = f", run {holder.run_id}" if holder.run_id else ""
    state = f" ({reason})" if reason else f"; the lock expires at {holder.expires:%H:%M:%S} UTC unless refreshed"
    return f"{name} is held by {holder.describe()}{run}{since}{state}"


def _confirmed(name: str, holder: Holder) -> bool:
    answer = input(f"Is {holder.host} gone for good, and may {name} be removed? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print(f"{name}: left locked")
    return False
