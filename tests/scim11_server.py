"""A small SCIM 1.1 provider stand-in: Users and Groups, ``ServiceProviderConfigs``
(plural, as 1.1 names it) announcing no PATCH, 1.0 schema URNs, HTTP basic
authentication, ``eq`` filters joined by ``or``, PUT for updates, and no
``Resources`` on an empty page."""

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
        self.stored: dict[str, dict[str, dict[str, Any]]] = {"Users": {}, "Groups": {}}
        self.users = self.stored["Users"]
        self.groups = self.stored["Groups"]
        self.methods: list[str] = []
        self.discovery = True  # False: no ServiceProviderConfigs (404), as some 1.1 providers
        self._server: WSGIServer = make_server("127.0.0.1", 0, self._app, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

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
        if path == "/ServiceProviderConfigs" and self.discovery:
            return self._send(start, 200, {"schemas": [CORE], "patch": {"supported": False},
                                           "filter": {"supported": True, "maxResults": 100},
                                           "etag": {"supported": False}})
        endpoint, _, object_id = path.strip("/").partition("/")
        if endpoint not in self.stored:
            return self._send(start, 404, {"Errors": [{"description": "not found", "code": "404"}]})
        objects = self.stored[endpoint]
        if not object_id and method == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            found = list(objects.values())
            if "filter" in query:
                terms = _TERM.findall(query["filter"][0])
                found = [u for u in found if any(str(u.get(k)) == json.loads(f'"{v}"') for k, v in terms)]
            start_index, count = int(query.get("startIndex", ["1"])[0]), int(query.get("count", ["100"])[0])
            page = found[start_index - 1:start_index - 1 + count]
            return self._send(start, 200, {"schemas": [CORE], "totalResults": len(found),
                                           "startIndex": start_index, "itemsPerPage": len(page),
                                           **({"Resources": page} if page else {})})
        if not object_id and method == "POST":
            created = {**body, "id": uuid.uuid4().hex}
            objects[created["id"]] = created
            return self._send(start, 201, created)
        if object_id not in objects:
            return self._send(start, 404, {"Errors": [{"description": "not found", "code": "404"}]})
        if method == "PUT":
            objects[object_id] = {**body, "id": object_id}
        elif method == "DELETE":
            del objects[object_id]
            return self._send(start, 200, None)
        return self._send(start, 200, objects[object_id])

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
