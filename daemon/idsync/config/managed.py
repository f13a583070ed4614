"""``conf/managed.json``: the managed object types and their properties.

The shape is PingIDM's (``{"objects": [{"name": "user", "schema": {"properties":
{...}, "required": [...]}}]}``). idsync uses from it: which properties are
``searchable`` (indexed in the store), which are secret (``encryption``,
``secureHash`` or ``"secret": true``: never logged, audited or returned), each
property's ``type`` (and an array's ``items.type``), ``required``, and the
per-object ``default`` values.

``nullable`` (PingIDM's admin UI writes it; its policy service reads the same from a
``type`` list holding ``"null"``): whether a request may set the property to null.
idsync takes null for every property unless it says ``"nullable": false`` (a null
removes the property, as leaving it out of a replace does); with ``false`` a create,
update or patch giving it null is refused (``store/validation.py``). ``"nullable":
true`` is ``"null"`` in the type list, so a list without it adds no ``not-empty``
policy (``objectmodel.schema_policies``). ``false`` beside a type list holding
``"null"`` says both: an error.

How a secret is kept at rest: a property with ``encryption`` is encrypted with the
project's keyring (``idsync.crypto``, reversible, as in PingIDM, so that a mapping
can ``openidm.decrypt`` it towards a directory); ``secureHash`` is PingIDM's salted hash
(``$crypto``), ``"secret": true`` alone a ``{CRYPT}`` hash (``store/passwords.py``).
Object scripts and policies are compiled by ``objectmodel.py``, custom actions by ``actions.py``.
A key of a type, its schema or a property that is one or two letters off a known one
(``serchable``) is an error; which keys are known is ``schema_keys.py``'s to say.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from idsync.config.actions import ManagedAction
from idsync.config.objectmodel import TypeModel, secure_hash
from idsync.config.relationships import Relation, check_reverses, relation_of
from idsync.config.schema_keys import managed_key_sets, misspelt
from idsync.crypto import DEFAULT_CIPHER, Keyring
from idsync.errors import ConfigError, ConfigErrors

__all__ = ["DEFAULT_MANAGED", "ManagedSchema", "ManagedType", "PropertyDef", "RoleModel", "parse_managed", "role_model"]

_TYPES = {"string", "number", "integer", "boolean", "array", "object", "relationship", "null"}


@dataclass(frozen=True)
class PropertyDef:
    name: str
    type: str = "string"
    # A JSON schema type list's other types (``["string", "number"]``: number), which a value
    # may be too; ``null`` is always allowed.
    also: tuple[str, ...] = ()
    searchable: bool = False
    secret: bool = False
    default: Any = None
    items: str | None = None  # an array's item type, when managed.json says
    encrypted: bool = False  # ``encryption``: reversible, with the keyring's key ``key_alias``
    key_alias: str | None = None  # ``encryption.key``; None: the keyring's default
    cipher: str = DEFAULT_CIPHER
    hash_algorithm: str | None = None  # ``secureHash.algorithm``: PingIDM's salted hash instead of {CRYPT}
    relation: Relation | None = None  # a relationship (``config/relationships.py``)
    # PingIDM's ``returnByDefault``: a relationship or a virtual property is read only when asked
    # for (``_fields``) unless true.
    return_by_default: bool = True
    # PingIDM's ``isVirtual``: computed by its ``onRetrieve``, and kept as each write computes it
    # when returned by default, which is what a query answers (``store/hooks.py``).
    virtual: bool = False
    # PingIDM's ``"scope": "private"``: never in an answer of the HTTP API; scripts and the sync engine see it.
    private: bool = False
    # Whether a request may set it to null (``"nullable": false``: not; a null then fails VALID_TYPE).
    nullable: bool = True


@dataclass(frozen=True)
class ManagedType:
    name: str
    properties: Mapping[str, PropertyDef] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    # What encrypts and decrypts the ``encryption`` properties (None: the project has none).
    keyring: Keyring | None = field(default=None, compare=False, repr=False)
    # Object scripts and policies (``config/objectmodel.py``), attached once the project's script engine exists.
    model: TypeModel | None = field(default=None, compare=False, repr=False)
    # The roles this type grants or is (``config/roles.py``): set on the user and the role type.
    roles: RoleModel | None = field(default=None, compare=False, repr=False)
    # Custom actions (``config/actions.py``), attached with ``model``.
    actions: Mapping[str, ManagedAction] = field(default_factory=dict, compare=False, repr=False)
    # The project's mapping names, which the ``mapping-exists`` policy checks (None: not known here).
    mapping_names: frozenset[str] | None = field(default=None, compare=False, repr=False)

    # Computed once: the store asks for each property of each object it writes.
    @functools.cached_property
    def searchable(self) -> frozenset[str]:
        return frozenset(p.name for p in self.properties.values() if p.searchable)

    @functools.cached_property
    def strings(self) -> frozenset[str]:
        """The properties of type ``string``: what a string value needs no check against."""
        return frozenset(p.name for p in self.properties.values() if p.type == "string")

    @functools.cached_property
    def not_nullable(self) -> frozenset[str]:
        """The properties a request may not set to null (``"nullable": false``)."""
        return frozenset(p.name for p in self.properties.values() if not p.nullable)

    @functools.cached_property
    def secrets(self) -> frozenset[str]:
        return frozenset(p.name for p in self.properties.values() if p.secret)

    @functools.cached_property
    def relationships(self) -> Mapping[str, Relation]:
        return {p.name: p.relation for p in self.properties.values() if p.relation is not None}

    @functools.cached_property
    def hidden(self) -> frozenset[str]:
        """The properties a read leaves out unless ``_fields`` names them (``returnByDefault``)."""
        return frozenset(p.name for p in self.properties.values() if not p.return_by_default)

    def shown_with(self, named: Collection[str]) -> list[str]:
        """The properties a read whose ``_fields`` names ``named`` (top-level names) shows:
        those shown by default, and those named."""
        return [name for name in self.properties if name not in self.hidden or name in named]

    @functools.cached_property
    def private(self) -> frozenset[str]:
        """The properties the HTTP API never answers (``"scope": "private"``)."""
        return frozenset(p.name for p in self.properties.values() if p.private)


@dataclass(frozen=True)
class ManagedSchema:
    types: Mapping[str, ManagedType]

    def get(self, name: str, *, file: str = "sync.json", key: str = "target") -> ManagedType:
        try:
            return self.types[name]
        except KeyError:
            known = ", ".join(sorted(self.types)) or "none"
            raise ConfigError(
                file, key, f"managed/{name} is not a managed object type (managed.json defines {known})"
            ) from None


@dataclass(frozen=True)
class RoleModel:
    """Where the roles live: the user type's grants, the role type, the assignment type."""

    user: str  # the type granted roles ("user")
    roles: str  # its property holding the grants ("roles")
    members: str  # the role's reverse property ("members")
    user_type: ManagedType = field(compare=False, repr=False)
    role: ManagedType = field(compare=False, repr=False)
    assignments: str | None = None  # the role's property naming assignments
    assignment: ManagedType | None = field(default=None, compare=False, repr=False)
    effective_roles: str | None = None  # the user's virtual properties, when managed.json declares them
    effective_assignments: str | None = None

    @property
    def virtual(self) -> frozenset[str]:
        return frozenset(n for n in (self.effective_roles, self.effective_assignments) if n)


def role_model(types: Mapping[str, ManagedType]) -> RoleModel | None:
    """The role model of ``types``: a type whose ``roles`` relationship reaches ``managed/role``."""
    role = types.get("role")
    if role is None:
        return None
    for user in types.values():
        relation = user.relationships.get("roles")
        if relation is None or relation.collections != ("managed/role",) or relation.reverse is None:
            continue
        assignments = next((n for n, r in role.relationships.items() if r.collections == ("managed/assignment",)),
                           None)
        return RoleModel(
            user=user.name, roles="roles", members=relation.reverse, user_type=user, role=role,
            assignments=assignments, assignment=types.get("assignment") if assignments else None,
            effective_roles="effectiveRoles" if "effectiveRoles" in user.properties else None,
            effective_assignments="effectiveAssignments" if "effectiveAssignments" in user.properties else None)
    return None


def parse_managed(raw: Any, *, file: str = "managed.json", keyring: Keyring | None = None) -> ManagedSchema:
    if not isinstance(raw, dict) or not isinstance(raw.get("objects"), list):
        raise ConfigError(file, "objects", "expected a list of managed object types")
    # A misspelt key (``serchable``) would leave its setting at the default without a word.
    if misspellings := misspelt(managed_key_sets(raw), file):
        raise ConfigErrors(misspellings) if len(misspellings) > 1 else misspellings[0]
    types: dict[str, ManagedType] = {}
    for i, obj in enumerate(raw["objects"]):
        key = f"objects[{i}]"
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
            raise ConfigError(file, f"{key}.name", "every managed object type needs a name")
        name = obj["name"]
        if name in types:
            raise ConfigError(file, f"{key}.name", f"managed/{name} is defined twice")
        schema = obj.get("schema") or {}
        if not isinstance(schema, dict):
            raise ConfigError(file, f"{key}.schema", "expected an object")
        props_raw = schema.get("properties") or {}
        if not isinstance(props_raw, dict):
            raise ConfigError(file, f"{key}.schema.properties", "expected an object")
        props: dict[str, PropertyDef] = {}
        for pname, pdef in props_raw.items():
            pkey = f"{key}.schema.properties.{pname}"
            if not isinstance(pdef, dict):
                raise ConfigError(file, pkey, "expected an object")
            ptype = pdef.get("type", "string")
            nullable = _nullable(pdef, file, pkey)
            also: tuple[str, ...] = ()
            if isinstance(ptype, list):  # JSON schema ["string", "null"], ["string", "number"]
                kinds = [t for t in ptype if t != "null"]
                for kind in kinds:
                    if kind not in _TYPES:
                        raise ConfigError(file, f"{pkey}.type[{ptype.index(kind)}]", f"unknown type {kind!r}")
                ptype, also = (kinds[0], tuple(dict.fromkeys(kinds[1:]))) if kinds else ("null", ())
            if ptype not in _TYPES:
                raise ConfigError(file, f"{pkey}.type", f"unknown type {ptype!r}")
            secret = bool(pdef.get("secret") or pdef.get("encryption") or pdef.get("secureHash"))
            virtual = pdef.get("isVirtual") is True
            encryption = pdef.get("encryption")
            if encryption is not None and not isinstance(encryption, dict):
                raise ConfigError(file, f"{pkey}.encryption", "expected an object, such as "
                                  "{\"key\": \"openidm-sym-default\"}")
            encryption = encryption or {}
            alias, cipher = encryption.get("key"), encryption.get("cipher", DEFAULT_CIPHER)
            if alias is not None and (not isinstance(alias, str) or not alias):
                raise ConfigError(file, f"{pkey}.encryption.key", "expected the alias of a key")
            if cipher != DEFAULT_CIPHER:
                raise ConfigError(file, f"{pkey}.encryption.cipher",
                                  f"cipher {cipher!r} is not supported (only {DEFAULT_CIPHER})")
            props[pname] = PropertyDef(
                name=pname,
                type=ptype,
                also=also,
                searchable=bool(pdef.get("searchable", False)) and not secret,
                secret=secret,
                default=pdef.get("default"),
                items=_item_type(pdef, file, pkey),
                encrypted=bool(pdef.get("encryption")) and not pdef.get("secureHash"),
                key_alias=alias,
                hash_algorithm=secure_hash(pdef, file, pkey),
                relation=(relation := relation_of(pdef, file, pkey)),
                return_by_default=pdef.get("returnByDefault", relation is None and not virtual) is True,
                virtual=virtual,
                private=_scope(pdef, file, pkey) == "private",
                nullable=nullable,
            )
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ConfigError(file, f"{key}.schema.required", "expected a list of property names")
        for j, required_name in enumerate(required):
            if required_name not in props:
                # Every create would fail on it, one object at a time, in the middle of a run.
                raise ConfigError(file, f"{key}.schema.required[{j}]",
                                  f"{required_name!r} is not a property of managed/{name} "
                                  f"(it has: {', '.join(sorted(props)) or 'none'})")
        types[name] = ManagedType(name=name, properties=props, required=tuple(required), keyring=keyring)
    return ManagedSchema(_with_roles(_with_reverses(types, file)))


def _with_roles(types: dict[str, ManagedType]) -> dict[str, ManagedType]:
    """The user and role types knowing the role model they are part of (``config/roles.py``)."""
    model = role_model(types)
    if model is not None:
        for name in (model.user, "role"):
            types[name] = dataclasses.replace(types[name], roles=model)
    return types


def _with_reverses(types: dict[str, ManagedType], file: str) -> dict[str, ManagedType]:
    """The types with each two-way relationship knowing its other end (``check_reverses``)."""
    checked = check_reverses({t.name: t.relationships for t in types.values()}, file)
    for (type_name, prop_name), relation in checked.items():
        t = types[type_name]
        props = {**t.properties, prop_name: dataclasses.replace(t.properties[prop_name], relation=relation)}
        types[type_name] = dataclasses.replace(t, properties=props)
    return types


def _nullable(pdef: Mapping[str, Any], file: str, key: str) -> bool:
    """``nullable`` (true when not said): false contradicts a type list holding ``"null"``."""
    value = pdef.get("nullable", True)
    if not isinstance(value, bool):
        raise ConfigError(file, f"{key}.nullable", f"expected true or false, not {value!r}")
    kind = pdef.get("type")
    if not value and isinstance(kind, list) and "null" in kind:
        raise ConfigError(file, f"{key}.nullable", 'false, but its type list takes "null": keep one of the two')
    return value


def _scope(pdef: Mapping[str, Any], file: str, key: str) -> str:
    scope = pdef.get("scope", "public")
    if scope not in ("public", "private"):
        raise ConfigError(file, f"{key}.scope", f'expected "public" or "private", not {scope!r}')
    return str(scope)


def _item_type(pdef: Mapping[str, Any], file: str, key: str) -> str | None:
    items = pdef.get("items")
    kind = items.get("type") if isinstance(items, dict) else None
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), None)
    if kind is not None and kind not in _TYPES:
        raise ConfigError(file, f"{key}.items.type", f"unknown type {kind!r}")
    return kind if isinstance(kind, str) else None


def _props(**kinds: str) -> dict[str, Any]:
    return {n: {"type": t, "searchable": True} for n, t in kinds.items()}


# PingIDM's default policies of a user's userName, mail and password.
PINGIDM_USER_POLICIES: dict[str, Any] = {
    "userName": {"type": "string", "searchable": True, "policies": [
        {"policyId": "unique"}, {"policyId": "cannot-contain-characters", "params": {"forbiddenChars": ["/"]}}]},
    "mail": {"type": "string", "searchable": True, "policies": [{"policyId": "valid-email-address-format"}]},
    "password": {"type": "string", "secret": True, "policies": [
        {"policyId": "minimum-length", "params": {"minLength": 8}},
        {"policyId": "at-least-X-capitals", "params": {"numCaps": 1}},
        {"policyId": "at-least-X-numbers", "params": {"numNums": 1}},
        {"policyId": "cannot-contain-others", "params": {"disallowedFields": ["userName", "givenName", "sn"]}}]},
}

# PingIDM's effectiveRoles and effectiveAssignments: computed by idsync on every read (``store/roles.py``).
_VIRTUAL: dict[str, Any] = {"type": "array", "isVirtual": True, "returnByDefault": True, "items": {"type": "object"}}

# Used when a project has no managed.json: PingIDM's user and role, trimmed, with its default policies.
DEFAULT_MANAGED: dict[str, Any] = {
    "objects": [
        {
            "name": "user",
            "schema": {
                "properties": {
                    **_props(userName="string", givenName="string", sn="string", mail="string",
                             displayName="string", telephoneNumber="string"),
                    **PINGIDM_USER_POLICIES,
                    "accountStatus": {"type": "string", "searchable": True, "default": "active"},
                    "description": {"type": "string"},
                    "effectiveRoles": _VIRTUAL,
                    "effectiveAssignments": _VIRTUAL,
                    "roles": {"type": "array", "returnByDefault": False, "items": {
                        "type": "relationship", "reverseRelationship": True, "validate": True,
                        "reversePropertyName": "members",
                        "resourceCollection": [{"path": "managed/role"}]}},
                },
                "required": ["userName"],
            },
        },
        {
            "name": "role",
            "schema": {
                "properties": {
                    **_props(name="string"),
                    "description": {"type": "string"},
                    "members": {"type": "array", "returnByDefault": False, "items": {
                        "type": "relationship", "reverseRelationship": True, "validate": True,
                        "reversePropertyName": "roles",
                        "resourceCollection": [{"path": "managed/user"}]}},
                    "assignments": {"type": "array", "returnByDefault": False, "items": {
                        "type": "relationship", "reverseRelationship": True, "validate": True,
                        "reversePropertyName": "roles",
                        "resourceCollection": [{"path": "managed/assignment"}]}},
                    "condition": {"type": "string"},
                    "temporalConstraints": {"type": "array", "returnByDefault": True, "items": {"type": "object"}},
                },
                "required": ["name"],
            },
        },
        {
            "name": "assignment",
            "schema": {
                "properties": {
                    **_props(name="string", mapping="string"),
                    "description": {"type": "string"},
                    "attributes": {"type": "array", "items": {"type": "object"}},
                    "linkQualifiers": {"type": "array", "items": {"type": "string"}},
                    "roles": {"type": "array", "returnByDefault": False, "items": {
                        "type": "relationship", "reverseRelationship": True, "validate": True,
                        "reversePropertyName": "assignments",
                        "resourceCollection": [{"path": "managed/role"}]}},
                },
                "required": ["name", "mapping"],
            },
        },
    ]
}
