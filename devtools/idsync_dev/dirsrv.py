"""A throwaway 389 Directory Server for tests and benchmarks.

``DirSrv`` makes an instance with ``dscreate from-file`` under a private prefix (a
directory of its own, lib389's ``PREFIX``, with a ``defaults.inf`` pointing every path
into it and ``with_systemd = 0``), then runs ``ns-slapd -d 0`` in the foreground on
free ports of 127.0.0.1 (``nsslapd-listenhost``). Nothing outside its directory is
touched; ``stop()`` removes it. ``dscreate`` starts and stops the server once itself
(about 5 seconds); ``ns-slapd`` then answers within a second.

The instance is made for idsync's tests:

- suffix ``dc=example,dc=com`` with ``ou=People`` and ``ou=Groups``;
- ``service_dn`` (``uid=idsync,ou=Services,...``), an ordinary account that an ACI
  lets read and write everything, ``nsAccountLock`` included, without look-through or
  size limits: the Directory Manager bypasses password policy, an ordinary account does not;
- the global password policy checks syntax (``passwordCheckSyntax``, at least
  8 characters), so a weak password is refused with the server's reason;
- the retro changelog (with ``nsuniqueid`` kept as ``targetUniqueId``) and the content
  synchronization plugin (RFC 4533) are enabled, for liveSync;
- the referential integrity and memberOf plugins are on (``memberOf`` on users, for
  ``groupOfNames`` and ``groupOfUniqueNames`` groups alike).

Binding ports is unprivileged here, but ``dscreate`` and ``ns-slapd`` change to the
``dirsrv`` user, which needs root: ``unavailable()`` says why an instance cannot run.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from idsync_dev.processes import end_process, ldapmodify

__all__ = ["DirSrv", "DirSrvError"]

_NS_SLAPD = "/usr/sbin/ns-slapd"
_DEFAULTS = Path("/usr/share/dirsrv/inf/defaults.inf")
_INSTANCE = "idsync"
# defaults.inf keys whose paths move into the prefix.
_MOVED = re.compile(r"^(\w+) = (/(?:etc|var|run|dev/shm|tmp)\b.*)$")
_PLUGINS = ("Retro Changelog Plugin", "Content Synchronization", "MemberOf Plugin",
            "referential integrity postoperation")


# The service account reads whole directories: no look-through or size limit of its own
# (an ordinary account stops at 5,000 candidate entries: adminLimitExceeded).
_UNLIMITED = "".join(f"{limit}: -1\n" for limit in ("nsLookThroughLimit", "nsPagedLookThroughLimit",
                                                    "nsSizeLimit", "nsPagedSizeLimit"))


class DirSrvError(RuntimeError):
    """389 DS or one of its tools failed; the message carries their output."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DirSrv:
    """One private 389 DS instance. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(self, *, base_dn: str = "dc=example,dc=com", admin_password: str = "idsync-test-secret",
                 service_password: str = "idsync-service-secret") -> None:
        self.base_dn = base_dn
        self.admin_dn = "cn=Directory Manager"
        self.admin_password = admin_password
        self.service_dn = f"uid=idsync,ou=Services,{base_dn}"
        self.service_password = service_password
        self.directory = Path(tempfile.mkdtemp(prefix="idsync-dirsrv-"))
        self.port = 0
        self.create_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why an instance cannot run on this machine, or None."""
        if not Path(_NS_SLAPD).is_file() or shutil.which("dscreate") is None or not _DEFAULTS.is_file():
            return "389 Directory Server is not installed (Debian package 389-ds-base)"
        if os.geteuid() != 0:
            return "dscreate and ns-slapd change to the dirsrv user, which needs root"
        try:
            pwd.getpwnam("dirsrv")
        except KeyError:
            return "the dirsrv user is missing (reinstall the Debian package 389-ds-base)"
        return None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def config_dir(self) -> Path:
        return self.directory / "etc" / "dirsrv" / f"slapd-{_INSTANCE}"

    def __enter__(self) -> DirSrv:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> DirSrv:
        """Create the instance, start it and prepare the tree the tests use."""
        started = time.monotonic()
        self.port = _free_port()
        self._create()
        self._configure()
        self.create_seconds = time.monotonic() - started
        self._launch()
        self.add_ldif(self._base_ldif())
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        end_process(process, 15)
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop ns-slapd and start it again on the same port: what the server reads only
        at startup (its retro changelog's first change number...) is read again."""
        process, self._process = self._process, None
        end_process(process, 30)
        self._launch()

    def add_ldif(self, text: str) -> None:
        """Apply LDIF as the Directory Manager: plain entries are added, records with
        a ``changetype`` applied as written."""
        failure = ldapmodify(self.url, self.admin_dn, self.admin_password, text)
        if failure is not None:
            raise DirSrvError(failure)

    def bulk_load(self, ldif_path: str | Path) -> None:
        """Replace the suffix's content with the base entries and the entries of
        ``ldif_path`` (none of them), imported offline (``ns-slapd ldif2db``: thousands
        of entries a second, where adds through the server manage dozens); the server is
        stopped meanwhile and started again on the same port."""
        source = self.directory / "import.ldif"
        with source.open("w") as out:
            out.write(f"dn: {self.base_dn}\nobjectClass: top\nobjectClass: domain\n"
                      f"dc: {self.base_dn.split(',')[0].split('=', 1)[1]}\naci: {self._aci()}\n\n")
            out.write(self._base_ldif().split("\n\n", 1)[1] + "\n")
            with Path(ldif_path).open() as entries:
                shutil.copyfileobj(entries, out)
        shutil.chown(source, "dirsrv", "dirsrv")
        process, self._process = self._process, None
        end_process(process, 30)
        done = subprocess.run([_NS_SLAPD, "ldif2db", "-D", str(self.config_dir), "-n", "userroot", "-i", str(source)],
                              capture_output=True, text=True, check=False)
        source.unlink()
        if done.returncode != 0:
            raise DirSrvError(f"ns-slapd ldif2db failed ({done.returncode}): {self._errors()}")
        self._launch()

    # -- making the instance ------------------------------------------------------

    def _create(self) -> None:
        prefix = self.directory
        prefix.chmod(0o755)  # ns-slapd runs as dirsrv and must reach its files
        inf_dir = prefix / "share" / "dirsrv" / "inf"
        inf_dir.mkdir(parents=True)
        lines = []
        for line in _DEFAULTS.read_text().splitlines():
            moved = _MOVED.match(line)
            if line.startswith("with_systemd"):
                line = "with_systemd = 0"
            elif moved:
                line = f"{moved.group(1)} = {prefix}{moved.group(2)}"
            lines.append(line)
        (inf_dir / "defaults.inf").write_text("\n".join(lines) + "\n")
        for sub in ("etc/dirsrv", "var/lib/dirsrv", "var/log/dirsrv", "run/dirsrv", "run/lock/dirsrv",
                    "dev/shm", "tmp", "etc/default"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        for shipped in ("schema", "config"):
            shutil.copytree(Path("/etc/dirsrv") / shipped, prefix / "etc" / "dirsrv" / shipped)
        inf = prefix / "instance.inf"
        inf.write_text(
            "[general]\nfull_machine_name = localhost\nstart = False\nstrict_host_checking = False\n"
            f"[slapd]\ninstance_name = {_INSTANCE}\nport = {self.port}\nsecure_port = {_free_port()}\n"
            f"root_password = {self.admin_password}\nself_sign_cert = False\n"
            f"[backend-userroot]\nsuffix = {self.base_dn}\ncreate_suffix_entry = True\n")
        inf.chmod(0o600)
        subprocess.run(["chown", "-R", "dirsrv:dirsrv", str(prefix)], check=True)
        done = subprocess.run(["dscreate", "from-file", str(inf)], capture_output=True, text=True,
                              check=False, env={**os.environ, "PREFIX": str(prefix)})
        if done.returncode != 0:
            raise DirSrvError(f"dscreate from-file failed ({done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-2000:]}")

    def _configure(self) -> None:
        """Edit ``dse.ldif`` (the server is stopped): listen on 127.0.0.1 only, plugins on,
        the retro changelog keeping each entry's nsUniqueId, a password syntax policy."""
        dse = self.config_dir / "dse.ldif"
        blocks = dse.read_text().split("\n\n")
        for i, block in enumerate(blocks):
            head = block.split("\n", 1)[0].lower()
            if head == "dn: cn=config":
                block = block.replace(f"\nnsslapd-port: {self.port}",
                                      f"\nnsslapd-port: {self.port}\nnsslapd-listenhost: 127.0.0.1")
                block += "\npasswordCheckSyntax: on\npasswordMinLength: 8"
            elif any(head == f"dn: cn={name.lower()},cn=plugins,cn=config" for name in _PLUGINS):
                block = block.replace("nsslapd-pluginEnabled: off", "nsslapd-pluginEnabled: on")
                if "retro changelog" in head:
                    block += "\nnsslapd-attribute: nsuniqueid:targetUniqueId"
                if "memberof plugin" in head:
                    block += "\nmemberOfGroupAttr: uniqueMember"
            blocks[i] = block
        dse.write_text("\n\n".join(blocks))

    def _launch(self) -> None:
        log_path = self.directory / "ns-slapd.out"
        pid_file = self.directory / "run" / "dirsrv" / f"slapd-{_INSTANCE}.pid"
        with log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                [_NS_SLAPD, "-D", str(self.config_dir), "-i", str(pid_file), "-d", "0"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise DirSrvError(f"ns-slapd exited at startup: {self._errors()}")
            if self._answers():
                return
            time.sleep(0.05)
        errors = self._errors()
        self.stop()
        raise DirSrvError(f"ns-slapd did not answer within 60 s: {errors}")

    def _errors(self) -> str:
        log = self.directory / "var" / "log" / "dirsrv" / f"slapd-{_INSTANCE}" / "errors"
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.strip()[-2000:] or (self.directory / "ns-slapd.out").read_text(errors="replace")[-2000:]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                pass
        except OSError:
            return False
        done = subprocess.run(["ldapsearch", "-x", "-H", self.url, "-b", "", "-s", "base", "vendorName"],
                              capture_output=True, text=True, check=False, timeout=10)
        return done.returncode == 0

    def _aci(self) -> str:
        return (f'(targetattr="*||nsAccountLock||nsRoleDN")(version 3.0; acl "idsync service"; allow (all) '
                f'userdn="ldap:///{self.service_dn}";)')

    def _base_ldif(self) -> str:
        """The ACI on the suffix (the first record), then the entries under it."""
        return (
            f"dn: {self.base_dn}\nchangetype: modify\nadd: aci\naci: {self._aci()}\n\n"
            f"dn: ou=Services,{self.base_dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: Services\n\n"
            f"dn: {self.service_dn}\nobjectClass: top\nobjectClass: account\nobjectClass: simpleSecurityObject\n"
            f"uid: idsync\nuserPassword: {self.service_password}\n{_UNLIMITED}\n"
            f"dn: ou=People,{self.base_dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: People\n\n"
            f"dn: ou=Groups,{self.base_dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: Groups\n"
        )
