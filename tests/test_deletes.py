"""The maxDeletes cap of the deferred step, as a pure function of the run's figures."""

from __future__ import annotations

from idsync.sync.deletes import delete_cap


def test_no_limit_means_no_cap() -> None:
    """Without maxDeletes (mapping or run) every recorded delete and unlink may run."""
    assert delete_cap(None, 1000, 0) is None


def test_a_count_is_the_cap_whatever_the_target_size() -> None:
    """An integer maxDeletes is a number of objects, not scaled by the target."""
    assert delete_cap(3, 10, 0) == 3
    assert delete_cap(3, None, 50) == 3
    assert delete_cap(0, 10, 0) == 0


def test_a_share_is_of_the_target_before_the_run_rounded_down() -> None:
    """0.2 of 10 targets allows 2; 0.25 of 10 allows 2 (never rounded up to more deletes)."""
    assert delete_cap(0.2, 10, 0) == 2
    assert delete_cap(0.25, 10, 0) == 2


def test_objects_the_run_created_do_not_widen_a_share() -> None:
    """A target of 20 after the run created 10 is a target of 10 for the cap."""
    assert delete_cap(0.2, 20, 10) == 2


def test_a_share_allows_one_delete_of_a_target_it_would_not_empty() -> None:
    """"10%" of seven objects rounds down to none: a share then allows one delete, so a
    small directory's deletes go through, but never the last object of a target."""
    assert delete_cap(0.1, 7, 0) == 1
    assert delete_cap(0.1, 2, 0) == 1
    assert delete_cap(0.1, 1, 0) == 0
    assert delete_cap(0.0, 7, 0) == 0
    assert delete_cap(0.1, 30, 0) == 3


def test_a_share_of_an_unknown_or_new_target_allows_nothing() -> None:
    """With no target count, or only objects this run created, a share caps at zero."""
    assert delete_cap(0.5, None, 0) == 0
    assert delete_cap(0.5, 5, 8) == 0
