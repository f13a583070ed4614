"""The admin console in a real browser against the real ``idsync run``: logging in (and
being refused), the dashboard, Batch synchronization's Save of a cron expression
(the file on disk and ``idsync jobs`` show it, comments kept, a broken expression
never written), running a job and watching it finish, the CSRF refusal, and PingIDM's
Salesforce walkthrough (Settings, Authorize, test, reconcile)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from api_server import ADMIN, ADMIN_HASH, add_users, free_port
from console_browser import chromium
from idsync_dev.slapd import Slapd

from samples import FORWARD, IDSYNC, idsync, ldap_entry, sample_project

JOB = "ldap-users"
SLOW = "slow-users"  # one entry a page: a run long enough to watch and cancel, even with nothing to change
JOB_TEXT = f"""# Synchronize active LDAP users to the identity store.
description = "Synchronize active LDAP users to Identity Manager"
schedule = "0 0 1 1 *"       # once a year until someone picks a time
timezone = "UTC"
mappings = ["{FORWARD}"]
misfire = "skip"             # keep this comment
"""


# Visible text whose contrast with the first opaque background behind it is below WCAG AA.
_LOW_CONTRAST = """
const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => [r, g, b]
  .map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
  .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
const behind = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
  if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
const out = [];
for (const e of document.querySelectorAll('body *')) {
  const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  const st = getComputedStyle(e);
  if (!own || !e.getClientRects().length || st.visibility === 'hidden' || e.closest('.skip')) continue;
  const [a, b] = [lum(rgb(st.color).slice(0, 3)), lum(behind(e))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const large = parseFloat(st.fontSize) >= 24 || (parseFloat(st.fontSize) >= 18.66 && Number(st.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) out.push(e.tagName + ' ' + e.textContent.trim().slice(0, 30) + ' ' + ratio.toFixed(2));
}
return out;
"""


class Console:
    """The daemon's console and a browser pointed at it."""

    def __init__(self, project: Path, base: str, browser: Any, slapd: Slapd | None, subtree: str) -> None:
        self.project = project
        self.base = base
        self.browser = browser
        self.slapd = slapd
        self.subtree = subtree

    def open(self, path: str) -> None:
        self.browser.get(self.base + path)

    def find(self, css: str) -> Any:
        """The element ``css`` selects, waiting up to 15 s for it: a click's answer may
        still be loading."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.browser, 15).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))

    def type(self, css: str, text: str) -> None:
        """Replace what the field holds with ``text``, as typed."""
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def wait(self, check: Callable[[], bool], seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - an element replaced under us: look again
                pass
            time.sleep(0.1)
        main = self.browser.execute_script("var m = document.querySelector('main'); return m ? m.innerText : ''")
        raise AssertionError(f"timed out on {self.browser.current_url}:\n{main[:2000]}")

    def reconciled(self) -> None:
        """The directory's users in the store, linked (whichever tests ran before, on this
        process of the suite): one recon of the forward mapping through the API."""
        with httpx.Client(base_url=self.base, headers=ADMIN, timeout=120) as api:
            for _ in range(200):
                answer = api.post(f"/openidm/recon?_action=recon&mapping={FORWARD}&waitForCompletion=true")
                if answer.status_code != 409:  # a job of this mapping is running: wait for it
                    assert answer.json()["state"] == "SUCCESS", answer.text
                    return
                time.sleep(0.1)
        raise AssertionError("the forward mapping stayed locked")

    def login(self, user: str = "openidm-admin", password: str = "openidm-admin") -> None:
        self.open("/admin/login")
        self.find("#username").send_keys(user)
        self.find("#password").send_keys(password)
        self.submit(self.find("form button[type=submit]"))

    def submit(self, button: Any) -> None:
        """Click ``button`` and wait until the page it leaves is gone (the answer loaded)."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def gone(_driver: Any) -> bool:
            try:
                button.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as error:
                # Asked while the page is being replaced, Chromium answers so instead.
                if "does not belong to the document" in str(error):
                    return True
                raise
            return False

        button.click()
        WebDriverWait(self.browser, 20).until(gone)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser for the module's tests (it trusts the Salesforce stand-in's certificate)."""
    with chromium(accept_insecure_certs=True) as driver:
        yield driver


class Daemon:
    """A running ``idsync run``; ``output`` is what it wrote, once stopped."""

    def __init__(self, project: Path, base: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "IDSYNC_LOG__FORMAT": "json", "IDSYNC_LOG__LEVEL": "info",
                                          **(env or {})})
        self.output = ""
        deadline = time.monotonic() + 60  # a loaded machine starts it in seconds, not one
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{base}/openidm/info/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, which the daemon must survive cleanly (exit 0, no traceback)."""
        self.proc.send_signal(signal.SIGTERM)
        self.output = self.proc.communicate(timeout=30)[0]
        assert self.proc.returncode == 0, self.output
        assert "Traceback" not in self.output

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd, browser: Any) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    subtree = f"ou=console,ou=People,{slapd.base_dn}"
    slapd.add_ldif(f"dn: {subtree}\nobjectClass: top\nobjectClass: organizationalUnit\nou: console\n")
    project = sample_project(tmp, slapd, subtree, f"sqlite:///{tmp / 's.db'}")
    port = free_port()
    with (project / "conf" / "idsync.toml").open("a") as f:
        f.write(f'[api]\nenabled = true\nport = {port}\nmax_failed_logins = 3\n'
                f'[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / f"{JOB}.toml").write_text(JOB_TEXT)
    (project / "jobs.d" / f"{SLOW}.toml").write_text(
        f'schedule = "0 0 1 1 *"\nmappings = ["{FORWARD}"]\nmisfire = "skip"\npage_size = 1\n')
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(project, base)
    try:
        yield Console(project, base, browser, slapd, subtree)
    finally:
        daemon.stop()
    # Every change made in the console is logged with the account that made it.
    changes = [e for e in daemon.events()
               if e["event"].startswith(("console.job_", "console.object_", "console.recon_"))]
    assert all(e["user"] == "openidm-admin" for e in changes), changes


@pytest.fixture(autouse=True)
def _logged_in(request: pytest.FixtureRequest) -> None:
    """Every test of the LDAP sample's console but the login test starts logged in (whichever
    tests run)."""
    if request.node.name in ("test_login_refused_then_accepted", "test_enable_and_authorize_salesforce"):
        return
    console: Console = request.getfixturevalue("console")
    if console.browser.get_cookie("idsync_console") is None:
        console.login()


@pytest.fixture(scope="module")
def sf_console(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[tuple[Console, Any]]:
    """The Salesforce sample's daemon with its console on 127.0.0.2 (cookies of its own, in the
    same browser), its provisioner as shipped: the system disabled, its Consumer Key, Secret and
    refresh token naming variables the environment does not set; against the local Salesforce
    stand-in, whose Connected App lists the console's callback URL."""
    from salesforce_sample import SAMPLE as SF_SAMPLE
    from salesforce_sample import running_org, sf_env
    from salesforce_sample import sample_project as salesforce_project

    tmp = tmp_path_factory.mktemp("console-salesforce")
    for org in running_org(tmp):
        org.add_user(Username="ada@example.com", LastName="Lovelace", Email="ada@example.com", Alias="ada")
        project = salesforce_project(tmp, org, f"sqlite:///{tmp / 's.db'}")
        prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
        prov = json.loads(prov_file.read_text())
        prov["enabled"] = json.loads((SF_SAMPLE / "conf" / prov_file.name).read_text())["enabled"]  # as shipped
        prov_file.write_text(json.dumps(prov))
        port = free_port()
        with (project / "conf" / "idsync.toml").open("a") as f:
            f.write(f'[api]\nenabled = true\nhost = "127.0.0.2"\nport = {port}\n'
                    f'[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
        base = f"http://127.0.0.2:{port}"
        org.callback_urls.add(f"{base}/admin/oauth/callback")
        env = {k: v for k, v in sf_env(org).items() if k == "SALESFORCE_INSTANCE_URL"}
        daemon = Daemon(project, base, env)
        try:
            yield Console(project, base, browser, None, ""), org
        finally:
            daemon.stop()
        # The code and the token are in no log line.
        token = (project / "state" / "oauth" / "salesforce.refresh-token").read_text().strip()
        assert token not in daemon.output and "aPrx" not in daemon.output and org.client_secret not in daemon.output
        assert any(e["event"] == "console.system_settings_saved" and e["user"] == "openidm-admin"
                   for e in daemon.events())
        assert any(e["event"] == "console.system_authorized" and e["user"] == "openidm-admin"
                   for e in daemon.events())


def test_login_refused_then_accepted(console: Console) -> None:
    """A wrong password shows an error and no session; the right one opens the dashboard,
    whose answers carry the strict Content-Security-Policy and a Strict, HttpOnly cookie; when
    the session ends, the refreshing dashboard turns into the login form (not a login form
    inside the dashboard)."""
    console.browser.delete_all_cookies()
    console.open("/admin/")
    assert console.browser.current_url.startswith(console.base + "/admin/login")
    console.login(password="wrong")
    assert "Wrong user name or password" in console.text("#login-error")
    console.login()
    console.wait(lambda: console.text("h1") == "Dashboard")
    assert JOB in console.text("#dashboard")
    assert console.text("#daemon-state") == "running"
    cookie = console.browser.get_cookie("idsync_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    answer = httpx.get(console.base + "/admin/", cookies={"idsync_console": cookie["value"]})
    assert answer.status_code == 200
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "<script>" not in answer.text
    # The session ends while the dashboard refreshes itself: the page becomes the login form.
    console.browser.delete_cookie("idsync_console")
    console.wait(lambda: console.browser.current_url.startswith(console.base + "/admin/login"), seconds=10)
    assert console.find("#username") and not console.browser.find_elements("css selector", "#dashboard")


def test_save_cron_expression(console: Console) -> None:
    """Batch synchronization > the job: a broken expression is refused with its reason as it is
    typed and again on Save, and never reaches the file; a good one is described in words with
    its next fires, Save writes it (comments kept), the running daemon takes it without a
    restart (the page's next fire, ``idsync jobs``) and the log names the account."""
    job_file = console.project / "jobs.d" / f"{JOB}.toml"
    console.open("/admin/jobs")
    console.find(f'a[href="/admin/jobs/{JOB}"]').click()
    console.wait(lambda: "Synchronize active LDAP users" in console.text("#job-title"))
    console.type("#schedule", "0 61 * * * ?")
    console.wait(lambda: "61" in console.text("#cron-problem"))
    console.find("#save").click()
    console.wait(lambda: "schedule" in console.text("#save-error"))
    assert job_file.read_text() == JOB_TEXT
    console.type("#schedule", "0 0 12 ? * 2#1,6#3")  # each # day in words with its own week
    console.wait(lambda: "the first Monday and the third Friday" in console.text("#cron-description"))
    console.type("#schedule", "0 30 2 * * ?")
    console.wait(lambda: "02:30" in console.text("#cron-description"))
    assert len(console.find("#cron-fires").find_elements("css selector", "li")) == 5
    console.find("#save").click()
    console.wait(lambda: "Saved ldap-users" in console.text(".flash.ok"))
    assert " 02:30:00 UTC" in console.text(".flash.ok")  # in the job's time zone, as the page shows times
    text = job_file.read_text()
    assert 'schedule = "0 30 2 * * ?"       # once a year until someone picks a time' in text
    assert 'misfire = "skip"             # keep this comment' in text
    assert text.startswith("# Synchronize active LDAP users")
    listed = idsync(console.project, "jobs")
    assert "0 30 2 * * ?" in listed.stdout, listed.stdout + listed.stderr
    assert "02:30" in console.text("#job-next")


def test_run_now_and_watch_it_finish(console: Console) -> None:
    """Run now starts the job; the page's state updates by itself until the run succeeded;
    its link opens the run's summary and audit, which links each entry to its objects, can
    be searched, and is listed under Runs with the state filter."""
    console.open(f"/admin/jobs/{JOB}")
    console.find("#run-now").click()
    console.wait(lambda: "Started" in console.text(".flash.ok"))
    console.wait(lambda: "SUCCESS" in console.text("#job-last"), seconds=60)
    console.find("#job-last a").click()
    console.wait(lambda: console.text("#run-state") == "SUCCESS")
    assert FORWARD in console.text("h1")
    rows = console.find("#audit").find_elements("css selector", "tbody tr")
    assert len(rows) >= 2 and FORWARD in console.text("h1")
    links = [a.get_attribute("href") for a in console.find("#audit").find_elements("css selector", "a")]
    assert any("/admin/managed/user/" in h for h in links) and any("/admin/system/ldap/" in h for h in links)
    console.find("#a-status").send_keys("FAILURE")
    console.find("form[role=search] button").click()
    console.wait(lambda: "No audit entries match" in console.text("#audit"))
    console.open("/admin/runs?state=SUCCESS")
    assert FORWARD in console.text("#runs") and "SUCCESS" in console.text("#runs")
    console.open("/admin/runs?state=FAILED")
    assert "No runs match" in console.text("#runs")


def test_preview_then_reconcile(console: Console) -> None:
    """Mappings > the mapping shows its properties and policies; Preview of a directory with
    a new user records that it would create it, and why, without creating it; Reconcile
    then creates it."""
    console.slapd.add_ldif(f"dn: uid=newcomer,{console.subtree}\nobjectClass: inetOrgPerson\nuid: newcomer\n"
                           "cn: New Comer\nsn: Comer\ngivenName: New\nmail: newcomer@example.com\n")
    console.open(f"/admin/mappings/{FORWARD}")
    assert "uid" in console.text("#properties") and "userName" in console.text("#properties")
    console.find("#preview").click()
    console.wait(lambda: console.text("#run-state") == "SUCCESS")
    assert "preview" in console.text("h1")
    assert "Would change" in console.text("#run-summary") and int(console.text("#run-created")) >= 1
    console.find("#a-situation").send_keys("ABSENT")
    console.find("form[role=search] button").click()
    console.wait(lambda: "ABSENT" in console.text("#audit") and "CREATE" in console.text("#audit"))
    assert "CONFIRMED" not in console.text("#audit")
    with httpx.Client(base_url=console.base, headers=ADMIN) as api:
        query = "/openidm/managed/user?_queryFilter=userName+eq+%22newcomer%22"
        assert api.get(query).json()["resultCount"] == 0
        console.open(f"/admin/mappings/{FORWARD}")
        console.find("#reconcile").click()
        console.wait(lambda: console.text("#run-state") == "SUCCESS")
        assert int(console.text("#run-created")) >= 1
        assert api.get(query).json()["resultCount"] == 1


def test_edit_user_pushes_to_ldap(console: Console) -> None:
    """Identities: the search box finds bjensen; her page shows her linked LDAP entry; a
    changed telephone number is saved with implicit sync, reaches the directory, and the
    page says so; an invalid value is refused with the managed.json reason."""
    console.reconciled()
    console.open("/admin/managed/user")
    console.find("#q").send_keys("bjen")
    console.find("form[role=search] button").click()
    console.wait(lambda: "bjensen" in console.text("#objects"))
    assert "scarter" not in console.text("#objects")
    console.find("#objects tbody a").click()
    console.wait(lambda: "system/ldap/account" in console.text("#linked"))
    console.type("#p-telephoneNumber", "+1 408 555 0199")
    console.find("#save").click()
    console.wait(lambda: "pushed" in console.text(".flash.ok"))
    assert "managedUser_systemLdapAccounts: pushed" in console.text(".flash.ok")
    entry = ldap_entry(console.slapd, f"uid=bjensen,{console.subtree}")
    assert entry is not None and entry["telephonenumber"] == ["+1 408 555 0199"]
    history = console.text("#history")  # the edit, by whom, beside the push it started
    assert "openidm-admin: edited managed/user/" in history and "managedUser_systemLdapAccounts" in history
    page = console.browser.current_url
    console.find("#p-userName").clear()
    console.find("#save").click()
    console.wait(lambda: "userName" in console.text(".flash.bad"))
    assert ldap_entry(console.slapd, f"uid=bjensen,{console.subtree}") is not None
    console.browser.get(page.split("?")[0])
    assert console.find("#p-userName").get_attribute("value") == "bjensen"
    console.open("/admin/managed/user?_queryFilter=" + quote('telephoneNumber eq "+1 408 555 0199"'))
    assert "bjensen" in console.text("#objects")


def test_new_user_is_pushed_to_ldap(console: Console) -> None:
    """Identities > New user: Save creates the managed user, implicit sync creates the
    directory entry, and the user's page lists it under linked objects."""
    console.open("/admin/managed/user")
    console.find("#new-object").click()
    for field, value in (("userName", "fdoe"), ("givenName", "Felicitas"), ("sn", "Doe"),
                         ("mail", "fdoe@example.com"), ("description", "Felicitas Doe")):
        console.type(f"#p-{field}", value)
    console.find("#save").click()
    console.wait(lambda: "Created" in console.text(".flash.ok"))
    assert "managedUser_systemLdapAccounts: pushed" in console.text(".flash.ok")
    assert "system/ldap/account" in console.text("#linked")
    entry = ldap_entry(console.slapd, f"uid=fdoe,{console.subtree}")
    assert entry is not None and entry["mail"] == ["fdoe@example.com"]


def test_add_a_user_to_a_role(console: Console) -> None:
    """Identities > role: a new role with bjensen as a member becomes an LDAP group with her
    in it; scarter added on the role's page (members, as JSON) is a member of the managed role
    (the sample maps members to the group only when it creates it, as PingIDM's does)."""
    bjensen, scarter = (f"uid={u},{console.subtree}" for u in ("bjensen", "scarter"))
    console.open("/admin/managed/role/new")
    console.type("#p-name", "auditors")
    console.type("#p-members", json.dumps([bjensen]))
    console.find("#save").click()
    console.wait(lambda: "Created" in console.text(".flash.ok"))
    assert "managedRole_systemLdapGroups: pushed" in console.text(".flash.ok")
    group = ldap_entry(console.slapd, f"cn=auditors,{console.subtree}")
    assert group is not None and [m.lower() for m in group["uniquemember"]] == [bjensen.lower()]
    console.type("#p-members", json.dumps([bjensen, scarter]))
    console.find("#save").click()
    console.wait(lambda: "Saved" in console.text(".flash.ok"))
    with httpx.Client(base_url=console.base, headers=ADMIN) as api:
        roles = api.get("/openidm/managed/role?_queryFilter=" + quote('name eq "auditors"')).json()["result"]
    assert roles[0]["members"] == [bjensen, scarter]


def test_systems(console: Console) -> None:
    """Systems: the LDAP connection tested OK (and again with Test); its accounts browsed
    read-only, one opened."""
    console.open("/admin/systems")
    assert "ldap" in console.text("#systems") and "OK" in console.text("#systems")
    console.find("#test").click()
    console.wait(lambda: "Every system answered" in console.text(".flash.ok"))
    console.find('#systems a[href$="/system/ldap/account"]').click()
    console.wait(lambda: "bjensen" in console.text("#objects"))
    console.find("#objects tbody a").click()
    console.wait(lambda: "uid" in console.text("#object"))


def test_pages_fit_a_phone_and_a_laptop(console: Console) -> None:
    """The dashboard, the jobs page, a run, a mapping, the users and the systems fit a
    phone's width (no sideways scrolling of the page) and a laptop's; every form field has a
    label, every text has WCAG AA contrast with what is behind it, and the keyboard's first
    stop is the link to the content. With IDSYNC_SCREENSHOTS=DIR the laptop views of the
    first three are saved there (the README's pictures)."""
    console.reconciled()
    console.open(f"/admin/runs?mapping={FORWARD}&state=SUCCESS")
    run_href = console.find("#runs tbody a").get_attribute("href")
    pages = {"dashboard": "/admin/", "jobs": f"/admin/jobs/{JOB}", "run": run_href.replace(console.base, ""),
             "mapping": f"/admin/mappings/{FORWARD}", "users": "/admin/managed/user", "systems": "/admin/systems"}
    shots = os.environ.get("IDSYNC_SCREENSHOTS")
    for width, height in ((390, 844), (1280, 900)):
        console.browser.set_window_size(width, height)
        for name, path in pages.items():
            console.open(path)
            console.wait(lambda: console.text("h1") != "")
            overflow = console.browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name} is {overflow}px wider than a {width}px screen"
            unlabeled = console.browser.execute_script(
                "return [...document.querySelectorAll('input:not([type=hidden]), select')]"
                ".filter(e => !(e.labels && e.labels.length)).map(e => e.name)")
            assert unlabeled == [], f"{name}: fields without a label: {unlabeled}"
            if shots and width > 1000 and name in ("dashboard", "jobs", "run"):
                Path(shots).mkdir(parents=True, exist_ok=True)
                console.browser.save_screenshot(str(Path(shots) / f"console-{name}.png"))
            faint = console.browser.execute_script(_LOW_CONTRAST)
            assert faint == [], f"{name}: text below WCAG AA contrast (4.5:1, 3:1 when large): {faint}"
            if width < 1000:
                continue
            from selenium.webdriver.common.keys import Keys

            console.find("body").send_keys(Keys.TAB)  # the keyboard's first stop skips to the content
            assert console.browser.switch_to.active_element.text == "Skip to content"
            console.browser.switch_to.active_element.send_keys(Keys.ENTER)
            assert console.browser.current_url.endswith("#main")


def test_csrf_refused(console: Console) -> None:
    """A POST with the session's cookie but without its CSRF token (as a forged form from
    another site would send) is refused with 403 and changes nothing."""
    console.reconciled()
    cookie = console.browser.get_cookie("idsync_console")
    before = (console.project / "jobs.d" / f"{JOB}.toml").read_text()
    with httpx.Client(base_url=console.base, cookies={"idsync_console": cookie["value"]}) as client:
        for path, form in ((f"/admin/jobs/{JOB}", {"schedule": "@hourly"}), (f"/admin/jobs/{JOB}/run", {}),
                           (f"/admin/jobs/{JOB}/delete", {}), ("/admin/logout", {}),
                           (f"/admin/mappings/{FORWARD}/reconcile", {}), ("/admin/systems/test", {}),
                           ("/admin/jobs/new", {"name": "forged", "schedule": "@hourly", "mappings": FORWARD})):
            refused = client.post(path, data={**form, "csrf": "forged"})
            assert refused.status_code == 403, path
            assert "security token" in refused.text
        users = client.get("/admin/managed/user?q=bjensen")
        user_path = users.text.split('href="/admin/managed/user/', 1)[1].split('"', 1)[0]
        refused = client.post(f"/admin/managed/user/{user_path}", data={"p.description": "forged"})
        assert refused.status_code == 403
        assert client.get("/admin/").status_code == 200  # the session survived
    assert not (console.project / "jobs.d" / "forged.toml").exists()
    assert (console.project / "jobs.d" / f"{JOB}.toml").read_text() == before


def test_add_and_remove_a_job(console: Console) -> None:
    """Add a job: a bad expression is refused with its reason and writes nothing; a good one
    creates jobs.d/NAME.toml, which the scheduler takes at once; Remove takes it out again,
    keeping the file aside."""
    console.open("/admin/jobs/new")
    console.find("#name").send_keys("nightly")
    console.find(f'input[name=mappings][value="{FORWARD}"]').click()
    console.type("#schedule", "0 0 25 * * ?")
    console.find("form.card button[type=submit]").click()
    console.wait(lambda: "out of range" in console.text("#save-error"))
    assert not (console.project / "jobs.d" / "nightly.toml").exists()
    console.type("#schedule", "0 0 3 * * ?")
    console.find("form.card button[type=submit]").click()
    console.wait(lambda: "Added nightly" in console.text(".flash.ok"))
    assert "03:00:00" in console.text("#job-next")
    assert 'schedule = "0 0 3 * * ?"' in (console.project / "jobs.d" / "nightly.toml").read_text()
    console.browser.execute_script("window.confirm = () => true")
    console.find("#remove").click()
    console.wait(lambda: "Removed nightly" in console.text(".flash.ok"))
    assert not (console.project / "jobs.d" / "nightly.toml").exists()
    assert (console.project / "jobs.d" / "nightly.toml.removed").exists()
    assert "nightly" not in idsync(console.project, "jobs").stdout


def test_watch_a_long_run_and_cancel_a_job(console: Console) -> None:
    """With 1500 more directory users: a preview's page shows a progress bar and follows the
    run by itself until it ends, then shows the run's audit (the users it would create); a job
    run in small pages shows as running and Cancel stops it at a page boundary (CANCELED)."""
    add_users(console.slapd, console.subtree, 1500)
    console.open(f"/admin/jobs/{SLOW}")
    console.find("#run-now").click()
    console.wait(lambda: "running" in console.text("#job-running"))
    console.find("#cancel").click()
    console.wait(lambda: "stop" in console.text(".flash.ok"))
    console.wait(lambda: "CANCELED" in console.text("#job-last"), seconds=60)
    console.open(f"/admin/mappings/{FORWARD}")
    console.find("#preview").click()
    console.wait(lambda: "/admin/runs/" in console.browser.current_url)
    seen_active = console.text("#run-state") == "ACTIVE"
    if seen_active:
        assert console.find("#run-progress").get_attribute("max") == "100"
    console.wait(lambda: console.text("#run-state") == "SUCCESS", seconds=60)  # no reload by the test
    assert seen_active, "the preview ended before its page showed it running"
    console.wait(lambda: "ABSENT" in console.text("#audit") and "DRY_RUN" in console.text("#audit"))


def test_every_change_works_without_javascript(console: Console) -> None:
    """In a browser with JavaScript off: log in, save a job's expression (the file changes),
    Run now, Preview a mapping, edit a user; each is a plain form answered with a page."""
    console.reconciled()
    with chromium(javascript=False) as plain:
        other = Console(console.project, console.base, plain, console.slapd, console.subtree)
        other.login()
        other.wait(lambda: other.text("h1") == "Dashboard")
        other.open(f"/admin/jobs/{JOB}")
        other.type("#schedule", "0 45 4 * * ?")
        time.sleep(0.5)
        assert "04:45" not in other.text("#cron-preview")  # no script previews it: JavaScript is off
        other.find("#save").click()
        other.wait(lambda: "Saved" in other.text(".flash.ok"))
        assert 'schedule = "0 45 4 * * ?"' in (console.project / "jobs.d" / f"{JOB}.toml").read_text()
        other.find("#run-now").click()
        other.wait(lambda: "Started" in other.text(".flash.ok"))

        def idle() -> bool:  # no script refreshes the page: look again until the run ended
            other.open(f"/admin/jobs/{JOB}")
            return other.text("#job-running") == "idle"

        other.wait(idle, seconds=60)  # a preview of a mapping that is running is refused
        other.open(f"/admin/mappings/{FORWARD}")
        other.find("#preview").click()
        other.wait(lambda: "preview" in other.text("h1"))
        other.open("/admin/managed/user?q=scarter")
        other.find("#objects tbody a").click()
        other.type("#p-description", "edited without JavaScript")
        other.find("#save").click()
        other.wait(lambda: "Saved" in other.text(".flash.ok"))


def test_enable_and_authorize_salesforce(sf_console: tuple[Console, Any]) -> None:
    """PingIDM's admin UI walkthrough of the Salesforce sample. Systems shows the disabled
    Salesforce system's settings as not set; its Settings page refuses a Custom login URL that
    is not https, with the reason, writing nothing; Enable, Custom pointing at the stand-in,
    Consumer Key and Secret, Save: the settings are kept in the state directory (0700/0600,
    the secret encrypted), the daemon reloads, Systems says they come from the console and the
    secret is never on a page. Then the system needs consent; Authorize sends the browser to the
    provider's login and consent page; Allow brings it back to the console, which keeps the
    refresh token in the state directory (0600), never on the page, and tests the connection;
    Back to Systems is logged in again (the session cookie is sent once the navigation is the
    console's own), shows it authorized, and browses Salesforce users with the kept token;
    the same callback opened again is refused; Reconcile of the Salesforce mapping brings the
    org's user into the store."""
    from salesforce_sample import FORWARD as SF_FORWARD

    console, org = sf_console
    browser = console.browser
    overlay = console.project / "state" / "connectors" / "salesforce.json"
    try:
        console.login()
        console.open("/admin/systems")
        assert "disabled" in console.text("#systems")
        assert console.text("#settings-row-salesforce").split()[1:] == ["conf/"] * 4 + ["Settings"]
        console.submit(console.find("#settings-salesforce"))
        assert "not set" in console.text("#secret-state")
        browser.set_window_size(390, 844)  # the form fits a phone
        assert browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
        browser.set_window_size(1280, 900)
        console.find("#enabled").click()
        console.find("#login-custom").click()
        console.type("#custom-url", org.url.replace("https:", "http:"))
        console.type("#client-id", org.client_id)
        console.type("#client-secret", org.client_secret)
        console.submit(console.find("#save"))
        assert "must be an https URL" in console.text("#settings-error")
        assert not overlay.exists() and console.find("#enabled").is_selected()
        console.type("#custom-url", org.url)
        console.type("#client-secret", org.client_secret)
        console.submit(console.find("#save"))
        console.wait(lambda: "Saved the settings of salesforce (enabled)" in console.text(".flash.ok"))
        assert overlay.stat().st_mode & 0o777 == 0o600 and overlay.parent.stat().st_mode & 0o777 == 0o700
        assert org.client_secret not in overlay.read_text() and org.client_id in overlay.read_text()
        assert console.text("#settings-row-salesforce").split()[1:5] == ["console"] * 4
        assert org.client_secret not in browser.page_source
        console.submit(console.find("#settings-salesforce"))
        assert console.find("#login-custom").is_selected() and "set (from console)" in console.text("#secret-state")
        assert org.client_secret not in browser.page_source
        console.open("/admin/systems")
        assert "needs consent" in console.text("#consent-salesforce")
        assert "no refresh token yet" in console.text("#systems")
        console.submit(console.find("#authorize-salesforce"))
        assert browser.current_url.startswith(org.url + "/services/oauth2/authorize?")
        console.find("#username").send_keys("admin@example.com")
        console.find("#password").send_keys("fake-password-1")
        console.submit(console.find("#oaapprove"))
        console.wait(lambda: "salesforce is authorized" in console.text("#consent-outcome"))
        assert "OK" in console.text("#consent-test")
        callback = browser.current_url
        assert callback.startswith(console.base + "/admin/oauth/callback?code=")
        stored = console.project / "state" / "oauth" / "salesforce.refresh-token"
        token = stored.read_text().strip()
        assert token in org.refresh_tokens and stored.stat().st_mode & 0o777 == 0o600
        assert token not in browser.page_source
        console.submit(console.find("#back-to-systems"))
        console.wait(lambda: "authorized" in console.text("#consent-salesforce"))
        browser.set_window_size(390, 844)  # the callback URL to register fits a phone too
        assert browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
        browser.set_window_size(1280, 900)
        console.submit(console.find("#test"))
        console.wait(lambda: "Every system answered" in console.text(".flash.ok"))
        console.open("/admin/system/salesforce/User")
        console.wait(lambda: "ada@example.com" in console.text("#objects"))
        browser.get(callback)
        assert "refused" in console.text("#consent-failure")
        assert stored.read_text().strip() == token and org.consents == 1
        console.open(f"/admin/mappings/{SF_FORWARD}")
        console.submit(console.find("#reconcile"))
        console.wait(lambda: console.text("#run-state") == "SUCCESS")
        assert int(console.text("#run-created")) >= 1
    finally:
        browser.get("about:blank")
