"""The API inside the real ``idsync run`` process: it listens where ``[api]`` says,
lists the scheduler's jobs, triggers one (which runs under the job lock, like a
scheduled fire) and answers while the recon runs, many clients at once during a
scheduled recon; SIGTERM still exits cleanly and no password reaches the logs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from api_server import ADMIN, ADMIN_HASH, add_users, free_port
from cluster_env import Gate, gate_pace
from idsync_dev.slapd import Slapd
from waiting import wait_for

from samples import FORWARD, IDSYNC, sample_project


def test_daemon_serves_api(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """ping, scheduler/job (its times in UTC to the millisecond), trigger, recon list and managed
    queries during the run; the job's gauges in /metrics; a reload with a broken job file is an
    error event, shows in STATUS= and in the metrics, and keeps the job; then SIGTERM."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    port = free_port()
    with (project / "conf" / "idsync.toml").open("a") as f:
        f.write(f'[api]\nenabled = true\nport = {port}\n[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "ldap-users.toml").write_text(
        f'schedule = "0 0 1 1 *"\ntimezone = "Europe/Stockholm"\nmappings = ["{FORWARD}"]\nmisfire = "skip"\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "IDSYNC_LOG__FORMAT": "json",
                                            "NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            wait_for(lambda: _pinged(port), 60, "the daemon's API", interval=0.05)
            jobs = api.get("/openidm/scheduler/job", headers=ADMIN).json()["result"]
            assert [(j["_id"], j["invokeContext"]["mappings"]) for j in jobs] == [("ldap-users", [FORWARD])]
            assert jobs[0]["lastRun"] is None
            # PingIDM's scheduler writes the next fire in UTC to the millisecond: midnight of
            # 1 January in Stockholm is 23:00 UTC the day before.
            assert re.fullmatch(r"\d{4}-12-31T23:00:00\.000Z", jobs[0]["nextRunDate"]), jobs[0]["nextRunDate"]
            r = api.post("/openidm/scheduler/job/ldap-users?_action=trigger", headers=ADMIN)
            assert r.status_code == 200 and r.json()["status"] == "TRIGGERED"
            assert api.post("/openidm/scheduler/job/nope?_action=trigger", headers=ADMIN).status_code == 404
            for _ in range(200):  # other requests are answered while the job runs
                runs = api.get("/openidm/recon", headers=ADMIN).json()["reconciliations"]
                assert api.get("/openidm/managed/user?_queryFilter=true", headers=ADMIN).status_code == 200
                if runs and runs[0]["state"] != "ACTIVE":
                    break
                time.sleep(0.05)
            assert runs[0]["state"] == "SUCCESS" and runs[0]["job"] == "ldap-users"
            # The run's times too, in UTC to the millisecond, as nextRunDate.
            for _ in range(200):
                last = api.get("/openidm/scheduler/job/ldap-users", headers=ADMIN).json()["lastRun"]
                if last is not None and last["ended"]:
                    break
                time.sleep(0.05)
            for key in ("started", "ended"):
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", last[key]), last
            users = api.get("/openidm/managed/user?_queryId=query-all-ids", headers=ADMIN).json()
            assert users["resultCount"] == 2
            # A run started over the API shows in the status file as a scheduled one does.
            started = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true",
                               headers=ADMIN).json()
            status_file = project / "state" / "status.json"
            for _ in range(200):
                shown = json.loads(status_file.read_text())["mappings"].get(FORWARD, {})
                if shown.get("lastRun") == started["_id"] and shown.get("state") == "SUCCESS":
                    break
                time.sleep(0.05)
            assert shown["lastRun"] == started["_id"] and shown["state"] == "SUCCESS", shown
            metrics = api.get("/metrics", headers=ADMIN).text
            assert 'idsync_job_running{job="ldap-users"} 0.0' in metrics
            assert 'idsync_job_next_fire_timestamp_seconds{job="ldap-users"}' in metrics
            assert "idsync_config_errors 0.0" in metrics
            assert "idsync_config_last_reload" not in metrics  # no reload yet
            # A reload with a broken job file: the job keeps its previous version, systemd's
            # STATUS= and the metrics say the reload failed.
            (project / "jobs.d" / "ldap-users.toml").write_text('schedule = "not a cron"\nmappings = []\n')
            proc.send_signal(signal.SIGHUP)
            for _ in range(200):
                metrics = api.get("/metrics", headers=ADMIN).text
                if "idsync_config_last_reload_successful" in metrics:
                    break
                time.sleep(0.05)
            assert "idsync_config_last_reload_successful 0.0" in metrics
            assert "idsync_config_errors 1.0" in metrics
            assert [j["_id"] for j in api.get("/openidm/scheduler/job", headers=ADMIN).json()["result"]] == [
                "ldap-users"]
            statuses = []
            with contextlib.suppress(TimeoutError):
                while not any(s.startswith("STATUS=reload failed: 1 problem(s)") for s in statuses):
                    statuses.append(notify.recv(4096).decode())
            assert any(s.startswith("STATUS=reload failed: 1 problem(s), previous version kept") for s in statuses)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        notify.close()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    failed = [json.loads(line) for line in out.splitlines() if '"daemon.reload_failed"' in line]
    assert [(e["level"], e["errors"]) for e in failed] == [("error", 1)]


def _pinged(port: int) -> bool:
    """Whether the daemon's API on ``port`` answers its ping."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/openidm/info/ping", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _start(project: Path, port: int) -> subprocess.Popen[str]:
    """``idsync run`` of ``project``, once its API answers (a minute at most: a loaded machine)."""
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "IDSYNC_LOG__FORMAT": "json", "IDSYNC_LOG__LEVEL": "info"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _pinged(port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(proc.communicate()[0])


def _cancel_a_scheduled_run(api: httpx.Client, after: str) -> dict[str, object]:
    """Cancel the next scheduled run of the job through recon/ID (which reaches the
    daemon's job); a run that ended before the cancel arrived is a 409, and the
    one after it is tried."""
    tried = {after}
    for _ in range(600):
        runs = api.get(f"/openidm/recon?mapping={FORWARD}").json()["reconciliations"]
        active = [r for r in runs if r["state"] == "ACTIVE" and r["_id"] not in tried]
        if active:
            run_id = active[0]["_id"]
            tried.add(run_id)
            if api.post(f"/openidm/recon/{run_id}?_action=cancel").status_code == 200:
                for _ in range(600):
                    summary: dict[str, object] = api.get(f"/openidm/recon/{run_id}").json()
                    if summary["state"] != "ACTIVE":
                        return summary
                    time.sleep(0.05)
        time.sleep(0.02)
    raise AssertionError("no scheduled run could be canceled")


def test_requests_during_scheduled_recon(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """While a scheduled fire reconciles a directory of 500 users page by page, twelve
    clients at once read, query, create users (implicit sync to LDAP) and ask for a
    recon of the same mapping: every answer comes, a recon start is a 409 from the
    job's lock, the run ends SUCCESS and /metrics records the job's success; a later
    scheduled run is canceled through recon/ID; neither a password sent nor a wrong
    login password appears in the daemon's logs."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    add_users(slapd, ldap_subtree, 500)
    # 10 ms an entry until the project's gate is opened (``cluster_env.Gate``): the run lasts 5 s
    # at least, so the requests below meet it under way; then at full speed. (Not longer an
    # entry: the script holds the daemon's interpreter meanwhile, which the API's answers wait for.)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    (forward,) = (m for m in sync["mappings"] if m["name"] == FORWARD)
    rule = next(p for p in forward["properties"] if p.get("source") == "uid")
    rule["transform"] = {"type": "text/javascript",
                         "source": gate_pace(10) + "source"}
    sync_file.write_text(json.dumps(sync))
    port = free_port()
    with (project / "conf" / "idsync.toml").open("a") as f:
        f.write(f'[recon]\npage_size = 5\n[api]\nenabled = true\nport = {port}\n'
                f'[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "ldap-users.toml").write_text(
        f'schedule = "*/2 * * * * ?"\nmappings = ["{FORWARD}"]\nmisfire = "skip"\n')
    secret, wrong = "Conc-urrent-s3cret", "not-the-Passw0rd"
    proc = _start(project, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=ADMIN) as api:
            for _ in range(200):
                (job,) = api.get("/openidm/scheduler/job").json()["result"]
                if job["running"]:
                    break
                time.sleep(0.05)
            assert job["running"], job

            def request(i: int) -> tuple[str, int, float]:
                began = time.monotonic()
                kind = ("query", "read-runs", "create", "recon", "jobs", "metrics")[i % 6]
                if kind == "query":
                    r = api.get("/openidm/managed/user?_queryFilter=true&_pageSize=50")
                elif kind == "read-runs":
                    r = api.get("/openidm/recon")
                elif kind == "create":
                    r = api.post("/openidm/managed/user?_action=create", json={
                        "userName": f"c{i}", "sn": "C", "givenName": "C", "mail": f"c{i}@example.com",
                        "password": secret})
                elif kind == "recon":
                    r = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}")
                elif kind == "jobs":
                    r = api.get("/openidm/scheduler/job")
                else:
                    r = api.get("/metrics")
                return kind, r.status_code, time.monotonic() - began

            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(request, range(36)))
            expected = {"query": 200, "read-runs": 200, "create": 201, "recon": 409, "jobs": 200, "metrics": 200}
            assert [(k, c) for k, c, _ in answers] == [(k, expected[k]) for k, _, _ in answers]
            assert max(t for _, _, t in answers) < 30
            assert httpx.get(f"http://127.0.0.1:{port}/openidm/config/sync",
                             headers={**ADMIN, "X-OpenIDM-Password": wrong}).status_code == 401
            gate = Gate(project)
            gate.open()
            for _ in range(600):
                runs = [r for r in api.get(f"/openidm/recon?mapping={FORWARD}").json()["reconciliations"]
                        if r.get("job") == "ldap-users"]
                if runs and runs[-1]["state"] != "ACTIVE":
                    break
                time.sleep(0.05)
            first = runs[-1]
            assert first["state"] == "SUCCESS" and first["situationSummary"]["ABSENT"] >= 500, first
            created = api.get("/openidm/system/ldap/account?_queryFilter=uid+sw+'c'&_fields=uid").json()
            assert sorted(a["uid"] for a in created["result"]) == sorted(f"c{i}" for i in range(2, 36, 6))
            metrics = api.get("/metrics").text
            assert 'idsync_job_last_success_timestamp_seconds{job="ldap-users"}' in metrics
            gate.path.unlink()  # a later run slow again, to be canceled while under way
            assert _cancel_a_scheduled_run(api, first["_id"])["state"] == "CANCELED"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and secret not in out and wrong not in out
