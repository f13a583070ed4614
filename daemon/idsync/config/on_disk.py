"""The configuration files as they are on disk: a signature of each, from ``stat`` alone.

The daemon takes one at each (re)load and compares a fresh one every few seconds to tell
that a file was changed, added or removed (``daemon/watch.py``); ``idsync jobs`` and
``idsync status`` compare one with what the running daemon wrote in the status file it
loaded. No file is read: a signature is the modification time (ns), the size and the
inode, so an editor's save (a rewrite, or a new file renamed over the old one) changes it.

The files are those a load reads: ``conf/*.json``, ``conf/idsync.toml``, ``jobs.d/*.toml``,
and the scripts of ``script/`` (PingIDM's place for the ``file`` a script names), at any
depth. Hidden names are left out (editors' swap files, a Kubernetes ConfigMap's ``..data``,
whose links are followed), and so are names that end otherwise (``sync.json~``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["changed_files", "config_files"]

# (folder under the project directory, the endings read there, whether its subfolders are)
_WATCHED = (("conf", (".json", ".toml"), False), ("jobs.d", (".toml",), False), ("script", (".js",), True))


def config_files(project_dir: Path) -> dict[str, str]:
    """Path relative to ``project_dir`` -> signature, of every configuration file there now."""
    found: dict[str, str] = {}
    for folder, endings, deep in _WATCHED:
        for path, name in _files(project_dir / folder, folder, endings, deep):
            try:
                st = os.stat(path)  # a link is followed: its target is what a load reads
            except OSError:
                continue  # removed between the listing and now
            found[name] = f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"
    return dict(sorted(found.items()))


def changed_files(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The files changed, added or removed from ``before`` to ``after``, by name."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def _files(folder: Path, name: str, endings: tuple[str, ...], deep: bool,
           seen: set[tuple[int, int]] | None = None) -> Iterator[tuple[str, str]]:
    """The files of ``folder`` (and its subfolders when ``deep``), links to folders followed
    as a load follows them (``script/lib -> ../shared/lib``), each folder once: no loop."""
    seen = set() if seen is None else seen
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        entries = list(os.scandir(folder))
    except OSError:
        return  # no such folder (a project without jobs.d/), or not one
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.name.endswith(endings) and entry.is_file():
            yield entry.path, f"{name}/{entry.name}"
        elif deep and entry.is_dir():
            yield from _files(Path(entry.path), f"{name}/{entry.name}", endings, deep, seen)
