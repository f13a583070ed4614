"""Active Directory's naming rules, checked before a write (``uidAttribute`` objectGUID).

A domain controller refuses a name that breaks them with a code that names no rule
(a Windows DC answers a 21-character ``sAMAccountName`` with ``00000523 ... problem 22
(Invalid argument)``, a taken one with ``ENTRY_EXISTS``); idsync fails the object
first, saying which rule and which value:

- ``sAMAccountName``: at most 20 characters on a user (``__ACCOUNT__``), 256 on a group
  (what the DC accepts: Samba does not check the 20); none of ``" / \\ [ ] : ; | = , + * ?
  < >`` and no control character; not only periods and spaces; unique in the domain.
- ``userPrincipalName``: ``name@suffix``, one ``@`` with text on both sides; unique in
  the forest (searched for under ``baseContexts``: the domain, or the forest when they
  are the global catalog's; the DC checks the rest of the forest itself).

``check_names`` checks the values, ``check_unique`` searches for another holder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ldap.filter import escape_filter_chars

from idsync.errors import ObjectRejected

__all__ = ["UNIQUE", "check_names", "check_unique"]

SAM = "samaccountname"
UPN = "userprincipalname"
# The attributes AD keeps unique, and where.
UNIQUE = {SAM: "in the domain", UPN: "in the forest"}
_SPELLING = {SAM: "sAMAccountName", UPN: "userPrincipalName"}
_FORBIDDEN = frozenset('"/\\[]:;|=,+*?<>')
_LIMITS = {"__ACCOUNT__": 20, "__GROUP__": 256}


def _text(values: Sequence[str | bytes]) -> str | None:
    if not values:
        return None
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_names(native_type: str, values: Mapping[str, Sequence[str | bytes]],
                current: Mapping[str, Sequence[bytes]] | None = None) -> dict[str, str]:
    """Fail the object when a written ``sAMAccountName`` or ``userPrincipalName``
    (``values``: LDAP attribute -> the values written) breaks AD's rules; the values of
    the two, lower-cased attribute -> value, for the uniqueness search. ``current``:
    the entry's attributes (None for a new entry); a name it already holds is left
    alone (an entry made elsewhere under looser rules can still be updated)."""
    written = {name.lower(): _text(vals) for name, vals in values.items() if name.lower() in UNIQUE}
    found = {name: value for name, value in written.items()
             if value and (_text((current or {}).get(name) or ()) or "").lower() != value.lower()}
    if (sam := found.get(SAM)) is not None:
        limit = _LIMITS.get(native_type, 256)
        if len(sam) > limit:
            raise ObjectRejected(f"ldap: sAMAccountName {sam!r} has {len(sam)} characters; Active Directory "
                                 f"allows at most {limit} on a {'user' if limit == 20 else 'group'}")
        bad = sorted({c for c in sam if c in _FORBIDDEN or ord(c) < 32})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise ObjectRejected(f"ldap: sAMAccountName {sam!r} contains {shown}; Active Directory forbids "
                                 '" / \\ [ ] : ; | = , + * ? < > and control characters in it')
        if not sam.strip(". "):
            raise ObjectRejected(f"ldap: sAMAccountName {sam!r} is only periods and spaces; Active Directory "
                                 "refuses it")
    if (upn := found.get(UPN)) is not None:
        name, at, suffix = upn.rpartition("@")
        if not at or not name or not suffix or "@" in name:
            raise ObjectRejected(f"ldap: userPrincipalName {upn!r} is not of the form name@suffix "
                                 "(one @, text on both sides)")
    return found


def check_unique(found: Mapping[str, str], dn: str, bases: Sequence[str],
                 holders: Callable[[str, str], list[str]]) -> None:
    """Fail the object when an entry other than ``dn`` holds one of the ``found``
    values (``check_names``). ``holders(base, filter)``: the DNs a search finds."""
    for key, value in found.items():
        search = f"({_SPELLING[key]}={escape_filter_chars(value)})"  # a value never becomes filter syntax
        for base in bases:
            others = [other for other in holders(base, search) if other.lower() != dn.lower()]
            if others:
                raise ObjectRejected(f"ldap: {_SPELLING[key]} {value!r} is already in use by {others[0]}; "
                                     f"Active Directory keeps it unique {UNIQUE[key]}")
