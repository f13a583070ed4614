"""Reading configuration files: JSON errors with positions, secrets from the
environment and from files, script sources left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from idsync.config.files import load_json
from idsync.errors import ConfigError
from idsync.settings import load_settings


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    """A syntax error in a JSON file points at the file, line and column."""
    f = _write(tmp_path / "conf" / "sync.json", '{\n  "mappings": [\n    {"name": "x",}\n  ]\n}\n')
    with pytest.raises(ConfigError) as err:
        load_json(f)
    assert str(f) in str(err.value) and "line 3" in str(err.value)


def test_environment_tokens_are_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """&{NAME}, &{NAME|default} and ${NAME} take environment values; dotted
    ${source.x} placeholders stay for correlation."""
    monkeypatch.setenv("LDAP_PASSWORD", "pw-from-env")
    monkeypatch.setenv("OPENIDM_REPO_HOST", "db.example.com")
    f = _write(tmp_path / "conf" / "p.json", """{
        "a": "&{LDAP_PASSWORD}", "b": "${LDAP_PASSWORD}", "c": "&{missing|fallback}",
        "d": "&{openidm.repo.host}", "e": "userName eq \\"${source.uid}\\""}""")
    data = load_json(f)
    assert data == {"a": "pw-from-env", "b": "pw-from-env", "c": "fallback", "d": "db.example.com",
                    "e": 'userName eq "${source.uid}"'}


def test_missing_variable_names_the_key_not_a_value(tmp_path: Path) -> None:
    """An unset variable is an error naming the file and the JSON key."""
    f = _write(tmp_path / "conf" / "p.json", '{"configurationProperties": {"credentials": "&{NOPE_NOT_SET}"}}')
    with pytest.raises(ConfigError, match=r"configurationProperties\.credentials: environment variable NOPE_NOT_SET"):
        load_json(f)


def test_secret_files_and_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """X_file reads the secret from a file, relative paths first in $CREDENTIALS_DIRECTORY."""
    creds = tmp_path / "creds"
    _write(creds / "ldap", "s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    f = _write(tmp_path / "conf" / "p.json", '{"credentials_file": "ldap", "other_file": "%s"}'
               % (creds / "ldap"))
    assert load_json(f) == {"credentials": "s3cret", "other": "s3cret"}
    bad = _write(tmp_path / "conf" / "q.json", '{"credentials_file": "nope"}')
    with pytest.raises(ConfigError, match="secret file nope not found"):
        load_json(bad)


def test_script_sources_are_not_substituted(tmp_path: Path) -> None:
    """JavaScript template literals in a script's source are kept as written."""
    f = _write(tmp_path / "conf" / "p.json",
               '{"transform": {"type": "text/javascript", "source": "`${x}`"}}')
    assert load_json(f)["transform"]["source"] == "`${x}`"


def test_bad_toml_settings_name_the_file(tmp_path: Path) -> None:
    """A malformed idsync.toml is reported with the file and TOML's position."""
    _write(tmp_path / "conf" / "idsync.toml", "[store\nurl = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert "idsync.toml" in str(err.value) and "line 1" in str(err.value)


def test_settings_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IDSYNC_* variables override conf/idsync.toml; bad values name the key."""
    _write(tmp_path / "conf" / "idsync.toml", "[recon]\npage_size = 200\n")
    assert load_settings(tmp_path).recon.page_size == 200
    monkeypatch.setenv("IDSYNC_RECON__PAGE_SIZE", "50")
    assert load_settings(tmp_path).recon.page_size == 50
    _write(tmp_path / "conf" / "idsync.toml", "[recon]\npage_size = -1\n")
    monkeypatch.delenv("IDSYNC_RECON__PAGE_SIZE")
    with pytest.raises(ConfigError, match=r"recon\.page_size"):
        load_settings(tmp_path)


@pytest.mark.parametrize(("line", "key", "problem"), [
    ("system_query_idle_seconds = 0", "api.system_query_idle_seconds", "greater than 0"),
    ("system_query_idle_seconds = -5", "api.system_query_idle_seconds", "greater than 0"),
    ("system_query_idle_seconds = \"soon\"", "api.system_query_idle_seconds", "a valid number"),
    ("system_queries_held = 0", "api.system_queries_held", "greater than or equal to 1"),
    ("system_queries_held = 2.5", "api.system_queries_held", "a valid integer"),
])
def test_paged_system_query_limits_must_be_positive(tmp_path: Path, line: str, key: str, problem: str) -> None:
    """[api] system_query_idle_seconds and system_queries_held take positive numbers; anything
    else is refused naming the file, the key and what is wrong with the value."""
    _write(tmp_path / "conf" / "idsync.toml", f"[api]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert "idsync.toml" in str(err.value) and key in str(err.value) and problem in str(err.value), str(err.value)
    _write(tmp_path / "conf" / "idsync.toml", "[api]\nsystem_query_idle_seconds = 30\nsystem_queries_held = 20\n")
    api = load_settings(tmp_path).api
    assert (api.system_query_idle_seconds, api.system_queries_held) == (30, 20)
