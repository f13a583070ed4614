"""What a command opened, closed by ``main`` once the command ends, whatever its end.

A store is the command's to close, not the interpreter's: its engine's connections
end properly (PostgreSQL and MariaDB see them closed, not dropped; SQLite's last
connection removes the ``-wal`` and ``-shm`` files beside the database). Left to
the interpreter, they would close only if its last cycle collection reached them,
which the process's own command skips (``runtime.leave_to_exit``).

``main`` holds one scope per command (``command_scope``); where a command opens a
store, it hands it over as it opens it (``close_at_end``). The systems a command
reaches are closed with its ``Resources`` (``Resources.close``, in a ``finally``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol, TypeVar

__all__ = ["close_at_end", "command_scope"]


class _Closable(Protocol):
    def close(self) -> None: ...


_T = TypeVar("_T", bound=_Closable)

_scope: ContextVar[contextlib.ExitStack] = ContextVar("idsync_command_scope")


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """The scope of one command: what is handed to ``close_at_end`` within it is closed
    as it ends, the last opened first."""
    with contextlib.ExitStack() as stack:
        token = _scope.set(stack)
        try:
            yield
        finally:
            _scope.reset(token)


def close_at_end(thing: _T) -> _T:
    """``thing``, to be closed as the current command ends."""
    _scope.get().callback(thing.close)
    return thing
