"""The hub's ANN index (hub/similar_index.py): answers like the exact scan on small data, survives a
restart of the store and of the hub process, catches up on rows another process stored, and is what
the "more like this" route asks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hubdb
from factories import make_candidate, start_hub
from test_hub_labeling import jcall, queued

from edgeloop.hub.similar_index import FILE, SimilarIndex


def exact(embs: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """The k smallest cosine distances by a scan, as the store computed them before the index."""
    e = embs.astype(np.float16).astype(np.float32)
    q = q.astype(np.float16).astype(np.float32)
    d = 1.0 - e @ q / np.maximum(np.linalg.norm(e, axis=1) * np.linalg.norm(q), 1e-12)
    return np.sort(d)[:k]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 120), dim=st.integers(2, 24), k=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_small_indexes_answer_like_the_exact_scan(n, dim, k, seed):
    rng = np.random.default_rng(seed)
    embs = rng.standard_normal((n, dim)).astype(np.float32)
    index = SimilarIndex()
    assert index.add([f"s{i}" for i in range(n)], list(embs)) == n
    for q in embs[:5]:
        got = index.search(q, k)[0]
        want = exact(embs, q, k)
        assert len(got) == len(want) == min(k, n)
        # Distances, not ids: equal distances may come in either order. float16 storage: 1e-2.
        np.testing.assert_allclose([d for _, d in got], want, atol=1e-2)


def test_sizes_are_kept_apart_and_ids_are_added_once():
    index = SimilarIndex()
    assert index.add(["a", "b", "a"], [np.ones(4), np.ones(8), np.ones(4)]) == 2
    assert index.add(["a"], [np.zeros(4)]) == 0  # idempotent by sample_id, as ingest is
    assert [sid for sid, _ in index.search(np.ones(4), 5)[0]] == ["a"]
    assert [sid for sid, _ in index.search(np.ones(8), 5)[0]] == ["b"]
    assert index.search(np.ones(3), 5) == [[]]
    with pytest.raises(ValueError, match="queries"):
        index.search(np.ones((2, 2, 2)), 1)


def test_the_same_rows_offered_at_once_from_several_threads_are_indexed_once():
    """Ingest and a catch-up can offer one row at the same moment: it must come back once."""
    import threading

    rng = np.random.default_rng(0)
    ids, embs = [f"s{i}" for i in range(3000)], list(rng.normal(size=(3000, 16)))
    index, start = SimilarIndex(), threading.Barrier(6)

    def offer():
        start.wait()
        index.add(ids, embs)
    threads = [threading.Thread(target=offer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = [sid for sid, _ in index.search(embs[0], 50)[0]]
    assert len(found) == len(set(found)) and len(index) == 3000


def _store_with(data, embs) -> tuple[object, list[str]]:
    store = hubdb.store(data)
    cands = [make_candidate(embedding=e.astype(np.float16)) for e in embs]
    store.ingest(cands, "site-t", "relay-t")
    return store, [c.sample_id for c in cands]


def test_the_store_answers_through_the_index_and_keeps_it_across_a_restart(tmp_path):
    rng = np.random.default_rng(3)
    embs = rng.standard_normal((300, 32)).astype(np.float32)
    store, ids = _store_with(tmp_path / "data", embs)
    near = store.similar(ids[0], k=5)
    assert [d for _, d in near] == pytest.approx(list(exact(embs, embs[0], 6)[1:]), abs=1e-2)
    assert ids[0] not in [sid for sid, _ in near]
    assert store.similar_index().queries == 1
    # Arriving samples join the index at ingest, before anyone asks.
    late = make_candidate(embedding=(embs[0] * 1.01).astype(np.float16))
    store.ingest([late], "site-t", "relay-t")
    assert late.sample_id in store._index
    store.close()

    saved = SimilarIndex.load(tmp_path / "data" / "ann")
    assert len(saved) == 301 and saved.synced_until > 0  # loaded, not rebuilt from nothing
    reopened = hubdb.store(tmp_path / "data")
    assert reopened.similar(ids[0], k=1)[0][0] == late.sample_id  # the restarted store finds the newest sample
    reopened.close()


def test_rows_another_process_stored_are_caught_up(tmp_path):
    rng = np.random.default_rng(4)
    mine, ids = _store_with(tmp_path / "data", rng.standard_normal((20, 8)))
    assert len(mine.similar_index()) == 20
    other, theirs = _store_with(tmp_path / "data", rng.standard_normal((5, 8)))  # a second hub on the same db
    assert set(theirs) <= {sid for sid, _ in mine.similar(ids[0], k=30)}
    other.close()
    mine.close()


def test_a_torn_index_file_means_a_rebuild(tmp_path):
    store, ids = _store_with(tmp_path / "data", np.random.default_rng(5).standard_normal((10, 8)))
    store.similar(ids[0])
    store.close()
    (tmp_path / "data" / "ann" / FILE).write_bytes(b"PK\x03\x04 not a whole file")
    reopened = hubdb.store(tmp_path / "data")
    assert len(reopened.similar(ids[0], k=20)) == 9
    reopened.close()


@pytest.mark.e2e
def test_the_similar_route_builds_and_persists_the_index_in_the_hub_process(tmp_path):
    svc, url = start_hub(tmp_path)
    try:
        base = np.zeros(16, np.float32)
        base[0] = 1.0
        ids = queued(url, 1, embedding=base.astype(np.float16))
        other = base.copy()
        other[3] = 0.2
        ids += queued(url, 1, embedding=other.astype(np.float16))
        status, reply = jcall(url, "GET", f"/api/v1/samples/{ids[0]}/similar?k=3")
        assert status == 200 and [it["sample_id"] for it in reply["items"]] == [ids[1]]
    finally:
        assert svc.stop() == 0
    # The serving process asked the index (it exists only because the route used it) and saved it on stop.
    saved = SimilarIndex.load(tmp_path / "data" / "ann")
    assert all(sid in saved for sid in ids) and len(saved) == 2
