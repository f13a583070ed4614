"""The API served for a test: the daemon's own ``ApiServer`` on a free port in a
thread with its own event loop, over a real project and store, with one account
(``openidm-admin``, the seeds' credentials)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from idsync.api import ApiContext, ApiServer
from idsync.config.project import load_project
from idsync.settings import ApiSettings
from idsync.store.database import Store
from idsync_dev.slapd import Slapd

ADMIN = {"X-OpenIDM-Username": "openidm-admin", "X-OpenIDM-Password": "openidm-admin",
         "Accept-API-Version": "resource=1.0"}
# The tests' accounts have argon2id hashes at argon2's smallest costs. The API reads the costs
# from each hash, so it checks these as it checks any, in microseconds where a hash of
# ``idsync api hash-password`` takes a tenth of a second of CPU: each API server of a test
# would pay that again for its first requests and its check against the sample passwords.
_CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def account_hash(password: str) -> str:
    """An argon2id hash of ``password`` for a test's ``[api.accounts]``, quick to check."""
    return _CHEAP.hash(password)


ADMIN_HASH = account_hash("openidm-admin")


def add_users(slapd: Slapd, subtree: str, count: int) -> None:
    """``count`` plain inetOrgPerson entries ``uid=bulkN`` under ``subtree``: a recon long enough to watch."""
    slapd.add_ldif("\n".join(f"dn: uid=bulk{i},{subtree}\nobjectClass: inetOrgPerson\nuid: bulk{i}\n"
                             f"cn: Bulk {i}\nsn: B{i}\nmail: bulk{i}@example.com\n" for i in range(count)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(project_dir: Path, *, node: str | None = None, **settings: object) -> Iterator[int]:
    """The API over ``project_dir`` with ``[api]`` ``settings`` (as cluster node ``node``),
    served until the block ends; yields its port."""
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    defaults: dict[str, object] = {"max_failed_logins": 5, "port": free_port(),
                                   "accounts": {"openidm-admin": ADMIN_HASH}}
    api_settings = ApiSettings(**{**defaults, **settings})  # type: ignore[arg-type]
    server = ApiServer(ApiContext(project=lambda: project, store=store, settings=api_settings, node=node),
                       config_file="idsync.toml")
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve_forever() -> None:
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    assert started.wait(10), "the API did not start"
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not loop.is_running():
            # Closed here, not by the garbage collector later, whose close finds its
            # descriptors gone and warns in whatever test happens to run then.
            loop.close()
        store.close()


@contextmanager
def serve(project_dir: Path, *, node: str | None = None, **settings: object) -> Iterator[httpx.Client]:
    """A client for the API over ``project_dir`` (as cluster node ``node``), served until the block ends."""
    with running(project_dir, node=node, **settings) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
