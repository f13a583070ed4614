"""A throwaway OpenLDAP server for tests, benchmarks and the demo.

``Slapd`` builds a ``cn=config`` directory with ``slapadd -n0`` inside a temporary
directory, starts ``slapd`` in the foreground on free ports of 127.0.0.1 and waits
until it accepts connections. It never touches the system slapd (``/etc/ldap``,
port 389): everything it writes lives under its own directory, which ``stop()``
removes. It runs the same as root or as an ordinary user.

Users get ``memberOf`` for their ``groupOfUniqueNames`` (``uniqueMember``) and
``groupOfNames`` (``member``) groups alike: the memberof overlay is configured
once per group class, with referential integrity (``member_of=False`` leaves it
out: a directory whose groups alone know their members). ppolicy is loaded with
a default policy (``cn=default,ou=Policies``) that honours ``pwdAccountLockedTime``:
an entry holding ``000001010000Z`` there cannot bind.

With ``syncprov=True`` (the default) the database is a sync provider (RFC 4533,
for liveSync) keeping a session log of ``session_log`` deletes; ``syncprov=False``
makes a server without one (liveSync then polls ``entryCSN``).

With ``tls=True`` a throwaway CA and a server certificate (for ``localhost`` and
``127.0.0.1`` by default) are made with the ``openssl`` command, and the server
listens on an ``ldaps://`` port too; StartTLS works on the plain port.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from idsync_dev.certs import make_test_certificates
from idsync_dev.processes import end_process
from idsync_dev.sample_users import iter_sample_users_ldif, sample_users_ldif

__all__ = ["Slapd", "SlapdError", "loaded_slapd", "sample_users_ldif"]

_SLAPD = "/usr/sbin/slapd"
_SCHEMA_DIR = Path("/etc/ldap/schema")
_MODULE_DIR = Path("/usr/lib/ldap")
_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
# (group object class, member attribute) pairs whose members get memberOf.
_MEMBER_OF_GROUPS = (("groupOfUniqueNames", "uniqueMember"), ("groupOfNames", "member"))


class SlapdError(RuntimeError):
    """slapd or one of its tools failed; the message carries their output."""


def _free_port() -> int:
    # The port is released before slapd binds it; start() retries if another
    # process takes it in between.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise SlapdError(f"{name} is not installed (Debian packages slapd and ldap-utils)")
    return found


def _run(args: list[str], what: str, stdin: str | None = None) -> None:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip()
        raise SlapdError(f"{what} failed ({done.returncode}): {output}")


class Slapd:
    """One private slapd. Use as a context manager, or call ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        base_dn: str = "dc=example,dc=com",
        admin_password: str = "idsync-test-secret",
        tls: bool = True,
        tls_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        directory: str | Path | None = None,
        member_of: bool = True,
        syncprov: bool = True,
        session_log: int = 1000,
    ) -> None:
        self.base_dn = base_dn
        self.member_of = member_of
        self.admin_dn = f"cn=admin,{base_dn}"
        self.admin_password = admin_password
        self.tls = tls
        self.tls_names = tls_names
        self.syncprov = syncprov
        self.session_log = session_log
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="idsync-slapd-"))
        self.port = 0
        self.ldaps_port = 0
        self.ca_file: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._configured = False

    @staticmethod
    def available() -> bool:
        """Whether the slapd binary and its tools are installed."""
        tools = ("slapadd", "ldapmodify")
        return Path(_SLAPD).is_file() and all(
            shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin") for t in tools)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        if not self.tls:
            raise SlapdError("this slapd was started without TLS")
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Slapd:
        """Configure (first time only), start and wait until the server answers."""
        if not self._configured:
            self._configure()
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            if attempts > 1:
                self.port, self.ldaps_port = _free_port(), _free_port()
            try:
                self._launch()
                return self
            except SlapdError:
                if attempt == attempts - 1:
                    raise
        return self

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server; remove its directory unless ``keep_data`` (used by bulk_load)."""
        process, self._process = self._process, None
        end_process(process, 10)
        if not keep_data and self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._configured = False

    def add_ldif(self, text: str) -> None:
        """Apply LDIF through the running server: plain entries are added, records
        with a ``changetype`` are applied as written."""
        password_file = self.directory / "admin.pw"
        args = [_tool("ldapmodify"), "-x", "-H", self.url, "-D", self.admin_dn,
                "-y", str(password_file), "-a"]
        _run(args, "ldapmodify", stdin=text)

    def bulk_load(self, ldif_path: str | Path) -> None:
        """Load many entries with ``slapadd`` (the server is stopped meanwhile and
        restarted on the same ports). The file must not repeat existing entries."""
        was_running = self.running
        self.stop(keep_data=True)
        # -w: the database's contextCSN moves to the newest entry, as a write through the
        # server would move it (liveSync's first token is read from it).
        _run([_tool("slapadd"), "-F", str(self.directory / "config"), "-b", self.base_dn,
              "-q", "-w", "-l", str(ldif_path)], "slapadd")
        if was_running:
            self._launch()

    def _configure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for sub in ("config", "data", "run"):
            (self.directory / sub).mkdir(exist_ok=True)
        (self.directory / "admin.pw").write_text(self.admin_password)
        (self.directory / "admin.pw").chmod(0o600)
        if self.tls:
            certs = make_test_certificates(self.directory / "tls", self.tls_names)
            self.ca_file = str(certs.ca_file)
        _run([_tool("slapadd"), "-n0", "-F", str(self.directory / "config")], "slapadd -n0",
             stdin=self._config_ldif())
        _run([_tool("slapadd"), "-F", str(self.directory / "config"), "-b", self.base_dn, "-q"],
             "slapadd (base entries)", stdin=self._base_ldif())
        self.port, self.ldaps_port = _free_port(), _free_port()
        self._configured = True

    def _launch(self) -> None:
        urls = [self.url + "/"]
        if self.tls:
            urls.append(self.ldaps_url + "/")
        log_path = self.directory / "slapd.log"
        (self.directory / "run" / "slapd.pid").unlink(missing_ok=True)
        with log_path.open("wb") as log_file:
            # -d makes slapd stay in the foreground (so stop() owns the process);
            # level "none" still prints startup errors to stderr.
            self._process = subprocess.Popen(
                [_SLAPD, "-d", "none", "-h", " ".join(urls), "-F", str(self.directory / "config")],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                output = log_path.read_text(errors="replace").strip()
                raise SlapdError(f"slapd exited at startup: {output}")
            if self._accepting():
                return
            time.sleep(0.02)
        self.stop(keep_data=True)
        output = log_path.read_text(errors="replace").strip()
        raise SlapdError(f"slapd did not accept connections within 15 s: {output}")

    def _accepting(self) -> bool:
        # slapd writes its pid file only once it holds its listeners, so a port
        # answered by some other process does not count as started.
        if not (self.directory / "run" / "slapd.pid").exists():
            return False
        ports = [self.port, self.ldaps_port] if self.tls else [self.port]
        for port in ports:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                continue
            return False
        return True

    def _config_ldif(self) -> str:
        wanted = [*(["memberof"] if self.member_of else []), "ppolicy", *(["syncprov"] if self.syncprov else [])]
        modules = ["back_mdb"] + [m for m in wanted if (_MODULE_DIR / f"{m}.so").exists()]
        tls = ""
        if self.tls:
            tls_dir = self.directory / "tls"
            tls = (f"olcTLSCACertificateFile: {tls_dir / 'ca.crt'}\n"
                   f"olcTLSCertificateFile: {tls_dir / 'server.crt'}\n"
                   f"olcTLSCertificateKeyFile: {tls_dir / 'server.key'}\n")
        parts = [
            f"dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {self.directory / 'run' / 'slapd.pid'}\n{tls}",
            "dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n"
            f"olcModulePath: {_MODULE_DIR}\n" + "".join(f"olcModuleLoad: {m}\n" for m in modules),
            "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n",
            *(f"include: file://{_SCHEMA_DIR / name}.ldif\n" for name in _SCHEMAS),
            "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\n"
            "olcSizeLimit: unlimited\n",
            "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
            "olcDatabase: {0}config\n",
            "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcMdbConfig\nolcDatabase: {1}mdb\n"
            f"olcDbDirectory: {self.directory / 'data'}\nolcSuffix: {self.base_dn}\n"
            f"olcRootDN: {self.admin_dn}\nolcRootPW: {self.admin_password}\n"
            # A sparse map: room for the 100k-user benchmark, costs nothing until used.
            "olcDbMaxSize: 4294967296\nolcDbNoSync: TRUE\n"
            "olcDbIndex: objectClass eq\nolcDbIndex: entryUUID,entryCSN eq\n"
            "olcDbIndex: uid,mail eq\nolcDbIndex: cn eq,sub\n"
            "olcLimits: * size=unlimited time=unlimited\n",
        ]
        # (overlay, its configuration lines); slapd numbers them in this order.
        overlays: list[tuple[str, str]] = []
        if "memberof" in modules:
            # One memberof instance per group class: a user's memberOf lists both
            # its groupOfUniqueNames and its groupOfNames groups, and the groups of
            # both follow a rename or delete of the user (refint).
            overlays += [("memberof", f"objectClass: olcMemberOf\nolcMemberOfGroupOC: {oc}\n"
                                      f"olcMemberOfMemberAD: {attr}\nolcMemberOfRefInt: TRUE\n")
                         for oc, attr in _MEMBER_OF_GROUPS]
        if "ppolicy" in modules:
            overlays.append(("ppolicy", "objectClass: olcPPolicyConfig\n"
                                        f"olcPPolicyDefault: {self.policy_dn}\n"))
        if "syncprov" in modules:
            # The session log answers a refresh with the deletes since the consumer's cookie.
            overlays.append(("syncprov", "objectClass: olcSyncProvConfig\n"
                                         f"olcSpSessionlog: {self.session_log}\nolcSpCheckpoint: 100 1\n"))
        for index, (name, lines) in enumerate(overlays):
            parts.append(f"dn: olcOverlay={{{index}}}{name},olcDatabase={{1}}mdb,cn=config\n"
                         f"objectClass: olcOverlayConfig\nolcOverlay: {{{index}}}{name}\n{lines}")
        return "\n".join(parts)

    @property
    def policy_dn(self) -> str:
        return f"cn=default,ou=Policies,{self.base_dn}"

    def _base_ldif(self) -> str:
        top = self.base_dn.split(",")[0].split("=", 1)[1]
        # pwdLockout makes ppolicy refuse binds of an entry locked by pwdAccountLockedTime;
        # with pwdMaxFailure 0, failed binds never lock anyone.
        policy = (f"dn: ou=Policies,{self.base_dn}\nobjectClass: top\nobjectClass: organizationalUnit\n"
                  f"ou: Policies\n\ndn: {self.policy_dn}\nobjectClass: top\nobjectClass: device\n"
                  "objectClass: pwdPolicy\ncn: default\npwdAttribute: userPassword\npwdLockout: TRUE\n"
                  "pwdMaxFailure: 0\n") if (_MODULE_DIR / "ppolicy.so").exists() else ""
        return (
            f"dn: {self.base_dn}\nobjectClass: top\nobjectClass: dcObject\n"
            f"objectClass: organization\ndc: {top}\no: {top}\n\n"
            f"dn: ou=People,{self.base_dn}\nobjectClass: top\nobjectClass: organizationalUnit\n"
            "ou: People\n\n"
            f"dn: ou=Groups,{self.base_dn}\nobjectClass: top\nobjectClass: organizationalUnit\n"
            "ou: Groups\n\n" + policy
        )


@contextlib.contextmanager
def loaded_slapd(users: int, work: Path, password: str = "bench-secret") -> Iterator[Slapd]:
    """A slapd without TLS under ``work`` holding ``users`` generated users, loaded
    offline with ``slapadd`` (the benchmarks' directory)."""
    ldif = work / "users.ldif"
    with ldif.open("w") as f:
        f.writelines(iter_sample_users_ldif(users, "ou=People,dc=example,dc=com"))
    with Slapd(admin_password=password, tls=False, directory=work / "slapd") as ldap:
        ldap.bulk_load(ldif)
        yield ldap
