"""Selection at scale: the vectorised uncertainty equals `score` bit for bit, and a hub past
INDEXED_FROM samples selects through its ANN index what the all-pairs pass selects."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import hubdb
from factories import make_candidate

from edgeloop.hub import selection
from edgeloop.shared.sampling.signals import Observation, score, uncertainty_values

probs_batches = st.integers(1, 6).flatmap(lambda c: arrays(
    np.float32, st.tuples(st.integers(1, 30), st.just(c)),
    elements=st.floats(0, 1, width=32) | st.sampled_from([np.nan, 0.5, 1.0])))


@settings(deadline=None)
@given(probs_batches)
def test_batch_uncertainty_is_score_bit_for_bit(probs):
    want = [score(Observation("x", p), selection.UNCERTAINTY)[0] for p in probs]
    assert uncertainty_values(probs, selection.UNCERTAINTY).tolist() == want


def test_a_big_hub_selects_through_its_index_what_the_all_pairs_pass_selects(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((15, 16)).astype(np.float32)
    # 300 samples around 15 scenes, some within the near-duplicate distance of each other.
    embs = centres[rng.integers(0, 15, 300)] + rng.standard_normal((300, 16)).astype(np.float32) * 0.08
    cands = [make_candidate(model_version="v1", embedding=e.astype(np.float16),
                            probs=rng.dirichlet(np.ones(3)).astype(np.float32)) for e in embs]
    store = hubdb.store(tmp_path / "hub")
    try:
        store.ingest(cands, site="s", relay_id="r")
        store.add_labels({c.sample_id: 0 for c in cands[:10]}, source="t")
        small, pool = selection.select_in(store, 40, "hybrid", dedup_threshold=0.05)
        assert pool == 290 and store._index is None  # below INDEXED_FROM: no index asked
        monkeypatch.setattr(selection, "INDEXED_FROM", 100)
        big, _ = selection.select_in(store, 40, "hybrid", dedup_threshold=0.05)
        assert store.similar_index().queries > 0
        assert big == small
        assert big != selection.select_in(store, 40, "hybrid", dedup_threshold=0.0)[0]  # duplicates were there to remove
    finally:
        store.close()
