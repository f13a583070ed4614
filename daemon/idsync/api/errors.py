"""Errors in PingIDM's shape: ``{"code": 404, "reason": "Not Found", "message": "..."}``.

Every failure of a request ends here: an ``ApiError`` raised by a route, or an
``IdsyncError`` from the engine mapped to the status a PingIDM client expects
(a bad filter 400 with its position, a lost revision race 412, a running recon
409). Messages come from the engine's exceptions, which never carry secrets.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from idsync.api.answer import JSONResponse
from idsync.errors import ConfigError, IdsyncError, ObjectRejected, http_status
from idsync.store.validation import PolicyFailed

__all__ = ["ApiError", "error_response", "exception_handlers", "policy_failure"]

log = structlog.get_logger("idsync.api")


class ApiError(Exception):
    """A request the API answers with an error status and a message."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None, *,
                 detail: object = None) -> None:
        self.code = code
        self.message = message
        self.headers = headers
        self.detail = detail
        super().__init__(message)


def error_response(code: int, message: str, headers: dict[str, str] | None = None, *,
                   detail: object = None) -> JSONResponse:
    """PingIDM's error body; ``detail`` when there is one (a script's thrown ``{code, message, detail}``)."""
    body: dict[str, Any] = {"code": code, "reason": HTTPStatus(code).phrase, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=code, headers=headers)


def policy_failure(failures: list[dict[str, Any]], *, patch: bool = False) -> JSONResponse:
    """PingIDM's answer to a change that breaks a policy: 403, the failed requirements in
    ``detail``. Its message is that of the part of PingIDM that refuses the change: the
    router's policy filter a create or replace ("Policy validation failed"), the managed
    service a ``patch`` ("Failed policy validation")."""
    message = "Failed policy validation" if patch else "Policy validation failed"
    body = {"code": 403, "reason": "Forbidden", "message": message,
            "detail": {"result": False, "failedPolicyRequirements": failures}}
    return JSONResponse(body, status_code=403)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.code, exc.message, exc.headers, detail=exc.detail)


async def _idsync_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdsyncError)
    if isinstance(exc, PolicyFailed):
        patch = request.method == "PATCH" or request.query_params.get("_action") == "patch"
        return policy_failure(exc.failures, patch=patch)
    code = http_status(exc)
    if code >= 500:
        log.warning("api.error", path=request.url.path, code=code, error=type(exc).__name__, message=str(exc))
    # A name the client got wrong is its problem; where the configuration lives is not its business.
    if isinstance(exc, ObjectRejected) and exc.reply is not None:
        return error_response(code, exc.reply, detail=exc.detail)  # a script's refusal, without its files
    message = exc.problem if isinstance(exc, ConfigError) and code == 404 else str(exc)
    return error_response(code, message)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail if exc.status_code != 404 else "Resource not found",
                          dict(exc.headers) if exc.headers else None)


async def _crash(request: Request, exc: Exception) -> Response:
    log.error("api.crash", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal error")


exception_handlers: dict[Any, Any] = {
    ApiError: _api_error,
    IdsyncError: _idsync_error,
    HTTPException: _http_error,
    Exception: _crash,
}
