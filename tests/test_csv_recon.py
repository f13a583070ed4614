"""Recons of one CSV file into another, decided as PingIDM's engine decides them: a
source that fails ``validSource`` is still correlated, and the target it finds is
``UNQUALIFIED`` and its own (never an orphan of the target phase); a dry run reports
what the real run then does, down to two sources of one page correlating to the same
target to create; a ``DELETE`` runs ``onDelete``, deletes, then runs ``onUnlink`` and
unlinks, as PingIDM's ``DELETE`` falls through to its ``UNLINK``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog
from file_projects import file_project, recon
from idsync.sync.options import ReconOptions
from livesync_env import live

_CSV_REF = {"bundleName": "org.openidentityplatform.openicf.connectors.csvfile-connector",
            "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"}
_TYPES = {"account": {"nativeType": "__ACCOUNT__", "properties": {
    "uid": {"type": "string", "nativeName": "__NAME__", "required": True},
    "name": {"type": "string"}, "kind": {"type": "string"}, "email": {"type": "string"}}}}
_HEADER = "uid,name,kind,email\n"


def _project(tmp_path: Path, src: str, tgt: str, **mapping: Any) -> Path:
    """``src`` -> ``tgt`` (rows under ``_HEADER``), correlated on email, with ``mapping``'s keys."""
    project = file_project(tmp_path, [{
        "name": "s2t", "source": "system/src/account", "target": "system/tgt/account",
        "correlationQuery": {"_queryFilter": '/email eq "${source.email}"'},
        "properties": [{"source": p, "target": p} for p in ("uid", "name", "kind", "email")], **mapping}])
    for name, rows in (("src", src), ("tgt", tgt)):
        (project / "data" / f"{name}.csv").write_text(_HEADER + rows)
        (project / "conf" / f"provisioner.openicf-{name}.json").write_text(json.dumps({
            "name": name, "connectorRef": _CSV_REF, "objectTypes": _TYPES,
            "configurationProperties": {"csvFile": f"&{{launcher.project.location}}/data/{name}.csv",
                                        "headerUid": "uid"}}))
    return project


def _targets(project: Path) -> list[str]:
    return [line.split(",")[0].strip('"') for line in (project / "data" / "tgt.csv").read_text().splitlines()[1:]]


def _situations(summary: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in summary["situationSummary"].items() if v}


def test_an_unqualified_source_claims_the_target_it_correlates_to(tmp_path: Path) -> None:
    """A contractor turned away by ``validSource`` correlates to a target by email: it is
    UNQUALIFIED (its policy IGNORE), not SOURCE_IGNORED, and that target is its own, so the
    target phase does not meet it as UNASSIGNED, whose DELETE would remove it. The dry run
    says the same; a staff source without a target is created."""
    project = _project(tmp_path, "d,Dan,contractor,d@x\nz,Zed,staff,z@x\n", "d,Dan,staff,d@x\n",
                       validSource={"type": "text/javascript", "source": "source.kind != 'contractor'"},
                       policies=[{"situation": "UNQUALIFIED", "action": "IGNORE"},
                                 {"situation": "UNASSIGNED", "action": "DELETE"}])
    for options in (ReconOptions(dry_run=True), ReconOptions()):
        result = recon(project, "s2t", options)
        assert result.state == "SUCCESS", result.message
        assert _situations(result.summary) == {"UNQUALIFIED": 1, "ABSENT": 1}
        assert result.summary["changes"]["deleted"] == 0
    assert _targets(project) == ["d", "z"]


def test_an_unqualified_source_whose_correlation_cannot_be_made_is_ignored(tmp_path: Path) -> None:
    """A contractor turned away by ``validSource`` whose correlation runs a transform that
    refuses it (no email: what validSource keeps out): SOURCE_IGNORED, as before unqualified
    sources were correlated, not a failure that fails the run and holds its deletes; the
    orphan target is deleted as the mapping says."""
    email = {"source": "email", "target": "email", "transform": {
        "type": "text/javascript", "source": "if (!source) { throw 'no mail'; } source.toLowerCase()"}}
    project = _project(tmp_path, "c,Con,contractor,\nz,Zed,staff,z@x\n", "z,Zed,staff,z@x\no,Orphan,staff,o@x\n",
                       correlationQuery={"_queryFilter": '/email eq "${target.email}"'},
                       properties=[*({"source": p, "target": p} for p in ("uid", "name", "kind")), email],
                       validSource={"type": "text/javascript", "source": "source.kind != 'contractor'"},
                       policies=[{"situation": "UNASSIGNED", "action": "DELETE"}])
    result = recon(project, "s2t")
    assert result.state == "SUCCESS", result.message
    assert _situations(result.summary) == {"SOURCE_IGNORED": 1, "FOUND": 1, "UNASSIGNED": 1}, result.summary
    assert not result.summary["changes"].get("failed") and result.summary["changes"]["deleted"] == 1
    assert _targets(project) == ["z"]


def test_a_valid_source_or_target_answering_no_boolean_fails_the_object(tmp_path: Path) -> None:
    """``validSource`` must answer true or false, as PingIDM requires ("Expecting boolean value
    from validSource"): a script answering a file's text ``"false"`` (or undefined) fails that
    object, naming the script, instead of qualifying it by its truthiness and creating it; the
    run holds its deletes. ``validTarget`` the same; a boolean answer works as before."""
    rows = "a,Ann,false,a@x\nb,Bob,true,b@x\n"
    project = _project(tmp_path, rows, "o,Orphan,staff,o@x\n",
                       validSource={"type": "text/javascript", "source": "source.kind"},
                       policies=[{"situation": "UNASSIGNED", "action": "DELETE"}])
    result = recon(project, "s2t")
    assert result.state == "FAILED" and "deletes and unlinks were held" in str(result.message)
    assert result.summary["changes"]["created"] == 0
    assert "mappings[0].validSource: must answer true or false, not a string" in str(result.summary)
    assert _targets(project) == ["o"]

    project = _project(tmp_path / "target", rows, "o,Orphan,staff,o@x\n",
                       validSource={"type": "text/javascript", "source": "source.kind === 'true'"},
                       validTarget={"type": "text/javascript", "source": "if (target.kind !== 'staff') true"},
                       policies=[{"situation": "UNASSIGNED", "action": "DELETE"},
                                 {"situation": "TARGET_IGNORED", "action": "DELETE"}])
    result = recon(project, "s2t")
    assert result.summary["changes"]["created"] == 1 and result.summary["changes"]["deleted"] == 0
    assert "mappings[0].validTarget: must answer true or false, not null" in str(result.summary), result.summary
    assert sorted(_targets(project)) == ["b", "o"]


def test_a_condition_holds_only_when_its_script_answers_true(tmp_path: Path) -> None:
    """A policy's, a property's and ``sourceCondition``'s script condition holds when it answers
    ``true``, as PingIDM's conditions do: a file's text ``"false"`` (truthy in JavaScript and
    Python alike) no longer selects a ``DELETE`` of every confirmed target, nor applies the rule."""
    delete_when = {"type": "text/javascript", "source": "source.kind"}
    project = _project(tmp_path, "a,Ann,false,a@x\n", "a,Ann,false,a@x\n", policies=[
        {"situation": "FOUND", "condition": delete_when, "action": "DELETE"},
        {"situation": "FOUND", "action": "UPDATE"}],
        properties=[{"source": "uid", "target": "uid"}, {"source": "email", "target": "email"},
                    {"source": "name", "target": "name", "transform": {"type": "text/javascript",
                                                                      "source": "source.toUpperCase()"},
                     "condition": {"type": "text/javascript", "source": "object.kind"}}])
    result = recon(project, "s2t")
    assert result.state == "SUCCESS", result.message
    assert result.summary["changes"]["deleted"] == 0
    assert (project / "data" / "tgt.csv").read_text().splitlines()[1].split(",")[:2] == ["a", "Ann"]

    project = _project(tmp_path / "kept", "a,Ann,false,a@x\n", "",
                       policies=[{"situation": "ABSENT", "action": "CREATE"}],
                       sourceCondition={"type": "text/javascript", "source": "source.kind"})
    result = recon(project, "s2t")
    assert result.summary["changes"]["created"] == 0 and _targets(project) == []


def test_an_unqualified_source_correlating_to_several_targets_claims_them_all(tmp_path: Path) -> None:
    """Several targets found for an unqualified source: UNQUALIFIED (its DELETE has no one
    target to delete, and does nothing, as in PingIDM), and none of them is UNASSIGNED."""
    project = _project(tmp_path, "d,Dan,contractor,d@x\n", "d1,Dan,staff,d@x\nd2,Dan,staff,d@x\n",
                       validSource={"type": "text/javascript", "source": "source.kind != 'contractor'"},
                       policies=[{"situation": "UNQUALIFIED", "action": "DELETE"},
                                 {"situation": "UNASSIGNED", "action": "DELETE"}])
    result = recon(project, "s2t")
    assert result.state == "SUCCESS", result.message
    assert _situations(result.summary) == {"UNQUALIFIED": 1}
    assert _targets(project) == ["d1", "d2"]


def test_a_source_unqualified_for_one_link_qualifier_claims_its_target_there(tmp_path: Path) -> None:
    """With link qualifiers, ``validSource`` is asked per qualifier: a source it turns away
    for ``ops`` is still correlated for ``ops``, and the target found there is its own."""
    project = _project(tmp_path, "d,Dan,staff,d@x\n", "d,Dan,staff,d@x\n",
                       linkQualifiers=["default", "ops"],
                       correlationQuery=[{"linkQualifier": q, "_queryFilter": '/email eq "${source.email}"'}
                                         for q in ("default", "ops")],
                       validSource={"type": "text/javascript", "source": "linkQualifier != 'ops'"},
                       policies=[{"situation": "UNQUALIFIED", "action": "IGNORE"},
                                 {"situation": "FOUND", "action": "LINK"},
                                 {"situation": "UNASSIGNED", "action": "DELETE"}])
    result = recon(project, "s2t")
    assert result.state == "SUCCESS", result.message
    assert _situations(result.summary) == {"FOUND": 1, "UNQUALIFIED": 1}
    assert _targets(project) == ["d"]


def test_a_dry_run_sees_its_own_create_when_two_sources_correlate_to_it(tmp_path: Path) -> None:
    """Two sources of one page correlate by email to a target neither finds yet: the real
    run creates the first and finds the second FOUND_ALREADY_LINKED to it (EXCEPTION). The
    dry run reports the same, not two creates, and writes nothing."""
    project = _project(tmp_path, "a,Alice,staff,dup@x\nb,Bob,staff,dup@x\n", "z,Z,staff,z@x\n",
                       policies=[{"situation": "UNASSIGNED", "action": "IGNORE"}])
    dry = recon(project, "s2t", ReconOptions(dry_run=True))
    assert _targets(project) == ["z"]
    real = recon(project, "s2t")
    for result in (dry, real):
        assert _situations(result.summary) == {"ABSENT": 1, "FOUND_ALREADY_LINKED": 1, "UNASSIGNED": 1}
        assert result.summary["changes"]["created"] == 1
    assert _targets(project) == ["z", "a"]


_HOOKS = {hook: {"type": "text/javascript", "source": f"logger.warn('{hook} ' + target._id)"}
          for hook in ("onDelete", "onUnlink")}


def _hooks_run(logs: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in logs if e.get("event") == "script.log"]


def test_a_delete_of_a_linked_target_runs_on_delete_then_on_unlink(tmp_path: Path) -> None:
    """A source gone from the file, its target SOURCE_MISSING with DELETE: onDelete runs,
    the target is deleted, then onUnlink runs (PingIDM's DELETE falls through to UNLINK),
    in a recon and in liveSync alike. An UNASSIGNED target deleted has no link: onDelete
    alone."""
    project = _project(tmp_path, "b,B,staff,b@x\nc,C,staff,c@x\n", "o,O,staff,o@x\n", **_HOOKS,
                       policies=[{"situation": "SOURCE_MISSING", "action": "DELETE"},
                                 {"situation": "UNASSIGNED", "action": "DELETE"}])
    with structlog.testing.capture_logs() as logs:
        assert recon(project, "s2t").state == "SUCCESS"
    assert _hooks_run(logs) == ["onDelete o"]
    (project / "data" / "src.csv").write_text(_HEADER + "c,C,staff,c@x\n")
    with structlog.testing.capture_logs() as logs:
        assert recon(project, "s2t").state == "SUCCESS"
    assert _hooks_run(logs) == ["onDelete b", "onUnlink b"]
    assert _targets(project) == ["c"]

    assert live(project, "system/src/account").state == "SUCCESS"  # the first reconciles; then the token
    (project / "data" / "src.csv").write_text(_HEADER)
    with structlog.testing.capture_logs() as logs:
        assert live(project, "system/src/account").state == "SUCCESS"
    assert _hooks_run(logs) == ["onDelete c", "onUnlink c"]
    assert _targets(project) == []
