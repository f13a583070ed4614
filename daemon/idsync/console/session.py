"""Console sessions: who is logged in, and the CSRF token of their forms.

A session is a random id in a cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` when the console is served over TLS) that names an entry in this
process's memory: the account, its CSRF token and when it last made a request.
It ends at logout, after ``[api] console_idle_minutes`` without a request, or
when the daemon stops. Every form carries the session's CSRF token and every
POST is refused (403) without it; the login form, which has no session yet,
carries a token bound to a short-lived cookie of its own (double submit).

An administrator's consent to a system (OAuth 2.0 authorization code) leaves the
console for the provider's page and comes back to ``/oauth/callback`` from the
provider's site, where the ``SameSite=Strict`` session cookie is not sent. So the
consent is bound to the browser that started it by a ``state`` (sent to the
provider and back) and a second random value in a ``SameSite=Lax`` cookie
(sent on that top-level return) that must match it: a ``PendingConsent``, kept
here ten minutes at most, used once, and dropped with the session that started it.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = ["CONSENT_COOKIE", "CONSENT_SECONDS", "COOKIE", "LOGIN_COOKIE", "Consents", "PendingConsent", "Session",
           "Sessions"]

COOKIE = "idsync_console"
LOGIN_COOKIE = "idsync_console_login"
CONSENT_COOKIE = "idsync_console_consent"
CONSENT_SECONDS = 600
_MAX_SESSIONS = 10_000
_MAX_CONSENTS = 1_000


@dataclass
class Session:
    user: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    seen: float = field(default_factory=time.monotonic)

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    """The live sessions, by id."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, user: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(user)
        with self._lock:
            if len(self._sessions) >= _MAX_SESSIONS:
                self._expire(time.monotonic())
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The session, its idle clock reset; None if unknown or idle too long."""
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.seen > self.idle_seconds:
                del self._sessions[session_id]
                return None
            session.seen = now
            return session

    def alive(self, session_id: str) -> bool:
        """Whether the session is still open (its idle clock untouched)."""
        with self._lock:
            session = self._sessions.get(session_id)
            return session is not None and time.monotonic() - session.seen <= self.idle_seconds

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _expire(self, now: float) -> None:
        self._sessions = {k: s for k, s in self._sessions.items() if now - s.seen <= self.idle_seconds}


@dataclass(frozen=True)
class PendingConsent:
    """A consent under way: which system, who asked, from which session and browser."""

    system: str
    user: str
    session_id: str
    redirect_uri: str
    code_verifier: str  # PKCE: the provider gave its code to whoever holds this
    browser: str  # the value of the CONSENT_COOKIE of the browser that started it
    started: float = field(default_factory=time.monotonic)


class Consents:
    """Pending consents by ``state``; each is taken at most once."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingConsent] = {}
        self._lock = threading.Lock()

    def start(self, pending: PendingConsent) -> str:
        """A new ``state`` for ``pending``."""
        state = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._pending = {k: p for k, p in self._pending.items() if now - p.started <= CONSENT_SECONDS}
            if len(self._pending) >= _MAX_CONSENTS:
                self._pending.pop(next(iter(self._pending)))
            self._pending[state] = pending
        return state

    def take(self, state: str, browser: str | None) -> tuple[PendingConsent | None, str]:
        """The consent of ``state``, removed so it cannot be used again, when ``browser`` (the
        CONSENT_COOKIE sent back) is the one that started it and it is not older than
        CONSENT_SECONDS; else None and why."""
        with self._lock:
            pending = self._pending.pop(state, None) if state else None
        if pending is None:
            return None, "unknown or already used state"
        if not browser or not hmac.compare_digest(browser.encode(), pending.browser.encode()):
            return None, "state started in another browser"
        if time.monotonic() - pending.started > CONSENT_SECONDS:
            return None, "state expired"
        return pending, ""
