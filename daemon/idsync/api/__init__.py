"""The HTTP API in PingIDM's shape under ``/openidm/`` (``docs/api.md``).

The names below load on first use: a command that needs one module of this
package (``idsync validate`` checks ``[api]``) must not pay for Starlette,
uvicorn and argon2 (half a second and 40 MB of a run's start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idsync.api.app import ApiServer, create_app
    from idsync.api.auth import Accounts, hash_password, load_accounts
    from idsync.api.context import ApiContext

__all__ = ["Accounts", "ApiContext", "ApiServer", "create_app", "hash_password", "load_accounts"]

_HOMES = {"ApiServer": "app", "create_app": "app", "Accounts": "auth", "hash_password": "auth",
          "load_accounts": "auth", "ApiContext": "context"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"idsync.api.{home}"), name)
