"""Log events an operator filters on: a FAILED run is an error (so ``journalctl -p warning``
shows it), and ``recon.progress`` from a job names the run, the mapping and the job."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from idsync_dev.slapd import Slapd
from projects import MAPPING, make_project, person

from samples import IDSYNC


def _events(project: Path, *args: str, **env: str) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run([IDSYNC, "-p", str(project), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "IDSYNC_LOG__LEVEL": "info", "IDSYNC_LOG__FORMAT": "json", **env})
    return done.returncode, [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def _job(project: Path) -> None:
    (project / "jobs.d").mkdir(exist_ok=True)
    (project / "jobs.d" / "people.toml").write_text(f'schedule = "0 0 1 1 *"\nmappings = ["{MAPPING}"]\n')


def test_job_progress_names_run_mapping_and_job(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``run-job`` logs ``recon.progress`` (as the daemon does) with ``run_id``, ``mapping``
    and ``job``; a successful run ends with info-level ``recon.end`` and ``job.end``."""
    project = make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", page_size=2)
    slapd.add_ldif("\n".join(person(f"u{i}", ldap_subtree) for i in range(6)))
    _job(project)
    code, events = _events(project, "run-job", "people", IDSYNC_RECON__PROGRESS_INTERVAL="0.001")
    assert code == 0, events
    progress = [e for e in events if e["event"] == "recon.progress"]
    end = next(e for e in events if e["event"] == "recon.end")
    assert progress and all((e["run_id"], e["mapping"], e["job"]) == (end["run_id"], MAPPING, "people")
                            for e in progress)
    assert {e["level"] for e in events if e["event"] in ("recon.end", "job.end")} == {"info"}


def test_a_failed_run_is_an_error(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """With the directory unreachable, ``recon.end`` and ``job.end`` say FAILED at level error."""
    project = make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(port=1, connectTimeout=500)
    prov_file.write_text(json.dumps(prov))
    _job(project)
    code, events = _events(project, "run-job", "people")
    assert code != 0
    ends = {e["event"]: e for e in events if e["event"] in ("recon.end", "job.end")}
    assert (ends["recon.end"]["state"], ends["recon.end"]["level"]) == ("FAILED", "error")
    assert (ends["job.end"]["state"], ends["job.end"]["level"]) == ("FAILED", "error")
