"""Mapping features end to end, a real slapd reconciled into a real store:
target qualification and queries, UNQUALIFIED sources, conditional policies and
postAction, the update/delete/unlink hooks, script and expression-tree
correlation, the kill switches for updates and deletes, a percentage cap, and
objects that vanish or have no id."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from dbs import BACKENDS, store_url
from idsync.errors import PeerUnavailable
from idsync.resource import QuerySpec, WriteOp, WriteResult
from idsync.resources import Resources
from idsync.store.links import LinkSet
from idsync.store.objects import ManagedResource
from idsync.store.runs import RunStore
from idsync_dev.slapd import Slapd
from projects import MAPPING
from recon_env import Env

_JS = "text/javascript"
_ONLY_CREATE_UPDATE = [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "CONFIRMED", "action": "UPDATE"},
                       {"situation": "FOUND", "action": "UPDATE"}]


@pytest.fixture
def env(slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url("sqlite", tmp_path))
    yield e
    e.store.close()


@pytest.fixture(params=BACKENDS)
def any_env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(slapd, ldap_subtree, tmp_path, store_url(request.param, tmp_path))
    yield e
    e.store.close()


def _situations(result: Any) -> dict[str, int]:
    return {k: v for k, v in result.summary["situationSummary"].items() if v}


def test_valid_target_separates_ignored_from_unassigned(env: Env) -> None:
    """In the target phase an unlinked target failing validTarget is TARGET_IGNORED,
    one passing it is UNASSIGNED; neither is touched by the defaults."""
    env.reconfigure(validTarget={"type": _JS, "source": "target.accountStatus !== 'external'"})
    env.create_user(userName="outsider", accountStatus="external")
    env.create_user(userName="stray")
    env.add("q1")
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"ABSENT": 1, "TARGET_IGNORED": 1, "UNASSIGNED": 1}
    assert set(env.users()) == {"q1", "outsider", "stray"}


def test_target_query_limits_the_target_phase(env: Env) -> None:
    """targetQuery restricts which targets the target phase examines."""
    env.reconfigure(targetQuery={"_queryFilter": 'accountStatus eq "active"'})
    env.create_user(userName="r-inactive", accountStatus="inactive")
    env.create_user(userName="r-active", accountStatus="active")
    env.add("r1")
    result = env.recon()
    assert _situations(result) == {"ABSENT": 1, "UNASSIGNED": 1}
    assert result.summary["progress"]["target"]["existing"]["processed"] == 1


def test_unqualified_source_is_kept_by_default_and_deleted_by_policy(env: Env) -> None:
    """A linked source leaving sourceCondition is UNQUALIFIED: the default keeps the
    target and reports it; an UNQUALIFIED DELETE policy removes it."""
    env.reconfigure(sourceCondition='/object/description eq "staff"', policies=_ONLY_CREATE_UPDATE, maxDeletes=None)
    env.add("s1", "s2", description="staff")
    env.recon()
    env.modify("s1", "description", "left")
    kept = env.recon()
    assert _situations(kept) == {"CONFIRMED": 1, "UNQUALIFIED": 1}
    assert kept.summary["statusSummary"]["FAILURE"] == 1
    assert "UNQUALIFIED" in kept.summary["errors"][0]["message"]
    assert set(env.users()) == {"s1", "s2"}

    env.reconfigure(sourceCondition='/object/description eq "staff"', maxDeletes=None,
                    policies=[*_ONLY_CREATE_UPDATE, {"situation": "UNQUALIFIED", "action": "DELETE"}])
    deleted = env.recon()
    assert deleted.summary["changes"]["deleted"] == 1
    assert set(env.users()) == {"s2"}


def test_policy_condition_and_post_action(env: Env) -> None:
    """The first policy whose condition holds decides; when none holds the default
    applies. postAction runs after the action, with the situation and action."""
    env.reconfigure(maxDeletes=None, policies=[
        *_ONLY_CREATE_UPDATE,
        {"situation": "SOURCE_MISSING", "action": "DELETE", "condition": '/target/accountStatus eq "inactive"',
         "postAction": {"type": _JS, "source": "logger.info('post {} {}', situation, action)"}},
    ])
    env.add("t1", "t2", "t3")
    env.recon()
    users = Resources(env.project, env.store).open("managed/user")
    users.update(env.users()["t1"]["_id"], {"accountStatus": "inactive"})
    env.remove("t1", "t2")
    with structlog.testing.capture_logs() as logs:
        result = env.recon()
    assert result.summary["changes"]["deleted"] == 1
    assert set(env.users()) == {"t2", "t3"}, "the active user has no matching policy: kept (EXCEPTION)"
    assert result.summary["statusSummary"]["FAILURE"] == 1
    assert [e["message"] for e in logs if e["event"] == "script.log"] == ["post SOURCE_MISSING DELETE"]


def test_action_script_sees_the_phase_and_the_operation(env: Env) -> None:
    """An action script is given PingIDM's ``sourceAction`` (true in the source phase,
    false in the target phase) and ``recon.actionParam``: the run, the mapping, the
    situation, its default action, the ids and the candidates of an AMBIGUOUS
    correlation, ``_action`` performAction. A script reading them no longer fails its
    object with "ReferenceError: sourceAction is not defined"."""
    said = {"type": _JS, "source": "logger.info('{} {}', sourceAction, JSON.stringify(recon.actionParam)); "
                                    "sourceAction && recon.actionParam.situation == 'ABSENT' ? 'CREATE' : 'IGNORE'"}
    env.reconfigure(maxDeletes=None, correlationQuery={"_queryFilter": '/description eq "${source.description}"'},
                    policies=[{"situation": "ABSENT", "action": said}, {"situation": "AMBIGUOUS", "action": said},
                              {"situation": "UNASSIGNED", "action": said}])
    stray = env.create_user(userName="stray", sn="Stray")
    twins = [env.create_user(userName=f"twin{i}", sn="Twin", description="twin") for i in (1, 2)]
    env.add("a1")
    env.add("a2", description="twin")
    with structlog.testing.capture_logs() as logs:
        result = env.recon()
    assert result.state == "SUCCESS", result.message
    seen = [e["message"].split(" ", 1) for e in logs if e["event"] == "script.log"]
    said_of = {(phase, json.loads(param)["situation"]): json.loads(param) for phase, param in seen}
    created = said_of[("true", "ABSENT")]
    assert created == {"_action": "performAction", "reconId": result.id, "mapping": MAPPING,
                       "situation": "ABSENT", "action": "CREATE", "sourceId": created["sourceId"],
                       "linkQualifier": "default"}
    ambiguous = said_of[("true", "AMBIGUOUS")]
    assert ambiguous["action"] == "EXCEPTION" and "targetId" not in ambiguous
    assert sorted(ambiguous["ambiguousTargetIds"]) == sorted(t["_id"] for t in twins)
    orphans = [p for (phase, situation), p in said_of.items() if situation == "UNASSIGNED"]
    assert [phase for phase, situation in said_of if situation == "UNASSIGNED"] == ["false"]
    assert orphans[0]["sourceId"] is None and orphans[0]["targetId"] in {stray["_id"], *(t["_id"] for t in twins)}
    assert result.summary["changes"]["created"] == 1 and result.summary["statusSummary"].get("FAILURE", 0) == 0


def test_property_condition_sees_the_target_being_made(env: Env) -> None:
    """A property condition's ``target`` is the target being made, as in PingIDM: in a
    create ``{}`` with the rules before it applied (never null, which failed every
    create with "cannot read property of null"), in an update the target with them
    applied; ``oldTarget`` is the target as it is. A telephone number set only while
    the target has none is set once and then kept."""
    only_unset = {"type": _JS, "source": "target.telephoneNumber == null && oldTarget == null"}
    env.reconfigure(maxDeletes=None, policies=_ONLY_CREATE_UPDATE, properties=[
        {"source": "uid", "target": "userName"}, {"source": "sn", "target": "sn"},
        {"source": "telephoneNumber", "target": "telephoneNumber", "condition": only_unset},
        {"source": "cn", "target": "displayName",
         "condition": {"type": _JS, "source": "target.userName == object.uid && target.sn == 'Test'"}}])
    env.add("c1")
    created = env.recon()
    assert created.state == "SUCCESS" and created.summary["changes"]["created"] == 1, created.summary["errors"]
    assert env.users()["c1"]["telephoneNumber"] == "555-0100" and env.users()["c1"]["displayName"] == "C1 Test"
    env.modify("c1", "telephoneNumber", "555-0199")
    env.modify("c1", "cn", "C1 Renamed")
    updated = env.recon()
    assert updated.state == "SUCCESS" and updated.summary["changes"]["updated"] == 1, updated.summary
    assert env.users()["c1"]["telephoneNumber"] == "555-0100" and env.users()["c1"]["displayName"] == "C1 Renamed"


def test_update_delete_and_unlink_hooks(env: Env) -> None:
    """onUpdate may change what is written, and runs on every UPDATE, as in PingIDM, whether
    or not the property rules changed anything; onDelete and onUnlink run with the
    situation and the id of the target concerned; a DELETE of a linked target runs
    onDelete, then onUnlink once it is deleted, as PingIDM's DELETE falls through to UNLINK."""
    env.reconfigure(maxDeletes=None, policies=[
        *_ONLY_CREATE_UPDATE, {"situation": "SOURCE_MISSING", "action": "DELETE"},
        {"situation": "MISSING", "action": "UNLINK"}],
        onUpdate={"type": _JS, "source": "target.description = 'seen ' + source.uid; target"},
        onDelete={"type": _JS, "source": "logger.info('deleted {} {}', situation, target._id)"},
        onUnlink={"type": _JS, "source": "logger.info('unlinked {} {}', situation, target._id)"})
    env.add("u1", "u2")
    env.recon()
    env.modify("u1", "mail", "u1-new@example.com")
    updated = env.recon()
    assert updated.summary["changes"]["updated"] == 2
    assert env.users()["u1"]["description"] == "seen u1" and env.users()["u2"]["description"] == "seen u2"
    assert env.users()["u1"]["mail"] == "u1-new@example.com"
    assert env.recon().summary["changes"]["updated"] == 0
    missing, gone = env.users()["u1"]["_id"], env.users()["u2"]["_id"]
    Resources(env.project, env.store).open("managed/user").delete(missing)
    env.remove("u2")
    with structlog.testing.capture_logs() as logs:
        result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["deleted"] == 1 and result.summary["changes"]["unlinked"] == 1
    assert [e["message"] for e in logs if e["event"] == "script.log"] == [
        f"unlinked MISSING {missing}", f"deleted SOURCE_MISSING {gone}", f"unlinked SOURCE_MISSING {gone}"]


def test_correlation_script_and_expression_tree(env: Env) -> None:
    """A correlationScript returning a _queryFilter, and PingIDM's expressionTree over
    the projected target, each find the existing user instead of creating one."""
    env.reconfigure(correlationQuery=None, correlationScript={
        "type": _JS, "source": "({'_queryFilter': 'mail eq \"' + source.mail + '\"'})"})
    env.create_user(userName="v1", mail="v1@example.com", sn="Before")
    env.add("v1")
    assert _situations(env.recon()) == {"FOUND": 1}

    env.reconfigure(correlationQuery={"expressionTree": {"all": ["userName", "mail"]}})
    env.create_user(userName="v2", mail="v2@example.com")
    env.create_user(userName="v2", mail="other@example.com")
    env.add("v2")
    result = env.recon()
    assert _situations(result) == {"CONFIRMED": 1, "FOUND": 1, "UNASSIGNED": 1}
    assert env.users()["v1"]["sn"] == "Test"


def test_correlation_script_answering_no_target_objects_fails_the_source(env: Env) -> None:
    """A correlationScript answers the candidate targets as ``openidm.query(...).result`` holds
    them; one answering an id alone (``['ID']``) fails its source, naming the script, instead of
    being taken for no candidate, which created the user a second time. The objects, each with
    its ``_id``, find the user."""
    env.reconfigure(correlationQuery=None)
    user = env.create_user(userName="c1", mail="c1@example.com")
    env.add("c1")
    env.reconfigure(correlationQuery=None, correlationScript={"type": _JS, "source": f"['{user['_id']}']"})
    result = env.recon()
    assert result.summary["changes"]["created"] == 0 and result.summary["changes"]["failed"] == 1
    assert "correlationScript: item 0 of the candidates it answered is a string" in str(result.summary)
    res = Resources(env.project, env.store).open("managed/user")
    assert [o["_id"] for page in res.pages(QuerySpec()) for o in page] == [user["_id"]]

    env.reconfigure(correlationQuery=None, correlationScript={"type": _JS, "source": f"[{{_id: '{user['_id']}'}}]"})
    assert _situations(env.recon()) == {"FOUND": 1}


def test_no_update_kill_switch(env: Env) -> None:
    """With updates switched off a changed source is counted as skipped and the target keeps its value."""
    env.add("w1")
    env.recon()
    env.modify("w1", "mail", "w1-new@example.com")
    result = env.recon(allow_update=False)
    assert result.summary["changes"]["skipped"] == 1 and result.summary["changes"]["updated"] == 0
    assert env.users()["w1"]["mail"] == "w1@example.com"
    (entry,) = RunStore(env.store).audit_entries(result.id)
    assert "updates are switched off" in entry["message"]


def test_no_delete_kill_switch_stops_deletes_and_unlinks(env: Env) -> None:
    """With deletes switched off (per run, or allowDelete in the mapping) neither a
    DELETE nor an UNLINK happens; both are reported as skipped."""
    env.reconfigure(maxDeletes=None)
    env.add("x1", "x2", "x3")
    env.recon()
    env.remove("x1")
    Resources(env.project, env.store).open("managed/user").delete(env.users()["x2"]["_id"])
    result = env.recon(allow_delete=False)  # x1: SOURCE_MISSING -> DELETE; x2: MISSING -> UNLINK
    assert _situations(result) == {"CONFIRMED": 1, "MISSING": 1, "SOURCE_MISSING": 1}
    assert result.summary["changes"]["skipped"] == 2
    assert result.summary["changes"]["deleted"] == 0 and result.summary["changes"]["unlinked"] == 0
    assert "x1" in env.users()
    env.reconfigure(maxDeletes=None, allowDelete=False)
    assert _situations(env.recon()) == {"CONFIRMED": 1, "MISSING": 1, "SOURCE_MISSING": 1}, "link kept"


def test_percentage_cap_counts_against_the_whole_target(any_env: Env) -> None:
    """maxDeletes "20%" of 10 targets allows 2 deletes and refuses 3, before deleting any."""
    env = any_env
    env.reconfigure(maxDeletes="20%")
    env.add(*[f"y{i}" for i in range(10)])
    env.recon()
    env.remove("y0", "y1", "y2")
    refused = env.recon()
    assert refused.state == "FAILED" and "would delete or unlink 3" in (refused.message or "")
    assert "(2)" in (refused.message or "") and len(env.users()) == 10
    env.add("y0")
    allowed = env.recon()
    assert allowed.state == "SUCCESS", allowed.message
    assert allowed.summary["changes"]["deleted"] == 2 and len(env.users()) == 8


def test_percentage_cap_is_of_the_target_before_the_run(env: Env) -> None:
    """Objects created by the same run do not widen a percentage cap: 10 targets
    and 20% allow 2 deletes even while the run creates 10 more."""
    env.reconfigure(maxDeletes="20%")
    env.add(*[f"w{i}" for i in range(10)])
    env.recon()
    env.remove("w0", "w1", "w2")
    env.add(*[f"n{i}" for i in range(10)])
    refused = env.recon()
    assert refused.state == "FAILED" and "would delete or unlink 3" in (refused.message or "")
    assert "(2)" in (refused.message or "")
    assert {"w0", "w1", "w2"} <= set(env.users())


def test_target_deleted_during_the_run_is_not_an_error(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target removed by someone else between its read and its update is skipped;
    the run succeeds and the next run sees MISSING."""
    env.add("z1", "z2")
    env.recon()
    env.modify("z1", "mail", "z1-new@example.com")
    victim = env.users()["z1"]["_id"]
    write = ManagedResource._write

    def racing(self: ManagedResource, ops: Sequence[WriteOp]) -> list[WriteResult]:
        if any(op.kind == "update" and op.id == victim for op in ops):
            write(self, [WriteOp("delete", id=victim)])  # someone else's delete, just before ours
        return write(self, ops)

    monkeypatch.setattr(ManagedResource, "_write", racing)
    result = env.recon()
    assert result.state == "SUCCESS" and result.summary["errorCount"] == 0, result.summary["errors"]
    assert result.summary["changes"]["skipped"] == 1
    monkeypatch.undo()
    assert _situations(env.recon()) == {"CONFIRMED": 1, "MISSING": 1}


def test_source_objects_without_id_stop_before_the_target_phase(env: Env) -> None:
    """When the id attribute cannot be read, every target would look orphaned: the
    run fails after the source phase and deletes nothing."""
    env.add(*[f"id{i}" for i in range(10)])
    env.recon()
    prov = env.project.provisioners["ldap"]
    object.__setattr__(prov, "raw", {**prov.raw, "configurationProperties": {
        **prov.raw["configurationProperties"], "uidAttribute": "employeeNumber"}})
    result = env.recon()
    assert result.state == "FAILED"
    assert "10 source objects had no id" in (result.message or "")
    assert result.summary["changes"]["deleted"] == 0 and len(env.users()) == 10


def test_binary_and_huge_values_reach_every_store(any_env: Env) -> None:
    """A non-UTF-8 value arrives as base64 and a 1 MB value whole, in every store;
    the next run finds nothing to change."""
    env = any_env

    def photo(prov: dict[str, Any]) -> None:
        prov["objectTypes"]["account"]["properties"]["photo"] = {"type": "string", "nativeName": "jpegPhoto"}

    env.reconfigure(defaultSourceFields=None, properties=[
        {"source": "uid", "target": "userName"}, {"source": "description", "target": "description"},
        {"source": "photo", "target": "photo"}])
    env.change_conf("provisioner.openicf-ldap.json", photo)
    raw = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x80\xfe"
    big = "x" * (1024 * 1024)
    env.slapd.add_ldif(f"dn: uid=big,{env.subtree}\nobjectClass: inetOrgPerson\nuid: big\ncn: Big\nsn: Big\n"
                       f"description: {big}\njpegPhoto:: {base64.b64encode(raw).decode()}\n")
    first = env.recon()
    assert first.state == "SUCCESS" and first.summary["changes"]["created"] == 1, first.summary["errors"]
    user = env.users()["big"]
    assert base64.b64decode(user["photo"]) == raw and len(user["description"]) == len(big)
    second = env.recon()
    assert second.summary["changes"]["unchanged"] == 1 and env.users()["big"]["_rev"] == user["_rev"]


def test_secret_properties_are_masked_in_audit_entries(env: Env) -> None:
    """A property managed.json marks secret is written but never shown: its audit value is masked."""
    def pin_attribute(prov: dict[str, Any]) -> None:
        prov["objectTypes"]["account"]["properties"]["pin"] = {"type": "string", "nativeName": "employeeNumber"}

    def pin_secret(managed: dict[str, Any]) -> None:
        managed["objects"][0]["schema"]["properties"]["pin"] = {"type": "string", "secret": True}

    env.reconfigure(defaultSourceFields=None, properties=[
        {"source": "uid", "target": "userName"}, {"source": "pin", "target": "pin"}])
    env.change_conf("provisioner.openicf-ldap.json", pin_attribute)
    env.change_conf("managed.json", pin_secret)
    env.add("pin1", employeeNumber="4711-secret")
    result = env.recon()
    (entry,) = RunStore(env.store).audit_entries(result.id)
    assert entry["changes"] == {"userName": "pin1", "pin": "********"}
    assert "4711-secret" not in str(result.summary) and "pin" not in env.users()["pin1"]


def test_store_round_trips_do_not_grow_with_the_page(env: Env) -> None:
    """Links, linked targets and correlation are looked up per page, not per object:
    the statements a run sends to the store stay the same for 20 or 200 objects per page."""
    from sqlalchemy import event

    def statements(count: int, page_size: int) -> tuple[int, int]:
        env.reconfigure(page_size=page_size, maxDeletes=None)
        uids = [f"rt{count}-{i}" for i in range(count)]
        env.add(*uids)
        users = Resources(env.project, env.store).open("managed/user")
        users.write_batch([WriteOp("create", values={"userName": u}) for u in uids])  # FOUND by correlation
        seen: list[str] = []
        event.listen(env.store.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
        first = env.recon()
        found = len(seen)
        seen.clear()
        second = env.recon()
        assert first.summary["situationSummary"]["FOUND"] == count
        assert second.summary["situationSummary"]["CONFIRMED"] == len(env.users())
        return found, len(seen)

    small, large = statements(20, 20), statements(200, 220)  # one page each time
    assert large[0] <= small[0] + 5 and large[1] <= small[1] + 5, (small, large)


def test_ambiguous_candidates_are_not_orphans(env: Env) -> None:
    """The targets an AMBIGUOUS source correlated to belong to a live source: the
    target phase leaves them alone even where UNASSIGNED would delete."""
    env.reconfigure(maxDeletes=None, policies=[*_ONLY_CREATE_UPDATE, {"situation": "UNASSIGNED", "action": "DELETE"}])
    env.create_user(userName="amb")
    env.create_user(userName="amb")
    env.create_user(userName="nobody")
    env.add("amb")
    result = env.recon()
    assert _situations(result) == {"AMBIGUOUS": 1, "UNASSIGNED": 1}
    assert result.summary["changes"]["deleted"] == 1
    assert sorted(u["userName"] for page in Resources(env.project, env.store).open("managed/user").pages(
        QuerySpec()) for u in page) == ["amb", "amb"]


def test_a_page_is_written_with_its_links_or_not_at_all(any_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the links of a page cannot be written, the page's creates are rolled back
    with them: no managed user is left that no link ties to its entry."""
    env = any_env
    env.reconfigure(correlationQuery=None)  # without correlation, an unlinked copy would be created again
    env.add("tx1", "tx2")
    add = LinkSet.add

    def failing(self: LinkSet, conn: Any, pairs: Any, digests: Any = None, **_: Any) -> None:
        raise PeerUnavailable("store: connection lost")

    monkeypatch.setattr(LinkSet, "add", failing)
    failed = env.recon()
    assert failed.state == "FAILED" and "connection lost" in (failed.message or "")
    assert env.users() == {}
    monkeypatch.setattr(LinkSet, "add", add)
    assert env.recon().summary["changes"]["created"] == 2
    assert _situations(env.recon()) == {"CONFIRMED": 2}


def test_valid_source_script_qualifies_sources(env: Env) -> None:
    """validSource is a script over the source: a source it rejects with nothing to
    act on is SOURCE_IGNORED, and a linked one that stops passing is UNQUALIFIED."""
    env.reconfigure(validSource={"type": _JS, "source": "source.description !== 'contractor'"})
    env.add("vs1", description="staff")
    env.add("vs2", description="contractor")
    first = env.recon()
    assert _situations(first) == {"ABSENT": 1, "SOURCE_IGNORED": 1} and set(env.users()) == {"vs1"}
    env.modify("vs1", "description", "contractor")
    env.reconfigure(validSource={"type": _JS, "source": "source.description !== 'contractor'"},
                    policies=_ONLY_CREATE_UPDATE)
    assert _situations(env.recon()) == {"SOURCE_IGNORED": 1, "UNQUALIFIED": 1}
    assert set(env.users()) == {"vs1"}
