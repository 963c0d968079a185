"""Sampling library: signals in [0, 1], deterministic scores, selectors that respect their budget."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.shared import config
from edgeloop.shared.config import Budget, ByteSize, SignalConfig
from edgeloop.shared.errors import ConfigError
from edgeloop.shared.sampling import (Observation, WindowedSelector, confidence_band, entropy, least_confidence,
                                      margin, random_signal, score, select_top)


@dataclass(frozen=True)
class Item:
    sample_id: str
    value: float
    captured_at: float
    nbytes: int


def rank(item: Item):
    return (-item.value, item.sample_id)


# --- strategies ---------------------------------------------------------------------------------

@st.composite
def prob_vectors(draw, min_classes: int = 1, max_classes: int = 50) -> np.ndarray:
    n = draw(st.integers(min_classes, max_classes))
    w = np.array(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n)), dtype=np.float64)
    if w.sum() <= 0:
        w[draw(st.integers(0, n - 1))] = 1.0
    return (w / w.sum()).astype(np.float32)


values = st.floats(0, 1) | st.sampled_from([0.0, 0.25, 0.5, 1.0])  # the second branch makes ties


def item_lists(max_items: int = 30, t_max: float = 400.0):
    fields = st.tuples(values, st.floats(-50.0, t_max), st.integers(0, 3000))
    return st.lists(fields, max_size=max_items).map(
        lambda rows: [Item(f"s{i:03d}", v, t, n) for i, (v, t, n) in enumerate(rows)])


@st.composite
def budgets(draw) -> Budget:
    window_s = draw(st.sampled_from([1.0, 7.5, 10.0, 60.0]) | st.floats(0.5, 300.0))
    per_hour = draw(st.none() | st.floats(0.0, 6.0).map(lambda pw: pw * 3600.0 / window_s))
    bytes_per_hour = draw(st.none() | st.integers(0, 8000).map(lambda bw: ByteSize(int(bw * 3600 / window_s))))
    return Budget(per_hour=per_hour, bytes_per_hour=bytes_per_hour, window_s=window_s)


def run(budget: Budget, items, min_value: float = -math.inf) -> list[Item]:
    sel = WindowedSelector(budget, min_value)
    for it in items:
        sel.offer(it)
    kept = sel.close_until(None)
    assert sel.pending == 0 and sel.open_windows() == []
    return kept


def assert_greedy(pool, kept, k, max_bytes, min_value=-math.inf) -> None:
    """`kept` is the best-first greedy choice: every better-ranked item left out either did not fit the
    bytes left at its turn, was below min_value, or came after the count was reached."""
    kept_ids = {c.sample_id for c in kept}
    used = count = 0
    for item in sorted(pool, key=rank):
        if item.sample_id in kept_ids:
            used += item.nbytes
            count += 1
        elif count < k:
            assert item.value < min_value or used + item.nbytes > max_bytes, (
                f"{item} was dropped although it fit ({used} bytes used of {max_bytes}, {count} of {k} kept)")


# --- signals ------------------------------------------------------------------------------------

@settings(max_examples=300)
@given(prob_vectors(), st.floats(0, 1), st.floats(0, 1))
def test_signals_are_in_unit_interval(probs, a, b):
    low, high = min(a, b), max(a, b)
    for name, s in [("least_confidence", least_confidence(probs)), ("margin", margin(probs)),
                    ("entropy", entropy(probs)), ("confidence_band", confidence_band(probs, low, high))]:
        assert isinstance(s, float), name
        assert 0.0 <= s <= 1.0, (name, probs.tolist(), s)


@pytest.mark.parametrize("n", [2, 3, 10, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_prediction_scores_one(n, dtype):
    probs = np.full(n, 1.0 / n, dtype)
    assert least_confidence(probs) == pytest.approx(1.0, abs=1e-5)
    assert entropy(probs) == pytest.approx(1.0, abs=1e-5)
    assert margin(probs) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 10, 1000])
@pytest.mark.parametrize("hot", [0, -1])
def test_one_hot_prediction_scores_zero(n, hot):
    probs = np.zeros(n, np.float32)
    probs[hot] = 1.0
    assert least_confidence(probs) == 0.0
    assert margin(probs) == 0.0
    assert entropy(probs) == pytest.approx(0.0, abs=1e-6)


def test_single_class_scores_zero():
    probs = np.array([1.0], np.float32)
    assert least_confidence(probs) == margin(probs) == entropy(probs) == 0.0


def test_uncertainty_orders_predictions():
    sure, unsure = np.array([0.9, 0.05, 0.05], np.float32), np.array([0.4, 0.35, 0.25], np.float32)
    for f in (least_confidence, margin, entropy):
        assert f(unsure) > f(sure), f.__name__


@pytest.mark.parametrize("probs, low, high, expected", [
    ([0.5, 0.5], 0.35, 0.65, 1.0),
    ([0.65, 0.35], 0.35, 0.65, 1.0),  # high is inclusive
    ([0.3, 0.3, 0.35, 0.05], 0.35, 0.65, 1.0),  # low is inclusive
    ([0.66, 0.34], 0.35, 0.65, 0.0),
    ([0.9, 0.1], 0.35, 0.65, 0.0),
    ([0.3, 0.3, 0.2, 0.2], 0.35, 0.65, 0.0),
    ([0.5, 0.5], 0.5, 0.5, 1.0),
    ([1.0, 0.0], 0.0, 1.0, 1.0),
])
def test_confidence_band(probs, low, high, expected):
    assert confidence_band(np.array(probs, np.float64), low, high) == expected


@given(st.text(max_size=30), st.integers(-(2**40), 2**40))
def test_random_signal_deterministic_and_in_unit_interval(sample_id, seed):
    r = random_signal(sample_id, seed)
    assert 0.0 <= r <= 1.0
    assert random_signal(sample_id, seed) == r


def test_random_signal_depends_on_seed_and_id():
    ids = [f"01J{i:023d}" for i in range(2000)]
    draws = [random_signal(s, 0) for s in ids]
    assert len(set(draws)) > 1990
    assert sum(a != b for a, b in zip(draws, (random_signal(s, 1) for s in ids))) > 1990
    assert 0.45 < sum(draws) / len(draws) < 0.55
    assert sum(d < 0.1 for d in draws) in range(150, 250)


# The parameters a kind cannot do without (the others keep their defaults).
REQUIRED = {"every_nth": {"n": 3}, "interval": {"interval_s": 10.0}, "detection_count": {"min_count": 2},
            "metadata": {"tag": "zone", "values": ("dock",)}}


def _signal_config(kind: str, w: float, a: float, b: float) -> SignalConfig:
    band = {"low": min(a, b), "high": max(a, b)} if kind == "confidence_band" else {}
    return SignalConfig(kind, weight=w, **band, **REQUIRED.get(kind, {}))


signal_configs = st.builds(_signal_config, st.sampled_from(config.SIGNAL_KINDS), st.floats(0, 5), st.floats(0, 1),
                           st.floats(0, 1))


@settings(max_examples=200)
@given(prob_vectors(), st.text(max_size=26), st.integers(0, 2**32),
       st.lists(signal_configs, min_size=1, max_size=5, unique_by=lambda s: s.kind))
def test_score_is_deterministic_and_a_weighted_sum(probs, sample_id, seed, signals):
    # A classifier frame scored without context or state: the stateful kinds score 0 (tests/test_signals.py).
    value, scores, reasons = score(Observation(sample_id, probs), signals, seed)
    assert score(Observation(sample_id, probs.copy()), list(signals), seed) == (value, scores, reasons)
    assert set(scores) == {s.name for s in signals}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert value == pytest.approx(sum(s.weight * scores[s.name] for s in signals))
    fired = tuple(s.name for s in signals if s.kind != "random" and scores[s.name] >= 0.5)
    # Nothing fired: the strongest signal is named, so every kept candidate has a reason.
    assert reasons == (fired or (max(scores, key=scores.get),))


def test_score_of_design_example():
    cfg = config.loads("[[sampling.signals]]\nkind = \"confidence_band\"\nlow = 0.35\nhigh = 0.65\nweight = 2.0\n"
                       "[[sampling.signals]]\nkind = \"random\"\nweight = 0.5")
    probs = np.array([0.5, 0.3, 0.2], np.float32)
    value, scores, reasons = score(Observation("01J0000000000000000000000A", probs), cfg.sampling.signals, seed=3)
    assert scores["confidence_band"] == 1.0
    assert value == pytest.approx(2.0 + 0.5 * random_signal("01J0000000000000000000000A", 3))
    assert reasons == ("confidence_band",)
    value, _, reasons = score(Observation("x", np.array([0.9, 0.05, 0.05], np.float32)), cfg.sampling.signals, seed=3)
    assert reasons == ("random",) and value == pytest.approx(0.5 * random_signal("x", 3))


def test_two_signals_of_the_same_kind_both_count():
    text = ("[[sampling.signals]]\nkind = \"confidence_band\"\nlow = 0.1\nhigh = 0.2\n"
            "[[sampling.signals]]\nkind = \"confidence_band\"\nlow = 0.8\nhigh = 0.9\n")
    try:
        cfg = config.loads(text)
    except ConfigError:
        return  # refusing duplicates is an acceptable fix
    probs = np.array([0.15] + [0.85 / 9] * 9)  # inside the first band only
    value, _, _ = score(Observation("x", probs), cfg.sampling.signals)
    assert value == pytest.approx(1.0)


# --- select_top ---------------------------------------------------------------------------------

@settings(max_examples=150)
@given(item_lists(), st.integers(0, 12) | st.just(math.inf), st.none() | st.integers(0, 20000),
       st.none() | values)
def test_select_top(pool, k, max_bytes, min_value):
    max_bytes = math.inf if max_bytes is None else max_bytes
    min_value = -math.inf if min_value is None else min_value
    kept = select_top(pool, k, max_bytes, min_value)
    assert len(kept) <= k
    assert sum(c.nbytes for c in kept) <= max_bytes
    assert len({c.sample_id for c in kept}) == len(kept)
    assert all(c in pool for c in kept)
    assert all(c.value >= min_value for c in kept)
    assert kept == sorted(kept, key=rank), "best first"
    assert_greedy(pool, kept, k, max_bytes, min_value)
    assert select_top(list(reversed(pool)), k, max_bytes, min_value) == kept


def test_select_top_examples():
    pool = [Item("a", 0.2, 0, 10), Item("b", 0.9, 0, 10), Item("c", 0.5, 0, 100), Item("d", 0.5, 0, 10)]
    assert [c.sample_id for c in select_top(pool, 2)] == ["b", "c"]
    assert [c.sample_id for c in select_top(pool, 3, max_bytes=30)] == ["b", "d", "a"]
    assert [c.sample_id for c in select_top(pool, 10, min_value=0.5)] == ["b", "c", "d"]
    assert select_top(pool, 0) == [] and select_top([], 5) == []


@pytest.mark.parametrize("k", [0.5, 2.5, 4.999])
def test_select_top_fractional_k(k):
    pool = [Item(f"s{i}", 1.0, 0.0, 1) for i in range(10)]
    assert len(select_top(pool, k)) <= k


# --- WindowedSelector ---------------------------------------------------------------------------

@settings(max_examples=150)
@given(budgets(), item_lists())
def test_windowed_selector_respects_the_budget(budget, items):
    kept = run(budget, items)
    ids = [c.sample_id for c in kept]
    assert len(ids) == len(set(ids)), "an item was kept twice"
    assert set(kept) <= set(items)

    sel = WindowedSelector(budget)
    by_window: dict[int, list[Item]] = defaultdict(list)
    for it in items:
        by_window[sel.window_of(it.captured_at)].append(it)
    kept_by_window: dict[int, list[Item]] = defaultdict(list)
    for c in kept:
        kept_by_window[sel.window_of(c.captured_at)].append(c)

    pw, bpw = budget.per_window, budget.bytes_per_window
    for w, chosen in kept_by_window.items():
        if math.isfinite(pw):
            assert len(chosen) <= math.ceil(pw), (w, len(chosen), pw)
        assert sum(c.nbytes for c in chosen) <= bpw, (w, bpw)
    if math.isfinite(pw):
        assert len(kept) <= pw * len(by_window) + 1
        assert len(kept) <= pw * len(by_window) + 1e-6, "a quiet window banked budget"
    else:
        # No count limit: within each window exactly the greedy byte fit is kept.
        for w, pool in by_window.items():
            assert sorted(kept_by_window[w], key=rank) == select_top(pool, math.inf, bpw)
    if budget.per_hour is None and budget.bytes_per_hour is None:
        assert sorted(ids) == sorted(it.sample_id for it in items)


def window_counts(budget: Budget, n_windows: int) -> list[float]:
    """The count cap of each successive non-empty window, as documented: the window's share of
    per_hour plus the fractional remainder carried from the previous window."""
    caps, carry = [], 0.0
    for _ in range(n_windows):
        allowance = budget.per_window + carry
        if math.isfinite(allowance):
            caps.append(math.floor(allowance))
            carry = allowance - math.floor(allowance)
        else:
            caps.append(math.inf)
    return caps


@settings(max_examples=150)
@given(budgets(), item_lists())
def test_windowed_selector_keeps_the_best_that_fit_in_each_window(budget, items):
    kept = run(budget, items)
    sel = WindowedSelector(budget)
    windows = sorted({sel.window_of(it.captured_at) for it in items})
    kept_ids = {c.sample_id for c in kept}
    for w, cap in zip(windows, window_counts(budget, len(windows))):
        pool = [it for it in items if sel.window_of(it.captured_at) == w]
        chosen = [it for it in pool if it.sample_id in kept_ids]
        assert len(chosen) <= cap
        # Kept items come out best first within their window, windows in time order.
        assert [c for c in kept if sel.window_of(c.captured_at) == w] == sorted(chosen, key=rank)
        # Any better item left out must not have fit the bytes left at its turn, unless the count cap
        # had been reached.
        assert_greedy(pool, chosen, cap, budget.bytes_per_window)
    assert [sel.window_of(c.captured_at) for c in kept] == sorted(sel.window_of(c.captured_at) for c in kept)


@settings(max_examples=100)
@given(budgets(), item_lists(), st.randoms(use_true_random=False))
def test_windowed_selector_is_deterministic_and_order_independent(budget, items, rnd):
    first = run(budget, items)
    assert run(budget, items) == first
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert run(budget, shuffled) == first


@settings(max_examples=100)
@given(budgets(), item_lists(), st.lists(st.floats(-60.0, 500.0), max_size=8), st.randoms(use_true_random=False))
def test_windowed_selector_streaming(budget, items, close_times, rnd):
    """Offers interleaved with close_until calls, late items included: each item is kept once or
    dropped once, none unseen; windows close exactly up to the time given (tests/test_event_time.py
    has the budgets of late panes)."""
    sel = WindowedSelector(budget, track_dropped=True, lateness_s=600.0)
    ops = [("offer", it) for it in items] + [("close", t) for t in close_times]
    rnd.shuffle(ops)
    kept: list[Item] = []
    for op, arg in ops:
        if op == "offer":
            assert sel.offer(arg) is True
        else:
            kept.extend(sel.close_until(arg))
            assert all(w >= sel.window_of(arg) for w in sel.open_windows() + sel.late_panes())
    kept.extend(sel.close_until(None))
    assert sel.pending == 0
    ids = [c.sample_id for c in kept] + [c.sample_id for c in sel.drain_dropped()]
    assert sorted(ids) == sorted(it.sample_id for it in items), "an item was lost, or decided twice"
    if budget.per_hour is None and budget.bytes_per_hour is None:
        assert len(kept) == len(items)


def _window_items(window: int, n: int, window_s: float = 60.0) -> list[Item]:
    return [Item(f"w{window:03d}-{i}", value=(i + 1) / 10, captured_at=window * window_s + i, nbytes=100)
            for i in range(n)]


def test_fractional_budget_carries_to_the_next_window():
    budget = Budget(per_hour=30, window_s=60)  # half a candidate per window
    items = [it for w in range(4) for it in _window_items(w, 3)]
    kept = run(budget, items)
    counts = [sum(1 for c in kept if c.captured_at // 60 == w) for w in range(4)]
    assert counts == [0, 1, 0, 1]
    assert all(c.value == 0.3 for c in kept)  # the best of its window


def test_quiet_windows_do_not_bank_budget():
    budget = Budget(per_hour=60, window_s=60)  # one per window
    items = _window_items(0, 3) + _window_items(5, 4)
    kept = run(budget, items)
    assert [c.sample_id for c in kept] == ["w000-2", "w005-3"]


def test_byte_budget_skips_what_does_not_fit():
    budget = Budget(per_hour=None, bytes_per_hour=ByteSize(250 * 60), window_s=60)  # 250 bytes per window
    items = [Item("a", 0.9, 1, 200), Item("b", 0.8, 2, 100), Item("c", 0.7, 3, 50), Item("d", 0.1, 4, 50)]
    assert [c.sample_id for c in run(budget, items)] == ["a", "c"]


def test_close_until_closes_windows_that_ended():
    sel = WindowedSelector(Budget(window_s=60))
    a, b, c = Item("a", 1, 10, 1), Item("b", 1, 70, 1), Item("c", 1, 130, 1)
    for it in (a, b, c):
        sel.offer(it)
    assert sel.close_until(59.9) == []
    assert sel.close_until(60) == [a]  # window 0 ends at 60
    assert sel.open_windows() == [1, 2]
    assert sel.close_until(179) == [b]
    assert sel.close_until(None) == [c]
    assert sel.pending == 0


def test_min_value_refuses_at_offer():
    sel = WindowedSelector(Budget(), min_value=0.5)
    assert sel.offer(Item("low", 0.49, 0, 1)) is False
    assert sel.offer(Item("edge", 0.5, 0, 1)) is True
    assert sel.offer(Item("high", 0.9, 0, 1)) is True
    assert sel.pending == 2
    assert [c.sample_id for c in sel.close_until(None)] == ["high", "edge"]


def test_zero_budget_keeps_nothing():
    items = _window_items(0, 5) + _window_items(1, 5)
    assert run(Budget(per_hour=0, window_s=60), items) == []
    assert run(Budget(bytes_per_hour=ByteSize(0), window_s=60), items) == []
