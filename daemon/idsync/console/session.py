"""Console sessions: who is logged in, and the CSRF token of their forms.

A session is a random id in a cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` when the console is served over TLS) that names an entry in this
process's memory: the account, its CSRF token and when it last made a request.
It ends at logout, after ``[api] console_idle_minutes`` without a request, or
when the daemon stops. Every form carries the session's CSRF token and every
POST is refused (403) without it; the login form, which has no session yet,
carries a token bound to a short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = ["COOKIE", "LOGIN_COOKIE", "Session", "Sessions"]

COOKIE = "idsync_console"
LOGIN_COOKIE = "idsync_console_login"
_MAX_SESSIONS = 10_000


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

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _expire(self, now: float) -> None:
        self._sessions = {k: s for k, s in self._sessions.items() if now - s.seen <= self.idle_seconds}
