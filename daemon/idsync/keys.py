"""Unknown keys in configuration files.

A misspelt safety key (``maxDelete`` for ``maxDeletes``, ``page_sise`` for
``page_size``) is not a typo to shrug at: the setting it meant silently keeps
its default, and a delete cap or a dry run is gone. So a key that is neither
idsync's nor PingIDM's is a ``file: key: problem`` error, with the nearest
known key as a suggestion.

Where a file may carry keys idsync cannot list in full (a PingIDM managed
property's schema, an OpenICF object type: later versions and the admin UI add
their own), only a key one or two letters away from a known one is taken for a
misspelling (``misspelt_keys``); the others are ``validate`` warnings. So with a
connector's ``configurationProperties`` (``unknown_settings``): OpenICF's connectors
have settings idsync neither lists nor needs, but a key a letter or two off one the
connector reads is an error, never a default kept in silence.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from idsync.errors import ConfigError, ConfigErrors, ConfigWarning

__all__ = ["misspelling_of", "misspelt_keys", "suggest", "unknown_keys", "unknown_settings"]


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


def misspelling_of(key: str, known: Collection[str]) -> str | None:
    """The known key ``key`` is most likely a misspelling of, letter case aside: one at
    most one edit away (a letter left out, added, changed, or two swapped), two for a
    key of more than five letters; None when no known key is that near (or ``key`` is known)."""
    if key in known:
        return None
    limit = 1 if len(key) <= 5 else 2
    found = sorted((_distance(key.lower(), k.lower()), k) for k in known)
    return found[0][1] if found and found[0][0] <= limit else None


def misspelt_keys(keys: Iterable[str], known: Collection[str], *, file: str, prefix: str = "") -> list[ConfigError]:
    """One error for each of ``keys`` that is a misspelling of one of ``known``
    (``misspelling_of``), named ``prefix.key``, with the key it was meant to be."""
    errors = []
    for key in sorted(set(keys)):
        meant = misspelling_of(key, known)
        if meant is not None:
            errors.append(ConfigError(file, f"{prefix}.{key}" if prefix else key,
                                      f"unknown setting, did you mean {meant}?"))
    return errors


def unknown_settings(keys: Iterable[str], known: Collection[str], *, file: str,
                     prefix: str = "configurationProperties") -> list[ConfigWarning]:
    """A warning for each of ``keys`` that is neither in ``known`` nor a misspelling of one
    of them, with the nearest known key; raises ``ConfigError`` (``ConfigErrors`` for several)
    naming each misspelling and the key it was meant to be (``misspelt_keys``)."""
    unknown = [key for key in keys if key not in known]
    if errors := misspelt_keys(unknown, known, file=file, prefix=prefix):
        raise ConfigErrors(errors) if len(errors) > 1 else errors[0]
    return [ConfigWarning(file, f"{prefix}.{key}" if prefix else key, f"{suggest(key, known)}; it is ignored")
            for key in sorted(unknown)]


def _distance(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``: insertions, deletions, substitutions and swaps of
    two neighbouring letters (the optimal string alignment distance)."""
    before: list[int] = []
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        above, row = row, [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(above[j] + 1, row[j - 1] + 1, above[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], before[j - 2] + 1)
        before = above
    return row[len(b)]
