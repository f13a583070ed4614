"""A cluster for the tests: a project whose jobs reconcile managed/user into managed/account
(no directory needed, so a run takes milliseconds), and ``idsync run`` nodes on one
PostgreSQL store, each a subprocess writing JSON log lines to a file."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from idsync_dev.stores import drop_idsync_tables
from sqlalchemy import Engine, create_engine, make_url, text
from waiting import wait_for as wait_for  # the tests of the cluster import it from here

REPO = Path(__file__).resolve().parent.parent
IDSYNC = Path(sys.executable).parent / "idsync"

_POLICIES = [("ABSENT", "CREATE"), ("FOUND", "UPDATE"), ("CONFIRMED", "UPDATE"), ("MISSING", "CREATE"),
             ("SOURCE_MISSING", "DELETE"), ("UNQUALIFIED", "DELETE"), ("UNASSIGNED", "IGNORE"),
             ("AMBIGUOUS", "EXCEPTION"), ("SOURCE_IGNORED", "IGNORE"), ("TARGET_IGNORED", "IGNORE"),
             ("LINK_ONLY", "UNLINK"), ("ALL_GONE", "IGNORE"), ("FOUND_ALREADY_LINKED", "EXCEPTION")]


def second_database(url: str, suffix: str = "1") -> str:
    """A database beside ``url``'s (its name plus ``suffix``), made if missing, without idsync's tables."""
    parsed = make_url(url)
    name = f"{parsed.database}{suffix}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    other = parsed.set(database=name).render_as_string(hide_password=False)
    drop_idsync_tables(other)
    return other


def reset_queue(url: str) -> None:
    """Drop the cluster's queue (its own schema) from the test database."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS idsync_queue CASCADE"))
    engine.dispose()


def cluster_project(root: Path, url: str, jobs: dict[str, str], *, cluster: str = "",
                    mapping: dict[str, Any] | None = None, job_extra: str = "", enabled: bool = True,
                    stall_timeout: float = 3) -> Path:
    """A project on ``url`` with one mapping ``m_JOB`` (managed/user -> managed/account) per job
    of ``jobs`` (name -> schedule), in cluster mode with 1 s heartbeats."""
    conf = root / "conf"
    (root / "jobs.d").mkdir(parents=True)
    conf.mkdir()
    managed = json.loads((REPO / "conf" / "managed.json").read_text(encoding="utf-8"))
    managed["objects"].append({"name": "account", "schema": {
        "properties": {"name": {"type": "string", "searchable": True}, "mail": {"type": "string"}},
        "required": ["name"]}})
    (conf / "managed.json").write_text(json.dumps(managed), encoding="utf-8")
    mappings = []
    for job, schedule in jobs.items():
        mappings.append({
            "name": f"m_{job}", "source": "managed/user", "target": "managed/account",
            "properties": [{"source": "userName", "target": "name"}, {"source": "mail", "target": "mail"}],
            "correlationQuery": {"_queryFilter": 'name eq "${source.userName}"'},
            "policies": [{"situation": s, "action": a} for s, a in _POLICIES],
            "allowEmptySourceSet": True, **(mapping or {})})
        (root / "jobs.d" / f"{job}.toml").write_text(
            f'schedule = "{schedule}"\nmappings = ["m_{job}"]\nmisfire = "skip"\n{job_extra}', encoding="utf-8")
    (conf / "sync.json").write_text(json.dumps({"mappings": mappings}), encoding="utf-8")
    (conf / "idsync.toml").write_text(
        f'state_dir = "state"\n[store]\nurl = "{url}"\n[cluster]\nenabled = {str(enabled).lower()}\nheartbeat = 1\n'
        f'stall_timeout = {stall_timeout}\n{cluster}', encoding="utf-8")
    return root


# A transform that busies the interpreter for about 5 ms per object: a run long enough to kill mid-way.
SLOW = [{"source": "userName", "target": "name"},
        {"source": "mail", "target": "mail", "transform": {
            "type": "text/javascript", "source": "var t = Date.now(); while (Date.now() - t < 5) {} source"}}]


GATE_FILE = "gate"


def gate_pace(closed_ms: int, open_ms: int = 0) -> str:
    """JavaScript statements that busy the interpreter ``closed_ms`` per object while the
    project has no file ``gate`` (``Gate``), ``open_ms`` once it has: a run held slow until
    the test has seen what it waits for (a worker's partition), however slow the machine,
    and fast from then on; a gate that says a number of milliseconds (``Gate.pace``) sets
    the pace itself. (A script's time limit is 1 s of CPU: ``closed_ms`` stays below.
    ``readFile`` suspends the script's first run by throwing, to be answered: that is
    thrown on, only the answer's failure, the missing file, is caught.)"""
    return (f"var gateMs = {open_ms}; try {{ var gateSays = String(readFile('{GATE_FILE}')); "
            "if (/^[0-9]+$/.test(gateSays)) gateMs = Number(gateSays); } "
            f"catch (e) {{ if (!e.javaException) throw e; gateMs = {closed_ms}; }} "
            "var gateT = Date.now(); while (Date.now() - gateT < gateMs) {} ")


def gated(closed_ms: int = 100, open_ms: int = 0) -> list[dict[str, Any]]:
    """``SLOW``'s properties, the transform paced by the project's gate (``gate_pace``)."""
    return [SLOW[0], {"source": "mail", "target": "mail", "transform": {
        "type": "text/javascript", "source": gate_pace(closed_ms, open_ms) + "source"}}]


class Gate:
    """The file ``gate`` of a project, which the transforms of ``gated`` and ``gate_pace`` look
    for: a run is slow until it is opened. ``open_when`` opens it from a thread once a
    condition holds (a worker took a partition), so the run waits for it rather than racing it."""

    def __init__(self, project: Path) -> None:
        self.path = project / GATE_FILE

    def open(self) -> None:
        self.path.write_text("open", encoding="utf-8")

    def pace(self, ms: int) -> None:
        """Opened, the runs paced at ``ms`` per object from now on (0: full speed), whatever
        pace ``gated`` gave an open gate: a run held slow a while longer, then let go."""
        tmp = self.path.with_name(f"{GATE_FILE}.tmp")
        tmp.write_text(str(ms), encoding="utf-8")
        tmp.replace(self.path)  # never read half written

    @contextlib.contextmanager
    def open_when(self, condition: Callable[[], Any], timeout: float = 300) -> Iterator[None]:
        """Open the gate once ``condition()`` is true (an exception counts as false: the
        tables may be in the making), asked every 50 ms while the block runs, for at most
        ``timeout`` seconds; the block's assertions say what was missed if it never is."""
        done = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + timeout
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    if condition():
                        self.open()
                        return
                except Exception:  # noqa: BLE001 - asked again in 50 ms
                    pass
                done.wait(0.05)

        watcher = threading.Thread(target=watch, name="gate", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()


def add_managed_users(project: Path, count: int) -> None:
    """``count`` managed users ``u0``.. in the project's store."""
    from idsync.config.project import load_project
    from idsync.resource import WriteOp
    from idsync.resources import Resources
    from idsync.store.database import Store

    loaded = load_project(project)
    store = Store.open(loaded.settings.store_url())
    try:
        users = Resources(loaded, store).open("managed/user")
        for start in range(0, count, 500):
            ops = [WriteOp("create", values={"userName": f"u{i}", "mail": f"u{i}@example.com"})
                   for i in range(start, min(count, start + 500))]
            assert all(r.ok for r in users.write_batch(ops))
    finally:
        store.engine.dispose()


def node_env(name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDSYNC_", "NOTIFY_", "WATCHDOG_"))}
    env.update(PYTHONFAULTHANDLER="1", IDSYNC_CLUSTER__NODE_NAME=name, **extra)
    return env


class Node:
    """``idsync run`` as one node, its JSON log lines in ``<name>.log`` beside the project."""

    def __init__(self, project: Path, name: str, **env: str) -> None:
        self.name = name
        self.log_path = project.parent / f"{name}.log"
        self._log = self.log_path.open("ab")
        self._read = 0  # from the start: a node started again under its name reads its earlier lines too
        self._events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen([str(IDSYNC), "-p", str(project), "--log-format", "json", "run"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=node_env(name, **env))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The node's log lines so far, parsed (only the lines written since the last call
        are read: a test asks every tenth of a second while the log grows)."""
        running = self.proc.poll() is None
        with self.log_path.open("rb") as log:
            log.seek(self._read)
            new = log.read()
        if running:  # a line being written is read once it ends
            new = new[:new.rfind(b"\n") + 1]
        self._read += len(new)
        for line in new.decode("utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "(not json)", "line": line}
            self._events.append(event)
        return [e for e in self._events if name is None or e.get("event") == name]

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def wait(self, timeout: float = 20) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
            self.proc.wait(5)
            raise
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL: the node is gone at once, as with a host that died."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def api_node(project: Path, name: str, port: int, **env: str) -> Node:
    """A node serving the HTTP API on ``port`` with the tests' admin account."""
    from api_server import ADMIN_HASH

    return Node(project, name, IDSYNC_API__ENABLED="true", IDSYNC_API__PORT=str(port),
                IDSYNC_API__ACCOUNTS=json.dumps({"openidm-admin": ADMIN_HASH}), **env)


def trigger(port: int, job: str) -> None:
    """Run ``job`` once through a node's API (queued once; whichever node is free runs it)."""
    import httpx
    from api_server import ADMIN

    r = httpx.post(f"http://127.0.0.1:{port}/openidm/scheduler/job/{job}?_action=trigger", headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text


def run_under_way(url: str, assessed: int) -> Any:
    """An ACTIVE run that has assessed at least ``assessed`` objects (id, node, summary), or None."""
    rows = select_rows(url, "SELECT id, node, summary FROM recon_runs WHERE state = 'ACTIVE'")
    return next((r for r in rows if sum(((r.summary or {}).get("situationSummary") or {}).values()) >= assessed),
                None)


def helper_under_way(url: str, processed: int) -> Any:
    """An ACTIVE partition read on another node than its run's, with at least ``processed``
    objects read (node, part, runner, summary), or None."""
    rows = select_rows(url, "SELECT p.node, p.part, r.node AS runner, p.summary FROM recon_partitions p "
                            "JOIN recon_runs r ON r.id = p.run_id WHERE p.state = 'ACTIVE'")
    return next((p for p in rows if p.node != p.runner
                 and (p.summary or {}).get("tally", {}).get("source_processed", 0) >= processed), None)


def fresh_store(url: str) -> str:
    """``url`` with idsync's tables made and no queue yet (the nodes create it)."""
    from idsync.store.database import Store

    reset_queue(url)
    Store.open(url).engine.dispose()  # the schema, before the nodes race to create it
    return url


def api_up(port: int) -> bool:
    """Whether a node's API answers (it starts listening after ``daemon.start``)."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/openidm/info/ping", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


LIVE_SOURCE = "system/ldap/account"


def add_ldap_livesync(project: Path, slapd: Any, subtree: str, job: str = "live") -> None:
    """A liveSync job ``job`` every second: LDAP people of ``subtree`` (entryUUID ids) into
    managed/person through mapping ``ldap_person`` (uid -> name, mail)."""
    conf = project / "conf"
    sample = REPO / "samples" / "sync-with-ldap-bidirectional" / "conf" / "provisioner.openicf-ldap.json"
    prov = json.loads(sample.read_text(encoding="utf-8"))
    prov["configurationProperties"].update(host="127.0.0.1", port=slapd.port, credentials=slapd.admin_password,
                                           baseContexts=[subtree], baseContextsToSynchronize=[subtree])
    (conf / "provisioner.openicf-ldap.json").write_text(json.dumps(prov), encoding="utf-8")
    managed = json.loads((conf / "managed.json").read_text(encoding="utf-8"))
    managed["objects"].append({"name": "person", "schema": {
        "properties": {"name": {"type": "string", "searchable": True}, "mail": {"type": "string"}},
        "required": ["name"]}})
    (conf / "managed.json").write_text(json.dumps(managed), encoding="utf-8")
    sync = json.loads((conf / "sync.json").read_text(encoding="utf-8"))
    sync["mappings"].append({
        "name": "ldap_person", "source": LIVE_SOURCE, "target": "managed/person",
        "properties": [{"source": "uid", "target": "name"}, {"source": "mail", "target": "mail"}],
        "correlationQuery": {"_queryFilter": 'name eq "${source.uid}"'},
        "policies": [{"situation": s, "action": a} for s, a in _POLICIES], "allowEmptySourceSet": True})
    (conf / "sync.json").write_text(json.dumps(sync), encoding="utf-8")
    (project / "jobs.d" / f"{job}.toml").write_text(
        f'schedule = "* * * * * ?"\nlivesync = "{LIVE_SOURCE}"\nmisfire = "run_once"\n', encoding="utf-8")


def ldap_people(slapd: Any, subtree: str, names: list[str]) -> None:
    """Add an inetOrgPerson ``uid=NAME`` under ``subtree`` for each name."""
    slapd.add_ldif("".join(
        f"dn: uid={n},{subtree}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {n}\ncn: {n}\nsn: {n}\n"
        f"mail: {n}@example.com\n\n" for n in names))


def select_rows(url: str, sql: str) -> list[Any]:
    """The rows ``sql`` selects in the database at ``url`` (PostgreSQL: on a connection kept
    for the next call, as a test asks every tenth of a second while it waits)."""
    if make_url(url).get_backend_name() != "postgresql":
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql)))
        finally:
            engine.dispose()
    with _kept_engine(url).connect() as conn:
        return list(conn.execute(text(sql)))


@functools.cache
def _kept_engine(url: str) -> Engine:
    """One connection to the PostgreSQL database at ``url``, idle outside ``select_rows`` (no
    transaction, no lock held), checked before each use (a test may have cut it)."""
    return create_engine(url, pool_size=1, max_overflow=4, pool_pre_ping=True)


class Beats:
    """The heartbeats of node ``name`` that a test polling the store saw (each ``seen`` the node
    wrote into ``cluster_nodes``): a clock in the nodes' own terms. A loaded machine slows a
    node's beats as it slows the node's checks of the others, where the test's wall clock
    runs on; and a test starved of CPU misses beats, which only makes a count smaller."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.seen: set[Any] = set()

    def poll(self) -> None:
        self.seen.update(r.seen for r in select_rows(self.url, f"SELECT seen FROM cluster_nodes "
                                                               f"WHERE name = '{self.name}'"))

    def between(self, after: Any, until: Any) -> int:
        """How many of the beats seen came after ``after`` and no later than ``until``."""
        return sum(1 for t in self.seen if after < t <= until)


def assert_each_account_created_once(url: str, users: int) -> None:
    """One account and one link per user, and one successful CREATE in the audit for each:
    nothing a run that was taken over, or a partition read again, applied twice."""
    assert select_rows(url, "SELECT count(*), count(DISTINCT data->>'name') FROM managed_objects "
                            "WHERE object_type = 'account'")[0] == (users, users)
    assert select_rows(url, "SELECT count(*) FROM links")[0][0] == users
    creates = select_rows(url, "SELECT target_id, count(*) FROM audit WHERE action = 'CREATE' "
                               "AND status = 'SUCCESS' GROUP BY target_id")
    assert len(creates) == users and {c[1] for c in creates} == {1}
