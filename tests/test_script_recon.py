"""Recons started from scripts (``openidm.action("recon", ...)``) against a real store:
a scheduled script run by ``idsync run-job`` reconciles a managed -> managed mapping
and reads the run's answer, which is recorded like any recon; ``reconById`` pushes one
source object; a mapping already running is an error the script can catch; a script of
a run asking for a recon of that run's own mapping fails at once, while another mapping
runs; a dry run starts nothing; a canceled job cancels the recon it started; bad
parameters are errors naming them.

The projects need no directory: ``managed/staff`` -> ``managed/user`` (``staff_user``)
and ``managed/staff`` -> ``managed/badge`` (``staff_badge``), without implicit sync, so
only a recon fills the targets; scripts leave what they saw in ``managed/note``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from dbs import WITH_POSTGRESQL, store_url
from idsync.config.pingidm_schedules import load_schedules
from idsync.config.project import Project, load_project
from idsync.errors import ScriptError
from idsync.managed.router import run_recon_scripted, scripting
from idsync.managed.tasks import run_task
from idsync.store.database import Store
from idsync.store.runs import RunStore, owner_id
from idsync.sync.options import ReconOptions
from store_projects import CREATE_UPDATE, store_project
from waiting import wait_for

from samples import idsync

_JS = "text/javascript"
STAFF_USER = {"name": "staff_user", "source": "managed/staff", "target": "managed/user", "enableSync": False,
              "properties": [{"source": "login", "target": "userName"}], "policies": CREATE_UPDATE}
STAFF_BADGE = {"name": "staff_badge", "source": "managed/staff", "target": "managed/badge", "enableSync": False,
               "properties": [{"source": "login", "target": "code"}], "policies": CREATE_UPDATE}
TYPES = {**{name: {key: {"type": "string", "searchable": True}}
            for name, key in (("staff", "login"), ("user", "userName"), ("badge", "code"))},
         "note": {k: {"type": "string"} for k in ("what", "run", "state", "message")}}
# Reconciles staff_user twice, in PingIDM's two signatures (the second without
# waitForCompletion), and notes each answer.
NIGHTLY = """
var first = openidm.action('recon', 'recon', {}, {mapping: 'staff_user', waitForCompletion: 'true'});
var second = openidm.action('recon', {}, {_action: 'recon', mapping: 'staff_user'});
openidm.create('managed/note', null, {what: 'first', run: first._id, state: first.state,
                                      message: Object.keys(first).sort().join(',')});
openidm.create('managed/note', null, {what: 'second', run: second._id, state: second.state});
"""


class Env:
    def __init__(self, tmp_path: Path, backend: str, staff_user: dict[str, Any] | None = None) -> None:
        self.dir = store_project(tmp_path, TYPES, [staff_user or STAFF_USER, STAFF_BADGE],
                                 store_url(backend, tmp_path))
        self.project: Project = load_project(self.dir)
        self.store = Store.open(self.project.settings.store_url())

    def run(self, source: str, *, dry_run: bool = False) -> Any:
        """``source`` run as a script of the project, its ``openidm`` bound to the store."""
        script = self.project.scripts.compile({"type": _JS, "source": source}, file="test", key="script",
                                              base_dir=self.project.settings.project_dir)
        with scripting(self.project, self.store, dry_run=dry_run):
            return script()

    def staff(self, *logins: str) -> list[str]:
        return [self.run(f"openidm.create('managed/staff', null, {{login: '{login}'}})._id") for login in logins]

    def names(self, kind: str, key: str) -> list[str]:
        return sorted(o[key] for o in self.run(f"openidm.query('managed/{kind}', {{_queryFilter: 'true'}}).result"))

    def notes(self) -> dict[str, dict[str, Any]]:
        return {n["what"]: n for n in self.run("openidm.query('managed/note', {_queryFilter: 'true'}).result")}

    def schedule(self, name: str, source: str) -> None:
        (self.dir / "conf" / f"schedule-{name}.json").write_text(json.dumps({
            "type": "cron", "schedule": "0 0 * * * ?", "invokeService": "script",
            "invokeContext": {"script": {"type": _JS, "source": source}}}))


@pytest.fixture(params=WITH_POSTGRESQL)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, request.param)
    yield e
    e.store.close()


def test_a_scheduled_script_reconciles_a_mapping_and_reads_the_run(env: Env) -> None:
    """``idsync run-job`` of a ``schedule-*.json`` script: each ``openidm.action('recon',
    'recon', ...)`` (with ``waitForCompletion``, and in PingIDM's other signature without it)
    answers ``{_id, state}`` once its run ended (with ``waitForCompletion``, and without
    it in a command, which would wait for the run before exiting anyway); the runs are
    listed by ``idsync status`` under the mapping, with the job
    ``script:recon``; the first created the users, the second found them in place."""
    env.staff("ann", "bob")
    env.schedule("nightly", NIGHTLY)
    done = idsync(env.dir, "run-job", "nightly", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["state"] == "SUCCESS"
    assert env.names("user", "userName") == ["ann", "bob"]
    notes = env.notes()
    assert notes["first"]["state"] == "SUCCESS" and notes["first"]["message"] == "_id,state"
    assert notes["second"]["state"] in ("ACTIVE", "SUCCESS")  # SUCCESS: it ended before it was answered

    status = idsync(env.dir, "status", "--json", "--mapping", "staff_user")
    assert status.returncode == 0, status.stderr
    runs = {r["_id"]: r for r in json.loads(status.stdout)}
    assert set(runs) == {notes["first"]["run"], notes["second"]["run"]}
    first, second = runs[notes["first"]["run"]], runs[notes["second"]["run"]]
    assert first["job"] == second["job"] == "script:recon"
    assert first["state"] == second["state"] == "SUCCESS"
    assert first["changes"]["created"] == 2 and second["situationSummary"]["CONFIRMED"] == 2


def test_recon_by_id_pushes_one_source_object(env: Env) -> None:
    """``reconById`` with ``mapping`` and ``id`` (or PingIDM's ``ids``) reconciles that one
    source object, answers ``{_id, state}`` and records a ``reconById`` run; a source
    object that does not exist is an error naming it."""
    ann, bob = env.staff("ann", "bob")
    answer = env.run(f"openidm.action('recon', 'reconById', {{}}, {{mapping: 'staff_user', id: '{ann}'}})")
    assert answer["state"] == "SUCCESS" and set(answer) == {"_id", "state"}
    assert env.names("user", "userName") == ["ann"]
    run = RunStore(env.store).get(answer["_id"])
    assert run is not None and run["job"] == "reconById" and run["mapping"] == "staff_user"
    env.run(f"openidm.action('recon', 'reconById', {{}}, {{mapping: 'staff_user', ids: '{bob}'}})")
    assert env.names("user", "userName") == ["ann", "bob"]
    with pytest.raises(ScriptError, match="managed/staff/nobody not found"):
        env.run("openidm.action('recon', 'reconById', {}, {mapping: 'staff_user', id: 'nobody'})")


def test_a_mapping_already_running_is_an_error_the_script_catches(env: Env) -> None:
    """While another run holds the mapping's lock, the script's recon throws that the
    mapping is already running, which the script catches and goes on; nothing ran."""
    env.staff("ann")
    runs = RunStore(env.store)
    holder = f"{owner_id()}:another-run"
    runs.acquire("recon:staff_user", holder)
    try:
        caught = env.run("try { openidm.action('recon', 'recon', {}, {mapping: 'staff_user'}); 'started'; } "
                         "catch (e) { e.message; }")
    finally:
        runs.release("recon:staff_user", holder)
    assert "recon:staff_user is already running" in caught
    assert env.names("user", "userName") == [] and runs.recent(10, "staff_user") == []


def test_a_script_of_a_run_cannot_start_its_own_mapping(tmp_path: Path) -> None:
    """A mapping's ``onCreate`` script starting a recon of its own mapping fails at once with
    an error saying so (its object fails, the run goes on), while a recon of another
    mapping from the same script runs to its end."""
    nested = """
var other = openidm.action('recon', 'recon', {}, {mapping: 'staff_badge'});
var self = 'started';
try { openidm.action('recon', 'recon', {}, {mapping: 'staff_user'}); } catch (e) { self = e.message; }
openidm.create('managed/note', null, {what: target.userName, run: other._id, state: other.state, message: self});
"""
    env = Env(tmp_path, "sqlite", {**STAFF_USER, "onCreate": {"type": _JS, "source": nested}})
    try:
        env.staff("ann")
        t0 = time.monotonic()
        result = run_recon_scripted(env.project, env.store, "staff_user", ReconOptions())
        assert time.monotonic() - t0 < 10
        assert result.state == "SUCCESS", result.message
        note = env.notes()["ann"]
        assert note["message"].startswith("recon:staff_user cannot start from a script of its own run")
        assert note["state"] == "SUCCESS" and env.names("badge", "code") == ["ann"]
        assert RunStore(env.store).get(note["run"])["mapping"] == "staff_badge"  # type: ignore[index]
    finally:
        env.store.close()


def test_a_dry_run_starts_no_recon(env: Env) -> None:
    """In a dry run ``recon`` and ``reconById`` are refused and no run is recorded."""
    ann, = env.staff("ann")
    for call in ("openidm.action('recon', 'recon', {}, {mapping: 'staff_user'})",
                 f"openidm.action('recon', 'reconById', {{}}, {{mapping: 'staff_user', id: '{ann}'}})"):
        with pytest.raises(ScriptError, match="not carried out in a dry run"):
            env.run(call, dry_run=True)
    assert RunStore(env.store).recent(10, "staff_user") == [] and env.names("user", "userName") == []


def test_a_canceled_job_cancels_the_recon_its_script_started(tmp_path: Path) -> None:
    """The job's cancel (a shutdown, its timeout) reaches the recon its script runs: the
    recon ends CANCELED and the script reads so."""
    env = Env(tmp_path, "sqlite")
    try:
        env.staff("ann")
        env.schedule("nightly", NIGHTLY)
        jobs, errors = load_schedules(env.project.settings.conf_dir)
        assert not errors, errors
        cancel = threading.Event()
        cancel.set()
        run_task(env.project, env.store, jobs["nightly"], dry_run=False, cancel=cancel)
        assert env.notes()["first"]["state"] == "CANCELED"
        assert env.names("user", "userName") == []
    finally:
        env.store.close()


@pytest.mark.parametrize(("call", "named"), [
    ("openidm.action('recon', 'recon', {}, {mapping: 'nothing'})", "nothing"),
    ("openidm.action('recon', 'recon', {}, {})", "the mapping's name (mapping)"),
    ("openidm.action('recon', 'recon', {}, {mapping: {name: 'staff_user'}})", "mapping must be a string"),
    ("openidm.action('recon', 'recon', {}, {mapping: 'staff_user', analyze: true})", "unknown parameter 'analyze'"),
    ("openidm.action('recon', 'recon', {links: 'x'}, {mapping: 'staff_user'})", "links cannot be set for one run"),
    ("openidm.action('recon', 'recon', {runTargetPhase: 1}, {mapping: 'staff_user'})", "must be true or false"),
    ("openidm.action('recon', 'reconById', {runTargetPhase: false}, {mapping: 'staff_user', id: 'x'})",
     "reconById takes no settings"),
    ("openidm.action('recon', 'recon', {}, {mapping: 'staff_user', rewriteWriteOnly: 'yes'})", "'yes'"),
    ("openidm.action('recon', 'reconById', {}, {mapping: 'staff_user'})", "source object's id"),
    ("openidm.action('recon', 'cancel', {}, {})", "recon, reconById"),
    ("openidm.read('recon')", "recon service (action on recon)"),
])
def test_bad_recon_parameters_are_errors_naming_them(tmp_path: Path, call: str, named: str) -> None:
    """An unknown mapping, a missing or non-string one, a parameter idsync does not take, a
    setting for one run idsync does not take or of the wrong type, a bad flag, ``reconById`` without an id, an action
    idsync does not answer and another function on ``recon`` each throw an error naming
    what is wrong; nothing runs."""
    env = Env(tmp_path, "sqlite")
    try:
        env.staff("ann")
        caught = env.run(f"try {{ {call}; 'no error'; }} catch (e) {{ e.message; }}")
        assert named in caught
        assert RunStore(env.store).recent(10) == [] and env.names("user", "userName") == []
    finally:
        env.store.close()


def test_a_script_s_recon_takes_settings_for_one_run(tmp_path: Path) -> None:
    """The content of ``openidm.action('recon', 'recon', content, params)`` holds PingIDM's
    settings for that run alone: a ``sourceQuery`` of one staff member reconciles her only."""
    env = Env(tmp_path, "sqlite")
    try:
        env.staff("ann", "bob")
        done = env.run("openidm.action('recon', 'recon', {sourceQuery: {_queryFilter: 'login eq \"ann\"'}, "
                       "runTargetPhase: false}, {mapping: 'staff_user', waitForCompletion: 'true'})")
        assert done["state"] == "SUCCESS" and env.names("user", "userName") == ["ann"]
    finally:
        env.store.close()


def test_a_script_s_recon_is_canceled_over_the_api(tmp_path: Path) -> None:
    """A recon a custom endpoint's script started is listed by ``GET recon`` (job
    ``script:recon``) and stopped by ``recon/ID?_action=cancel`` like any other: it ends
    CANCELED at a page boundary, with part of its source done, and the script reads so."""
    slow = {**STAFF_USER, "properties": [{"source": "login", "target": "userName", "transform": {
        "type": _JS, "source": "var t = Date.now(); while (Date.now() - t < 20) {} source;"}}]}
    env = Env(tmp_path, "sqlite", slow)
    try:
        for batch in range(3):  # a script run makes 100 calls at most
            env.run(f"for (var i = 0; i < 100; i++) {{ openidm.create('managed/staff', null, "
                    f"{{login: 'u{batch}-' + i}}); }}")
    finally:
        env.store.close()
    with (env.dir / "conf" / "idsync.toml").open("a") as toml:
        toml.write("\n[recon]\npage_size = 10\nworkers = 1\n")
    (env.dir / "conf" / "endpoint-nightly.json").write_text(json.dumps({"type": _JS, "source": (
        "openidm.action('recon', 'recon', {}, {mapping: 'staff_user', waitForCompletion: 'true'})")}))
    with serve(env.dir) as api:
        answers: list[Any] = []
        call = threading.Thread(target=lambda: answers.append(api.post("/openidm/endpoint/nightly", headers=ADMIN)))
        call.start()

        def active() -> str | None:
            runs = api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"]
            return next((r["_id"] for r in runs if r.get("job") == "script:recon" and r["state"] == "ACTIVE"), None)

        run_id = wait_for(active, 30, "the script's recon running")
        canceled = api.post(f"/openidm/recon/{run_id}?_action=cancel", headers=ADMIN)
        assert canceled.status_code == 200, canceled.text
        call.join(60)
    (answer,) = answers
    assert answer.status_code == 200 and answer.json() == {"_id": run_id, "state": "CANCELED"}, answer.text
    created = len(json.loads(idsync(env.dir, "managed", "query", "user").stdout))
    assert 0 < created < 300


def test_a_custom_endpoint_answers_at_once_while_its_recon_runs(tmp_path: Path) -> None:
    """Without ``waitForCompletion`` a custom endpoint's recon runs in a thread of its own,
    as in PingIDM: the endpoint answers ``ACTIVE`` with the run's id while the run goes
    on, and the run then ends SUCCESS with every user created; asking again while it runs
    is the script's error (the mapping is running)."""
    slow = {**STAFF_USER, "properties": [{"source": "login", "target": "userName", "transform": {
        "type": _JS, "source": "var t = Date.now(); while (Date.now() - t < 20) {} source;"}}]}
    env = Env(tmp_path, "sqlite", slow)
    try:
        env.run("for (var i = 0; i < 60; i++) { openidm.create('managed/staff', null, {login: 'u' + i}); }")
    finally:
        env.store.close()
    with (env.dir / "conf" / "idsync.toml").open("a") as toml:
        toml.write("\n[recon]\npage_size = 10\nworkers = 1\n")
    (env.dir / "conf" / "endpoint-nightly.json").write_text(json.dumps({"type": _JS, "source": (
        "try { openidm.action('recon', 'recon', {}, {mapping: 'staff_user'}); } "
        "catch (e) { ({refused: e.message}); }")}))
    with serve(env.dir) as api:
        answer = api.post("/openidm/endpoint/nightly", headers=ADMIN)  # before its 1.2 s of transforms
        assert answer.status_code == 200 and answer.json()["state"] == "ACTIVE", answer.text
        run_id = answer.json()["_id"]
        again = api.post("/openidm/endpoint/nightly", headers=ADMIN).json()
        assert "already running" in again.get("refused", ""), again

        def ended() -> dict[str, Any] | None:
            run = api.get(f"/openidm/recon/{run_id}", headers=ADMIN).json()
            return run if run["state"] != "ACTIVE" else None

        run = wait_for(ended, 30, "the endpoint's recon ending")
        assert run["state"] == "SUCCESS" and run["job"] == "script:recon", run
    assert len(json.loads(idsync(env.dir, "managed", "query", "user").stdout)) == 60
