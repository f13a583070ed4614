"""Multi-valued LDAP attributes written as value adds and removes, and group
membership written on the groups.

A changed multi-valued attribute is not replaced whole: the values to add and
to remove are computed against what the entry holds, so a group of 50,000
members that gains one costs one value on the wire, and a value another tool
added at the same time is not lost. Values of DN-valued attributes
(``uniqueMember``, ``member``, ``memberOf``...) are compared as DNs: case and
spacing do not make a different member.

``group_changes`` turns an entry's groups into the groups to join and to leave,
which ``groups`` writes on the groups (``ldapGroups``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ldap3.utils.dn import parse_dn

__all__ = ["ADD", "DELETE", "DN_ATTRIBUTES", "MEMBER_OF", "REPLACE", "Changes", "group_changes", "norm_dn",
           "value_changes"]

# The kinds of value change, as LDAP's modify operation names them.
ADD, DELETE, REPLACE = "MODIFY_ADD", "MODIFY_DELETE", "MODIFY_REPLACE"
# One modify: attribute -> its changes, in order (DELETE with no values removes the attribute).
Changes = dict[str, list[tuple[str, list[str | bytes]]]]

DN_ATTRIBUTES = frozenset({"member", "uniquemember", "memberof", "owner", "manager", "seealso",
                           "roleoccupant", "secretary", "ismemberof"})
MEMBER_OF = "memberof"


def norm_dn(dn: str) -> str:
    """A DN's comparison form: no spaces around separators, lower case."""
    try:
        parts = parse_dn(dn.strip(), escape=True, strip=True)
    except Exception:  # noqa: BLE001 - ldap3 raises several kinds for a malformed DN
        return dn.strip().lower()
    text = "".join(f"{attr.strip()}={value.strip()}{sep}" for attr, value, sep in parts)
    return text.lower()


def _key(value: str | bytes, dn_valued: bool) -> Any:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return norm_dn(value) if dn_valued else value


def value_changes(attribute: str, current: Sequence[bytes], wanted: Sequence[str | bytes]
                  ) -> list[tuple[str, list[str | bytes]]]:
    """The modify operations turning ``current`` values into ``wanted``: a delete of
    the values that go, an add of those that come; nothing when equal."""
    dn_valued = attribute.lower() in DN_ATTRIBUTES
    have = {_key(v, dn_valued): v for v in current}
    want = {_key(v, dn_valued): v for v in wanted}
    removes: list[str | bytes] = [v for k, v in have.items() if k not in want]
    adds = [v for k, v in want.items() if k not in have]
    ops: list[tuple[str, list[str | bytes]]] = []
    if removes:
        ops.append((DELETE, removes))
    if adds:
        ops.append((ADD, adds))
    return ops


def group_changes(current: Iterable[bytes | str], wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """(groups to join, groups to leave) as DNs, compared as DNs."""
    have = {norm_dn(_text(g)): _text(g) for g in current}
    want = {norm_dn(g): g for g in wanted if g}
    return [g for k, g in want.items() if k not in have], [g for k, g in have.items() if k not in want]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
