"""Every change made in the console, recorded with the account that made it: a log
event (``console.*``, with ``user``) and an audit entry of its own.

The audit entry has no run; its ``mapping`` is ``console``, its ``source_id`` the
thing changed (a managed object's id, ``job/NAME``, ``mapping/NAME``), its
``action`` what was done, and its ``changes`` the account and the values set, so
an object's history in the console shows who edited it beside what synchronization
did to it.
"""

from __future__ import annotations

from typing import Any

import structlog

from idsync.api.context import ApiContext
from idsync.store.runs import RunStore

__all__ = ["CONSOLE_AUDIT", "record"]

log = structlog.get_logger("idsync.console")

CONSOLE_AUDIT = "console"


def record(ctx: ApiContext, event: str, *, user: str, action: str, subject: str, message: str,
           **values: Any) -> None:
    """Log ``event`` and write its audit entry (from a worker thread: it writes to the store)."""
    log.info(event, user=user, **values)
    with ctx.store.begin() as conn:
        RunStore(ctx.store).audit(conn, [{
            "run_id": None, "mapping": CONSOLE_AUDIT, "situation": None, "action": action[:16],
            "source_id": subject, "target_id": None, "status": "SUCCESS", "message": f"{user}: {message}",
            "changes": {"user": user, **{k: v for k, v in values.items() if _plain(v)}},
        }])


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list)
