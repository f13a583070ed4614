"""What answers the ``openidm`` object of mapping scripts.

The scripts layer knows no store and no system: whoever owns them implements
``OpenidmRouter`` and binds it to the engine (``ScriptEngine.routing`` for one
thread's unit of work, ``ScriptEngine.router`` for every thread). ``call`` gets the
function's name (``read``, ``query``, ``create``, ``update``, ``patch``, ``delete``,
``action``, ``encrypt``, ``decrypt``, ``isEncrypted``, ``hash``, ``isHashed``,
``matches``; ``identityServer.getProjectLocation`` and its other functions, and
``readFile``) and its arguments as JSON values, and returns a JSON value. An
``IdsyncError`` it raises is thrown in the script as an ``Error`` with the same
message, which the script may catch: messages must not carry secrets.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["OpenidmRouter"]


class OpenidmRouter(Protocol):
    def call(self, function: str, arguments: list[Any]) -> Any:
        """Answer ``openidm.<function>(*arguments)``."""
