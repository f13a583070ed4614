"""The ``idsync`` command line as an operator meets it: exit codes from the README's
table, read-only commands that never create a store, a status file that cannot be
written, run ids by prefix, failed runs with their reason, names kept whole on an
80-column terminal, the demo run twice. Real binary, real slapd, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from cli_runner import run_cli
from dbs import store_url
from idsync.config.project import load_project
from idsync.status_file import update_status_file
from idsync.store.database import Store
from idsync.store.runs import RunStore
from idsync_dev.slapd import Slapd
from projects import MAPPING, make_project, person
from sqlalchemy import inspect

IDSYNC = str(Path(sys.executable).parent / "idsync")
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def run(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["-p", str(project), *args], env={"IDSYNC_LOG__LEVEL": "warning", "COLUMNS": "200", **(env or {})})


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("idsync:")]
    assert lines, proc.stderr
    return lines[-1]


@pytest.fixture(params=STORES)
def project(request: pytest.FixtureRequest, tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    slapd.add_ldif(person("bjensen", ldap_subtree) + person("scarter", ldap_subtree))
    return make_project(tmp_path, slapd, ldap_subtree, store_url(request.param, tmp_path))


def _provisioner(project: Path, **changes: object) -> None:
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    data = json.loads(prov.read_text())
    data["configurationProperties"].update(changes)
    prov.write_text(json.dumps(data))


# -- the status file ---------------------------------------------------------------


def test_unwritable_status_file_leaves_a_successful_recon_successful(project: Path, tmp_path: Path) -> None:
    """A status file that cannot be written (a directory stands at its path) is a
    ``status_file.failed`` warning: the recon still exits 0 and prints its summary."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    proc = run(project, "recon", MAPPING, env={"IDSYNC_STATUS_FILE": str(blocked)})
    assert proc.returncode == 0, proc.stderr
    assert "SUCCESS" in proc.stdout and "created 2" in proc.stdout
    assert "status_file.failed" in proc.stderr and "Traceback" not in proc.stderr


def test_daemon_state_reaches_the_status_file_when_the_store_is_gone(project: Path) -> None:
    """When the store is unavailable at the daemon's exit, the ``stopped`` state is still written
    over the previous document, so the file does not describe a dead daemon as running."""
    assert run(project, "recon", MAPPING).returncode == 0
    loaded = load_project(project)
    status = project / "state" / "status.json"
    store = Store.open(loaded.settings.store_url())
    update_status_file(loaded, store, daemon={"pid": 1, "state": "running"})
    assert json.loads(status.read_text())["daemon"]["state"] == "running"
    gone = Store.open("postgresql+psycopg://postgres@127.0.0.1:1/gone", migrate=False)
    with structlog.testing.capture_logs() as logs:
        assert update_status_file(loaded, gone, daemon={"pid": 1, "state": "stopped"}) == status
    # Why, in the driver's first line: not SQLAlchemy's pointer to its web pages.
    told = [e for e in logs if e["event"].startswith("status_file.")]
    assert told and all("sqlalche.me" not in str(e.get("error")) for e in told), told
    written = json.loads(status.read_text())
    assert written["daemon"]["state"] == "stopped" and MAPPING in written["mappings"]


# -- read-only commands ------------------------------------------------------------


@pytest.mark.parametrize("command", [("status",), ("status", "abc"), ("jobs",), ("mappings",), ("validate",),
                                     ("managed", "query", "user"), ("managed", "get", "user", "x"),
                                     ("system", "query", "ldap", "account"), ("prune",)])
def test_read_only_commands_in_an_empty_directory(tmp_path: Path, command: tuple[str, ...]) -> None:
    """A command that only reads, run where there is no project, creates nothing (no store, no
    ``state/``), names the directory it looked in and exits 78."""
    proc = run(tmp_path, *command)
    assert proc.returncode == os.EX_CONFIG, proc.stdout + proc.stderr
    assert str(tmp_path) in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_read_only_commands_never_create_the_store(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """In a project that has not run yet, ``status`` and ``managed query`` name the store they
    looked for and exit 78; ``jobs`` lists the schedules (the install steps run it before the
    daemon ever ran), with no last run; none leaves a SQLite file or ``state/`` behind."""
    project = make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 'project' / 'state' / 'i.db'}")
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "nightly.toml").write_text(
        'schedule = "@daily"\nmappings = ["systemLdapAccounts_managedUser"]\n')
    for command in (("status",), ("managed", "query", "user")):
        proc = run(project, *command)
        assert proc.returncode == os.EX_CONFIG, proc.stderr
        assert str(project / "state" / "i.db") in one_line(proc)
    listed = run(project, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(j["name"], j["lastRun"]) for j in json.loads(listed.stdout)["jobs"]] == [("nightly", None)]
    assert not (project / "state").exists()


@pytest.mark.postgresql
def test_read_only_commands_never_create_tables(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """On a PostgreSQL database without idsync's tables, ``status`` exits 78 and creates none."""
    url = store_url("postgresql", tmp_path, empty=True)
    project = make_project(tmp_path, slapd, ldap_subtree, url)
    proc = run(project, "status")
    assert proc.returncode == os.EX_CONFIG and "holds no idsync tables" in one_line(proc)
    store = Store.open(url, migrate=False)
    try:
        assert not inspect(store.engine).has_table("recon_runs")
    finally:
        store.close()


# -- exit codes --------------------------------------------------------------------


def test_idsync_test_exit_codes(project: Path, slapd: Slapd) -> None:
    """``idsync test``: 0 when it connects, 77 for refused credentials, 78 for a base context
    the server does not have (it answered: a configuration error), 69 when unreachable."""
    assert run(project, "test").returncode == 0
    _provisioner(project, credentials="Wr0ng-Passw0rd")
    refused = run(project, "test")
    assert refused.returncode == os.EX_NOPERM and "Wr0ng-Passw0rd" not in refused.stdout + refused.stderr
    _provisioner(project, credentials=slapd.admin_password, baseContextsToSynchronize=[f"ou=nope,{slapd.base_dn}"])
    assert run(project, "test").returncode == os.EX_CONFIG
    _provisioner(project, port=1)
    assert run(project, "test").returncode == os.EX_UNAVAILABLE


def test_missing_base_context_is_a_configuration_error(project: Path, slapd: Slapd) -> None:
    """A recon whose base context does not exist exits 78 (not 69, "unreachable"), names the base."""
    _provisioner(project, baseContexts=[f"ou=nope,{slapd.base_dn}"])
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == os.EX_CONFIG, proc.stderr
    assert "base context does not exist" in one_line(proc)


@pytest.mark.parametrize("url", ["postgresql+psycopg://nosuchrole:pw-Secret1@127.0.0.1:5432/test",
                                 "mysql+pymysql://root:pw-Secret1@127.0.0.1:3306/test"])
def test_refused_store_credentials_exit_77(tmp_path: Path, slapd: Slapd, ldap_subtree: str, url: str) -> None:
    """A database that refuses idsync's account exits 77 (credentials refused), not 69, and the
    password is not printed."""
    kind = "postgresql" if url.startswith("postgresql") else "mariadb"
    store_url(kind, tmp_path)  # the server is up (or the test skips, or fails under CI)
    project = make_project(tmp_path, slapd, ldap_subtree, url)
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == os.EX_NOPERM, proc.stderr
    assert "credentials refused" in one_line(proc) and "pw-Secret1" not in proc.stdout + proc.stderr


# -- idsync status -----------------------------------------------------------------


def test_status_shows_failed_runs_with_their_reason(project: Path) -> None:
    """A FAILED run counts its failure in the errors column and the listing says why."""
    _provisioner(project, port=1)
    assert run(project, "recon", MAPPING).returncode == os.EX_UNAVAILABLE
    out = run(project, "status").stdout
    row = out.splitlines()[1]
    assert "FAILED" in row and row.split()[-1] == "1", out
    assert any(line.startswith(f"run {row.split()[0]} FAILED: ") and "127.0.0.1:1" in line
               for line in out.splitlines()), out


def test_status_accepts_the_short_run_id(project: Path) -> None:
    """The 8 characters ``idsync status`` prints find the run; an unknown id exits 66."""
    assert run(project, "recon", MAPPING).returncode == 0
    short = run(project, "status").stdout.splitlines()[1].split()[0]
    assert len(short) == 8
    one = run(project, "status", short, "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["_id"].startswith(short)
    assert run(project, "status", "zzzzzzzz").returncode == os.EX_NOINPUT


def test_status_ambiguous_run_id_lists_the_candidates(project: Path) -> None:
    """A prefix two runs share is a usage error (64) listing both full ids; one more
    character picks the run."""
    assert run(project, "recon", MAPPING).returncode == 0  # creates the store
    store = Store.open(load_project(project).settings.store_url())
    runs = RunStore(store)
    ids = ["abcd0001-0000-4000-8000-000000000000", "abcd0002-0000-4000-8000-000000000000"]
    for run_id in ids:
        runs.start(run_id, MAPPING, job=None, dry_run=False, summary={})
        runs.finish(run_id, "SUCCESS", "COMPLETED", {}, None)
    store.close()
    proc = run(project, "status", "abcd")
    assert proc.returncode == os.EX_USAGE, proc.stderr
    line = one_line(proc)
    assert "ambiguous" in line and all(i in line for i in ids)
    one = run(project, "status", "abcd0002", "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["_id"] == ids[1]


def test_status_and_jobs_keep_names_whole_at_80_columns(project: Path) -> None:
    """At COLUMNS=80 (as parallel test workers export) ``status`` and ``jobs`` print every
    mapping and job name whole, never cut with an ellipsis."""
    jobs = project / "jobs.d"
    jobs.mkdir()
    (jobs / "a-rather-long-job-name-for-testing.toml").write_text(
        f'description = "x"\nschedule = "0 0 * * * ?"\nmappings = ["{MAPPING}"]\n')
    assert run(project, "recon", MAPPING).returncode == 0
    narrow = {"COLUMNS": "80"}
    status = run(project, "status", env=narrow)
    assert status.returncode == 0 and MAPPING in status.stdout and "…" not in status.stdout, status.stdout
    listed = run(project, "jobs", env=narrow)
    assert listed.returncode == 0, listed.stderr
    assert "a-rather-long-job-name-for-testing" in listed.stdout and MAPPING in listed.stdout, listed.stdout
    assert all(len(line) <= 80 for line in status.stdout.splitlines() + listed.stdout.splitlines())
    # Times name their zone: the machine's for runs (TZ), the job's own for fires.
    in_paris = run(project, "status", env={"COLUMNS": "200", "TZ": "Europe/Paris"}).stdout
    assert re.search(r"\d\d:\d\d:\d\d CES?T", in_paris), in_paris


# -- a run where every object fails ------------------------------------------------


def test_a_run_where_every_object_fails_is_failed(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Every object failing (a transform that throws for each) makes the run FAILED, exit 1,
    with the count and the first error, not a SUCCESS with errors."""
    slapd.add_ldif(person("afail", ldap_subtree) + person("bfail", ldap_subtree))
    project = make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 'state.db'}")
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    sync["mappings"][0]["properties"].append(
        {"source": "sn", "target": "description", "transform": {"type": "text/javascript", "source": "throw 'boom'"}})
    sync_file.write_text(json.dumps(sync))
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    runs = json.loads(run(project, "status", "--json").stdout)
    assert runs[0]["state"] == "FAILED" and "every object failed (2 errors" in runs[0]["message"]


# -- the demo ----------------------------------------------------------------------


@pytest.mark.slapd
def test_recon_demo_twice_in_the_same_checkout(tmp_path: Path) -> None:
    """``make recon-demo`` run twice: each run starts from its own empty store (a new slapd has
    new entryUUIDs), so the second run creates every user again instead of failing them all;
    the project's own store is never created."""
    root = tmp_path / "project"
    (root / "conf").mkdir(parents=True)
    for f in (Path(__file__).resolve().parent.parent / "conf").iterdir():
        (root / "conf" / f.name).write_text(f.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}
    env.update(IDSYNC_PROJECT=str(root), IDSYNC_DEMO_USERS="5", COLUMNS="200", IDSYNC_LOG__LEVEL="warning",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent / "devtools"))
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "idsync_dev.recon_demo"], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "created 5" in proc.stdout and "FAILED" not in proc.stdout, proc.stdout
    assert not (root / "state" / "idsync.db").exists()
    runs = json.loads(run(root / "state" / "recon-demo", "status", "--json").stdout)
    assert len(runs) == 1 and runs[0]["state"] == "SUCCESS"


def test_a_runs_ambiguous_entry_names_its_candidates(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``idsync status RUN`` shows an AMBIGUOUS entry with the targets its correlation
    found, the ids one of which is to be linked by hand."""
    from idsync.cli.render import render_audit

    monkeypatch.setenv("COLUMNS", "300")  # one line, whatever terminal the tests run under

    render_audit([{"status": "FAILURE", "situation": "AMBIGUOUS", "action": "EXCEPTION", "source_id": "uid=e1",
                   "target_id": None, "message": "AMBIGUOUS: correlation found 2 targets",
                   "ambiguous": ["id-a", "id-b"], "link_qualifier": "default"}])
    shown = capsys.readouterr().out
    assert "source_id=uid=e1 candidates=id-a,id-b" in shown and "found 2 targets" in shown


def test_a_runs_entries_are_shown_as_written_brackets_and_all(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``idsync status RUN`` prints each object's message and ids literally: a script's error
    naming ``managed/<type>[/<id>]`` (a task scanner's ``openidm.create`` of a workflow) is
    neither a crash of the command nor shown with parts missing, nor is a value in brackets."""
    from idsync.cli.render import render_audit

    monkeypatch.setenv("COLUMNS", "300")
    message = ("conf/schedule-taskscan_sunrise.json: invokeContext.task.script (script/sunrise.js): Error: "
               "openidm.create workflow/processinstance: idsync's scripts reach managed/<type>[/<id>] only")
    render_audit([{"status": "FAILURE", "situation": None, "action": None, "source_id": "row[3]",
                   "target_id": None, "message": message, "link_qualifier": "default"},
                  {"status": "FAILURE", "situation": "ABSENT", "action": "CREATE", "source_id": "uid=e2",
                   "target_id": None, "message": "description: [bold] and [x=1] are not allowed",
                   "link_qualifier": "default"}])
    shown = capsys.readouterr().out
    assert "managed/<type>[/<id>] only" in shown and "source_id=row[3]" in shown
    assert "description: [bold] and [x=1] are not allowed" in shown


def test_a_failed_push_of_a_roles_member_names_the_member(tmp_path: Path) -> None:
    """A role changed on the command line pushes its members; one that fails is named as
    the user it is (``managed/user/ID``), after the role that changed, not as a role."""
    from idsync.config.managed import DEFAULT_MANAGED

    from samples import idsync

    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    managed["objects"].append({"name": "account", "schema": {"properties": {
        "login": {"type": "string"}, "roleIds": {"type": "array"}}}})
    refuse = "if (source && source.length) { throw 'no roles here'; } []"
    mapping = {"name": "user_account", "source": "managed/user", "target": "managed/account",
               "properties": [{"source": "userName", "target": "login"},
                              {"source": "effectiveRoles", "target": "roleIds",
                               "transform": {"type": "text/javascript", "source": refuse}}],
               "policies": [{"situation": "ABSENT", "action": "CREATE"},
                            {"situation": "CONFIRMED", "action": "UPDATE"}]}
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "managed.json").write_text(json.dumps(managed))
    (conf / "sync.json").write_text(json.dumps({"mappings": [mapping]}))
    project = tmp_path / "p"
    made = idsync(project, "managed", "create", "user", "--id", "u1", "--data",
                  json.dumps({"userName": "u1", "sn": "One", "mail": "u1@example.com"}))
    assert made.returncode == 0, made.stderr
    assert idsync(project, "managed", "create", "role", "--id", "r1", "--data", '{"name": "r1"}').returncode == 0
    granted = idsync(project, "managed", "patch", "role", "r1", "--operations", json.dumps(
        [{"operation": "add", "field": "/members/-", "value": {"_ref": "managed/user/u1"}}]))
    assert granted.returncode == os.EX_TEMPFAIL, granted.stdout + granted.stderr
    assert "idsync: managed/role/r1 is saved, but implicit sync of managed/user/u1, which it changes, through " \
           "user_account failed" in granted.stderr, granted.stderr
    assert "no roles here" in granted.stderr and "managed/role/u1" not in granted.stderr


def test_values_the_store_cannot_hold_are_bad_data(tmp_path: Path) -> None:
    """A NUL character in a value, or an id longer than the store's, exits 65 (EX_DATAERR:
    fix the data), as a policy failure does, not 1 (a run that failed)."""
    from samples import idsync

    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "sync.json").write_text(json.dumps({"mappings": []}))
    project = tmp_path / "p"
    nul = idsync(project, "managed", "create", "user", "--data", '{"userName": "x\\u0000y"}')
    assert nul.returncode == os.EX_DATAERR, nul.stdout + nul.stderr
    assert "the value at /userName contains a NUL character, which the store cannot hold" in nul.stderr
    long_id = idsync(project, "managed", "create", "user", "--id", "i" * 65, "--data", '{"userName": "z"}')
    assert long_id.returncode == os.EX_DATAERR, long_id.stdout + long_id.stderr
    assert "an _id is at most 64 characters; this one has 65" in long_id.stderr
    assert json.loads(idsync(project, "managed", "query", "user").stdout) == []


def test_values_out_of_range_are_usage_errors_and_names_never_paths(tmp_path: Path) -> None:
    """A negative ``--next`` (it looped for good), a page size under 1 (a recon spun holding
    its mapping's lock), a ``--max-deletes`` that does not parse and a negative ``--days``
    are usage errors (2); ``--data @FILE`` that cannot be read is bad data (65) naming the
    file; ``run-job`` with a path (``../x``, which ran a file from outside jobs.d/) or a
    name too long for a file is "no such job" (78), never an internal error."""
    from samples import idsync

    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "sync.json").write_text(json.dumps({"mappings": []}))
    (tmp_path / "p" / "jobs.d").mkdir()
    (tmp_path / "outside.toml").write_text('schedule = "@daily"\nmappings = []\n')
    project = tmp_path / "p"
    for args in (("jobs", "--next", "-1"), ("recon", "m", "--page-size", "-5"), ("recon", "m", "--page-size", "0"),
                 ("livesync", "system/x/y", "--page-size", "0"), ("recon", "m", "--max-deletes", "abc"),
                 ("recon", "m", "--max-deletes", "150%"), ("prune", "--days", "-1"),
                 ("managed", "query", "user", "--limit", "-1")):
        done = idsync(project, *args)
        assert done.returncode == 2, (args, done.returncode, done.stderr)
    done = idsync(project, "prune", "--days", "0")
    assert done.returncode == 2 and "expected 1 to 36 500, not 0" in done.stderr, done.stderr
    for data in ("@" + str(tmp_path / "nonexistent.json"), "@", "@" + str(tmp_path)):
        done = idsync(project, "managed", "create", "user", "--data", data)
        assert done.returncode == os.EX_DATAERR and "--data" in done.stderr, (data, done.returncode, done.stderr)
        assert "internal error" not in done.stderr
    for name in ("../outside", "../../outside", "a" * 100_000):
        done = idsync(project, "run-job", name, "--dry-run")
        assert done.returncode == os.EX_CONFIG and "no such job" in done.stderr, (name[:20], done.stderr[:300])


def test_a_store_file_that_is_not_a_database_is_unavailable_for_every_command(tmp_path: Path) -> None:
    """A store file holding anything but a SQLite database: the commands that write say so
    and exit 69, as those that read did, instead of an internal error (70)."""
    from samples import idsync

    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (tmp_path / "s.db").write_text("garbage, not a database\n")
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "sync.json").write_text(json.dumps({"mappings": [
        {"name": "m", "source": "managed/user", "target": "managed/role", "properties": []}]}))
    for args in (("recon", "m"), ("sync", "retry"), ("status",)):
        done = idsync(tmp_path / "p", *args)
        assert done.returncode == os.EX_UNAVAILABLE, (args, done.returncode, done.stderr)
        assert "store: cannot open the database: file is not a database" in done.stderr, done.stderr


def test_unlock_needs_a_project_and_makes_no_store(tmp_path: Path) -> None:
    """``unlock`` where there is no project is an error (78), as for every command; in a
    project where nothing has run, nothing is locked and no store is made."""
    from samples import idsync

    nowhere = idsync(tmp_path / "empty", "unlock", "m", "--yes")
    assert nowhere.returncode == os.EX_CONFIG and "no idsync project here" in nowhere.stderr, nowhere.stderr
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "sync.json").write_text(json.dumps({"mappings": []}))
    fresh = idsync(tmp_path / "p", "unlock", "m", "--yes")
    assert fresh.returncode == 0 and "m: not locked" in fresh.stdout, fresh.stdout + fresh.stderr
    assert not (tmp_path / "s.db").exists()


def test_a_system_query_that_cannot_read_prints_no_json_fragment(tmp_path: Path) -> None:
    """``system query`` of a directory that is down exits 69 with nothing on stdout (it
    printed a lone ``[``, which no JSON reader takes)."""
    import shutil

    from samples import idsync

    project = tmp_path / "p"
    shutil.copytree(Path(__file__).resolve().parent.parent / "conf", project / "conf")
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    done = idsync(project, "system", "query", "ldap", "account", "--filter", "true",
                  env={"IDSYNC_LDAP_HOST": "127.0.0.1", "IDSYNC_LDAP_PORT": "1", "IDSYNC_LDAP_PASSWORD": "x"})
    assert done.returncode == os.EX_UNAVAILABLE, (done.returncode, done.stderr)
    assert done.stdout == "", done.stdout
