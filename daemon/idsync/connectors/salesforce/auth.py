"""OAuth 2.0 against Salesforce's token endpoint (``/services/oauth2/token``).

Two grants: ``refresh_token`` (every connection: the refresh token of a Connected
App, kept in configuration or in the state directory, buys short-lived access
tokens) and ``authorization_code`` (once, after an administrator's consent at
``/services/oauth2/authorize``: by ``idsync salesforce authorize`` or the console's
Authorize button, to obtain that refresh token: the web server flow). Errors come
back as ``{"error", "error_description"}``; a refused grant is
``AuthenticationFailed`` whose message names the grant and Salesforce's error
code, never a token or secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from idsync.errors import AuthenticationFailed, PeerError, PeerUnavailable, TLSError

__all__ = ["SCOPES", "TokenResponse", "authorize_url", "exchange_code", "refresh_access_token", "transport_error"]

log = structlog.get_logger("idsync.connectors.salesforce_auth")

# What idsync asks the administrator to allow: the REST API, who they are, and a refresh token.
SCOPES = "api id profile email address phone refresh_token offline_access"


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    instance_url: str
    refresh_token: str | None = None
    scope: str = ""
    id_url: str = ""

    def __repr__(self) -> str:  # never print the tokens
        return f"TokenResponse(instance_url={self.instance_url!r}, scope={self.scope!r})"


def transport_error(what: str, exc: httpx.TransportError) -> PeerError:
    """A connection-level failure, with certificate problems told apart."""
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return TLSError(f"salesforce: {what}: the server certificate did not verify ({text})")
    if isinstance(exc, httpx.TimeoutException):
        return PeerUnavailable(f"salesforce: {what}: timed out")
    return PeerUnavailable(f"salesforce: {what}: {text}")


def _token(client: httpx.Client, url: str, form: Mapping[str, str], grant: str) -> TokenResponse:
    try:
        response = client.post(url, data=dict(form), headers={"Accept": "application/json"})
    except httpx.TransportError as exc:
        raise transport_error(f"token request to {url}", exc) from None
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 500:
        raise PeerUnavailable(f"salesforce: token endpoint {url} answered HTTP {response.status_code}")
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        code = body.get("error", f"HTTP {response.status_code}") if isinstance(body, dict) else "error"
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        hint = {
            "invalid_grant": "the refresh token was refused (revoked, expired, or from another org or login URL); "
                             "get a new one with `idsync salesforce authorize`"
                             if grant == "refresh_token" else "the authorization code was refused (used or expired)",
            "invalid_client": "the client id or client secret was refused",
            "invalid_client_id": "the client id was refused",
        }.get(str(code), "the token request was refused")
        log.warning("salesforce.token_refused", grant=grant, error=str(code), url=url)
        raise AuthenticationFailed(f"salesforce: {hint} ({code}" + (f": {description})" if description else ")"))
    log.info("salesforce.token_issued", grant=grant, instance_url=body.get("instance_url"))
    return TokenResponse(
        access_token=str(body["access_token"]),
        instance_url=str(body.get("instance_url") or ""),
        refresh_token=body.get("refresh_token"),
        scope=str(body.get("scope") or ""),
        id_url=str(body.get("id") or ""),
    )


def refresh_access_token(client: httpx.Client, url: str, client_id: str, client_secret: str,
                         refresh_token: str) -> TokenResponse:
    """A new access token from the ``refresh_token`` grant."""
    form = {"grant_type": "refresh_token", "client_id": client_id, "client_secret": client_secret,
            "refresh_token": refresh_token, "format": "json"}
    return _token(client, url, form, "refresh_token")


def authorize_url(token_url: str, client_id: str, redirect_uri: str, *, state: str | None = None,
                  code_challenge: str | None = None) -> str:
    """The consent page of the web server flow (``.../services/oauth2/authorize``, beside
    the token endpoint), asking for ``SCOPES``, a fresh login and the consent prompt."""
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": SCOPES,
             "prompt": "login consent"}
    if state is not None:
        query["state"] = state
    if code_challenge is not None:
        query["code_challenge"] = code_challenge
    return token_url.removesuffix("/token") + "/authorize?" + urlencode(query)


def exchange_code(client: httpx.Client, url: str, client_id: str, client_secret: str, code: str,
                  redirect_uri: str, code_verifier: str | None = None) -> TokenResponse:
    """The ``authorization_code`` grant: the tokens for a code from the consent page."""
    form = {"grant_type": "authorization_code", "client_id": client_id, "client_secret": client_secret,
            "code": code, "redirect_uri": redirect_uri, "format": "json"}
    if code_verifier:
        form["code_verifier"] = code_verifier
    return _token(client, url, form, "authorization_code")
