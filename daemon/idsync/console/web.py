"""What every console page is made with: the ``Console`` (the API's context, the
accounts, the sessions, the templates), checked forms, rendering and redirects.

Pages are rendered on the server; a change is a form POST whose handler reads
it with ``Form.read`` (which refuses it with 403 without the session's CSRF
token) and answers with a 303 redirect to the page that shows the result.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any, Literal
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from idsync import __version__
from idsync.api.auth import Accounts, LoginLimit, client_address
from idsync.api.context import ApiContext
from idsync.console.session import LOGIN_COOKIE, Consents, Session, Sessions

__all__ = ["CSP", "HEADERS", "Console", "Form", "console_of", "cookie_path", "page", "redirect", "set_cookie",
           "shown", "user_of"]

log = structlog.get_logger("idsync.console")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_MAX_FORM_BYTES = 256 * 1024


class Console:
    """What every page works with: the API's context, the accounts, the sessions."""

    def __init__(self, ctx: ApiContext, accounts: Accounts, limit: LoginLimit) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.limit = limit
        self.sessions = Sessions(ctx.settings.console_idle_minutes * 60.0)
        self.consents = Consents()
        # The last test of every system (the Systems page): when, and each system's answer.
        self.tested: tuple[dt.datetime, list[dict[str, Any]]] | None = None
        # The provisioners that test was of: a reload that changed them makes it stale.
        self.tested_for: dict[str, Any] | None = None
        self.templates = Environment(loader=PackageLoader("idsync.console", "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.globals["version"] = __version__
        self.templates.filters["when"] = when
        self.templates.filters["shown"] = shown


def when(value: object, zone: str | None = None) -> str:
    """A time as the pages show it: ``2026-12-05 11:30:00 UTC``, or in the time zone ``zone``
    (a job's next fire, as its schedule and the preview of its fires read:
    ``2026-12-05 12:30:00 CET``); empty for none."""
    if value is None or value == "":
        return ""
    instant = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    try:
        shown = instant.astimezone(ZoneInfo(zone)) if zone and zone != "UTC" else None
    except (ZoneInfoNotFoundError, ValueError):
        shown = None  # a zone the job's file got wrong: said on its own page
    if shown is None:
        return instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z")


def shown(value: object) -> str:
    """A property's value as the pages show it: a string as it is, anything else as JSON
    (``["top", "person"]``, ``true``), as a managed object's page shows and takes it; empty for none."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class Form:
    """A POSTed form (``application/x-www-form-urlencoded``) whose CSRF token was checked."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))

    def has(self, name: str) -> bool:
        return name in self._fields

    @classmethod
    async def read(cls, request: Request) -> Form:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        form = cls(fields)
        session: Session | None = getattr(request.state, "session", None)
        token = form.get("csrf") or None
        if session is not None:
            ok = session.csrf_ok(token)
        else:  # the login form: the token must match its own cookie
            cookie = request.cookies.get(LOGIN_COOKIE)
            ok = bool(cookie) and token is not None and secrets.compare_digest(cookie or "", token)
        if not ok:
            log.warning("console.csrf_refused", path=request.url.path, client=client_address(request.scope),
                        user=session.user if session else None)
            raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
        return form


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def user_of(request: Request) -> str:
    session: Session = request.state.session
    return session.user


def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """``template`` rendered with the page's own ``values`` and what every page shows."""
    console = console_of(request)
    session: Session | None = getattr(request.state, "session", None)
    flash = request.query_params.get("done")
    problem = values.pop("problem", None) or request.query_params.get("problem")
    html = console.templates.get_template(template).render(
        request=request, user=session.user if session else None, csrf=session.csrf if session else "",
        base=request.scope.get("root_path", ""), flash=flash, problem=problem, **values)
    try:
        body = html.encode("utf-8")
    except UnicodeEncodeError:  # half of a character a system sent (``api/answer.py``): shown as \ud83d
        body = html.encode("utf-8", "backslashreplace")
    return HTMLResponse(body, status_code=status)


def redirect(request: Request, path: str, **query: str) -> RedirectResponse:
    """303 to ``path`` (inside the console) with a message for the next page."""
    base = request.scope.get("root_path", "")
    suffix = "&".join(f"{k}={quote(v)}" for k, v in query.items() if v)
    return RedirectResponse(f"{base}{path}" + (f"?{suffix}" if suffix else ""), status_code=303)


def cookie_path(request: Request) -> str:
    return (request.scope.get("root_path") or "") + "/"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None,
               samesite: Literal["strict", "lax"] = "strict") -> None:
    response.set_cookie(name, value, max_age=max_age, path=cookie_path(request), httponly=True,
                        samesite=samesite, secure=request.url.scheme == "https")
