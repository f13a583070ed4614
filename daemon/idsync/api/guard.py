"""What the API refuses before any route sees a request.

* A request framed twice, with both ``Content-Length`` and ``Transfer-Encoding``:
  a proxy in front may read its body by one and idsync by the other, so bytes one
  of them takes as body the other takes as a second request (request smuggling).
  It is answered 400 and its connection closed, so nothing after it is read.
* A NUL character in the path or the query string (``%00``): no id, filter or
  parameter can hold one (the store refuses it), so it is a bad request, not a
  failed one.
* Percent-encoded bytes that are not UTF-8 (``%FF%FE``; ``%ED%A0%BD``, half of a
  character) in the path or the query string: decoded, each became U+FFFD, so
  ``managed/user/%FF%FE`` and ``managed/user/%FE%FF`` named one object, and a filter
  or a parameter held another value than the client's.
* An encoded slash (``%2F``) in a ``managed/`` path: the id would hold a ``/``, which no
  managed object's id does (a create refuses one), and the decoded path would name
  another resource (a 405, or a relationship) instead of saying why.
* A request line and headers longer than ``MAX_HEAD_BYTES`` together: 431 and
  the connection closed. The HTTP parser (h11, ``app.py``) also refuses a head
  that is still incomplete past that size with a 400, which bounds what a client
  can make it buffer; a head that arrives whole in one read (up to 256 KiB) is
  only measured here.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from idsync.api.errors import error_response

__all__ = ["MAX_HEAD_BYTES", "RequestGuard"]

MAX_HEAD_BYTES = 16 * 1024


class RequestGuard:
    """Refuses the requests above with a PingIDM-shaped error, closing the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = _problem(scope)
            if refused is not None:
                response = error_response(*refused, {"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _problem(scope: Scope) -> tuple[int, str] | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    query: bytes = scope.get("query_string", b"")
    size = len(scope.get("raw_path") or b"") + len(query) + sum(len(k) + len(v) + 4 for k, v in headers)
    if size > MAX_HEAD_BYTES:
        return 431, f"the request line and headers are longer than {MAX_HEAD_BYTES} bytes"
    names = {name.lower() for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        return 400, "a request cannot have both Content-Length and Transfer-Encoding"
    if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(query):
        return 400, "a NUL character (%00) is not allowed in a path or a query"
    raw: bytes = scope.get("raw_path") or b""
    for where, encoded in (("path", raw), ("query", query.replace(b"+", b" "))):
        try:
            unquote_to_bytes(encoded).decode("utf-8")
        except UnicodeDecodeError as exc:
            return 400, (f"the {where} holds percent-encoded bytes that are not UTF-8 "
                         f"({''.join(f'%{b:02X}' for b in exc.object[exc.start:exc.end])}): "
                         "no id, name or value can hold them")
    if raw.startswith(b"/openidm/managed/") and b"%2f" in raw.lower():
        return 400, "a managed object's id cannot contain '/' (%2F): no object is addressed as managed/TYPE/ID"
    return None
