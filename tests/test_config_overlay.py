"""The admin console's connection settings as the project reads them
(``state/connectors/NAME.json``): written whole with modes 0700/0600, the secret only
encrypted, bad values refused naming file and key, laid over the provisioner file's
values by every command, and told by ``idsync validate`` as a note."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.config.overlay import clear_properties, read_overlay, write_overlay
from idsync.config.project import load_project
from idsync.crypto import Keyring
from idsync.errors import ConfigError
from idsync.resources import Resources

from samples import idsync

KEYRING = Keyring({"openidm-sym-default": b"k" * 32})


def test_write_refuses_a_clear_secret_and_bad_values_and_writes_nothing(tmp_path: Path) -> None:
    """A secret not encrypted, an unknown key, an enabled that is not a boolean, an http or
    credential-carrying login URL: each refused with the file and the key, nothing written
    (not even the directory)."""
    path = tmp_path / "connectors" / "sf.json"
    for values, key in (({"clientSecret": "plain-value"}, "clientSecret"), ({"password": "x"}, "password"),
                        ({"enabled": "yes"}, "enabled"), ({"loginUrl": "http://login.example.com"}, "loginUrl"),
                        ({"loginUrl": "https://u:p@login.example.com"}, "loginUrl"),
                        ({"clientId": "a\tb"}, "clientId")):
        with pytest.raises(ConfigError) as caught:
            write_overlay(tmp_path, "sf", values)
        assert (caught.value.file, caught.value.key) == (str(path), key)
        assert "plain-value" not in str(caught.value)
    assert not path.parent.exists()


def test_written_whole_0600_in_0700_and_read_back(tmp_path: Path) -> None:
    """The file is 0600 in a 0700 directory, holds the secret only as $crypto, leaves no
    scratch file, and reads back as written; a second write replaces it whole."""
    secret = KEYRING.encrypt("s3cret")
    write_overlay(tmp_path, "sf", {"enabled": True, "loginUrl": "https://login.example.com", "clientSecret": secret})
    path = tmp_path / "connectors" / "sf.json"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert "s3cret" not in path.read_text() and os.listdir(path.parent) == ["sf.json"]
    assert KEYRING.decrypt(read_overlay(tmp_path, "sf")["clientSecret"]) == "s3cret"
    write_overlay(tmp_path, "sf", {"enabled": False})
    assert read_overlay(tmp_path, "sf") == {"enabled": False}


def test_a_damaged_overlay_names_file_and_key(tmp_path: Path) -> None:
    """Broken JSON names the line; a clear secret written by hand names the key; no file is {};
    a secret that idsync's present key cannot decrypt names the file and the key, and says to
    save it again."""
    assert read_overlay(tmp_path, "sf") == {} and read_overlay(None, "sf") == {}
    (tmp_path / "connectors").mkdir()
    path = tmp_path / "connectors" / "sf.json"
    path.write_text('{"enabled": true,\n')
    with pytest.raises(ConfigError, match="line 2") as caught:
        read_overlay(tmp_path, "sf")
    assert caught.value.file == str(path)
    path.write_text('{"clientSecret": "typed-by-hand"}')
    with pytest.raises(ConfigError) as caught:
        read_overlay(tmp_path, "sf")
    assert caught.value.key == "clientSecret" and "typed-by-hand" not in str(caught.value)
    write_overlay(tmp_path, "sf", {"clientSecret": KEYRING.encrypt("s3cret")})
    other = Keyring({"openidm-sym-default": b"o" * 32})
    with pytest.raises(ConfigError, match="save it again in the console") as caught:
        clear_properties(read_overlay(tmp_path, "sf"), other, file=str(path))
    assert (caught.value.file, caught.value.key) == (str(path), "clientSecret")


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """The Salesforce sample, disabled, without a Consumer Key, Secret or refresh token in
    its provisioner (the variables its tokens name are not set), and a stand-in org."""
    from salesforce_sample import running_org, sample_project

    for org in running_org(tmp_path):
        project = sample_project(tmp_path, org, f"sqlite:///{tmp_path / 's.db'}")
        prov_file = project / "conf" / "provisioner.openicf-salesforce.json"
        prov = json.loads(prov_file.read_text())
        prov["enabled"] = False
        props = prov["configurationProperties"]
        del props["clientId"], props["refreshToken"]
        props["instanceUrl"] = org.url
        props["clientSecret_file"] = str(tmp_path / "no-such-secret")
        del props["clientSecret"]
        prov_file.write_text(json.dumps(prov))
        yield project, org


def _overlay(project: Path, org: Any, **values: Any) -> None:
    keys = load_project(project).keyring
    assert keys is not None
    write_overlay(project / "state", "salesforce", {
        "enabled": True, "loginUrl": org.url, "clientId": org.client_id,
        "clientSecret": keys.encrypt(org.client_secret), **values})


def test_overlay_wins_over_the_provisioner_for_every_command(sf: tuple[Path, Any]) -> None:
    """With the console's settings saved, the disabled system is enabled and connects with the
    console's login URL, key and secret (the file's clientSecret_file, which does not exist, is
    not read): `idsync validate` exits 0 with a note naming the keys and the overlay file, the
    system's test (as `idsync test` runs it) connects, and `idsync recon` reads the org's users.
    Without them, the system is disabled."""
    project, org = sf
    org.add_user(Username="ada@example.com", LastName="Lovelace", Email="ada@example.com", Alias="ada")
    assert not load_project(project).provisioners["salesforce"].enabled
    _overlay(project, org)
    oauth = project / "state" / "oauth"
    oauth.mkdir(mode=0o700)
    (oauth / "salesforce.refresh-token").write_text(next(iter(org.refresh_tokens)))
    provisioner = load_project(project).provisioners["salesforce"]
    assert provisioner.enabled and provisioner.console_keys() == ["enabled", "loginUrl", "clientId", "clientSecret"]
    props = provisioner.config["configurationProperties"]
    assert props["clientSecret"] == org.client_secret and props["loginUrl"] == org.url
    validated = idsync(project, "validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    note = next(line for line in validated.stderr.splitlines() if line.startswith("note:"))
    assert "enabled, configurationProperties.loginUrl, configurationProperties.clientId, " \
           "configurationProperties.clientSecret set in the admin console" in note
    assert str(project / "state" / "connectors" / "salesforce.json") in note and org.client_secret not in note
    resources = Resources(load_project(project), None)  # type: ignore[arg-type]
    try:
        assert resources.system("salesforce").test()["ok"]  # as `idsync test` opens it
    finally:
        resources.close()
    recon = idsync(project, "recon", "systemSalesforceUser_managedUser")
    assert recon.returncode == 0, recon.stdout + recon.stderr
    assert org.client_secret not in recon.stdout + recon.stderr and org.consents == 0


def test_validate_tells_settings_of_a_system_that_is_gone(sf: tuple[Path, Any]) -> None:
    """Console settings whose system has no provisioner any more are told as a note, not used;
    `validate --json` lists the notes apart from the warnings, and exits 0."""
    project, org = sf
    _overlay(project, org)
    write_overlay(project / "state", "retired", {"enabled": False})
    validated = idsync(project, "validate", "--json")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    notes = {n["file"].rsplit("/", 1)[1]: n["note"] for n in json.loads(validated.stdout)["notes"]}
    assert notes["retired.json"] == "no provisioner for system retired: these console settings are not used"
    assert "set in the admin console" in notes["provisioner.openicf-salesforce.json"]


def test_an_overlay_the_user_may_not_read_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run by a user who may not read the service's state directory gets a
    ConfigError naming the file and what to do, not a traceback."""
    import errno

    def refused(self: Path, **_kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", refused)
    with pytest.raises(ConfigError, match="Permission denied; run idsync as the service's user") as caught:
        read_overlay(tmp_path, "sf")
    assert caught.value.file == str(tmp_path / "connectors" / "sf.json")


def test_salesforce_authorize_uses_the_console_settings(sf: tuple[Path, Any]) -> None:
    """`idsync salesforce authorize` (the consent by hand) takes the login URL and the
    Consumer Key the console saved, which the provisioner file does not have."""
    from urllib.parse import parse_qs, urlsplit

    project, org = sf
    _overlay(project, org)
    proc = idsync(project, "salesforce", "authorize", "--redirect-uri", "https://idsync.example.com/cb")
    assert proc.returncode == 0, proc.stderr
    url = urlsplit(proc.stdout.strip())
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{org.url}/services/oauth2/authorize"
    assert parse_qs(url.query)["client_id"] == [org.client_id]
