"""The ``openidm`` object of mapping scripts against the real store and slapd: an
encrypted managed password reaching LDAP in clear through ``openidm.decrypt``, a
recon hook creating a managed object that implicit sync pushes to LDAP, a
correlation script asking ``openidm.query``, and the call limit of a script run."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api_server import ADMIN, serve
from dbs import BACKENDS, store_url
from idsync.config.project import load_project
from idsync.crypto import Keyring
from idsync.errors import ScriptError
from idsync.managed.router import scripting
from idsync.store.database import Store
from idsync.store.tables import managed_objects as mo
from idsync_dev.slapd import Slapd
from sqlalchemy import select

from samples import FORWARD, REVERSE, can_bind, idsync, ldap_entry, sample_project

KEY = bytes(range(32))
SECRET = "S3cret-pw!x"
FDOE = {"userName": "fdoe", "givenName": "Felicitas", "sn": "Doe", "mail": "fdoe@example.com"}
SQL_STORES = [b for b in BACKENDS if getattr(b, "values", (b,))[0] in ("sqlite", "postgresql")]


def _project(tmp_path: Path, slapd: Slapd, subtree: str, url: str) -> Path:
    """The bidirectional LDAP sample with the managed password encrypted (PingIDM's
    ``encryption``) under a key the test knows, given in a key file."""
    project = sample_project(tmp_path, slapd, subtree, url, load_data=False)
    (project / "sym.key").write_text(base64.b64encode(KEY).decode() + "\n")
    toml = project / "conf" / "idsync.toml"
    toml.write_text(toml.read_text() + '[crypto]\nkey_file = "sym.key"\n')
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    user = next(o for o in managed["objects"] if o["name"] == "user")
    user["schema"]["properties"]["password"] = {"type": "string", "encryption": {"key": "openidm-sym-default"}}
    managed_file.write_text(json.dumps(managed))
    return project


def _edit_mapping(project: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    change(next(m for m in sync["mappings"] if m["name"] == name))
    sync_file.write_text(json.dumps(sync))


def _run_script(project_dir: Path, source: str) -> Any:
    """What a JavaScript ``source`` answers, run with ``openidm`` bound to the project's store."""
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    script = project.scripts.compile({"type": "text/javascript", "source": source}, file="test", key="script",
                                     base_dir=project_dir)
    try:
        with scripting(project, store):
            return script()
    finally:
        store.close()


def _decrypting(mapping: dict[str, Any]) -> None:
    rule = next(p for p in mapping["properties"] if p["target"] == "userPassword")
    rule["transform"] = {"type": "text/javascript", "source": "openidm.decrypt(source);"}


@pytest.mark.parametrize("backend", SQL_STORES)
def test_encrypted_password_reaches_ldap_in_clear_and_binds(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                            backend: str) -> None:
    """A password set on a managed user is stored encrypted in PingIDM's $crypto form (the key
    decrypts it), pushed by implicit sync through an ``openidm.decrypt(source)`` transform, and
    the LDAP entry binds with it; the secret is in no command output, answer or audit entry.
    Setting the same password again changes nothing; a new one reaches LDAP too."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path))
    _edit_mapping(project, REVERSE, _decrypting)

    created = idsync(project, "managed", "create", "user", "--data", json.dumps({**FDOE, "password": SECRET}))
    assert created.returncode == 0, created.stderr
    dn = f"uid=fdoe,{ldap_subtree}"
    assert can_bind(slapd, dn, SECRET)
    user_id = json.loads(created.stdout)["_id"]

    store = Store.open(load_project(project).settings.store_url())
    with store.begin() as conn:
        data = conn.execute(select(mo.c.data).where(mo.c.id == user_id)).scalar_one()
    stored = data["password"]["$crypto"]
    assert stored["type"] == "x-simple-encryption" and stored["value"]["key"] == "openidm-sym-default"
    assert Keyring({"openidm-sym-default": KEY}).decrypt(data["password"]) == SECRET

    shown = idsync(project, "managed", "get", "user", user_id)
    status = idsync(project, "status", "--json")
    run_id = json.loads(status.stdout)[0]["_id"]
    detail = idsync(project, "status", run_id, "--json")
    for proc in (created, shown, status, detail):
        assert SECRET not in proc.stdout + proc.stderr
    assert "password" not in json.loads(shown.stdout)

    again = idsync(project, "managed", "patch", "user", user_id, "--operations",
                   json.dumps([{"operation": "replace", "field": "/password", "value": SECRET}]))
    assert again.returncode == 0, again.stderr
    with store.begin() as conn:
        assert conn.execute(select(mo.c.data).where(mo.c.id == user_id)).scalar_one()["password"] == data["password"]

    changed = idsync(project, "managed", "patch", "user", user_id, "--operations",
                     json.dumps([{"operation": "replace", "field": "/password", "value": "N3w-pw!y"}]))
    assert changed.returncode == 0, changed.stderr
    assert can_bind(slapd, dn, "N3w-pw!y") and not can_bind(slapd, dn, SECRET)


@pytest.mark.parametrize("backend", SQL_STORES)
def test_recon_hook_creates_managed_object_that_implicit_sync_pushes(tmp_path: Path, slapd: Slapd,
                                                                     ldap_subtree: str, backend: str) -> None:
    """An onCreate hook of a recon (LDAP -> managed) calls openidm.create on managed/role; the
    role is validated and stored, and implicit sync pushes it to LDAP as a group whose member is
    the account, as a change from the command line would be. A dry run creates nothing: the
    hook's write is refused with a clear message."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path))
    slapd.add_ldif(f"dn: uid=hook1,{ldap_subtree}\nobjectClass: inetOrgPerson\nuid: hook1\ncn: Hook One\n"
                   "sn: One\n")
    _edit_mapping(project, FORWARD, lambda m: m.__setitem__("onCreate", {
        "type": "text/javascript",
        "source": "openidm.create('managed/role', null, {name: 'home-' + source.uid, "
                  f"members: [ldapDn.child('{ldap_subtree}', 'uid', source.uid)]}});"}))

    preview = idsync(project, "recon", FORWARD, "--dry-run", "--json")
    assert "openidm.create managed/role: not carried out in a dry run" in preview.stdout + preview.stderr
    assert json.loads(idsync(project, "managed", "query", "role", "--filter", "true").stdout) == []

    recon = idsync(project, "recon", FORWARD, "--json")
    assert recon.returncode == 0, recon.stderr
    assert json.loads(recon.stdout)["situationSummary"]["ABSENT"] == 1
    group = ldap_entry(slapd, f"cn=home-hook1,{ldap_subtree}")
    assert group is not None and group["uniquemember"] == [f"uid=hook1,{ldap_subtree}"]
    roles = idsync(project, "managed", "query", "role", "--filter", 'name eq "home-hook1"')
    assert [r["name"] for r in json.loads(roles.stdout)] == ["home-hook1"], roles.stderr


@pytest.mark.parametrize("backend", SQL_STORES)
def test_correlation_script_queries_the_store(tmp_path: Path, slapd: Slapd, ldap_subtree: str, backend: str) -> None:
    """A correlation script that answers with openidm.query's result links the LDAP account to the
    managed user it finds (FOUND, one user afterwards, where the query alone decided)."""
    project = _project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path))
    slapd.add_ldif(f"dn: uid=corr1,{ldap_subtree}\nobjectClass: inetOrgPerson\nuid: corr1\ncn: Corr One\n"
                   "sn: One\n")

    def correlate(mapping: dict[str, Any]) -> None:
        del mapping["correlationQuery"]
        mapping["correlationScript"] = {"type": "text/javascript", "source": (
            "openidm.query('managed/user', {_queryFilter: 'userName eq \"' + source.uid.toUpperCase() + '\"'"
            " + ' or userName eq \"' + source.uid + '\"'}).result")}

    _edit_mapping(project, FORWARD, correlate)
    made = idsync(project, "managed", "create", "user", "--no-sync", "--data",
                  json.dumps({"userName": "corr1", "sn": "Before"}))
    assert made.returncode == 0, made.stderr

    recon = idsync(project, "recon", FORWARD, "--json")
    assert recon.returncode == 0, recon.stderr
    assert json.loads(recon.stdout)["situationSummary"]["FOUND"] == 1
    users = idsync(project, "managed", "query", "user", "--filter", 'userName eq "corr1"')
    found = json.loads(users.stdout)
    assert len(found["result"] if isinstance(found, dict) else found) == 1


def test_a_script_calling_openidm_in_a_loop_is_stopped(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A transform that queries in an endless loop stops at [scripts] max_calls with a clear
    error; an exception the script catches is what the router said (a bad filter)."""
    project_dir = _project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    toml = project_dir / "conf" / "idsync.toml"
    toml.write_text(toml.read_text().replace("[crypto]", "[scripts]\nmax_calls = 7\n[crypto]"))
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    loop = project.scripts.compile(
        {"type": "text/javascript", "source": "for (;;) { openidm.query('managed/user', {_queryFilter: 'true'}); }"},
        file="test", key="loop", base_dir=project_dir)
    caught = project.scripts.compile(
        {"type": "text/javascript", "source": (
            "try { openidm.query('managed/user', {_queryFilter: 'userName eq'}); 'no' } catch (e) { e.message }")},
        file="test", key="caught", base_dir=project_dir)
    with scripting(project, store):
        with pytest.raises(ScriptError, match=r"stopped at openidm call 8: a script run may make 7"):
            loop()
        assert "openidm.query managed/user" in caught()
    with pytest.raises(ScriptError, match="not available here"):  # no router bound: only crypto answers
        loop()


def test_openidm_action_creates_and_patches_and_names_what_it_does_not_answer(tmp_path: Path, slapd: Slapd,
                                                                             ldap_subtree: str) -> None:
    """``openidm.action`` answers PingIDM's create (on a collection, ``_id`` in the
    params) and patch (on an object) through the managed service; any other action
    throws, naming it."""
    project_dir = _project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    made, description, refused = _run_script(project_dir, (
        "var made = openidm.action('managed/role', 'create', {name: 'auditors'}, {_id: 'auditors'});"
        "var patched = openidm.action('managed/role/auditors', 'patch',"
        " [{operation: 'replace', field: 'description', value: 'read only'}]);"
        "var refused; try { openidm.action('managed/user', 'resetPassword', {}); } catch (e) { refused = e.message }"
        "[made._id, patched.description, refused]"))
    store = Store.open(load_project(project_dir).settings.store_url())
    assert (made, description) == ("auditors", "read only")
    assert "managed/user" in refused and "'resetPassword'" in refused and "not available" in refused
    with store.engine.connect() as conn:
        found = conn.execute(select(mo.c.data).where(mo.c.object_type == "role", mo.c.id == "auditors")).first()
    assert found is not None and found.data["description"] == "read only"


def test_openidm_query_takes_the_named_queries_of_the_store(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """``openidm.query`` of a managed collection takes a ``_queryId``, as PingIDM's sample
    scripts call it (``usecase1``'s onStore: ``for-userName`` with ``uid``): the stock
    queries and the project's ``repo.*.json`` ones, the other parameters bound as values;
    a missing parameter or an unknown query throws, naming it; a system collection has
    query-all and query-all-ids only."""
    project_dir = _project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    (project_dir / "conf" / "repo.orientdb.json").write_text(json.dumps({"queries": {
        "by-surname": "SELECT * FROM ${unquoted:_resource} WHERE sn = ${sn}"}}))
    count, name, quoted, surnames, errors = _run_script(project_dir, (
        "openidm.create('managed/user', null, {userName: 'fdoe', givenName: 'F', sn: 'Doe', mail: 'f@example.com'});"
        "openidm.create('managed/user', null, {userName: 'adoe', givenName: 'A', sn: 'Doe', mail: 'a@example.com'});"
        "var one = openidm.query('managed/user', {_queryId: 'for-userName', uid: 'fdoe'});"
        "var quoted = openidm.query('managed/user', {_queryId: 'for-userName', uid: \"fdoe' OR '1'='1\"});"
        "var doe = openidm.query('managed/user', {_queryId: 'by-surname', sn: 'Doe'});"
        "var errors = [];"
        "try { openidm.query('managed/user', {_queryId: 'for-userName'}); } catch (e) { errors.push(e.message) }"
        "try { openidm.query('managed/user', {_queryId: 'no-such'}); } catch (e) { errors.push(e.message) }"
        "try { openidm.query('system/ldap/account', {_queryId: 'for-userName', uid: 'x'}); }"
        " catch (e) { errors.push(e.message) }"
        "[one.resultCount, one.result[0].userName, quoted.resultCount, doe.resultCount, errors]"))
    assert (count, name, quoted, surnames) == (1, "fdoe", 0, 2)
    assert "for-userName" in errors[0] and "uid" in errors[0]
    assert "no-such" in errors[1]
    assert "system/ldap/account" in errors[2] and "for-userName" in errors[2]


def test_validate_names_every_place_a_missing_script_was_looked_for(tmp_path: Path) -> None:
    """`idsync validate` reports a script file found nowhere with the project directory, its
    script/ directory and idsync's defaults, and exits 78."""
    import shutil

    from samples import SAMPLE

    project = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project / "conf")
    _edit_mapping(project, REVERSE, lambda m: m.__setitem__("onCreate", {"type": "text/javascript",
                                                                         "file": "script/naming.js"}))
    env = {"IDSYNC_LDAP_PASSWORD": "x"}
    proc = idsync(project, "validate", env=env)
    assert proc.returncode == 78
    assert f"looked in {project}/script/naming.js, {project}/script/script/naming.js, " in proc.stdout + proc.stderr
    (project / "script").mkdir()
    (project / "script" / "naming.js").write_text("target.dn = 'uid=' + source.userName;")
    assert idsync(project, "validate", env=env).returncode == 0


def test_api_change_runs_hooks_that_query_the_store(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A user created over the HTTP API is pushed through a mapping whose onCreate hook asks
    openidm.query how many users share the surname: the LDAP entry carries the answer."""
    from api_server import ADMIN, serve

    project = _project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")

    def counting(mapping: dict[str, Any]) -> None:
        mapping["onCreate"]["source"] += (
            " target.description = 'namesakes: ' + openidm.query('managed/user', "
            "{_queryFilter: 'sn eq \"' + source.sn + '\"'}).resultCount;")

    _edit_mapping(project, REVERSE, counting)
    with serve(project) as api:
        for user in ({**FDOE, "userName": "adoe"}, FDOE):
            created = api.post("/openidm/managed/user?_action=create", json=user,
                               headers={**ADMIN, "Content-Type": "application/json"})
            assert created.status_code == 201, created.text
    entry = ldap_entry(slapd, f"uid=fdoe,{ldap_subtree}")
    assert entry is not None and entry["description"] == ["namesakes: 2"]


def _entry_csn(slapd: Slapd, dn: str) -> str:
    """The entry's ``entryCSN``: it moves with every write, one of an unchanged value included."""
    return (ldap_entry(slapd, dn) or {})["entrycsn"][0]


@pytest.mark.parametrize("backend", SQL_STORES)
def test_a_password_the_directory_never_returns_is_written_again_only_when_it_changes(
        tmp_path: Path, slapd: Slapd, ldap_subtree: str, backend: str) -> None:
    """LDAP never returns ``__PASSWORD__``, so compared with the entry as read the projected
    password always differs. The link keeps a keyed digest of what was written: a recon with
    the same password writes nothing; a link without one (made before) writes it once; a new
    password is written by the next recon and then left alone. No digest is the password's hash."""
    from idsync.resource import WriteOp
    from idsync.resources import Resources
    from idsync.store.tables import links as lt
    from idsync.sync.options import ReconOptions
    from idsync.sync.recon import run_recon
    from sqlalchemy import update

    project = _project(tmp_path, slapd, ldap_subtree, store_url(backend, tmp_path))
    _edit_mapping(project, REVERSE, _decrypting)
    _edit_mapping(project, REVERSE, lambda m: m.pop("defaultTargetFields", None))
    provisioner = project / "conf" / "provisioner.openicf-ldap.json"
    config = json.loads(provisioner.read_text())  # as OpenIDM's sample5 declares a password
    config["objectTypes"]["account"]["properties"]["userPassword"]["flags"] = ["NOT_READABLE",
                                                                              "NOT_RETURNED_BY_DEFAULT"]
    provisioner.write_text(json.dumps(config))
    created = idsync(project, "managed", "create", "user", "--data", json.dumps({**FDOE, "password": SECRET}))
    assert created.returncode == 0, created.stderr
    user_id = json.loads(created.stdout)["_id"]
    dn = f"uid=fdoe,{ldap_subtree}"
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())

    def recon() -> dict[str, int]:
        result = run_recon(loaded, store, REVERSE, ReconOptions())
        assert result.state == "SUCCESS", result.message
        return dict(result.summary["changes"])

    def written() -> list[str | None]:
        with store.begin() as conn:
            # The reverse mapping keeps its links in the forward mapping's set, seen from the other side.
            return [r[0] for r in conn.execute(select(lt.c.written).where(lt.c.target_id == user_id))]

    try:
        (digest,) = written()  # implicit sync's create kept it
        assert digest is not None and len(digest) == 64 and SECRET not in digest
        before = _entry_csn(slapd, dn)
        assert recon()["updated"] == 0
        assert _entry_csn(slapd, dn) == before and can_bind(slapd, dn, SECRET)

        with store.begin() as conn:  # a link made before links kept the digest
            conn.execute(update(lt).where(lt.c.target_id == user_id).values(written=None))
        assert recon()["updated"] == 1
        assert written() == [digest]
        before = _entry_csn(slapd, dn)
        assert recon()["updated"] == 0 and _entry_csn(slapd, dn) == before

        # A new password set in the store without a push: the next recon writes it, once.
        resources = Resources(loaded, store)
        (done,) = resources.open("managed/user").write_batch([WriteOp("update", id=user_id,
                                                                      values={"password": "N3w-pw!y"})])
        assert done.ok, done.error
        assert recon()["updated"] == 1 and can_bind(slapd, dn, "N3w-pw!y") and not can_bind(slapd, dn, SECRET)
        assert written() != [digest]
        before = _entry_csn(slapd, dn)
        assert recon()["updated"] == 0 and _entry_csn(slapd, dn) == before

        # A change of another property pushed by implicit sync leaves the password alone.
        patched = idsync(project, "managed", "patch", "user", user_id, "--operations",
                         json.dumps([{"operation": "replace", "field": "/sn", "value": "Doe-Smith"}]))
        assert patched.returncode == 0, patched.stderr
        assert (ldap_entry(slapd, dn) or {})["sn"] == ["Doe-Smith"]
        audit = idsync(project, "status", "--json")
        assert audit.returncode == 0
        assert recon()["updated"] == 0 and can_bind(slapd, dn, "N3w-pw!y")

        # Asked for (the password was reset in the directory itself): written again, once.
        before = _entry_csn(slapd, dn)
        forced = idsync(project, "recon", REVERSE, "--rewrite-write-only", "--json")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["changes"]["updated"] == 1 and _entry_csn(slapd, dn) != before
        assert recon()["updated"] == 0
        # The same from a job file (a weekly safety net, say) and over the API.
        (project / "jobs.d").mkdir(exist_ok=True)
        (project / "jobs.d" / "passwords.toml").write_text(
            f'schedule = "0 0 3 ? * SUN"\nmappings = ["{REVERSE}"]\nrewrite_write_only = true\n')
        before = _entry_csn(slapd, dn)
        ran = idsync(project, "run-job", "passwords", "--json")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert _entry_csn(slapd, dn) != before and recon()["updated"] == 0
        before = _entry_csn(slapd, dn)
        with serve(project) as api:
            started = api.post(f"/openidm/recon?_action=recon&mapping={REVERSE}&rewriteWriteOnly=true"
                               "&waitForCompletion=true", headers=ADMIN)
            assert started.status_code == 200 and started.json()["state"] == "SUCCESS", started.text
            summary = api.get(f"/openidm/recon/{started.json()['_id']}", headers=ADMIN).json()
            assert summary["changes"]["updated"] == 1 and _entry_csn(slapd, dn) != before
            assert api.post(f"/openidm/recon?_action=recon&mapping={REVERSE}&rewriteWriteOnly=yes",
                            headers=ADMIN).status_code == 400
        assert recon()["updated"] == 0
    finally:
        store.close()


# OpenIDM's own scripts tell a failed call by its status: roles/postOperation-roles.js
# rethrows unless e.javaException.getCode() is 404, audit/autoPurgeAuditRecon.js looks for 400.
CAUGHT = """function code(call) {
  try { call(); return 'no failure'; }
  catch (e) { return [e.javaException.getCode(), e.javaException.code, e.javaException.getReason(), e.message]; }
}
[code(function () { openidm['delete']('managed/user/nobody', null); }),
 code(function () { openidm.create('managed/user', 'ann', {userName: 'ann2'}); }),
 code(function () { openidm.create('managed/user', null, {givenName: 'No name'}); }),
 code(function () { openidm.query('managed/user', {_queryFilter: 'userName eq'}); })]"""


@pytest.mark.parametrize("backend", SQL_STORES)
def test_a_failed_openidm_call_is_caught_with_its_status_as_in_pingidm(tmp_path: Path, backend: str) -> None:
    """A script that catches a failed ``openidm`` call reads its HTTP status as PingIDM's scripts
    do, from ``e.javaException`` (``getCode()``, the ``code`` bean property, ``getReason()``): 404
    for an object that is not there, 412 for a create of an id taken, 403 for a broken policy,
    400 for a filter that does not parse; the message is the error's."""
    from file_projects import file_project

    project = file_project(tmp_path, [], backend)
    _run_script(project, "openidm.create('managed/user', 'ann', {userName: 'ann'})._id")
    caught = _run_script(project, CAUGHT)
    assert [c[:3] for c in caught] == [[404, 404, "Not Found"], [412, 412, "Precondition Failed"],
                                       [403, 403, "Forbidden"], [400, 400, "Bad Request"]]
    assert "managed/user/nobody" in caught[0][3]
