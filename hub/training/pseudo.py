"""Pseudo-labels along a track: one human label of a camera's frame labels the frames of the same
camera a few seconds around it that the hub holds unlabeled, where the two frames agree on what is
there. Pure: frames in, frames out; the caller decides what to train on.

    pseudo = propagate(labeled, pool)          # Frame in, Frame out (boxes in pixels)

A pool frame is pseudo-labeled from the nearest labeled frame of its camera within `window_s` when
every object the labeler boxed is found again in it, and nothing else confident is:
- found by the model: one of the frame's own detections overlaps the human box (IoU >= min_iou,
  whatever class the model gave it: the labeler's class wins, which is what the model has to learn);
- or it did not move: the pixels inside the human box barely changed (a parked car under a model
  that missed it; "barely": the mean grey change of 4x4 blocks, which averages sensor noise away, at
  most `max_change` levels), and the box is taken as it is;
- a confident detection (score >= min_new_score) matching no human box means something the labeler
  did not box is there (it came in, or the model sees a ghost): the frame is left alone.
An empty labeled view labels an equally empty neighbour (no confident detection) as empty.

Pseudo-labels are counted apart from human labels and are never golden: the golden set is a held-out
set of its own (hub/training/golden.py), and nothing here reads or writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.shared.detection import box_iou

WINDOW_S = 10.0
MIN_IOU = 0.5
MAX_CHANGE = 6.0
MIN_NEW_SCORE = 0.5


@dataclass(frozen=True)
class Frame:
    """A frame of one camera: a labeled one (boxes and classes by a person) or a pool one (the
    model's boxes, classes and scores)."""

    sample_id: str
    camera_id: str
    captured_at: float
    image: np.ndarray                 # (H, W, 3) uint8
    boxes: np.ndarray                 # (K, 4) float32 x1, y1, x2, y2 in pixels
    classes: np.ndarray               # (K,) int64
    scores: np.ndarray | None = None  # (K,) the model's confidence; None for a person's labels


def propagate(labeled: Sequence[Frame], pool: Sequence[Frame], window_s: float = WINDOW_S,
              min_iou: float = MIN_IOU, max_change: float = MAX_CHANGE,
              min_new_score: float = MIN_NEW_SCORE) -> list[Frame]:
    """Pool frames that take the labels of the nearest labeled frame of their camera (see the module
    docstring) -> those frames with the boxes and classes they take, in pool order."""
    by_camera: dict[str, list[Frame]] = {}
    for f in labeled:
        by_camera.setdefault(f.camera_id, []).append(f)
    done = {f.sample_id for f in labeled}
    out = []
    for u in pool:
        near = [f for f in by_camera.get(u.camera_id, ()) if abs(f.captured_at - u.captured_at) <= window_s]
        if u.sample_id in done or not near:
            continue
        src = min(near, key=lambda f: (abs(f.captured_at - u.captured_at), f.sample_id))
        taken = _take(src, u, min_iou, max_change, min_new_score)
        if taken is not None:
            out.append(Frame(u.sample_id, u.camera_id, u.captured_at, u.image, *taken))
            done.add(u.sample_id)
    return out


def _take(src: Frame, u: Frame, min_iou: float, max_change: float, min_new_score: float
          ) -> tuple[np.ndarray, np.ndarray] | None:
    human = np.asarray(src.boxes, np.float32).reshape(-1, 4)
    model = np.asarray(u.boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(model), np.float32) if u.scores is None else np.asarray(u.scores, np.float32)
    pairs = _match(human, model, min_iou)
    boxes = []
    for h in range(len(human)):
        if h in pairs:
            boxes.append(model[pairs[h]])
        elif _still(src.image, u.image, human[h], max_change):
            boxes.append(human[h])
        else:
            return None  # the object moved and the model lost it: where it is now is not known
    matched = set(pairs.values())
    if any(scores[m] >= min_new_score for m in range(len(model)) if m not in matched):
        return None  # something confident the labeler did not box
    classes = np.asarray(src.classes, np.int64).reshape(-1)
    return np.asarray(boxes, np.float32).reshape(-1, 4), classes.copy()


def _match(a: np.ndarray, b: np.ndarray, min_iou: float) -> dict[int, int]:
    """Greedy one-to-one matching of boxes a to boxes b, best IoU first -> {a index: b index}."""
    if not len(a) or not len(b):
        return {}
    iou = box_iou(a, b)
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(b))
        if iou[i, j] < min_iou:
            break
        if i not in pairs and j not in used:
            pairs[i] = j
            used.add(j)
    return pairs


def _still(a: np.ndarray, b: np.ndarray, box: np.ndarray, max_change: float) -> bool:
    """Did the pixels inside `box` stay (mean grey change of 4x4 blocks <= max_change)?"""
    if a.shape != b.shape:
        return False
    h, w = a.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    x2, y2 = x1 + (x2 - x1) // 4 * 4, y1 + (y2 - y1) // 4 * 4
    if x2 <= x1 or y2 <= y1:
        return False  # too small to tell: not taken on trust
    return float(np.abs(_blocks(a[y1:y2, x1:x2]) - _blocks(b[y1:y2, x1:x2])).mean()) <= max_change


def _blocks(crop: np.ndarray) -> np.ndarray:
    """Grey means of the crop's 4x4 blocks (its sides are multiples of 4)."""
    g = crop.astype(np.float32).mean(axis=2)
    return g.reshape(g.shape[0] // 4, 4, g.shape[1] // 4, 4).mean(axis=(1, 3))
