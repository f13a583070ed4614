"""The files shipped for systemd: the unit (verifies clean, hardened to an exposure of at most
1.1, never restarts on a broken configuration, validates before a reload) and the sysusers.d and
tmpfiles.d entries that create the account and directories it expects."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
IDSYNC = Path(sys.executable).parent / "idsync"

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")


def _unit_text() -> str:
    return (SYSTEMD / "idsync.service").read_text(encoding="utf-8")


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_systemd
@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_unit_file_verifies_clean(tmp_path: Path) -> None:
    """``systemd-analyze verify`` says nothing about the unit (ExecStart set to this idsync),
    with the page its ``Documentation=man:idsync(1)`` names installed from ``idsync man``."""
    unit = tmp_path / "idsync.service"
    unit.write_text(_unit_text().replace("/opt/idsync/bin/idsync", str(IDSYNC)), encoding="utf-8")
    (tmp_path / "man" / "man1").mkdir(parents=True)
    page = subprocess.run([str(IDSYNC), "man"], capture_output=True, text=True, check=True, timeout=60).stdout
    (tmp_path / "man" / "man1" / "idsync.1").write_text(page, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, check=False, env={**os.environ, "MANPATH": str(tmp_path / "man")})
    assert done.stderr == ""
    assert done.returncode == 0


@needs_systemd
def test_unit_exposure_is_at_most_1_1(tmp_path: Path) -> None:
    """``systemd-analyze security --offline=yes`` rates the unit's exposure 1.1 or lower."""
    unit = tmp_path / "idsync.service"
    unit.write_text(_unit_text(), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    level = re.search(r"Overall exposure level for idsync\.service: ([0-9.]+)", done.stdout)
    assert level is not None, done.stdout + done.stderr
    assert float(level.group(1)) <= 1.1


def test_unit_stops_on_a_broken_configuration_and_validates_before_reload() -> None:
    """Exit 78 (a broken conf/) is not restarted; a reload runs ``idsync validate`` before the
    SIGHUP, so ``systemctl reload`` fails on a broken configuration; the directories it names
    are the ones the tmpfiles entry creates, with the mode that entry gives them; of /etc it
    may write jobs.d/ only (the console's job files)."""
    directives = _directives(_unit_text())
    assert directives["RestartPreventExitStatus"] == ["78"]
    assert directives["Restart"] == ["on-failure"]
    reload = directives["ExecReload"]
    assert reload[0].endswith("--project /etc/idsync validate")
    assert reload[1] == "/bin/kill -HUP $MAINPID"
    assert directives["ConfigurationDirectoryMode"] == ["0750"]
    assert directives["UMask"] == ["0077"]
    assert directives["Type"] == ["notify"]
    assert directives["User"] == ["idsync"]
    assert "LogsDirectory" not in directives  # idsync logs to the journal only
    # The console writes job files and nothing else of /etc; its consents go to the state directory.
    assert directives["ReadWritePaths"] == ["/etc/idsync/jobs.d"]
    assert directives["ProtectSystem"] == ["strict"] and directives["StateDirectory"] == ["idsync"]
    for needle in ("NoNewPrivileges", "ProtectSystem", "PrivateUsers", "MemoryDenyWriteExecute",
                   "IPAddressDeny", "IPAddressAllow", "LoadCredential", "WatchdogSec"):
        assert needle in directives


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd is not installed")
def test_sysusers_and_tmpfiles_create_the_account_and_directories(tmp_path: Path) -> None:
    """Applied to an empty root, the sysusers.d entry creates the system account ``idsync``
    (no login shell, home /var/lib/idsync), and the tmpfiles.d entry the configuration
    directories (root:idsync 0750; jobs.d/ 0770, which the console writes) and the state
    directory (idsync:idsync 0750)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (etc / name).touch()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "idsync.sysusers")],
                   check=True, capture_output=True, timeout=60)
    passwd = (etc / "passwd").read_text(encoding="utf-8").split(":")
    assert passwd[0] == "idsync"
    assert passwd[5:7] == ["/var/lib/idsync", "/usr/sbin/nologin\n"]
    uid, gid = int(passwd[2]), int(passwd[3])
    assert uid < 1000  # a system account
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(SYSTEMD / "idsync.tmpfiles")],
                   check=True, capture_output=True, timeout=60)
    for path, mode in (("etc/idsync", 0o750), ("etc/idsync/conf", 0o750), ("etc/idsync/jobs.d", 0o770),
                       ("etc/idsync/credentials", 0o750)):
        st = (tmp_path / path).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, 0, gid), path
    state = (tmp_path / "var/lib/idsync").stat()
    assert (state.st_mode & 0o777, state.st_uid, state.st_gid) == (0o750, uid, gid)
