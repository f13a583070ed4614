"""PingIDM's ``conf/schedule-NAME.json``: each is a job named ``NAME`` beside the
``jobs.d/*.toml`` jobs (a reconciliation, or a provisioner liveSync), listed by
``idsync jobs``, run by ``idsync run-job`` and scheduled by the daemon; what idsync
cannot run yet is a warning naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, ADMIN_HASH, free_port
from dbs import WITH_MARIADB, store_url
from idsync.config.pingidm_schedules import UnsupportedSchedule, load_all_jobs, parse_schedule
from idsync.daemon.reload import load_configuration
from idsync.errors import ConfigError
from idsync_dev.slapd import Slapd

from samples import FORWARD, IDSYNC, idsync, sample_project

# A service of a custom bundle: PingIDM schedules any service it has; idsync runs sync, recon,
# provisioner liveSync, script and taskscanner.
_OTHER = {"invokeService": "org.example.reports", "invokeContext": {"report": "daily"}}
_LIVE = {"invokeService": "provisioner", "invokeContext": {"action": "liveSync", "source": "system/ldap/account"}}
_RECON = {
    "enabled": True,
    "type": "cron",
    "schedule": "0 0/15 * * * ?",
    "timeZone": "Europe/Stockholm",
    "misfirePolicy": "doNothing",
    "concurrentExecution": False,
    "invokeService": "org.forgerock.openidm.sync",
    "invokeContext": {"action": "reconcile", "mapping": "m1"},
    "invokeLogLevel": "info",
}


def _write(conf: Path, name: str, body: dict[str, Any]) -> Path:
    conf.mkdir(parents=True, exist_ok=True)
    path = conf / f"schedule-{name}.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def _mini_project(root: Path) -> Path:
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "jobs.d").mkdir(exist_ok=True)
    items = [{"name": m, "source": "managed/user", "target": "managed/role"} for m in ("m1", "m2")]
    (root / "conf" / "sync.json").write_text(json.dumps({"mappings": items}), encoding="utf-8")
    return root


# -- parsing ----------------------------------------------------------------------------


def test_a_reconcile_schedule_is_a_job_named_after_its_file(tmp_path: Path) -> None:
    """Quartz expression, time zone, misfire policy and mapping(s) land on the job's fields."""
    job = parse_schedule(_write(tmp_path, "nightly", _RECON), ["m1", "m2"])
    assert job.name == "nightly" and job.mappings == ("m1",) and job.enabled
    assert job.schedule.expression == "0 0/15 * * * ?" and job.timezone == "Europe/Stockholm"
    assert job.misfire == "skip"
    several = {**_RECON, "misfirePolicy": "fireAndProceed", "invokeService": "sync",
               "invokeContext": {"action": "reconcile", "mappings": ["m1", "m2"]}, "enabled": False}
    job = parse_schedule(_write(tmp_path, "both", several), ["m1", "m2"])
    assert job.mappings == ("m1", "m2") and job.misfire == "run_once" and not job.enabled
    minimal = {"schedule": "0 0 * * * ?", "invokeService": "sync",
               "invokeContext": {"action": "reconcile", "mapping": "m2"}}
    job = parse_schedule(_write(tmp_path, "min", minimal), ["m1", "m2"])
    assert job.timezone == "UTC" and job.misfire == "run_once" and job.mappings == ("m2",)


@pytest.mark.parametrize(("change", "key", "problem"), [
    ({"schedule": "0 0/15 * * *"}, "schedule", "fields"),
    ({"timeZone": "Mars/Olympus"}, "timeZone", "unknown time zone"),
    ({"misfirePolicy": "smartPolicy"}, "misfirePolicy", 'expected "fireAndProceed" or "doNothing"'),
    ({"enabled": "yes"}, "enabled", "expected true or false"),
    ({"invokeContext": {"action": "reconcile", "mapping": "nope"}}, "invokeContext.mapping", "unknown mapping 'nope'"),
    ({"invokeContext": {"action": "reconcile", "mappings": ["m1", 3]}}, "invokeContext.mappings[1]",
     "expected a mapping name"),
    ({"invokeContext": {"action": "purge"}}, "invokeContext.action", 'expected "reconcile"'),
    ({"type": "daily"}, "type", 'expected "cron" or "simple"'),
    ({"startTime": "tomorrow"}, "startTime", "ISO 8601"),
    ({"shedule": "x"}, "shedule", "unknown setting, did you mean schedule?"),
])
def test_a_bad_schedule_names_file_key_and_problem(tmp_path: Path, change: dict[str, Any], key: str,
                                                   problem: str) -> None:
    """Each wrong value is a ConfigError naming the schedule file, the key and the problem."""
    path = _write(tmp_path, "bad", {**_RECON, **change})
    with pytest.raises(ConfigError) as info:
        parse_schedule(path, ["m1"])
    assert not isinstance(info.value, UnsupportedSchedule)
    assert info.value.file == str(path) and info.value.key == key and problem in info.value.problem


@pytest.mark.parametrize(("change", "key", "what"), [
    (_OTHER, "invokeService", "invokeService 'org.example.reports'"),
    ({"invokeService": "workflow", "invokeContext": {"processDefinitionId": "approval"}}, "invokeService",
     "'workflow'"),
])
def test_a_schedule_idsync_cannot_run_yet_is_named_as_unsupported(tmp_path: Path, change: dict[str, Any], key: str,
                                                                  what: str) -> None:
    """A service idsync does not have (a custom bundle's) is an UnsupportedSchedule (a
    warning) that names the schedule and says it is not scheduled."""
    path = _write(tmp_path, "other", {**_RECON, **change})
    with pytest.raises(UnsupportedSchedule) as info:
        parse_schedule(path, ["m1"])
    assert info.value.key == key and what in info.value.problem
    assert "schedule 'other'" in info.value.problem and "not supported yet; not scheduled" in info.value.problem


def test_a_livesync_schedule_is_a_livesync_job(tmp_path: Path) -> None:
    """PingIDM's schedule-liveSync.json shape (invokeService provisioner, action liveSync, a
    source) is a job that runs liveSync of that source; liveSync through another service, or
    without a resource name as its source, is an error naming the key."""
    job = parse_schedule(_write(tmp_path, "liveSyncLdap", {**_RECON, **_LIVE, "schedule": "*/5 * * * * ?"}), ["m1"])
    assert job.livesync == ("system/ldap/account",) and job.mappings == ()
    assert job.summary()["liveSync"] == ["system/ldap/account"]
    # PingIDM's stock file name: runs of liveSync's changes are recorded as job liveSync, so
    # the schedule's job takes the file's name.
    stock = parse_schedule(_write(tmp_path, "liveSync", {**_RECON, **_LIVE}), ["m1"])
    assert stock.name == "schedule-liveSync" and stock.livesync == ("system/ldap/account",)
    for change, key, problem in (
            ({"invokeContext": _LIVE["invokeContext"]}, "invokeService", 'invokes "provisioner"'),
            ({**_LIVE, "invokeContext": {"action": "liveSync"}}, "invokeContext.source", "expected a source"),
            ({**_LIVE, "invokeContext": {"action": "liveSync", "source": "ldap"}}, "invokeContext.source",
             "expected a resource name")):
        path = _write(tmp_path, "bad", {**_RECON, **change})
        with pytest.raises(ConfigError) as info:
            parse_schedule(path, ["m1"])
        assert not isinstance(info.value, UnsupportedSchedule)
        assert info.value.key == key and problem in info.value.problem, info.value


def test_schedules_load_beside_job_files_and_a_clash_is_an_error(tmp_path: Path) -> None:
    """load_all_jobs gives jobs.d and conf/schedule-* jobs together; a bad schedule fails only
    itself; a schedule named like a job file is an error and the job file's job stays."""
    root = _mini_project(tmp_path)
    conf = root / "conf"
    (root / "jobs.d" / "a.toml").write_text('schedule = "@hourly"\nmappings = ["m1"]\n')
    (root / "jobs.d" / "clash.toml").write_text('schedule = "@daily"\nmappings = ["m2"]\n')
    _write(conf, "b", _RECON)
    clash = _write(conf, "clash", _RECON)
    bad = _write(conf, "c", {**_RECON, "schedule": "every now and then"})
    live = _write(conf, "live", {**_RECON, **_OTHER})
    jobs, errors = load_all_jobs(root / "jobs.d", conf, ["m1", "m2"])
    assert list(jobs) == ["a", "b", "clash"] and jobs["clash"].mappings == ("m2",)
    assert sorted(e.file for e in errors) == sorted([str(bad), str(clash), str(live)])
    assert [e.file for e in errors if isinstance(e, UnsupportedSchedule)] == [str(live)]
    assert any(str(e).startswith(f"{clash}: job 'clash' is also defined by") for e in errors)


def test_reload_keeps_a_schedule_whose_file_broke(tmp_path: Path) -> None:
    """The daemon's reload treats a schedule file like a job file: a broken one keeps its
    previous version; an unsupported one is not scheduled and is no error."""
    root = _mini_project(tmp_path)
    path = _write(root / "conf", "nightly", _RECON)
    _write(root / "conf", "live", {**_RECON, **_OTHER})
    first = load_configuration(root)
    assert list(first.jobs) == ["nightly"] and first.errors == []
    _write(root / "conf", "nightly", {**_RECON, "timeZone": "Nowhere/Town"})
    second = load_configuration(root, previous=first)
    assert second.jobs["nightly"] is first.jobs["nightly"]
    assert second.errors and second.errors[0].startswith(f"{path}: timeZone: unknown time zone")


# -- the CLI and the daemon against a real slapd ------------------------------------------------


def test_validate_and_jobs_report_schedules(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``idsync validate`` warns about an unsupported schedule by name and still says ok;
    ``idsync jobs`` lists the schedules' jobs (a recon, a liveSync) beside a jobs.d job; a bad schedule fails validate
    with file: key: problem while ``idsync jobs`` still lists the others."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    conf = project / "conf"
    _write(conf, "reconLdap", {**_RECON, "invokeContext": {"action": "reconcile", "mapping": FORWARD}})
    _write(conf, "liveSyncLdap", {**_RECON, **_LIVE})
    _write(conf, "reportJob", {**_RECON, **_OTHER})
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "hourly.toml").write_text(f'schedule = "@hourly"\nmappings = ["{FORWARD}"]\n')

    done = idsync(project, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning:" in done.stderr and "schedule 'reportJob'" in done.stderr and "not supported yet" in done.stderr
    answer = json.loads(idsync(project, "validate", "--json").stdout)
    assert answer["ok"] and [w["key"] for w in answer["warnings"]] == ["invokeService"]

    done = idsync(project, "jobs", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    rows = {r["name"]: r for r in listing["jobs"]}
    assert sorted(rows) == ["hourly", "liveSyncLdap", "reconLdap"]
    assert rows["liveSyncLdap"]["liveSync"] == ["system/ldap/account"]
    assert rows["reconLdap"]["mappings"] == [FORWARD] and rows["reconLdap"]["misfire"] == "skip"
    assert rows["reconLdap"]["timezone"] == "Europe/Stockholm" and rows["reconLdap"]["nextFires"]
    assert listing["errors"] == [] and "reportJob" in listing["warnings"][0]

    bad = _write(conf, "broken", {**_RECON, "misfirePolicy": "sometimes"})
    done = idsync(project, "validate")
    assert done.returncode == os.EX_CONFIG and f"{bad}: misfirePolicy: expected" in done.stdout
    done = idsync(project, "jobs", "--json")
    assert done.returncode == os.EX_CONFIG
    assert sorted(r["name"] for r in json.loads(done.stdout)["jobs"]) == ["hourly", "liveSyncLdap", "reconLdap"]


@pytest.mark.parametrize("kind", WITH_MARIADB)
def test_run_job_runs_a_schedule_as_a_real_recon(tmp_path: Path, slapd: Slapd, ldap_subtree: str, kind: str) -> None:
    """``idsync run-job NAME`` runs ``schedule-NAME.json``'s reconciliation against slapd
    into the store, and a liveSync schedule's liveSync (its first run a full recon that
    stores a token); an unsupported schedule is refused with its reason (exit 78)."""
    project = sample_project(tmp_path, slapd, ldap_subtree, store_url(kind, tmp_path))
    conf = project / "conf"
    _write(conf, "reconLdap", {**_RECON, "invokeContext": {"action": "reconcile", "mapping": FORWARD}})
    done = idsync(project, "run-job", "reconLdap", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["job"] == "reconLdap" and outcome["state"] == "SUCCESS", outcome
    assert outcome["counts"].get("CREATE", 0) + outcome["counts"].get("created", 0) > 0, outcome["counts"]
    runs = json.loads(idsync(project, "status", "--json").stdout)
    assert any(r["job"] == "reconLdap" and r["mapping"] == FORWARD and r["state"] == "SUCCESS" for r in runs)

    _write(conf, "live", {**_RECON, **_LIVE})
    done = idsync(project, "run-job", "live", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["state"] == "SUCCESS" and outcome["runs"][0]["mapping"] == "system/ldap/account", outcome
    assert outcome["counts"].get("fullRecons") == 1
    _write(conf, "script", {**_RECON, **_OTHER})
    done = idsync(project, "run-job", "script")
    assert done.returncode == os.EX_CONFIG and "not supported yet" in done.stderr
    done = idsync(project, "run-job", "nope")
    assert done.returncode == os.EX_CONFIG and "reconLdap" in done.stderr


def test_daemon_schedules_and_serves_a_schedule(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``idsync run`` fires a schedule every 2 s (a Quartz expression with seconds): its
    runs are recorded under the schedule's name, and /openidm/scheduler/job lists it beside
    the jobs.d job; an unsupported schedule is logged as job.unsupported and not listed."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    port = free_port()
    with (project / "conf" / "idsync.toml").open("a") as f:
        f.write(f'[api]\nenabled = true\nport = {port}\n[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "yearly.toml").write_text(f'schedule = "0 0 1 1 *"\nmappings = ["{FORWARD}"]\n')
    _write(project / "conf", "every2", {**_RECON, "schedule": "*/2 * * * * ?",
                                        "invokeContext": {"action": "reconcile", "mappings": [FORWARD]}})
    _write(project / "conf", "live", {**_RECON, **_OTHER})
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "IDSYNC_LOG__FORMAT": "json", "IDSYNC_LOG__LEVEL": "info"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            for _ in range(200):
                try:
                    if api.get("/openidm/info/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            jobs = api.get("/openidm/scheduler/job", headers=ADMIN).json()["result"]
            assert [(j["_id"], j["invokeContext"]["mappings"]) for j in jobs] == [
                ("every2", [FORWARD]), ("yearly", [FORWARD])]
            # A query's parameters are the list's: sorted, paged and filtered as asked.
            page = api.get("/openidm/scheduler/job?_sortKeys=-_id&_pageSize=1", headers=ADMIN).json()
            assert [j["_id"] for j in page["result"]] == ["yearly"] and page["pagedResultsCookie"] == "1"
            rest = api.get("/openidm/scheduler/job?_sortKeys=-_id&_pageSize=1&_pagedResultsCookie=1",
                           headers=ADMIN).json()
            assert [j["_id"] for j in rest["result"]] == ["every2"] and rest["pagedResultsCookie"] is None
            only = api.get("/openidm/scheduler/job?_queryFilter=_id+eq+'yearly'&_fields=_id", headers=ADMIN).json()
            assert only["result"] == [{"_id": "yearly"}]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = json.loads(idsync(project, "status", "--json").stdout or "[]")
            if sum(r["job"] == "every2" and r["state"] == "SUCCESS" for r in runs) >= 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the schedule did not run twice within 30 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0
    events = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines() if line.startswith("{")]
    unsupported = [e for e in events if e.get("event") == "job.unsupported"]
    assert unsupported and unsupported[0]["file"].endswith("schedule-live.json")


def test_tokens_are_substituted_and_kept_out_of_what_is_shown(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``&{NAME}`` tokens in a schedule take their variables, as in every JSON file: the
    ``schedule`` (with a default) and a script's ``globals``; a missing variable is an error
    naming the file and the key. What the status file and the API show of the
    ``invokeContext`` names the script, never its source or its ``globals``."""
    conf = tmp_path / "conf"
    conf.mkdir()
    monkeypatch.setenv("HR_API_KEY", "s3cret-token")
    monkeypatch.delenv("SYNC_CRON", raising=False)
    script = {"type": "text/javascript", "source": "var k = token; // ${NOT_A_TOKEN}", "globals": {
        "token": "&{HR_API_KEY}"}}
    path = _write(conf, "hr", {"schedule": "&{SYNC_CRON|0 0 * * * ?}", "invokeService": "script",
                               "invokeContext": {"script": script}})
    job = parse_schedule(path, ["m1"])
    assert job.schedule.expression == "0 0 * * * ?"
    assert job.task is not None and job.task.script["globals"] == {"token": "s3cret-token"}
    assert job.task.script["source"] == script["source"]
    summary = job.summary()
    assert summary["invokeContext"] == {"script": {"type": "text/javascript"}}
    assert "s3cret" not in json.dumps(summary) and "var k" not in json.dumps(summary)
    monkeypatch.delenv("HR_API_KEY")
    with pytest.raises(ConfigError) as info:
        parse_schedule(path, ["m1"])
    assert (info.value.file, info.value.key) == (str(path), "invokeContext.script.globals.token")
    assert "HR_API_KEY is not set" in info.value.problem
