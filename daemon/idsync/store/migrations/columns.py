"""What the migrations that change many columns alike share: one ``ALTER TABLE`` per table."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from alembic import op

__all__ = ["alter_tables"]

_Column = TypeVar("_Column")


def alter_tables(dialects: Collection[str], columns: Mapping[str, Sequence[_Column]],
                 change: Callable[[_Column], str]) -> None:
    """On a store of one of ``dialects`` (nothing elsewhere), each table of ``columns``
    altered once, each of its columns as ``change`` writes it (``MODIFY ...``, ``ALTER
    COLUMN ...``): one rebuild of the table, not one per column."""
    dialect = op.get_bind().dialect.name
    if dialect not in dialects:
        return
    quote = '"' if dialect == "postgresql" else "`"
    for table, listed in columns.items():
        op.execute(f"ALTER TABLE {quote}{table}{quote} {', '.join(change(c) for c in listed)}")
