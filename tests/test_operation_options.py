"""A provisioner's ``operationOptions`` against a real slapd, on the two-way LDAP sample:
a denied write never reaches the directory, from implicit sync, a recon or a script;
``"onDeny": "DO_NOTHING"`` skips it quietly (recorded as skipped, saying why), and
``THROW_EXCEPTION`` (the default) fails it with a 403 naming the key. A denied read
(``GET``, ``SEARCH``) is never made, and never taken for an empty directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from idsync.config.project import load_project
from idsync.errors import ScriptError
from idsync.managed.router import scripting
from idsync.store.database import Store
from idsync_dev.slapd import Slapd

from samples import FORWARD, bad_provisioner_key, idsync, ldap_entry, sample_project, set_provisioner_key

REVERSE = "managedUser_systemLdapAccounts"  # the sample's second mapping: managed users to the directory


def _project(tmp_path: Path, slapd: Slapd, subtree: str, options: dict[str, Any]) -> Path:
    project = sample_project(tmp_path, slapd, subtree, f"sqlite:///{tmp_path / 's.db'}")
    set_provisioner_key(project, "operationOptions", options)
    loaded = idsync(project, "recon", FORWARD)
    assert loaded.returncode == 0, loaded.stderr
    return project


def _user(project: Path, name: str) -> dict[str, Any]:
    found = json.loads(idsync(project, "managed", "query", "user", "--filter", f'userName eq "{name}"').stdout)
    (user,) = found
    return dict(user)


def _last_audit(project: Path, mapping: str) -> dict[str, Any]:
    runs = json.loads(idsync(project, "status", "--json", "--mapping", mapping).stdout)
    shown = json.loads(idsync(project, "status", runs[0]["_id"], "--json").stdout)
    return dict(shown["audit"][-1])


def test_a_denied_delete_with_do_nothing_is_skipped_and_says_why(tmp_path: Path, slapd: Slapd,
                                                                 ldap_subtree: str) -> None:
    """DELETE denied, onDeny DO_NOTHING: deleting a managed user pushes no delete to LDAP
    (the push succeeds, its audit says the delete was skipped and why); the entry stays,
    and a script's delete of the entry is refused, 403, naming the key."""
    project = _project(tmp_path, slapd, ldap_subtree, {"DELETE": {"denied": True, "onDeny": "DO_NOTHING"}})
    scarter = _user(project, "scarter")
    gone = idsync(project, "managed", "delete", "user", scarter["_id"])
    assert gone.returncode == 0, gone.stdout + gone.stderr
    dn = f"uid=scarter,{ldap_subtree}"
    assert ldap_entry(slapd, dn) is not None
    entry = _last_audit(project, REVERSE)
    assert entry["action"] == "DELETE" and entry["status"] == "SUCCESS", entry
    assert "denies it (operationOptions.DELETE.denied, onDeny DO_NOTHING)" in entry["message"]

    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        script = loaded.scripts.compile({"type": "text/javascript", "source": (
            "var found = openidm.query('system/ldap/account', {_queryFilter: 'uid eq \"scarter\"'}).result;"
            "openidm.delete('system/ldap/account/' + found[0]._id, null);")}, file="test", key="script",
            base_dir=project)
        with scripting(loaded, store), pytest.raises(ScriptError, match=r"DELETE is denied on this system"):
            script()
    finally:
        store.close()
    assert ldap_entry(slapd, dn) is not None


def test_a_denied_create_fails_the_push_and_other_writes_go_on(tmp_path: Path, slapd: Slapd,
                                                                ldap_subtree: str) -> None:
    """CREATE denied (onDeny absent: THROW_EXCEPTION): a new managed user is kept but its
    push to LDAP fails with the denial; an update of a linked user still reaches LDAP."""
    project = _project(tmp_path, slapd, ldap_subtree, {"CREATE": {"denied": True},
                                                       "DELETE": {"denied": False, "onDeny": "DO_NOTHING"}})
    made = idsync(project, "managed", "create", "user", "--data", json.dumps(
        {"userName": "newbie", "givenName": "New", "sn": "Bie", "mail": "newbie@example.com"}))
    assert "CREATE is denied on this system (operationOptions.CREATE.denied" in made.stdout + made.stderr
    assert _user(project, "newbie")["sn"] == "Bie"
    assert ldap_entry(slapd, f"uid=newbie,{ldap_subtree}") is None
    bjensen = _user(project, "bjensen")
    changed = idsync(project, "managed", "patch", "user", bjensen["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/telephoneNumber", "value": "+1 555 0100"}]))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")["telephonenumber"] == ["+1 555 0100"]


@pytest.mark.parametrize(("options", "key"), [
    ({"DELETE": True}, "operationOptions.DELETE"),
    ({"DELETE": {"denied": "yes"}}, "operationOptions.DELETE.denied"),
    ({"DELETE": {"denied": True, "onDeny": "IGNORE"}}, "operationOptions.DELETE.onDeny"),
    ({"CREATE": {"objectFeatures": ["account"]}}, "operationOptions.CREATE.objectFeatures"),
    ({"CREATE": {"objectFeatures": {"account": True}}}, "operationOptions.CREATE.objectFeatures.account"),
    ({"UPDATE": {"objectFeatures": {"__GROUP__": {"denied": 1}}}},
     "operationOptions.UPDATE.objectFeatures.__GROUP__.denied"),
])
def test_bad_operation_options_are_errors_naming_the_key(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                          options: dict[str, Any], key: str) -> None:
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    bad_provisioner_key(project, "operationOptions", options, key)


def test_object_features_decide_for_one_object_type(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``objectFeatures`` (keyed by the type's name or its nativeType) stand for one object
    type in place of the operation's own settings, as OpenICF reads them: CREATE denied on
    the system but not on ``account``, UPDATE denied (DO_NOTHING) on ``__ACCOUNT__`` only.
    A new user's account is created; a changed user's update is skipped, saying why; a new
    role's group is refused. ``validate`` no longer names these objectFeatures."""
    project = _project(tmp_path, slapd, ldap_subtree, {
        "CREATE": {"denied": True, "objectFeatures": {"account": {"denied": False}}},
        "UPDATE": {"objectFeatures": {"__ACCOUNT__": {"denied": True, "onDeny": "DO_NOTHING"}}},
        "AUTHENTICATE": {"objectFeatures": {"account": {"denied": False}}}})
    made = idsync(project, "managed", "create", "user", "--data", json.dumps(
        {"userName": "newbie", "givenName": "New", "sn": "Bie", "mail": "newbie@example.com"}))
    assert made.returncode == 0, made.stdout + made.stderr
    assert ldap_entry(slapd, f"uid=newbie,{ldap_subtree}") is not None
    bjensen = _user(project, "bjensen")
    changed = idsync(project, "managed", "patch", "user", bjensen["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/telephoneNumber", "value": "+1 555 0100"}]))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert ldap_entry(slapd, f"uid=bjensen,{ldap_subtree}")["telephonenumber"] != ["+1 555 0100"]
    entry = _last_audit(project, REVERSE)
    assert entry["action"] == "UPDATE" and "operationOptions.UPDATE.denied, onDeny DO_NOTHING" in entry["message"]
    role = idsync(project, "managed", "create", "role", "--data", json.dumps({"name": "auditors"}))
    assert "CREATE is denied on this system (operationOptions.CREATE.denied" in role.stdout + role.stderr, role
    assert ldap_entry(slapd, f"cn=auditors,{ldap_subtree}") is None
    checked = idsync(project, "validate")
    assert "CREATE.objectFeatures" not in checked.stdout + checked.stderr
    assert "AUTHENTICATE.objectFeatures" in checked.stdout + checked.stderr, checked.stdout


def test_a_denied_sync_refuses_livesync_of_the_system(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """SYNC denied: liveSync of the system fails naming the key (its first run's full recon
    included), or with DO_NOTHING reads nothing and says so; the token is not touched, and
    once the denial is lifted liveSync starts as a first run does."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    set_provisioner_key(project, "operationOptions", {"SYNC": {"denied": True}})
    refused = idsync(project, "livesync", "system/ldap/account", "--json")
    assert refused.returncode != 0
    assert "SYNC is denied on this system (operationOptions.SYNC.denied" in refused.stdout + refused.stderr
    assert json.loads(idsync(project, "managed", "query", "user").stdout) == []

    set_provisioner_key(project, "operationOptions", {"SYNC": {"denied": True, "onDeny": "DO_NOTHING"}})
    quiet = idsync(project, "livesync", "system/ldap/account", "--json")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    done = json.loads(quiet.stdout)
    assert done["state"] == "SUCCESS" and done["changes"] == 0 and done["fullRecon"] is None
    assert "nothing was read" in done["note"]
    assert json.loads(idsync(project, "managed", "query", "user").stdout) == []

    set_provisioner_key(project, "operationOptions", None)
    first = json.loads(idsync(project, "livesync", "system/ldap/account", "--json").stdout)
    assert first["state"] == "SUCCESS" and "no token yet" in first["fullRecon"]
    assert len(json.loads(idsync(project, "managed", "query", "user").stdout)) == 2


def _runs(project: Path, mapping: str) -> list[dict[str, Any]]:
    return list(json.loads(idsync(project, "status", "--json", "--mapping", mapping).stdout))


def test_a_denied_read_stops_a_recon_before_it_reads_anything(tmp_path: Path, slapd: Slapd,
                                                                ldap_subtree: str) -> None:
    """SEARCH denied on the directory: a recon from it fails before reading (exit 78, the
    key named), and with DO_NOTHING ends having read and changed nothing, saying so; the
    two users it linked before stay, linked, though an empty read would have made their
    sources missing. GET denied fails the reverse recon, which reads its linked targets
    by id; SEARCH denied with DO_NOTHING there (it runs its target phase) reads nothing."""
    project = _project(tmp_path, slapd, ldap_subtree, {})
    before = json.loads(idsync(project, "managed", "query", "user").stdout)
    assert len(before) == 2

    set_provisioner_key(project, "operationOptions", {"SEARCH": {"denied": True}})
    refused = idsync(project, "recon", FORWARD)
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert ("system/ldap/account: SEARCH is denied on this system (operationOptions.SEARCH.denied in its "
            "provisioner, onDeny THROW_EXCEPTION)") in refused.stdout + refused.stderr
    run = _runs(project, FORWARD)[0]
    assert run["state"] == "FAILED" and "SEARCH is denied" in run["message"], run

    set_provisioner_key(project, "operationOptions", {"SEARCH": {"denied": True, "onDeny": "DO_NOTHING"}})
    quiet = idsync(project, "recon", FORWARD)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    run = _runs(project, FORWARD)[0]
    assert run["state"] == "SUCCESS" and run["message"].endswith("onDeny DO_NOTHING): nothing was read"), run
    assert not any(run["situationSummary"].values()), run
    assert json.loads(idsync(project, "managed", "query", "user").stdout) == before

    set_provisioner_key(project, "operationOptions", {"GET": {"denied": True}})
    reverse = idsync(project, "recon", REVERSE)
    assert reverse.returncode == 78 and "GET is denied on this system" in reverse.stdout + reverse.stderr
    set_provisioner_key(project, "operationOptions", {"SEARCH": {"denied": True, "onDeny": "DO_NOTHING"}})
    reverse = idsync(project, "recon", REVERSE)
    assert reverse.returncode == 0, reverse.stdout + reverse.stderr
    assert _runs(project, REVERSE)[0]["message"].endswith("nothing was read")

    set_provisioner_key(project, "operationOptions", None)
    again = idsync(project, "recon", FORWARD)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _runs(project, FORWARD)[0]["situationSummary"]["CONFIRMED"] == 2
    assert json.loads(idsync(project, "managed", "query", "user").stdout) == before

    # A change pushed to the directory reads the linked entry first: kept, its push failed, to retry.
    set_provisioner_key(project, "operationOptions", {"GET": {"denied": True}})
    patched = idsync(project, "managed", "patch", "user", before[0]["_id"], "--operations",
                     json.dumps([{"operation": "replace", "field": "/telephoneNumber", "value": "+1 555 0100"}]))
    assert f"is saved, but implicit sync through {REVERSE} failed" in patched.stderr, patched.stderr
    assert "GET is denied on this system" in patched.stderr


def test_denied_reads_through_the_api_and_scripts(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """The API and scripts follow a read's onDeny: SEARCH denied answers a query 403 naming
    the key, GET denied with DO_NOTHING answers a read 404; the other way round, a query
    answers no result and a read 403. A script's openidm.query then finds nothing and its
    openidm.read fails naming the key."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    uid = f"uid=bjensen,{ldap_subtree}"
    set_provisioner_key(project, "operationOptions", {"SEARCH": {"denied": True},
                                                      "GET": {"denied": True, "onDeny": "DO_NOTHING"}})
    with serve(project) as api:
        query = api.get("/openidm/system/ldap/account?_queryFilter=true", headers=ADMIN)
        assert query.status_code == 403, query.text
        assert "SEARCH is denied on this system (operationOptions.SEARCH.denied" in query.json()["message"]
        assert api.get(f"/openidm/system/ldap/account/{uid}", headers=ADMIN).status_code == 404

    set_provisioner_key(project, "operationOptions", {"SEARCH": {"denied": True, "onDeny": "DO_NOTHING"},
                                                      "GET": {"denied": True}})
    with serve(project) as api:
        query = api.get("/openidm/system/ldap/account?_queryFilter=true", headers=ADMIN)
        assert query.status_code == 200 and query.json()["result"] == [], query.text
        read = api.get(f"/openidm/system/ldap/account/{uid}", headers=ADMIN)
        assert read.status_code == 403 and "GET is denied on this system" in read.json()["message"], read.text

    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        found = loaded.scripts.compile({"type": "text/javascript", "source": (
            "openidm.query('system/ldap/account', {_queryFilter: 'true'}).result.length")},
            file="test", key="script", base_dir=project)
        reader = loaded.scripts.compile({"type": "text/javascript", "source": (
            f"openidm.read('system/ldap/account/{uid}')")}, file="test", key="script", base_dir=project)
        with scripting(loaded, store):
            assert found() == 0
            with pytest.raises(ScriptError, match=r"GET is denied on this system"):
                reader()
    finally:
        store.close()
