"""The fair order of the queue (core.queue), on its own."""

from __future__ import annotations

from core.queue import fair_order


def _runs(*spec):
    """("id", owner, created[, promoted]) tuples as the store gives them."""
    return [{"id": s[0], "owner": s[1], "created": s[2],
             "promoted": s[3] if len(s) > 3 else None} for s in spec]


def test_nobodys_second_run_starts_before_everybodys_first():
    queued = _runs(("a1", "A", 1), ("a2", "A", 2), ("a3", "A", 3), ("b1", "B", 4),
                   ("c1", "C", 5), ("b2", "B", 6))
    assert fair_order(queued, {}) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_owners_take_turns_by_when_they_last_had_a_run_started():
    queued = _runs(("a1", "A", 1), ("b1", "B", 2), ("c1", "C", 3))
    # A started one a moment ago, B long ago, C never: C, then B, then A.
    assert fair_order(queued, {"A": 100.0, "B": 10.0}) == ["c1", "b1", "a1"]


def test_promoted_runs_go_first_in_the_order_they_were_promoted():
    queued = _runs(("a1", "A", 1), ("b1", "B", 2), ("b2", "B", 3, 50.0), ("a2", "A", 4, 40.0))
    assert fair_order(queued, {}) == ["a2", "b2", "a1", "b1"]


def test_runs_without_an_owner_are_each_their_own():
    queued = _runs(("x", None, 1), ("y", None, 2), ("a1", "A", 3), ("a2", "A", 4))
    assert fair_order(queued, {}) == ["x", "y", "a1", "a2"]


def test_fifo_would_fail_this():
    # The order the lab used before: launch order. One greedy owner first.
    queued = _runs(("g1", "G", 1), ("g2", "G", 2), ("s1", "S", 3))
    assert fair_order(queued, {}) != ["g1", "g2", "s1"]
