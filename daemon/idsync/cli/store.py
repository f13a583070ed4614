"""The store as commands that only read it open it: never created by them.

``idsync recon``, ``run``, ``run-job`` and the commands that change managed objects
create the store (and ``state/``) on first use. A command that only looks (``status``,
``jobs``, ``managed query``/``get``, ``prune``) must not: run in the wrong directory, it
would leave an empty store there and report "no runs recorded yet" as if all were
well. Instead it says where it looked, the project and the store, and exits 78
(EX_CONFIG), as for any other configuration that points nowhere.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from idsync.cli.closing import close_at_end
from idsync.errors import ConfigError, PeerUnavailable
from idsync.settings import Settings
from idsync.store.database import Store

__all__ = ["NoStoreYet", "open_existing_store", "require_project"]

_HINT = "give the project directory with -p PROJECT or IDSYNC_PROJECT"


class NoStoreYet(ConfigError):
    """The project is there, its store not yet: nothing has run."""


def require_project(settings: Settings) -> None:
    """A ConfigError naming the directory when it holds no ``conf/``."""
    if not settings.conf_dir.is_dir():
        raise ConfigError(str(settings.project_dir), "",
                          f"no idsync project here (no conf/ directory); {_HINT}")


def open_existing_store(settings: Settings) -> Store:
    """The project's store if it exists (schema upgraded as usual); a ConfigError otherwise."""
    require_project(settings)
    url = settings.store_url()
    where = f"project {settings.project_dir}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None  # Store.open says what is wrong with it
    if parsed is not None and parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not Path(database).is_file():
            raise NoStoreYet(str(settings.conf_dir / "idsync.toml"), "store.url",
                              f"{where}: no store at {database}: nothing has run here yet "
                              f"(`idsync recon MAPPING` or `idsync run` creates it), or state_dir/store.url "
                              f"points elsewhere; {_HINT}")
    store = close_at_end(Store.open(url, migrate=False))
    try:
        created = inspect(store.engine).has_table("alembic_version")
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise PeerUnavailable(f"store: cannot open the database: {first[0] if first else type(exc).__name__}") \
            from None
    if not created:
        raise NoStoreYet(str(settings.conf_dir / "idsync.toml"), "store.url",
                         f"{where}: the store {store.describe()} holds no idsync tables: nothing has run "
                          "with it yet (`idsync recon MAPPING` or `idsync run` creates them)")
    store.migrate()
    return store
