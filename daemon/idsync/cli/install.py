"""``idsync install-files``: what the service needs beside the program, taken from the
installed package itself, so a wheel is enough to install idsync (no source checkout):
the systemd unit (its ``ExecStart`` naming this installation), the sysusers.d and
tmpfiles.d entries, the manual page, bash completion, the ``idsync`` wrapper that runs a
command as the service does, and the example configuration where ``/etc/idsync`` has none.

Every path is under ``--root`` (default ``/``), so the same command fills a staging
directory or an image. Existing files are kept unless ``--force``; configuration files
are never replaced."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

__all__ = ["install_files", "register"]

_WRAPPER = """#!/bin/sh
# idsync as the service sees things: its user, credentials and state (idsync install-files).
# The unit's UMask: the store and status file the command writes are not world-readable.
umask 0077
exec runuser -u idsync -- env CREDENTIALS_DIRECTORY=/etc/idsync/credentials IDSYNC_STATE_DIR=/var/lib/idsync \\
  IDSYNC_STATUS_FILE=/var/lib/idsync/status.json {idsync} -p /etc/idsync "$@"
"""
_SHIPPED_IDSYNC = "/opt/idsync/bin/idsync"


def register(sub: argparse._SubParsersAction, root_parser: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("install-files", help="install the systemd unit, sysusers.d and tmpfiles.d entries, man page, "
                       "completion, wrapper and example configuration from this installation")
    p.add_argument("--root", type=Path, default=Path("/"), help="install under this directory (default /)")
    p.add_argument("--force", action="store_true", help="replace an existing unit, man page, completion or wrapper "
                   "(configuration files are never replaced)")
    p.set_defaults(handler=lambda args, _dir: _report(install_files(args.root, root_parser, force=args.force)))


def _report(written: list[tuple[str, Path]]) -> int:
    for what, path in written:
        print(f"{what:<8} {path}")
    return 0


def _share() -> Traversable:
    return resources.files("idsync") / "share"


def install_files(root: Path, parser: argparse.ArgumentParser, *, force: bool = False) -> list[tuple[str, Path]]:
    """Write the files under ``root``; what was done to each (``wrote``, ``kept``)."""
    from idsync.cli.docs import bash_completion, manpage

    idsync = str(Path(sys.executable).parent / "idsync")
    share = _share()
    unit = (share / "systemd" / "idsync.service").read_text(encoding="utf-8").replace(_SHIPPED_IDSYNC, idsync)
    files: list[tuple[str, str, int, bool]] = [  # path, text, mode, replaceable
        ("etc/systemd/system/idsync.service", unit, 0o644, True),
        ("etc/sysusers.d/idsync.conf", (share / "systemd" / "idsync.sysusers").read_text(encoding="utf-8"), 0o644,
         True),
        ("etc/tmpfiles.d/idsync.conf", (share / "systemd" / "idsync.tmpfiles").read_text(encoding="utf-8"), 0o644,
         True),
        ("usr/local/share/man/man1/idsync.1", manpage(parser), 0o644, True),
        ("etc/bash_completion.d/idsync", bash_completion(parser), 0o644, True),
        ("usr/local/bin/idsync", _WRAPPER.format(idsync=idsync), 0o755, True),
    ]
    for folder in ("conf", "jobs.d"):
        for item in sorted((share / folder).iterdir(), key=lambda i: i.name):
            if item.is_file():
                files.append((f"etc/idsync/{folder}/{item.name}", item.read_text(encoding="utf-8"), 0o640, False))
    done: list[tuple[str, Path]] = []
    for relative, text, mode, replaceable in files:
        path = root / relative
        if path.exists() and not (force and replaceable):
            done.append(("kept", path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        done.append(("wrote", path))
    return done
