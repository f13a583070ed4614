"""The digests of write-only values (``sync/written.py``): what a link keeps of a password
it wrote, so that a later run writes it again only when it changes. Keyed: the same
password under another project key, or through another mapping, gives another digest."""

from __future__ import annotations

from pathlib import Path

from idsync.config.mappings import parse_mapping
from idsync.crypto import Keyring
from idsync.sync.written import WrittenValues

KEY = Keyring({"openidm-sym-default": bytes(range(32))})
OTHER_KEY = Keyring({"openidm-sym-default": bytes(range(1, 33))})


def _mapping(name: str = "managedUser_systemLdapAccounts", **extra: object):  # type: ignore[no-untyped-def]
    raw = {"name": name, "source": "managed/user", "target": "system/ldap/account",
           "properties": [{"source": "userName", "target": "uid"}, {"source": "password", "target": "userPassword"}],
           **extra}
    return parse_mapping(raw, file="sync.json", key="mappings[0]", base_dir=Path("."))


def test_a_digest_is_keyed_and_names_nothing_it_seals() -> None:
    values = WrittenValues.of(_mapping(), frozenset({"userPassword", "pager"}), KEY.seal)
    assert values.enabled and values.names == {"userPassword"}  # only what the rules write
    sealed = values.sealed({"uid": "a", "userPassword": "S3cret-pw!x"}, "default")
    assert sealed is not None and len(sealed) == 64 and "S3cret" not in sealed
    assert sealed == values.sealed({"uid": "b", "userPassword": "S3cret-pw!x"}, "default")  # only write-only ones
    assert sealed != values.sealed({"userPassword": "S3cret-pw!y"}, "default")
    assert sealed != values.sealed({"userPassword": "S3cret-pw!x"}, "other-qualifier")
    other = WrittenValues.of(_mapping("another"), frozenset({"userPassword"}), KEY.seal)
    assert sealed != other.sealed({"userPassword": "S3cret-pw!x"}, "default")
    elsewhere = WrittenValues.of(_mapping(), frozenset({"userPassword"}), OTHER_KEY.seal)
    assert sealed != elsewhere.sealed({"userPassword": "S3cret-pw!x"}, "default")
    for nothing in ({}, {"userPassword": None}, {"userPassword": ""}, {"uid": "a"}):
        assert values.sealed(nothing, "default") is None


def test_only_an_unchanged_value_the_target_does_not_show_is_left_out() -> None:
    values = WrittenValues.of(_mapping(), frozenset({"userPassword"}), KEY.seal)
    sealed = values.sealed({"userPassword": "pw"}, "default")
    changes = {"userPassword": "pw", "sn": "Doe"}
    assert values.left_out(changes, {"sn": "Smith"}, sealed, sealed) == {"sn": "Doe"}
    assert values.left_out(changes, {}, sealed, None) == changes  # a link that kept nothing: written
    assert values.left_out(changes, {}, sealed, "f" * 64) == changes  # another value: written
    # A target that shows the value is compared as any other (this change came from that comparison).
    assert values.left_out(changes, {"userPassword": "old"}, sealed, sealed) == changes


def test_a_hook_may_write_any_write_only_property_and_without_any_there_is_nothing_to_seal() -> None:
    hooked = _mapping(onUpdate={"type": "text/javascript", "source": "target.pager = 'x';"})
    assert WrittenValues.of(hooked, frozenset({"pager"}), KEY.seal).names == {"pager"}
    assert not WrittenValues.of(_mapping(), frozenset({"pager"}), KEY.seal).enabled
    assert not WrittenValues.of(_mapping(), frozenset({"userPassword"}), None).enabled
