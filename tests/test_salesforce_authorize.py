"""``idsync salesforce authorize`` against the local stand-in: the consent URL, the
code exchange, and a refused code."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_salesforce import FakeSalesforce
from salesforce_sample import running_org, sample_project, sf_env

from samples import idsync

_CALLBACK = "https://localhost/callback"


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeSalesforce]:
    yield from running_org(tmp_path)


@pytest.fixture
def project(tmp_path: Path, org: FakeSalesforce) -> Path:
    return sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")


def _env(org: FakeSalesforce) -> dict[str, str]:
    env = sf_env(org)
    del env["SALESFORCE_REFRESH_TOKEN"]  # not known yet: that is what authorize is for
    return env


def test_prints_the_consent_url(project: Path, org: FakeSalesforce) -> None:
    """Without a code, the command prints the authorize URL with the seed's scopes."""
    proc = idsync(project, "salesforce", "authorize", "--redirect-uri", _CALLBACK, env=_env(org))
    assert proc.returncode == 0, proc.stderr
    url = urlsplit(proc.stdout.strip())
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{org.url}/services/oauth2/authorize"
    query = parse_qs(url.query)
    assert query["client_id"] == [org.client_id] and query["redirect_uri"] == [_CALLBACK]
    assert set(query["scope"][0].split()) == {"api", "id", "profile", "email", "address", "phone",
                                              "refresh_token", "offline_access"}


def test_exchanges_a_code_for_a_refresh_token(project: Path, org: FakeSalesforce, tmp_path: Path) -> None:
    """A pasted redirect URL is exchanged; the refresh token lands in a 0600 file and works."""
    org.codes["aPrxCode%3D%3D"] = _CALLBACK
    out = tmp_path / "refresh-token"
    proc = idsync(project, "salesforce", "authorize", "--redirect-uri", _CALLBACK, "--output", str(out),
                  "--code", f"{_CALLBACK}?code=aPrxCode%253D%253D", env=_env(org))
    assert proc.returncode == 0, proc.stderr
    token = out.read_text().strip()
    assert token in org.refresh_tokens and token not in proc.stdout + proc.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    check = idsync(project, "test", env={**sf_env(org), "SALESFORCE_REFRESH_TOKEN": token})
    assert check.returncode == 0, check.stdout + check.stderr


def test_refused_code_is_an_authentication_error(project: Path, org: FakeSalesforce) -> None:
    """An unknown or reused code exits 77 with Salesforce's error, no secret printed."""
    proc = idsync(project, "salesforce", "authorize", "--redirect-uri", _CALLBACK, "--code", "used-code",
                  env=_env(org))
    assert proc.returncode == 77
    assert "invalid_grant" in proc.stderr and org.client_secret not in proc.stdout + proc.stderr


def test_a_bare_code_copied_url_encoded_is_decoded(project: Path, org: FakeSalesforce) -> None:
    """A code pasted on its own as the address bar shows it (``%3D%3D``) is decoded
    before the exchange, as Salesforce requires; the refresh token is printed."""
    org.codes["aPrxBare=="] = _CALLBACK
    proc = idsync(project, "salesforce", "authorize", "--redirect-uri", _CALLBACK, "--code", "aPrxBare%3D%3D",
                  "--json", env=_env(org))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["refreshToken"] in org.refresh_tokens


def test_the_token_of_a_consent_in_the_state_directory_is_what_the_connector_uses(
        project: Path, org: FakeSalesforce) -> None:
    """Without a refreshToken, ``idsync validate`` warns that the system waits for a consent
    (exit 0) and ``idsync test`` fails saying so (exit 77); once a consent's token is kept in
    state/oauth/salesforce.refresh-token, as the console keeps it, ``idsync test`` connects
    with it, even when the provisioner names a revoked one (the consent is the newer)."""
    prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
    prov = json.loads(prov_file.read_text())
    del prov["configurationProperties"]["refreshToken"]
    prov_file.write_text(json.dumps(prov))
    validated = idsync(project, "validate", env=_env(org))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "refreshToken" in validated.stdout + validated.stderr and "authorize" in validated.stdout + validated.stderr
    refused = idsync(project, "test", env=_env(org))
    assert refused.returncode == 77 and "no refresh token yet" in refused.stdout + refused.stderr
    kept = project / "state" / "oauth" / "salesforce.refresh-token"
    kept.parent.mkdir(parents=True)
    kept.write_text(next(iter(org.refresh_tokens)) + "\n")
    prov["configurationProperties"]["refreshToken"] = "5Aep861revoked"
    prov_file.write_text(json.dumps(prov))
    connected = idsync(project, "test", env=_env(org))
    assert connected.returncode == 0, connected.stdout + connected.stderr
