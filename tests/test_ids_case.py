"""``sourceIdsCaseSensitive`` / ``targetIdsCaseSensitive: false`` (PingIDM's, for a
directory whose ids are DNs), against a real slapd with ``uidAttribute: "dn"`` on the
two-way LDAP sample: the links keep the DNs in lower case, so an entry whose DN comes
back in another case (a case-only rename) is still the linked one, both ways; a mapping
that uses another's links compares ids as that one says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dbs import store_url
from idsync.config.project import load_project
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.tables import links
from idsync_dev.slapd import Slapd
from livesync_env import live
from sqlalchemy import select

from samples import FORWARD, REVERSE, idsync, recon_summary, sample_project, set_provisioner_key


def _project(tmp_path: Path, slapd: Slapd, subtree: str, url: str, **flags: bool) -> Path:
    project = sample_project(tmp_path, slapd, subtree, url)
    prov = json.loads((project / "conf" / "provisioner.openicf-ldap.json").read_text())
    set_provisioner_key(project, "configurationProperties", {**prov["configurationProperties"], "uidAttribute": "dn"})
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    for mapping in sync["mappings"]:
        if mapping["name"] == FORWARD:
            # A count, not the sample's 10%: a handful of test users is not a large directory.
            mapping.update(flags, maxDeletes=5)
    sync_file.write_text(json.dumps(sync, indent=2))
    return project



def _situations(summary: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in summary["situationSummary"].items() if v}


def _link_dns(url: str) -> list[str]:
    store = Store.open(url)
    try:
        with store.engine.connect() as conn:
            return sorted(str(r[0]) for r in conn.execute(select(links.c.source_id)))
    finally:
        store.close()


def _users(project: Path) -> dict[str, dict[str, Any]]:
    return {u["userName"]: u for u in json.loads(idsync(project, "managed", "query", "user").stdout)}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_a_dn_back_in_another_case_is_still_the_linked_entry(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                             kind: str) -> None:
    url = store_url(kind, tmp_path)
    project = _project(tmp_path, slapd, ldap_subtree, url, sourceIdsCaseSensitive=False)
    first = recon_summary(project, FORWARD)
    assert first["changes"] == {**first["changes"], "created": 2}
    assert _link_dns(url) == sorted(f"uid={u},{ldap_subtree}".lower() for u in ("bjensen", "scarter"))
    user_id = _users(project)["bjensen"]["_id"]

    # A case-only rename: the directory gives the entry back as uid=BJensen,...
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modrdn\nnewrdn: uid=BJensen\ndeleteoldrdn: 1\n")
    renamed = recon_summary(project, FORWARD)
    assert _situations(renamed) == {"CONFIRMED": 2}, renamed
    assert renamed["changes"] == {**renamed["changes"], "created": 0, "updated": 1, "deleted": 0}
    users = _users(project)
    assert set(users) == {"BJensen", "scarter"} and users["BJensen"]["_id"] == user_id
    assert len(_link_dns(url)) == 2

    # The reverse mapping uses these links: its target phase takes the entries its source
    # phase met as met, whatever the case the directory lists them in.
    reverse = recon_summary(project, REVERSE)
    assert _situations(reverse) == {"CONFIRMED": 2}, reverse
    assert reverse["changes"] == {**reverse["changes"], "created": 0, "deleted": 0}
    # By hand: the link named in another case is the link there is.
    dn = f"uid=BJensen,{ldap_subtree}"
    again = idsync(project, "sync", "link", REVERSE, user_id, dn.upper())
    assert again.returncode == 0, again.stdout + again.stderr
    linked = json.loads(idsync(project, "sync", "linked", f"managed/user/{user_id}", "--json").stdout)
    assert [r["resourceName"] for r in linked] == [f"system/ldap/account/{dn.lower()}"]


def test_ids_compared_exactly_by_default(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """PingIDM's default: the links keep DNs as the directory gave them."""
    url = store_url("sqlite", tmp_path)
    project = _project(tmp_path, slapd, ldap_subtree, url)
    slapd.add_ldif(f"dn: uid=bjensen,{ldap_subtree}\nchangetype: modrdn\nnewrdn: uid=BJensen\ndeleteoldrdn: 1\n")
    recon_summary(project, FORWARD)
    assert f"uid=BJensen,{ldap_subtree}" in _link_dns(url)


def test_validate_names_the_flags_of_a_mapping_that_uses_anothers_links(tmp_path: Path, slapd: Slapd,
                                                                        ldap_subtree: str) -> None:
    project = _project(tmp_path, slapd, ldap_subtree, store_url("sqlite", tmp_path), sourceIdsCaseSensitive=False)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    reverse = next(i for i, m in enumerate(sync["mappings"]) if m["name"] == REVERSE)
    sync["mappings"][reverse]["targetIdsCaseSensitive"] = False
    sync_file.write_text(json.dumps(sync, indent=2))
    checked = idsync(project, "validate")
    lines = [line for line in (checked.stdout + checked.stderr).splitlines()
             if "CaseSensitive" in line and "not used" in line]
    assert len(lines) == 1, lines
    assert f"mappings[{reverse}].targetIdsCaseSensitive" in lines[0] and "uses another's links" in lines[0]


def test_livesync_with_dn_ids_deletes_only_the_entry_gone(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A delete in liveSync with DN ids makes the run list the DNs still present and delete
    the linked users whose DN is not among them: present in any case is present."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url("sqlite", tmp_path), sourceIdsCaseSensitive=False)
    assert live(project, "system/ldap/account").state == "SUCCESS"
    assert set(_users(project)) == {"bjensen", "scarter"}
    slapd.add_ldif(f"dn: uid=scarter,{ldap_subtree}\nchangetype: delete\n")
    done = live(project, "system/ldap/account")
    assert done.state == "SUCCESS", done.message
    (run,) = done.runs
    assert run["counts"] == {"deleted": 1}
    assert set(_users(project)) == {"bjensen"}


def test_a_managed_side_keeps_its_ids_as_they_are(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The store finds an object by its id exactly as kept: a managed side's ids are never
    lowered (a user given the id "JDoe" would be found by no link, and a liveSync of the
    type would take it for deleted); validate says the setting is not used there."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url("sqlite", tmp_path), sourceIdsCaseSensitive=False,
                       targetIdsCaseSensitive=False)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        forward = LinkSet.of(store, loaded, loaded.mapping(FORWARD))
        reverse = LinkSet.of(store, loaded, loaded.mapping(REVERSE))
    finally:
        store.close()
    assert forward.folds_mine and forward.key_of_theirs("JDoe") == "JDoe"  # source LDAP, target managed
    assert not reverse.folds_mine and reverse.key_of_theirs("UID=X") == "uid=x"
    checked = idsync(project, "validate")
    lines = [line for line in (checked.stdout + checked.stderr).splitlines()
             if "CaseSensitive" in line and "not used" in line]
    assert len(lines) == 1 and "mappings[0].targetIdsCaseSensitive" in lines[0], lines
    assert "not used on a managed side" in lines[0]
