"""The scenes loop benchmark's ground truth (pure): box IoU, near duplicates, what a detector gets
wrong, and where a curve reaches its target (edgeloop/bench/loop_scenes.py)."""

from __future__ import annotations

import numpy as np

NEAR_DUP_IOU = 0.5
ORACLE_IOU = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (N, 4), b (M, 4) xyxy -> (N, M) IoU."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def near_duplicate(a, b, iou: float = NEAR_DUP_IOU) -> bool:
    """Two ground-truth frames (SceneFrame-like) show the same thing: same camera, light and weather,
    the same tracks, each track's box overlapping itself by at least `iou`."""
    if a.camera_id != b.camera_id or a.tags.get("lighting") != b.tags.get("lighting") \
            or a.tags.get("weather") != b.tags.get("weather"):
        return False
    if sorted(a.track_ids.tolist()) != sorted(b.track_ids.tolist()):
        return False
    for k, tid in enumerate(a.track_ids.tolist()):
        j = int(np.flatnonzero(b.track_ids == tid)[0])
        if box_iou(a.boxes[k], b.boxes[j])[0, 0] < iou:
            return False
    return True


def gets_wrong(truth_boxes: np.ndarray, truth_classes: np.ndarray, det: np.ndarray, iou: float = ORACLE_IOU) -> bool:
    """Does a detector's output (K, 6) x1, y1, x2, y2 (pixels), score, class miss a true box or
    report a false one (greedy class-aware matching at `iou`)?"""
    det = np.asarray(det, np.float64).reshape(-1, 6)
    if len(det) != len(truth_classes):
        return True
    if not len(det):
        return False
    m = box_iou(det[:, :4], truth_boxes) * (det[:, 5][:, None] == np.asarray(truth_classes)[None, :])
    free = set(range(m.shape[1]))
    for i in np.argsort(-det[:, 4]):  # most confident first, each to its best free true box
        j = max(free, key=lambda j: m[i, j])
        if m[i, j] < iou:
            return True
        free.remove(j)
    return False


def to_target(x: list[float], y: list[float], target: float) -> float | None:
    """x needed to first reach `target` on the curve y(x), interpolating linearly between rounds."""
    for i, (xi, yi) in enumerate(zip(x, y)):
        if yi >= target:
            if i == 0:
                return float(xi)
            x0, y0 = x[i - 1], y[i - 1]
            return float(x0 + (target - y0) / (yi - y0) * (xi - x0))
    return None
