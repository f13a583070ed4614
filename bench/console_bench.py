#!/usr/bin/env python3
"""Admin console benchmark: how long each page takes to answer over HTTP with a large store.

    .venv/bin/python bench/console_bench.py [--users 100000] [--runs 10000] [--store sqlite:///...]

Fills a throwaway store (SQLite by default) with N managed users (through the
store's own bulk write, so the search index is filled as in production) and M
recon runs with ten audit entries each, serves the API with the console on a
free port (in a process of its own), logs in, and has curl ask each page 20
times on one connection: it prints the median and the slowest answer in
milliseconds, as curl timed them. The pages that reach an external
system (Systems) are left out: their time is the peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

import httpx  # noqa: E402
from idsync.api import ApiContext, ApiServer, hash_password  # noqa: E402
from idsync.config.project import load_project  # noqa: E402
from idsync.console import create_console  # noqa: E402
from idsync.log import configure_logging  # noqa: E402
from idsync.resource import WriteOp  # noqa: E402
from idsync.settings import ApiSettings  # noqa: E402
from idsync.store.database import Store  # noqa: E402
from idsync.store.objects import ManagedResource  # noqa: E402
from idsync.store.tables import audit, recon_runs  # noqa: E402

SAMPLE = ROOT / "samples" / "sync-with-ldap-bidirectional"
MAPPING = "systemLdapAccounts_managedUser"
PASSWORD = "bench-" + uuid.uuid4().hex
_BATCH = 5000
_TIMES = 20


def _fill(store: Store, project_dir: Path, users: int, runs: int) -> tuple[str, str]:
    """N users and M runs; returns one user id and one run id to open."""
    schema = load_project(project_dir).managed.types["user"]
    resource = ManagedResource(store, schema)
    started = time.perf_counter()
    for first in range(0, users, _BATCH):
        ops = [WriteOp("create", values={
            "_id": f"u{i:07d}", "userName": f"user{i}", "givenName": f"Given{i}", "sn": f"Sn{i % 997}",
            "mail": f"user{i}@example.com",
            "accountStatus": "active" if i % 10 else "inactive"}) for i in range(first, min(first + _BATCH, users))]
        resource.write_batch(ops)
    print(f"{users:,} users in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    states = ("SUCCESS",) * 8 + ("FAILED", "CANCELED")
    run_ids = [str(uuid.uuid4()) for _ in range(runs)]
    with store.begin() as conn:
        rows = [{"id": rid, "mapping": MAPPING, "job": "sync-active-ldap-users", "state": states[n % 10],
                 "stage": "COMPLETED", "dry_run": False, "started": now - dt.timedelta(minutes=15 * (runs - n)),
                 "ended": now - dt.timedelta(minutes=15 * (runs - n) - 1), "heartbeat": None,
                 "summary": {"situationSummary": {"CONFIRMED": users}, "statusSummary": {"SUCCESS": users}},
                 "message": None} for n, rid in enumerate(run_ids)]
        store.insert_many(conn, recon_runs, rows)
        entries = [{"run_id": rid, "ts": now, "mapping": MAPPING, "situation": "CONFIRMED", "action": "UPDATE",
                    "source_id": f"s{n * 10 + k}", "target_id": f"u{(n * 10 + k) % max(users, 1):07d}",
                    "status": "SUCCESS", "message": None, "changes": None}
                   for n, rid in enumerate(run_ids) for k in range(10)]
        store.insert_many(conn, audit, entries)
    print(f"{runs:,} runs and {runs * 10:,} audit entries in {time.perf_counter() - started:.1f} s", flush=True)
    return "u0000042", run_ids[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(project_dir: Path, url: str, port: int, password: str) -> None:
    """The API with the console, in a process of its own (a client in the same process
    would share its interpreter lock and time its own waits)."""
    configure_logging("console", "warning")
    project = load_project(project_dir)
    store = Store.open(url)
    settings = ApiSettings(port=port, accounts={"admin": hash_password(password)})  # type: ignore[call-arg]
    server = ApiServer(ApiContext(project=lambda: project, store=store, settings=settings),
                       config_file="idsync.toml", console=create_console)

    async def forever() -> None:
        await server.start()
        await asyncio.Event().wait()

    asyncio.run(forever())


def _login(client: httpx.Client) -> str:
    form = client.get("/admin/login")
    token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/admin/login", data={"csrf": token, "username": "admin", "password": PASSWORD})
    if answer.status_code != 303:
        raise SystemExit(f"login failed: {answer.status_code}")
    return str(answer.cookies["idsync_console"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--store", help="a SQLAlchemy URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    configure_logging("console", "warning")
    work = Path(tempfile.mkdtemp(prefix="idsync-console-bench-"))
    try:
        project_dir = work / "project"
        shutil.copytree(SAMPLE / "conf", project_dir / "conf")
        url = args.store or f"sqlite:///{work / 'store.db'}"
        (project_dir / "conf" / "idsync.toml").write_text(f'[store]\nurl = "{url}"\n')
        store = Store.open(url)
        user_id, run_id = _fill(store, project_dir, args.users, args.runs)
        store.close()
        port = _free_port()
        child = multiprocessing.get_context("spawn").Process(target=_serve, args=(project_dir, url, port, PASSWORD),
                                                              daemon=True)
        child.start()
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/openidm/info/ping", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        pages = ["/admin/", "/admin/jobs", "/admin/runs", "/admin/runs?state=FAILED",
                 f"/admin/runs?mapping={MAPPING}&state=CANCELED", f"/admin/runs/{run_id}",
                 f"/admin/runs/{run_id}?status=SUCCESS&text=s", "/admin/mappings", f"/admin/mappings/{MAPPING}",
                 "/admin/managed/user", "/admin/managed/user?q=user9999",
                 "/admin/managed/user?q=user42",
                 "/admin/managed/user?_queryFilter=" + "userName%20eq%20%22user4242%22",
                 f"/admin/managed/user/{user_id}", "/openidm/info/ping"]
        print(f"\n{'page':<62} {'median ms':>9} {'max ms':>8}")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            cookie = _login(client)
        for path in pages:
            # curl on one kept-alive connection, as a browser asks; its own clock per answer.
            url = f"http://127.0.0.1:{port}{path}"
            out = subprocess.run(["curl", "-s", "-b", f"idsync_console={cookie}", "-w", "%{http_code} %{time_total}\\n",
                                  *[arg for _ in range(_TIMES) for arg in ("-o", "/dev/null", url)]],
                                 capture_output=True, text=True, check=True).stdout.split()
            codes, times = out[0::2], [float(t) * 1000 for t in out[1::2]]
            if set(codes) != {"200"}:
                raise SystemExit(f"{path}: {codes}")
            print(f"{path[:62]:<62} {statistics.median(times):>9.1f} {max(times):>8.1f}", flush=True)
        child.terminate()
        child.join(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
