"""The ``_queryFilter`` syntax tree: one shape, many translators (SQL, LDAP, SCIM, SOQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["And", "Compare", "Literal_", "Node", "Not", "Op", "Or", "Path", "Present", "Value", "paths"]

Op = Literal["eq", "co", "sw", "gt", "ge", "lt", "le"]
Value = str | int | float | bool | None
Path = tuple[str, ...]  # JSON pointer segments: "/name/givenName" -> ("name", "givenName")


@dataclass(frozen=True)
class Compare:
    path: Path
    op: Op
    value: Value


@dataclass(frozen=True)
class Present:
    path: Path


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Literal_:
    """``true`` or ``false``."""

    value: bool


Node = Compare | Present | And | Or | Not | Literal_


def paths(node: Node) -> list[Path]:
    """Every path the filter compares or tests, in order."""
    match node:
        case Compare(path=path) | Present(path=path):
            return [path]
        case And(items=items) | Or(items=items):
            return [p for item in items for p in paths(item)]
        case Not(item=item):
            return paths(item)
    return []
