"""A recon into the store that knows a linked target unchanged from its link's
digest (``sync/digests.py``) instead of reading it: the targets are not read, and
everything that could make the target differ (a change through the store, a
changed source, a changed mapping, a link made elsewhere) is still read and
compared; mappings that decide from the target never take the shortcut."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from idsync.resource import Obj
from idsync.resources import Resources
from idsync.store.objects import ManagedResource
from idsync.store.tables import links
from idsync_dev.slapd import Slapd
from recon_env import STORES, Env, env_on
from sqlalchemy import select, update


@pytest.fixture
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    """SQLite, or the store a test names with ``indirect`` parametrization."""
    with env_on(getattr(request, "param", "sqlite"), slapd, ldap_subtree, tmp_path) as e:
        yield e


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the store objects read whole (``ManagedResource.get_many``)."""
    seen: list[str] = []
    original = ManagedResource.get_many

    def get_many(self: ManagedResource, ids: Sequence[str], fields: Sequence[str] | None = None) -> dict[str, Obj]:
        seen.extend(ids)
        return original(self, ids, fields)

    monkeypatch.setattr(ManagedResource, "get_many", get_many)
    return seen


def _digests(env: Env) -> list[str | None]:
    with env.store.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(links.c.digest))]


def _changes(result: Any) -> dict[str, int]:
    return {k: v for k, v in result.summary["changes"].items() if v}


@pytest.mark.parametrize("env", STORES, indirect=True)
def test_unchanged_targets_are_not_read(env: Env, reads: list[str]) -> None:
    """After a first recon, a recon with nothing changed reads no target object: the
    links' digests say each is unchanged (CONFIRMED, nothing written, nothing audited)."""
    env.add("dg1", "dg2", "dg3")
    assert _changes(env.recon()) == {"created": 3, "linked": 3}
    assert all(_digests(env)) and len(_digests(env)) == 3
    reads.clear()
    second = env.recon()
    assert second.state == "SUCCESS", second.message
    assert second.summary["situationSummary"]["CONFIRMED"] == 3 and _changes(second) == {"unchanged": 3}
    assert reads == []


@pytest.mark.parametrize("env", STORES, indirect=True)
def test_a_target_deleted_behind_its_link_is_missing(env: Env, reads: list[str]) -> None:
    """A page's links and their targets' revisions are one read (a left join): a target
    deleted through the store since the last recon has no revision, so its source is
    assessed in full, MISSING, while the other is known unchanged without a read."""
    env.add("dg8", "dg9")
    env.recon()
    gone = env.users()["dg8"]["_id"]
    Resources(env.project, env.store).open("managed/user").delete(gone)
    reads.clear()
    result = env.recon(max_deletes=1)  # MISSING's UNLINK counts as a delete
    assert result.state == "SUCCESS", result.message
    situations = {k: v for k, v in result.summary["situationSummary"].items() if v}
    assert situations == {"MISSING": 1, "CONFIRMED": 1}
    assert reads == [gone]


def test_a_target_changed_in_the_store_is_read_and_put_back(env: Env, reads: list[str]) -> None:
    """A target changed through the store since the last recon (its revision moved) is
    read and compared again: the recon puts the source's value back, and the run after
    that skips it again."""
    env.add("dg4", "dg5")
    env.recon()
    users = Resources(env.project, env.store).open("managed/user")
    changed = env.users()["dg4"]
    users.update(changed["_id"], {"mail": "elsewhere@example.com"})
    reads.clear()
    result = env.recon()
    assert _changes(result) == {"updated": 1, "unchanged": 1}
    assert reads == [changed["_id"]]
    assert env.users()["dg4"]["mail"] == "dg4@example.com"
    reads.clear()
    assert _changes(env.recon()) == {"unchanged": 2} and reads == []


def test_a_changed_source_is_compared_and_updated(env: Env, reads: list[str]) -> None:
    """A source whose projection changed no longer matches its link's digest: its target
    is read, updated and audited as before."""
    env.add("dg6", "dg7")
    env.recon()
    env.modify("dg6", "telephoneNumber", "555-0199")
    reads.clear()
    result = env.recon()
    assert _changes(result) == {"updated": 1, "unchanged": 1}
    assert len(reads) == 1 and env.users()["dg6"]["telephoneNumber"] == "555-0199"


def test_a_changed_mapping_compares_again(env: Env, reads: list[str]) -> None:
    """A mapping that now projects other values finds the targets to update, although
    no source changed."""
    env.add("dg8")
    env.recon()
    env.reconfigure(properties=[{"source": "uid", "target": "userName"}, {"source": "sn", "target": "displayName"}])
    reads.clear()
    result = env.recon()
    assert _changes(result) == {"updated": 1} and reads
    assert env.users()["dg8"]["displayName"] == "Test"


def test_a_link_without_digest_is_compared_and_gets_one(env: Env, reads: list[str]) -> None:
    """A link without a digest (made before digests were kept, or by another writer) is
    assessed by reading its target; the recon then keeps the digest it found."""
    env.add("dg9")
    env.recon()
    with env.store.begin() as conn:
        conn.execute(update(links).values(digest=None))
    reads.clear()
    assert _changes(env.recon()) == {"unchanged": 1} and len(reads) == 1
    assert all(_digests(env))
    reads.clear()
    env.recon()
    assert reads == []


def test_a_dry_run_keeps_no_digest(env: Env) -> None:
    """A dry run writes nothing, digests included."""
    env.add("dg10")
    env.recon()
    with env.store.begin() as conn:
        conn.execute(update(links).values(digest=None))
    env.recon(dry_run=True)
    assert _digests(env) == [None]


@pytest.mark.parametrize("change", [
    {"properties": [{"source": "uid", "target": "userName"},
                    {"source": "mail", "target": "mail", "condition": "/object/mail pr"}]},
    {"policies": [{"situation": "CONFIRMED", "action": "UPDATE", "postAction": {
        "type": "text/javascript", "source": "1"}}, {"situation": "ABSENT", "action": "CREATE"}]},
    {"properties": [{"source": "uid", "target": "userName"}, {"source": "mail", "target": "password", "transform": {
        "type": "text/javascript", "source": "'Passw0rd-' + source.length"}}]},
], ids=["property condition", "postAction", "secret"])
def test_mappings_that_decide_from_the_target_always_read_it(env: Env, reads: list[str],
                                                             change: dict[str, Any]) -> None:
    """A property condition (it sees the target), a CONFIRMED policy with a postAction,
    or a mapped secret (no digest of it is stored): every linked target is read."""
    env.reconfigure(**change)
    env.add("dg11", "dg12")
    env.recon()
    assert _digests(env) == [None, None]
    reads.clear()
    result = env.recon()
    assert result.state == "SUCCESS", result.message
    assert sorted(reads) == sorted(u["_id"] for u in env.users().values())
