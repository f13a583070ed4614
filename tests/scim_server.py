"""A real SCIM 2.0 provider for the tests: scim2-server's WSGI application served in
a thread on a free loopback port, behind a thin front that adds what a provider in
the field has and scim2-server leaves to its host: an OAuth 2.0 token endpoint
(client credentials, tokens that expire or are revoked), throttling answers
(429/503 with ``Retry-After``) queued by a test, another writer's change slipped in
before a request (a real ETag conflict), and a log of the requests and answers."""

from __future__ import annotations

import base64
import datetime
import functools
import io
import json
import secrets
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
from scim2_models import ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.testserver.cli import ThreadingWSGIServer
from scim2_server.utils import load_default_resource_types, load_default_schemas, load_default_service_provider_config

CLIENT_ID = "idsync"
CLIENT_SECRET = "s3cret-client"
STATIC_TOKEN = "static-test-token"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


@functools.cache
def _default_provider() -> ScimProvider:
    """The models of the default schemas and resource types, made once per process: they
    are pydantic models built at run time, a third of a second for each server in a
    process that has imported the whole suite (pydantic looks for their source)."""
    return ScimProvider.from_discovery(load_default_schemas().values(), load_default_resource_types().values())


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class ScimServer:
    """The running provider; ``url`` is the SCIM base URL (``.../v2``)."""

    port: int = 0
    token_lifetime: int = 3600
    patch: bool = True
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    if_match: list[str] = field(default_factory=list)
    bodies: list[tuple[str, Any]] = field(default_factory=list)
    broken_config: bool = False
    refuse_or: bool = False  # answer a filter joined by "or" with 400 invalidFilter, as some providers do
    stop_after: int | None = None
    faults: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    before: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)
    before_matching: list[tuple[Callable[[str, str, str], bool], Callable[[], Any]]] = field(default_factory=list)
    # Each rewrites every ListResponse whose request (method, path, query string) matches.
    edit_matching: list[tuple[Callable[[str, str, str], bool], Callable[[dict[str, Any]], dict[str, Any]]]] = \
        field(default_factory=list)
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    # Each answers the next request of that method with 200 and a body that is not JSON.
    garbled: list[str] = field(default_factory=list)
    # Each rewrites the next ListResponse served (a provider answering out of line).
    list_edits: list[Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)
    tokens_issued: int = 0
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: serve HTTPS
    sort: bool = True  # what the ServiceProviderConfig announces
    filter: bool = True
    clock: Callable[[], datetime.datetime] | None = None  # the dates of meta.lastModified (a fixed one: ties)

    def __post_init__(self) -> None:
        config = load_default_service_provider_config()
        config.patch.supported = self.patch  # type: ignore[union-attr]
        config.sort.supported = self.sort  # type: ignore[union-attr]
        config.filter.supported = self.filter  # type: ignore[union-attr]
        config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
        default = _default_provider()
        provider = ScimProvider(models=default.models, resource_types=default.resource_types, config=config)
        storage = InMemoryStorage(clock=self.clock) if self.clock is not None else InMemoryStorage()
        self.app = BearerTokenApplication(storage, provider, service=ScimService(provider),
                                          bearer_tokens=[STATIC_TOKEN])
        self._server = make_server("127.0.0.1", self.port, self._front, server_class=ThreadingWSGIServer,
                                   handler_class=_Quiet)
        self.port = self._server.server_port
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v2"

    @property
    def token_url(self) -> str:
        return f"{self.base}/oauth/token"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def revoke_tokens(self) -> None:
        self.app.bearer_tokens = {STATIC_TOKEN}

    def fail_next(self, method: str, status: int, retry_after: str | None = "0") -> None:
        """Answer the next ``method`` request with ``status`` (a throttling answer)."""
        self.faults.append((method, status, {"Retry-After": retry_after} if retry_after else {}))

    def before_next(self, method: str, action: Callable[[], Any]) -> None:
        """Run ``action`` (another writer's change) just before serving the next ``method`` request."""
        self.before.append((method, action))

    def _front(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        self.requests.append((method, path, environ.get("QUERY_STRING", "")))

        def answer(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            self.answers.append((method, path, int(status.split()[0])))
            return start_response(status, headers, *rest)

        return self._serve(method, path, environ, answer)

    def _serve(self, method: str, path: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_IF_MATCH"):
            self.if_match.append(environ["HTTP_IF_MATCH"])
        if path == "/oauth/token":
            return self._token(environ, start_response)
        if method in ("POST", "PUT", "PATCH"):
            size = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(size)
            self.bodies.append((f"{method} {path}", json.loads(raw or b"null")))
            environ["wsgi.input"] = io.BytesIO(raw)
        if self.broken_config and path == "/v2/ServiceProviderConfig":
            start_response("200 OK", [("Content-Type", "application/scim+json")])
            return [b'{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"], "patch": 3}']
        if self.stop_after is not None:
            self.stop_after -= 1
            if self.stop_after <= 0:
                # The provider goes away: this request is the last one answered.
                self.stop_after = None
                self.stop()
        if self.refuse_or and " or " in parse_qs(environ.get("QUERY_STRING", "")).get("filter", [""])[0]:
            start_response("400 Bad Request", [("Content-Type", "application/scim+json")])
            error = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400",
                     "scimType": "invalidFilter", "detail": "or is not supported"}
            return [json.dumps(error).encode()]
        for matching in self.before_matching:
            if matching[0](method, path, environ.get("QUERY_STRING", "")):
                self.before_matching.remove(matching)
                matching[1]()
                break
        for hook in self.before:
            if hook[0] == method:
                self.before.remove(hook)
                hook[1]()
                break
        for fault in self.faults:
            if fault[0] == method:
                self.faults.remove(fault)
                start_response(f"{fault[1]} Busy", [("Content-Type", "application/json"), *fault[2].items()])
                return [b'{"detail": "busy"}']
        if method in self.garbled:
            self.garbled.remove(method)
            start_response("200 OK", [("Content-Type", "text/html")])
            return [b"<html>maintenance</html>"]
        if method == "GET" and self.list_edits and "startIndex=" in environ.get("QUERY_STRING", ""):
            return self._edited_list(self.list_edits.pop(0), environ, start_response)
        for matches, rewrite in self.edit_matching:
            if matches(method, path, environ.get("QUERY_STRING", "")):
                return self._edited_list(rewrite, environ, start_response)
        return self.app(environ, start_response)

    def _edited_list(self, edit: Callable[[dict[str, Any]], dict[str, Any]], environ: Environ,
                     start_response: StartResponse) -> Iterable[bytes]:
        answered: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], *rest: Any) -> Callable[[bytes], object]:
            answered.update(status=status, headers=headers)
            return lambda _: None

        raw = json.dumps(edit(json.loads(b"".join(self.app(environ, keep))))).encode()
        headers = [(k, v) for k, v in answered["headers"] if k.lower() != "content-length"]
        start_response(answered["status"], [*headers, ("Content-Length", str(len(raw)))])
        return [raw]

    def _token(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        user, _, password = base64.b64decode(value or "").decode().partition(":") if scheme == "Basic" else ("", "", "")
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        if (user, password) != (CLIENT_ID, CLIENT_SECRET) or form.get("grant_type") != ["client_credentials"]:
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'{"error": "invalid_client"}']
        token = secrets.token_urlsafe(16)
        self.app.bearer_tokens.add(token)
        self.tokens_issued += 1
        start_response("200 OK", [("Content-Type", "application/json")])
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        return [json.dumps(body).encode()]

    # Direct access, as an administrator of the provider would have -----------

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/", headers={"Authorization": f"Bearer {STATIC_TOKEN}"},
                            verify=self.tls is None)

    def add_user(self, user_name: str, **attrs: Any) -> dict[str, Any]:
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, **attrs}
        with self.client() as c:
            response = c.post("Users", json=body)
            response.raise_for_status()
            return dict(response.json())

    def add_users(self, user_names: Iterable[str]) -> list[dict[str, Any]]:
        """Many users, one request each over one connection (a bulk change at the provider)."""
        with self.client() as c:
            responses = [c.post("Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                               "userName": name}) for name in user_names]
        return [dict(r.raise_for_status().json()) for r in responses]

    def add_group(self, name: str, member_ids: Iterable[str] = ()) -> dict[str, Any]:
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
                "members": [{"value": m} for m in member_ids]}
        with self.client() as c:
            response = c.post("Groups", json=body)
            response.raise_for_status()
            return dict(response.json())

    def change(self, endpoint: str, id: str, path: str, value: Any) -> None:
        """Replace one attribute by PATCH, as another writer would."""
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": path, "value": value}]}
        with self.client() as c:
            c.patch(f"{endpoint}/{id}", json=body).raise_for_status()

    def list(self, endpoint: str, filter: str | None = None) -> list[dict[str, Any]]:
        params = {"count": 1000, **({"filter": filter} if filter else {})}
        with self.client() as c:
            response = c.get(endpoint, params=params)
            response.raise_for_status()
            return list(response.json().get("Resources") or [])

    def get(self, endpoint: str, id: str) -> dict[str, Any] | None:
        with self.client() as c:
            response = c.get(f"{endpoint}/{id}")
            return None if response.status_code == 404 else dict(response.json())


def running(**kwargs: Any) -> Iterator[ScimServer]:
    """A fixture body: one provider for one test, stopped after it."""
    server = ScimServer(**kwargs)
    try:
        yield server
    finally:
        server.stop()
