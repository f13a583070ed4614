"""What a recon run must never do, end to end against a real slapd and real
stores: delete what a failed correlation may own, create duplicates because of
where a page ends, claim in its audit deletes it never made, round a maxDeletes
share up, or write anything at all in a dry run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from dbs import store_url
from idsync.config.project import validate_project
from idsync.query import parse
from idsync.resources import Resources, check_system
from idsync.store.runs import RunStore
from idsync.store.tables import links
from idsync.sync.correlation import PlannedTargets
from idsync.sync.deletes import delete_cap
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync_dev.slapd import Slapd
from recon_env import Env
from sqlalchemy import select

_JS = "text/javascript"
REVERSE = "managedUser_systemLdapAccounts"
_STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
_UNASSIGNED_DELETE = [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "FOUND", "action": "UPDATE"},
                      {"situation": "CONFIRMED", "action": "UPDATE"},
                      {"situation": "SOURCE_MISSING", "action": "DELETE"},
                      {"situation": "UNASSIGNED", "action": "DELETE"}]


@pytest.fixture(params=_STORES)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def _situations(result: ReconResult) -> dict[str, int]:
    return {k: v for k, v in result.summary["situationSummary"].items() if v}


def _audit(env: Env, result: ReconResult) -> list[dict[str, Any]]:
    return RunStore(env.store).audit_entries(result.id, limit=10_000)


# -- a failed correlation never leads to a delete ---------------------------

_QUERY_ID_SCRIPT = "var q = {'_queryId': 'for-userName', 'uid': source.uid}; q"  # as PingIDM samples do
_UNKNOWN_QUERY_SCRIPT = "var q = {'_queryId': 'for-uid', 'uid': source.uid}; q"  # no such named query


@pytest.mark.parametrize("script", [
    pytest.param({"type": _JS, "file": "script/correlate.js"}, id="named-query"),
    pytest.param({"type": _JS, "source": "throw new Error('directory of record unavailable')"}, id="script-error"),
])
def test_failed_correlation_holds_the_target_phase_deletes(env: Env, script: dict[str, str]) -> None:
    """Correlation failing for every source (an unknown _queryId, or a script that
    throws) leaves the existing unlinked user alone even though UNASSIGNED says
    DELETE: the correlation failure is an error of that source (no AMBIGUOUS), the
    held delete is listed in the errors and as one FAILURE audit row, the run ends
    FAILED saying why; once correlation works the same user is FOUND and linked."""
    env.reconfigure(policies=_UNASSIGNED_DELETE, maxDeletes=None)
    scripts = env.project.settings.conf_dir.parent / "script"
    scripts.mkdir(exist_ok=True)
    (scripts / "correlate.js").write_text(_UNKNOWN_QUERY_SCRIPT)
    env.change_conf("sync.json", lambda s: s["mappings"][0].update(correlationQuery=script))
    kept = env.create_user(userName="cf1", sn="Before")
    env.add("cf1")
    result = env.recon()
    assert result.state == "FAILED"
    assert "could not be correlated" in (result.message or "") and "1 deletes and unlinks were held" in (
        result.message or "")
    assert set(env.users()) == {"cf1"} and env.users()["cf1"]["_id"] == kept["_id"]
    assert _situations(result) == {"UNASSIGNED": 1}, "a failed correlation is no situation, least of all AMBIGUOUS"
    assert result.summary["changes"]["deleted"] == 0 and result.summary["statusSummary"]["FAILURE"] == 2
    messages = [e["message"] for e in result.summary["errors"]]
    assert messages[0].startswith("correlation failed:")
    assert ("_queryId" if "file" in script else "directory of record unavailable") in messages[0]
    assert messages[1].startswith("DELETE held:")
    rows = _audit(env, result)
    assert [(r["situation"], r["action"], r["status"]) for r in rows] == [
        (None, None, "FAILURE"), ("UNASSIGNED", "DELETE", "FAILURE")]
    assert rows[1]["target_id"] == kept["_id"] and "held" in rows[1]["message"]

    env.reconfigure(policies=_UNASSIGNED_DELETE, maxDeletes=None)  # the seed's working correlation
    fixed = env.recon()
    assert fixed.state == "SUCCESS", fixed.message
    assert _situations(fixed) == {"FOUND": 1}
    assert env.users()["cf1"]["_id"] == kept["_id"] and env.users()["cf1"]["sn"] == "Test"


def test_validate_accepts_a_named_query_correlation(env: Env) -> None:
    """`idsync validate` accepts a correlationQuery by the stock _queryId
    for-userName, declarative or returned by an inline script."""
    for query in ({"_queryId": "for-userName", "uid": "${source.uid}"}, {"type": _JS, "source": _QUERY_ID_SCRIPT}):
        path = env.project.settings.conf_dir / "sync.json"
        sync = json.loads(path.read_text())
        sync["mappings"][0]["correlationQuery"] = query
        path.write_text(json.dumps(sync))
        assert validate_project(env.project.settings.conf_dir.parent, check_system) == []


# -- correlation sees what the run created, whatever the page size ---------------

@pytest.mark.parametrize("page_size", [1, 1000])
def test_same_uid_twice_gives_one_user_whatever_the_page_size(env: Env, page_size: int) -> None:
    """Two entries with the same uid create one managed user and leave the second
    FOUND_ALREADY_LINKED, whether they arrive in one page or in two: correlation
    sees the user the run created for the first one."""
    env.reconfigure(page_size=page_size)
    env.create_user(userName="someone-else")  # a non-empty target: correlation runs
    env.add("dup1", "dup2")
    env.slapd.add_ldif(f"dn: cn=dup1 again,{env.subtree}\nobjectClass: inetOrgPerson\nuid: dup1\ncn: dup1 again\n"
                       "sn: Again\n\n")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"ABSENT": 2, "FOUND_ALREADY_LINKED": 1, "UNASSIGNED": 1}
    assert result.summary["changes"]["created"] == 2
    assert sorted(env.users()) == ["dup1", "dup2", "someone-else"]
    (error,) = result.summary["errors"]
    assert error["message"].startswith("FOUND_ALREADY_LINKED") and error["target_id"] == env.users()["dup1"]["_id"]
    again = env.recon()
    assert _situations(again) == {"CONFIRMED": 2, "FOUND_ALREADY_LINKED": 1, "UNASSIGNED": 1}


def test_planned_targets_answer_like_the_target_would() -> None:
    """A page's planned creates are found by equality queries whatever the case or
    which value of a list matches, by other shapes through the filter itself, and
    not by queries for other values."""
    planned = PlannedTargets()
    assert not planned.matched_by(parse('userName eq "a"'))
    planned.add({"userName": "Alice", "mail": ["a@example.com", "alice@example.com"], "name": {"given": "A"}})
    planned.add({"userName": "bob"})
    assert planned.matched_by(parse('userName eq "alice"'))
    assert planned.matched_by(parse('userName eq "BOB"'))
    assert planned.matched_by(parse('mail eq "alice@example.com" and userName eq "Alice"'))
    assert planned.matched_by(parse('/name/given eq "a"'))
    assert planned.matched_by(parse('userName sw "bo" or mail eq "x"'))
    assert not planned.matched_by(parse('userName eq "carol"'))
    assert not planned.matched_by(parse('mail eq "bob@example.com" and userName eq "bob"'))
    planned.add({"userName": "carol"})
    assert planned.matched_by(parse('userName eq "carol"')), "a shape already looked up sees later creates"

# -- one audit row per delete, saying what happened -------------------------------

def test_deletes_stopped_by_max_deletes_are_audited_once_as_not_done(env: Env) -> None:
    """A run stopped by maxDeletes has one FAILURE audit row per refused delete,
    saying why, and none claiming SUCCESS; a delete that happens has exactly one
    SUCCESS row."""
    env.add(*[f"md{i}" for i in range(10)])
    env.recon()
    env.remove("md0", "md1", "md2")
    stopped = env.recon()  # 10% of 10 allows 1
    assert stopped.state == "FAILED" and len(env.users()) == 10
    rows = _audit(env, stopped)
    assert len(rows) == 3 and {(r["action"], r["status"]) for r in rows} == {("DELETE", "FAILURE")}
    assert all(r["message"].startswith("not carried out: the run would delete or unlink 3") for r in rows)
    assert len({r["target_id"] for r in rows}) == 3
    # The run's counts say what its audit says: three failed, the reason among the errors.
    assert stopped.summary["statusSummary"]["FAILURE"] == 3 and stopped.summary["errorCount"] == 3
    assert [e["message"] for e in stopped.summary["errors"]][-1].startswith("the run would delete or unlink 3")

    done = env.recon(max_deletes=3)
    assert done.state == "SUCCESS", done.message
    rows = _audit(env, done)
    assert [(r["situation"], r["action"], r["status"]) for r in rows] == [("SOURCE_MISSING", "DELETE", "SUCCESS")] * 3
    assert all(r["message"].startswith("DELETE managed/user/") for r in rows)


# -- maxDeletes shares are rounded down -----------------------------------------------

def test_a_max_deletes_share_is_rounded_down_end_to_end(env: Env) -> None:
    """15% of 10 users allows 1 delete (1.5 rounded down, never up to 2): two
    removed entries trip the cap and nothing is deleted; one alone goes through."""
    env.reconfigure(maxDeletes="15%")
    env.add(*[f"rd{i}" for i in range(10)])
    env.recon()
    env.remove("rd0", "rd1")
    capped = env.recon()
    assert capped.state == "FAILED" and "more than maxDeletes allows (1)" in (capped.message or "")
    assert len(env.users()) == 10
    env.add("rd1")
    allowed = env.recon()
    assert allowed.state == "SUCCESS", allowed.message
    assert allowed.summary["changes"]["deleted"] == 1 and "rd0" not in env.users()


def test_a_dry_run_caps_deletes_as_the_run_does(env: Env) -> None:
    """A dry run that would create users and delete one answers as the run does: its
    maxDeletes share is of the target as it is, which holds none of the users it did not
    create, so those creates do not narrow the cap to nothing; then the run goes through."""
    env.reconfigure(maxDeletes="10%")
    env.add(*[f"pc{i}" for i in range(4)])
    assert env.recon().state == "SUCCESS"
    env.remove("pc0")
    env.add(*[f"pn{i}" for i in range(10)])
    preview = env.recon(dry_run=True)
    assert preview.state == "SUCCESS", preview.message
    assert preview.summary["changes"]["created"] == 10 and preview.summary["changes"]["deleted"] == 1
    assert len(env.users()) == 4
    done = env.recon()
    assert done.state == "SUCCESS", done.message
    assert done.summary["changes"]["deleted"] == 1 and len(env.users()) == 13


def test_delete_cap_rounds_a_share_down() -> None:
    """15% of 10 allows 1 delete and 19% of 10 allows 1: a share is truncated, so
    rounding (1.5 to 2, 1.9 to 2) would let a run delete more than maxDeletes says."""
    assert delete_cap(0.15, 10, 0) == 1
    assert delete_cap(0.19, 10, 0) == 1
    assert delete_cap(0.15, 20, 10) == 1


# -- a dry run writes nothing, whatever it would do ---------------------------------

def _directory(env: Env) -> dict[str, dict[str, list[str]]]:
    """Every entry of the test subtree with all its attributes, operational ones
    (entryCSN, modifyTimestamp) included, so any write would show."""
    conn = ldap3.Connection(ldap3.Server(env.slapd.url), env.slapd.admin_dn, env.slapd.admin_password,
                            auto_bind=True)
    try:
        conn.search(env.subtree, "(objectClass=*)", attributes=["*", "+"])
        return {e.entry_dn: {k: sorted(map(str, v)) for k, v in e.entry_attributes_as_dict.items()}
                for e in conn.entries}
    finally:
        conn.unbind()


def _links(env: Env) -> list[tuple[str, str, str]]:
    with env.store.engine.connect() as conn:
        return sorted((r.linkset, r.source_id, r.target_id) for r in conn.execute(select(links)))


def test_dry_run_updates_deletes_and_unlinks_nothing(env: Env) -> None:
    """Dry runs of both mappings that would update, delete and unlink existing
    objects change neither the store (users, revisions, links) nor the directory,
    count what they would do, and audit it once per object as DRY_RUN."""
    def unlink_missing(sync: dict[str, Any]) -> None:
        for policy in sync["mappings"][1]["policies"]:
            if policy["situation"] == "MISSING":
                policy["action"] = "UNLINK"

    env.change_conf("sync.json", unlink_missing)
    env.add(*[f"dr{i}" for i in range(1, 5)])
    assert env.recon().state == "SUCCESS"
    assert run_recon(env.project, env.store, REVERSE, ReconOptions()).state == "SUCCESS"
    users = Resources(env.project, env.store).open("managed/user")
    ids = {u: o["_id"] for u, o in env.users().items()}
    users.update(ids["dr1"], {"mail": "changed-in-store@example.com"})
    env.modify("dr2", "mail", "changed-in-ldap@example.com")
    env.remove("dr3")  # forward: SOURCE_MISSING, DELETE; reverse: MISSING, UNLINK
    users.delete(ids["dr4"])  # forward: MISSING, UNLINK; reverse: SOURCE_MISSING, DELETE
    before = (env.users(), _links(env), _directory(env))

    forward = env.recon(dry_run=True, max_deletes=10)
    reverse = run_recon(env.project, env.store, REVERSE, ReconOptions(dry_run=True, max_deletes=10))
    for result in (forward, reverse):
        assert result.state == "SUCCESS", result.message
        assert {k: v for k, v in result.summary["changes"].items() if v} == {
            "updated": 2, "deleted": 1, "unlinked": 1}
        rows = _audit(env, result)
        assert {r["status"] for r in rows} == {"DRY_RUN"}
        assert sorted((r["situation"], r["action"]) for r in rows) == sorted(
            [("CONFIRMED", "UPDATE"), ("CONFIRMED", "UPDATE"), ("SOURCE_MISSING", "DELETE"), ("MISSING", "UNLINK")])
    assert (env.users(), _links(env), _directory(env)) == before


# -- run progress ---------------------------------------------------------------

def test_progress_counts_the_existing_links_processed(env: Env) -> None:
    """progress.links.existing.processed counts the links the run looked at: none on
    a first run, one per linked source (and per linked target of the target phase) after;
    its total is PingIDM's, the links there when the run began ("?" when there were none)."""
    env.reconfigure(maxDeletes=None)
    env.add("lp1", "lp2", "lp3")
    first = env.recon()
    assert first.summary["progress"]["links"] == {"created": 3, "existing": {"processed": 0, "total": "?"}}
    env.remove("lp3")
    second = env.recon()
    assert second.summary["progress"]["links"]["existing"] == {"processed": 3, "total": "3"}  # lp1, lp2; lp3's target
    stored = RunStore(env.store).get(second.id)
    assert stored is not None and stored["summary"]["progress"]["links"]["existing"]["processed"] == 3


def test_progress_totals_count_the_objects_there_before_the_run(env: Env) -> None:
    """A finished run's progress totals are PingIDM's: the source's objects read (a directory
    is not counted up front, so its total is "?" only while it is read) and the target's
    objects as they were before the run, not those the run created; a dry run's alike."""
    env.reconfigure(maxDeletes=None)
    env.add("pt1", "pt2")
    first = env.recon()
    assert first.summary["progress"]["source"]["existing"] == {"processed": 2, "total": "2"}
    assert first.summary["progress"]["target"]["existing"]["total"] == "0"
    assert first.summary["progress"]["target"]["created"] == 2
    env.add("pt3")
    second = env.recon()
    assert second.summary["progress"]["source"]["existing"] == {"processed": 3, "total": "3"}
    assert second.summary["progress"]["target"]["existing"]["total"] == "2"
    env.add("pt4")
    preview = env.recon(dry_run=True)
    assert preview.summary["progress"]["target"]["existing"]["total"] == "3"
    assert preview.summary["progress"]["target"]["created"] == 1
    stored = RunStore(env.store).get(second.id)
    assert stored is not None and stored["summary"]["progress"]["target"]["existing"]["total"] == "2"
