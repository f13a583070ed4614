"""One directory as the connector sees it: searches through python-ldap
(``reader``: C decoding, pages asked for ahead), writes through ldap3, and the
translation of ldap3's failures into idsync's errors.

Two clients, on purpose: reads are where the client's CPU goes (a recon decodes
every entry), and python-ldap decodes several times faster than ldap3; a write
costs the directory far more than the client, so writes keep ldap3's operations,
whose errors and value handling the connector was built on (docs/ldap.md,
"One client or two", has the measurements). The write connection opens only when
something is written: a recon that only reads never opens it.

A connection is not thread-safe: it belongs to one resource, and a resource is used
by one thread at a time. Each side opens on first use and is dropped when the peer
fails, so the next call opens a fresh one.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ldap3
import structlog
from ldap3.core import exceptions as ldap_errors

from idsync.connectors.ldap.config import LdapSettings
from idsync.connectors.ldap.reader import LdapReader, Scope, SearchEntry
from idsync.errors import AuthenticationFailed, PeerUnavailable, TLSError

__all__ = ["LdapConnection", "Scope", "SearchEntry"]

log = structlog.get_logger("idsync.connectors.ldap_connection")

# Result codes that say the server cannot serve at all, rather than "not this object".
_PEER_DOWN = {51: "busy", 52: "unavailable", 3: "timeLimitExceeded", 80: "other"}


def _tls_failure(error: Exception) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("ssl", "certificate", "tls", "hostname"))


def _tls_reason(error: Exception, host: str) -> str:
    """The useful part of ldap3's TLS error text (which can embed the whole certificate)."""
    text = str(error)
    if "doesn't match" in text:
        return f"certificate is not valid for {host}"
    found = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?)\s*\(", text)
    return found.group(1) if found else text


class LdapConnection:
    """A lazily opened, bound connection for one system's settings."""

    def __init__(self, system: str, settings: LdapSettings) -> None:
        self._system = system
        self._settings = settings
        self._conn: ldap3.Connection | None = None
        self._reader = LdapReader(system, settings)

    @property
    def where(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    def close(self) -> None:
        self._reader.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing a dead connection: nothing is left to release.
            with contextlib.suppress(ldap_errors.LDAPException):
                conn.unbind()

    def open(self) -> ldap3.Connection:
        """The bound write connection, opened now if needed; raises PeerError."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        s = self._settings
        tls = None
        if s.ssl or s.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if s.verify_certificate else ssl.CERT_NONE,
                ca_certs_file=s.ca_file,
                sni=s.host,
            )
        server = ldap3.Server(s.host, port=s.port, use_ssl=s.ssl, tls=tls, get_info=ldap3.NONE,
                              connect_timeout=s.connect_timeout)
        conn = ldap3.Connection(
            server, user=s.principal, password=s.credentials, auto_bind=ldap3.AUTO_BIND_NONE,
            # ldap3 packs the receive timeout as an integer.
            receive_timeout=math.ceil(s.read_timeout), raise_exceptions=False, check_names=False,
            return_empty_attributes=False, auto_range=False, read_only=False,
        )
        try:
            conn.open()
            if s.start_tls and not conn.start_tls():
                raise TLSError(f"{self._system}: StartTLS refused by {self.where}: "
                               f"{conn.result and conn.result.get('description')}")
            if not conn.bind():
                description = (conn.result or {}).get("description", "refused")
                conn.unbind()
                raise AuthenticationFailed(
                    f"{self._system}: bind as {s.principal or 'anonymous'} refused: {description}")
        except (ldap_errors.LDAPStartTLSError, ldap_errors.LDAPCertificateError) as error:
            raise TLSError(f"{self._system}: TLS with {self.where} failed: "
                               f"{_tls_reason(error, s.host)}") from None
        except ldap_errors.LDAPException as error:
            if (s.ssl or s.start_tls) and _tls_failure(error):
                raise TLSError(f"{self._system}: TLS with {self.where} failed: "
                               f"{_tls_reason(error, s.host)}") from None
            raise PeerUnavailable(
                f"{self._system}: cannot connect to {self.where}: {error}") from None
        log.debug("ldap.connected", system=self._system, url=s.url, start_tls=s.start_tls,
                  principal=s.principal)
        self._conn = conn
        return conn

    def call(self, what: str, operation: Callable[[ldap3.Connection], Any]) -> dict[str, Any]:
        """Run one operation and return ldap3's result dict; a dead or refusing
        peer raises PeerError (and the connection is dropped)."""
        conn = self.open()
        try:
            operation(conn)
        except ldap_errors.LDAPCommunicationError as error:
            self.close()
            raise PeerUnavailable(
                f"{self._system}: {what} on {self.where} failed: {error}") from None
        result: dict[str, Any] = dict(conn.result or {})
        code = result.get("result", 0)
        if code in _PEER_DOWN:
            self.close()
            raise PeerUnavailable(f"{self._system}: {what} on {self.where}: "
                                  f"{result.get('description')}")
        return result

    def search(self, base: str, search_filter: str, attributes: Sequence[str], *,
               scope: Scope = "sub") -> list[SearchEntry]:
        """One unpaged search (for small, bounded answers: ids, one DN)."""
        return next(self.search_pages(base, search_filter, attributes, 0, scope=scope), [])

    def search_pages(self, base: str, search_filter: str, attributes: Sequence[str],
                     page_size: int, *, scope: Scope = "sub",
                     base_required: bool = False) -> Iterator[list[SearchEntry]]:
        """Paged search (RFC 2696) when ``page_size`` > 0; one list per page, the
        next page requested before this one is yielded (``reader``).
        ``base_required``: a base that does not exist fails the read (a listing
        taken for complete would make everything under it look deleted)."""
        self._log_command(base, search_filter, attributes, page_size, scope)
        return self._reader.search_pages(base, search_filter, attributes, page_size, scope=scope,
                                         base_required=base_required)

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

