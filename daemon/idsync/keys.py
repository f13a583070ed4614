"""Unknown keys in configuration files.

A misspelt safety key (``maxDelete`` for ``maxDeletes``, ``page_sise`` for
``page_size``) is not a typo to shrug at: the setting it meant silently keeps
its default, and a delete cap or a dry run is gone. So a key that is neither
idsync's nor PingIDM's is a ``file: key: problem`` error, with the nearest
known key as a suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from idsync.errors import ConfigError

__all__ = ["suggest", "unknown_keys"]


def suggest(key: str, known: Collection[str]) -> str:
    """``unknown setting, did you mean X?``, or without the question when nothing is near."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown setting, did you mean {by_lower[close[0]]}?"
    return f"unknown setting (known: {', '.join(sorted(known))})"


def unknown_keys(keys: Iterable[str], known: Collection[str], *, file: str, prefix: str = "") -> list[ConfigError]:
    """One error for each of ``keys`` that is not in ``known``, named ``prefix.key``."""
    return [ConfigError(file, f"{prefix}.{key}" if prefix else key, suggest(key, known))
            for key in sorted(set(keys) - set(known))]
