"""The end of an ``idsync`` process: whatever the command opened is closed by the
command, not left to the interpreter's exit (which skips its last cycle collection:
``runtime.leave_to_exit``). A SQLite store's ``-wal`` and ``-shm`` files are gone once
its last connection closes; a server store's connections end with the client's own
goodbye (PostgreSQL's Terminate, MariaDB's COM_QUIT), not a dropped socket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dbs import MARIADB, POSTGRESQL, store_url
from idsync_dev.slapd import Slapd
from projects import MAPPING, make_project, person
from sqlalchemy.engine import make_url
from waiting import wait_for

from samples import IDSYNC

# The last message of a client that closes its connection (type and length, then payload).
_GOODBYE = {"postgresql": b"X\x00\x00\x00\x04", "mariadb": b"\x01\x00\x00\x00\x01"}


def _idsync(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IDSYNC, "-p", str(project), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "IDSYNC_LOG__LEVEL": "warning"})


def _left_beside(database: Path) -> list[str]:
    return sorted(p.name for p in database.parent.iterdir() if p.name.startswith(database.name + "-"))


@pytest.fixture
def project(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Path:
    slapd.add_ldif(person("bjensen", ldap_subtree) + person("scarter", ldap_subtree))
    return make_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 'state.db'}")


def test_commands_leave_no_sqlite_journal_behind(tmp_path: Path, project: Path) -> None:
    """``idsync recon``, ``status`` and ``managed query`` as processes of their own exit
    with their code and leave the SQLite store as they found it: no ``state.db-wal`` or
    ``state.db-shm`` beside it (the files of a connection never closed)."""
    database = tmp_path / "state.db"
    recon = _idsync(project, "recon", MAPPING, "--quiet")
    assert recon.returncode == 0, recon.stderr
    assert "created 2" in recon.stdout
    assert _left_beside(database) == []
    for args in (("status",), ("managed", "query", "user", "--fields", "userName")):
        proc = _idsync(project, *args)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert "bjensen" in proc.stdout or MAPPING in proc.stdout
        assert _left_beside(database) == []
    missing = _idsync(project, "status", "no-such-run")
    assert missing.returncode == os.EX_NOINPUT, missing.stderr
    assert _left_beside(database) == []


def test_the_daemon_closes_its_store_when_stopped(tmp_path: Path, project: Path) -> None:
    """``idsync run`` stopped by SIGTERM exits 0 and closes its SQLite store: nothing
    left beside it."""
    database = tmp_path / "state.db"
    seen: list[list[str]] = []
    code, out = _daemon_stopped(project, lambda: seen.append(_left_beside(database)))
    assert code == 0, out
    assert seen[0] != []  # open while it ran: the test sees what it checks go away
    assert _left_beside(database) == []


def _daemon_stopped(project: Path, while_running: Callable[[], object] = lambda: None) -> tuple[int, str]:
    """``idsync run`` started, ``while_running`` called once it runs, then stopped by
    SIGTERM: its exit code and output."""
    status = project / "state" / "status.json"
    daemon = subprocess.Popen([IDSYNC, "-p", str(project), "run"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _daemon_state(status) == "running", 60, "the daemon running")
        while_running()
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    return daemon.returncode, out


def _daemon_state(status: Path) -> str | None:
    try:
        return str(json.loads(status.read_text())["daemon"]["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not written yet, or being replaced


class _Relay:
    """A TCP relay in front of a database server that keeps, for each connection, the
    last bytes the client sent before it ended the connection."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.opened = 0
        self.ended: list[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed by the test
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
                with self._lock:
                    self.opened += 1
                threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
                threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                tail = (tail + chunk)[-16:]
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        if from_client:
            with self._lock:
                self.ended.append(tail)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def relay_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, _Relay]]:
    kind = request.param
    url = make_url(store_url(kind, tmp_path))
    relay = _Relay(url.host or "127.0.0.1", url.port or (5432 if kind == "postgresql" else 3306))
    # In clear: the relay reads the client's last message.
    clear = {"sslmode": "disable"} if kind == "postgresql" else {"ssl_disabled": "true"}
    proxied = url.set(host="127.0.0.1", port=relay.port).update_query_dict(clear)
    try:
        yield kind, proxied.render_as_string(hide_password=False), relay
    finally:
        relay.close()


@pytest.mark.parametrize("relay_url", [POSTGRESQL, MARIADB], indirect=True)
def test_server_store_connections_are_closed_not_dropped(tmp_path: Path, slapd: Slapd, ldap_subtree: str,
                                                         relay_url: tuple[str, str, _Relay]) -> None:
    """A recon, a status and the daemon (stopped by SIGTERM), each a process of its own,
    end each of their connections to a PostgreSQL or MariaDB store as a client that closes
    it does, with the protocol's goodbye, never by dropping the socket as the process
    ends; the commands say nothing on stderr."""
    kind, url, relay = relay_url
    slapd.add_ldif(person("bjensen", ldap_subtree))
    project = make_project(tmp_path, slapd, ldap_subtree, url)
    for args in (("recon", MAPPING, "--quiet"), ("status",)):
        proc = _idsync(project, *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
    code, out = _daemon_stopped(project)
    assert code == 0, out
    wait_for(lambda: len(relay.ended) == relay.opened, 30, "the relay to see every connection end")
    assert relay.opened >= 3
    assert [tail.endswith(_GOODBYE[kind]) for tail in relay.ended] == [True] * relay.opened, relay.ended
