"""The XML connector's configuration: a ``provisioner.openicf-<name>.json`` whose
``connectorRef`` names OpenICF's XML connector, read into frozen dataclasses; every
problem a ``ConfigError`` naming the file and the key.

``configurationProperties`` keeps that connector's names: ``xmlFilePath`` (required:
the data), ``xsdFilePath`` (the schema of its object classes, which fixes the order
of an object's elements and which of them repeat), ``xsdIcfFilePath`` (OpenICF's own
schema: read for its presence only) and ``createFileIfNotExists``. ``objectTypes``
maps each property to an element by ``nativeName``: ``__UID__``, ``__NAME__``,
``__DESCRIPTION__``, ``__PASSWORD__``, ``__ENABLE__`` ... are OpenICF's elements, any
other name one of the schema's; ``nativeType`` names the object class element
(``__ACCOUNT__``, ``__GROUP__``, or one of the schema's own).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import unknown_settings

__all__ = ["XmlObjectType", "XmlProperty", "XmlSettings", "parse_xml_config"]

_KNOWN = frozenset({"xmlFilePath", "xsdFilePath", "xsdIcfFilePath", "createFileIfNotExists"})
_XSD = "{http://www.w3.org/2001/XMLSchema}"
ICF_NS = "http://openidm.forgerock.com/xml/ns/public/resource/openicf/resource-schema-1.xsd"
_SCALARS = frozenset({"string", "boolean", "integer", "number", "null"})
# XML Schema types read as JSON numbers or booleans where objectTypes says no more.
_XSD_TYPES = {"int": "integer", "integer": "integer", "long": "integer", "short": "integer",
              "double": "number", "float": "number", "decimal": "number", "boolean": "boolean"}


@dataclass(frozen=True)
class XmlProperty:
    """One property of an object type and the element behind it (its local name)."""

    name: str
    element: str
    type: str  # string, boolean, integer or number: how each element's text is read
    many: bool  # several elements, a JSON array
    required: bool
    flags: frozenset[str]

    @property
    def icf(self) -> bool:
        return self.element.startswith("__") and self.element.endswith("__")

    @property
    def readable(self) -> bool:
        return ("NOT_READABLE" not in self.flags and "NOT_RETURNED_BY_DEFAULT" not in self.flags
                and self.element != "__PASSWORD__")


@dataclass(frozen=True)
class XmlObjectType:
    name: str
    element: str  # the object class element's local name
    properties: tuple[XmlProperty, ...]
    order: tuple[str, ...]  # the schema's element order (local names); empty: the properties'

    def position(self, element: str) -> int:
        if element in self.order:
            return self.order.index(element)
        names = [p.element for p in self.properties]
        return len(self.order) + (names.index(element) if element in names else len(names))


@dataclass(frozen=True)
class XmlSettings:
    file: Path
    create: bool
    namespace: str  # the schema's target namespace: of the object classes and their own elements
    types: Mapping[str, XmlObjectType]
    warnings: tuple[ConfigWarning, ...]


def _path(file: str, props: Mapping[str, Any], key: str, base: Path, *, required: bool) -> Path | None:
    value = props.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, f"configurationProperties.{key}", "required: a file path" if required
                          else "expected a file path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def parse_xml_config(file: str, config: Mapping[str, Any], base: Path) -> XmlSettings:
    """The settings of one XML provisioner; ``base``: what relative paths are under."""
    props = config.get("configurationProperties") or {}
    # First: a misspelt key (``xmlFilPath``) is the error to tell, not the setting it left unset.
    warnings: list[ConfigWarning] = unknown_settings([k for k in props if not k.endswith("_file")], _KNOWN,
                                                     file=file)
    data = _path(file, props, "xmlFilePath", base, required=True)
    assert data is not None
    schema = _path(file, props, "xsdFilePath", base, required=False)
    icf = _path(file, props, "xsdIcfFilePath", base, required=False)
    create = props.get("createFileIfNotExists", False)
    if not isinstance(create, bool):
        raise ConfigError(file, "configurationProperties.createFileIfNotExists", "expected true or false")
    if icf is not None and not icf.is_file():
        raise ConfigError(file, "configurationProperties.xsdIcfFilePath", f"no such file: {icf}")
    namespace, classes = _schema(file, schema) if schema is not None else ("", {})
    types = _object_types(file, config.get("objectTypes"), classes)
    return XmlSettings(file=data, create=create, namespace=namespace, types=types, warnings=tuple(warnings))


def _schema(file: str, path: Path) -> tuple[str, dict[str, list[tuple[str, str, bool]]]]:
    """The schema's target namespace, and per object class element: (element, XML Schema
    type, repeats) of each of its elements in order."""
    key = "configurationProperties.xsdFilePath"
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise ConfigError(file, key, f"{path}: {exc.strerror}") from None
    except ET.ParseError as exc:
        raise ConfigError(file, key, f"{path}: not XML ({exc})") from None
    classes: dict[str, list[tuple[str, str, bool]]] = {}
    for element in root.findall(f"{_XSD}element"):
        elements: list[tuple[str, str, bool]] = []
        for child in element.iter(f"{_XSD}element"):
            if child is element:
                continue
            name = child.get("name") or (child.get("ref") or "").rpartition(":")[2]
            kind = (child.get("type") or "").rpartition(":")[2]
            elements.append((name, kind, child.get("maxOccurs", "1") not in ("0", "1")))
        classes[str(element.get("name"))] = elements
    return str(root.get("targetNamespace") or ""), classes


def _object_types(file: str, raw: Any, classes: Mapping[str, list[tuple[str, str, bool]]]) -> dict[str, XmlObjectType]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(file, "objectTypes", "expected an object naming at least one object type")
    types: dict[str, XmlObjectType] = {}
    for type_name, spec in raw.items():
        key = f"objectTypes.{type_name}"
        if not isinstance(spec, dict):
            raise ConfigError(file, key, "expected an object")
        native = str(spec.get("nativeType") or spec.get("id") or "")
        if not native:
            raise ConfigError(file, f"{key}.nativeType", "required: the object class element (__ACCOUNT__, ...)")
        schema = {name: (kind, many) for name, kind, many in classes.get(native, [])}
        if classes and native not in classes:
            raise ConfigError(file, f"{key}.nativeType", f"the schema (xsdFilePath) has no element {native!r}")
        props = spec.get("properties") or {}
        if not isinstance(props, dict):
            raise ConfigError(file, f"{key}.properties", "expected an object")
        found: list[XmlProperty] = []
        for name, prop in props.items():
            where = f"{key}.properties.{name}"
            if not isinstance(prop, dict):
                raise ConfigError(file, where, "expected an object")
            element = str(prop.get("nativeName") or name)
            kind = prop.get("type", "string")
            many = kind == "array"
            if many:
                items = prop.get("items")
                kind = items.get("type", "string") if isinstance(items, dict) else "string"
            if kind not in _SCALARS:
                raise ConfigError(file, f"{where}.type", f"an element holds text: {kind!r} is not one of "
                                  f"{', '.join(sorted(_SCALARS))} (or an array of them)")
            xsd_kind, xsd_many = schema.get(element, ("", many))
            if kind in ("string", "null") and xsd_kind in _XSD_TYPES and "type" not in prop:
                kind = _XSD_TYPES[xsd_kind]
            flags = prop.get("flags") or []
            found.append(XmlProperty(name=name, element=element, type="string" if kind == "null" else kind,
                                     many=many or (xsd_many and "type" not in prop),
                                     required=prop.get("required") is True,
                                     flags=frozenset(str(f) for f in flags if isinstance(f, str))))
        order = tuple(name for name, _, _ in classes.get(native, []))
        types[type_name] = XmlObjectType(type_name, native, tuple(found), order)
    return types
