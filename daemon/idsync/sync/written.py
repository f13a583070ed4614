"""Values a target takes but never shows: written again only when they change.

A password (OpenICF's ``__PASSWORD__``) or a property flagged ``NOT_READABLE`` or
``NOT_RETURNED_BY_DEFAULT`` goes to the target system and never comes back in a
read. Compared with the target as read, the projection always finds it changed, so
without more every recon writes every linked user's password again: 100,000 writes
for nothing at 100,000 users, and in Active Directory a new ``pwdLastSet`` each time.

So each link keeps (``links.written``, migration 0011) a keyed digest of the
write-only values last written through it (``Keyring.seal``: HMAC-SHA-256 under a key
derived from the project's key, so the store holds nothing a guess can be checked
against). A later run whose projection seals to the same digest leaves those values
out of its update; any other (a new password, a link made before or without a digest,
a write that failed) is written, and the digest kept once the write succeeded. A
value the target does return is compared as always: only properties missing from
the target as read are judged by the digest.

What no digest can see is a value changed in the target by someone else: a password
reset in the directory itself stays until the source's value changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from idsync.config.mappings import MappingDef
from idsync.config.project import Project
from idsync.errors import IdsyncError
from idsync.resource import Resource

__all__ = ["WrittenValues", "written_values"]

_NO_VALUE: tuple[Any, ...] = (None, "", [])


@dataclass(frozen=True)
class WrittenValues:
    """The write-only properties one mapping writes, and how their digest is made;
    ``enabled`` false when there are none (or no key to seal with)."""

    mapping: str
    names: frozenset[str]
    seal: Callable[[bytes], str] | None = None

    @classmethod
    def of(cls, mapping: MappingDef, write_only: frozenset[str],
           seal: Callable[[bytes], str] | None) -> WrittenValues:
        # The rules name what a target gets; a hook or a role assignment may add anything.
        open_ended = "onCreate" in mapping.hooks or "onUpdate" in mapping.hooks
        names = write_only if open_ended else write_only & mapping.properties.target_fields()
        return cls(mapping.name, frozenset(names), seal if names else None)

    @property
    def enabled(self) -> bool:
        return self.seal is not None

    def sealed(self, values: Mapping[str, Any], qualifier: str) -> str | None:
        """The digest of the write-only values of ``values`` (``None``: it has none, or
        the key cannot be read, and then every such value is written as before)."""
        if self.seal is None:
            return None
        shown = sorted((k, values[k]) for k in self.names if values.get(k) not in _NO_VALUE)
        if not shown:
            return None
        data = json.dumps([self.mapping, qualifier, shown], sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, default=str)
        try:
            return self.seal(data.encode("utf-8", "surrogatepass"))
        except IdsyncError:
            return None

    def left_out(self, changes: dict[str, Any], current: Mapping[str, Any], sealed: str | None,
                 kept: str | None) -> dict[str, Any]:
        """``changes`` without the write-only values the target was last given, as ``kept``
        (the link's digest) says: those the target as read does not show."""
        if sealed is None or sealed != kept or self.names.isdisjoint(changes):
            return changes
        return {k: v for k, v in changes.items() if k not in self.names or current.get(k) not in _NO_VALUE}


def written_values(project: Project, mapping: MappingDef, target: Resource) -> WrittenValues:
    """The write-only values ``mapping`` writes to ``target``, sealed with the project's key."""
    return WrittenValues.of(mapping, target.write_only,
                            project.keyring.seal if project.keyring is not None else None)
