"""The install steps of docs/install.md, run as written on Debian 12.

A Debian 12 root made by debootstrap (``idsync_dev.debian_root``, cached outside the
checkout) gets the shell lines of "Install, step by step" one step at a time, as root
in a chroot (``idsync_dev.chroot``): apt-get, the virtualenv and the wheel built from
this checkout, ``install-files``, the real ``systemd-sysusers`` and ``systemd-tmpfiles``,
the credential file, the ``/usr/local/bin/idsync`` wrapper (``runuser``) against the
suite's slapd, ``systemctl enable``, and the commands of step 7 that need no running
systemd. Without root, debootstrap or the mirror the test is skipped; under ``CI=true``
it fails instead."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from idsync_dev.chroot import Chroot
from idsync_dev.debian_root import DebianRoot, DocumentedInstall, apt_config, ensure, unavailable
from idsync_dev.sample_users import sample_users_ldif
from idsync_dev.slapd import Slapd

ROOT = Path(__file__).resolve().parent.parent
# What step 4 writes as the password: the test writes the suite slapd's instead.
_DOCUMENTED_PASSWORD = "'the LDAP bind password'"


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


@pytest.fixture(scope="module")
def debian12() -> DebianRoot:
    """The cached Debian 12 root and wheelhouse (built now if missing: two or three minutes)."""
    reason = unavailable(ROOT)
    if reason is not None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: the install steps must run)", pytrace=False)
        pytest.skip(reason)
    return ensure(ROOT)


def test_the_wheel_carries_the_unit_and_examples_and_no_test_code(wheel: Path) -> None:
    """The wheel holds the systemd files, the example conf/ and jobs.d/ (as package data),
    the console's templates and assets, and no test helpers."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("systemd/idsync.service", "systemd/idsync.sysusers", "systemd/idsync.tmpfiles", "conf/sync.json",
                   "conf/provisioner.openicf-ldap.json", "jobs.d/sync-active-ldap-users.toml"):
        needed = f"idsync/share/{needed}"
        assert needed in names, needed
    for page in ("templates/base.html", "templates/jobs.html", "static/console.js", "static/console.css"):
        assert f"idsync/console/{page}" in names, page  # the console's templates and assets
    assert not [n for n in names if n.startswith(("idsync/testing/", "tests/"))]


def _stat(chroot: Chroot, *paths: str) -> dict[str, str]:
    """path -> "owner:group mode", as the chroot's own passwd and group name them."""
    out = chroot.run("stat -c '%n %U:%G %a' " + " ".join(paths)).stdout
    return {line.split()[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def _upgrade_check(install_md: Path) -> str:
    """The shell lines of the first block of docs/install.md's "Upgrading" section."""
    section = install_md.read_text().split("## Upgrading", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.timeout(1200)  # a first run builds the Debian root
def test_install_steps_as_written_on_debian_12(debian12: DebianRoot, wheel: Path, slapd: Slapd, ldap_subtree: str,
                                               tmp_path: Path) -> None:
    """Steps 1 to 7 of docs/install.md, as written, on Debian 12 as root: the apt-get line
    installs what a stock system lacks; the wheel goes into /opt/idsync with its
    dependencies; ``install-files`` writes the unit naming it (and keeps configuration on a
    second run); the real systemd-sysusers and systemd-tmpfiles make the account and
    directories with the documented owners and modes; the credential file is root:idsync
    0640; the /usr/local/bin/idsync wrapper runs ``validate``, ``jobs`` and a real
    ``run-job`` as the idsync user with the credentials it hands over, against the suite's
    slapd, so every file in /var/lib/idsync belongs to idsync and the store is 0600;
    ``systemctl enable`` and ``systemd-analyze verify`` accept the unit; step 7's
    ``status``, ``jobs``, ``run-job --dry-run``, status.json and ``man idsync`` answer."""
    steps = DocumentedInstall.read(ROOT).steps
    chroot = Chroot(debian12.rootfs, tmp_path / "chroot", binds={"/run/wheelhouse": debian12.wheelhouse,
                                                                 "/run/idsync-apt": apt_config(tmp_path / "apt")},
                    read_only=frozenset({"/run/wheelhouse", "/run/idsync-apt"}))
    # The documented command lines, with pip kept off the network: the wheelhouse
    # holds every dependency. apt-get answers its question as an administrator would.
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/run/wheelhouse", "DEBIAN_FRONTEND": "noninteractive",
           "APT_CONFIG": "/run/idsync-apt/assume-yes.conf"}

    def step(number: int, lines: list[str] | None = None) -> str:
        done = chroot.run("\n".join(steps[number] if lines is None else lines), env=env)
        return done.stdout + done.stderr

    # 1. Python, man and the program, from the wheel in root's home.
    home = chroot.host_path("/root")
    home.mkdir(mode=0o700, parents=True)
    shutil.copyfile(wheel, home / wheel.name)
    out = step(1, [re.sub(r"idsync-[\w.]+-py3-none-any\.whl", wheel.name, line) for line in steps[1]])
    assert "0 newly installed" in out  # the root was made with this very apt-get line
    assert "Successfully installed" in out and "idsync-" in out

    # 2. The files beside the program; configuration is kept on a second run, and
    #    --root fills an image directory instead.
    out = step(2)
    assert "wrote    /etc/systemd/system/idsync.service" in out and "wrote    /usr/local/bin/idsync" in out
    unit = chroot.run("cat /etc/systemd/system/idsync.service").stdout
    assert "ExecStart=/opt/idsync/bin/idsync --project /etc/idsync run" in unit
    assert "kept     /etc/idsync/conf/sync.json" in step(2)
    image = chroot.run("/opt/idsync/bin/idsync install-files --root /tmp/image").stdout
    assert "wrote    /tmp/image/etc/systemd/system/idsync.service" in image

    # 3. The account and directories, by the real systemd tools on the system itself.
    step(3)
    account = chroot.run("getent passwd idsync").stdout.strip().split(":")
    assert int(account[2]) < 1000 and account[5:] == ["/var/lib/idsync", "/usr/sbin/nologin"]
    assert _stat(chroot, "/etc/idsync", "/etc/idsync/conf", "/etc/idsync/jobs.d", "/etc/idsync/credentials",
                 "/etc/idsync/conf/sync.json", "/etc/idsync/jobs.d/sync-active-ldap-users.toml",
                 "/var/lib/idsync") == {
        "/etc/idsync": "root:idsync 750", "/etc/idsync/conf": "root:idsync 750",
        "/etc/idsync/jobs.d": "root:idsync 770", "/etc/idsync/credentials": "root:idsync 750",
        "/etc/idsync/conf/sync.json": "root:idsync 640",
        "/etc/idsync/jobs.d/sync-active-ldap-users.toml": "root:idsync 640",
        "/var/lib/idsync": "idsync:idsync 750"}

    # 4. The bind password as a credential file (the suite slapd's), and the provisioner
    #    edited as the step says: credentials_file, host and port, the subtree to read.
    assert any(_DOCUMENTED_PASSWORD in line for line in steps[4])
    step(4, [line.replace(_DOCUMENTED_PASSWORD, shlex.quote(slapd.admin_password)) for line in steps[4]])
    assert _stat(chroot, "/etc/idsync/credentials/ldap-password") == {
        "/etc/idsync/credentials/ldap-password": "root:idsync 640"}
    provisioner = chroot.host_path("/etc/idsync/conf/provisioner.openicf-ldap.json")
    config = json.loads(provisioner.read_text())
    properties = config["configurationProperties"]
    del properties["credentials"]
    properties.update(credentials_file="ldap-password", host="127.0.0.1", port=slapd.port,
                      baseContexts=[ldap_subtree], baseContextsToSynchronize=[ldap_subtree])
    provisioner.write_text(json.dumps(config, indent=4))  # same file: its owner and mode stay
    slapd.add_ldif(sample_users_ldif(2, ldap_subtree))

    # 5. The wrapper, first on PATH, runs the commands as the service would.
    assert chroot.run("command -v idsync").stdout.strip() == "/usr/local/bin/idsync"
    out = step(5)
    assert "/etc/idsync: configuration ok" in out and "sync-active-ldap-users" in out
    # The daemon's first fire, by hand: a real run writes the store and status file.
    out = chroot.run("idsync run-job sync-active-ldap-users").stdout
    assert "job sync-active-ldap-users: SUCCESS" in out and "(created 2, linked 2)" in out, out
    # Written as the idsync user with the unit's UMask; the status file is for monitoring
    # agents to read (the directory keeps others out).
    assert _stat(chroot, "/var/lib/idsync/idsync.db", "/var/lib/idsync/status.json") == {
        "/var/lib/idsync/idsync.db": "idsync:idsync 600", "/var/lib/idsync/status.json": "idsync:idsync 644"}

    # 6. Enabling works offline; starting needs systemd as PID 1, which a chroot lacks.
    enable = next(line for line in steps[6] if line.startswith("systemctl enable"))
    chroot.run(enable.replace(" --now", ""))
    assert chroot.run("readlink /etc/systemd/system/multi-user.target.wants/idsync.service").stdout.strip() == \
        "/etc/systemd/system/idsync.service"
    verified = chroot.run("systemd-analyze verify /etc/systemd/system/idsync.service", check=False)
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr

    # 7. What works without the daemon running.
    watch = {line.split("#")[0].strip(): "" for line in steps[7] if line.startswith(("idsync ", "cat ", "man "))}
    assert len(watch) == 5, watch
    for line in watch:
        watch[line] = chroot.run(line).stdout
    status, jobs, dry_run, status_json, manual = watch.values()
    assert "systemLdapActiveAccounts_managedUser" in status and "SUCCESS" in status, status
    assert "sync-active-ldap-users" in jobs and "never" not in jobs.split("sync-inactive")[0]
    assert "job sync-active-ldap-users: SUCCESS (dry run)" in dry_run, dry_run
    assert json.loads(status_json)["jobs"]["sync-active-ldap-users"]["lastRun"]["state"] == "SUCCESS"
    assert "NAME" in manual and "idsync" in manual
    assert chroot.run("find /var/lib/idsync ! -user idsync -o ! -group idsync").stdout == ""

    # Upgrading: the new version's validate as the service sees things (the installed one
    # stands in for it; from a plain shell a credentials_file would not be found), then
    # the files beside the program refreshed, configuration kept.
    check = _upgrade_check(ROOT / "docs" / "install.md")
    out = chroot.run(check.replace("/opt/idsync-new/", "/opt/idsync/"))
    assert "/etc/idsync: configuration ok" in out.stdout + out.stderr, out.stdout + out.stderr
    refreshed = chroot.run("/opt/idsync/bin/idsync install-files --force").stdout
    assert "wrote    /etc/systemd/system/idsync.service" in refreshed and "wrote    /usr/local/bin/idsync" in refreshed
    assert "kept     /etc/idsync/conf/provisioner.openicf-ldap.json" in refreshed
    shutil.rmtree(tmp_path / "chroot")  # 200 MB; a failed run keeps it to look at
