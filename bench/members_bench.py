#!/usr/bin/env python3
"""A role of many members over the API: a page of its members, one member added, replaced or removed.

    .venv/bin/python bench/members_bench.py make DIR [--members 20000] [--store URL]
    .venv/bin/python bench/members_bench.py time DIR [--code DAEMON_DIR] [--repeat 5]

``make`` writes a project in DIR (PingIDM's default managed types) over a throwaway store
(SQLite in DIR by default) holding N users, all members of one role ``everyone``. ``time``
serves that project's API in this process (Starlette's test client, no socket) and prints
the wall-clock milliseconds of the first and the median of ``--repeat`` requests of each:
``GET managed/role/everyone/members?_queryFilter=true&_pageSize=50`` (the first page, a
page deep in the list, the first page with ``_fields=userName``), ``POST
managed/role/everyone/members?_action=create`` of one more user (removed again after each),
``PUT managed/role/everyone/members/REF`` of one member's ``_refProperties`` (without and
with ``If-Match``), ``DELETE`` of one with ``If-Match`` (added again, untimed, before each),
and a script's ``openidm.query`` of a page of 50 at offset 15,000.
``--code`` imports idsync from another checkout's ``daemon`` directory, to time an older
version against the same store in a fresh process, alternately with this one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_BATCH = 5000
_PASSWORD = "bench-members"


def make(directory: Path, members: int, url: str | None) -> None:
    sys.path.insert(0, str(ROOT / "daemon"))
    from idsync.config.project import load_project
    from idsync.resource import WriteOp
    from idsync.store.database import Store
    from idsync.store.objects import ManagedResource

    conf = directory / "conf"
    conf.mkdir(parents=True)
    url = url or f"sqlite:///{directory / 'store.db'}"
    (conf / "idsync.toml").write_text(f'[store]\nurl = "{url}"\n')
    (conf / "sync.json").write_text(json.dumps({"mappings": []}))
    project = load_project(directory)
    store = Store.open(url)
    try:
        users = ManagedResource(store, project.managed.types["user"])
        for first in range(0, members + 1, _BATCH):
            users.write_batch([WriteOp("create", values={
                "_id": f"u{i:07d}", "userName": f"user{i}", "givenName": "G", "sn": f"S{i}",
                "mail": f"user{i}@example.com"}) for i in range(first, min(first + _BATCH, members + 1))])
        roles = ManagedResource(store, project.managed.types["role"])
        roles.write_batch([WriteOp("create", values={
            "_id": "everyone", "name": "everyone",
            "members": [{"_ref": f"managed/user/u{i:07d}"} for i in range(members)]})])
    finally:
        store.close()
    print(f"{members:,} members of managed/role/everyone in {directory}")


def measure(directory: Path, code: Path, repeat: int) -> None:
    sys.path.insert(0, str(code))
    from idsync.api import ApiContext, hash_password
    from idsync.api.app import create_app
    from idsync.api.auth import Accounts
    from idsync.config.project import load_project
    from idsync.managed.router import scripting
    from idsync.settings import ApiSettings
    from idsync.store.database import Store
    with warnings.catch_warnings():  # Starlette's word on its client's transport
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    project = load_project(directory)
    store = Store.open(project.settings.store_url())
    ctx = ApiContext(project=lambda: project, store=store, settings=ApiSettings())  # type: ignore[call-arg]
    app = create_app(ctx, Accounts({"admin": hash_password(_PASSWORD)}))
    headers = {"X-OpenIDM-Username": "admin", "X-OpenIDM-Password": _PASSWORD, "Content-Type": "application/json"}
    members = "/openidm/managed/role/everyone/members"
    with store.engine.connect() as conn:  # the one user in no role
        last = conn.exec_driver_sql("SELECT max(id) FROM managed_objects WHERE object_type = 'user'").scalar()
    with TestClient(app) as client:
        client.get("/openidm/info/ping", headers=headers)

        def page(query: str) -> Any:
            r = client.get(f"{members}?_queryFilter=true&_pageSize=50{query}", headers=headers)
            assert r.status_code == 200 and r.json()["resultCount"] == 50, r.text
            return r

        added: list[str] = []

        def take_out() -> None:  # the member added by the run before, untimed
            if added:
                gone = client.delete(f"{members}/{added.pop()}", headers=headers)
                assert gone.status_code == 200, gone.text

        def add() -> Any:
            r = client.post(f"{members}?_action=create", headers=headers, json={"_ref": f"managed/user/{last}"})
            assert r.status_code == 201, r.text
            added.append(r.json()["_id"])
            return r

        one = page("&_pagedResultsOffset=100").json()["result"][0]
        at = f"{members}/{one['_id']}"
        revs: list[str] = []

        def replace(match: bool) -> Any:
            note = {"note": f"n{len(revs)}"}
            r = client.put(at, headers={**headers, **({"If-Match": revs[-1]} if match else {})},
                           json={"_refProperties": note})
            assert r.status_code == 200 and r.json()["_refProperties"]["note"] == note["note"], r.text
            revs.append(r.json()["_rev"])
            return r

        def read_rev() -> None:  # the reference's revision, untimed
            revs.append(client.get(at, headers=headers).json()["_rev"])

        def put_back() -> None:  # a member to remove, untimed
            take_out()
            revs.append(add().json()["_rev"])

        def remove_at_rev() -> Any:
            r = client.delete(f"{members}/{added.pop()}", headers={**headers, "If-Match": revs[-1]})
            assert r.status_code == 200, r.text
            return r

        script = project.scripts.compile({"type": "text/javascript", "source": (
            "openidm.query('managed/role/everyone/members', {_queryFilter: 'true', _pageSize: 50, "
            "_pagedResultsOffset: 15000}).result.length")}, file="bench", key="script", base_dir=directory)

        def scripted() -> Any:
            with scripting(project, store):
                return script()

        cases = {"first page": (lambda: page(""), None),
                 "page at offset 15,000": (lambda: page("&_pagedResultsOffset=15000"), None),
                 "first page, _fields=userName": (lambda: page("&_fields=userName"), None),
                 "one member added": (add, take_out),
                 "one member's PUT": (lambda: replace(False), None),
                 "one member's PUT, If-Match": (lambda: replace(True), read_rev),
                 "one member's DELETE, If-Match": (remove_at_rev, put_back),
                 "script page at offset 15,000": (scripted, None)}
        for name, (run, before) in cases.items():
            times = []
            for _ in range(repeat):
                if before is not None:
                    before()
                began = time.perf_counter()
                run()
                times.append((time.perf_counter() - began) * 1000)
            print(f"{name:32} first {times[0]:8.1f} ms   median {statistics.median(times):8.1f} ms", flush=True)
        take_out()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["make", "time"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--store", default=None, help="a SQLAlchemy URL (default: SQLite in the directory)")
    parser.add_argument("--code", type=Path, default=ROOT / "daemon", help="the daemon directory to import")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.what == "make":
        make(args.directory, args.members, args.store)
    else:
        measure(args.directory, args.code.resolve(), args.repeat)


if __name__ == "__main__":
    main()
