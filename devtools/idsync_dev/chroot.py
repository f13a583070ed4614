"""Commands in a Debian root filesystem, as root, without touching the host's mounts.

``Chroot`` runs each command in a mount namespace of its own (``unshare --mount``):
there it mounts the root (an overlay over a read-only lower directory, or the directory
itself), ``/proc``, ``/sys``, ``/dev``, a fresh ``/run`` and any bind mounts asked for,
then ``chroot``s and runs the command in a login shell (``bash -l``, so ``PATH`` is what
root gets on that system). Every mount lives and dies with that one process: a failed or
killed command leaves nothing mounted, and there is nothing to clean up but the overlay's
upper directory. Files written by one command are in the upper directory for the next.

The network is the host's (no network namespace): a server the host started on loopback
is reachable from the chroot.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Chroot", "ChrootError", "host_env"]

# What a root shell on the system starts from; bash -l adds PATH from /etc/profile.
_BASE_ENV = {"HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "USER": "root", "LOGNAME": "root"}
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def host_env() -> dict[str, str]:
    """The environment for the host's tools (unshare, mount, chroot, debootstrap): this
    one, with the sbin directories a non-login PATH may lack."""
    return {**os.environ, "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:{_SBIN}"}


class ChrootError(RuntimeError):
    """A command in the chroot failed; the message carries the command and its output."""


@dataclass
class Chroot:
    """A root filesystem to run commands in.

    With ``scratch`` the root is an overlay: ``root`` is never written, changes land in
    ``scratch/upper``. Without it commands write ``root`` itself (building a root).
    ``binds`` maps a path inside the chroot to a host directory; ``read_only`` names the
    ones mounted read-only."""

    root: Path
    scratch: Path | None = None
    binds: Mapping[str, Path] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.scratch is not None:
            for sub in ("upper", "work", "merged"):
                (self.scratch / sub).mkdir(parents=True, exist_ok=True)

    @property
    def upper(self) -> Path:
        """The host directory holding what commands changed (overlay roots only)."""
        if self.scratch is None:
            raise ChrootError("this chroot writes its root directly: it has no upper directory")
        return self.scratch / "upper"

    def host_path(self, path: str) -> Path:
        """Where a path of the chroot is written on the host, between commands: the
        upper directory for an overlay (a file there replaces the lower one), else the root."""
        base = self.upper if self.scratch is not None else self.root
        return base / path.lstrip("/")

    def run(self, script: str, *, env: Mapping[str, str] | None = None, cwd: str = "/root", check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ``bash -l -e`` in the chroot, as root, in ``cwd``; with
        ``check`` a non-zero exit raises ``ChrootError`` with the output."""
        variables = {**_BASE_ENV, **(env or {})}
        inner = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items()),
                 "/bin/bash", "-l", "-e", "-c", f"cd {shlex.quote(cwd)}\n{script}"]
        command = ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child",
                   "sh", "-e", "-c", self._mounts() + ' exec chroot "$0" "$@"', str(self._target()), *inner]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, env=host_env())
        if check and done.returncode != 0:
            raise ChrootError(f"in the chroot, exit {done.returncode}:\n{script}\n--- stdout\n{done.stdout}"
                              f"--- stderr\n{done.stderr}")
        return done

    def _target(self) -> Path:
        return self.scratch / "merged" if self.scratch is not None else self.root

    def _mounts(self) -> str:
        target = self._target()
        q = shlex.quote
        lines = []
        if self.scratch is not None:
            options = f"lowerdir={self.root},upperdir={self.scratch / 'upper'},workdir={self.scratch / 'work'}"
            lines.append(f"mount -t overlay overlay -o {q(options)} {q(str(target))}")
        lines += [
            f"mount -t proc proc {q(str(target / 'proc'))}",
            f"mount --rbind /sys {q(str(target / 'sys'))}",
            f"mount --rbind /dev {q(str(target / 'dev'))}",
            f"mount -t tmpfs -o mode=0755 tmpfs {q(str(target / 'run'))}",
        ]
        for inside, host in sorted(self.binds.items()):
            where = q(str(target / inside.lstrip("/")))
            options = "bind,ro" if inside in self.read_only else "bind"
            lines += [f"mkdir -p {where}", f"mount -o {options} {q(str(host))} {where}"]
        return "\n".join(lines) + "\n"
