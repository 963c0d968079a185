"""Data sets of the scenes world: the frames-with-boxes container and how golden / seed sets are drawn.

Private to `scenes` (ScenesWorld.golden_set / seed_set call `sample`); `DetectionDataset` is public
and re-exported by the package.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import scenes as _scenes  # cyclic on purpose: read at call time, once scenes is loaded


class DetectionDataset:
    """Frames with boxes. images (N, H, W, 3) uint8 BGR; boxes / classes: per image (K, 4) float32 xyxy
    pixels and (K,) int64; tags per image {"lighting", "weather", "site", "camera"}.

    `save` writes the .npz the hub reads without importing the sim (hub/training/golden.py, DetectionSet)."""

    def __init__(self, images: np.ndarray, boxes: list[np.ndarray], classes: list[np.ndarray],
                 names: tuple[str, ...], tags: list[dict[str, str]]):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images: expected (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if not len(boxes) == len(classes) == len(tags) == len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes, {len(classes)} classes, {len(tags)} tags")
        for i, (b, c) in enumerate(zip(boxes, classes)):
            if b.shape != (len(c), 4):
                raise ValueError(f"boxes[{i}]: expected ({len(c)}, 4), got {b.shape}")
        self.images, self.boxes, self.classes = images, boxes, classes
        self.names, self.tags = tuple(names), tags

    @property
    def slices(self) -> list[str]:
        return [t["lighting"] for t in self.tags]

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path) -> None:
        """Write a compressed .npz at exactly `path`."""
        n = len(self.classes)
        with open(path, "wb") as f:
            np.savez_compressed(
                f, images=self.images, task=np.array("detect"), names=np.array(self.names, dtype=str),
                box_image=np.concatenate([np.zeros(0, np.int64)] + [np.full(len(c), i, np.int64)
                                                                     for i, c in enumerate(self.classes)]),
                box_xyxy=np.concatenate([np.zeros((0, 4), np.float32)] + list(self.boxes)).astype(np.float32),
                box_class=np.concatenate([np.zeros(0, np.int64)] + list(self.classes)).astype(np.int64),
                **{key: np.array([t[tag] for t in self.tags] if n else [], dtype=str)
                   for key, tag in (("slices", "lighting"), ("weather", "weather"), ("site", "site"),
                                    ("camera", "camera"))})

    @classmethod
    def load(cls, path) -> "DetectionDataset":
        with np.load(Path(path), allow_pickle=False) as z:
            images, which = z["images"], z["box_image"]
            xyxy, cls_ = z["box_xyxy"].astype(np.float32), z["box_class"].astype(np.int64)
            boxes = [xyxy[which == i] for i in range(len(images))]
            classes = [cls_[which == i] for i in range(len(images))]
            tags = [{"lighting": str(a), "weather": str(b), "site": str(c), "camera": str(d)}
                    for a, b, c, d in zip(z["slices"], z["weather"], z["site"], z["camera"])]
            return cls(images, boxes, classes, tuple(str(n) for n in z["names"]), tags)


def sample(world, conditions, n: int, cams: list[str], t_base: float, salt: int, balance: bool) -> "DetectionDataset":
    """n frames lit by `conditions` in turn, from cameras `cams`, at times from t_base on (hash-chosen).
    balance: pick, of 6 candidates, the frame that adds most to the classes seen least so far, and
    make every tenth an empty frame if one is found."""
    counts = np.zeros(len(world.classes))
    frames = []
    for i in range(n):
        lighting = conditions[i % len(conditions)]
        best, best_score = None, -1.0
        want_empty = balance and i % 10 == 9
        for j in range(6 if balance else 2):
            hh = _scenes._hash(world.seed, salt, i, j)
            cam = cams[int(hh[0] % np.uint64(len(cams)))]
            index = time_in(world, cam, lighting, t_base, hh)
            tr = world.truth(cam, index)
            if want_empty:
                score = 1.0 if len(tr.classes) == 0 else 0.0
            else:
                score = float(np.sum(1.0 / (1.0 + counts[tr.classes]))) + 1e-3 * len(tr.classes)
            if score > best_score:
                best, best_score = (cam, index), score
        f = world.frame(*best)
        counts += np.bincount(f.classes, minlength=len(world.classes))
        frames.append(f)
    w, h = world.size
    images = np.stack([f.image for f in frames]) if frames else np.zeros((0, h, w, 3), np.uint8)
    return DetectionDataset(images, [f.boxes for f in frames], [f.classes for f in frames], world.classes,
                            [{k: f.tags[k] for k in ("lighting", "weather", "site", "camera")} for f in frames])

def time_in(world, camera_id: str, lighting: str, t_base: float, hh) -> int:
    """A frame index of the camera lit by `lighting`, in one of 30 sim days from t_base (hash-chosen),
    well inside the lighting's span so that rounding to a frame cannot cross its edge."""
    bounds = np.concatenate([[0.0], np.cumsum(_scenes.DAY_SHARES)])
    segments = {"day": [0], "dusk": [1, 3], "night": [2]}[lighting]
    seg = segments[int(_scenes._uniform(hh, 1)[0] * len(segments))]
    lo, hi = bounds[seg], bounds[seg + 1]
    frac = lo + (hi - lo) * (0.05 + 0.9 * _scenes._uniform(hh, 2)[0])
    day_no = int(_scenes._uniform(hh, 3)[0] * 30)
    day0 = math.ceil(t_base / world.day_seconds + day_no) * world.day_seconds   # a day's start (phase 0)
    t = day0 + np.mod(frac * world.day_seconds - world.camera(camera_id).phase, world.day_seconds)
    return int(round(t * world.fps))

