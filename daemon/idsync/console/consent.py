"""An administrator's consent to a system (Systems, Authorize): OAuth 2.0's
authorization code flow, as Salesforce's Connected Apps want it.

1. **Authorize** (a form with the session's CSRF token) makes a ``state``, a PKCE
   code verifier and a browser value (``session.Consents``), sets the browser value
   in a ``SameSite=Lax`` cookie and sends the browser to the provider's authorize
   page with the state, the code challenge and this console's callback URL
   (``/admin/oauth/callback``, which the Connected App must list).
2. The administrator logs in there and allows access; the provider sends the
   browser back to the callback with ``code`` and ``state``.
3. The callback takes the state once (a replayed, forged, expired or other
   browser's state is refused, and so is one whose session has ended), exchanges the
   code with the verifier, and the connector keeps the refresh token in the daemon's
   state directory (mode 0600; ``Provisioner.token_file``), tests the connection and
   shows the outcome. The code and the token appear in no page, log or audit entry.

The callback arrives from the provider's site, so the session cookie
(``SameSite=Strict``) is not sent with it: the page it answers has no menu, only a
link back to Systems, whose click is the console's own and carries the session again.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idsync.api.auth import client_address
from idsync.api.context import ApiContext
from idsync.console.record import record
from idsync.console.session import CONSENT_COOKIE, CONSENT_SECONDS, COOKIE, PendingConsent
from idsync.console.web import CSP, Console, Form, console_of, page, redirect, set_cookie, user_of
from idsync.errors import IdsyncError, NotFound
from idsync.resources import Resources

__all__ = ["CALLBACK", "consent_routes", "consent_systems", "csp_allowing"]

log = structlog.get_logger("idsync.console")

CALLBACK = "/oauth/callback"


def _callback_url(request: Request) -> str:
    root = request.scope.get("root_path", "")
    return f"{request.url.scheme}://{request.url.netloc}{root}{CALLBACK}"


def consent_systems(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    """Every enabled system that takes an administrator's consent: whether it needs one
    now, and the origin of its consent page (a form may be sent there). Opening a system
    does not connect; a system whose configuration is broken says why."""
    project = ctx.project()
    resources = Resources(project, ctx.store)
    out: dict[str, dict[str, Any]] = {}
    try:
        for name in resources.consent_systems():
            try:
                system = resources.system(name)
                needed = system.needs_consent()
                if needed is None:
                    continue
                parts = urlsplit(system.consent_url("", "", ""))
                port = f":{parts.port}" if parts.port else ""  # never a user name or password of the URL
                out[name] = {"needed": needed, "origin": f"{parts.scheme}://{parts.hostname}{port}", "error": None}
            except IdsyncError as exc:
                out[name] = {"needed": True, "origin": None, "error": str(exc)}
    finally:
        resources.close()
    return out


def csp_allowing(origins: list[str]) -> str:
    """The console's policy with forms also allowed to end at these consent pages (the
    Authorize form's answer redirects there, which ``form-action`` governs)."""
    extra = " ".join(sorted(set(origins)))
    return CSP.replace("form-action 'self'", f"form-action 'self' {extra}") if extra else CSP


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _consent_url(ctx: ApiContext, name: str, redirect_uri: str, state: str, challenge: str) -> str:
    resources = Resources(ctx.project(), ctx.store)
    try:
        if name not in resources.consent_systems():
            raise NotFound(f"system {name} takes no administrator's consent (or is not an enabled system)")
        return resources.system(name).consent_url(redirect_uri, state, challenge)
    finally:
        resources.close()


async def _authorize(request: Request) -> Response:
    console = console_of(request)
    await Form.read(request)
    name = request.path_params["name"]
    verifier = secrets.token_urlsafe(64)
    browser = secrets.token_urlsafe(32)
    redirect_uri = _callback_url(request)
    pending = PendingConsent(system=name, user=user_of(request), session_id=request.cookies.get(COOKIE, ""),
                             redirect_uri=redirect_uri, code_verifier=verifier, browser=browser)
    state = console.consents.start(pending)
    try:
        url = await run_in_threadpool(_consent_url, console.ctx, name, redirect_uri, state, _challenge(verifier))
    except IdsyncError as exc:
        console.consents.take(state, browser)
        return redirect(request, "/systems", problem=str(exc))
    log.info("console.consent_started", user=pending.user, system=name, redirect_uri=redirect_uri)
    response = RedirectResponse(url, status_code=303)
    set_cookie(request, response, CONSENT_COOKIE, browser, max_age=CONSENT_SECONDS, samesite="lax")
    return response


def _complete(console: Console, pending: PendingConsent, code: str) -> tuple[str, dict[str, Any]]:
    ctx = console.ctx
    resources = Resources(ctx.project(), ctx.store)
    try:
        outcome = resources.system(pending.system).complete_consent(code, pending.redirect_uri,
                                                                    pending.code_verifier)
    finally:
        resources.close()
    record(ctx, "console.system_authorized", user=pending.user, action="AUTHORIZE",
           subject=f"system/{pending.system}", message=f"authorized system {pending.system}", system=pending.system)
    console.tested = None  # the Systems page tests again
    resources = Resources(ctx.project(), ctx.store)  # opened again: it reads the new token
    try:
        return outcome, dict(resources.system(pending.system).test())
    finally:
        resources.close()


async def _callback(request: Request) -> Response:
    console = console_of(request)
    q = request.query_params
    pending, why = console.consents.take(q.get("state", ""), request.cookies.get(CONSENT_COOKIE))
    if pending is not None and not console.sessions.alive(pending.session_id):
        pending, why = None, "the session that started it has ended"
    if pending is None:
        log.warning("console.consent_refused", reason=why, client=client_address(request.scope))
        response: Response = page(request, "consent.html", status=400, system=None, outcome=None, test=None,
                                  failure=f"This consent answer was refused ({why}): start again from "
                                          "Systems, Authorize.")
    elif q.get("error") or not q.get("code"):
        error = q.get("error") or "no code"
        log.warning("console.consent_refused", reason=f"the provider answered {error}", system=pending.system,
                    user=pending.user, client=client_address(request.scope))
        description = q.get("error_description", "")
        response = page(request, "consent.html", status=400, system=pending.system, outcome=None, test=None,
                        failure=f"The provider did not grant access to {pending.system}: {error}"
                                + (f" ({description})" if description else ""))
    else:
        try:
            outcome, test = await run_in_threadpool(_complete, console, pending, q["code"])
        except IdsyncError as exc:
            log.warning("console.consent_refused", reason=str(exc), system=pending.system, user=pending.user,
                        client=client_address(request.scope))
            response = page(request, "consent.html", status=400, system=pending.system, outcome=None, test=None,
                            failure=f"{pending.system} could not be authorized: {exc}")
        else:
            response = page(request, "consent.html", system=pending.system, outcome=outcome, test=test)
    response.delete_cookie(CONSENT_COOKIE, path=(request.scope.get("root_path") or "") + "/")
    return response


consent_routes = [
    Route("/systems/{name}/authorize", _authorize, methods=["POST"]),
    Route(CALLBACK, _callback, methods=["GET"]),
]
