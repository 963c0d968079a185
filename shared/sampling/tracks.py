"""Track-aware selection for one camera: one candidate per track episode. Pure, deterministic, no I/O.

    episodes = TrackEpisodes(TrackGate(max_age_s=2.0))
    ids = episodes.update(frame.captured_at, pred.detections)   # every frame, kept or not
    if episodes.all_covered(ids): ...   # every object in view already has a candidate: not one
    else: ... offer the frame ...; episodes.cover(ids)

A car crossing the view at 5 fps is in a hundred frames; one of them teaches the labeler's boxes
about that car, the rest mostly repeat it. The tracker is the light one a device can afford: greedy
IoU matching of this frame's boxes to the tracks' last boxes, same class only, best pairs first (SORT
without its Kalman filter: at a fixed camera's frame rates a box moves little between frames). A
track unseen for `max_age_s` of capture time ends; an object seen again later starts a new episode.
A frame with no box says nothing about tracks (`all_covered` is False): temporal de-duplication and
the signals judge it.
"""

from __future__ import annotations

import numpy as np

from ..config import TrackGate
from ..detection import box_iou


class IoUTracker:
    """Greedy IoU tracker over detections (N, 6) x1, y1, x2, y2, score, class."""

    def __init__(self, min_iou: float, max_age_s: float):
        self.min_iou, self.max_age_s = min_iou, max_age_s
        self._boxes = np.zeros((0, 4))
        self._classes = np.zeros(0)
        self._ids = np.zeros(0, np.int64)
        self._seen = np.zeros(0)
        self._next = 0

    def __len__(self) -> int:
        return len(self._ids)

    def live_ids(self) -> set[int]:
        return set(self._ids.tolist())

    def update(self, t: float, detections: np.ndarray) -> np.ndarray:
        """-> (N,) int64 track id of each detection (new ids for new objects)."""
        det = np.asarray(detections, np.float64).reshape(-1, 6)
        alive = np.abs(t - self._seen) <= self.max_age_s
        self._boxes, self._classes, self._ids, self._seen = (self._boxes[alive], self._classes[alive],
                                                             self._ids[alive], self._seen[alive])
        ids = np.full(len(det), -1, np.int64)
        if len(det) and len(self._ids):
            m = box_iou(det[:, :4], self._boxes) * (det[:, 5][:, None] == self._classes[None, :])
            while True:
                i, j = np.unravel_index(int(np.argmax(m)), m.shape)
                if m[i, j] < self.min_iou:
                    break
                ids[i] = self._ids[j]
                self._boxes[j], self._seen[j] = det[i, :4], t
                m[i, :] = -1.0
                m[:, j] = -1.0
        new = np.flatnonzero(ids < 0)
        if len(new):
            ids[new] = np.arange(self._next, self._next + len(new))
            self._next += len(new)
            self._boxes = np.concatenate([self._boxes, det[new, :4]])
            self._classes = np.concatenate([self._classes, det[new, 5]])
            self._ids = np.concatenate([self._ids, ids[new]])
            self._seen = np.concatenate([self._seen, np.full(len(new), float(t))])
        return ids


class TrackEpisodes:
    """Which of a camera's tracks already have a candidate."""

    def __init__(self, cfg: TrackGate):
        self.tracker = IoUTracker(cfg.min_iou, cfg.max_age_s)
        self._covered: set[int] = set()

    def update(self, t: float, detections: np.ndarray | None) -> np.ndarray:
        ids = self.tracker.update(t, np.zeros((0, 6)) if detections is None else detections)
        self._covered &= self.tracker.live_ids()  # ended tracks are forgotten: memory stays bounded by what is in view
        return ids

    def all_covered(self, ids: np.ndarray) -> bool:
        return len(ids) > 0 and all(int(i) in self._covered for i in ids)

    def cover(self, ids: np.ndarray) -> None:
        self._covered.update(int(i) for i in ids)
