"""Unpaired surrogates: half of a character, which a script can make and nothing can write.

A JavaScript string is UTF-16, so ``substring``, ``slice`` or ``charAt`` can cut a
character beyond the BMP (an emoji) in two: ``"abcdefg😀".substring(0, 8)`` ends with
the first half. Such a string has no UTF-8 form, so every store, peer and log line
refuses it, and the refusal comes far from the script that made it (the driver's
``UnicodeEncodeError`` in the middle of a page). The engine therefore refuses it where
the script's result comes back: the object fails alone, with the script's name.

``JSON.stringify`` writes an unpaired surrogate as an escape (``\\ud83d``) and a paired
one as the character itself, so only a result whose JSON text has such an escape is
searched (``suspect``): the common result costs one substring search.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lone_at", "mended", "mended_value", "suspect"]


def suspect(json_text: str) -> bool:
    """Whether JSON from ``JSON.stringify`` may hold an unpaired surrogate (a quoted
    ``\\ud...`` in a string makes a false alarm, which ``lone_at`` then clears)."""
    return "\\ud" in json_text or "\\uD" in json_text


def lone_at(value: Any) -> str | None:
    """Where in ``value`` (a JSON pointer, ``/`` for the value itself) a string or a key
    holds an unpaired surrogate, or ``None``."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        at, item = stack.pop()
        if isinstance(item, str):
            if _has_lone(item):
                return at or "/"
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = f"{at}/{mended(str(key)).replace('~', '~0').replace('/', '~1')}"
                if _has_lone(str(key)):
                    return name
                stack.append((name, inner))
        elif isinstance(item, list):
            stack.extend((f"{at}/{i}", inner) for i, inner in enumerate(item))
    return None


def mended(text: str) -> str:
    """``text`` with each unpaired surrogate spelt as its escape (``\\ud83d``): a message
    that quotes a value can then be logged and stored."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def mended_value(value: Any) -> Any:
    """``value`` (plain JSON) with every string ``mended``."""
    if isinstance(value, str):
        return mended(value)
    if isinstance(value, dict):
        return {mended(str(k)): mended_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mended_value(v) for v in value]
    return value


def _has_lone(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
