"""What the liveSync tests of each kind of source share: a run of the engine in
process, the managed users it leaves, and the token stored for the source."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import structlog
from idsync.config.project import load_project
from idsync.config.source_fields import source_fields
from idsync.managed.router import run_livesync_scripted
from idsync.resource import Change, ChangeSource, QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.tokens import SyncTokens
from idsync.sync.livesync import LiveSyncOptions, LiveSyncResult, livesync_mappings

# What a token read by stamps (SCIM's, the store's) may hold that no read writes: a mark
# whose stamp is no date, or after the token's high-water mark, or whose time is no
# number, and a start after the high-water mark. Merged into a stored token.
FOREIGN_MARKS: list[dict[str, Any]] = [
    {"mark": {"stamp": "yesterday", "ended": 1.0}},
    {"mark": {"stamp": "2026-01-01T00:00:00.000000Z", "ended": "an hour ago"}},
    {"mark": {"stamp": "2099-01-01T00:00:00.000000Z", "ended": 1.0}},
    {"start": "2099-01-01T00:00:00.000000Z"},
]


def live(project: Path, source: str, **options: Any) -> LiveSyncResult:
    """One liveSync run of ``source`` (``options`` as in ``LiveSyncOptions``), its scripts'
    ``openidm`` bound as every command and the daemon bind it."""
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        return run_livesync_scripted(loaded, store, source, LiveSyncOptions(**options))
    finally:
        store.close()


def read_changes(project: Path, source: str) -> list[Change]:
    """What a read of ``source`` from its stored token hands on, asking for what its mappings
    read as a run asks (the token left as it is)."""
    token = stored_token(project, source)
    assert token is not None, "no token stored yet"
    loaded = load_project(project)
    wanted = [source_fields(m) for m in livesync_mappings(loaded, source)]
    fields = sorted({f for w in wanted if w is not None for f in w}) if None not in wanted else None
    with closing(Store.open(loaded.settings.store_url())) as store, closing(Resources(loaded, store)) as resources:
        reader = resources.open(source)
        if isinstance(reader, ManagedResource):
            reader = reader.as_sync_source()
        assert isinstance(reader, ChangeSource)
        return [c for batch in reader.read_changes(token, fields, 1000).batches for c in batch.changes]


def managed_users(project: Path) -> dict[str, dict[str, Any]]:
    """The managed users by userName."""
    loaded = load_project(project)
    resource = Resources(loaded, Store.open(loaded.settings.store_url())).open("managed/user")
    return {u["userName"]: u for page in resource.pages(QuerySpec()) for u in page}


def live_after_expiry(project: Path, source: str, why: str) -> LiveSyncResult:
    """A run whose stored token the source no longer honours: it must log
    ``livesync.token_expired`` at warning, saying ``why``, and reconcile in full."""
    with structlog.testing.capture_logs() as logs:
        done = live(project, source)
    assert done.state == "SUCCESS", done.message
    assert done.full_recon and why in done.full_recon
    assert any(e["event"] == "livesync.token_expired" and e["log_level"] == "warning" and why in e["reason"]
               for e in logs)
    return done


def stored_token(project: Path, source: str) -> str | None:
    loaded = load_project(project)
    state = SyncTokens(Store.open(loaded.settings.store_url())).get(source)
    return state.token if state is not None else None


def set_token(project: Path, source: str, token: str) -> None:
    """Overwrite the stored token, as a restored database or another version would leave it."""
    from idsync.store.tables import sync_tokens
    from sqlalchemy import update

    store = Store.open(load_project(project).settings.store_url())
    with store.begin() as conn:
        conn.execute(update(sync_tokens).where(sync_tokens.c.source == source).values(token=token))
