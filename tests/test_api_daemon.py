"""The API inside the real ``idsync run`` process: it listens where ``[api]`` says,
lists the scheduler's jobs, triggers one (which runs under the job lock, like a
scheduled fire) and answers while the recon runs; SIGTERM still exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from api_server import ADMIN, ADMIN_HASH, free_port
from idsync.testing.slapd import Slapd

from samples import FORWARD, IDSYNC, sample_project


def test_daemon_serves_api(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """ping, scheduler/job, trigger, recon list and managed queries during the run, then SIGTERM."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    port = free_port()
    with (project / "conf" / "idsync.toml").open("a") as f:
        f.write(f'[api]\nenabled = true\nport = {port}\n[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "ldap-users.toml").write_text(
        f'schedule = "0 0 1 1 *"\nmappings = ["{FORWARD}"]\nmisfire = "skip"\n')
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "IDSYNC_LOG__FORMAT": "json"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            for _ in range(200):
                try:
                    if api.get("/openidm/info/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            jobs = api.get("/openidm/scheduler/job", headers=ADMIN).json()["result"]
            assert [(j["_id"], j["invokeContext"]["mappings"]) for j in jobs] == [("ldap-users", [FORWARD])]
            assert jobs[0]["nextRunDate"] and jobs[0]["lastRun"] is None
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
            users = api.get("/openidm/managed/user?_queryId=query-all-ids", headers=ADMIN).json()
            assert users["resultCount"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
