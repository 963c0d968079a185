"""Final selection for labeling at the hub: at most K unlabeled samples under a label budget.

Strategies:
- `random`: a uniform draw fixed by the seed (the baseline);
- `uncertainty`: the least confident first (least confidence + margin);
- `coreset`: greedy k-center on embeddings, away from what is already labeled (pure diversity);
- `hybrid`: k-center weighted by uncertainty, balanced over predicted classes, without near
  duplicates of each other or of labeled samples (in the spirit of BADGE / weighted k-center).
Audit samples never enter this pool: the hub queues them on their own. Embeddings are compared only
within one model version (each model has an embedding space of its own): the pool's majority
version's, against what was labeled under that version; samples of other versions are ranked by
their uncertainty alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from edgeloop.shared.config import SignalConfig
from edgeloop.shared.sampling import select_diverse, select_top
from edgeloop.shared.sampling.batch import cosine_distances
from edgeloop.shared.sampling.signals import Observation, score, uncertainty_values

STRATEGIES = ("uncertainty", "random", "coreset", "hybrid")
UNCERTAINTY = (SignalConfig("least_confidence", 1.0), SignalConfig("margin", 0.5))
# From this pool size on, hybrid asks the ANN index for near duplicates instead of comparing all pairs
# (N^2 / 2 distances: a second at 10^4, hours at 10^6); below it both give the same answer.
INDEXED_FROM = 20_000
NEAR_DUPLICATE = 0.02  # cosine distance: closer than this to a labeled sample teaches nothing new
# hybrid's weight floor for a detector's frame: one it is silent about may be one it is blind on (no box,
# no uncertainty), so diversity must still be able to pick it.
SILENT_FLOOR = 0.1


@dataclass(frozen=True)
class _Item:
    sample_id: str
    value: float
    captured_at: float
    embedding: np.ndarray | None
    predicted: int
    nbytes: int = 0
    detections: np.ndarray | None = None  # a detector's boxes: uncertainty and class balance read them


def embedding_version(pool: list[dict]) -> str | None:
    """The model version whose embeddings the pool's diversity is measured in: the one most of the
    pool's embeddings come from (ties: the later version string), None when no sample has one."""
    counts: dict[str, int] = {}
    for row in pool:
        if row.get("embedding") is not None:
            counts[row.get("model_version") or ""] = counts.get(row.get("model_version") or "", 0) + 1
    return max(counts, key=lambda v: (counts[v], v)) if counts else None


def select_in(store, budget: int, strategy: str, dedup_threshold: float = NEAR_DUPLICATE) -> tuple[dict[str, float], int]:
    """Select from a HubStore's new samples, embeddings compared within one model version -> (chosen, pool size).
    The callers' one read of the store; the choosing is select_for_labeling's. From INDEXED_FROM
    samples on, hybrid's near duplicates come from the store's ANN index (hub/similar_index.py)."""
    pool = store.samples_with_status("new")
    version = embedding_version(pool)
    labeled = store.labeled_embeddings(version) if version is not None else None
    near = labeled_ids = None
    if strategy == "hybrid" and len(pool) >= INDEXED_FROM and dedup_threshold > 0:
        index = store.similar_index()
        near, labeled_ids = index_near(index, dedup_threshold), store.labeled_ids(version)
    return select_for_labeling(pool, budget, strategy, 0, labeled, dedup_threshold, embedding_version=version,
                               near=near, labeled_ids=labeled_ids), len(pool)


def index_near(index, threshold: float):
    """item -> sample_ids within `threshold` of its embedding, from a SimilarIndex (select_diverse's `near`)."""
    return lambda item: index.within(item.embedding, threshold)


def select_for_labeling(pool: list[dict], budget: int, strategy: str = "uncertainty", seed: int = 0,
                        labeled_embeddings: np.ndarray | None = None,
                        dedup_threshold: float = NEAR_DUPLICATE, embedding_version: str | None = None,
                        near=None, labeled_ids=None) -> dict[str, float]:
    """pool: rows with sample_id, probs (C,), embedding (D,) | None, captured_at, and for a detector's
    samples detections (K, 6) (uncertainty from the box scores, classes balanced over the boxes).

    -> {sample_id: priority} for at most `budget` of them (higher priority = label first).
    labeled_embeddings (M, D): what is already labeled, for the diversity strategies. dedup_threshold:
    hybrid's near-duplicate distance (a fixed camera's frames are all close: a detector's embedding is
    mostly its background, so its near duplicates are closer than a classifier's). embedding_version:
    when given, only that model version's embeddings take part (labeled_embeddings must be of it too);
    the rest are treated as samples without one. near (item -> ids within dedup_threshold, an ANN
    index's answer) and labeled_ids (the labeled samples of that version): hybrid decides near duplicates
    lazily through them instead of comparing all pairs (shared/sampling/duplicates.py), the way a pool
    of 10^6 can be selected from.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    items = []
    batch = _batch_uncertainty(pool) if strategy in ("uncertainty", "hybrid") else None
    for n, row in enumerate(pool):
        det = row.get("detections")
        det = None if det is None else np.asarray(det, np.float32).reshape(-1, 6)
        if strategy == "random":
            value = (zlib.crc32(f"{seed}:{row['sample_id']}".encode()) & 0xFFFFFFFF) / 0xFFFFFFFF
        elif strategy == "coreset":
            value = 1.0
        elif batch is not None:
            value = float(batch[n])
        else:
            value, _, _ = score(Observation(row["sample_id"], np.asarray(row["probs"]), detections=det), UNCERTAINTY,
                                seed)
            if strategy == "hybrid" and det is not None:
                value = max(value, SILENT_FLOOR)
        emb = row.get("embedding")
        if embedding_version is not None and (row.get("model_version") or "") != embedding_version:
            emb = None  # another model's embedding space: no distance to this one's means anything
        items.append(_Item(row["sample_id"], value, row["captured_at"],
                           None if emb is None else np.asarray(emb, np.float32), int(np.argmax(row["probs"])),
                           detections=det))
    if strategy in ("random", "uncertainty"):
        chosen = select_top(items, budget)
        return {it.sample_id: it.value for it in chosen}
    already = labeled_embeddings if labeled_embeddings is not None and len(labeled_embeddings) else None
    lazy = strategy == "hybrid" and near is not None
    if strategy == "hybrid" and already is not None and not lazy:
        items = _away_from(items, already, dedup_threshold)
    chosen = select_diverse(items, budget, already=already, dedup_threshold=dedup_threshold if strategy == "hybrid" else 0.0,
                            balance_classes=strategy == "hybrid", near=near if lazy else None,
                            anchors=(labeled_ids or ()) if lazy else ())
    # Priority follows pick order: the first picks are the most informative.
    return {it.sample_id: float(len(chosen) - i) for i, it in enumerate(chosen)}


def _batch_uncertainty(pool: list[dict]) -> np.ndarray | None:
    """(N,) UNCERTAINTY values of a pool of classifier rows at once (score's, bit for bit), or None
    when some row is a detector's or the probabilities differ in size or type (then row by row)."""
    if not pool or any(row.get("detections") is not None for row in pool):
        return None
    probs = [np.asarray(row["probs"]) for row in pool]
    if len({(p.shape, p.dtype) for p in probs}) != 1 or probs[0].ndim != 1:
        return None
    return uncertainty_values(np.stack(probs), UNCERTAINTY)


def _away_from(items: list[_Item], labeled: np.ndarray, threshold: float) -> list[_Item]:
    """Drop candidates that are near duplicates of something already labeled."""
    with_emb = [i for i, it in enumerate(items) if it.embedding is not None and it.embedding.shape[0] == labeled.shape[1]]
    if not with_emb:
        return items
    d = cosine_distances(np.stack([items[i].embedding for i in with_emb]), labeled.astype(np.float32)).min(axis=1)
    drop = {with_emb[j] for j in np.flatnonzero(d < threshold)}
    return [it for i, it in enumerate(items) if i not in drop]
