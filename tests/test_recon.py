"""Reconciling a real slapd into a real store, end to end through the engine:
creates, no-op reruns, updates, correlation, deletes and their safety limits,
dry run, kill switches, cancellation and failed reads."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS, store_url
from idsync.errors import PeerUnavailable
from idsync.managed.router import run_recon_scripted
from idsync.resource import QuerySpec, Resource
from idsync.resources import Resources
from idsync.store.audit_events import audit_event
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync.sync.options import ReconOptions
from idsync_dev.slapd import Slapd
from recon_env import MAPPING, Env

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def test_first_recon_creates_managed_users_as_in_the_seed(env: Env) -> None:
    """LDAP users become managed users with the seed's property names, a UUID _id and a _rev."""
    env.add("bjensen", cn="Barbara Jensen", sn="Jensen", givenName="Barbara", mail="bjensen@example.com",
            telephoneNumber="1-360-229-7105", description="Created for OpenIDM")
    env.add("scarter")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["situationSummary"]["ABSENT"] == 2
    assert result.summary["changes"]["created"] == 2
    users = env.users()
    b = users["bjensen"]
    assert UUID.match(b["_id"]) and b["_rev"]
    assert {k: v for k, v in b.items() if not k.startswith("_")} == {
        "displayName": "Barbara Jensen", "description": "Created for OpenIDM", "givenName": "Barbara",
        "mail": "bjensen@example.com", "telephoneNumber": "1-360-229-7105", "sn": "Jensen",
        "userName": "bjensen", "accountStatus": "active", "effectiveRoles": [], "effectiveAssignments": [], "roles": []}


def test_objects_a_recon_creates_are_claimed_and_linked_once(env: Env) -> None:
    """The users a page creates are claimed for the run and linked as they are written,
    in the page's transaction: the target phase finds only the user no source holds,
    and each created user has one link, which the next recon confirms."""
    env.add("c1", "c2", "c3")
    env.create_user(userName="stray", givenName="S", sn="Tray", mail="stray@example.com")
    first = env.recon()
    assert first.state == "SUCCESS", first.message
    situations = {k: v for k, v in first.summary["situationSummary"].items() if v}
    assert situations == {"ABSENT": 3, "UNASSIGNED": 1}
    assert first.summary["progress"]["target"]["existing"]["processed"] == 1
    links = LinkSet(env.store, env.project.mapping(MAPPING).linkset)
    created = {u: o["_id"] for u, o in env.users().items() if u != "stray"}
    assert sorted(links.sources_of(list(created.values())).keys()) == sorted(created.values())
    assert links.count() == 3
    second = env.recon()
    assert {k: v for k, v in second.summary["situationSummary"].items() if v} == {"CONFIRMED": 3, "UNASSIGNED": 1}


@pytest.mark.parametrize("there_before", [False, True], ids=["first-load", "stray-there"])
def test_a_user_created_beside_a_recon_is_the_next_run_s(env: Env, there_before: bool) -> None:
    """As PingIDM's, the target phase visits the targets there when the run started: a
    user created beside a run while it reads (here by its onLink script) is left alone by
    it (its target phase would find it UNASSIGNED, or SOURCE_MISSING once implicit sync
    linked it to the entry it pushed, and delete it), into an empty store (a first load,
    which claims nothing) as into one holding a stray user, which it does visit; the next
    run, which finds the new user there, assesses it."""
    env.reconfigure(onLink={"type": "text/javascript", "source": (
        "if (source.uid == 'f1') openidm.create('managed/user', null, "
        "{userName: 'beside', givenName: 'B', sn: 'Eside', mail: 'beside@example.com'});")})
    if there_before:
        env.create_user(userName="stray", givenName="S", sn="Tray", mail="stray@example.com")
    env.add("f1", "f2", "f3")
    first = run_recon_scripted(env.project, env.store, MAPPING, ReconOptions())
    assert first.state == "SUCCESS", first.message
    assert first.summary["errorCount"] == 0 and "beside" in env.users(), first.summary["errors"]
    expected = {"ABSENT": 3, "UNASSIGNED": 1} if there_before else {"ABSENT": 3}
    assert {k: v for k, v in first.summary["situationSummary"].items() if v} == expected
    assert first.summary["progress"]["target"]["existing"]["processed"] == int(there_before)
    second = run_recon_scripted(env.project, env.store, MAPPING, ReconOptions())
    assert second.summary["situationSummary"]["CONFIRMED"] == 3
    # Its situation is the project's business (implicit sync pushed it through the reverse mapping).
    assert second.summary["progress"]["target"]["existing"]["processed"] == 1 + int(there_before)


def test_second_recon_writes_nothing_and_keeps_revisions(env: Env) -> None:
    """An unchanged source gives CONFIRMED no-ops: no write, _rev does not move."""
    env.add("a1", "a2", "a3")
    env.recon()
    before = {u: o["_rev"] for u, o in env.users().items()}
    result = env.recon()
    assert result.summary["situationSummary"]["CONFIRMED"] == 3
    assert result.summary["changes"]["unchanged"] == 3 and result.summary["changes"]["updated"] == 0
    assert {u: o["_rev"] for u, o in env.users().items()} == before
    assert RunStore(env.store).audit_entries(result.id) == []


def test_changed_entry_updates_only_that_user(env: Env) -> None:
    """A changed LDAP attribute updates that managed user and moves its _rev only."""
    env.add("c1", "c2")
    env.recon()
    before = env.users()
    env.modify("c1", "mail", "new@example.com")
    result = env.recon()
    assert result.summary["changes"]["updated"] == 1
    after = env.users()
    assert after["c1"]["mail"] == "new@example.com" and after["c1"]["_rev"] != before["c1"]["_rev"]
    assert after["c2"]["_rev"] == before["c2"]["_rev"]
    (entry,) = RunStore(env.store).audit_entries(result.id)
    assert entry["action"] == "UPDATE" and entry["changes"] == {"mail": "new@example.com"}


def test_correlation_links_an_existing_user(env: Env) -> None:
    """A managed user that already exists with the same userName is FOUND, linked and updated, not duplicated."""
    Resources(env.project, env.store).open("managed/user").create({"userName": "d1", "sn": "Old"})
    env.add("d1")
    result = env.recon()
    assert result.summary["situationSummary"]["FOUND"] == 1
    assert len(env.users()) == 1 and env.users()["d1"]["sn"] == "Test"
    assert env.recon().summary["situationSummary"]["CONFIRMED"] == 1


def test_ambiguous_correlation_is_an_exception_not_a_guess(env: Env) -> None:
    """Two managed users matching one source: AMBIGUOUS, reported, nothing written for it
    (another source of the run is created, so the run is a SUCCESS with one failure). Its
    audit entry keeps both candidates, answered as PingIDM's ambiguousTargetObjectIds."""
    # Two users of one name: a store filled before managed.json made userName unique.
    users = ManagedResource(env.store, replace(env.project.managed.get("user"), model=None))
    both = sorted(users.create({"userName": "e1"})["_id"] for _ in range(2))
    env.add("e1")
    env.add("e2")
    result = env.recon()
    assert result.state == "SUCCESS"
    assert "e2" in env.users()
    assert result.summary["situationSummary"]["AMBIGUOUS"] == 1
    assert result.summary["statusSummary"]["FAILURE"] == 1
    assert "AMBIGUOUS" in result.summary["errors"][0]["message"]
    (entry,) = [e for e in RunStore(env.store).audit_entries(result.id) if e["situation"] == "AMBIGUOUS"]
    assert sorted(entry["ambiguous"]) == both and entry["phase"] == "source"
    event = audit_event("recon", entry, {MAPPING: ("system/ldap/account", "managed/user")})
    assert sorted(event["ambiguousTargetObjectIds"]) == [f"managed/user/{i}" for i in both]
    assert event["reconciling"] == "source"


def test_deleted_entry_is_deleted_by_policy_after_the_source_phase(env: Env) -> None:
    """SOURCE_MISSING with the seed's DELETE policy removes the managed user (within maxDeletes)."""
    env.add(*[f"f{i}" for i in range(12)])
    env.recon()
    env.remove("f0")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["situationSummary"]["SOURCE_MISSING"] == 1
    assert result.summary["changes"]["deleted"] == 1
    assert "f0" not in env.users()


def test_max_deletes_trips_before_anything_is_deleted(env: Env) -> None:
    """More deletes than maxDeletes allows fails the run with the number, and deletes nothing."""
    env.add(*[f"g{i}" for i in range(10)])
    env.recon()
    env.remove("g0", "g1", "g2")
    result = env.recon()  # conf says maxDeletes 10%: 3 of 10 is too many
    assert result.state == "FAILED"
    assert "would delete or unlink 3" in (result.message or "")
    assert len(env.users()) == 10


def test_no_delete_without_a_delete_policy(env: Env) -> None:
    """With no policy for SOURCE_MISSING the safe default keeps the target and reports it."""
    env.reconfigure(policies=[{"situation": "ABSENT", "action": "CREATE"}])
    env.add("h1", "h2")
    env.recon()
    env.remove("h1")
    result = env.recon()
    assert result.summary["situationSummary"]["SOURCE_MISSING"] == 1
    assert "h1" in env.users()
    assert result.summary["statusSummary"]["FAILURE"] == 1


def test_empty_source_fails_unless_allowed(env: Env) -> None:
    """An empty source set fails the run; allowEmptySourceSet lets it through."""
    result = env.recon()
    assert result.state == "FAILED" and "no objects" in (result.message or "")
    env.reconfigure(allowEmptySourceSet=True)
    assert env.recon().state == "SUCCESS"


def test_dry_run_lists_changes_and_writes_nothing(env: Env) -> None:
    """A dry run counts and lists every would-be change, and leaves store and links alone."""
    env.add("i1", "i2")
    result = env.recon(dry_run=True)
    assert result.state == "SUCCESS"
    assert result.summary["changes"]["created"] == 2 and result.summary["dryRun"] is True
    assert env.users() == {}
    entries = RunStore(env.store).audit_entries(result.id)
    assert {e["status"] for e in entries} == {"DRY_RUN"} and len(entries) == 2
    assert env.recon().summary["changes"]["created"] == 2, "nothing was linked by the dry run"


def test_kill_switch_no_create(env: Env) -> None:
    """With creates switched off, ABSENT sources are counted as skipped, not created."""
    env.add("j1")
    result = env.recon(allow_create=False)
    assert result.summary["changes"]["skipped"] == 1 and env.users() == {}


def test_failed_source_read_deletes_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that fails on its second page fails the run before the target phase: no deletes."""
    env.reconfigure(page_size=2)
    env.add(*[f"k{i}" for i in range(6)])
    env.recon()
    env.remove("k5")
    original = Resources.open

    def flaky(self: Resources, name: str, *, dry_run: bool = False) -> Resource:
        res = original(self, name, dry_run=dry_run)
        if name.startswith("system/"):
            pages = res.pages

            def broken(spec: QuerySpec) -> Iterator[list[dict[str, Any]]]:
                for n, page in enumerate(pages(spec)):
                    if n == 1:
                        raise PeerUnavailable("ldap: connection reset")
                    yield page
            res.pages = broken  # type: ignore[method-assign]
        return res

    monkeypatch.setattr(Resources, "open", flaky)
    result = env.recon()
    assert result.state == "FAILED" and "connection reset" in (result.message or "")
    assert len(env.users()) == 6


def test_cancel_records_canceled(env: Env) -> None:
    """A cancel request stops the run at a page boundary and records CANCELED."""
    env.add("l1")
    cancel = threading.Event()
    cancel.set()
    result = env.recon(cancel=cancel)
    assert result.state == "CANCELED"
    assert RunStore(env.store).get(result.id)["state"] == "CANCELED"


def test_duplicate_ids_in_a_page_are_reported(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same source id twice in one page fails the copy, not the run."""
    env.add("m1")
    original = Resources.open

    def doubled(self: Resources, name: str, *, dry_run: bool = False) -> Resource:
        res = original(self, name, dry_run=dry_run)
        if name.startswith("system/"):
            pages = res.pages
            res.pages = lambda spec: (p + p for p in pages(spec))  # type: ignore[method-assign]
        return res

    monkeypatch.setattr(Resources, "open", doubled)
    result = env.recon()
    assert result.state == "SUCCESS" and result.summary["changes"]["created"] == 1
    assert "duplicate source id" in result.summary["errors"][0]["message"]


def test_declarative_correlation_with_placeholders(env: Env) -> None:
    """A declarative _queryFilter correlation binds ${source.x} as a value: a hostile
    uid cannot widen the query, and a matching user is FOUND."""
    env.reconfigure(correlationQuery={"_queryFilter": '/userName eq "${source.uid}"'})
    users = Resources(env.project, env.store).open("managed/user")
    users.create({"userName": "n1", "sn": "Before"})
    users.create({"userName": 'x") or (true'})
    env.add("n1")
    result = env.recon()
    assert result.summary["situationSummary"]["FOUND"] == 1
    assert env.users()["n1"]["sn"] == "Test"


def test_hooks_run_and_can_change_the_target(env: Env) -> None:
    """onCreate may change the target before it is written; result and onLink run without failing the run."""
    env.reconfigure(onCreate={"type": "text/javascript", "source": "target.description = 'hooked ' + source.uid;"},
                    onLink={"type": "text/javascript", "source": "logger.info('linked {}', target._id)"},
                    result={"type": "text/javascript",
                            "source": "source.ABSENT.count + target.entries + global.mappingName"})
    env.add("o1")
    result = env.recon()
    assert result.state == "SUCCESS" and result.summary["errorCount"] == 0, result.summary["errors"]
    assert env.users()["o1"]["description"] == "hooked o1"


def test_source_condition_and_source_query(env: Env) -> None:
    """sourceQuery (a native LDAP filter) limits what is read; sourceCondition qualifies what is read."""
    env.reconfigure(sourceQuery="(employeeType=staff)", sourceCondition='/object/sn eq "Keep"',
                    policies=[{"situation": "ABSENT", "action": "CREATE"}])
    env.add("p1", employeeType="staff", sn="Keep")
    env.add("p2", employeeType="staff", sn="Other")
    env.add("p3", employeeType="guest", sn="Keep")
    result = env.recon()
    assert set(env.users()) == {"p1"}
    assert result.summary["situationSummary"]["SOURCE_IGNORED"] == 1
    assert result.summary["progress"]["source"]["existing"]["processed"] == 2
