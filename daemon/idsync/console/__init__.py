"""The admin console: web pages under ``/admin/`` in ``idsync run`` (``docs/console.md``)."""

from __future__ import annotations

from idsync.console.app import create_console

__all__ = ["create_console"]
