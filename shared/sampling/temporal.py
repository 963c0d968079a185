"""Temporal de-duplication for one camera: a frame that shows what the camera recently kept is no
candidate. Pure, deterministic, no I/O.

    recent = RecentlyKept(TemporalDedup(horizon_s=300))
    thumb = thumbnail(frame.image)
    if not recent.is_duplicate(frame.captured_at, thumb, pred.detections):
        ... offer the frame ...; recent.remember(frame.captured_at, thumb, pred.detections)

A fixed camera at 5 fps shows a parked car, or an empty lot at night, in thousands of frames that
differ only by sensor noise. Two frames are near duplicates when both hold:

- the picture: no cell of a small grey thumbnail (THUMB_SIZE, area-averaged, which averages the
  sensor noise away) differs by more than `max_change` grey levels. A model's embedding cannot tell
  this: a detector's is mostly its camera's background, so a car and the empty lot it stands in look
  alike there, while a car that moved changes the thumbnail where it was and where it is;
- the prediction, for a detector: the same number of boxes, matched one to one with the same class
  at IoU >= `min_iou` (a classifier: the same predicted class). A frame the model reads differently
  is not a duplicate however alike it looks.

"Recently" is `horizon_s` seconds of capture time: after that a scene may be kept again (light and
weather drift slowly; the model changes). At most `memory` frames are remembered, the latest first.
Audit, campaign and feedback frames bypass this gate (the agent never asks it about them).
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from ..config import TemporalDedup
from ..detection import box_iou

THUMB_SIZE = (32, 24)  # width, height


def thumbnail(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (24, 32) float32 grey levels, area-averaged."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def same_reading(a: np.ndarray | None, b: np.ndarray | None, min_iou: float) -> bool:
    """Two predictions read a scene alike: detections (N, 6) x1, y1, x2, y2, score, class matched one
    to one (greedy, best IoU first) with equal classes at IoU >= min_iou; or two classifiers' class
    probabilities (C,) with the same top class. Symmetric."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 1 or b.ndim == 1:
        return a.ndim == b.ndim == 1 and int(np.argmax(a)) == int(np.argmax(b))
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    m = box_iou(a[:, :4], b[:, :4]) * (a[:, 5][:, None] == b[:, 5][None, :])
    for _ in range(len(a)):  # the best remaining pair first: independent of either side's order
        i, j = np.unravel_index(int(np.argmax(m)), m.shape)
        if m[i, j] < min_iou:
            return False
        m[i, :] = -1.0
        m[:, j] = -1.0
    return True


class RecentlyKept:
    """What one camera kept lately, for `is_duplicate`. Not thread-safe (one per frame loop)."""

    def __init__(self, cfg: TemporalDedup):
        self.cfg = cfg
        self._kept: deque[tuple[float, np.ndarray, np.ndarray | None]] = deque(maxlen=cfg.memory)

    def __len__(self) -> int:
        return len(self._kept)

    def is_duplicate(self, captured_at: float, thumb: np.ndarray, reading: np.ndarray | None) -> bool:
        """Is this frame a near duplicate of one kept within horizon_s before (or after: clocks may
        step back) `captured_at`? reading: the detections (N, 6), or a classifier's probs (C,)."""
        for t, kept_thumb, kept_reading in reversed(self._kept):
            if abs(captured_at - t) > self.cfg.horizon_s or kept_thumb.shape != thumb.shape:
                continue
            if float(np.max(np.abs(kept_thumb - thumb), initial=0.0)) <= self.cfg.max_change \
                    and same_reading(kept_reading, reading, self.cfg.min_iou):
                return True
        return False

    def remember(self, captured_at: float, thumb: np.ndarray, reading: np.ndarray | None) -> None:
        self._kept.append((float(captured_at), np.asarray(thumb, np.float32),
                           None if reading is None else np.array(reading, np.float64)))

    def forget(self) -> None:
        """A new model reads scenes anew: what the old one kept says nothing about its readings."""
        self._kept.clear()
