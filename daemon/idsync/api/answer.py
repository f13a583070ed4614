"""The API's JSON answer: Starlette's, but for half of a character.

A value read from a JSON peer can hold an unpaired surrogate (a SCIM provider's
``"\\ud83d"``): Python keeps it, UTF-8 has no form for it, and Starlette's encoding
of the answer failed the request with a 500. Such an answer is written with every
character beyond ASCII escaped, as JSON escapes it (``\\ud83d``): valid JSON whose
strings a client reads back as exactly what the peer sent. Every other answer is
written as before, UTF-8 as it is.
"""

from __future__ import annotations

import json
from typing import Any

from starlette import responses

__all__ = ["JSONResponse"]


class JSONResponse(responses.JSONResponse):
    """``starlette.responses.JSONResponse`` that answers a value holding an unpaired
    surrogate escaped, not a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("ascii")
