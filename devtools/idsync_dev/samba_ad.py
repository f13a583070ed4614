"""A throwaway Samba Active Directory domain controller for tests and benchmarks.

``SambaDC`` runs Debian's ``samba`` as an AD DC that serves LDAP only (``server
services = ldap``), in the foreground (``samba -i -M single``), with everything it
writes under its own directory. Samba's LDAP ports are fixed (389, 636, the global
catalog's 3268 and 3269), so each instance listens on a loopback address of its own,
127.0.0.N (``interfaces = 127.0.0.N/8``: a bare address or /32 binds nothing).
Binding those ports needs root (or CAP_NET_BIND_SERVICE): ``unavailable()`` says why
a server cannot run here.

Provisioning a domain (``samba-tool domain provision``, 4 to 20 seconds) happens once
per Samba version: the provisioned directory is kept in the test cache
(``IDSYNC_TEST_CACHE``, ``/var/cache/idsync-tests/samba-VERSION``) and each server
starts from a copy, its paths and address written into its ``smb.conf`` (0.05 s).
The cached domain also holds ``LARGE_OU``: 10,000 contacts, members for large groups.

``SambaDC(preload=LDIF)`` starts from that domain with the LDIF added, for benchmarks:
the entries are added offline into ``sam.ldb`` by one ``ldbadd`` in ldb's batch mode
(one transaction, no nested transaction per entry: about 850 users a CPU second, where
LDAP adds manage 150 a second and a plain ``ldbadd`` 15), and the loaded domain is
cached too, keyed by the Samba version and the LDIF's SHA-256: 100,000 users load once,
then start from the cache in seconds.

The domain is ``idsync.test`` (base ``DC=idsync,DC=test``), the administrator
``CN=Administrator,CN=Users,DC=idsync,DC=test``. TLS uses a throwaway CA
(``ca_file``) with a certificate for the server's address. Simple binds are accepted
on the plain port too (``ldap server require strong auth = no``), as a test server
must be readable with ``ldapsearch -x``; Samba also accepts ``unicodePwd`` there,
where a real AD refuses it, so idsync's own refusal is what tests check.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from idsync_dev.certs import make_test_certificates
from idsync_dev.processes import end_process, ldapmodify

__all__ = ["LARGE_COUNT", "LARGE_OU", "SambaDC", "SambaError"]

CACHE = Path(os.environ.get("IDSYNC_TEST_CACHE", "/var/cache/idsync-tests"))
REALM = "IDSYNC.TEST"
BASE_DN = "DC=idsync,DC=test"
_SAMBA = "/usr/sbin/samba"
_PROVISION_MODULE = Path("/usr/lib/python3/dist-packages/samba/provision/__init__.py")
_LDAP_PORTS = (389, 636, 3268, 3269)
# Loopback addresses tried in turn (127.0.0.1 is left to the other servers).
_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(20, 60))
_TEMPLATE_PATH = "/IDSYNC-SAMBA-TEMPLATE"
# In every domain: an OU of contacts, CN=c00000 to CN=c09999, for groups of 10,000 members.
LARGE_OU = f"OU=Large,{BASE_DN}"
LARGE_COUNT = 10_000


class SambaError(RuntimeError):
    """Samba or one of its tools failed; the message carries their output."""


def samba_version() -> str | None:
    """The installed Samba's version (``4.17.12-Debian``), None when it is not installed."""
    if not Path(_SAMBA).is_file():
        return None
    done = subprocess.run([_SAMBA, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().removeprefix("Version ").strip() or None


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _run(what: str, command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SambaError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")


def _keep(domain: Path, target: Path, started: float) -> None:
    """Move a finished domain into the cache as ``target`` and mark it complete."""
    target.mkdir(parents=True)
    shutil.move(str(domain), target / "domain")
    (target / "complete").write_text(f"{time.monotonic() - started:.1f} s\n")


class SambaDC:
    """One private Samba AD DC. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(self, *, admin_password: str = "Idsync-Test-Secret1", address: str | None = None,
                 preload: Path | None = None) -> None:
        self.preload = preload
        self.base_dn = BASE_DN
        self.realm = REALM
        self.admin_dn = f"CN=Administrator,CN=Users,{BASE_DN}"
        self.admin_password = admin_password
        self.address = address or ""
        self.directory = Path(tempfile.mkdtemp(prefix="idsync-samba-"))
        self.ca_file = ""
        self.provision_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._address_lock: IO[str] | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why a Samba DC cannot run on this machine, or None."""
        if samba_version() is None or shutil.which("samba-tool") is None:
            return "Samba is not installed (Debian packages samba, samba-ad-dc, samba-ad-provision)"
        if not _PROVISION_MODULE.is_file():
            return "samba-tool cannot provision a domain (Debian package samba-ad-provision)"
        if os.geteuid() != 0:
            return "Samba's LDAP ports (389, 636) are fixed and binding them needs root"
        return None

    @property
    def port(self) -> int:
        return 389

    @property
    def ldaps_port(self) -> int:
        return 636

    @property
    def global_catalog_port(self) -> int:
        return 3268

    @property
    def url(self) -> str:
        return f"ldap://{self.address}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.address}"

    def __enter__(self) -> SambaDC:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> SambaDC:
        """Copy the provisioned domain, configure it for a free loopback address, start
        it and wait until its LDAP ports answer."""
        self._prepare(self._template() if self.preload is None else self.loaded_domain(self.preload))
        self._launch(self.directory / "etc" / "smb.conf")
        return self

    def _prepare(self, template: Path) -> None:
        shutil.copytree(template, self.directory, dirs_exist_ok=True, symlinks=True)
        self.address = self.address or self._reserve_address()
        certs = make_test_certificates(self.directory / "tls", (self.address,))
        self.ca_file = str(certs.ca_file)
        conf = self.directory / "etc" / "smb.conf"
        text = conf.read_text().replace(_TEMPLATE_PATH, str(self.directory))
        text = re.sub(r"(?m)^\s*interfaces = .*$", f"\tinterfaces = {self.address}/8", text)
        # ldb:nosync: no fsync per write (9 times faster adds); a test server's data is throwaway.
        # An old password stops working at once (Samba allows it for an hour by default).
        extra = ("\tldap server require strong auth = no\n\ttls enabled = yes\n\tldb:nosync = true\n"
                 "\told password allowed period = 0\n"
                 f"\ttls keyfile = {certs.key_file}\n\ttls certfile = {certs.cert_file}\n"
                 f"\ttls cafile = {certs.ca_file}\n")
        conf.write_text(text.replace("[global]\n", "[global]\n" + extra, 1))

    def stop(self) -> None:
        process, self._process = self._process, None
        end_process(process, 10)
        shutil.rmtree(self.directory, ignore_errors=True)
        lock, self._address_lock = self._address_lock, None
        if lock is not None:
            lock.close()

    def add_ldif(self, text: str) -> None:
        """Apply LDIF as the administrator: plain entries are added, records with a
        ``changetype`` applied as written."""
        failure = ldapmodify(self.url, self.admin_dn, self.admin_password, text)
        if failure is not None:
            raise SambaError(failure)

    # -- provisioning -----------------------------------------------------------

    def _template(self) -> Path:
        """The provisioned domain of this Samba version, made now if the cache has none."""
        version = samba_version() or "unknown"
        target = CACHE / f"samba-{re.sub(r'[^A-Za-z0-9.-]', '_', version)}"
        if (target / "complete").exists():
            return target / "domain"
        CACHE.mkdir(parents=True, exist_ok=True)
        with (CACHE / "samba.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / "complete").exists():
                self._provision(target)
        return target / "domain"

    def loaded_domain(self, ldif: Path) -> Path:
        """The cached provisioned domain with ``ldif`` added (a copy of it is what
        ``preload`` starts), made now if the cache has none."""
        template = self._template()
        digest = hashlib.sha256()
        with ldif.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        target = template.parent.parent / f"{template.parent.name}-loaded-{digest.hexdigest()[:16]}"
        if (target / "complete").exists():
            return target / "domain"
        with (CACHE / "samba.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / "complete").exists():
                self._load_offline(template, ldif, target)
        return target / "domain"

    def _load_offline(self, template: Path, ldif: Path, target: Path) -> None:
        started = time.monotonic()
        shutil.rmtree(target, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix="idsync-samba-load-", dir=CACHE))
        try:
            domain = work / "domain"
            shutil.copytree(template, domain, symlinks=True)
            conf = domain / "etc" / "smb.conf"
            text = conf.read_text()
            conf.write_text(text.replace(_TEMPLATE_PATH, str(domain)))
            # batch_mode: one transaction without a nested one per entry (22 times faster);
            # a failed entry fails the whole load. The index cache is sized for 100,000 users.
            _run(f"ldbadd of {ldif}", [
                "ldbadd", "-H", str(domain / "private" / "sam.ldb"), f"--configfile={conf}", "--nosync",
                "-o", "batch_mode:1", "-o", "transaction_index_cache_size:202481", str(ldif)])
            conf.write_text(text)
            _keep(domain, target, started)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _provision(self, target: Path) -> None:
        started = time.monotonic()
        shutil.rmtree(target, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix="idsync-samba-provision-"))
        try:
            domain = work / "domain"
            paths = {"pid directory": "run", "lock directory": "lock", "state directory": "state",
                     "cache directory": "cache", "private dir": "private", "ncalrpc dir": "ncalrpc",
                     "winbindd socket directory": "winbindd", "binddns dir": "bind-dns", "log file": "log"}
            options = [f"--option={key}={domain / sub}" for key, sub in paths.items()]
            options += ["--option=server services=ldap", "--option=bind interfaces only=yes",
                        f"--option=interfaces={_ADDRESSES[0]}/8"]
            _run("samba-tool domain provision", [
                "samba-tool", "domain", "provision", f"--targetdir={domain}", f"--realm={REALM}",
                "--domain=IDSYNC", "--server-role=dc", "--dns-backend=NONE", "--host-name=idsyncdc",
                f"--host-ip={_ADDRESSES[0]}", f"--adminpass={self.admin_password}", "--use-rfc2307", *options])
            conf = domain / "etc" / "smb.conf"
            conf.write_text(conf.read_text().replace(str(domain), _TEMPLATE_PATH))
            self._populate(domain)
            _keep(domain, target, started)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.provision_seconds = time.monotonic() - started

    def _populate(self, domain: Path) -> None:
        """Add ``LARGE_OU`` with ``LARGE_COUNT`` contacts to the provisioned domain (group
        members for the large-group tests: adding them takes most of a minute, once)."""
        filler = SambaDC(admin_password=self.admin_password)
        try:
            filler._prepare(domain)
            filler._launch(filler.directory / "etc" / "smb.conf")
            entries = [f"dn: {LARGE_OU}\nobjectClass: organizationalUnit\n"]
            entries += [f"dn: CN=c{i:05d},{LARGE_OU}\nobjectClass: contact\n" for i in range(LARGE_COUNT)]
            filler.add_ldif("\n".join(entries))
            process, filler._process = filler._process, None
            end_process(process, 30)
            shutil.rmtree(domain / "private")
            shutil.copytree(filler.directory / "private", domain / "private", symlinks=True,
                            ignore=shutil.ignore_patterns("ldapi", "ldap_priv"))
        finally:
            filler.stop()

    # -- running ----------------------------------------------------------------

    def _reserve_address(self) -> str:
        """A loopback address whose LDAP ports are free, held (a lock file per address)
        until ``stop()``: parallel test workers never pick the same one."""
        for address in _ADDRESSES:
            lock = (Path(tempfile.gettempdir()) / f"idsync-samba-{address}.lock").open("w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if all(_port_free(address, port) for port in _LDAP_PORTS):
                self._address_lock = lock
                return address
            lock.close()
        raise SambaError(f"no loopback address from {_ADDRESSES[0]} to {_ADDRESSES[-1]} has ports "
                         f"{', '.join(map(str, _LDAP_PORTS))} free")

    def _launch(self, conf: Path) -> None:
        log_path = self.directory / "samba.out"
        with log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                [_SAMBA, "-i", "-M", "single", "-s", str(conf)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise SambaError(f"samba exited at startup: {log_path.read_text(errors='replace').strip()[-2000:]}")
            if self._answers():
                return
            time.sleep(0.1)
        output = log_path.read_text(errors="replace").strip()[-2000:]
        self.stop()
        raise SambaError(f"samba did not answer LDAP within 60 s: {output}")

    def _answers(self) -> bool:
        for port in (self.port, self.ldaps_port):
            try:
                with socket.create_connection((self.address, port), 0.2):
                    pass
            except OSError:
                return False
        done = subprocess.run(["ldapsearch", "-x", "-H", self.url, "-D", self.admin_dn, "-w", self.admin_password,
                               "-b", "", "-s", "base", "dsServiceName"],
                              capture_output=True, text=True, check=False, timeout=10)
        return done.returncode == 0


def main() -> None:
    """``python -m idsync_dev.samba_ad``: start one and wait (Ctrl-C stops it)."""
    with SambaDC() as server, contextlib.suppress(KeyboardInterrupt):
        print(f"Samba AD DC at {server.url} and {server.ldaps_url} (CA {server.ca_file}), "
              f"bind as {server.admin_dn}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
