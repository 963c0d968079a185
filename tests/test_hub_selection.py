"""Selection at the hub compares embeddings only within one model version: each model has an
embedding space of its own, so a v2 frame whose vector happens to equal a labeled v1 frame's is no
near duplicate of it, while a v1 frame that close is."""

from __future__ import annotations

import numpy as np

import hubdb
from edgeloop.hub import selection
from factories import make_candidate

X = np.eye(8, dtype=np.float32)[0]
UNSURE = np.array([0.4, 0.35, 0.25], np.float32)


def row(sample_id: str, version: str, embedding, value_probs=UNSURE) -> dict:
    return {"sample_id": sample_id, "model_version": version, "embedding": embedding, "probs": value_probs,
            "captured_at": 0.0}


def test_a_near_duplicate_is_one_only_in_its_own_models_space():
    pool = [row("a-v2-same-vector", "v2", X.copy()), row("b-v1-near", "v1", X + 0.001),
            row("c-v1-far", "v1", np.eye(8, dtype=np.float32)[3]), row("d-v1-far", "v1", np.eye(8, dtype=np.float32)[5])]
    labeled_v1 = X[None, :]
    chosen = selection.select_for_labeling(pool, 3, "hybrid", 0, labeled_v1, 0.02, embedding_version="v1")
    assert "b-v1-near" not in chosen  # a near duplicate of what is labeled, in v1's space
    assert "a-v2-same-vector" in chosen  # the same numbers in v2's space mean nothing to v1's
    # Without the version, the v2 frame was taken for a duplicate of the v1 label and dropped.
    assert "a-v2-same-vector" not in selection.select_for_labeling(pool, 3, "hybrid", 0, labeled_v1, 0.02)


def test_the_embedding_version_is_the_pools_majority():
    pool = [row("1", "v1", X), row("2", "v2", X), row("3", "v2", X), row("4", "v3", None), row("5", "v3", None)]
    assert selection.embedding_version(pool) == "v2"
    assert selection.embedding_version([row("1", "v1", None)]) is None


def test_a_store_selects_against_the_labels_of_the_pools_version(tmp_path):
    store = hubdb.store(tmp_path / "hub")
    try:
        labeled = make_candidate(model_version="v1", embedding=X.astype(np.float16))
        near = make_candidate(model_version="v1", embedding=(X + 0.001).astype(np.float16), probs=UNSURE)
        other = make_candidate(model_version="v1", embedding=np.eye(8, dtype=np.float16)[4], probs=UNSURE)
        store.ingest([labeled, near, other], site="s", relay_id="r")
        store.add_labels({labeled.sample_id: 1}, source="t")
        assert store.labeled_embeddings("v2") is None and store.labeled_embeddings("v1").shape == (1, 8)
        chosen, pool = selection.select_in(store, 5, "hybrid")
        assert pool == 2 and set(chosen) == {other.sample_id}
    finally:
        store.close()
