"""The API served for a test: uvicorn in a thread on a free port, over a real
project and store, with one account (``openidm-admin``, the seeds' credentials)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from idsync.api import Accounts, ApiContext, create_app, hash_password
from idsync.config.project import load_project
from idsync.settings import ApiSettings
from idsync.store.database import Store

ADMIN = {"X-OpenIDM-Username": "openidm-admin", "X-OpenIDM-Password": "openidm-admin",
         "Accept-API-Version": "resource=1.0"}
ADMIN_HASH = hash_password("openidm-admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(project_dir: Path, **settings: object) -> Iterator[httpx.Client]:
    """A client for the API over ``project_dir``, served until the block ends."""
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    api_settings = ApiSettings(**{"max_failed_logins": 5, **settings})  # type: ignore[arg-type]
    ctx = ApiContext(project=lambda: project, store=store, settings=api_settings)
    app = create_app(ctx, Accounts({"openidm-admin": ADMIN_HASH}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(5)
        ctx.close()
        store.close()
