"""PingIDM's outbound email service (``conf/external.email.json``, ``external/email``)
against a real SMTP server the test runs (aiosmtpd, on loopback): a managed object's
script sends a welcome mail, the REST API sends one, STARTTLS and SMTPS are verified
against the server's CA, AUTH logs in without the password ever showing, a refused
recipient or a line break in a header sends nothing, PingIDM's ``resetPassword`` action
stores a new password and mails that same password, and a project without the file gets
a clear error. ``validate`` names what is wrong in the file by key."""

from __future__ import annotations

import html
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from api_server import free_port
from file_projects import file_project
from idsync.config.project import load_project, validate_project
from idsync.errors import ConfigError, ConfigNote, ConfigWarning, ScriptError
from idsync.managed.router import run_recon_scripted, scripting
from idsync.query import parse
from idsync.resource import QuerySpec
from idsync.resources import Resources, check_system
from idsync.store.database import Store
from idsync.store.objects import ManagedResource
from idsync.store.passwords import same_secret
from idsync.sync.options import ReconOptions
from idsync_dev import certs as test_tls
from test_custom_endpoints import _serve

_JS = "text/javascript"
PASSWORD = "s3cret-Mail-pw"  # the SMTP account's; must show nowhere
# PingIDM's default managed.json's action, as it ships.
RESET_PASSWORD = {
    "type": _JS,
    "source": "require('ui/resetPassword').sendMail(object, subject, message, passwordRules, passwordLength);",
    "globals": {
        "subject": "Your password has been reset by an administrator",
        "message": "<html><body><p>{{object.userName}}'s new password is: {{password}}</p></body></html>",
        "passwordRules": [{"rule": "UPPERCASE", "minimum": 1}, {"rule": "LOWERCASE", "minimum": 1},
                          {"rule": "INTEGERS", "minimum": 1}, {"rule": "SPECIAL", "minimum": 1}],
        "passwordLength": 16,
    },
}
WELCOME = ("openidm.action('external/email', 'send', {to: object.mail, subject: 'Welcome, ' + object.givenName, "
           "body: 'Your account is ' + object.userName + '.'});")


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    """An aiosmtpd handler keeping what arrives; it refuses the recipients in ``refused``."""

    mails: list[Mail] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refused:
            return self.refused[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK: queued"


@contextmanager
def smtp_server(**options: Any) -> Iterator[Inbox]:
    """An SMTP server on a free loopback port with aiosmtpd's ``options`` (TLS, AUTH)."""
    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, **options)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> test_tls.TestCertificates:
    """A throwaway CA and the server's certificate for 127.0.0.1."""
    return test_tls.make_test_certificates(tmp_path_factory.mktemp("smtp-tls"), ("127.0.0.1",))


def _server_tls(certs: test_tls.TestCertificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert_file, certs.key_file)
    return context


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


def _project(tmp_path: Path, email: dict[str, Any] | None, **user: Any) -> Path:
    """A project on SQLite with the repository's managed.json, ``user``'s keys added to
    the user type, and ``email`` as conf/external.email.json (none when ``None``)."""
    project = file_project(tmp_path, [])
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    next(o for o in managed["objects"] if o["name"] == "user").update(user)
    managed_file.write_text(json.dumps(managed))
    if email is not None:
        (project / "conf" / "external.email.json").write_text(json.dumps(email))
    return project


def _email(inbox: Inbox, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": inbox.port, "from": "Identity team <idm@example.com>", **extra}


def _text(mail: Mail) -> str:
    body = mail.message.get_body(("html", "plain"))
    assert body is not None
    return str(body.get_content())


def _send(project_dir: Path, *messages: dict[str, Any] | tuple[str, dict[str, Any]]) -> list[httpx.Response]:
    """POST each message to external/email?_action=send (or the action paired with it) over
    one API; the answers."""
    answers: list[httpx.Response] = []

    async def visit(api: httpx.AsyncClient) -> None:
        for message in messages:
            action, body = message if isinstance(message, tuple) else ("send", message)
            answers.append(await api.post(f"/openidm/external/email?_action={action}", json=body))

    _serve(project_dir, visit)
    return answers


def test_an_oncreate_script_sends_a_welcome_mail(tmp_path: Path, inbox: Inbox) -> None:
    """A user created over the API runs the type's onCreate, whose
    openidm.action('external/email', 'send', ...) delivers a mail with its subject and
    body, From the configuration's from (none given), To the new user's mail."""
    project = _project(tmp_path, _email(inbox), onCreate={"type": _JS, "source": WELCOME})

    async def visit(api: httpx.AsyncClient) -> None:
        made = await api.post("/openidm/managed/user?_action=create",
                              json={"userName": "dee", "givenName": "Dee", "sn": "Doe", "mail": "dee@example.com"})
        assert made.status_code == 201, made.text

    _serve(project, visit)
    (mail,) = [m for m in inbox.mails if m.recipients == ["dee@example.com"]]
    assert mail.sender == "idm@example.com"
    assert mail.message["From"] == "Identity team <idm@example.com>" and mail.message["To"] == "dee@example.com"
    assert mail.message["Subject"] == "Welcome, Dee" and mail.message["Message-ID"]
    assert mail.message.get_content_type() == "text/plain" and _text(mail).strip() == "Your account is dee."


def test_the_rest_api_sends_pingidms_message(tmp_path: Path, inbox: Inbox) -> None:
    """POST external/email?_action=send answers PingIDM's {"status": "OK", "message": "Email
    sent"} once the server took the message: to and cc as lists or comma-separated strings
    become headers, bcc only an envelope recipient, type text/html an HTML body, from the
    message's own; sendEmail (the name PingIDM's resetPassword uses) is the same action."""
    project = _project(tmp_path, _email(inbox))
    sent, again = _send(project, {"from": "helpdesk@example.com", "to": ["ann@example.com", "Bob <bob@example.com>"],
                                  "cc": "cy@example.com", "bcc": "audit@example.com", "subject": "Réunion à 10 h",
                                  "body": "<p>See you</p>", "type": "text/html"},
                        ("sendEmail", {"to": "ann@example.com", "subject": "again"}))
    assert sent.status_code == 200 and sent.json() == {"status": "OK", "message": "Email sent"}
    mail, second = inbox.mails
    assert mail.sender == "helpdesk@example.com"
    assert mail.recipients == ["ann@example.com", "bob@example.com", "cy@example.com", "audit@example.com"]
    assert mail.message["To"] == "ann@example.com, Bob <bob@example.com>" and mail.message["Cc"] == "cy@example.com"
    assert "Bcc" not in mail.message and "audit" not in mail.message.as_string()
    assert mail.message["Subject"] == "Réunion à 10 h"
    assert mail.message.get_content_type() == "text/html" and _text(mail).strip() == "<p>See you</p>"
    assert again.status_code == 200 and second.message["Subject"] == "again"


@pytest.mark.parametrize(("message", "problem"), [
    ({"to": "ann@example.com", "subject": "hi\r\nBcc: thief@example.com"}, "subject must be one line"),
    ({"to": "ann@example.com\nBcc: thief@example.com", "subject": "hi"}, "to must be one line"),
    ({"to": "ann@example.com", "from": "idm@example.com\r\nBcc: thief@example.com"}, "from must be one line"),
    ({"to": ["ann@example.com", "x@example.com\nBcc: thief@example.com"]}, "to must be one line"),
    ({"subject": "nobody"}, "no recipient"),
    ({"to": "not an address"}, "is not an email address"),
    ({"to": "ann@example.com", "type": "application/pdf"}, "type 'application/pdf' is not sent"),
])
def test_a_bad_message_is_400_and_sends_nothing(tmp_path: Path, inbox: Inbox, message: dict[str, Any],
                                                problem: str) -> None:
    """A line break in the subject, from or a recipient (which would start a header of its
    own: an injected Bcc), no recipient, something that is not an address, or a type
    PingIDM does not send, is refused with 400 saying what, and nothing reaches the server."""
    (answer,) = _send(_project(tmp_path, _email(inbox)), message)
    assert answer.status_code == 400 and problem in answer.json()["message"], answer.text
    assert inbox.mails == []


def test_a_refused_recipient_is_an_error_with_the_servers_reason(tmp_path: Path, inbox: Inbox) -> None:
    """A recipient the server refuses for good (550) is a 400 quoting the server's reply,
    and the message goes to no one, not even the accepted recipients; a 4xx refusal
    (try later) is 503."""
    inbox.refused["gone@example.com"] = "550 5.1.1 <gone@example.com>: Recipient address rejected: no such user"
    inbox.refused["full@example.com"] = "452 4.2.2 Mailbox full"
    project = _project(tmp_path, _email(inbox))
    refused, later = _send(project, {"to": "ann@example.com, gone@example.com", "subject": "hi"},
                           {"to": "full@example.com", "subject": "hi"})
    assert refused.status_code == 400, refused.text
    assert "gone@example.com: 550 5.1.1" in refused.json()["message"] and "no such user" in refused.json()["message"]
    assert later.status_code == 503 and "452 4.2.2 Mailbox full" in later.json()["message"]
    assert inbox.mails == []


def test_starttls_is_verified_against_the_servers_ca(tmp_path: Path, certs: test_tls.TestCertificates) -> None:
    """With starttls.enable the message goes over TLS verified against caFile; without it
    the throwaway CA is not trusted and the send is refused (503, naming caFile) before
    anything is said in clear; a server that does not offer STARTTLS is refused too."""
    with smtp_server(tls_context=_server_tls(certs), require_starttls=True) as inbox:
        trusted = _project(tmp_path / "trusted", _email(inbox, starttls={"enable": True}, caFile=str(certs.ca_file)))
        assert _send(trusted, {"to": "ann@example.com", "subject": "over TLS"})[0].status_code == 200
        assert [m.message["Subject"] for m in inbox.mails] == ["over TLS"]

        untrusted = _project(tmp_path / "untrusted", _email(inbox, starttls={"enable": True}))
        (refused,) = _send(untrusted, {"to": "ann@example.com", "subject": "not over TLS"})
        assert refused.status_code == 503, refused.text
        assert "certificate does not verify" in refused.json()["message"] and "caFile" in refused.json()["message"]
        assert len(inbox.mails) == 1
    with smtp_server() as plain:
        asked = _project(tmp_path / "plain", _email(plain, starttls={"enable": True}))
        (refused,) = _send(asked, {"to": "ann@example.com", "subject": "in clear?"})
        assert refused.status_code == 503 and "does not offer STARTTLS" in refused.json()["message"]
        assert plain.mails == []


def test_ssl_connects_with_tls_from_the_first_byte(tmp_path: Path, certs: test_tls.TestCertificates) -> None:
    """ssl.enable speaks SMTPS, verified against caFile."""
    with smtp_server(ssl_context=_server_tls(certs)) as inbox:
        project = _project(tmp_path, _email(inbox, ssl={"enable": True}, caFile=str(certs.ca_file)))
        assert _send(project, {"to": "ann@example.com", "subject": "SMTPS"})[0].status_code == 200
        assert [m.message["Subject"] for m in inbox.mails] == ["SMTPS"]


def test_auth_logs_in_and_the_password_shows_nowhere(tmp_path: Path, certs: test_tls.TestCertificates,
                                                     monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """auth.enable logs in with the user name and the password (here from an &{ENV} token)
    and the mail arrives; a wrong password is 503 with the server's reason. The password is
    in no log line (structlog's or the standard library's), no answer and no error, nor in
    what scripts read as config/external.email."""
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    auth = {"enable": True, "username": "mailer", "password": "&{SMTP_PASSWORD}"}
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    with smtp_server(tls_context=_server_tls(certs), require_starttls=True, auth_required=True,
                     authenticator=_authenticate) as inbox, structlog.testing.capture_logs() as logs:
        config = _email(inbox, starttls={"enable": True}, caFile=str(certs.ca_file), auth=auth)
        project = _project(tmp_path / "right", config)
        (sent,) = _send(project, {"to": "ann@example.com", "subject": "logged in"})
        assert sent.status_code == 200, sent.text
        assert [m.message["Subject"] for m in inbox.mails] == ["logged in"]
        monkeypatch.setenv("SMTP_PASSWORD", "wrong-" + PASSWORD)
        wrong = _project(tmp_path / "wrong", config)
        (refused,) = _send(wrong, {"to": "ann@example.com", "subject": "not logged in"})
        assert refused.status_code == 503 and "refused the credentials of mailer: 535" in refused.json()["message"]
        answers += [sent.text, refused.text]
        loaded = load_project(project)
        store = Store.open(loaded.settings.store_url())
        try:
            with scripting(loaded, store):
                shown = loaded.scripts.compile({"type": _JS, "source": "openidm.read('config/external.email')"},
                                               file="t", key="k", base_dir=project)()
        finally:
            store.close()
        assert shown["auth"] == {"enable": True, "username": "mailer"} and shown["from"] == config["from"]
        answers.append(json.dumps(shown))
    assert len(inbox.mails) == 1
    assert any(e["event"] == "email.failed" for e in logs) and any(e["event"] == "email.sent" for e in logs)
    # The server's own log (mail.log) is the server's business; everything idsync wrote is checked.
    written = [json.dumps(e, default=str) for e in logs] + [r.getMessage() for r in caplog.records
                                                             if not r.name.startswith("mail.log")]
    out = capsys.readouterr()
    for text in (*written, *answers, out.out, out.err):
        assert PASSWORD not in text


def test_reset_password_stores_and_mails_the_same_new_password(tmp_path: Path, inbox: Inbox) -> None:
    """PingIDM's default resetPassword action runs on idsync's own modules: it answers 200,
    the user's stored password changes, and the mail to the user's address (HTML, from the
    configuration's from) carries that very password: each replay of the script (one per
    openidm call) drew the same random password from the run's seed."""
    project = _project(tmp_path, _email(inbox), actions={"resetPassword": RESET_PASSWORD})
    problems = validate_project(project, check_system)
    assert not [p for p in problems if "resetPassword" in str(p) or "external.email" in str(p)], problems

    async def visit(api: httpx.AsyncClient) -> None:
        made = await api.post("/openidm/managed/user?_action=create", json={
            "userName": "quentin.r", "givenName": "Quentin", "sn": "Zebulon", "mail": "quentin@example.com",
            "password": "Initial-Passw0rd"})
        assert made.status_code == 201, made.text
        reset = await api.post(f"/openidm/managed/user/{made.json()['_id']}?_action=resetPassword", json={})
        assert reset.status_code == 200, reset.text
        assert "password" not in reset.json()

    _serve(project, visit)
    (mail,) = [m for m in inbox.mails if m.recipients == ["quentin@example.com"]]
    assert mail.message["Subject"] == "Your password has been reset by an administrator"
    assert mail.message["From"] == "Identity team <idm@example.com>" and mail.message.get_content_type() == "text/html"
    found = re.search(r"quentin\.r's new password is: (.*?)</p>", _text(mail))
    assert found is not None, _text(mail)
    mailed = html.unescape(found[1])
    assert len(mailed) == 16 and re.search(r"[A-Z]", mailed) and re.search(r"[a-z]", mailed)
    assert re.search(r"[0-9]", mailed) and re.search(r"[:;<=>?@]", mailed)
    stored = _stored_password(project, "quentin.r")
    assert same_secret(mailed, stored) and not same_secret("Initial-Passw0rd", stored)


def _stored_password(project_dir: Path, user_name: str) -> Any:
    """The password the store holds for ``user_name`` (hashed), read past the API."""
    project = load_project(project_dir)
    store = Store.open(project.settings.store_url())
    try:
        users = Resources(project, store).open("managed/user")
        assert isinstance(users, ManagedResource)
        (user,) = users.find(QuerySpec(filter=parse(f'userName eq "{user_name}"')))
        found = users.revealing_secrets().get(user["_id"])
        assert found is not None
        return found["password"]
    finally:
        store.close()


def test_without_the_file_sending_is_a_clear_error(tmp_path: Path) -> None:
    """Without conf/external.email.json: the REST call is 404 naming the file, a script's
    send throws the same words and its read of config/external.email is null, and
    resetPassword logs that mail is not configured and changes nothing (200)."""
    project = _project(tmp_path, None, actions={"resetPassword": RESET_PASSWORD})

    async def visit(api: httpx.AsyncClient) -> None:
        answer = await api.post("/openidm/external/email?_action=send", json={"to": "ann@example.com"})
        assert answer.status_code == 404
        assert answer.json()["message"] == "the email service is not configured (conf/external.email.json)"
        found = (await api.get("/openidm/managed/user", params={"_queryFilter": 'userName eq "ann"'})).json()
        ann = found["result"][0]
        with structlog.testing.capture_logs() as logs:
            reset = await api.post(f"/openidm/managed/user/{ann['_id']}?_action=resetPassword", json={})
        assert reset.status_code == 200 and reset.json()["_rev"] == ann["_rev"]
        assert any("not configured" in str(e.get("message")) for e in logs)

    _serve(project, visit)
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    script = loaded.scripts.compile({"type": _JS, "source": "var c = openidm.read('config/external.email'); "
                                     "var e; try { openidm.action('external/email', 'send', {to: 'a@example.com'}) "
                                     "} catch (x) { e = x.message } [c, e]"}, file="t", key="k", base_dir=project)
    try:
        with scripting(loaded, store):
            assert script() == [None, "the email service is not configured (conf/external.email.json)"]
    finally:
        store.close()


def test_a_dry_run_sends_nothing(tmp_path: Path, inbox: Inbox) -> None:
    """In a dry run (a preview), a script's send is refused as every write is, and nothing
    reaches the server."""
    project = load_project(_project(tmp_path, _email(inbox)))
    store = Store.open(project.settings.store_url())
    script = project.scripts.compile({"type": _JS, "source": "openidm.action('external/email', 'send', "
                                      "{to: 'ann@example.com'})"}, file="t", key="k", base_dir=tmp_path)
    try:
        with scripting(project, store, dry_run=True), pytest.raises(ScriptError, match="not carried out in a dry run"):
            script()
    finally:
        store.close()
    assert inbox.mails == []


@pytest.mark.parametrize(("config", "key", "problem"), [
    ({"port": "twenty-five"}, "port", "must be a number"),
    ({"startls": {"enable": True}}, "startls", "did you mean starttls?"),
    ({"type": "msgraph"}, "type", "SMTP only"),
    ({"from": "idm@example.com\nBcc: x@example.com"}, "from", "must be an email address"),
    ({"starttls": {"enable": "yes"}}, "starttls.enable", "true or false"),
    ({"auth": {"enable": True, "username": "mailer"}}, "auth.password", "required"),
    ({"auth": {"enable": True, "username": "mailer", "password": "&{IDSYNC_TEST_NO_SUCH_VARIABLE}"}},
     "auth.password", "IDSYNC_TEST_NO_SUCH_VARIABLE is not set"),
    ({"smtpProperties": ["mail.smtp.ssl.protocols=SSLv3"]}, "smtpProperties", "expected some of TLSv1"),
    ({"caFile": "no/such/ca.pem"}, "caFile", "not found"),
    ({"timeout": 0}, "timeout", "must be a number from 1 to 3600000"),
    ({"smtpProperties": ["mail.smtp.connectiontimeout=soon"]}, "smtpProperties",
     "mail.smtp.connectiontimeout (milliseconds) must be a number"),
])
def test_a_bad_file_is_an_error_naming_the_key(tmp_path: Path, config: dict[str, Any], key: str,
                                               problem: str) -> None:
    """validate names external.email.json, the key and the problem (a misspelt key with
    the one it resembles), never a password; a project with a bad file does not load,
    except for a password, which is read when a message is sent."""
    project = _project(tmp_path, {"host": "127.0.0.1", **config})
    errors = [p for p in validate_project(project, check_system)
              if isinstance(p, ConfigError) and not isinstance(p, ConfigWarning)]
    assert [(Path(e.file).name, e.key) for e in errors] == [("external.email.json", key)], errors
    assert problem in errors[0].problem
    if key != "auth.password" or "required" in problem:
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_project(project)


def test_validate_warns_of_what_it_does_not_act_on(tmp_path: Path) -> None:
    """The file is no longer "not used"; debug, threadPoolSize and a mail.smtp.* property
    idsync does not follow are each a warning naming the key, and mail.smtp.ssl.trust
    turning verification off is a note; the properties it follows give no line."""
    project = _project(tmp_path, {"host": "127.0.0.1", "debug": True, "threadPoolSize": 20, "smtpProperties": [
        "mail.smtp.ssl.protocols=TLSv1.2 TLSv1.3", "mail.smtp.sendpartial=true", "mail.smtp.ssl.trust=*",
        "mail.smtp.localhost=idm.example.com"]})
    problems = [p for p in validate_project(project, check_system) if "external.email" in str(p)]
    assert all(isinstance(p, ConfigWarning) for p in problems), problems
    lines = {(p.key, type(p).__name__) for p in problems if isinstance(p, ConfigWarning)}
    assert lines == {("debug", "ConfigWarning"), ("threadPoolSize", "ConfigWarning"),
                     ("smtpProperties[1]", "ConfigWarning"), ("smtpProperties", "ConfigNote")}
    note = next(p for p in problems if isinstance(p, ConfigNote))
    assert "not verified" in str(note) and "not used by idsync" not in " ".join(map(str, problems))


def test_an_unreachable_server_is_503(tmp_path: Path) -> None:
    """A server that cannot be reached (nothing listens) is 503 naming it."""
    port = free_port()
    (answer,) = _send(_project(tmp_path, {"host": "127.0.0.1", "port": port, "from": "idm@example.com"}),
                      {"to": "ann@example.com"})
    assert answer.status_code == 503 and f"mail server 127.0.0.1:{port} cannot be reached" in answer.json()["message"]



def test_openapi_describes_the_route_when_the_file_is_there(tmp_path: Path, inbox: Inbox) -> None:
    """openapi.json lists POST external/email (its _action send or sendEmail, PingIDM's
    message as the body) when the project has conf/external.email.json, and not without."""
    specs: list[dict[str, Any]] = []

    async def visit(api: httpx.AsyncClient) -> None:
        specs.append((await api.get("/openidm/openapi.json")).json())

    _serve(_project(tmp_path / "with", _email(inbox)), visit)
    _serve(_project(tmp_path / "without", None), visit)
    route = specs[0]["paths"]["/openidm/external/email"]["post"]
    (action,) = [p for p in route["parameters"] if p["name"] == "_action"]
    assert action["required"] and action["schema"] == {"enum": ["send", "sendEmail"]}
    assert {"to", "subject", "body", "type"} <= set(route["requestBody"]["content"]["application/json"]["schema"][
        "properties"])
    assert "/openidm/external/email" not in specs[1]["paths"]


def test_an_encrypted_password_is_decrypted_with_the_projects_key(tmp_path: Path,
                                                                  certs: test_tls.TestCertificates) -> None:
    """auth.password as a $crypto value (as PingIDM stores it, here encrypted with the
    project's own key) logs in; one the key cannot decrypt is an error naming
    auth.password, from validate and when sending, and the mail is not sent."""
    with smtp_server(tls_context=_server_tls(certs), require_starttls=True, auth_required=True,
                     authenticator=_authenticate) as inbox:
        project = _project(tmp_path / "right", None)
        loaded = load_project(project)
        assert loaded.keyring is not None
        sealed = loaded.keyring.encrypt(PASSWORD)
        config = _email(inbox, starttls={"enable": True}, caFile=str(certs.ca_file),
                        auth={"enable": True, "username": "mailer", "password": sealed})
        (project / "conf" / "external.email.json").write_text(json.dumps(config))
        (sent,) = _send(project, {"to": "ann@example.com", "subject": "sealed"})
        assert sent.status_code == 200, sent.text

        other = _project(tmp_path / "other", config)  # a project of its own: another key
        assert [(e.key, "decrypt" in e.problem or "key" in e.problem) for e in validate_project(other, check_system)
                if isinstance(e, ConfigError) and not isinstance(e, ConfigWarning)] == [("auth.password", True)]
        (failed,) = _send(other, {"to": "ann@example.com", "subject": "not sealed"})
        assert failed.status_code == 500 and "auth.password" in failed.json()["message"]
    assert [m.message["Subject"] for m in inbox.mails] == ["sealed"]


def test_a_server_that_does_not_answer_is_given_up_after_the_timeout(tmp_path: Path) -> None:
    """A server that takes the connection and says nothing is given up after
    connectiontimeout/timeout (milliseconds, here half a second): 503 saying so."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = {"host": "127.0.0.1", "port": silent.getsockname()[1], "from": "idm@example.com",
                  "connectiontimeout": 500, "timeout": 500}
        started = time.monotonic()
        (answer,) = _send(_project(tmp_path, config), {"to": "ann@example.com"})
    assert answer.status_code == 503 and "did not answer in time" in answer.json()["message"], answer.text
    assert time.monotonic() - started < 10


# A mapping's result script mailing the run's statistics, as OpenIDM's sample5 does (its
# reconStats.js: a Handlebars template of the project, read with readFile).
REPORT_SCRIPT = """
var Handlebars = require("lib/handlebars");
if (openidm.read("config/external.email")) {
    source.durationMinutes = Math.floor(source.duration / 60.0) / 1000;
    var template = Handlebars.compile(readFile(identityServer.getProjectLocation() + "/script/report.html"));
    openidm.action("external/email", "sendEmail", {to: "admin@example.com", type: "text/html",
        subject: "Recon stats for " + global.mappingName,
        body: template({"global": global, "source": source, "target": target})});
}
"""
REPORT_TEMPLATE = """{{#global}}<b>Mapping:</b> {{mappingName}} <b>Id:</b> {{reconId}} <b>Start:</b> {{startTime}}
{{/global}}{{#source}}<p>{{name}}: {{entries}} entries, {{processed}} read, ABSENT {{ABSENT.count}},
{{durationMinutes}} minutes, listing {{entryListDuration}} ms</p>
{{#if ABSENT.ids.length}}<ul>{{#each ABSENT.ids}}<li>{{this}}</li>{{/each}}</ul>{{/if}}{{/source}}
{{#target}}<p>{{name}}: UNASSIGNED {{UNASSIGNED.count}}, invalid {{NOTVALID.count}}</p>{{/target}}"""


def test_a_recon_mails_its_statistics_from_its_result_script(tmp_path: Path, inbox: Inbox) -> None:
    """A mapping's ``result`` script gets PingIDM's statistics (``global``, and ``source`` and
    ``target`` with each situation's count and ids), reads its template with ``readFile``
    and ``identityServer.getProjectLocation()``, fills it with lib/handlebars' blocks and
    mails it: OpenIDM's sample5 recon report, from a CSV file into the store."""
    from test_csv_connector import HR, HR_IN, HR_TYPES, _provisioner

    project = _project(tmp_path, _email(inbox))
    (project / "script").mkdir()
    (project / "script" / "report.js").write_text(REPORT_SCRIPT)
    (project / "script" / "report.html").write_text(REPORT_TEMPLATE)
    (project / "data" / "hr.csv").write_text(HR)
    _provisioner(project, "hr", "data/hr.csv", HR_TYPES)
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": [
        {**HR_IN, "result": {"type": _JS, "file": "script/report.js"}}]}))
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        done = run_recon_scripted(loaded, store, HR_IN["name"], ReconOptions())
    finally:
        store.close()
    assert done.state == "SUCCESS" and done.summary["errorCount"] == 0, done.summary["errors"]
    (mail,) = inbox.mails
    assert mail.recipients == ["admin@example.com"]
    assert mail.message["Subject"] == f"Recon stats for {HR_IN['name']}"
    body = _text(mail)
    assert f"<b>Mapping:</b> {HR_IN['name']} <b>Id:</b> {done.id} <b>Start:</b> 20" in body, body
    assert "<p>system/hr/account: 3 entries, 3 read, ABSENT 3," in body, body
    assert "<ul><li>ajones</li><li>bsmith</li><li>cwu</li></ul>" in body, body
    assert "<p>managed/user: UNASSIGNED 0, invalid 0</p>" in body, body


def test_scripts_read_files_of_their_project_only(tmp_path: Path) -> None:
    """``readFile`` reads a file under the project directory; a path that leaves it (``..``
    or a symbolic link), a missing file and a directory are errors the script may catch;
    ``identityServer.getProperty`` answers PingIDM's location properties and the default
    otherwise, never an environment variable (they hold secrets)."""
    project = _project(tmp_path, None)
    (project / "script").mkdir()
    (project / "script" / "note.txt").write_text("héllo")
    (tmp_path / "outside.txt").write_text("secret")
    (project / "script" / "link.txt").symlink_to(tmp_path / "outside.txt")
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    script = loaded.scripts.compile({"type": _JS, "source": """
        function tried(path) { try { return readFile(path); } catch (e) { return "refused: " + e.message; } }
        [tried("script/note.txt"), tried(identityServer.getProjectLocation() + "/script/note.txt"),
         tried("../outside.txt"), tried("script/link.txt"), tried("script/none.txt"), tried("script"),
         identityServer.getProperty("launcher.project.location"), identityServer.getProperty("HOME", "none"),
         identityServer.getInstallLocation() === identityServer.getProjectLocation().replace(/\\/[^\\/]*$/, "")]
    """}, file="test", key="script", base_dir=project)
    try:
        with scripting(loaded, store):
            found = script()
    finally:
        store.close()
    assert found[:2] == ["héllo", "héllo"]
    assert found[2].startswith("refused: readFile ../outside.txt: scripts read files under the project directory")
    assert found[3].startswith("refused: readFile script/link.txt: scripts read files under the project")
    assert found[4] == "refused: readFile script/none.txt: no such file"
    assert found[5] == "refused: readFile script: a directory, not a file"
    assert found[6:] == [str(project.absolute()), "none", True]
