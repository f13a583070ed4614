"""Who may call the API: accounts with argon2 hashes, checked on every request.

Credentials come as PingIDM's ``X-OpenIDM-Username`` / ``X-OpenIDM-Password``
headers or as HTTP Basic. A failure is a bare 401 (no hint whether the name
exists, with ``WWW-Authenticate: Basic``); only ``info/ping`` is open. Prometheus
scrapes ``/metrics`` with Basic credentials: an admin's, or better an account of
``[api.metrics_accounts]``, which may read ``/metrics`` and nothing else (403). Failed logins are counted per
client address over a sliding minute: past the limit, that address gets 429
until the minute passes, without a hash being computed, so guessing stays slow
and cannot pin the CPU.

A verified password is remembered for a minute under a keyed digest (the key
lives only in this process), so scripts sending credentials on every request do
not pay an argon2 verification each time.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from idsync.api.errors import error_response
from idsync.errors import ConfigError
from idsync.settings import ApiSettings

__all__ = ["OPEN_PATHS", "SAMPLE_PASSWORDS", "Accounts", "AuthMiddleware", "LoginLimit", "client_address",
           "hash_password", "load_accounts"]

log = structlog.get_logger("idsync.api")

OPEN_PATHS = frozenset({"/openidm/info/ping"})
# Passwords from PingIDM's documentation and samples: never acceptable off loopback.
SAMPLE_PASSWORDS = ("openidm-admin", "admin", "password", "Passw0rd", "changeit")
_CACHE_SECONDS = 60.0
_WINDOW = 60.0
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash for ``[api.accounts]`` (``idsync api hash-password``)."""
    return _hasher.hash(password)


def _matches(hash_: str, password: str) -> bool:
    try:
        return _hasher.verify(hash_, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class Accounts:
    """The API's accounts: user name to argon2 hash."""

    def __init__(self, hashes: Mapping[str, str], metrics_only: Mapping[str, str] | None = None) -> None:
        self._hashes = {**hashes, **(metrics_only or {})}
        self.metrics_only = frozenset(metrics_only or ())
        self._key = secrets.token_bytes(32)
        self._verified: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hashes)

    def verify(self, user: str, password: str) -> bool:
        digest = hashlib.blake2b(password.encode(), key=self._key).digest()
        now = time.monotonic()
        with self._lock:
            if self._verified.get((user, digest), 0.0) > now:
                return True
        hash_ = self._hashes.get(user)
        # An unknown user costs a verification too, so timing does not tell names apart.
        ok = _matches(hash_ or _dummy_hash(), password) and hash_ is not None
        if ok:
            with self._lock:
                self._verified = {k: t for k, t in self._verified.items() if t > now}
                self._verified[(user, digest)] = now + _CACHE_SECONDS
        return ok

    def with_sample_password(self) -> list[str]:
        return sorted(u for u, h in self._hashes.items() if any(_matches(h, p) for p in SAMPLE_PASSWORDS))


@functools.cache
def _dummy_hash() -> str:
    """What an unknown user's password is checked against. Made at the first such check,
    not when the module is loaded: a hash costs a tenth of a second of CPU, which
    ``idsync validate`` and every start of the daemon would otherwise pay for nothing."""
    return _hasher.hash(secrets.token_hex(16))


def load_accounts(settings: ApiSettings, project_dir: Path, file: str) -> Accounts:
    """``[api.accounts]`` plus ``accounts_file`` (``name:hash`` lines, ``#`` comments);
    refuses a non-loopback bind while any account has a sample password."""
    hashes = dict(settings.accounts)
    for user in settings.metrics_accounts:
        if user in hashes:
            raise ConfigError(file, f"api.metrics_accounts.{user}", "already an account of [api.accounts]")
    if settings.accounts_file is not None:
        path = settings.accounts_file if settings.accounts_file.is_absolute() else project_dir / settings.accounts_file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(file, "api.accounts_file", f"cannot read {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, sep, hash_ = line.strip().partition(":")
            if not sep or not hash_.startswith("$argon2"):
                raise ConfigError(str(path), f"line {number}", "expected name:argon2-hash")
            hashes[user] = hash_
    for section, table in (("accounts", hashes), ("metrics_accounts", settings.metrics_accounts)):
        for user, hash_ in table.items():
            if not hash_.startswith("$argon2"):
                raise ConfigError(file, f"api.{section}.{user}", "not an argon2 hash (use `idsync api hash-password`)")
    accounts = Accounts(hashes, settings.metrics_accounts)
    if not _loopback(settings.host):
        weak = accounts.with_sample_password()
        if weak:
            raise ConfigError(file, "api.host", f"refusing to listen on {settings.host}: account(s) {', '.join(weak)} "
                              "still have a sample password; set a new one with `idsync api hash-password`")
    return accounts


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoginLimit:
    """Failed logins per client address within the last minute (the API's credentials and the
    console's login form count together)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            times = self._seen.get(client)
            while times and times[0] < now - _WINDOW:
                times.popleft()
            return bool(times) and len(times) >= self.limit  # type: ignore[arg-type]

    def add(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # forget quiet addresses rather than grow without bound
                self._seen = {c: t for c, t in self._seen.items() if t and t[-1] > now - _WINDOW}
            self._seen.setdefault(client, deque()).append(now)


def client_address(scope: Scope) -> str:
    """The address failed logins are counted under."""
    return scope["client"][0] if scope.get("client") else "unknown"


def _credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    user = headers.get("x-openidm-username")
    if user is not None:
        return user, headers.get("x-openidm-password", "")
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="idsync", charset="UTF-8"'}


class AuthMiddleware:
    """Lets a request through only with valid credentials (or to an open path)."""

    def __init__(self, app: ASGIApp, accounts: Accounts, failures: LoginLimit,
                 own_login: tuple[str, ...] = ()) -> None:
        self.app = app
        self.accounts = accounts
        self.failures = failures
        # Paths with a login of their own (the console's form and session), under the same limit.
        self._own_login = own_login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or (scope["path"] + "/").startswith(self._own_login):
            await self.app(scope, receive, send)
            return
        client = client_address(scope)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.failures.blocked(client):
            log.warning("api.login_throttled", client=client)
            await error_response(429, "Too many failed logins", {"Retry-After": str(int(_WINDOW))})(
                scope, receive, send)
            return
        creds = _credentials(headers)
        ok = creds is not None and await run_in_threadpool(self.accounts.verify, *creds)
        if not ok:
            self.failures.add(client)
            log.info("api.login_failed", client=client, user=creds[0] if creds else None)
            await error_response(401, "Access Denied", _CHALLENGE)(scope, receive, send)
            return
        assert creds is not None
        if creds[0] in self.accounts.metrics_only and scope["path"] != "/metrics":
            await error_response(403, "Forbidden: a metrics account reads /metrics only")(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = creds[0]
        await self.app(scope, receive, send)
