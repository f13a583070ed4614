"""Roles, assignments and their temporal constraints, as PingIDM's ``managed.json`` declares them.

PingIDM's model: a user's ``roles`` (the reverse of a role's ``members``) grant roles;
a role's ``assignments`` (the reverse of an assignment's ``roles``) name managed
``assignment`` objects, each for one mapping (``mapping``) with ``attributes``
(``name``, ``value``, ``assignmentOperation``, ``unassignmentOperation``). A role
with a ``condition`` (a ``_queryFilter`` on users) is granted to the users it
matches (``_refProperties._grantType: "conditional"``). A role, or one grant, with
``temporalConstraints`` (``[{"duration": "START/END"}]``, ISO 8601 intervals) is in
effect only inside one of its windows.

``config/managed.py``'s ``role_model`` finds the model in the managed types (a type whose ``roles`` point to
``managed/role`` and back through ``members``); the store computes each user's
``effectiveRoles`` and ``effectiveAssignments`` from it (``store/roles.py``) and the
sync engine applies the assignments (``sync/assignments.py``). ``now`` is the one
clock every decision about a window reads.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CONDITIONAL", "OPERATIONS", "Window", "edges", "in_effect", "now", "windows"]

# PingIDM's assignment operations (``roles/*.js`` in its distribution), applied by ``sync/assignments.py``.
OPERATIONS = ("replaceTarget", "mergeWithTarget", "removeFromTarget", "noOp")
CONDITIONAL = "conditional"  # ``_refProperties._grantType`` of a grant a role's condition made


def now() -> dt.datetime:
    """The current instant (UTC) that temporal constraints are compared with."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime


_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
                       r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _period(text: str) -> dt.timedelta:
    found = _DURATION.match(text.strip())
    if found is None or not any(found.groups()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in found.groups())
    return dt.timedelta(days=y * 365 + mo * 30 + w * 7 + d, hours=h, minutes=mi, seconds=s)


def window(text: Any) -> Window:
    """One ``duration`` (``START/END``, ``START/PERIOD`` or ``PERIOD/END``) as a window
    (``ValueError`` when it cannot be read, or ends no later than it starts)."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f'expected an ISO 8601 interval "START/END", got {text!r}')
    first, second = text.split("/")
    if first.strip().startswith("P"):
        end = _instant(second)
        found = Window(end - _period(first), end)
    else:
        start = _instant(first)
        found = Window(start, start + _period(second) if second.strip().startswith("P") else _instant(second))
    if found.end <= found.start:
        # Never in effect: refused, rather than a role or a grant that silently grants nothing.
        raise ValueError(f"{text!r} ends ({found.end.isoformat()}) " + (
            "when it starts: an empty window" if found.end == found.start
            else f"before it starts ({found.start.isoformat()})"))
    return found


def windows(constraints: Any, where: str = "temporalConstraints") -> list[Window]:
    """The windows of a ``temporalConstraints`` value (``ValueError`` naming what is wrong)."""
    if constraints is None:
        return []
    if not isinstance(constraints, list):
        raise ValueError(f'{where}: expected a list such as [{{"duration": "START/END"}}]')
    found = []
    for i, item in enumerate(constraints):
        if not isinstance(item, Mapping) or "duration" not in item:
            raise ValueError(f'{where}[{i}]: expected {{"duration": "START/END"}}')
        try:
            found.append(window(item["duration"]))
        except ValueError as exc:
            raise ValueError(f"{where}[{i}].duration: {exc}") from None
    return found


def in_effect(constraints: Any, at: dt.datetime) -> bool:
    """Whether an object with these ``temporalConstraints`` is in effect at ``at``: none, or
    ``at`` inside one window (start included, end excluded). Unreadable constraints are
    refused when written (``store/roles.py``); one read anyway is not in effect."""
    if not constraints:
        return True
    try:
        return any(w.start <= at < w.end for w in windows(constraints))
    except ValueError:
        return False


def edges(constraints: Any) -> Iterable[dt.datetime]:
    """The instants at which these constraints open or close a window."""
    try:
        found = windows(constraints)
    except ValueError:
        return ()
    return [t for w in found for t in (w.start, w.end)]
