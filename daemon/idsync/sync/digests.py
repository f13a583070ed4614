"""Knowing a linked store object is unchanged without reading it.

A recon into the store keeps, with each link, what it last found the target to
hold: a digest of the projected target and the revision of the target that
matched it (``links.digest``: ``DIGEST/REV``). The next recon projects the
source again; when the link's digest is that projection's and the target is
still at that revision, the target holds what it held then, so the assessment
is CONFIRMED, UPDATE, unchanged, as reading and comparing the target would
find, and neither the target's data nor the comparison is needed: only its
revision, read for a page of ids at once.

Every store write moves a revision, so an object changed since (by the API,
implicit sync, liveSync, the other direction of a bidirectional sync) no longer
matches and is read and compared as before; so is any link another writer made
(no digest), and any source whose projection changed.

A digest is kept only when the comparison it stands for was made: the target
as read equalled the projection (unchanged), or the object the store answered
after a create or an update does. And only for mappings where a target cannot
change the decision: a managed target, CONFIRMED's policy a plain UPDATE, no
property condition (it sees the target), no ``"merge"`` list (kept values come
from the target), no ``onUpdate`` hook, and no mapped secret (a digest of a
password must not sit in the store). Anything else reads the target every time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from idsync.config.mappings import MappingDef
from idsync.config.policies import Action, Situation
from idsync.config.properties import diff
from idsync.resource import Obj

__all__ = ["TargetDigests"]

_VERSION = "1"  # a change of how a projection is digested must change this


@dataclass(frozen=True)
class TargetDigests:
    """The digests of one mapping's projections; ``enabled`` false when the mapping
    may decide from what the target holds (then nothing here is used)."""

    enabled: bool
    salt: bytes = b""
    _hashers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, mapping: MappingDef, *, managed_target: bool, single_valued: Mapping[str, str],
           secret_names: frozenset[str]) -> TargetDigests:
        if not managed_target or not mapping.enable_linking or not _decides_from_source(mapping, secret_names):
            return cls(False)  # (a digest is kept with the link: none without links)
        # What else makes the same projection right or wrong: the mapping, and which
        # properties the store's schema takes as single-valued (a change reads again).
        salt = repr((_VERSION, mapping.name, sorted(single_valued.items()))).encode()
        return cls(True, salt)

    def projection(self, projected: Obj, qualifier: str) -> str | None:
        """The digest of a projected target (``None`` when disabled)."""
        if not self.enabled:
            return None
        # repr of JSON-like values (str, numbers, lists, dicts in the rules' order) is
        # exact: equal text means equal values, and a type change is a different text.
        hasher = self._hashers.get(qualifier)
        if hasher is None:
            # The salt and qualifier are hashed once; each projection continues a copy.
            hasher = self._hashers[qualifier] = hashlib.blake2b(self.salt + qualifier.encode() + b"\0",
                                                                digest_size=16)
        hasher = hasher.copy()
        hasher.update(repr(projected).encode("utf-8", "surrogatepass"))
        return hasher.hexdigest()

    @staticmethod
    def kept(projection: str, rev: str) -> str:
        """What the link keeps: the projection's digest and the target's revision."""
        return f"{projection}/{rev}"

    @staticmethod
    def settled(projected: Obj, written: Obj) -> bool:
        """Whether the object a write left equals the projection, as the next
        recon's comparison would find (so its digest may be kept)."""
        return not diff(projected, written)


def _decides_from_source(mapping: MappingDef, secret_names: frozenset[str]) -> bool:
    properties = mapping.properties
    if properties.has_merge() or "onUpdate" in mapping.hooks:
        return False
    for rule in properties.rules:
        if rule.condition is not None or rule.source == () or rule.target[0].lower() in secret_names:
            return False
    policies = mapping.policies.for_situation(Situation.CONFIRMED)
    if not policies:
        return mapping.policies.defaults[Situation.CONFIRMED] == Action.UPDATE
    _, first = policies[0]
    return first.condition is None and first.post_action is None and first.action == Action.UPDATE
