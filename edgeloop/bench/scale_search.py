"""`bench scale`'s search and selection figures for one hub size, run in a process of its own (so its
peak memory is its own): `python -m edgeloop.bench.scale_search N [--ks 100,1000]` prints one JSON line.

- `similar`: the hub's SimilarIndex (hub/similar_index.py, the class `GET .../similar` asks) built
  from N clustered 128-d float16 embeddings (bench/scale_data.py); p50 / p95 milliseconds of single
  queries, recall@10 against the exact scan, and the exact scan's own p50 (the limit it replaces).
- `selection`: hub/selection.py's `select_for_labeling(..., "hybrid")` for each k out of N samples,
  1,000 of them labeled (k-center measures distances to them, near duplicates of them are dropped);
  from INDEXED_FROM samples on through the same index, as `select_in` does. Seconds and the
  process's peak RSS, which includes the pool's rows and the index, as a hub holds them.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from edgeloop.hub.selection import INDEXED_FROM, NEAR_DUPLICATE, index_near, select_for_labeling
from edgeloop.hub.similar_index import SimilarIndex

from .scale_data import pool_rows

QUERIES = 200
LABELED = 1_000
RECALL_AT = 10


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _exact_top(unit: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest rows of `unit` (unit float32 rows) to q by cosine, in 2^16 blocks."""
    q = q.astype(np.float32) / max(float(np.linalg.norm(q.astype(np.float32))), 1e-12)
    sims = np.empty(len(unit), np.float32)
    for s in range(0, len(unit), 1 << 16):
        sims[s:s + (1 << 16)] = unit[s:s + (1 << 16)] @ q
    top = np.argpartition(-sims, k)[:k]
    return top[np.argsort(-sims[top], kind="stable")]


def measure_similar(index: SimilarIndex, embs: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed + 7)
    unit = embs.astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    picks = rng.choice(len(embs), QUERIES, replace=False)
    ann_ms, scan_ms, recall = [], [], []
    for i in picks:
        t = time.perf_counter()
        got = index.search(embs[i], RECALL_AT + 1)[0]
        ann_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        exact = _exact_top(unit, embs[i], RECALL_AT + 1)
        scan_ms.append((time.perf_counter() - t) * 1e3)
        want = {f"s{j:08d}" for j in [j for j in exact if j != i][:RECALL_AT]}
        have = [sid for sid, _ in got if sid != f"s{i:08d}"][:RECALL_AT]
        recall.append(len(want & set(have)) / len(want))
    return {"queries": QUERIES, "p50_ms": float(np.percentile(ann_ms, 50)), "p95_ms": float(np.percentile(ann_ms, 95)),
            f"recall_at_{RECALL_AT}": float(np.mean(recall)), "scan_p50_ms": float(np.percentile(scan_ms, 50))}


def measure(n: int, ks: list[int], seed: int = 0) -> dict:
    rows = pool_rows(n, seed)
    embs = np.stack([r["embedding"] for r in rows])
    out: dict = {"n": n, "dim": int(embs.shape[1])}
    index = None
    if n >= INDEXED_FROM:
        index = SimilarIndex()
        t = time.perf_counter()
        index.add([r["sample_id"] for r in rows], list(embs))
        out["index_build_s"] = time.perf_counter() - t
        out["index_add_us_per_sample"] = out["index_build_s"] / n * 1e6
        out["index_bytes_per_sample"] = index.memory_bytes() / n
        out["similar"] = measure_similar(index, embs, seed)
    labeled, pool = rows[:LABELED], rows[LABELED:]
    already = np.stack([r["embedding"] for r in labeled]).astype(np.float32)
    out["labeled"] = len(labeled)
    out["rss_before_selection_mb"] = _rss_mb()
    out["selection"] = []
    for k in ks:
        t = time.perf_counter()
        chosen = select_for_labeling(pool, k, "hybrid", 0, already, NEAR_DUPLICATE, embedding_version="m-1",
                                     near=None if index is None else index_near(index, NEAR_DUPLICATE),
                                     labeled_ids={r["sample_id"] for r in labeled} if index is not None else None)
        out["selection"].append({"k": k, "chosen": len(chosen), "seconds": time.perf_counter() - t,
                                 "indexed": index is not None, "peak_rss_mb": _rss_mb()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("--ks", default="100,1000")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(measure(a.n, [int(k) for k in a.ks.split(",")], a.seed)))


if __name__ == "__main__":
    main()
