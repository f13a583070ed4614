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
computed without running a script per object, and a read by id computes it anew.

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

from collections.abc import Collection, Mapping
from typing import Any

import structlog

from idsync.config.managed import ManagedType
from idsync.config.objectmodel import PROPERTY_EVENTS, ObjectScript, TypeModel
from idsync.errors import IdsyncError, ObjectRejected, ScriptError
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
            request = self._request(method, object_id)
            value = self._run(f"{name}.{event}", script, {
                "property": obj.get(name), "propertyName": name, "object": obj, "request": request,
                "resourceName": request["resourcePath"]}, None)
            if event == "onValidate":
                continue
            obj = {**obj}
            if value is None:
                obj.pop(name, None)
            else:
                obj[name] = value
        return obj

    # -- writes ---------------------------------------------------------------

    def creating(self, obj: Obj, object_id: str | None, taken: Taken | None) -> Obj:
        """``obj`` (without ``_`` properties nor ``None`` values) as it will be stored
        (before secrets are protected), or a refusal."""
        if "onCreate" in self.model.scripts:
            obj = _storable(self._object_script("onCreate", obj, object_id, "create",
                                                {"oldObject": None, "@same": _NEW_IS_OBJECT}))
        return self._checked(obj, None, object_id, taken, "create")

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
