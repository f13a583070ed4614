"""The install steps of docs/install.md, followed from a wheel as far as a machine without
systemd as PID 1 allows: a fresh virtualenv holding only the wheel, ``idsync install-files``
into a staging root, the sysusers.d and tmpfiles.d entries applied there, the unit verified,
and the example configuration validated by the installed program."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a clean copy: no build state of the working tree leaks in
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "*.egg-info", "__pycache__", "state", "build", "dist", "out"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
                   cwd=source, check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("idsync-*.whl")
    return built


def test_the_wheel_carries_the_unit_and_examples_and_no_test_code(wheel: Path) -> None:
    """The wheel holds the systemd files, the example conf/ and jobs.d/ (as package data),
    and no test helpers."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("systemd/idsync.service", "systemd/idsync.sysusers", "systemd/idsync.tmpfiles", "conf/sync.json",
                   "conf/provisioner.openicf-ldap.json", "jobs.d/sync-active-ldap-users.toml"):
        needed = f"idsync/share/{needed}"
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("idsync/testing/", "tests/"))]


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd is not installed")
def test_install_steps_from_the_wheel(tmp_path: Path, wheel: Path) -> None:
    """Steps 1 to 5 of docs/install.md in a staging root: the program from the wheel alone
    (its dependencies reached through this environment's site-packages, not a checkout),
    ``install-files`` writes the unit naming that program, the account and directories come
    from the shipped entries, the unit verifies, the wrapper is valid sh, and the installed
    program validates the example configuration."""
    root, venv = tmp_path / "root", tmp_path / "opt" / "idsync"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    probe = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    idsync = venv / "bin" / "idsync"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import idsync; print(idsync.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))  # the wheel's copy, not the source tree's
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}

    done = subprocess.run([str(idsync), "install-files", "--root", str(root)], capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    assert "wrote    " + str(root / "etc/systemd/system/idsync.service") in done.stdout
    unit = (root / "etc/systemd/system/idsync.service").read_text()
    assert f"ExecStart={idsync} --project /etc/idsync run" in unit
    again = subprocess.run([str(idsync), "install-files", "--root", str(root)], capture_output=True, text=True,
                           env=env, check=True, timeout=120)
    assert "kept     " + str(root / "etc/idsync/conf/sync.json") in again.stdout  # configuration is never replaced

    etc = root / "etc"
    for name in ("passwd", "group", "shadow", "gshadow"):
        (etc / name).touch()
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True, timeout=60)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create"], check=True, capture_output=True, timeout=60)
    assert (etc / "passwd").read_text().startswith("idsync:")
    assert (root / "var/lib/idsync").is_dir() and (etc / "idsync/credentials").is_dir()

    env_man = {**env, "MANPATH": str(root / "usr/local/share/man")}
    verified = subprocess.run(["systemd-analyze", "verify", str(root / "etc/systemd/system/idsync.service")],
                              capture_output=True, text=True, env=env_man, timeout=60, cwd=tmp_path)
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    subprocess.run(["sh", "-n", str(root / "usr/local/bin/idsync")], check=True, timeout=60)
    assert os.access(root / "usr/local/bin/idsync", os.X_OK)

    # Step 4: the bind password as a credential file, named by "credentials_file".
    (etc / "idsync/credentials/ldap-password").write_text("a password")
    provisioner = etc / "idsync/conf/provisioner.openicf-ldap.json"
    prov = json.loads(provisioner.read_text())
    prov["configurationProperties"].pop("credentials")
    prov["configurationProperties"]["credentials_file"] = "ldap-password"
    provisioner.write_text(json.dumps(prov))
    valid = subprocess.run([str(idsync), "-p", str(etc / "idsync"), "validate"], capture_output=True, text=True,
                           env={**env, "CREDENTIALS_DIRECTORY": str(etc / "idsync/credentials")}, timeout=120)
    assert valid.returncode == 0, valid.stdout + valid.stderr
