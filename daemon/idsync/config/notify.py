"""PingIDM's relationship change notification in ``managed.json``, and what idsync does of it.

PingIDM *notifies* a managed object when a relationship of it changes: its
``onUpdate`` and ``postUpdate`` scripts run and it is synchronized, as if it had
been updated. Three keys say which objects:

* ``notifySelf: true`` on a relationship property: the object holding the property,
  when the reference changes from the other end (written on the object referenced);
* ``notify: true`` on a ``resourceCollection`` entry (or the property): the object
  referenced, when the reference is added, changed or removed;
* ``notifyRelationships: [NAME, ...]`` on any property: when that property changes,
  the objects the object's relationship properties ``NAME`` reference.

idsync pushes both ends of a changed reference by implicit synchronization whatever
these say, and the users of a changed role or assignment (``sync/role_fanout.py``);
it runs the object scripts only of the object written. So what it does not follow is
the notified object's scripts and, for ``notifyRelationships`` beyond the role
model, its push. ``notified`` finds each key where that makes a difference: the
notified type has ``onUpdate``/``postUpdate`` that idsync runs (not PingIDM's stock
ones, which change nothing for an object whose values did not change) or, for
``notifyRelationships``, scripts that compute what it reads (``onRetrieve``). A key
that changes nothing (``notify: false``, a type without such scripts) gets no word.
``config/unused.py`` makes them ``validate`` warnings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from idsync.config.objectmodel import not_run
from idsync.scripts.paths import ScriptPaths
from idsync.scripts.stock import stock_script

__all__ = ["Notified", "notified"]

_UPDATE_SCRIPTS = ("onUpdate", "postUpdate")
# The notifications idsync carries out itself: a changed role pushes its members, a
# changed assignment the users of its roles.
_DONE = {"role": "members", "assignment": "roles"}


@dataclass(frozen=True)
class Notified:
    """A notification idsync does not follow: where (``key`` under ``objects[i].schema.properties``) and why."""

    key: str
    why: str


def notified(objects: list[Any], paths: ScriptPaths) -> Iterator[tuple[int, Notified]]:
    """For each managed type (its index in ``objects``), the notifications it asks for that
    idsync does not follow and that would make a difference."""
    types = {obj["name"]: obj for obj in objects if isinstance(obj, Mapping) and isinstance(obj.get("name"), str)}
    for i, obj in enumerate(objects):
        schema = obj.get("schema") if isinstance(obj, Mapping) else None
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        if not isinstance(props, Mapping) or not isinstance(obj.get("name"), str):
            continue
        for name, pdef in props.items():
            if isinstance(pdef, Mapping):
                yield from ((i, n) for n in _property(types, obj, name, pdef, props, paths))


def _property(types: Mapping[str, Any], owner: Mapping[str, Any], name: str, pdef: Mapping[str, Any],
              props: Mapping[str, Any], paths: ScriptPaths) -> Iterator[Notified]:
    kind = f"managed/{owner['name']}"
    relation, at = _relation(pdef, name)
    if relation is not None:
        scripts = _update_scripts(owner, paths)
        if scripts and (pdef.get("notifySelf") is True or relation.get("notifySelf") is True):
            key = f"{at}.notifySelf" if relation.get("notifySelf") is True else f"{name}.notifySelf"
            yield Notified(key, f"not followed: PingIDM runs {kind}'s {scripts} for an object whose {name} changes "
                                "from the other end (a reference written on the object referenced); idsync pushes "
                                "that object by implicit synchronization but runs its object scripts only when it "
                                "is written itself")
        for key, target in _notify(relation, pdef, at, name):
            if theirs := _update_scripts(types.get(target.removeprefix("managed/")), paths):
                yield Notified(key, f"not followed: PingIDM runs {target}'s {theirs} for the object a reference "
                                    f"of {name} names when the reference is added, changed or removed; idsync "
                                    "pushes that object by implicit synchronization but runs its object scripts "
                                    "only when it is written itself")
    names = pdef.get("notifyRelationships")
    if not isinstance(names, list):
        return
    told = [n for n in names if isinstance(n, str) and n != _DONE.get(str(owner["name"]))
            and any(_reacting(types.get(t.removeprefix("managed/")), paths) for t in _collections(props.get(n)))]
    if told:
        yield Notified(f"{name}.notifyRelationships", f"not followed: when {name} of a {kind} changes, PingIDM "
                       f"notifies the objects its {', '.join(told)} reference (their onUpdate and postUpdate run, "
                       "their onRetrieve is read again and they are synchronized); idsync neither runs their "
                       "scripts nor pushes them for that change: their next change or a recon does")


def _relation(pdef: Mapping[str, Any], name: str) -> tuple[Mapping[str, Any] | None, str]:
    """The relationship definition of a property (itself, or its array's ``items``) and its key."""
    if pdef.get("type") == "relationship":
        return pdef, name
    items = pdef.get("items")
    if pdef.get("type") == "array" and isinstance(items, Mapping) and items.get("type") == "relationship":
        return items, f"{name}.items"
    return None, name


def _notify(relation: Mapping[str, Any], pdef: Mapping[str, Any], at: str,
            name: str) -> Iterator[tuple[str, str]]:
    """(key, collection) of each ``notify: true``: a ``resourceCollection`` entry's, or the property's for all."""
    entries = relation.get("resourceCollection")
    listed = entries if isinstance(entries, list) else [entries]
    for j, entry in enumerate(listed):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            continue
        where = f"{at}.resourceCollection" + (f"[{j}]" if isinstance(entries, list) else "")
        if entry.get("notify") is True:
            yield f"{where}.notify", entry["path"]
        elif relation.get("notify") is True or pdef.get("notify") is True:
            yield (f"{at}.notify" if relation.get("notify") is True else f"{name}.notify"), entry["path"]


def _collections(pdef: Any) -> list[str]:
    relation, _ = _relation(pdef, "") if isinstance(pdef, Mapping) else (None, "")
    entries = relation.get("resourceCollection") if relation is not None else None
    return [e["path"] for e in (entries if isinstance(entries, list) else [entries])
            if isinstance(e, Mapping) and isinstance(e.get("path"), str)]


def _update_scripts(obj: Mapping[str, Any] | None, paths: ScriptPaths) -> str:
    """The notified type's update scripts idsync runs and that may change something: ``"onUpdate
    and postUpdate"``, one of them, or ``""``."""
    found = [event for event in _UPDATE_SCRIPTS if obj is not None and _runs(obj.get(event), event, paths)]
    return " and ".join(found)


def _reacting(obj: Mapping[str, Any] | None, paths: ScriptPaths) -> bool:
    """Whether notifying an object of this type would change something: it has update
    scripts, or scripts that compute what it reads (its own or a property's ``onRetrieve``)."""
    if obj is None:
        return False
    schema = obj.get("schema")
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    read = _runs(obj.get("onRetrieve"), "onRetrieve", paths) or any(
        isinstance(p, Mapping) and _runs(p.get("onRetrieve"), "onRetrieve", paths)
        for p in (props.values() if isinstance(props, Mapping) else ()))
    return read or bool(_update_scripts(obj, paths))


def _runs(config: Any, event: str, paths: ScriptPaths) -> bool:
    """A script idsync runs (not one of PingIDM's own it leaves out) that is not made of
    PingIDM's stock calls alone."""
    return config is not None and not_run(config, paths) is None and stock_script(config, event) is None
