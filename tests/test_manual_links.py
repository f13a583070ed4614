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
    assert refused.returncode != 0 and "is linked to managed/user/u1" in refused.stderr + refused.stdout
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
        assert post(_action="performAction", mapping="staff_user", action="CREATE", sourceId="s1")[0] == 400
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
    assert gone.returncode != 0 and "has no link" in gone.stderr + gone.stdout
