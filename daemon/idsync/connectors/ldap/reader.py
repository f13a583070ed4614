"""Paged searches over a python-ldap connection, the next page asked for ahead.

libldap parses the BER of each entry in C and hands back plain ``(dn,
{attribute: [bytes]})`` tuples, which is all the connector needs; attribute names
are put in lower case here, once per page and name.

Prefetch: as soon as a page's final message (with the RFC 2696 cookie) is in, the
request for the next page goes out, and only then is the page handed to the caller.
The directory finds and sends the next page while the caller maps and stores this
one; the answer waits in the socket until it is asked for. Entries keep the
directory's order: pages are requested and consumed one after the other, with at
most one request outstanding. A caller that stops early abandons it.

Completeness: any answer that is not a whole result (a size or time limit, a
connection dropped between or inside pages, no answer within the read timeout)
goes to ``failed``, which raises, so a partial listing is never taken for the
source. Attributes sent in ranges (Active Directory's ``member;range=0-1499``)
are read whole before their entry is handed on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, NoReturn

import ldap
from ldap.controls import SimplePagedResultsControl

from idsync.connectors.ldap.values import RawEntry, merge_ranges

__all__ = ["Scope", "SearchEntry", "read_pages"]

SearchEntry = tuple[str, RawEntry]
Scope = Literal["base", "one", "sub"]
_SCOPES = {"base": ldap.SCOPE_BASE, "one": ldap.SCOPE_ONELEVEL, "sub": ldap.SCOPE_SUBTREE}
_PAGED = {SimplePagedResultsControl.controlType: SimplePagedResultsControl}


def read_pages(conn: ldap.ldapobject.LDAPObject, base: str, scope: Scope, search_filter: str,
               attributes: Sequence[str], page_size: int, *, timeout: float, base_required: bool,
               failed: Callable[[ldap.LDAPError], NoReturn], whole: bool = True) -> Iterator[list[SearchEntry]]:
    """The entries under ``base``, one list per page (one list when ``page_size`` is
    0). A base that does not exist is no entries, unless ``base_required``; any
    other failure is passed to ``failed``. ``whole``: ranged attributes are read to
    their end (False hands on the one range answered: the reading of the next range)."""
    attrlist = list(attributes) or ["1.1"]

    def request(cookie: bytes) -> int:
        controls = [SimplePagedResultsControl(False, size=page_size, cookie=cookie)] if page_size else None
        try:
            return int(conn.search_ext(base, _SCOPES[scope], search_filter, attrlist, serverctrls=controls))
        except ldap.LDAPError as error:
            failed(error)

    def fetch(dn: str, attribute: str) -> RawEntry:
        """One entry's next range of an attribute (a base search of that entry)."""
        page = next(read_pages(conn, dn, "base", "(objectClass=*)", [attribute], 0, timeout=timeout,
                               base_required=False, failed=failed, whole=False), [])
        return page[0][1] if page else {}

    msgid: int | None = request(b"")
    try:
        while msgid is not None:
            current, msgid = msgid, None
            try:
                _, data, _, controls = conn.result3(current, all=1, timeout=timeout, resp_ctrl_classes=_PAGED)
            except ldap.NO_SUCH_OBJECT as error:
                if base_required:
                    failed(error)
                return  # the base is gone, so nothing is under it
            except ldap.TIMEOUT as error:
                with contextlib.suppress(ldap.LDAPError):
                    conn.abandon_ext(current)
                failed(error)
            except ldap.LDAPError as error:
                failed(error)
            entries, ranged = _entries(data)
            if ranged and whole:
                entries = [(dn, merge_ranges(dn, raw, fetch)) for dn, raw in entries]
            cookie = next((c.cookie for c in controls or () if isinstance(c, SimplePagedResultsControl)), b"")
            if page_size and cookie:
                msgid = request(cookie)  # the next page is on its way while this one is processed
            yield entries
    finally:
        if msgid is not None:
            # The caller stopped early: the directory need not send the rest.
            with contextlib.suppress(ldap.LDAPError, AttributeError):  # AttributeError: already unbound
                conn.abandon_ext(msgid)


def _entries(data: list[tuple[str | None, object]] | None) -> tuple[list[SearchEntry], bool]:
    """The entries of a result (attribute names in lower case; search references
    left out), and whether an attribute came in ranges."""
    entries: list[SearchEntry] = []
    names: dict[str, str] = {}  # attribute name as the server spells it -> lower case
    ranged = False
    for dn, attrs in data or ():
        if dn is None or type(attrs) is not dict:
            continue
        raw: dict[str, list[bytes]] = {}
        for name, values in attrs.items():
            key = names.get(name)
            if key is None:
                key = names[name] = name.lower()
                ranged = ranged or ";range=" in key
            raw[key] = values
        entries.append((dn, raw))
    return entries, ranged
