"""The held-out golden set the hub evaluates every model on: an .npz with images, labels, slices."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeloop.shared.errors import ConfigError


@dataclass(frozen=True)
class LabeledSet:
    images: np.ndarray  # (N, H, W, 3) uint8 BGR
    labels: np.ndarray  # (N,) int64
    slices: list[str]  # (N,) slice name of each image, e.g. lighting

    def __len__(self) -> int:
        return len(self.labels)


def load_set(path: Path) -> LabeledSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, slices = z["images"], z["labels"], [str(s) for s in z["slices"]]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: not a labeled set (.npz with images, labels, slices): {exc}") from exc
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or not len(images) == len(labels) == len(slices):
        raise ConfigError(f"{path}: expected images (N, H, W, 3) uint8 with N labels and N slices")
    return LabeledSet(images, labels.astype(np.int64), slices)


TAG_KEYS = ("lighting", "weather", "site", "camera")
# .npz key of each image tag; "slices" holds lighting, as in a LabeledSet.
_TAG_NPZ = {"lighting": "slices", "weather": "weather", "site": "site", "camera": "camera"}


@dataclass(frozen=True)
class DetectionSet:
    """A golden (or seed) set for detectors: frames, their boxes and classes, tags per frame.

    Saved as an .npz (the simulator writes the same keys; the hub never imports it): images (N, H, W, 3)
    uint8 BGR; slices, weather, site, camera (N,) str; box_image (M,) int64 index into images; box_xyxy
    (M, 4) float32 pixels; box_class (M,) int64; names (C,) str; task 0-d str "detect".
    """

    images: np.ndarray  # (N, H, W, 3) uint8 BGR
    boxes: list[np.ndarray]  # per image (K, 4) float32 x1, y1, x2, y2 in pixels; K may be 0
    classes: list[np.ndarray]  # per image (K,) int64 in 0..len(names)-1
    names: tuple[str, ...]
    tags: list[dict[str, str]]  # per image {"lighting", "weather", "site", "camera"}

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"DetectionSet.images: expected (N, H, W, 3) uint8, got {self.images.shape} "
                             f"{self.images.dtype}")
        if not len(self.boxes) == len(self.classes) == len(self.tags) == n:
            raise ValueError(f"DetectionSet: {n} images but {len(self.boxes)} box arrays, {len(self.classes)} "
                             f"class arrays, {len(self.tags)} tags")
        for i, (b, c) in enumerate(zip(self.boxes, self.classes)):
            if b.shape != (len(c), 4) or c.ndim != 1:
                raise ValueError(f"DetectionSet.boxes[{i}]: expected ({len(c)}, 4) for {len(c)} classes, got {b.shape}")
            if len(c) and (c.min() < 0 or c.max() >= len(self.names)):
                raise ValueError(f"DetectionSet.classes[{i}]: ids must lie in 0..{len(self.names) - 1}, "
                                 f"got {c.tolist()}")

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: Path) -> None:
        box_image = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(self.classes)] or
                                   [np.zeros(0, np.int64)])
        np.savez_compressed(
            path, images=self.images, task=np.array("detect"), names=np.array(self.names, dtype=str),
            box_image=box_image,
            box_xyxy=np.concatenate([np.zeros((0, 4), np.float32), *self.boxes]).astype(np.float32),
            box_class=np.concatenate([np.zeros(0, np.int64), *self.classes]).astype(np.int64),
            **{npz: np.array([t.get(key, "") for t in self.tags], dtype=str) for key, npz in _TAG_NPZ.items()},
        )


def load_detection_set(path: Path) -> DetectionSet:
    """Read a DetectionSet .npz (see DetectionSet); ConfigError names what is missing or inconsistent."""
    keys = ("images", "box_image", "box_xyxy", "box_class", "names", "task", *_TAG_NPZ.values())
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ConfigError(f"{path}: not a detection set: missing key(s) {', '.join(missing)}")
            raw = {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # no file, no .npz, truncated, pickled
        raise ConfigError(f"{path}: not a detection set (.npz): {exc}") from exc
    task = str(raw["task"]) if raw["task"].ndim == 0 else None
    if task != "detect":
        raise ConfigError(f"{path}: task is {task!r}, a detection set has task 'detect'")
    images, names = raw["images"], [str(s) for s in raw["names"].reshape(-1)]
    n = len(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"{path}: images: expected (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if not names:
        raise ConfigError(f"{path}: names: no class names")
    for npz in _TAG_NPZ.values():
        if raw[npz].shape != (n,):
            raise ConfigError(f"{path}: {npz}: expected ({n},) for {n} images, got {raw[npz].shape}")
    bi, bx, bc = raw["box_image"], raw["box_xyxy"], raw["box_class"]
    m = len(bi)
    if bi.shape != (m,) or bx.shape != (m, 4) or bc.shape != (m,):
        raise ConfigError(f"{path}: box_image {bi.shape}, box_xyxy {bx.shape}, box_class {bc.shape}: "
                          f"expected (M,), (M, 4), (M,)")
    if bi.dtype.kind not in "iu" or bc.dtype.kind not in "iu" or bx.dtype.kind != "f":
        raise ConfigError(f"{path}: box_image and box_class must be integers, box_xyxy floats")
    if m and (bi.min() < 0 or bi.max() >= n):
        raise ConfigError(f"{path}: box_image: indices must lie in 0..{n - 1}, got {bi.min()}..{bi.max()}")
    if m and (bc.min() < 0 or bc.max() >= len(names)):
        raise ConfigError(f"{path}: box_class: ids must lie in 0..{len(names) - 1}, got {bc.min()}..{bc.max()}")
    if m and (not np.all(np.isfinite(bx)) or np.any(bx[:, 2:] <= bx[:, :2])):
        raise ConfigError(f"{path}: box_xyxy: every box must be finite with x2 > x1 and y2 > y1")
    return DetectionSet(
        images=images,
        boxes=[bx[bi == i].astype(np.float32) for i in range(n)],
        classes=[bc[bi == i].astype(np.int64) for i in range(n)],
        names=tuple(names),
        tags=[{key: str(raw[npz][i]) for key, npz in _TAG_NPZ.items()} for i in range(n)],
    )


def load_golden(path: Path) -> LabeledSet | DetectionSet:
    """A classification set (images, labels, slices) or a detection set (see DetectionSet), by its keys."""
    try:
        with np.load(path, allow_pickle=False) as z:
            detection = "box_xyxy" in z.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not a labeled set (.npz): {exc}") from exc
    return load_detection_set(path) if detection else load_set(path)
