"""A mapping's object hooks (``onCreate``, ``onUpdate``, ``onDelete``, ``onLink``,
``onUnlink``) with the variables PingIDM gives them, in every kind of run.

PingIDM runs them in one place for reconciliation, implicit synchronization and
liveSync alike, with ``source`` and ``target`` (the objects), ``sourceId`` and
``targetId``, ``situation``, ``linkQualifier``, ``context`` and ``mappingConfig`` (the
mapping's configuration), and ``oldSource`` (the source before the change in implicit
sync, null elsewhere). idsync gives the same; ``mappingConfig``, ``sourceId``,
``targetId``, ``context`` and a null ``oldSource`` only to a script whose text names them, since every call
hands its variables over as JSON. ``run_hook`` runs a side-effect hook (``onDelete``,
``onLink``, ``onUnlink``): its failure is the object's error in the run, never fatal to
the run; ``onCreate`` and ``onUpdate`` change the target and run in ``assess.py``.
``on_recon`` runs a mapping's ``onRecon`` at the start of a reconciliation (a recon, or
``reconById`` of one object, as PingIDM runs it for both).
"""

from __future__ import annotations

from typing import Any

from idsync.config.mappings import MappingDef
from idsync.errors import IdsyncError
from idsync.resource import Obj
from idsync.scripts import Script
from idsync.sync.summary import Counters

__all__ = ["hook_variables", "on_recon", "run_hook"]


def hook_variables(mapping: MappingDef, script: Script, *, source: Obj | None, target: Obj | None,
                   situation: str | None, qualifier: str, **more: Any) -> dict[str, Any]:
    """The variables of one call of ``script``, a hook of ``mapping``."""
    variables: dict[str, Any] = {"source": source, "target": target, "linkQualifier": qualifier,
                                 "mapping": mapping.name, **more}
    if situation:
        variables["situation"] = situation
    if script.mentions("mappingConfig"):
        variables["mappingConfig"] = dict(mapping.raw)
    if script.mentions("sourceId"):
        variables["sourceId"] = source.get("_id") if source else None
    if script.mentions("targetId"):
        variables["targetId"] = target.get("_id") if target else None
    if script.mentions("context"):
        variables.setdefault("context", {})
    if script.mentions("oldSource"):
        variables.setdefault("oldSource", None)  # PingIDM binds it to every hook: null but in implicit sync
    return variables


def run_hook(mapping: MappingDef, name: str, counters: Counters, *, source: Obj | None, target: Obj | None,
             situation: str | None = None, qualifier: str = "default") -> None:
    """Run the mapping's hook ``name``, if it has one; a failure is counted as an error."""
    script = mapping.hooks.get(name)
    if script is None:
        return
    try:
        script(**hook_variables(mapping, script, source=source, target=target, situation=situation,
                                qualifier=qualifier))
    except IdsyncError as exc:
        counters.error(f"{name} script failed: {exc}", situation=situation,
                       source_id=source.get("_id") if source else None,
                       target_id=target.get("_id") if target else None)


def on_recon(mapping: MappingDef, run_id: str) -> str | None:
    """Run the mapping's ``onRecon``, if it has one, with ``context`` (``recon.reconId``,
    ``recon.mapping``) and ``mappingConfig`` as PingIDM gives them: why it failed, or None."""
    script = mapping.hooks.get("onRecon")
    if script is None:
        return None
    context = {"recon": {"reconId": run_id, "mapping": mapping.name}}
    try:
        script(context=context, mappingConfig=dict(mapping.raw), mapping=mapping.name)
    except IdsyncError as exc:
        return f"onRecon script failed: {exc}"
    return None
