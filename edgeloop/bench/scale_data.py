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


def jpeg(kb: float = 20.0, seed: int = 0) -> bytes:
    """A real JPEG of at least `kb` kilobytes (a smooth noisy 320 x 240 scene, the lowest quality
    that reaches the size; the largest one when none does)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 1.2)
    data = b""
    for q in range(30, 100, 5):
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
        if len(data) >= kb * 1024:
            break
    return data


def candidates(n: int, devices: int, image: bytes, seed: int = 0, site: str = "site-s"):
    """n Candidates (fresh time-ordered ids) from `devices` devices, each with `image` plus 8 bytes of
    its own after the JPEG's end (a blob of its own at the hub, as every frame is), a 10-class
    prediction and a 128-d float16 embedding -> list of (device, Candidate)."""
    import hashlib

    from edgeloop.shared.ids import new_sample_id
    from edgeloop.shared.protocol import Candidate

    rng = np.random.default_rng(seed)
    embs = embeddings(n, seed)
    out = []
    for i in range(n):
        dev = f"dev-{i % devices:04d}"
        img = image + rng.bytes(8)
        p = rng.dirichlet(np.ones(CLASSES)).astype(np.float32)
        out.append((dev, Candidate(sample_id=new_sample_id(), device_id=dev, camera_id=f"{dev}-cam", captured_at=1.7e9 + i,
                                   model_version="m-1", probs=p, embedding=embs[i], image=img,
                                   image_sha256=hashlib.sha256(img).hexdigest(),
                                   tags={"site": site}, scores={}, reasons=("low_confidence",), value=float(1 - p.max()),
                                   detections=None)))
    return out
