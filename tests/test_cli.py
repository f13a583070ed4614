"""The ``idsync`` command as a user runs it: real binary, real slapd, SQLite store.
Every user error is one clear line on stderr and a meaningful exit code, never a
traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from idsync_dev.slapd import Slapd
from projects import MAPPING, ROOT, make_project, person

IDSYNC = str(Path(sys.executable).parent / "idsync")


def run(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["-p", str(project), *args], env={"IDSYNC_LOG__LEVEL": "warning", **(env or {})})


def assert_one_clean_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("idsync:")]
    assert lines, proc.stderr
    return lines[-1]


def slow_project(tmp_path: Path, slapd: Slapd, subtree: str, *, users: int, delay_ms: int) -> Path:
    """A project reading ``users`` entries one per page, each taking ``delay_ms`` in a transform."""
    slapd.add_ldif("".join(person(f"slow{i}", subtree) for i in range(users)))
    project = make_project(tmp_path, slapd, subtree, f"sqlite:///{tmp_path / 'state.db'}", page_size=1)
    conf = project / "conf"
    sync = json.loads((conf / "sync.json").read_text())
    sync["mappings"][0]["properties"].append({"source": "sn", "target": "description", "transform": {
        "type": "text/javascript", "source": f"var t = Date.now(); while (Date.now() - t < {delay_ms}) {{}} source"}})
    (conf / "sync.json").write_text(json.dumps(sync))
    return project


@pytest.fixture
def project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    slapd.add_ldif(person("bjensen", ldap_subtree, cn="Barbara Jensen") + person("scarter", ldap_subtree))
    return make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 'state.db'}")


def test_recon_then_status_json(project: Path) -> None:
    """`idsync recon` reconciles and `idsync status --json` shows the run with its counts."""
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == 0, proc.stderr
    assert "SUCCESS" in proc.stdout and "created 2" in proc.stdout
    status = run(project, "status", "--json")
    runs = json.loads(status.stdout)
    assert runs[0]["mapping"] == MAPPING and runs[0]["state"] == "SUCCESS"
    assert runs[0]["situationSummary"]["ABSENT"] == 2 and runs[0]["changes"]["created"] == 2
    one = json.loads(run(project, "status", runs[0]["_id"], "--json").stdout)
    assert {"progress", "situationSummary", "statusSummary", "durationSummary"} <= set(one)
    assert len(one["audit"]) == 2
    users = json.loads(run(project, "managed", "query", "user", "--filter", 'userName eq "bjensen"',
                           "--fields", "displayName").stdout)
    assert users[0]["displayName"] == "Barbara Jensen"
    got = json.loads(run(project, "managed", "get", "user", users[0]["_id"]).stdout)
    assert got["userName"] == "bjensen"
    status_file = json.loads((project / "state" / "status.json").read_text())
    assert MAPPING in json.dumps(status_file)


def test_dry_run_prints_what_it_would_do(project: Path) -> None:
    """`--dry-run` lists each would-be change and the store stays empty."""
    proc = run(project, "recon", MAPPING, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and proc.stdout.count("DRY_RUN") == 2
    assert json.loads(run(project, "managed", "query", "user").stdout) == []


def test_unknown_mapping(project: Path) -> None:
    """An unknown mapping name exits EX_CONFIG with the known names."""
    proc = run(project, "recon", "nope")
    assert proc.returncode == os.EX_CONFIG
    assert "unknown mapping 'nope'" in assert_one_clean_line(proc)


def test_unknown_managed_type(project: Path) -> None:
    """`idsync managed query` of a type managed.json does not define names the argument and the known types."""
    proc = run(project, "managed", "query", "nosuch")
    assert proc.returncode == os.EX_CONFIG
    assert ("command line: TYPE: managed/nosuch is not a managed object type "
            "(managed.json defines assignment, role, user)") in assert_one_clean_line(proc)


def test_bad_query_filter(project: Path) -> None:
    """A malformed --filter exits EX_DATAERR and says where."""
    proc = run(project, "managed", "query", "user", "--filter", 'userName eq "x" and')
    assert proc.returncode == os.EX_DATAERR
    assert "position" in assert_one_clean_line(proc)


def test_wrong_bind_password(project: Path) -> None:
    """A refused bind is EX_NOPERM, the run is recorded FAILED, the password is never printed."""
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    data = json.loads(prov.read_text())
    data["configurationProperties"]["credentials"] = "Wr0ng-Passw0rd"
    prov.write_text(json.dumps(data))
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == os.EX_NOPERM
    assert "Wr0ng-Passw0rd" not in proc.stdout + proc.stderr
    assert "FAILED" in assert_one_clean_line(proc)
    assert json.loads(run(project, "status", "--json").stdout)[0]["state"] == "FAILED"


def test_unreachable_ldap(project: Path) -> None:
    """A closed port is EX_UNAVAILABLE with the host and port in the message."""
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    data = json.loads(prov.read_text())
    data["configurationProperties"]["port"] = 1
    prov.write_text(json.dumps(data))
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == os.EX_UNAVAILABLE
    assert "127.0.0.1" in assert_one_clean_line(proc)
    assert run(project, "test").returncode == os.EX_UNAVAILABLE


def test_tls_certificate_mismatch(project: Path) -> None:
    """ldaps:// to a server whose certificate (from a trusted CA) names another host fails with
    EX_UNAVAILABLE and one line naming the certificate verification failure: a wrong port or TLS
    verification turned off would fail this test, not pass it."""
    with Slapd(tls=True, tls_names=("localhost",)) as other:
        prov = project / "conf" / "provisioner.openicf-ldap.json"
        data = json.loads(prov.read_text())
        data["configurationProperties"].update(ssl=True, port=other.ldaps_port, host="127.0.0.1",
                                               caFile=str(other.ca_file))
        prov.write_text(json.dumps(data))
        proc = run(project, "recon", MAPPING)
    assert proc.returncode == os.EX_UNAVAILABLE, proc.stderr
    line = assert_one_clean_line(proc)
    assert "certificate is not valid for 127.0.0.1" in line, line


def test_validate_reports_every_problem(tmp_path: Path, project: Path) -> None:
    """`idsync validate` prints file: key: problem for each bad file and exits EX_CONFIG."""
    conf = project / "conf"
    sync = json.loads((conf / "sync.json").read_text())
    m = sync["mappings"][0]
    m["policies"].append({"situation": "FOUNDD", "action": "UPDATE"})
    m["properties"].append({"source": "cn", "target": "x", "transform": {"type": "text/groovy", "source": "1"}})
    (conf / "sync.json").write_text(json.dumps(sync, indent=2))
    (conf / "mapping-broken.json").write_text('{"name": "broken", "source": "managed/user",\n "target": }')
    (conf / "mapping-badscript.json").write_text(json.dumps({
        "source": "managed/user", "target": "system/ldap/account",
        "properties": [{"source": "sn", "target": "sn", "transform": {"type": "text/javascript",
                                                                      "source": "source +* 1"}}]}))
    (conf / "mapping-badfilter.json").write_text(json.dumps({
        "source": "managed/user", "target": "system/ldap/account", "sourceCondition": "/userName eq"}))
    proc = run(project, "validate")
    assert proc.returncode == os.EX_CONFIG
    out = proc.stdout
    assert "mapping-broken.json: line 2" in out
    assert "policies" in out and "FOUNDD" in out
    assert "text/groovy" in out
    assert "mapping-badscript.json: properties[0].transform" in out
    assert "mapping-badfilter.json: sourceCondition" in out


def test_script_timeout_fails_the_object_not_the_run(project: Path) -> None:
    """A transform stuck in a loop times out for each object; the run still ends and reports it."""
    conf = project / "conf"
    sync = json.loads((conf / "sync.json").read_text())
    sync["mappings"][0]["properties"].append(
        {"source": "sn", "target": "description", "transform": {"type": "text/javascript",
                                                                "source": "while (true) {}"}})
    (conf / "sync.json").write_text(json.dumps(sync))
    (conf / "idsync.toml").write_text((conf / "idsync.toml").read_text() + "[scripts]\ntime_limit = 0.2\n")
    proc = run(project, "recon", MAPPING, "--json")
    summary = json.loads(proc.stdout)
    assert summary["statusSummary"]["FAILURE"] == 2
    assert "time" in summary["errors"][0]["message"].lower()
    # `idsync status RUN` lists each object's error with its ids (it printed none, or only the last).
    (last, *_) = json.loads(run(project, "status", "--json").stdout)
    shown = run(project, "status", last["_id"]).stdout
    assert "errors (2):" in shown, shown
    lines = [line for line in shown.splitlines() if line.startswith("    - ")]
    assert len(lines) == 2 and all("source_id=" in line and "time" in line.lower() for line in lines), shown


def test_ctrl_c_cancels_at_a_page_boundary(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """SIGINT during `idsync recon` stops it at the next page and records the run CANCELED."""
    import signal
    import time

    project = slow_project(tmp_path, slapd, ldap_subtree, users=60, delay_ms=300)
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "recon", MAPPING, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "IDSYNC_LOG__LEVEL": "warning"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = json.loads(run(project, "status", "--json").stdout or "[]")
        if runs and runs[0]["state"] == "ACTIVE" and runs[0]["progress"]["source"]["existing"]["processed"]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = json.loads(run(project, "status", "--json").stdout)[0]
    assert last["state"] == "CANCELED"
    assert last["progress"]["source"]["existing"]["processed"] < 60


def test_test_command_reports_each_system(project: Path) -> None:
    """`idsync test` connects to every system and says ok, or FAILED with the reason,
    and which server answers (OpenLDAP, from its root DSE)."""
    proc = run(project, "test")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ldap: ok (OpenLDAP)"
    report = json.loads(run(project, "test", "--json").stdout)
    assert report[0]["name"] == "ldap" and report[0]["ok"] is True


@pytest.mark.parametrize(("file", "text", "where"), [
    ("sync.json", '{"mappings": [\n  {"name": "x",}\n]}', ("sync.json: line 2 column",)),
    ("managed.json", '{"objects": [}', ("managed.json: line 1 column",)),
    ("idsync.toml", 'state_dir = "state"\n[store\n', ("idsync.toml: not valid TOML", "line 2")),
])
def test_malformed_files_are_one_line_with_the_place(project: Path, file: str, text: str,
                                                     where: tuple[str, ...]) -> None:
    """Malformed JSON or TOML stops a recon with EX_CONFIG and one line naming the file
    and line; `idsync status` needs only the settings, so a broken mapping file does not hide the runs."""
    assert run(project, "recon", MAPPING).returncode == 0  # a run to show
    (project / "conf" / file).write_text(text)
    proc = run(project, "recon", MAPPING)
    assert proc.returncode == os.EX_CONFIG, proc.stderr
    line = assert_one_clean_line(proc)
    assert all(w in line for w in where), line
    status = run(project, "status")
    assert status.returncode == (os.EX_CONFIG if file == "idsync.toml" else 0), status.stderr


def test_status_lists_runs_with_their_counts(project: Path) -> None:
    """`idsync status` shows each run's state, times, situations, actions and changes."""
    assert run(project, "recon", MAPPING).returncode == 0
    assert run(project, "recon", MAPPING).returncode == 0
    out = run(project, "status", env={"COLUMNS": "200"}).stdout  # the table layout; narrower gets blocks
    header, newest, oldest = out.splitlines()[:3]
    assert header.split() == ["run", "mapping", "state", "started", "ended", "duration", "situations", "actions",
                              "changes", "errors"]
    assert "SUCCESS" in newest and "CONFIRMED 2" in newest and "UPDATE 2" in newest and "unchanged 2" in newest
    assert "ABSENT 2" in oldest and "CREATE 2" in oldest and "created 2" in oldest


def test_logs_are_json_events_when_not_a_terminal(project: Path) -> None:
    """Off a terminal, `idsync recon` logs JSON lines: one start and one end event with
    the counts, and progress events, and stays off stdout."""
    proc = run(project, "recon", MAPPING, "--json", env={"IDSYNC_LOG__LEVEL": "info"})
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names.count("recon.start") == 1 and names.count("recon.end") == 1 and "recon.progress" in names
    end = next(e for e in events if e["event"] == "recon.end")
    assert end["state"] == "SUCCESS" and end["changes"] == {"created": 2, "linked": 2}
    assert all({"timestamp", "level", "logger"} <= set(e) for e in events)
    assert json.loads(proc.stdout)["state"] == "SUCCESS"


def test_live_progress_on_a_terminal(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """On a terminal `idsync recon` shows a live line with the phase, the objects
    processed and the rate, and logs no progress events there."""
    import pty

    project = slow_project(tmp_path, slapd, ldap_subtree, users=8, delay_ms=150)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([IDSYNC, "-p", str(project), "--log-level", "warning", "recon", MAPPING],
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL, text=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    assert f"{MAPPING} [source]" in text and "objects" in text and "/s" in text, text
    assert "recon.progress" not in text
    assert "created 8" in out


def test_validate_checks_connector_settings_and_jobs(project: Path) -> None:
    """`idsync validate` also lets each connector read its settings (without connecting)
    and reads the job files."""
    prov = project / "conf" / "provisioner.openicf-ldap.json"
    data = json.loads(prov.read_text())
    data["configurationProperties"].update(ssl=True, startTLS=True)
    prov.write_text(json.dumps(data))
    jobs = project / "jobs.d"
    jobs.mkdir(exist_ok=True)
    (jobs / "nightly.toml").write_text('schedule = "0 2 * * *"\nmappings = ["systemLdapAccounts_managedUser"]\n')
    proc = run(project, "validate")
    assert proc.returncode == os.EX_CONFIG
    assert "provisioner.openicf-ldap.json: configurationProperties.startTLS: cannot be used with ssl" in proc.stdout
    data["configurationProperties"].update(ssl=False, startTLS=False)
    prov.write_text(json.dumps(data))
    (jobs / "broken.toml").write_text('schedule = "whenever"\nmappings = ["systemLdapAccounts_managedUser"]\n')
    proc = run(project, "validate")
    assert proc.returncode == os.EX_CONFIG
    (line,) = proc.stdout.splitlines()
    assert "jobs.d/broken.toml: schedule" in line
    (jobs / "broken.toml").unlink()
    assert run(project, "validate").returncode == 0


def test_commands_do_not_load_the_http_stack() -> None:
    """``idsync recon`` and the other commands start without importing Starlette,
    uvicorn or argon2: only ``idsync run`` with ``[api]`` enabled needs them."""
    probe = ("import sys, idsync.cli; "
             "print(sorted(m for m in ('starlette', 'uvicorn', 'argon2', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_loads_no_store_nor_logging_code() -> None:
    """``idsync --help`` answers without importing SQLAlchemy, pydantic or structlog (with
    the rich it loads): a tenth of a second or more each, for a page of text."""
    probe = ("import sys; from idsync.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
             "print([m for m in ('sqlalchemy', 'pydantic', 'structlog', 'rich') if m in sys.modules], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "usage: idsync" in proc.stdout
    assert proc.stderr.strip() == "[]", proc.stderr


def test_validate_loads_neither_the_store_nor_the_api_code(tmp_path: Path) -> None:
    """``idsync validate`` of a project with the default SQLite store and no ``[api]``
    checks it without importing SQLAlchemy or Starlette (a tenth of a second each, at
    every run): it opens no store and serves nothing."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    probe = ("import sys; from idsync.cli import main; code = main(['-p', sys.argv[1], 'validate']); "
             "print(code, [m for m in ('sqlalchemy', 'starlette', 'uvicorn') if m in sys.modules], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "IDSYNC_LDAP_PASSWORD": "secret"})
    assert proc.stderr.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr


def _logged_project(tmp_path: Path, log: str) -> Path:
    """A store-only project (a mapping of ``managed/staff`` onto ``managed/user``, one
    staff member) whose ``conf/idsync.toml`` ends with ``log``."""
    from store_projects import CREATE_UPDATE, store_project

    project = store_project(tmp_path, {"user": {"userName": {"type": "string"}},
                                       "staff": {"login": {"type": "string"}}},
                            [{"name": "staff_user", "source": "managed/staff", "target": "managed/user",
                              "policies": CREATE_UPDATE, "properties": [{"source": "login", "target": "userName"}]}])
    toml = project / "conf" / "idsync.toml"
    toml.write_text(toml.read_text() + log)
    made = run_cli(["-p", str(project), "managed", "create", "staff", "--data", '{"login": "ann"}'], env={})
    assert made.returncode == 0, made.stderr
    return project


def _events(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [json.loads(line)["event"] for line in proc.stderr.splitlines() if line.startswith("{")]


def test_log_level_comes_from_the_option_then_the_environment_then_the_settings(tmp_path: Path) -> None:
    """``[log] level = "warning"`` in ``conf/idsync.toml`` silences a recon's info events
    (``recon.start``, ``recon.end``); ``IDSYNC_LOG__LEVEL`` overrides the file and
    ``--log-level`` overrides both. ``[log] format`` is taken likewise."""
    project = _logged_project(tmp_path, '[log]\nlevel = "warning"\nformat = "json"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}

    def recon(*options: str, **variables: str) -> list[str]:
        proc = run_cli(["-p", str(project), *options, "recon", "staff_user", "--quiet"],
                       env={**env, **variables}, inherit_env=False)
        assert proc.returncode == 0, proc.stderr
        return _events(proc)

    assert recon() == []
    assert "recon.start" in recon(IDSYNC_LOG__LEVEL="info")
    assert recon("--log-level", "warning", IDSYNC_LOG__LEVEL="info") == []
    assert "recon.end" in recon("--log-level", "info")
    (project / "conf" / "idsync.toml").write_text((project / "conf" / "idsync.toml").read_text()
                                                  .replace('"warning"', '"info"'))
    assert {"recon.start", "recon.end"} <= set(recon())


def test_an_unreadable_settings_file_is_reported_by_the_command(tmp_path: Path) -> None:
    """A ``conf/idsync.toml`` that does not parse, or holds an unknown setting, is read for
    the log settings before the command runs: the command still reports it, in one line
    naming the file, and exits 78."""
    project = _logged_project(tmp_path, "")
    toml = project / "conf" / "idsync.toml"
    for text in ("[log\nlevel = 1\n", '[log]\nlevle = "debug"\n'):
        toml.write_text(text)
        proc = run(project, "recon", "staff_user")
        assert proc.returncode == 78, proc.stderr
        assert "idsync.toml" in assert_one_clean_line(proc)


def test_a_foreground_command_run_in_process_leaves_the_processs_signal_handlers(tmp_path: Path) -> None:
    """A recon run by ``run_cli`` in this process takes SIGTERM and SIGHUP as Ctrl-C while it
    runs (``cli/__init__.py``), as in a process of its own; the test's process gets its own
    handlers back after, so a later signal to it is not a KeyboardInterrupt anywhere."""
    import signal

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    result = run_cli(["-p", str(tmp_path), "recon", "no-such-mapping"])
    assert result.returncode != 0 and "no-such-mapping" in result.stderr, result
    assert {sig: signal.getsignal(sig) for sig in before} == before
