"""A detector's raw output tensors -> detections in frame coordinates. Pure numpy + cv2, no onnxruntime.

Two output styles (the manifest's roles):
    "detections"  YOLOv8: one (4+C, N) tensor per image, rows cx, cy, w, h (model-input pixels) then C
                  class scores; no NMS inside the model.
    "boxes"       boxes (N, 4) x1, y1, x2, y2 (model-input pixels), scores (N,), labels (N,) integer ids;
                  usually already suppressed, NMS again is harmless.

    boxes, scores, classes = decode_yolo(out)               # or decode_boxes(boxes, scores, labels)
    keep = nms(boxes, scores, classes, 0.25, 0.45, 100)     # class-aware, best first
    dets = postprocess(boxes, scores, classes, frame.shape, spec, settings)   # (K, 6) float32

A detection row is (x1, y1, x2, y2, score, class): corners normalised to the ORIGINAL frame, in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from .manifest import DetectionSpec, InputSpec

EMPTY = np.zeros((0, 6), np.float32)


def decode_yolo(out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """out (4+C, N) -> boxes (N, 4) xyxy float32, scores (N,) float32 (best class), classes (N,) int64."""
    cx, cy, w, h = out[:4].astype(np.float32)
    cls_scores = out[4:]
    classes = np.argmax(cls_scores, axis=0)
    scores = cls_scores[classes, np.arange(out.shape[1])].astype(np.float32)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, scores, classes.astype(np.int64)


def decode_boxes(boxes: np.ndarray, scores: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes (N, 4) xyxy, scores (N,), labels (N,) of any numeric dtype -> float32, float32, int64.

    A leading batch axis of 1 ((1, N, 4), (1, N)) is dropped. Labels are rounded (some exporters emit floats)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    labels = np.round(labels).astype(np.int64) if labels.dtype.kind == "f" else labels.astype(np.int64)
    return boxes, scores, labels


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, score_threshold: float, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """boxes (N, 4) xyxy, scores (N,), classes (N,) int -> kept indices (K,) int64, best score first.

    Keeps boxes scoring >= score_threshold with a positive, finite extent; suppresses a box whose IoU with a
    better box of the same class exceeds iou_threshold; keeps at most max_detections."""
    ok = (scores >= score_threshold) & np.all(np.isfinite(boxes), axis=1) & np.isfinite(scores)
    ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return np.zeros(0, np.int64)
    b = boxes[idx].astype(np.float64)
    # cv2 separates classes by shifting each by class * (max coordinate + 1), which assumes coordinates >= 0:
    # move the boxes there first (IoU does not change under translation).
    b[:, [0, 2]] -= b[:, 0].min()
    b[:, [1, 3]] -= b[:, 1].min()
    xywh = np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]])
    # No score threshold here (done above, inclusive) and no top_k: cv2 applies top_k before suppression.
    kept = cv2.dnn.NMSBoxesBatched(xywh, scores[idx].astype(np.float32), classes[idx].astype(np.int32),
                                   float("-inf"), float(iou_threshold))
    kept = idx[np.asarray(kept, np.int64).reshape(-1)]
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    return kept[:max_detections]


def letterbox_geometry(frame_hw: tuple[int, int], spec: InputSpec) -> tuple[int, int, int, int]:
    """-> (left, top, width, height): where the frame lands in the model input, mirroring preprocess.resize."""
    h, w = frame_hw
    if (h, w) == (spec.height, spec.width) or spec.resize == "stretch":
        return 0, 0, spec.width, spec.height
    s = min(spec.height / h, spec.width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return (spec.width - nw) // 2, (spec.height - nh) // 2, nw, nh


def to_frame(boxes: np.ndarray, frame_hw: tuple[int, int], spec: InputSpec) -> np.ndarray:
    """boxes (N, 4) xyxy in model-input pixels -> (N, 4) xyxy normalised to the original frame, clipped to [0, 1].

    Undoes the letterbox padding and scale (or the stretch) of `preprocess.resize`."""
    left, top, w, h = letterbox_geometry(frame_hw, spec)
    out = (boxes - np.array([left, top, left, top], np.float32)) / np.array([w, h, w, h], np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def postprocess(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, frame_shape: tuple[int, ...],
                spec: InputSpec, settings: DetectionSpec, num_classes: int) -> np.ndarray:
    """Decoded boxes (model-input pixels) -> (K, 6) float32 detections on the frame, best first.

    Drops class ids outside [0, num_classes) (a model/manifest disagreement must not reach the wire) and
    boxes that lie entirely in the letterbox padding; scores are clipped to [0, 1]."""
    ok = (classes >= 0) & (classes < num_classes)
    boxes, scores, classes = boxes[ok], scores[ok], classes[ok]
    keep = nms(boxes, scores, classes, settings.score_threshold, settings.iou_threshold, settings.max_detections)
    if keep.size == 0:
        return EMPTY.copy()
    xyxy = to_frame(boxes[keep], frame_shape[:2], spec)
    det = np.column_stack([xyxy, np.clip(scores[keep], 0.0, 1.0), classes[keep]]).astype(np.float32)
    return det[(det[:, 2] > det[:, 0]) & (det[:, 3] > det[:, 1])]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (N, 4), b (M, 4) x1, y1, x2, y2 -> (N, M) IoU (0 where both boxes are empty)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def class_mix(detections: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, 6) detections -> (C,) float32 summing to 1: each class's best score, normalised; uniform if none.

    The image-level stand-in for a classifier's probabilities, so that sampling signals apply to detectors."""
    best = np.zeros(num_classes, np.float32)
    np.maximum.at(best, detections[:, 5].astype(np.int64), detections[:, 4])
    total = float(best.sum())
    if total <= 0:
        return np.full(num_classes, 1.0 / num_classes, np.float32)
    return (best / total).astype(np.float32)
