"""Which source attributes a mapping reads, so a recon asks a directory for those
and no others.

A directory answers faster, and idsync decodes faster, when a search names the
attributes it wants (docs/performance.md): eight attributes instead of all of them
halve the client's work. What to read is, in order: ``sourceQuery``'s ``_fields``,
``defaultSourceFields``, and else what the mapping itself uses: the source of each
property rule, the attributes its declarative conditions compare, the
``${source.NAME}`` placeholders of every declarative correlation query (one per
link qualifier) and named-query parameter, and the attributes of a declarative
``sourceCondition``. Anything that hands a script the whole source object
(``validSource``, a script ``sourceCondition``, a correlation script, a
``linkQualifiers`` script, a policy condition or action script, the per-object
hooks, a rule with ``"source": ""`` or a condition script) may read any
attribute, and may pass it on (to ``openidm`` calls): then the connector's
default set is read, as before. A property under an OpenICF special name
(``ldapGroups``, ``__ENABLE__``...) is a field like any other: the connector
knows what to ask the directory for it.
"""

from __future__ import annotations

import re

from idsync.config.mappings import Correlation, MappingDef
from idsync.query.ast import Node, paths
from idsync.query.bind import placeholders
from idsync.scripts import Script

__all__ = ["source_fields"]

# Hooks that are given the source object (``result`` is given the run's summary).
_OBJECT_HOOKS = ("onCreate", "onUpdate", "onDelete", "onLink", "onUnlink")
# A named query's parameter taken from the source: ``"${source.uid}"``, the whole value.
_PARAMETER = re.compile(r"^\$\{\s*source\.([^{}]+?)\s*\}$")


def _condition_fields(node: Node) -> set[str]:
    """Top-level source attributes a ``sourceCondition`` filter compares: it sees the
    source as ``/source/NAME``, ``/object/NAME`` and ``/NAME``."""
    return {path[1] if len(path) > 1 and path[0] in ("source", "object") else path[0] for path in paths(node)}


def source_fields(mapping: MappingDef) -> tuple[str, ...] | None:
    """The source fields a recon of ``mapping`` reads; ``None``: the source's default set."""
    if mapping.source_query.fields is not None:
        return mapping.source_query.fields
    if mapping.default_source_fields is not None:
        return mapping.default_source_fields
    correlations = mapping.correlations or ((mapping.correlation,) if mapping.correlation else ())
    whole_object = (
        mapping.valid_source is not None
        or isinstance(mapping.source_condition, Script)
        or isinstance(mapping.link_qualifiers, Script)
        or mapping.policies.reads_objects
        or any(hook in mapping.hooks for hook in _OBJECT_HOOKS)
        or any(c.kind == "script" for c in correlations)
    )
    used = None if whole_object else mapping.properties.source_fields()
    if used is None:
        return None
    if isinstance(mapping.source_condition, Node):
        used |= _condition_fields(mapping.source_condition)
    for correlation in correlations:
        used |= _correlation_fields(correlation)
    used -= {"_id", "linkQualifier"}
    return tuple(sorted(used))


def _correlation_fields(correlation: Correlation) -> set[str]:
    """The source attributes a declarative or named correlation binds (``${source.NAME}``);
    an ``expressionTree`` compares the projected target, which the property rules make."""
    exprs: list[str] = []
    if correlation.template is not None:
        exprs = [expr.strip() for expr in placeholders(correlation.template)]
    for value in correlation.query_params.values():
        found = _PARAMETER.match(value) if isinstance(value, str) else None
        if found:
            exprs.append(f"source.{found.group(1)}")
    fields: set[str] = set()
    for expr in exprs:
        head, _, rest = expr.partition(".")
        if head == "source" and rest:
            fields.add(rest.replace("/", ".").split(".")[0])
    return fields
