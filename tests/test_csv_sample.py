"""samples/sync-with-csv-files end to end, as docs/csv.md walks through it: the HR
file into the store, the store out to the badge file (XML, made on the first write),
then the sample's liveSync job carrying an edited, a new and a removed HR row through
both, and a second run of everything writing nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from file_projects import changed, recon
from livesync_env import managed_users

from samples import ROOT, idsync

SAMPLE = ROOT / "samples" / "sync-with-csv-files"
HR_IN, BADGES_OUT = "systemHrAccounts_managedUser", "managedUser_systemBadgesAccounts"


def _badges(project: Path) -> dict[str, dict[str, str]]:
    """The badge file's accounts by login: element local name -> text."""
    import xml.etree.ElementTree as ET  # the test reads a file idsync wrote, from this repository

    found: dict[str, dict[str, str]] = {}
    for account in ET.parse(project / "state" / "badges.xml").getroot():
        values = {child.tag.rpartition("}")[2]: child.text or "" for child in account}
        found[values["__NAME__"]] = values
    return found


def test_the_csv_sample_walkthrough(tmp_path: Path) -> None:
    project = tmp_path / "hr"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("state"))
    (project / "conf" / "idsync.toml").write_text(
        (project / "conf" / "idsync.toml").read_text().replace('url = ""', f'url = "sqlite:///{tmp_path}/s.db"'))
    assert idsync(project, "validate").returncode == 0
    tested = idsync(project, "test")
    assert tested.returncode == 0 and "hr: ok" in tested.stdout and "badges: ok" in tested.stdout

    assert changed(recon(project, HR_IN)) == {"created": 5, "linked": 5}
    users = managed_users(project)
    assert users["jdoe"] == {**users["jdoe"], "displayName": "John Doe", "accountStatus": "inactive",
                             "description": "Engineering", "mail": "jdoe@example.com"}
    # The recon into the store carried its creates on to the badge file (``OnwardPush``, ``sync/changes.py``).
    assert changed(recon(project, BADGES_OUT)) == {}
    badges = _badges(project)
    assert badges["jdoe"] == {**badges["jdoe"], "displayName": "John Doe", "__ENABLE__": "false"}
    assert len({b["__UID__"] for b in badges.values()}) == 5

    live = idsync(project, "run-job", "hr-live", "--json")
    assert live.returncode == 0, live.stderr  # the first liveSync of each source: full recons, tokens kept
    hr = project / "data" / "hr.csv"
    text = hr.read_text().replace('"Engineering", "false"', '"Engineering", "true"')
    text = "\n".join(line for line in text.splitlines() if not line.startswith('"tmorris"')) + "\n"
    hr.write_text(text + '"abergin", "Andy", "Bergin", "abergin@example.com", "1006", "Sales", "true"\n')
    live = idsync(project, "run-job", "hr-live", "--json")
    assert live.returncode == 0, live.stderr
    runs = {r["mapping"]: r for r in json.loads(live.stdout)["runs"]}
    assert runs["system/hr/account"]["counts"] == {"created": 1, "updated": 1, "deleted": 1}
    badges = _badges(project)
    assert sorted(badges) == ["abergin", "bjensen", "jdoe", "kvaughan", "scarter"]
    assert badges["jdoe"]["__ENABLE__"] == "true"

    stamp = (project / "state" / "badges.xml").stat().st_mtime_ns
    assert changed(recon(project, HR_IN)) == {}
    assert changed(recon(project, BADGES_OUT)) == {}
    again = idsync(project, "run-job", "hr-live", "--json")
    assert again.returncode == 0 and all(not r["counts"] for r in json.loads(again.stdout)["runs"])
    assert (project / "state" / "badges.xml").stat().st_mtime_ns == stamp


def test_a_transform_cutting_a_character_in_two_fails_that_user_alone(tmp_path: Path) -> None:
    """With the displayName transform cut to 8 characters (``substring``) and an emoji
    in one HR first name, ``idsync recon`` cuts that emoji in two: that user fails
    alone, the error naming the transform and the half character, and the run succeeds
    with the other four created; no UnicodeEncodeError anywhere."""
    project = tmp_path / "hr"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("state"))
    (project / "conf" / "idsync.toml").write_text(
        (project / "conf" / "idsync.toml").read_text().replace('url = ""', f'url = "sqlite:///{tmp_path}/s.db"'))
    sync = project / "conf" / "sync.json"
    sync.write_text(sync.read_text().replace(".join(' ')\"", ".join(' ').substring(0, 8)\"", 1))
    hr = project / "data" / "hr.csv"
    hr.write_text(hr.read_text(encoding="utf-8").replace('"Barbara"', '"Barbara\U0001F600"'), encoding="utf-8")

    done = idsync(project, "recon", HR_IN, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "SUCCESS" and summary["changes"]["created"] == 4 and summary["changes"]["failed"] == 1
    (error,) = summary["errors"]
    assert error["source_id"] == "bjensen" and "transform of property 'displayName'" in error["message"]
    assert "the result holds half of a character (an unpaired surrogate" in error["message"]
    assert "UnicodeEncodeError" not in done.stdout + done.stderr
    users = managed_users(project)
    assert sorted(users) == ["jdoe", "kvaughan", "scarter", "tmorris"]
    assert users["scarter"]["displayName"] == "Sam Cart"
