"""The hub's pseudo-labels for a training set: its labeled frames and the unlabeled frames it holds
of the same cameras within seconds of them, read from the store and handed to hub/training/pseudo.py,
which decides. Audit frames are never pseudo-labeled (they stay the fleet's unbiased sample), nor is
anything labeled: a person's label always wins.

    rows = pseudo_rows(store)   # [{"sample_id", "boxes": [{"class", "xyxy"}], "width", "height", "image_sha256"}]
"""

from __future__ import annotations

import json

import numpy as np

from edgeloop.shared.errors import ImageError
from edgeloop.shared.images import decode_image

from ..store import HubStore
from .pseudo import WINDOW_S, Frame, propagate


def pseudo_rows(store: HubStore, window_s: float = WINDOW_S) -> list[dict]:
    """Rows like HubStore.labeled()'s for a detection project, one per pseudo-labeled frame."""
    labeled_rows = store.db.query(
        "SELECT s.sample_id, s.camera_id, s.captured_at, s.image_sha256, l.boxes FROM labels l "
        "JOIN samples s USING (sample_id) WHERE l.boxes IS NOT NULL AND s.camera_id IS NOT NULL "
        "AND s.captured_at IS NOT NULL ORDER BY s.sample_id")
    images: dict[str, np.ndarray | None] = {}

    def image(sha: str) -> np.ndarray | None:
        if sha not in images:
            try:
                images[sha] = decode_image(store.blobs.get(sha))
            except (ImageError, OSError):
                images[sha] = None  # unreadable: neither a source nor a target
        return images[sha]

    labeled, pool, sha = [], [], {}
    for r in labeled_rows:
        img = image(r["image_sha256"])
        if img is None:
            continue
        boxes = json.loads(r["boxes"])
        labeled.append(Frame(r["sample_id"], r["camera_id"], r["captured_at"], img,
                             np.array([b["xyxy"] for b in boxes], np.float32).reshape(-1, 4),
                             np.array([b["class"] for b in boxes], np.int64)))
        for u in store.db.query(
                "SELECT s.sample_id, s.camera_id, s.captured_at, s.image_sha256, s.detections FROM samples s "
                "LEFT JOIN labels l USING (sample_id) WHERE l.sample_id IS NULL AND COALESCE(s.audit, 0) = 0 "
                "AND s.camera_id = ? AND s.captured_at BETWEEN ? AND ? ORDER BY s.sample_id",
                [r["camera_id"], r["captured_at"] - window_s, r["captured_at"] + window_s]):
            if u["sample_id"] in sha or u["detections"] is None or (uimg := image(u["image_sha256"])) is None:
                continue  # a classifier's frame (no detections) is no detection target
            sha[u["sample_id"]] = u["image_sha256"]
            h, w = uimg.shape[:2]
            det = np.frombuffer(u["detections"], "<f4").reshape(-1, 6)
            pool.append(Frame(u["sample_id"], u["camera_id"], u["captured_at"], uimg,
                              det[:, :4] * np.array([w, h, w, h], np.float32), det[:, 5].astype(np.int64),
                              det[:, 4].copy()))
    out = []
    for f in propagate(labeled, pool, window_s):
        h, w = f.image.shape[:2]
        out.append({"sample_id": f.sample_id, "image_sha256": sha[f.sample_id], "width": int(w), "height": int(h),
                    "boxes": [{"class": int(c), "xyxy": [float(v) for v in b]} for b, c in zip(f.boxes, f.classes)]})
    return out
