"""One python-ldap connection to one directory: open (TLS, bind), searches
(``reader``: C decoding, pages asked for ahead), writes, and the translation of
libldap's failures into idsync's errors.

python-ldap wraps OpenLDAP's C client library: it decodes entries and encodes
operations in C, several times cheaper than ldap3's pure-Python BER, for reads
and writes alike (docs/ldap.md, "One client", has the measurements). ldap3 is
still used, without a connection, to check filter and DN syntax.

A connection is not thread-safe: it belongs to one resource, and a resource is used
by one thread at a time. It opens on first use and is dropped when the peer fails,
so the next call opens a fresh one.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import ldap
import structlog

from idsync.connectors.ldap.config import LdapSettings
from idsync.connectors.ldap.members import ADD, DELETE, REPLACE, Changes
from idsync.connectors.ldap.reader import Scope, SearchEntry, read_pages
from idsync.connectors.ldap.tls import tls_failure
from idsync.errors import (
    AuthenticationFailed,
    NotFound,
    ObjectRejected,
    PeerError,
    PeerMisconfigured,
    PeerUnavailable,
    TLSError,
)

__all__ = ["LdapConnection", "LdapRefused", "Scope", "SearchEntry"]

log = structlog.get_logger("idsync.connectors.ldap_connection")

# RFC 4511 names of result codes, as messages name them.
_CODE_NAMES = {
    1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded", 4: "sizeLimitExceeded",
    7: "authMethodNotSupported", 8: "strongerAuthRequired", 11: "adminLimitExceeded",
    12: "unavailableCriticalExtension", 13: "confidentialityRequired", 16: "noSuchAttribute",
    17: "undefinedAttributeType", 18: "inappropriateMatching", 19: "constraintViolation",
    20: "attributeOrValueExists", 21: "invalidAttributeSyntax", 32: "noSuchObject", 34: "invalidDNSyntax",
    48: "inappropriateAuthentication", 49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy",
    52: "unavailable", 53: "unwillingToPerform", 54: "loopDetect", 64: "namingViolation",
    65: "objectClassViolation", 66: "notAllowedOnNonLeaf", 67: "notAllowedOnRDN", 68: "entryAlreadyExists",
    69: "objectClassModsProhibited", 71: "affectsMultipleDSAs", 80: "other",
}
_MODIFY = {ADD: ldap.MOD_ADD, DELETE: ldap.MOD_DELETE, REPLACE: ldap.MOD_REPLACE}
# Failures that say the server cannot serve at all, rather than "not this object".
_PEER_DOWN = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.BUSY, ldap.UNAVAILABLE, ldap.TIMELIMIT_EXCEEDED, ldap.OTHER,
              ldap.CONNECT_ERROR)


def _details(error: ldap.LDAPError) -> tuple[str, str]:
    """(RFC 4511 name or libldap's description, the server's or libldap's message)."""
    info: dict[str, Any] = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    code = info.get("result")
    name = _CODE_NAMES.get(code) if isinstance(code, int) else None
    return name or str(info.get("desc") or type(error).__name__), str(info.get("info") or "").strip()


def _said(name: str, message: str) -> str:
    return f"{name}: {message}" if message else name


def _wire(values: Sequence[str | bytes]) -> list[bytes]:
    """Attribute values as sent: text in UTF-8."""
    return [v.encode("utf-8") if isinstance(v, str) else v for v in values]


class LdapRefused(ObjectRejected):
    """The directory refused a write to one entry; ``result`` is the RFC 4511 name
    of the reason (``entryAlreadyExists``, ``attributeOrValueExists``...)."""

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        self.result = result


class _Unreachable(PeerUnavailable):
    """The server could not be reached (``reason``): the next of ``failover`` is tried."""

    def __init__(self, system: str, where: str, reason: str) -> None:
        super().__init__(f"{system}: cannot connect to {where}: {reason}")
        self.reason = reason


class LdapConnection:
    """A lazily opened, bound connection for one system's settings."""

    def __init__(self, system: str, settings: LdapSettings) -> None:
        self._system = system
        self._settings = settings  # the server connected to, or to be tried first
        self._configured = settings
        self._conn: ldap.ldapobject.LDAPObject | None = None

    @property
    def where(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing a dead connection: nothing is left to release.
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_ext()

    def open(self) -> ldap.ldapobject.LDAPObject:
        """The bound connection, opened now if needed; raises PeerError. A server that
        cannot be reached is passed over for the next of ``failover``; one that refuses
        the bind or the TLS handshake is not (another would be asked the same)."""
        if self._conn is not None:
            return self._conn
        servers = self._configured.servers()
        unreachable: dict[str, str] = {}  # host:port -> why it could not be reached
        for server in servers:
            self._settings = server
            try:
                self._conn = self._bound()
            except _Unreachable as exc:
                if len(servers) == 1:
                    raise
                unreachable[self.where] = exc.reason
                continue
            if unreachable:
                log.warning("ldap.failover", system=self._system, url=server.url, unreachable=list(unreachable))
            return self._conn
        self._settings = self._configured
        raise PeerUnavailable(f"{self._system}: cannot connect to {self.where} nor to a failover server: "
                              + "; ".join(f"{where}: {why}" for where, why in unreachable.items()))

    def _bound(self) -> ldap.ldapobject.LDAPObject:
        s = self._settings
        conn = ldap.initialize(s.url)
        conn.protocol_version = ldap.VERSION3
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.connect_timeout)
        conn.set_option(ldap.OPT_TIMEOUT, s.read_timeout)
        conn.timeout = s.read_timeout  # python-ldap's own wait in its synchronous calls (bind, writes)
        if s.ssl or s.start_tls:
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT,
                            ldap.OPT_X_TLS_DEMAND if s.verify_certificate else ldap.OPT_X_TLS_NEVER)
            if s.ca_file:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, s.ca_file)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # last: makes the options above this connection's own
        try:
            if s.start_tls:
                conn.start_tls_s()
            conn.simple_bind_s(s.principal or "", s.credentials or "")
        except ldap.LDAPError as error:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_ext()
            self._open_failed(error)
        log.debug("ldap.connected", system=self._system, url=s.url, start_tls=s.start_tls, principal=s.principal)
        return conn

    def _open_failed(self, error: ldap.LDAPError) -> NoReturn:
        s = self._settings
        name, message = _details(error)
        who = s.principal or "anonymous"
        if isinstance(error, ldap.INVALID_CREDENTIALS | ldap.INAPPROPRIATE_AUTH | ldap.STRONG_AUTH_REQUIRED):
            # libldap's message is left out: a refused bind says nothing more useful.
            raise AuthenticationFailed(f"{self._system}: bind as {who} refused: {name}") from None
        tls = (s.ssl or s.start_tls) and isinstance(error, ldap.SERVER_DOWN | ldap.CONNECT_ERROR | ldap.PROTOCOL_ERROR)
        reason = tls_failure(s) if tls else None
        if reason is not None:
            raise TLSError(f"{self._system}: TLS with {self.where} failed: {reason}") from None
        if isinstance(error, _PEER_DOWN):
            raise _Unreachable(self._system, self.where, _said(name, message)) from None
        raise AuthenticationFailed(f"{self._system}: bind as {who} refused: {_said(name, message)}") from None

    # Writes ------------------------------------------------------------------
    # The directory refusing a write raises ``LdapRefused`` (``NotFound`` for an entry
    # that is not there); a dead or refusing peer raises ``PeerUnavailable`` (and the
    # connection is dropped).

    def add(self, dn: str, attributes: Mapping[str, Sequence[str | bytes]]) -> None:
        """Create the entry ``dn`` with these attributes (``objectClass`` among them)."""
        entry = [(name, _wire(values)) for name, values in attributes.items()]
        self._write("create", dn, lambda c: c.add_ext_s(dn, entry))

    def modify(self, dn: str, changes: Changes, *, kind: str = "update") -> None:
        """Apply ``changes`` to the entry ``dn`` in one modify operation."""
        modlist = [(_MODIFY[op], name, _wire(values) or None) for name, ops in changes.items() for op, values in ops]
        self._write(kind, dn, lambda c: c.modify_ext_s(dn, modlist))

    def delete(self, dn: str) -> None:
        self._write("delete", dn, lambda c: c.delete_ext_s(dn))

    def rename(self, dn: str, rdn: str, new_superior: str | None) -> None:
        """Give the entry ``dn`` the new RDN (the old one's value removed), under ``new_superior`` if given."""
        self._write("rename", dn, lambda c: c.rename_s(dn, rdn, newsuperior=new_superior, delold=1))

    def _write(self, kind: str, dn: str, operation: Callable[[ldap.ldapobject.LDAPObject], object]) -> None:
        conn = self.open()
        try:
            operation(conn)
        except _PEER_DOWN as error:
            self.close()
            raise PeerUnavailable(f"{self._system}: {kind} on {self.where} failed: "
                                  f"{_said(*_details(error))}") from None
        except ldap.LDAPError as error:
            name, message = _details(error)
            text = f"ldap: {kind} {dn} refused: {_said(name, message)}"
            raise (NotFound(text) if isinstance(error, ldap.NO_SUCH_OBJECT) else LdapRefused(text, name)) from None

    # Searches ----------------------------------------------------------------

    def search(self, base: str, search_filter: str, attributes: Sequence[str], *,
               scope: Scope = "sub") -> list[SearchEntry]:
        """One unpaged search (for small, bounded answers: ids, one DN)."""
        return next(self.search_pages(base, search_filter, attributes, 0, scope=scope), [])

    def search_pages(self, base: str, search_filter: str, attributes: Sequence[str],
                     page_size: int, *, scope: Scope = "sub",
                     base_required: bool = False) -> Iterator[list[SearchEntry]]:
        """Paged search (RFC 2696) when ``page_size`` > 0; one list per page, in the
        directory's order, the next page asked for before this one is yielded
        (``reader``). ``base_required``: a base that does not exist fails the read
        (a listing taken for complete would make everything under it look deleted)."""
        conn = self.open()
        self._log_command(base, search_filter, attributes, page_size, scope)

        def failed(error: ldap.LDAPError) -> NoReturn:
            self._search_failed(error, base)

        return read_pages(conn, base, scope, search_filter, attributes, page_size,
                          timeout=self._settings.read_timeout, base_required=base_required, failed=failed)

    def _search_failed(self, error: ldap.LDAPError, base: str) -> NoReturn:
        name, message = _details(error)
        if isinstance(error, ldap.NO_SUCH_OBJECT):
            raise PeerMisconfigured(f"{self._system}: search under {base} failed: the base context does not exist "
                                    "(noSuchObject), so nothing under it can be read; check "
                                    "baseContexts and baseContextsToSynchronize") from None
        if isinstance(error, ldap.TIMEOUT):
            self.close()
            raise PeerUnavailable(f"{self._system}: search on {self.where} failed: no answer within "
                                  f"{self._settings.read_timeout:g} s (readTimeout)") from None
        if isinstance(error, _PEER_DOWN):
            self.close()
            raise PeerUnavailable(f"{self._system}: search on {self.where} failed: {_said(name, message)}") from None
        if isinstance(error, ldap.SIZELIMIT_EXCEEDED):
            # A server-side size limit cut the answer short: what came back is
            # not the whole source, and treating it as such would delete the rest.
            raise PeerError(f"{self._system}: search under {base} stopped at the server's size limit "
                            "(sizeLimitExceeded), so the read is incomplete; raise the size limit for the bind DN "
                            "or use a blockSize the server pages within") from None
        if isinstance(error, ldap.ADMINLIMIT_EXCEEDED):
            raise PeerError(f"{self._system}: search under {base} stopped at an administrative limit of the server "
                            "(adminLimitExceeded), so the read is incomplete; raise the bind DN's limits (389 DS: "
                            "nsLookThroughLimit and nsPagedLookThroughLimit -1 on its entry)") from None
        raise PeerError(f"{self._system}: search under {base} failed: {_said(name, message)}") from None

    def _log_command(self, base: str, search_filter: str, attributes: Sequence[str],
                     page_size: int, scope: Scope) -> None:
        s = self._settings
        args = ["ldapsearch", "-H", s.url, "-x"]
        if s.principal:
            args += ["-D", s.principal, "-W"]
        if s.start_tls:
            args.append("-ZZ")
        args += ["-b", base, "-s", scope]
        if page_size:
            args += ["-E", f"pr={page_size}/noprompt"]
        args += [search_filter, *(attributes or ["1.1"])]
        command = shlex.join(args)
        if (s.ssl or s.start_tls) and not s.verify_certificate:
            command = f"LDAPTLS_REQCERT=never {command}"
        elif s.ca_file and (s.ssl or s.start_tls):
            command = f"LDAPTLS_CACERT={shlex.quote(s.ca_file)} {command}"
        log.debug("ldap.search", system=self._system, command=command)
