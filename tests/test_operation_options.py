"""A provisioner's ``operationOptions`` against a real slapd, on the two-way LDAP sample:
a denied write never reaches the directory, from implicit sync, a recon or a script;
``"onDeny": "DO_NOTHING"`` skips it quietly (recorded as skipped, saying why), and
``THROW_EXCEPTION`` (the default) fails it with a 403 naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project
from idsync.errors import ScriptError
from idsync.managed.router import scripting
from idsync.store.database import Store
from idsync_dev.slapd import Slapd

from samples import FORWARD, bad_provisioner_key, idsync, ldap_entry, sample_project, set_provisioner_key

REVERSE = "managedUser_systemLdapAccounts"


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
        "SEARCH": {"objectFeatures": {"account": {"denied": False}}}})
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
    assert "SEARCH.objectFeatures" in checked.stdout + checked.stderr, checked.stdout


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
