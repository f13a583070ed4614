"""RFC 4533's two answers that come once per entry, decoded without pyasn1.

A refresh answers each changed entry with a Sync State Control, and a present phase
(or a session log's deletes) with Sync Info Messages whose ``syncIdSet`` lists up to
every entryUUID of the subtree. python-ldap decodes both with pyasn1, in pure Python
and generically: decoding took most of a refresh's time (a bulk change of 20,000 users
beside a present phase of 100,000: 4.5 s of the run's 9.7). Both values are small fixed
shapes of BER (X.690), read here directly:

    syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID OCTET STRING (SIZE(16)),
                                  cookie OCTET STRING OPTIONAL }
    syncInfoValue ::= CHOICE {
        newcookie      [0] syncCookie,
        refreshDelete  [1] SEQUENCE { cookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE },
        refreshPresent [2] SEQUENCE { cookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE },
        syncIdSet      [3] SEQUENCE { cookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE,
                                      syncUUIDs SET OF syncUUID } }

What they give is what python-ldap's ``SyncStateControl`` and ``SyncInfoMessage`` give
(``tests/test_ldap_syncber.py`` holds them to it); anything else is a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ldap.controls import KNOWN_RESPONSE_CONTROLS
from ldap.syncrepl import SyncStateControl

__all__ = ["RESPONSE_CONTROLS", "SyncInfo", "SyncState", "sync_info", "sync_state"]

_STATES = ("present", "add", "modify", "delete")
_SEQUENCE, _SET, _OCTETS, _BOOLEAN, _ENUMERATED = 0x30, 0x31, 0x04, 0x01, 0x0A


def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The tag byte of the element at ``pos`` and where its value starts and ends (definite
    lengths only, as LDAP's BER has them)."""
    if pos + 2 > end:
        raise ValueError("truncated BER element")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise ValueError("a high tag number, which no sync value has")
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or pos + size > end:
            raise ValueError("an indefinite or impossible BER length")
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    if pos + length > end:
        raise ValueError("a BER value longer than what holds it")
    return tag, pos, pos + length


def _uuid(raw: bytes) -> str:
    if len(raw) != 16:
        raise ValueError(f"a syncUUID of {len(raw)} bytes (16 expected)")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _cookie(raw: bytes) -> str:
    return raw.decode("latin-1")


def sync_state(value: bytes) -> tuple[str, str, str | None]:
    """A Sync State Control's value: (state, entryUUID, cookie or None)."""
    tag, pos, end = _element(value, 0, len(value))
    if tag != _SEQUENCE or end != len(value):
        raise ValueError("a syncStateValue is one SEQUENCE")
    tag, start, stop = _element(value, pos, end)
    if tag != _ENUMERATED or not 0 < stop - start <= 2:
        raise ValueError("a syncStateValue starts with its state")
    state = int.from_bytes(value[start:stop], "big", signed=True)
    if not 0 <= state < len(_STATES):
        raise ValueError(f"a sync state {state} (0 to 3 expected)")
    tag, start, pos = _element(value, stop, end)
    if tag != _OCTETS:
        raise ValueError("a syncStateValue's entryUUID is an OCTET STRING")
    uuid = _uuid(value[start:pos])
    cookie = None
    if pos < end:
        tag, start, pos = _element(value, pos, end)
        if tag != _OCTETS or pos != end:
            raise ValueError("a syncStateValue ends with its cookie")
        cookie = _cookie(value[start:pos])
    return _STATES[state], uuid, cookie


@dataclass
class SyncInfo:
    """A Sync Info Message as python-ldap's ``SyncInfoMessage`` has it: one of the four set."""

    newcookie: str | None = None  # the others keep python-ldap's names
    refreshDelete: dict[str, Any] | None = None
    refreshPresent: dict[str, Any] | None = None
    syncIdSet: dict[str, Any] | None = None


def sync_info(value: bytes) -> SyncInfo:
    """A Sync Info Message's value."""
    tag, pos, end = _element(value, 0, len(value))
    if end != len(value) or tag & 0xC0 != 0x80:
        raise ValueError("a syncInfoValue is one context-tagged choice")
    number = tag & 0x1F
    if number == 0:
        return SyncInfo(newcookie=_cookie(value[pos:end]))
    if number not in (1, 2, 3):
        raise ValueError(f"a syncInfoValue choice [{number}] (0 to 3 expected)")
    fields: dict[str, Any] = {}
    flag: bool | None = None
    uuids: list[str] | None = None
    while pos < end:
        tag, start, pos = _element(value, pos, end)
        if tag == _OCTETS and not fields and flag is None and uuids is None:
            fields["cookie"] = _cookie(value[start:pos])
        elif tag == _BOOLEAN and flag is None and uuids is None and pos - start == 1:
            flag = value[start] != 0
        elif tag == _SET and number == 3 and uuids is None:
            uuids = []
            at = start
            while at < pos:
                kind, first, at = _element(value, at, pos)
                if kind != _OCTETS:
                    raise ValueError("syncUUIDs holds OCTET STRINGs")
                uuids.append(_uuid(value[first:at]))
        else:
            raise ValueError(f"an unexpected element (tag {tag:#04x}) in a syncInfoValue")
    if number == 3:
        if uuids is None:
            raise ValueError("a syncIdSet without its syncUUIDs")
        return SyncInfo(syncIdSet={**fields, "syncUUIDs": uuids, "refreshDeletes": bool(flag)})
    done = {**fields, "refreshDone": True if flag is None else flag}
    return SyncInfo(refreshDelete=done) if number == 1 else SyncInfo(refreshPresent=done)


class SyncState(SyncStateControl):  # type: ignore[misc]
    """python-ldap's Sync State Control, decoded by ``sync_state``."""

    def decodeControlValue(self, encodedControlValue: bytes) -> None:
        self.state, self.entryUUID, self.cookie = sync_state(encodedControlValue)


# What a refresh's answers are decoded with: python-ldap's own, the per-entry one replaced.
RESPONSE_CONTROLS = {**KNOWN_RESPONSE_CONTROLS, SyncStateControl.controlType: SyncState}
