"""The API's connections send small answers at once: Nagle's algorithm is off on them
(TCP_NODELAY), so a client on a kept-alive connection, as a browser is, does not wait
for its own delayed ACK (40 ms on Linux) before each answer's body arrives."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from api_server import running
from idsync_dev.slapd import Slapd

from samples import sample_project

_REQUESTS = 20
_PING = b"GET /openidm/info/ping HTTP/1.1\r\nHost: idsync\r\n\r\n"


def _answer(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head


def test_kept_alive_answers_do_not_wait_for_delayed_acks(tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> None:
    """Twenty requests on one connection take far less than twenty delayed ACKs (800 ms):
    with Nagle on, each answer's body waited for one."""
    project = sample_project(tmp_path, slapd, ldap_subtree, f"sqlite:///{tmp_path / 's.db'}", load_data=False)
    with running(project) as port, socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(_PING)
        assert _answer(conn).startswith(b"HTTP/1.1 200")  # warm up
        times = []
        for _ in range(_REQUESTS):
            started = time.perf_counter()
            conn.sendall(_PING)
            assert _answer(conn).startswith(b"HTTP/1.1 200")
            times.append(time.perf_counter() - started)
    # With Nagle on, every answer waits for a delayed ACK (40 ms at least); a loaded machine
    # slows some answers, not every one of them. So the quickest quarter is well under that.
    times.sort()
    shown = ", ".join(f"{t * 1000:.0f}" for t in times)
    assert times[len(times) // 4] < 0.02, f"{_REQUESTS} kept-alive answers took (ms) {shown}"
