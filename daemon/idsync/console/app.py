"""The console as an ASGI application, mounted by the daemon under ``/admin/``.

Pages are rendered on the server (Jinja2; templates and assets are package
data); ``static/console.js`` only refreshes parts of a page and previews a cron
expression as it is typed, so every change works without JavaScript as a plain
form POST answered with a redirect.

Every answer carries a Content-Security-Policy that allows scripts, styles and
images from the console itself only (no inline script), ``X-Frame-Options:
DENY`` and ``Cache-Control: no-store``. A request without a live session is sent
to the login form (``session.py``); the login form counts failures under the
API's own limit per client address.
"""

from __future__ import annotations

import secrets
import time

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idsync.api.auth import Accounts, LoginLimit, client_address
from idsync.api.context import ApiContext
from idsync.console.connection import connection_routes
from idsync.console.consent import CALLBACK, consent_routes
from idsync.console.dashboard import dashboard_routes
from idsync.console.identities import identity_routes
from idsync.console.jobs import job_routes
from idsync.console.mappings import mapping_routes
from idsync.console.runs import run_routes
from idsync.console.session import COOKIE, LOGIN_COOKIE
from idsync.console.systems import system_routes
from idsync.console.web import HEADERS, Console, Form, console_of, cookie_path, page, redirect, set_cookie, user_of

__all__ = ["create_console"]

log = structlog.get_logger("idsync.console")

_OPEN = ("/login", "/static/", CALLBACK)


# -- login -------------------------------------------------------------------


async def _login_form(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", login_csrf=token, next=request.query_params.get("next", ""))
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


async def _login(request: Request) -> Response:
    console = console_of(request)
    client = client_address(request.scope)
    if console.limit.blocked(client):
        log.warning("api.login_throttled", client=client)
        return page(request, "login.html", status=429, login_csrf=request.cookies.get(LOGIN_COOKIE, ""),
                    error="Too many failed logins from this address: wait a minute.", next="")
    form = await Form.read(request)
    user, password = form.get("username"), form.get("password")
    ok = bool(user) and await run_in_threadpool(console.accounts.verify, user, password)
    if not ok or user in console.accounts.metrics_only:
        console.limit.add(client)
        log.info("api.login_failed", client=client, user=user or None, via="console")
        return page(request, "login.html", status=401, login_csrf=request.cookies.get(LOGIN_COOKIE, ""),
                    error="Wrong user name or password.", next=form.get("next"), username=user)
    session_id, _session = console.sessions.open(user)
    log.info("console.login", user=user, client=client)
    target = form.get("next")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    response = redirect(request, target)
    set_cookie(request, response, COOKIE, session_id)
    response.delete_cookie(LOGIN_COOKIE, path=cookie_path(request))
    return response


async def _logout(request: Request) -> Response:
    await Form.read(request)
    console = console_of(request)
    console.sessions.close(request.cookies.get(COOKIE))
    log.info("console.logout", user=user_of(request))
    response = redirect(request, "/login")
    response.delete_cookie(COOKIE, path=cookie_path(request))
    return response


# -- the gate ------------------------------------------------------------------


class _Gate:
    """Security headers on every answer; a session for every page but the login form."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        answered = False

        async def secured(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        request = Request(scope)
        path = scope["path"][len(scope.get("root_path", "")):] or "/"
        if not path.startswith(_OPEN):
            session = self.console.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if scope["method"] in ("GET", "HEAD"):
                    response: Response = redirect(request, "/login", next=path if path != "/" else "")
                else:
                    response = HTMLResponse("Your session ended: log in again.", status_code=401)
                await response(scope, receive, secured)
                return
            scope.setdefault("state", {})["session"] = session
        started = time.perf_counter()
        try:
            await self.app(scope, receive, secured)
        except Exception as exc:
            if answered:
                raise
            # Answered here, inside the gate, so that the error page carries the security
            # headers too (Starlette's own 500 is sent outside it, as plain text without them).
            log.error("console.crash", path=path, error=type(exc).__name__, exc_info=exc)
            await _crash_page(request)(scope, receive, secured)
            return
        log.debug("console.request", path=path, ms=round((time.perf_counter() - started) * 1000, 1))


def _crash_page(request: Request) -> Response:
    return page(request, "error.html", status=500, code=500,
                message="An unexpected error: nothing more is shown here; the daemon's log has it (console.crash).")


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return page(request, "error.html", status=exc.status_code, code=exc.status_code, message=exc.detail)


def create_console(ctx: ApiContext, accounts: Accounts, limit: LoginLimit) -> ASGIApp:
    """The console over the API's ``ctx``, for ``accounts``, under the API's login ``limit``."""
    console = Console(ctx, accounts, limit)
    routes: list[BaseRoute] = [
        Route("/login", _login_form, methods=["GET"]),
        Route("/login", _login, methods=["POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(packages=[("idsync.console", "static")]), name="static"),
        *dashboard_routes,
        *job_routes,
        *run_routes,
        *mapping_routes,
        *identity_routes,
        *system_routes,
        *consent_routes,
        *connection_routes,
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _error})
    app.state.console = console
    app.add_middleware(_Gate, console=console)
    return app
