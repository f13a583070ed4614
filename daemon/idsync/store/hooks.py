"""The object scripts of ``managed.json`` and the policies, around each write of the store.

``ManagedResource`` calls ``ObjectHooks`` for every object it writes, whoever
writes it (the command line, the HTTP API, a script's ``openidm``, implicit
synchronization, a recon or a liveSync), in PingIDM's order:

    create:  onCreate(object) -> policies -> virtual properties -> onValidate -> onStore -> store
             -> postCreate(newObject)
    update:  onUpdate(object, oldObject) -> policies -> virtual properties -> onValidate -> onStore
             -> store -> postUpdate(object, oldObject)
    delete:  onDelete(object) -> store -> postDelete(oldObject)
    pushed:  onSync(oldObject, newObject, syncResults), once implicit synchronization
             pushed a change made through the managed service (``managed/service.py``)
    read:    onRetrieve(object) and onRead(object), for a read by id (``retrieved``);
             onRetrieve for a query that asks for it (``executeOnRetrieve=true``) and
             for what a mapping reads from its managed source (recon, implicit sync);
             a recon compares the stored values of a managed target

As in PingIDM, a write computes each virtual property (``isVirtual``) shown by default
through its ``onRetrieve`` and stores the value: a query answers what the last write
computed without running a script per object, and a read by id computes it anew. A
batch of creates (``creating_many``, a recon's page) computes each such property for all
its objects in one call into JavaScript, when nothing else its creates run is JavaScript.
A property script gets only the variables it can reach (``Script.reaches``).

A property's ``onValidate``, ``onStore`` and ``onRetrieve`` get ``property``,
``propertyName`` and ``object``; ``onStore`` and ``onRetrieve`` answer the value to
keep (``null`` removes it). An object script changes ``object`` in place; as in
PingIDM, ``newObject`` is that same object in ``onCreate``, ``onUpdate`` and the
``post`` scripts, and ``oldObject`` the stored one (``null`` on create). Every script
also gets ``request`` (``method``, ``resourcePath``) and ``resourceName``.

A script that throws, or a broken policy, refuses the object (``ObjectRejected``,
``PolicyFailed``): the object fails alone, in a recon as anywhere. The ``post``
scripts and ``onSync`` run once the change is committed; theirs is a failure of their
own, logged, and the change stands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import structlog

from idsync.config.managed import ManagedType
from idsync.config.objectmodel import PROPERTY_EVENTS, ObjectScript, TypeModel, in_javascript
from idsync.errors import IdsyncError, ObjectError, ObjectRejected, ScriptError
from idsync.store.policy import Taken, check
from idsync.store.validation import PolicyFailed, failures_list

__all__ = ["ObjectHooks", "PostScript", "execute_on_retrieve"]

log = structlog.get_logger(__name__)

# The sandbox binds newObject as the very object ``object`` is (scripts/sandbox.py).
_NEW_IS_OBJECT = [["newObject", "object"]]

Obj = dict[str, Any]
PostScript = tuple[str, dict[str, Any]]  # (event, variables): run after the commit


class ObjectHooks:
    """The scripts and policies of one managed type."""

    def __init__(self, schema: ManagedType) -> None:
        self.schema = schema
        self.name = f"managed/{schema.name}"
        self.model: TypeModel = schema.model or TypeModel()
        # The properties whose values no two objects may share (``unique`` and ``valid-username``).
        self.unique = frozenset(name for name, prop in self.model.properties.items()
                                if any(u.policy_id in ("unique", "valid-username") for u in prop.policies))
        # Per property event, the properties with a script for it: every write asks, few have one.
        self._property_events = {event: tuple((name, prop.scripts[event]) for name, prop in
                                              self.model.properties.items() if event in prop.scripts)
                                 for event in PROPERTY_EVENTS}
        # The virtual properties a write computes and keeps (PingIDM's populateVirtualProperties):
        # those shown by default; one shown only when named is computed by a read by id alone.
        self._kept_virtual = tuple((name, script) for name, script in self._property_events["onRetrieve"]
                                   if (prop := schema.properties.get(name)) is not None
                                   and prop.virtual and prop.return_by_default)
        # Whether the kept virtual properties of several created objects may be computed in
        # one call into JavaScript per property (``creating_many``): only when nothing else
        # a create runs is JavaScript (absent, or a stock script run as Python), so that no
        # other script sees the calls in a different order than one object at a time.
        others = [script for event, script in self.model.scripts.items() if event in ("onCreate", "onValidate",
                                                                                     "onStore")]
        others += [script for event in ("onValidate", "onStore") for _, script in self._property_events[event]]
        self.batched_virtual = (bool(self._kept_virtual) and self.model.custom is None
                                 and all(in_javascript(script) for _, script in self._kept_virtual)
                                 and not any(in_javascript(script) for script in others))

    def _request(self, method: str, object_id: str | None) -> dict[str, Any]:
        path = f"{self.name}/{object_id}" if object_id else self.name
        return {"method": method, "resourcePath": path, "resourceName": path}

    def _run(self, event: str, script: ObjectScript, variables: dict[str, Any], returning: str | None) -> Any:
        try:
            if returning is None:
                return script(**variables)
            return script.run_returning(variables, returning)
        except ScriptError as exc:
            raise self._refused(event, script, exc) from None
        except IdsyncError as exc:
            raise ObjectRejected(f"{self.name}: {event} script: {exc}") from None

    def _refused(self, event: str, script: ObjectScript | None, exc: ScriptError) -> ObjectRejected:
        """The refusal of a script that threw. A thrown ``{code, message}`` is told as its
        message alone, everywhere; any other failure keeps where the script lives (its
        file and key) for the operator, and the API answers it without them. The log has it all."""
        log.info("managed.script_refused", resource=self.name, script=event, status=exc.status, error=str(exc))
        told = exc.thrown_message
        if told is not None:
            rejected = ObjectRejected(f"{self.name}: {event} script: {told}")
            rejected.reply, rejected.detail = told, exc.thrown_detail
        else:
            rejected = ObjectRejected(f"{self.name}: {event} script: {exc}")
            where = exc.where or (script.name if script is not None else None)
            reason = str(exc).removeprefix(f"{where}: ") if where else str(exc)
            rejected.reply = f"{self.name}: {event} script: {reason}"
        rejected.status = exc.status
        return rejected

    def _object_script(self, event: str, obj: Obj, object_id: str | None, method: str,
                       extra: Mapping[str, Any] | None = None) -> Obj:
        script = self.model.scripts.get(event)
        if script is None:
            return obj
        request = self._request(method, object_id)
        variables = {**(extra or {}), "object": obj, "request": request, "resourceName": request["resourcePath"]}
        result = self._run(event, script, variables, "object")
        if not isinstance(result, dict):
            raise ObjectRejected(f"{self.name}: {event} script: object must stay an object")
        return result

    def _property_scripts(self, event: str, obj: Obj, object_id: str | None, method: str,
                          scripts: tuple[tuple[str, ObjectScript], ...] | None = None) -> Obj:
        for name, script in self._property_events[event] if scripts is None else scripts:
            value = self._run(f"{name}.{event}", script, self._property_variables(script, name, obj, object_id,
                                                                                  method), None)
            if event == "onValidate":
                continue
            obj = {**obj}
            if value is None:
                obj.pop(name, None)
            else:
                obj[name] = value
        return obj

    def _property_variables(self, script: ObjectScript, name: str, obj: Obj, object_id: str | None,
                            method: str) -> dict[str, Any]:
        """What a property script gets, less what it cannot reach (``Script.reaches``):
        each variable bound costs its crossing into JavaScript, for every object."""
        request = self._request(method, object_id)
        variables = {"property": obj.get(name), "propertyName": name, "object": obj, "request": request,
                     "resourceName": request["resourcePath"]}
        return {k: v for k, v in variables.items() if script.reaches(k)}

    # -- writes ---------------------------------------------------------------

    def creating(self, obj: Obj, object_id: str | None, taken: Taken | None) -> Obj:
        """``obj`` (without ``_`` properties nor ``None`` values) as it will be stored
        (before secrets are protected), or a refusal."""
        if "onCreate" in self.model.scripts:
            obj = _storable(self._object_script("onCreate", obj, object_id, "create",
                                                {"oldObject": None, "@same": _NEW_IS_OBJECT}))
        return self._checked(obj, None, object_id, taken, "create")

    def creating_many(self, items: Sequence[tuple[Obj, str | None]], taken: Taken | None) -> list[Obj | ObjectError]:
        """``creating`` of each ``(obj, object_id)``, in order: the object as it will be
        stored, or its refusal. When the type allows it, each kept virtual property of the
        objects that passed their policies is computed in one call into JavaScript for all
        of them (``Script.call_many``) rather than one call per object: the same values
        and refusals, at a fraction of the cost of a page of creates."""
        if not self.batched_virtual or len(items) < 2:
            return [self._one_created(obj, object_id, taken) for obj, object_id in items]
        built: list[Obj | ObjectError] = []
        for obj, object_id in items:
            try:
                if "onCreate" in self.model.scripts:
                    obj = _storable(self._object_script("onCreate", obj, object_id, "create",
                                                        {"oldObject": None, "@same": _NEW_IS_OBJECT}))
                failed = self.check(obj, before=None, object_id=object_id, taken=taken)
                built.append(PolicyFailed(self.name, failures_list(failed)) if failed else obj)
            except ObjectError as exc:
                built.append(exc)
        for name, script in self._kept_virtual:
            self._virtual_many(name, script, built, [object_id for _, object_id in items])
        for i, (made, (_, object_id)) in enumerate(zip(built, items, strict=True)):
            if isinstance(made, ObjectError):
                continue
            try:
                self._object_script("onValidate", made, object_id, "create")
                self._property_scripts("onValidate", made, object_id, "create")
                made = self._property_scripts("onStore", made, object_id, "create")
                built[i] = self._object_script("onStore", made, object_id, "create")
            except ObjectError as exc:
                built[i] = exc
        return built

    def _one_created(self, obj: Obj, object_id: str | None, taken: Taken | None) -> Obj | ObjectError:
        try:
            return self.creating(obj, object_id, taken)
        except ObjectError as exc:
            return exc

    def _virtual_many(self, name: str, script: ObjectScript, built: list[Obj | ObjectError],
                      ids: list[str | None]) -> None:
        """Property ``name``'s ``onRetrieve`` for each object of ``built`` not refused yet,
        in one batch; its value set (``null`` removes it) or the object refused."""
        event = f"{name}.onRetrieve"
        objects = {i: obj for i, obj in enumerate(built) if not isinstance(obj, ObjectError)}
        variables = [self._property_variables(script, name, obj, ids[i], "create") for i, obj in objects.items()]
        values: list[Any] | None = None
        if in_javascript(script):
            # A batch JavaScript cannot take whole (a value that is not JSON) goes one at a time.
            with contextlib.suppress(ScriptError):
                values = [self._refused(event, script, v) if isinstance(v, ScriptError) else v
                          for v in script.call_many(variables)]
        if values is None:  # one at a time, each object answering for itself
            values = [self._run_or_refusal(event, script, v) for v in variables]
        for (i, obj), value in zip(objects.items(), values, strict=True):
            if isinstance(value, ObjectError):
                built[i] = value
            elif value is None:
                built[i] = {k: v for k, v in obj.items() if k != name}
            else:
                built[i] = {**obj, name: value}

    def _run_or_refusal(self, event: str, script: ObjectScript, variables: dict[str, Any]) -> Any:
        try:
            return self._run(event, script, variables, None)
        except ObjectError as exc:
            return exc

    def updating(self, old: Obj, new: Obj, object_id: str | None, taken: Taken | None) -> Obj:
        new = self._object_script("onUpdate", new, object_id, "update", {"oldObject": old, "@same": _NEW_IS_OBJECT})
        return self._checked(_storable(new), old, object_id, taken, "update")

    def check(self, obj: Obj, *, before: Obj | None = None, object_id: str | None = None,
              taken: Taken | None = None, only: Collection[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """The failed policy requirements of ``obj`` (``store.policy.check``). A policy
        script that fails (a custom policy of ``additionalFiles``, a condition) refuses
        the object as a failing object script does."""
        try:
            return check(self.schema, obj, before=before, object_id=object_id, taken=taken, only=only)
        except ScriptError as exc:
            custom = self.model.custom
            raise self._refused("policy", custom.script if custom is not None else None, exc) from None

    def _checked(self, obj: Obj, old: Obj | None, object_id: str | None, taken: Taken | None, method: str) -> Obj:
        failed = self.check(obj, before=old, object_id=object_id, taken=taken)
        if failed:
            raise PolicyFailed(self.name, failures_list(failed))
        if self.model:
            obj = self._property_scripts("onRetrieve", obj, object_id, method, self._kept_virtual)
            self._object_script("onValidate", obj, object_id, method)
            self._property_scripts("onValidate", obj, object_id, method)
            obj = self._property_scripts("onStore", obj, object_id, method)
            obj = self._object_script("onStore", obj, object_id, method)
        return obj

    def deleting(self, obj: Obj, object_id: str) -> None:
        if "onDelete" in self.model.scripts:
            # As PingIDM's: the object as stored, its _id included.
            self._object_script("onDelete", {**obj, "_id": object_id}, object_id, "delete")

    def post(self, event: str, object_id: str, old: Obj | None, new: Obj | None) -> PostScript | None:
        """The ``post`` script to run once the change is committed, if the type has one."""
        if event not in self.model.scripts:
            return None
        request = self._request(event[4:].lower(), object_id)
        variables: dict[str, Any] = {"request": request, "resourceName": request["resourcePath"]}
        # As stored, their _id included, as PingIDM gives them.
        if old is not None:
            variables["oldObject"] = {**old, "_id": object_id}
        if new is not None:
            variables["newObject"] = {**new, "_id": object_id}
        # PingIDM binds object too: the new object itself, none after a delete.
        if new is None:
            variables["object"] = None
        else:
            variables["@same"] = [["object", "newObject"]]
        return event, variables

    def synced(self, action: str, object_id: str, old: Obj | None, new: Obj | None,
               results: list[dict[str, Any]]) -> PostScript | None:
        """The type's ``onSync`` to run once a change of the object was pushed through the
        mappings whose source it is (``action``: PingIDM's ``notifyCreate``,
        ``notifyUpdate``, ``notifyDelete``): ``syncResults`` holds ``success`` (every push
        went through), ``action`` and ``syncDetails``, one entry per push."""
        if "onSync" not in self.model.scripts:
            return None
        request = self._request(action[6:].lower(), object_id)
        return "onSync", {
            "request": request, "resourceName": request["resourcePath"],
            "oldObject": None if old is None else {**old, "_id": object_id},
            "newObject": None if new is None else {**new, "_id": object_id},
            "syncResults": {"success": all(r["result"] == "SUCCESSFUL" for r in results), "action": action,
                            "syncDetails": results}}

    def run_posts(self, posts: list[PostScript]) -> None:
        for event, variables in posts:
            try:
                self.model.scripts[event](**variables)
            except IdsyncError as exc:
                log.warning("managed.post_script_failed", resource=self.name, script=event,
                            object_id=variables["request"]["resourcePath"].rsplit("/", 1)[-1], error=str(exc))

    # -- reads ----------------------------------------------------------------

    @property
    def reads(self) -> bool:
        """Whether reads run scripts at all (most types have none)."""
        return bool(self.model.scripts.keys() & {"onRead", "onRetrieve"}) or any(
            "onRetrieve" in p.scripts for p in self.model.properties.values())

    def retrieved(self, obj: Obj, method: str = "read") -> Obj:
        """``obj`` as a client reads it: property ``onRetrieve``, then ``onRetrieve``, then ``onRead``."""
        object_id = obj.get("_id")
        keep = {k: v for k, v in obj.items() if k.startswith("_")}
        result = self._property_scripts("onRetrieve", dict(obj), object_id, method)
        result = self._object_script("onRetrieve", result, object_id, method)
        if method == "read":
            result = self._object_script("onRead", result, object_id, method)
        return {**result, **keep}


def execute_on_retrieve(value: Any) -> bool:
    """Whether a query's ``executeOnRetrieve`` parameter asks for the ``onRetrieve`` scripts:
    true, or ``true`` in any case, as PingIDM reads it (Java's ``Boolean.parseBoolean``)."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _storable(obj: Obj) -> Obj:
    """``obj`` without what is never stored: ``_`` properties and ``None`` values."""
    return {k: v for k, v in obj.items() if not k.startswith("_") and v is not None}
