"""Frames for the built-in trainers, read a batch at a time: a labeled set of any size costs memory
for its file names and boxes, not for its pixels.

    frames = FrameFiles([data / i["file_name"] for i in images])   # decodes frames[j] when asked
    img = checked_frame(frames, j, "train")                         # (H, W, 3) uint8 BGR, or ValueError
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeloop.shared.images import decode_image


class FrameFiles(Sequence):
    """Image files as a sequence of decoded frames; each item is read from disk when it is asked for."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(len(self)))]
        return decode_image(self.paths[j].read_bytes())


def checked_frame(images: Sequence[np.ndarray], j: int, who: str) -> np.ndarray:
    """images[j], checked to be a (H, W, 3) uint8 BGR frame: a lazily read set is checked as it is read."""
    img = images[j]
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        got = f"{img.shape} {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{who}: images[{j}] must be (H, W, 3) uint8 BGR, got {got}")
    return img
