"""A project's stored liveSync tokens, read and replaced as a test needs (a server
restored from a backup, a token tampered with): straight in the store's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.tables import sync_tokens
from idsync.store.tokens import SourceState, SyncTokens
from sqlalchemy import update


def token_state(project: Path, source: str) -> SourceState | None:
    return SyncTokens(Store.open(load_project(project).settings.store_url())).get(source)


def replace_token(project: Path, source: str, token: str) -> None:
    store = Store.open(load_project(project).settings.store_url())
    with store.begin() as conn:
        conn.execute(update(sync_tokens).where(sync_tokens.c.source == source).values(token=token))


def tamper(project: Path, source: str, **changes: Any) -> None:
    """Replace keys of the stored (JSON) token."""
    state = token_state(project, source)
    assert state is not None and state.token is not None, "no token stored yet"
    replace_token(project, source, json.dumps({**json.loads(state.token), **changes}))
