"""The XML connector: the objects of one XML file (OpenICF's XML connector,
``provisioner.openicf-<name>.json``, see ``config``) as ``system/<name>/<type>``.

The file is a container element whose children are objects, one element per object
named by its class (``ri:__ACCOUNT__``), whose children are its attributes, one
element per value (``icf:__UID__``, ``icf:__NAME__``, ``ri:email`` repeated for
several). An object's ``_id`` is its ``__UID__`` (its ``__NAME__`` where it has none).
``__PASSWORD__`` is written, never read back.

Reads stream the file through expat, a page at a time; a ``_queryFilter`` is evaluated
on each object. A DOCTYPE or an entity declaration is refused (no entity is ever
expanded), as is text that is not well-formed XML, and a file written in place while
it is read: each fails the read, naming the file and line (a recon then deletes
nothing). An object without ``__UID__`` and ``__NAME__``, or with nested elements,
fails alone, as an object without an id (a recon then skips its target phase); one
with a value not of its property's type or several values for a single-valued
property fails alone by its id (``resource.UNREADABLE``; a read by id leaves it out).

Writes take the directory's lock, read the file once per batch and replace it by a
complete new copy (written beside it, flushed, renamed over it), objects in place,
creates at the end, each object's elements in the schema's order. The container, the
objects and their elements keep their XML attributes and namespace declarations as
written; an element written is named with a prefix bound where it is (declared on the
container when none is), so that the file stays namespace-well-formed. A create without
``__UID__`` gets a random one (UUID) when its class has a ``__UID__``; a create whose
``__UID__`` or ``__NAME__`` another object of its class holds fails alone, as does a
value XML cannot hold (a control character, U+FFFE, half a character). A new
``__UID__`` (or ``__NAME__`` where it is the id) renames the object.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from idsync.connectors.base import System, object_type_named, refuse_native, system_test_report
from idsync.connectors.files import (
    ById,
    apply_each,
    checked_text,
    file_version,
    locked,
    once_each,
    paged,
    replace_file,
    typed,
    wanted_fields,
)
from idsync.connectors.xml.config import ICF_NS, XmlObjectType, XmlProperty, XmlSettings, parse_xml_config
from idsync.errors import ConfigError, IdsyncError, NotFound, ObjectRejected, PeerError
from idsync.resource import UNREADABLE, Obj, QuerySpec, Resource, WriteOp, WriteResult

__all__ = ["XmlResource", "XmlSystem", "open_xml_system"]


_CHUNK = 1 << 16
# The namespace of OpenICF's example schema, for a new file whose schema is not configured.
_EXTENSION_NS = "http://openidm.forgerock.com/xml/ns/public/resource/instances/resource-schema-extension"


def _local(name: str) -> str:
    return name.rpartition(":")[2]


Attributes = list[tuple[str, str]]  # an element's XML attributes, namespace declarations among them, as written


@dataclass
class XmlElement:
    """One attribute element of an object: its name as written, its text, its own XML
    attributes (``xml:lang``, namespace declarations), which a write keeps."""

    name: str
    text: str
    attributes: Attributes = field(default_factory=list)


@dataclass
class XmlRecord:
    """One object element: its tag and XML attributes as written, its line, its
    attribute elements in order."""

    tag: str
    line: int
    children: list[XmlElement] = field(default_factory=list)
    problem: str | None = None
    attributes: Attributes = field(default_factory=list)

    def values(self, element: str) -> list[str]:
        return [child.text for child in self.children if _local(child.name) == element]


@dataclass
class XmlDocument:
    """The whole file, for a batch of writes: the container element and the objects."""

    root: str
    attributes: Attributes
    records: list[XmlRecord]

    def namespaces(self, within: XmlRecord | None = None) -> dict[str, str]:
        """The namespaces in scope in an object (``within``) or the container: prefix ->
        namespace, ``""`` for the default namespace."""
        return {**_declared(self.attributes), **_declared(within.attributes if within else [])}

    def prefix(self, namespace: str, default: str, within: XmlRecord | None = None) -> str:
        """A prefix bound to ``namespace`` in an object (``within``) or the container:
        one the object or the container declares, else one declared on the container
        here, which the object does not bind to another namespace."""
        scope = self.namespaces(within)
        own = _declared(within.attributes if within else [])
        for prefix in [*own, *scope]:
            if scope[prefix] == namespace:
                return prefix
        prefix, n = default, 1
        while prefix in scope:
            prefix, n = f"{default}{n}", n + 1
        self.attributes.append((f"xmlns:{prefix}", namespace))
        return prefix


def _declared(attributes: Attributes) -> dict[str, str]:
    """The namespaces ``attributes`` declare: prefix -> namespace, ``""`` for the default."""
    found: dict[str, str] = {}
    for name, value in attributes:
        if name == "xmlns" or name.startswith("xmlns:"):
            found[name[6:]] = value
    return found


def _pairs(flat: list[str]) -> Attributes:
    return list(zip(flat[0::2], flat[1::2], strict=True))


class _Refused(Exception):
    pass


def _refuse_doctype(*_: Any) -> None:
    raise _Refused("a DOCTYPE is refused (no entity is expanded)")


def _refuse_entity(*_: Any) -> None:
    raise _Refused("an entity declaration is refused")


class XmlFile:
    """The file of one XML system: streaming its objects and replacing it whole."""

    def __init__(self, settings: XmlSettings) -> None:
        self.settings = settings
        self.path = settings.file

    def _open(self) -> BinaryIO | None:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            if self.settings.create:
                return None
            raise PeerError(f"xml file {self.path} does not exist") from None
        except OSError as exc:
            raise PeerError(f"xml file {self.path} cannot be read: {exc.strerror}") from None

    def records(self, root: list[Any] | None = None) -> Iterator[XmlRecord]:
        """Each object element of the file, in order, read through to the end; ``root``
        receives the container's tag and attributes."""
        handle = self._open()
        if handle is None:
            return
        with handle:
            before = file_version(handle)
            yield from self._parse(handle, root)
            if file_version(handle) != before:
                raise PeerError(f"xml file {self.path} changed while it was read (written in place); "
                                "nothing read is used: read it again once it is complete")

    def _parse(self, handle: BinaryIO, root: list[Any] | None) -> Iterator[XmlRecord]:
        parser = expat.ParserCreate()
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = _refuse_doctype
        parser.EntityDeclHandler = _refuse_entity
        parser.ordered_attributes = True
        parser.buffer_text = True
        done: list[XmlRecord] = []
        depth = 0
        current: XmlRecord | None = None
        child: XmlElement | None = None
        text: list[str] = []

        def start(name: str, attributes: list[str]) -> None:
            nonlocal depth, current, child
            depth += 1
            if depth == 1 and root is not None:
                root[:] = [name, _pairs(attributes)]
            elif depth == 2:
                current = XmlRecord(name, parser.CurrentLineNumber, attributes=_pairs(attributes))
            elif depth == 3:
                child = XmlElement(name, "", _pairs(attributes))
                text.clear()
            elif depth > 3 and current is not None and current.problem is None:
                current.problem = (f"<{_local(name)}> inside <{_local(child.name if child else '')}>: "
                                   "an attribute holds text only")

        def end(name: str) -> None:
            nonlocal depth, current
            if depth == 3 and current is not None and child is not None:
                child.text = "".join(text)
                current.children.append(child)
            elif depth == 2 and current is not None:
                done.append(current)
                current = None
            depth -= 1

        def chars(data: str) -> None:
            if depth == 3:
                text.append(data)

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = chars
        try:
            while chunk := handle.read(_CHUNK):
                parser.Parse(chunk, False)
                yield from done
                done.clear()
            parser.Parse(b"", True)
            yield from done
        except expat.ExpatError as exc:
            raise PeerError(f"xml file {self.path}, line {exc.lineno}: {expat.ErrorString(exc.code)}") from None
        except _Refused as exc:
            raise PeerError(f"xml file {self.path}, line {parser.CurrentLineNumber}: {exc}") from None

    def document(self) -> XmlDocument:
        root: list[Any] = []
        records = list(self.records(root))
        if not root:  # a new file (createFileIfNotExists)
            return XmlDocument("icf:OpenICFContainer",
                               [("xmlns:icf", ICF_NS), ("xmlns:ri", self.settings.namespace or _EXTENSION_NS)], records)
        return XmlDocument(root[0], root[1], records)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        if self.settings.create and not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)  # the file to be made, and its directory
            except OSError as exc:
                raise PeerError(f"xml file {self.path}: its directory cannot be made: {exc.strerror}") from None
        return locked(self.path, "xml")

    def replace(self, document: XmlDocument) -> None:
        def write(out: TextIO) -> None:
            out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
            attributes = "".join(f"\n    {name}={quoteattr(value)}" for name, value in document.attributes)
            out.write(f"<{document.root}{attributes}>\n")
            for record in document.records:
                out.write(f"   <{record.tag}{_attributes(record.attributes)}>\n")
                for child in record.children:
                    out.write(f"      <{child.name}{_attributes(child.attributes)}>{_escaped(child.text)}"
                              f"</{child.name}>\n")
                out.write(f"   </{record.tag}>\n")
            out.write(f"</{document.root}>\n")

        replace_file(self.path, "xml", write, encoding="utf-8", newline="\n")


class XmlResource(Resource):
    """The objects of one class in the file."""

    def __init__(self, system: str, file: XmlFile, obj_type: XmlObjectType, *, dry_run: bool = False) -> None:
        self.name = f"system/{system}/{obj_type.name}"
        self.dry_run = dry_run
        self.renames_ids = True
        self._file = file
        self._type = obj_type
        self._has_uid = "__UID__" in obj_type.order or any(p.element == "__UID__" for p in obj_type.properties)
        self._by_id = ById(file.path, self._records_by_id)
        self._props = {p.name: p for p in obj_type.properties}
        self.write_only = frozenset(p.name for p in obj_type.properties if not p.readable)

    # reading -----------------------------------------------------------------

    def _mine(self, record: XmlRecord) -> bool:
        return _local(record.tag) == self._type.element

    def _id(self, record: XmlRecord) -> str | None:
        for element in ("__UID__", "__NAME__"):
            found = record.values(element)
            if found and found[0]:
                return found[0]
        return None

    def _object(self, record: XmlRecord, wanted: set[str] | None) -> Obj:
        where = f"{self._file.path.name}, line {record.line}"
        if record.problem:
            return {"dn": f"{where}: {record.problem}"}
        object_id = self._id(record)
        if object_id is None:
            return {"dn": f"{where}: no __UID__ or __NAME__"}
        obj: Obj = {"_id": object_id}
        for prop in self._type.properties:
            if not prop.readable or (wanted is not None and prop.name not in wanted) or prop.name == "_id":
                continue
            texts = [t for t in record.values(prop.element) if t != ""]
            if not texts:
                continue
            if len(texts) > 1 and not prop.many:
                return {"_id": object_id, UNREADABLE: f"{where}: {len(texts)} <{prop.element}> elements for "
                                                      f"the single-valued {prop.name}"}
            try:
                values = [typed(prop.name, prop.type, t) for t in texts]
            except ValueError as exc:
                return {"_id": object_id, UNREADABLE: f"{where}: {exc}"}
            obj[prop.name] = values if prop.many else values[0]
        return obj

    def stored(self, values: Obj) -> Obj:
        """``values`` as a write leaves them in the file and a read answers them: ``"true"``
        for a boolean property is true, ``"41"`` for an integer one 41, 5 for a string one
        ``"5"``; an empty text is no element, so no value."""
        out: Obj | None = None
        for name, value in values.items():
            prop = self._props.get(name)
            if prop is None or name == "_id" or value is None or (type(value) is str and value
                                                                  and prop.type == "string"):
                continue  # (the common case, decided without a conversion)
            if isinstance(value, list) != prop.many:
                continue  # refused by the write, which says why
            try:
                texts = [_text(name, v) for v in (value if prop.many else [value])]
                read = [typed(name, prop.type, t) for t in texts if t != ""]
            except (ValueError, ObjectRejected):
                continue
            back = read if prop.many else (read[0] if read else None)
            if type(back) is not type(value) or back != value:
                out = dict(values) if out is None else out
                out[name] = back
        return values if out is None else out

    def _read_pages(self, spec: QuerySpec) -> Iterator[list[Obj]]:
        refuse_native(spec, self.name, "XML")
        wanted = wanted_fields(spec)
        name = self._file.path.name
        return paged(once_each((self._object(r, wanted), f"{name}, line {r.line}")
                               for r in self._file.records() if self._mine(r)), spec)

    def _read_many(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        return self._by_id.objects(ids, fields, self._object)

    def _records_by_id(self) -> Iterator[tuple[str, XmlRecord]]:
        for record in self._file.records():
            if self._mine(record) and (object_id := self._id(record)) is not None:
                yield object_id, record

    def count(self) -> int | None:
        return sum(1 for r in self._file.records() if self._mine(r))

    # writing -----------------------------------------------------------------

    def _write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        with self._file.locked():
            document = self._file.document()
            namespace = self._namespace(document)
            held = _Held()
            for record in document.records:
                if self._mine(record):
                    held.add(record, self._id(record))
            results = apply_each(ops, lambda op: self._apply(op, document, held, namespace), self.name,
                                 "xml.write_failed")
            if any(r.ok for r in results):
                document.records = [r for r in document.records if id(r) not in held.deleted]
                self._file.replace(document)
        return results

    def _namespace(self, document: XmlDocument) -> str:
        """The namespace of the class's object elements and their own elements: the
        schema's; without one, that of the file's objects of the class as they are bound
        where they are written (OpenICF's extension namespace where nothing binds them)."""
        if self._file.settings.namespace:
            return self._file.settings.namespace
        mine = next((r for r in document.records if self._mine(r)), None)
        prefix = mine.tag.rpartition(":")[0] if mine else "ri"
        return document.namespaces(mine).get(prefix, _EXTENSION_NS if prefix else "")

    def _apply(self, op: WriteOp, document: XmlDocument, held: _Held, namespace: str) -> WriteResult:
        props = self._props
        if op.kind == "create":
            names = _Names(document, None, namespace)
            record = XmlRecord(names.qualified(self._type.element), 0)
            self._set(record, props, names, op.values, "NOT_CREATABLE")
            if self._has_uid and not record.values("__UID__"):
                self._set_element(record, "__UID__", [str(uuid.uuid4())], names)
            if not record.values("__NAME__") or not record.values("__NAME__")[0]:
                raise ObjectRejected(f"{self.name}: a create needs a __NAME__")
            held.refuse_taken(self.name, record, None)
            empty = [p.name for p in props.values() if p.required and not record.values(p.element)]
            if empty:
                raise ObjectRejected(f"{self.name}: a create needs {', '.join(empty)} (required)")
            document.records.append(record)
            held.add(record, self._id(record))
            return WriteResult(op, id=self._id(record), obj=self._object(record, None))
        found = held.by_id.get(op.id or "")
        if found is None:
            raise NotFound(f"{self.name}/{op.id}: no such object")
        record = found
        if op.kind == "delete":
            held.remove(record, op.id or "")
            held.deleted.add(id(record))
            return WriteResult(op, id=op.id)
        changed = XmlRecord(record.tag, record.line, list(record.children), attributes=record.attributes)
        self._set(changed, props, _Names(document, record, namespace), op.values, "NOT_UPDATEABLE")
        new_id = self._id(changed)
        if new_id is None:
            raise ObjectRejected(f"{self.name}/{op.id}: the __UID__ and __NAME__ cannot both be emptied")
        held.refuse_taken(f"{self.name}/{op.id}", changed, record)
        held.remove(record, op.id or "")
        record.children = changed.children
        held.add(record, new_id)
        return WriteResult(op, id=new_id, obj=self._object(record, None))

    def _set(self, record: XmlRecord, props: Mapping[str, XmlProperty], names: _Names,
             values: Obj, unless: str) -> None:
        """Write ``values`` into an object; a property flagged ``unless`` (``NOT_CREATABLE``
        on a create, ``NOT_UPDATEABLE`` on an update) is left as it is, as OpenICF does; a
        value XML cannot hold fails the object."""
        for name, value in values.items():
            prop = props.get(name)
            if prop is None:
                if name == "_id":
                    continue  # an object's id is its __UID__: written through a property naming it
                raise ObjectRejected(f"{self.name}: no property {name!r} in objectTypes.{self._type.name}")
            if unless in prop.flags:
                continue
            items = value if isinstance(value, list) else [value]
            if len(items) > 1 and not prop.many:
                raise ObjectRejected(f"{name}: {len(items)} values for a single-valued property")
            texts = [checked_text(name, prop.type, _xml_text(name, _text(name, v))) for v in items if v is not None]
            self._set_element(record, prop.element, texts, names)

    def _set_element(self, record: XmlRecord, element: str, texts: list[str], names: _Names) -> None:
        """The elements of ``element`` hold ``texts``: an element keeping its text stays as
        it is, the others take the new texts in order, keeping their XML attributes
        (``xml:lang``); new ones are named with a prefix bound where they are written."""
        kept = [c for c in record.children if _local(c.name) != element]
        old = [c for c in record.children if _local(c.name) == element]
        new = [t for t in texts if t != ""]
        # By text, each element in order: a property of many values is matched in one pass.
        by_text: dict[str, deque[int]] = {}
        for at, child in enumerate(old):
            by_text.setdefault(child.text, deque()).append(at)
        written: list[XmlElement | None] = []
        for text in new:
            spots = by_text.get(text)
            written.append(old[spots.popleft()] if spots else None)
        taken = {id(c) for c in written if c is not None}
        left = deque(c for c in old if id(c) not in taken)
        elements: list[XmlElement] = []
        for same, text in zip(written, new, strict=True):
            if same is None and left:
                same = XmlElement(left[0].name, text, left.popleft().attributes)
            elements.append(same or XmlElement(names.qualified(element), text))
        record.children = sorted(kept + elements, key=lambda c: self._type.position(_local(c.name)))


class _Names:
    """Names for the elements written in an object (``within``, None for a new one) or
    the container: OpenICF's elements in its namespace, the others in the class's, each
    with a prefix bound there (declared on the container when none is)."""

    def __init__(self, document: XmlDocument, within: XmlRecord | None, namespace: str) -> None:
        self._document = document
        self._within = within
        self._namespace = namespace

    def qualified(self, element: str) -> str:
        icf = element.startswith("__") and element.endswith("__") and element not in ("__ACCOUNT__", "__GROUP__")
        namespace, default = (ICF_NS, "icf") if icf else (self._namespace, "ri")
        prefix = self._document.prefix(namespace, default, self._within) if namespace else ""
        return f"{prefix}:{element}" if prefix else element


class _Held:
    """The objects of one class in a document being written: by id, and by each value of
    their ``__UID__`` and ``__NAME__``, which no two objects of a class share."""

    def __init__(self) -> None:
        self.by_id: dict[str, XmlRecord] = {}
        self.by_value: dict[tuple[str, str], XmlRecord] = {}
        self.deleted: set[int] = set()

    def add(self, record: XmlRecord, object_id: str | None) -> None:
        if object_id is not None:
            self.by_id.setdefault(object_id, record)
        for element in _KEYS:
            for value in record.values(element):
                self.by_value.setdefault((element, value), record)

    def remove(self, record: XmlRecord, object_id: str) -> None:
        if self.by_id.get(object_id) is record:
            del self.by_id[object_id]
        for element in _KEYS:
            for value in record.values(element):
                if self.by_value.get((element, value)) is record:
                    del self.by_value[(element, value)]

    def refuse_taken(self, where: str, record: XmlRecord, itself: XmlRecord | None) -> None:
        """ObjectRejected when another object holds one of ``record``'s keys."""
        for element in _KEYS:
            for value in record.values(element):
                holder = self.by_value.get((element, value))
                if holder is not None and holder is not itself:
                    raise ObjectRejected(f"{where}: an object with {element} {value!r} exists already")


_KEYS = ("__UID__", "__NAME__")


# What XML 1.0 cannot hold, even as a character reference: control characters but tab,
# line feed and carriage return, U+FFFE, U+FFFF, and half characters (unpaired surrogates).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(name: str, text: str) -> str:
    """``text`` about to be written for the property ``name``, once XML can hold it: a
    file holding what it cannot would fail every later read of it."""
    bad = _NOT_XML.search(text)
    if bad is not None:
        char = bad.group()
        what = ("a control character" if char < " " else "a noncharacter" if char > "\udfff"
                else "half of a character, an unpaired surrogate")
        raise ObjectRejected(f"{name}: U+{ord(char):04X} ({what}, at position {bad.start()}) cannot be written "
                             "to an XML file: it would not read back")
    return text


def _escaped(text: str) -> str:
    """Element text as written: ``&``, ``<``, ``>`` escaped, and a carriage return as a
    character reference, which a reader does not turn into a line feed."""
    return escape(text, {"\r": "&#13;"})


def _attributes(attributes: Attributes) -> str:
    """XML attributes as written (tab, line feed and carriage return as references)."""
    return "".join(f" {name}={quoteattr(value)}" for name, value in attributes)


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ObjectRejected(f"{name}: an element holds text, not {type(value).__name__}")


class XmlSystem(System):
    """One configured XML file."""

    def __init__(self, name: str, config: Mapping[str, Any], *, file: str, base: Path) -> None:
        self.name = name
        self._config = config
        self._conf_file = file
        self._settings = parse_xml_config(file, config, base)
        self._file = XmlFile(self._settings)

    def resource(self, object_type: str, *, dry_run: bool = False) -> XmlResource:
        obj_type = object_type_named(self._settings.types, object_type, self._conf_file)
        return XmlResource(self.name, self._file, obj_type, dry_run=dry_run)

    def warnings(self) -> list[ConfigError]:
        return list(self._settings.warnings)

    def test(self) -> Mapping[str, Any]:
        report = system_test_report(self.name, self._config, "XML Connector", list(self._settings.types))
        try:
            counts: dict[str, int] = {}
            for record in self._file.records():
                counts[_local(record.tag)] = counts.get(_local(record.tag), 0) + 1
            report["xml"] = {"file": str(self._settings.file), "objects": counts}
        except IdsyncError as error:
            report.failed(error)
        return report


def open_xml_system(name: str, config: Mapping[str, Any], *, file: str, base: Path) -> XmlSystem:
    """The connector registry's entry point for ``org.forgerock.openicf.connectors.xml.XMLConnector``."""
    return XmlSystem(name, config, file=file, base=base)
