"""The API's JSON answer: Starlette's, but for half of a character and for NaN.

A value read from a JSON peer can hold an unpaired surrogate (a SCIM provider's
``"\\ud83d"``): Python keeps it, UTF-8 has no form for it, and Starlette's encoding
of the answer failed the request with a 500. Such an answer is written with every
character beyond ASCII escaped, as JSON escapes it (``\\ud83d``): valid JSON whose
strings a client reads back as exactly what the peer sent.

JSON has no form for NaN or an infinity either. The store refuses them
(``store.database.unfit_at``), but an object an earlier release stored with one failed
every answer holding it, a query of its whole type included: such a number is answered
as ``null``, as JavaScript's ``JSON.stringify`` writes it, so that the object can be
read and corrected. Every other answer is written as before, UTF-8 as it is.

A request with CREST's ``_prettyPrint=true`` is answered indented, as PingIDM's
(Jackson's) pretty printer lays it out: two spaces a level, ``"name" : value``.
``PrettyPrint``, a middleware, says so for the request's answers, errors included.
"""

from __future__ import annotations

import contextvars
import json
import math
from typing import Any

from starlette import responses
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["JSONResponse", "PrettyPrint"]

_pretty: contextvars.ContextVar[bool] = contextvars.ContextVar("idsync_api_pretty", default=False)
_COMPACT: dict[str, Any] = {"indent": None, "separators": (",", ":")}
_INDENTED: dict[str, Any] = {"indent": 2, "separators": (",", " : ")}


class JSONResponse(responses.JSONResponse):
    """``starlette.responses.JSONResponse`` that answers a value holding an unpaired
    surrogate escaped, and NaN or an infinity as ``null``, not a 500; indented when
    the request asked for it (``PrettyPrint``)."""

    def render(self, content: Any) -> bytes:
        layout = _INDENTED if _pretty.get() else _COMPACT
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, **layout).encode("utf-8")
        except UnicodeEncodeError:
            pass
        except ValueError:  # "Out of range float values are not JSON compliant"
            content = _finite(content)
            try:
                return json.dumps(content, ensure_ascii=False, allow_nan=False, **layout).encode("utf-8")
            except UnicodeEncodeError:
                pass
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, **layout).encode("ascii")


class PrettyPrint:
    """Answers a request holding ``_prettyPrint=true`` (any case) with indented JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = scope["type"] == "http" and \
            QueryParams(scope.get("query_string", b"")).get("_prettyPrint", "").lower() == "true"
        token = _pretty.set(asked)
        try:
            await self.app(scope, receive, send)
        finally:
            _pretty.reset(token)


def _finite(value: Any) -> Any:
    """``value`` with each NaN or infinity in it made ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
