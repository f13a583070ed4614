"""The two-way LDAP sample (``samples/sync-with-ldap-bidirectional``) as a
throwaway project: pointed at the test slapd, its DNs moved into the test's
own subtree, a fresh store."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cli_runner import IDSYNC as IDSYNC  # the command, for tests that start it themselves
from cli_runner import run_cli
from idsync_dev.slapd import Slapd

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sync-with-ldap-bidirectional"
FORWARD = "systemLdapAccounts_managedUser"
REVERSE = "managedUser_systemLdapAccounts"
_PEOPLE = "ou=People,dc=example,dc=com"
_GROUPS = "ou=Groups,dc=example,dc=com"


def sample_project(tmp_path: Path, slapd: Slapd, subtree: str, store_url: str, *, load_data: bool = True) -> Path:
    """A copy of the sample whose people and groups live in ``subtree``."""
    project = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project / "conf")
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    prov["configurationProperties"].update(host="127.0.0.1", port=slapd.port, credentials=slapd.admin_password,
                                           baseContexts=[subtree], baseContextsToSynchronize=[subtree])
    prov_file.write_text(json.dumps(prov, indent=2))
    sync_file = project / "conf" / "sync.json"
    sync_file.write_text(sync_file.read_text().replace(_PEOPLE, subtree).replace(_GROUPS, subtree))
    (project / "conf" / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{store_url}"\n[log]\nformat = "json"\nlevel = "warning"\n')
    if load_data:
        ldif = (SAMPLE / "data" / "Example.ldif").read_text()
        slapd.add_ldif(ldif.replace(_PEOPLE, subtree).replace(_GROUPS, subtree))
    return project


def set_provisioner_key(project: Path, key: str, value: Any) -> Path:
    """Set (``None``: remove) a top-level key of the LDAP provisioner; its file."""
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    if value is None:
        prov.pop(key, None)
    else:
        prov[key] = value
    prov_file.write_text(json.dumps(prov, indent=2))
    return prov_file


def bad_provisioner_key(project: Path, key: str, value: Any, named: str) -> None:
    """With the LDAP provisioner's ``key`` set to ``value``, loading the project is an
    error naming the file and the key ``named``, and so is ``validate``."""
    from idsync.config.project import load_project
    from idsync.errors import ConfigError

    set_provisioner_key(project, key, value)
    try:
        load_project(project)
    except ConfigError as caught:
        assert caught.file.endswith("provisioner.openicf-ldap.json") and caught.key == named, caught
    else:
        raise AssertionError(f"{key} = {value!r} was accepted")
    checked = idsync(project, "validate")
    assert checked.returncode != 0 and named in checked.stdout + checked.stderr


def idsync(project: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
           process: bool = False) -> subprocess.CompletedProcess[str]:
    """The ``idsync`` command on ``project`` (``cli_runner``); logs at info, as JSON, on stderr."""
    return run_cli(["-p", str(project), *args], stdin=stdin, env={"IDSYNC_LOG__LEVEL": "info", **(env or {})},
                   process=process)


def recon_summary(project: Path, mapping: str) -> dict[str, Any]:
    """``idsync recon MAPPING --json`` on ``project``, which must succeed: its summary."""
    done = idsync(project, "recon", mapping, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def ldap_entry(slapd: Slapd, dn: str) -> dict[str, list[str]] | None:
    """The entry at ``dn`` as the directory holds it (attribute names lower-cased), or ``None``."""
    import ldap3

    conn = ldap3.Connection(ldap3.Server(slapd.url), slapd.admin_dn, slapd.admin_password, auto_bind=True)
    try:
        if not conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*", "+"]):
            return None
        attrs = conn.entries[0].entry_attributes_as_dict
        return {k.lower(): [v.decode() if isinstance(v, bytes) else str(v) for v in vals]
                for k, vals in attrs.items()}
    finally:
        conn.unbind()


def can_bind(slapd: Slapd, dn: str, password: str) -> bool:
    import ldap3

    conn = ldap3.Connection(ldap3.Server(slapd.url), dn, password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()
