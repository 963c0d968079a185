"""The held-out golden set the hub evaluates every model on: an .npz with images, labels, slices."""

from __future__ import annotations

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
