"""The console without a browser: Save keeps the rest of a job file and its comments,
refuses a broken job before writing, swaps the file in atomically; PingIDM schedules
are edited as JSON; sessions end when idle; pages render, cookies are Secure under
TLS, and failed console logins count under the API's limit; a system's connection
settings are kept encrypted, never shown, and refused with nothing written when bad."""

from __future__ import annotations

import asyncio
import html
import json
import os
import shutil
import ssl
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from idsync.config.jobs import load_jobs
from idsync.config.pingidm_schedules import load_all_jobs
from idsync.console.jobfile import create_job, edit_toml, job_file, remove_job, save_job
from idsync.console.session import Sessions
from idsync.errors import ConfigError, ConfigWarning
from idsync_dev.slapd import Slapd

MAPPING = "systemLdapAccounts_managedUser"
TEXT = f"""# Nightly.
description = "Nightly"  # shown in the console
schedule = '0 0 * * * ?'           # every hour
mappings = ["{MAPPING}"]
enabled = true
"""


def _dirs(jobs_dir: Path) -> dict[str, Path]:
    """The job sources beside a job file of ``jobs_dir``: that directory, and a ``conf/`` in it."""
    return {"jobs_dir": jobs_dir, "conf_dir": jobs_dir / "conf"}


def test_edit_keeps_comments_and_appends_missing_keys() -> None:
    """Each changed value is replaced on its own line, its comment kept; a key the file
    lacks is added; nothing else moves."""
    new = edit_toml(TEXT, {"schedule": "0 30 2 * * ?", "enabled": False, "timezone": "Europe/Stockholm"})
    assert new.splitlines() == [
        "# Nightly.",
        'description = "Nightly"  # shown in the console',
        'schedule = "0 30 2 * * ?"           # every hour',
        f'mappings = ["{MAPPING}"]',
        "enabled = false",
        'timezone = "Europe/Stockholm"',
    ]


def test_a_value_with_quotes_stays_one_toml_string() -> None:
    """A value typed with quotes, a '#' or a backslash cannot end the string or start a key."""
    new = edit_toml(TEXT, {"description": 'a "b" # c \\ d\nschedule = "@hourly"'})
    parsed = tomllib.loads(new)
    assert parsed["description"] == 'a "b" # c \\ d\nschedule = "@hourly"'
    assert parsed["schedule"] == "0 0 * * * ?"


def test_save_refuses_a_broken_expression_and_leaves_the_file(tmp_path: Path) -> None:
    """A broken expression, time zone or misfire policy is refused with file, key and reason;
    the file is byte for byte what it was, and no temporary file is left behind."""
    path = tmp_path / "nightly.toml"
    path.write_text(TEXT)
    for edits, key in (({"schedule": "0 61 * * * ?"}, "schedule"), ({"timezone": "Mars/Olympus"}, "timezone"),
                       ({"misfire": "sometimes"}, "misfire")):
        with pytest.raises(ConfigError) as caught:
            save_job(path, edits, [MAPPING], **_dirs(tmp_path))
        assert caught.value.key == key and caught.value.file == str(path)
    assert path.read_text() == TEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nightly.toml"]


def test_save_writes_a_job_the_daemon_loads(tmp_path: Path) -> None:
    """A saved file loads as the daemon loads it, with the new schedule, and keeps its mode."""
    path = tmp_path / "nightly.toml"
    path.write_text(TEXT)
    path.chmod(0o640)
    job = save_job(path, {"schedule": "0 30 2 * * ?", "misfire": "skip"}, [MAPPING], **_dirs(tmp_path))
    assert job.schedule.expression == "0 30 2 * * ?" and job.misfire == "skip"
    jobs, errors = load_jobs(tmp_path, [MAPPING])
    assert not errors and jobs["nightly"].schedule.expression == "0 30 2 * * ?"
    assert path.stat().st_mode & 0o777 == 0o640
    assert "# every hour" in path.read_text()


def test_a_job_directory_the_daemon_may_not_write_is_a_clear_error(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the daemon may not write jobs.d/ (a read-only /etc under systemd without the unit's
    ReadWritePaths=), Save and Remove fail with a ConfigError naming the file, the reason and
    what allows it; the job file is left as it was."""
    import errno

    import idsync.console.jobfile as jobfile

    path = tmp_path / "nightly.toml"
    path.write_text(TEXT)

    def read_only(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(jobfile.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(jobfile.os, "replace", read_only)
    monkeypatch.setattr(jobfile.os, "link", read_only)
    for attempt in (lambda: save_job(path, {"schedule": "0 30 2 * * ?"}, [MAPPING], **_dirs(tmp_path)),
                    lambda: remove_job(path)):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert caught.value.file == str(path)
        assert "Read-only file system" in caught.value.problem and "ReadWritePaths=" in caught.value.problem
    assert path.read_text() == TEXT


def test_pingidm_schedule_is_edited_as_json(tmp_path: Path) -> None:
    """A job from conf/schedule-NAME.json is found and saved with PingIDM's key names, other keys kept."""
    conf = tmp_path / "conf"
    conf.mkdir()
    schedule = {"enabled": True, "type": "cron", "schedule": "0 0 * * * ?", "persisted": True,
                "invokeService": "sync", "invokeContext": {"action": "reconcile", "mapping": MAPPING}}
    (conf / "schedule-recon.json").write_text(json.dumps(schedule))
    path = job_file(tmp_path / "jobs.d", conf, "recon")
    save_job(path, {"schedule": "0 15 3 * * ?", "timezone": "UTC", "misfire": "skip"}, [MAPPING],
             jobs_dir=tmp_path / "jobs.d", conf_dir=conf)
    saved = json.loads(path.read_text())
    assert saved["schedule"] == "0 15 3 * * ?" and saved["misfirePolicy"] == "doNothing"
    assert saved["timeZone"] == "UTC" and saved["persisted"] is True and saved["invokeContext"]["mapping"] == MAPPING
    with pytest.raises(ConfigError):
        save_job(path, {"schedule": "nope"}, [MAPPING], jobs_dir=tmp_path / "jobs.d", conf_dir=conf)
    assert json.loads(path.read_text()) == saved


def test_a_simple_pingidm_schedule_keeps_its_interval_or_becomes_cron(tmp_path: Path) -> None:
    """A ``simple`` schedule is shown as ``every N s``: saved back unchanged it keeps its
    ``repeatInterval``; a cron expression typed in its place makes it a cron schedule."""
    conf = tmp_path / "conf"
    conf.mkdir()
    schedule = {"type": "simple", "repeatInterval": 3600000, "invokeService": "sync",
                "invokeContext": {"action": "reconcile", "mapping": MAPPING}}
    (conf / "schedule-hourly.json").write_text(json.dumps(schedule))
    path = job_file(tmp_path / "jobs.d", conf, "hourly")
    job = save_job(path, {"schedule": "every 3600 s", "timezone": "UTC", "enabled": False}, [MAPPING],
                   jobs_dir=tmp_path / "jobs.d", conf_dir=conf)
    saved = json.loads(path.read_text())
    assert saved["type"] == "simple" and saved["repeatInterval"] == 3600000 and "schedule" not in saved
    assert saved["enabled"] is False and job.schedule.expression.startswith("every 3600")
    job = save_job(path, {"schedule": "0 30 * * * ?"}, [MAPPING], jobs_dir=tmp_path / "jobs.d", conf_dir=conf)
    saved = json.loads(path.read_text())
    assert saved["type"] == "cron" and saved["schedule"] == "0 30 * * * ?" and "repeatInterval" not in saved
    assert job.schedule.describe()


def test_create_and_remove(tmp_path: Path) -> None:
    """A new job is written only if it loads and its name is free; Remove keeps the file aside."""
    jobs_dir = tmp_path / "jobs.d"
    create_job(jobs_dir, tmp_path / "conf", "hourly", {"schedule": "@hourly"}, [MAPPING], [MAPPING])
    assert load_jobs(jobs_dir, [MAPPING])[0]["hourly"].mappings == (MAPPING,)
    with pytest.raises(ConfigError, match="exists already"):
        create_job(jobs_dir, tmp_path / "conf", "hourly", {"schedule": "@hourly"}, [MAPPING], [MAPPING])
    with pytest.raises(ConfigError, match="mappings"):
        create_job(jobs_dir, tmp_path / "conf", "none", {"schedule": "@hourly"}, [MAPPING], [])
    with pytest.raises(ConfigError, match="letters, digits"):
        create_job(jobs_dir, tmp_path / "conf", "../escape", {"schedule": "@hourly"}, [MAPPING], [MAPPING])
    kept = remove_job(jobs_dir / "hourly.toml")
    assert kept.name == "hourly.toml.removed" and load_jobs(jobs_dir, [MAPPING])[0] == {}
    assert not (jobs_dir / "none.toml").exists()


def test_add_refuses_a_name_a_pingidm_schedule_has(tmp_path: Path) -> None:
    """Add a job refuses a name a ``conf/schedule-NAME.json`` defines (valid or not: fixed, it
    would clash), naming the file; nothing is written and the job set still loads without error."""
    jobs_dir, conf = tmp_path / "jobs.d", tmp_path / "conf"
    conf.mkdir()
    schedule = {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "sync",
                "invokeContext": {"action": "reconcile", "mapping": MAPPING}}
    (conf / "schedule-reconLdap.json").write_text(json.dumps(schedule))
    (conf / "schedule-broken.json").write_text("{")
    for name in ("reconLdap", "broken"):
        with pytest.raises(ConfigError, match=f"exists already .*schedule-{name}.json"):
            create_job(jobs_dir, conf, name, {"schedule": "@hourly"}, [MAPPING], [MAPPING])
        assert not (jobs_dir / f"{name}.toml").exists()
    jobs, errors = load_all_jobs(jobs_dir, conf, [MAPPING])
    assert list(jobs) == ["reconLdap"] and [e.file for e in errors] == [str(conf / "schedule-broken.json")]


def test_a_write_that_would_make_the_job_set_clash_is_refused(tmp_path: Path) -> None:
    """Beyond the name, the job set is loaded with the new file before it is written: a change
    giving it an error it had not (two sources defining one job) is refused and nothing written;
    an error the set had already (another file's) does not stop an unrelated Save."""
    jobs_dir, conf = tmp_path / "jobs.d", tmp_path / "conf"
    jobs_dir.mkdir()
    conf.mkdir()
    schedule = {"type": "cron", "schedule": "0 0 * * * ?", "invokeService": "sync",
                "invokeContext": {"action": "reconcile", "mapping": MAPPING}}
    (conf / "schedule-nightly.json").write_text(json.dumps(schedule))
    # jobs.d/nightly.toml does not load now: saved valid, it would clash with the schedule.
    broken = TEXT.replace("enabled = true", "enabled = 1")
    (jobs_dir / "nightly.toml").write_text(broken)
    with pytest.raises(ConfigError, match="also defined by"):
        save_job(jobs_dir / "nightly.toml", {"enabled": True}, [MAPPING], jobs_dir=jobs_dir, conf_dir=conf)
    assert (jobs_dir / "nightly.toml").read_text() == broken
    # A clash already there (other.toml and schedule-other.json) does not refuse another job's Save.
    (jobs_dir / "nightly.toml").unlink()
    (conf / "schedule-other.json").write_text(json.dumps(schedule))
    (jobs_dir / "other.toml").write_text(TEXT)
    (jobs_dir / "hourly.toml").write_text(TEXT)
    save_job(jobs_dir / "hourly.toml", {"schedule": "0 5 * * * ?"}, [MAPPING], jobs_dir=jobs_dir, conf_dir=conf)
    assert tomllib.loads((jobs_dir / "hourly.toml").read_text())["schedule"] == "0 5 * * * ?"


def test_removing_a_job_again_keeps_every_removed_copy(tmp_path: Path) -> None:
    """A job removed, added again and removed again: the first removal's copy stays as it was,
    the second goes to ``NAME.toml.removed.1``, a third to ``.removed.2``."""
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    kept = []
    for n in range(3):
        (jobs_dir / "nightly.toml").write_text(TEXT.replace("Nightly", f"Nightly {n}"))
        kept.append(remove_job(jobs_dir / "nightly.toml").name)
    assert kept == ["nightly.toml.removed", "nightly.toml.removed.1", "nightly.toml.removed.2"]
    for n, name in enumerate(kept):
        assert f"Nightly {n}" in (jobs_dir / name).read_text()
    assert not (jobs_dir / "nightly.toml").exists() and load_jobs(jobs_dir, [MAPPING])[0] == {}


def test_sessions_end_when_idle() -> None:
    """A session is found while used, and gone once idle longer than the limit or closed."""
    sessions = Sessions(idle_seconds=0.2)
    sid, session = sessions.open("admin")
    assert sessions.get(sid) is session and session.csrf_ok(session.csrf) and not session.csrf_ok("x")
    time.sleep(0.3)
    assert sessions.get(sid) is None
    sid, _ = sessions.open("admin")
    sessions.close(sid)
    assert sessions.get(sid) is None and sessions.get(None) is None


@contextmanager
def _app(tmp_path: Path, project_dir: Path | None = None, *, reread: bool = False, **settings: Any) -> Iterator[Any]:
    """The API with the console, in process, over ``project_dir`` (by default the sample's
    conf/ and a SQLite store); with ``reread``, the project is read again at each use, as
    the daemon's reload after a change would."""
    from api_server import account_hash
    from idsync.api import ApiContext, create_app, load_accounts
    from idsync.config.project import load_project
    from idsync.console import create_console
    from idsync.settings import ApiSettings
    from idsync.store.database import Store

    from samples import SAMPLE

    if project_dir is None:
        project_dir = tmp_path / "project"
        shutil.copytree(SAMPLE / "conf", project_dir / "conf")
        (project_dir / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    api = ApiSettings(accounts={"admin": account_hash("a-long-password")}, **settings)
    ctx = ApiContext(project=(lambda: load_project(project_dir)) if reread else (lambda: project), store=store,
                     settings=api)
    try:
        yield create_app(ctx, load_accounts(api, project_dir, "idsync.toml"), create_console)
    finally:
        ctx.close()
        store.close()


def _login_token(form: httpx.Response) -> str:
    return form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def _logged_in(client: httpx.AsyncClient) -> None:
    token = _login_token(await client.get("/admin/login"))
    answer = await client.post("/admin/login", data={"csrf": token, "username": "admin",
                                                     "password": "a-long-password"})
    assert answer.status_code == 303, answer.text


def test_add_a_job_says_which_characters_a_name_takes(tmp_path: Path) -> None:
    """Add a job says, beside its Name and in the browser's own refusal of another character
    (the field's title), which characters a name takes: typed with spaces, as a process is
    named ("Synchronize active LDAP Users"), it was refused with only "Please match the
    requested format", and the server's refusal says the same characters."""
    from idsync.config.jobs import job_name_problem

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            form = html.unescape((await client.get("/admin/jobs/new")).text)
            field = form.split('<input id="name"', 1)[1].split(">", 1)[0]
            assert "title=\"Letters, digits, '.', '_' and '-' only" in field and 'aria-describedby="name-help"' in field
            assert 'id="name-help">Letters, digits, <code>.</code>, <code>_</code> and <code>-</code>' in form

    with _app(tmp_path) as app:
        asyncio.run(visit(app))
    assert job_name_problem("Synchronize active LDAP Users") == \
        "a job file name may only use letters, digits, '.', '_' and '-'"


def test_a_refused_new_user_comes_back_with_what_was_typed(tmp_path: Path) -> None:
    """Identities > New user refused (a value that is not JSON for an array property, a
    required property left empty): the form comes back (400) naming the property and
    why, the values typed kept (never a password), and nothing is created. A value that
    was not JSON answered a bare error page naming no property, the form lost."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            csrf = _login_token(await client.get("/admin/managed/user/new"))
            typed = {"csrf": csrf, "p.userName": "fdoe", "p.givenName": "Felicitas", "p.roles": "[oops",
                     "s.password": "Unseen-Secret-1"}
            refused = await client.post("/admin/managed/user/new", data=typed)
            said = html.unescape(refused.text)
            assert refused.status_code == 400, said
            assert "roles: expected JSON for a property of type array (such as [\"a\", \"b\"]), not '[oops'" in said
            assert 'name="p.givenName" value="Felicitas"' in refused.text and 'value="[oops"' in refused.text
            assert "Unseen-Secret-1" not in refused.text
            again = await client.post("/admin/managed/user/new", data={**typed, "p.userName": "", "p.roles": ""})
            assert again.status_code == 400 and "userName is required" in again.text
            assert 'name="p.givenName" value="Felicitas"' in again.text
            assert "Felicitas" not in (await client.get("/admin/managed/user")).text

            # An edit refused comes back the same way: what was typed, the revision it was typed against.
            made = await client.post("/admin/managed/user/new", data={**typed, "p.roles": ""})
            assert made.status_code == 303, made.text
            page = await client.get(made.headers["location"].split("?")[0])
            rev = page.text.split('name="_rev" value="', 1)[1].split('"', 1)[0]
            edited = {"csrf": csrf, "_rev": rev, "p.userName": "fdoe", "p.givenName": "Felix", "p.roles": "[oops"}
            refused = await client.post(made.headers["location"].split("?")[0], data=edited)
            said = html.unescape(refused.text)
            assert refused.status_code == 400 and "roles: expected JSON for a property of type array" in said, said
            assert 'name="p.givenName" value="Felix"' in refused.text and f'name="_rev" value="{rev}"' in refused.text
            assert "Felicitas" in (await client.get(made.headers["location"].split("?")[0])).text  # nothing saved

    with _app(tmp_path) as app:
        asyncio.run(visit(app))


def test_the_identities_search_never_reads_a_secret_or_a_private_property(tmp_path: Path) -> None:
    """Identities' ``_queryFilter`` naming a password (even one marked searchable) or a private
    property is a 400 naming it, and the search box looks at neither: a hash's prefix or a
    private value typed there finds nobody, a user name still finds its user."""
    from idsync.config.managed import DEFAULT_MANAGED

    managed = json.loads(json.dumps(DEFAULT_MANAGED))
    (user,) = [o for o in managed["objects"] if o["name"] == "user"]
    user["schema"]["properties"]["password"]["searchable"] = True
    user["schema"]["properties"]["lastSync"] = {"type": "string", "scope": "private", "searchable": True}
    project = tmp_path / "p"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "managed.json").write_text(json.dumps(managed))
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    api_headers = {"X-OpenIDM-Username": "admin", "X-OpenIDM-Password": "a-long-password"}

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            made = await client.put("/openidm/managed/user/sec1", headers=api_headers, json={
                "userName": "sec1", "password": "Secret-Pass1", "lastSync": "kept-back"})
            assert made.status_code == 201, made.text
            await _logged_in(client)
            for query_filter, name in (('password sw "{"', "password"), ('lastSync eq "kept-back"', "lastSync")):
                refused = await client.get("/admin/managed/user", params={"_queryFilter": query_filter})
                assert refused.status_code == 400 and name in html.unescape(refused.text), refused.text
            for text, found in (("{CRYPT}", False), ("kept", False), ("sec", True)):
                listed = await client.get("/admin/managed/user", params={"q": text})
                assert listed.status_code == 200 and ("/admin/managed/user/sec1" in listed.text) == found, text

    with _app(tmp_path, project) as app:
        asyncio.run(visit(app))


def test_a_console_change_says_what_it_did(tmp_path: Path) -> None:
    """A creation or an edit in the console says "Created" or "Saved" and then, per mapping,
    what implicit sync pushed: nothing more when no mapping pushes (it said "Saved; saved");
    an edit that leaves the object as it was, such as effectiveRoles typed over (the store
    computes them from the user's roles), says "Nothing changed" and is recorded as no edit."""
    from idsync.config.project import load_project
    from idsync.console.record import CONSOLE_AUDIT
    from idsync.store.database import Store
    from idsync.store.tables import audit
    project = tmp_path / "project"  # the SCIM sample's project, its system off: no SCIM server
    shutil.copytree(Path(__file__).resolve().parent.parent / "samples" / "sync-with-scim" / "conf", project / "conf")
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    prov_file = project / "conf" / "provisioner.openicf-scim.json"
    prov_file.write_text(json.dumps({**json.loads(prov_file.read_text()), "enabled": False}))
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    for mapping in sync["mappings"]:
        mapping["enableSync"] = False
    sync_file.write_text(json.dumps(sync))

    async def steps(client: httpx.AsyncClient) -> None:
        csrf = _login_token(await client.get("/admin/managed/user/new"))
        created = await client.post("/admin/managed/user/new", data={"csrf": csrf, "p.userName": "fdoe", "p.sn": "Doe"})
        assert created.status_code == 303 and unquote(created.headers["location"]).endswith("?done=Created")
        page = created.headers["location"].split("?")[0]
        form = await client.get(page)
        rev = form.text.split('name="_rev" value="', 1)[1].split('"', 1)[0]
        edited = await client.post(page, data={"csrf": _login_token(form), "_rev": rev, "p.sn": "Roe"})
        assert edited.status_code == 303 and unquote(edited.headers["location"]).endswith("?done=Saved")
        form = await client.get(page)
        rev = form.text.split('name="_rev" value="', 1)[1].split('"', 1)[0]
        typed = await client.post(page, data={"csrf": _login_token(form), "_rev": rev,
                                              "p.effectiveRoles": '[{"_ref": "managed/role/none"}]'})
        assert typed.status_code == 303 and unquote(typed.headers["location"]).endswith("?done=Nothing changed")
        again = await client.get(page)
        assert f'name="_rev" value="{rev}"' in again.text

    _as_admin(project, steps)
    store = Store.open(load_project(project).settings.store_url())
    try:
        with store.engine.connect() as conn:
            actions = [r.action for r in conn.execute(audit.select().where(audit.c.mapping == CONSOLE_AUDIT))]
    finally:
        store.close()
    assert actions == ["CREATE", "UPDATE"]


def test_console_changes_run_scripts_with_the_openidm_router(tmp_path: Path, slapd: Slapd,
                                                              ldap_subtree: str) -> None:
    """A user created and then edited in the console is pushed through a mapping whose
    property transform asks ``openidm.query``: the directory entry carries the script's answer
    after each, exactly as after the same change over the API (same router, same implicit sync)."""
    from samples import REVERSE, ldap_entry, sample_project

    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    mapping = next(m for m in sync["mappings"] if m["name"] == REVERSE)
    mapping["properties"] = [r for r in mapping["properties"] if r["target"] != "description"] + [{
        "source": "", "target": "description", "transform": {"type": "text/javascript", "source": (
            "'namesakes: ' + openidm.query('managed/user', {_queryFilter: 'sn eq \"' + source.sn + '\"'})"
            ".resultCount")}}]
    sync_file.write_text(json.dumps(sync))
    user = {"userName": "fdoe", "givenName": "Felicitas", "sn": "Doe", "mail": "fdoe@example.com"}
    dn = f"uid=fdoe,{ldap_subtree}"

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            csrf = _login_token(await client.get("/admin/managed/user/new"))
            created = await client.post("/admin/managed/user/new",
                                        data={"csrf": csrf, **{f"p.{k}": v for k, v in user.items()}})
            assert created.status_code == 303 and "pushed" in created.headers["location"], created.headers
            assert (ldap_entry(slapd, dn) or {}).get("description") == ["namesakes: 1"]
            api = {"X-OpenIDM-Username": "admin", "X-OpenIDM-Password": "a-long-password"}
            other = await client.post("/openidm/managed/user?_action=create", headers=api,
                                      json={**user, "userName": "adoe", "sn": "Roe"})
            assert other.status_code == 201, other.text
            user_page = created.headers["location"].split("?")[0]
            form = await client.get(user_page)
            rev = form.text.split('name="_rev" value="', 1)[1].split('"', 1)[0]
            edited = await client.post(user_page, data={"csrf": _login_token(form), "_rev": rev, "p.sn": "Roe"})
            assert edited.status_code == 303 and "pushed" in edited.headers["location"], edited.headers
            assert (ldap_entry(slapd, dn) or {}).get("description") == ["namesakes: 2"]

    with _app(tmp_path, project) as app:
        asyncio.run(visit(app))


def test_console_pages_render_without_javascript(tmp_path: Path) -> None:
    """In process, over a SQLite store: the login form carries the CSP and a Strict cookie;
    a login without the form's token is refused, with it the dashboard renders, with a
    liveSync section once a source has run (its objects waiting for a retry and its dead
    letters); a request without a session is sent to the login form (the templates and
    Starlette at their floors)."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/admin/")).headers["location"].startswith("/admin/login")
            form = await client.get("/admin/login")
            assert "script-src 'self'" in form.headers["content-security-policy"]
            assert "samesite=strict" in form.headers["set-cookie"].lower()
            token = _login_token(form)
            login = {"username": "admin", "password": "a-long-password"}
            assert (await client.post("/admin/login", data=login)).status_code == 403
            answer = await client.post("/admin/login", data={**login, "csrf": token})
            assert answer.status_code == 303 and "httponly" in answer.headers["set-cookie"].lower()
            page = await client.get("/admin/")
            assert page.status_code == 200 and "<h1>Dashboard</h1>" in page.text
            assert "<script>" not in page.text and "managed/user" in page.text
            assert "<h2>liveSync</h2>" not in page.text  # no source has run
            _a_livesync_source(tmp_path / "s.db")
            page = await client.get("/admin/")
            shown = page.text.split("<h2>liveSync</h2>", 1)[1].split("</section>", 1)[0]
            assert "system/ldap/account" in shown and "SUCCESS" in shown
            assert '<td class="warn">1</td>' in shown and '<td class="bad">1 (' in shown
            assert (await client.get("/admin/static/console.js")).status_code == 200

    with _app(tmp_path) as app:
        asyncio.run(visit(app))


def test_systems_page_tests_again_once_a_reload_changed_the_systems(tmp_path: Path) -> None:
    """The Systems page kept its first test until Test was pressed: a system disabled since
    (its provisioner's "enabled": false, the daemon reloaded) still showed its old OK, with no
    "disabled" pill. Once the provisioners changed, the next visit tests again; a visit
    without a change shows the same test."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            first = (await client.get("/admin/systems")).text
            assert "ldap" in first and '<span class="pill">disabled</span>' not in first
            tested_at = first.split("<small>Tested ", 1)[1].split("<", 1)[0]
            time.sleep(1.1)  # the page shows the test's time to the second
            assert f"<small>Tested {tested_at}<" in (await client.get("/admin/systems")).text
            file = tmp_path / "project" / "conf" / "provisioner.openicf-ldap.json"
            file.write_text(file.read_text().replace('"enabled": true', '"enabled": false', 1))
            again = (await client.get("/admin/systems")).text
            assert '<span class="pill">disabled</span>' in again and "is disabled" in again, again

    with _app(tmp_path, reread=True) as app:
        asyncio.run(visit(app))


def _a_livesync_source(db: Path) -> None:
    """One liveSync run of system/ldap/account with a token, one object waiting for a retry
    and one dead letter, as a few runs would leave them."""
    from idsync.store.database import Store
    from idsync.store.sync_failures import SyncFailures
    from idsync.store.tokens import SyncTokens

    store = Store.open(f"sqlite:///{db}")
    try:
        source, failures = "system/ldap/account", SyncFailures(store)
        with store.begin() as conn:
            SyncTokens(store).save(conn, source, "cookie", "syncrepl")
            failures.record(conn, source, {"u1": "refused", "u2": "refused"}, "cookie")
            failures.bury(conn, source, ["u2"])
        SyncTokens(store).record_run(source, "SUCCESS", None, changes=2, full_recon=False)
    finally:
        store.close()


def test_secure_cookie_under_tls_and_the_shared_login_limit(tmp_path: Path) -> None:
    """Over HTTPS the session cookie is Secure; failed console logins count under the API's
    limit per address: past it the console answers 429, and so does the API."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            token = _login_token(await client.get("/admin/login"))
            answer = await client.post("/admin/login", data={"csrf": token, "username": "admin",
                                                             "password": "a-long-password"})
            assert answer.status_code == 303 and "secure" in answer.headers["set-cookie"].lower()
            client.cookies.clear()
            token = _login_token(await client.get("/admin/login"))
            wrong = {"csrf": token, "username": "admin", "password": "wrong"}
            assert [(await client.post("/admin/login", data=wrong)).status_code for _ in range(3)] == [401] * 3
            assert (await client.post("/admin/login", data=wrong)).status_code == 429
            api = await client.get("/openidm/managed/user?_queryFilter=true",
                                   headers={"X-OpenIDM-Username": "admin", "X-OpenIDM-Password": "a-long-password"})
            assert api.status_code == 429

    with _app(tmp_path, max_failed_logins=3) as app:
        asyncio.run(visit(app))



@pytest.mark.parametrize("name", ["sync-active-ldap-users", "sync-inactive-ldap-users"])
def test_save_on_the_example_jobs_changes_only_the_schedule(tmp_path: Path, name: str) -> None:
    """Save on the daemon's own example jobs: only the schedule line's value changes, and
    every other line (the comment above it that explains the schedule as shipped among
    them) stays as written."""
    example = Path(__file__).resolve().parent.parent / "jobs.d" / f"{name}.toml"
    path = tmp_path / example.name
    shutil.copy(example, path)
    mappings = list(tomllib.loads(example.read_text())["mappings"])
    save_job(path, {"schedule": "0 0/10 6-20 ? * MON-FRI"}, mappings, **_dirs(tmp_path))
    before, after = example.read_text().splitlines(), path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1
    old, new = changed[0]
    assert (old.split(" = ")[0], new) == ("schedule", 'schedule = "0 0/10 6-20 ? * MON-FRI"')


@pytest.fixture
def sf_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Any]]:
    """The Salesforce sample as shipped, without a refresh token (its variable not set),
    against a fresh stand-in whose Connected App lists the in-process console's callback URL."""
    from salesforce_sample import running_org, sample_project, sf_env

    for org in running_org(tmp_path):
        org.callback_urls.add("http://testserver/admin/oauth/callback")
        for name, value in sf_env(org).items():
            if name != "SALESFORCE_REFRESH_TOKEN":
                monkeypatch.setenv(name, value)
        # The sample's refreshToken stays "&{SALESFORCE_REFRESH_TOKEN}", a variable not set.
        yield sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}"), org


async def _consent(client: httpx.AsyncClient, org: Any) -> tuple[str, str]:
    """Authorize pressed on the Systems page and access allowed at the stand-in: the
    callback URL the provider sends the browser to, and the consent cookie."""
    systems = await client.get("/admin/systems")
    started = await client.post("/admin/systems/salesforce/authorize", data={"csrf": _login_token(systems)})
    assert started.status_code == 303 and started.headers["location"].startswith(org.url), started.text
    cookie = started.headers["set-cookie"]
    assert "samesite=lax" in cookie.lower() and "httponly" in cookie.lower()
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=org.ca_file)) as provider:
        allowed = await provider.post(started.headers["location"].split("?")[0],
                                      data={**dict(httpx.URL(started.headers["location"]).params),
                                            "username": "admin@example.com", "password": "fake-password-1",
                                            "decision": "allow"})
    assert allowed.status_code == 302, allowed.text
    return allowed.headers["location"], client.cookies["idsync_console_consent"]


def test_consent_keeps_the_refresh_token_in_the_state_directory(sf_project: tuple[Path, Any]) -> None:
    """Systems shows the Salesforce system as needing consent, with the provider's origin
    allowed as a form target; Authorize (refused without the CSRF token) sends the browser to
    the provider's authorize page with a state and a PKCE challenge; the callback exchanges
    the code, keeps the refresh token in state/oauth/ (0600, directory 0700) and never shows
    it; the connector then connects with it; the same callback again is refused."""
    project, org = sf_project

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            systems = await client.get("/admin/systems")
            assert "needs consent" in systems.text
            assert f"form-action 'self' {org.url}" in systems.headers["content-security-policy"]
            assert (await client.post("/admin/systems/salesforce/authorize", data={})).status_code == 403
            callback, _ = await _consent(client, org)
            query = dict(httpx.URL(callback).params)
            assert callback.startswith("http://testserver/admin/oauth/callback?") and query["state"]
            done = await client.get(callback)
            assert done.status_code == 200, done.text
            assert "salesforce is authorized" in done.text and "OK" in done.text
            stored = project / "state" / "oauth" / "salesforce.refresh-token"
            token = stored.read_text().strip()
            assert token in org.refresh_tokens and token not in done.text and query["code"] not in done.text
            assert stored.stat().st_mode & 0o777 == 0o600 and stored.parent.stat().st_mode & 0o777 == 0o700
            again = await client.get(callback)
            assert again.status_code == 400 and "already used" in again.text
            assert "authorized" in (await client.get("/admin/systems")).text
            assert token not in (await client.get("/admin/managed/user")).text

    with _app(project.parent, project) as app:
        asyncio.run(visit(app))
    from idsync.config.project import load_project
    from idsync.resources import Resources

    resources = Resources(load_project(project), None)  # type: ignore[arg-type]
    try:
        assert resources.system("salesforce").test()["ok"]
    finally:
        resources.close()


def test_consent_callback_refuses_a_wrong_state_another_browser_and_a_denial(sf_project: tuple[Path, Any]) -> None:
    """A callback with a forged state, or with the right state in a browser without the
    consent cookie that started it, or after the session that started it logged out, is
    refused and stores nothing; so is the provider's access_denied, whose reason the page
    shows. The right callback still works after a forged one was refused."""
    project, org = sf_project
    stored = project / "state" / "oauth" / "salesforce.refresh-token"

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            callback, _ = await _consent(client, org)
            state = dict(httpx.URL(callback).params)["state"]
            forged = await client.get(callback.replace(state, "forged-" + state[7:]))
            assert forged.status_code == 400 and "refused" in forged.text
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
                stolen = await other.get(callback)
                assert stolen.status_code == 400 and "another browser" in stolen.text
            assert not stored.exists()
            callback, _ = await _consent(client, org)
            good = await client.get(callback)
            assert good.status_code == 200 and stored.exists()
            stored.unlink()
            callback, _ = await _consent(client, org)
            systems = await client.get("/admin/systems")
            await client.post("/admin/logout", data={"csrf": _login_token(systems)})
            ended = await client.get(callback)
            assert ended.status_code == 400 and "session that started it has ended" in ended.text
            assert not stored.exists()
            await _logged_in(client)
            systems = await client.get("/admin/systems")
            started = await client.post("/admin/systems/salesforce/authorize", data={"csrf": _login_token(systems)})
            denied_at = httpx.URL(started.headers["location"])
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=org.ca_file)) as provider:
                denied = await provider.post(str(denied_at.copy_with(query=None)), data={
                    **dict(denied_at.params), "username": "admin@example.com", "password": "fake-password-1",
                    "decision": "deny"})
            refused = await client.get(denied.headers["location"])
            assert refused.status_code == 400 and "access_denied" in refused.text and not stored.exists()

    with _app(project.parent, project) as app:
        asyncio.run(visit(app))


def _as_admin(project: Path, steps: Callable[[httpx.AsyncClient], Awaitable[None]], *, reread: bool = False) -> None:
    """``steps`` with a client logged in to the in-process console over ``project``."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            await steps(client)

    with _app(project.parent, project, reread=reread) as app:
        asyncio.run(visit(app))


def _settings_form(page: httpx.Response, **fields: str) -> dict[str, str]:
    return {"csrf": _login_token(page), "loginUrl": "production", "customLoginUrl": "", "clientId": "",
            "clientSecret": "", **fields}


def test_connection_settings_are_kept_encrypted_and_never_shown(sf_project: tuple[Path, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Systems, Settings, Save of a Salesforce system (Custom login URL, Consumer Key and
    Secret): the overlay is state/connectors/salesforce.json, 0600 in a 0700 directory, the
    secret a $crypto value that idsync's key decrypts and nowhere in clear; no page shows the
    secret (the form says "set"), Systems says each key comes from the console; the change is
    audited with the account's name and without the secret. The project as loaded again uses
    the console's values over the file's, without reading the variables the file's tokens
    name; saving again without a secret keeps the one saved."""
    from idsync.config.project import load_project
    from idsync.console.record import CONSOLE_AUDIT
    from idsync.store.database import Store
    from idsync.store.tables import audit

    project, org = sf_project
    secret = "console-secret-7f3a"
    overlay = project / "state" / "connectors" / "salesforce.json"

    async def steps(client: httpx.AsyncClient) -> None:
        form = await client.get("/admin/systems/salesforce/settings")
        assert form.status_code == 200 and 'id="client-secret"' in form.text
        assert org.client_secret not in form.text and "set (from conf/)" in form.text
        saved = await client.post("/admin/systems/salesforce/settings", data=_settings_form(
            form, enabled="1", loginUrl="custom", customLoginUrl=org.url, clientId="console-key",
            clientSecret=secret))
        assert saved.status_code == 303 and "Saved the settings of salesforce" in unquote(saved.headers["location"])
        for path in ("/admin/systems", "/admin/systems/salesforce/settings"):
            shown = await client.get(path)
            assert secret not in shown.text and org.client_secret not in shown.text
        assert "set (from console)" in shown.text and 'value="console-key"' in shown.text
        row = (await client.get("/admin/systems")).text.split('id="settings-row-salesforce"', 1)[1]
        assert row.split("</tr>", 1)[0].count("<td>console</td>") == 4
        again = await client.post("/admin/systems/salesforce/settings", data=_settings_form(
            shown, enabled="1", loginUrl="custom", customLoginUrl=org.url, clientId="console-key"))
        assert again.status_code == 303

    _as_admin(project, steps, reread=True)
    assert overlay.stat().st_mode & 0o777 == 0o600 and overlay.parent.stat().st_mode & 0o777 == 0o700
    assert secret not in overlay.read_text() and sorted(p.name for p in overlay.parent.iterdir()) == [overlay.name]
    stored = json.loads(overlay.read_text())
    assert stored["enabled"] is True and stored["loginUrl"] == org.url and "$crypto" in stored["clientSecret"]
    monkeypatch.delenv("SALESFORCE_CLIENT_SECRET")
    monkeypatch.delenv("SALESFORCE_CLIENT_ID")
    loaded = load_project(project)
    assert loaded.keyring is not None and loaded.keyring.decrypt(stored["clientSecret"]) == secret
    props = loaded.provisioners["salesforce"].config["configurationProperties"]
    assert (props["clientSecret"], props["clientId"], props["loginUrl"]) == (secret, "console-key", org.url)
    assert props["version"] == 44  # the file's other keys stay in force
    store = Store.open(loaded.settings.store_url())
    try:
        with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(audit.select().where(audit.c.mapping == CONSOLE_AUDIT))]
    finally:
        store.close()
    assert [(r["source_id"], r["action"]) for r in rows] == [("system/salesforce", "UPDATE")] * 2
    assert all(r["changes"]["user"] == "admin" and secret not in json.dumps(r, default=str) for r in rows)
    assert rows[0]["changes"]["secretChanged"] is True and rows[1]["changes"]["secretChanged"] is False


@pytest.mark.parametrize(("fields", "reason"), [
    ({"loginUrl": "custom", "customLoginUrl": "http://login.example.com"}, "loginUrl: must be an https URL"),
    ({"loginUrl": "custom", "customLoginUrl": "https://user:pw@login.example.com"}, "must not hold a user name"),
    ({"loginUrl": "custom", "customLoginUrl": ""}, "Custom needs a URL"),
    ({"loginUrl": "production", "customLoginUrl": "https://eu26.lightning.force.com"},
     "loginUrl: a Custom login URL is typed but Production is selected: select Custom to use it"),
    ({"loginUrl": "elsewhere"}, "expected Production, Sandbox or Custom"),
    ({"clientId": "two\nlines"}, "clientId: must be one line"),
])
def test_connection_settings_refuse_bad_input_and_write_nothing(sf_project: tuple[Path, Any],
                                                                fields: dict[str, str], reason: str) -> None:
    """A login URL that is not https (or carries a user, or is missing, or is typed with
    Production selected), an unknown choice or a Consumer Key of two lines is refused with the
    reason on the form, status 400, and no file is written; without the session's CSRF token
    the form is refused with 403."""
    project, _org = sf_project
    overlay = project / "state" / "connectors" / "salesforce.json"

    async def steps(client: httpx.AsyncClient) -> None:
        form = await client.get("/admin/systems/salesforce/settings")
        refused = await client.post("/admin/systems/salesforce/settings",
                                    data=_settings_form(form, enabled="1", clientSecret="s", **fields))
        assert refused.status_code == 400 and reason in refused.text, refused.text
        assert 'id="settings-error"' in refused.text and 'value="s"' not in refused.text
        forged = await client.post("/admin/systems/salesforce/settings",
                                   data={**_settings_form(form, enabled="1"), "csrf": "forged"})
        assert forged.status_code == 403

    _as_admin(project, steps)
    assert not overlay.exists() and not (project / "state" / "connectors").exists()


def test_production_chosen_over_the_custom_url_in_force_is_saved(sf_project: tuple[Path, Any]) -> None:
    """Production selected on a form that shows the Custom login URL in force, left in its
    field, is saved as Production: only a URL typed anew, with a preset selected, is refused."""
    project, org = sf_project
    overlay = project / "state" / "connectors" / "salesforce.json"

    async def steps(client: httpx.AsyncClient) -> None:
        form = await client.get("/admin/systems/salesforce/settings")
        in_force = f"{org.url}/services/oauth2/token"
        assert f'value="{in_force}"' in form.text
        saved = await client.post("/admin/systems/salesforce/settings", data=_settings_form(
            form, loginUrl="production", customLoginUrl=in_force))
        assert saved.status_code == 303, saved.text

    _as_admin(project, steps)
    assert json.loads(overlay.read_text())["loginUrl"] == "https://login.salesforce.com/services/oauth2/token"


def test_enabling_without_a_consumer_key_is_refused(sf_project: tuple[Path, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Enabled with no Consumer Key in the form nor in the provisioner: the connector's own
    check refuses it (naming clientId) before anything is written; disabled, it is saved."""
    project, _org = sf_project
    prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
    prov = json.loads(prov_file.read_text())
    del prov["configurationProperties"]["clientId"]
    prov_file.write_text(json.dumps(prov))
    overlay = project / "state" / "connectors" / "salesforce.json"

    async def steps(client: httpx.AsyncClient) -> None:
        form = await client.get("/admin/systems/salesforce/settings")
        refused = await client.post("/admin/systems/salesforce/settings", data=_settings_form(form, enabled="1"))
        assert refused.status_code == 400 and "clientId: is required" in refused.text
        assert not overlay.exists()
        saved = await client.post("/admin/systems/salesforce/settings", data=_settings_form(form))
        assert saved.status_code == 303 and "(disabled)" in unquote(saved.headers["location"])

    _as_admin(project, steps)
    assert json.loads(overlay.read_text()) == {"enabled": False,
                                               "loginUrl": "https://login.salesforce.com/services/oauth2/token"}


def test_the_salesforce_walkthrough_on_the_sample_as_shipped(sf_project: tuple[Path, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The walkthrough on the sample's provisioner as shipped, disabled, with none of
    SALESFORCE_CLIENT_ID, _CLIENT_SECRET, _REFRESH_TOKEN, _INSTANCE_URL set: Settings (Enabled, Consumer Key and
    Secret) is saved, not refused for the refresh token's variable (a 400 naming
    SALESFORCE_REFRESH_TOKEN); Authorize keeps a token; then the project as the daemon loads it
    connects with that token, the variable still not set, and validates."""
    from idsync.config.project import load_project, validate_project
    from idsync.resources import Resources, check_system

    project, org = sf_project
    for name in ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_REFRESH_TOKEN",
                 "SALESFORCE_INSTANCE_URL"):
        monkeypatch.delenv(name, raising=False)
    prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
    prov = json.loads(prov_file.read_text())
    assert prov["configurationProperties"]["refreshToken"] == "&{SALESFORCE_REFRESH_TOKEN}"
    prov_file.write_text(json.dumps({**prov, "enabled": False}))

    async def steps(client: httpx.AsyncClient) -> None:
        form = await client.get("/admin/systems/salesforce/settings")
        saved = await client.post("/admin/systems/salesforce/settings", data=_settings_form(
            form, enabled="1", loginUrl="custom", customLoginUrl=org.url, clientId=org.client_id,
            clientSecret=org.client_secret))
        assert saved.status_code == 303, html.unescape(saved.text)
        callback, _ = await _consent(client, org)
        done = await client.get(callback)
        assert done.status_code == 200 and "salesforce is authorized" in done.text, done.text

    _as_admin(project, steps, reread=True)
    assert "SALESFORCE_REFRESH_TOKEN" not in os.environ
    loaded = load_project(project)
    properties = loaded.provisioners["salesforce"].config["configurationProperties"]
    assert "refreshToken" not in properties and "instanceUrl" not in properties  # the token's own
    assert not [p for p in validate_project(project, check_system) if not isinstance(p, ConfigWarning)]
    resources = Resources(loaded, None)  # type: ignore[arg-type]
    try:
        assert resources.system("salesforce").test()["ok"]
    finally:
        resources.close()


def test_an_unset_variable_a_consent_cannot_stand_for_is_still_an_error(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a key a consent in the console gives, where there is a state directory to keep one,
    may name a variable that is not set: a Consumer Secret's unset variable, or the refresh
    token's without a state directory, is an error naming the file, the key and the variable."""
    from idsync.config.project import Provisioner

    monkeypatch.delenv("NOT_SET_FOR_THIS_TEST", raising=False)
    raw = {"configurationProperties": {"clientId": "key", "clientSecret": "&{NOT_SET_FOR_THIS_TEST}",
                                       "refreshToken": "&{NOT_SET_FOR_THIS_TEST}"}}
    with_state = Provisioner("sf", "conf/provisioner.openicf-sf.json", "salesforce", raw, state_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        with_state.config  # noqa: B018 - reading it substitutes
    assert caught.value.key == "configurationProperties.clientSecret"
    assert caught.value.file == "conf/provisioner.openicf-sf.json" and "NOT_SET_FOR_THIS_TEST" in caught.value.problem
    raw["configurationProperties"]["clientSecret"] = "secret"
    assert "refreshToken" not in with_state.config["configurationProperties"]
    without_state = Provisioner("sf", "conf/provisioner.openicf-sf.json", "salesforce", raw)
    with pytest.raises(ConfigError) as caught:
        without_state.config  # noqa: B018
    assert caught.value.key == "configurationProperties.refreshToken"
    ldap = Provisioner("ldap", "conf/provisioner.openicf-ldap.json", "ldap",
                       {"configurationProperties": {"refreshToken": "&{NOT_SET_FOR_THIS_TEST}"}}, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="NOT_SET_FOR_THIS_TEST"):
        ldap.config  # noqa: B018


def test_a_runs_page_links_the_runs_that_carried_its_writes_on(tmp_path: Path) -> None:
    """A recon whose writes went on through another mapping shows those runs under
    "Carried on", each linked to its own page, with its state and counts."""
    from idsync.store.database import Store
    from idsync.store.runs import RunStore
    from idsync.sync.summary import Counters

    recon, onward = "0193a1b2-0000-7000-8000-000000000001", "0193a1b2-0000-7000-8000-000000000002"

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            page = await client.get(f"/admin/runs/{recon}")
            assert page.status_code == 200, page.text
            shown = page.text.split("<h2>Carried on</h2>", 1)[1].split("</table>", 1)[0]
            assert f'href="/admin/runs/{onward}"' in shown and "managedUser_systemHrAccounts" in shown
            assert "FAILED" in shown and "created 1, failed 1" in shown
            assert (await client.get(f"/admin/runs/{onward}")).status_code == 200

    with _app(tmp_path) as app:
        runs = RunStore(Store.open(f"sqlite:///{tmp_path / 's.db'}"))
        for run_id, mapping in ((recon, MAPPING), (onward, "managedUser_systemHrAccounts")):
            counters = Counters(mapping, "system/ldap/account", "managed/user")
            runs.start(run_id, mapping, job="implicit" if run_id == onward else None, dry_run=False,
                       summary=counters.to_summary())
            summary = counters.to_summary()
            if run_id == recon:
                summary["onward"] = [{"mapping": "managedUser_systemHrAccounts", "id": onward, "state": "FAILED",
                                      "counts": {"created": 1, "failed": 1}, "errors": 1}]
            runs.finish(run_id, "SUCCESS" if run_id == recon else "FAILED", "COMPLETED", summary, None)
        runs.store.close()
        asyncio.run(visit(app))


def test_a_runs_page_names_an_ambiguous_correlations_candidates(tmp_path: Path) -> None:
    """An AMBIGUOUS entry of a run's audit lists the targets its correlation found, each
    linked to its page, so one of them can be linked by hand."""
    from idsync.store.database import Store
    from idsync.store.runs import RunStore
    from idsync.sync.summary import Counters

    recon = "0193a1b2-0000-7000-8000-000000000003"
    both = ["0193a1b2-0000-7000-8000-00000000000a", "0193a1b2-0000-7000-8000-00000000000b"]
    with _app(tmp_path) as app:
        runs = RunStore(Store.open(f"sqlite:///{tmp_path / 's.db'}"))
        counters = Counters(MAPPING, "system/ldap/account", "managed/user")
        runs.start(recon, MAPPING, job=None, dry_run=False, summary=counters.to_summary())
        with runs.store.begin() as conn:
            runs.audit(conn, [{"run_id": recon, "mapping": MAPPING, "situation": "AMBIGUOUS", "action": "EXCEPTION",
                               "source_id": "uid=e1,ou=people", "target_id": None, "status": "FAILURE",
                               "message": "AMBIGUOUS: correlation found 2 targets", "ambiguous": both,
                               "phase": "source"}])
        runs.finish(recon, "SUCCESS", "COMPLETED", counters.to_summary(), None)
        runs.store.close()

        async def fetch() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
                await _logged_in(c)
                return await c.get(f"/admin/runs/{recon}")

        page = asyncio.run(fetch())
    assert page.status_code == 200, page.text
    row = page.text.split("<td>AMBIGUOUS</td>", 1)[1].split("</tr>", 1)[0]
    assert "candidates:" in row
    for target_id in both:
        assert f'href="/admin/managed/user/{target_id}"' in row


def test_a_system_whose_reads_are_denied_is_not_browsed(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A provisioner denying SEARCH and GET (operationOptions): the console's list of the
    system's objects and an object's page answer 403, naming the key; nothing is read."""
    from samples import sample_project, set_provisioner_key

    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")
    set_provisioner_key(project, "operationOptions", {"SEARCH": {"denied": True}, "GET": {"denied": True}})
    with _app(tmp_path, project) as app:

        async def fetch(*paths: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
                await _logged_in(c)
                return [await c.get(p) for p in paths]

        listed, one = asyncio.run(fetch("/admin/system/ldap/account",
                                        f"/admin/system/ldap/account/uid=bjensen,{ldap_subtree}"))
    assert listed.status_code == 403 and "SEARCH is denied on this system" in listed.text
    assert one.status_code == 403 and "GET is denied on this system" in one.text


def test_a_jobs_next_fire_is_shown_in_its_time_zone() -> None:
    """A job's next fire reads in the job's time zone, as its schedule and the preview of its
    fires do (a 09:00 Stockholm job does not say 08:00 UTC); other times stay in UTC, and
    a time zone that cannot be read falls back to UTC."""
    from idsync.console.web import when

    fire = "2026-12-07T08:00:00+00:00"
    assert when(fire, "Europe/Stockholm") == "2026-12-07 09:00:00 CET"
    assert when("2026-07-07T07:00:00+00:00", "Europe/Stockholm") == "2026-07-07 09:00:00 CEST"
    assert when(fire) == when(fire, "UTC") == when(fire, "Mars/Olympus") == "2026-12-07 08:00:00 UTC"
    templates = Path(__file__).resolve().parent.parent / "daemon" / "idsync" / "console" / "templates"
    for name in ("job_state.html", "dashboard_body.html"):
        assert "job.nextRunDate|when(job.timezone)" in (templates / name).read_text(), name


def test_a_mapping_page_shows_all_the_mapping_says(tmp_path: Path) -> None:
    """Mappings > a mapping shows, besides its properties, correlation and policies, the
    scripts it runs at its events (onCreate ... result), each policy's condition and
    postAction, and every other key it sets (linkQualifiers, maxDeletes ...) under
    Settings: nothing a mapping says is missing from its page."""
    from samples import SAMPLE

    project_dir = tmp_path / "project"
    shutil.copytree(SAMPLE / "conf", project_dir / "conf")
    (project_dir / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    sync = project_dir / "conf" / "sync.json"
    conf = json.loads(sync.read_text())
    forward = next(m for m in conf["mappings"] if m["name"] == MAPPING)
    forward["onCreate"] = {"type": "text/javascript", "source": "target.description = 'made by <sync>';"}
    forward["result"] = {"type": "text/javascript", "source": "logger.info('done');"}
    forward["policies"][0] = {**forward["policies"][0], "condition": "/source/uid pr",
                              "postAction": {"type": "text/javascript", "source": "logger.info('after');"}}
    forward["runTargetPhase"] = False
    sync.write_text(json.dumps(conf))

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            page = await client.get(f"/admin/mappings/{MAPPING}")
            assert page.status_code == 200
            scripts = page.text.split('<dl id="scripts">', 1)[1].split("</dl>", 1)[0]
            assert "<dt>onCreate</dt>" in scripts and "made by &lt;sync&gt;" in scripts
            assert "<dt>result</dt>" in scripts and "onUpdate" not in scripts
            policies = page.text.split('<table id="policies">', 1)[1].split("</table>", 1)[0]
            assert "/source/uid pr" in policies and "logger.info(&#39;after&#39;);" in policies
            settings = page.text.split('<dl id="settings">', 1)[1].split("</dl>", 1)[0]
            assert "<dt>runTargetPhase</dt>" in settings and "<dt>maxDeletes</dt>" in settings
            assert "<dt>properties</dt>" not in settings and "<dt>onCreate</dt>" not in settings

    with _app(tmp_path, project_dir) as app:
        asyncio.run(visit(app))


def test_a_malformed_runs_cursor_is_a_400(tmp_path: Path) -> None:
    """Runs with a ``before`` cursor that has no start time (``|x``) or no run id is a 400
    naming the cursor, as a garbage one is (``|x`` was a 500 from an assertion)."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            for cursor in ("|x", "garbage", "2026-12-05T10:00:00+00:00|", "2026-12-05T10:00:00+00:00"):
                answer = await client.get("/admin/runs", params={"before": cursor})
                assert answer.status_code == 400 and "before: expected" in html.unescape(answer.text), cursor
                assert answer.headers["cache-control"] == "no-store"

    with _app(tmp_path) as app:
        asyncio.run(visit(app))


def test_an_unexpected_error_is_a_page_with_the_security_headers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error in a page is a 500 error page that says nothing of the error and
    carries the console's security headers (Starlette's own was plain text without them)."""
    import idsync.console.runs as runs

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a secret detail")

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            monkeypatch.setattr(runs.RunStore, "search", broken)
            crashed = await client.get("/admin/runs")
            assert crashed.status_code == 500 and "unexpected error" in crashed.text
            assert "a secret detail" not in crashed.text and "RuntimeError" not in crashed.text
            assert "script-src 'self'" in crashed.headers.get("content-security-policy", "")
            assert crashed.headers.get("cache-control") == "no-store" and crashed.headers["x-frame-options"] == "DENY"

    with _app(tmp_path) as app:
        asyncio.run(visit(app))


def test_the_identities_filter_error_says_its_prefix_once(tmp_path: Path) -> None:
    """A ``_queryFilter`` naming a secret property is refused with ``_queryFilter:`` once; one
    that does not parse still says which field it is."""

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            secret = await client.get("/admin/managed/user", params={"_queryFilter": "password pr"})
            said = html.unescape(secret.text)
            assert secret.status_code == 400 and "_queryFilter: password is a secret property" in said
            assert "_queryFilter: _queryFilter" not in said
            broken = await client.get("/admin/managed/user", params={"_queryFilter": "userName eq"})
            assert broken.status_code == 400
            assert "_queryFilter: expected a value after userName eq" in html.unescape(broken.text)

    with _app(tmp_path) as app:
        asyncio.run(visit(app))


def test_a_preview_audit_filters_by_dry_run(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A preview's run page offers the statuses its entries have, DRY_RUN among them (it
    offered only SUCCESS, FAILURE, NOT_APPLICABLE), and filtering by it lists its entries."""
    from idsync.store.runs import RunStore

    from samples import FORWARD, sample_project

    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            csrf = _login_token(await client.get(f"/admin/mappings/{FORWARD}"))
            started = await client.post(f"/admin/mappings/{FORWARD}/preview", data={"csrf": csrf})
            assert started.status_code == 303, started.text
            run_page = started.headers["location"].split("?")[0]
            run_id = run_page.rsplit("/", 1)[1]
            store = app.state.ctx.store
            for _ in range(600):
                if (RunStore(store).get(run_id) or {}).get("state") != "ACTIVE":
                    break
                await asyncio.sleep(0.05)
            shown = await client.get(run_page)
            options = shown.text.split('id="a-status"', 1)[1].split("</select>", 1)[0]
            assert "<option>DRY_RUN</option>" in options and "<option>FAILURE</option>" in options, options
            only = await client.get(run_page, params={"status": "DRY_RUN"})
            assert "<option selected>DRY_RUN</option>" in only.text and only.text.count("<td>DRY_RUN</td>") > 0

    with _app(tmp_path, project) as app:
        asyncio.run(visit(app))


def test_a_system_object_shows_lists_as_json(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """A system object's page shows a list as JSON (``["top", ...]``), as a managed object's
    page does, not as Python's repr (``['top', ...]``)."""
    from samples import sample_project

    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}")

    async def visit(app: Any) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await _logged_in(client)
            listed = await client.get("/admin/system/ldap/account")
            link = listed.text.split('href="/admin/system/ldap/account/', 1)[1].split('"', 1)[0]
            one = await client.get(f"/admin/system/ldap/account/{link}")
            said = html.unescape(one.text)
            assert one.status_code == 200 and '["' in said and "['" not in said, said

    with _app(tmp_path, project) as app:
        asyncio.run(visit(app))


def test_a_roles_page_lists_its_members_a_page_at_a_time(tmp_path: Path) -> None:
    """Identities > a role of 60 members: its page lists the first 50 (not a form field of
    them all) and Next the other 10; Add puts one more user in, Remove takes one out, each
    said on the page and kept by the store."""
    from idsync.config.project import load_project
    from idsync.resource import WriteOp
    from idsync.store.database import Store
    from idsync.store.objects import ManagedResource
    project = tmp_path / "project"  # the SCIM sample's project (its role members a relationship), system off
    shutil.copytree(Path(__file__).resolve().parent.parent / "samples" / "sync-with-scim" / "conf", project / "conf")
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    prov_file = project / "conf" / "provisioner.openicf-scim.json"
    prov_file.write_text(json.dumps({**json.loads(prov_file.read_text()), "enabled": False}))
    sync_file = project / "conf" / "sync.json"
    sync_file.write_text(json.dumps({"mappings": []}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        ManagedResource(store, loaded.managed.types["user"]).write_batch(
            [WriteOp("create", values={"_id": f"u{n:02d}", "userName": f"user{n}"}) for n in range(61)])
        ManagedResource(store, loaded.managed.types["role"]).write_batch([WriteOp("create", values={
            "_id": "staff", "name": "staff", "members": [{"_ref": f"managed/user/u{n:02d}"} for n in range(60)]})])
    finally:
        store.close()

    def listed(page: httpx.Response) -> list[str]:
        table = page.text.split('<table id="ref-members">', 1)[1].split("</table>", 1)[0]
        return [cell.split("</a>", 1)[0] for cell in table.split('">managed/user/')[1:]]

    async def steps(client: httpx.AsyncClient) -> None:
        first = await client.get("/admin/managed/role/staff")
        assert first.status_code == 200 and 'id="p-members"' not in first.text
        assert listed(first) == [f"u{n:02d}" for n in range(50)]
        rest = await client.get("/admin/managed/role/staff?after.members=managed/user/u49")
        assert listed(rest) == [f"u{n:02d}" for n in range(50, 60)] and "after.members=" not in rest.text
        added = await client.post("/admin/managed/role/staff/members",
                                  data={"csrf": _login_token(first), "_ref": "managed/user/u60"})
        assert added.status_code == 303 and "Added managed/user/u60 to members" in unquote(added.headers["location"])
        rest = await client.get("/admin/managed/role/staff?after.members=managed/user/u49")
        assert listed(rest) == [f"u{n:02d}" for n in range(50, 61)]
        row = rest.text.split("managed/user/u55</a>", 1)[1].split('name="row" value="', 1)[1].split('"', 1)[0]
        gone = await client.post("/admin/managed/role/staff/members", data={"csrf": _login_token(rest), "row": row})
        assert gone.status_code == 303 and "Removed managed/user/u55" in unquote(gone.headers["location"])
        again = await client.post("/admin/managed/role/staff/members",
                                  data={"csrf": _login_token(rest), "_ref": "managed/user/u01"})
        assert again.status_code == 400 and "already holds managed/user/u01" in html.unescape(again.text)
        rest = await client.get("/admin/managed/role/staff?after.members=managed/user/u49")
        assert "u55" not in listed(rest) and len(listed(rest)) == 10

    _as_admin(project, steps)
