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
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette import responses

__all__ = ["JSONResponse"]


class JSONResponse(responses.JSONResponse):
    """``starlette.responses.JSONResponse`` that answers a value holding an unpaired
    surrogate escaped, and NaN or an infinity as ``null``, not a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            pass
        except ValueError:  # "Out of range float values are not JSON compliant"
            content = _finite(content)
            try:
                return super().render(content)
            except UnicodeEncodeError:
                pass
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("ascii")


def _finite(value: Any) -> Any:
    """``value`` with each NaN or infinity in it made ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
