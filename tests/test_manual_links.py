"""Links seen and set by hand, as PingIDM's ``sync?_action=getLinkedResources`` and
``performAction`` (LINK, UNLINK) do, and ``idsync sync link/unlink/linked``: an
administrator settles a correlation the recon found AMBIGUOUS, against a real store."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from api_server import ADMIN, serve
from store_projects import CREATE_UPDATE, store_project

from samples import idsync

_MAPPING = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
            "correlationQuery": {"type": "text/javascript",
                                 "source": "({'_queryFilter': 'userName eq \"' + source.login + '\"'})"},
            "properties": [{"source": "login", "target": "userName"}, {"source": "title", "target": "title"}],
            "policies": [*CREATE_UPDATE, {"situation": "AMBIGUOUS", "action": "EXCEPTION"}]}


def _project(tmp_path: Path) -> Path:
    return store_project(tmp_path, {
        "user": {"userName": {"type": "string", "searchable": True}, "title": {"type": "string"}},
        "staff": {"login": {"type": "string", "searchable": True}, "title": {"type": "string"}}}, [_MAPPING])


def _make(project: Path, kind: str, data: dict[str, str], object_id: str) -> None:
    made = idsync(project, "managed", "create", kind, "--no-sync", "--id", object_id, "--data", json.dumps(data))
    assert made.returncode == 0, made.stderr


def _situations(project: Path) -> dict[str, int]:
    ran = idsync(project, "recon", "staff_user", "--json")
    return dict(json.loads(ran.stdout)["situationSummary"])


def _found(project: Path) -> dict[str, int]:
    """The situations a recon found, those it found none of left out."""
    return {k: v for k, v in _situations(project).items() if v}


def test_an_ambiguous_correlation_settled_by_hand(tmp_path: Path) -> None:
    """A source that correlates to two users is AMBIGUOUS; linked by hand to one of them
    it is CONFIRMED at the next recon and its value reaches that user alone; ``linked``
    shows the pair from both sides; a link in the way is refused naming it (409 over
    HTTP); getLinkedResources and performAction UNLINK answer as PingIDM's, and the
    hand-made LINK and UNLINK are in audit/recon."""
    project = _project(tmp_path)
    _make(project, "staff", {"login": "ann", "title": "clerk"}, "s1")
    _make(project, "user", {"userName": "ann"}, "u1")
    _make(project, "user", {"userName": "ann"}, "u2")
    assert _situations(project).get("AMBIGUOUS") == 1

    linked = idsync(project, "sync", "link", "staff_user", "s1", "u1")
    assert linked.returncode == 0 and "managed/staff/s1 linked to managed/user/u1" in linked.stdout, linked.stderr
    assert idsync(project, "sync", "link", "staff_user", "s1", "u1").returncode == 0  # the same link: nothing to do
    assert _situations(project).get("CONFIRMED") == 1
    users = {u["_id"]: u for u in json.loads(idsync(project, "managed", "query", "user").stdout)}
    assert users["u1"].get("title") == "clerk" and "title" not in users["u2"]
    shown = idsync(project, "sync", "linked", "managed/user/u1", "--json")
    assert shown.returncode == 0, shown.stderr
    (back,) = json.loads(shown.stdout)
    assert back["resourceName"] == "managed/staff/s1" and back["content"]["login"] == "ann"
    assert back["linkQualifier"] == "default" and back["linkType"] == "staff_user"

    refused = idsync(project, "sync", "link", "staff_user", "s1", "u2")
    assert refused.returncode == 64 and "is linked to managed/user/u1" in refused.stderr, refused.stderr
    # What cannot be done is 64, what is not there 66: the reference's codes, not a failed run's 1.
    for args, code, said in ((("link", "staff_user", "s1", "nobody"), 66, "managed/user/nobody not found"),
                             (("link", "staff_user", "s1", "u1", "--qualifier", "other"), 64, "no link qualifier"),
                             (("perform", "staff_user", "BOGUS", "--source", "s1"), 64, "unknown action 'BOGUS'"),
                             (("perform", "staff_user", "LINK", "--source", "s9"), 66, "managed/staff/s9 not found"),
                             (("linked", "staff_user"), 64, "resourceName must name one object")):
        answer = idsync(project, "sync", *args)
        assert (answer.returncode, said in answer.stderr) == (code, True), (args, answer.returncode, answer.stderr)
    with serve(project) as api:
        def post(**params: str) -> tuple[int, object]:
            answer = api.post(f"/openidm/sync?{urllib.parse.urlencode(params)}", headers=ADMIN)
            return answer.status_code, answer.json()

        status, found = post(_action="getLinkedResources", resourceName="managed/staff/s1")
        assert status == 200 and isinstance(found, list)
        assert [(f["resourceName"], f["content"]["userName"]) for f in found] == [("managed/user/u1", "ann")]
        assert post(_action="performAction", mapping="staff_user", action="LINK", sourceId="s1",
                    targetId="u2")[0] == 409
        assert post(_action="performAction", mapping="staff_user", action="LINK", sourceId="s1",
                    targetId="nobody")[0] == 404
        assert post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1")[0] == 409
        assert post(_action="performAction", mapping="staff_user", action="LINK")[0] == 400
        assert post(_action="performAction", mapping="staff_user", action="UNLINK", sourceId="s1") == \
            (200, {"status": "OK"})
        assert post(_action="getLinkedResources", resourceName="managed/staff/s1") == (200, [])
        assert post(_action="performAction", mapping="staff_user", action="LINK", sourceId="s1",
                    targetId="u2") == (200, {"status": "OK"})
        by_hand = api.get("/openidm/audit/recon?_queryFilter=" + urllib.parse.quote('sourceObjectId eq "s1"')
                          + "&_sortKeys=-timestamp&_pageSize=3", headers=ADMIN).json()["result"]
        assert [(e["action"], e["targetObjectId"]) for e in by_hand[:2]] == [
            ("LINK", "managed/user/u2"), ("UNLINK", "managed/user/u1")]
    assert _situations(project).get("CONFIRMED") == 1
    gone = idsync(project, "sync", "unlink", "staff_user", "s9")
    assert gone.returncode == 66 and "has no link" in gone.stderr, gone.stderr


# A mapping whose creates wait for an administrator: a recon only reports an ABSENT
# source, and a target no source claims; performAction carries out what is approved.
_HELD = {"name": "staff_user", "source": "managed/staff", "target": "managed/user",
         "correlationQuery": {"_queryFilter": 'userName eq "${source.login}"'},
         "properties": [{"source": "login", "target": "userName"}, {"source": "title", "target": "title"}],
         "policies": [{"situation": "ABSENT", "action": "REPORT"}, {"situation": "FOUND", "action": "REPORT"},
                      {"situation": "CONFIRMED", "action": "UPDATE"}, {"situation": "UNQUALIFIED", "action": "REPORT"},
                      {"situation": "UNASSIGNED", "action": "REPORT"}]}

_APPROVE = """var p = request.additionalParameters;
openidm.action('sync', 'performAction', {}, {mapping: 'staff_user', action: 'CREATE', sourceId: p.id,
                                             situation: 'ABSENT'});
({linked: openidm.action('sync', 'getLinkedResources', {}, {resourceName: 'managed/staff/' + p.id})
             .map(function (r) { return r.content.userName; })});"""


def test_actions_taken_by_hand_whatever_the_policies_say(tmp_path: Path) -> None:
    """performAction carries out what a recon only reported: CREATE of an ABSENT source
    (refused, 409, once the source is no longer ABSENT: the situation given is checked),
    UPDATE and LINK of a FOUND source to the target named, DELETE of an UNASSIGNED target
    (target=true), EXCEPTION recorded as a failure and answered OK; each is a run of its
    own (job performAction) that a retry never takes up. The same from a script
    (openidm.action('sync', ...)) and from ``idsync sync perform``."""
    project = store_project(tmp_path, {
        "user": {"userName": {"type": "string", "searchable": True}, "title": {"type": "string"}},
        "staff": {"login": {"type": "string", "searchable": True}, "title": {"type": "string"}}}, [_HELD])
    (project / "conf" / "endpoint-approve.json").write_text(json.dumps({"type": "text/javascript",
                                                                         "source": _APPROVE}))
    _make(project, "staff", {"login": "ann", "title": "clerk"}, "s1")
    _make(project, "staff", {"login": "bob", "title": "boss"}, "s2")
    _make(project, "staff", {"login": "cy", "title": "cook"}, "s3")
    _make(project, "staff", {"login": "dee", "title": "dean"}, "s4")
    _make(project, "user", {"userName": "bob"}, "u2")
    _make(project, "user", {"userName": "zed"}, "u9")
    assert _found(project) == {"ABSENT": 3, "FOUND": 1, "UNASSIGNED": 1}

    def users() -> dict[str, dict[str, object]]:
        return {u["userName"]: u for u in json.loads(idsync(project, "managed", "query", "user").stdout)}

    assert set(users()) == {"bob", "zed"}  # the recon wrote nothing
    with serve(project) as api:
        def post(**params: str) -> tuple[int, object]:
            answer = api.post(f"/openidm/sync?{urllib.parse.urlencode(params)}", headers=ADMIN)
            return answer.status_code, answer.json()

        assert post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1",
                    situation="ABSENT") == (200, {"status": "OK"})
        assert users()["ann"]["title"] == "clerk"
        again = post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1",
                     situation="ABSENT")
        assert again[0] == 409 and "Expected situation does not match. Expected: ABSENT, Found: CONFIRMED" \
            in json.dumps(again[1]), again
        exists = post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1")
        assert exists[0] == 409 and "CREATE is not possible" in json.dumps(exists[1]), exists
        assert post(_action="performAction", mapping="staff_user", action="UPDATE", sourceId="s2",
                    targetId="u2", situation="FOUND") == (200, {"status": "OK"})
        assert users()["bob"]["title"] == "boss"
        assert post(_action="performAction", mapping="staff_user", action="EXCEPTION",
                    sourceId="s4") == (200, {"status": "OK"})
        assert post(_action="performAction", mapping="staff_user", action="DELETE", target="true",
                    targetId="u9", situation="UNASSIGNED") == (200, {"status": "OK"})
        assert "zed" not in users()
        assert post(_action="performAction", mapping="staff_user", action="DELETE", sourceId="s9")[0] == 404
        assert post(_action="performAction", mapping="staff_user", action="SHOUT", sourceId="s1")[0] == 400
        assert post(_action="performAction", mapping="staff_user", action="DELETE", target="true")[0] == 400
        approved = api.post("/openidm/endpoint/approve?id=s3", headers=ADMIN)
        assert approved.status_code == 200 and approved.json() == {"linked": ["cy"]}, approved.text
        runs = api.get("/openidm/audit/recon?_queryFilter=" + urllib.parse.quote('mapping eq "staff_user"')
                       + "&_sortKeys=-timestamp&_pageSize=4", headers=ADMIN).json()["result"]
        assert [(e["action"], e["situation"], e["status"]) for e in runs] == [
            ("CREATE", "ABSENT", "SUCCESS"), ("DELETE", "UNASSIGNED", "SUCCESS"),
            ("EXCEPTION", "ABSENT", "FAILURE"), ("UPDATE", "FOUND", "SUCCESS")]
    assert set(users()) == {"ann", "bob", "cy"}
    performed = idsync(project, "sync", "perform", "staff_user", "unlink", "--source", "s2", "--situation",
                       "confirmed")
    assert performed.returncode == 0 and "CONFIRMED UNLINK: done" in performed.stdout, performed.stderr
    refused = idsync(project, "sync", "perform", "staff_user", "CREATE", "--source", "s2", "--situation", "ABSENT")
    assert refused.returncode != 0 and "Found: FOUND" in refused.stderr + refused.stdout
    assert "nothing to retry" in idsync(project, "sync", "retry").stdout  # a failed action is not retried
    assert _found(project) == {"CONFIRMED": 2, "FOUND": 1, "ABSENT": 1}


def test_an_action_taken_for_a_recons_report_is_audited_in_that_run(tmp_path: Path) -> None:
    """With PingIDM's ``reconId``, the action's audit entry is one of that recon's too: the run's
    entries (``audit/recon`` by ``reconId``) show the CREATE done for a source it reported
    ABSENT (over REST, and from a script), and the LINK and UNLINK done by hand; another run
    of the mapping gets none of them. A ``reconId`` that is not a run of the mapping is
    refused (400) before anything is done."""
    project = store_project(tmp_path, {
        "user": {"userName": {"type": "string", "searchable": True}, "title": {"type": "string"}},
        "staff": {"login": {"type": "string", "searchable": True}, "title": {"type": "string"}}}, [_HELD])
    (project / "conf" / "endpoint-approve.json").write_text(json.dumps({"type": "text/javascript", "source": (
        "var p = request.additionalParameters; openidm.action('sync', 'performAction', {}, {mapping: 'staff_user', "
        "action: 'CREATE', sourceId: p.id, situation: 'ABSENT', reconId: p.recon}); ({done: true});")}))
    _make(project, "staff", {"login": "ann", "title": "clerk"}, "s1")
    _make(project, "staff", {"login": "bob", "title": "boss"}, "s2")
    _make(project, "staff", {"login": "cy", "title": "cook"}, "s3")
    _make(project, "user", {"userName": "zed"}, "u9")
    other = json.loads(idsync(project, "recon", "staff_user", "--json").stdout)["_id"]
    ran = idsync(project, "recon", "staff_user", "--json")
    assert ran.returncode == 0, ran.stderr
    recon = json.loads(ran.stdout)["_id"]

    def users() -> set[str]:
        return {u["userName"] for u in json.loads(idsync(project, "managed", "query", "user").stdout)}

    with serve(project) as api:
        def post(**params: str) -> tuple[int, object]:
            answer = api.post(f"/openidm/sync?{urllib.parse.urlencode(params)}", headers=ADMIN)
            return answer.status_code, answer.json()

        def entries(run_id: str) -> list[tuple[str, str | None, str]]:
            query = urllib.parse.quote(f'reconId eq "{run_id}"')
            found = api.get(f"/openidm/audit/recon?_queryFilter={query}&_sortKeys=timestamp&_pageSize=100",
                            headers=ADMIN).json()["result"]
            return [(e["action"], e["sourceObjectId"], e["status"]) for e in found]

        reported, reported_other = entries(recon), entries(other)
        assert ("REPORT", "managed/staff/s1", "SUCCESS") in reported, reported
        refused = post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1",
                       reconId="no-such-run")
        assert refused[0] == 400 and "not a run of staff_user" in json.dumps(refused[1]), refused
        assert users() == {"zed"}  # refused before anything was done
        assert post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1",
                    situation="ABSENT", reconId=recon) == (200, {"status": "OK"})
        assert post(_action="performAction", mapping="staff_user", action="LINK", sourceId="s2", targetId="u9",
                    reconId=recon) == (200, {"status": "OK"})
        assert post(_action="performAction", mapping="staff_user", action="UNLINK", sourceId="s2",
                    reconId=recon) == (200, {"status": "OK"})
        approved = api.post(f"/openidm/endpoint/approve?id=s3&recon={recon}", headers=ADMIN)
        assert approved.status_code == 200, approved.text
        assert entries(recon)[len(reported):] == [
            ("CREATE", "managed/staff/s1", "SUCCESS"), ("LINK", "managed/staff/s2", "SUCCESS"),
            ("UNLINK", "managed/staff/s2", "SUCCESS"), ("CREATE", "managed/staff/s3", "SUCCESS")]
        assert entries(other) == reported_other
        _make(project, "staff", {"login": "dee", "title": "dean"}, "s4")
        by_hand = idsync(project, "sync", "perform", "staff_user", "create", "--source", "s4", "--recon", recon)
        assert by_hand.returncode == 0, by_hand.stderr
        assert entries(recon)[-1] == ("CREATE", "managed/staff/s4", "SUCCESS")
        wrong = idsync(project, "sync", "perform", "staff_user", "create", "--source", "s4", "--recon", "nope")
        assert wrong.returncode != 0 and "not a run of staff_user" in wrong.stderr + wrong.stdout
    assert users() == {"ann", "cy", "dee", "zed"}
