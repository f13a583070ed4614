"""RFC 4533's Sync State Control and Sync Info Message as ``syncber`` decodes them: the same
as python-ldap's pyasn1 classes give for values pyasn1 encodes, and a clear error for
values that are not those shapes."""

from __future__ import annotations

import uuid

import pytest
from idsync.connectors.ldap.syncber import SyncState, sync_info, sync_state
from ldap.syncrepl import (
    SyncIdSet,
    SyncInfoMessage,
    SyncInfoValue,
    SyncStateControl,
    SyncStateValue,
    SyncUUIDs,
)
from pyasn1.codec.ber import encoder
from pyasn1.type import tag, univ

_IDS = [uuid.UUID(int=i * 0x1234567890ABCDEF1234567 + 7).bytes for i in range(300)]


def _state(state: int, raw: bytes, cookie: str | None) -> bytes:
    value = SyncStateValue()
    value.setComponentByName("state", state)
    value.setComponentByName("entryUUID", raw)
    if cookie is not None:
        value.setComponentByName("cookie", cookie)
    return bytes(encoder.encode(value))


@pytest.mark.parametrize("cookie", [None, "rid=000,csn=20261207101010.123456Z#000000#000#000000"])
@pytest.mark.parametrize("state", [0, 1, 2, 3])
def test_a_sync_state_reads_as_python_ldap_reads_it(state: int, cookie: str | None) -> None:
    """Each state, with and without a cookie."""
    encoded = _state(state, _IDS[state], cookie)
    theirs = SyncStateControl()
    theirs.decodeControlValue(encoded)
    ours = SyncState()
    ours.decodeControlValue(encoded)
    assert (ours.state, ours.entryUUID, ours.cookie) == (theirs.state, theirs.entryUUID, theirs.cookie)
    assert sync_state(encoded) == (theirs.state, theirs.entryUUID, theirs.cookie)
    assert isinstance(ours, SyncStateControl)


def _choice(name: str, component: object) -> bytes:
    value = SyncInfoValue()
    value.setComponentByName(name, component)
    return bytes(encoder.encode(value))


def _id_set(count: int, cookie: str | None, deletes: bool | None) -> bytes:
    ids = SyncUUIDs()
    for i, raw in enumerate(_IDS[:count]):
        ids.setComponentByPosition(i, raw)
    chosen = SyncIdSet().subtype(implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 3))
    if cookie is not None:
        chosen.setComponentByName("cookie", cookie)
    if deletes is not None:
        chosen.setComponentByName("refreshDeletes", univ.Boolean(deletes))
    chosen.setComponentByName("syncUUIDs", ids)
    return _choice("syncIdSet", chosen)


def _refresh(name: str, cookie: str | None, done: bool | None) -> bytes:
    value = SyncInfoValue()
    chosen = value.componentType[name].getType().clone()
    if cookie is not None:
        chosen.setComponentByName("cookie", cookie)
    if done is not None:
        chosen.setComponentByName("refreshDone", univ.Boolean(done))
    return _choice(name, chosen)


_COOKIE = "rid=000,csn=20261207101010.123456Z#000000#000#000000"
_INFOS = [
    _choice("newcookie", SyncInfoValue().componentType["newcookie"].getType().clone(_COOKIE)),
    _refresh("refreshDelete", _COOKIE, None), _refresh("refreshDelete", None, False),
    _refresh("refreshPresent", _COOKIE, True), _refresh("refreshPresent", None, None),
    _id_set(300, _COOKIE, True), _id_set(1, None, None), _id_set(0, _COOKIE, False),
]


@pytest.mark.parametrize("encoded", _INFOS, ids=range(len(_INFOS)))
def test_a_sync_info_message_reads_as_python_ldap_reads_it(encoded: bytes) -> None:
    """A new cookie, refreshDelete and refreshPresent with and without a cookie and done,
    and syncIdSets of 300, one and no UUIDs (a present phase's are as many as the entries),
    deletes or not: what python-ldap's ``SyncInfoMessage`` says, field by field."""
    theirs, ours = SyncInfoMessage(encoded), sync_info(encoded)
    for name in ("newcookie", "refreshDelete", "refreshPresent", "syncIdSet"):
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize("encoded", [
    b"", b"\x30", b"\x30\x05\x0a\x01\x01\x04\x10", b"\x31\x00",  # truncated, not a SEQUENCE
    b"\x30\x06\x0a\x01\x07\x04\x01\x00",  # state 7
    b"\x30\x06\x0a\x01\x01\x04\x01\x00",  # a UUID of one byte
])
def test_a_sync_state_of_another_shape_is_refused(encoded: bytes) -> None:
    with pytest.raises(ValueError, match=r"BER|syncStateValue|sync state|syncUUID"):
        sync_state(encoded)


@pytest.mark.parametrize("encoded", [
    b"", b"\x04\x00", b"\xa5\x00",  # nothing, not a choice, choice [5]
    b"\xa3\x02\x01\x01",  # a BOOLEAN of no length
    b"\xa3\x03\x01\x01\xff",  # a syncIdSet without its UUIDs
    b"\xa1\x05\x04\x01a\x04\x00",  # two cookies
])
def test_a_sync_info_of_another_shape_is_refused(encoded: bytes) -> None:
    with pytest.raises(ValueError, match=r"BER|syncInfoValue|syncIdSet|unexpected"):
        sync_info(encoded)
