"""Situations: what reconciliation finds for one object, as pure decision tables.

PingIDM assesses a situation in three places, and so does idsync:

* the source phase (``assess_source``): every source object read, with its
  link, its linked target and, when unlinked, what correlation found;
* the target phase (``assess_target``): target objects no source claimed;
* deletion events of implicit sync and liveSync (``assess_source_deleted``):
  the source is gone, only the link and the target are left to look at.

Each function takes facts already fetched and returns a ``Situation``; it never
reads anything itself, so the whole table is tested row by row. The tables are
those of PingIDM (and of OpenIDM's ``SourceSyncOperation`` /
``TargetSyncOperation``, which PingIDM grew from).
"""

from __future__ import annotations

from idsync.config.policies import Situation

__all__ = ["assess_source", "assess_source_deleted", "assess_target"]


def assess_source(
    *,
    qualifies: bool,
    link_exists: bool,
    target_found: bool,
    correlated: int,
    correlated_already_linked: bool,
) -> Situation:
    """The situation of one source object during the source phase.

    ``target_found`` says whether the linked target exists (read only when there
    is a link); ``correlated`` is how many targets correlation found (looked at
    only when there is no link; 0 when the mapping has no correlation);
    ``correlated_already_linked`` says whether the single correlated target is
    linked to another source.

        qualifies  link  linked target  correlated           situation
        ---------  ----  -------------  -------------------  --------------------
        yes        yes   found          -                    CONFIRMED
        yes        yes   not found      -                    MISSING
        yes        no    -              0                    ABSENT
        yes        no    -              1, not linked        FOUND
        yes        no    -              1, linked elsewhere  FOUND_ALREADY_LINKED
        yes        no    -              more than 1          AMBIGUOUS
        no         yes   either         -                    UNQUALIFIED
        no         no    -              1 or more            UNQUALIFIED
        no         no    -              0                    SOURCE_IGNORED

    LINK_ONLY and ALL_GONE never arise here: with a source object in hand there
    is always something to act on. They belong to ``assess_source_deleted``.
    """
    _check_count(correlated)
    if qualifies:
        if link_exists:
            return Situation.CONFIRMED if target_found else Situation.MISSING
        if correlated == 0:
            return Situation.ABSENT
        if correlated == 1:
            return Situation.FOUND_ALREADY_LINKED if correlated_already_linked else Situation.FOUND
        return Situation.AMBIGUOUS
    if link_exists or correlated > 0:
        return Situation.UNQUALIFIED
    return Situation.SOURCE_IGNORED


def assess_target(
    *,
    target_qualifies: bool,
    link_exists: bool,
    source_found: bool,
    source_qualifies: bool,
) -> Situation:
    """The situation of one target object that no source claimed in the source phase.

    ``source_found`` and ``source_qualifies`` describe the linked source, read
    again here because it may have been outside the source phase (a
    ``sourceQuery`` that left it out, or a change between the phases).

        target qualifies  link  linked source        situation
        ----------------  ----  -------------------  ---------------
        no                -     -                    TARGET_IGNORED
        yes               no    -                    UNASSIGNED
        yes               yes   not found            SOURCE_MISSING
        yes               yes   found, unqualified   UNQUALIFIED
        yes               yes   found, qualifies     CONFIRMED
    """
    if not target_qualifies:
        return Situation.TARGET_IGNORED
    if not link_exists:
        return Situation.UNASSIGNED
    if not source_found:
        return Situation.SOURCE_MISSING
    return Situation.CONFIRMED if source_qualifies else Situation.UNQUALIFIED


def assess_source_deleted(
    *,
    link_exists: bool,
    target_found: bool,
    target_qualifies: bool,
    correlated: int = 0,
    old_source_qualifies: bool = True,
) -> Situation:
    """The situation after a source object was deleted (implicit sync, liveSync).

    With a link, ``target_found`` / ``target_qualifies`` describe the linked
    target. Without one, PingIDM correlates the source's last known value:
    ``correlated`` is how many targets that found (0 when the old value is
    unknown or there is no correlation), ``old_source_qualifies`` whether that
    old value qualified.

        link  target                 old source   situation
        ----  ---------------------  -----------  --------------
        yes   found, qualifies       -            SOURCE_MISSING
        yes   found, unqualified     -            TARGET_IGNORED
        yes   not found              -            LINK_ONLY
        no    0 correlated           -            ALL_GONE
        no    1 correlated           qualified    UNASSIGNED
        no    1 correlated           unqualified  TARGET_IGNORED
        no    more than 1            qualified    AMBIGUOUS
        no    more than 1            unqualified  UNQUALIFIED
    """
    _check_count(correlated)
    if link_exists:
        if not target_found:
            return Situation.LINK_ONLY
        return Situation.SOURCE_MISSING if target_qualifies else Situation.TARGET_IGNORED
    if correlated == 0:
        return Situation.ALL_GONE
    if correlated == 1:
        return Situation.UNASSIGNED if old_source_qualifies else Situation.TARGET_IGNORED
    return Situation.AMBIGUOUS if old_source_qualifies else Situation.UNQUALIFIED


def _check_count(correlated: int) -> None:
    if correlated < 0:
        raise ValueError(f"correlated must be 0 or more, not {correlated}")
