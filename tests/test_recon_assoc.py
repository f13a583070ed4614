"""``recon/assoc`` over the API, against a real slapd and SQLite store: each reconciliation's
summary and what it found for each object, in PingIDM's association shape, from the
run's own audit entries."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from api_server import ADMIN, serve
from idsync_dev.slapd import Slapd

from samples import FORWARD, idsync, sample_project


def test_each_recon_answers_its_associations(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Two recons and an analysis run, every object audited (``audit_unchanged``): the
    summaries list each (newest first, filtered and paged), an analysis says so; a run's
    entries name both objects by path with the situation, action and phase, filter by
    situation, page with a cookie and sort the last first. An unknown run and a field
    entries lack are refused."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    settings = project / "conf" / "idsync.toml"  # an entry for the objects left unchanged too
    settings.write_text(settings.read_text() + "[recon]\naudit_unchanged = true\n")
    assert idsync(project, "recon", FORWARD).returncode == 0
    subprocess.run(["ldapdelete", "-x", "-H", slapd.url, "-D", slapd.admin_dn, "-w", slapd.admin_password,
                    f"uid=scarter,{ldap_subtree}"], check=True, capture_output=True)
    with serve(project) as api:
        second = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true",
                          headers=ADMIN).json()
        analysis = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true&analyze=true"
                            "&persistAssociations=true", headers=ADMIN).json()

        listed = api.get("/openidm/recon/assoc?_queryFilter=true", headers=ADMIN).json()
        assert listed["resultCount"] == 3
        newest = listed["result"][0]
        assert newest["_id"] == analysis["_id"] and newest["isAnalysis"] is True
        assert newest["mapping"] == FORWARD and newest["sourceResourceCollection"] == "system/ldap/account"
        assert newest["targetResourceCollection"] == "managed/user"
        assert re.fullmatch(r".*T.*\.\d{3}Z", newest["finishTime"]), newest["finishTime"]
        real = api.get("/openidm/recon/assoc?_queryFilter=isAnalysis eq false&_pageSize=1", headers=ADMIN).json()
        assert real["resultCount"] == 1 and real["result"][0]["_id"] == second["_id"]
        assert real["pagedResultsCookie"] == "1"
        one = api.get(f"/openidm/recon/assoc/{second['_id']}", headers=ADMIN).json()
        assert one == listed["result"][1]

        entries = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=true", headers=ADMIN).json()
        found = {e["situation"]: e for e in entries["result"]}
        assert set(found) == {"CONFIRMED", "SOURCE_MISSING"}, entries
        kept, gone = found["CONFIRMED"], found["SOURCE_MISSING"]
        assert kept["reconId"] == second["_id"] and kept["phase"] == "source" and kept["status"] == "SUCCESS"
        assert kept["sourceObjectId"].startswith("system/ldap/account/")
        assert kept["targetObjectId"].startswith("managed/user/")
        assert gone["phase"] == "target" and gone["sourceObjectId"].startswith("system/ldap/account/")

        missing = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=situation eq 'SOURCE_MISSING'",
                          headers=ADMIN).json()
        assert [e["_id"] for e in missing["result"]] == [gone["_id"]]
        first = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=true&_pageSize=1",
                        headers=ADMIN).json()
        rest = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=true&_pageSize=1"
                       f"&_pagedResultsCookie={first['pagedResultsCookie']}", headers=ADMIN).json()
        paged = [e["_id"] for e in first["result"] + rest["result"]]
        assert paged == [e["_id"] for e in entries["result"]]
        last_first = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=true&_sortKeys=-_id",
                             headers=ADMIN).json()
        assert [e["_id"] for e in last_first["result"]] == paged[::-1]

        assert api.get("/openidm/recon/assoc/no-such-run", headers=ADMIN).status_code == 404
        assert api.get("/openidm/recon/assoc/no-such-run/entry?_queryFilter=true", headers=ADMIN).status_code == 404
        target_phase = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=phase eq 'target'",
                               headers=ADMIN).json()
        assert [e["_id"] for e in target_phase["result"]] == [gone["_id"]]
        event = api.get(f"/openidm/audit/recon/{gone['_id']}", headers=ADMIN).json()
        assert event["reconciling"] == "target" and event["situation"] == "SOURCE_MISSING"
        odd = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=ambiguousTargetObjectIds pr",
                      headers=ADMIN)
        assert odd.status_code == 400 and "cannot be filtered on" in odd.json()["message"]
        odd = api.get(f"/openidm/recon/assoc/{second['_id']}/entry?_queryFilter=nosuchfield eq 1", headers=ADMIN)
        assert odd.status_code == 400 and "association entries have no field" in odd.json()["message"]
