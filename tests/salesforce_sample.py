"""The Salesforce sample (``samples/sync-with-salesforce``) as a throwaway project
pointed at a fresh local Salesforce stand-in, and the stand-in fixture."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from fake_salesforce import FakeSalesforce

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sync-with-salesforce"
FORWARD = "systemSalesforceUser_managedUser"
REVERSE = "managedUser_systemSalesforceUser"
PROFILE_ID = "00e000000000001AAA"


def running_org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    """A fresh org on loopback HTTPS, stopped when the generator closes (a fixture body)."""
    fake = FakeSalesforce().start(tmp_path)
    try:
        yield fake
    finally:
        fake.stop()


def sf_env(org: FakeSalesforce) -> dict[str, str]:
    """The environment the sample's provisioner reads its connection from."""
    return {"SALESFORCE_LOGIN_URL": f"{org.url}/services/oauth2/token", "SALESFORCE_CLIENT_ID": org.client_id,
            "SALESFORCE_CLIENT_SECRET": org.client_secret, "SALESFORCE_REFRESH_TOKEN": next(iter(org.refresh_tokens)),
            "SALESFORCE_INSTANCE_URL": org.url}


def sample_project(tmp_path: Path, org: FakeSalesforce, store_url: str, **extra: object) -> Path:
    """A copy of the sample trusting the stand-in's certificate, with fast retries, enabled
    (as the walkthrough's command line does: the sample ships disabled); ``extra`` adds
    configuration properties."""
    project = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project / "conf")
    prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(caFile=str(org.ca_file), retryBackoff=10, maxRetries=3, **extra)
    prov["enabled"] = True
    prov_file.write_text(json.dumps(prov, indent=2))
    sync_file = project / "conf" / "sync.json"
    sync_file.write_text(sync_file.read_text().replace("00e000000000000AAA", PROFILE_ID))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{store_url}"\n[log]\nformat = "json"\nlevel = "warning"\n')
    return project
