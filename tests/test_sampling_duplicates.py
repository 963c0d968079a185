"""Near duplicates decided on demand (shared/sampling/duplicates.py): with a neighbour lookup that
finds every neighbour, the answers and the selections are the all-pairs pass's."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sampling_batch import Item, item_lists, ks, thresholds

from edgeloop.shared.sampling.batch import cosine_distances, near_duplicates, select_diverse
from edgeloop.shared.sampling.duplicates import LazyDuplicates


def exact_near(items, threshold):
    """item -> ids within the threshold, by a scan (what an ANN index approximates)."""
    embs = np.stack([np.asarray(it.embedding, np.float64) for it in items]) if items else np.zeros((0, 3))

    def near(item):
        d = cosine_distances(np.asarray(item.embedding, np.float64)[None], embs)[0]
        return [items[j].sample_id for j in np.flatnonzero(d <= threshold + 1e-9)]
    return near


@settings(deadline=None)
@given(item_lists(emb_none=False), st.sampled_from([0.0, 0.05, 0.3, 1.0]), st.data())
def test_lazy_answers_equal_the_all_pairs_pass(items, thr, data):
    pool = sorted(items, key=lambda it: it.sample_id)  # near_duplicates ranks ties by position
    anchors = data.draw(st.sets(st.sampled_from([it.sample_id for it in pool]), max_size=3)) if pool else set()
    lazy = LazyDuplicates([it for it in pool if it.sample_id not in anchors], exact_near(pool, thr), anchors)
    rest = [it for it in pool if it.sample_id not in anchors]
    # anchors are kept first, whatever their value: the all-pairs pass removes what is near one, then runs on the rest
    near = exact_near(pool, thr)
    away = [it for it in rest if not set(near(it)) & anchors]
    dup = near_duplicates(np.stack([it.embedding for it in away]), thr, np.array([it.value for it in away])) \
        if away else np.zeros(0, bool)
    want = {it.sample_id: bool(d) for it, d in zip(away, dup)} | {it.sample_id: True for it in rest if it not in away}
    # Ask in a drawn order: answers must not depend on which item was asked about first.
    order = data.draw(st.permutations(rest))
    assert {it.sample_id: lazy.is_duplicate(it) for it in order} == want


@settings(deadline=None)
@given(item_lists(emb_none=False), ks, thresholds, st.floats(0, 400))
def test_select_diverse_with_a_neighbour_lookup_picks_what_the_all_pairs_pass_picks(items, k, thr, max_bytes):
    if thr <= 0:
        return
    eager = select_diverse(items, k, max_bytes=max_bytes, dedup_threshold=thr)
    lazy = select_diverse(items, k, max_bytes=max_bytes, dedup_threshold=thr, near=exact_near(items, thr))
    assert [it.sample_id for it in lazy] == [it.sample_id for it in eager]


def test_a_long_chain_of_duplicates_needs_no_recursion():
    # 5,000 items on a line, each within the threshold of the next only, values descending:
    # every other one is kept, decided through a chain as deep as the line.
    items = [Item(f"s{i:05d}", 1.0 - i * 1e-5, 0, np.array([np.cos(i * 1e-3), np.sin(i * 1e-3), 0.0]), 0)
             for i in range(5000)]
    by_pos = {it.sample_id: i for i, it in enumerate(items)}

    def near(item):
        i = by_pos[item.sample_id]
        return [items[j].sample_id for j in (i - 1, i + 1) if 0 <= j < len(items)]
    lazy = LazyDuplicates(items, near)
    assert [lazy.is_duplicate(it) for it in items[::-1]][::-1] == [i % 2 == 1 for i in range(5000)]
