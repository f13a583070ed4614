"""Turning a write op into SCIM requests: the resource JSON of a create, and the
PATCH operations or the PUT body of an update.

An update starts from the resource as the provider holds it (read with its ETag),
applies the changed properties through their attribute paths, and then either
sends PATCH operations for just the changed top-level attributes (``replace``, or
``remove`` for a value that went away) or PUTs the whole new resource. Group
membership is never replaced wholesale by PATCH: it becomes ``add`` of the new
members and ``remove`` of ``members[value eq "..."]`` for each leaver, so members
added by others in between are kept.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from idsync.connectors.scim.config import ScimObjectType, ScimProperty, schema_urns
from idsync.connectors.scim.paths import read_path, write_path

__all__ = ["apply_changes", "member_changes", "member_ids", "new_resource", "patch_operations", "put_body",
           "with_members"]

_PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_READ_ONLY = ("meta", "id", "groups")


def member_ids(resource: Mapping[str, Any]) -> list[str]:
    """The ``value`` of each member of a group resource, in order."""
    members = resource.get("members") or []
    return [str(m["value"]) for m in members if isinstance(m, Mapping) and m.get("value") is not None]


def member_changes(have: Iterable[str], want: Iterable[str]) -> tuple[list[str], list[str]]:
    """The members to add (in ``want``, not in ``have``) and to remove (the other way),
    each in its list's order: a group of any size in one pass over each list."""
    held, wanted = list(have), list(want)
    held_set, wanted_set = set(held), set(wanted)
    return [m for m in wanted if m not in held_set], [m for m in held if m not in wanted_set]


def _schemas(obj_type: ScimObjectType, version: int, resource: Mapping[str, Any]) -> list[str]:
    core, enterprise = schema_urns(version, obj_type.resource_type)
    schemas = [core]
    if any(k.lower() == enterprise.lower() for k in resource) and obj_type.resource_type == "User":
        schemas.append(enterprise)
    return schemas


def _settable(prop: ScimProperty | None, flag: str) -> bool:
    return prop is not None and flag not in prop.flags and not prop.is_members


def new_resource(obj_type: ScimObjectType, version: int, values: Mapping[str, Any],
                 members: list[str] | None) -> dict[str, Any]:
    """The body of a POST: every creatable property, members as SCIM ids."""
    resource: dict[str, Any] = {}
    for name, value in values.items():
        prop = obj_type.properties.get(name)
        if value is None or value == [] or not _settable(prop, "NOT_CREATABLE"):
            continue
        assert prop is not None
        write_path(resource, prop.path, value)
    if members:
        resource["members"] = [{"value": m} for m in members]
    resource["schemas"] = _schemas(obj_type, version, resource)
    return resource


def apply_changes(obj_type: ScimObjectType, current: Mapping[str, Any],
                  values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The resource with ``values`` applied, and the top-level attributes that changed."""
    new = copy.deepcopy(dict(current))
    changed: list[str] = []
    for name, value in values.items():
        prop = obj_type.properties.get(name)
        if not _settable(prop, "NOT_UPDATEABLE"):
            continue
        assert prop is not None
        if read_path(new, prop.path) == value:
            continue
        write_path(new, prop.path, value)
        if prop.path.top not in changed:
            changed.append(prop.path.top)
    return new, changed


def _top_value(resource: Mapping[str, Any], top: str) -> Any:
    if top.startswith("urn:"):
        urn, _, attr = top.rpartition(":")
        holder = next((v for k, v in resource.items() if k.lower() == urn.lower()), None)
        if not isinstance(holder, Mapping):
            return None
        return next((v for k, v in holder.items() if k.lower() == attr.lower()), None)
    return next((v for k, v in resource.items() if k.lower() == top.lower()), None)


def patch_operations(current: Mapping[str, Any], new: Mapping[str, Any], changed: Iterable[str],
                     add_members: list[str], remove_members: list[str]) -> dict[str, Any] | None:
    """The PatchOp request body, or None when there is nothing to change."""
    operations: list[dict[str, Any]] = []
    for top in changed:
        value = _top_value(new, top)
        if value in (None, "", [], {}):
            if _top_value(current, top) is not None:
                operations.append({"op": "remove", "path": top})
        else:
            operations.append({"op": "replace", "path": top, "value": value})
    if add_members:
        operations.append({"op": "add", "path": "members", "value": [{"value": m} for m in add_members]})
    operations.extend({"op": "remove", "path": f"members[value eq {json.dumps(m)}]"} for m in remove_members)
    if not operations:
        return None
    return {"schemas": [_PATCH_SCHEMA], "Operations": operations}


def with_members(resource: Mapping[str, Any], add_members: list[str], remove_members: list[str]) -> dict[str, Any]:
    """``resource`` with the leavers taken out of ``members`` and the joiners added."""
    out = dict(resource)
    if add_members or remove_members:
        gone = set(remove_members)
        kept = [m for m in resource.get("members") or [] if isinstance(m, Mapping) and m.get("value") not in gone]
        out["members"] = [{"value": m["value"]} for m in kept] + [{"value": m} for m in add_members]
    return out


def put_body(obj_type: ScimObjectType, version: int, new: Mapping[str, Any],
             add_members: list[str], remove_members: list[str]) -> dict[str, Any]:
    """The body of a PUT: the whole new resource without its read-only attributes."""
    body = {k: copy.deepcopy(v) for k, v in new.items() if k not in _READ_ONLY}
    if obj_type.members() is not None:
        body = with_members(body, add_members, remove_members)
    if version == 2:
        body["schemas"] = _schemas(obj_type, version, body)
    if "id" in new:
        body["id"] = new["id"]
    return body
