"""Authentication of the API: PingIDM's headers and HTTP Basic, bare 401s, the open
ping, the per-address throttle on failed logins, and the sample-password guard."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from api_server import ADMIN, ADMIN_HASH, serve
from idsync.api import hash_password, load_accounts
from idsync.errors import ConfigError
from idsync.settings import ApiSettings


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "a.db"}"\n')
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": []}))
    return project


def test_headers_basic_and_refusals(tmp_path: Path) -> None:
    """Headers and Basic both authenticate; no or wrong credentials get a 401 that
    says nothing more; info/ping needs no credentials."""
    with serve(_project(tmp_path)) as api:
        assert api.get("/openidm/info/ping").json()["state"] == "ACTIVE_READY"
        assert api.get("/openidm/sync/mappings?_queryFilter=true", headers=ADMIN).status_code == 200
        basic = "Basic " + base64.b64encode(b"openidm-admin:openidm-admin").decode()
        assert api.get("/openidm/config/sync", headers={"Authorization": basic}).status_code == 200
        anonymous = api.get("/openidm/config/sync")
        assert anonymous.status_code == 401
        assert anonymous.json() == {"code": 401, "reason": "Unauthorized", "message": "Access Denied"}
        wrong = api.get("/openidm/config/sync", headers={**ADMIN, "X-OpenIDM-Password": "nope"})
        unknown = api.get("/openidm/config/sync", headers={**ADMIN, "X-OpenIDM-Username": "nobody"})
        assert wrong.json() == unknown.json() == anonymous.json()


def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    """After max_failed_logins failures within a minute the address gets 429, even
    with the right password, until the minute passes."""
    with serve(_project(tmp_path), max_failed_logins=3) as api:
        bad = {**ADMIN, "X-OpenIDM-Password": "guess"}
        assert [api.get("/openidm/config/sync", headers=bad).status_code for _ in range(3)] == [401] * 3
        blocked = api.get("/openidm/config/sync", headers=ADMIN)
        assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "60"
        assert api.get("/openidm/info/ping").status_code == 200
        # A forwarded-for header from an untrusted peer names nobody: still this address.
        spoofed = api.get("/openidm/config/sync", headers={**ADMIN, "X-Forwarded-For": "192.0.2.7"})
        assert spoofed.status_code == 429


def test_trusted_proxy_clients_are_throttled_apart(tmp_path: Path) -> None:
    """Behind a trusted reverse proxy the throttle counts each forwarded client on its
    own: one guessing client does not lock the others out."""
    with serve(_project(tmp_path), max_failed_logins=2, trusted_proxies=["127.0.0.1"]) as api:
        guesser = {**ADMIN, "X-OpenIDM-Password": "guess", "X-Forwarded-For": "192.0.2.7"}
        assert [api.get("/openidm/config/sync", headers=guesser).status_code for _ in range(3)] == [401, 401, 429]
        other = api.get("/openidm/config/sync", headers={**ADMIN, "X-Forwarded-For": "192.0.2.8"})
        assert other.status_code == 200


def test_sample_password_refused_off_loopback(tmp_path: Path) -> None:
    """An account with a sample password may serve on loopback only; a real one anywhere."""
    weak = ApiSettings(host="0.0.0.0", accounts={"openidm-admin": ADMIN_HASH})
    with pytest.raises(ConfigError, match="sample password"):
        load_accounts(weak, tmp_path, "idsync.toml")
    assert len(load_accounts(ApiSettings(accounts={"openidm-admin": ADMIN_HASH}), tmp_path, "idsync.toml")) == 1
    strong = ApiSettings(host="0.0.0.0", accounts={"ops": hash_password("a long and private one")})
    assert load_accounts(strong, tmp_path, "idsync.toml").verify("ops", "a long and private one")
    with pytest.raises(ConfigError, match="argon2"):
        load_accounts(ApiSettings(accounts={"ops": "plain"}), tmp_path, "idsync.toml")


def test_tls_and_accounts_file(tmp_path: Path) -> None:
    """With tls_cert and tls_key the server speaks HTTPS only, verified against its CA;
    accounts come from accounts_file (name:hash lines)."""
    import ssl

    import httpx
    from api_server import running
    from idsync_dev.certs import make_test_certificates

    project = _project(tmp_path)
    certs = make_test_certificates(tmp_path / "tls", ("127.0.0.1",))
    (project / "conf" / "api-accounts").write_text(f"# the API's accounts\nops:{hash_password('s3cret-ops')}\n")
    with running(project, accounts={}, accounts_file=Path("conf/api-accounts"), tls_cert=certs.cert_file,
                 tls_key=certs.key_file) as port:
        trust = ssl.create_default_context(cafile=str(certs.ca_file))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust) as api:
            assert api.get("/openidm/config/sync", auth=("ops", "s3cret-ops")).status_code == 200
            assert api.get("/openidm/config/sync", auth=("ops", "wrong")).status_code == 401
            assert api.get("/openidm/config/sync", headers=ADMIN).status_code == 401
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/openidm/info/ping", timeout=5)


def test_run_refuses_unsafe_or_unusable_api(tmp_path: Path) -> None:
    """``idsync run`` stops with EX_CONFIG and a message saying why, before any job
    fires: a sample password on a non-loopback address, a taken port, half a TLS
    pair, a certificate that does not load, a misspelt [api] key."""
    import os
    import socket

    from samples import idsync

    project = _project(tmp_path)
    toml = project / "conf" / "idsync.toml"
    base = toml.read_text()
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": [
        {"name": "roles_users", "source": "managed/role", "target": "managed/user"}]}))
    (project / "jobs.d").mkdir()
    (project / "jobs.d" / "often.toml").write_text('schedule = "* * * * * ?"\nmappings = ["roles_users"]\n')
    (project / "junk.pem").write_text("not a certificate\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cases = {
        f'host = "0.0.0.0"\nport = {port}\n': "refusing to listen on 0.0.0.0: account(s) openidm-admin still have "
                                               "a sample password",
        f"port = {port}\n": f"cannot listen on 127.0.0.1:{port}",
        'tls_cert = "api.crt"\n': "tls_cert and tls_key go together",
        'tls_cert = "junk.pem"\ntls_key = "junk.pem"\n': "api.tls_cert: cannot load the certificate and key",
        'tls_crt = "api.crt"\n': "api.tls_crt: unknown setting, did you mean tls_cert?",
    }
    try:
        for api, message in cases.items():
            toml.write_text(base + f'[api]\nenabled = true\n{api}[api.accounts]\n"openidm-admin" = "{ADMIN_HASH}"\n')
            result = idsync(project, "run")
            assert result.returncode == os.EX_CONFIG and message in result.stderr, (api, result.stderr)
            assert "job.start" not in result.stderr and "Traceback" not in result.stderr
            if "0.0.0.0" in api or "tls" in api:  # what `idsync validate` can tell before a restart
                checked = idsync(project, "validate")
                assert checked.returncode == os.EX_CONFIG and message in checked.stdout + checked.stderr, checked
    finally:
        taken.close()


def test_loading_the_accounts_module_computes_no_hash() -> None:
    """``idsync validate`` and every start of the daemon load the API's accounts module: it
    computes no argon2 hash when loaded (a tenth of a second of CPU each time); the hash an
    unknown user's password is checked against is made at the first such check."""
    code = ("import argon2\n"
            "def refuse(*args, **kwargs): raise SystemExit('an argon2 hash was computed')\n"
            "argon2.PasswordHasher.hash = refuse\n"
            "import idsync.api.auth\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_mappings_are_answered_as_their_files_hold_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value an ``&{NAME}`` token gives (a secret from the environment) is used by the
    mapping and never answered: ``config/sync``, ``config/mapping/NAME`` (a mapping of its own
    file) and ``sync/mappings`` show the token."""
    monkeypatch.setenv("IDSYNC_TEST_MAPPING_KEY", "HrKey-GRUE")
    project = _project(tmp_path)
    transform = {"type": "text/javascript", "source": "source + key", "globals": {"key": "&{IDSYNC_TEST_MAPPING_KEY}"}}
    mapping = {"name": "users_roles", "source": "managed/user", "target": "managed/role",
               "properties": [{"source": "userName", "target": "name", "transform": transform}]}
    (project / "conf" / "sync.json").write_text(json.dumps({"mappings": [mapping]}))
    (project / "conf" / "mapping-single.json").write_text(json.dumps({**mapping, "name": "single"}))
    with serve(project) as api:
        answers = [api.get(path, headers=ADMIN) for path in
                   ("/openidm/config/sync", "/openidm/sync/mappings?_queryFilter=true",
                    "/openidm/config/mapping/single")]
        assert api.get("/openidm/config/mapping/users_roles", headers=ADMIN).status_code == 404  # sync.json's
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert "HrKey-GRUE" not in answer.text and "&{IDSYNC_TEST_MAPPING_KEY}" in answer.text
    single = answers[2].json()
    assert single["_id"] == "mapping/single" and single["name"] == "single" and single["source"] == "managed/user"
    listed = answers[1].json()["result"]
    assert [m["_id"] for m in listed] == ["users_roles", "single"]
    assert listed[0]["properties"][0]["transform"]["globals"] == {"key": "&{IDSYNC_TEST_MAPPING_KEY}"}
