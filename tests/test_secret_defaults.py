"""A clear secret a mapping writes (a ``default`` password) against the hash the target
stores: the run that changes nothing says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli
from dbs import store_url
from idsync_dev.slapd import Slapd
from projects import MAPPING, make_project, person


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_a_default_password_is_no_change_against_its_stored_hash(
    tmp_path: Path, slapd: Slapd, ldap_subtree: str, backend: str
) -> None:
    """A mapping's clear ``default`` password (OpenIDM's usecase1 sets ``Passw0rd``) is stored
    hashed; the next run compares it with that hash and finds no change: every user CONFIRMED
    and unchanged, no update audited, the revisions unmoved."""
    slapd.add_ldif(person("pw1", ldap_subtree) + person("pw2", ldap_subtree))
    project = make_project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path))
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"][0]["properties"].append({"target": "password", "default": "Passw0rd"})
    sync_file.write_text(json.dumps(sync))
    first = run_cli(["-p", str(project), "recon", MAPPING, "--json"])
    assert json.loads(first.stdout)["changes"]["created"] == 2, first.stderr
    second = run_cli(["-p", str(project), "recon", MAPPING, "--json"])
    summary = json.loads(second.stdout)
    assert summary["changes"]["unchanged"] == 2 and summary["changes"]["updated"] == 0, summary["changes"]
