"""A recon's writes into the store carried on through the managed type's other mappings
(``OnwardPush``, ``sync/changes.py``), as OpenIDM's sample5 expects: one recon from a directory into
``managed/user`` fills the system ``managed/user`` maps to, without a recon of that
second mapping. Against real slapd, into a CSV file as the second system."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.runs import AUDIT_BEFORE, RunStore
from idsync.store.tables import audit
from idsync_dev.onward import ONWARD_MAPPING, add_onward_csv
from idsync_dev.slapd import Slapd
from sqlalchemy import select

from samples import FORWARD, REVERSE, idsync, ldap_entry, sample_project


def _project(tmp_path: Path, slapd: Slapd, subtree: str, csv_file: Path) -> Path:
    """The two-way LDAP sample with a third mapping: managed/user -> a CSV file."""
    project = sample_project(tmp_path, slapd, subtree, f"sqlite:///{tmp_path / 's.db'}")
    sync_file = project / "conf" / "sync.json"
    sync_file.write_text(sync_file.read_text().replace('"maxDeletes": "10%"', '"maxDeletes": 5'))
    add_onward_csv(project, csv_file, correlationQuery={
        "type": "text/javascript", "source": "var q = {'_queryFilter': 'uid eq \"' + source.userName + '\"'}; q;"})
    return project


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    with path.open(newline="") as f:
        return {r["uid"]: r for r in csv.DictReader(f, skipinitialspace=True)}


def _runs(project: Path) -> list[dict[str, Any]]:
    store = Store.open(load_project(project).settings.store_url())
    try:
        return RunStore(store).recent(50)
    finally:
        store.close()


def test_one_recon_fills_the_system_the_store_maps_to(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The recon from LDAP creates the users and, in the same run, their rows in the CSV
    file, recorded as one run of the onward mapping (job ``implicit``); nothing is pushed
    back to LDAP through the reverse mapping. A change and a delete in LDAP reach the file
    by the next recon of the LDAP mapping alone."""
    hr = tmp_path / "hr.csv"
    project = _project(tmp_path, slapd, ldap_subtree, hr)
    done = idsync(project, "recon", FORWARD)
    assert done.returncode == 0, done.stderr
    users = json.loads(idsync(project, "managed", "query", "user").stdout)
    assert {u["userName"] for u in users} == {"bjensen", "scarter"}
    rows = _rows(hr)
    assert set(rows) == {"bjensen", "scarter"}
    assert rows["bjensen"]["mail"] == "bjensen@example.com" and rows["bjensen"]["lastName"] == "Jensen"
    runs = _runs(project)
    onward = [r for r in runs if r["job"] == "implicit"]
    assert [r["mapping"] for r in onward] == [ONWARD_MAPPING]  # one run for the whole recon, none back to LDAP
    assert onward[0]["state"] == "SUCCESS" and onward[0]["summary"]["changes"]["created"] == 2
    assert FORWARD in onward[0]["summary"]["implicit"]["note"]
    # The recon's own summary names the run that carried its writes on (`idsync status`, recon/ID).
    (recon,) = [r for r in runs if r["mapping"] == FORWARD]
    assert recon["summary"]["onward"] == [{"mapping": ONWARD_MAPPING, "id": onward[0]["id"], "state": "SUCCESS",
                                           "counts": {"created": 2}, "errors": 0}]
    shown = idsync(project, "status", recon["id"]).stdout
    assert f"carried on: {ONWARD_MAPPING}: run {onward[0]['id'][:8]} SUCCESS: created 2" in shown, shown

    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b@example.org\n\n"
                   f"dn: uid=scarter,{ldap_subtree}\nchangetype: delete\n\n")
    again = idsync(project, "recon", FORWARD)
    assert again.returncode == 0, again.stderr
    rows = _rows(hr)
    assert set(rows) == {"bjensen"} and rows["bjensen"]["mail"] == "b@example.org"
    onward = [r for r in _runs(project) if r["job"] == "implicit"]
    assert len(onward) == 2 and onward[0]["summary"]["changes"] == {**onward[0]["summary"]["changes"],
                                                                    "updated": 1, "deleted": 1}


def test_a_dry_run_carries_nothing_on(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    hr = tmp_path / "hr.csv"
    project = _project(tmp_path, slapd, ldap_subtree, hr)
    assert idsync(project, "recon", FORWARD, "--dry-run").returncode == 0
    assert _rows(hr) == {}
    assert not [r for r in _runs(project) if r["job"] == "implicit"]


@pytest.mark.parametrize("how", ["denied", "unreadable"])
def test_a_system_that_refuses_fails_the_push_not_the_recon(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                            how: str) -> None:
    """With the CSV system refusing each create (``operationOptions``) or failing as a whole
    (its file a directory), the recon still succeeds and the store holds the users; the
    onward run records each object failed, and ``idsync sync retry`` pushes them once the
    system takes them."""
    hr = tmp_path / "hr.csv"
    project = _project(tmp_path, slapd, ldap_subtree, hr)
    prov_file = project / "conf" / "provisioner.openicf-hr.json"
    prov = json.loads(prov_file.read_text())
    if how == "denied":
        prov_file.write_text(json.dumps({**prov, "operationOptions": {"CREATE": {"denied": True}}}))
    else:
        hr.unlink()
        hr.mkdir()
    done = idsync(project, "recon", FORWARD)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(idsync(project, "managed", "query", "user").stdout)) == 2
    onward = [r for r in _runs(project) if r["job"] == "implicit"]
    assert len(onward) == 1 and onward[0]["summary"]["changes"]["failed"] == 2, onward
    if how == "denied":
        prov_file.write_text(json.dumps(prov))
    else:
        hr.rmdir()
        hr.write_text('"uid","mail","lastName"\n')
    assert _rows(hr) == {}
    retried = idsync(project, "sync", "retry")
    assert retried.returncode == 0, retried.stderr + retried.stdout
    assert set(_rows(hr)) == {"bjensen", "scarter"}


@pytest.mark.parametrize("repair", ["retry", "next recon"])
def test_a_group_left_in_a_recon_while_ldap_is_down_is_left_once_ldap_is_back(tmp_path: Path, slapd: Slapd,
                                                                              ldap_subtree: str, repair: str) -> None:
    """A recon from an HR file takes a group out of a user's ``ldapGroups`` while LDAP is down:
    the push on to LDAP (a "merge" list there) fails and its audit entry keeps the user as she
    was (no secret in it). Once LDAP is back, ``idsync sync retry`` takes her out of that group,
    not only into the groups she has; or the next HR recon, which adds a group, does both (it
    compares with the user before the change that never arrived, not with the user before its
    own). Without the kept object a merge list only gains values."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    groups = {cn: f"cn={cn},{ldap_subtree}" for cn in ("openidm", "staff", "ops")}
    slapd.add_ldif(f"dn: {groups['staff']}\nobjectClass: top\nobjectClass: groupOfUniqueNames\ncn: staff\n"
                   f"uniqueMember: uid=bjensen,{ldap_subtree}\nuniqueMember: uid=scarter,{ldap_subtree}\n\n"
                   f"dn: {groups['ops']}\nobjectClass: top\nobjectClass: groupOfUniqueNames\ncn: ops\n"
                   f"uniqueMember: uid=scarter,{ldap_subtree}\n\n")
    hr = tmp_path / "hr.csv"
    conf = project / "conf"
    (conf / "provisioner.openicf-hr.json").write_text(json.dumps({
        "name": "hr", "connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
        "configurationProperties": {"csvFile": str(hr), "uniqueAttribute": "uid"},
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "uid": {"type": "string", "nativeName": "__NAME__", "required": True}, "groups": {"type": "string"}}}}}))
    sync = json.loads((conf / "sync.json").read_text())
    sync["mappings"].append({
        "name": "systemHrAccounts_managedUser", "source": "system/hr/account", "target": "managed/user",
        "runTargetPhase": False,
        "correlationQuery": {"type": "text/javascript",
                             "source": "var q = {'_queryFilter': 'userName eq \"' + source.uid + '\"'}; q;"},
        "properties": [{"source": "groups", "target": "ldapGroups",
                        "transform": {"type": "text/javascript", "source": "source.split('|')"}}],
        "policies": [{"situation": "FOUND", "action": "UPDATE"}, {"situation": "CONFIRMED", "action": "UPDATE"},
                     {"situation": "ABSENT", "action": "IGNORE"}]})
    (conf / "sync.json").write_text(json.dumps(sync))
    assert idsync(project, "recon", FORWARD).returncode == 0
    users = {u["userName"]: u for u in json.loads(idsync(project, "managed", "query", "user").stdout)}
    assert sorted(g.lower() for g in users["bjensen"]["ldapGroups"]) == sorted(
        groups[cn].lower() for cn in ("openidm", "staff"))
    hr.write_text(f'"uid","groups"\n"bjensen","{groups["openidm"]}"\n')

    slapd.stop(keep_data=True)
    try:
        done = idsync(project, "recon", "systemHrAccounts_managedUser")
    finally:
        slapd.start()
    assert done.returncode == 0, done.stderr
    user = json.loads(idsync(project, "managed", "get", "user", users["bjensen"]["_id"]).stdout)
    assert [g.lower() for g in user["ldapGroups"]] == [groups["openidm"].lower()]
    onward = [r for r in _runs(project) if r["job"] == "implicit"]
    assert [(r["mapping"], r["summary"]["changes"]["failed"]) for r in onward] == [(REVERSE, 1)], onward
    store = Store.open(load_project(project).settings.store_url())
    try:
        with store.engine.connect() as conn:
            kept = [r.changes[AUDIT_BEFORE] for r in conn.execute(select(audit.c.changes).where(
                audit.c.run_id == onward[0]["id"])) if r.changes and AUDIT_BEFORE in r.changes]
    finally:
        store.close()
    assert len(kept) == 1 and groups["staff"] in kept[0]["ldapGroups"] and "password" not in kept[0]

    if repair == "retry":
        retried = idsync(project, "sync", "retry")
        assert retried.returncode == 0, retried.stdout + retried.stderr
        members = {"staff": ["scarter"], "ops": ["scarter"]}
    else:
        hr.write_text(f'"uid","groups"\n"bjensen","{groups["openidm"]}|{groups["ops"]}"\n')
        again = idsync(project, "recon", "systemHrAccounts_managedUser")
        assert again.returncode == 0, again.stderr
        members = {"staff": ["scarter"], "ops": ["bjensen", "scarter"]}
    for cn, uids in members.items():
        entry = ldap_entry(slapd, groups[cn])
        assert entry is not None and sorted(m.lower() for m in entry["uniquemember"]) == [
            f"uid={uid},{ldap_subtree}".lower() for uid in uids], (cn, entry)
    assert idsync(project, "sync", "retry").stdout.strip() == "nothing to retry"


def test_a_recon_leaves_a_disabled_onward_system_out_said_once(tmp_path: Path, slapd: Slapd,
                                                                ldap_subtree: str) -> None:
    """With the CSV system disabled (``"enabled": false``), the recon from LDAP creates the
    users and carries nothing on to it: no onward run (it recorded a FAILED one, each user
    an error), and one warning naming the mapping and the provisioner file."""
    hr = tmp_path / "hr.csv"
    project = _project(tmp_path, slapd, ldap_subtree, hr)
    prov_file = project / "conf" / "provisioner.openicf-hr.json"
    prov_file.write_text(json.dumps({**json.loads(prov_file.read_text()), "enabled": False}))
    done = idsync(project, "recon", FORWARD, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changes"]["created"] == 2
    runs = _runs(project)
    assert [r["mapping"] for r in runs] == [FORWARD] and "onward" not in runs[0]["summary"]
    skipped = [json.loads(line) for line in done.stderr.splitlines() if "implicit_sync.skipped" in line]
    assert [(e["level"], e["mapping"], e["files"]) for e in skipped] == [("warning", ONWARD_MAPPING, [str(prov_file)])]
    assert _rows(hr) == {}
