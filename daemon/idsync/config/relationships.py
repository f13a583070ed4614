"""Relationship properties of ``managed.json``: references between objects, not copies.

PingIDM's shape: a property of ``"type": "relationship"`` holds one reference, an
``array`` whose ``items`` are of type ``relationship`` holds many. Either names the
collections it may point into (``resourceCollection``: ``[{"path": "managed/role"}]``)
and, for a two-way relationship, the property of the other end
(``reversePropertyName``, with ``reverseRelationship: true``): user ``roles`` and
role ``members`` are the two ends of one set of references, so a change to
either is seen from both.

A value is ``{"_ref": "managed/role/ID", "_refProperties": {...}}``. Without
``resourceCollection`` (OpenIDM 4) a relationship may point into any managed
collection and, when it is one-way, at an object of a system too
(``system/ldap/account/ID``: OpenIDM's historicalaccountlinking sample keeps each
user's accounts so); one declared into something else (``internal/role``) is not
kept as references. ``relation_of``
reads the declaration; ``check_reverses`` checks, once every type is known, that
each reverse end exists and points back, and records whether it holds one
reference or many (setting a user's ``manager`` takes the user out of the old
manager's ``reports``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from idsync.errors import ConfigError

__all__ = ["Relation", "check_reverses", "demoted", "points_outside", "relation_of"]


@dataclass(frozen=True)
class Relation:
    """What a relationship property may hold and where its other end is."""

    many: bool
    collections: tuple[str, ...]  # resource paths: "managed/role"
    reverse: str | None = None  # the other end's property (``reversePropertyName``)
    # For each collection with a reverse end: whether that end holds many references.
    reverse_many: Mapping[str, bool] = field(default_factory=dict)
    validate: bool = False  # PingIDM's ``validate``: a reference must name an existing object

    def collection_of(self, ref: str) -> tuple[str, str] | None:
        """``(collection, id)`` of a ``_ref`` value that points into one of the collections."""
        parts = ref.split("/", 3)
        if self.anywhere and parts[0] == "system" and len(parts) == 4 and all(parts):
            return "/".join(parts[:3]), parts[3]  # the id may hold slashes (a DN)
        collection, _, object_id = ref.rpartition("/")
        if object_id and (collection in self.collections if self.collections
                          else collection.startswith("managed/") and collection.count("/") == 1):
            return collection, object_id
        return None

    def reaches(self, collection: str) -> bool:
        if self.collections:
            return collection in self.collections
        return collection.startswith("managed/") or (self.anywhere and collection.startswith("system/"))

    @property
    def anywhere(self) -> bool:
        """Whether it may point at a system's objects: one-way, its collections undeclared."""
        return not self.collections and self.reverse is None


def relation_of(pdef: Mapping[str, Any], file: str, key: str) -> Relation | None:
    """The relationship a property declares, or None for any other property."""
    kind = pdef.get("type")
    items = pdef.get("items") if isinstance(pdef.get("items"), dict) else {}
    if kind == "relationship":
        many, decl, at = False, pdef, key
    elif kind == "array" and isinstance(items, dict) and items.get("type") == "relationship":
        many, decl, at = True, {**pdef, **items}, f"{key}.items"
    else:
        return None
    collections = _collections(decl.get("resourceCollection"), file, f"{at}.resourceCollection")
    if collections is None:
        return None  # it points outside the managed objects (internal/role): kept as a plain value
    reverse = decl.get("reversePropertyName")
    if reverse is not None and (not isinstance(reverse, str) or not reverse):
        raise ConfigError(file, f"{at}.reversePropertyName", "expected the name of the other end's property")
    if decl.get("reverseRelationship") is True and reverse is None:
        raise ConfigError(file, f"{at}.reversePropertyName",
                          "reverseRelationship is true: name the other end's property")
    return Relation(many=many, collections=collections, reverse=reverse, validate=decl.get("validate") is True)


def _collections(raw: Any, file: str, key: str) -> tuple[str, ...] | None:
    """The managed collections of a ``resourceCollection`` (none declared: any managed
    collection, as in OpenIDM 4); None when one is not managed."""
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(file, key, 'expected a list such as [{"path": "managed/role"}]')
    collections: list[str] = []
    for i, entry in enumerate(raw):
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or "/" not in path.strip("/"):
            raise ConfigError(file, f"{key}[{i}].path", "expected a collection such as managed/role")
        if not path.startswith("managed/") or path.count("/") != 1:
            return None  # repo/internal/role, internal/user: not the store's managed objects
        collections.append(path)
    return tuple(collections)


def demoted(raw: Any) -> set[tuple[str, str]]:
    """The (type, property) pairs of a raw ``managed.json`` that declare a relationship
    idsync keeps as a plain value: into something other than managed objects, or whose
    reverse end does not point back."""
    declared: dict[str, dict[str, Relation]] = {}
    found: set[tuple[str, str]] = set()
    for obj in raw.get("objects") or [] if isinstance(raw, dict) else []:
        schema = obj.get("schema") if isinstance(obj, dict) else None
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict) or not isinstance(obj.get("name"), str):
            continue
        relations = declared.setdefault(obj["name"], {})
        for name, pdef in props.items():
            if not isinstance(pdef, dict):
                continue
            try:
                relation = relation_of(pdef, "managed.json", name)
            except ConfigError:
                continue
            if relation is not None:
                relations[name] = relation
            elif points_outside(pdef):
                found.add((obj["name"], name))
    found.update(key for key, relation in check_reverses(declared, "managed.json").items() if relation is None)
    return found


def points_outside(pdef: Mapping[str, Any]) -> bool:
    """Whether a property is a relationship to something other than managed objects
    (``internal/role``), which idsync keeps as a plain value."""
    items = pdef.get("items") if isinstance(pdef.get("items"), dict) else {}
    decl = pdef if pdef.get("type") == "relationship" else items
    if not isinstance(decl, dict) or decl.get("type") != "relationship":
        return False
    raw = decl.get("resourceCollection")
    entries = [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    return any(isinstance(e, dict) and isinstance(e.get("path"), str) and not e["path"].startswith("managed/")
               for e in entries)


def check_reverses(types: Mapping[str, Mapping[str, Relation]],
                   file: str) -> dict[tuple[str, str], Relation | None]:
    """Each two-way relationship with its reverse end's cardinality filled in, keyed by
    (type, property). When the reverse end is not a relationship pointing back (it is
    missing, points outside the managed objects as PingIDM's ``authzRoles`` does, or
    points elsewhere), this end is kept as a plain value too (None): ``idsync
    validate`` names it (``demoted``)."""
    done: dict[tuple[str, str], Relation | None] = {}
    for type_name, relations in types.items():
        for name, relation in relations.items():
            if relation.reverse is None:
                continue
            reverse_many: dict[str, bool] = {}
            for collection in relation.collections or tuple(f"managed/{t}" for t in types if relation.reverse
                                                            in types[t]):
                other_type = collection.split("/", 1)[1]
                other = types.get(other_type, {}).get(relation.reverse)
                if other is None:
                    break
                if other.reverse != name or not other.reaches(f"managed/{type_name}"):
                    break  # PingIDM lets such a pair be (historicalaccountlinking's manager points to roles)
                reverse_many[collection] = other.many
            else:
                done[(type_name, name)] = dataclasses.replace(relation, reverse_many=reverse_many)
                continue
            done[(type_name, name)] = None
    return done
