"""Searches of one directory through python-ldap (OpenLDAP's C client library):
open (TLS, bind), paged search with the next page asked for ahead, and the
translation of its failures into idsync's errors.

Why python-ldap for reads: libldap parses the BER of each entry in C and hands back
plain ``(dn, {attribute: [bytes]})`` tuples, which is all the connector needs.
Decoding 100,000 entries costs a fraction of what ldap3's pure-Python BER parser
costs (docs/performance.md has the measurements). Writes stay on ldap3
(``connection``): their cost is the server's, not the client's.

Prefetch: as soon as a page's final message (with the RFC 2696 cookie) is in, the
request for the next page goes out, and only then is the page handed to the caller.
The directory finds and sends the next page while the caller maps and stores this
one; the answer waits in the socket until it is asked for. Entries keep the
directory's order: pages are requested and consumed one after the other, with at
most one request outstanding. A caller that stops early abandons it.

Completeness: any answer that is not a whole result (a size or time limit, a
connection dropped between or inside pages, a timeout) raises, so a partial
listing is never taken for the source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NoReturn

import ldap
import structlog
from ldap.controls import SimplePagedResultsControl

from idsync.connectors.ldap.config import LdapSettings
from idsync.connectors.ldap.tls import tls_failure
from idsync.connectors.ldap.values import RawEntry, merge_ranges
from idsync.errors import AuthenticationFailed, PeerError, PeerMisconfigured, PeerUnavailable, TLSError

__all__ = ["LdapReader", "Scope", "SearchEntry"]

log = structlog.get_logger("idsync.connectors.ldap_reader")

SearchEntry = tuple[str, RawEntry]
Scope = Literal["base", "one", "sub"]
_SCOPES = {"base": ldap.SCOPE_BASE, "one": ldap.SCOPE_ONELEVEL, "sub": ldap.SCOPE_SUBTREE}
_PAGED = {SimplePagedResultsControl.controlType: SimplePagedResultsControl}
# RFC 4511 names of the result codes a message may name (as ldap3 and the RFC spell them).
_CODE_NAMES = {
    1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded", 4: "sizeLimitExceeded",
    11: "adminLimitExceeded", 12: "unavailableCriticalExtension", 32: "noSuchObject", 34: "invalidDNSyntax",
    48: "inappropriateAuthentication", 49: "invalidCredentials", 50: "insufficientAccessRights",
    51: "busy", 52: "unavailable", 53: "unwillingToPerform", 80: "other",
}
# Result codes that say the server cannot serve at all, rather than "not this object".
_PEER_DOWN = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.BUSY, ldap.UNAVAILABLE, ldap.TIMELIMIT_EXCEEDED, ldap.OTHER,
              ldap.CONNECT_ERROR)


def _details(error: ldap.LDAPError) -> tuple[str, str]:
    """(RFC 4511 name or libldap's description, the server's or libldap's message)."""
    info: dict[str, Any] = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    code = info.get("result")
    name = _CODE_NAMES.get(code, str(info.get("desc") or type(error).__name__)) if isinstance(code, int) \
        else str(info.get("desc") or type(error).__name__)
    return name, str(info.get("info") or "").strip()


class LdapReader:
    """A lazily opened, bound python-ldap connection for one system's searches.

    Not thread-safe: it belongs to one resource, used by one thread at a time. A
    connection that failed is dropped, so the next search opens a fresh one."""

    def __init__(self, system: str, settings: LdapSettings) -> None:
        self._system = system
        self._settings = settings
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

    def _open(self) -> ldap.ldapobject.LDAPObject:
        if self._conn is not None:
            return self._conn
        s = self._settings
        conn = ldap.initialize(s.url)
        conn.protocol_version = ldap.VERSION3
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.connect_timeout)
        conn.set_option(ldap.OPT_TIMEOUT, s.read_timeout)
        conn.timeout = s.read_timeout  # python-ldap's own wait in the synchronous calls (bind)
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
        except ldap.INVALID_CREDENTIALS as error:
            self._drop(conn)
            who = s.principal or "anonymous"
            raise AuthenticationFailed(f"{self._system}: bind as {who} refused: {_details(error)[0]}") from None
        except ldap.LDAPError as error:
            self._drop(conn)
            self._raise_open_failure(error)
        log.debug("ldap.connected", system=self._system, url=s.url, start_tls=s.start_tls, principal=s.principal)
        self._conn = conn
        return conn

    def _raise_open_failure(self, error: ldap.LDAPError) -> NoReturn:
        s = self._settings
        name, message = _details(error)
        tls = (s.ssl or s.start_tls) and isinstance(error, ldap.SERVER_DOWN | ldap.CONNECT_ERROR | ldap.PROTOCOL_ERROR)
        reason = tls_failure(s) if tls else None
        if reason is not None:
            raise TLSError(f"{self._system}: TLS with {self.where} failed: {reason}")
        if isinstance(error, _PEER_DOWN):
            raise PeerUnavailable(f"{self._system}: cannot connect to {self.where}: {name}"
                                  + (f": {message}" if message else ""))
        raise AuthenticationFailed(f"{self._system}: bind as {s.principal or 'anonymous'} refused: {name}"
                                   + (f": {message}" if message else ""))

    @staticmethod
    def _drop(conn: ldap.ldapobject.LDAPObject) -> None:
        with contextlib.suppress(ldap.LDAPError):
            conn.unbind_ext()

    def search_pages(self, base: str, search_filter: str, attributes: Sequence[str], page_size: int, *,
                     scope: Scope = "sub", base_required: bool = False) -> Iterator[list[SearchEntry]]:
        """Paged search (RFC 2696) when ``page_size`` > 0; one list per page, in the
        directory's order. ``base_required``: a base that does not exist fails the
        read (a listing taken for complete would make everything under it look deleted)."""
        conn = self._open()
        attrlist = list(attributes) or ["1.1"]
        request = self._requester(conn, base, _SCOPES[scope], search_filter, attrlist, page_size)
        msgid: int | None = request(b"")
        try:
            while msgid is not None:
                current, msgid = msgid, None
                answer = self._receive(conn, current, base, base_required)
                if answer is None:
                    return  # noSuchObject: the base is gone, so nothing is under it
                entries, cookie = answer
                if page_size and cookie:
                    msgid = request(cookie)  # the next page is on its way while this one is processed
                yield entries
        finally:
            if msgid is not None and self._conn is not None:
                # The caller stopped early: the directory need not send the rest.
                with contextlib.suppress(ldap.LDAPError):
                    self._conn.abandon_ext(msgid)

    def _requester(self, conn: ldap.ldapobject.LDAPObject, base: str, scope: int, search_filter: str,
                   attrlist: list[str], page_size: int) -> Callable[[bytes], int]:
        def request(cookie: bytes) -> int:
            controls = [SimplePagedResultsControl(False, size=page_size, cookie=cookie)] if page_size else None
            try:
                return int(conn.search_ext(base, scope, search_filter, attrlist, serverctrls=controls))
            except ldap.LDAPError as error:
                self._fail(error, base)
        return request

    def _receive(self, conn: ldap.ldapobject.LDAPObject, msgid: int, base: str,
                 base_required: bool) -> tuple[list[SearchEntry], bytes] | None:
        """One page's entries (attribute names in lower case) and the cookie of the next."""
        try:
            _, data, _, controls = conn.result3(msgid, all=1, timeout=self._settings.read_timeout,
                                                resp_ctrl_classes=_PAGED)
        except ldap.NO_SUCH_OBJECT:
            if base_required:
                raise PeerMisconfigured(f"{self._system}: search under {base} failed: the base context does not "
                                        "exist (noSuchObject), so nothing under it can be read; check "
                                        "baseContextsToSynchronize") from None
            return None
        except ldap.TIMEOUT:
            with contextlib.suppress(ldap.LDAPError):
                conn.abandon_ext(msgid)
            self.close()
            raise PeerUnavailable(f"{self._system}: search on {self.where} failed: no answer within "
                                  f"{self._settings.read_timeout:g} s (readTimeout)") from None
        except ldap.LDAPError as error:
            self._fail(error, base)
        entries: list[SearchEntry] = []
        names: dict[str, str] = {}  # attribute name as the server spells it -> lower case
        ranged = False
        for dn, attrs in data or ():
            if dn is None or type(attrs) is not dict:
                continue  # a search reference
            raw: dict[str, list[bytes]] = {}
            for name, values in attrs.items():
                key = names.get(name)
                if key is None:
                    key = names[name] = name.lower()
                    ranged = ranged or ";range=" in key
                raw[key] = values
            entries.append((dn, raw))
        if ranged:
            entries = self._complete_ranges(conn, entries)
        cookie = next((c.cookie for c in controls or () if isinstance(c, SimplePagedResultsControl)), b"")
        return entries, bytes(cookie or b"")

    def _complete_ranges(self, conn: ldap.ldapobject.LDAPObject, entries: list[SearchEntry]) -> list[SearchEntry]:
        """Entries whose large attributes came in ranges (Active Directory's
        ``member;range=0-1499``) with the remaining ranges read and merged."""
        def fetch(dn: str, attribute: str) -> RawEntry:
            page = next(self.search_pages(dn, "(objectClass=*)", [attribute], 0, scope="base"), [])
            return page[0][1] if page else {}

        return [(dn, merge_ranges(dn, raw, fetch)) for dn, raw in entries]

    def _fail(self, error: ldap.LDAPError, base: str) -> NoReturn:
        name, message = _details(error)
        if isinstance(error, _PEER_DOWN):
            self.close()
            raise PeerUnavailable(f"{self._system}: search on {self.where} failed: {name}"
                                  + (f": {message}" if message else "")) from None
        if isinstance(error, ldap.SIZELIMIT_EXCEEDED):
            # A server-side size limit cut the answer short: what came back is
            # not the whole source, and treating it as such would delete the rest.
            raise PeerError(f"{self._system}: search under {base} stopped at the server's size limit "
                            "(sizeLimitExceeded), so the read is incomplete; raise the size limit for the bind DN "
                            "or use a blockSize the server pages within") from None
        raise PeerError(f"{self._system}: search under {base} failed: {name}"
                        + (f": {message}" if message else "")) from None
