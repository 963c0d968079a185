"""The windowed selector's pool limit: bounded memory on a device, same choice when only the count binds."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.shared.config import Budget
from edgeloop.shared.sampling import WindowedSelector

from test_sampling import Item, budgets, item_lists


@given(budget=budgets(), items=item_lists(), limit=st.integers(1, 12))
@settings(max_examples=200, deadline=None)
def test_pool_limit_bounds_memory_and_keeps_the_top_when_only_count_binds(budget, items, limit):
    count_only = Budget(per_hour=budget.per_hour, window_s=budget.window_s)
    unlimited = WindowedSelector(count_only)
    bounded = WindowedSelector(count_only, pool_limit=limit)
    for it in items:
        unlimited.offer(it)
        accept = bounded.would_accept(it.captured_at, it.value)
        stayed = bounded.offer(it)
        assert stayed == accept  # would_accept foretells exactly what offer does
        assert all(len(bounded._windows[w]) <= limit for w in bounded.open_windows())
    a, b = unlimited.close_until(None), bounded.close_until(None)
    if budget.per_hour is not None and math.floor(budget.per_window) + 1 <= limit:
        # the carried fraction can add one to a window's k: a pool of floor(k) + 1 suffices
        assert [c.sample_id for c in a] == [c.sample_id for c in b]
    assert len(b) <= len(a)


def test_a_full_pool_turns_away_the_lowest_and_counts_it_dropped():
    sel = WindowedSelector(Budget(per_hour=3600, window_s=10), pool_limit=2, track_dropped=True)
    assert sel.offer(Item("a", 0.5, 1.0, 10)) and sel.offer(Item("b", 0.7, 2.0, 10))
    assert not sel.would_accept(3.0, 0.4)
    assert not sel.offer(Item("c", 0.4, 3.0, 10))  # lower than the pool: leaves at once
    assert sel.offer(Item("d", 0.9, 4.0, 10))  # displaces "a"
    assert [c.sample_id for c in sel.drain_dropped()] == ["c", "a"]
