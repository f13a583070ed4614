"""The daemon's watch on its configuration files: a reload, as SIGHUP's, once they changed.

PingIDM applies an edited ``conf/`` file at once; an administrator following its
documentation edits a file and expects the change to be in force. So the daemon looks at
the files it loads (``config/on_disk.py``: a ``stat`` of each, no read) every ``POLL``
seconds and, when they differ from those of its last load, reloads once they have been
left alone for ``QUIET`` seconds: an editor's several writes, or a deploy of many files,
make one reload, not a flurry. The reload is SIGHUP's own, so a broken file is reported
and the rest applied in the same way.

Every load (start, SIGHUP, the API's reload, this watch's) takes the files' signatures
*before* reading them: a file written while the load reads is seen changed by the next
poll. A load that fails still counts as having seen the files, or a reload that fails on
them would be tried again every second. ``[daemon] watch_config = false`` stops the
polls (not the signatures: ``idsync jobs`` still tells a file the daemon has not loaded).

``ConfigWatch.poll`` decides from the signatures alone, so its tests need no clock or files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import structlog

from idsync.config.on_disk import changed_files, config_files
from idsync.errors import internal_message
from idsync.store.database import utcnow

__all__ = ["POLL", "QUIET", "ConfigWatch"]

log = structlog.get_logger("idsync.daemon")

POLL = 2.0  # seconds between looks at the files while nothing changed
QUIET = 1.0  # seconds the changed files must stay as they are before the reload
_SETTLING = 0.5  # seconds between looks while they settle


class ConfigWatch:
    """The files of the daemon's last load, and whether those on disk now call for a reload."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self.files: dict[str, str] = {}
        self.loaded_at: dt.datetime | None = None
        self._seen: dict[str, str] | None = None  # changed files as the last poll found them
        self._seen_at = 0.0

    def loading(self) -> None:
        """A load is about to read the files: what they are now is what it loads."""
        self.files = config_files(self.project_dir)
        self.loaded_at = utcnow()
        self._seen = None

    def poll(self, now: float, files: dict[str, str]) -> list[str]:
        """The files changed since the last load, once they stayed as they are for ``QUIET``
        seconds (``now`` on a monotonic clock); none otherwise."""
        if files == self.files:
            self._seen = None
            return []
        if files != self._seen:
            self._seen, self._seen_at = files, now
            return []
        if now - self._seen_at < QUIET:
            return []
        return changed_files(self.files, files)

    @property
    def settling(self) -> bool:
        return self._seen is not None

    async def run(self, enabled: Callable[[], bool], reload: Callable[[list[str]], None]) -> None:
        """Poll while ``enabled()`` (the setting, read anew after each reload), calling
        ``reload(files)`` on the event loop when the changed files have settled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SETTLING if self.settling else POLL)
            if not enabled():
                self._seen = None
                continue
            try:
                # A slow file system (NFS) must not hold up the loop, and with it systemd's watchdog.
                files = await asyncio.to_thread(config_files, self.project_dir)
                changed = self.poll(loop.time(), files)
                if changed:
                    reload(changed)
            except Exception as exc:  # a watch that died would stop reloads unseen
                log.warning("daemon.watch_failed", error=internal_message(exc), exc_info=True)
