"""``uidAttribute: "dn"``: the LDAP provisioner's ids are the entries' DNs, as in
every stock OpenICF LDAP provisioner. Against the real slapd and real stores:
reads, get by id, recon both ways, and renames that keep the link."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import store_url
from idsync.config.project import load_project
from idsync.managed import ManagedObjects
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store
from idsync.store.links import LinkSet
from idsync.store.tables import links
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon
from idsync_dev.slapd import Slapd
from recon_env import Env
from sqlalchemy import func, select

from samples import FORWARD, ldap_entry, sample_project

REVERSE = "managedUser_systemLdapAccounts"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def _dn_ids(prov: dict[str, Any]) -> None:
    prov["configurationProperties"]["uidAttribute"] = "dn"


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    e.change_conf("provisioner.openicf-ldap.json", _dn_ids)
    yield e
    e.store.close()


def _links(env: Env) -> list[tuple[str, str]]:
    """(LDAP DN, managed user id) of every link of the mapping pair."""
    with env.store.engine.connect() as conn:
        rows = conn.execute(select(links.c.source_id, links.c.target_id)).all()
    return sorted((str(s), str(t)) for s, t in rows)


def _accounts(env: Env) -> dict[str, dict[str, Any]]:
    res = Resources(env.project, env.store).open("system/ldap/account")
    return {o["_id"]: o for page in res.pages(QuerySpec()) for o in page}


def test_reads_and_get_by_id_use_the_dn(env: Env) -> None:
    """Paged reads give each entry its DN as ``_id``; get_many by DN (any case or
    spacing of attribute types) is a base-scope read of that DN; a DN outside the
    base contexts, of no entry, or that is not a DN at all is absent (not an error)."""
    env.add("jdoe", "asmith")
    accounts = _accounts(env)
    jdoe = f"uid=jdoe,{env.subtree}"
    assert set(accounts) == {jdoe, f"uid=asmith,{env.subtree}"}
    res = Resources(env.project, env.store).open("system/ldap/account")
    loose = "UID=jdoe , " + env.subtree.replace(",", ", ").upper().replace("OU=", "ou=")
    got = res.get_many([jdoe, loose, f"uid=nobody,{env.subtree}", "uid=x,dc=elsewhere", "",
                        f"no equals sign,{env.subtree}", f"uid=a=b=,{env.subtree}"])
    assert set(got) == {jdoe, loose}
    assert got[jdoe]["_id"] == jdoe and got[jdoe]["uid"] == "jdoe"
    assert got[loose]["_id"] == jdoe  # the DN as the directory spells it


def test_ldap_to_store_recon_links_dns_and_second_run_changes_nothing(env: Env) -> None:
    """LDAP-to-store recon with DN ids creates and links each entry; a second run
    finds everything CONFIRMED and writes nothing."""
    env.add("jdoe", "asmith")
    first = env.recon()
    assert first.state == "SUCCESS", first.summary
    users = env.users()
    assert set(users) == {"jdoe", "asmith"}
    assert _links(env) == sorted([(f"uid=jdoe,{env.subtree}", users["jdoe"]["_id"]),
                                  (f"uid=asmith,{env.subtree}", users["asmith"]["_id"])])
    second = env.recon()
    assert second.state == "SUCCESS", second.summary
    assert second.summary["situationSummary"].get("CONFIRMED") == 2
    assert not any(second.summary["changes"].get(k) for k in ("created", "updated", "deleted", "linked"))
    assert _links(env) == sorted([(f"uid=jdoe,{env.subtree}", users["jdoe"]["_id"]),
                                  (f"uid=asmith,{env.subtree}", users["asmith"]["_id"])])


def _no_on_create(sync: dict[str, Any]) -> None:
    """The seed's onCreate names entries under ou=People; this test's entries go in its own subtree."""
    next(m for m in sync["mappings"] if m["name"] == REVERSE).pop("onCreate")


def _push(env: Env) -> Any:
    result = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert result.state == "SUCCESS", result.summary
    return result


def test_store_to_ldap_create_links_the_new_dn_and_a_rename_follows(env: Env) -> None:
    """A managed user pushed to LDAP is created at ``uid=<userName>,<base>`` and linked
    by that DN; a later change of userName renames the entry (modify DN) and the link
    moves to the new DN: one entry, one link, no delete and no create."""
    env.change_conf("sync.json", _no_on_create)
    user = env.create_user(userName="bnew", givenName="B", sn="New", mail="bnew@example.com")
    first = _push(env)
    assert first.summary["changes"].get("created") == 1
    old_dn = f"uid=bnew,{env.subtree}"
    assert set(_accounts(env)) == {old_dn}
    assert _links(env) == [(old_dn, user["_id"])]
    assert _push(env).summary["situationSummary"].get("CONFIRMED") == 1

    Resources(env.project, env.store).open("managed/user").update(user["_id"], {**user, "userName": "brenamed"})
    renamed = _push(env)
    new_dn = f"uid=brenamed,{env.subtree}"
    assert set(_accounts(env)) == {new_dn}
    assert _links(env) == [(new_dn, user["_id"])]
    changes = renamed.summary["changes"]
    assert not changes.get("created") and not changes.get("deleted"), changes
    after = _push(env)
    assert after.summary["situationSummary"].get("CONFIRMED") == 1
    assert not after.summary["changes"].get("created") and not after.summary["changes"].get("deleted")


def _correlate_by_mail(sync: dict[str, Any]) -> None:
    sync["mappings"][0]["correlationQuery"] = {"_queryFilter": '/mail eq "${source.mail}"'}


@pytest.mark.parametrize("move", [False, True], ids=["modrdn", "move"])
def test_renamed_ldap_entry_keeps_its_link_and_managed_user(env: Env, move: bool) -> None:
    """An entry renamed in the directory (a new RDN, or moved to another container)
    is found again by correlation on a stable attribute; the stale link (its old DN
    is gone) is taken over by the new DN: the managed user is updated, not deleted
    and created again, and one link remains."""
    env.change_conf("sync.json", _correlate_by_mail)
    env.add("jdoe")
    assert env.recon().state == "SUCCESS"
    user_id = env.users()["jdoe"]["_id"]
    if move:
        env.slapd.add_ldif(f"dn: ou=moved,{env.subtree}\nobjectClass: organizationalUnit\nou: moved\n\n"
                           f"dn: uid=jdoe,{env.subtree}\nchangetype: modrdn\nnewrdn: uid=jdoe\n"
                           f"deleteoldrdn: 1\nnewsuperior: ou=moved,{env.subtree}\n")
        new_dn, name = f"uid=jdoe,ou=moved,{env.subtree}", "jdoe"
    else:
        env.slapd.add_ldif(f"dn: uid=jdoe,{env.subtree}\nchangetype: modrdn\nnewrdn: uid=jdoe2\ndeleteoldrdn: 1\n")
        new_dn, name = f"uid=jdoe2,{env.subtree}", "jdoe2"
    result = env.recon()
    assert result.state == "SUCCESS", result.summary
    assert result.summary["situationSummary"].get("FOUND") == 1, result.summary
    changes = result.summary["changes"]
    assert not changes.get("created") and not changes.get("deleted"), changes
    users = env.users()
    assert list(users) == [name] and users[name]["_id"] == user_id
    assert _links(env) == [(new_dn, user_id)]
    again = env.recon()
    assert {k: v for k, v in again.summary["situationSummary"].items() if v} == {"CONFIRMED": 1}


def test_a_rename_in_case_only_keeps_the_link_when_ids_ignore_case(env: Env) -> None:
    """``sourceIdsCaseSensitive: false`` (what ``validate`` asks for with DN ids): an entry
    renamed in case only (``uid=jdoe`` to ``uid=JDoe``) is the same source, its user updated,
    not a second user beside the first."""
    env.reconfigure(sourceIdsCaseSensitive=False)
    env.change_conf("provisioner.openicf-ldap.json", _dn_ids)
    env.add("jdoe")
    assert env.recon().state == "SUCCESS"
    user_id = env.users()["jdoe"]["_id"]
    env.slapd.add_ldif(f"dn: uid=jdoe,{env.subtree}\nchangetype: modrdn\nnewrdn: uid=JDoe\ndeleteoldrdn: 1\n")
    result = env.recon()
    assert result.state == "SUCCESS", result.summary
    assert {k: v for k, v in result.summary["situationSummary"].items() if v} == {"CONFIRMED": 1}, result.summary
    assert not result.summary["changes"].get("created"), result.summary["changes"]
    assert [(name, u["_id"]) for name, u in env.users().items()] == [("JDoe", user_id)]


def test_validate_asks_for_ids_ignoring_case_with_dn_ids(env: Env) -> None:
    """DN ids with links that compare them exactly (PingIDM's default) are warned about,
    naming the mapping's key; ``sourceIdsCaseSensitive: false`` settles it."""
    from idsync.config.project import validate_project
    from idsync.resources import check_system

    project_dir = env.project.settings.conf_dir.parent
    found = [p for p in validate_project(project_dir, check_system) if "IdsCaseSensitive" in str(p)]
    assert len(found) == 1 and "sourceIdsCaseSensitive" in str(found[0]), found
    assert "ignoring case" in str(found[0]) and "set sourceIdsCaseSensitive to false" in str(found[0])
    env.reconfigure(sourceIdsCaseSensitive=False)
    env.change_conf("provisioner.openicf-ldap.json", _dn_ids)
    project_dir = env.project.settings.conf_dir.parent
    assert not [p for p in validate_project(project_dir, check_system) if "IdsCaseSensitive" in str(p)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_implicit_sync_rename_moves_the_link_to_the_new_dn(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                           backend: str) -> None:
    """A managed user created and then renamed through the store is pushed at once:
    the link holds the new entry's DN, and after the new userName renames the entry
    the one link holds the new DN (the entry was renamed, not recreated)."""
    project_dir = sample_project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path), load_data=False)
    prov_file = project_dir / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    _dn_ids(prov)
    prov_file.write_text(json.dumps(prov))
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    resources = Resources(project, store)
    try:
        users = ManagedObjects(project, store, resources, "user")
        change = users.create({"userName": "fdoe", "givenName": "F", "sn": "Doe", "mail": "fdoe@example.com"})
        assert change.synced and change.object is not None
        uid = change.object["_id"]
        linkset = LinkSet(store, FORWARD)
        old_dn = f"uid=fdoe,{ldap_subtree}"
        assert linkset.sources_of([uid]) == {uid: old_dn}
        uuid_before = (ldap_entry(slapd, old_dn) or {})["entryuuid"]
        assert users.patch(uid, [{"operation": "replace", "field": "/userName", "value": "fdoe2"}]).synced
        new_dn = f"uid=fdoe2,{ldap_subtree}"
        assert ldap_entry(slapd, old_dn) is None
        assert (ldap_entry(slapd, new_dn) or {})["entryuuid"] == uuid_before
        assert linkset.sources_of([uid]) == {uid: new_dn}
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(links)).scalar() == 1
    finally:
        resources.close()
        store.close()


def test_query_update_and_delete_by_dn(env: Env) -> None:
    """``_id eq <DN>`` queries the entry (through entryDN); an update by DN id
    writes the entry and answers with the same DN id; a delete by DN removes it."""
    env.add("jdoe", "asmith")
    jdoe = f"uid=jdoe,{env.subtree}"
    res = Resources(env.project, env.store).open("system/ldap/account")
    found = [o["_id"] for page in res.pages(QuerySpec(filter=parse(f'_id eq "{jdoe}"'))) for o in page]
    assert found == [jdoe]
    updated = res.update(jdoe, {"telephoneNumber": "555-0199"})
    assert updated["_id"] == jdoe and updated["telephoneNumber"] == "555-0199"
    assert (ldap_entry(env.slapd, jdoe) or {})["telephonenumber"] == ["555-0199"]
    res.delete(jdoe)
    assert ldap_entry(env.slapd, jdoe) is None and set(_accounts(env)) == {f"uid=asmith,{env.subtree}"}
