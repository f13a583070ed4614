"""The CSV connector's configuration: a ``provisioner.openicf-<name>.json`` whose
``connectorRef`` names OpenICF's CSV file connector, read into a frozen dataclass;
every problem a ``ConfigError`` naming the file and the key.

``configurationProperties`` keeps that connector's names: ``csvFile`` (required),
``headerUid`` (the column holding each row's id and name, ``uid`` by default),
``headerPassword`` (``password``), ``encoding`` (``utf-8``), ``fieldDelimiter``
(``,``), ``quoteCharacter`` (``"``), ``newlineString`` (``\\n``, what rows written
end with) and ``syncFileRetentionCount`` (how many copies of the file liveSync keeps,
3: ``changes.py``). ``objectTypes`` maps each property to a column by ``nativeName``;
``__NAME__`` and ``__UID__`` are the ``headerUid`` column, ``__PASSWORD__`` the
``headerPassword`` one and ``__DESCRIPTION__`` the ``description`` column.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsync.connectors.base import ColumnObjectType, ColumnProperty, account_properties
from idsync.errors import ConfigError, ConfigWarning
from idsync.keys import unknown_settings

__all__ = ["CsvObjectType", "CsvProperty", "CsvSettings", "parse_csv_config"]

_KNOWN = frozenset({"csvFile", "headerUid", "headerPassword", "encoding", "fieldDelimiter", "quoteCharacter",
                    "newlineString", "syncFileRetentionCount"})
_TYPES = frozenset({"string", "boolean", "integer", "number", "null"})
_ACCOUNT = {"nativeType": "__ACCOUNT__", "properties": {}}


# A CSV column behind a property, and the object type of the rows (``connectors/base.py``).
CsvProperty = ColumnProperty
CsvObjectType = ColumnObjectType


@dataclass(frozen=True)
class CsvSettings:
    file: Path
    uid: str
    password: str
    encoding: str
    delimiter: str
    quote: str
    newline: str
    keep: int  # copies of the file liveSync keeps (``syncFileRetentionCount``)
    types: Mapping[str, CsvObjectType]
    warnings: tuple[ConfigWarning, ...]


def parse_csv_config(file: str, config: Mapping[str, Any], base: Path) -> CsvSettings:
    """The settings of one CSV provisioner; ``base``: what a relative ``csvFile`` is under."""
    props = config.get("configurationProperties") or {}
    where = "configurationProperties"
    # First: a misspelt key (``csvFil``, ``headerUID``) is the error to tell, not the setting it left unset.
    warnings: list[ConfigWarning] = unknown_settings([k for k in props if not k.endswith("_file")], _KNOWN,
                                                     file=file, prefix=where)
    path = props.get("csvFile")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(file, f"{where}.csvFile", "required: the path of the CSV file")
    texts: dict[str, str] = {}
    for key, default in (("headerUid", "uid"), ("headerPassword", "password"), ("encoding", "utf-8"),
                         ("fieldDelimiter", ","), ("quoteCharacter", '"'), ("newlineString", "\n")):
        value = props.get(key)
        if value is None:
            value = default
        if not isinstance(value, str) or (not value and key != "headerPassword"):
            raise ConfigError(file, f"{where}.{key}", "expected a non-empty string")
        texts[key] = value
    for key in ("fieldDelimiter", "quoteCharacter"):
        if len(texts[key]) != 1:
            raise ConfigError(file, f"{where}.{key}", f"expected one character, got {texts[key]!r}")
    if texts["fieldDelimiter"] == texts["quoteCharacter"] or texts["fieldDelimiter"] in "\r\n":
        raise ConfigError(file, f"{where}.fieldDelimiter", "must differ from the quote character and the line end")
    if texts["newlineString"] not in ("\n", "\r\n", "\r"):
        raise ConfigError(file, f"{where}.newlineString", "expected \\n, \\r\\n or \\r")
    try:
        codecs.lookup(texts["encoding"])
    except LookupError:
        raise ConfigError(file, f"{where}.encoding", f"unknown encoding {texts['encoding']!r}") from None
    keep = props.get("syncFileRetentionCount", 3)
    if keep is None:
        keep = 3
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(file, f"{where}.syncFileRetentionCount", "expected a whole number of at least 1")
    csv_path = Path(path)
    types = _object_types(file, config.get("objectTypes") or {"account": _ACCOUNT}, texts)
    return CsvSettings(file=csv_path if csv_path.is_absolute() else base / csv_path, uid=texts["headerUid"],
                       password=texts["headerPassword"], encoding=texts["encoding"],
                       delimiter=texts["fieldDelimiter"], quote=texts["quoteCharacter"],
                       newline=texts["newlineString"], keep=keep, types=types, warnings=tuple(warnings))


def _object_types(file: str, raw: Any, texts: Mapping[str, str]) -> dict[str, CsvObjectType]:
    special = {"__NAME__": texts["headerUid"], "__UID__": texts["headerUid"],
               "__PASSWORD__": texts["headerPassword"], "__DESCRIPTION__": "description"}
    types: dict[str, CsvObjectType] = {}
    for type_name, props in account_properties(file, raw, "CSV connector", _TYPES):
        found: list[CsvProperty] = []
        for _, name, prop in props:
            kind = prop.get("type", "string")
            column = str(prop.get("nativeName") or name)
            flags = prop.get("flags") or []
            found.append(CsvProperty(name=name, column=special.get(column, column),
                                     type="string" if kind == "null" else kind,
                                     required=prop.get("required") is True,
                                     flags=frozenset(str(f) for f in flags if isinstance(f, str))))
        types[type_name] = CsvObjectType(type_name, tuple(found))
    return types
