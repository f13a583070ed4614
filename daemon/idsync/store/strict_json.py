"""JSON text as a client gives it, read strictly: only numbers JSON and the store can hold.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity``, which are no JSON, and
turns a number past what a double holds (``1e999``) into infinity. No such value can be
written back as JSON: an object holding one was stored, and every answer holding it
then failed. ``loads`` refuses them, and an integer past what a double holds (the
store keeps a number as a double, ``filters.property_value``). What a client sends
(an API request's body, ``idsync managed create --data``) is read by it; a value made
otherwise (a script's ``NaN``, a sum past the largest double) is refused by the store
itself (``database.unfit_at``).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

__all__ = ["UnfitNumber", "loads"]

_LARGEST = sys.float_info.max


class UnfitNumber(ValueError):
    """The text holds a number JSON or the store has no form for: fix the value."""


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads``, refusing what the module docstring says with ``UnfitNumber``; malformed
    text is ``json.JSONDecodeError`` as ever."""
    return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)


def _constant(name: str) -> Any:
    raise UnfitNumber(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnfitNumber(f"the number {_shown(text)} is out of range (at most {_LARGEST:.6g} either side of 0)")
    return value


def _int(text: str) -> int:
    # A double's largest value has 309 digits: a longer integer is past it, and is not even
    # converted (Python refuses more than 4300 digits with an error of its own).
    value = int(text) if len(text.lstrip("-")) <= 309 else None
    if value is None or abs(value) > _LARGEST:
        raise UnfitNumber(f"the number {_shown(text)} is out of range (at most {_LARGEST:.6g} either side of 0)")
    return value


def _shown(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"
