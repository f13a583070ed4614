"""PingIDM's scheduled scripts and task scanner (``invokeService`` ``script`` and
``taskscanner`` in ``conf/schedule-*.json``) run as jobs against a real store: the
objects due are claimed, their task script runs once each, a task that does not
return true stays due, a claim younger than the recovery timeout is left alone, two
claimers never both run one task, a dry run changes nothing, and a bad schedule is a
``file: key: problem`` of ``validate``."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS
from file_projects import file_project
from idsync.config.pingidm_schedules import load_schedules
from idsync.config.project import Project, load_project, validate_project
from idsync.config.tasks import expand_time, period, stamp
from idsync.daemon.runner import JobOutcome, run_job
from idsync.errors import ConfigError, ConfigWarning
from idsync.managed.router import scripting
from idsync.resources import check_system
from idsync.store.database import Store
from idsync.store.runs import RunStore

SQL_STORES = [b for b in BACKENDS if getattr(b, "values", (b,))[0] in ("sqlite", "postgresql")]
PAST, FUTURE = "2020-01-01T00:00:00.000Z", "2099-01-01T00:00:00.000Z"

# Deactivates the user it is given, by a patch (as PingIDM's sunset example does), and says it did.
DEACTIVATE = """
var ops = [{operation: 'replace', field: '/active', value: false},
           {operation: 'replace', field: '/accountStatus', value: 'inactive'}];
logger.info('deactivating {} ({})', input.userName, objectID);
openidm.patch(objectID, null, ops);
true;
"""


def _scan(scan: dict[str, Any], script: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    return {"enabled": True, "type": "cron", "schedule": "0 0 * * * ?", "persisted": True,
            "concurrentExecution": False, "invokeService": "taskscanner",
            "invokeContext": {"waitForCompletion": False, "numberOfThreads": 5, "scan": scan,
                              "task": {"script": script or {"type": "text/javascript", "file": "script/deactivate.js"}},
                              **context}}


SCAN_TASKS = {"_queryId": "scan-tasks", "object": "managed/user", "property": "/sunset/date",
              "condition": {"before": "${Time.now}"},
              "taskState": {"started": "/sunset/task-started", "completed": "/sunset/task-completed"},
              "recovery": {"timeout": "10m"}}
QUERY_FILTER = {"_queryFilter": '((/sunset/date lt "${Time.now}") AND !(/sunset/task-completed pr))',
                "object": "managed/user",
                "taskState": {"started": "/sunset/task-started", "completed": "/sunset/task-completed"}}


class Env:
    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.dir = file_project(tmp_path, [], backend)
        (self.dir / "script").mkdir()
        (self.dir / "script" / "deactivate.js").write_text(DEACTIVATE)
        self.project: Project | None = None
        self.store: Store | None = None

    def schedule(self, name: str, body: dict[str, Any]) -> None:
        (self.dir / "conf" / f"schedule-{name}.json").write_text(json.dumps(body))

    def open(self) -> tuple[Project, Store]:
        if self.project is None:
            self.project = load_project(self.dir)
            self.store = Store.open(self.project.settings.store_url())
        assert self.store is not None
        return self.project, self.store

    def user(self, name: str, sunset: dict[str, Any] | None = None) -> str:
        project, store = self.open()
        data = {"userName": name, "givenName": name.title(), "sn": "Tester", "mail": f"{name}@example.com"}
        if sunset is not None:
            data["sunset"] = sunset
        with scripting(project, store) as router:
            return str(router.managed_objects("managed/user").create(data).object["_id"])

    def get(self, object_id: str) -> dict[str, Any]:
        project, store = self.open()
        with scripting(project, store) as router:
            return router.managed_objects("managed/user").get(object_id)

    def run(self, name: str, dry_run: bool | None = None) -> JobOutcome:
        project, store = self.open()
        jobs, errors = load_schedules(project.settings.conf_dir)
        assert not errors, errors
        return run_job(project, store, jobs[name], trigger="manual", dry_run=dry_run)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()



@pytest.fixture(params=SQL_STORES)
def env(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    e = Env(tmp_path, request.param)
    yield e
    e.close()


@pytest.mark.parametrize("scan", [SCAN_TASKS, QUERY_FILTER], ids=["scan-tasks", "queryFilter"])
def test_the_objects_due_get_their_task_once(env: Env, scan: dict[str, Any]) -> None:
    """Of three users, the one whose sunset passed is deactivated, its task marked started and
    completed; the one in the future and the one without a date are left alone; a second
    run finds nothing due. The run is recorded like a recon, with one audit entry per task."""
    env.schedule("sunset", _scan(scan))
    due = env.user("old", {"date": PAST})
    later = env.user("later", {"date": FUTURE})
    never = env.user("never")
    outcome = env.run("sunset")
    assert outcome.state == "SUCCESS", outcome.message
    (run,) = outcome.mappings
    assert run.mapping == "taskscanner/sunset" and run.counts == {"total": 1, "processed": 1, "successes": 1}
    done = env.get(due)
    assert done["active"] is False and done["accountStatus"] == "inactive"
    assert done["sunset"]["date"] == PAST
    assert done["sunset"]["task-started"] <= done["sunset"]["task-completed"]
    for untouched in (later, never):
        assert env.get(untouched).get("accountStatus") != "inactive"
        assert "task-started" not in (env.get(untouched).get("sunset") or {})
    _, store = env.open()
    record = RunStore(store).get(run.run_id or "")
    assert record is not None and record["mapping"] == "taskscanner/sunset" and record["job"] == "sunset"
    assert record["summary"]["task"] == {"total": 1, "processed": 1, "successes": 1}
    (entry,) = RunStore(store).audit_entries(run.run_id or "")
    assert entry["source_id"] == due and entry["status"] == "SUCCESS" and entry["action"] == "TASK"
    again = env.run("sunset")
    assert again.state == "SUCCESS" and again.mappings[0].counts == {}


def test_a_task_that_does_not_say_done_stays_due_and_fails_alone(env: Env) -> None:
    """A script returning anything but true, or throwing, fails that object (counted,
    audited with the reason, the run FAILED) and the other objects' tasks still run; the
    failed one is claimed but not completed, so the next run takes it again."""
    env.schedule("sunset", _scan(dict(QUERY_FILTER), {"type": "text/javascript", "source":
                 "if (input.userName === 'bad') { throw 'no such mailbox'; } input.userName !== 'shy';"}))
    bad, shy, good = (env.user(n, {"date": PAST}) for n in ("bad", "shy", "good"))
    outcome = env.run("sunset")
    assert outcome.state == "FAILED" and "2 of 3 tasks failed" in (outcome.message or "")
    assert outcome.mappings[0].counts == {"total": 3, "processed": 3, "successes": 1, "failures": 2}
    assert "task-completed" in env.get(good)["sunset"]
    for failed in (bad, shy):
        sunset = env.get(failed)["sunset"]
        assert sunset.get("task-completed") is None and sunset["task-started"]
    _, store = env.open()
    messages = {e["source_id"]: e["message"] for e in RunStore(store).audit_entries(outcome.mappings[0].run_id or "")}
    assert "no such mailbox" in messages[bad] and "returned False, not true" in messages[shy]
    assert messages[good] is None
    assert env.run("sunset").mappings[0].counts["processed"] == 2  # the failed ones, again


def test_a_claim_younger_than_the_recovery_timeout_is_left_alone(env: Env) -> None:
    """A task claimed (started, not completed) a minute ago is someone else's while the
    recovery timeout (10m) runs; one claimed an hour ago is taken again."""
    env.schedule("sunset", _scan(SCAN_TASKS))
    now = dt.datetime.now(dt.UTC)
    busy = env.user("busy", {"date": PAST, "task-started": stamp(now - dt.timedelta(minutes=1))})
    stale = env.user("stale", {"date": PAST, "task-started": stamp(now - dt.timedelta(hours=1))})
    outcome = env.run("sunset")
    assert outcome.mappings[0].counts == {"total": 2, "processed": 2, "skipped": 1, "successes": 1}
    assert env.get(busy).get("accountStatus") != "inactive"
    assert env.get(stale)["accountStatus"] == "inactive"


def test_two_claimers_never_both_run_a_task(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another daemon claims the object between this run's read and its claim: the claim,
    written with the revision read, is refused, the object read again is someone else's,
    and this run leaves it."""
    from idsync.managed import tasks
    from idsync.managed.service import ManagedObjects

    env.schedule("sunset", _scan(SCAN_TASKS))
    contested = env.user("contested", {"date": PAST})
    original = ManagedObjects.get
    raced = threading.Event()

    def get(self: ManagedObjects, object_id: str) -> dict[str, Any]:
        found = original(self, object_id)
        if not raced.is_set():  # the first read: the other daemon claims it right after
            raced.set()
            with scripting(*env.open()) as router:
                router.managed_objects("managed/user").patch(object_id, [
                    {"operation": "replace", "field": "/sunset",
                     "value": {"date": PAST, "task-started": stamp(dt.datetime.now(dt.UTC))}}])
        return found

    monkeypatch.setattr(ManagedObjects, "get", get)
    assert tasks is not None
    outcome = env.run("sunset")
    assert raced.is_set()
    assert outcome.mappings[0].counts == {"total": 1, "processed": 1, "skipped": 1}
    assert env.get(contested).get("accountStatus") != "inactive"


def test_number_of_threads_runs_tasks_side_by_side_each_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """``numberOfThreads``: the tasks run in that many threads at once (two meet inside a
    task, which one thread alone could not do), and each due object gets its task once."""
    from idsync.managed import tasks

    env.schedule("sunset", _scan(SCAN_TASKS, numberOfThreads=4))
    due = [env.user(f"u{i:02d}", {"date": PAST}) for i in range(16)]
    meet = threading.Barrier(2, timeout=10)
    original = tasks._TaskScan._one
    seen: list[int] = []

    def one(self: Any, objects: Any, object_id: str) -> tuple[str, str | None]:
        seen.append(threading.get_ident())
        if len(seen) <= 2:
            meet.wait()  # the first two tasks wait for each other: only threads side by side get past
        return original(self, objects, object_id)

    monkeypatch.setattr(tasks._TaskScan, "_one", one)
    outcome = env.run("sunset")
    assert outcome.state == "SUCCESS", outcome.message
    assert outcome.mappings[0].counts == {"total": 16, "processed": 16, "successes": 16}
    assert len(set(seen)) > 1 and len(seen) == 16
    assert all(env.get(u)["accountStatus"] == "inactive" for u in due)
    again = env.run("sunset")
    assert again.mappings[0].counts == {}  # nothing due


def test_a_dry_run_counts_what_is_due_and_changes_nothing(env: Env) -> None:
    env.schedule("sunset", _scan(SCAN_TASKS))
    due = env.user("old", {"date": PAST})
    outcome = env.run("sunset", dry_run=True)
    assert outcome.state == "SUCCESS" and outcome.mappings[0].counts == {"total": 1, "due": 1}
    assert env.get(due)["sunset"] == {"date": PAST}


def test_a_scheduled_script_runs_with_its_input(env: Env) -> None:
    """``invokeService: script``: the script runs with ``object`` the schedule's ``input``
    and ``openidm`` the store (its change is validated like any other); its error fails
    the run with the script's message."""
    env.schedule("greeter", {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
                             "invokeContext": {"input": {"name": "svc-report"}, "script": {
                                 "type": "text/javascript",
                                 "source": "openidm.create('managed/role', null, {name: object.name});"}}})
    outcome = env.run("greeter")
    assert outcome.state == "SUCCESS", outcome.message
    assert outcome.mappings[0].mapping == "script/greeter"
    project, store = env.open()
    with scripting(project, store) as router:
        found = router.call("query", ["managed/role", {"_queryFilter": 'name eq "svc-report"'}])
    assert found["resultCount"] == 1
    env.schedule("greeter", {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
                             "invokeContext": {"script": {"type": "text/javascript",
                                                          "source": "throw 'report server down';"}}})
    env.close()
    env.project = None  # the schedule changed
    failed = env.run("greeter")
    assert failed.state == "FAILED" and "report server down" in (failed.message or "")


# OpenIDM's samples/schedules/schedule-script.json, unchanged.
OPENIDM_SCHEDULE_SCRIPT = {
    "enabled": True, "type": "cron", "schedule": "0 0/1 * * * ?", "persisted": True, "concurrentExecution": False,
    "invokeService": "script",
    "invokeContext": {"script": {"type": "text/javascript",
                                 "source": "java.lang.System.out.println('It is working: ' + input.edit);",
                                 "input": {"edit": 26}}}}


def test_openidms_sample_schedule_script_prints_through_java_and_validate_names_other_java(tmp_path: Path) -> None:
    """OpenIDM's sample scheduled script prints with ``java.lang.System.out.println`` (Rhino's
    Java): it runs, its line logged as a ``script.log`` event, instead of failing each fire with
    "java is not defined". A script reaching for Java idsync does not answer (``new
    java.util.HashMap()``, ``org.forgerock...``) is a ``validate`` warning naming the file, the key
    and the class, and fails naming the class where it is reached."""
    import structlog

    env = Env(tmp_path, "sqlite")
    env.schedule("script", OPENIDM_SCHEDULE_SCRIPT)
    env.schedule("java", {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
                          "invokeContext": {"script": {"type": "text/javascript",
                                                       "source": "var a = 1;\nvar m = new java.util.HashMap();"}}})
    try:
        with structlog.testing.capture_logs() as logs:
            outcome = env.run("script")
        assert outcome.state == "SUCCESS", outcome.message
        assert [e["message"] for e in logs if e["event"] == "script.log"] == ["It is working: 26"]
        failed = env.run("java")
        assert failed.state == "FAILED" and "java.util.HashMap is not available" in (failed.message or "")
        assert "at line 2" in (failed.message or "")
    finally:
        env.close()
    warnings = {(Path(p.file).name, p.key): str(p) for p in validate_project(env.dir, check_system)
                if isinstance(p, ConfigWarning) and "Java" in str(p)}
    assert list(warnings) == [("schedule-java.json", "invokeContext.script")]
    assert "reaches for Java (java.util.HashMap)" in warnings[("schedule-java.json", "invokeContext.script")]


@pytest.mark.parametrize(("scan", "key", "problem"), [
    ({**SCAN_TASKS, "object": "system/ldap/account"}, "invokeContext.scan.object", "managed object type"),
    ({**SCAN_TASKS, "taskState": {"started": "sunset"}}, "invokeContext.scan.taskState.started", "JSON pointer"),
    ({**SCAN_TASKS, "_queryId": "query-all"}, "invokeContext.scan._queryId", "scan-tasks"),
    ({**SCAN_TASKS, "condition": {"before": "${Time.later}"}}, "invokeContext.scan.condition.before", "macro"),
    ({**SCAN_TASKS, "recovery": {"timeout": "ten minutes"}}, "invokeContext.scan.recovery.timeout", "unit"),
    ({**SCAN_TASKS, "_queryFilter": "true"}, "invokeContext.scan", "_queryFilter"),
    ({**SCAN_TASKS, "taskStat": {}}, "invokeContext.scan.taskStat", "unknown setting, did you mean taskState?"),
])
def test_a_bad_scan_names_the_file_and_the_key(tmp_path: Path, scan: dict[str, Any], key: str, problem: str) -> None:
    env = Env(tmp_path, "sqlite")
    env.schedule("sunset", _scan(scan))
    _, errors = load_schedules(env.dir / "conf")
    (error,) = errors
    assert isinstance(error, ConfigError) and not isinstance(error, ConfigWarning)
    assert error.file.endswith("schedule-sunset.json") and error.key == key and problem in str(error)


def test_validate_compiles_the_task_scripts_and_checks_the_type(tmp_path: Path) -> None:
    env = Env(tmp_path, "sqlite")
    env.schedule("broken", _scan(SCAN_TASKS, {"type": "text/javascript", "source": "input.userName ==="}))
    env.schedule("nowhere", _scan({**SCAN_TASKS, "object": "managed/device"}))
    env.schedule("missing", _scan(SCAN_TASKS, {"type": "text/javascript", "file": "script/nothing.js"}))
    env.schedule("groovy", {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
                            "invokeContext": {"script": {"type": "groovy", "source": "println 'x'"}}})
    problems = {(Path(p.file).name, p.key): str(p) for p in validate_project(env.dir, check_system)
                if not isinstance(p, ConfigWarning)}
    assert ("schedule-broken.json", "invokeContext.task.script") in problems
    assert "no managed type 'device'" in problems[("schedule-nowhere.json", "invokeContext.scan.object")]
    assert "nothing.js" in problems[("schedule-missing.json", "invokeContext.task.script")]
    assert "groovy" in problems[("schedule-groovy.json", "invokeContext.script")]


# A task that starts a workflow for the user it is given, as OpenIDM's usecase sunrise task does.
START_WORKFLOW = """
(function () {
    var params = {"userId": objectID, "_key": "sunrise"};
    openidm.create('workflow/processinstance', null, params);
    return true;
}());
"""
# Calls idsync's scripts do reach, and a call written only in a comment or a string.
REACHABLE = """
// openidm.create('workflow/processinstance', null, {});
var user = openidm.read('managed/user/' + input._id, null, ['userName']);
if (openidm.read("config/external.email")) {
    openidm.action("external/email", "send", {to: user.userName, body: "openidm.read('repo/x')"});
}
openidm.action('recon', 'recon', {}, {mapping: 'm'});
true;
"""


def test_validate_names_a_task_calling_a_service_idsync_scripts_cannot_reach(tmp_path: Path) -> None:
    """A task scanner's script that starts a workflow (``openidm.create('workflow/processinstance')``)
    throws each time it runs: ``validate`` says so in a warning naming the schedule, the
    script, the call and why, not only the run once the task is due. A script whose calls
    idsync answers (managed objects, the email service, recon), or that names another
    service only in a comment or a string, gets no such line."""
    env = Env(tmp_path, "sqlite")
    (env.dir / "script" / "sunrise.js").write_text(START_WORKFLOW)
    env.schedule("taskscan_sunrise", {**_scan(SCAN_TASKS, {"type": "text/javascript", "file": "script/sunrise.js"}),
                                      "enabled": False})
    env.schedule("reachable", _scan(SCAN_TASKS, {"type": "text/javascript", "source": REACHABLE}))
    problems = validate_project(env.dir, check_system)
    assert not [p for p in problems if not isinstance(p, ConfigWarning)], problems
    (line,) = [p for p in problems if "cannot reach" in str(p)]
    assert Path(line.file).name == "schedule-taskscan_sunrise.json" and line.key == "invokeContext.task.script"
    assert "script/sunrise.js" in str(line) and "openidm.create('workflow/processinstance')" in str(line)
    assert "no workflow engine" in str(line)


def test_time_macros_and_periods() -> None:
    now = dt.datetime(2026, 1, 31, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert expand_time("${Time.now}", now) == "2026-01-31T10:00:00.123Z"
    assert expand_time('/d lt "${Time.now + 1d}"', now) == '/d lt "2026-02-01T10:00:00.123Z"'
    assert expand_time("${Time.now - 10m}", now) == "2026-01-31T09:50:00.123Z"
    assert expand_time("${Time.now + 1M}", now) == "2026-02-28T10:00:00.123Z"  # the month's last day
    assert expand_time("${Time.now - 1y}", now) == "2025-01-31T10:00:00.123Z"
    assert expand_time(r"\${Time.now}", now) == r"\${Time.now}"
    with pytest.raises(ValueError, match="unknown macro"):
        expand_time("${Time.then}", now)
    assert period("10m") == dt.timedelta(minutes=10) and period("2d") == dt.timedelta(days=2)
    with pytest.raises(ValueError):
        period("10 minutes")


class _Scheduler:
    """The daemon's side of the API's job routes, running a triggered job at once in this thread."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.project, _ = env.open()
        jobs, _ = load_schedules(self.project.settings.conf_dir)
        self.jobs = jobs

    def job_list(self) -> list[dict[str, Any]]:
        return [{"_id": name, "invokeService": job.task.kind if job.task else "sync"}
                for name, job in self.jobs.items()]

    def trigger(self, name: str) -> bool:
        self.env.run(name)
        return True

    def cancel_job(self, name: str) -> bool:
        return False

    def config_state(self) -> dict[str, Any]:
        return {}

    def reload(self) -> dict[str, Any]:
        return {}


def test_the_api_lists_runs_and_executes_a_task_scan(env: Env) -> None:
    """PingIDM's ``/openidm/taskscanner``: ``_action=execute&name=schedule/NAME`` runs the
    schedule's task scan; the runs are listed with their progress, one is read by id; a
    name that is not a task scan is 404, a finished run cannot be canceled."""
    import asyncio

    import httpx
    from api_server import ADMIN, ADMIN_HASH
    from idsync.api import Accounts, ApiContext, create_app
    from idsync.settings import ApiSettings

    env.schedule("sunset", _scan(SCAN_TASKS))
    env.schedule("greeter", {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
                             "invokeContext": {"script": {"type": "text/javascript", "source": "1;"}}})
    due = env.user("old", {"date": PAST})
    project, store = env.open()
    ctx = ApiContext(project=lambda: project, store=store, settings=ApiSettings(), jobs=_Scheduler(env))
    app = create_app(ctx, Accounts({"openidm-admin": ADMIN_HASH}))

    async def visit() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                     headers=ADMIN) as api:
            assert (await api.get("/openidm/taskscanner")).json() == {"tasks": []}
            done = await api.post("/openidm/taskscanner?_action=execute&name=schedule/sunset")
            assert done.status_code == 200 and done.json()["status"] == "TRIGGERED"
            assert env.get(due)["accountStatus"] == "inactive"
            (task,) = (await api.get("/openidm/taskscanner")).json()["tasks"]
            assert task["name"] == "schedule/sunset"
            assert task["progress"] == {"state": "COMPLETED", "result": "SUCCESS", "processed": 1, "total": 1,
                                        "successes": 1, "failures": 0}
            assert (await api.get(f"/openidm/taskscanner/{task['_id']}")).json() == task
            assert (await api.get("/openidm/taskscanner/nope")).status_code == 404
            assert (await api.post("/openidm/taskscanner?_action=execute&name=schedule/greeter")).status_code == 404
            cancel = await api.post(f"/openidm/taskscanner/{task['_id']}?_action=cancel")
            assert cancel.status_code == 200 and cancel.json()["status"] == "FAILURE"

    asyncio.run(visit())


def test_the_daemon_runs_a_task_scan_every_second(tmp_path: Path) -> None:
    """``idsync run`` with PingIDM's simple schedule (``repeatInterval`` 1000 ms) of a task
    scan: a user whose sunset passes while the daemon runs is deactivated within seconds,
    once; the runs are recorded under ``taskscanner/NAME``."""
    import os
    import signal
    import subprocess
    import time

    from samples import IDSYNC

    env = Env(tmp_path, "sqlite")
    simple = {key: value for key, value in _scan(QUERY_FILTER).items() if key != "schedule"}
    env.schedule("sunset", {**simple, "type": "simple", "repeatInterval": 1000})
    later = env.user("later", {"date": stamp(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))})
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([IDSYNC, "-p", str(env.dir), "run"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "IDSYNC_LOG__FORMAT": "json", "IDSYNC_LOG__LEVEL": "info"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and env.get(later).get("accountStatus") != "inactive":
            time.sleep(0.2)
        assert env.get(later)["accountStatus"] == "inactive", "the task did not run within 30 s"
        time.sleep(2)  # more fires, with nothing due
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
        env.close()
    assert code == 0
    events = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines() if line.startswith("{")]
    ends = [e for e in events if e.get("event") == "task.end"]
    assert len(ends) >= 3 and all(e["state"] in ("SUCCESS", "CANCELED") for e in ends), ends
    assert sum(e["counts"].get("successes", 0) for e in ends) == 1


def test_a_long_scan_shows_its_counts_while_it_works(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's record is refreshed as the scan goes (its counts, and a heartbeat, so a
    scan longer than ten minutes is not taken for one whose process died)."""
    from idsync.managed import tasks

    shown: list[tuple[str, dict[str, int]]] = []
    original = RunStore.progress

    def progress(self: RunStore, run_id: str, stage: str, summary: dict[str, Any], conn: Any = None) -> None:
        shown.append((stage, dict(summary["task"])))
        original(self, run_id, stage, summary, conn)

    monkeypatch.setattr(tasks, "_PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(RunStore, "progress", progress)
    env.schedule("sunset", _scan(SCAN_TASKS))
    for name in ("one", "two"):
        env.user(name, {"date": PAST})
    assert env.run("sunset").state == "SUCCESS"
    assert [stage for stage, _ in shown] == ["ACTIVE_TASKS", "ACTIVE_TASKS"]
    assert [counts["processed"] for _, counts in shown] == [1, 2]
