"""A small SCIM 1.1 provider stand-in: Users only, ``ServiceProviderConfigs`` (plural,
as 1.1 names it) announcing no PATCH, 1.0 schema URNs, HTTP basic authentication,
``eq`` filters joined by ``or``, and PUT for updates."""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

USER, PASSWORD = "admin", "basic-pass"
CORE = "urn:scim:schemas:core:1.0"
_TERM = re.compile(r'(\w+) eq "((?:[^"\\]|\\.)*)"')


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Scim11Server:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.methods: list[str] = []
        self._server: WSGIServer = make_server("127.0.0.1", 0, self._app, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "").removeprefix("/v1")
        self.methods.append(f"{method} {path.split('/')[1] if '/' in path else path}")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if environ.get("HTTP_AUTHORIZATION") != expected:
            return self._send(start, 401, {"Errors": [{"description": "unauthorized", "code": "401"}]})
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"null")
        if path == "/ServiceProviderConfigs":
            return self._send(start, 200, {"schemas": [CORE], "patch": {"supported": False},
                                           "filter": {"supported": True, "maxResults": 100},
                                           "etag": {"supported": False}})
        if path == "/Users" and method == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            found = list(self.users.values())
            if "filter" in query:
                terms = _TERM.findall(query["filter"][0])
                found = [u for u in found if any(str(u.get(k)) == json.loads(f'"{v}"') for k, v in terms)]
            start_index, count = int(query.get("startIndex", ["1"])[0]), int(query.get("count", ["100"])[0])
            page = found[start_index - 1:start_index - 1 + count]
            return self._send(start, 200, {"schemas": [CORE], "totalResults": len(found),
                                           "startIndex": start_index, "itemsPerPage": len(page),
                                           **({"Resources": page} if page else {})})
        if path == "/Users" and method == "POST":
            user = {**body, "id": uuid.uuid4().hex}
            self.users[user["id"]] = user
            return self._send(start, 201, user)
        user_id = path.removeprefix("/Users/")
        if user_id not in self.users:
            return self._send(start, 404, {"Errors": [{"description": "not found", "code": "404"}]})
        if method == "PUT":
            self.users[user_id] = {**body, "id": user_id}
        elif method == "DELETE":
            del self.users[user_id]
            return self._send(start, 200, None)
        return self._send(start, 200, self.users[user_id])

    @staticmethod
    def _send(start: Callable[..., Any], status: int, body: Any) -> Iterable[bytes]:
        start(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()] if body is not None else []


def running11() -> Iterator[Scim11Server]:
    server = Scim11Server()
    try:
        yield server
    finally:
        server.stop()
