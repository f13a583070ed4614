"""The keys a managed type and its schema in ``managed.json``, and a provisioner's
``objectTypes``, may hold.

Neither can be listed in full. A PingIDM property definition is a JSON schema
that PingIDM's services, its admin UI and each of its versions add keys to
(``isPersonal``, ``notifyRelationships``, ``mat-icon`` ...); an OpenICF object
type carries what its connector asks for (``runAsUser``). So the keys are
judged in three ways:

* a key listed here is accepted: idsync acts on it (``nullable``: ``managed.py``), it
  only describes the admin UI, or it is PingIDM's (``idsync validate`` names those of
  them whose effect idsync knows it lacks, such as a ``queryConfig``, or a ``notify``
  whose notified type has scripts: ``config/unused.py``, ``config/notify.py``);
* a key one or two letters away from a listed one (``serchable``, ``nativeNme``)
  is an error naming the key it was meant to be (``idsync.keys.misspelt_keys``):
  the setting it meant would silently keep its default, a property would drop
  out of the index or an attribute be read under another name;
* any other key is a ``validate`` warning: not read.

The lists come from OpenIDM's own ``managed.json`` files, samples and
documentation (the property configuration of its objects reference), PingIDM's
later ones, JSON schema's keywords, and OpenICF's provisioner files and the
code that reads them (type, nativeType, nativeName, default, key, cipher,
flags, required, runAsUser).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from idsync.config.objectmodel import OBJECT_EVENTS
from idsync.errors import ConfigError
from idsync.keys import misspelling_of, misspelt_keys

__all__ = ["MANAGED_TYPE_KEYS", "KeySet", "managed_key_sets", "misspelt", "object_type_key_sets", "schema_key_sets"]

_JSON_SCHEMA = (
    "$schema", "$ref", "id", "type", "title", "description", "default", "enum", "const", "format", "examples",
    "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "divisibleBy", "items", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "properties", "patternProperties", "additionalProperties", "required", "dependencies", "readOnly",
    "readonly", "allOf", "anyOf", "oneOf", "not", "extends", "disallow",
)
# A managed type's schema and each of its properties (an array's ``items`` and an
# object's ``properties`` too: they are property definitions themselves).
_PROPERTY = frozenset({
    *_JSON_SCHEMA,
    # the admin and end-user UI
    "viewable", "userEditable", "order", "label", "icon", "mat-icon", "isPersonal", "usageDescription",
    # what PingIDM does with the property
    "searchable", "policies", "conditionalPolicies", "fallbackPolicies", "returnByDefault", "isVirtual",
    "encryption", "secureHash", "scope", "onRetrieve", "onStore", "onValidate", "nullable", "isProtected",
    "isConditional", "flags", "queryConfig", "deleteQueryConfig",
    # relationships
    "resourceCollection", "reversePropertyName", "reverseRelationship", "validate", "notify", "notifySelf",
    "notifyRelationships", "relationshipGrantTemporalConstraintsEnforced",
    # idsync's own: a secret kept as a {CRYPT} hash
    "secret",
})
# A managed type's own keys: idsync's, the admin UI's, and PingIDM's others (``validate``
# names those as not read).
MANAGED_TYPE_KEYS = frozenset({"name", "schema", "actions", *OBJECT_EVENTS, "title", "description", "displayName",
                               "type", "iconClass", "iconSrc", "icon", "mat-icon", "meta", "notifications",
                               "properties"})
_RESOURCE_COLLECTION = frozenset({"path", "label", "query", "notify", "conditionalAssociation",
                                  "conditionalAssociationField"})
_COLLECTION_QUERY = frozenset({"queryFilter", "fields", "sortKeys"})
_ENCRYPTION = frozenset({"key", "cipher"})
_SECURE_HASH = frozenset({"algorithm", "type"})

_OBJECT_TYPE = frozenset({"$schema", "id", "type", "nativeType", "properties", "required", "title", "description"})
_OBJECT_TYPE_PROPERTY = frozenset({
    "type", "nativeName", "nativeType", "flags", "required", "items", "properties", "default", "runAsUser",
    "key", "cipher", "enum", "title", "description", "$schema", "id",
    # idsync's: an LDAP attribute read as base64, a SCIM group's members named by another attribute
    "encoding", "memberReference",
})


@dataclass(frozen=True)
class KeySet:
    """One JSON object of a file and the keys it may hold: ``at`` names it
    (``objects[0].schema.properties.mail``), ``what`` says what it is in a message."""

    at: str
    keys: tuple[str, ...]
    known: frozenset[str]
    what: str

    def unknown(self) -> list[str]:
        """Its keys that are neither known nor a misspelling of a known one."""
        return [k for k in self.keys if k not in self.known and misspelling_of(k, self.known) is None]


def misspelt(sets: Iterable[KeySet], file: str) -> list[ConfigError]:
    """An error for each key of ``sets`` that is a misspelling of a known one."""
    return [error for s in sets for error in misspelt_keys(s.keys, s.known, file=file, prefix=s.at)]


def managed_key_sets(raw: Any) -> Iterator[KeySet]:
    """The objects of a ``managed.json``: each managed type and its schema (``schema_key_sets``)."""
    objects = raw.get("objects") if isinstance(raw, Mapping) else None
    for i, obj in enumerate(objects if isinstance(objects, list) else []):
        if not isinstance(obj, Mapping):
            continue
        at, name = f"objects[{i}]", f"managed/{obj.get('name')}"
        yield KeySet(at, tuple(obj), MANAGED_TYPE_KEYS, name)
        if isinstance(schema := obj.get("schema"), Mapping):
            yield from schema_key_sets(f"{at}.schema", name, schema)


def schema_key_sets(at: str, name: str, schema: Mapping[str, Any]) -> Iterator[KeySet]:
    """The schema of managed type ``name`` (``managed/user``) and each property, with,
    within a property, its ``items``, nested ``properties``, ``resourceCollection``
    entries, ``encryption`` and ``secureHash``."""
    yield from _property(at, schema, name, f"the schema of {name}")


def _nested(at: str, pdef: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """A property's own properties: its array's ``items`` and its nested ``properties``."""
    if isinstance(items := pdef.get("items"), Mapping):
        yield f"{at}.items", items
    if isinstance(props := pdef.get("properties"), Mapping):
        for pname, sub in props.items():
            if isinstance(sub, Mapping):
                yield f"{at}.properties.{pname}", sub


def _property(at: str, pdef: Mapping[str, Any], name: str, what: str | None = None) -> Iterator[KeySet]:
    yield KeySet(at, tuple(pdef), _PROPERTY, what or f"a property of {name}")
    for sub_at, sub in _nested(at, pdef):
        yield from _property(sub_at, sub, name)
    collections = pdef.get("resourceCollection")
    for j, entry in enumerate(collections if isinstance(collections, list) else [collections]):
        if isinstance(entry, Mapping):
            where = f"{at}.resourceCollection" + (f"[{j}]" if isinstance(collections, list) else "")
            yield KeySet(where, tuple(entry), _RESOURCE_COLLECTION, f"a resourceCollection of {name}")
            if isinstance(query := entry.get("query"), Mapping):
                yield KeySet(f"{where}.query", tuple(query), _COLLECTION_QUERY, f"a resourceCollection of {name}")
    for key, known in (("encryption", _ENCRYPTION), ("secureHash", _SECURE_HASH)):
        if isinstance(setting := pdef.get(key), Mapping):
            yield KeySet(f"{at}.{key}", tuple(setting), known, f"the {key} of a property of {name}")


def object_type_key_sets(object_types: Any) -> Iterator[KeySet]:
    """The objects of a provisioner's ``objectTypes``: each object type and each of its
    properties (and their ``items`` and nested ``properties``)."""
    if not isinstance(object_types, Mapping):
        return
    for type_name, spec in object_types.items():
        if not isinstance(spec, Mapping):
            continue
        at = f"objectTypes.{type_name}"
        yield KeySet(at, tuple(spec), _OBJECT_TYPE, f"object type {type_name}")
        props = spec.get("properties")
        for pname, pdef in (props.items() if isinstance(props, Mapping) else ()):
            if isinstance(pdef, Mapping):
                yield from _type_property(f"{at}.properties.{pname}", pdef, f"a property of object type {type_name}")


def _type_property(at: str, pdef: Mapping[str, Any], what: str) -> Iterator[KeySet]:
    yield KeySet(at, tuple(pdef), _OBJECT_TYPE_PROPERTY, what)
    for sub_at, sub in _nested(at, pdef):
        yield from _type_property(sub_at, sub, what)
