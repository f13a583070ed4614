"""System ids the store cannot keep: one check for every way an id comes in.

An object of an external system is linked, audited and kept for a liveSync retry by its
id, in key columns of ``KEY_LENGTH`` characters. An id that no key column can hold
(``store.database.unfit_key``: a NUL character, an unpaired surrogate that a JSON peer
sent as ``"\\ud83d"``, more characters than a link holds) fails its own object, with a
message saying why, before anything of it is written: in a recon (either phase), a
liveSync batch, an implicit push whose target answers with such an id, and a link set
by hand. On PostgreSQL and MariaDB it would otherwise fail the whole page with the
driver's words, and SQLite, which takes any length, would link what the others refuse.

Such an object is not kept for a retry: its id is what it is, and the next read sees it
the same.
"""

from __future__ import annotations

from idsync.scripts.surrogates import mended
from idsync.store.database import unfit_key
from idsync.store.tables import KEY_LENGTH

__all__ = ["shown_id", "unfit_id"]

_SHOWN = 40  # characters of an over-long id a message quotes


def unfit_id(side: str, object_id: str, then: str = "the object was skipped") -> str | None:
    """Why a link cannot hold ``object_id`` (the ``side`` one: ``source``, ``target``), as
    the message of the object's failure ending with ``then``, or ``None`` when it can."""
    problem = unfit_key(object_id)
    if problem is None:
        return None
    return f"the {side} id {shown_id(object_id)} {problem}; {then}"


def shown_id(object_id: str) -> str:
    """``object_id`` as a message quotes it: its first characters when it is over-long, a NUL
    as ``\\u0000`` and half of a character as its escape, so the message can be stored and logged."""
    shown = object_id if len(object_id) <= KEY_LENGTH else f"{object_id[:_SHOWN]}..."
    return mended(shown).replace("\x00", "\\u0000")
