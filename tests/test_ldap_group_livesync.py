"""LDAP groups kept in step with managed roles by liveSync (``sync/livesync.py``,
``sync/referrers.py``, ``store/system_refs.py``), against a real slapd without memberOf
or referential integrity and a real store (ids ``dn`` and ``entryUUID``;
``groupOfUniqueNames`` and ``groupOfNames``): members added to and removed from a
group in the directory reach the role's ``members`` at the groups' next liveSync; a
member whose user is linked only after the group's change was applied joins the role
at the accounts' liveSync that links it; and a push of the role keeps in the group the
member it could not name yet."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idsync.config.project import load_project
from idsync.connectors.ldap.members import norm_dn
from idsync.managed.recons import recon_by_id
from idsync.managed.router import scripting
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.sync_failures import SyncFailures
from idsync.sync.options import ReconOptions
from idsync.sync.recon import run_recon
from idsync_dev import Slapd
from livesync_env import live
from structlog.testing import capture_logs
from test_ldap_group_refs import _MANAGED, GROUPS_IN, USERS_IN, _Bench, _mappings, _numbers, _provisioner

from samples import idsync, ldap_entry

pytestmark = pytest.mark.slapd

GROUPS, ACCOUNTS = "system/ldap/group", "system/ldap/account"


class _Live(_Bench):
    def __init__(self, slapd: Slapd, base: str, root: Path, attribute: str) -> None:
        super().__init__(slapd, base, load_project(root))
        self.root, self.attribute = root, attribute

    def live(self, source: str) -> list[str]:
        """One liveSync run of ``source``: the mappings whose runs it recorded."""
        done = live(self.root, source)
        assert done.state == "SUCCESS", done.message
        assert not any(r.get("errors") for r in done.runs), done.runs
        return sorted(str(r.get("mapping")) for r in done.runs)

    def modify(self, ldif: str) -> None:
        subprocess.run(["ldapmodify", "-x", "-H", self.slapd.url, "-D", self.slapd.admin_dn,
                        "-w", self.slapd.admin_password], input=ldif, text=True, check=True, capture_output=True)

    def join(self, uid: str, group: str = "ops") -> None:
        self.modify(f"dn: cn={group},{self.base}\nchangetype: modify\nadd: {self.attribute}\n"
                    f"{self.attribute}: uid={uid},{self.base}\n")

    def group(self, cn: str) -> list[str]:
        """The uid (or cn) of each member DN of a group, as the directory holds them."""
        entry = ldap_entry(self.slapd, f"cn={cn},{self.base}") or {}
        return sorted(norm_dn(m).split(",")[0].split("=")[1] for m in entry.get(self.attribute.lower(), []))

    def person(self, uid: str) -> None:
        self.slapd.add_ldif(f"dn: uid={uid},{self.base}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
                            f"sn: {uid}\n")


def _groups_of_names(provisioner: dict[str, Any], mappings: dict[str, Any]) -> None:
    """The provisioner and mappings made for ``groupOfNames`` groups and their ``member``."""
    provisioner["configurationProperties"].update(groupObjectClasses=["top", "groupOfNames"],
                                                  groupMemberAttribute="member")
    group = provisioner["objectTypes"]["group"]["properties"]
    group["member"] = {**group.pop("uniqueMember"), "nativeName": "member"}
    for rule in (r for m in mappings["mappings"] for r in m["properties"]):
        for side in ("source", "target"):
            if rule[side] == "uniqueMember":
                rule[side] = "member"


@pytest.fixture(params=[("dn", "uniqueMember"), ("entryUUID", "uniqueMember"), ("entryUUID", "member")],
                ids=lambda p: "-".join(p))
def bench(request: pytest.FixtureRequest, tmp_path: Path, plain_slapd: Slapd) -> Iterator[_Live]:
    """jdoe and bjensen; group ops holds jdoe and cn=keeper (an entry no mapping reads),
    a ``groupOfUniqueNames`` or a ``groupOfNames``; both sources' liveSync started (their
    first runs reconcile in full)."""
    uid, attribute = request.param
    ou = f"gl{next(_numbers)}"
    base = f"ou={ou},ou=People,{plain_slapd.base_dn}"
    people = [f"dn: uid={u},{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\n"
              for u in ("jdoe", "bjensen")]
    kind = "groupOfUniqueNames" if attribute == "uniqueMember" else "groupOfNames"
    group = (f"dn: cn=ops,{base}\nobjectClass: {kind}\ncn: ops\n"
             f"{attribute}: cn=keeper,{base}\n{attribute}: uid=jdoe,{base}\n")
    plain_slapd.add_ldif("\n".join([f"dn: {base}\nobjectClass: organizationalUnit\nou: {ou}\n", *people, group]))
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    provisioner, mappings = _provisioner(plain_slapd, base, uid), _mappings(base)
    if attribute == "member":
        _groups_of_names(provisioner, mappings)
    (conf / "provisioner.openicf-ldap.json").write_text(json.dumps(provisioner))
    (conf / "sync.json").write_text(json.dumps(mappings))
    (conf / "managed.json").write_text(json.dumps(_MANAGED))
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    bench = _Live(plain_slapd, base, tmp_path / "project", attribute)
    bench.live(ACCOUNTS)
    bench.live(GROUPS)
    assert bench.members("ops") == ["jdoe"]
    yield bench
    bench.store.close()


def test_members_changed_in_the_directory(bench: _Live) -> None:
    """A member added to the group, then one taken out: each reaches the role at the
    groups' next liveSync, keeper staying in the group and out of the role."""
    bench.join("bjensen")
    assert bench.live(GROUPS) == [GROUPS_IN]
    assert bench.members("ops") == ["bjensen", "jdoe"]
    bench.modify(f"dn: cn=ops,{bench.base}\nchangetype: modify\ndelete: {bench.attribute}\n"
                 f"{bench.attribute}: uid=jdoe,{bench.base}\n")
    bench.live(GROUPS)
    assert bench.members("ops") == ["bjensen"]
    assert bench.group("ops") == ["bjensen", "keeper"]


def test_member_linked_after_the_groups_change(bench: _Live) -> None:
    """A new user added to the group, the groups' liveSync first: the role cannot name
    the user yet (and a push of the role keeps the DN in the group); the accounts'
    liveSync that creates and links the user applies the group again, and the role
    holds the user. The next runs of both have nothing left to do."""
    bench.person("newbie")
    bench.join("newbie")
    bench.live(GROUPS)
    assert bench.members("ops") == ["jdoe"]
    users = bench.objects("user", "userName")
    ops = bench.objects("role", "name")["ops"]
    add = [{"operation": "add", "field": "/members/-", "value": {"_ref": f"managed/user/{users['bjensen']['_id']}"}}]
    change = bench.managed("role").patch(ops["_id"], add)
    assert change.synced, change.pushes
    assert bench.group("ops") == ["bjensen", "jdoe", "keeper", "newbie"]

    assert GROUPS_IN in bench.live(ACCOUNTS)
    assert bench.members("ops") == ["bjensen", "jdoe", "newbie"]
    assert bench.group("ops") == ["bjensen", "jdoe", "keeper", "newbie"]
    bench.live(GROUPS)
    assert bench.live(ACCOUNTS) == []
    assert bench.recon(GROUPS_IN) == 0
    assert bench.members("ops") == ["bjensen", "jdoe", "newbie"]


def test_accounts_changed_without_new_links_read_no_group(bench: _Live) -> None:
    """An account changed that was linked already: the groups are not applied again."""
    bench.modify(f"dn: uid=jdoe,{bench.base}\nchangetype: modify\nreplace: sn\nsn: Doe\n")
    assert GROUPS_IN not in bench.live(ACCOUNTS)
    assert bench.members("ops") == ["jdoe"]


def test_member_linked_by_a_recon_after_the_groups_change(bench: _Live) -> None:
    """Two new users added to the group, the groups applied first: a full recon of the
    accounts that creates and links them, a page each, applies the group again through
    the groups' liveSync mappings once, at its end, and the role holds both (it missed
    them until the groups changed or were reconciled). The recon's summary lists that
    run; the next recon links nothing and reads no group."""
    for uid in ("newbie", "oldie"):
        bench.person(uid)
        bench.join(uid)
    bench.live(GROUPS)
    assert bench.members("ops") == ["jdoe"]
    with capture_logs() as logs:
        result = run_recon(bench.project, bench.store, USERS_IN, ReconOptions(page_size=1))
    assert result.state == "SUCCESS", result.message
    assert bench.members("ops") == ["jdoe", "newbie", "oldie"]
    applied = [(e["linked"], e["objects"]) for e in logs if e["event"] == "recon.referrers_applied"]
    assert applied == [(2, 1)]
    assert [(r["mapping"], r["state"], r["errors"]) for r in result.summary["referrers"]] == \
        [(GROUPS_IN, "SUCCESS", 0)]
    again = run_recon(bench.project, bench.store, USERS_IN)
    assert "referrers" not in again.summary
    assert bench.live(GROUPS) == []


def test_member_linked_by_a_recon_by_id_after_the_groups_change(bench: _Live) -> None:
    """The same through the API's ``reconById`` of the new user's account: the role holds
    the user once it is linked."""
    bench.person("newbie")
    bench.join("newbie")
    bench.live(GROUPS)
    resources = Resources(bench.project, bench.store)
    try:
        account = next(o["_id"] for page in resources.open(ACCOUNTS).pages(QuerySpec()) for o in page
                       if o.get("uid") in ("newbie", ["newbie"]))
        with scripting(bench.project, bench.store, resources=resources):
            pushed = recon_by_id(bench.project, bench.store, resources, USERS_IN, account)
    finally:
        resources.close()
    assert pushed.ok and pushed.action == "CREATE", pushed
    assert bench.members("ops") == ["jdoe", "newbie"]


@pytest.mark.parametrize("run", ["recon", "livesync"])
def test_a_group_failing_to_apply_again_is_kept_for_the_groups_next_livesync(bench: _Live, run: str) -> None:
    """When applying the group again fails (the groups mapping's onUpdate throws), in a
    recon or a liveSync of the accounts, the failure is counted in the run it lists (and
    in the liveSync's failures) and the group is kept for a retry of the groups' liveSync
    (``sync_failures``; it was lost), which applies it once the cause is gone."""
    bench.person("newbie")
    bench.join("newbie")
    bench.live(GROUPS)
    sync_file = bench.root / "conf" / "sync.json"
    working = sync_file.read_text()
    mappings = json.loads(working)
    next(m for m in mappings["mappings"] if m["name"] == GROUPS_IN)["onUpdate"] = {
        "type": "text/javascript", "source": "throw 'roles are frozen';"}
    sync_file.write_text(json.dumps(mappings))
    if run == "recon":
        result = run_recon(load_project(bench.root), bench.store, USERS_IN)
        assert result.state == "SUCCESS", result.message
        runs = result.summary["referrers"]
        shown = idsync(bench.root, "status", result.id).stdout
        assert f"applied again: {GROUPS_IN}: run {runs[0]['id'][:8]} FAILED: failed 1" in shown, shown
    else:
        done = live(bench.root, ACCOUNTS)
        assert done.state == "SUCCESS" and done.failed == 1, done.to_json()
        runs = [r for r in done.runs if r["mapping"] == GROUPS_IN]
    assert [(r["mapping"], r["errors"]) for r in runs] == [(GROUPS_IN, 1)]
    assert bench.members("ops") == ["jdoe"]
    held = SyncFailures(bench.store).entries(GROUPS)
    assert [(f.state, "roles are frozen" in f.error) for f in held] == [("RETRYING", True)]

    sync_file.write_text(working)
    bench.live(GROUPS)
    assert bench.members("ops") == ["jdoe", "newbie"]
    assert SyncFailures(bench.store).entries(GROUPS) == []
