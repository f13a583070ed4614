"""One authenticated HTTP session with a Salesforce org's REST API.

Every call goes through ``SalesforceClient.call``, which owns the three things
the API makes the caller handle:

* the access token: fetched with the refresh-token grant on first use, and
  fetched again once when a call answers 401 ``INVALID_SESSION_ID`` (sessions
  expire on Salesforce's schedule, not ours). Tokens are kept per connection
  for the whole process (``_Sessions``): the HTTP API opens a client for each
  managed change, and a token request per change would be slow and spend the
  org's login allowance for nothing;
* limits: 403 ``REQUEST_LIMIT_EXCEEDED``, 429 and 503 are retried with
  exponential backoff (``Retry-After`` honoured), then become ``PeerUnavailable``
  so the run stops cleanly before any delete;
* errors: the JSON arrays ``[{"message", "errorCode", "fields"}]`` are turned
  into readable text; the caller decides whether that fails one object
  (``ObjectRejected``) or the pass.

Tokens never reach a log line or an exception. Thread-safe: a lock guards the
token, httpx's client is shared.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from idsync.connectors.salesforce.auth import refresh_access_token, transport_error
from idsync.connectors.salesforce.config import SalesforceSettings
from idsync.errors import AuthenticationFailed, PeerUnavailable

__all__ = ["SalesforceClient", "error_text", "errors_of", "tls_verify"]

log = structlog.get_logger("idsync.connectors.salesforce_client")

_RETRIED_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW"})
_MAX_DELAY = 60.0


def tls_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's ``verify``: on, off (only when configured so), or trusting one CA bundle."""
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The error objects of a failed response (``errorCode``, or ``statusCode`` in SaveResults)."""
    try:
        body = response.json()
    except ValueError:
        return [{"errorCode": f"HTTP_{response.status_code}", "message": response.text[:200]}]
    items = body if isinstance(body, list) else [body]
    return [i for i in items if isinstance(i, dict)]


def error_text(errors: list[dict[str, Any]]) -> str:
    """``DUPLICATE_USERNAME: Duplicate Username (fields: Username)``, one per error."""
    parts = []
    for e in errors:
        code = e.get("errorCode") or e.get("statusCode") or e.get("error") or "ERROR"
        message = e.get("message") or e.get("error_description") or ""
        fields = e.get("fields") or []
        parts.append(f"{code}: {message}" + (f" (fields: {', '.join(map(str, fields))})" if fields else ""))
    return "; ".join(parts) or "unknown error"


class _Sessions:
    """The access token (and instance URL) last issued for each connection, by a
    digest of the connection's settings: secrets never become a readable key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, str]] = {}

    @staticmethod
    def key(s: SalesforceSettings) -> str:
        parts = (s.token_url, s.client_id, s.client_secret, s.refresh_token, s.instance_url or "")
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: str, token: str, instance: str) -> None:
        with self._lock:
            self._tokens[key] = (token, instance)


_SESSIONS = _Sessions()


class SalesforceClient:
    """Calls ``/services/data/vXX.X/...`` with a valid session."""

    def __init__(self, system: str, settings: SalesforceSettings) -> None:
        self.system = system
        self._settings = settings
        self._http = httpx.Client(
            verify=tls_verify(settings.verify),
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                keepalive_expiry=settings.idle_check_interval),
            headers={"Accept": "application/json", "User-Agent": "idsync"},
        )
        self._lock = threading.Lock()
        self._token: str | None = None
        self._instance: str | None = settings.instance_url
        self._key = _Sessions.key(settings)
        self.calls = 0

    @property
    def base(self) -> str:
        """``/services/data/vXX.X``: what every REST path starts with."""
        return f"/services/data/{self._settings.version}"

    @property
    def has_collections(self) -> bool:
        """Whether the configured API version has sObject Collections (42.0 and later)."""
        return float(self._settings.version[1:]) >= 42.0

    @property
    def http(self) -> httpx.Client:
        """The connection to the org's hosts (the token endpoint's too), TLS as configured."""
        return self._http

    def close(self) -> None:
        self._http.close()

    def authenticate(self) -> None:
        """Get a fresh access token (the refresh-token grant)."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        s = self._settings
        if not s.refresh_token:
            raise AuthenticationFailed(f"salesforce: system {self.system} has no refresh token yet: authorize it "
                                       "in the console (Systems, Authorize) or with `idsync salesforce authorize`")
        token = refresh_access_token(self._http, s.token_url, s.client_id, s.client_secret, s.refresh_token)
        self._token = token.access_token
        if not s.instance_url and token.instance_url:
            if s.token_url.startswith("https://") and not token.instance_url.startswith("https://"):
                # The access token would travel in clear: only a configured instanceUrl may be http.
                raise AuthenticationFailed(f"salesforce: the token response names an instance_url that is not "
                                           f"https ({token.instance_url.split('?')[0]}); set instanceUrl")
            self._instance = token.instance_url.rstrip("/")
        if not self._instance:
            raise AuthenticationFailed("salesforce: no instanceUrl configured and none in the token response")
        _SESSIONS.put(self._key, self._token, self._instance)

    def _session(self) -> tuple[str, str]:
        with self._lock:
            if self._token is None:
                self._adopt_or_refresh(None)
            assert self._token is not None and self._instance is not None
            return self._token, self._instance

    def _adopt_or_refresh(self, expired: str | None) -> None:
        """Use the process's current token for this connection unless it is the one
        that just expired (or there is none); then get a new one. Lock held."""
        cached = _SESSIONS.get(self._key)
        if cached is not None and cached[0] != expired:
            self._token, self._instance = cached
        else:
            self._refresh()

    def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
             json: Any = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send one request (``path`` absolute on the instance, e.g. ``nextRecordsUrl``).
        Any answer other than a session or limit problem is returned as is."""
        attempt = 0
        renewed = False
        while True:
            token, instance = self._session()
            try:
                response = self._http.request(method, instance + path, params=params, json=json,
                                              headers={**(headers or {}), "Authorization": f"Bearer {token}"})
            except httpx.TransportError as exc:
                raise transport_error(f"{method} {path.split('?')[0]}", exc) from None
            self.calls += 1
            if response.status_code == 401 and not renewed:
                # An expired session: one new token, then the same request again.
                log.info("salesforce.session_expired", system=self.system,
                         error=_first_code(response) or "HTTP_401")
                with self._lock:
                    if self._token == token:
                        self._adopt_or_refresh(token)
                renewed = True
                continue
            if response.status_code == 401:
                raise AuthenticationFailed(f"salesforce: the API refused a fresh session: "
                                           f"{error_text(errors_of(response))}")
            if _retriable(response):
                attempt += 1
                code = _first_code(response) or f"HTTP_{response.status_code}"
                if attempt > self._settings.max_retries:
                    log.warning("salesforce.gave_up", system=self.system, error=code, attempts=attempt)
                    raise PeerUnavailable(f"salesforce: {code} after {attempt} attempts "
                                          f"({method} {path.split('?')[0]}); try again later")
                delay = _delay(response, self._settings.retry_backoff, attempt)
                log.warning("salesforce.retry", system=self.system, error=code, attempt=attempt,
                            delay_s=round(delay, 3))
                time.sleep(delay)
                continue
            log.debug("salesforce.call", system=self.system, method=method, path=path.split("?")[0],
                      status=response.status_code, limits=response.headers.get("Sforce-Limit-Info"))
            return response


def _first_code(response: httpx.Response) -> str | None:
    errors = errors_of(response)
    return str(errors[0].get("errorCode") or "") or None if errors else None


def _retriable(response: httpx.Response) -> bool:
    if response.status_code in (429, 502, 503, 504):
        return True
    if response.status_code in (400, 403, 500):
        return _first_code(response) in _RETRIED_CODES
    return False


def _delay(response: httpx.Response, backoff: float, attempt: int) -> float:
    after = response.headers.get("Retry-After", "")
    if after.isdigit():
        return min(float(after), _MAX_DELAY)
    return min(backoff * 2.0 ** (attempt - 1), _MAX_DELAY)
