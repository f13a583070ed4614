"""OpenIDM's all-or-nothing synchronization (its sample5b): a managed type whose ``onSync``
is the bundled ``compensate.js`` has a change undone when one of its pushes fails, the
pushes already made of it undone too, and the caller told (409). idsync does what the
script does itself; a project's own ``compensate.js`` would run instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from api_server import ADMIN, serve
from idsync.config.project import load_project
from idsync.errors import ObjectRejected
from idsync.managed import ManagedObjects
from idsync.managed.router import scripting
from idsync.resource import QuerySpec
from idsync.resources import Resources
from idsync.store.database import Store

from samples import idsync

_JS = "text/javascript"
JSON = {**ADMIN, "Content-Type": "application/json"}
_PROPS = {"userName": {"type": "string", "searchable": True}, "phone": {"type": "string"}}
OBJECTS = [
    {"name": "user", "onSync": {"type": _JS, "file": "compensate.js"}, "schema": {"properties": _PROPS}},
    {"name": "mirror", "schema": {"properties": _PROPS}},
    {"name": "strict", "schema": {"properties": {**_PROPS, "phone": {"type": "string", "pattern": "^[0-9 ]*$"}}}},
]
_SAME = [{"source": "userName", "target": "userName"}, {"source": "phone", "target": "phone"}]
_UPDATE = [{"situation": "ABSENT", "action": "CREATE"}, {"situation": "CONFIRMED", "action": "UPDATE"},
           {"situation": "FOUND", "action": "UPDATE"}]
MAPPINGS = [  # in this order: the mirror is written before the strict copy refuses
    {"name": "user_mirror", "source": "managed/user", "target": "managed/mirror", "properties": _SAME,
     "correlationQuery": {"type": _JS, "source": "({_queryFilter: 'userName eq \"' + source.userName + '\"'})"},
     "policies": [*_UPDATE, {"situation": "SOURCE_MISSING", "action": "DELETE"}]},
    # No policy for SOURCE_MISSING: PingIDM's default, EXCEPTION, fails the push of a delete.
    {"name": "user_strict", "source": "managed/user", "target": "managed/strict", "properties": _SAME,
     "policies": _UPDATE},
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    conf = tmp_path / "p" / "conf"
    conf.mkdir(parents=True)
    (conf / "idsync.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    (conf / "managed.json").write_text(json.dumps({"objects": OBJECTS}))
    (conf / "sync.json").write_text(json.dumps({"mappings": MAPPINGS}))
    return tmp_path / "p"


def _all(managed: ManagedObjects) -> dict[str, Any]:
    return {o["userName"]: o.get("phone") for o in managed._resource.find(QuerySpec())}


def test_a_change_a_push_refuses_is_undone_with_the_pushes_made_of_it(project: Path) -> None:
    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    resources = Resources(loaded, store)
    with scripting(loaded, store, resources=resources), structlog.testing.capture_logs() as logs:
        users, mirrors, stricts = (ManagedObjects(loaded, store, resources, t, sync=t == "user")
                                   for t in ("user", "mirror", "strict"))
        ann = users.create({"userName": "ann", "phone": "555 1234"}).object
        assert ann is not None and ann["_id"]
        with pytest.raises(ObjectRejected) as caught:  # the strict copy refuses the phone
            users.create({"userName": "bob", "phone": "call me"})
        assert caught.value.status == 409 and "user_strict" in str(caught.value) and "undone" in str(caught.value)
        assert set(_all(users)) == set(_all(mirrors)) == set(_all(stricts)) == {"ann"}  # bob's mirror undone too
        with pytest.raises(ObjectRejected):
            users.patch(ann["_id"], [{"operation": "replace", "field": "/phone", "value": "ext 12"}])
        assert _all(users) == _all(mirrors) == _all(stricts) == {"ann": "555 1234"}  # put back everywhere
        with pytest.raises(ObjectRejected):  # the strict mapping has no action for a deleted source
            users.delete(ann["_id"])
        assert users.get(ann["_id"])["userName"] == "ann"  # created again under its id
        assert _all(mirrors) == {"ann": "555 1234"}
        users.patch(ann["_id"], [{"operation": "replace", "field": "/phone", "value": "555 9999"}])  # all went
        assert _all(users) == _all(mirrors) == _all(stricts) == {"ann": "555 9999"}
    done = [(e["action"], e["mapping"]) for e in logs if e["event"] == "managed.compensated"]
    assert done == [("notifyCreate", "user_strict"), ("notifyUpdate", "user_strict"),
                    ("notifyDelete", "user_strict")]
    store.close()
    with serve(project) as api:
        refused = api.post("/openidm/managed/user?_action=create", headers=JSON,
                           json={"userName": "cy", "phone": "none"})
        assert refused.status_code == 409, refused.text
        assert api.get("/openidm/managed/user?_queryFilter=userName eq \"cy\"", headers=ADMIN).json()["result"] == []
    warned = idsync(project, "validate")
    assert warned.returncode == 0 and "onSync" not in warned.stderr, warned.stderr
