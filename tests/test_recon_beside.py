"""A store-to-LDAP recon and what is written beside it, against a real slapd: an
entry that implicit sync creates and links while the run reads is the next run's,
as in PingIDM (which lists the target's ids before its source phase); one that no
link held when the target phase assessed it, but that is linked before the run's
deletes are carried out, is left to the next run too.

The run is held at a page boundary by its ``on_progress`` callback, which runs in
the run's thread once a page is committed: what it writes is written beside the run,
between two of its steps, whatever the machine's speed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbs import BACKENDS
from idsync.managed import ManagedObjects
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.links import LinkSet
from idsync.store.runs import RunStore
from idsync.sync.options import ReconOptions
from idsync.sync.recon import ReconResult, run_recon
from idsync.sync.summary import Counters
from idsync_dev.slapd import Slapd
from recon_env import Env, env_on

REVERSE = "managedUser_systemLdapAccounts"


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, slapd: Slapd, ldap_subtree: str, tmp_path: Path) -> Iterator[Env]:
    with env_on(request.param, slapd, ldap_subtree, tmp_path) as e:
        yield e


def _reverse(env: Env, unassigned: str = "IGNORE") -> None:
    """The example's store-to-LDAP mapping, creating its entries in the test's subtree,
    its UNASSIGNED policy ``unassigned``, without maxDeletes."""
    def change(sync: dict[str, Any]) -> None:
        mapping = next(m for m in sync["mappings"] if m["name"] == REVERSE)
        mapping["onCreate"] = {"type": "text/javascript",
                               "source": f"target.dn = 'uid=' + source.userName + ',{env.subtree}';"}
        next(p for p in mapping["policies"] if p["situation"] == "UNASSIGNED")["action"] = unassigned
        del mapping["maxDeletes"]
    env.change_conf("sync.json", change)


def _create_user(env: Env, name: str) -> None:
    """A managed user created as the API creates one: implicit sync pushes it to LDAP."""
    change = ManagedObjects(env.project, env.store, Resources(env.project, env.store), "user").create(
        {"userName": name, "givenName": name.title(), "sn": "Beside", "mail": f"{name}@example.com"})
    assert [(p.ok, p.message) for p in change.pushes] == [(True, None)]


def _recon(env: Env, at: dict[str, Callable[[], None]]) -> ReconResult:
    """A run of ``REVERSE`` that, once the first page of the stage each key of ``at`` names
    is committed, calls its value (once) before it goes on."""
    def held(counters: Counters) -> None:
        step = at.pop(counters.stage, None)
        if step is not None:
            step()
    result = run_recon(env.project, env.store, REVERSE, ReconOptions(on_progress=held))
    assert at == {}, "the run never reached those stages"
    return result


def _situations(result: ReconResult) -> dict[str, int]:
    return {k: v for k, v in result.summary["situationSummary"].items() if v}


def _uids(env: Env) -> set[str]:
    accounts = Resources(env.project, env.store).open("system/ldap/account")
    return {o["uid"] for page in accounts.pages(QuerySpec(fields=["uid"])) for o in page}


def test_an_entry_implicit_sync_creates_beside_a_recon_is_the_next_run_s(env: Env) -> None:
    """A managed user created once the source phase has read its last page never
    reaches that phase; implicit sync creates and links its entry before the target
    phase lists LDAP. As in PingIDM, whose target phase visits the ids it listed before
    its source phase, the run leaves that entry out: it counts three CONFIRMED users
    and three existing entries processed, not a fourth, target-phase, CONFIRMED; the
    next run confirms all four."""
    env.add("a1", "a2", "a3")
    assert env.recon().state == "SUCCESS"
    _reverse(env)
    result = _recon(env, {"ACTIVE_RECONCILING_SOURCE": lambda: _create_user(env, "beside")})
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"CONFIRMED": 3}
    assert result.summary["progress"]["target"]["existing"]["processed"] == 3
    assert result.summary["changes"]["unchanged"] == 3
    assert _uids(env) == {"a1", "a2", "a3", "beside"}
    nxt = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert _situations(nxt) == {"CONFIRMED": 4}


def test_an_unassigned_entry_linked_before_the_deletes_is_left_for_the_next_run(env: Env) -> None:
    """An entry added to LDAP by someone else while the run reads its source is visited
    by the target phase (LDAP keeps no creation time to tell it from the entries there
    when the run started): UNASSIGNED, whose policy here is DELETE. A managed user
    created for it before the run's deletes are carried out links it (implicit sync
    correlates it by uid: FOUND, LINK): the run leaves the entry and its new link
    alone, counting it skipped and auditing why, where it used to delete the new
    user's account; the next run confirms it."""
    env.add("a1", "a2", "a3")
    assert env.recon().state == "SUCCESS"
    _reverse(env, unassigned="DELETE")
    result = _recon(env, {"ACTIVE_RECONCILING_SOURCE": lambda: env.add("late"),
                          "ACTIVE_RECONCILING_TARGET": lambda: _create_user(env, "late")})
    assert result.state == "SUCCESS", result.message
    assert _situations(result) == {"CONFIRMED": 3, "UNASSIGNED": 1}
    assert result.summary["changes"]["deleted"] == 0 and result.summary["changes"]["skipped"] == 1
    assert _uids(env) == {"a1", "a2", "a3", "late"}
    late = env.users()["late"]["_id"]
    assert late in LinkSet.of(env.store, env.project, env.project.mapping(REVERSE)).targets_of([late])
    (row,) = [r for r in RunStore(env.store).audit_entries(result.id) if r["situation"] == "UNASSIGNED"]
    assert row["action"] == "DELETE" and row["status"] == "SUCCESS"
    assert "linked since" in row["message"] and "next run" in row["message"]
    nxt = run_recon(env.project, env.store, REVERSE, ReconOptions())
    assert _situations(nxt) == {"CONFIRMED": 4}
