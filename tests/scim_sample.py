"""The SCIM sample (``samples/sync-with-scim``) as a throwaway project pointed at a
test provider (``scim_server``) and a fresh store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from scim_server import CLIENT_ID, CLIENT_SECRET, ScimServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sync-with-scim"
USERS_IN = "systemScimAccount_managedUser"
USERS_OUT = "managedUser_systemScimAccount"
GROUPS_IN = "systemScimGroup_managedRole"
GROUPS_OUT = "managedRole_systemScimGroup"


def scim_env(server: ScimServer) -> dict[str, str]:
    """The environment the sample's provisioner reads its connection from."""
    return {"SCIM_ENDPOINT": server.url, "SCIM_CLIENT_ID": CLIENT_ID, "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_TOKEN_ENDPOINT": server.token_url}


def sample_project(tmp_path: Path, store_url: str, **properties: Any) -> Path:
    """A copy of the sample with fast retries; ``properties`` change configuration properties."""
    project = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project / "conf")
    prov_file = project / "conf" / "provisioner.openicf-scim.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update({"maximumRetryWait": 1, **properties})
    prov_file.write_text(json.dumps(prov, indent=2))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{store_url}"\n[log]\nformat = "json"\nlevel = "warning"\n')
    return project
