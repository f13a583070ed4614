"""Secret properties that only ``managed.json`` names as such (a custom ``pin``
with ``"secret": true``, a ``badge`` with ``"encryption"``) stay out of what a
failed push keeps for its repair, of every audit row and run record as stored,
and of the status file, against a real slapd and a real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbs import BACKENDS, store_url
from idsync.config.project import load_project
from idsync.managed import ManagedObjects
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.status_file import write_status_file
from idsync.store.database import Store
from idsync.store.tables import audit, recon_runs
from idsync.sync.recon import run_recon
from idsync_dev.slapd import Slapd
from sqlalchemy import select

from samples import FORWARD, REVERSE, sample_project

PIN, NEW_PIN, BADGE = "pin-4711-clear", "pin-0815-clear", "badge-9999-clear"


@pytest.fixture(params=BACKENDS)
def project_dir(request: pytest.FixtureRequest, tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    """The two-way sample whose managed users also have a ``pin`` (``"secret": true``),
    pushed to LDAP's ``employeeNumber``, and a ``badge`` (``"encryption"``), neither
    called anything like a password."""
    project = sample_project(tmp_path, slapd, ldap_subtree, store_url(request.param, tmp_path))
    managed_file = project / "conf" / "managed.json"
    managed = json.loads(managed_file.read_text())
    props = managed["objects"][0]["schema"]["properties"]
    props["pin"] = {"type": "string", "secret": True}
    props["badge"] = {"type": "string", "encryption": {"key": "openidm-sym-default"}}
    managed_file.write_text(json.dumps(managed, indent=2))
    prov_file = project / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(prov_file.read_text())
    account = prov["objectTypes"]["account"]["properties"]
    account["employeeNumber"] = {"type": "string", "nativeName": "employeeNumber"}
    prov_file.write_text(json.dumps(prov, indent=2))
    sync_file = project / "conf" / "sync.json"
    sync = json.loads(sync_file.read_text())
    (reverse,) = [m for m in sync["mappings"] if m["name"] == REVERSE]
    reverse["properties"].append({"source": "pin", "target": "employeeNumber"})
    sync_file.write_text(json.dumps(sync, indent=2))
    return project


@pytest.fixture
def store(project_dir: Path) -> Iterator[Store]:
    s = Store.open(load_project(project_dir).settings.store_url())
    yield s
    s.close()


def test_failed_push_keeps_no_custom_secret(project_dir: Path, store: Store, slapd: Slapd,
                                            ldap_subtree: str) -> None:
    """A user whose group membership and pin change while LDAP is down: the push
    fails and keeps the user as it was before the change for its repair, without
    ``pin`` or ``badge``, clear or hashed; no audit row, run record or status file
    holds either value or any hash; and the retry still delivers the group change."""
    project = load_project(project_dir)
    slapd.add_ldif(f"dn: cn=staff,{ldap_subtree}\nobjectClass: groupOfUniqueNames\ncn: staff\n"
                   f"uniqueMember: uid=bjensen,{ldap_subtree}\nuniqueMember: uid=scarter,{ldap_subtree}\n\n")
    assert run_recon(project, store, FORWARD).state == "SUCCESS"
    resources = Resources(project, store)
    try:
        users = ManagedObjects(project, store, resources, "user")
        (uid,) = [u["_id"] for page in resources.open("managed/user").pages(QuerySpec())
                  for u in page if u["userName"] == "bjensen"]
        assert users.patch(uid, [{"operation": "replace", "field": "/pin", "value": PIN},
                                 {"operation": "replace", "field": "/badge", "value": BADGE}]).synced
        slapd.stop(keep_data=True)
        try:
            change = users.patch(uid, [{"operation": "remove", "field": "/ldapGroups",
                                        "value": f"cn=staff,{ldap_subtree}"},
                                       {"operation": "replace", "field": "/pin", "value": NEW_PIN}])
        finally:
            slapd.start()
        assert not change.synced
    finally:
        resources.close()
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(audit)).mappings()]
        runs = [dict(r) for r in conn.execute(select(recon_runs)).mappings()]
    pushed = [r["changes"] for r in rows if r["changes"] and "employeeNumber" in r["changes"]]
    assert pushed and all(c["employeeNumber"] != PIN for c in pushed)  # the pin's push is audited, masked
    kept = [r["changes"]["_sourceBefore"] for r in rows if r["changes"] and "_sourceBefore" in r["changes"]]
    assert len(kept) == 1 and f"cn=staff,{ldap_subtree}" in kept[0]["ldapGroups"]
    assert not {"pin", "badge", "password"} & set(kept[0])
    status = write_status_file(project, store).read_text()
    stored = json.dumps(rows, default=str) + json.dumps(runs, default=str) + status
    for value in (PIN, NEW_PIN, BADGE, "{CRYPT}", "{SSHA}", "$6$"):
        assert value not in stored, value
    assert run_recon(project, store, REVERSE).state == "SUCCESS"
