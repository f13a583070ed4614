"""How the SCIM connector authenticates: OAuth 2.0 client credentials, a static
bearer token, HTTP basic, or nothing, each as an ``httpx.Auth``.

The client-credentials token is fetched on first use, cached, and fetched again
``tokenRenewSeconds`` before it expires (half way through its life when it lives no
longer than that); a 401 from the provider with a cached token
(revoked, or the clock disagrees) fetches a new one and resends the request once.
A refused token request is an ``AuthenticationFailed`` naming the token endpoint and
the OAuth error code, never the secret or the token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import httpx
import structlog

from idsync.connectors.scim.config import ScimSettings
from idsync.errors import AuthenticationFailed, PeerUnavailable

__all__ = ["OAuthClientCredentials", "make_auth"]

log = structlog.get_logger("idsync.connectors.scim_auth")


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class OAuthClientCredentials(httpx.Auth):
    """The client-credentials grant (RFC 6749 section 4.4), token cached and renewed."""

    requires_response_body = True

    def __init__(self, settings: ScimSettings) -> None:
        self._endpoint = settings.token_endpoint or ""
        self._client_id = settings.client_id or ""
        self._client_secret = settings.client_secret or ""
        self._scope = settings.scope
        self._renew = settings.token_renew_seconds
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.fetched = 0  # how many tokens were fetched, for `idsync test` and the tests

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        if token is None:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            log.info("scim.token_refused", token_endpoint=self._endpoint)
            token = self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _current(self) -> str | None:
        with self._lock:
            return self._token if self._token and time.monotonic() < self._renew_at else None

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        basic = httpx.BasicAuth(self._client_id, self._client_secret)
        request = httpx.Request("POST", self._endpoint, data=data, headers={"Accept": "application/json"})
        return next(basic.auth_flow(request))

    def _store(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            code = body.get("error") if isinstance(body, dict) else None
            if response.status_code >= 500 or response.status_code == 429:
                raise PeerUnavailable(f"scim: token endpoint {self._endpoint} answered HTTP {response.status_code}")
            if response.status_code == 200:  # no refusal: an answer that is no token (a page, a proxy's)
                raise PeerUnavailable(f"scim: token endpoint {self._endpoint} answered HTTP 200 without an "
                                      "access_token (is tokenEndpoint the provider's OAuth token endpoint?)")
            raise AuthenticationFailed(f"scim: token endpoint {self._endpoint} refused the client credentials "
                                       f"(HTTP {response.status_code}{': ' + str(code) if code else ''})")
        lifetime = float(body.get("expires_in") or 3600)
        with self._lock:
            self._token = str(body["access_token"])
            # A token living no longer than the margin would be fetched again for every
            # request: it serves half its life instead.
            self._renew_at = time.monotonic() + (lifetime - self._renew if lifetime > self._renew else lifetime / 2)
            self.fetched += 1
            log.info("scim.token_fetched", token_endpoint=self._endpoint, expires_in=lifetime)
            return self._token


def make_auth(settings: ScimSettings) -> httpx.Auth | None:
    """The ``httpx.Auth`` for the configured ``authenticationMethod``."""
    if settings.auth_method == "OAUTH":
        return OAuthClientCredentials(settings)
    if settings.auth_method == "TOKEN":
        return _Bearer(settings.auth_token or "")
    if settings.auth_method == "BASIC":
        return httpx.BasicAuth(settings.user or "", settings.password or "")
    return None
