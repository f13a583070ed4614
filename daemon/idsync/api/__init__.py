"""The HTTP API in PingIDM's shape under ``/openidm/`` (``docs/api.md``)."""

from __future__ import annotations

from idsync.api.app import ApiServer, create_app
from idsync.api.auth import Accounts, hash_password, load_accounts
from idsync.api.context import ApiContext

__all__ = ["Accounts", "ApiContext", "ApiServer", "create_app", "hash_password", "load_accounts"]
