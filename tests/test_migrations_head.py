"""The store skips Alembic when its schema is current by comparing one query's answer with
the newest migration's file name: that holds only while each migration's revision is its
file's number and each revises the one before."""

from __future__ import annotations

import re
from pathlib import Path

VERSIONS = Path(__file__).resolve().parent.parent / "daemon" / "idsync" / "store" / "migrations" / "versions"


def test_migration_revisions_are_their_file_numbers_in_a_chain() -> None:
    files = sorted(VERSIONS.glob("[0-9]*_*.py"))
    assert files
    previous = None
    for path in files:
        text = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision = "([^"]+)"', text, re.MULTILINE)
        down = re.search(r"^down_revision = (None|\"[^\"]+\")", text, re.MULTILINE)
        assert revision and down, path.name
        assert revision.group(1) == path.name.split("_", 1)[0], path.name
        assert down.group(1).strip('"') == (previous or "None"), path.name
        previous = revision.group(1)
