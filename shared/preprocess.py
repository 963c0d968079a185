"""Frame -> model input, driven by the manifest's InputSpec. Pure numpy + cv2, no onnxruntime.

The hub's training uses the very same function, so that a model sees on the device exactly
what it saw in training.
"""

from __future__ import annotations

import cv2
import numpy as np

from .manifest import InputSpec


def resize(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """frame (H, W, 3) uint8 BGR -> (spec.height, spec.width, 3) uint8 BGR."""
    h, w = frame.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return frame
    if spec.resize == "stretch":
        return cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    # letterbox: keep the aspect ratio, pad with grey
    s = min(spec.height / h, spec.width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = np.full((spec.height, spec.width, 3), 114, np.uint8)
    top, left = (spec.height - nh) // 2, (spec.width - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def preprocess(frames: np.ndarray | list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """frames: one (H, W, 3) uint8 BGR frame or a list/array of them -> float32 batch in spec's layout.

    Returns (N, 3, H, W) for NCHW or (N, H, W, 3) for NHWC.
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = [frames]
    batch = np.stack([resize(f, spec) for f in frames])
    # Colour order and layout as views of the uint8 frames, then one conversion pass and the affine
    # in place: the same float32 arithmetic as ((x * scale) - mean) / std, at a tenth of the cost of
    # a new array for every step (a device preprocesses every frame).
    if spec.color == "RGB":
        batch = batch[..., ::-1]
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
        mean, std = mean[:, None, None], std[:, None, None]
    out = np.empty(batch.shape, np.float32)
    out[...] = batch
    out *= np.float32(spec.scale)
    out -= mean
    out /= std
    return out
