"""What the running daemon loaded, against the configuration files on disk now.

The daemon writes into the status file when it last loaded its configuration and the
signature of each file it read then (``configLoaded``, ``configFiles``). ``idsync jobs``
and ``idsync status`` read the files' signatures now (``config/on_disk.py``) and say which
the daemon has not loaded yet: an edited job file is shown as the file says, which is not
what runs until the daemon reloads (by itself within seconds, unless ``[daemon]
watch_config`` is off: then on SIGHUP).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.config.on_disk import changed_files, config_files
from idsync.settings import Settings
from idsync.status_file import read_status_file

__all__ = ["NotLoaded", "not_loaded"]


@dataclass(frozen=True)
class NotLoaded:
    """The files changed, added or removed since the running daemon's last load."""

    pid: int
    loaded: str
    watching: bool
    files: list[str]

    def has(self, project_dir: Path, file: str) -> bool:
        """Whether ``file`` (a job's, as its definition names it) is among them."""
        return _relative(project_dir, file) in self.files

    def message(self) -> str:
        when = dt.datetime.fromisoformat(self.loaded).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        how = ("it reloads by itself once they are left alone for a second" if self.watching else
               f"[daemon] watch_config is off: reload it with `systemctl reload idsync` (or kill -HUP {self.pid})")
        return (f"the running daemon (pid {self.pid}) has not loaded the change yet: "
                f"{', '.join(self.files)} changed on disk after its last load at {when}; {how}")

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "configLoaded": self.loaded, "watchConfig": self.watching, "notLoaded": self.files}


def not_loaded(settings: Settings) -> NotLoaded | None:
    """The changes the daemon this status file is of has not loaded; ``None`` when no
    daemon runs (or one that writes no signatures: an older version)."""
    daemon = read_status_file(settings.path(settings.status_file)).get("daemon")
    if not isinstance(daemon, dict) or daemon.get("state") != "running":
        return None
    pid, loaded, files = daemon.get("pid"), daemon.get("configLoaded"), daemon.get("configFiles")
    if not (isinstance(pid, int) and isinstance(loaded, str) and isinstance(files, dict)) or not _alive(pid):
        return None
    changed = changed_files(files, config_files(settings.project_dir))
    return NotLoaded(pid, loaded, bool(daemon.get("watchConfig")), changed) if changed else None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a daemon killed with -9 left "running" in its file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # the daemon's own user's: alive
    return True


def _relative(project_dir: Path, file: str) -> str:
    return Path(os.path.relpath(os.path.abspath(file), os.path.abspath(project_dir))).as_posix()
