"""Users pushed because a role or an assignment changed without their own object changing.

A user's ``effectiveRoles`` and ``effectiveAssignments`` are computed when it is read
(``store/roles.py``), so a change to a role (its members, assignments, condition or
``temporalConstraints``) or to an assignment (its attributes) changes what the user's
mappings project without touching the user. ``RoleFanout`` pushes, by implicit
synchronization, every member of a changed role (of a role whose members alone
changed, those added, removed or whose grant's ``_refProperties`` changed: a window
given or taken away) and every holder of a changed assignment, whoever changed it:
the API, the command line, a script, or a recon into the store (``sync/recon.py``).
What a push unassigns is what the user's ``lastSync`` records (``sync/assignments.py``);
for a user with no record yet, the push of a changed assignment is told the user as it
was before (its old assignment), so the attributes it no longer sets are unassigned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from idsync.config.managed import ManagedType
from idsync.config.project import Project
from idsync.resource import Obj, WriteOp, WriteResult
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.relationships import changed_refs
from idsync.sync.implicit import ImplicitSync, PushResult

__all__ = ["RoleFanout", "WrittenRoles"]

_PAGE = 500  # the users read at once to be pushed


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

    @property
    def watches(self) -> bool:
        """Whether a change of this type pushes users (a role or assignment type, with users' mappings)."""
        model, sync = self._model, self._sync
        return model is not None and sync is not None and self._users is not None \
            and bool(sync.mappings(self._users.name)) \
            and self._schema.name in (model.role.name, model.assignment.name if model.assignment else "")

    def push(self, before: Obj | None, after: Obj | None, done: Sequence[PushResult] = ()) -> list[PushResult]:
        """Push the users of ``before`` and ``after`` (the role or assignment), but those ``done``."""
        model, users, sync = self._model, self._users, self._sync
        if model is None or users is None or sync is None or not sync.mappings(users.name):
            return []
        if self._schema.name == model.role.name:
            members = f"managed/{model.user}"
            old, new = (before or {}).get(model.members), (after or {}).get(model.members)
            # Only the members that came, went or whose grant changed (its window), when nothing
            # else of the role changed.
            ids = _ids([{"_ref": ref} for ref in changed_refs(old, new)], members) \
                if _same_but(before, after, model.members) else _ids(old, members) | _ids(new, members)
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
        # A page of users at a time: a role may have a million members.
        for start in range(0, len(ids), _PAGE):
            for uid, user in self._users.get_many(ids[start:start + _PAGE]).items():
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


def _same_but(before: Obj | None, after: Obj | None, members: str) -> bool:
    if before is None or after is None:
        return False
    ignored = (members, "_rev")
    return {k: v for k, v in before.items() if k not in ignored} == {k: v for k, v in after.items() if k not in ignored}


class WrittenRoles:
    """The roles or assignments a recon writes into the store: their users are pushed once
    each page is committed, as for a change made through the API."""

    def __init__(self, fanout: RoleFanout, resource: ManagedResource) -> None:
        self._fanout = fanout
        self._resource = resource
        self._before: dict[str, Obj] = {}

    def before(self, ops: Sequence[WriteOp]) -> None:
        """Read the objects ``ops`` change or delete, before they are written."""
        ids = [op.id for op in ops if op.kind in ("update", "delete") and op.id]
        self._before = self._resource.get_many(ids) if ids else {}

    def after(self, results: Sequence[WriteResult]) -> list[PushResult]:
        """Push the users of the objects written (``results``, committed)."""
        ids = [r.id for r in results if r.ok and r.id]
        after = self._resource.get_many(ids) if ids else {}
        pushes: list[PushResult] = []
        for object_id in dict.fromkeys([*ids, *self._before]):
            pushes.extend(self._fanout.push(self._before.get(object_id), after.get(object_id), pushes))
        self._before = {}
        return pushes
