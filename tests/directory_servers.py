"""The Samba AD DC and the 389 DS instance the suite runs against, started in the
background as soon as collection shows a test wants one (``conftest``'s
``pytest_collection_finish``): provisioning takes seconds, and other tests run
meanwhile. Each server is started once per test session (once per xdist worker)
and shared; each test works in an OU of its own.

A server that cannot run here (not installed, not root) skips its tests with the
reason; under ``CI=true`` it fails them instead, as ``dbs`` does for databases."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import pytest
from idsync.resource import ChangeSource
from idsync_dev.dirsrv import DirSrv
from idsync_dev.samba_ad import SambaDC

T = TypeVar("T", SambaDC, DirSrv)

__all__ = ["BackgroundServer", "changes_since", "dirsrv_server", "samba_server", "unusable"]


def unusable(what: str, why: str) -> None:
    """Skip, or under CI=true fail, saying which server and why it cannot run."""
    message = f"{what} cannot run here: {why}"
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: a peer the suite expects must be there)", pytrace=False)
    pytest.skip(message)


def changes_since(resource: ChangeSource, token: str, fields: list[str]) -> tuple[dict[str, Any], str, str, bool]:
    """What liveSync reads from ``token``: id -> the object now (None: deleted), the new
    token, the feed's method and whether it reports deletes. A read that claims to list
    every entry (a present phase) fails: these are deltas."""
    feed = resource.read_changes(token, fields, 100)
    found: dict[str, Any] = {}
    last = token
    for batch in feed.batches:
        found.update({c.id: c.obj for c in batch.changes})
        last = batch.token or last
    assert feed.complete_ids is None, "a delta read as a present phase would delete every unchanged object"
    return found, last, feed.method, feed.reports_deletes


class BackgroundServer(Generic[T]):
    """One server, started on a thread by ``begin()`` and handed out by ``get()``."""

    def __init__(self, what: str, make: Callable[[], T], unavailable: Callable[[], str | None]) -> None:
        self.what = what
        self._make = make
        self._unavailable = unavailable
        self._future: Future[T] | None = None
        self._lock = threading.Lock()
        self.seconds = 0.0  # from begin() to running

    def begin(self) -> None:
        """Start the server on a thread, unless it cannot run here or is already starting."""
        with self._lock:
            if self._future is not None or self._unavailable() is not None:
                return
            future: Future[T] = Future()
            self._future = future

        def run() -> None:
            started = time.monotonic()
            try:
                server = self._make()
                server.start()
            except BaseException as error:  # noqa: BLE001 - handed to the test that waits for it
                future.set_exception(error)
                return
            self.seconds = time.monotonic() - started
            future.set_result(server)

        threading.Thread(target=run, name=f"start {self.what}", daemon=True).start()

    def get(self) -> T:
        """The running server (waiting for it); skips or fails the test when it cannot run."""
        why = self._unavailable()
        if why is not None:
            unusable(self.what, why)
        self.begin()
        assert self._future is not None
        try:
            # Within the suite's 300-second test timeout: Samba's first provisioning on a
            # machine (then cached) takes two minutes on a busy one.
            return self._future.result(timeout=280)
        except TimeoutError:
            unusable(self.what, "it did not start within 280 s")
            raise  # unreachable: unusable() skips or fails
        except Exception as error:  # any failure to start means: not usable here
            unusable(self.what, str(error).strip()[:1000] or repr(error))
            raise  # unreachable: unusable() skips or fails

    def stop(self) -> None:
        """Stop the server if it was started (waiting for a start still under way)."""
        future, self._future = self._future, None
        if future is None:
            return
        try:
            server = future.result(timeout=180)
        except Exception:  # noqa: BLE001 - it never ran: nothing to stop
            return
        server.stop()


samba_server: BackgroundServer[SambaDC] = BackgroundServer("Samba AD DC", SambaDC, SambaDC.unavailable)
dirsrv_server: BackgroundServer[DirSrv] = BackgroundServer("389 Directory Server", DirSrv, DirSrv.unavailable)
