"""Users pushed because their roles or assignments changed without their own object changing.

A user's ``effectiveRoles`` and ``effectiveAssignments`` are computed when it is read
(``store/roles.py``), so a change to a role (its assignments, condition or
``temporalConstraints``) or to an assignment (its attributes) changes what the user's
mappings project without touching the user. ``RoleFanout`` pushes, by implicit
synchronization, every member of a changed role and every holder of a changed
assignment; for an assignment, the push is told the user as it was before (its old
assignment), so the attributes it no longer sets are unassigned (``sync/assignments.py``).

A role or grant whose time window opens or closes changes the same way, with no write
at all: ``TemporalRoles.push_due`` pushes the users of every window edge passed since it
was last called. ``idsync run`` calls it every ``EDGE_CHECK_SECONDS`` (``daemon/service.py``);
a window that opened or closed while the daemon was down is applied by the next recon.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from idsync.config import roles as roles_config
from idsync.config.managed import ManagedType
from idsync.config.project import Project
from idsync.resource import Obj
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.roles import due
from idsync.sync.implicit import ImplicitSync, PushResult

__all__ = ["EDGE_CHECK_SECONDS", "RoleFanout", "TemporalRoles"]

EDGE_CHECK_SECONDS = 10


def _ids(value: Any, collection: str) -> set[str]:
    items = value if isinstance(value, list) else [value]
    return {i["_ref"].rpartition("/")[2] for i in items
            if isinstance(i, Mapping) and isinstance(i.get("_ref"), str) and i["_ref"].startswith(collection + "/")}


class RoleFanout:
    """Pushes the users of a changed role or assignment."""

    def __init__(self, project: Project, store: Store, schema: ManagedType, sync: ImplicitSync | None) -> None:
        self._store = store
        self._sync = sync
        model = project.managed.types["role"].roles if "role" in project.managed.types else None
        self._model = model
        self._schema = schema
        self._users = ManagedResource(store, project.managed.types[model.user], with_secrets=True) \
            if model is not None else None

    def push(self, before: Obj | None, after: Obj | None, done: Sequence[PushResult] = ()) -> list[PushResult]:
        """Push the users of ``before`` and ``after`` (the role or assignment), but those ``done``."""
        model, users, sync = self._model, self._users, self._sync
        if model is None or users is None or sync is None or not sync.mappings(users.name):
            return []
        if self._schema.name == model.role.name:
            members = f"managed/{model.user}"
            ids = _ids((before or {}).get(model.members), members) | _ids((after or {}).get(model.members), members)
            return self._push(sorted(ids - _pushed(done, users.name)), None)
        if model.assignment is not None and self._schema.name == model.assignment.name and model.assignments:
            reverse = model.role.relationships[model.assignments].reverse or "roles"
            roles = _ids((before or {}).get(reverse), f"managed/{model.role.name}") | \
                _ids((after or {}).get(reverse), f"managed/{model.role.name}")
            found = ManagedResource(self._store, model.role).get_many(sorted(roles), [model.members])
            ids = set().union(*(_ids(r.get(model.members), f"managed/{model.user}") for r in found.values()))
            return self._push(sorted(ids - _pushed(done, users.name)), before)
        return []

    def _push(self, ids: Sequence[str], old: Obj | None) -> list[PushResult]:
        assert self._users is not None and self._sync is not None and self._model is not None
        name = self._model.effective_assignments
        pushes: list[PushResult] = []
        for uid, user in self._users.get_many(ids).items():
            before = None
            if old is not None and name:
                held = [a for a in user.get(name) or [] if a.get("_id") != old.get("_id")]
                before = {**user, name: [*held, {k: v for k, v in old.items() if k in _ASSIGNMENT_KEYS}]}
            pushes.extend(self._sync.push(self._users.name, uid, user, before=before))
        return pushes


def _pushed(done: Sequence[PushResult], resource: str) -> set[str]:
    del resource  # pushes of other resources name other ids
    return {p.source_id for p in done}


_ASSIGNMENT_KEYS = ("_id", "_rev", "name", "description", "mapping", "attributes", "linkQualifiers")


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
