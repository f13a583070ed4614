"""Throwaway project directories for recon tests: the repository's own ``conf/``,
pointed at the test slapd and a fresh store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from idsync_dev.slapd import Slapd

ROOT = Path(__file__).resolve().parent.parent
MAPPING = "systemLdapAccounts_managedUser"


def make_project(tmp_path: Path, slapd: Slapd, subtree: str, store_url: str,
                 mapping_changes: dict[str, Any] | None = None, page_size: int = 1000,
                 job_mappings: bool = False) -> Path:
    """``job_mappings``: keep the mappings of the example's jobs (the active and inactive users),
    which most tests leave to the daemon's."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "conf", project / "conf")
    for extra in (project / "conf").glob("mapping-*.json"):
        if not job_mappings:
            extra.unlink()
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    props = prov["configurationProperties"]
    props.update(host="127.0.0.1", port=slapd.port, credentials=slapd.admin_password,
                 baseContexts=[subtree], baseContextsToSynchronize=[subtree])
    prov_file.write_text(json.dumps(prov, indent=2))
    if mapping_changes:
        sync_file = project / "conf" / "sync.json"
        sync = json.loads(sync_file.read_text())
        sync["mappings"][0].update(mapping_changes)
        for key, value in list(sync["mappings"][0].items()):
            if value is None:
                del sync["mappings"][0][key]
        sync_file.write_text(json.dumps(sync, indent=2))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{store_url}"\n[recon]\npage_size = {page_size}\n'
        '[log]\nformat = "json"\nlevel = "warning"\n')
    return project


def person(uid: str, subtree: str, **attrs: str) -> str:
    values = {"cn": f"{uid.title()} Test", "sn": "Test", "givenName": uid.title(), "mail": f"{uid}@example.com",
              "telephoneNumber": "555-0100", **attrs}
    lines = [f"dn: uid={uid},{subtree}", "objectClass: inetOrgPerson", f"uid: {uid}"]
    lines += [f"{k}: {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n\n"


def store_project(directory: Path, url: str) -> Path:
    """A project of PingIDM's default managed types over the store at ``url``, with no
    mapping (``directory``, made now)."""
    (directory / "conf").mkdir(parents=True)
    (directory / "conf" / "idsync.toml").write_text(f'[store]\nurl = "{url}"\n')
    (directory / "conf" / "sync.json").write_text(json.dumps({"mappings": []}))
    return directory
