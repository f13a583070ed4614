"""The situation tables, row by row against PingIDM's source, target and deletion tables."""

from __future__ import annotations

import pytest
from idsync.config.policies import Situation
from idsync.sync.situations import assess_source, assess_source_deleted, assess_target

S = Situation

# qualifies, link, linked target found, correlated, correlated target linked elsewhere
SOURCE_ROWS = [
    (True, True, True, 0, False, S.CONFIRMED),
    (True, True, False, 0, False, S.MISSING),
    (True, False, False, 0, False, S.ABSENT),
    (True, False, False, 1, False, S.FOUND),
    (True, False, False, 1, True, S.FOUND_ALREADY_LINKED),
    (True, False, False, 2, False, S.AMBIGUOUS),
    (False, True, True, 0, False, S.UNQUALIFIED),
    (False, True, False, 0, False, S.UNQUALIFIED),
    (False, False, False, 1, False, S.UNQUALIFIED),
    (False, False, False, 3, False, S.UNQUALIFIED),
    (False, False, False, 0, False, S.SOURCE_IGNORED),
]


@pytest.mark.parametrize(("qualifies", "link", "target", "correlated", "elsewhere", "expected"),
                         SOURCE_ROWS)
def test_source_phase_table(qualifies: bool, link: bool, target: bool, correlated: int,
                            elsewhere: bool, expected: Situation) -> None:
    """Each row of the source-phase table gives PingIDM's situation."""
    assert assess_source(qualifies=qualifies, link_exists=link, target_found=target,
                         correlated=correlated, correlated_already_linked=elsewhere) is expected


def test_link_wins_over_correlation() -> None:
    """A linked source is judged by its link; correlation results are not looked at."""
    assert assess_source(qualifies=True, link_exists=True, target_found=True, correlated=5,
                         correlated_already_linked=True) is S.CONFIRMED


def test_negative_correlation_count_is_refused() -> None:
    """A negative count is a programming error, not a situation."""
    with pytest.raises(ValueError):
        assess_source(qualifies=True, link_exists=False, target_found=False, correlated=-1,
                      correlated_already_linked=False)


# target qualifies, link, linked source found, source qualifies
TARGET_ROWS = [
    (False, True, True, True, S.TARGET_IGNORED),
    (False, False, False, False, S.TARGET_IGNORED),
    (True, False, False, False, S.UNASSIGNED),
    (True, True, False, False, S.SOURCE_MISSING),
    (True, True, True, False, S.UNQUALIFIED),
    (True, True, True, True, S.CONFIRMED),
]


@pytest.mark.parametrize(("target_ok", "link", "source", "source_ok", "expected"), TARGET_ROWS)
def test_target_phase_table(target_ok: bool, link: bool, source: bool, source_ok: bool,
                            expected: Situation) -> None:
    """Each row of the target-phase table gives PingIDM's situation."""
    assert assess_target(target_qualifies=target_ok, link_exists=link, source_found=source,
                         source_qualifies=source_ok) is expected


# link, target found, target qualifies, correlated, old source qualifies
DELETED_ROWS = [
    (True, True, True, 0, True, S.SOURCE_MISSING),
    (True, True, False, 0, True, S.TARGET_IGNORED),
    (True, False, False, 0, True, S.LINK_ONLY),
    (False, False, False, 0, True, S.ALL_GONE),
    (False, False, False, 1, True, S.UNASSIGNED),
    (False, False, False, 1, False, S.TARGET_IGNORED),
    (False, False, False, 2, True, S.AMBIGUOUS),
    (False, False, False, 2, False, S.UNQUALIFIED),
]


@pytest.mark.parametrize(("link", "target", "target_ok", "correlated", "old_ok", "expected"),
                         DELETED_ROWS)
def test_deletion_event_table(link: bool, target: bool, target_ok: bool, correlated: int,
                              old_ok: bool, expected: Situation) -> None:
    """Each row of PingIDM's implicit sync / liveSync deletion table gives its situation."""
    assert assess_source_deleted(link_exists=link, target_found=target, target_qualifies=target_ok,
                                 correlated=correlated, old_source_qualifies=old_ok) is expected


def test_deletion_without_correlation_is_all_gone() -> None:
    """With no link and nothing correlated (the default), everything is gone."""
    assert assess_source_deleted(link_exists=False, target_found=False,
                                 target_qualifies=False) is S.ALL_GONE
