"""Recons asked for by a caller rather than a schedule: PingIDM's ``recon`` service
(``recon?_action=recon`` and ``reconById``), over the API (``api/recon.py``) and from
scripts (``openidm.action("recon", "recon", {}, {"mapping": M})``).

``recon_by_id`` pushes one source object through one mapping, recorded as a
single-object run (job ``reconById``) like an implicit sync; the objects of another type
naming it are applied again once it is linked, as after a recon (``sync/referrers.py``).
``ScriptRecons`` answers a script's ``recon`` actions in PingIDM's shape, ``{"_id": RUN,
"state": STATE}``. With ``waitForCompletion`` true, a script's recon runs to its end
inside the call, in the script's thread, and the state answered is the final one.
Without it, as in PingIDM, the recon runs in a thread of its own (``openidm`` bound
there too) and the call answers ``ACTIVE`` once the run is recorded; a refusal before
that (the mapping already running, a bad setting) is still the call's error. That is in
the daemon and the API server (``enable_detached``); a command (``idsync run-job``,
``idsync recon``) runs it to its end inside the call, since it would have to wait for it
before it exits. Such a run stops when the unit of work the script belongs to is
canceled, when the daemon stops (``stop_detached``) and over the API. Either way it is
recorded as any recon, with the job ``script:recon``. A scheduled script's recon shares
a first load with worker processes (or a cluster's nodes) as its job's recons would; one
started from a custom endpoint or a hook runs in one process. A mapping already running
is ``RunLocked``, which the script may catch; one this very thread is reconciling (a
script of that run asking for it again) is refused at once (``sync/recon.py``). A dry
run starts nothing.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from idsync.config.project import Project
from idsync.errors import NotFound, ObjectRejected
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.sync.implicit import RECON_BY_ID_JOB, ImplicitSync, PushResult, read_source
from idsync.sync.options import ReconOptions
from idsync.sync.partitions import Splitter
from idsync.sync.recon import ReconResult, refuse_own_run, run_recon
from idsync.sync.referrers import Referrers

__all__ = ["SCRIPT_JOB", "Canceled", "ScriptRecons", "disable_detached", "enable_detached", "flag", "pushed",
           "recon_by_id", "started", "stop_detached"]

# The job a script's recon is recorded under: no job file can be named so.
SCRIPT_JOB = "script:recon"
_PARAMS = {"recon": ("mapping", "waitForCompletion", "rewriteWriteOnly"),
           "reconById": ("mapping", "id", "ids", "waitForCompletion")}


def recon_by_id(project: Project, store: Store, resources: Resources, mapping_name: str,
                object_id: str) -> PushResult:
    """One source object through one mapping, recorded as a run like an implicit sync.
    The caller binds the scripts' ``openidm`` (``router.scripting``)."""
    mapping = project.mapping(mapping_name)
    current = read_source(resources, mapping, object_id)
    if current is None:
        raise NotFound(f"{mapping.source}/{object_id} not found")
    # The objects of another type naming it are applied again once it is linked (``referrers.py``).
    referrers = Referrers(project, store, mapping.source, resources, dry_run=False, method=RECON_BY_ID_JOB,
                          event="recon", note=f"applied again: reconById of {object_id} through {mapping.name} "
                                              "linked an object they name")
    before = referrers.linked([object_id])
    push = ImplicitSync(project, store, resources).push_one(mapping, object_id, current, job=RECON_BY_ID_JOB)
    try:
        referrers.follow([object_id], before)
    finally:
        referrers.finish("SUCCESS", None)
    return push


def pushed(push: PushResult) -> dict[str, str]:
    """``reconById``'s answer, as PingIDM's: the run and how it ended."""
    return {"_id": push.run_id, "state": "SUCCESS" if push.ok else "FAILED"}


def flag(params: Mapping[str, str], name: str) -> bool:
    """The parameter ``name`` (``"true"`` or ``"false"``, any case; absent: false)."""
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ObjectRejected(f"{name} must be true or false, not {value!r}")
    return value == "true"


# The recons scripts start without waitForCompletion, each in a thread of its own.
_DETACHED = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="script-recon")
_detached_cancels: set[threading.Event] = set()
_detached_lock = threading.Lock()
_START_TIMEOUT = 30.0  # how long a call waits for its detached run to be recorded


_detaching = 0  # how many long-lived servers of this process (the daemon, the API) let them detach


def enable_detached() -> None:
    """Let scripts' recons without waitForCompletion run in threads of their own while a
    server that outlives them (the daemon, the API server) runs in this process; a
    command runs them to their end inside the call, as it would wait for them before
    exiting anyway. ``disable_detached`` when that server stops."""
    global _detaching
    with _detached_lock:
        _detaching += 1


def disable_detached() -> None:
    global _detaching
    with _detached_lock:
        _detaching = max(_detaching - 1, 0)


def stop_detached() -> None:
    """Ask every recon a script started without waitForCompletion to stop at its next page
    boundary (the daemon stopping)."""
    with _detached_lock:
        for event in _detached_cancels:
            event.set()


class ScriptRecons:
    """``openidm.action("recon", ACTION, content, params)`` for one ``ScriptRouter``:
    ``recon`` (``mapping``) and ``reconById`` (``mapping`` and ``id``, or PingIDM's
    older ``ids``). ``cancel`` stops a recon it runs, as it stops the unit of work
    the scripts belong to (a scheduled script's job)."""

    def __init__(self, project: Project, store: Store, resources: Resources, *, dry_run: bool,
                 cancel: threading.Event | None, splitter: Splitter | None = None,
                 detached: Callable[[str, ReconOptions], ReconResult] | None = None) -> None:
        self._project = project
        self._store = store
        self._resources = resources
        self._dry_run = dry_run
        self._cancel = cancel
        self._splitter = splitter  # how a recon may split over worker processes (a scheduled script's job's)
        # How a recon runs in a thread of its own (``openidm`` bound there); None: in the caller's.
        self._detached = detached

    def action(self, action: Any, content: Any, params: Any) -> dict[str, Any]:
        where = f"openidm.action recon {action!r}"
        if action not in _PARAMS:
            raise ObjectRejected(f"{where}: not available in idsync's scripts (recon actions answered: recon, "
                                 "reconById)")
        if self._dry_run:
            raise ObjectRejected(f"{where}: not carried out in a dry run")
        values = _params(where, params, _PARAMS[action])
        if content is not None and not isinstance(content, Mapping):
            raise ObjectRejected(f"{where}: the content must be an object of settings for this run (sourceQuery, "
                                 "targetQuery, runTargetPhase...), or {}")
        if content and action == "reconById":
            raise ObjectRejected(f"{where}: reconById takes no settings for one run; pass {{}} as the content")
        mapping = values.get("mapping")
        if not mapping:
            raise ObjectRejected(f"{where}: the parameters need the mapping's name (mapping)")
        if action == "reconById":
            object_id = values.get("id") or values.get("ids")
            if not object_id:
                raise ObjectRejected(f"{where}: the parameters need the source object's id (id)")
            return pushed(recon_by_id(self._project, self._store, self._resources, mapping, object_id))
        options = ReconOptions(job=SCRIPT_JOB, cancel=Canceled(self._cancel),
                               rewrite_write_only=flag(values, "rewriteWriteOnly"), splitter=self._splitter,
                               overrides=dict(content) if content else None)
        if flag(values, "waitForCompletion") or self._detached is None or not _detaching:
            result = run_recon(self._project, self._store, mapping, options)
            return {"_id": result.id, "state": result.state}
        return self._start_detached(mapping, options)

    def _start_detached(self, mapping: str, options: ReconOptions) -> dict[str, Any]:
        """Run the recon in a thread of its own; answer once it is recorded (or ended)."""
        assert self._detached is not None
        self._project.mapping_for_run(mapping, options.overrides)  # an unknown mapping or setting: refused now
        refuse_own_run(mapping)
        recorded = threading.Event()
        options = replace(options, run_id=str(uuid.uuid4()), recorded=recorded)
        detached = self._detached

        def run() -> ReconResult:
            with _detached_lock:
                _detached_cancels.add(options.cancel)
            try:
                return detached(mapping, options)
            finally:
                with _detached_lock:
                    _detached_cancels.discard(options.cancel)

        future = _DETACHED.submit(run)
        result = started(future, recorded, _START_TIMEOUT)
        return {"_id": result.id, "state": result.state} if result is not None else \
            {"_id": options.run_id, "state": "ACTIVE"}


def started(future: concurrent.futures.Future[ReconResult], recorded: threading.Event,
            timeout: float) -> ReconResult | None:
    """Wait until a recon started in another thread is recorded (``ReconOptions.recorded``),
    for at most ``timeout`` seconds: its result if it ended by then (a refusal before it was
    recorded, the mapping already running, raises here), else None (it runs on: ACTIVE)."""
    future.add_done_callback(lambda _: recorded.set())  # an end before the record wakes the wait too
    recorded.wait(timeout)
    return future.result() if future.done() else None


class Canceled(threading.Event):
    """A script's recon's cancel: set by itself (``recon/ID?_action=cancel`` stops that
    run alone) or by its parent, the unit of work the script belongs to (a scheduled
    script's job), which stops the recon with it."""

    def __init__(self, parent: threading.Event | None) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or (self._parent is not None and self._parent.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


def _params(where: str, params: Any, known: tuple[str, ...]) -> dict[str, str]:
    """The action's parameters as PingIDM passes them on: strings (a boolean or number
    written as text); a parameter idsync does not take is refused, never ignored."""
    if not isinstance(params, Mapping):
        raise ObjectRejected(f"{where}: the parameters must be an object, such as {{mapping: 'NAME'}}")
    values: dict[str, str] = {}
    for key, value in params.items():
        if key == "_action" or value is None:
            continue
        if key not in known:
            raise ObjectRejected(f"{where}: unknown parameter {key!r} (known: {', '.join(known)})")
        if isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[key] = str(value)
        else:
            raise ObjectRejected(f"{where}: the parameter {key} must be a string, not {type(value).__name__}")
    return values
