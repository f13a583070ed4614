"""A mapping's ``"enableLinking": false`` (PingIDM's), against a real slapd on the two-way
LDAP sample: no link is recorded or read, so every run finds its targets by correlation
(FOUND, not CONFIRMED), creates nothing twice, and still carries changes over; implicit
sync pushes a managed change through the same correlation; ``onLink`` never runs; and a
mapping without links or a correlation is named by ``validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from idsync.store.database import Store
from idsync.store.tables import links
from idsync_dev.slapd import Slapd
from livesync_env import live
from sqlalchemy import func, select

from samples import FORWARD, REVERSE, idsync, ldap_entry, recon_summary, sample_project


def _unlinked(tmp_path: Path, slapd: Slapd, subtree: str, **changes: Any) -> Path:
    """The sample with ``enableLinking: false`` on its user mappings (and ``changes`` on
    each); the reverse mapping updates the entry it finds, as PingIDM's FOUND does with
    UPDATE (the sample's LINK would only link, which is nothing here)."""
    project = sample_project(tmp_path, slapd, subtree, f"sqlite:///{tmp_path / 's.db'}")
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    for mapping in sync["mappings"]:
        if mapping["name"] in (FORWARD, REVERSE):
            mapping.update(enableLinking=False, **changes)
        if mapping["name"] == REVERSE:
            mapping["policies"] = [{**p, "action": "UPDATE"} if p["situation"] == "FOUND" else p
                                   for p in mapping["policies"]]
    sync_file.write_text(json.dumps(sync, indent=2))
    return project



def _links(project: Path) -> int:
    store = Store.open(f"sqlite:///{project.parent / 's.db'}")
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(links)).scalar_one())
    finally:
        store.close()


def _users(project: Path) -> dict[str, dict[str, Any]]:
    return {u["userName"]: u for u in json.loads(idsync(project, "managed", "query", "user").stdout)}


def test_every_recon_finds_its_targets_by_correlation_and_records_no_link(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    project = _unlinked(tmp_path, slapd, ldap_subtree)
    first = recon_summary(project, FORWARD)
    assert first["situationSummary"]["ABSENT"] == 2
    assert first["changes"] == {**first["changes"], "created": 2, "linked": 0}
    assert _links(project) == 0
    before = _users(project)
    assert set(before) == {"bjensen", "scarter"}

    again = recon_summary(project, FORWARD)
    assert again["situationSummary"]["FOUND"] == 2 and again["situationSummary"]["CONFIRMED"] == 0
    assert again["changes"] == {**again["changes"], "created": 0, "updated": 0, "linked": 0}
    assert _users(project) == before and _links(project) == 0

    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: telephoneNumber\n"
                   "telephoneNumber: 555-0100\n")
    changed = recon_summary(project, FORWARD)
    assert changed["changes"] == {**changed["changes"], "created": 0, "updated": 1}
    assert _users(project)["bjensen"]["telephoneNumber"] == "555-0100"
    # The target phase took the targets the source phase found as its own: none is left unassigned.
    assert changed["situationSummary"]["UNASSIGNED"] == 0
    assert _links(project) == 0


def test_implicit_sync_pushes_through_correlation_and_on_link_never_runs(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    on_link = {"type": "text/javascript", "source": "openidm.create('managed/role', null, {name: 'linked'});"}
    project = _unlinked(tmp_path, slapd, ldap_subtree, onLink=on_link)
    recon_summary(project, FORWARD)
    bjensen = _users(project)["bjensen"]
    patched = idsync(project, "managed", "patch", "user", bjensen["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/description", "value": "Pushed unlinked"}]))
    assert patched.returncode == 0, patched.stdout + patched.stderr
    entry = ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")
    assert entry is not None and entry["description"] == ["Pushed unlinked"]
    assert _links(project) == 0
    reverse = recon_summary(project, REVERSE)
    assert {k: v for k, v in reverse["situationSummary"].items() if v} == {"FOUND": 2}, reverse  # nothing met twice
    assert reverse["changes"]["created"] == 0
    roles = json.loads(idsync(project, "managed", "query", "role", "--filter", 'name eq "linked"').stdout)
    assert roles == []
    # Linking by hand says why nothing can be linked, instead of answering OK for nothing.
    accounts = json.loads(idsync(project, "system", "query", "ldap", "account", "--fields", "_id").stdout)
    by_hand = idsync(project, "sync", "link", FORWARD, accounts[0]["_id"], bjensen["_id"])
    assert by_hand.returncode != 0 and "keeps no links (enableLinking is false)" in by_hand.stdout + by_hand.stderr
    assert _links(project) == 0


def test_validate_names_a_mapping_with_neither_links_nor_a_correlation(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """validate names a mapping with enableLinking false and no correlation, and a FOUND
    whose LINK records nothing, each as a ``warning: FILE: KEY: why`` line and in
    ``--json``'s warnings (they were log events on stderr, missing from ``--json``)."""
    project = _unlinked(tmp_path, slapd, ldap_subtree)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    del sync["mappings"][0]["correlationQuery"]
    sync_file.write_text(json.dumps(sync, indent=2))
    checked = idsync(project, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    said = checked.stdout + checked.stderr
    # A mapping with a correlation is not named; and enableLinking is no longer "not followed".
    named = [line for line in said.splitlines() if "creates them all again" in line]
    assert named == [f"warning: {sync_file}: mappings[0].enableLinking: enableLinking is false and the mapping has "
                     "no correlationQuery or correlationScript: with no link to remember them by, every run finds "
                     "no target for any source and creates them all again"], said
    assert "always records links" not in said
    # The sample's reverse mapping, whose FOUND is LINK (UPDATE in the other tests): LINK does nothing.
    sync["mappings"][2]["policies"] = [{**p, "action": "LINK"} if p["situation"] == "FOUND" else p
                                       for p in sync["mappings"][2]["policies"]]
    sync_file.write_text(json.dumps(sync, indent=2))
    said = idsync(project, "validate").stderr
    named = [line for line in said.splitlines() if "LINK does nothing" in line]
    assert len(named) == 1 and named[0].startswith(f"warning: {sync_file}: mappings[2].policies[1].action: "), said
    answer = json.loads(idsync(project, "validate", "--json").stdout)
    assert {w["key"] for w in answer["warnings"] if w["file"] == str(sync_file)} >= {
        "mappings[0].enableLinking", "mappings[2].policies[1].action"}


def test_livesync_applies_changes_through_correlation(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A modify and an add reach the store by correlation; a delete in LDAP leaves the user
    (with no link there is nothing to say which target was the entry's: PingIDM's ALL_GONE)."""
    project = _unlinked(tmp_path, slapd, ldap_subtree)
    assert live(project, "system/ldap/account").state == "SUCCESS"
    assert set(_users(project)) == {"bjensen", "scarter"}
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modify\nreplace: mail\nmail: b@example.org\n\n"
                   f"dn: uid=newbie,{ldap_subtree}\nobjectClass: inetOrgPerson\nuid: newbie\ncn: New Bie\nsn: Bie\n\n"
                   f"dn: uid=scarter,{ldap_subtree}\nchangetype: delete\n")
    done = live(project, "system/ldap/account")
    assert done.state == "SUCCESS", done.message
    (run,) = done.runs
    assert run["counts"] == {"created": 1, "updated": 1}
    users = _users(project)
    assert set(users) == {"bjensen", "scarter", "newbie"} and users["bjensen"]["mail"] == "b@example.org"
    assert _links(project) == 0
