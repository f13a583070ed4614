"""A Debian 12 (bookworm) root filesystem for following docs/install.md, made once.

The root is debootstrap's default variant (the packages of priority required and
important: what Debian 12 installed without any task has, systemd included, Python
not) plus the packages step 1 of docs/install.md installs with ``apt-get``, run as
written. Beside it, a wheelhouse of idsync's runtime dependencies (``pip wheel`` in
that root, constrained by requirements.lock), so that step 1's ``pip install`` runs
offline (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``) and the same on every run.

Both live in a cache outside the checkout, named by a hash of what makes them (the
suite, the mirror, the apt-get line; the requirements and constraints), so a change
to any of those builds afresh and nothing else does::

    /var/cache/idsync-tests/        (IDSYNC_TEST_CACHE)
        bookworm-KEY/rootfs         the root; never written after it is complete
        bookworm-KEY/complete       written last: a directory without it is unfinished
        wheelhouse-KEY/complete     the wheels beside it
        lock                        one build at a time (xdist workers, a background build)
        build.log                   output of the background builds

The first build takes two or three minutes (the mirror, then dpkg); ``start_background``
begins it while the rest of the suite runs. Entries not used for 14 days are removed
when another is built. ``python -m idsync_dev.debian_root REPO`` builds both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from idsync_dev.chroot import Chroot, host_env

__all__ = ["CACHE", "DebianRoot", "DocumentedInstall", "apt_config", "ensure", "start_background", "unavailable"]

CACHE = Path(os.environ.get("IDSYNC_TEST_CACHE", "/var/cache/idsync-tests"))
SUITE = "bookworm"
MIRROR = os.environ.get("IDSYNC_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
_UNUSED_DAYS = 14
_HOST_CERTS = Path("/etc/ssl/certs")


@dataclass(frozen=True)
class DocumentedInstall:
    """The shell block of docs/install.md "Install, step by step": step number -> its
    command lines (comments and blank lines dropped)."""

    steps: dict[int, list[str]]
    extras: str  # the extras of step 1's pip install, "postgresql"

    @classmethod
    def read(cls, repo: Path) -> DocumentedInstall:
        text = (repo / "docs" / "install.md").read_text(encoding="utf-8")
        section = text.split("## Install, step by step", 1)[1]
        block = section.split("```sh\n", 1)[1].split("```", 1)[0]
        steps: dict[int, list[str]] = {}
        current = 0
        for line in block.splitlines():
            heading = re.match(r"# (\d+)\. ", line)
            if heading:
                current = int(heading.group(1))
                steps[current] = []
            elif line.strip() and not line.lstrip().startswith("#"):
                steps.setdefault(current, []).append(line)
        pip = cls._line(steps, 1, "pip install")
        extras = re.search(r"\.whl\[([\w,-]+)\]", pip)
        return cls(steps, extras.group(1) if extras else "")

    @staticmethod
    def _line(steps: dict[int, list[str]], number: int, holding: str) -> str:
        found = [line for line in steps.get(number, []) if holding in line]
        if not found:
            raise ValueError(f"docs/install.md: step {number} has no line with {holding!r}")
        return found[0]

    @property
    def apt_line(self) -> str:
        """Step 1's ``apt-get install`` line: what a stock Debian 12 lacks."""
        return self._line(self.steps, 1, "apt-get install")

    def requirements(self, repo: Path) -> list[str]:
        """idsync's runtime requirements with the documented extras, from pyproject.toml."""
        project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        wanted = [e for e in self.extras.split(",") if e]
        return [*project["dependencies"], *(r for e in wanted for r in project["optional-dependencies"][e])]


@dataclass(frozen=True)
class DebianRoot:
    """A complete cached root and wheelhouse."""

    rootfs: Path
    wheelhouse: Path


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _paths(repo: Path) -> tuple[Path, Path, DocumentedInstall]:
    install = DocumentedInstall.read(repo)
    root_key = _key(SUITE, MIRROR, "debootstrap default variant, apt caches kept", install.apt_line)
    constraints = (repo / "requirements.lock").read_text(encoding="utf-8")
    wheel_key = _key(root_key, *install.requirements(repo), constraints)
    return CACHE / f"{SUITE}-{root_key}", CACHE / f"wheelhouse-{wheel_key}", install


def _complete(*directories: Path) -> bool:
    return all((d / "complete").is_file() for d in directories)


def unavailable(repo: Path) -> str | None:
    """Why the root cannot be had on this machine, or None."""
    if os.geteuid() != 0:
        return "following the install steps in a Debian 12 chroot needs root (debootstrap, mount namespaces)"
    path = host_env()["PATH"]
    for tool in ("unshare", "chroot"):
        if shutil.which(tool, path=path) is None:
            return f"{tool} is not installed (Debian package util-linux, coreutils)"
    if _complete(*_paths(repo)[:2]):
        return None
    if shutil.which("debootstrap", path=path) is None:
        return "debootstrap is not installed (make deps installs it)"
    try:
        urllib.request.urlopen(f"{MIRROR}/dists/{SUITE}/Release", timeout=10).close()
    except OSError as exc:
        return f"the Debian mirror {MIRROR} does not answer ({exc}); set IDSYNC_TEST_DEBIAN_MIRROR"
    return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure(repo: Path) -> DebianRoot:
    """The root and wheelhouse for this checkout, built first if they are not cached
    (waiting for a build another process has begun)."""
    root, wheels, install = _paths(repo)
    with _locked():
        if not _complete(root, wheels):
            _prune()
        if not _complete(root):
            _build_root(root, install.apt_line)
        if not _complete(wheels):
            _build_wheelhouse(wheels, root / "rootfs", install.requirements(repo), repo / "requirements.lock")
    for directory in (root, wheels):
        os.utime(directory / "complete")
    return DebianRoot(root / "rootfs", wheels)


def start_background(repo: Path) -> subprocess.Popen[bytes] | None:
    """Begin building what ``ensure`` would build, in a process of its own (its output
    in ``build.log``); None when everything is cached or cannot be built here."""
    try:
        if unavailable(repo) is not None or _complete(*_paths(repo)[:2]):
            return None
    except (OSError, ValueError, LookupError):
        return None  # ensure() reports it, in the test that needs the root
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    try:  # a failure here is ensure()'s to report, with the test that needs the root
        CACHE.mkdir(parents=True, exist_ok=True)
        with (CACHE / "lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # a build is under way
            fcntl.flock(lock, fcntl.LOCK_UN)
        log = (CACHE / "build.log").open("ab")
    except OSError:
        return None
    with log:
        return subprocess.Popen([sys.executable, "-m", "idsync_dev.debian_root", str(repo)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _run(args: list[str], what: str, timeout: float) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=host_env())
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-3000:] or done.stdout[-3000:]}")


def apt_config(directory: Path) -> Path:
    """``directory`` holding ``assume-yes.conf``, for ``APT_CONFIG``: apt-get asks before
    installing, and an administrator answers yes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "assume-yes.conf").write_text('APT::Get::Assume-Yes "true";\n')
    return directory


def _build_root(final: Path, apt_line: str) -> None:
    started = time.monotonic()
    partial = final.with_name(f"{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    rootfs = partial / "rootfs"
    # In a mount namespace of its own: debootstrap mounts /proc and /sys in the target,
    # and a killed build must not leave them mounted on the host.
    _run(["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child",
          "debootstrap", SUITE, str(rootfs), MIRROR], "debootstrap", timeout=1800)
    apt = Chroot(rootfs, binds={"/run/idsync-apt": apt_config(partial / "apt")},
                 read_only=frozenset({"/run/idsync-apt"}))
    # The downloaded packages go; apt's package cache stays (else every run rebuilds it).
    apt.run(f"apt-get clean\n{apt_line}\nrm -f /var/cache/apt/archives/*.deb", timeout=900,
            env={"DEBIAN_FRONTEND": "noninteractive", "APT_CONFIG": "/run/idsync-apt/assume-yes.conf"})
    shutil.rmtree(partial / "apt")
    (partial / "complete").write_text(f"debootstrap {SUITE} {MIRROR}, then: {apt_line}\n"
                                      f"built in {time.monotonic() - started:.0f} s\n")
    partial.rename(final)


def _build_wheelhouse(final: Path, rootfs: Path, requirements: list[str], constraints: Path) -> None:
    """``pip wheel`` with the root's own Python, so the wheels fit it whatever Python
    the host has. The host's CA bundle and proxy settings are lent for the download."""
    partial = final.with_name(f"{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        binds = {"/run/wheelhouse": partial}
        env = {k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
        if (_HOST_CERTS / "ca-certificates.crt").is_file():
            binds["/run/host-certs"] = _HOST_CERTS
            env["PIP_CERT"] = "/run/host-certs/ca-certificates.crt"
        chroot = Chroot(rootfs, Path(scratch), binds=binds, read_only=frozenset({"/run/host-certs"}))
        chroot.host_path("/root").mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(constraints, chroot.host_path("/root/constraints.txt"))
        with contextlib.suppress(OSError):
            chroot.host_path("/etc").mkdir(exist_ok=True)
            shutil.copyfile("/etc/resolv.conf", chroot.host_path("/etc/resolv.conf"))
        wanted = " ".join(shlex.quote(r) for r in requirements)
        chroot.run("python3 -m venv /root/venv\n"
                   f"/root/venv/bin/pip wheel -q -w /run/wheelhouse -c /root/constraints.txt {wanted}",
                   env=env, timeout=900)
    (partial / "complete").write_text("\n".join(requirements) + "\n")
    partial.rename(final)


def _prune() -> None:
    """Remove unfinished builds (the lock is held: nobody is building) and entries
    unused for a while."""
    if not CACHE.is_dir():
        return
    cutoff = time.time() - _UNUSED_DAYS * 86400
    for entry in CACHE.iterdir():
        marker = entry / "complete"
        if entry.is_dir() and (entry.name.endswith(".partial")
                               or (marker.is_file() and marker.stat().st_mtime < cutoff)):
            shutil.rmtree(entry, ignore_errors=True)


if __name__ == "__main__":
    built = ensure(Path(sys.argv[1]).resolve())
    print(f"{built.rootfs}\n{built.wheelhouse}")
