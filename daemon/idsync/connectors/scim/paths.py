"""SCIM attribute paths as mappings address them, read from and written into
resource JSON.

A path is ``[URN ":"] attribute ["[" sub eq value "]"] ["." sub]``:
``userName``, ``name.givenName``, ``emails[type eq "work"].value``,
``emails[primary eq true].value``,
``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber``.
Only an equality value filter is allowed: it picks one item of a multi-valued
attribute, and writing through it updates that item or appends one carrying the
filter's value (a new work e-mail gets ``type: "work"``). Attribute names compare
without regard to case, as RFC 7643 section 2.1 says.

A filter may match several items (two work e-mails). One is never picked in
silence: reading gives the list of their values (so a single-valued property the
value is mapped to fails that object), writing a value raises ``AmbiguousPath``
naming them (which item to change is unknown), and removing drops them all.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["AmbiguousPath", "AttrPath", "parse_path", "read_path", "write_path"]

_NAME = r"\$?[A-Za-z][A-Za-z0-9_-]*"
_PATH = re.compile(
    rf"(?:(?P<urn>urn:[A-Za-z0-9._:-]+):)?(?P<attr>{_NAME})"
    rf"(?:\[\s*(?P<fsub>{_NAME})\s+eq\s+(?P<fvalue>\"(?:[^\"\\]|\\.)*\"|true|false|-?[0-9.]+)\s*\])?"
    rf"(?:\.(?P<sub>{_NAME}))?"
)


@dataclass(frozen=True)
class AttrPath:
    """One parsed attribute path."""

    text: str
    urn: str | None
    attribute: str
    filter_sub: str | None
    filter_value: Any
    sub: str | None

    @property
    def top(self) -> str:
        """The top-level attribute (``emails``, ``urn:...:User:employeeNumber``), for
        ``attributes=`` and PATCH paths."""
        return f"{self.urn}:{self.attribute}" if self.urn else self.attribute

    @property
    def filter_name(self) -> str:
        """The path as a SCIM filter names it: without the value filter, which makes a
        filter on it match a little more, and correlation narrows the answer again."""
        return self.top + (f".{self.sub}" if self.sub else "")


class AmbiguousPath(ValueError):
    """A value filter matches several items and a value is to be written through it."""


def parse_path(text: str) -> AttrPath:
    """Parse ``text``; ValueError when it is not a supported attribute path."""
    match = _PATH.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a SCIM attribute path")
    fvalue = json.loads(match["fvalue"]) if match["fvalue"] is not None else None
    return AttrPath(text.strip(), match["urn"], match["attr"], match["fsub"], fvalue, match["sub"])


def _key(container: dict[str, Any], name: str) -> str:
    """The key of ``container`` that names ``name``, ignoring case; ``name`` if none."""
    lowered = name.lower()
    return next((k for k in container if k.lower() == lowered), name)


def _matches(item: Any, path: AttrPath) -> bool:
    if not isinstance(item, dict) or path.filter_sub is None:
        return False
    found = item.get(_key(item, path.filter_sub))
    if isinstance(found, str) and isinstance(path.filter_value, str):
        return found.lower() == path.filter_value.lower()
    return bool(found == path.filter_value)


def _holder(resource: dict[str, Any], path: AttrPath, create: bool) -> dict[str, Any] | None:
    if path.urn is None:
        return resource
    key = _key(resource, path.urn)
    if key not in resource and create:
        resource[key] = {}
    holder = resource.get(key)
    return holder if isinstance(holder, dict) else None


def read_path(resource: dict[str, Any], path: AttrPath) -> Any:
    """The value at ``path``; a list for a sub-attribute of a multi-valued attribute
    read without a filter (``emails.value``) or through a filter several items match;
    None when absent."""
    holder = _holder(resource, path, create=False)
    if holder is None:
        return None
    value = holder.get(_key(holder, path.attribute))
    if path.filter_sub is not None:
        found = [i for i in value if _matches(i, path)] if isinstance(value, list) else []
        value = found[0] if len(found) == 1 else found or None
    if path.sub is None or value is None:
        return value
    if isinstance(value, list):
        return [i.get(_key(i, path.sub)) for i in value if isinstance(i, dict) and _key(i, path.sub) in i]
    return value.get(_key(value, path.sub)) if isinstance(value, dict) else None


def write_path(resource: dict[str, Any], path: AttrPath, value: Any) -> None:
    """Set the value at ``path`` in ``resource`` (None removes it), in place."""
    holder = _holder(resource, path, create=value is not None)
    if holder is None:
        return
    attr = _key(holder, path.attribute)
    if path.filter_sub is None and path.sub is None:
        if value is None:
            holder.pop(attr, None)
        else:
            holder[attr] = copy.deepcopy(value)
        return
    if path.filter_sub is None:
        complex_value = holder.get(attr)
        if not isinstance(complex_value, dict):
            if value is None:
                return
            complex_value = holder[attr] = {}
        if value is None:
            complex_value.pop(_key(complex_value, path.sub or ""), None)
        else:
            complex_value[_key(complex_value, path.sub or "")] = value
        return
    items = holder.get(attr)
    if not isinstance(items, list):
        items = []
    found = [i for i in items if _matches(i, path)]
    if len(found) > 1 and value is not None:
        values = ", ".join(json.dumps(i.get(_key(i, path.sub or "value"))) for i in found)
        raise AmbiguousPath(f"{path.text} matches {len(found)} items ({values}): which one to write is unknown")
    item = found[0] if found else None
    if value is None:
        items[:] = [i for i in items if i not in found]
    elif item is None:
        items.append({path.filter_sub: path.filter_value, path.sub or "value": value})
    else:
        item[_key(item, path.sub or "value")] = value
    if items:
        holder[attr] = items
    else:
        holder.pop(attr, None)
