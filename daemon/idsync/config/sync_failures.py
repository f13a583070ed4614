"""A provisioner's ``syncFailureHandler``: what liveSync does with a change it could
not apply, as PingIDM reads the key.

    "syncFailureHandler": {"maxRetries": 5, "postRetryAction": "logged-ignore"}

- ``maxRetries``: how many later liveSync runs try the object again. Absent, null or
  negative: until it goes through (PingIDM's default when the key is absent too);
  ``0``: the action below at once.
- ``postRetryAction``, once the retries are spent: ``"logged-ignore"`` (a warning
  names the object and the error, and it is given up), ``"dead-letter-queue"`` (kept
  as a dead letter for an administrator: ``idsync livesync SOURCE --failures``, the
  API's ``repo/synchronisation/deadLetterQueue/SYSTEM``) or ``{"script": {...}}`` (a
  script given ``syncFailure``, ``failureCause`` and ``failureHandlers``; a script that
  throws leaves the object to be retried). Absent: given up without a word, as PingIDM
  does.

``sync/livesync.py`` carries it out; ``store/sync_failures.py`` keeps the objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from idsync.errors import ConfigError
from idsync.keys import suggest

__all__ = ["DEAD_LETTER", "IGNORE_LOGGED", "IGNORE_SILENT", "RETRY_FOREVER", "SCRIPT", "SyncFailurePolicy",
           "parse_sync_failure"]

IGNORE_LOGGED = "logged-ignore"
DEAD_LETTER = "dead-letter-queue"
SCRIPT = "script"
IGNORE_SILENT = "none"


@dataclass(frozen=True)
class SyncFailurePolicy:
    """``max_retries`` None: retried until it goes through; ``after`` one of the actions
    above; ``script`` the script's configuration when ``after`` is ``script``."""

    max_retries: int | None = None
    after: str = IGNORE_SILENT
    script: Mapping[str, Any] | None = None

    def exhausted(self, attempts: int) -> bool:
        """Whether an object that failed ``attempts`` times is past its retries."""
        return self.max_retries is not None and attempts > self.max_retries

    def describe(self) -> str:
        retries = "retried until it goes through" if self.max_retries is None else \
            f"retried {self.max_retries} times" if self.max_retries else "not retried"
        return f"{retries}, then {self.after}" if self.max_retries is not None else retries


RETRY_FOREVER = SyncFailurePolicy()


def parse_sync_failure(raw: object, *, file: str) -> SyncFailurePolicy:
    """The policy of a provisioner's ``syncFailureHandler`` value (absent: ``RETRY_FOREVER``)."""
    key = "syncFailureHandler"
    if raw is None:
        return RETRY_FOREVER
    if not isinstance(raw, Mapping):
        raise ConfigError(file, key, "expected an object such as {\"maxRetries\": 5, \"postRetryAction\": "
                                     "\"logged-ignore\"}")
    unknown = sorted(set(raw) - {"maxRetries", "postRetryAction"})
    if unknown:
        raise ConfigError(file, f"{key}.{unknown[0]}", suggest(unknown[0], ("maxRetries", "postRetryAction")))
    retries = raw.get("maxRetries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise ConfigError(file, f"{key}.maxRetries", f"expected a whole number, not {retries!r} (negative or "
                                                     "absent: retried until it goes through)")
    if retries is None or retries < 0:
        return RETRY_FOREVER  # the post-retry action is never reached
    after = raw.get("postRetryAction")
    if after is None:
        return SyncFailurePolicy(retries, IGNORE_SILENT)
    if after in (IGNORE_LOGGED, DEAD_LETTER):
        return SyncFailurePolicy(retries, str(after))
    if isinstance(after, Mapping) and set(after) == {"script"} and isinstance(after["script"], Mapping):
        return SyncFailurePolicy(retries, SCRIPT, dict(after["script"]))
    raise ConfigError(file, f"{key}.postRetryAction", f"expected \"{IGNORE_LOGGED}\", \"{DEAD_LETTER}\" or "
                                                      f"{{\"script\": {{...}}}}, not {after!r}")
