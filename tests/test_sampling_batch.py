"""Batch selectors: budgets respected, deterministic, diverse, deduplicated, class-balanced."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.shared.sampling.batch import (balance_classes_of, class_quotas, cosine_distances, kcenter,
                                            near_duplicates, select_diverse)


@dataclass(frozen=True, eq=False)
class Item:
    sample_id: str
    value: float
    nbytes: int
    embedding: np.ndarray | None
    predicted: int


# --- strategies ---------------------------------------------------------------------------------

D = 3
coords = st.integers(-3, 3).map(float)  # coarse grid: exact duplicates and ties happen


@st.composite
def item_lists(draw, max_size: int = 25, emb_none: bool = True) -> list[Item]:
    n = draw(st.integers(0, max_size))
    ids = draw(st.lists(st.integers(0, 999), min_size=n, max_size=n, unique=True))
    items = []
    for i in ids:
        emb = draw(st.none() | st.lists(coords, min_size=D, max_size=D)) if emb_none else \
            draw(st.lists(coords, min_size=D, max_size=D))
        items.append(Item(
            sample_id=f"s{i:03d}", value=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0])),
            nbytes=draw(st.integers(1, 100)),
            embedding=None if emb is None else np.array(emb, dtype=np.float16),
            predicted=draw(st.integers(0, 3))))
    return items


ks = st.integers(0, 30)
budgets = st.sampled_from([math.inf, 0, 50, 200, 1000])
thresholds = st.sampled_from([0.0, 0.05, 0.3])


def ids(items) -> list[str]:
    return [c.sample_id for c in items]


# --- select_diverse -----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(item_lists(), ks, budgets, thresholds, st.booleans(), st.randoms(use_true_random=False))
def test_select_diverse_budgets_and_determinism(items, k, max_bytes, thr, balance, rnd):
    out = select_diverse(items, k, max_bytes=max_bytes, dedup_threshold=thr, balance_classes=balance)
    assert len(out) <= k
    assert len(set(ids(out))) == len(out)
    assert sum(c.nbytes for c in out) <= max_bytes
    assert set(ids(out)) <= set(ids(items))
    shuffled = list(items)
    rnd.shuffle(shuffled)
    again = select_diverse(shuffled, k, max_bytes=max_bytes, dedup_threshold=thr, balance_classes=balance)
    assert ids(again) == ids(out)


@settings(max_examples=100, deadline=None)
@given(item_lists(), ks)
def test_select_diverse_fills_k_when_unconstrained(items, k):
    assert len(select_diverse(items, k)) == min(k, len(items))


@settings(max_examples=150, deadline=None)
@given(item_lists(), ks)
def test_select_diverse_class_quotas(items, k):
    out = select_diverse(items, k, balance_classes=True, num_classes=4)
    quotas = class_quotas(np.array([c.predicted for c in items], dtype=int), k, 4)
    got = Counter(c.predicted for c in out)
    available = Counter(c.predicted for c in items)
    for c in range(4):
        assert got[c] == min(quotas[c], available[c])


@settings(max_examples=100, deadline=None)
@given(item_lists(emb_none=False), ks, st.sampled_from([0.05, 0.3, 1.0]))
def test_select_diverse_dedup_leaves_no_close_pair(items, k, thr):
    out = select_diverse(items, k, dedup_threshold=thr)
    if len(out) >= 2:
        d = cosine_distances(np.stack([c.embedding for c in out]), np.stack([c.embedding for c in out]))
        nonzero = np.array([np.any(c.embedding != 0) for c in out])
        d = d[np.ix_(nonzero, nonzero)]  # zero vectors are at distance 1 from everything
        assert np.all(d[~np.eye(len(d), dtype=bool)] > thr)


def test_select_diverse_without_embeddings_is_value_order():
    items = [Item(f"s{i}", v, 10, None, 0) for i, v in enumerate([0.3, 0.9, 0.1, 0.9, 0.5])]
    assert ids(select_diverse(items, 3)) == ["s1", "s3", "s4"]
    assert ids(select_diverse(items, 3, max_bytes=25)) == ["s1", "s3"]


def test_select_diverse_prefers_spread_over_value():
    a = np.array([1, 0, 0], np.float16)
    b = np.array([0, 1, 0], np.float16)
    items = [Item("a1", 1.0, 1, a, 0), Item("a2", 0.99, 1, a, 0), Item("b1", 0.5, 1, b, 0)]
    assert ids(select_diverse(items, 2)) == ["a1", "b1"]
    # already-labeled samples near `a` push the first pick to `b`
    assert ids(select_diverse(items, 1, already=np.array([[1.0, 0.0, 0.0]]))) == ["b1"]


# --- class_quotas -------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=60), st.integers(-2, 80))
def test_class_quotas_sum_and_bounds(pred, k):
    pred = np.array(pred, dtype=int)
    q = class_quotas(pred, k, 6)
    counts = np.bincount(pred, minlength=6)
    assert q.shape == (6,)
    assert q.sum() == min(max(k, 0), len(pred))
    assert np.all(q >= 0) and np.all(q <= counts)
    # water-filling: a class below another's quota by 2+ must be exhausted
    for a in range(6):
        for b in range(6):
            if q[b] - q[a] >= 2:
                assert q[a] == counts[a]


def test_class_quotas_examples():
    assert class_quotas(np.array([0] * 10 + [1] * 10 + [2]), 9, 4).tolist() == [4, 4, 1, 0]
    assert class_quotas(np.array([0, 1, 1, 2, 2, 2]), 100, 3).tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        class_quotas(np.array([3]), 1, 3)


# --- near_duplicates ----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(coords, min_size=D, max_size=D).filter(any), st.integers(0, 4)),
                max_size=30), st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.5]))
def test_near_duplicates(rows, thr):
    emb = np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, D)
    values = np.array([r[1] for r in rows], dtype=np.float64)
    dup = near_duplicates(emb, thr, values)
    assert dup.shape == (len(rows),) and dup.dtype == bool
    if not rows:
        return
    assert not dup[np.argmax(values)]  # the first highest-value item always stays
    kept = np.flatnonzero(~dup)
    d = cosine_distances(emb[kept], emb[kept])
    assert np.all(d[~np.eye(len(kept), dtype=bool)] > thr)
    full = cosine_distances(emb, emb)
    for i in np.flatnonzero(dup):  # every removed item has a close kept item of at least its value
        assert np.any((full[i, kept] <= thr + 1e-9) & (values[kept] >= values[i]))  # same tolerance as the module


# --- kcenter ------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.integers(2, 6), st.integers(1, 8), st.integers(0, 2**32 - 1), st.booleans())
def test_kcenter_one_pick_per_cluster(n_clusters, per_cluster, seed, weighted):
    rng = np.random.default_rng(seed)
    centers = np.eye(8)[:n_clusters]
    labels = rng.permutation(np.repeat(np.arange(n_clusters), per_cluster))
    emb = centers[labels] + rng.normal(0, 0.01, (len(labels), 8))
    w = rng.uniform(0.5, 1.0, len(labels)) if weighted else None
    picks = kcenter(emb.astype(np.float16), n_clusters, w)
    assert sorted(labels[picks].tolist()) == list(range(n_clusters))
    if w is not None:
        assert picks[0] == int(np.argmax(w))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(coords, min_size=D, max_size=D), max_size=20), st.integers(-1, 25), st.booleans())
def test_kcenter_bounds_and_determinism(rows, k, use_already):
    emb = np.array(rows, dtype=np.float64).reshape(-1, D)
    already = np.array([[1.0, 0.0, 0.0]]) if use_already else None
    picks = kcenter(emb, k, None, already)
    assert len(picks) == max(0, min(k, len(rows)))
    assert len(set(picks)) == len(picks)
    assert all(0 <= i < len(rows) for i in picks)
    assert picks == kcenter(emb, k, None, already)


def test_kcenter_already_steers_away():
    emb = np.array([[1, 0], [0.99, 0.1], [0, 1]], dtype=np.float64)
    assert kcenter(emb, 1, np.array([1.0, 1.0, 0.5])) == [0]
    assert kcenter(emb, 1, np.array([1.0, 1.0, 0.5]), already=np.array([[1.0, 0.0]])) == [2]
    assert kcenter(emb, 2) == [0, 2]


# --- detectors: balance over the boxes -------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class DetItem(Item):
    detections: np.ndarray | None = None


def boxes(*classes) -> np.ndarray:
    return np.array([[0.1, 0.1, 0.2, 0.2, 0.9, c] for c in classes], np.float32).reshape(-1, 6)


def test_a_frame_counts_for_the_rarest_class_among_its_boxes_and_empty_frames_for_their_own():
    items = [DetItem(f"s{i}", 1.0, 10, None, 0, boxes(*cls)) for i, cls in
             enumerate([(0, 0, 0), (0, 0, 3), (0,), (), (3,), ()])]
    assert balance_classes_of(items).tolist() == [0, 3, 0, 4, 3, 4]


def test_one_rare_object_among_common_ones_wins_its_quota():
    # Nine frames full of class 0 and one frame of class 0 cars with a single class 5 in it: a balanced
    # budget of 2 takes the frame with the rare object even though it scores lowest.
    items = [DetItem(f"s{i}", 1.0 + i, 10, None, 0, boxes(0, 0)) for i in range(9)]
    items.append(DetItem("rare", 0.01, 10, None, 0, boxes(0, 0, 0, 5)))
    chosen = select_diverse(items, 2, balance_classes=True)
    assert "rare" in [it.sample_id for it in chosen]


@st.composite
def det_item_lists(draw) -> list:
    base = draw(item_lists(max_size=20))
    out = []
    for it in base:
        classes = draw(st.lists(st.integers(0, 6), max_size=5))
        out.append(DetItem(it.sample_id, it.value, it.nbytes, it.embedding, it.predicted, boxes(*classes)))
    return out


@settings(max_examples=150, deadline=None)
@given(det_item_lists(), st.integers(0, 30), st.integers(0, 600))
def test_budgets_hold_with_detections_balanced(items, k, max_bytes):
    chosen = select_diverse(items, k, max_bytes=max_bytes, balance_classes=True)
    assert len(chosen) <= k and sum(it.nbytes for it in chosen) <= max_bytes
    assert len({it.sample_id for it in chosen}) == len(chosen)
