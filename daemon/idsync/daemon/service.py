"""``idsync run``: the daemon's process, from start to exit.

One asyncio loop owns the scheduler, the signals, the watchdog and the status
file; recons run in worker threads (python-ldap and SQLAlchemy are synchronous).

Start: read the configuration (a broken ``conf/`` stops here with EX_CONFIG),
mark runs left ACTIVE by a dead process FAILED, schedule the jobs, catch up
fires missed while down (``misfire = "run_once"``), then ``READY=1``.

Signals, designed as a sequence:

* SIGHUP: re-read ``conf/`` and ``jobs.d/`` (``reload.py``); running jobs finish
  on the configuration they started with. The same reload follows a change to those
  files, once they have been quiet for a moment (``watch.py``, ``[daemon] watch_config``).
* SIGTERM or SIGINT: no new runs; every running recon is asked to stop at its
  next page boundary and records itself CANCELED; exit 0 once they have, or
  after ``STOP_DEADLINE`` seconds, recording what is still running CANCELED.
* A second SIGTERM or SIGINT: record this process's runs CANCELED and exit at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from idsync import __version__
from idsync.api import ApiContext, ApiServer
from idsync.api.errors import ApiError
from idsync.cluster.fingerprint import project_files
from idsync.daemon.history import last_run_of_job, last_started_by_job, recent_runs_of_job
from idsync.daemon.notify import Notifier
from idsync.daemon.recovery import recover_interrupted, release_own_runs
from idsync.daemon.reload import Configuration, load_configuration
from idsync.daemon.runner import JobOutcome, disabled_systems, run_job
from idsync.daemon.scheduler import SKIP_TOLERANCE, FireTimeExecutor, JobTable, missed_fire
from idsync.daemon.watch import ConfigWatch
from idsync.errors import ConfigError, IdsyncError, RunLocked, internal_message
from idsync.managed.recons import disable_detached, enable_detached, stop_detached
from idsync.managed.roles import EDGE_CHECK_SECONDS
from idsync.managed.router import help_partitions_scripted, push_due_scripted
from idsync.managed.workers import local_splitter
from idsync.status_file import update_status_file
from idsync.store.database import Store, pingidm_time, utcnow
from idsync.store.retention import prune
from idsync.sync.implicit import forget_told_disabled
from idsync.sync.partitions import Splitter
from idsync.sync.taken_over import summarize_taken_over

if TYPE_CHECKING:
    from idsync.cluster.node import ClusterNode
    from idsync.config.jobs import JobDef

__all__ = ["EX_FORCED", "STOP_DEADLINE", "Daemon"]

log = structlog.get_logger("idsync.daemon")

# systemd's TimeoutStopSec in the shipped unit is longer; this leaves room to write the records.
STOP_DEADLINE = 8.0
EX_FORCED = 130
_WORKERS = 8
_SCHEDULED = frozenset({"schedule", "misfire"})  # a fire of the schedule, not a run asked for by hand
_FIRST_PRUNE = dt.timedelta(minutes=1)  # not at the very start: the first fires come first
# In cluster mode, a transaction left idle this many times ``stall_timeout`` is ended by
# PostgreSQL (``Store.as_cluster_node``): its node is frozen inside it, and taken for dead.
IDLE_TRANSACTION_STALLS = 2
_CLUSTER_STATUS_EVERY = 10.0  # seconds between a cluster node's refreshes of its status file


class Daemon:
    """The long-running service. ``Daemon(project_dir).run()`` returns the exit code."""

    def __init__(self, project_dir: Path, notifier: Notifier | None = None) -> None:
        self.project_dir = project_dir
        self.notifier = notifier or Notifier.from_env()
        self.started = utcnow()
        self.config: Configuration
        self.store: Store
        self._running: dict[str, tuple[JobOutcome | None, threading.Event]] = {}
        self._last: dict[str, dict[str, Any]] = {}
        # The last reload: when, and whether it was taken whole (no configuration error).
        self.last_reload: tuple[dt.datetime, bool] | None = None
        self._lock = threading.Lock()
        self._status_writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="status")
        self._status_wanted: str | None = None  # the state of the write queued, if one is
        self._stopping = False
        self._stopped = False
        self.reloading = False
        self._loop: asyncio.AbstractEventLoop
        self.cluster: ClusterNode | None = None
        self._helping: set[threading.Event] = set()  # cancels of the partitions this node works on
        # The jobs (with the files of their disabled systems) whose skipped fires were told at
        # warning since the last load; later fires are told at debug.
        self._told_disabled: set[tuple[str, tuple[str, ...]]] = set()
        self._roles_checked = utcnow()  # temporal constraints' edges after this are still to push
        self.watch = ConfigWatch(project_dir)  # the files of the last load, and the changes since

    def run(self) -> int:
        self.watch.loading()
        self.config = load_configuration(self.project_dir)
        self.store = Store.open(self.config.project.settings.store_url())
        try:
            return self._serve()
        finally:
            self.store.close()  # its connections closed, not dropped with the process

    def _serve(self) -> int:
        recover_interrupted(self.store)
        settings = self.config.project.settings
        if settings.cluster.enabled:
            try:
                from idsync.cluster.node import ClusterNode  # Procrastinate only in cluster mode
            except ImportError as exc:
                raise ConfigError(str(settings.conf_dir / "idsync.toml"), "cluster.enabled",
                                  f"cluster mode needs the postgresql extra (pip install 'idsync[postgresql]'): "
                                  f"{exc.name or 'procrastinate'} is not installed") from None

            self.cluster = ClusterNode(self.store, settings.cluster, __version__, self._run_queued,
                                       self._help_partitions, self._running_names,
                                       functools.partial(summarize_taken_over, self.store))
            self.store.as_cluster_node(self.cluster.name, IDLE_TRANSACTION_STALLS * settings.cluster.stall_timeout)
            self.cluster.deployed(project_files(self.project_dir))
            self.cluster.prepare()
        return asyncio.run(self._main())

    async def _main(self) -> int:
        self._loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        scheduler = AsyncIOScheduler(timezone=dt.UTC, executors={"default": FireTimeExecutor(_WORKERS)})
        if self.cluster is None:
            self.table = JobTable(scheduler, self._fire)
        else:
            self.table = JobTable(scheduler, self._queue_fire, instances=3, fire_times=True)
        self.table.apply(self.config.jobs)
        api = self._api_server()  # before any job fires: a refused [api] stops the daemon first
        if self.cluster is not None:
            await self.cluster.start()
        enable_detached()  # the daemon outlives the recons its scripts start without waitForCompletion
        scheduler.start()
        if self.cluster is None:
            self._catch_up()
        else:
            self._loop.run_in_executor(None, self._catch_up)
        # Housekeeping, not a job of jobs.d/ (``#`` is in no job file's name).
        scheduler.add_job(self._prune, "interval", hours=6, id="#prune", max_instances=1, coalesce=True,
                          next_run_time=dt.datetime.now(dt.UTC) + _FIRST_PRUNE)
        if self.cluster is not None:
            # The other nodes run jobs too: this node's status file follows the store, not only its own runs.
            scheduler.add_job(self._changed_threadsafe, "interval", seconds=_CLUSTER_STATUS_EVERY, id="#status",
                              max_instances=1, coalesce=True)
        # Roles whose time window opened or closed: their users are pushed (``managed/roles.py``).
        scheduler.add_job(self._roles_due, "interval", seconds=EDGE_CHECK_SECONDS, id="#roles", max_instances=1,
                          coalesce=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_stop, sig, stop)
        self._loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        watchdog = asyncio.create_task(self._watchdog())
        watcher = asyncio.create_task(self.watch.run(self._watching, self._on_files_changed))
        log.info(
            "daemon.start",
            version=__version__,
            pid=os.getpid(),
            project=str(self.project_dir),
            jobs=[n for n, j in self.config.jobs.items() if j.enabled],
            store=self.store.describe(),
            node=self.cluster.name if self.cluster is not None else None,
            watch_config=self._watching(),
        )
        if api is not None:
            await api.start()
        self._write_status(state="running")
        self.notifier.ready(self._status_line())
        try:
            await stop.wait()
            scheduler.shutdown(wait=False)
            stop_detached()  # the recons scripts started without waitForCompletion
            disable_detached()
            if api is not None:
                await api.stop()
            if self.cluster is not None:
                return await self._drain(self.cluster)
            return await self._drain()
        finally:
            watchdog.cancel()
            watcher.cancel()
            self.notifier.close()

    def _api_server(self) -> ApiServer | None:
        settings = self.config.project.settings
        if not settings.api.enabled:
            return None
        from idsync.console import create_console  # Jinja2 and the templates only with [api]

        ctx = ApiContext(project=lambda: self.config.project, store=self.store, settings=settings.api,
                         jobs=DaemonJobs(self), changed=self._changed_threadsafe,
                         node=self.cluster.name if self.cluster is not None else None)
        return ApiServer(ctx, config_file=str(settings.conf_dir / "idsync.toml"),
                         console=create_console if settings.api.console else None)

    # -- seen from the API (scheduler/job) -----------------------------------------

    def jobs_status(self) -> dict[str, dict[str, Any]]:
        return self._jobs_status()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def is_running(self, name: str) -> bool:
        with self._lock:
            return name in self._running

    def fire(self, name: str, trigger: str) -> None:
        if self.cluster is not None:
            self.cluster.trigger(name, trigger)
        else:
            self._fire(name, trigger)

    def reload(self) -> None:
        """A SIGHUP's reload, run on the daemon's loop; returns once it is done (from a worker thread)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def reload_now() -> None:
            try:
                self._on_reload("api")
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(reload_now)
        done.result(timeout=120)

    def cancel_job(self, name: str) -> bool:
        with self._lock:
            entry = self._running.get(name)
        if entry is None:
            return False
        entry[1].set()
        return True

    # -- jobs --------------------------------------------------------------------

    def _fire(self, name: str, trigger: str, fire: dt.datetime | None = None) -> bool:
        """Run job ``name`` in this thread: APScheduler's at each fire, or (cluster mode) the
        queue's. Whether the run was stopped by this daemon's shutdown."""
        job = self.config.jobs.get(name)
        if job is not None and trigger in _SCHEDULED:
            job = self._without_disabled(job, trigger)
        if job is None or self._stopping:
            return self._stopping
        cancel = threading.Event()
        with self._lock:
            if name in self._running:  # the catch-up and a regular fire at once
                log.warning("job.skipped", job=name, reason="running", trigger=trigger)
                return False
            self._running[name] = (None, cancel)

        def started(outcome: JobOutcome) -> None:
            with self._lock:
                self._running[name] = (outcome, cancel)
            self._changed_threadsafe()

        try:
            outcome = run_job(
                self.config.project,
                self.store,
                job,
                trigger=trigger,
                cancel=cancel,
                on_start=started,
                node=self.cluster.name if self.cluster is not None else None,
                fire=fire,
                splitter=self._splitter(),
            )
            self._last[name] = outcome.to_json()
            return outcome.state == "CANCELED" and self._stopping
        except RunLocked as exc:
            log.warning("job.skipped", job=name, reason="locked", holder=str(exc), trigger=trigger)
        except IdsyncError as exc:
            # The store unreachable as the job was to start, or to record its end: an outage,
            # not a bug; the next fire tries again, and frees what this one could not.
            log.error("job.failed", job=name, trigger=trigger, error=str(exc))
        except Exception:
            log.exception("job.crash", job=name)
        finally:
            with self._lock:
                self._running.pop(name, None)
            self._changed_threadsafe()
        return False

    def _without_disabled(self, job: JobDef, trigger: str) -> JobDef | None:
        """A scheduled fire leaves out the job's mappings (or liveSync sources) whose system is
        disabled, which PingIDM does not start either (it says so once): None when that is all
        of them. Said at warning once per configuration load, with the files to change; a run
        by hand (``run-job``, Run now) still fails naming the file."""
        held = disabled_systems(self.config.project, job)
        if not held:
            return job
        files = tuple(sorted({f for fs in held.values() for f in fs}))
        key = (job.name, files)
        told = key in self._told_disabled
        self._told_disabled.add(key)
        left = tuple(p for p in (job.livesync or job.mappings) if p not in held)
        (log.debug if told else log.warning)(
            "job.skipped", job=job.name, reason="disabled", trigger=trigger, skipped=sorted(held), files=list(files),
            message=f"{', '.join(sorted(held))} reads or writes a disabled system (\"enabled\": false in "
                    f"{', '.join(files)}): the schedule's fires leave it out until the system is enabled")
        if not left:
            return None
        return dataclasses.replace(job, livesync=left) if job.livesync else dataclasses.replace(job, mappings=left)

    # -- cluster mode --------------------------------------------------------------

    def _queue_fire(self, name: str, trigger: str, scheduled: dt.datetime | None = None) -> None:
        """Run in a worker thread by APScheduler at each fire of job ``name`` in cluster mode:
        queue the fire, keyed by its scheduled instant, so it runs once in the cluster."""
        job = self.config.jobs.get(name)
        if job is None or self._stopping or self.cluster is None:
            return
        # The regular fire this one is (a jittered fire is after it): every node finds the same.
        # From the instant it was scheduled for, not from now: a thread that starts late (a
        # loaded machine) may start after the job's next fire, and would queue that one instead.
        at = scheduled if scheduled is not None else utcnow()
        fire = job.schedule.previous_fire(before=at, since=at - dt.timedelta(days=400)) or at
        try:
            queued = self.cluster.fire(name, fire)
        except Exception as exc:  # noqa: BLE001 - another node may queue it; the next fire comes anyway
            log.warning("cluster.fire_failed", job=name, fire_time=fire.isoformat(), error=internal_message(exc))
            return
        if queued is None:
            log.info("job.skipped", job=name, reason="queued", fire_time=fire.isoformat(), trigger=trigger)

    def _run_queued(self, name: str, trigger: str, fire: dt.datetime | None) -> bool | None:
        """A run the queue gave this node; whether this node's shutdown stopped it (to hand it
        over); None when the job is not in this node's ``jobs.d/`` (for a node that has it)."""
        job = self.config.jobs.get(name)
        if job is None:
            return None
        late = (utcnow() - fire).total_seconds() if fire is not None else 0.0
        if job.misfire == "skip" and late > SKIP_TOLERANCE + job.jitter:
            log.warning("job.skipped", job=name, reason="misfire", fire_times=[fire.isoformat()] if fire else [],
                        policy=job.misfire)
            return False
        return self._fire(name, trigger, fire)

    def _splitter(self) -> Splitter | None:
        """How a recon may split its source over the cluster (None: not in cluster mode)."""
        cluster = self.cluster
        if cluster is None:
            return local_splitter(self.config.project, self.store)
        settings = self.config.project.settings.cluster

        def partitions() -> int:
            return settings.partitions or max(len(cluster.alive()), 1) * settings.concurrency

        return Splitter(partitions=partitions, min_size=settings.min_partition_size,
                        spread=cluster.defer_partition_helpers, node=cluster.name)

    def _help_partitions(self, run_id: str) -> bool:
        """A queue job asking this node to work on the partitions of a split run; whether this
        node's shutdown stopped it (its partition is then handed back)."""
        if self._stopping or self.cluster is None:
            return self._stopping
        cancel = threading.Event()
        with self._lock:
            self._helping.add(cancel)
        try:
            return help_partitions_scripted(self.config.project, self.store, run_id, self.cluster.name, cancel)
        finally:
            with self._lock:
                self._helping.discard(cancel)

    def _running_names(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def _prune(self) -> None:
        days = self.config.project.settings.store.keep_runs_days
        if days <= 0:
            return
        try:
            pruned = prune(self.store, utcnow() - dt.timedelta(days=days))
        except IdsyncError as exc:
            log.warning("store.prune_failed", error=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - housekeeping retries in six hours; never SQL in the log
            log.warning("store.prune_failed", error=internal_message(exc))
            return
        if pruned.runs:
            log.info("store.pruned", runs=pruned.runs, audit=pruned.audit, keep_runs_days=days)

    def _roles_due(self) -> None:
        until = utcnow()
        try:
            pushes = push_due_scripted(self.config.project, self.store, self._roles_checked, until)
        except Exception as exc:  # noqa: BLE001 - tried again at the next tick; never SQL in the log
            log.warning("roles.window_push_failed", error=internal_message(exc))
            return
        self._roles_checked = until
        if pushes:
            log.info("roles.window_pushed", users=len({p.source_id for p in pushes}),
                     failed=sum(not p.ok for p in pushes))

    def _catch_up(self) -> None:
        now = utcnow()
        last = last_started_by_job(self.store)
        for name, job in self.config.jobs.items():
            fire = missed_fire(job, last.get(name), now)
            if fire is not None:
                log.info("job.misfire", job=name, fire_time=fire.isoformat(), policy=job.misfire)
                if self.cluster is None:
                    self.table.run_now(name)
                elif self.cluster.fire(name, fire) is None:  # the nodes starting together queue it once
                    # A run of the job already waits in the queue (a regular fire came first): it runs at once.
                    log.info("job.skipped", job=name, reason="queued", fire_time=fire.isoformat(), trigger="misfire")

    # -- signals -----------------------------------------------------------------

    def _on_stop(self, sig: signal.Signals, stop: asyncio.Event) -> None:
        if self._stopped:
            return  # everything is recorded and the process is on its way out
        if self._stopping:
            log.warning("daemon.stop_now", signal=sig.name)
            canceled = release_own_runs(self.store, "CANCELED", f"stopped at once by a second {sig.name}")
            self._write_status(state="stopped")
            log.warning("daemon.exit", code=EX_FORCED, canceled=canceled)
            os._exit(EX_FORCED)
        self._stopping = True
        if self.cluster is not None:
            self.cluster.stop_taking()  # what this node runs is handed back, not taken again here
        with self._lock:
            running = dict(self._running)
            helping = list(self._helping)
        log.info("daemon.stopping", signal=sig.name, running=sorted(running))
        for _outcome, cancel in running.values():
            cancel.set()
        for cancel in helping:
            cancel.set()
        self.notifier.stopping("stopping: " + (", ".join(sorted(running)) or "nothing running"))
        self._write_status_later(state="stopping")
        stop.set()

    async def _drain(self, cluster: ClusterNode | None = None) -> int:
        deadline = self._loop.time() + STOP_DEADLINE
        while self._loop.time() < deadline:
            with self._lock:
                if not self._running:
                    break
            await asyncio.sleep(0.05)
        with self._lock:
            left = sorted(self._running)
        if cluster is not None:
            await cluster.stop(max(deadline - self._loop.time(), 0.5))
        self._status_writer.shutdown(wait=True)
        if left:
            # Worker threads cannot be interrupted mid-page: record them and leave.
            canceled = release_own_runs(self.store, "CANCELED", "canceled at shutdown before its page ended")
            self._write_status(state="stopped")
            log.warning("daemon.exit", code=0, still_running=left, canceled=canceled)
            os._exit(0)
        self._write_status(state="stopped")
        self._stopped = True
        log.info("daemon.exit", code=0)
        return 0

    def _watching(self) -> bool:
        return self.config.project.settings.daemon.watch_config and not self._stopping

    def _on_files_changed(self, files: list[str]) -> None:
        log.info("daemon.config_changed", files=files)
        self._on_reload("files")

    def _on_reload(self, trigger: str = "SIGHUP") -> None:
        if self._stopping:
            return
        self.watch.loading()  # also when the reload fails: the same files are not tried again
        self.notifier.reloading()
        log.info("daemon.reload", trigger=trigger)
        self.reloading = True
        try:
            self._reload()
        except Exception as exc:  # a bug while reloading must not leave systemd in "reloading"
            # What was read before the failure is dropped: the jobs run on as they were.
            problem = f"reload failed: {internal_message(exc)}; kept the previous configuration"
            log.error("daemon.reload_failed", errors=1, problems=[problem], exc_info=True)
            self.config = dataclasses.replace(self.config, errors=[problem])
            self.last_reload = (utcnow(), False)
        finally:
            self.reloading = False
        self._changed()
        self.notifier.ready(self._status_line())

    def _reload(self) -> None:
        config = load_configuration(self.project_dir, previous=self.config)
        changes = self.table.apply(config.jobs)
        self.config = config
        # What a disabled system leaves out is said once per configuration: a reload may have
        # enabled it and disabled it again.
        self._told_disabled.clear()
        forget_told_disabled()
        if self.cluster is not None:
            self.cluster.deployed(project_files(self.project_dir))
        self.last_reload = (utcnow(), not self.config.errors)
        if self.config.errors:
            # What the broken files defined keeps its previous version; say so where operators look.
            log.error("daemon.reload_failed", errors=len(self.config.errors), problems=self.config.errors,
                      **{k: v for k, v in changes.items() if v})
        else:
            log.info("daemon.reloaded", errors=0, **{k: v for k, v in changes.items() if v})

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            # Sent from the loop itself: if the loop hangs, systemd stops hearing from it.
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- state -------------------------------------------------------------------

    def _changed_threadsafe(self) -> None:
        # Once the loop closed, the exit path has written the last status.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._changed)

    def _changed(self) -> None:
        if not self._stopping:
            self.notifier.status(self._status_line())
        self._write_status_later(state="stopping" if self._stopping else "running")

    def _status_line(self) -> str:
        return self._health() + self._activity()

    def _health(self) -> str:
        """What ``systemctl status`` must show first: configuration errors since the last
        (re)load, which left the broken files' previous versions in force."""
        errors = len(self.config.errors)
        if not errors:
            return ""
        what = "reload failed" if self.last_reload is not None else "configuration errors"
        return f"{what}: {errors} problem(s), previous version kept (idsync validate); "

    def _activity(self) -> str:
        with self._lock:
            running = sorted(self._running)
        if running:
            return "running " + ", ".join(running)
        upcoming = [(fire, name) for name in self.config.jobs if (fire := self.table.next_fire(name))]
        if not upcoming:
            return "idle; no job scheduled"
        fire, name = min(upcoming)
        at = fire.astimezone(dt.UTC)
        return f"idle; {len(upcoming)} job(s) scheduled, next {name} at {at:%H:%M:%S} UTC"

    def _write_status_later(self, state: str) -> None:
        # File and database I/O (fsync can take a second on a busy disk) stays off the
        # event loop, so the scheduler and the watchdog never wait for it.
        # Changes that come while a write waits are taken by that write: jobs ending many times
        # a second must not queue a write each.
        with self._lock:
            queued = self._status_wanted is not None
            self._status_wanted = state
        if queued:
            return
        with contextlib.suppress(RuntimeError):  # the writer already shut down: exiting
            self._status_writer.submit(self._write_wanted_status)

    def _write_wanted_status(self) -> None:
        with self._lock:
            state, self._status_wanted = self._status_wanted, None
        if state is not None:
            self._write_status(state)

    def _write_status(self, state: str) -> None:
        daemon = {
            "pid": os.getpid(),
            "started": self.started.isoformat(),
            "state": state,
            "version": __version__,
            "configErrors": self.config.errors,
            # What the files were when last loaded: ``idsync jobs`` tells those changed since.
            "configLoaded": self.watch.loaded_at.isoformat() if self.watch.loaded_at else None,
            "watchConfig": self.config.project.settings.daemon.watch_config,
            "configFiles": self.watch.files,
        }
        if self.cluster is not None:
            try:
                daemon["cluster"] = self.cluster.status()
            except Exception as exc:  # noqa: BLE001 - the store is gone: said by the jobs' part below
                log.debug("status_file.cluster_unavailable", error=type(exc).__name__)
        try:
            jobs: dict[str, dict[str, Any]] | None = self._jobs_status()
        except Exception as exc:  # noqa: BLE001 - the store is gone: the daemon's state still goes in
            log.warning("status_file.jobs_unavailable", error=internal_message(exc))
            jobs = None
        update_status_file(self.config.project, self.store, jobs=jobs, daemon=daemon)

    def _jobs_status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            running = dict(self._running)
        out: dict[str, dict[str, Any]] = {}
        for name, job in self.config.jobs.items():
            fire = self.table.next_fire(name)
            outcome = running.get(name, (None, None))[0]
            last = self._last.get(name)
            stored = last_run_of_job(self.store, name)
            if stored is not None and _newer(stored, last):
                # Run elsewhere (``idsync run-job``, another daemon) since this daemon's last run.
                last = self._last[name] = stored
            out[name] = {
                **job.summary(),
                "nextFire": fire.isoformat() if fire else None,
                "running": name in running,
                "runningSince": outcome.started.isoformat() if outcome else None,
                "lastRun": last,
                "recentRuns": recent_runs_of_job(self.store, name),
                # The mappings (or sources) its schedule's fires leave out: their system is disabled.
                "heldBy": disabled_systems(self.config.project, job),
            }
        return out


class DaemonJobs:
    """The scheduler of a running ``Daemon``, seen from the API: the daemon's side of
    its ``JobControl`` protocol (``scheduler/job``). A trigger runs the job at once in a
    worker thread, under the same job lock as a scheduled fire."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def job_list(self) -> list[dict[str, Any]]:
        return [_shape(name, status) for name, status in self._daemon.jobs_status().items()]

    def trigger(self, name: str) -> bool:
        daemon = self._daemon
        if name not in daemon.config.jobs:
            raise ApiError(404, f"Job {name} not found")
        if daemon.is_running(name):
            return False
        if daemon.cluster is not None:
            return daemon.cluster.trigger(name, "api")  # queued once: whichever node is free runs it
        threading.Thread(target=daemon.fire, args=(name, "api"), name=f"api-{name}", daemon=True).start()
        return True

    def cancel_job(self, name: str) -> bool:
        return self._daemon.cancel_job(name)

    def config_state(self) -> dict[str, Any]:
        daemon = self._daemon
        reload = daemon.last_reload
        state = "stopping" if daemon.stopping else "reloading" if daemon.reloading else "running"
        return {"errors": len(daemon.config.errors), "problems": list(daemon.config.errors),
                "lastReload": reload[0] if reload else None, "lastReloadOk": reload[1] if reload else None,
                "state": state}

    def reload(self) -> dict[str, Any]:
        self._daemon.reload()
        return self.config_state()


def _shape(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "_id": name,
        "enabled": status["enabled"],
        "type": status.get("type", "cron"),
        "schedule": status["schedule"],
        "scheduleDescription": status["scheduleDescription"],
        "timezone": status["timezone"],
        "misfirePolicy": "fireAndProceed" if status["misfire"] == "run_once" else "doNothing",
        **({"invokeService": status["task"], "invokeContext": status.get("invokeContext")} if status.get("task") else
           {"invokeService": "provisioner", "invokeContext": {"action": "liveSync", "source": status["liveSync"][0]}}
           if status.get("liveSync") else
           {"invokeService": "sync", "invokeContext": {"action": "reconcile", "mappings": status["mappings"]}}),
        "description": status["description"],
        # PingIDM's scheduler writes it in UTC to the millisecond, whatever the job's time zone.
        "nextRunDate": pingidm_time(_instant(status["nextFire"])) if status["nextFire"] else None,
        "running": status["running"],
        "lastRun": _pingidm_times(status["lastRun"]),
        "heldBy": status.get("heldBy") or {},
    }


def _pingidm_times(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's ``started`` and ``ended`` as PingIDM writes times (UTC, to the millisecond)."""
    if run is None:
        return None
    return {**run, **{k: pingidm_time(_instant(run[k])) for k in ("started", "ended") if run.get(k)}}


def _newer(stored: dict[str, Any], last: dict[str, Any] | None) -> bool:
    """Whether the store's latest finished run of a job is newer than ``last``."""
    if stored["state"] == "ACTIVE":
        return False
    if last is None:
        return True
    own = {r.get("id") for r in last.get("runs") or []} | {last.get("id")}
    return stored["id"] not in own and _instant(stored["started"]) > _instant(last["started"])


def _instant(iso: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(iso)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
