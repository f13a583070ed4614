"""``idsync config show`` prints the settings in force with every secret masked;
``idsync validate --json`` gives the problems as data; ``config reference`` is the
configuration page's table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_runner import run_cli

IDSYNC = str(Path(sys.executable).parent / "idsync")


def _idsync(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["-p", str(project), *args], timeout=60, inherit_env=False,
                   env={**{k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}, **env})


def test_config_show_masks_secrets_and_shows_the_environment(tmp_path: Path) -> None:
    """The store URL's password (in the user part or a query parameter) and the API's hashes are
    masked; a value from the environment wins over the file and shows as such."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "idsync.toml").write_text(
        '[store]\nurl = "postgresql://idsync:S3cret-pw@db.example/idsync?sslpassword=K3y-pw"\n'
        '[api.accounts]\n"admin" = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"\n')
    done = _idsync(tmp_path, "config", "show", "--json", IDSYNC_RECON__PAGE_SIZE="250")
    assert done.returncode == 0, done.stderr
    assert "S3cret-pw" not in done.stdout and "K3y-pw" not in done.stdout and "argon2" not in done.stdout
    shown = json.loads(done.stdout)
    assert shown["store"]["url"].startswith("postgresql://idsync:***@db.example/idsync")
    assert shown["api"]["accounts"] == {"admin": "***"}
    assert shown["recon"]["page_size"] == 250
    text = _idsync(tmp_path, "config", "show").stdout
    assert "[recon]\npage_size = 1000" in text and "S3cret-pw" not in text


def test_validate_json_lists_each_problem(tmp_path: Path) -> None:
    """``validate --json`` exits 78 with one entry per problem: file, key and problem."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "idsync.toml").write_text("[recon]\npage_sise = 5\n")
    done = _idsync(tmp_path, "validate", "--json")
    assert done.returncode == 78
    report = json.loads(done.stdout)
    assert report["ok"] is False
    (problem,) = report["problems"]
    assert problem["file"].endswith("conf/idsync.toml") and problem["key"] == "recon.page_sise"
    assert "did you mean page_size" in problem["problem"]


def test_config_reference_is_the_documented_table(tmp_path: Path) -> None:
    """``config reference`` prints the tables docs/configuration.md holds."""
    done = _idsync(tmp_path, "config", "reference")
    assert done.returncode == 0
    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert done.stdout.strip() in page


def test_a_store_url_that_does_not_parse_is_a_config_error_of_every_command(tmp_path: Path) -> None:
    """A store URL with a port that is not a number is the same exit-78 error, naming where it
    was set and never quoting the URL (its password), from ``validate`` and from every command
    that opens the store: no ``internal error`` (exit 70)."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "idsync.toml").write_text(
        '[store]\nurl = "postgresql://idsync:pw@db.example.com:notaport/idsync"\n', encoding="utf-8")
    said = f"{tmp_path / 'conf' / 'idsync.toml'}: store.url: not a database URL (its port is not a number)"
    for command in (["validate"], ["status"], ["jobs"], ["prune"]):
        done = run_cli(["-p", str(tmp_path), *command])
        assert done.returncode == 78 and said in done.stdout + done.stderr, (command, done)
        assert "pw@" not in done.stdout + done.stderr
    (tmp_path / "conf" / "idsync.toml").write_text("", encoding="utf-8")
    env = {"IDSYNC_STORE__URL": "postgresql://idsync:pw@db.example.com:notaport/idsync"}
    for command in (["validate"], ["status"]):
        done = run_cli(["-p", str(tmp_path), *command], env=env)
        assert done.returncode == 78, (command, done)
        assert "environment: IDSYNC_STORE__URL: not a database URL" in done.stdout + done.stderr


def test_status_limit_outside_its_range_is_a_usage_error(tmp_path: Path) -> None:
    """``idsync status --limit`` takes 1 to 100000: 0 printed "no runs recorded yet" though
    runs exist, -1 listed them all, a huge number crashed (OverflowError, exit 70); each is
    now a usage error (exit 2) saying the range."""
    (tmp_path / "conf").mkdir()
    for bad in ("0", "-1", "99999999999999999999", "ten"):
        done = run_cli(["-p", str(tmp_path), "status", f"--limit={bad}"])
        assert done.returncode == 2, (bad, done)
        assert "--limit" in done.stderr and "expected" in done.stderr, done
    assert run_cli(["-p", str(tmp_path), "status", "--limit", "5"]).returncode != 2
