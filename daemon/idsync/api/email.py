"""``POST /openidm/external/email?_action=send``: PingIDM's outbound email service.

The body is PingIDM's message (``from``, ``to``, ``cc``, ``bcc``, ``subject``, ``body``,
``type``: ``managed/email.py``), sent in a worker thread before the answer, PingIDM's
``{"status": "OK", "message": "Email sent"}``; ``sendEmail`` is the same action. Any API
account may send. PingIDM's ``waitForCompletion=false`` is taken and still waits: the
answer then says the server accepted the message.

Errors: 400 for a message that is wrong or that the server refused for good (a
recipient, the sender), 404 when ``conf/external.email.json`` is missing, 503 when the
server cannot be reached, times out, refuses the credentials or its certificate does not
verify (PingIDM answers 400 to all of these), 500 when the password cannot be read.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from idsync.api.answer import JSONResponse
from idsync.api.context import ApiContext
from idsync.api.errors import ApiError
from idsync.api.query import read_json
from idsync.managed.email import ACTIONS, send_email

__all__ = ["email_routes"]


async def _send(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    action = request.query_params.get("_action")
    if action is None:
        raise ApiError(400, f"POST external/email sends a message: give _action ({' or '.join(ACTIONS)})")
    content = await read_json(request, ctx.settings.max_body_bytes)
    return JSONResponse(await run_in_threadpool(send_email, ctx.project().email, action, content))


email_routes = [Route("/external/email", _send, methods=["POST"])]
