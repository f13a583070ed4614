"""Users pushed because their roles' or grants' time windows opened or closed.

A user's ``effectiveRoles`` and ``effectiveAssignments`` are computed when it is read
(``store/roles.py``); a changed role or assignment pushes its users
(``sync/role_fanout.py``). A role or grant whose time window opens or closes changes
the same way, with no write at all: ``TemporalRoles.push_due`` pushes the users of
every window edge passed since it was last called. ``idsync run`` calls it every
``EDGE_CHECK_SECONDS`` (``daemon/service.py``); a window that opened or closed while
the daemon was down is applied by the next recon. A grant whose window is changed,
given or taken away is no edge passed with time: the change pushes its user itself
(``relationships.py``, ``RoleFanout``).
"""

from __future__ import annotations

import datetime as dt

from idsync.config import roles as roles_config
from idsync.config.project import Project
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.roles import due
from idsync.sync.implicit import ImplicitSync, PushResult
from idsync.sync.role_fanout import RoleFanout

__all__ = ["EDGE_CHECK_SECONDS", "RoleFanout", "TemporalRoles"]

EDGE_CHECK_SECONDS = 10


class TemporalRoles:
    """Pushes the users whose roles' or grants' windows opened or closed."""

    def __init__(self, project: Project, store: Store, sync: ImplicitSync, since: dt.datetime | None = None) -> None:
        self._project = project
        self._store = store
        self._sync = sync
        self.checked = since or roles_config.now()

    def push_due(self, until: dt.datetime | None = None) -> list[PushResult]:
        """Push the users of every window edge after the last call and up to ``until`` (now)."""
        types = self._project.managed.types
        model = types["role"].roles if "role" in types else None
        until = until or roles_config.now()
        since, self.checked = self.checked, until
        if model is None or until <= since:
            return []
        users = ManagedResource(self._store, types[model.user], with_secrets=True)
        if not self._sync.mappings(users.name):
            return []
        ids = due(self._store, model, since, until)
        return [p for uid, user in users.get_many(sorted(ids)).items()
                for p in self._sync.push(users.name, uid, user)]
