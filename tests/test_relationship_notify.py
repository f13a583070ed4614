"""PingIDM's relationship change notification in ``managed.json`` (``notify``,
``notifySelf``, ``notifyRelationships``: ``config/notify.py``): ``idsync validate``
names each one idsync does not follow where following it would make a difference (the
notified type's ``onUpdate``/``postUpdate``, or for ``notifyRelationships`` what its
objects compute on read), with what that means, and says nothing of one that changes
nothing (``notify: false``, a type without such scripts, the role model idsync pushes
itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from store_projects import store_project

from samples import idsync

_JS = "text/javascript"
_AUDIT = {"type": _JS, "source": "object.touched = true;"}
# PingIDM's stock onUpdate: it changes nothing for an object notified without a change.
_STOCK = {"type": _JS, "source": "require('onUpdateUser').preserveLastSync(object, oldObject, request);"}


def _members(notify: bool, *, notify_self: bool = False) -> dict[str, Any]:
    """A role's ``members``, as PingIDM 7 writes them (``notify`` on the users' collection)."""
    return {"type": "array", "notifyRelationships": ["members"], "items": {
        "type": "relationship", "reverseRelationship": True, "reversePropertyName": "roles", "validate": True,
        "notifySelf": notify_self,
        "resourceCollection": [{"path": "managed/user", "label": "User", "notify": notify}]}}


def _roles() -> dict[str, Any]:
    return {"type": "array", "items": {
        "type": "relationship", "reverseRelationship": True, "reversePropertyName": "members", "notifySelf": True,
        "resourceCollection": [{"path": "managed/role", "label": "Role"}]}}


def _project(tmp_path: Path, user: dict[str, Any], role: dict[str, Any],
             others: dict[str, Any] | None = None) -> Path:
    types = {"user": {"name": "user", **user, "schema": {"properties": {
        "userName": {"type": "string"}, "roles": _roles(), **user.pop("properties", {})}}},
        "role": {"name": "role", **role, "schema": {"properties": {
            "name": {"type": "string"}, **role.pop("properties", {})}}}, **(others or {})}
    return store_project(tmp_path, types, [])


def _warnings(project: Path) -> dict[str, str]:
    done = idsync(project, "validate", "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"], done.stdout
    return {w["key"]: w["problem"] for w in answer["warnings"] if "notif" in (w["key"] or "")}


def test_notify_and_notify_self_are_named_where_scripts_would_run(tmp_path: Path) -> None:
    """A role's ``members`` notifying the users (``notify: true``) and a user's ``roles``
    notifying the user (``notifySelf: true``), the user type having an ``onUpdate`` and a
    ``postUpdate``: each key is one warning saying those scripts do not run for a change
    from the other end, where the object is still pushed."""
    project = _project(tmp_path, {"onUpdate": _AUDIT, "postUpdate": _AUDIT},
                       {"properties": {"members": _members(True)}})
    found = _warnings(project)
    assert set(found) == {"objects[1].schema.properties.members.items.resourceCollection[0].notify",
                          "objects[0].schema.properties.roles.items.notifySelf"}, found
    notify = found["objects[1].schema.properties.members.items.resourceCollection[0].notify"]
    assert notify.startswith("not followed: PingIDM runs managed/user's onUpdate and postUpdate for the object a "
                             "reference of members names when the reference is added, changed or removed; idsync "
                             "pushes that object by implicit synchronization but runs its object scripts only when "
                             "it is written itself"), notify
    assert "managed/user's onUpdate and postUpdate for an object whose roles changes from the other end" in \
        found["objects[0].schema.properties.roles.items.notifySelf"]


def test_a_notification_that_changes_nothing_gets_no_word(tmp_path: Path) -> None:
    """``notify: false``, ``notify: true`` towards a type without update scripts (or with
    PingIDM's stock one only), and a role's ``notifyRelationships: ["members"]``, which
    idsync does itself (a changed role pushes its members): no warning."""
    # The user's roles still say notifySelf: true, and its onUpdate would run for that.
    assert set(_warnings(_project(tmp_path / "a", {"onUpdate": _AUDIT},
                                  {"properties": {"members": _members(False)}}))) == {
        "objects[0].schema.properties.roles.items.notifySelf"}
    assert _warnings(_project(tmp_path / "c", {}, {"properties": {"members": _members(True)}})) == {}
    assert _warnings(_project(tmp_path / "d", {"onUpdate": _STOCK},
                              {"properties": {"members": _members(True, notify_self=True)}})) == {}


def test_notify_relationships_beyond_the_role_model_is_named(tmp_path: Path) -> None:
    """An organization's ``name`` notifying its ``members`` (users whose ``orgName`` an
    ``onRetrieve`` computes from it): one warning naming the property and the relationship,
    saying the users are neither scripted nor pushed for that change. Towards users that
    compute nothing on read and run no update script, no warning."""
    org = {"name": "org", "schema": {"properties": {
        "name": {"type": "string", "notifyRelationships": ["members"]},
        "members": {"type": "array", "items": {"type": "relationship", "reverseRelationship": True,
                                               "reversePropertyName": "org",
                                               "resourceCollection": [{"path": "managed/user"}]}}}}}
    user_org = {"type": "relationship", "reverseRelationship": True, "reversePropertyName": "members",
                "resourceCollection": [{"path": "managed/org"}]}
    computed = {"type": "string", "onRetrieve": {"type": _JS, "source": "object.org ? 'member' : null"}}
    project = _project(tmp_path / "a", {"properties": {"org": user_org, "orgName": computed}}, {}, {"org": org})
    assert _warnings(project) == {"objects[2].schema.properties.name.notifyRelationships": (
        "not followed: when name of a managed/org changes, PingIDM notifies the objects its members reference "
        "(their onUpdate and postUpdate run, their onRetrieve is read again and they are synchronized); idsync "
        "neither runs their scripts nor pushes them for that change: their next change or a recon does")}
    plain = _project(tmp_path / "b", {"properties": {"org": user_org}}, {}, {"org": org})
    assert _warnings(plain) == {}
