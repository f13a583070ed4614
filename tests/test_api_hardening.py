"""What the HTTP API refuses, served by the daemon's own server over a real
store: NUL characters anywhere a client can put one, bodies and filters nested
or sized to exhaust it, a request framed twice (smuggling), an oversized head.
Each is a 400 naming the problem, never a 500, and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ADMIN, running
from dbs import store_url
from idsync_dev.slapd import Slapd

from samples import sample_project

JSON = {**ADMIN, "Content-Type": "application/json"}
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


@pytest.fixture(params=STORES)
def port(request: pytest.FixtureRequest, tmp_path: Path, slapd: Slapd, ldap_subtree: str) -> Iterator[int]:
    project = sample_project(tmp_path, slapd, ldap_subtree, store_url(request.param, tmp_path), load_data=False)
    with running(project) as served:
        yield served


@pytest.fixture
def api(port: int) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client


def _bad(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and all(w in body["message"] for w in words), body


def _create(api: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return api.post("/openidm/managed/user?_action=create", headers=JSON, content=json.dumps(body))


def test_nul_in_a_body_a_filter_or_an_id_is_a_bad_request(api: httpx.Client) -> None:
    """A NUL in a created or patched value, in a ``_queryFilter`` or in an id is 400
    naming it, not a database error; nothing is stored; a filter whose quoted value
    spells the NUL as ``\\u0000`` matches nothing."""
    _bad(_create(api, {"userName": "nul", "description": "a\u0000b"}), "NUL", "/description")
    ok = _create(api, {"userName": "fine", "sn": "Fine"})
    assert ok.status_code == 201, ok.text
    uid = ok.json()["_id"]
    patch = [{"operation": "replace", "field": "/sn", "value": "x\u0000"}]
    _bad(api.patch(f"/openidm/managed/user/{uid}", headers=JSON, content=json.dumps(patch)), "NUL")
    _bad(api.get("/openidm/managed/user", params={"_queryFilter": 'userName eq "a\x00b"'}, headers=ADMIN), "NUL")
    _bad(api.get("/openidm/managed/user/a%00b", headers=ADMIN), "NUL")
    _bad(api.put("/openidm/managed/user/a%00b", headers=JSON, content=json.dumps({"userName": "x"})), "NUL")
    spelt = api.get("/openidm/managed/user", params={"_queryFilter": 'userName eq "fine\\u0000"'}, headers=ADMIN)
    assert spelt.status_code == 200 and spelt.json()["result"] == []
    everyone = api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"]
    assert [(u["userName"], u["sn"]) for u in everyone] == [("fine", "Fine")]


def test_half_a_character_in_a_body_is_a_bad_request(api: httpx.Client) -> None:
    """An unpaired surrogate (``\\ud83d``: half of a character) in a created or patched
    value is 400 naming where it is, not a 500 from the driver; nothing is stored; a
    filter holding one matches nothing; a whole emoji (a surrogate pair) is kept."""
    _bad(_create(api, {"userName": "cut", "description": "abc\ud83d"}), "/description", "unpaired surrogate")
    ok = _create(api, {"userName": "fine", "sn": "Fine \U0001F600"})
    assert ok.status_code == 201, ok.text
    patch = [{"operation": "replace", "field": "/sn", "value": "\udc00x"}]
    _bad(api.patch(f"/openidm/managed/user/{ok.json()['_id']}", headers=JSON, content=json.dumps(patch)),
         "/0/value", "unpaired surrogate")
    spelt = api.get("/openidm/managed/user", params={"_queryFilter": 'sn eq "Fine \\ud83d"'}, headers=ADMIN)
    assert spelt.status_code == 200 and spelt.json()["result"] == [], spelt.text
    everyone = api.get("/openidm/managed/user", params={"_queryFilter": "true"}, headers=ADMIN).json()["result"]
    assert [(u["userName"], u["sn"]) for u in everyone] == [("fine", "Fine \U0001F600")]


def test_deep_json_and_filters_are_refused_by_their_limit(api: httpx.Client) -> None:
    """A body nested 5,000 deep, a filter with 1,000 nested parentheses (past
    Python's recursion limit) and a 700-term OR are each 400 naming the limit, at
    once; a filter of 256 terms, the limit, still runs."""
    deep = '{"userName": "d", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    _bad(api.post("/openidm/managed/user?_action=create", headers=JSON, content=deep), "64 levels")
    _bad(api.post("/openidm/managed/user?_action=create", headers=JSON,
                  content='{"userName": "d", "x": ' + "[" * 70 + "]" * 70 + "}"), "64 levels")
    nested = "(" * 1000 + "a eq 1" + ")" * 1000
    _bad(api.get("/openidm/managed/user", params={"_queryFilter": nested}, headers=ADMIN), "32 levels")
    started = time.monotonic()
    wide = " or ".join(f"a eq {i}" for i in range(700))
    _bad(api.get("/openidm/managed/user", params={"_queryFilter": wide}, headers=ADMIN), "256 terms")
    assert time.monotonic() - started < 2
    at_limit = " or ".join(f'description eq "d{i}"' for i in range(256))
    answer = api.get("/openidm/managed/user", params={"_queryFilter": at_limit}, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["result"] == []


def _exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` on a fresh connection and read until the server closes it
    (it may do so before reading everything: what it answered is what counts)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(raw)
            while chunk := sock.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
    return received


def test_a_request_framed_twice_is_refused_and_its_connection_closed(port: int) -> None:
    """``Content-Length`` with ``Transfer-Encoding``: 400 and the connection closed,
    so the request hidden after the chunked body is never answered (without the
    guard the server answered it: two responses on one connection)."""
    auth = "".join(f"{k}: {v}\r\n" for k, v in ADMIN.items())
    smuggled = ("POST /openidm/managed/user?_action=create HTTP/1.1\r\nHost: x\r\n" + auth
                + "Content-Type: application/json\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "0\r\n\r\nGET /openidm/info/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    received = _exchange(port, smuggled.encode())
    assert received.startswith(b"HTTP/1.1 400 ") and received.count(b"HTTP/1.1 ") == 1, received
    assert b"Content-Length and Transfer-Encoding" in received


@pytest.mark.parametrize("size", [20_000, 100_000, 1_000_000])
def test_an_oversized_head_is_refused_and_the_server_stays_up(port: int, api: httpx.Client, size: int) -> None:
    """A head past 16 KiB is refused and its connection closed: 431 when it came
    whole in one read, 400 from the parser while it was still arriving past the
    limit (it is not buffered further); the next request is served, and 8 KB of
    headers pass."""
    raw = f"GET /openidm/info/ping HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * size}\r\n\r\n".encode()
    received = _exchange(port, raw)
    assert received[:13] in (b"HTTP/1.1 431 ", b"HTTP/1.1 400 "), received[:200]
    assert api.get("/openidm/info/ping").status_code == 200
    assert api.get("/openidm/info/ping", headers={"X-Fine": "a" * 8000}).status_code == 200
