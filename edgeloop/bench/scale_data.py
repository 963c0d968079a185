"""Synthetic hub contents for `bench scale`: embeddings clustered as a fleet's are (each camera sees
a few scenes over and over), predictions with a long-tailed class mix. Pure, seeded."""

from __future__ import annotations

import numpy as np

DIM = 128
CLASSES = 10


def embeddings(n: int, seed: int = 0, dim: int = DIM, per_cluster: int = 100) -> np.ndarray:
    """(n, dim) float16: n // per_cluster scene centres, each sample its centre plus noise (so there
    are near neighbours to find, and a few near duplicates), as a fixed camera's frames are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // per_cluster), dim)).astype(np.float32)
    out = np.empty((n, dim), np.float16)
    for start in range(0, n, 65_536):  # chunks: no float32 copy of the whole set at 10^6
        m = min(65_536, n - start)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, dim),
                                                                                                       np.float32)
    return out


def pool_rows(n: int, seed: int = 0, dim: int = DIM) -> list[dict]:
    """n rows as HubStore.samples_with_status("new") gives them, for hub/selection.py."""
    rng = np.random.default_rng(seed + 1)
    embs = embeddings(n, seed, dim)
    logits = rng.standard_normal((n, CLASSES)).astype(np.float32) * 2.0
    logits[:, 0] += 1.5  # a long tail: class 0 common
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return [{"sample_id": f"s{i:08d}", "probs": probs[i], "embedding": embs[i], "captured_at": 1.7e9 + i,
             "model_version": "m-1"} for i in range(n)]
