"""Link qualifiers: one source object linked to several targets of one mapping.

A mapping's ``linkQualifiers`` (PingIDM's) names the kinds of link a source can
have, as a static list or a script answering the list per source object
(``object``, ``oldValue``, ``mapping``; ``returnAll`` true: every qualifier the
mapping knows, for the target phase). Each source is assessed once per
qualifier: the link of that qualifier, the correlation of that qualifier
(``correlationQuery`` entries name one each), its situation, its policies
(their conditions and scripts see ``linkQualifier``) and its projected target.
A mapping without ``linkQualifiers`` has the one qualifier ``default``.

In the target phase, an unclaimed target is assessed once per qualifier whose
link holds it; one that no link holds, once, with the first qualifier of the
full list (PingIDM assesses it once per qualifier, which for an unlinked
target repeats the same UNASSIGNED decision). A link made since the run started
leaves its target out of that qualifier's assessment (``of_targets``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from idsync.config.mappings import MappingDef
from idsync.errors import IdsyncError, ScriptError
from idsync.query.named import NamedQueries
from idsync.resource import Obj, Resource
from idsync.scripts import Script
from idsync.store.links import LinkSet
from idsync.sync.correlation import Correlator

__all__ = ["LinkQualifiers"]


class LinkQualifiers:
    """The link qualifiers of one mapping, and the link set of each."""

    def __init__(self, mapping: MappingDef, links: LinkSet) -> None:
        self.mapping = mapping
        self._base = links
        self._links: dict[str, LinkSet] = {}
        self._all: tuple[str, ...] | None = None

    def links(self, qualifier: str) -> LinkSet:
        if qualifier not in self._links:
            self._links[qualifier] = dataclasses.replace(self._base, qualifier=qualifier)
        return self._links[qualifier]

    def all(self) -> tuple[str, ...]:
        """Every qualifier of the mapping (a script is asked once, with ``returnAll``)."""
        if self._all is None:
            q = self.mapping.link_qualifiers
            if isinstance(q, Script):
                answer = q(object=None, oldValue=None, returnAll=True, mapping=self.mapping.name)
                self._all = _qualifiers(answer) or ("default",)
            else:
                self._all = q
        return self._all

    def of_source(self, obj: Obj, old: Obj | None = None) -> tuple[str, ...]:
        """The qualifiers ``obj`` is assessed for (a script's answer may be empty)."""
        q = self.mapping.link_qualifiers
        if not isinstance(q, Script):
            return q
        return _qualifiers(q(object=obj, oldValue=old, returnAll=False, mapping=self.mapping.name))

    def of_sources(self, objs: Sequence[Obj]) -> tuple[dict[str, list[Obj]], dict[str, str]]:
        """qualifier -> the sources assessed for it, in page order; and source id -> why
        its qualifiers could not be found (the script failed or answered no list)."""
        q = self.mapping.link_qualifiers
        if not isinstance(q, Script):
            return {name: list(objs) for name in q}, {}
        groups: dict[str, list[Obj]] = {}
        failed: dict[str, str] = {}
        answers = q.call_many([{"object": o, "oldValue": None, "returnAll": False, "mapping": self.mapping.name}
                               for o in objs])
        for obj, answer in zip(objs, answers, strict=True):
            try:
                if isinstance(answer, ScriptError):
                    raise answer
                for name in _qualifiers(answer):
                    groups.setdefault(name, []).append(obj)
            except IdsyncError as exc:
                failed[obj["_id"]] = str(exc)
        return groups, failed

    def correlators(self, target: Resource, queries: NamedQueries) -> dict[str, Correlator]:
        """qualifier -> its correlator, for the qualifiers that have a correlation."""
        out: dict[str, Correlator] = {}
        for name in self.all():
            c = self.mapping.correlation_for(name)
            if c is not None:
                out[name] = Correlator(c, target, self.mapping.default_target_fields, queries, name)
        return out

    def of_targets(self, unclaimed: Sequence[Obj], linked_before: dt.datetime | None = None,
                   ) -> Iterator[tuple[str, list[Obj], dict[str, str]]]:
        """(qualifier, targets, target id -> linked source id) for the target phase;
        ``linked_before``: a target is left out of the qualifiers whose link of it was
        made at or after then (linked beside the run: the next run's)."""
        names = self.all()
        ids = [o["_id"] for o in unclaimed]
        by_name = {name: self.links(name).sources_of(ids) for name in names}
        late = {name: self.links(name).linked_since(list(found), linked_before)
                if linked_before is not None else set() for name, found in by_name.items()}
        groups: dict[str, list[Obj]] = {name: [] for name in names}
        for obj in unclaimed:
            held = [name for name in names if obj["_id"] in by_name[name]]
            for name in held or names[:1]:
                if obj["_id"] not in late[name]:
                    groups[name].append(obj)
        for name, targets in groups.items():
            if targets:
                yield name, targets, {t["_id"]: by_name[name][t["_id"]] for t in targets if t["_id"] in by_name[name]}

    def add_links(self, conn: Connection, links: Sequence[tuple[str, str, str]],
                  digests: Mapping[str, Mapping[str, str]] | None = None, *,
                  new_targets: Collection[str] = (), written: Mapping[str, Mapping[str, str]] | None = None,
                  in_step: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Link (qualifier, source id, target id) triples; ``digests``: qualifier ->
        source id -> the digest the new link keeps; ``new_targets``: targets this
        transaction created, which no link can name yet; ``written``: as ``digests``, of
        the write-only values written (``written.py``); ``in_step``: likewise, the managed
        revision the two objects agree at (``links.in_step``)."""
        for name, pairs in _grouped(links).items():
            self.links(name).add(conn, pairs, (digests or {}).get(name), new_targets=new_targets,
                                 written=(written or {}).get(name), in_step=(in_step or {}).get(name))

    def remove_targets(self, conn: Connection, targets: Sequence[tuple[str, str]]) -> None:
        """Drop the links of (qualifier, target id) pairs."""
        grouped: dict[str, list[str]] = {}
        for name, target_id in targets:
            grouped.setdefault(name, []).append(target_id)
        for name, ids in grouped.items():
            self.links(name).remove_targets(conn, ids)


def _grouped(links: Sequence[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for name, source_id, target_id in links:
        out.setdefault(name, []).append((source_id, target_id))
    return out


def _qualifiers(answer: Any) -> tuple[str, ...]:
    if answer is None:
        return ()
    if isinstance(answer, str):
        answer = [answer]
    if not isinstance(answer, list | tuple) or not all(isinstance(a, str) and a for a in answer):
        raise ScriptError(f"the linkQualifiers script must return a list of names, not {type(answer).__name__}")
    return tuple(dict.fromkeys(answer))
